"""keras-msam: modality-aware Sharpness-Aware Minimization for multimodal Keras 3 models.

Trainers wrap any `keras.Model` whose inputs are a dict keyed by modality name and keep
`model.fit`: `Joint` (plain training), `SAM` and `MSAM` (Shapley-guided, modality-aware SAM,
arXiv 2510.24919). They run on TensorFlow, JAX and PyTorch (``KERAS_BACKEND``).

Names are imported on first use, so that `keras-msam --backend ...` can choose the backend
before Keras is loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Joint": "keras_msam.trainers",
    "SAM": "keras_msam.trainers",
    "MSAM": "keras_msam.trainers",
    "OGMGE": "keras_msam.trainers",
    "AGM": "keras_msam.trainers",
    "MWAM": "keras_msam.trainers",
    "BTW": "keras_msam.trainers",
    "DecisionWeighting": "keras_msam.trainers",
    "MultimodalTrainer": "keras_msam.trainers",
    "ModalityStructure": "keras_msam.modalities",
    "modality_structure": "keras_msam.modalities",
    "shapley_values": "keras_msam.shapley",
    "modality_accuracies": "keras_msam.evaluation",
    "evaluate_missing": "keras_msam.evaluation",
    "analysis": None,
    "callbacks": None,
    "experiments": None,
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        if _EXPORTS[name] is None:  # a subpackage
            value = importlib.import_module(f"keras_msam.{name}")
        else:
            value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_msam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
