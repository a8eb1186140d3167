"""evaluate_missing (accuracy per missing-modality pattern, average, PCR) and sharpness."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import compile_trainer

import keras_msam


def _audio_only_model():
    """Logits = audio; visual is ignored (multiplied by 0): visual alone is at chance."""
    audio = keras.Input((3,), name="audio")
    visual = keras.Input((3,), name="visual")
    ignored = keras.layers.Lambda(lambda t: 0.0 * t)(visual)
    return keras.Model({"audio": audio, "visual": visual}, keras.layers.Add()([audio, ignored]))


def test_evaluate_missing_reports_every_pattern_average_and_collapse_rate():
    rng = np.random.default_rng(0)
    x = {k: rng.standard_normal((40, 3)).astype("float32") for k in ("audio", "visual")}
    y = np.argmax(x["audio"], axis=-1)
    report = keras_msam.evaluate_missing(_audio_only_model(), x, y, batch_size=16)
    acc = report["accuracy"]
    assert list(acc) == ["audio+visual", "audio", "visual"]
    assert acc["audio+visual"] == 1.0 and acc["audio"] == 1.0
    assert acc["visual"] == pytest.approx(np.mean(y == 0))  # all-zero logits → class 0
    assert report["missing"]["visual"] == ["audio"]
    assert report["average"] == pytest.approx(np.mean(list(acc.values())))
    # PCR: mean relative drop from the full input over the incomplete patterns
    want = np.mean([(1.0 - acc["audio"]) / 1.0, (1.0 - acc["visual"]) / 1.0])
    assert report["collapse_rate"] == pytest.approx(want)


def test_sharpness_is_the_loss_increase_along_the_normalised_gradient():
    audio = keras.Input((2,), name="audio")
    visual = keras.Input((1,), name="visual")
    joined = keras.layers.Concatenate()([audio, visual])
    model = keras.Model({"audio": audio, "visual": visual}, keras.layers.Dense(1)(joined))
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 1)).astype("float32")
    b = np.array([0.2], "float32")
    model.set_weights([w, b])
    x = {
        "audio": rng.standard_normal((10, 2)).astype("float32"),
        "visual": rng.standard_normal((10, 1)).astype("float32"),
    }
    y = rng.standard_normal((10, 1)).astype("float32")
    rho = 0.1
    result = keras_msam.analysis.sharpness(
        model, x, y, rho=rho, loss="mse", validation_data=(x, y), batch_size=4
    )
    features = np.concatenate([x["audio"], x["visual"]], axis=1).astype(np.float64)

    def loss(w_, b_):
        return float(((features @ w_ + b_ - y) ** 2).mean())

    residual = features @ w + b - y
    gw, gb = 2 * features.T @ residual / len(y), 2 * residual.mean(axis=0)
    norm = np.sqrt((gw**2).sum() + (gb**2).sum())
    expected = loss(w + rho * gw / norm, b + rho * gb / norm) - loss(w, b)
    assert result["loss"] == pytest.approx(loss(w, b), rel=1e-5)
    assert result["sharpness"] == pytest.approx(expected, rel=1e-4)
    assert result["loss_gap"] == pytest.approx(0.0, abs=1e-6)


def test_sharpness_rejects_a_non_positive_radius():
    trainer = compile_trainer(keras_msam.Joint(_audio_only_model()))
    x = {k: np.zeros((2, 3), "float32") for k in ("audio", "visual")}
    with pytest.raises(ValueError, match="rho"):
        keras_msam.analysis.sharpness(trainer, x, np.zeros(2, "int32"), rho=0.0)
