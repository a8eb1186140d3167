"""Modality introspection: names, input specs and the split of a model's variables by modality.

A multimodal model here is any `keras.Model` whose inputs are a dict keyed by modality name; a
modality is one tensor or a dict of tensors (``text: {"token_ids", "padding_mask"}``: the inputs
are then a nested dict, and an absent modality takes each input's absence value, see
`keras_msam.absence`). Structure is read from, in order:

1. the zoo protocol, when the model has it: ``model.modality_names`` (sorted tuple),
   ``model.modality_variables()`` → ``{modality: [trainable variables of its encoder]}`` and
   ``model.shared_variables()`` → the remaining trainable variables;
2. the functional graph: a variable belongs to modality ``m`` when every path into its layer
   starts at input ``m``; every other variable is shared (SPEC §3);
3. for a subclassed model without the protocol, the ``modalities`` argument the user gives; all
   its variables are then shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras

from keras_msam.absence import leaf_paths, leaves, map_leaves, resolve_rules


@dataclass(frozen=True)
class ModalityStructure:
    """What a trainer needs to know about a multimodal model.

    Attributes:
        names: Modality names, sorted (dicts are flattened in sorted key order by Keras).
        input_shapes: Per modality, the declared per-example shape (without the batch axis), a
            dict of them for a modality of several inputs, or ``None`` where the model does not
            declare one.
        variable_groups: Per modality, the trainable variables that only that modality reaches.
        shared_variables: Trainable variables reached by two or more modalities (fusion, head).
        absence: Per modality, the absence rule of each input (`keras_msam.absence`): one rule
            for a one-tensor modality, a dict of rules shaped like its inputs otherwise.
    """

    names: tuple[str, ...]
    input_shapes: dict[str, Any] = field(default_factory=dict)
    variable_groups: dict[str, list[Any]] = field(default_factory=dict)
    shared_variables: list[Any] = field(default_factory=list)
    absence: dict[str, Any] = field(default_factory=dict)

    def group_index(self, variable: Any) -> int:
        """Index of the modality owning ``variable`` in ``names``, or -1 for shared variables."""
        for index, name in enumerate(self.names):
            if any(variable is owned for owned in self.variable_groups.get(name, [])):
                return index
        return -1


def _declared_inputs(model: keras.Model) -> dict[str, Any] | None:
    """The model's symbolic inputs as ``{name: KerasTensor}``, or None for subclassed models."""
    try:
        inputs = model.input
    except (AttributeError, ValueError):
        return None
    if isinstance(inputs, dict):
        return dict(inputs)
    if isinstance(inputs, (list, tuple)):
        named = {}
        for tensor in inputs:
            name = getattr(tensor, "name", None)
            if not name:
                return None
            named[name.split(":")[0]] = tensor
        return named
    return None


def modality_structure(
    model: keras.Model,
    modalities: list[str] | tuple[str, ...] | None = None,
    absence: dict[str, Any] | None = None,
) -> ModalityStructure:
    """Reads the modality names, input shapes, variable split and absence rules of ``model``.

    Args:
        model: A Keras model with dict inputs keyed by modality name.
        modalities: Modality names, required only for subclassed models that neither declare
            functional inputs nor implement ``modality_names``.
        absence: Absence rules overriding the defaults and the model's own
            ``modality_absence`` (if it has one): ``{modality: rule}`` or
            ``{modality: {input: rule}}``; see `keras_msam.absence`.

    Returns:
        A `ModalityStructure`.

    Raises:
        ValueError: When the modality names cannot be determined, or ``modalities`` disagrees
            with the model's declared inputs.
    """
    declared = _declared_inputs(model)
    protocol_names = getattr(model, "modality_names", None)
    if protocol_names is not None:
        names = tuple(sorted(protocol_names))
    elif declared is not None:
        names = tuple(sorted(declared))
    elif modalities is not None:
        names = tuple(sorted(modalities))
    else:
        raise ValueError(
            f"Cannot tell the modalities of model {model.name!r}: it declares no functional "
            "inputs and no `modality_names`. Build it with dict inputs "
            "(`keras.Model({'audio': a, 'visual': v}, outputs)`) or pass `modalities=[...]`."
        )
    if modalities is not None and tuple(sorted(modalities)) != names:
        raise ValueError(
            f"`modalities={sorted(modalities)}` does not match the inputs of model "
            f"{model.name!r}, which are {list(names)}."
        )
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"Modality names must be distinct and non-empty, got {list(names)}.")

    input_shapes: dict[str, Any] = {name: None for name in names}
    protocol_shapes = getattr(model, "modality_shapes", None)
    if protocol_shapes:
        for name in names:
            if protocol_shapes.get(name) is not None:
                input_shapes[name] = map_leaves(tuple, protocol_shapes[name])
    elif declared is not None:
        for name in names:
            if name in declared:
                input_shapes[name] = map_leaves(lambda t: tuple(t.shape[1:]), declared[name])
    rules = dict(getattr(model, "modality_absence", None) or {})
    rules.update(absence or {})

    if hasattr(model, "modality_variables") and hasattr(model, "shared_variables"):
        groups = {name: list(variables) for name, variables in model.modality_variables().items()}
        shared = list(model.shared_variables())
    elif declared is not None and hasattr(model, "_nodes_by_depth"):
        groups, shared = _split_functional_variables(model, declared, names)
    else:
        groups, shared = {name: [] for name in names}, list(model.trainable_variables)
    return ModalityStructure(
        names, input_shapes, groups, shared, resolve_rules(names, input_shapes, rules)
    )


def structure_of(model: Any, absence: dict[str, Any] | None = None) -> ModalityStructure:
    """The modality structure of a keras-msam trainer (its own, with its ``absence`` rules) or
    of a Keras model; ``absence`` overrides rules for this call."""
    own = getattr(model, "_structure", None)
    if isinstance(own, ModalityStructure):
        if not absence:
            return own
        rules = {**dict(getattr(model, "absence", None) or {}), **absence}
        return modality_structure(model.model, getattr(model, "modalities", None), rules)
    return modality_structure(getattr(model, "model", model), absence=absence)


def _split_functional_variables(
    model: keras.Model, declared: dict[str, Any], names: tuple[str, ...]
) -> tuple[dict[str, list[Any]], list[Any]]:
    """Assigns each layer's trainable variables to the single input that reaches it, if any."""
    sources: dict[int, set[str]] = {
        id(tensor): {name} for name, inputs in declared.items() for tensor in leaves(inputs)
    }
    reached_by: dict[int, set[str]] = {}
    layers_by_id: dict[int, Any] = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            incoming: set[str] = set()
            for tensor in node.input_tensors:
                incoming |= sources.get(id(tensor), set())
            for tensor in node.output_tensors:
                sources[id(tensor)] = sources.get(id(tensor), set()) | incoming
            operation = node.operation
            if isinstance(operation, keras.layers.InputLayer):
                continue
            layers_by_id[id(operation)] = operation
            reached_by.setdefault(id(operation), set()).update(incoming)

    groups: dict[str, list[Any]] = {name: [] for name in names}
    owner: dict[int, str | None] = {}
    for layer_id, layer in layers_by_id.items():
        reach = reached_by[layer_id]
        modality = next(iter(reach)) if len(reach) == 1 else None
        for variable in layer.trainable_variables:
            previous = owner.get(id(variable), modality)
            owner[id(variable)] = modality if previous == modality else None
    shared = []
    for variable in model.trainable_variables:
        modality = owner.get(id(variable))
        if modality is None:
            shared.append(variable)
        else:
            groups[modality].append(variable)
    return groups, shared


def validate_inputs(x: Any, structure: ModalityStructure, where: str = "inputs") -> None:
    """Raises a ValueError naming the problem when ``x`` is not a valid multimodal batch.

    Checks that ``x`` is a dict, that its keys are exactly the modality names (and, for a
    modality of several inputs, that its value is a dict with exactly those inputs), and that
    each array's rank and static dimensions match the model's declared input shape.
    """
    if not isinstance(x, dict):
        raise ValueError(
            f"Expected {where} to be a dict keyed by modality name {list(structure.names)}, "
            f"got {type(x).__name__}. Batches must be `({{modality: array}}, labels)`."
        )
    _check_keys(
        set(x),
        set(structure.names),
        f"{where.capitalize()} do not match the model's modalities",
        "modality key(s)",
    )
    for name in structure.names:
        expected = structure.input_shapes.get(name)
        if expected is None:
            continue
        if isinstance(expected, dict):
            if not isinstance(x[name], dict):
                raise ValueError(
                    f"Modality {name!r} is made of the inputs "
                    f"{['/'.join(p) for p in leaf_paths(expected)]}: expected a dict for it, got "
                    f"{type(x[name]).__name__}."
                )
            got_paths = set(leaf_paths(x[name]))
            want_paths = set(leaf_paths(expected))
            _check_keys(
                {"/".join(p) for p in got_paths},
                {"/".join(p) for p in want_paths},
                f"Modality {name!r} does not match the model's inputs",
                "input(s)",
            )
            for path in sorted(want_paths):
                value, shape = x[name], expected
                for key in path:
                    value, shape = value[key], shape[key]
                _check_shape(f"{name}/{'/'.join(path)}", value, shape)
        else:
            if isinstance(x[name], dict):
                raise ValueError(
                    f"Modality {name!r} is one tensor of shape (batch, "
                    f"{', '.join('None' if d is None else str(d) for d in expected)}); got a dict "
                    f"with keys {sorted(x[name])}."
                )
            _check_shape(name, x[name], expected)


def _check_keys(keys: set[str], names: set[str], message: str, what: str) -> None:
    missing = sorted(names - keys)
    extra = sorted(keys - names)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {what} {missing}")
        if extra:
            parts.append(f"unexpected key(s) {extra}")
        raise ValueError(f"{message}: {' and '.join(parts)}; expected exactly {sorted(names)}.")


def _check_shape(label: str, value: Any, expected: tuple[int | None, ...]) -> None:
    shape = tuple(getattr(value, "shape", ()))
    got = shape[1:]
    if len(got) != len(expected) or any(
        e is not None and g is not None and int(g) != int(e) for g, e in zip(got, expected)
    ):
        raise ValueError(
            f"Modality {label!r} has shape {shape}; expected (batch, "
            f"{', '.join('None' if d is None else str(d) for d in expected)})."
        )
