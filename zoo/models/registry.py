"""timm-style registry of zoo models: `register`, `list`, `create`, `describe`."""

from __future__ import annotations

import builtins
import difflib
import fnmatch
import inspect
import math
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
    """Builds the registered model `name`, with any of its arguments overridden.

    Raises:
        ValueError: `name` is not registered (the message lists the closest names).
        TypeError: an override is not an argument of that model (the message lists them).
    """
    builder = _entrypoint(name)
    parameters = inspect.signature(builder).parameters
    unknown = sorted(key for key in overrides if key not in parameters)
    if unknown:
        raise TypeError(
            f"Zoo model {name!r} has no argument(s) {', '.join(unknown)}; its arguments are "
            f"{', '.join(parameters)}."
        )
    return builder(**overrides)


def defaults(name: str) -> dict[str, Any]:
    """The default value of every argument of the registered model `name`."""
    return {
        key: parameter.default
        for key, parameter in inspect.signature(_entrypoint(name)).parameters.items()
    }


def describe(name: str, **overrides: Any) -> dict[str, Any]:
    """Builds `name` (with any overrides) and reports its structure.

    Returns:
        A dict with `name`, `inputs` ({modality: shape without batch}), `dtypes`, `fusion`
        ("early" / "late"), `fusion_head` (the fusion layer's class), `unimodal_logits` (whether
        the OGM-GE split exists), `parameters` (all weights, BatchNorm statistics included),
        `trainable_parameters` and `summary` (the first line of the builder's docstring).
    """
    model = create(name, **overrides)
    if hasattr(model, "modality_shapes"):
        inputs = dict(model.modality_shapes)
        dtypes = dict(model.modality_dtypes)
    else:  # a plain functional model registered by a user
        inputs = {key: tuple(t.shape[1:]) for key, t in sorted(dict(model.input).items())}
        dtypes = {key: t.dtype for key, t in sorted(dict(model.input).items())}
    fusion = getattr(model, "fusion", None)
    doc = inspect.getdoc(_entrypoint(name)) or ""
    return {
        "name": name,
        "inputs": inputs,
        "dtypes": dtypes,
        "fusion": getattr(model, "fusion_kind", "unknown"),
        "fusion_head": type(fusion).__name__ if fusion is not None else "unknown",
        "unimodal_logits": bool(getattr(model, "supports_unimodal_logits", False)),
        "parameters": int(model.count_params()),
        "trainable_parameters": int(
            sum(int(math.prod(v.shape)) for v in model.trainable_variables)
        ),
        "summary": doc.splitlines()[0] if doc else "",
    }
