"""Decision-layer report of linear late fusion, checked against numpy on a hand-set head."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_av_model

import keras_msam
from zoo.models.base import MultimodalClassifier
from zoo.models.encoders import identity_encoder
from zoo.models.fusions import late_fusion


def _identity_concat_model(kernel: np.ndarray, bias: np.ndarray) -> MultimodalClassifier:
    encoders = {
        "audio": identity_encoder("audio", (3,)),
        "visual": identity_encoder("visual", (2,)),
    }
    model = MultimodalClassifier(encoders, late_fusion("concat", 4))
    model.fusion.head.set_weights([kernel, bias])
    return model


def test_report_matches_numpy():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((5, 4)).astype("float32")
    kernel[3:] *= 0.1  # the visual block is small: the head leans on audio
    bias = np.array([0.2, -0.1, 0.0, 0.3], "float32")
    model = _identity_concat_model(kernel, bias)
    x = {
        "audio": rng.standard_normal((50, 3)).astype("float32"),
        "visual": rng.standard_normal((50, 2)).astype("float32"),
    }
    y = rng.integers(0, 4, size=50)
    report = keras_msam.analysis.decision_layer_report(model, x, y, batch_size=16)

    blocks = {"audio": kernel[:3], "visual": kernel[3:]}
    for name in ("audio", "visual"):
        logits = x[name] @ blocks[name]
        assert report["weight_norm"][name] == pytest.approx(np.linalg.norm(blocks[name]), rel=1e-5)
        assert report["mean_abs_logit"][name] == pytest.approx(np.abs(logits).mean(), rel=1e-5)
        assert report["true_class_logit"][name] == pytest.approx(
            logits[np.arange(50), y].mean(), rel=1e-4, abs=1e-6
        )
        predicted = np.argmax(logits + bias / 2, axis=-1)
        assert report["accuracy"][name] == pytest.approx(np.mean(predicted == y))
        for c in range(4):
            expected = np.mean(predicted[y == c] == c) if np.any(y == c) else np.nan
            np.testing.assert_allclose(report["per_class_accuracy"][name][c], expected)
    assert report["weight_norm_share"]["audio"] > 0.8
    assert sum(report["logit_share"].values()) == pytest.approx(1.0)


def test_report_needs_linear_late_fusion():
    with pytest.raises(ValueError, match="linear late-fusion model"):
        keras_msam.analysis.decision_layer_report(
            small_av_model(), {"audio": np.zeros((2, 6)), "visual": np.zeros((2, 4))}, [0, 1]
        )
