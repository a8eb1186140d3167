"""Small CPU-friendly audio-visual CNNs used by the CLI's default run and the benchmarks.

Each modality has its own encoder: Conv2D(16, 3, stride 2, relu) → Conv2D(32, 3, stride 2, relu)
→ GlobalAveragePooling2D → Dense(64, relu). Late fusion concatenates the two embeddings and
applies one linear head; early fusion joins shallow per-modality stems' pooled features before
a shared MLP trunk. The ``*_av3_cnn`` variants take a third input, "visual2" (AV-Digits'
``third_modality="visual2"``), with its own encoder of the same kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from zoo.models.base import MultimodalClassifier
from zoo.models.encoders import conv_encoder, mlp
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


def _stem(modality: str, input_shape: Sequence[int]) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape), name=modality)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name=f"{modality}_conv")(
        inputs
    )
    x = layers.GlobalAveragePooling2D(name=f"{modality}_pool")(x)
    return keras.Model(inputs, x, name=f"{modality}_encoder")


@register
def early_fusion_av_cnn(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (40, 40, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    width: int = 64,
) -> MultimodalClassifier:
    """Early fusion: shallow per-modality stems, features joined before a shared MLP trunk."""
    encoders = {"audio": _stem("audio", audio_shape), "visual": _stem("visual", visual_shape)}
    trunk = mlp((32,), num_classes, hidden=(2 * width, width), name="trunk")
    return MultimodalClassifier(
        encoders, EarlyFusion(trunk, name="fusion"), name="early_fusion_av_cnn"
    )


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
) -> MultimodalClassifier:
    """Early fusion of three inputs (audio, visual, visual2): `early_fusion_av_cnn`'s stems,
    features joined before a shared MLP trunk. For AV-Digits' ``third_modality``."""
    shapes = {"audio": audio_shape, "visual": visual_shape, "visual2": visual2_shape}
    encoders = {name: _stem(name, shape) for name, shape in shapes.items()}
    trunk = mlp((16 * len(shapes),), num_classes, hidden=(2 * width, width), name="trunk")
    return MultimodalClassifier(
        encoders, EarlyFusion(trunk, name="fusion"), name="early_fusion_av3_cnn"
    )
