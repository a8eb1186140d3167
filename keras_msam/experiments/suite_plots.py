"""Figures of the imbalance suite: Δ accuracy vs Joint per regime, Shapley-share trajectories."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_msam.experiments.config import parse_method


def _pyplot() -> Any:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_regimes(run_dir: str, rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Δ multimodal accuracy vs Joint with 95 % CIs, one row per regime × fusion × method."""
    points = [r for r in rows if "diff" in r]
    plt = _pyplot()
    if not points or plt is None:
        return None

    methods = list(dict.fromkeys(parse_method(r["method"]).name for r in points))
    figure, axis = plt.subplots(figsize=(8, 0.32 * len(points) + 1.5))
    labels = []
    for index, row in enumerate(points):
        name = parse_method(row["method"]).name
        color = f"C{methods.index(name)}"
        low, high = 100 * row["diff_ci_low"], 100 * row["diff_ci_high"]
        axis.plot([low, high], [index, index], color=color)
        axis.plot(100 * row["diff"], index, "o", color=color)
        labels.append(f"{row['regime']} / {row['fusion']} / {name}")
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(points)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel("Δ test accuracy vs Joint (points), mean and 95% CI over paired seeds")
    axis.set_title("Imbalance regimes: each method against tuned Joint")
    path = os.path.join(run_dir, "plots", "regimes.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_share_trajectories(run_dir: str, run_dirs: Mapping[tuple[str, str], str]) -> str | None:
    """One panel per regime × fusion: each modality's Shapley share per epoch (training logs,
    mean over seeds), solid for Joint, dashed for M-SAM, dotted for SAM."""
    plt = _pyplot()
    panels = [(key, path) for key, path in run_dirs.items() if _has_results(path)]
    if plt is None or not panels:
        return None
    columns = 4
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    styles = {"joint": "-", "msam": "--", "sam": ":"}
    for axis, ((regime, fusion), path) in zip(axes.flat, panels):
        for method, shares in _mean_shares(path).items():
            name = parse_method(method).name
            for index, (modality, series) in enumerate(sorted(shares.items())):
                axis.plot(
                    range(1, len(series) + 1),
                    series,
                    styles.get(name, "-."),
                    color=f"C{index}",
                    label=f"{name}: {modality}",
                    marker="." if len(series) < 3 else None,
                )
        axis.set_title(f"{regime} / {fusion}", fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_xlabel("epoch", fontsize=7)
        axis.set_ylabel("Shapley share", fontsize=7)
        axis.tick_params(labelsize=6)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
    figure.suptitle("Shapley share per epoch (mean over seeds): joint —, msam --, sam ··")
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    path = os.path.join(run_dir, "plots", "share_trajectories.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _has_results(path: str) -> bool:
    return os.path.exists(os.path.join(path, "results.json"))


def _mean_shares(path: str) -> dict[str, dict[str, list[float]]]:
    """``{method: {modality: per-epoch mean share over seeds}}`` from a run directory."""
    with open(os.path.join(path, "results.json")) as handle:
        runs = json.load(handle)["runs"]
    out: dict[str, dict[str, list[float]]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        histories = []
        for run in (r for r in runs if r["method"] == method):
            history = os.path.join(
                path, parse_method(method).slug, f"seed{run['seed']}", "history.json"
            )
            if os.path.exists(history):
                with open(history) as handle:
                    histories.append(json.load(handle))
        if not histories:
            continue
        length = min(len(h) for h in histories)
        names = sorted(k[len("shapley_") :] for k in histories[0][0] if k.startswith("shapley_"))
        out[method] = {
            n: np.mean(
                [[h[e][f"shapley_{n}"] for e in range(length)] for h in histories], axis=0
            ).tolist()
            for n in names
        }
    return out
