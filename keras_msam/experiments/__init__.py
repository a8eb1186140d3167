"""Experiments: methods × seeds on a zoo model and data set, with run directories, results
files, plots, TensorBoard and resumable runs (the engine of `keras-msam compare`).

`keras_msam.experiments.config` imports no backend; the rest is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_METHODS": "config",
    "METHODS": "config",
    "ConfigError": "config",
    "ExperimentConfig": "config",
    "MethodSpec": "config",
    "build_config": "config",
    "parse_methods": "config",
    "read_config_file": "config",
    "RUN_COLUMNS": "runner",
    "SUMMARY_COLUMNS": "runner",
    "ExperimentResult": "runner",
    "RunResult": "runner",
    "build_trainer": "runner",
    "run_experiment": "runner",
    "summarise": "runner",
    "format_table": "table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"keras_msam.experiments.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_msam.experiments' has no attribute {name!r}")
