"""Interrupted at any point, nothing lost (issue 17.4): SIGKILL at random points, then resume;
unreadable run files are recomputed (a run's) or refused with the file named (config.json)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest

from keras_msam.experiments import ExperimentConfig, parse_methods, run_experiment
from keras_msam.experiments.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"num_train": 64, "epochs": 2, "batch_size": 32, "verbose": 0, "plots": False}


def _benchmark():
    path = os.path.join(ROOT, "benchmarks", "fault_injection.py")
    spec = importlib.util.spec_from_file_location("fault_injection", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # end to end: left out of the fast subset
def test_killed_at_random_points_resumes_to_the_uninterrupted_results(tmp_path, capsys):
    """Four processes killed with SIGKILL (random points: mid-epoch, validation, a torn
    checkpoint or result file, between runs), then one to the end: the same results."""
    faults = _benchmark()
    out_json = str(tmp_path / "out.json")
    arguments = ["--trials", "1", "--kills", "4", "--first-trial", "3"]
    code = faults.main([*arguments, "--directory", str(tmp_path), "--json", out_json])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["trials_with_same_results"] == 1
    assert summary["kills"] >= 2, out  # the drawn points landed within the work
    uninterrupted = faults.results(str(tmp_path / "uninterrupted"))
    assert len(uninterrupted) == 4  # 2 methods x 2 seeds


def test_the_comparison_sees_a_changed_result(tmp_path):
    faults = _benchmark()
    want = {("joint", 0): {k: 0.5 for k in faults.COMPARED}}
    got = {("joint", 0): {**want["joint", 0], "accuracy": 0.5 + 1e-3}}
    assert faults.differences(got, want) == ["('joint', 0) accuracy: 0.501 != 0.5"]
    assert faults.differences(want, want) == []


def _config(tmp_path, **overrides):
    return ExperimentConfig(
        **{**TINY, **overrides}, methods=parse_methods("msam"), run_dir=str(tmp_path / "r")
    )


def test_a_truncated_metrics_file_is_recomputed_and_named(tmp_path):
    lines = []
    first = run_experiment(_config(tmp_path), log=lines.append)
    metrics = tmp_path / "r" / "msam" / "seed0" / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    again = run_experiment(_config(tmp_path), log=lines.append)
    assert any(f"{metrics} is unreadable" in line and "recomputing" in line for line in lines)
    assert again.runs[0].accuracy == first.runs[0].accuracy
    assert json.loads(metrics.read_text())["accuracy"] == first.runs[0].accuracy


def test_a_corrupt_backup_is_recomputed_and_named(tmp_path):
    lines = []
    first = run_experiment(_config(tmp_path), log=lines.append)
    run = tmp_path / "r" / "msam" / "seed0"
    # as an interrupted run: no metrics yet, a backup whose weights file is garbage
    os.remove(run / "metrics.json")
    (run / "backup").mkdir()
    (run / "backup" / "epoch1.weights.h5").write_bytes(b"not an HDF5 file")
    (run / "backup" / "state.json").write_text('{"epoch": 1, "weights": "epoch1.weights.h5"}')
    again = run_experiment(_config(tmp_path), log=lines.append)
    assert any("epoch1.weights.h5 is unreadable" in line for line in lines), lines
    assert again.runs[0].accuracy == first.runs[0].accuracy
    assert not (run / "backup").exists()


def test_a_best_checkpoint_named_but_missing_is_recomputed(tmp_path):
    lines = []
    first = run_experiment(_config(tmp_path), log=lines.append)
    run = tmp_path / "r" / "msam" / "seed0"
    os.remove(run / "metrics.json")
    os.remove(run / "best.weights.h5")
    again = run_experiment(_config(tmp_path), log=lines.append)
    assert any("best.weights.h5 is unreadable (named by best.json" in line for line in lines)
    assert again.runs[0].accuracy == first.runs[0].accuracy


def test_an_unreadable_config_json_is_refused_with_its_name(tmp_path):
    run_experiment(_config(tmp_path), log=lambda line: None)
    path = tmp_path / "r" / "config.json"
    path.write_text('{"config": {')
    with pytest.raises(ConfigError, match=r"config\.json is unreadable.*another --run-dir"):
        run_experiment(_config(tmp_path), log=lambda line: None)
    shutil.rmtree(tmp_path / "r")
