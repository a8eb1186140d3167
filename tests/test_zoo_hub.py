"""KerasHub backbones as zoo encoders: an image backbone (ViT) and a text backbone (BERT) with
random weights inside registered zoo models; M-SAM trains them on every backend, the backbone's
variables belong to their modality, an absent text modality stays finite, frames, freezing,
saving, bad arguments. Skipped where keras-hub is not installed (CI installs it).
Runs on the backend of KERAS_BACKEND."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import compile_trainer, to_numpy

keras_hub = pytest.importorskip("keras_hub")

import keras_msam  # noqa: E402
from keras_msam.modalities import modality_structure  # noqa: E402
from zoo.models.hub import hub_encoder, with_hub_encoders  # noqa: E402

VIT = {"image_shape": (28, 28, 1), "patch_size": 7, "num_layers": 1, "num_heads": 2,
       "hidden_dim": 8, "mlp_dim": 16}  # fmt: skip
BERT = {"vocabulary_size": 50, "num_layers": 1, "num_heads": 2, "hidden_dim": 8,
        "intermediate_dim": 16, "max_sequence_length": 12}  # fmt: skip


def _text_model():
    """mosi_late_transformer with BERT on token ids for text (small Transformers elsewhere)."""
    return with_hub_encoders(
        "mosi_late_transformer",
        {"text": {"backbone": keras_hub.models.BertBackbone, "backbone_options": BERT}},
        audio_shape=(6, 5), visual_shape=(6, 4), audio_dim=8, visual_dim=8, text_dim=8,
        num_layers=1, num_heads=2, ff_dim=16, dropout=0.0,
    )  # fmt: skip


def _text_data(count=16, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 50, (count, 12)).astype("int32")
    tokens[:, 8:] = 0  # padding
    x = {
        "audio": rng.standard_normal((count, 6, 5)).astype("float32"),
        "visual": rng.standard_normal((count, 6, 4)).astype("float32"),
        "text": tokens,
    }
    return x, rng.integers(0, 2, count).astype("int32")


def test_msam_trains_a_model_with_a_bert_text_encoder_and_the_structure_covers_it():
    model = _text_model()
    trainer = compile_trainer(keras_msam.MSAM(model, rho=0.05))
    x, y = _text_data()
    before = [to_numpy(v) for v in model.encoders["text"].trainable_variables]
    logs = trainer.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert np.isfinite(logs["loss"][-1])
    after = [to_numpy(v) for v in model.encoders["text"].trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(after, before))  # BERT was trained
    structure = modality_structure(model)
    backbone_ids = {id(v) for v in model.encoders["text"].trainable_variables}
    text_index = structure.names.index("text")
    assert backbone_ids and all(
        structure.group_index(v) == text_index
        for v in model.trainable_variables
        if id(v) in backbone_ids
    )
    phi = keras_msam.shapley_values(trainer, x, y, value="true_class_prob", empty="evaluate")
    assert all(np.isfinite(v) for v in phi.values())


def test_a_bert_text_modality_of_token_ids_and_padding_mask():
    model = with_hub_encoders(
        "mosi_late_transformer",
        {"text": {"backbone": keras_hub.models.BertBackbone, "backbone_options": BERT,
                  "text_inputs": "token_ids_and_mask"}},
        audio_shape=(6, 5), visual_shape=(6, 4), audio_dim=8, visual_dim=8, text_dim=8,
        num_layers=1, num_heads=2, ff_dim=16, dropout=0.0,
    )  # fmt: skip
    assert model.modality_shapes["text"] == {"token_ids": (12,), "padding_mask": (12,)}
    x, y = _text_data()
    tokens = x["text"]
    x["text"] = {"token_ids": tokens, "padding_mask": (tokens != 0).astype("int32")}
    trainer = compile_trainer(keras_msam.MSAM(model, rho=0.05))
    logs = trainer.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert np.isfinite(logs["loss"][-1])
    assert trainer.structure.absence["text"] == {"token_ids": 0, "padding_mask": "keep_first"}
    phi = keras_msam.shapley_values(trainer, x, y, value="neg_loss")
    assert all(np.isfinite(v) for v in phi.values()) and phi["text"] != 0.0
    report = keras_msam.evaluate_missing(trainer, x, y)
    assert np.isfinite(report["average"])
    with pytest.raises(ValueError, match="text_inputs must be"):
        hub_encoder("text", keras_hub.models.BertBackbone, backbone_options=BERT,
                    text_inputs="ids")  # fmt: skip


def test_an_absent_text_modality_stays_finite():
    model = _text_model()
    x, _ = _text_data(4)
    x["text"] = np.zeros_like(x["text"])  # how the trainers remove a modality
    assert np.all(np.isfinite(to_numpy(model(x, training=False))))


def test_a_vit_image_encoder_on_one_image_and_on_frames():
    model = with_hub_encoders(
        "late_fusion_av_cnn",
        {"visual": hub_encoder("visual", keras_hub.models.ViTBackbone, backbone_options=VIT)},
    )
    x = {"audio": np.zeros((2, 40, 40, 1), "float32"), "visual": np.ones((2, 28, 28, 1), "float32")}
    assert tuple(model(x).shape) == (2, 10)
    frames = hub_encoder(
        "visual", keras_hub.models.ViTBackbone, (3, 28, 28, 1), backbone_options=VIT
    )
    assert tuple(frames(np.ones((2, 3, 28, 28, 1), "float32")).shape) == (2, 8)


def test_freezing_keeps_an_encoder_fixed():
    model = with_hub_encoders(
        "late_fusion_av_cnn",
        {"visual": {"backbone": keras_hub.models.ViTBackbone, "backbone_options": VIT}},
        freeze=("visual",),
    )
    frozen = [to_numpy(v) for v in model.encoders["visual"].weights]
    assert not model.encoders["visual"].trainable_variables
    trainer = compile_trainer(keras_msam.MSAM(model, rho=0.05))
    rng = np.random.default_rng(0)
    x = {"audio": rng.standard_normal((8, 40, 40, 1)).astype("float32"),
         "visual": rng.standard_normal((8, 28, 28, 1)).astype("float32")}  # fmt: skip
    trainer.fit(x, rng.integers(0, 10, 8), epochs=1, batch_size=8, verbose=0)
    for a, b in zip(frozen, [to_numpy(v) for v in model.encoders["visual"].weights]):
        np.testing.assert_array_equal(a, b)


def test_a_model_with_a_hub_encoder_saves_and_loads(tmp_path):
    model = _text_model()
    x, _ = _text_data(4)
    path = tmp_path / "hub.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="has no modality 'speech'"):
        with_hub_encoders("late_fusion_av_cnn", {"speech": {"backbone": "x"}})
    with pytest.raises(ValueError, match="pooling must be one of"):
        hub_encoder("visual", keras_hub.models.ViTBackbone, backbone_options=VIT, pooling="max")
    with pytest.raises(ValueError, match="does not fit the backbone's image shape"):
        hub_encoder("visual", keras_hub.models.ViTBackbone, (32, 32, 3), backbone_options=VIT)
    with pytest.raises(TypeError, match="not a keras_hub.models.Backbone subclass"):
        hub_encoder("visual", dict)
