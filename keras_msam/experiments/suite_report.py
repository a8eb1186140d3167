"""The compact verdict table of the imbalance suite (docs/guides/when-msam-helps.md).

One row per regime × fusion: the dominant modality under Joint, Joint's accuracy, and paired
differences (points, 95 % CI, 5 seeds) of SAM − Joint, M-SAM − Joint, M-SAM − SAM and M-SAM −
Joint at M-SAM's learning rate (the control), plus the weak modality's M-SAM − Joint. A
difference is marked **bold** with its verdict only when the Holm-adjusted paired t-test says
so (the interval then excludes 0; Holm over the methods of that run directory compared with the
same reference); everything else reads as no significant difference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from keras_msam.experiments.config import parse_method
from keras_msam.experiments.stats import StatisticsError, compare_methods, scores_by_method


def _runs(run_dir: str) -> list[dict[str, Any]] | None:
    path = os.path.join(run_dir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)["runs"]


def _by_name(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``{method name: label}`` (the first label of each name)."""
    names: dict[str, str] = {}
    for run in runs:
        names.setdefault(parse_method(str(run["method"])).name, str(run["method"]))
    return names


def _cell(runs: Sequence[dict[str, Any]], metric: str, method: str, reference: str) -> str:
    """``method`` against ``reference``, Holm-adjusted over every method of the directory
    compared with that reference (as in its own tables)."""
    try:
        rows = compare_methods(scores_by_method(runs, metric), reference, metric)
    except (StatisticsError, ValueError):
        return "—"
    row = next((r for r in rows if r.method == method), None)
    if row is None:
        return "—"
    text = (
        f"{100 * row.diff_mean:+.1f} [{100 * row.diff_ci_low:+.1f}, {100 * row.diff_ci_high:+.1f}]"
    )
    return f"**{text} {row.verdict}**" if row.verdict != "no significant difference" else text


def verdict_rows(
    run_dir: str, regimes: Sequence[str], fusions: Sequence[str]
) -> list[dict[str, str]]:
    """The compact rows for every regime × fusion with finished runs under ``run_dir``."""
    rows = []
    for regime in regimes:
        for fusion in fusions:
            if regime == "speaker_independent":
                path = os.path.join(run_dir, f"tune-{fusion}", "final")
            else:
                path = os.path.join(run_dir, "regimes", f"{regime}-{fusion}")
            runs = _runs(path)
            if not runs:
                continue
            names = _by_name(runs)
            if "joint" not in names:
                continue
            joint = names["joint"]
            joint_runs = [r for r in runs if r["method"] == joint]
            modalities = sorted(k[len("share_") :] for k in joint_runs[0] if k.startswith("share_"))
            shares = {
                m: sum(r[f"share_{m}"] for r in joint_runs) / len(joint_runs) for m in modalities
            }
            dominant = max(shares, key=shares.get)
            weak = min(shares, key=shares.get)
            accuracy = [r["accuracy"] for r in joint_runs]
            row = {
                "regime": regime,
                "fusion": fusion,
                "dominant": f"{dominant} {shares[dominant]:.2f}",
                "joint": f"{100 * sum(accuracy) / len(accuracy):.1f}",
                "seeds": str(len(joint_runs)),
                "sam-joint": _cell(runs, "accuracy", names["sam"], joint)
                if "sam" in names
                else "—",
                "msam-joint": _cell(runs, "accuracy", names["msam"], joint)
                if "msam" in names
                else "—",
                "msam-sam": (
                    _cell(runs, "accuracy", names["msam"], names["sam"])
                    if {"sam", "msam"} <= set(names)
                    else "—"
                ),
                "weak": weak,
                "weak msam-joint": (
                    _cell(runs, f"accuracy_{weak}", names["msam"], joint)
                    if "msam" in names
                    else "—"
                ),
            }
            control = _runs(os.path.join(run_dir, "controls", f"{regime}-{fusion}"))
            row["msam-joint same lr"] = "—"
            if control:
                control_names = _by_name(control)
                if {"joint", "msam"} <= set(control_names):
                    row["msam-joint same lr"] = _cell(
                        control, "accuracy", control_names["msam"], control_names["joint"]
                    )
            rows.append(row)
    return rows


def verdict_markdown(rows: Sequence[dict[str, str]]) -> str:
    """The compact rows as a Markdown table (differences in points, 95 % CI)."""
    header = [
        "regime", "fusion", "dominant (Joint share)", "Joint acc %", "seeds", "SAM − Joint",
        "M-SAM − Joint", "M-SAM − SAM", "M-SAM − Joint at M-SAM's lr", "weak modality",
        "weak alone: M-SAM − Joint",
    ]  # fmt: skip
    keys = [
        "regime", "fusion", "dominant", "joint", "seeds", "sam-joint", "msam-joint", "msam-sam",
        "msam-joint same lr", "weak", "weak msam-joint",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def checks_markdown(run_dir: str) -> str:
    """The paper's checks: each variant's test and validation accuracy, its paired difference
    with tuned Joint and with tuned M-SAM; then M-SAM − Joint per training length."""
    runs = _runs(os.path.join(run_dir, "checks"))
    if not runs:
        return ""
    labels = list(dict.fromkeys(str(r["method"]) for r in runs))
    joint = next(label for label in labels if label.startswith("joint"))
    msam = next(label for label in labels if label.startswith("msam"))
    lines = [
        "| variant | test acc % | validation acc % | − tuned Joint [95% CI] "
        "| − tuned M-SAM [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        group = [r for r in runs if r["method"] == label]
        test = 100 * sum(r["accuracy"] for r in group) / len(group)
        validation = 100 * sum(r["best_val_accuracy"] for r in group) / len(group)
        versus_joint = _cell(runs, "accuracy", label, joint) if label != joint else "(reference)"
        versus_msam = _cell(runs, "accuracy", label, msam) if label != msam else "(reference)"
        lines.append(
            f"| `{label}` | {test:.1f} | {validation:.1f} | {versus_joint} | {versus_msam} |"
        )
    lengths = sorted(
        int(name[len("checks-epochs") :])
        for name in os.listdir(run_dir)
        if name.startswith("checks-epochs")
    )
    if lengths:
        lines += [
            "",
            "| epochs | Joint acc % | M-SAM acc % | M-SAM − Joint [95% CI] |",
            "|---|---|---|---|",
        ]
        for epochs in lengths:
            length_runs = _runs(os.path.join(run_dir, f"checks-epochs{epochs}"))
            if not length_runs:
                continue
            means = {}
            for label in (joint, msam):
                group = [r for r in length_runs if r["method"] == label]
                means[label] = 100 * sum(r["accuracy"] for r in group) / max(len(group), 1)
            lines.append(
                f"| {epochs} | {means[joint]:.1f} | {means[msam]:.1f} | "
                f"{_cell(length_runs, 'accuracy', msam, joint)} |"
            )
    return "\n".join(lines)
