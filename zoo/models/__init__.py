"""Registry of named multimodal models: `list`, `create`, `describe`."""

from zoo.models import av_cnn  # noqa: F401  (registers models on import)
from zoo.models.registry import create, describe, list, register

__all__ = ["create", "describe", "list", "register"]
