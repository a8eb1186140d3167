"""PNG plots of an experiment (matplotlib, Agg): written to ``<run_dir>/plots/``.

* ``shapley_shares.png``: each modality's mean Shapley share per training epoch, one panel per
  method (mean over seeds, band = ± std).
* ``validation_accuracy.png``: multimodal and per-modality (others zeroed) validation accuracy
  per epoch, one panel per method.
* ``methods.png``: test accuracy of every method, multimodal and per modality, mean ± std over
  seeds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_msam.experiments.config import ExperimentConfig


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "Plots need matplotlib: pip install 'keras-msam[experiments]' (or run with --no-plots)."
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _histories(runs: Sequence[Any]) -> dict[str, list[dict[str, list[float]]]]:
    """``{method: [per-seed {log name: per-epoch values}]}`` read from each run's history.json."""
    grouped: dict[str, list[dict[str, list[float]]]] = {}
    for run in runs:
        path = os.path.join(run.path, "history.json")
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            rows = json.load(handle)
        keys = sorted({k for r in rows for k in r if k != "epoch"})
        series = {k: [float(r.get(k, np.nan)) for r in rows] for k in keys}
        grouped.setdefault(run.method, []).append(series)
    return grouped


def _mean_band(seeds: list[dict[str, list[float]]], key: str) -> tuple[np.ndarray, np.ndarray]:
    length = min(len(s.get(key, [])) for s in seeds)
    values = np.array([s[key][:length] for s in seeds if key in s], dtype=float)
    if values.size == 0:
        return np.array([]), np.array([])
    return np.nanmean(values, axis=0), np.nanstd(values, axis=0)


def _panels(plt: Any, count: int, title: str) -> tuple[Any, list[Any]]:
    columns = min(count, 3)
    rows = -(-count // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False, sharey=True
    )
    figure.suptitle(title)
    flat = list(axes.ravel())
    for extra in flat[count:]:
        extra.set_visible(False)
    return figure, flat[:count]


def _line(axis: Any, mean: np.ndarray, std: np.ndarray, label: str, scale: float = 1.0) -> None:
    if mean.size == 0:
        return
    epochs = np.arange(1, len(mean) + 1)
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.plot(epochs, scale * mean, marker="o", markersize=3, label=label)
    if np.any(std > 0):
        axis.fill_between(epochs, scale * (mean - std), scale * (mean + std), alpha=0.2)


def _per_epoch_figure(
    path: str,
    histories: dict[str, list[dict[str, list[float]]]],
    title: str,
    series: Sequence[tuple[str, str]],
    ylabel: str,
    legend: str,
    scale: float = 1.0,
    ylim: tuple[float, float] | None = None,
) -> str | None:
    """One panel per method, one line (mean over seeds, ± std band) per ``(log key, label)``."""
    if not histories:
        return None
    plt = _pyplot()
    figure, axes = _panels(plt, len(histories), title)
    for axis, (method, seeds) in zip(axes, histories.items()):
        for key, label in series:
            _line(axis, *_mean_band(seeds, key), label=label, scale=scale)
        axis.set_title(method)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        if ylim is not None:
            axis.set_ylim(*ylim)
        axis.grid(alpha=0.3)
        axis.legend(title=legend, fontsize="small")
    return _save(figure, plt, path)


def plot_shapley_shares(
    path: str, histories: dict[str, list[dict[str, list[float]]]], names: Sequence[str]
) -> str | None:
    """Each modality's mean Shapley share per epoch, one panel per method."""
    return _per_epoch_figure(
        path,
        histories,
        "Shapley share of each modality during training (mean over seeds)",
        [(f"shapley_{name}", name) for name in names],
        "Shapley share (fraction of total)",
        "modality",
        ylim=(-0.05, 1.05),
    )


def plot_validation_accuracy(
    path: str, histories: dict[str, list[dict[str, list[float]]]], names: Sequence[str]
) -> str | None:
    """Multimodal and per-modality validation accuracy per epoch, one panel per method."""
    return _per_epoch_figure(
        path,
        histories,
        "Validation accuracy per epoch (modality alone = the others zeroed; mean over seeds)",
        [("val_accuracy", "multimodal")]
        + [(f"val_accuracy_{name}", f"{name} only") for name in names],
        "validation accuracy (%)",
        "input",
        scale=100,
    )


def plot_methods(path: str, summary: Sequence[dict[str, Any]], names: Sequence[str]) -> str | None:
    """Grouped bars: test accuracy of each method, multimodal and each modality alone."""
    if not summary:
        return None
    plt = _pyplot()
    groups = [("accuracy", "multimodal")] + [(f"accuracy_{n}", f"{n} only") for n in names]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.4 * len(summary) * len(groups) / 2), 4.2))
    width = 0.8 / len(groups)
    positions = np.arange(len(summary))
    for index, (key, label) in enumerate(groups):
        means = [100 * row[f"{key}_mean"] for row in summary]
        stds = [100 * row[f"{key}_std"] for row in summary]
        bars = axis.bar(
            positions + (index - (len(groups) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=label,
        )
        axis.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=2)
    runs = max(row["runs"] for row in summary)
    axis.set_title(f"Test accuracy by method (mean ± std over {runs} seed(s))")
    axis.set_xticks(positions, [row["method"] for row in summary], rotation=15, ha="right")
    axis.set_xlabel("method")
    axis.set_ylabel("test accuracy (%)")
    axis.set_ylim(0, 105)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(title="input", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, plt, path)


def _save(figure: Any, plt: Any, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_experiment(run_dir: str, config: ExperimentConfig, runs: Sequence[Any]) -> list[str]:
    """Writes the three plots of an experiment; returns their paths."""
    from keras_msam.experiments.runner import summarise

    if not runs:
        return []
    names = list(runs[0].modality_accuracy)
    histories = _histories(runs)
    directory = os.path.join(run_dir, "plots")
    written = [
        plot_shapley_shares(os.path.join(directory, "shapley_shares.png"), histories, names),
        plot_validation_accuracy(
            os.path.join(directory, "validation_accuracy.png"), histories, names
        ),
        plot_methods(os.path.join(directory, "methods.png"), summarise(runs), names),
    ]
    return [path for path in written if path]
