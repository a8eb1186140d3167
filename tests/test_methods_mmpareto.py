"""MMPareto: the MinNorm closed form against numpy, a brute-force minimisation and the official
solver; the combined gradient of a step against numpy back-propagation (2 and 3 modalities);
steps against the authors' ``train_epoch`` (fixture); the BalanceBenchmark difference; the
aligned case; training, saving and bad arguments. Runs on the backend of KERAS_BACKEND."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import assert_resume_equals_never_stopping, compile_trainer, small_av_model

from keras_msam.trainers.mmpareto import (
    MMPareto,
    min_norm_weight,
    pareto_combine,
    pareto_weight,
)
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import ConcatFusion, GatedFusion

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "mmpareto_reference.json").read_text())
RTOL, ATOL = 1e-4, 1e-6  # float32 torch (fixture) or float64 numpy vs float32 Keras


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


def _zoo(dims, hidden=4, num_classes=3, fusion=None):
    """Zoo model: per-modality Dense(hidden, tanh) encoders, concat (linear) fusion."""
    encoders = {}
    for name, dim in dims.items():
        inputs = keras.Input((dim,), name=name)
        dense = keras.layers.Dense(hidden, activation="tanh", name=f"{name}_dense")
        encoders[name] = keras.Model(inputs, dense(inputs))
    fusion = fusion or ConcatFusion(num_classes, name="fusion")
    return MultimodalClassifier(encoders, fusion, name="tiny")


def _random_params(dims, hidden, classes, seed, head_scale=1.0):
    """{path: value} for every trainable variable of `_zoo` + the trainer's heads."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, dim in dims.items():
        params[f"{name}_dense/kernel"] = rng.normal(0, 0.7, (dim, hidden))
        params[f"{name}_dense/bias"] = rng.normal(0, 0.3, hidden)
        params[f"pareto_head_{name}/kernel"] = head_scale * rng.normal(0, 0.7, (hidden, classes))
        params[f"pareto_head_{name}/bias"] = rng.normal(0, 0.3, classes)
    params["fusion/head/kernel"] = rng.normal(0, 0.7, (hidden * len(dims), classes))
    params["fusion/head/bias"] = rng.normal(0, 0.3, classes)
    return params


def _one_step(dims, params, x, y, hidden=4, classes=3, **options):
    """One MMPareto step with SGD(1): the update direction {path: grad} and the step's logs."""
    trainer = MMPareto(_zoo(dims, hidden, classes), log_shapley=False, **options)
    for variable in trainer.trainable_variables:
        variable.assign(np.asarray(params[variable.path], "float32"))
    before = {v.path: _np(v) for v in trainer.trainable_variables}
    compile_trainer(trainer, lr=1.0)
    logs = trainer.train_on_batch(x, y, return_dict=True)
    grads = {v.path: before[v.path] - _np(v) for v in trainer.trainable_variables}
    return grads, logs


# ---------------------------------------------------------------- numpy re-derivation


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _numpy_grads(dims, params, x, y, unimodal):
    """g_mm and g_uni = ∂(Σ_m L_m) for every variable path, by hand (float64)."""
    names = sorted(dims)
    classes = params["fusion/head/bias"].shape[0]
    onehot = np.eye(classes)[y]
    batch = len(y)
    feats, hidden = {}, params[f"{names[0]}_dense/bias"].shape[0]
    for name in names:
        z = x[name].astype(np.float64) @ params[f"{name}_dense/kernel"]
        feats[name] = np.tanh(z + params[f"{name}_dense/bias"])
    head = params["fusion/head/kernel"]
    rows = {name: head[i * hidden : (i + 1) * hidden] for i, name in enumerate(names)}
    out = sum(feats[n] @ rows[n] for n in names) + params["fusion/head/bias"]
    zero = {path: np.zeros_like(value) for path, value in params.items()}

    def encoder_backward(grads, name, d_feat):
        dz = d_feat * (1 - feats[name] ** 2)
        grads[f"{name}_dense/kernel"] += x[name].T @ dz
        grads[f"{name}_dense/bias"] += dz.sum(0)

    g_mm = {k: v.copy() for k, v in zero.items()}
    d_out = (_softmax(out) - onehot) / batch
    g_mm["fusion/head/kernel"] += np.concatenate([feats[n].T @ d_out for n in names])
    g_mm["fusion/head/bias"] += d_out.sum(0)
    for name in names:
        encoder_backward(g_mm, name, d_out @ rows[name].T)
    g_uni = {k: v.copy() for k, v in zero.items()}
    for i, name in enumerate(names):
        if unimodal == "heads":
            kernel = params[f"pareto_head_{name}/kernel"]
            o_m = feats[name] @ kernel + params[f"pareto_head_{name}/bias"]
            d_m = (_softmax(o_m) - onehot) / batch
            g_uni[f"pareto_head_{name}/kernel"] += feats[name].T @ d_m
            g_uni[f"pareto_head_{name}/bias"] += d_m.sum(0)
        else:
            kernel = rows[name]
            o_m = feats[name] @ kernel + params["fusion/head/bias"] / len(names)
            d_m = (_softmax(o_m) - onehot) / batch
            g_uni["fusion/head/kernel"][i * hidden : (i + 1) * hidden] += feats[name].T @ d_m
            g_uni["fusion/head/bias"] += d_m.sum(0) / len(names)
        encoder_backward(g_uni, name, d_m @ kernel.T)
    return g_mm, g_uni


def _numpy_min_norm(v11, v12, v22):
    if v12 >= v11:
        return 0.999
    if v12 >= v22:
        return 0.001
    return (v22 - v12) / (v11 + v22 - 2 * v12)


def _numpy_mmpareto(dims, g_mm, g_uni, gamma):
    """The official combination in numpy: weights per modality, rescaling per tensor."""
    out = {path: g_mm[path] + g_uni[path] for path in g_mm}
    weights, cosines = {}, {}
    for name in sorted(dims):
        paths = [f"{name}_dense/kernel", f"{name}_dense/bias"]
        a = np.concatenate([g_mm[p].ravel() for p in paths])
        b = np.concatenate([g_uni[p].ravel() for p in paths])
        cosines[name] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        k = 0.5 if a @ b > 0 else _numpy_min_norm(a @ a, a @ b, b @ b)
        weights[name] = k
        for p in paths:
            new = 2 * k * g_mm[p] + 2 * (1 - k) * g_uni[p]
            diff = np.linalg.norm(g_mm[p] + g_uni[p]) / np.linalg.norm(new)
            out[p] = gamma * new * (diff if diff > 1 else 1.0)
    return out, weights, cosines


def _batch(dims, batch=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = {n: rng.standard_normal((batch, d)).astype("float32") for n, d in dims.items()}
    return x, rng.integers(0, classes, batch).astype("int32")


# ---------------------------------------------------------------- MinNorm closed form


def test_min_norm_weight_matches_numpy_and_a_brute_force_minimisation():
    rng = np.random.default_rng(3)
    grid = np.linspace(0.0, 1.0, 200001)
    for _ in range(6):
        g1, g2 = rng.standard_normal(7), 2.0 * rng.standard_normal(7)
        g2 = g2 - max(0.0, g1 @ g2) / (g1 @ g1) * g1 * 1.5  # conflicting: <g1, g2> <= 0
        v11, v12, v22 = g1 @ g1, g1 @ g2, g2 @ g2
        got = float(_np(min_norm_weight(v11, v12, v22)))
        np.testing.assert_allclose(got, _numpy_min_norm(v11, v12, v22), rtol=1e-5)
        objective = ((grid[:, None] * g1 + (1 - grid[:, None]) * g2) ** 2).sum(1)
        np.testing.assert_allclose(got, grid[np.argmin(objective)], atol=1e-5)
        assert float(_np(pareto_weight(v11, v12, v22))) == pytest.approx(got, rel=1e-6)
    # the official clamps: one gradient's projection reaches the other's norm
    assert float(_np(min_norm_weight(1.0, 2.0, 9.0))) == pytest.approx(0.999)
    assert float(_np(min_norm_weight(9.0, 2.0, 1.0))) == pytest.approx(0.001)
    assert float(_np(min_norm_weight(0.0, 0.0, 0.0))) == pytest.approx(0.999)
    assert float(_np(pareto_weight(1.0, 0.3, 2.0))) == 0.5  # aligned: equal weights


def test_min_norm_weight_matches_the_official_solver():
    """`MinNormSolver.find_min_norm_element` (official, run on torch) on gradient pairs."""
    for case in FIXTURE["minnorm_cases"]:
        a = np.concatenate([np.ravel(g) for g in case["g_mm"]])
        b = np.concatenate([np.ravel(g) for g in case["g_uni"]])
        got = float(_np(min_norm_weight(a @ a, a @ b, b @ b)))
        np.testing.assert_allclose(got, case["solution"][0], rtol=1e-4, atol=1e-6)


def test_pareto_combine_matches_numpy_per_tensor():
    rng = np.random.default_rng(5)
    g_mm = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    g_uni = [-0.5 * g_mm[0] + 0.3 * rng.standard_normal((3, 2)), rng.standard_normal(4)]
    for k in (0.5, 0.8, 0.2):
        got = pareto_combine(
            [keras.ops.convert_to_tensor(g, "float32") for g in g_mm],
            [keras.ops.convert_to_tensor(g, "float32") for g in g_uni],
            k,
            1.5,
        )
        for a, b, result in zip(g_mm, g_uni, got):
            new = 2 * k * a + 2 * (1 - k) * b
            diff = np.linalg.norm(a + b) / np.linalg.norm(new)
            expected = 1.5 * new * max(diff, 1.0)
            np.testing.assert_allclose(_np(result), expected, rtol=1e-5, atol=1e-6)
    zero = keras.ops.zeros((2,))
    assert np.all(_np(pareto_combine([zero], [zero], 0.5, 1.5)[0]) == 0.0)  # no NaN


# ---------------------------------------------------------------- one step vs numpy


@pytest.mark.parametrize(
    "dims,unimodal,head_scale",
    [
        ({"audio": 5, "visual": 3}, "heads", 1.0),
        ({"audio": 5, "text": 2, "visual": 3}, "heads", -3.0),
        ({"audio": 5, "text": 2, "visual": 3}, "split", 1.0),
    ],
)
def test_one_step_matches_numpy_back_propagation(dims, unimodal, head_scale):
    params = _random_params(dims, 4, 3, seed=7, head_scale=head_scale)
    x, y = _batch(dims, seed=7)
    grads, logs = _one_step(dims, params, x, y, unimodal=unimodal, gamma=1.5)
    g_mm, g_uni = _numpy_grads(dims, params, x, y, unimodal)
    expected, weights, cosines = _numpy_mmpareto(dims, g_mm, g_uni, 1.5)
    for path, value in grads.items():
        np.testing.assert_allclose(value, expected[path], rtol=RTOL, atol=ATOL, err_msg=path)
    for name in dims:
        assert logs[f"pareto_cos_{name}"] == pytest.approx(cosines[name], rel=1e-4, abs=1e-6)
        assert logs[f"pareto_mm_weight_{name}"] == pytest.approx(weights[name], rel=1e-4)
    if head_scale < 0:  # the opposed unimodal heads make at least one conflict
        assert min(weights.values()) != 0.5 or max(weights.values()) != 0.5


def test_with_aligned_gradients_and_gamma_one_the_step_is_the_plain_gradient_of_the_total_loss():
    dims = {"audio": 5, "visual": 3}
    params = _random_params(dims, 4, 3, seed=1)
    x, y = _batch(dims, seed=1)
    grads, logs = _one_step(dims, params, x, y, unimodal="split", gamma=1.0)
    assert all(logs[f"pareto_mm_weight_{n}"] == 0.5 for n in dims)  # aligned (cos > 0)
    g_mm, g_uni = _numpy_grads(dims, params, x, y, "split")
    for path, value in grads.items():
        np.testing.assert_allclose(value, g_mm[path] + g_uni[path], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- the authors' code


def _fixture_params(case, unimodal):
    """Keras {path: value} from the torch weights ((out, in) matrices transposed)."""
    w = {k: np.asarray(v, np.float64) for k, v in case["weights"].items()}
    params = {
        "audio_dense/kernel": w["audio_net.0.weight"].T,
        "audio_dense/bias": w["audio_net.0.bias"],
        "visual_dense/kernel": w["visual_net.0.weight"].T,
        "visual_dense/bias": w["visual_net.0.bias"],
        "fusion/head/kernel": w["head.weight"].T,
        "fusion/head/bias": w["head.bias"],
    }
    if unimodal == "heads":
        for name, torch_name in (("audio", "head_audio"), ("visual", "head_video")):
            params[f"pareto_head_{name}/kernel"] = w[f"{torch_name}.weight"].T
            params[f"pareto_head_{name}/bias"] = w[f"{torch_name}.bias"]
    return params


def _torch_name(path):
    mapping = {
        "audio_dense": "audio_net.0",
        "visual_dense": "visual_net.0",
        "fusion/head": "head",
        "pareto_head_audio": "head_audio",
        "pareto_head_visual": "head_video",
    }
    layer, kind = path.rsplit("/", 1)
    return f"{mapping[layer]}.{'weight' if kind == 'kernel' else 'bias'}"


@pytest.mark.parametrize(
    "group,index",
    [("heads_cases", i) for i in range(4)] + [("split_cases", i) for i in range(3)],
)
def test_one_step_matches_the_official_train_epoch(group, index):
    """The gradients `optimizer.step()` receives in the official `train_epoch` (torch, fixture):
    aligned, one-modality and two-modality conflicts, fusion-head split and separate heads."""
    case = FIXTURE[group][index]
    unimodal = "heads" if group == "heads_cases" else "split"
    dims = {"audio": 5, "visual": 3}
    x = {n: np.asarray(case[n], "float32") for n in dims}
    y = np.asarray(case["label"], "int32")
    grads, logs = _one_step(
        dims, _fixture_params(case, unimodal), x, y, unimodal=unimodal, gamma=FIXTURE["gamma"]
    )
    for path, value in grads.items():
        expected = np.asarray(case["grads"][_torch_name(path)], np.float64)
        np.testing.assert_allclose(value, expected.T, rtol=RTOL, atol=ATOL, err_msg=path)
    solutions = iter(case["minnorm_calls"])
    for name in dims:  # the official code solves audio first, then visual
        assert logs[f"pareto_cos_{name}"] == pytest.approx(case["cos"][name], rel=1e-3, abs=1e-5)
        expected = 0.5 if case["cos"][name] > 0 else next(solutions)[0]
        assert logs[f"pareto_mm_weight_{name}"] == pytest.approx(expected, rel=1e-4)


def test_balancebenchmark_difference_is_pinned():
    """BalanceBenchmark's `training_step` (run on torch, fixture) gives its encoders 2α × the
    plain gradient of L (its two task gradients are one accumulated gradient); on the same
    weights, in a conflict, the official code (and this method) gives something else."""
    bb = FIXTURE["balancebenchmark"]
    case = FIXTURE["split_cases"][bb["split_case"]]
    assert min(case["cos"].values()) <= 0  # a conflict for the official code
    for name, value in bb["grads"].items():
        plain = np.asarray(bb["plain_total_grads"][name])
        factor = 2 * FIXTURE["gamma"] if "_net" in name else 1.0
        np.testing.assert_allclose(value, factor * plain, rtol=1e-4, atol=1e-6)
    dims = {"audio": 5, "visual": 3}
    x = {n: np.asarray(case[n], "float32") for n in dims}
    grads, _ = _one_step(
        dims,
        _fixture_params(case, "split"),
        x,
        np.asarray(case["label"], "int32"),
        unimodal="split",
        gamma=FIXTURE["gamma"],
    )
    ours = grads["audio_dense/kernel"]
    theirs = np.asarray(bb["grads"]["audio_net.0.weight"]).T
    assert np.abs(ours - theirs).max() > 1e-2


# ---------------------------------------------------------------- training, saving, options


def test_trains_three_modalities_with_finite_falling_loss_and_logs():
    dims = {"audio": 5, "text": 2, "visual": 3}
    x, y = _batch(dims, batch=64, seed=2)
    x["text"] = x["text"] + np.eye(3)[y][:, :2].astype("float32")  # some signal
    trainer = compile_trainer(MMPareto(_zoo(dims), log_shapley=False), lr=0.1)
    history = trainer.fit(x, y, batch_size=16, epochs=6, verbose=0, shuffle=False).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    for name in dims:
        assert -1.0 <= history[f"pareto_cos_{name}"][-1] <= 1.0
        assert 0.0 <= history[f"pareto_mm_weight_{name}"][-1] <= 1.0


def _set_heads(trainer):
    rng = np.random.default_rng(0)
    for head in trainer.unimodal_heads:
        for variable in head.trainable_variables:
            variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))


@pytest.mark.parametrize("unimodal", ["heads", "split"])
def test_save_load_and_continue_equals_never_stopping(tmp_path, unimodal):
    loaded, _ = assert_resume_equals_never_stopping(
        tmp_path,
        lambda: _zoo({"audio": 6, "visual": 4}, hidden=5, num_classes=4),
        lambda model: MMPareto(model, gamma=1.2, unimodal=unimodal, log_shapley=False),
        prepare=_set_heads,
    )
    assert loaded.gamma == 1.2 and loaded.unimodal == unimodal
    assert len(loaded.unimodal_heads) == (2 if unimodal == "heads" else 0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gamma": 0.0}, "MMPareto: gamma must be > 0"),
        ({"gamma": float("nan")}, "MMPareto: gamma"),
        ({"gamma": True}, "MMPareto: gamma must be a number"),
        ({"unimodal": "zero_padded"}, "MMPareto: Unknown unimodal"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MMPareto(_zoo({"audio": 3, "visual": 2}), **kwargs)


def test_models_without_unimodal_logits_are_refused_with_the_requirement():
    with pytest.raises(ValueError, match=r"MMPareto: unimodal='heads' needs .*per-modality"):
        MMPareto(small_av_model())  # a functional model: no encoders to put heads on
    gated = _zoo({"audio": 3, "visual": 2}, fusion=GatedFusion(3, name="fusion"))
    with pytest.raises(ValueError, match=r"MMPareto: unimodal='split' needs .*'concat' or 'sum'"):
        MMPareto(gated, unimodal="split")
    assert len(MMPareto(gated).unimodal_heads) == 2  # heads work on any fusion
    one = keras.Input((3,), name="audio")
    single = keras.Model({"audio": one}, keras.layers.Dense(2)(one))
    with pytest.raises(ValueError, match="two or more"):
        MMPareto(single)


def test_modalities_without_encoder_variables():
    dims = {"audio": 3, "visual": 2}
    encoders = {}
    for name, dim in dims.items():
        inputs = keras.Input((dim,), name=name)
        encoders[name] = keras.Model(inputs, keras.layers.Activation("tanh")(inputs))
    raw = MultimodalClassifier(encoders, ConcatFusion(3, name="fusion"), name="raw")
    with pytest.raises(ValueError, match="MMPareto: .*nothing to balance"):
        MMPareto(raw)
    model = _zoo(dims)
    model.encoders["visual"].trainable = False  # a frozen encoder: nothing to combine there
    trainer = compile_trainer(MMPareto(model, log_shapley=False))
    logs = trainer.train_on_batch(*_batch(dims), return_dict=True)
    assert logs["pareto_cos_visual"] == 0.0 and logs["pareto_mm_weight_visual"] == 0.5
    assert np.isfinite(logs["loss"]) and -1.0 <= logs["pareto_cos_audio"] <= 1.0
