"""Small CPU-friendly audio-visual CNNs used by the CLI's default run and the benchmarks.

Each modality has its own encoder: Conv2D(16, 3, stride 2, relu) → Conv2D(32, 3, stride 2, relu)
→ GlobalAveragePooling2D → Dense(64, relu). Late fusion concatenates the two embeddings and
applies one linear head; early fusion joins the first-stage feature maps' pooled features before
a shared trunk.
"""

from __future__ import annotations

import keras
from keras import layers

from zoo.models.registry import register


def _conv_encoder(inputs: keras.KerasTensor, name: str, width: int) -> keras.KerasTensor:
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name=f"{name}_conv1")(
        inputs
    )
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name=f"{name}_conv2")(x)
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return layers.Dense(width, activation="relu", name=f"{name}_dense")(x)


@register
def late_fusion_av_cnn(
    num_classes: int = 10,
    audio_shape: tuple[int, ...] = (40, 40, 1),
    visual_shape: tuple[int, ...] = (28, 28, 1),
    width: int = 64,
) -> keras.Model:
    """Late fusion: per-modality CNN encoders, concatenated embeddings, one linear head."""
    audio = keras.Input(shape=audio_shape, name="audio")
    visual = keras.Input(shape=visual_shape, name="visual")
    features = layers.Concatenate(name="fusion_concat")(
        [_conv_encoder(audio, "audio", width), _conv_encoder(visual, "visual", width)]
    )
    logits = layers.Dense(num_classes, name="head")(features)
    return keras.Model({"audio": audio, "visual": visual}, logits, name="late_fusion_av_cnn")


@register
def early_fusion_av_cnn(
    num_classes: int = 10,
    audio_shape: tuple[int, ...] = (40, 40, 1),
    visual_shape: tuple[int, ...] = (28, 28, 1),
    width: int = 64,
) -> keras.Model:
    """Early fusion: shallow per-modality stems, features joined before a shared MLP trunk."""
    audio = keras.Input(shape=audio_shape, name="audio")
    visual = keras.Input(shape=visual_shape, name="visual")

    def stem(inputs: keras.KerasTensor, name: str) -> keras.KerasTensor:
        x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name=f"{name}_conv")(
            inputs
        )
        return layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)

    joined = layers.Concatenate(name="fusion_concat")([stem(audio, "audio"), stem(visual, "visual")])
    x = layers.Dense(2 * width, activation="relu", name="trunk_dense1")(joined)
    x = layers.Dense(width, activation="relu", name="trunk_dense2")(x)
    logits = layers.Dense(num_classes, name="head")(x)
    return keras.Model({"audio": audio, "visual": visual}, logits, name="early_fusion_av_cnn")
