"""KerasHub backbones as the encoders of zoo models (``pip install keras-hub``; optional).

`hub_encoder` wraps a KerasHub ``Backbone`` into a zoo encoder: one input named after the
modality, one feature vector out.

- **Image backbones** (ResNet, ViT, ...; one image input): an image (H, W, C) gives the
  backbone's feature map average-pooled (rank-4 outputs) or its class token / token mean
  (rank-3 outputs, ``pooling="cls"|"mean"``); frames (T, H, W, C) run through the backbone one
  by one (folded into the batch) and their features are averaged over time.
- **Text backbones** (BERT, ...; ``token_ids`` / ``padding_mask`` inputs): the modality is its
  token ids (L,) int32; the padding mask is derived (``token_ids != pad_token_id``) with the
  first position always kept, so an absent text modality (all ids zero, how the trainers remove
  a modality) still attends to one token and stays finite; ``segment_ids`` are zeros. Features:
  the backbone's ``pooled_output`` when it has one, else the masked mean of its sequence.

`with_hub_encoders` builds any registered zoo model and swaps some of its encoders for KerasHub
ones, keeping the model's fusion (a fresh copy of its configuration). ``freeze`` keeps chosen
encoders' weights fixed (fine-tune the rest). A backbone is given as an instance, as a class
with ``backbone_options`` (random weights: what the tests use), or as a preset name
(``Backbone.from_preset``: the user's downloaded or cached weights; nothing is fetched here).
Every backbone variable belongs to its modality's encoder, so M-SAM's modality structure
(``modality_variables``) and every balancing method see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import keras
from keras import ops

from zoo.models.base import MultimodalClassifier
from zoo.models.registry import create

POOLINGS = ("auto", "avg", "cls", "mean")


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "KerasHub encoders need keras-hub: pip install keras-hub (an optional extra)."
        ) from error
    return keras_hub


def resolve_backbone(backbone: Any, backbone_options: Mapping[str, Any] | None = None) -> Any:
    """A KerasHub backbone from an instance, a class (built with ``backbone_options``, random
    weights) or a preset name (``keras_hub.models.Backbone.from_preset``)."""
    hub = _keras_hub()
    if isinstance(backbone, str):
        return hub.models.Backbone.from_preset(backbone, **dict(backbone_options or {}))
    if isinstance(backbone, type):
        if not issubclass(backbone, hub.models.Backbone):
            raise TypeError(f"{backbone.__name__} is not a keras_hub.models.Backbone subclass.")
        return backbone(**dict(backbone_options or {}))
    if isinstance(backbone, hub.models.Backbone):
        if backbone_options:
            raise ValueError(
                "backbone_options apply to a backbone class or preset, not an instance."
            )
        return backbone
    raise TypeError(
        f"backbone must be a keras_hub Backbone, a Backbone class or a preset name, got "
        f"{type(backbone).__name__}."
    )


def is_text_backbone(backbone: Any) -> bool:
    """Whether the backbone reads token ids (a dict input holding ``token_ids``)."""
    inputs = backbone.input
    return isinstance(inputs, dict) and "token_ids" in inputs


@keras.saving.register_keras_serializable(package="zoo")
class TextBackboneFeatures(keras.layers.Layer):
    """Token ids (B, L) → a feature vector through a KerasHub text backbone (see module doc)."""

    def __init__(self, backbone: Any, pad_token_id: int = 0, pooling: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.pad_token_id = int(pad_token_id)
        self.pooling = pooling

    def call(self, token_ids: Any) -> Any:
        """``token_ids`` (B, L), the mask derived from the pad id, or ``{"token_ids",
        "padding_mask"}`` as the tokenizer gave them (a modality of two inputs)."""
        if isinstance(token_ids, dict):
            mask = ops.cast(token_ids["padding_mask"], "bool")
            token_ids = ops.cast(token_ids["token_ids"], "int32")
        else:
            token_ids = ops.cast(token_ids, "int32")
            keep = ops.not_equal(token_ids, self.pad_token_id)
            first = ops.expand_dims(ops.arange(ops.shape(token_ids)[1]) == 0, 0)
            mask = ops.logical_or(keep, first)  # one attended token: finite for an absent text
        inputs = {"token_ids": token_ids, "padding_mask": ops.cast(mask, "int32")}
        if "segment_ids" in self.backbone.input:
            inputs["segment_ids"] = ops.zeros_like(token_ids)
        outputs = self.backbone(inputs)
        if (
            isinstance(outputs, dict)
            and "pooled_output" in outputs
            and self.pooling
            in (
                "auto",
                "cls",
            )
        ):
            return outputs["pooled_output"]
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        weights = ops.expand_dims(ops.cast(mask, sequence.dtype), -1)
        return ops.sum(sequence * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        if isinstance(input_shape, dict):
            input_shape = input_shape["token_ids"]
        output = self.backbone.output
        sequence = output["sequence_output"] if isinstance(output, dict) else output
        return (input_shape[0], int(sequence.shape[-1]))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "pad_token_id": self.pad_token_id,
            "pooling": self.pooling,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextBackboneFeatures:
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _image_features(backbone: Any, pooling: str) -> keras.Model:
    """One image → one feature vector through the backbone."""
    image = keras.Input(tuple(backbone.input_shape[1:]))
    features = backbone(image)
    if len(features.shape) == 4:
        if pooling not in ("auto", "avg"):
            raise ValueError(f"pooling={pooling!r}: a feature map is average-pooled ('avg').")
        features = keras.layers.GlobalAveragePooling2D()(features)
    elif len(features.shape) == 3:
        if pooling == "mean":
            features = keras.layers.GlobalAveragePooling1D()(features)
        else:  # "auto" / "cls": the class token
            features = keras.layers.Lambda(lambda t: t[:, 0])(features)
    return keras.Model(image, features)


def hub_encoder(
    modality: str,
    backbone: Any,
    input_shape: Iterable[int] | None = None,
    *,
    backbone_options: Mapping[str, Any] | None = None,
    pooling: str = "auto",
    pad_token_id: int = 0,
    text_inputs: str = "token_ids",
    trainable: bool = True,
) -> keras.Model:
    """A zoo encoder (input named ``modality`` → features) around a KerasHub backbone.

    Args:
        modality: The modality (and input) name.
        backbone: A ``keras_hub.models.Backbone`` instance, class or preset name.
        input_shape: Per-example input shape. Image backbones: (H, W, C) or frames
            (T, H, W, C) (default: the backbone's image shape); text backbones: (L,) token ids
            (default: the backbone's ``max_sequence_length``).
        backbone_options: Constructor (class) or ``from_preset`` (name) arguments.
        pooling: ``"auto"``, ``"avg"`` (feature maps), ``"cls"`` or ``"mean"`` (tokens).
        pad_token_id: The padding id of text backbones.
        text_inputs: Text backbones: ``"token_ids"`` (the modality is token ids, the padding
            mask derived from ``pad_token_id``) or ``"token_ids_and_mask"`` (the modality is
            ``{"token_ids": (L,), "padding_mask": (L,)}`` as the tokenizer gives them, a
            modality of two inputs; an absent one keeps its mask's first position,
            `keras_msam.absence`).
        trainable: False freezes the encoder.

    Raises:
        ValueError: an unknown ``pooling`` or an input shape the backbone cannot take.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    backbone = resolve_backbone(backbone, backbone_options)
    if is_text_backbone(backbone):
        if input_shape is None:
            length = getattr(backbone, "max_sequence_length", None)
            if length is None:
                raise ValueError(f"{modality!r}: give input_shape=(L,) for this text backbone.")
            input_shape = (int(length),)
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 1:
            raise ValueError(
                f"{modality!r}: a text backbone takes token ids (L,), got {input_shape}."
            )
        layer = TextBackboneFeatures(backbone, pad_token_id, pooling, name=f"{modality}_text")
        if text_inputs == "token_ids":
            tokens = keras.Input(input_shape, dtype="int32", name=modality)
        elif text_inputs == "token_ids_and_mask":
            tokens = {
                "token_ids": keras.Input(input_shape, dtype="int32", name="token_ids"),
                "padding_mask": keras.Input(input_shape, dtype="int32", name="padding_mask"),
            }
        else:
            raise ValueError(
                f"text_inputs must be 'token_ids' or 'token_ids_and_mask', got {text_inputs!r}."
            )
        encoder = keras.Model(tokens, layer(tokens), name=f"{modality}_hub_encoder")
    else:
        image_shape = tuple(int(d) for d in backbone.input_shape[1:])
        shape = image_shape if input_shape is None else tuple(int(d) for d in input_shape)
        per_image = _image_features(backbone, pooling)
        inputs = keras.Input(shape, name=modality)
        if shape == image_shape:
            features = per_image(inputs)
        elif len(shape) == len(image_shape) + 1 and shape[1:] == image_shape:
            frames = keras.layers.TimeDistributed(per_image)(inputs)
            features = keras.layers.GlobalAveragePooling1D()(frames)
        else:
            raise ValueError(
                f"{modality!r}: input shape {shape} does not fit the backbone's image shape "
                f"{image_shape} (give one image or frames (T, *image_shape))."
            )
        encoder = keras.Model(inputs, features, name=f"{modality}_hub_encoder")
    encoder.trainable = bool(trainable)
    return encoder


def with_hub_encoders(
    name: str,
    encoders: Mapping[str, keras.Model | Mapping[str, Any]],
    freeze: Iterable[str] = (),
    **overrides: Any,
) -> MultimodalClassifier:
    """The registered zoo model ``name`` with some encoders taken from KerasHub.

    Args:
        name: A registered zoo model (``zoo.models.list()``).
        encoders: {modality: a built encoder (e.g. `hub_encoder`) or `hub_encoder` keyword
            arguments (``{"backbone": ..., "input_shape": ...}``)}.
        freeze: Modalities whose encoder keeps its weights (no gradient).
        **overrides: Arguments of the registered model (``num_classes``, ...).

    Raises:
        ValueError: a modality the model does not have.
    """
    base = create(name, **overrides)
    known = base.modality_names
    for modality in [*encoders, *freeze]:
        if modality not in known:
            raise ValueError(
                f"Zoo model {name!r} has no modality {modality!r}; its modalities: "
                f"{', '.join(known)}."
            )
    built = dict(base.encoders)
    for modality, spec in encoders.items():
        built[modality] = (
            spec if isinstance(spec, keras.Model) else hub_encoder(modality, **dict(spec))
        )
    for modality in freeze:
        built[modality].trainable = False
    fusion = type(base.fusion).from_config(base.fusion.get_config())
    return MultimodalClassifier(built, fusion, name=f"{base.name}_hub")
