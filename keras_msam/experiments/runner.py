"""The experiment runner behind `keras-msam compare`: methods × seeds, one run directory.

For every method and seed the runner trains a fresh zoo model on the data set's training split,
selects the best epoch on the validation split only (``select_metric``, default
``val_accuracy``), and touches the test split once, at the end, with the selected weights.
Layout of the run directory (every file is rewritten as the run goes, so an interrupted run
leaves what it had)::

    config.json                 the resolved configuration, backend and versions
    results.csv / .json         one row per method and seed (columns in `RUN_COLUMNS`)
    summary.csv / .json         one row per method: mean and std over seeds
    plots/*.png                 Shapley shares, validation accuracies, final bar chart
    <method>/seed<k>/
        history.csv / .json     per-epoch logs (loss, metrics, shapley_<m>, sharpness,
                                val_accuracy_<m>, …)
        metrics.json            final test metrics of this run (its presence marks it done)
        best.weights.h5         weights of the selected epoch (trainer state included)
        final.weights.h5        weights after the last epoch
        best_model.keras        the selected zoo model, loadable with keras.saving.load_model
        backup/                 the last epoch's full training state while the run is going
        tensorboard/            with ``tensorboard=True``

Resuming: run the same command (same ``run_dir``) again. Finished runs are read back; an
interrupted run restarts from its last backup (end of the last complete epoch): weights,
optimizer and trainer state are restored and the loader's seeded shuffling is put at that epoch,
so it ends with the weights an uninterrupted run would have. Every file is written atomically
(`keras_msam.experiments.checkpoints`), so a kill at any instant costs at most the epoch under
way; a run file that is unreadable anyway is reported and that run is recomputed.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

import keras_msam
import zoo
from keras_msam.absence import map_leaves
from keras_msam.backend.jax_cache import enable_compilation_cache
from keras_msam.callbacks import ModalityAccuracy, StepTimer
from keras_msam.experiments.checkpoints import (
    AtomicBackupAndRestore,
    BestCheckpoint,
    CorruptRunFile,
    HistoryWriter,
    load_weights_checked,
    read_run_json,
    save_model_atomic,
    save_weights_atomic,
)
from keras_msam.experiments.config import ConfigError, ExperimentConfig, MethodSpec
from keras_msam.experiments.optimizers import make_optimizer  # noqa: F401  (re-exported)
from keras_msam.experiments.progress import Progress
from keras_msam.experiments.results import (  # noqa: F401  (re-exported)
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    RunResult,
    summarise,
    to_float,
    write_csv,
    write_json,
    write_results,
)


@dataclasses.dataclass
class ExperimentResult:
    """All runs of an experiment, their per-method summary, and where they were written."""

    config: ExperimentConfig
    runs: list[RunResult]
    summary: list[dict[str, Any]]
    run_dir: str
    plots: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- trainers
_RHO_METHODS = {"sam": 1.0, "msam": 1.0, "asam": 10.0}  # ASAM's ρ is typically 10 × SAM's


def trainer_class(name: str) -> type:
    """The trainer class of a method name."""
    classes = {
        "joint": "Joint",
        "sam": "SAM",
        "asam": "SAM",
        "msam": "MSAM",
        "ogmge": "OGMGE",
        "agm": "AGM",
        "btw": "BTW",
        "mwam": "MWAM",
        "dlw": "DecisionWeighting",
        "mmpareto": "MMPareto",
        "reconboost": "ReconBoost",
        "mslr": "MSLR",
        "mses": "MSES",
        "cggm": "CGGM",
        "pmr": "PMR",
        "mmcosine": "MMCosine",
        "opm": "OPM",
    }
    return getattr(keras_msam, classes[name])


def trainer_options(spec: MethodSpec, config: ExperimentConfig) -> tuple[type, dict[str, Any]]:
    """The trainer class of ``spec`` and its keyword options; unknown options raise."""
    options = config.options_for(spec)
    for key in RUN_OPTIONS:
        options.pop(key, None)
    if spec.name in _RHO_METHODS:
        options.setdefault("rho", _RHO_METHODS[spec.name] * config.rho)
    if spec.name == "asam":
        options.setdefault("adaptive", True)
    cls = trainer_class(spec.name)
    accepted = _init_arguments(cls)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"Method {spec.label!r}: {cls.__name__} has no option(s) {', '.join(unknown)}; "
            f"its options are {', '.join(sorted(accepted))}."
        )
    return cls, options


RUN_OPTIONS = ("lr",)  # method options the runner takes (per-method learning rate), not the trainer


def config_for_method(config: ExperimentConfig, spec: MethodSpec) -> ExperimentConfig:
    """``config`` with the spec's own run options applied (``msam(lr=0.02)``: its learning rate)."""
    options = config.options_for(spec)
    if "lr" not in options:
        return config
    lr = options["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ConfigError(f"Method {spec.label!r}: lr must be a positive number, got {lr!r}.")
    return dataclasses.replace(config, lr=float(lr))


def _init_arguments(cls: type) -> set[str]:
    """Keyword arguments of ``cls.__init__``, following ``**kwargs`` to the base classes up to
    `MultimodalTrainer` (whose own ``**kwargs`` go to `keras.Model`)."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        accepted |= {
            name
            for name, p in parameters.items()
            if name not in ("self", "model") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        passes_on = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        if not passes_on or klass is keras_msam.MultimodalTrainer:
            break
    return accepted


def check_names(config: ExperimentConfig) -> None:
    """Raises `ConfigError` for an unknown data set, model or method option, before any work."""
    if config.data not in zoo.datasets.list():
        raise ConfigError(
            f"Unknown data set {config.data!r}; choose from {', '.join(zoo.datasets.list())}."
        )
    if config.model not in zoo.models.list():
        raise ConfigError(
            f"Unknown model {config.model!r}; choose from {', '.join(zoo.models.list())}."
        )
    for spec in config.methods:
        trainer_options(spec, config)
        config_for_method(config, spec)


def build_trainer(
    spec: MethodSpec, model: keras.Model, config: ExperimentConfig
) -> keras_msam.MultimodalTrainer:
    """The trainer of ``spec`` around ``model``: ``config.rho`` for SAM/M-SAM (× 10 and
    ``adaptive=True`` for ASAM) unless the spec or ``method_options`` set it."""
    cls, options = trainer_options(spec, config)
    try:
        return cls(model, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"Method {spec.label!r}: {error}") from None


# --------------------------------------------------------------------------- data, model
@dataclasses.dataclass
class Splits:
    """The three splits of the data set; test is kept as arrays for the final evaluation."""

    train: Any
    validation: Any
    validation_arrays: tuple[dict[str, np.ndarray], np.ndarray]
    test_arrays: tuple[dict[str, np.ndarray], np.ndarray]
    num_classes: int
    input_shapes: dict[str, Any]  # {modality: shape}, or {input: shape} for several inputs
    _train_arrays: tuple[dict[str, np.ndarray], np.ndarray] | None = None

    def train_arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The training split as arrays, in file order (read once, for the final metrics)."""
        if self._train_arrays is None:
            self._train_arrays = self.train.to_numpy()
        return self._train_arrays


def load_splits(config: ExperimentConfig) -> Splits:
    """Loads train/validation/test of ``config.data`` (the test split only as arrays)."""
    if config.data not in zoo.datasets.list():
        raise ConfigError(
            f"Unknown data set {config.data!r}; choose from {', '.join(zoo.datasets.list())}."
        )
    options = dict(config.data_options)
    if config.num_train is not None:
        if config.data not in ("imbalanced_av", "imbalanced_avt"):
            raise ConfigError(
                f"num_train applies to the embedded data sets only, not {config.data!r}."
            )
        options["num_train"] = config.num_train

    def load(split: str, **kwargs: Any) -> Any:
        return zoo.datasets.load(
            config.data,
            root=config.data_root,
            split=split,
            batch_size=config.batch_size,
            **kwargs,
            **options,
        )

    try:
        train = load("train", shuffle=True, seed=config.seed)
    except ValueError as error:  # a missing --data-root, a bad loader option: before training
        if type(error).__name__ == "DataFormatError":
            raise
        raise ConfigError(f"Data set {config.data!r}: {error}") from None
    if train.num_classes is None:
        raise ConfigError(
            f"Data set {config.data!r} has regression labels; the experiment runner compares "
            "classifiers (use the loader's classification labels option)."
        )
    validation = load("validation", shuffle=False)
    test = load("test", shuffle=False)
    return Splits(
        train,
        validation,
        validation.to_numpy(),
        test.to_numpy(),
        int(train.num_classes),
        dict(train.input_shapes),
    )


def build_model(config: ExperimentConfig, splits: Splits) -> keras.Model:
    """The zoo model for the data: ``num_classes`` and ``<modality>_shape`` set from the data."""
    if config.model not in zoo.models.list():
        raise ConfigError(
            f"Unknown model {config.model!r}; choose from {', '.join(zoo.models.list())}."
        )
    parameters = zoo.models.defaults(config.model)
    overrides: dict[str, Any] = {"num_classes": splits.num_classes}
    for modality, shape in splits.input_shapes.items():
        if f"{modality}_shape" in parameters and not isinstance(shape, dict):
            overrides[f"{modality}_shape"] = tuple(shape)
    overrides.update(config.model_options)
    model = zoo.models.create(config.model, **overrides)
    expected = set(getattr(model, "modality_shapes", splits.input_shapes))
    if expected != set(splits.input_shapes):
        raise ConfigError(
            f"Model {config.model!r} takes modalities {sorted(expected)} but data set "
            f"{config.data!r} gives {sorted(splits.input_shapes)}."
        )
    return model


# --------------------------------------------------------------------------- callbacks
class _SyncEpoch(keras.callbacks.Callback):
    """Puts the training loader's seeded shuffling at the epoch being trained (resume-safe)."""

    def __init__(self, dataset: Any) -> None:
        super().__init__()
        self._dataset = dataset

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._dataset.set_epoch(epoch)


# --------------------------------------------------------------------------- one run
def train_run(
    config: ExperimentConfig,
    spec: MethodSpec,
    seed: int,
    splits: Splits,
    directory: str,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    evaluate_test: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Trains one method with one seed into ``directory`` (resuming from its backup if any),
    restores the best-validation weights and evaluates the test split once.

    With ``evaluate_test=False`` (tuning trials) the test split is never touched: the test
    accuracies, the generalisation gap and the sharpness are NaN.

    A run file that exists but cannot be read (a truncated or hand-edited checkpoint, state or
    metrics file) is never trusted: the run is recomputed from scratch, with a line naming the
    file sent to ``log``."""
    try:
        return _train_run(config, spec, seed, splits, directory, extra_callbacks, evaluate_test)
    except CorruptRunFile as error:
        log(f"keras-msam: {error}; recomputing the run in {directory} from scratch.")
        shutil.rmtree(directory)
        return _train_run(config, spec, seed, splits, directory, extra_callbacks, evaluate_test)


def _train_run(
    config: ExperimentConfig,
    spec: MethodSpec,
    seed: int,
    splits: Splits,
    directory: str,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    evaluate_test: bool,
) -> RunResult:
    os.makedirs(directory, exist_ok=True)
    metrics_path = os.path.join(directory, "metrics.json")
    done = read_run_json(metrics_path)
    if done is not None:
        try:
            return RunResult(**{**done, "path": directory})
        except TypeError as error:
            raise CorruptRunFile(metrics_path, error) from error
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(config, splits)
    trainer = build_trainer(spec, model, config)
    trainer.compile(
        optimizer=make_optimizer(config_for_method(config, spec), len(splits.train)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    trainer(_head(splits.validation_arrays[0], 2))  # built, so a backup can be restored
    splits.train.set_epoch(0, seed=seed)
    timer = StepTimer()
    best = BestCheckpoint(directory, config.select_metric)
    history = HistoryWriter(directory)
    callbacks: list[keras.callbacks.Callback] = [
        _SyncEpoch(splits.train),
        timer,
        ModalityAccuracy(splits.validation_arrays, prefix="val_"),
        *extra_callbacks,
        best,
        history,
    ]
    if config.tensorboard:
        _require_tensorboard()
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(directory, "tensorboard")))
    backup = os.path.join(directory, "backup")
    callbacks.append(AtomicBackupAndRestore(backup))
    trainer.fit(
        splits.train,
        validation_data=splits.validation,
        epochs=config.epochs,
        shuffle=False,  # the loader shuffles, seeded by (seed, epoch)
        verbose=config.verbose,
        callbacks=callbacks,
    )
    save_weights_atomic(trainer, os.path.join(directory, "final.weights.h5"))
    if best.best["epoch"] >= 0:
        load_weights_checked(trainer, best.weights_path)
    names = trainer.modality_names
    if evaluate_test:
        x_test, y_test = splits.test_arrays
        accuracies = keras_msam.modality_accuracies(trainer, x_test, y_test)
        train_accuracy, sharp = _train_accuracy_and_sharpness(trainer, splits, config)
    else:
        accuracies = {"multimodal": math.nan, **{n: math.nan for n in names}}
        train_accuracy = sharp = math.nan
    _save_model(model, os.path.join(directory, "best_model.keras"))
    series = history.series()
    steps_per_epoch = len(splits.train)
    result = RunResult(
        method=spec.label,
        seed=seed,
        accuracy=accuracies.pop("multimodal"),
        modality_accuracy=accuracies,
        mean_shares={
            n: float(np.nanmean(series[f"shapley_{n}"])) if f"shapley_{n}" in series else math.nan
            for n in names
        },
        ms_per_step=timer.median_ms(skip=min(steps_per_epoch, max(len(timer.durations) - 1, 0))),
        best_epoch=int(best.best["epoch"]),
        best_value=float(best.best["value"]) if best.best["value"] is not None else math.nan,
        epochs=len(history.rows),
        path=directory,
        train_accuracy=train_accuracy,
        sharpness=sharp,
    )
    result.generalisation_gap = train_accuracy - result.accuracy
    write_json(metrics_path, dataclasses.asdict(result))
    shutil.rmtree(backup, ignore_errors=True)  # the run is done: its backup is no longer needed
    return result


SHARPNESS_EXAMPLES = 512  # training examples the final sharpness is measured on


def _train_accuracy_and_sharpness(
    trainer: keras_msam.MultimodalTrainer, splits: Splits, config: ExperimentConfig
) -> tuple[float, float]:
    """The selected weights' accuracy on the whole training split, and the loss sharpness at
    ``config.sharpness_rho`` on its first `SHARPNESS_EXAMPLES` examples (NaN when ρ = 0)."""
    from keras_msam.evaluation import coalition_accuracies

    x_train, y_train = splits.train_arrays()
    everything = np.ones((1, len(trainer.modality_names)), bool)  # the full input only
    accuracy = float(coalition_accuracies(trainer, x_train, y_train, everything)[0])
    if config.sharpness_rho <= 0:
        return accuracy, math.nan
    head = _head(x_train, SHARPNESS_EXAMPLES)
    measured = keras_msam.analysis.sharpness(
        trainer.model, head, y_train[:SHARPNESS_EXAMPLES], rho=config.sharpness_rho
    )
    return accuracy, float(measured["sharpness"])


def _require_tensorboard() -> None:
    import importlib.util

    missing = [p for p in ("tensorflow", "tensorboard") if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(
            f"tensorboard=True needs {' and '.join(missing)} installed (Keras writes TensorBoard "
            "logs with tf.summary on every backend): pip install 'keras-msam[experiments]' "
            "tensorflow-cpu."
        )


def _head(x: dict[str, Any], count: int) -> dict[str, Any]:
    return {name: map_leaves(lambda array: array[:count], value) for name, value in x.items()}


def _save_model(model: keras.Model, path: str) -> None:
    try:
        save_model_atomic(model, path)
    except Exception as error:  # a user model that cannot be serialised: the weights remain
        print(f"keras-msam: could not save {path} ({error}); best.weights.h5 holds the weights.")


# --------------------------------------------------------------------------- experiment
def default_run_dir(config: ExperimentConfig) -> str:
    """``runs/<data>-<model>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{config.data}-{config.model}-{stamp}")


def run_experiment(
    config: ExperimentConfig,
    callbacks: Callable[[MethodSpec, int], Sequence[keras.callbacks.Callback]] | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Runs every method × seed of ``config`` into its run directory and writes the results.

    Args:
        config: The experiment.
        callbacks: Optional ``(method spec, seed) -> extra callbacks`` for each run.
        log: Where progress lines go.

    Raises:
        ConfigError: unknown data set, model or method option, or a run directory holding a
            different experiment.
    """
    run_dir = config.run_dir or default_run_dir(config)
    config = dataclasses.replace(config, run_dir=run_dir)
    check_names(config)
    _claim_run_dir(run_dir, config)
    enable_compilation_cache()  # JAX: each seed's identical step is compiled once
    splits = load_splits(config)
    runs: list[RunResult] = []
    progress = Progress(len(config.methods) * len(config.seed_list()), log, config.progress)
    for spec in config.methods:
        for seed in config.seed_list():
            if config.verbose:
                log(f"\n== {spec.label}, seed {seed} ==")
            directory = os.path.join(run_dir, spec.slug, f"seed{seed}")
            extra = callbacks(spec, seed) if callbacks is not None else ()
            progress.start()
            resumed = _finished(directory)
            runs.append(train_run(config, spec, seed, splits, directory, extra, log=log))
            progress.finish(
                f"{spec.label}, seed {seed}",
                f"test accuracy {100 * runs[-1].accuracy:.1f} % (epoch {runs[-1].best_epoch})",
                resumed=resumed,
            )
            write_results(run_dir, config, runs)
    summary = write_results(run_dir, config, runs, final=True)
    progress.summary()
    plots: list[str] = []
    if config.plots and _has_matplotlib():
        from keras_msam.experiments.plots import plot_experiment

        plots = plot_experiment(run_dir, config, runs)
    elif config.plots:
        log(
            "Plots skipped: matplotlib is not installed "
            "(pip install 'keras-msam[experiments]'; --no-plots silences this)."
        )
    return ExperimentResult(config, runs, summary, run_dir, plots)


def _finished(directory: str) -> bool:
    """Whether the run in ``directory`` holds readable final metrics (it will be read back)."""
    try:
        return read_run_json(os.path.join(directory, "metrics.json")) is not None
    except CorruptRunFile:  # train_run names it and recomputes the run
        return False


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _claim_run_dir(run_dir: str, config: ExperimentConfig) -> None:
    """Writes config.json, or checks that an existing one describes the same experiment."""
    path = os.path.join(run_dir, "config.json")
    record = {
        "config": config.to_dict(),
        "backend": keras.backend.backend(),
        "versions": {
            "keras_msam": keras_msam.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
    }
    if os.path.exists(path):
        try:
            with open(path) as handle:
                previous = json.load(handle)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{path} is unreadable ({error}): it records which experiment {run_dir!r} "
                "holds; restore it, or choose another --run-dir."
            ) from error
        # settings added after a directory was written compare as their defaults
        defaults = ExperimentConfig().to_dict()
        stored = {**{k: v for k, v in defaults.items() if k not in ("methods",)},
                  **previous.get("config", {})}  # fmt: skip
        same = {k: v for k, v in stored.items() if k not in _FREE_KEYS}
        now = {k: v for k, v in record["config"].items() if k not in _FREE_KEYS}
        if same != now or previous.get("backend") != record["backend"]:
            changed = sorted(k for k in set(same) | set(now) if same.get(k) != now.get(k))
            if previous.get("backend") != record["backend"]:
                changed.append("backend")
            raise ConfigError(
                f"Run directory {run_dir!r} holds a different experiment (differs in "
                f"{', '.join(changed)}); choose another --run-dir to start a new one, or the "
                "same settings to resume it."
            )
        return
    os.makedirs(run_dir, exist_ok=True)
    write_json(path, record)


# may change between resumes
_FREE_KEYS = ("verbose", "progress", "plots", "tensorboard", "run_dir", "backend")
