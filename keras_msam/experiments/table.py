"""The plain-text and Markdown results tables printed by `keras-msam compare` and `report`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras_msam.experiments.stats import format_difference


def _percent(row: dict[str, Any], key: str) -> str:
    mean = 100 * row[f"{key}_mean"]
    if row["runs"] > 1:
        return f"{mean:.1f}±{100 * row[f'{key}_std']:.1f}%"
    return f"{mean:.1f}%"


def _paired_cells(row: dict[str, Any], reference: str | None) -> list[str]:
    """Δ [95 % CI] in points, W/T/L, Holm p and the verdict; "reference" / "—" otherwise."""
    if reference is None:
        return []
    if row["method"] == reference:
        return ["(reference)", "", "", ""]
    if "diff_mean" not in row:
        return ["—", "", "", ""]
    return [
        format_difference(row),
        f"{row['wins']}/{row['ties']}/{row['losses']}",
        f"{row['p_holm']:.3f}",
        row["verdict"],
    ]


def _reference(summary: Sequence[dict[str, Any]]) -> str | None:
    for row in summary:
        if row.get("reference"):
            return str(row["reference"])
    return None


def _paired_header(reference: str | None) -> list[str]:
    if reference is None:
        return []
    return [f"Δ vs {reference} [95% CI]", "W/T/L", "p (Holm)", "verdict"]


def format_table(summary: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """Method, multimodal accuracy, each modality's accuracy alone (the others zeroed), mean
    Shapley share per modality, ms per step; mean ± std when a method ran with several seeds;
    with a reference method, the paired difference of the multimodal accuracy (points, 95 %
    CI), wins/ties/losses over seeds, the Holm-adjusted p-value and the verdict."""
    reference = _reference(summary)
    header = (
        ["method", "acc (all)"]
        + [f"acc ({n} only)" for n in names]
        + [f"share {n}" for n in names]
        + ["ms/step"]
        + _paired_header(reference)
    )
    rows = [
        [row["method"], _percent(row, "accuracy")]
        + [_percent(row, f"accuracy_{n}") for n in names]
        + [f"{row[f'share_{n}_mean']:.2f}" for n in names]
        + [f"{row['ms_per_step_mean']:.1f}"]
        + _paired_cells(row, reference)
        for row in summary
    ]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def format_markdown(summary: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """The same table in Markdown, accuracies as mean ± std in percent (for a README)."""

    def cell(row: dict[str, Any], key: str) -> str:
        mean, std = 100 * row[f"{key}_mean"], 100 * row[f"{key}_std"]
        return f"{mean:.1f} ± {std:.1f}" if row["runs"] > 1 else f"{mean:.1f}"

    reference = _reference(summary)
    header = (
        ["method", "runs", "acc (all) %"]
        + [f"acc ({n} only) %" for n in names]
        + [f"share {n}" for n in names]
        + ["ms/step"]
        + _paired_header(reference)
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = (
            [f"`{row['method']}`", str(row["runs"]), cell(row, "accuracy")]
            + [cell(row, f"accuracy_{n}") for n in names]
            + [f"{row[f'share_{n}_mean']:.2f}" for n in names]
            + [f"{row['ms_per_step_mean']:.1f}"]
            + _paired_cells(row, reference)
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def modality_names(summary: Sequence[dict[str, Any]]) -> list[str]:
    """The modality names of a summary's ``accuracy_<m>_mean`` columns, in order."""
    keys = summary[0] if summary else {}
    return [k[len("accuracy_") : -len("_mean")] for k in keys if k.startswith("accuracy_")
            and k.endswith("_mean") and k != "accuracy_mean"]  # fmt: skip
