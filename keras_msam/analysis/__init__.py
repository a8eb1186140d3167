"""Analysis tools: MWAM's Frequency Ratio Metric, loss sharpness and decision-layer reports."""

from keras_msam.analysis.decision_layer import decision_layer_report, head_blocks
from keras_msam.analysis.frequency import dct_matrix, frequency_ratio, frm_weights
from keras_msam.analysis.sharpness import sharpness

__all__ = [
    "dct_matrix",
    "decision_layer_report",
    "frequency_ratio",
    "frm_weights",
    "head_blocks",
    "sharpness",
]
