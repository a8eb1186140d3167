"""Analysis tools: MWAM's Frequency Ratio Metric, loss sharpness and decision-layer reports."""

from keras_msam.analysis.frequency import dct_matrix, frequency_ratio, frm_weights
from keras_msam.analysis.sharpness import sharpness

__all__ = ["dct_matrix", "frequency_ratio", "frm_weights", "sharpness"]
