"""AV-MNIST models: MultiBench LeNet encoders (image LeNet(1, 6, 3), audio LeNet(1, 6, 5)).

Inputs follow MultiBench's AV-MNIST files: `visual` the 28×28 digit image and `audio` the
112×112 spectrogram, channels last. The LeNet features are 48-d (image) and 192-d (audio).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo.models.base import MultimodalClassifier
from zoo.models.encoders import lenet_encoder, maxout_mlp
from zoo.models.fusions import EarlyFusion, late_fusion
from zoo.models.registry import register


def _lenet_encoders(
    audio_shape: Sequence[int],
    visual_shape: Sequence[int],
    channels: int,
    audio_layers: int,
    visual_layers: int,
) -> dict:
    return {
        "audio": lenet_encoder("audio", audio_shape, channels, audio_layers),
        "visual": lenet_encoder("visual", visual_shape, channels, visual_layers),
    }


@register
def avmnist_late_lenet(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (112, 112, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    channels: int = 6,
    audio_layers: int = 5,
    visual_layers: int = 3,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
) -> MultimodalClassifier:
    """AV-MNIST late fusion: LeNet encoders, concatenation + linear head (or `fusion`)."""
    encoders = _lenet_encoders(audio_shape, visual_shape, channels, audio_layers, visual_layers)
    head = late_fusion(fusion, num_classes, **(fusion_options or {}))
    return MultimodalClassifier(encoders, head, name="avmnist_late_lenet")


@register
def avmnist_early_lenet(
    num_classes: int = 10,
    audio_shape: Sequence[int] = (112, 112, 1),
    visual_shape: Sequence[int] = (28, 28, 1),
    channels: int = 6,
    audio_layers: int = 5,
    visual_layers: int = 3,
    maxout_hidden: Sequence[int] = (2048, 1024),
    maxout_pieces: int = 2,
    dropout: float = 0.3,
) -> MultimodalClassifier:
    """AV-MNIST early fusion: LeNet features joined, then the AGM / M-SAM MaxOut MLP trunk."""
    encoders = _lenet_encoders(audio_shape, visual_shape, channels, audio_layers, visual_layers)
    joined = sum(int(encoder.outputs[0].shape[-1]) for encoder in encoders.values())
    trunk = maxout_mlp(joined, num_classes, maxout_hidden, maxout_pieces, dropout, name="trunk")
    return MultimodalClassifier(
        encoders, EarlyFusion(trunk, name="fusion"), name="avmnist_early_lenet"
    )
