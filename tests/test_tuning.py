"""The equal-budget tuner (keras_msam.experiments.tuning): validation only, resumable, errors."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from keras_msam.experiments.config import ConfigError
from keras_msam.experiments.tuning import build_tune_config, parse_search_option, tune

TINY = {"num_train": 128, "epochs": 1, "batch_size": 32, "verbose": 0, "plots": False}


def _config(tmp_path, **values):
    settings = {**TINY, "methods": ["joint", "msam"], "trials": 2, "trial_seeds": 1}
    settings.update(final_seeds=2, run_dir=str(tmp_path / "tune"))
    settings.update(values)
    return build_tune_config(settings)


@pytest.mark.slow  # end to end: left out of the fast subset
def test_equal_trials_selection_on_validation_and_one_test_evaluation(tmp_path):
    result = tune(_config(tmp_path), log=lambda line: None)
    run_dir = tmp_path / "tune"
    with open(run_dir / "tuning" / "trials.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    counts = {m: sum(r["method"] == m for r in trials) for m in ("joint", "msam")}
    assert counts == {"joint": 2, "msam": 2}  # the same budget for every method
    assert {k for k in trials[0] if k.startswith("param_")} >= {"param_lr"}
    assert all(r["param_rho"] for r in trials if r["method"] == "msam")
    assert not any(r.get("param_rho") for r in trials if r["method"] == "joint")
    for method in ("joint", "msam"):
        values = [float(r["value"]) for r in trials if r["method"] == method]
        chosen = result.selected[method]
        assert chosen["val_accuracy"] == max(values)  # best mean validation score
        # the trial runs never touched the test split
        trial_dir = run_dir / "tuning" / method / f"trial{chosen['trial']}"
        for seed_dir in (d for d in trial_dir.iterdir() if d.is_dir()):
            metrics = json.loads((seed_dir / "metrics.json").read_text())
            assert math.isnan(metrics["accuracy"])
    # the final run holds exactly the selected settings, with final_seeds paired seeds
    final = json.loads((run_dir / "final" / "results.json").read_text())
    assert {r["method"] for r in final["runs"]} == {e["label"] for e in result.selected.values()}
    assert sorted({r["seed"] for r in final["runs"]}) == [0, 1]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in final["runs"])
    joint_label = result.selected["joint"]["label"]
    assert {p["reference"] for p in final["paired"]} == {joint_label}


def test_resume_reuses_finished_trials_and_redraws_an_interrupted_one(tmp_path):
    config = _config(tmp_path, methods=["msam"], trials=2, final_seeds=2)
    first = tune(config, log=lambda line: None)
    trial = tmp_path / "tune" / "tuning" / "msam" / "trial1"
    drawn = json.loads((trial / "params.json").read_text())
    os.remove(trial / "trial.json")  # killed after drawing, before finishing
    for seed_dir in trial.iterdir():
        if seed_dir.is_dir():
            os.remove(seed_dir / "metrics.json")
    untouched = (tmp_path / "tune" / "tuning" / "msam" / "trial0" / "trial.json").stat().st_mtime_ns
    lines = []
    second = tune(config, log=lines.append)
    assert json.loads((trial / "params.json").read_text()) == drawn
    assert json.loads((trial / "trial.json").read_text())["params"] == drawn
    tuned = [line for line in lines if "tune msam" in line]
    assert len(tuned) == 2 and "trial 1/2" in tuned[0] and "resumed" in tuned[0]
    assert "trial 2/2" in tuned[1] and "resumed" not in tuned[1]  # only the interrupted one ran
    after = (tmp_path / "tune" / "tuning" / "msam" / "trial0" / "trial.json").stat().st_mtime_ns
    assert after == untouched
    assert second.selected == first.selected


def test_an_unreadable_trial_file_is_recomputed_and_an_unreadable_tune_json_refused(tmp_path):
    config = _config(tmp_path, methods=["msam"], trials=2, final_seeds=2)
    first = tune(config, log=lambda line: None)
    trial = tmp_path / "tune" / "tuning" / "msam" / "trial1"
    text = (trial / "trial.json").read_text()
    (trial / "trial.json").write_text(text[: len(text) // 2])  # torn by a disk fault
    lines = []
    second = tune(config, log=lines.append)
    assert any("trial.json is unreadable" in line and "recomputing" in line for line in lines)
    assert json.loads((trial / "trial.json").read_text())["params"] == first.trials[-1]["params"]
    assert second.selected == first.selected
    (tmp_path / "tune" / "tune.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"tune\.json is unreadable"):
        tune(config, log=lambda line: None)


def test_the_same_tune_seed_draws_the_same_parameters(tmp_path):
    from keras_msam.experiments import tuning

    config = _config(tmp_path, methods=["msam"])
    space = tuning.search_space(config.experiment.methods[0], config)
    import optuna

    draws = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize")
        study.sampler = tuning._sampler(config, "msam", 0)
        trial = study.ask()
        draws.append({n: tuning._suggest(trial, n, v) for n, v in space.items()})
    assert draws[0] == draws[1]
    assert set(draws[0]) == {"lr", "rho"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"search": {"msam": {"foo": [0.1, 1.0, "log"]}}}, "msam has no hyperparameter 'foo'"),
        ({"methods": ["joint(lr=0.05)", "msam"]}, "empty search space"),
        ({"reference": "sam"}, "reference 'sam' is not one of the methods"),
        ({"final_seeds": 1}, "final_seeds must be >= 2"),
        ({"search": {"msam": {"rho": [0.5, 0.1, "log"]}}}, "low < high"),
        ({"search": {"ogmge": {"alpha": [0.1, 1.0, "log"]}}}, "not tuned here"),
        ({"sampler": "grid"}, "sampler must be one of"),
    ],
)
def test_bad_settings_fail_before_any_training(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        tune(_config(tmp_path, **values), log=lambda line: None)
    assert not (tmp_path / "tune").exists()


def test_search_option_syntax():
    assert parse_search_option("msam.rho=0.005:0.5:log") == ("msam", "rho", (0.005, 0.5, "log"))
    assert parse_search_option("btw.update_every=1:10:int") == (
        "btw",
        "update_every",
        (1, 10, "int"),
    )
    assert parse_search_option("msam.perturb=['all','dominant']") == (
        "msam", "perturb", ["all", "dominant"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="METHOD.PARAM"):
        parse_search_option("rho=0.1:0.2")


@pytest.mark.slow  # end to end: left out of the fast subset
def test_tune_from_the_command_line(tmp_path, capsys):
    from keras_msam.cli.main import main

    run_dir = str(tmp_path / "cli")
    code = main(
        ["tune", "--methods", "joint,sam", "--num-train", "128", "--epochs", "1",
         "--batch-size", "32", "--trials", "1", "--trial-seeds", "1", "--final-seeds", "2",
         "--search", "sam.rho=0.01:0.1:log", "--quiet", "--no-plots", "--run-dir", run_dir]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "Selected on validation" in out and "Δ vs joint" in out
    trials = list(csv.DictReader(open(os.path.join(run_dir, "tuning", "trials.csv"))))
    rho = [float(r["param_rho"]) for r in trials if r["method"] == "sam"]
    assert rho and all(0.01 <= value <= 0.1 for value in rho)
    with pytest.raises(SystemExit, match="no hyperparameter 'gamma'"):
        main(["tune", "--methods", "joint,sam", "--search", "sam.gamma=0.1:0.2",
              "--run-dir", str(tmp_path / "bad")])  # fmt: skip


def test_qmc_design_is_deterministic_in_range_and_spread():
    from keras_msam.experiments.tuning import qmc_point

    space = {"lr": (0.025, 0.4, "log"), "rho": (0.005, 0.5, "log"), "k": (1, 10, "int"),
             "perturb": ["all", "dominant"]}  # fmt: skip
    points = [qmc_point(space, number, seed=0) for number in range(8)]
    assert points == [qmc_point(space, number, seed=0) for number in range(8)]
    assert points != [qmc_point(space, number, seed=1) for number in range(8)]
    for point in points:
        assert 0.025 <= point["lr"] <= 0.4 and 0.005 <= point["rho"] <= 0.5
        assert 1 <= point["k"] <= 10 and point["perturb"] in ("all", "dominant")
    # low discrepancy: 8 points put exactly one in each eighth of the (log) lr range
    import math

    eighths = sorted(int(8 * math.log(p["lr"] / 0.025) / math.log(16)) for p in points)
    assert eighths == list(range(8))
    assert {p["perturb"] for p in points} == {"all", "dominant"}
