"""timm-style registry of zoo models: `register`, `list`, `create`, `describe`."""

from __future__ import annotations

import builtins
import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

import keras

_ENTRYPOINTS: dict[str, Callable[..., keras.Model]] = {}


def register(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    """Registers a model builder under its function name (used as a decorator)."""
    _ENTRYPOINTS[fn.__name__] = fn
    return fn


def list(pattern: str = "*") -> builtins.list[str]:  # noqa: A001 - timm-style public name
    """Names of the registered models matching a shell-style wildcard, sorted."""
    return sorted(name for name in _ENTRYPOINTS if fnmatch.fnmatch(name, pattern))


def _entrypoint(name: str) -> Callable[..., keras.Model]:
    if name not in _ENTRYPOINTS:
        close = difflib.get_close_matches(name, _ENTRYPOINTS, n=5, cutoff=0.4)
        hint = f" Closest names: {', '.join(close)}." if close else ""
        raise ValueError(
            f"Unknown zoo model {name!r}.{hint} Registered models: {', '.join(list())}."
        )
    return _ENTRYPOINTS[name]


def create(name: str, **overrides: Any) -> keras.Model:
    """Builds the registered model `name`, with any of its arguments overridden."""
    return _entrypoint(name)(**overrides)


def describe(name: str, **overrides: Any) -> dict[str, Any]:
    """Inputs, fusion kind and parameter count of the registered model `name`."""
    model = create(name, **overrides)
    inputs = {
        key: tuple(tensor.shape[1:]) for key, tensor in sorted(dict(model.input).items())
    }
    return {
        "name": name,
        "inputs": inputs,
        "fusion": getattr(model, "fusion_kind", "unknown"),
        "parameters": int(model.count_params()),
    }
