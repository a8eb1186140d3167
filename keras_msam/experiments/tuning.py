"""Hyperparameter tuning on validation data with an equal budget per method (`keras-msam tune`).

Every method gets the same number of trials (``trials``) over its own hyperparameters and the
shared learning rate (Joint: the learning rate alone). A trial trains ``trial_seeds`` seeds and
scores the mean of their best validation metric (``select_metric``); the test split is never
touched while tuning. The best trial of each method (highest mean validation score) is then run
once more with ``final_seeds`` seeds in ``final/``, an ordinary `run_experiment` directory, whose
test accuracies are paired across methods (same seeds) and compared with the reference method.

Search: Optuna, driven through its ask-and-tell interface. The run directory, not an Optuna
database, holds the truth: each trial writes ``params.json`` before training and ``trial.json``
when done, and the study is rebuilt from them on every start, so a killed tune resumes where it
stopped (an interrupted trial is re-run with the parameters it had drawn). The sampler is
re-seeded per trial from ``(tune_seed, method, trial number)``, so resuming draws the same
parameters an uninterrupted run would have drawn.

Layout::

    tuning/<method>/trial<k>/params.json, trial.json, seed<s>/...   (runner run directories)
    tuning/trials.csv                      every trial: method, number, params, value, per seed
    tuning/selected.json                   each method's selected trial and its parameters
    final/                                 `run_experiment` of the selected settings
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keras_msam.experiments.config import ConfigError, ExperimentConfig, MethodSpec
from keras_msam.experiments.progress import Progress

SAMPLERS = ("qmc", "tpe", "random")
DIVERGED = -1e9  # objective of a trial whose validation score is not finite
LR_FACTOR = 4.0  # default learning-rate range: [lr / 4, lr * 4], log scale

# Each method's own hyperparameters: (low, high, scale) with scale "log", "linear" or "int",
# or a list of choices. The shared learning rate is added to every method.
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "joint": {},
    "sam": {"rho": (0.005, 0.5, "log")},
    "msam": {"rho": (0.005, 0.5, "log")},
    "asam": {"rho": (0.05, 5.0, "log")},
    "ogmge": {"alpha": (0.05, 1.0, "log")},
    "agm": {"alpha": (0.1, 3.0, "log")},
    "mwam": {"alpha": (1.0, 2.0, "linear"), "gamma": (0.5, 0.9, "linear")},
    "btw": {"update_every": (1, 10, "int"), "smoothing": (0.1, 0.9, "linear")},
    "dlw": {"strength": (0.1, 2.0, "log")},
    "mmpareto": {"gamma": (1.0, 2.5, "linear")},
    "mslr": {"memory": (1, 5, "int")},
    "mses": {"patience": (1, 8, "int")},
    "pmr": {"alpha": (0.1, 3.0, "log")},
    "mmcosine": {"scaling": (2.0, 30.0, "log")},
    "opm": {"q_base": (0.1, 0.8, "linear"), "lam": (0.1, 1.0, "log")},
    "cggm": {"rho": (0.5, 2.0, "log"), "lam": (0.02, 1.0, "log")},
    "reconboost": {
        "weight1": (1.0, 8.0, "linear"),
        "weight2": (0.1, 1.0, "log"),
        "stage_length": (1, 4, "int"),
        "rectify_length": (1, 4, "int"),
    },
}


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A tuning run: the experiment (data, model, methods, epochs, …) and the search budget.

    Attributes:
        experiment: Data, model, methods, epochs, optimizer, ``lr`` (the centre of the default
            learning-rate range), ``select_metric``, ``reference``, ``run_dir``.
        trials: Trials per method (the same for every method).
        trial_seeds: Seeds per trial (their mean validation score ranks the trial).
        final_seeds: Seeds of the final run of each selected setting (paired across methods).
        sampler: ``"qmc"`` (default: a scrambled Sobol design, `qmc_point`, enqueued into the
            Optuna study — even coverage for small budgets), ``"tpe"`` (Optuna's Tree-structured
            Parzen Estimator, adaptive; better with tens of trials) or ``"random"``.
        search: ``{method: {param: (low, high, scale) | [choices]}}`` replacing the defaults of
            `DEFAULT_SPACES` param by param (``lr`` included).
        tune_seed: Seeds the sampler.
        trial_seed_offset: Trials train seeds ``seed + offset, …``, apart from the final seeds.
    """

    experiment: ExperimentConfig
    trials: int = 8
    trial_seeds: int = 2
    final_seeds: int = 5
    sampler: str = "qmc"
    search: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    tune_seed: int = 0
    trial_seed_offset: int = 100

    def to_dict(self) -> dict[str, Any]:
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        result["experiment"] = self.experiment.to_dict()
        result["search"] = {
            m: {k: _jsonable(v) for k, v in s.items()} for m, s in self.search.items()
        }
        return result


TUNE_FIELDS = tuple(f.name for f in dataclasses.fields(TuneConfig) if f.name != "experiment")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass
class TuneResult:
    """Each method's selected trial, every trial, and the final paired run."""

    selected: dict[str, dict[str, Any]]
    trials: list[dict[str, Any]]
    final: Any  # ExperimentResult
    run_dir: str


# --------------------------------------------------------------------------- search spaces
def search_space(spec: MethodSpec, config: TuneConfig) -> dict[str, Any]:
    """The search space of one method: defaults, the user's ``search`` overrides, ``lr``.

    Raises:
        ConfigError: an unknown hyperparameter name, a malformed range, or an empty space.
    """
    from keras_msam.experiments.runner import RUN_OPTIONS, _init_arguments, trainer_class

    lr = config.experiment.lr
    space: dict[str, Any] = {"lr": (lr / LR_FACTOR, lr * LR_FACTOR, "log")}
    space.update(DEFAULT_SPACES.get(spec.name, {}))
    overrides = dict(config.search.get(spec.name, {}))
    accepted = _init_arguments(trainer_class(spec.name)) | set(RUN_OPTIONS)
    for name, value in overrides.items():
        if name not in accepted:
            raise ConfigError(
                f"search.{spec.name}: {spec.name} has no hyperparameter {name!r}; its options "
                f"are {', '.join(sorted(accepted))}."
            )
        space[name] = value
    for name in dict(spec.options):  # a spec's fixed options are not searched
        space.pop(name, None)
    for name, value in space.items():
        _check_range(f"search.{spec.name}.{name}", value)
    if not space:
        raise ConfigError(f"Method {spec.label!r} has an empty search space; nothing to tune.")
    return space


def _check_range(where: str, value: Any) -> None:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list of choices.")
        return
    if not (isinstance(value, tuple | list) and len(value) == 3):
        raise ConfigError(
            f"{where}: expected (low, high, scale) with scale log/linear/int, or a list of "
            f"choices; got {value!r}."
        )
    low, high, scale = value
    if scale not in ("log", "linear", "int"):
        raise ConfigError(f"{where}: scale must be log, linear or int, got {scale!r}.")
    numbers_ok = all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high))
    if not numbers_ok or not low < high or (scale == "log" and low <= 0):
        raise ConfigError(f"{where}: need finite low < high (low > 0 for log), got {value!r}.")


def _normalise_space(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A config file's ``[search.<method>]`` table: lists of 3 with a scale become tuples."""
    space = {}
    for name, value in raw.items():
        if isinstance(value, list) and len(value) == 3 and value[2] in ("log", "linear", "int"):
            value = tuple(value)
        space[name] = value
        _check_range(f"{where}.{name}", value)
    return space


def _suggest(trial: Any, name: str, value: Any) -> Any:
    if isinstance(value, list):
        return trial.suggest_categorical(name, value)
    low, high, scale = value
    if scale == "int":
        return trial.suggest_int(name, int(low), int(high))
    return trial.suggest_float(name, float(low), float(high), log=scale == "log")


def _sampler(config: TuneConfig, method: str, number: int) -> Any:
    import optuna

    seed = zlib.crc32(f"{config.tune_seed}/{method}/{number}".encode())
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, config.trials // 2))


def qmc_point(space: Mapping[str, Any], number: int, seed: int) -> dict[str, Any]:
    """The ``number``-th point of a scrambled Sobol sequence (scipy.stats.qmc) mapped onto
    ``space``: low-discrepancy coverage, so a small budget spreads over the whole range of
    every hyperparameter, and a deterministic function of (space, number, seed)."""
    from scipy.stats import qmc

    names = sorted(space)
    power = max(int(number).bit_length(), 1)
    unit = qmc.Sobol(d=len(names), scramble=True, seed=seed).random_base2(power)[number]
    point = {}
    for name, u in zip(names, unit):
        value = space[name]
        if isinstance(value, list):
            point[name] = value[min(int(u * len(value)), len(value) - 1)]
            continue
        low, high, scale = value
        if scale == "int":
            point[name] = min(int(low + u * (high - low + 1)), int(high))
        elif scale == "log":
            point[name] = float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
        else:
            point[name] = float(low + u * (high - low))
    return point


def _rounded(value: Any) -> Any:
    return float(f"{value:.3g}") if isinstance(value, float) else value


# --------------------------------------------------------------------------- validation
def validate(config: TuneConfig) -> dict[str, dict[str, Any]]:
    """Checks everything before any training; returns each method's search space."""
    from keras_msam.experiments.runner import check_names

    if config.trials < 1:
        raise ConfigError(f"trials must be >= 1, got {config.trials}.")
    if config.trial_seeds < 1:
        raise ConfigError(f"trial_seeds must be >= 1, got {config.trial_seeds}.")
    if config.final_seeds < 2:
        raise ConfigError(
            f"final_seeds must be >= 2 for the paired comparison, got {config.final_seeds} "
            "(benchmark tables use 5)."
        )
    if config.sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {config.sampler!r}.")
    names = {spec.name for spec in config.experiment.methods}
    for method in config.search:
        if method not in names:
            raise ConfigError(
                f"search names method {method!r}, which is not tuned here; methods are "
                f"{', '.join(sorted(names))}."
            )
    reference = config.experiment.reference_method()
    if reference is not None and reference not in {s.label for s in config.experiment.methods}:
        raise ConfigError(f"reference {reference!r} is not one of the tuned methods.")
    check_names(config.experiment)
    return {spec.label: search_space(spec, config) for spec in config.experiment.methods}


# --------------------------------------------------------------------------- tuning
def tune(config: TuneConfig, log: Callable[[str], None] = print) -> TuneResult:
    """Tunes every method of ``config.experiment`` on validation data, then runs the selected
    settings with ``final_seeds`` seeds and compares them, paired, with the reference.

    Raises:
        ConfigError: before any training, for an unknown hyperparameter, an empty search space,
            a reference not among the methods, fewer than 2 final seeds, or an unknown data
            set, model or option.
        ImportError: when Optuna is not installed (``pip install "keras-msam[experiments]"``).
    """
    try:
        import optuna
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "keras-msam tune needs Optuna: pip install 'keras-msam[experiments]' (or optuna>=3.4)"
        ) from error

    from keras_msam.experiments import runner

    spaces = validate(config)
    experiment = config.experiment
    run_dir = experiment.run_dir or runner.default_run_dir(experiment)
    experiment = dataclasses.replace(experiment, run_dir=run_dir)
    _claim(run_dir, config)
    splits = runner.load_splits(experiment)
    runner.enable_compilation_cache()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial_seeds = [
        experiment.seed + config.trial_seed_offset + i for i in range(config.trial_seeds)
    ]
    all_trials: list[dict[str, Any]] = []
    selected: dict[str, dict[str, Any]] = {}
    progress = Progress(len(experiment.methods) * config.trials, log, experiment.progress)
    for spec in experiment.methods:
        space = spaces[spec.label]
        study = optuna.create_study(direction="maximize")
        method_dir = os.path.join(run_dir, "tuning", spec.slug)
        for number in range(config.trials):
            trial_dir = os.path.join(method_dir, f"trial{number}")
            done = _read_trial_file(os.path.join(trial_dir, "trial.json"), log)
            distributions = _distributions(space)
            progress.start()
            if done is not None:
                study.add_trial(
                    optuna.trial.create_trial(
                        params=done["params"],
                        distributions=distributions,
                        value=done["objective"],
                    )
                )
                all_trials.append(done)
                progress.finish(
                    f"tune {spec.label}, trial {number + 1}/{config.trials}",
                    f"{experiment.select_metric} {done['value']:.4g}",
                    resumed=True,
                )
                continue
            drawn = _read_trial_file(os.path.join(trial_dir, "params.json"), log)
            if drawn is None and config.sampler == "qmc":
                drawn = qmc_point(space, number, config.tune_seed)
            if drawn is not None:
                study.enqueue_trial(drawn, skip_if_exists=False)
            study.sampler = _sampler(config, spec.label, number)
            trial = study.ask()
            params = {name: _suggest(trial, name, value) for name, value in space.items()}
            os.makedirs(trial_dir, exist_ok=True)
            runner.write_json(os.path.join(trial_dir, "params.json"), params)
            if experiment.verbose:
                log(f"\n== tune {spec.label}: trial {number + 1}/{config.trials} {params} ==")
            trial_spec = MethodSpec(spec.name, tuple(spec.options) + tuple(params.items()))
            scores = []
            for seed in trial_seeds:
                run = runner.train_run(
                    runner.config_for_method(experiment, trial_spec),
                    trial_spec,
                    seed,
                    splits,
                    os.path.join(trial_dir, f"seed{seed}"),
                    evaluate_test=False,
                )
                scores.append(run.best_value)
            value = float(sum(scores) / len(scores))
            objective = value if maximise_metric(experiment) else -value
            if not math.isfinite(objective):  # a diverged trial ranks last
                objective = DIVERGED
            study.tell(trial, objective)
            record = {
                "method": spec.label,
                "number": number,
                "params": params,
                "value": value,
                "objective": objective,
                "select_metric": experiment.select_metric,
                "seed_values": dict(zip([str(s) for s in trial_seeds], scores)),
            }
            runner.write_json(os.path.join(trial_dir, "trial.json"), record)
            all_trials.append(record)
            progress.finish(
                f"tune {spec.label}, trial {number + 1}/{config.trials} {params}",
                f"{experiment.select_metric} {value:.4g}",
                resumed=False,
            )
            _write_trials(run_dir, all_trials)
        best = max(
            (t for t in all_trials if t["method"] == spec.label), key=lambda t: t["objective"]
        )
        selected[spec.label] = {
            "trial": best["number"],
            "params": best["params"],
            experiment.select_metric: best["value"],
            "spec": _final_spec(spec, best["params"]).text,
            "label": _final_spec(spec, best["params"]).label,
        }
    _write_trials(run_dir, all_trials)
    progress.summary("trials")
    runner.write_json(os.path.join(run_dir, "tuning", "selected.json"), selected)
    final = _final_run(config, experiment, selected, log)
    return TuneResult(selected, all_trials, final, run_dir)


def maximise_metric(experiment: ExperimentConfig) -> bool:
    """Whether a higher ``select_metric`` is better (everything but losses)."""
    return not experiment.select_metric.endswith("loss")


def _final_spec(spec: MethodSpec, params: Mapping[str, Any]) -> MethodSpec:
    options = dict(spec.options)
    options.update({k: _rounded(v) for k, v in params.items()})
    return MethodSpec(spec.name, tuple(options.items()))


def _final_run(
    config: TuneConfig,
    experiment: ExperimentConfig,
    selected: Mapping[str, Mapping[str, Any]],
    log: Callable[[str], None],
) -> Any:
    from keras_msam.experiments import runner
    from keras_msam.experiments.config import parse_method

    specs = tuple(parse_method(entry["spec"]) for entry in selected.values())
    reference = experiment.reference_method()
    final = dataclasses.replace(
        experiment,
        methods=specs,
        seeds=config.final_seeds,
        reference=specs[list(selected).index(reference)].label if reference in selected else None,
        run_dir=os.path.join(experiment.run_dir, "final"),
    )
    log(f"\n== final: {', '.join(s.label for s in specs)}, seeds {final.seed_list()} ==")
    return runner.run_experiment(final, log=log)


def _distributions(space: Mapping[str, Any]) -> dict[str, Any]:
    import optuna

    out = {}
    for name, value in space.items():
        if isinstance(value, list):
            out[name] = optuna.distributions.CategoricalDistribution(value)
        elif value[2] == "int":
            out[name] = optuna.distributions.IntDistribution(int(value[0]), int(value[1]))
        else:
            out[name] = optuna.distributions.FloatDistribution(
                float(value[0]), float(value[1]), log=value[2] == "log"
            )
    return out


def _read_trial_file(path: str, log: Callable[[str], None]) -> Any:
    """A trial's JSON (None when absent); an unreadable one is logged and treated as absent,
    so the trial is drawn and trained again (the runner's policy for a run's own files)."""
    from keras_msam.experiments.checkpoints import CorruptRunFile, read_run_json

    try:
        return read_run_json(path)
    except CorruptRunFile as error:
        log(f"keras-msam: {error}; recomputing the trial in {os.path.dirname(path)}.")
        return None


def _read_tune_record(path: str) -> Any:
    """tune.json (None when absent); unreadable: `ConfigError`, as for a run's config.json."""
    from keras_msam.experiments.checkpoints import CorruptRunFile, read_run_json

    try:
        return read_run_json(path)
    except CorruptRunFile as error:
        raise ConfigError(
            f"{path} is unreadable ({error.__cause__}): it records which tuning run "
            f"{os.path.dirname(path)!r} holds; restore it, or choose another --run-dir."
        ) from error


def _write_trials(run_dir: str, trials: Sequence[Mapping[str, Any]]) -> None:
    from keras_msam.experiments.runner import write_csv

    rows = []
    for t in trials:
        row = {"method": t["method"], "trial": t["number"], "value": t["value"]}
        row.update({f"param_{k}": v for k, v in t["params"].items()})
        row.update({f"seed{k}": v for k, v in t["seed_values"].items()})
        rows.append(row)
    os.makedirs(os.path.join(run_dir, "tuning"), exist_ok=True)
    write_csv(os.path.join(run_dir, "tuning", "trials.csv"), rows)


def _claim(run_dir: str, config: TuneConfig) -> None:
    """Writes tune.json, or refuses a run directory that holds a different tuning run."""
    from keras_msam.experiments.runner import write_json

    path = os.path.join(run_dir, "tune.json")
    record = config.to_dict()
    for key in ("verbose", "plots", "tensorboard", "run_dir", "backend"):
        record["experiment"].pop(key, None)
    record = json.loads(json.dumps(record))
    previous = _read_tune_record(path)
    if previous is not None:
        if previous != record:
            changed = sorted(
                k for k in set(previous) | set(record) if previous.get(k) != record.get(k)
            )
            raise ConfigError(
                f"Run directory {run_dir!r} holds a different tuning run (differs in "
                f"{', '.join(changed)}); choose another --run-dir, or the same settings to resume."
            )
        return
    os.makedirs(run_dir, exist_ok=True)
    write_json(path, record)


def build_tune_config(
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: str = "configuration",
) -> TuneConfig:
    """Defaults ← file ← overrides, for the tuning fields (`TUNE_FIELDS`) and the experiment."""
    from keras_msam.experiments.config import build_config

    file_values = dict(file_values or {})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    tuning: dict[str, Any] = {}
    for layer in (file_values, overrides):
        for key in TUNE_FIELDS:
            if key in layer:
                value = layer.pop(key)
                if key == "search":
                    merged = dict(tuning.get("search", {}))
                    for method, raw in dict(value).items():
                        if not isinstance(raw, Mapping):
                            raise ConfigError(f"search.{method} must be a table, got {raw!r}.")
                        merged[method] = {
                            **merged.get(method, {}),
                            **_normalise_space(raw, f"search.{method}"),
                        }
                    value = merged
                tuning[key] = value
    for key in ("trials", "trial_seeds", "final_seeds", "tune_seed", "trial_seed_offset"):
        if key in tuning:
            value = tuning[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} must be an integer, got {value!r}.")
    experiment = build_config(file_values, overrides, source=source)
    return TuneConfig(experiment=experiment, **tuning)


def parse_search_option(text: str) -> tuple[str, str, Any]:
    """``"msam.rho=0.005:0.5:log"`` → ("msam", "rho", (0.005, 0.5, "log")); ``"msam.perturb=
    [None,'dominant']"`` → a list of choices."""
    import ast

    key, sep, value = text.partition("=")
    method, dot, name = key.strip().partition(".")
    if not sep or not dot or not method or not name:
        raise ConfigError(
            f"--search expects METHOD.PARAM=LOW:HIGH[:log|linear|int] or METHOD.PARAM=[a,b], "
            f"got {text!r}."
        )
    value = value.strip()
    if value.startswith("["):
        try:
            choices = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ConfigError(f"--search {text!r}: cannot read the list of choices.") from None
        return method, name, list(choices)
    parts = value.split(":")
    try:
        low, high = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise ConfigError(f"--search {text!r}: expected LOW:HIGH[:scale].") from None
    scale = parts[2] if len(parts) > 2 else "linear"
    if scale == "int":
        low, high = int(low), int(high)
    return method, name, (low, high, scale)
