"""Bring your own model: any Keras functional model whose inputs are a dict keyed by modality.

    python examples/custom_model.py

The trainers find each modality's encoder variables from the graph (the variables that depend
on one input only) and train it with `fit`; nothing of the zoo is needed.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

import keras_msam


def build_model(num_classes: int = 3) -> keras.Model:
    """Two modalities (a 16-step sequence and a 12-d vector), late fusion by concatenation."""
    sequence = keras.Input((16, 4), name="sensor")
    vector = keras.Input((12,), name="tabular")
    s = keras.layers.Conv1D(16, 3, activation="relu")(sequence)
    s = keras.layers.GlobalAveragePooling1D()(s)
    t = keras.layers.Dense(16, activation="relu")(vector)
    fused = keras.layers.Concatenate()([s, t])
    logits = keras.layers.Dense(num_classes)(fused)
    return keras.Model({"sensor": sequence, "tabular": vector}, logits, name="sensor_tabular")


def make_data(count: int, seed: int = 0):
    """Labels told strongly by the tabular input and weakly by the sensor sequence."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, count)
    tabular = rng.normal(size=(count, 12)).astype("float32")
    tabular[:, :3] += 2.0 * np.eye(3, dtype="float32")[y]
    sensor = rng.normal(size=(count, 16, 4)).astype("float32")
    sensor[:, :, 0] += 0.5 * (y[:, None] - 1.0)
    return {"sensor": sensor, "tabular": tabular}, y


def main(epochs: int = 5) -> dict[str, float]:
    x, y = make_data(1024)
    x_test, y_test = make_data(512, seed=1)
    keras.utils.set_random_seed(0)
    trainer = keras_msam.MSAM(build_model(), rho=0.05)
    print("modalities:", trainer.modality_names)  # sorted input names
    trainer.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    trainer.fit(x, y, batch_size=32, epochs=epochs, verbose=2)
    accuracies = keras_msam.modality_accuracies(trainer, x_test, y_test)
    print("test accuracy:", {k: round(100 * v, 1) for k, v in accuracies.items()}, "(%)")
    missing = keras_msam.evaluate_missing(trainer, x_test, y_test)
    print("missing-modality robustness:", missing)
    trainer.model.save("sensor_tabular.keras")  # the plain model, without the trainer
    return accuracies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    main(parser.parse_args().epochs)
