"""Data set loaders of the zoo, and the embedded default data set of the CLI.

    import zoo
    zoo.datasets.list()                                  # registered names
    train = zoo.datasets.load("cremad", root="data/CREMA-D", split="train", batch_size=64)
    model.fit(train, validation_data=zoo.datasets.load("cremad", root=..., split="validation"))
    print(zoo.datasets.check("cremad", "data/CREMA-D").format())

Every loader returns a `keras.utils.PyDataset` whose batches are ``({modality: float32 array},
labels)`` with fixed keys and shapes (``imbalanced_avt``'s text is a modality of two inputs,
``{"token_ids", "padding_mask"}``), which `fit` takes on TensorFlow, JAX and PyTorch, or with
``as_numpy=True`` the whole split as arrays. `describe(name)` gives the exact on-disk format a
loader reads, its preprocessing and its output shapes. Nothing is downloaded.
"""

from zoo.datasets import (
    affect,
    av_digits,
    ave,
    avmnist,
    cremad,
    fsdd,
    imbalanced_av,
    imbalanced_avt,
    kinetics_sounds,
)
from zoo.datasets.errors import CheckReport, DataFormatError, MissingDependencyError, Problem
from zoo.datasets.pipeline import ArrayDataset, FileDataset, MultimodalDataset
from zoo.datasets.registry import check, describe, list, load, register

register("imbalanced_av", imbalanced_av.load, None, needs_root=False)
register("imbalanced_avt", imbalanced_avt.load, None, needs_root=False)
register("avmnist", avmnist.load, avmnist.check)
register("cremad", cremad.load, cremad.check)
register("kinetics_sounds", kinetics_sounds.load, kinetics_sounds.check)
register("ave", ave.load, ave.check)
for _name, _title in (
    ("cmu_mosi", "CMU-MOSI"),
    ("cmu_mosei", "CMU-MOSEI"),
    ("ur_funny", "UR-FUNNY (humor)"),
    ("mustard", "MUStARD (sarcasm)"),
):
    register(_name, *affect.make_loader(_name, _title))
register("fsdd", fsdd.load, fsdd.check)
register("av_digits", av_digits.load, av_digits.check)
del _name, _title

__all__ = [
    "ArrayDataset",
    "CheckReport",
    "DataFormatError",
    "FileDataset",
    "MissingDependencyError",
    "MultimodalDataset",
    "Problem",
    "check",
    "describe",
    "imbalanced_av",
    "list",
    "load",
    "register",
]
