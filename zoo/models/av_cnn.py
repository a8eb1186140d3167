"""Small CPU-friendly audio-visual CNNs used by the CLI's default run and the benchmarks.

Each modality has its own encoder: Conv2D(16, 3, stride 2, relu) → Conv2D(32, 3, stride 2, relu)
→ GlobalAveragePooling2D → Dense(64, relu). Late fusion concatenates the two embeddings and
applies one linear head; early fusion joins shallow per-modality stems' pooled features before
a shared MLP trunk. The ``*_av3_cnn`` variants take a third input, "visual2" (AV-Digits'
``third_modality="visual2"``), with its own encoder of the same kind. `late_fusion_avt_cnn` adds
a text modality of two inputs (token ids and a padding mask, ``imbalanced_avt``'s text) with a
small masked Transformer encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from zoo.models.base import MultimodalClassifier
from zoo.models.encoders import conv_encoder, masked_token_transformer_encoder, mlp
from zoo.models.fusions import ConcatFusion, EarlyFusion
from zoo.models.registry import register


@register
def late_fusion_av_cnn(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (40, 40, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    width: int = 64,
) -> MultimodalClassifier:
    """Late fusion: per-modality CNN encoders, concatenated embeddings, one linear head."""
    encoders = {
        "audio": conv_encoder("audio", audio_shape, width),
        "visual": conv_encoder("visual", visual_shape, width),
    }
    return MultimodalClassifier(
        encoders, ConcatFusion(num_classes, name="fusion"), name="late_fusion_av_cnn"
    )


STEM_POOLS = ("global", "grid")


def _stem(modality: str, input_shape: Sequence[int], pool: str = "global") -> keras.Model:
    """Conv2D(16, 3, stride 2, relu), then global average pooling (16 features) or, with
    ``pool="grid"``, 4x4 average pooling flattened (the coarse layout kept: 256 features for
    28x28, 400 for 40x40), which early fusion needs to tell digits apart."""
    if pool not in STEM_POOLS:
        raise ValueError(f"pool must be one of {STEM_POOLS}, got {pool!r}.")
    inputs = keras.Input(shape=tuple(input_shape), name=modality)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name=f"{modality}_conv")(
        inputs
    )
    if pool == "grid":
        x = layers.AveragePooling2D(4, padding="same", name=f"{modality}_pool")(x)
        x = layers.Flatten(name=f"{modality}_flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name=f"{modality}_pool")(x)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


def _early_fusion(
    shapes: dict[str, Sequence[int]], num_classes: int, width: int, pool: str, name: str
) -> MultimodalClassifier:
    encoders = {modality: _stem(modality, shape, pool) for modality, shape in shapes.items()}
    features = sum(int(encoder.output.shape[-1]) for encoder in encoders.values())
    trunk = mlp((features,), num_classes, hidden=(2 * width, width), name="trunk")
    return MultimodalClassifier(encoders, EarlyFusion(trunk, name="fusion"), name=name)


@register
def early_fusion_av_cnn(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (40, 40, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    width: int = 64,
    pool: str = "global",
) -> MultimodalClassifier:
    """Early fusion: shallow per-modality stems, features joined before a shared MLP trunk
    (``pool="grid"`` keeps a 4x4 layout of the stem's features; see `_stem`)."""
    shapes = {"audio": audio_shape, "visual": visual_shape}
    return _early_fusion(shapes, num_classes, width, pool, "early_fusion_av_cnn")


@register
def late_fusion_av3_cnn(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (40, 40, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    visual2_shape: Sequence[int] = (28, 28, 1),
    width: int = 64,
) -> MultimodalClassifier:
    """Late fusion of three inputs (audio, visual, visual2): `late_fusion_av_cnn`'s encoder per
    modality, concatenated embeddings, one linear head. For AV-Digits' ``third_modality``."""
    shapes = {"audio": audio_shape, "visual": visual_shape, "visual2": visual2_shape}
    encoders = {name: conv_encoder(name, shape, width) for name, shape in shapes.items()}
    return MultimodalClassifier(
        encoders, ConcatFusion(num_classes, name="fusion"), name="late_fusion_av3_cnn"
    )


@register
def early_fusion_av3_cnn(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (40, 40, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    visual2_shape: Sequence[int] = (28, 28, 1),
    width: int = 64,
    pool: str = "global",
) -> MultimodalClassifier:
    """Early fusion of three inputs (audio, visual, visual2): `early_fusion_av_cnn`'s stems,
    features joined before a shared MLP trunk. For AV-Digits' ``third_modality``."""
    shapes = {"audio": audio_shape, "visual": visual_shape, "visual2": visual2_shape}
    return _early_fusion(shapes, num_classes, width, pool, "early_fusion_av3_cnn")


@register
def late_fusion_avt_cnn(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (40, 40, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    text_length: int = 16,
    vocab_size: int = 64,
    width: int = 64,
    text_dim: int = 32,
    text_layers: int = 1,
    text_heads: int = 4,
) -> MultimodalClassifier:
    """Late fusion of audio, visual and text, text being two inputs (``{"token_ids",
    "padding_mask"}``): the CNN encoders of `late_fusion_av_cnn`, a masked Transformer for text
    (`masked_token_transformer_encoder`), concatenated embeddings, one linear head. For
    ``imbalanced_avt``."""
    encoders = {
        "audio": conv_encoder("audio", audio_shape, width),
        "visual": conv_encoder("visual", visual_shape, width),
        "text": masked_token_transformer_encoder(
            "text", text_length, vocab_size, text_dim, text_layers, text_heads, 2 * text_dim
        ),
    }
    return MultimodalClassifier(
        encoders, ConcatFusion(num_classes, name="fusion"), name="late_fusion_avt_cnn"
    )
