"""keras-msam model zoo: named multimodal architectures and data set loaders.

`zoo.models` holds the registry of early- and late-fusion models (dict inputs keyed by modality
name); `zoo.datasets` holds loaders that read the field's on-disk formats and the embedded
default data set of the CLI.
"""

from zoo import datasets, models

__all__ = ["datasets", "models"]
