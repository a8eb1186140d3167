"""`MultimodalClassifier`: the structure every zoo model exposes to the trainers.

A zoo model is one encoder per modality (a functional model from the input named after the
modality to a feature tensor) and one fusion head (`zoo.models.fusions`) from the dict of
features to logits. That split gives the trainers what balancing methods need:

- `modality_names`, `fusion_kind` ("early" or "late");
- `modality_variables()` (each modality's encoder variables) and `shared_variables()` (the
  fusion head's), together every trainable variable exactly once;
- `encode(inputs)` → {modality: features} and `fuse(features)` → logits, with
  `fuse(encode(x)) == model(x)`, so modality coalitions can be formed on features (a modality's
  features replaced by what its encoder gives for an all-zero input) without re-running encoders;
- `unimodal_logits(features)` for linear late fusion (OGM-GE's split): per-modality terms whose
  sum plus `head_bias()` is the fused logits.

Inputs are checked before anything runs: a missing or extra modality, or a wrong shape, raises
a `ValueError` that names the input and the expected shape.
"""

from __future__ import annotations

from typing import Any

import keras

from zoo.models.fusions import Fusion


def _shape_text(shape: Any) -> str:
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k!r}: {_shape_text(v)}" for k, v in shape.items()) + "}"
    return "(" + ", ".join("batch" if d is None else str(d) for d in (None, *shape)) + ")"


def _encoder_inputs(encoder: keras.Model, read: Any) -> Any:
    """``read(input tensor)`` for the encoder's one input, or per input of a dict input."""
    declared = encoder.input
    if isinstance(declared, dict):
        return {key: read(tensor) for key, tensor in declared.items()}
    return read(encoder.inputs[0])


@keras.saving.register_keras_serializable(package="zoo")
class MultimodalClassifier(keras.Model):
    """Per-modality encoders joined by a fusion head; dict inputs, logits out.

    Args:
        encoders: {modality name: built single-input model} giving that modality's features.
        fusion: a `Fusion` layer from {modality: features} to logits (batch, num_classes).
        **kwargs: `keras.Model` arguments (`name`, ...).
    """

    def __init__(self, encoders: dict[str, keras.Model], fusion: Fusion, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(encoders, dict) or len(encoders) < 2:
            raise ValueError(
                f"A multimodal classifier needs encoders for at least 2 modalities, got "
                f"{encoders!r}."
            )
        if not isinstance(fusion, Fusion):
            raise ValueError(f"fusion must be a zoo Fusion layer, got {fusion!r}.")
        self._modality_names = tuple(sorted(encoders))
        for name in self._modality_names:
            encoder = encoders[name]
            if len(encoder.inputs) != 1 and not isinstance(encoder.input, dict):
                raise ValueError(
                    f"The encoder of {name!r} must take exactly one input, or a dict of inputs "
                    f"(a modality of several inputs); it takes {len(encoder.inputs)} as a "
                    f"{type(encoder.input).__name__}."
                )
        # A list (in sorted modality order) keeps weight paths stable when saving.
        self.encoder_list = [encoders[name] for name in self._modality_names]
        self.fusion = fusion
        self.fusion(
            {
                name: keras.KerasTensor(encoder.outputs[0].shape, dtype=encoder.outputs[0].dtype)
                for name, encoder in zip(self._modality_names, self.encoder_list, strict=True)
            }
        )
        self.built = True

    # ----------------------------------------------------------------- structure
    @property
    def modality_names(self) -> tuple[str, ...]:
        """The modality names (the input dict's keys), sorted."""
        return self._modality_names

    @property
    def fusion_kind(self) -> str:
        """ "early" (features joined before a shared trunk) or "late" (a fusion head)."""
        return self.fusion.fusion_kind

    @property
    def encoders(self) -> dict[str, keras.Model]:
        """{modality: encoder model}."""
        return dict(zip(self._modality_names, self.encoder_list, strict=True))

    @property
    def modality_shapes(self) -> dict[str, Any]:
        """{modality: expected input shape without the batch axis}; for a modality of several
        inputs, {input: shape}."""
        return {
            name: _encoder_inputs(encoder, lambda tensor: tuple(tensor.shape[1:]))
            for name, encoder in zip(self._modality_names, self.encoder_list, strict=True)
        }

    @property
    def modality_dtypes(self) -> dict[str, Any]:
        """{modality: expected input dtype} ("float32", or "int32" for token ids); for a
        modality of several inputs, {input: dtype}."""
        return {
            name: _encoder_inputs(encoder, lambda tensor: tensor.dtype)
            for name, encoder in zip(self._modality_names, self.encoder_list, strict=True)
        }

    @property
    def supports_unimodal_logits(self) -> bool:
        """Whether the fusion is linear late fusion, so `unimodal_logits` exists."""
        return bool(self.fusion.is_linear)

    def modality_variables(self) -> dict[str, list[keras.Variable]]:
        """{modality: trainable variables of that modality's encoder}."""
        return {
            name: list(encoder.trainable_variables)
            for name, encoder in zip(self._modality_names, self.encoder_list, strict=True)
        }

    def shared_variables(self) -> list[keras.Variable]:
        """Trainable variables not owned by one modality: those of the fusion head / trunk."""
        return list(self.fusion.trainable_variables)

    # ------------------------------------------------------------------ compute
    def check_inputs(self, inputs: Any) -> None:
        """Raises `ValueError` naming the input and the expected shape if `inputs` does not fit."""
        expected = self.modality_shapes
        if not isinstance(inputs, dict):
            raise ValueError(
                f"Model {self.name!r} takes a dict keyed by modality name "
                f"{list(self._modality_names)}, got {type(inputs).__name__}. Expected shapes: "
                + ", ".join(f"{name!r}: {_shape_text(s)}" for name, s in expected.items())
            )
        missing = [name for name in self._modality_names if name not in inputs]
        extra = sorted(str(name) for name in inputs if name not in expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(
                    "missing "
                    + ", ".join(f"input {n!r} of shape {_shape_text(expected[n])}" for n in missing)
                )
            if extra:
                parts.append("unexpected input(s) " + ", ".join(repr(n) for n in extra))
            raise ValueError(
                f"Model {self.name!r}: {'; '.join(parts)}. It takes exactly the modalities "
                f"{list(self._modality_names)}."
            )
        for name in self._modality_names:
            want = expected[name]
            if isinstance(want, dict):
                value = inputs[name]
                if not isinstance(value, dict) or set(value) != set(want):
                    got = sorted(value) if isinstance(value, dict) else type(value).__name__
                    raise ValueError(
                        f"Model {self.name!r}: input {name!r} is made of the inputs "
                        f"{_shape_text(want)}; got {got}."
                    )
                for key in want:
                    self._check_shape(f"{name}/{key}", value[key], want[key])
            else:
                if isinstance(inputs[name], dict):
                    raise ValueError(
                        f"Model {self.name!r}: input {name!r} is one tensor of shape "
                        f"{_shape_text(want)}; got a dict with keys {sorted(inputs[name])}."
                    )
                self._check_shape(name, inputs[name], want)

    def _check_shape(self, label: str, value: Any, want: tuple[int | None, ...]) -> None:
        shape = tuple(value.shape)[1:]
        if len(shape) != len(want) or any(
            w is not None and s is not None and int(s) != int(w)
            for s, w in zip(shape, want, strict=True)
        ):
            got = tuple(None if s is None else int(s) for s in shape)
            raise ValueError(
                f"Model {self.name!r}: input {label!r} has shape {_shape_text(got)}, "
                f"expected {_shape_text(want)}."
            )

    def _encode(self, inputs: dict[str, Any], training: bool | None) -> dict[str, Any]:
        return {
            name: encoder(inputs[name], training=training)
            for name, encoder in zip(self._modality_names, self.encoder_list, strict=True)
        }

    def encode(self, inputs: dict[str, Any], training: bool | None = False) -> dict[str, Any]:
        """Runs each modality's encoder: {modality: feature tensor}."""
        self.check_inputs(inputs)
        return self._encode(inputs, training)

    def fuse(self, features: dict[str, Any], training: bool | None = False) -> Any:
        """Runs the fusion head on {modality: features}: logits (batch, num_classes)."""
        missing = [name for name in self._modality_names if name not in features]
        if missing or len(features) != len(self._modality_names):
            raise ValueError(
                f"Model {self.name!r}: fuse takes the features of exactly the modalities "
                f"{list(self._modality_names)}, got {sorted(features)}."
            )
        return self.fusion(features, training=training)

    def unimodal_logits(self, features: dict[str, Any]) -> dict[str, Any]:
        """{modality: its additive contribution to the logits} for linear late fusion.

        Σ_m unimodal_logits[m] + `head_bias()` equals `fuse(features)` (OGM-GE's split). Raises
        `ValueError` for any other fusion (see `supports_unimodal_logits`).
        """
        return self.fusion.unimodal_logits(features)

    def head_bias(self) -> Any:
        """The shared bias of a linear late-fusion head (added once to the unimodal sum)."""
        return self.fusion.bias_value()

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        self.check_inputs(inputs)
        return self.fusion(self._encode(inputs, training), training=training)

    # ------------------------------------------------------------ serialisation
    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoders": {
                name: keras.saving.serialize_keras_object(encoder)
                for name, encoder in zip(self._modality_names, self.encoder_list, strict=True)
            },
            "fusion": keras.saving.serialize_keras_object(self.fusion),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultimodalClassifier:
        config = dict(config)
        encoders = {
            name: keras.saving.deserialize_keras_object(encoder)
            for name, encoder in config.pop("encoders").items()
        }
        fusion = keras.saving.deserialize_keras_object(config.pop("fusion"))
        return cls(encoders=encoders, fusion=fusion, **config)
