"""The `keras-msam` command line: compare/train on the embedded data set, errors, backend switch."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import pytest

from keras_msam.cli.main import build_parser, main


def test_compare_trains_each_method_and_prints_the_table(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run directory goes to ./runs
    code = main(
        ["compare", "--epochs", "1", "--num-train", "128", "--quiet", "--methods", "joint,msam"]
    )
    out = capsys.readouterr().out
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("method"))
    for column in (
        "acc (all)",
        "acc (audio only)",
        "acc (visual only)",
        "share audio",
        "share visual",
        "ms/step",
    ):
        assert column in header
    rows = [line.split() for line in out.splitlines() if line.startswith(("joint ", "msam "))]
    assert [row[0] for row in rows] == ["joint", "msam"]
    for row in rows:
        shares = float(row[4]) + float(row[5])
        assert abs(shares - 1.0) < 0.011  # two rounded shares
        assert float(row[6]) > 0
    assert len(list((tmp_path / "runs").glob("*/results.csv"))) == 1


def test_train_runs_one_method_with_progress_bars(capsys, tmp_path):
    run_dir = str(tmp_path / "run")
    args = ["train", "--method", "sam", "--epochs", "1", "--num-train", "64", "--run-dir", run_dir]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "== sam, seed 0 ==" in out and "sharpness" in out  # the progress bar shows the logs


def test_unknown_method_and_backend_switch_errors(capsys):
    with pytest.raises(SystemExit, match="Unknown method 'adam'"):
        main(["compare", "--methods", "joint,adam", "--epochs", "1"])
    other = next(b for b in ("jax", "tensorflow", "torch") if b != keras.backend.backend())
    with pytest.raises(SystemExit, match="cannot switch"):
        main(["compare", "--backend", other, "--epochs", "1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--backend", "numpy"])


@pytest.mark.slow  # end to end: left out of the fast subset
def test_backend_flag_selects_the_backend_in_a_new_process(tmp_path):
    backend = keras.backend.backend()
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_msam.cli.main",
            "train",
            "--backend",
            backend,
            "--method",
            "joint",
            "--epochs",
            "1",
            "--num-train",
            "64",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"backend={backend}" in result.stdout


def test_python_dash_m_runs_the_cli_and_the_version_lives_in_one_place():
    import importlib.metadata
    import subprocess
    import sys

    import keras_msam

    result = subprocess.run(
        [sys.executable, "-m", "keras_msam", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"keras-msam {keras_msam.__version__}"
    assert importlib.metadata.version("keras-msam") == keras_msam.__version__
    helped = subprocess.run(
        [sys.executable, "-m", "keras_msam", "--help"], capture_output=True, text=True, timeout=300
    )
    assert helped.returncode == 0 and "compare" in helped.stdout
