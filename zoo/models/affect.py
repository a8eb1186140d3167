"""Affect models on MultiBench's pre-extracted feature sequences (CMU-MOSI, UR-FUNNY).

Inputs are (T, d) sequences per modality as in MultiBench's affect pickles (T = 50):
- CMU-MOSI (`mosi_raw.pkl`): visual 35 (FACET), audio 74 (COVAREP), text 300 (GloVe).
- UR-FUNNY (`humor.pkl`): visual 371, audio 81, text 300.
Labels are binary (MultiBench's classification task), so `num_classes=2`.

Late fusion uses MultiBench's `Transformer(n_features, dim)` per modality (bias-free
projection, 5 post-norm layers, 5 heads, feed-forward 2048, last step); the widths follow its
examples (humor: visual 400, audio 100, text 600; MOSI raw: about twice each feature width). The
default head is concatenation + one linear layer, so the OGM-GE split exists (MultiBench's own
head is an MLP: `fusion="concat_mlp"`). The text input can instead be token ids
(`text_vocab_size=`), encoded by an embedding + Transformer. Early fusion is MultiBench's
`affect_early_fusion`: the raw sequences concatenated per time step (409-d for MOSI) into a
GRU(512) and an MLP(512) head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from zoo.models.base import MultimodalClassifier
from zoo.models.encoders import (
    gru_mlp,
    identity_encoder,
    sequence_transformer_encoder,
    token_transformer_encoder,
)
from zoo.models.fusions import EarlyFusion, late_fusion
from zoo.models.registry import register


def _late_transformer(
    name: str,
    num_classes: int,
    shapes: dict[str, Sequence[int]],
    dims: dict[str, int],
    num_layers: int,
    num_heads: int,
    ff_dim: int,
    dropout: float,
    pooling: str,
    text_vocab_size: int | None,
    fusion: str,
    fusion_options: dict[str, Any] | None,
) -> MultimodalClassifier:
    encoders: dict[str, keras.Model] = {}
    for modality, shape in shapes.items():
        if modality == "text" and text_vocab_size is not None:
            encoders[modality] = token_transformer_encoder(
                modality,
                int(shape[0]),
                text_vocab_size,
                dims[modality],
                num_layers,
                num_heads,
                ff_dim,
                dropout,
                pooling,
            )
        else:
            encoders[modality] = sequence_transformer_encoder(
                modality, shape, dims[modality], num_layers, num_heads, ff_dim, dropout, pooling
            )
    head = late_fusion(fusion, num_classes, **(fusion_options or {}))
    return MultimodalClassifier(encoders, head, name=name)


@register
def urfunny_late_transformer(
    num_classes: int = 2,
    audio_shape: Sequence[int] = (50, 81),
    visual_shape: Sequence[int] = (50, 371),
    text_shape: Sequence[int] = (50, 300),
    audio_dim: int = 100,
    visual_dim: int = 400,
    text_dim: int = 600,
    num_layers: int = 5,
    num_heads: int = 5,
    ff_dim: int = 2048,
    dropout: float = 0.1,
    pooling: str = "last",
    text_vocab_size: int | None = None,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
) -> MultimodalClassifier:
    """UR-FUNNY (audio, visual, text) late fusion: a Transformer per modality, concat + linear."""
    return _late_transformer(
        "urfunny_late_transformer",
        num_classes,
        {"audio": audio_shape, "visual": visual_shape, "text": text_shape},
        {"audio": audio_dim, "visual": visual_dim, "text": text_dim},
        num_layers,
        num_heads,
        ff_dim,
        dropout,
        pooling,
        text_vocab_size,
        fusion,
        fusion_options,
    )


@register
def mosi_late_transformer(
    num_classes: int = 2,
    audio_shape: Sequence[int] = (50, 74),
    visual_shape: Sequence[int] = (50, 35),
    text_shape: Sequence[int] = (50, 300),
    audio_dim: int = 150,
    visual_dim: int = 70,
    text_dim: int = 600,
    num_layers: int = 5,
    num_heads: int = 5,
    ff_dim: int = 2048,
    dropout: float = 0.1,
    pooling: str = "last",
    text_vocab_size: int | None = None,
    fusion: str = "concat",
    fusion_options: dict[str, Any] | None = None,
) -> MultimodalClassifier:
    """CMU-MOSI (audio, visual, text) late fusion: a Transformer per modality, concat + linear."""
    return _late_transformer(
        "mosi_late_transformer",
        num_classes,
        {"audio": audio_shape, "visual": visual_shape, "text": text_shape},
        {"audio": audio_dim, "visual": visual_dim, "text": text_dim},
        num_layers,
        num_heads,
        ff_dim,
        dropout,
        pooling,
        text_vocab_size,
        fusion,
        fusion_options,
    )


@register
def mosi_early_gru(
    num_classes: int = 2,
    audio_shape: Sequence[int] = (50, 74),
    visual_shape: Sequence[int] = (50, 35),
    text_shape: Sequence[int] = (50, 300),
    units: int = 512,
    hidden: int = 512,
    dropout: float = 0.1,
) -> MultimodalClassifier:
    """CMU-MOSI early fusion (MultiBench): sequences joined per time step → GRU → MLP head.

    The encoders are identities (no variables), so every trainable variable is shared.
    """
    shapes = {"audio": audio_shape, "visual": visual_shape, "text": text_shape}
    lengths = {int(shape[0]) for shape in shapes.values()}
    if len(lengths) != 1:
        raise ValueError(
            f"mosi_early_gru joins the sequences per time step, so they need one length; got "
            f"{ {name: tuple(shape) for name, shape in shapes.items()} }."
        )
    encoders = {name: identity_encoder(name, shape) for name, shape in shapes.items()}
    joined = (lengths.pop(), sum(int(shape[-1]) for shape in shapes.values()))
    trunk = gru_mlp(joined, num_classes, units, hidden, dropout, name="trunk")
    return MultimodalClassifier(encoders, EarlyFusion(trunk, name="fusion"), name="mosi_early_gru")
