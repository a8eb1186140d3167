"""The imbalance regime suite and the failure-signature report, on fixture FSDD recordings."""

from __future__ import annotations

import csv
import json
import os

import pytest
from dataset_fixtures import write_fsdd

from keras_msam.experiments import suite
from keras_msam.experiments.config import ConfigError, read_config_file
from keras_msam.experiments.diagnosis import run_signatures

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "imbalance")


def _history(shares, val_weak, losses):
    return [
        {"epoch": i, "shapley_audio": a, "shapley_visual": 1 - a, "val_accuracy_visual": v,
         "val_accuracy_audio": 0.9, "loss": l}
        for i, (a, v, l) in enumerate(zip(shares, val_weak, losses))
    ]  # fmt: skip


def test_signatures_of_known_histories():
    steady = run_signatures(
        _history([0.7] * 6, [0.3, 0.4, 0.5, 0.5, 0.5, 0.5], [2, 1, 0.8, 0.7, 0.6, 0.6])
    )
    assert steady["weak_modality"] == "visual"
    assert not steady["dominant_oscillates"] and steady["switch_rate"] == 0.0
    assert not steady["weak_collapses"] and not steady["loss_diverges"]
    swinging = run_signatures(_history([0.7, 0.3, 0.7, 0.3, 0.7, 0.3], [0.5] * 6, [1] * 6))
    assert swinging["dominant_oscillates"] and swinging["switch_rate"] == 1.0
    collapsing = run_signatures(_history([0.8] * 6, [0.2, 0.6, 0.5, 0.3, 0.2, 0.1], [1] * 6))
    assert collapsing["weak_collapses"]
    diverging = run_signatures(_history([0.8] * 6, [0.5] * 6, [2, 1, 0.5, 0.9, 1.5, 3.0]))
    assert diverging["loss_diverges"]
    assert run_signatures(_history([0.8] * 3, [0.5] * 3, [1, float("nan"), 1]))["loss_diverges"]


def test_bad_suite_settings_fail_before_training(tmp_path):
    write_fsdd(str(tmp_path / "fsdd"))
    root = str(tmp_path / "fsdd")
    with pytest.raises(ConfigError, match="Unknown regime"):
        suite.validate(suite.SuiteConfig(root, regimes=("speaker_independent", "foggy")))
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        suite.validate(suite.SuiteConfig(root, seeds=1))
    with pytest.raises(ConfigError, match="keep joint"):
        suite.validate(suite.SuiteConfig(root, methods=("sam", "msam")))
    with pytest.raises(ConfigError, match="holds no .wav files"):
        suite.validate(suite.SuiteConfig(str(tmp_path / "missing")))


def test_committed_example_configs_are_the_suite_definition(tmp_path):
    """examples/imbalance/*.toml are generated from the suite; they must not drift."""
    config = suite.SuiteConfig(os.path.join("..", "shared", "data", "fsdd"))
    written = suite.write_example_configs(config, str(tmp_path))
    assert len(written) == len(suite.REGIMES) * len(suite.FUSIONS)
    for path in written:
        committed = os.path.join(EXAMPLES, os.path.basename(path))
        assert os.path.exists(committed), f"{committed} is missing: regenerate examples/imbalance"
        assert read_config_file(committed) == read_config_file(path)


@pytest.mark.slow  # end to end: left out of the fast subset
def test_quick_suite_end_to_end_and_resume(tmp_path):
    root = str(tmp_path / "fsdd")
    write_fsdd(root, speakers=("george", "jackson", "nicolas", "theo"), takes=(0, 5, 10, 11))
    config = suite.SuiteConfig.quick(
        root, str(tmp_path / "suite"), methods=("joint", "msam"), rho_sweep=(0.1,)
    )
    tables = suite.run_suite(config, log=lambda line: None)
    regimes = {(r["regime"], r["method"].split("(")[0]) for r in tables["regimes"]}
    assert regimes == {
        (regime, method) for regime in config.regimes for method in ("joint", "msam")
    }
    with open(tmp_path / "suite" / "regimes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    msam = [r for r in rows if r["method"].startswith("msam")]
    for row in msam:  # paired against tuned Joint, on every modality
        assert float(row["diff_ci_low"]) <= float(row["diff"]) <= float(row["diff_ci_high"])
        assert row["accuracy_audio_diff"] != "" and row["verdict"]
    checks = {(r["check"], r["method"]) for r in tables["checks"]}
    labels = {method for _, method in checks}
    assert any("fixed_dominant_share=0.5" in m for m in labels)
    assert any(m.startswith("sam(") for m in labels)
    assert any("perturb=dominant" in m for m in labels)
    assert {c for c, _ in checks} == {"methods", "epochs=1", "epochs=2"}
    summary = (tmp_path / "suite" / "checks_summary.md").read_text()
    assert "fixed_dominant_share=0.5" in summary and "| epochs |" in summary
    assert (tmp_path / "suite" / "plots" / "regimes.png").exists()
    assert (tmp_path / "suite" / "plots" / "share_trajectories.png").exists()
    assert (tmp_path / "suite" / "regimes.md").read_text().startswith("| regime |")
    verdict = (tmp_path / "suite" / "verdict.md").read_text().splitlines()
    assert verdict[0].startswith("| regime | fusion | dominant") and len(verdict) == 2 + 2
    # tuning selected on validation only: its trial runs have no test accuracy
    trial = json.loads((tmp_path / "suite" / "tune-late" / "tuning" / "selected.json").read_text())
    assert set(trial) == {"joint", "msam"}
    # the control: Joint at M-SAM's learning rate; M-SAM's runs are copied, not retrained
    msam_text = next(t for t in (e["spec"] for e in trial.values()) if t.startswith("msam"))
    regime = next(r for r in suite.REGIMES if r.name == suite.BASE_REGIME)
    msam_metrics = next(
        (tmp_path / "suite" / "tune-late" / "final").glob("msam*/seed0/metrics.json")
    )
    rows = suite.run_control(config, regime, "late", ["joint(lr=0.5)", msam_text], lambda _: None)
    control_lr = dict(suite.parse_method(msam_text).options)["lr"]
    assert {r["method"] for r in rows} == {
        f"joint(lr={control_lr})",
        suite.parse_method(msam_text).label,
    }
    copied = next((tmp_path / "suite" / "controls").rglob("msam*/seed0/metrics.json"))
    assert copied.read_text() == msam_metrics.read_text()
    assert not list((tmp_path / "suite" / "controls").rglob("msam*/seed0/best.weights.h5"))
    assert all("diff" in r for r in rows if r["method"].startswith("msam"))
    # resuming trains nothing again
    stamps = {
        p: os.stat(p).st_mtime_ns
        for p in (str(x) for x in (tmp_path / "suite").rglob("metrics.json"))
    }
    suite.run_suite(config, log=lambda line: None)
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}


def test_report_names_the_signatures_found(tmp_path, capsys):
    from keras_msam.cli.main import main
    from keras_msam.experiments.config import build_config
    from keras_msam.experiments.runner import run_experiment

    config = build_config(
        {"num_train": 128, "epochs": 2, "batch_size": 32, "verbose": 0, "plots": False,
         "methods": ["joint", "msam(rho=5.0)"], "seeds": 2, "run_dir": str(tmp_path / "r")}
    )  # fmt: skip
    run_experiment(config, log=lambda line: None)
    assert main(["report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "Δ vs joint [95% CI]" in out and "Failure signatures" in out
    assert "msam(rho=5.0): " in out and "dominant switch rate" in out
    with pytest.raises(SystemExit, match="reference 'sam' is not in"):
        main(["report", str(tmp_path / "r"), "--reference", "sam"])
