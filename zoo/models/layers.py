"""Small building-block layers of the zoo, written once on `keras.ops` for every backend.

All of them are registered as serialisable under the package name "zoo", so a saved zoo model
loads with `keras.saving.load_model` once `zoo` is imported.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="zoo")
class Maxout(layers.Layer):
    """Maxout unit (Goodfellow et al. 2013): a linear map to `units * pieces`, max over pieces.

    MultiBench's `Maxout(d, m, k)`; the building block of the MaxOut MLP trunk of AGM / M-SAM
    early fusion.

    Args:
        units: output features.
        pieces: linear pieces the maximum is taken over.
    """

    def __init__(self, units: int, pieces: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.pieces = int(pieces)
        self.linear = layers.Dense(self.units * self.pieces, name="linear")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.linear.build(input_shape)

    def call(self, inputs: Any) -> Any:
        pieces = ops.reshape(self.linear(inputs), (-1, self.units, self.pieces))
        return ops.max(pieces, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "pieces": self.pieces}


@keras.saving.register_keras_serializable(package="zoo")
class FoldFrames(layers.Layer):
    """Folds the frame axis into the batch: (batch, T, H, W, C) → (batch·T, H, W, C).

    Lets a 2-D image encoder run over every frame of a clip at once (OGM-GE's visual ResNet-18).
    """

    def call(self, inputs: Any) -> Any:
        return ops.reshape(inputs, (-1, *tuple(inputs.shape[2:])))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (None, *input_shape[2:])


@keras.saving.register_keras_serializable(package="zoo")
class TemporalMeanPool(layers.Layer):
    """Unfolds per-frame features (batch·T, D) to (batch, T, D) and averages over the T frames.

    Args:
        num_frames: frames per clip (T), the factor `FoldFrames` folded into the batch.
    """

    def __init__(self, num_frames: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_frames = int(num_frames)

    def call(self, inputs: Any) -> Any:
        per_clip = ops.reshape(inputs, (-1, self.num_frames, inputs.shape[-1]))
        return ops.mean(per_clip, axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (None, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_frames": self.num_frames}


@keras.saving.register_keras_serializable(package="zoo")
class PositionEmbedding(layers.Layer):
    """Adds a learned embedding of each time step to a (batch, T, D) sequence."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.embeddings = self.add_weight(
            shape=(int(input_shape[-2]), int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embeddings",
        )

    def call(self, inputs: Any) -> Any:
        return inputs + ops.cast(self.embeddings, inputs.dtype)[None, :, :]


@keras.saving.register_keras_serializable(package="zoo")
class SequencePooling(layers.Layer):
    """Pools a (batch, T, D) sequence to (batch, D): the last time step or the mean over time.

    `"last"` is MultiBench's choice (`Transformer.forward` returns `x[-1]`), which suits its
    left-zero-padded affect sequences.

    Args:
        mode: `"last"` or `"mean"`.
    """

    def __init__(self, mode: str = "last", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("last", "mean"):
            raise ValueError(f"SequencePooling mode must be 'last' or 'mean', got {mode!r}.")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        if self.mode == "last":
            return inputs[:, -1, :]
        return ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="zoo")
class MaskedMeanPooling(layers.Layer):
    """The mean of a (batch, T, D) sequence over the positions its padding mask keeps.

    ``Σ_t m_t x_t / Σ_t m_t``: undefined (NaN) for a mask that keeps nothing, as a masked mean
    is; keras-msam's absence rules keep the first position of an absent text's mask for that
    reason (`keras_msam.absence`).
    """

    def call(self, inputs: Any, padding_mask: Any) -> Any:
        weights = ops.cast(padding_mask, inputs.dtype)[:, :, None]
        return ops.sum(inputs * weights, axis=1) / ops.sum(weights, axis=1)

    def compute_output_shape(
        self, inputs_shape: tuple[int | None, ...], padding_mask_shape: Any = None
    ) -> tuple[int | None, ...]:
        return (inputs_shape[0], inputs_shape[-1])


@keras.saving.register_keras_serializable(package="zoo")
class TransformerEncoderBlock(layers.Layer):
    """One post-norm Transformer encoder layer, as `torch.nn.TransformerEncoderLayer` defaults.

    Self-attention → dropout → residual → LayerNorm → feed-forward (ReLU) → dropout → residual →
    LayerNorm (eps 1e-5).

    Args:
        num_heads: attention heads; must divide the model width.
        ff_dim: hidden width of the feed-forward sub-layer.
        dropout: dropout rate of attention weights and of both sub-layer outputs.
    """

    def __init__(self, num_heads: int, ff_dim: int, dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.ff_dim = int(ff_dim)
        self.dropout = float(dropout)
        self.attention_norm = layers.LayerNormalization(epsilon=1e-5, name="attention_norm")
        self.ff_norm = layers.LayerNormalization(epsilon=1e-5, name="ff_norm")
        self.ff_in = layers.Dense(self.ff_dim, activation="relu", name="ff_in")
        self.attention_dropout = layers.Dropout(self.dropout)
        self.ff_dropout = layers.Dropout(self.dropout)
        self.ff_out_dropout = layers.Dropout(self.dropout)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        width = int(input_shape[-1])
        if width % self.num_heads:
            raise ValueError(
                f"Transformer width {width} is not divisible by num_heads={self.num_heads}."
            )
        self.attention = layers.MultiHeadAttention(
            self.num_heads, width // self.num_heads, dropout=self.dropout, name="attention"
        )
        self.attention.build(input_shape, input_shape)
        self.ff_out = layers.Dense(width, name="ff_out")
        self.attention_norm.build(input_shape)
        self.ff_norm.build(input_shape)
        self.ff_in.build(input_shape)
        self.ff_out.build((*input_shape[:-1], self.ff_dim))

    def call(self, inputs: Any, padding_mask: Any = None, training: bool | None = None) -> Any:
        """``padding_mask`` (batch, T), optional: attention reads only the positions it keeps."""
        attention_mask = None
        if padding_mask is not None:
            keep = ops.cast(padding_mask, "bool")
            attention_mask = ops.logical_and(keep[:, None, :], keep[:, :, None])
        attended = self.attention(inputs, inputs, attention_mask=attention_mask, training=training)
        x = self.attention_norm(inputs + self.attention_dropout(attended, training=training))
        ff = self.ff_out(self.ff_dropout(self.ff_in(x), training=training))
        return self.ff_norm(x + self.ff_out_dropout(ff, training=training))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }
