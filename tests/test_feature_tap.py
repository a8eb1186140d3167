"""The training pass hands its encoder features to the Shapley coalitions (feature coalitions of
a model without dropout or BatchNorm): the same logs and weights as encoding again in inference
mode, on the backend of KERAS_BACKEND."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import compile_trainer, small_batch, tiny_zoo_model, weights_of

import keras_msam
from keras_msam.trainers.base import MultimodalTrainer

CASES = [
    (keras_msam.Joint, {}),
    (keras_msam.SAM, {"rho": 0.3}),
    (keras_msam.MSAM, {"rho": 0.3}),
    (keras_msam.MSAM, {"rho": 0.3, "shapley_value": "neg_loss", "perturb": "dominant"}),
    (keras_msam.MSAM, {"rho": 0.3, "shapley_every": 2, "sam_every": 2}),
]


def _run(cls, options, tap: bool, monkeypatch):
    keras.utils.set_random_seed(0)
    model = tiny_zoo_model()
    trainer = compile_trainer(cls(model, **options), momentum=0.9)
    if not tap:
        monkeypatch.setattr(trainer, "_taps_training_features", lambda: False)
    assert trainer._taps_training_features() is tap
    x, y = small_batch(batch=24, seed=5)
    logs = [trainer.train_on_batch(x, y, return_dict=True) for _ in range(3)]
    return logs, weights_of(model)


@pytest.mark.parametrize("cls, options", CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_tapped_features_give_the_same_step_as_encoding_again(cls, options, monkeypatch):
    tapped_logs, tapped_weights = _run(cls, options, True, monkeypatch)
    plain_logs, plain_weights = _run(cls, options, False, monkeypatch)
    for tapped, plain in zip(tapped_logs, plain_logs):
        for key in plain:
            np.testing.assert_allclose(tapped[key], plain[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(tapped_weights, plain_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _zoo_model_with_dropout():
    from zoo.models.base import MultimodalClassifier
    from zoo.models.fusions import ConcatFusion

    encoders = {}
    for name, dim in (("audio", 6), ("visual", 4)):
        inputs = keras.Input((dim,), name=name)
        hidden = keras.layers.Dropout(0.5)(inputs)  # training and inference differ
        encoders[name] = keras.Model(inputs, keras.layers.Dense(5)(hidden))
    return MultimodalClassifier(encoders, ConcatFusion(4, name="fusion"))


def test_the_tap_is_off_where_training_and_inference_differ():
    assert not keras_msam.Joint(_zoo_model_with_dropout())._taps_training_features()
    assert keras_msam.Joint(tiny_zoo_model())._taps_training_features()
    assert not keras_msam.Joint(tiny_zoo_model(), log_shapley=False)._taps_training_features()
    assert not keras_msam.Joint(tiny_zoo_model(), coalitions="inputs")._taps_training_features()
    # a method with its own coalition outputs (the gained fusion) keeps encoding again
    weighted = keras_msam.DecisionWeighting(tiny_zoo_model())
    assert type(weighted)._feature_coalition_outputs is not (
        MultimodalTrainer._feature_coalition_outputs
    )
    assert not weighted._taps_training_features()
