"""keras-msam: modality-aware Sharpness-Aware Minimization for multimodal Keras 3 models.

Trainers wrap any `keras.Model` whose inputs are a dict keyed by modality name and keep
`model.fit`: `Joint` (plain training), `SAM` and `MSAM` (Shapley-guided, modality-aware SAM,
arXiv 2510.24919). They run on TensorFlow, JAX and PyTorch (``KERAS_BACKEND``).
"""

from keras_msam.evaluation import modality_accuracies
from keras_msam.modalities import ModalityStructure, modality_structure
from keras_msam.shapley import shapley_values
from keras_msam.trainers import MSAM, SAM, Joint, MultimodalTrainer

__version__ = "0.1.0"

__all__ = [
    "MSAM",
    "SAM",
    "Joint",
    "ModalityStructure",
    "MultimodalTrainer",
    "modality_accuracies",
    "modality_structure",
    "shapley_values",
]
