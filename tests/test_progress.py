"""Overall progress of multi-run commands: one line per run with its place in the whole and the
time left, a summary at the end, nothing with --quiet. Runs on the backend of KERAS_BACKEND."""

from __future__ import annotations

import pytest

from keras_msam.experiments.progress import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_give_the_place_the_time_and_an_estimate_of_what_is_left():
    clock, lines = FakeClock(), []
    progress = Progress(4, lines.append, clock=clock)
    for seconds, label in ((30.0, "joint, seed 0"), (0.2, "joint, seed 1"), (50.0, "msam, seed 0")):
        progress.start()
        clock.now += seconds
        progress.finish(label, "test accuracy 90.0 %")
    progress.start()
    clock.now += 10.0
    progress.finish("msam, seed 1")
    assert lines == [
        "[1/4] joint, seed 0: test accuracy 90.0 %, 30 s; about 1 min 30 s left (3 runs)",
        "[2/4] joint, seed 1: test accuracy 90.0 %, resumed; about 1 min 00 s left (2 runs)",
        "[3/4] msam, seed 0: test accuracy 90.0 %, 50 s; about 40 s left (1 run)",
        "[4/4] msam, seed 1: 10 s; the last run",
    ]
    assert progress.summary() == "4 runs in 1 min 30 s (1 resumed)"
    assert lines[-1] == "4 runs in 1 min 30 s (1 resumed)"


def test_quiet_progress_logs_nothing_but_still_counts():
    lines = []
    progress = Progress(2, lines.append, enabled=False, clock=FakeClock())
    progress.start()
    progress.finish("a")
    assert progress.summary() == "1 run in 0 s (1 resumed)" and lines == []


def test_misuse_is_named():
    with pytest.raises(ValueError, match="at least one run"):
        Progress(0)
    with pytest.raises(RuntimeError, match="without Progress.start"):
        Progress(1, clock=FakeClock()).finish("a")


@pytest.mark.parametrize(
    "seconds, text", [(4.2, "4 s"), (65, "1 min 05 s"), (3725, "1 h 02 min"), (-1, "0 s")]
)
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.slow  # end to end: left out of the fast subset
def test_compare_prints_one_line_per_run_and_quiet_prints_none(tmp_path, capsys):
    from keras_msam.cli.main import main

    base = ["compare", "--epochs", "1", "--num-train", "64", "--methods", "joint", "--seeds", "2",
            "--no-plots"]  # fmt: skip
    assert main([*base, "--run-dir", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "[1/2] joint, seed 0: test accuracy" in out and "[2/2] joint, seed 1" in out
    assert "2 runs in" in out and "== joint, seed 0 ==" not in out  # no per-run Keras bars
    assert main([*base, "--run-dir", str(tmp_path / "b"), "--quiet"]) == 0
    assert "[1/2]" not in capsys.readouterr().out
    assert main([*base, "--run-dir", str(tmp_path / "c"), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "== joint, seed 0 ==" in out and "[1/2] joint, seed 0" in out
