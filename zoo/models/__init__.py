"""Registry of named multimodal models: `list`, `create`, `describe`.

Every zoo model is a `MultimodalClassifier` (dict inputs keyed by modality name, logits out)
built from per-modality encoders (`zoo.models.encoders`) and a fusion head
(`zoo.models.fusions`); importing this package registers the named architectures.
"""

from zoo.models import affect, av_cnn, av_resnet, avmnist  # noqa: F401  (register on import)
from zoo.models.base import MultimodalClassifier
from zoo.models.fusions import LATE_FUSIONS
from zoo.models.hub import hub_encoder, with_hub_encoders
from zoo.models.registry import create, defaults, describe, list, register

__all__ = [
    "LATE_FUSIONS",
    "MultimodalClassifier",
    "create",
    "defaults",
    "describe",
    "hub_encoder",
    "list",
    "register",
    "with_hub_encoders",
]
