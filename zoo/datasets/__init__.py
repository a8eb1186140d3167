"""Data set loaders of the zoo, and the embedded default data set of the CLI."""

from zoo.datasets import imbalanced_av

__all__ = ["imbalanced_av"]
