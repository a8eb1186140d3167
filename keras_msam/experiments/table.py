"""The plain-text results table printed by `keras-msam compare`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _percent(row: dict[str, Any], key: str) -> str:
    mean = 100 * row[f"{key}_mean"]
    if row["runs"] > 1:
        return f"{mean:.1f}±{100 * row[f'{key}_std']:.1f}%"
    return f"{mean:.1f}%"


def format_table(summary: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """Method, multimodal accuracy, each modality's accuracy alone (the others zeroed), mean
    Shapley share per modality, ms per step; mean ± std when a method ran with several seeds."""
    header = (
        ["method", "acc (all)"]
        + [f"acc ({n} only)" for n in names]
        + [f"share {n}" for n in names]
        + ["ms/step"]
    )
    rows = [
        [row["method"], _percent(row, "accuracy")]
        + [_percent(row, f"accuracy_{n}") for n in names]
        + [f"{row[f'share_{n}_mean']:.2f}" for n in names]
        + [f"{row['ms_per_step_mean']:.1f}"]
        for row in summary
    ]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def format_markdown(summary: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """The same table in Markdown, accuracies as mean ± std in percent (for a README)."""

    def cell(row: dict[str, Any], key: str) -> str:
        mean, std = 100 * row[f"{key}_mean"], 100 * row[f"{key}_std"]
        return f"{mean:.1f} ± {std:.1f}" if row["runs"] > 1 else f"{mean:.1f}"

    header = (
        ["method", "runs", "acc (all) %"]
        + [f"acc ({n} only) %" for n in names]
        + [f"share {n}" for n in names]
        + ["ms/step"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = (
            [f"`{row['method']}`", str(row["runs"]), cell(row, "accuracy")]
            + [cell(row, f"accuracy_{n}") for n in names]
            + [f"{row[f'share_{n}_mean']:.2f}" for n in names]
            + [f"{row['ms_per_step_mean']:.1f}"]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def modality_names(summary: Sequence[dict[str, Any]]) -> list[str]:
    """The modality names of a summary's ``accuracy_<m>_mean`` columns, in order."""
    keys = summary[0] if summary else {}
    return [k[len("accuracy_") : -len("_mean")] for k in keys if k.startswith("accuracy_")
            and k.endswith("_mean") and k != "accuracy_mean"]  # fmt: skip
