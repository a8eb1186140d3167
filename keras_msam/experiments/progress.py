"""Overall progress of a multi-run command: one line per run with its place in the whole and an
estimate of the time left, and a summary at the end."""

from __future__ import annotations

import time
from collections.abc import Callable

#: a run that ends faster than this was read back from its run directory (resumed)
RESUMED_S = 1.0


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _count(runs: int) -> str:
    return f"{runs} run" if runs == 1 else f"{runs} runs"


class Progress:
    """Counts runs of a known total and logs ``[k/n] label: detail, time; about T left``.

    The time left is the mean duration of the runs trained so far (resumed runs excluded) times
    the runs still to go. ``enabled=False`` logs nothing (``--quiet``).
    """

    def __init__(
        self,
        total: int,
        log: Callable[[str], None] = print,
        enabled: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if total < 1:
            raise ValueError(f"Progress needs at least one run, got total={total!r}.")
        self.total, self.log, self.enabled, self.clock = int(total), log, bool(enabled), clock
        self.done = 0
        self.trained: list[float] = []
        self.started_at = clock()
        self._run_started: float | None = None

    def start(self) -> None:
        """Marks the beginning of the next run."""
        self._run_started = self.clock()

    def finish(self, label: str, detail: str = "", resumed: bool | None = None) -> float:
        """Marks the end of the run begun by `start`, logs its line; returns its seconds.

        ``resumed``: whether the run was read back rather than trained (None: judged by its
        duration, under `RESUMED_S` seconds)."""
        if self._run_started is None:
            raise RuntimeError("Progress.finish called without Progress.start.")
        seconds = self.clock() - self._run_started
        self._run_started = None
        self.done += 1
        if resumed is None:
            resumed = seconds < RESUMED_S
        if not resumed:
            self.trained.append(seconds)
        left = self.total - self.done
        if not left:
            remaining = "the last run"
        elif self.trained:
            estimate = sum(self.trained) / len(self.trained) * left
            remaining = f"about {format_duration(estimate)} left ({_count(left)})"
        else:
            remaining = f"{_count(left)} left"
        how_long = "resumed" if resumed else format_duration(seconds)
        detail = f"{detail}, " if detail else ""
        if self.enabled:
            self.log(f"[{self.done}/{self.total}] {label}: {detail}{how_long}; {remaining}")
        return seconds

    def summary(self, what: str = "runs") -> str:
        """``12 runs in 5 min 03 s (2 resumed)``, logged and returned."""
        resumed = self.done - len(self.trained)
        noun = what[:-1] if self.done == 1 and what.endswith("s") else what
        text = f"{self.done} {noun} in {format_duration(self.clock() - self.started_at)}"
        if resumed:
            text += f" ({resumed} resumed)"
        if self.enabled:
            self.log(text)
        return text
