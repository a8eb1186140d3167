"""keras-msam trainers: `keras.Model` wrappers whose `train_step` is the method."""

from keras_msam.trainers.agm import AGM
from keras_msam.trainers.base import (
    MultimodalTrainer,
    NonFiniteGradientsError,
    ShapleyResult,
    StepResult,
)
from keras_msam.trainers.btw import BTW
from keras_msam.trainers.cggm import CGGM
from keras_msam.trainers.decision_weighting import DecisionWeighting
from keras_msam.trainers.joint import Joint
from keras_msam.trainers.mmcosine import MMCosine
from keras_msam.trainers.mmpareto import MMPareto
from keras_msam.trainers.msam import MSAM
from keras_msam.trainers.mses import MSES
from keras_msam.trainers.mslr import MSLR
from keras_msam.trainers.mwam import MWAM
from keras_msam.trainers.ogmge import OGMGE
from keras_msam.trainers.opm import OPM
from keras_msam.trainers.pmr import PMR
from keras_msam.trainers.reconboost import ReconBoost
from keras_msam.trainers.sam import SAM

__all__ = [
    "AGM",
    "BTW",
    "CGGM",
    "MMCosine",
    "MMPareto",
    "MSAM",
    "MSES",
    "MSLR",
    "MWAM",
    "OGMGE",
    "OPM",
    "PMR",
    "ReconBoost",
    "SAM",
    "DecisionWeighting",
    "Joint",
    "MultimodalTrainer",
    "NonFiniteGradientsError",
    "ShapleyResult",
    "StepResult",
]
