"""keras-msam: modality-aware Sharpness-Aware Minimization for multimodal Keras 3 models.

Trainers wrap any `keras.Model` whose inputs are a dict keyed by modality name and keep
`model.fit`: `Joint` (plain training), `SAM` and `MSAM` (Shapley-guided, modality-aware SAM,
arXiv 2510.24919). They run on TensorFlow, JAX and PyTorch (``KERAS_BACKEND``).

Importing this package does not import Keras, so that `keras-msam --backend ...` can choose
the backend before Keras is loaded; names are imported on first use. The trainers are still
registered with Keras's serialization as soon as Keras is loaded, so
``keras.saving.load_model("trainer.keras")`` works after a plain ``import keras_msam``, in
either import order: if Keras is already imported, the trainers are imported now; otherwise a
one-shot import hook imports them right after ``import keras`` completes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
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
    "CGGM": "keras_msam.trainers",
    "MMCosine": "keras_msam.trainers",
    "MMPareto": "keras_msam.trainers",
    "MSES": "keras_msam.trainers",
    "PMR": "keras_msam.trainers",
    "OPM": "keras_msam.trainers",
    "MSLR": "keras_msam.trainers",
    "ReconBoost": "keras_msam.trainers",
    "MultimodalTrainer": "keras_msam.trainers",
    "NonFiniteGradientsError": "keras_msam.trainers",
    "ModalityStructure": "keras_msam.modalities",
    "modality_structure": "keras_msam.modalities",
    "shapley_values": "keras_msam.shapley",
    "modality_accuracies": "keras_msam.evaluation",
    "modality_cross_entropies": "keras_msam.evaluation",
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


# ------------------------------------------------------------------------------------------
# Registration with Keras's serialization, without importing Keras here

_REGISTERING_MODULES = ("keras_msam.trainers",)


def _register_with_keras() -> None:
    """Imports the modules whose classes are `register_keras_serializable` (the trainers).

    Errors (e.g. an unsupported backend) are left for the first use of a trainer to report:
    they must not break ``import keras`` itself.
    """
    for module in _REGISTERING_MODULES:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001
            pass


class _RegisterAfterKerasImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: lets ``import keras`` run, then registers the trainers."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "keras" or self not in sys.meta_path:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _RegisteringLoader(loader, self)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    """Runs Keras's own loader, then `_register_with_keras` (once)."""

    def __init__(self, loader: Any, finder: _RegisterAfterKerasImport) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        module.__spec__.loader = self._loader  # Keras's own loader from now on
        module.__loader__ = self._loader
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        _register_with_keras()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


if "keras" in sys.modules:
    _register_with_keras()
elif not any(isinstance(finder, _RegisterAfterKerasImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKerasImport())
