"""Audio-visual ResNet-18 models of OGM-GE / AGM / M-SAM (CREMA-D, Kinetics-Sounds, AVE).

Audio: a 1-channel log spectrogram (H, W, 1) into a ResNet-18 with a 1-channel conv1. Visual:
T RGB frames (T, H, W, 3), each through a ResNet-18 (frames folded into the batch), features
averaged over time. Random initialisation, no ImageNet weights (as OGM-GE). Each encoder gives
512 features. Late fusion defaults to concatenation + one linear head (OGM-GE `ConcatFusion`,
AGM's late model; `fusion="sum" | "film" | "gated" | ...` as OGM-GE's `--fusion_method`); early
fusion joins the two 512-d features into AGM's MaxOut MLP (2048, 1024 hidden, 2 pieces).

Default input shapes (anchors §3.2-3.4):
- CREMA-D (6 emotions): OGM-GE's 257×188 STFT log-magnitude, 1 frame of 224×224 (`--fps 1`).
- Kinetics-Sounds (31 classes): 1024×128 Kaldi fbank, 3 frames.
- AVE (28 events): 257×1004 spectrogram, 3 frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo.models.base import MultimodalClassifier
from zoo.models.encoders import maxout_mlp, resnet18_encoder
from zoo.models.fusions import EarlyFusion, late_fusion
from zoo.models.registry import register


def _resnet_encoders(audio_shape: Sequence[int], visual_shape: Sequence[int], width: int) -> dict:
    return {
        "audio": resnet18_encoder("audio", audio_shape, width),
        "visual": resnet18_encoder("visual", visual_shape, width),
    }


def _late(
    name: str,
    num_classes: int,
    audio_shape: Sequence[int],
    visual_shape: Sequence[int],
    width: int,
    fusion: str,
    fusion_options: dict[str, Any] | None,
) -> MultimodalClassifier:
    encoders = _resnet_encoders(audio_shape, visual_shape, width)
    head = late_fusion(fusion, num_classes, **(fusion_options or {}))
    return MultimodalClassifier(encoders, head, name=name)


@register
def cremad_late_resnet18(
    num_classes: int = 6,
    audio_shape: Sequence[int] = (257, 188, 1),
    visual_shape: Sequence[int] = (1, 224, 224, 3),
    width: int = 64,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
) -> MultimodalClassifier:
    """CREMA-D late fusion: ResNet-18 audio and visual encoders, concat + linear head."""
    return _late(
        "cremad_late_resnet18",
        num_classes,
        audio_shape,
        visual_shape,
        width,
        fusion,
        fusion_options,
    )


@register
def cremad_early_resnet18(
    num_classes: int = 6,
    audio_shape: Sequence[int] = (257, 188, 1),
    visual_shape: Sequence[int] = (1, 224, 224, 3),
    width: int = 64,
    maxout_hidden: Sequence[int] = (2048, 1024),
    maxout_pieces: int = 2,
    dropout: float = 0.3,
) -> MultimodalClassifier:
    """CREMA-D early fusion (AGM / M-SAM): ResNet-18 features joined into a MaxOut MLP."""
    encoders = _resnet_encoders(audio_shape, visual_shape, width)
    joined = sum(int(encoder.outputs[0].shape[-1]) for encoder in encoders.values())
    trunk = maxout_mlp(joined, num_classes, maxout_hidden, maxout_pieces, dropout, name="trunk")
    return MultimodalClassifier(
        encoders, EarlyFusion(trunk, name="fusion"), name="cremad_early_resnet18"
    )


@register
def ks_late_resnet18(
    num_classes: int = 31,
    audio_shape: Sequence[int] = (1024, 128, 1),
    visual_shape: Sequence[int] = (3, 224, 224, 3),
    width: int = 64,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
) -> MultimodalClassifier:
    """Kinetics-Sounds late fusion: ResNet-18 on the fbank and on 3 frames, concat + linear."""
    return _late(
        "ks_late_resnet18", num_classes, audio_shape, visual_shape, width, fusion, fusion_options
    )


@register
def ave_late_resnet18(
    num_classes: int = 28,
    audio_shape: Sequence[int] = (257, 1004, 1),
    visual_shape: Sequence[int] = (3, 224, 224, 3),
    width: int = 64,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
) -> MultimodalClassifier:
    """AVE late fusion: ResNet-18 on the spectrogram and on 3 frames, concat + linear head."""
    return _late(
        "ave_late_resnet18", num_classes, audio_shape, visual_shape, width, fusion, fusion_options
    )
