"""Fusion heads: layers from a dict {modality: feature tensor} to logits (batch, num_classes).

Modalities are always taken in sorted name order, any number ≥ 2 of them.

Late fusion (MultiZoo `fusions/common_fusions.py`, OGM-GE `models/fusion_modules.py`):
- `ConcatFusion`: concatenation + one linear layer (linear; OGM-GE split by weight slices).
- `SumFusion`: a bias-free linear head per modality, summed, plus one shared bias (linear).
- `GatedFusion`: gated multimodal unit, a softmax gate over modalities (OGM-GE's gated fusion,
  generalised beyond two modalities).
- `FiLMFusion`: the other modalities predict a scale and shift of one target modality (FiLM).
- `TensorFusion` (TFN) and `LowRankTensorFusion` (LMF).
- `TransformerFusion`: one token per modality plus a class token through a Transformer encoder.
- `ConcatMLPFusion`: concatenation + an MLP head (MultiBench's usual late-fusion head).

Early fusion:
- `EarlyFusion`: features concatenated on the last axis, then a shared trunk network (MaxOut
  MLP, MLP, GRU...) that ends in the logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers, ops

from zoo.models.layers import TransformerEncoderBlock


def _sorted_items(features: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(name, features[name]) for name in sorted(features)]


def _check_shapes(layer: layers.Layer, input_shape: Any, minimum: int = 2) -> dict[str, tuple]:
    if not isinstance(input_shape, dict) or len(input_shape) < minimum:
        raise ValueError(
            f"{type(layer).__name__} fuses a dict of at least {minimum} modality features, got "
            f"{input_shape!r}."
        )
    return {name: tuple(input_shape[name]) for name in sorted(input_shape)}


class Fusion(layers.Layer):
    """Base of the fusion heads: `call(features: dict) -> logits`.

    Attributes:
        fusion_kind: "late" or "early".
        is_linear: whether the logits are a sum of per-modality linear terms plus one bias, so
            `unimodal_logits` (the OGM-GE split) exists.
    """

    fusion_kind = "late"
    is_linear = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def unimodal_logits(self, features: dict[str, Any]) -> dict[str, Any]:
        raise ValueError(
            f"{type(self).__name__} is not a linear late fusion: its logits do not split into "
            "per-modality terms. Unimodal logits (the OGM-GE split) exist for 'concat' and "
            "'sum' fusion only."
        )

    def bias_value(self) -> Any:
        """The shared bias added once to the sum of the unimodal logits (linear fusions)."""
        raise ValueError(f"{type(self).__name__} is not a linear late fusion.")

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        first = input_shape[sorted(input_shape)[0]]
        return (first[0], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="zoo")
class ConcatFusion(Fusion):
    """Concatenation of the modality features, then one linear layer (`head`).

    Unimodal logits: each modality's features times its row slice of the head kernel; their
    sum plus the head bias is the fused logits (OGM-GE's split of `fc_out`).
    """

    is_linear = True

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.head = layers.Dense(self.num_classes, name="head")

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        self.feature_dims = {name: int(shape[-1]) for name, shape in shapes.items()}
        self.head.build((None, sum(self.feature_dims.values())))

    def call(self, inputs: dict[str, Any]) -> Any:
        joined = ops.concatenate([value for _, value in _sorted_items(inputs)], axis=-1)
        return self.head(joined)

    def unimodal_logits(self, features: dict[str, Any]) -> dict[str, Any]:
        contributions, offset = {}, 0
        for name, value in _sorted_items(features):
            dim = self.feature_dims[name]
            contributions[name] = ops.matmul(value, self.head.kernel[offset : offset + dim])
            offset += dim
        return contributions

    def bias_value(self) -> Any:
        return ops.convert_to_tensor(self.head.bias)


@keras.saving.register_keras_serializable(package="zoo")
class SumFusion(Fusion):
    """A bias-free linear head per modality (`<modality>_head`), summed, plus one shared bias.

    OGM-GE's sum fusion `fc_x(x) + fc_y(y)` with its two biases merged into one (the same
    function); the unimodal logits are the per-modality head outputs.
    """

    is_linear = True

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        self.modality_order = list(shapes)
        self.heads = []
        for name, shape in shapes.items():
            head = layers.Dense(self.num_classes, use_bias=False, name=f"{name}_head")
            head.build((None, int(shape[-1])))
            self.heads.append(head)
        self.bias = self.add_weight(shape=(self.num_classes,), initializer="zeros", name="bias")

    def unimodal_logits(self, features: dict[str, Any]) -> dict[str, Any]:
        return {
            name: head(features[name])
            for name, head in zip(self.modality_order, self.heads, strict=True)
        }

    def call(self, inputs: dict[str, Any]) -> Any:
        return sum(self.unimodal_logits(inputs).values()) + self.bias

    def bias_value(self) -> Any:
        return ops.convert_to_tensor(self.bias)


@keras.saving.register_keras_serializable(package="zoo")
class GatedFusion(Fusion):
    """Gated multimodal unit: h_m = tanh(W_m f_m); z = softmax over modalities of a gate of all
    features; logits = head(Σ_m z_m ⊙ h_m).

    With two modalities the softmax gate is OGM-GE's sigmoid gate between them.

    Args:
        hidden: width of each modality's projection h_m.
    """

    def __init__(self, num_classes: int, hidden: int = 512, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.hidden = int(hidden)
        self.head = layers.Dense(self.num_classes, name="head")

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        self.num_modalities = len(shapes)
        self.projections = []
        for name, shape in shapes.items():
            projection = layers.Dense(self.hidden, activation="tanh", name=f"{name}_projection")
            projection.build((None, int(shape[-1])))
            self.projections.append(projection)
        self.gate = layers.Dense(self.num_modalities * self.hidden, name="gate")
        self.gate.build((None, sum(int(shape[-1]) for shape in shapes.values())))
        self.head.build((None, self.hidden))

    def call(self, inputs: dict[str, Any]) -> Any:
        values = [value for _, value in _sorted_items(inputs)]
        hidden = ops.stack(
            [projection(value) for projection, value in zip(self.projections, values, strict=True)],
            axis=1,
        )
        gate = ops.reshape(
            self.gate(ops.concatenate(values, axis=-1)), (-1, self.num_modalities, self.hidden)
        )
        fused = ops.sum(ops.softmax(gate, axis=1) * hidden, axis=1)
        return self.head(fused)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden": self.hidden}


@keras.saving.register_keras_serializable(package="zoo")
class FiLMFusion(Fusion):
    """FiLM: the other modalities' features predict γ, β that modulate one target modality:
    logits = head(γ ⊙ W f_target + β).

    OGM-GE's FiLM fusion (one modality conditions the other) for any number of modalities.

    Args:
        hidden: width of the modulated projection of the target modality.
        target: the modulated modality; default the last in sorted order.
    """

    def __init__(
        self, num_classes: int, hidden: int = 512, target: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.hidden = int(hidden)
        self.target = target
        self.head = layers.Dense(self.num_classes, name="head")
        self.target_projection = layers.Dense(self.hidden, name="target_projection")
        self.film = layers.Dense(2 * self.hidden, name="film")

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        self.target_name = self.target if self.target is not None else list(shapes)[-1]
        if self.target_name not in shapes:
            raise ValueError(
                f"FiLMFusion target {self.target_name!r} is not one of the modalities "
                f"{sorted(shapes)}."
            )
        context_dim = sum(int(s[-1]) for name, s in shapes.items() if name != self.target_name)
        self.target_projection.build((None, int(shapes[self.target_name][-1])))
        self.film.build((None, context_dim))
        self.head.build((None, self.hidden))

    def call(self, inputs: dict[str, Any]) -> Any:
        context = ops.concatenate(
            [value for name, value in _sorted_items(inputs) if name != self.target_name], axis=-1
        )
        gamma, beta = ops.split(self.film(context), 2, axis=-1)
        return self.head(gamma * self.target_projection(inputs[self.target_name]) + beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden": self.hidden, "target": self.target}


@keras.saving.register_keras_serializable(package="zoo")
class TensorFusion(Fusion):
    """Tensor Fusion Network (Zadeh et al. 2017; MultiZoo `TensorFusion`).

    Each modality (optionally projected to `projection_dim`) gets a constant 1 appended; the
    outer product of all of them, flattened, feeds an MLP head (`hidden` widths, ReLU).

    Args:
        projection_dim: per-modality linear projection before the outer product (keeps the
            product small); `None` uses the raw features.
        hidden: widths of the post-fusion MLP.
    """

    def __init__(
        self,
        num_classes: int,
        projection_dim: int | None = 16,
        hidden: Sequence[int] = (128,),
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.hidden = [int(units) for units in hidden]
        self.mlp = [
            layers.Dense(units, activation="relu", name=f"dense{index + 1}")
            for index, units in enumerate(self.hidden)
        ]
        self.head = layers.Dense(self.num_classes, name="head")

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        self.projections = []
        product_dim = 1
        for name, shape in shapes.items():
            dim = int(shape[-1])
            if self.projection_dim is not None:
                projection = layers.Dense(self.projection_dim, name=f"{name}_projection")
                projection.build((None, dim))
                self.projections.append(projection)
                dim = self.projection_dim
            product_dim *= dim + 1
        width = product_dim
        for dense in self.mlp:
            dense.build((None, width))
            width = dense.units
        self.head.build((None, width))

    def call(self, inputs: dict[str, Any]) -> Any:
        product = None
        for index, (_, value) in enumerate(_sorted_items(inputs)):
            if self.projections:
                value = self.projections[index](value)
            value = ops.concatenate([value, ops.ones_like(value[:, :1])], axis=-1)
            if product is None:
                product = value
            else:
                outer = product[:, :, None] * value[:, None, :]
                product = ops.reshape(outer, (-1, product.shape[-1] * value.shape[-1]))
        for dense in self.mlp:
            product = dense(product)
        return self.head(product)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "projection_dim": self.projection_dim,
            "hidden": list(self.hidden),
        }


@keras.saving.register_keras_serializable(package="zoo")
class LowRankTensorFusion(Fusion):
    """Low-rank Multimodal Fusion (Liu et al. 2018; MultiZoo `LowRankTensorFusion`).

    logits = Σ_r w_r · Π_m ([f_m, 1] W_m^(r)) + b, with one rank-`rank` factor W_m per modality;
    the tensor-fusion product without forming the outer product.

    Args:
        rank: number of rank-one factors.
    """

    def __init__(self, num_classes: int, rank: int = 4, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.rank = int(rank)

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        self.factors = [
            self.add_weight(
                shape=(self.rank, int(shape[-1]) + 1, self.num_classes),
                initializer="glorot_normal",
                name=f"{name}_factor",
            )
            for name, shape in shapes.items()
        ]
        self.fusion_weights = self.add_weight(
            shape=(self.rank,), initializer="glorot_normal", name="fusion_weights"
        )
        self.bias = self.add_weight(shape=(self.num_classes,), initializer="zeros", name="bias")

    def call(self, inputs: dict[str, Any]) -> Any:
        product = None
        for factor, (_, value) in zip(self.factors, _sorted_items(inputs), strict=True):
            value = ops.concatenate([value, ops.ones_like(value[:, :1])], axis=-1)
            term = ops.einsum("bd,rdo->rbo", value, factor)
            product = term if product is None else product * term
        return ops.einsum("r,rbo->bo", self.fusion_weights, product) + self.bias

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rank": self.rank}


@keras.saving.register_keras_serializable(package="zoo")
class TransformerFusion(Fusion):
    """Late-fusion Transformer: each modality's feature is projected to one token, a learned
    modality embedding is added, a class token is prepended, and Transformer encoder layers mix
    them; the class token's output feeds the linear head.

    Args:
        dim: token width.
        num_layers, num_heads, ff_dim, dropout: the encoder layers (post-norm).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_dim: int = 256,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.dim = int(dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.ff_dim = int(ff_dim)
        self.dropout = float(dropout)
        self.blocks = [
            TransformerEncoderBlock(self.num_heads, self.ff_dim, self.dropout, name=f"block{i}")
            for i in range(self.num_layers)
        ]
        self.head = layers.Dense(self.num_classes, name="head")

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        self.tokenizers = []
        for name, shape in shapes.items():
            tokenizer = layers.Dense(self.dim, name=f"{name}_token")
            tokenizer.build((None, int(shape[-1])))
            self.tokenizers.append(tokenizer)
        self.modality_embeddings = self.add_weight(
            shape=(len(shapes), self.dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="modality_embeddings",
        )
        self.class_token = self.add_weight(
            shape=(1, 1, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="class_token",
        )
        for block in self.blocks:
            block.build((None, len(shapes) + 1, self.dim))
        self.head.build((None, self.dim))

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        tokens = ops.stack(
            [
                tokenizer(value)
                for tokenizer, (_, value) in zip(
                    self.tokenizers, _sorted_items(inputs), strict=True
                )
            ],
            axis=1,
        )
        tokens = tokens + self.modality_embeddings[None, :, :]
        class_token = ops.zeros_like(tokens[:, :1, :]) + self.class_token
        x = ops.concatenate([class_token, tokens], axis=1)
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(x[:, 0, :])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="zoo")
class ConcatMLPFusion(Fusion):
    """Concatenation, then an MLP (ReLU hidden layers, optional dropout) and a linear head.

    MultiBench's usual late-fusion head (`Concat` + `MLP`); not linear, so no unimodal split.
    """

    def __init__(
        self,
        num_classes: int,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        self.hidden = [int(units) for units in hidden]
        self.dropout = float(dropout)
        self.mlp = [
            layers.Dense(units, activation="relu", name=f"dense{index + 1}")
            for index, units in enumerate(self.hidden)
        ]
        self.dropouts = [layers.Dropout(self.dropout) for _ in self.hidden]
        self.head = layers.Dense(self.num_classes, name="head")

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        width = sum(int(shape[-1]) for shape in shapes.values())
        for dense in self.mlp:
            dense.build((None, width))
            width = dense.units
        self.head.build((None, width))

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        x = ops.concatenate([value for _, value in _sorted_items(inputs)], axis=-1)
        for dense, dropout in zip(self.mlp, self.dropouts, strict=True):
            x = dropout(dense(x), training=training)
        return self.head(x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden": list(self.hidden), "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="zoo")
class EarlyFusion(Fusion):
    """Early fusion: features concatenated on the last axis, then a shared trunk `network`.

    The trunk (a functional model ending in the logits) is everything after the join: a MaxOut
    MLP for vector features (AGM / M-SAM), a GRU for time-aligned sequences (MultiBench).

    Args:
        network: a built model from the joined features to logits (batch, num_classes).
    """

    fusion_kind = "early"

    def __init__(self, network: keras.Model, **kwargs: Any) -> None:
        kwargs.pop("num_classes", None)
        super().__init__(int(network.outputs[0].shape[-1]), **kwargs)
        self.network = network

    def build(self, input_shape: dict[str, tuple]) -> None:
        shapes = _check_shapes(self, input_shape)
        joined = sum(int(shape[-1]) for shape in shapes.values())
        expected = int(self.network.inputs[0].shape[-1])
        if joined != expected:
            raise ValueError(
                f"EarlyFusion joins features of total width {joined}, but its trunk "
                f"{self.network.name!r} expects {expected}."
            )

    def call(self, inputs: dict[str, Any], training: bool | None = None) -> Any:
        joined = ops.concatenate([value for _, value in _sorted_items(inputs)], axis=-1)
        return self.network(joined, training=training)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EarlyFusion:
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


LATE_FUSIONS: dict[str, type[Fusion]] = {
    "concat": ConcatFusion,
    "sum": SumFusion,
    "gated": GatedFusion,
    "film": FiLMFusion,
    "tensor": TensorFusion,
    "lowrank": LowRankTensorFusion,
    "transformer": TransformerFusion,
    "concat_mlp": ConcatMLPFusion,
}


def late_fusion(kind: str, num_classes: int, **options: Any) -> Fusion:
    """Builds the late-fusion head `kind` (one of `LATE_FUSIONS`) with its options."""
    if kind not in LATE_FUSIONS:
        raise ValueError(
            f"Unknown late fusion {kind!r}; choose one of {', '.join(sorted(LATE_FUSIONS))}."
        )
    return LATE_FUSIONS[kind](num_classes, name="fusion", **options)
