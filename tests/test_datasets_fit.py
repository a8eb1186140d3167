"""`model.fit` consumes every kind of loader output on the current backend (run per backend)."""

from __future__ import annotations

import dataset_fixtures as fx  # tests/dataset_fixtures.py (tests/ is on sys.path)
import keras
import numpy as np
import pytest

import zoo


def tiny_model(input_shapes: dict[str, tuple[int, ...]], outputs: int) -> keras.Model:
    """A functional model with one named Input per modality key, as the zoo's models have."""
    inputs = {m: keras.Input(shape=s, name=m) for m, s in input_shapes.items()}
    features = [
        keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs[m]))
        for m in sorted(inputs)
    ]
    joined = keras.layers.Concatenate()(features) if len(features) > 1 else features[0]
    return keras.Model(inputs, keras.layers.Dense(outputs)(joined))


def compile_classifier(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_fit_trains_on_the_embedded_default_pydataset():
    options = dict(num_train=512, num_validation=128, num_test=64, audio_parity_strength=1.0)
    train = zoo.datasets.load("imbalanced_av", split="train", batch_size=64, **options)
    val = zoo.datasets.load("imbalanced_av", split="validation", batch_size=64, **options)
    assert train.input_shapes == {"audio": (40, 40, 1), "visual": (28, 28, 1)}
    model = compile_classifier(tiny_model(train.input_shapes, 10))
    history = model.fit(train, validation_data=val, epochs=4, verbose=0)
    assert len(history.history["loss"]) == 4
    assert history.history["loss"][-1] < history.history["loss"][0]  # it learns from the batches
    assert 0.0 <= history.history["val_accuracy"][-1] <= 1.0
    assert train.epoch >= 4  # on_epoch_end ran (Keras may call it once more): reshuffled


def test_fit_takes_in_memory_arrays_and_a_modality_subset():
    x, y = zoo.datasets.load(
        "imbalanced_av", split="test", as_numpy=True, modalities=["visual"], num_test=96
    )
    assert list(x) == ["visual"] and x["visual"].shape == (96, 28, 28, 1) and y.dtype == np.int32
    model = compile_classifier(tiny_model({"visual": (28, 28, 1)}, 10))
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_fit_reads_files_with_two_workers_and_a_skipped_corrupt_file(tmp_path):
    pytest.importorskip("soundfile")
    pytest.importorskip("PIL")
    pytest.importorskip("librosa")
    clips = fx.write_cremad(str(tmp_path), train_per_class=2, test_per_class=1)
    fx.truncate_file(tmp_path / "AudioWAV" / f"{clips['train'][3]}.wav", 20)
    common = dict(image_size=16, num_frames=2, validation_fraction=0, workers=2)
    train = zoo.datasets.load(
        "cremad", tmp_path, "train", batch_size=4, drop_remainder=True, on_error="skip", **common
    )
    test = zoo.datasets.load("cremad", tmp_path, "test", batch_size=4, **common)
    assert len(train) == 3 and len(test) == 2
    model = compile_classifier(tiny_model(train.input_shapes, 6))
    with pytest.warns(RuntimeWarning, match="skipped so far"):
        model.fit(train, validation_data=test, epochs=2, verbose=0)
    assert list(train.skipped_files) == [str(tmp_path / "AudioWAV" / f"{clips['train'][3]}.wav")]
    assert len(train) == 2  # 11 readable clips left: two full batches of 4
    logits = model.predict(test, verbose=0)
    assert logits.shape == (6, 6)


def test_fit_takes_three_modalities_for_classification_and_regression(tmp_path):
    fx.write_affect(str(tmp_path / "mosei_senti_data.pkl"), fx.affect_data(dims=(35, 74, 300)))
    for task, loss, outputs in (("classification", None, 2), ("regression", "mse", 1)):
        train = zoo.datasets.load("cmu_mosei", tmp_path, "train", batch_size=4, task=task)
        model = tiny_model(train.input_shapes, outputs)
        if loss is None:
            compile_classifier(model)
        else:
            model.compile(optimizer="adam", loss=loss)
        history = model.fit(train, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert model.evaluate(train, verbose=0) is not None
