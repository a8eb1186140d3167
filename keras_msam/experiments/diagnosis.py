"""The seed paper's failure signatures, read from a run directory (`keras-msam report`).

Per run (method × seed), from its per-epoch history:

- ``dominant_oscillates``: the dominant modality (largest epoch-mean Shapley share) changes in
  at least `OSCILLATION_RATE` of the epoch-to-epoch transitions;
- ``weak_collapses``: the non-dominant modality (smallest mean share over training) ends with
  a validation accuracy alone below `COLLAPSE_FRACTION` of its own peak;
- ``loss_diverges``: the training loss becomes non-finite, or ends above `DIVERGENCE_FACTOR`
  times its lowest value (ρ too large, or the learning rate);

and per method, from the paired statistics against the reference:

- ``no_gain``: the multimodal test accuracy is not significantly better than the reference's
  (the 95 % CI of the paired difference includes 0 or lies below it);
- ``weak_below_reference``: the weak modality's accuracy alone is significantly below the
  reference's.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

OSCILLATION_RATE = 0.25
COLLAPSE_FRACTION = 0.5
DIVERGENCE_FACTOR = 1.5
SIGNATURES = (
    "dominant_oscillates",
    "weak_collapses",
    "loss_diverges",
    "no_gain",
    "weak_below_reference",
)


def run_signatures(history: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """The per-run signatures of one history (rows of history.json), with their measures."""
    names = sorted(k[len("shapley_") :] for k in (history[0] if history else {})
                   if k.startswith("shapley_"))  # fmt: skip
    result: dict[str, Any] = {"epochs": len(history)}
    if names:
        shares = np.array([[row.get(f"shapley_{n}", math.nan) for n in names] for row in history])
        dominant = np.nanargmax(np.nan_to_num(shares, nan=-1.0), axis=1)
        switches = int((dominant[1:] != dominant[:-1]).sum())
        rate = switches / max(len(dominant) - 1, 1)
        weak = names[int(np.nanargmin(np.nanmean(shares, axis=0)))]
        result.update(switch_rate=rate, weak_modality=weak)
        result["dominant_oscillates"] = len(dominant) >= 4 and rate >= OSCILLATION_RATE
        key = f"val_accuracy_{weak}"
        series = [row.get(key, math.nan) for row in history]
        if any(math.isfinite(v) for v in series):
            peak, final = float(np.nanmax(series)), float(series[-1])
            result.update(weak_peak=peak, weak_final=final)
            result["weak_collapses"] = bool(final < COLLAPSE_FRACTION * peak)
    losses = [row.get("loss", math.nan) for row in history]
    if losses:
        finite = [v for v in losses if math.isfinite(v)]
        diverged = len(finite) < len(losses) or (
            bool(finite) and finite[-1] > DIVERGENCE_FACTOR * min(finite)
        )
        result["loss_diverges"] = bool(diverged)
    return result


def method_signatures(
    run_dir: str, paired: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per method of a run directory: the share of its seeds showing each per-run signature,
    and the paired signatures against the reference."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        path = _history_path(run_dir, run)
        if path is None:
            continue
        with open(path) as handle:
            history = json.load(handle)
        by_method.setdefault(str(run["method"]), []).append(run_signatures(history))
    verdicts = {(p["metric"], p["method"]): p for p in paired}
    rows = []
    for method, found in by_method.items():
        row: dict[str, Any] = {"method": method, "runs": len(found)}
        for name in ("dominant_oscillates", "weak_collapses", "loss_diverges"):
            flags = [f[name] for f in found if name in f]
            row[name] = sum(flags) / len(flags) if flags else math.nan
        rates = [f["switch_rate"] for f in found if "switch_rate" in f]
        row["switch_rate"] = float(np.mean(rates)) if rates else math.nan
        weak = [f["weak_modality"] for f in found if "weak_modality" in f]
        row["weak_modality"] = max(set(weak), key=weak.count) if weak else ""
        overall = verdicts.get(("accuracy", method))
        if overall is not None:
            row["no_gain"] = overall["verdict"] != "better"
            weak_match = verdicts.get((f"accuracy_{row['weak_modality']}", method))
            row["weak_below_reference"] = bool(weak_match and weak_match["verdict"] == "worse")
        rows.append(row)
    return rows


def _history_path(run_dir: str, run: Mapping[str, Any]) -> str | None:
    from keras_msam.experiments.config import parse_method

    try:
        slug = parse_method(str(run["method"])).slug
    except ValueError:
        return None
    path = os.path.join(run_dir, slug, f"seed{int(run['seed'])}", "history.json")
    return path if os.path.exists(path) else None


def format_signatures(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per method naming the signatures seen (with the share of seeds)."""
    lines = []
    for row in rows:
        seen = []
        for name in ("dominant_oscillates", "weak_collapses", "loss_diverges"):
            share = row.get(name, math.nan)
            if isinstance(share, float) and share > 0:
                seen.append(f"{name.replace('_', ' ')} ({share:.0%} of seeds)")
        if row.get("no_gain"):
            seen.append("no significant gain over the reference")
        if row.get("weak_below_reference"):
            seen.append(f"weak modality ({row['weak_modality']}) significantly below the reference")
        rate = row.get("switch_rate", math.nan)
        detail = f"dominant switch rate {rate:.2f}" if math.isfinite(rate) else ""
        text = "; ".join(seen) if seen else "none"
        lines.append(f"  {row['method']}: {text}" + (f"  [{detail}]" if detail else ""))
    return "\n".join(lines)
