"""Quickstart: M-SAM on the embedded audio-visual data set, with plain `model.fit`.

    python examples/quickstart.py                 # on $KERAS_BACKEND (default: jax)
    KERAS_BACKEND=torch python examples/quickstart.py --epochs 5

No files needed: the data set is generated in process (audio is learnt fast but only tells
apart label pairs; visual tells all ten classes apart but is learnt slowly).
"""

from __future__ import annotations

import argparse

import keras

import keras_msam
import zoo


def main(epochs: int = 10, num_train: int = 2048) -> dict[str, float]:
    data = zoo.datasets.imbalanced_av.generate(num_train=num_train, seed=0)
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    validation = data["validation"]

    keras.utils.set_random_seed(0)
    model = zoo.models.create("late_fusion_av_cnn", num_classes=10)  # any dict-input model works
    trainer = keras_msam.MSAM(model, rho=0.05)  # Shapley-guided, modality-aware SAM
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = trainer.fit(
        x_train, y_train, batch_size=64, epochs=epochs, validation_data=validation, verbose=2
    )
    shares = [round(v, 2) for v in history.history["shapley_audio"]]
    print("Shapley share of audio per epoch:", shares)

    accuracies = keras_msam.modality_accuracies(trainer, x_test, y_test)
    print("test accuracy:", {k: round(100 * v, 1) for k, v in accuracies.items()}, "(%)")
    print("Shapley values on test:", keras_msam.shapley_values(trainer, x_test, y_test))
    return accuracies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num-train", type=int, default=2048)
    args = parser.parse_args()
    main(args.epochs, args.num_train)
