"""Errors and check reports shared by every loader."""

from __future__ import annotations

import dataclasses
import os


class DataFormatError(ValueError):
    """A data set directory or file does not match the format its loader reads.

    Attributes:
        path: The file or directory that is wrong (missing, malformed or unreadable).
    """

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = os.fspath(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


class MissingDependencyError(ImportError):
    """An optional package a loader needs is not installed."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set on disk: the path and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclasses.dataclass
class CheckReport:
    """What `zoo.datasets.check` found: problems by path, and a summary of what was read.

    Attributes:
        name: Registered data set name.
        root: The directory (or file) that was checked.
        problems: Every problem found, each naming its path.
        summary: Split sizes, shapes and counts of what was read successfully.
    """

    name: str
    root: str
    problems: list[Problem] = dataclasses.field(default_factory=list)
    summary: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str | os.PathLike, message: str) -> None:
        problem = Problem(os.fspath(path), message)
        if problem not in self.problems:  # a file shared by several splits is reported once
            self.problems.append(problem)

    def add_error(self, error: DataFormatError) -> None:
        self.add(error.path, error.reason)

    def format(self, max_problems: int = 50) -> str:
        """Returns a human-readable report, one problem per line."""
        where = self.root or "(generated in process)"
        lines = [f"{self.name} at {where}: " + ("OK" if self.ok else "PROBLEMS FOUND")]
        for key, value in self.summary.items():
            lines.append(f"  {key}: {value}")
        for problem in self.problems[:max_problems]:
            lines.append(f"  ERROR {problem}")
        if len(self.problems) > max_problems:
            lines.append(f"  ... and {len(self.problems) - max_problems} more problems")
        return "\n".join(lines)
