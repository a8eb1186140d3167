"""Paired statistics (keras_msam.experiments.stats) on known inputs, and in the run files."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from keras_msam.experiments.config import ConfigError, ExperimentConfig, build_config, parse_methods
from keras_msam.experiments.stats import (
    NO_DIFFERENCE,
    StatisticsError,
    compare_methods,
    holm,
    paired_difference,
)


def test_two_identical_runs_give_an_exact_zero_interval():
    scores = [0.81, 0.84, 0.79, 0.90, 0.86]
    result = paired_difference(scores, list(scores))
    assert result["diff_mean"] == 0.0
    assert result["diff_ci_low"] == 0.0 and result["diff_ci_high"] == 0.0
    assert (result["wins"], result["ties"], result["losses"]) == (0, 5, 0)
    assert result["p_value"] == 1.0
    [row] = compare_methods(
        {"joint": dict(enumerate(scores)), "msam": dict(enumerate(scores))}, "joint"
    )
    assert row.verdict == NO_DIFFERENCE


def test_interval_and_p_value_equal_the_t_formula_and_scipy():
    a = np.array([0.80, 0.85, 0.78, 0.91, 0.88, 0.83])
    b = np.array([0.79, 0.80, 0.80, 0.86, 0.84, 0.82])
    result = paired_difference(a, b)
    d = a - b
    half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert result["diff_mean"] == pytest.approx(d.mean())
    assert result["diff_ci_low"] == pytest.approx(d.mean() - half)
    assert result["diff_ci_high"] == pytest.approx(d.mean() + half)
    assert result["p_value"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert (result["wins"], result["ties"], result["losses"]) == (5, 0, 1)


def test_holm_adjustment_on_a_known_example():
    # sorted p: 0.01 (x3) -> 0.03, 0.03 (x2) -> 0.06, 0.04 (x1) -> max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_better_and_worse_only_when_the_interval_excludes_zero():
    seeds = range(6)
    joint = {s: 0.80 + 0.01 * s for s in seeds}
    better = {s: joint[s] + 0.05 + 0.002 * (s % 2) for s in seeds}
    worse = {s: joint[s] - 0.04 - 0.003 * (s % 3) for s in seeds}
    noisy = {s: joint[s] + (0.05 if s % 2 else -0.05) for s in seeds}
    rows = {r.method: r for r in compare_methods(
        {"joint": joint, "a": better, "b": worse, "c": noisy}, "joint"
    )}  # fmt: skip
    assert rows["a"].verdict == "better" and rows["a"].diff_ci_low > 0
    assert rows["b"].verdict == "worse" and rows["b"].diff_ci_high < 0
    assert rows["c"].verdict == NO_DIFFERENCE and rows["c"].diff_ci_low < 0 < rows["c"].diff_ci_high
    # Holm: three comparisons, so the smallest p-value is multiplied by 3
    smallest = min(rows.values(), key=lambda r: r.p_value)
    assert smallest.p_holm == pytest.approx(min(1.0, 3 * smallest.p_value))


def test_runs_are_paired_by_seed_not_by_position():
    joint = {0: 0.5, 1: 0.6, 2: 0.7, 7: 0.9}
    method = {2: 0.72, 0: 0.52, 1: 0.62}  # another order, seed 7 missing
    [row] = compare_methods({"joint": joint, "m": method}, "joint")
    assert row.n == 3
    assert row.diff_mean == pytest.approx(0.02)
    assert row.wins == 3


def test_errors_name_the_problem():
    with pytest.raises(StatisticsError, match="Reference method 'sam' is not in the run"):
        compare_methods({"joint": {0: 1.0, 1: 1.0}}, "sam")
    with pytest.raises(StatisticsError, match="at least 2"):
        compare_methods({"joint": {0: 0.5}, "msam": {0: 0.6}}, "joint")
    with pytest.raises(ConfigError, match="reference 'ogmge' is not one of the methods"):
        build_config({"methods": ["joint", "msam"], "seeds": 3, "reference": "ogmge"})
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        build_config({"methods": ["joint", "msam"], "seeds": 1, "reference": "joint"})


def test_reference_defaults_to_joint_and_can_be_any_method():
    config = ExperimentConfig(methods=parse_methods("sam,joint,msam"))
    assert config.reference_method() == "joint"
    assert ExperimentConfig(methods=parse_methods("sam,msam")).reference_method() is None
    chosen = build_config({"methods": ["joint", "sam", "msam"], "seeds": 2, "reference": "sam"})
    assert chosen.reference_method() == "sam"


@pytest.mark.slow  # end to end: left out of the fast subset
def test_compare_writes_paired_statistics_in_every_summary(tmp_path):
    from keras_msam.experiments.runner import run_experiment

    config = build_config(
        {
            "num_train": 128,
            "epochs": 1,
            "batch_size": 32,
            "verbose": 0,
            "plots": False,
            "methods": ["joint", "msam", "sam"],
            "seeds": 2,
            "reference": "sam",
            "run_dir": str(tmp_path / "run"),
        }
    )
    result = run_experiment(config, log=lambda line: None)
    with open(tmp_path / "run" / "paired.csv", newline="") as handle:
        paired = list(csv.DictReader(handle))
    assert {(r["metric"], r["method"], r["reference"]) for r in paired} >= {
        ("accuracy", "joint", "sam"), ("accuracy", "msam", "sam"),
        ("accuracy_audio", "msam", "sam"), ("accuracy_visual", "joint", "sam"),
    }  # fmt: skip
    by_method = {r.method: {} for r in result.runs}
    for run in result.runs:
        by_method[run.method][run.seed] = run.accuracy
    expected = paired_difference(
        [by_method["msam"][s] for s in (0, 1)], [by_method["sam"][s] for s in (0, 1)]
    )
    msam = next(row for row in result.summary if row["method"] == "msam")
    assert msam["reference"] == "sam"
    assert msam["diff_mean"] == pytest.approx(expected["diff_mean"])
    assert msam["diff_ci_low"] == pytest.approx(expected["diff_ci_low"])
    assert "diff_mean" not in next(row for row in result.summary if row["method"] == "sam")
    for run in result.runs:  # the new per-run columns are measured, not placeholders
        assert 0.0 <= run.train_accuracy <= 1.0
        assert run.generalisation_gap == pytest.approx(run.train_accuracy - run.accuracy)
        assert math.isfinite(run.sharpness)


@pytest.mark.parametrize("key", ["lr", "rho", "momentum", "sharpness_rho"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_run_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        build_config({key: value})
