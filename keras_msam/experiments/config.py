"""What an experiment runs: the configuration, its file formats (TOML, YAML) and method specs.

A configuration is read from defaults, then a file (``--config run.toml``), then the command line,
each overriding the one before::

    # run.toml
    data = "av_digits"
    data_root = "../shared/data/fsdd"
    methods = ["joint", "sam", "msam", "msam(shapley_every=5,sam_every=5)"]
    seeds = 3
    epochs = 20
    [data_options]
    split_by = "speaker"
    [method_options.msam]
    rho = 0.1

A method is a name from `METHODS`, optionally with keyword options in parentheses:
``msam(rho=0.1,sam_every=5)``; ``[method_options.<name>]`` sets options for every spec of that
name (a spec's own options win).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

METHODS = (
    "joint",
    "sam",
    "msam",
    "asam",
    "ogmge",
    "agm",
    "btw",
    "mwam",
    "dlw",
    "mmpareto",
    "reconboost",
    "mslr",
    "mses",
    "cggm",
    "pmr",
    "mmcosine",
    "opm",
)
DEFAULT_METHODS = ("joint", "sam", "msam")
OPTIMIZERS = ("sgd", "adam", "adamw")  # sgd uses `momentum`
LR_SCHEDULES = ("constant", "step", "cosine")  # see optimizers.make_optimizer


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method of an experiment: its name, options, and the label used in tables and paths."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        inner = ",".join(f"{key}={value!r}" for key, value in self.options)
        return f"{self.name}({inner})".replace("'", "")

    @property
    def text(self) -> str:
        """The spec as `parse_method` reads it back (string values keep their quotes)."""
        if not self.options:
            return self.name
        return f"{self.name}({','.join(f'{key}={value!r}' for key, value in self.options)})"

    @property
    def slug(self) -> str:
        """The label as a file-system-safe directory name."""
        keep = [c if c.isalnum() or c in "-_." else "_" for c in self.label.rstrip(")")]
        return "".join(keep).strip("_")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines an experiment; `to_dict` is what the run directory records."""

    backend: str | None = None
    data: str = "imbalanced_av"
    data_root: str | None = None
    data_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model: str = "late_fusion_av_cnn"
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    methods: tuple[MethodSpec, ...] = tuple(MethodSpec(m) for m in DEFAULT_METHODS)
    method_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    seeds: int = 1
    seed: int = 0
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    # Coupled L2 for sgd/adam (PyTorch's weight_decay), decoupled for adamw; None: the optimizer's
    # own default (none; Keras's 0.004 for adamw). See optimizers.make_optimizer.
    weight_decay: float | None = None
    lr_schedule: str = "constant"  # "step": x lr_gamma every lr_step_size epochs; "cosine": to 0
    lr_step_size: int = 70
    lr_gamma: float = 0.1
    rho: float = 0.02  # chosen on validation across the suite (docs/guides/when-msam-helps.md)
    num_train: int | None = None
    select_metric: str = "val_accuracy"
    reference: str | None = None
    sharpness_rho: float = 0.05
    run_dir: str | None = None
    tensorboard: bool = False
    plots: bool = True
    verbose: int = 1
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (methods as their labels)."""
        result = dataclasses.asdict(self)
        result["methods"] = [spec.label for spec in self.methods]
        result["data_options"] = dict(self.data_options)
        result["model_options"] = dict(self.model_options)
        result["method_options"] = {k: dict(v) for k, v in self.method_options.items()}
        return result

    def reference_method(self) -> str | None:
        """The method the paired statistics compare with: ``reference`` when set, else
        ``joint`` when it is among the methods; None when there is none."""
        if self.reference is not None:
            return self.reference
        labels = [spec.label for spec in self.methods]
        return "joint" if "joint" in labels else None

    def seed_list(self) -> list[int]:
        """The seeds of the runs: ``seed``, ``seed + 1``, … (``seeds`` of them)."""
        return [self.seed + offset for offset in range(self.seeds)]

    def options_for(self, spec: MethodSpec) -> dict[str, Any]:
        """``method_options[name]`` overridden by the spec's own options."""
        merged = dict(self.method_options.get(spec.name, {}))
        merged.update(dict(spec.options))
        return merged


FIELDS = tuple(field.name for field in dataclasses.fields(ExperimentConfig))


class ConfigError(ValueError):
    """A configuration file or value that cannot be used (the message says which and why)."""


def parse_methods(value: str | Sequence[str]) -> tuple[MethodSpec, ...]:
    """Method specs from ``"joint,msam(rho=0.1)"`` or a list of spec strings."""
    texts = _split_top_level(value) if isinstance(value, str) else [str(v) for v in value]
    specs = tuple(parse_method(text) for text in texts if text.strip())
    if not specs:
        raise ConfigError(f"No method given in {value!r}; choose from {', '.join(METHODS)}.")
    labels = [spec.label for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"Method(s) listed twice: {', '.join(repeated)}.")
    return specs


def parse_method(text: str) -> MethodSpec:
    """``"msam"`` or ``"msam(rho=0.1, sam_every=5)"`` → `MethodSpec` (values as Python literals)."""
    text = text.strip()
    name, _, rest = text.partition("(")
    name = name.strip().lower()
    if name not in METHODS:
        raise ConfigError(f"Unknown method {name!r}; choose from {', '.join(METHODS)}.")
    if not rest:
        return MethodSpec(name)
    if not rest.endswith(")"):
        raise ConfigError(f"Method spec {text!r} lacks its closing parenthesis.")
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
        assert isinstance(call, ast.Call) and not call.args
        options = tuple(
            (keyword.arg, ast.literal_eval(keyword.value))
            for keyword in call.keywords
            if keyword.arg is not None
        )
    except (SyntaxError, ValueError, AssertionError):
        raise ConfigError(
            f"Cannot read method spec {text!r}; expected name(key=value, ...) with literal "
            "values, e.g. msam(rho=0.1,sam_every=5)."
        ) from None
    return MethodSpec(name, options)


def _split_top_level(text: str) -> list[str]:
    """Splits on commas outside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def read_config_file(path: str) -> dict[str, Any]:
    """The raw mapping of a ``.toml``, ``.yaml`` / ``.yml`` or ``.json`` configuration file."""
    if not os.path.isfile(path):
        raise ConfigError(f"Configuration file {path!r} does not exist.")
    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            with open(path, "rb") as handle:
                raw = tomllib.load(handle)
        elif extension in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    f"Reading {path!r} needs PyYAML: pip install 'keras-msam[experiments]' "
                    "(or use a .toml file)."
                ) from None
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle) or {}
        elif extension == ".json":
            import json

            with open(path, encoding="utf-8") as handle:
                raw = json.load(handle)
        else:
            raise ConfigError(
                f"Configuration file {path!r}: unknown extension {extension!r}; "
                "use .toml, .yaml, .yml or .json."
            )
    except ConfigError:
        raise
    except Exception as error:  # the parsers' own errors, with their line numbers
        raise ConfigError(f"Configuration file {path!r} is malformed: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Configuration file {path!r} must hold a table of settings.")
    return raw


def build_config(
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: str = "configuration",
) -> ExperimentConfig:
    """Defaults ← ``file_values`` ← ``overrides`` (None values in ``overrides`` are ignored)."""
    values: dict[str, Any] = {}
    for layer, origin in ((file_values or {}, source), (overrides or {}, "command line")):
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in FIELDS:
                close = difflib.get_close_matches(key, FIELDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"Unknown setting {key!r} in the {origin}{hint}; settings are "
                    f"{', '.join(FIELDS)}."
                )
            if value is None:
                continue
            if key in ("data_options", "model_options", "method_options") and key in values:
                value = {**values[key], **value}
            values[key] = value
    return _validated(values)


def _validated(values: dict[str, Any]) -> ExperimentConfig:
    if "methods" in values:
        values["methods"] = parse_methods(values["methods"])
    for key, kind in (("seeds", int), ("seed", int), ("epochs", int), ("batch_size", int)):
        if key in values:
            values[key] = _number(key, values[key], kind, minimum=0 if key == "seed" else 1)
    for key in ("lr", "momentum", "rho"):
        if key in values:
            values[key] = _number(key, values[key], float, minimum=0.0)
    if values.get("num_train") is not None:
        values["num_train"] = _number("num_train", values["num_train"], int, minimum=1)
    for key in ("data_options", "model_options", "method_options"):
        if key in values and not isinstance(values[key], Mapping):
            raise ConfigError(f"{key} must be a table of settings, got {values[key]!r}.")
    for name, options in values.get("method_options", {}).items():
        if name not in METHODS:
            raise ConfigError(
                f"method_options names unknown method {name!r}; choose from {', '.join(METHODS)}."
            )
        if not isinstance(options, Mapping):
            raise ConfigError(f"method_options.{name} must be a table, got {options!r}.")
    if values.get("reference") is not None:
        reference = parse_method(str(values["reference"])).label
        labels = [spec.label for spec in values.get("methods", ())] or list(DEFAULT_METHODS)
        if reference not in labels:
            raise ConfigError(
                f"reference {reference!r} is not one of the methods run ({', '.join(labels)}); "
                "the paired statistics compare every method with it."
            )
        if values.get("seeds", 1) < 2:
            raise ConfigError(
                f"reference {reference!r} asks for paired statistics, which need at least 2 "
                f"seeds; got seeds={values.get('seeds', 1)} (benchmark tables use 5)."
            )
        values["reference"] = reference
    if "sharpness_rho" in values:
        values["sharpness_rho"] = _number("sharpness_rho", values["sharpness_rho"], float, 0.0)
    if values.get("optimizer", "sgd") not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {values['optimizer']!r}."
        )
    _validate_schedule(values)
    if values.get("backend") not in (None, "jax", "tensorflow", "torch"):
        raise ConfigError(f"backend must be jax, tensorflow or torch, got {values['backend']!r}.")
    for key in ("tensorboard", "plots"):
        if key in values and not isinstance(values[key], bool):
            raise ConfigError(f"{key} must be true or false, got {values[key]!r}.")
    return ExperimentConfig(**values)


def _validate_schedule(values: dict[str, Any]) -> None:
    """Checks ``weight_decay`` (finite, >= 0, or None), ``lr_schedule`` (one of
    `LR_SCHEDULES`), ``lr_step_size`` (epochs, >= 1) and ``lr_gamma`` (> 0)."""
    if values.get("weight_decay") is not None:
        values["weight_decay"] = _number("weight_decay", values["weight_decay"], float, 0.0)
        if not math.isfinite(values["weight_decay"]):
            raise ConfigError(
                f"weight_decay must be a finite number, got {values['weight_decay']!r}."
            )
    if "lr_schedule" in values:
        schedule = values["lr_schedule"]
        if not isinstance(schedule, str) or schedule.lower() not in LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}."
            )
        values["lr_schedule"] = schedule.lower()
    if "lr_step_size" in values:
        values["lr_step_size"] = _number("lr_step_size", values["lr_step_size"], int, 1)
    if "lr_gamma" in values:
        values["lr_gamma"] = _number("lr_gamma", values["lr_gamma"], float, -math.inf)
        if not 0.0 < values["lr_gamma"] < math.inf:
            raise ConfigError(f"lr_gamma must be a positive number, got {values['lr_gamma']!r}.")


def _number(key: str, value: Any, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
        if isinstance(value, bool) or (kind is int and float(value) != number):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}.") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key} must be a finite number, got {value!r}.")
    if number < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value!r}.")
    return number
