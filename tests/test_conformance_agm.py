"""AGM against the authors' code, in its three data-set variants (lihong2303/AGM: the ``train``
functions of ``run/AVMNIST_main.py``, ``run/CREMAD_main.py`` and ``run/URFunny_main.py`` with the
official ``GradMod`` of ``model/*_net.py``; fixture ``agm_reference.json``, provenance in
``tests/fixtures/README.md``).

Six SGD steps each: the coefficients c_m (1e-4 relative), the running scores s̄_m (1e-5) and
every weight after every step (5e-5, float32 torch vs float32 Keras). The CREMA-D run clips
once (step 5), which the test checks through the weights. Runs on the backend of KERAS_BACKEND.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import compile_trainer, to_numpy

from keras_msam.trainers.agm import AGM, agm_coefficients
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import ConcatFusion

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "agm_reference.json").read_text())
DIMS = {"audio": 5, "visual": 4, "text": 3}
#: the official settings of each variant (see the AGM docstring)
OPTIONS = {
    "avmnist": {"cap": None, "clip_norm": 1.0},
    "cremad": {"cap": 10.0, "clip_norm": 1.0},
    "urfunny": {"cap": 7.0, "clip_norm": 5.0},
}


def _model(case) -> MultimodalClassifier:
    encoders = {}
    for name in case["names"]:
        inputs = keras.Input((DIMS[name],), name=name)
        layer = keras.layers.Dense(4, activation="tanh", name=f"{name}_net")
        encoders[name] = keras.Model(inputs, layer(inputs))
    model = MultimodalClassifier(encoders, ConcatFusion(case["classes"], name="fusion"))
    state = case["initial"]
    for name, encoder in model.encoders.items():
        encoder.get_layer(f"{name}_net").set_weights(
            [np.array(state[f"{name}.weight"], "float32").T, np.array(state[f"{name}.bias"])]
        )
    model.fusion.head.set_weights([_head_kernel(model, case, state), np.array(state["head.bias"])])
    return model


def _head_kernel(model, case, state) -> np.ndarray:
    """The official head (C, 4M) on cat(audio, visual[, text]) as a Keras kernel, whose rows
    follow the model's sorted modality order."""
    blocks = dict(
        zip(
            case["names"], np.split(np.array(state["head.weight"], "float32").T, len(case["names"]))
        )
    )
    return np.concatenate([blocks[name] for name in model.modality_names])


def _assert_weights(model, case, state, step):
    for name, encoder in model.encoders.items():
        kernel, bias = encoder.get_layer(f"{name}_net").get_weights()
        np.testing.assert_allclose(kernel.T, state[f"{name}.weight"], atol=5e-5, err_msg=f"{step}")
        np.testing.assert_allclose(bias, state[f"{name}.bias"], atol=5e-5, err_msg=f"{step}")
    kernel, bias = model.fusion.head.get_weights()
    np.testing.assert_allclose(
        kernel, _head_kernel(model, case, state), atol=5e-5, err_msg=f"{step}"
    )
    np.testing.assert_allclose(bias, state["head.bias"], atol=5e-5, err_msg=f"{step}")


@pytest.mark.parametrize("variant", ["avmnist", "cremad", "urfunny"])
def test_six_steps_equal_the_authors_agm(variant):
    case = FIXTURE[variant]
    model = _model(case)
    trainer = compile_trainer(
        AGM(model, alpha=case["alpha"], log_shapley=False, **OPTIONS[variant]), lr=case["lr"]
    )
    for step, (batch, expected) in enumerate(zip(case["batches"], case["steps"], strict=True)):
        x = {name: np.array(batch[name], "float32") for name in case["names"]}
        logs = trainer.train_on_batch(x, np.array(batch["y"], "int32"), return_dict=True)
        for name in case["names"]:
            assert logs[f"agm_coeff_{name}"] == pytest.approx(
                expected["coefficients"][name], rel=1e-4
            ), (step, name)
        running = to_numpy(trainer._running_scores)
        want = [expected["running_scores"][name] for name in model.modality_names]
        np.testing.assert_allclose(running, want, rtol=1e-5, err_msg=f"step {step}")
        _assert_weights(model, case, expected["weights"], step)


def test_the_fixture_exercises_clipping_and_large_coefficients():
    """The CREMA-D run clips once and moves a coefficient far from 1: without the clip, or with
    the bias read in the clip test, the steps above would differ."""
    steps = FIXTURE["cremad"]["steps"]
    assert [s["clipped"] for s in steps] == [False] * 4 + [True, False]
    assert max(max(s["coefficients"].values()) for s in steps) > 5.0


def test_without_clipping_the_cremad_run_departs_from_the_authors():
    case = FIXTURE["cremad"]
    model = _model(case)
    trainer = compile_trainer(
        AGM(model, alpha=case["alpha"], log_shapley=False, cap=10.0, clip_norm=None),
        lr=case["lr"],
    )
    for batch in case["batches"][:5]:
        x = {name: np.array(batch[name], "float32") for name in case["names"]}
        trainer.train_on_batch(x, np.array(batch["y"], "int32"))
    with pytest.raises(AssertionError):
        _assert_weights(model, case, case["steps"][4]["weights"], 4)


@pytest.mark.parametrize("cap", [None, 7.0, 10.0])
def test_the_cap_bounds_the_exponent_as_in_each_variant(cap):
    scores = np.array([3.0, 0.1], "float32")  # r = exp(∓2.9), r̄ = exp(±2.9): r̄ − r ≈ 18.1
    running = np.array([0.1, 3.0], "float32")
    got = to_numpy(agm_coefficients(scores, running, 0.5, cap))
    ratio = np.exp(scores.mean() - scores) ** 2
    running_ratio = np.exp(running.mean() - running) ** 2
    gap = running_ratio - ratio
    want = np.exp(0.5 * (gap if cap is None else np.minimum(gap, cap)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (got[0] > np.exp(0.5 * 15.0)) == (cap is None)


def test_a_bad_cap_is_named():
    with pytest.raises(ValueError, match="cap"):
        AGM(_model(FIXTURE["cremad"]), cap=-1.0)
