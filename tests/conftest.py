"""Shared fixtures. The suite runs once per backend: `KERAS_BACKEND=jax|tensorflow|torch pytest`."""

from __future__ import annotations

import keras
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from a clean Keras session, float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    # free_memory=False: a full gc.collect() before every test costs up to 5 s on TensorFlow late
    # in a run (its time grows with the live heap); Python's own collector still runs
    keras.utils.clear_session(free_memory=False)
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


def to_numpy(tensor) -> np.ndarray:
    """A backend tensor or variable as a float64 numpy array (for reference computations)."""
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


def assert_resume_equals_never_stopping(
    tmp_path,
    build_model,
    make_trainer,
    steps_before: int = 2,
    steps_after: int = 1,
    prepare=None,
):
    """Save -> load -> continue equals a run that never stopped; returns (loaded, straight).

    Two twins (``build_model()`` twice, same state) are wrapped by ``make_trainer(model)`` and
    compiled with SGD(0.1, momentum 0.9) (optimizer slots must survive the round trip);
    ``prepare(trainer)`` may set trainer state on both. One trains ``steps_before +
    steps_after`` steps on `small_batch`; the other ``steps_before``, is saved as ``.keras``,
    loaded and trains ``steps_after`` more. Trainable weights and every non-trainable variable
    but RNG seed states (unseeded generators start apart) must agree to 1e-5.
    """
    x, y = small_batch()
    first, second = build_model(), build_model()
    copy_state(first, second)
    straight = compile_trainer(make_trainer(first), momentum=0.9)
    resumed = compile_trainer(make_trainer(second), momentum=0.9)
    for trainer in (straight, resumed):
        if prepare is not None:
            prepare(trainer)
    for _ in range(steps_before + steps_after):
        straight.train_on_batch(x, y)
    for _ in range(steps_before):
        resumed.train_on_batch(x, y)
    path = tmp_path / "trainer.keras"
    resumed.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(resumed)
    for _ in range(steps_after):
        loaded.train_on_batch(x, y)
    for a, b in zip(weights_of(loaded), weights_of(straight), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    state = zip(loaded.non_trainable_variables, straight.non_trainable_variables, strict=True)
    for a, b in state:
        if "seed" not in a.path:
            np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)
    return loaded, straight


def tiny_zoo_model(num_classes: int = 4):
    """A tiny zoo model: per-modality Dense encoders (audio (6,), visual (4,)) and linear concat
    fusion, so every trainer (OGM-GE's split, DecisionWeighting's gains) accepts it."""
    from zoo.models.base import MultimodalClassifier
    from zoo.models.fusions import ConcatFusion

    encoders = {}
    for name, dim in (("audio", 6), ("visual", 4)):
        inputs = keras.Input((dim,), name=name)
        encoders[name] = keras.Model(
            inputs, keras.layers.Dense(5, activation="tanh", name=f"{name}_dense")(inputs)
        )
    return MultimodalClassifier(encoders, ConcatFusion(num_classes, name="fusion"), name="tiny")


THREE_MODALITIES = ("audio", "text", "visual")


def three_modality_zoo_model(fusion=None):
    """A zoo model of three modalities (3 inputs each, Dense(4, tanh) encoders), 3 classes,
    linear concat fusion unless ``fusion`` is given."""
    from zoo.models.base import MultimodalClassifier
    from zoo.models.fusions import ConcatFusion

    encoders = {}
    for name in THREE_MODALITIES:
        inputs = keras.Input((3,), name=name)
        encoders[name] = keras.Model(inputs, keras.layers.Dense(4, activation="tanh")(inputs))
    fusion = fusion if fusion is not None else ConcatFusion(3, name="fusion")
    return MultimodalClassifier(encoders, fusion, name="three")


def three_modality_data(count: int = 48, seed: int = 0):
    """Random ``(x, y)`` for `three_modality_zoo_model`."""
    rng = np.random.default_rng(seed)
    x = {n: rng.standard_normal((count, 3)).astype("float32") for n in THREE_MODALITIES}
    return x, rng.integers(0, 3, size=count).astype("int32")


def three_modality_functional_model():
    """A functional model of three modalities (3 inputs each, Dense(4, tanh) encoders named
    ``<modality>_enc``), concatenated into a 3-class head."""
    inputs = {name: keras.Input((3,), name=name) for name in THREE_MODALITIES}
    parts = [
        keras.layers.Dense(4, activation="tanh", name=f"{n}_enc")(t) for n, t in inputs.items()
    ]
    head = keras.layers.Dense(3, name="head")(keras.layers.Concatenate()(parts))
    return keras.Model(inputs, head, name="three")
