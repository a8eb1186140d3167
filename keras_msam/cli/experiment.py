"""Training one method on the embedded data set and tabulating the results (used by the CLI)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np

import keras_msam
import zoo


@dataclass(frozen=True)
class RunSettings:
    """What one CLI run trains: the zoo model, data size, optimisation settings."""

    model: str = "late_fusion_av_cnn"
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    rho: float = 0.05
    seed: int = 0
    num_train: int = 2048
    verbose: int = 1


@dataclass
class MethodResult:
    """Test-split accuracies, mean training Shapley shares and step time of one method."""

    method: str
    accuracy: float
    modality_accuracy: dict[str, float]
    mean_shares: dict[str, float]
    ms_per_step: float
    history: dict[str, list[float]] = field(default_factory=dict)


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training batch (the first epoch's are compile-time heavy)."""

    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.durations.append(time.perf_counter() - self._start)

    def median_ms(self, skip: int) -> float:
        steady = self.durations[skip:] or self.durations
        return 1000.0 * float(np.median(steady))


def build_trainer(method: str, model: keras.Model, rho: float) -> keras_msam.MultimodalTrainer:
    """The trainer for a method name (``joint``, ``sam``, ``msam``, ``asam``, ``ogmge``, ``agm``,
    ``mwam``) with its default settings; ASAM uses ρ × 10 (its ρ is typically ten times SAM's)."""
    if method == "joint":
        return keras_msam.Joint(model)
    if method == "sam":
        return keras_msam.SAM(model, rho=rho)
    if method == "msam":
        return keras_msam.MSAM(model, rho=rho)
    if method == "asam":
        return keras_msam.SAM(model, rho=10 * rho, adaptive=True)
    if method == "ogmge":
        return keras_msam.OGMGE(model)
    if method == "agm":
        return keras_msam.AGM(model)
    if method == "mwam":
        return keras_msam.MWAM(model)
    raise ValueError(
        f"Unknown method {method!r}; choose from joint, sam, msam, asam, ogmge, agm, mwam."
    )


def run_method(method: str, settings: RunSettings) -> MethodResult:
    """Trains ``method`` on the embedded data and evaluates it on the test split."""
    data = zoo.datasets.imbalanced_av.generate(num_train=settings.num_train, seed=settings.seed)
    (x_train, y_train), validation = data["train"], data["validation"]
    x_test, y_test = data["test"]
    keras.utils.set_random_seed(settings.seed)
    model = zoo.models.create(settings.model, num_classes=zoo.datasets.imbalanced_av.NUM_CLASSES)
    trainer = build_trainer(method, model, settings.rho)
    trainer.compile(
        optimizer=keras.optimizers.SGD(settings.lr, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = StepTimer()
    history = trainer.fit(
        x_train,
        y_train,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        validation_data=validation,
        shuffle=True,
        verbose=settings.verbose,
        callbacks=[timer],
    )
    steps_per_epoch = int(np.ceil(len(y_train) / settings.batch_size))
    accuracies = keras_msam.modality_accuracies(trainer, x_test, y_test)
    names = trainer.modality_names
    shares = {n: float(np.mean(history.history[f"shapley_{n}"])) for n in names}
    return MethodResult(
        method=method,
        accuracy=accuracies.pop("multimodal"),
        modality_accuracy=accuracies,
        mean_shares=shares,
        ms_per_step=timer.median_ms(skip=min(steps_per_epoch, len(timer.durations) - 1)),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )


def format_table(results: list[MethodResult]) -> str:
    """A plain-text table: method, accuracies, mean Shapley shares, ms per step."""
    names = list(results[0].modality_accuracy)
    header = (
        ["method", "acc (all)"]
        + [f"acc ({n} only)" for n in names]
        + [f"share {n}" for n in names]
        + ["ms/step"]
    )
    rows = [
        [r.method, f"{100 * r.accuracy:.1f}%"]
        + [f"{100 * r.modality_accuracy[n]:.1f}%" for n in names]
        + [f"{r.mean_shares[n]:.2f}" for n in names]
        + [f"{r.ms_per_step:.1f}"]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
