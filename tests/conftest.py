"""Shared fixtures. The suite runs once per backend: `KERAS_BACKEND=jax|tensorflow|torch pytest`."""

from __future__ import annotations

import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from a clean Keras session, float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


def small_av_model(num_classes: int = 4, batch_norm: bool = False, dropout: float = 0.0):
    """A tiny late-fusion model: audio (6,) and visual (4,) → per-modality Dense → concat → head."""
    audio = keras.Input((6,), name="audio")
    visual = keras.Input((4,), name="visual")
    a = keras.layers.Dense(8, activation="tanh", name="audio_dense")(audio)
    v = keras.layers.Dense(8, activation="tanh", name="visual_dense")(visual)
    if batch_norm:
        a = keras.layers.BatchNormalization(name="audio_bn")(a)
    h = keras.layers.Concatenate(name="concat")([a, v])
    if dropout:
        h = keras.layers.Dropout(dropout, name="dropout")(h)
    logits = keras.layers.Dense(num_classes, name="head")(h)
    return keras.Model({"audio": audio, "visual": visual}, logits, name="small_av")


def small_batch(batch: int = 16, num_classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = {
        "audio": rng.standard_normal((batch, 6)).astype("float32"),
        "visual": rng.standard_normal((batch, 4)).astype("float32"),
    }
    y = rng.integers(0, num_classes, size=batch).astype("int32")
    return x, y


def compile_trainer(trainer, lr: float = 0.1, momentum: float = 0.0, **kwargs):
    trainer.compile(
        optimizer=keras.optimizers.SGD(lr, momentum=momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **kwargs,
    )
    return trainer


def weights_of(model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]


def copy_state(source, target) -> None:
    """Copies every variable, dropout seed states included, from one model to its twin."""
    assert len(source.variables) == len(target.variables)
    for a, b in zip(source.variables, target.variables):
        b.assign(np.array(keras.ops.convert_to_numpy(a.value)))
