"""CGGM: five steps equal the authors' step (fixture), the coefficient rule, the lagged direction
loss, clipping, early fusion with lam=0, three modalities, saving and bad options. Runs on the
backend of KERAS_BACKEND."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    assert_resume_equals_never_stopping,
    compile_trainer,
    copy_state,
    small_batch,
    three_modality_data,
    three_modality_zoo_model,
    tiny_zoo_model,
    to_numpy,
)

from keras_msam.trainers.cggm import CGGM, cosine_and_pull, modulation_coefficients
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import Fusion

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "cggm_reference.json").read_text())


class _SharedHead(Fusion):
    """Features summed, then one linear head: the official models' shape (one out_layer of the
    classifiers' width); linear late fusion, W_m = the head's kernel for every modality."""

    is_linear = True

    def build(self, input_shape):
        width = int(input_shape[sorted(input_shape)[0]][-1])
        self.head = keras.layers.Dense(self.num_classes, name="out_layer")
        self.head.build((None, width))

    def call(self, inputs):
        names = sorted(inputs)
        total = inputs[names[0]]
        for name in names[1:]:
            total = keras.ops.add(total, inputs[name])
        return self.head(total)

    def unimodal_logits(self, features):
        return {name: keras.ops.matmul(value, self.head.kernel) for name, value in features.items()}

    def bias_value(self):
        return keras.ops.convert_to_tensor(self.head.bias)


def _fixture_model():
    encoders = {}
    for name, dim in zip(("audio", "visual"), FIXTURE["dims"]):
        inputs = keras.Input((dim,), name=name)
        layer = keras.layers.Dense(FIXTURE["width"], activation="tanh", name=f"{name}_enc")
        encoders[name] = keras.Model(inputs, layer(inputs))
    fusion = _SharedHead(FIXTURE["classes"], name="shared_head")
    model = MultimodalClassifier(encoders, fusion, name="official")
    state = FIXTURE["initial"]["model"]
    for i, name in enumerate(("audio", "visual")):
        layer = model.encoder_list[i].get_layer(f"{name}_enc")
        layer.set_weights(
            [np.array(state[f"encoders.{i}.weight"]).T, np.array(state[f"encoders.{i}.bias"])]
        )
    model.fusion.head.set_weights(
        [np.array(state["out_layer.weight"]).T, np.array(state["out_layer.bias"])]
    )
    return model


def _batch(index):
    batch = FIXTURE["batches"][index]
    x = {name: np.array(batch["x"][i], "float32") for i, name in enumerate(("audio", "visual"))}
    return x, np.array(batch["y"], "int32")


def test_five_steps_equal_the_authors_step():
    model = _fixture_model()
    trainer = CGGM(
        model, rho=FIXTURE["rou"], lam=FIXTURE["lamda"], clipnorm=FIXTURE["clip"],
        log_shapley=False,
    )  # fmt: skip
    compile_trainer(trainer, lr=FIXTURE["lr"])
    classifiers = FIXTURE["initial"]["classifier"]
    for i, head in enumerate(trainer.classifiers):
        head.set_weights(
            [
                np.array(classifiers[f"classifers.{i}.out_layer.weight"]).T,
                np.array(classifiers[f"classifers.{i}.out_layer.bias"]),
            ]
        )
    for step, expected in enumerate(FIXTURE["steps"]):
        logs = trainer.train_on_batch(*_batch(step), return_dict=True)
        np.testing.assert_allclose(logs["loss"], expected["task_loss"], rtol=1e-5)
        for i, name in enumerate(("audio", "visual")):
            assert logs[f"cggm_accuracy_{name}"] == pytest.approx(expected["accuracies"][i])
            assert logs[f"cggm_coeff_{name}"] == pytest.approx(expected["coeff"][i], 1e-4, 1e-6)
            assert logs[f"cggm_cos_{name}"] == pytest.approx(expected["cos"][i], abs=1e-5)
            weights = model.encoder_list[i].get_layer(f"{name}_enc").get_weights()
            np.testing.assert_allclose(
                weights[0], np.array(expected["model"][f"encoders.{i}.weight"]).T, atol=2e-5
            )
            np.testing.assert_allclose(
                weights[1], np.array(expected["model"][f"encoders.{i}.bias"]), atol=2e-5
            )
            head = trainer.classifiers[i].get_weights()
            key = f"classifers.{i}.out_layer"
            np.testing.assert_allclose(
                head[0], np.array(expected["classifier"][f"{key}.weight"]).T, atol=2e-5
            )
        out = model.fusion.head.get_weights()
        state = expected["model"]
        np.testing.assert_allclose(out[0], np.array(state["out_layer.weight"]).T, atol=2e-5)
        np.testing.assert_allclose(out[1], np.array(state["out_layer.bias"]), atol=2e-5)
        if step > 0:  # λ·L_gm of the previous step is what this step adds
            previous = FIXTURE["steps"][step - 1]["l_gm"]
            assert logs["cggm_gm_loss"] == pytest.approx(FIXTURE["lamda"] * previous, rel=1e-4)
        else:
            assert logs["cggm_gm_loss"] == 0.0


def test_the_coefficients_are_the_official_expression():
    accuracy = keras.ops.convert_to_tensor([0.5, 0.25, 0.75])
    previous = keras.ops.convert_to_tensor([0.25, 0.5, 0.5])
    diff = np.array([0.25, -0.25, 0.25])
    total = diff.sum() + 1e-8
    np.testing.assert_allclose(
        to_numpy(modulation_coefficients(accuracy, previous)), (total - diff) / total, 1e-5, 1e-6
    )


def test_the_pull_is_the_gradient_of_the_cosine():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    cos, pull = (to_numpy(t) for t in cosine_and_pull(a, b))
    assert cos == pytest.approx(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-5)
    step = 1e-3
    for index in [(0, 0), (2, 1), (3, 2)]:
        up, down = b.copy(), b.copy()
        up[index] += step
        down[index] -= step
        numeric = (to_numpy(cosine_and_pull(a, up)[0]) - to_numpy(cosine_and_pull(a, down)[0])) / (
            2 * step
        )
        assert pull.reshape(b.shape)[index] == pytest.approx(float(numeric), rel=1e-2, abs=1e-4)


def test_without_clipping_the_encoder_update_is_rho_times_the_coefficient():
    x, y = small_batch(16)
    first, second = tiny_zoo_model(), tiny_zoo_model()
    copy_state(first, second)
    plain = compile_trainer(CGGM(first, lam=0.0, clipnorm=None, log_shapley=False))
    # twice the coefficient scale: the encoder steps double, the rest are equal
    twin = compile_trainer(CGGM(second, rho=2.6, lam=0.0, clipnorm=None, log_shapley=False))
    _set_classifiers(plain)
    _set_classifiers(twin)
    before = [to_numpy(v) for v in plain.trainable_variables]
    plain.train_on_batch(x, y)
    twin.train_on_batch(x, y)
    groups = [plain.structure.group_index(v) for v in plain.trainable_variables]
    for b, p, t, group in zip(
        before, plain.trainable_variables, twin.trainable_variables, groups, strict=True
    ):
        scale = 2.0 if group >= 0 else 1.0
        np.testing.assert_allclose(to_numpy(t) - b, scale * (to_numpy(p) - b), rtol=1e-4, atol=1e-7)


def test_clipping_bounds_the_model_update_to_clipnorm_times_the_learning_rate():
    x, y = small_batch(16)
    trainer = compile_trainer(CGGM(tiny_zoo_model(), clipnorm=0.01, log_shapley=False), lr=1.0)
    model_vars = list(trainer.model.trainable_variables)
    before = [to_numpy(v) for v in model_vars]
    trainer.train_on_batch(x, y)
    moved = np.sqrt(sum(np.sum((to_numpy(v) - b) ** 2) for v, b in zip(model_vars, before)))
    assert moved == pytest.approx(0.01, rel=1e-3)


def test_early_fusion_with_lam_zero_trains_and_lam_needs_a_linear_head():
    from zoo.models.fusions import GatedFusion

    encoders = {}
    for name, dim in (("audio", 6), ("visual", 4)):
        inputs = keras.Input((dim,), name=name)
        encoders[name] = keras.Model(inputs, keras.layers.Dense(5, name=f"{name}_d")(inputs))
    gated = MultimodalClassifier(encoders, GatedFusion(4, name="gated"), name="gated")
    with pytest.raises(ValueError, match="CGGM: lam=0.2 .*linear late fusion"):
        CGGM(gated)
    trainer = compile_trainer(CGGM(gated, lam=0.0, log_shapley=False))
    x, y = small_batch(32)
    x = {"audio": np.tile(x["audio"], (1, 2))[:, :6], "visual": x["visual"][:, :4]}
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["cggm_cos_audio"] == [0.0, 0.0]


def test_three_modalities():
    x, y = three_modality_data()
    trainer = compile_trainer(CGGM(three_modality_zoo_model(), log_shapley=False))
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for name in ("audio", "text", "visual"):
        assert np.all(np.isfinite(history.history[f"cggm_coeff_{name}"]))
    assert history.history["cggm_gm_loss"][-1] != 0.0


def _set_classifiers(trainer):
    rng = np.random.default_rng(0)  # trainer-owned heads start apart in the two twins
    for head in trainer.classifiers:
        for variable in head.trainable_variables:
            variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))


def test_save_load_and_continue_equals_never_stopping(tmp_path):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path,
        tiny_zoo_model,
        lambda model: CGGM(model, rho=1.1, lam=0.3, clipnorm=0.5),
        prepare=_set_classifiers,
    )
    assert (loaded.rho, loaded.lam, loaded.clipnorm) == (1.1, 0.3, 0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rho": 0.0}, "CGGM rho must be > 0"),
        ({"rho": float("inf")}, "CGGM rho"),
        ({"lam": -0.1}, "CGGM lam must be >= 0"),
        ({"clipnorm": 0.0}, "CGGM clipnorm must be > 0"),
    ],
)
def test_bad_options_name_the_method_and_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CGGM(tiny_zoo_model(), **kwargs)


def test_a_model_without_encoders_is_refused():
    inputs = {name: keras.Input((3,), name=name) for name in ("audio", "visual")}
    parts = [keras.layers.Dense(4, name=f"{n}_enc")(t) for n, t in inputs.items()]
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()(parts)))
    with pytest.raises(ValueError, match="CGGM: .*encode"):
        CGGM(model, lam=0.0)
