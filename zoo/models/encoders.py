"""Per-modality encoders: functional `keras.Model`s from one named input to a feature tensor.

Each builder returns a model whose single input is named after its modality, so a
`MultimodalClassifier` can route `inputs[modality]` to it and validate shapes against it.

- `conv_encoder`: the small two-conv CNN of the CLI's `*_av_cnn` models.
- `lenet_encoder`: MultiBench's LeNet (AV-MNIST: LeNet(1, 6, 3) for the 28×28 digit image,
  LeNet(1, 6, 5) for the 112×112 spectrogram).
- `resnet18_encoder`: OGM-GE's ResNet-18 (torchvision layout, random init, global average pool,
  512-d), on one image/spectrogram or on T frames folded into the batch then averaged over time.
- `sequence_transformer_encoder` / `token_transformer_encoder`: MultiBench's `Transformer`
  (bias-free 1×1 projection, post-norm encoder layers, last time step) on pre-extracted feature
  sequences, or on token ids through an embedding.
- `gru_encoder`: a GRU over a feature sequence; `identity_encoder`: raw input as the feature
  (MultiBench early fusion of time-aligned sequences).
- `maxout_mlp`: the MaxOut MLP trunk of AGM / M-SAM early fusion (MultiBench `MaxOut_MLP`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from zoo.models.layers import (
    FoldFrames,
    MaskedMeanPooling,
    Maxout,
    PositionEmbedding,
    SequencePooling,
    TemporalMeanPool,
    TransformerEncoderBlock,
)

# torch BatchNorm defaults (momentum 0.1 of the new batch ↔ Keras momentum 0.9 of the old).
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def _input(modality: str, shape: Sequence[int], dtype: str = "float32") -> keras.KerasTensor:
    return keras.Input(shape=tuple(int(d) for d in shape), name=modality, dtype=dtype)


def conv_encoder(modality: str, input_shape: Sequence[int], width: int = 64) -> keras.Model:
    """Conv2D(16, 3, s2) → Conv2D(32, 3, s2) → global average pool → Dense(width, relu).

    The encoder of `late_fusion_av_cnn` (layer names `<modality>_conv1`, ... kept stable).
    """
    inputs = _input(modality, input_shape)
    x = layers.Conv2D(
        16, 3, strides=2, padding="same", activation="relu", name=f"{modality}_conv1"
    )(inputs)
    x = layers.Conv2D(
        32, 3, strides=2, padding="same", activation="relu", name=f"{modality}_conv2"
    )(x)
    x = layers.GlobalAveragePooling2D(name=f"{modality}_pool")(x)
    x = layers.Dense(width, activation="relu", name=f"{modality}_dense")(x)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def lenet_encoder(
    modality: str,
    input_shape: Sequence[int],
    channels: int = 6,
    additional_layers: int = 3,
) -> keras.Model:
    """MultiBench LeNet: [conv (no bias) → BatchNorm → ReLU → MaxPool 2] × (1 + additional).

    The first conv is 5×5 with `channels` filters, each further conv 3×3 doubling the width, so
    the feature has `channels · 2**additional_layers` dimensions (global average pool of the
    last map, equal to MultiBench's squeeze when the map is 1×1).
    """
    inputs = _input(modality, input_shape)
    x = inputs
    for index in range(additional_layers + 1):
        filters = channels * 2**index
        kernel = 5 if index == 0 else 3
        x = layers.Conv2D(
            filters, kernel, padding="same", use_bias=False, name=f"{modality}_conv{index}"
        )(x)
        x = layers.BatchNormalization(**_BN, name=f"{modality}_bn{index}")(x)
        x = layers.ReLU(name=f"{modality}_relu{index}")(x)
        x = layers.MaxPooling2D(2, name=f"{modality}_pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name=f"{modality}_gap")(x)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str
) -> keras.KerasTensor:
    # torch pads (k-1)/2 on both sides; Keras "same" pads asymmetrically for stride 2.
    if stride > 1 and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv"
    )(x)
    return layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)


def _basic_block(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_down")
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = layers.ReLU(name=f"{name}_a_relu")(y)
    y = _conv_bn(y, filters, 3, 1, f"{name}_b")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _resnet18_features(x: keras.KerasTensor, width: int, prefix: str) -> keras.KerasTensor:
    x = _conv_bn(x, width, 7, 2, f"{prefix}_stem")
    x = layers.ReLU(name=f"{prefix}_stem_relu")(x)
    x = layers.ZeroPadding2D(1, name=f"{prefix}_pool_pad")(x)  # after ReLU, 0-pad = -inf pad
    x = layers.MaxPooling2D(3, strides=2, name=f"{prefix}_pool")(x)
    for stage, stride in enumerate((1, 2, 2, 2)):
        for block in range(2):
            x = _basic_block(
                x,
                width * 2**stage,
                stride if block == 0 else 1,
                f"{prefix}_layer{stage + 1}_{block}",
            )
    return layers.GlobalAveragePooling2D(name=f"{prefix}_gap")(x)


def resnet18_encoder(modality: str, input_shape: Sequence[int], width: int = 64) -> keras.Model:
    """OGM-GE / AGM ResNet-18 (BasicBlock [2, 2, 2, 2]) on one image or spectrogram.

    `input_shape` is (H, W, C): C=1 for a spectrogram (OGM-GE's 1-channel conv1), 3 for RGB; a
    4-D shape (T, H, W, C) encodes T frames folded into the batch, averaged over time after the
    global pool (OGM-GE's visual path). The feature is `8 · width` (512 by default).
    """
    inputs = _input(modality, input_shape)
    if len(input_shape) == 4:
        frames = FoldFrames(name=f"{modality}_fold_frames")(inputs)
        features = _resnet18_features(frames, width, modality)
        features = TemporalMeanPool(int(input_shape[0]), name=f"{modality}_temporal_pool")(features)
    elif len(input_shape) == 3:
        features = _resnet18_features(inputs, width, modality)
    else:
        raise ValueError(
            f"resnet18_encoder for {modality!r} needs an (H, W, C) or (T, H, W, C) input shape, "
            f"got {tuple(input_shape)}."
        )
    return keras.Model(inputs, features, name=f"{modality}_encoder")


def _transformer_stack(
    x: keras.KerasTensor,
    modality: str,
    num_layers: int,
    num_heads: int,
    ff_dim: int,
    dropout: float,
    pooling: str,
) -> keras.KerasTensor:
    for index in range(num_layers):
        x = TransformerEncoderBlock(num_heads, ff_dim, dropout, name=f"{modality}_block{index}")(x)
    return SequencePooling(pooling, name=f"{modality}_pool")(x)


def sequence_transformer_encoder(
    modality: str,
    input_shape: Sequence[int],
    dim: int,
    num_layers: int = 5,
    num_heads: int = 5,
    ff_dim: int = 2048,
    dropout: float = 0.1,
    pooling: str = "last",
    position_embedding: bool = False,
) -> keras.Model:
    """MultiBench `Transformer(n_features, dim)` on a (T, d) feature sequence.

    Bias-free 1×1 projection to `dim`, `num_layers` post-norm encoder layers (torch defaults:
    5 heads, feed-forward 2048, dropout 0.1), then the last time step (or the mean). MultiBench
    adds no position embedding; `position_embedding=True` adds a learned one.
    """
    inputs = _input(modality, input_shape)
    x = layers.Dense(dim, use_bias=False, name=f"{modality}_projection")(inputs)
    if position_embedding:
        x = PositionEmbedding(name=f"{modality}_positions")(x)
    x = _transformer_stack(x, modality, num_layers, num_heads, ff_dim, dropout, pooling)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def token_transformer_encoder(
    modality: str,
    sequence_length: int,
    vocab_size: int,
    dim: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    ff_dim: int = 512,
    dropout: float = 0.1,
    pooling: str = "mean",
) -> keras.Model:
    """Token ids (T,) → embedding + learned positions → Transformer encoder → pooled feature."""
    inputs = _input(modality, (sequence_length,), dtype="int32")
    x = layers.Embedding(vocab_size, dim, name=f"{modality}_embedding")(inputs)
    x = PositionEmbedding(name=f"{modality}_positions")(x)
    x = _transformer_stack(x, modality, num_layers, num_heads, ff_dim, dropout, pooling)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def masked_token_transformer_encoder(
    modality: str,
    sequence_length: int,
    vocab_size: int,
    dim: int = 32,
    num_layers: int = 1,
    num_heads: int = 4,
    ff_dim: int = 64,
    dropout: float = 0.1,
) -> keras.Model:
    """``{"token_ids": (T,) int32, "padding_mask": (T,) int32}`` → embedding + learned positions
    → Transformer blocks attending only to kept positions → mean over kept positions.

    A modality of two inputs, as KerasHub text models take them: the model's inputs are then a
    nested dict (``{"text": {"token_ids", "padding_mask"}, ...}``).
    """
    token_ids = keras.Input((int(sequence_length),), dtype="int32", name="token_ids")
    padding_mask = keras.Input((int(sequence_length),), dtype="int32", name="padding_mask")
    x = layers.Embedding(vocab_size, dim, name=f"{modality}_embedding")(token_ids)
    x = PositionEmbedding(name=f"{modality}_positions")(x)
    for index in range(num_layers):
        x = TransformerEncoderBlock(num_heads, ff_dim, dropout, name=f"{modality}_block{index}")(
            x, padding_mask=padding_mask
        )
    x = MaskedMeanPooling(name=f"{modality}_pool")(x, padding_mask)
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def gru_encoder(
    modality: str, input_shape: Sequence[int], units: int, dropout: float = 0.1
) -> keras.Model:
    """A GRU over a (T, d) feature sequence, last hidden state, then dropout (MultiBench GRU)."""
    inputs = _input(modality, input_shape)
    x = layers.GRU(units, name=f"{modality}_gru")(inputs)
    x = layers.Dropout(dropout, name=f"{modality}_dropout")(x)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def identity_encoder(modality: str, input_shape: Sequence[int]) -> keras.Model:
    """The raw input as the feature (no variables): for fusion at the input level."""
    inputs = _input(modality, input_shape)
    x = layers.Identity(name=f"{modality}_identity")(inputs)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def maxout_mlp(
    input_dim: int,
    num_classes: int,
    hidden: Sequence[int] = (2048, 1024),
    pieces: int = 2,
    dropout: float = 0.3,
    name: str = "maxout_mlp",
) -> keras.Model:
    """MultiBench / AGM MaxOut MLP with its linear head: the early-fusion trunk of AGM / M-SAM.

    BatchNorm(eps 1e-4) → [Maxout(h, pieces) → BatchNorm → Dropout] per hidden width → Dense.
    """
    inputs = keras.Input(shape=(int(input_dim),), name=f"{name}_input")
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-4, name=f"{name}_bn_in")(inputs)
    for index, units in enumerate(hidden):
        x = Maxout(units, pieces, name=f"{name}_maxout{index}")(x)
        x = layers.BatchNormalization(**_BN, name=f"{name}_bn{index}")(x)
        x = layers.Dropout(dropout, name=f"{name}_dropout{index}")(x)
    logits = layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, logits, name=name)


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.0,
    name: str = "mlp",
) -> keras.Model:
    """Dense(relu) layers of the given widths, then a linear head."""
    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name=f"{name}_input")
    x = inputs
    for index, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"{name}_dense{index + 1}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{name}_dropout{index + 1}")(x)
    logits = layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, logits, name=name)


def gru_mlp(
    input_shape: Sequence[int],
    num_classes: int,
    units: int = 512,
    hidden: int = 512,
    dropout: float = 0.1,
    name: str = "gru_mlp",
) -> keras.Model:
    """GRU(units) → dropout → MLP(units, hidden, num_classes): MultiBench's early-fusion head."""
    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name=f"{name}_input")
    x = layers.GRU(units, name=f"{name}_gru")(inputs)
    x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Dense(hidden, activation="relu", name=f"{name}_dense")(x)
    logits = layers.Dense(num_classes, name="head")(x)
    return keras.Model(inputs, logits, name=name)
