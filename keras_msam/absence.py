"""What an absent modality looks like: per-input absence values, for modalities of several inputs.

A modality is one tensor (``audio: (B, 40, 40, 1)``) or a dict of tensors (``text: {"token_ids":
(B, T) int, "padding_mask": (B, T) bool}``); the model's inputs are then a nested dict. When a
coalition leaves a modality out, every input of that modality is replaced by its *absence value*,
one per input, chosen by a rule:

* a number: the input filled with it (``0``, the default, is "zeros"; a pad token id);
* ``"zeros"``: the same as ``0``;
* ``"keep_first"``: ones at the first position of axis 1, zeros elsewhere: a padding mask that
  keeps one (padding) token, so attention over the sequence stays finite (an all-zero mask can
  make a softmax over no position produce NaN);
* a callable: ``fn(example) -> absent example``, given one example (batch axis of 1) of that
  input; its result must broadcast to it. Callables are kept in a saved trainer only when Keras can
  serialise them (a registered function).

Defaults: an input whose name ends in ``mask`` (``padding_mask``, ``attention_mask``) gets
``"keep_first"``; every other input gets zeros (pad token id 0). Override per input with
``absence={"text": {"token_ids": 1}}`` (a trainer argument, or on the helpers), or per modality
with one rule for all its inputs (``absence={"text": 0}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from keras import ops

RULE_NAMES = ("zeros", "keep_first")

Rule = Any  # float | int | bool | "zeros" | "keep_first" | Callable[[Any], Any]


def map_leaves(fn: Callable[..., Any], structure: Any, *others: Any) -> Any:
    """Applies ``fn`` to the leaves of nested dicts (tuples and lists are leaves: shapes)."""
    if isinstance(structure, Mapping):
        return {
            key: map_leaves(fn, structure[key], *(other[key] for other in others))
            for key in structure
        }
    return fn(structure, *others)


def leaves(structure: Any) -> list[Any]:
    """The leaves of nested dicts, in sorted key order (Keras' flattening order)."""
    if isinstance(structure, Mapping):
        return [leaf for key in sorted(structure) for leaf in leaves(structure[key])]
    return [structure]


def leaf_paths(structure: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key path of every leaf of nested dicts, in sorted key order."""
    if isinstance(structure, Mapping):
        return [
            path for key in sorted(structure) for path in leaf_paths(structure[key], (*prefix, key))
        ]
    return [prefix]


def default_rule(path: tuple[str, ...]) -> Rule:
    """The default absence rule of the input at key ``path`` inside its modality (the empty
    path: a one-tensor modality, zeros)."""
    if path and str(path[-1]).lower().endswith("mask"):
        return "keep_first"
    return 0


def check_rule(rule: Rule, where: str) -> Rule:
    """Returns ``rule`` when it is a valid absence rule, else raises a `ValueError` naming it."""
    if callable(rule) or rule in RULE_NAMES:
        return rule
    if isinstance(rule, (bool, int, float)):
        return rule
    raise ValueError(
        f"Absence rule for {where} is {rule!r}; expected a number (the fill value), "
        f"one of {list(RULE_NAMES)}, or a callable mapping one example to its absent value."
    )


def resolve_rules(
    names: tuple[str, ...], shapes: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Per modality, the absence rule of each of its inputs (a tree shaped like its input).

    Args:
        names: The modality names.
        shapes: ``{modality: per-example shape}`` or ``{modality: {input: shape}}``; None where
            unknown (the modality is then taken as one tensor, unless an override is a dict).
        overrides: ``{modality: rule}`` or ``{modality: {input: rule}}``; missing entries keep
            their defaults.

    Raises:
        ValueError: an override for an unknown modality or input, or an invalid rule.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(
            f"absence names unknown modality(ies) {unknown}; the modalities are {list(names)}."
        )
    rules: dict[str, Any] = {}
    for name in names:
        shape = shapes.get(name)
        if isinstance(shape, Mapping):
            tree = map_leaves(lambda _: None, shape)
            for path in leaf_paths(shape):
                _set(tree, path, default_rule(path))
        else:
            tree = 0
        override = overrides.get(name)
        if override is None:
            rules[name] = tree
        elif isinstance(override, Mapping):
            if not isinstance(tree, Mapping):
                if shape is not None:
                    raise ValueError(
                        f"absence[{name!r}] is a dict, but modality {name!r} is one tensor; "
                        "give one rule."
                    )
                tree = {}
            for path in leaf_paths(override):
                if isinstance(shape, Mapping) and not _has(tree, path):
                    raise ValueError(
                        f"absence[{name!r}] names input {'/'.join(path)!r}, which modality "
                        f"{name!r} does not have; its inputs are "
                        f"{['/'.join(p) for p in leaf_paths(shape)]}."
                    )
                _set(tree, path, check_rule(_get(override, path), f"{name}/{'/'.join(path)}"))
            rules[name] = tree
        else:
            rule = check_rule(override, repr(name))
            rules[name] = map_leaves(lambda _, rule=rule: rule, tree)
    return rules


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _has(tree: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return False
        tree = tree[key]
    return True


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def absent_leaf(value: Any, rule: Rule) -> Any:
    """The absent version of one example (batch axis 1) of the input ``value`` (any batch)."""
    example = ops.convert_to_tensor(value)[:1]
    if callable(rule):
        return ops.cast(ops.broadcast_to(rule(example), ops.shape(example)), example.dtype)
    if rule == "keep_first":
        if len(example.shape) < 2:
            raise ValueError(
                f"Absence rule 'keep_first' needs a (batch, length, ...) input, got shape "
                f"{tuple(example.shape)}."
            )
        position = ops.cumsum(ops.ones_like(example, dtype="int32"), axis=1)
        return ops.cast(ops.equal(position, 1), example.dtype)
    fill = 0 if rule == "zeros" else rule
    return ops.full_like(example, fill)


def absent_example(x: Mapping[str, Any], names: tuple[str, ...], rules: Mapping[str, Any]) -> dict:
    """One example (batch axis 1) of the batch ``x`` with every modality in ``names`` absent."""
    return {
        name: map_leaves(absent_leaf, x[name], rules_like(x[name], rules.get(name)))
        for name in names
    }


def rules_like(value: Any, rule_tree: Any, path: tuple[str, ...] = ()) -> Any:
    """``rule_tree`` shaped like the modality value ``value`` (defaults where it says nothing)."""
    if isinstance(value, Mapping):
        if isinstance(rule_tree, Mapping) or rule_tree is None:
            tree = rule_tree or {}
            return {key: rules_like(value[key], tree.get(key), (*path, key)) for key in value}
        return map_leaves(lambda _: rule_tree, value)
    if isinstance(rule_tree, Mapping):
        raise ValueError(
            f"Absence rules {rule_tree!r} are per input, but the value at {list(path)} is one "
            "tensor."
        )
    return default_rule(path) if rule_tree is None else rule_tree


def serialize_rules(rules: Mapping[str, Any]) -> dict[str, Any]:
    """``absence`` rules as config: callables become ``{"callable": <Keras config>}``."""

    def one(rule: Any) -> Any:
        if callable(rule):
            import keras

            return {"callable": keras.saving.serialize_keras_object(rule)}
        return rule

    return {name: map_leaves(one, rule) for name, rule in rules.items()}


def deserialize_rules(config: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `serialize_rules` (rules already live pass through)."""

    def one(tree: Any) -> Any:
        if isinstance(tree, Mapping):
            if set(tree) == {"callable"}:
                import keras

                return keras.saving.deserialize_keras_object(tree["callable"])
            return {key: one(value) for key, value in tree.items()}
        return tree

    return {name: one(rule) for name, rule in config.items()}
