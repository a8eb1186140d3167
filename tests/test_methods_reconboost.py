"""ReconBoost: the reconcilement and GA losses against numpy; the stage schedule against the
official stage loop; whole training runs against the authors' ``main()`` loops (fixture, 2 and 3
modalities, with and without pre-trained learners); freezing, the rectification step against
Joint, the ensemble prediction, training, saving and bad arguments. Runs on KERAS_BACKEND."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    assert_resume_equals_never_stopping,
    compile_trainer,
    small_av_model,
    small_batch,
    tiny_zoo_model,
    to_numpy,
    weights_of,
)
from keras import ops

from keras_msam.trainers.joint import Joint
from keras_msam.trainers.reconboost import (
    ReconBoost,
    consolidation_loss,
    reconboost_schedule,
    reconcilement_loss,
)
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import ConcatFusion, Fusion, GatedFusion

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reconboost_reference.json").read_text())
RTOL, ATOL = 1e-4, 2e-6  # float32 torch (fixture) or float64 numpy vs float32 Keras


class _AffineSum(Fusion):
    """Σ_m fc_m(φ_m), each fc_m with its own bias (the official learners' ``fc`` heads with
    ``common_space=False``); the shared bias is 0, so the split learners are exactly fc_m(φ_m)."""

    is_linear = True

    def build(self, input_shape):
        self.order = sorted(input_shape)
        self.heads = []
        for name in self.order:
            head = keras.layers.Dense(self.num_classes, name=f"{name}_fc")
            head.build((None, int(input_shape[name][-1])))
            self.heads.append(head)

    def unimodal_logits(self, features):
        return {name: head(features[name]) for name, head in zip(self.order, self.heads)}

    def call(self, inputs):
        return sum(self.unimodal_logits(inputs).values())

    def bias_value(self):
        return ops.zeros((self.num_classes,))


def _zoo(dims, hidden=5, num_classes=4, fusion=None, regularizer=None):
    encoders = {}
    for name, dim in dims.items():
        inputs = keras.Input((dim,), name=name)
        dense = keras.layers.Dense(
            hidden, activation="tanh", kernel_regularizer=regularizer, name=f"{name}_dense"
        )
        encoders[name] = keras.Model(inputs, dense(inputs))
    fusion = fusion or ConcatFusion(num_classes, name="fusion")
    return MultimodalClassifier(encoders, fusion, name="tiny")


# ------------------------------------------------------------------ the defining equations
def test_reconcilement_and_ga_losses_match_numpy():
    rng = np.random.default_rng(0)
    active, others, previous = (rng.normal(0, 2, (6, 5)).astype("float32") for _ in range(3))
    y = rng.integers(0, 5, 6)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    target = np.eye(5)[y]
    log_p = np.log(softmax(active.astype(np.float64)))
    for has_others, w1, w2 in ((True, 5.0, 1.0), (True, 1.0, 0.25), (False, 4.0, 1.0)):
        join = softmax(others.astype(np.float64)) if has_others else np.ones((6, 1))
        expected = -w1 * (target * log_p).mean(-1) + w2 * (target * join * log_p).mean(-1)
        got = reconcilement_loss(active, others, has_others, y, w1, w2)
        np.testing.assert_allclose(to_numpy(got), expected, rtol=RTOL, atol=ATOL)
    # one-hot labels give the same loss
    got = reconcilement_loss(active, others, True, target.astype("float32"), 5.0, 1.0)
    expected = -(5.0 - softmax(others)[np.arange(6), y]) * log_p[np.arange(6), y] / 5
    np.testing.assert_allclose(to_numpy(got), expected, rtol=RTOL, atol=ATOL)
    ga = np.mean((softmax(active) - softmax(previous)) ** 2)
    np.testing.assert_allclose(float(to_numpy(consolidation_loss(active, previous))), ga, rtol=RTOL)


@pytest.mark.parametrize(
    "count, stage_length, rectify_length", [(2, 4, 4), (2, 2, 1), (3, 1, 3), (3, 2, 0)]
)
def test_schedule_follows_the_official_stage_loop(count, stage_length, rectify_length):
    expected = []  # the official loop: per stage, epochs_per_stage then correct_epoch epochs
    for stage in range(7):
        expected += [(stage, stage % count, True)] * stage_length
        expected += [(stage, stage % count, False)] * rectify_length
    counters = np.arange(len(expected), dtype="float32")
    stage, active, boosting = reconboost_schedule(counters, stage_length, rectify_length, count)
    got = list(
        zip(
            to_numpy(stage).astype(int).tolist(),
            to_numpy(active).astype(int).tolist(),
            np.asarray(ops.convert_to_numpy(boosting)).tolist(),
        )
    )
    assert got == expected


# ------------------------------------------------------------- the authors' code (fixture)
def _scenario_model(scenario):
    """The fixture's learners as a zoo model; names sorted in the official schedule order."""
    order = list(dict.fromkeys(scenario["schedule"]))
    ours = {name: f"m{i}_{name}" for i, name in enumerate(order)}
    dims = {ours[n]: len(scenario["x"][n][0]) for n in order}
    model = _zoo(dims, FIXTURE["hidden"], FIXTURE["num_classes"], _AffineSum(4, name="fusion"))
    return model, ours


def _assign(model, params, ours):
    for name, ourname in ours.items():
        encoder = model.encoders[ourname].get_layer(f"{ourname}_dense")
        encoder.kernel.assign(np.asarray(params[name]["enc_kernel"], "float32"))
        encoder.bias.assign(np.asarray(params[name]["enc_bias"], "float32"))
        head = model.fusion.heads[model.fusion.order.index(ourname)]
        head.kernel.assign(np.asarray(params[name]["fc_kernel"], "float32"))
        head.bias.assign(np.asarray(params[name]["fc_bias"], "float32"))


def _official_variables(model, ours):
    """{official parameter name: our variable}."""
    table = {}
    for name, ourname in ours.items():
        encoder = model.encoders[ourname].get_layer(f"{ourname}_dense")
        head = model.fusion.heads[model.fusion.order.index(ourname)]
        table[f"{name}.enc.weight"] = encoder.kernel
        table[f"{name}.enc.bias"] = encoder.bias
        table[f"{name}.fc.weight"] = head.kernel
        table[f"{name}.fc.bias"] = head.bias
    return table


@pytest.mark.parametrize("key", sorted(FIXTURE["scenarios"]))
def test_training_matches_the_authors_loop(key):
    scenario = FIXTURE["scenarios"][key]
    options = scenario["options"]
    model, ours = _scenario_model(scenario)
    _assign(model, scenario["init"], ours)
    trainer = ReconBoost(
        model,
        weight1=options["weight1"],
        weight2=options["weight2"],
        alpha=options["alpha"],
        boost_rate=options["boost_rate"],
        stage_length=options["epochs_per_stage"],
        rectify_length=options["correct_epoch"],
        unit="step",
        pretrained=options["use_pretrain"],
        log_shapley=False,
    )
    compile_trainer(trainer, lr=options["m_lr"])
    x = {ours[n]: np.asarray(v, "float32") for n, v in scenario["x"].items()}
    y = np.asarray(scenario["y"], "int32")
    table = _official_variables(model, ours)
    table["boost_rate"] = trainer._rate
    ga_by_stage = {}
    for step, (loss, updated) in enumerate(zip(scenario["losses"], scenario["updated"])):
        before = {name: to_numpy(v) for name, v in table.items()}
        logs = trainer.train_on_batch(x, y, return_dict=True)
        np.testing.assert_allclose(logs["loss"], loss, rtol=RTOL, atol=ATOL, err_msg=str(step))
        changed = sorted(n for n, v in table.items() if not np.array_equal(to_numpy(v), before[n]))
        assert changed == updated, step
        if logs["reconboost_phase"] == 0.0:
            ga_by_stage.setdefault(int(logs["reconboost_stage"]), []).append(
                logs["reconboost_ga_loss"]
            )
    for stage, mean_ga in enumerate(scenario["stage_mean_ga_loss"]):
        if stage > 0:  # the official code skips (and so does not log) GA in stage 0
            np.testing.assert_allclose(np.mean(ga_by_stage[stage]), mean_ga, rtol=RTOL)
    for name in ours:
        for part in ("enc_kernel", "enc_bias", "fc_kernel", "fc_bias"):
            official = scenario["final"][name][part]
            variable = table[f"{name}.{part.split('_')[0]}.{_TORCH[part.split('_')[1]]}"]
            np.testing.assert_allclose(
                to_numpy(variable), official, rtol=RTOL, atol=1e-5, err_msg=f"{name} {part}"
            )
    np.testing.assert_allclose(
        float(to_numpy(trainer._rate)), scenario["final_boost_rate"], rtol=RTOL
    )


_TORCH = {"kernel": "weight", "bias": "bias"}


# --------------------------------------------------------------------------- the step
def _step_trainer(model=None, **options):
    options.setdefault("log_shapley", False)
    options.setdefault("unit", "step")
    return compile_trainer(ReconBoost(model or tiny_zoo_model(), **options), lr=0.1)


def test_boosting_updates_only_the_active_learner_and_the_head():
    """Even the model's own regularisation losses leave the frozen encoder alone (the official
    phase-1 optimizer holds only the active learner)."""
    model = _zoo({"audio": 6, "visual": 4}, regularizer=keras.regularizers.L2(0.1))
    trainer = _step_trainer(model, stage_length=1, rectify_length=1)
    model = trainer.model
    x, y = small_batch()
    for step, active in ((0, "audio"), (2, "visual")):
        trainer._steps.assign(float(step))
        before = {v.path: to_numpy(v) for v in trainer.trainable_variables}
        logs = trainer.train_on_batch(x, y, return_dict=True)
        assert logs["reconboost_active"] == ["audio", "visual"].index(active)
        assert logs["reconboost_phase"] == 0.0
        frozen = "visual" if active == "audio" else "audio"
        for v in trainer.trainable_variables:
            moved = not np.array_equal(to_numpy(v), before[v.path])
            owned = any(v is w for w in model.modality_variables()[frozen])
            if owned or v is trainer._rate:
                assert not moved, v.path
            else:
                assert moved, v.path


def test_rectification_with_a_unit_boost_rate_is_the_joint_step():
    x, y = small_batch()
    first, second = tiny_zoo_model(), tiny_zoo_model()
    for a, b in zip(first.variables, second.variables):
        b.assign(to_numpy(a))
    trainer = _step_trainer(first, stage_length=1, rectify_length=1, pretrained=True)
    trainer._steps.assign(1.0)  # stage 0, rectification: CE(1 · Σ_k o_k) = CE(model(x))
    joint = compile_trainer(Joint(second, log_shapley=False), lr=0.1)
    logs = trainer.train_on_batch(x, y, return_dict=True)
    joint_logs = joint.train_on_batch(x, y, return_dict=True)
    assert logs["reconboost_phase"] == 1.0
    np.testing.assert_allclose(logs["loss"], joint_logs["loss"], rtol=1e-5)
    for a, b in zip(weights_of(trainer.model), weights_of(joint.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(to_numpy(trainer._rate)) != 1.0  # β learns in the rectification


def test_ga_term_shifts_the_loss_but_not_the_update():
    """Official and BalanceBenchmark: GA is computed on detached predictions."""
    x, y = small_batch()
    runs = []
    for alpha in (0.0, 10.0):
        keras.utils.set_random_seed(3)
        trainer = _step_trainer(alpha=alpha, stage_length=1, rectify_length=1)
        trainer._steps.assign(2.0)  # stage 1: GA is on
        logs = trainer.train_on_batch(x, y, return_dict=True)
        runs.append((logs, weights_of(trainer)))
    (logs0, w0), (logs10, w10) = runs
    for a, b in zip(w0, w10):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        logs10["loss"] - logs0["loss"], 10.0 * logs0["reconboost_ga_loss"], rtol=1e-4
    )


def test_pretrained_uses_the_other_learners_from_the_first_stage():
    """``pretrained=True`` (official --use_pretrain, BalanceBenchmark): the stage-0 weight is
    w1 - w2·softmax(F_-m)_y; without it the empty ensemble gives w1 - w2."""
    x, y = small_batch()
    losses = {}
    for pretrained in (False, True):
        keras.utils.set_random_seed(5)
        trainer = _step_trainer(pretrained=pretrained)
        model = trainer.model
        features = model.encode(x)
        parts = model.unimodal_logits(features)
        bias = to_numpy(model.head_bias()) / 2
        audio, visual = (to_numpy(parts[n]) + bias for n in ("audio", "visual"))
        losses[pretrained] = trainer.train_on_batch(x, y, return_dict=True)["loss"]
    log_p = audio - np.log(np.exp(audio).sum(-1, keepdims=True))
    p_join = np.exp(visual) / np.exp(visual).sum(-1, keepdims=True)
    rows = np.arange(len(y))
    expected = {
        False: np.mean(-(5.0 - 1.0) * log_p[rows, y] / 4),
        True: np.mean(-(5.0 - p_join[rows, y]) * log_p[rows, y] / 4),
    }
    for pretrained, loss in losses.items():
        np.testing.assert_allclose(loss, expected[pretrained], rtol=1e-5)


def test_prediction_is_the_boosted_ensemble_of_the_current_stage():
    x, y = small_batch()
    trainer = _step_trainer(stage_length=1, rectify_length=1)
    model = trainer.model
    trainer._rate.assign(0.5)
    learners = model.unimodal_logits(model.encode(x))
    audio = to_numpy(learners["audio"]) + to_numpy(model.head_bias()) / 2
    # stage 0 without pre-trained learners: only the audio learner is in the ensemble
    np.testing.assert_allclose(trainer.predict(x, verbose=0), 0.5 * audio, rtol=1e-5, atol=1e-6)
    trainer._steps.assign(4.0)  # the last step was stage 1's: every learner is in
    full = 0.5 * to_numpy(model(x))
    np.testing.assert_allclose(trainer.predict(x, verbose=0), full, rtol=1e-5, atol=1e-6)
    results = trainer.evaluate(x, y, verbose=0, return_dict=True)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, full)
    np.testing.assert_allclose(results["loss"], to_numpy(ce), rtol=1e-5)


# ---------------------------------------------------------------------- training, saving
def test_fit_runs_the_epoch_schedule_on_three_modalities():
    rng = np.random.default_rng(0)
    dims = {"audio": 6, "text": 3, "visual": 4}
    x = {n: rng.normal(size=(48, d)).astype("float32") for n, d in dims.items()}
    y = rng.integers(0, 4, 48).astype("int32")
    trainer = compile_trainer(
        ReconBoost(_zoo(dims), stage_length=1, rectify_length=1), lr=0.05, momentum=0.9
    )
    history = trainer.fit(x, y, batch_size=16, epochs=7, verbose=0, validation_data=(x, y))
    logs = history.history
    assert logs["reconboost_active"] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 0.0]
    assert logs["reconboost_phase"] == [0.0, 1.0] * 3 + [0.0]
    assert np.all(np.isfinite(logs["loss"])) and np.all(np.isfinite(logs["val_loss"]))
    assert all(np.all(np.isfinite(w)) for w in weights_of(trainer))
    assert "reconboost_active" not in trainer.evaluate(x, y, verbose=0, return_dict=True)


@pytest.mark.parametrize(
    "kwargs, prepare",
    [
        ({"unit": "step", "stage_length": 2, "rectify_length": 1}, None),
        ({"unit": "epoch", "stage_length": 1, "rectify_length": 2}, lambda t: t._epoch.assign(2)),
    ],
    ids=["step_unit", "epoch_unit"],
)
def test_save_load_and_continue_equals_never_stopping(tmp_path, kwargs, prepare):
    # steps: 4 before (stops inside stage 1's boosting phase), 3 after (crosses into its
    # rectification and stage 2); the epoch unit resumes in stage 0's rectification (β trained).
    loaded, straight = assert_resume_equals_never_stopping(
        tmp_path,
        tiny_zoo_model,
        lambda model: ReconBoost(model, log_shapley=False, **kwargs),
        steps_before=4,
        steps_after=3,
        prepare=prepare,
    )
    for key, value in kwargs.items():
        assert getattr(loaded, key) == value
    assert float(to_numpy(loaded._steps)) == 7.0
    assert float(to_numpy(loaded._rate)) == pytest.approx(float(to_numpy(straight._rate)))


# ----------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight1": -1.0}, "ReconBoost weight1"),
        ({"weight2": float("nan")}, "ReconBoost weight2"),
        ({"alpha": "big"}, "ReconBoost alpha"),
        ({"boost_rate": 0.0}, "ReconBoost boost_rate"),
        ({"stage_length": 0}, "ReconBoost stage_length"),
        ({"rectify_length": -1}, "ReconBoost rectify_length"),
        ({"rectify_length": 1.5}, "ReconBoost rectify_length"),
        ({"unit": "epochs"}, "ReconBoost unit"),
        ({"pretrained": "yes"}, "ReconBoost pretrained"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReconBoost(tiny_zoo_model(), **kwargs)


def test_models_without_per_modality_logits_are_refused():
    gated = _zoo({"audio": 6, "visual": 4}, fusion=GatedFusion(4, name="fusion"))
    for model in (small_av_model(), gated):
        with pytest.raises(ValueError, match="ReconBoost .*linear late fusion"):
            ReconBoost(model)
    with pytest.raises(ValueError, match="ReconBoost .*two or more classes"):
        ReconBoost(tiny_zoo_model(num_classes=1))
    inputs = keras.Input((4,), name="audio")
    with pytest.raises(ValueError, match="two or more"):
        ReconBoost(keras.Model({"audio": inputs}, keras.layers.Dense(2)(inputs)))


def test_probability_outputs_are_refused():
    trainer = ReconBoost(tiny_zoo_model())
    trainer.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = small_batch()
    with pytest.raises(ValueError, match="ReconBoost .*logits"):
        trainer.train_on_batch(x, y)
