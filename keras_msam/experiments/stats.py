"""Paired statistics for comparing methods over seeds.

A seed fixes a run's initialisation and data order and the data set's split is the same for
every method, so the runs of two methods with the same seed are *paired*: the comparison is made
on the per-seed differences d_s = score(method, s) − score(reference, s), not on two independent
samples. For every method against a reference:

    n                  seeds both methods ran
    diff_mean          mean of d_s
    diff_ci_low/high   95 % confidence interval of the mean difference (Student t, n − 1 dof)
    wins/ties/losses   seeds where d_s > tol, |d_s| <= tol, d_s < −tol
    p_value            two-sided paired t-test (scipy.stats.ttest_rel)
    p_holm             Holm–Bonferroni adjusted over all methods compared with the reference
    verdict            "better" / "worse" only when p_holm < alpha (then the interval excludes
                       0 too); otherwise "no significant difference"

Every number comes from scipy.stats; nothing here is hand-rolled beyond the Holm step-down.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05
NO_DIFFERENCE = "no significant difference"


class StatisticsError(ValueError):
    """A comparison that cannot be made (missing reference, too few paired seeds)."""


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """One method against the reference on one metric (fields as in the module docstring)."""

    metric: str
    method: str
    reference: str
    n: int
    method_mean: float
    reference_mean: float
    diff_mean: float
    diff_ci_low: float
    diff_ci_high: float
    wins: int
    ties: int
    losses: int
    p_value: float
    p_holm: float = math.nan
    verdict: str = NO_DIFFERENCE

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def paired_difference(
    values: Sequence[float],
    reference_values: Sequence[float],
    confidence: float = CONFIDENCE,
    tie_tolerance: float = 0.0,
) -> dict[str, float]:
    """Mean paired difference, its confidence interval, wins/ties/losses and the t-test p-value.

    Args:
        values: The method's scores, one per seed.
        reference_values: The reference's scores for the same seeds, in the same order.
        confidence: Level of the interval (0.95 by default).
        tie_tolerance: |difference| up to which a seed counts as a tie.

    Raises:
        StatisticsError: fewer than 2 pairs, or sequences of different lengths.
    """
    from scipy import stats

    a, b = np.asarray(values, float), np.asarray(reference_values, float)
    if a.shape != b.shape:
        raise StatisticsError(f"Paired scores need equal lengths, got {a.size} and {b.size}.")
    if a.size < 2:
        raise StatisticsError(
            f"A paired test needs at least 2 seeds run by both methods, got {a.size}; "
            "run with --seeds 2 or more (benchmark tables use 5)."
        )
    d = a - b
    n = d.size
    mean = float(d.mean())
    spread = float(d.std(ddof=1))
    if spread == 0.0:  # every seed gave the same difference: an exact, degenerate interval
        low = high = mean
        p = 1.0 if mean == 0.0 else 0.0
    else:
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=spread / math.sqrt(n))
        p = float(stats.ttest_rel(a, b).pvalue)
    return {
        "n": n,
        "method_mean": float(a.mean()),
        "reference_mean": float(b.mean()),
        "diff_mean": mean,
        "diff_ci_low": float(low),
        "diff_ci_high": float(high),
        "wins": int((d > tie_tolerance).sum()),
        "ties": int((np.abs(d) <= tie_tolerance).sum()),
        "losses": int((d < -tie_tolerance).sum()),
        "p_value": p,
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), same order."""
    order = np.argsort(np.asarray(p_values, float), kind="stable")
    m = len(order)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted.tolist()


def verdict(comparison: Mapping[str, float], alpha: float = ALPHA) -> str:
    """ "better" / "worse" when the Holm-adjusted p-value is below ``alpha`` and the interval
    excludes 0, else "no significant difference"."""
    excludes_zero = comparison["diff_ci_low"] > 0 or comparison["diff_ci_high"] < 0
    if comparison["p_holm"] < alpha and excludes_zero:
        return "better" if comparison["diff_mean"] > 0 else "worse"
    return NO_DIFFERENCE


def compare_methods(
    scores: Mapping[str, Mapping[int, float]],
    reference: str,
    metric: str = "accuracy",
    confidence: float = CONFIDENCE,
    alpha: float = ALPHA,
    tie_tolerance: float = 0.0,
) -> list[PairedComparison]:
    """Every method of ``scores`` against ``reference``, paired by seed, Holm-corrected.

    Args:
        scores: ``{method: {seed: score}}``; only the seeds both methods ran are paired.
        reference: The method the others are compared with (must be in ``scores``).
        metric: The name recorded in each row.

    Raises:
        StatisticsError: the reference is missing, or a method shares fewer than 2 seeds with it.
    """
    if reference not in scores:
        raise StatisticsError(
            f"Reference method {reference!r} is not in the run; methods are {', '.join(scores)}."
        )
    rows = []
    for method, by_seed in scores.items():
        if method == reference:
            continue
        seeds = sorted(set(by_seed) & set(scores[reference]))
        finite = [s for s in seeds if np.isfinite(by_seed[s]) and np.isfinite(scores[reference][s])]
        if len(finite) < 2:
            raise StatisticsError(
                f"{method!r} and the reference {reference!r} share {len(finite)} seed(s) with "
                f"finite {metric}; a paired test needs at least 2."
            )
        numbers = paired_difference(
            [by_seed[s] for s in finite],
            [scores[reference][s] for s in finite],
            confidence=confidence,
            tie_tolerance=tie_tolerance,
        )
        rows.append(PairedComparison(metric=metric, method=method, reference=reference, **numbers))
    adjusted = holm([row.p_value for row in rows]) if rows else []
    result = []
    for row, p in zip(rows, adjusted):
        row = dataclasses.replace(row, p_holm=p)
        result.append(dataclasses.replace(row, verdict=verdict(row.row(), alpha)))
    return result


def scores_by_method(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, dict[int, float]]:
    """``{method: {seed: row[metric]}}`` from result rows (results.csv / results.json "runs")."""
    scores: dict[str, dict[int, float]] = {}
    for row in rows:
        if metric in row:
            scores.setdefault(str(row["method"]), {})[int(row["seed"])] = float(row[metric])
    return scores


def paired_table(
    rows: Sequence[Mapping[str, Any]],
    reference: str,
    metrics: Sequence[str] = ("accuracy",),
    **options: Any,
) -> list[dict[str, Any]]:
    """Paired comparisons of every method with ``reference`` for each metric, as flat rows."""
    out = []
    for metric in metrics:
        out += [
            c.row()
            for c in compare_methods(scores_by_method(rows, metric), reference, metric, **options)
        ]
    return out


def format_difference(row: Mapping[str, Any], scale: float = 100.0) -> str:
    """``+1.2 [−0.4, +2.8]`` (percentage points by default)."""
    return (
        f"{scale * row['diff_mean']:+.1f} "
        f"[{scale * row['diff_ci_low']:+.1f}, {scale * row['diff_ci_high']:+.1f}]"
    )
