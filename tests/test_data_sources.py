"""The evaluation and analysis helpers take what ``fit`` takes: arrays with labels, a
``keras.utils.PyDataset`` (``zoo.datasets``), a ``tf.data.Dataset`` and a torch ``DataLoader``,
with the same results as on arrays. Runs on the backend of KERAS_BACKEND."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compile_trainer, three_modality_data, tiny_zoo_model

import keras_msam
from keras_msam.analysis import decision_layer_report, sharpness
from keras_msam.data_sources import iterate_batches
from keras_msam.trainers import Joint
from zoo.datasets.pipeline import ArrayDataset


def _data(count: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = {
        "audio": rng.standard_normal((count, 6)).astype("float32"),
        "visual": rng.standard_normal((count, 4)).astype("float32"),
    }
    return x, rng.integers(0, 4, size=count).astype("int32")


def _tf_dataset(x, y, batch_size):
    tf = pytest.importorskip("tensorflow")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _torch_loader(x, y, batch_size):
    torch = pytest.importorskip("torch")

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, index):
            return {k: torch.from_numpy(v[index]) for k, v in x.items()}, int(y[index])

    return torch.utils.data.DataLoader(Pairs(), batch_size=batch_size, shuffle=False)


SOURCES = {
    "pydataset": lambda x, y, b: ArrayDataset(x, y, batch_size=b),
    "tf.data": _tf_dataset,
    "torch": _torch_loader,
    "iterable": lambda x, y, b: [
        (batch_x, batch_y) for batch_x, batch_y in iterate_batches(x, y, b)
    ],
}


@pytest.fixture(scope="module")
def trained():
    model = tiny_zoo_model()
    trainer = compile_trainer(Joint(model, log_shapley=False))
    x, y = _data()
    trainer.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return trainer, x, y


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_helper_gives_the_array_result_on_a_data_set(trained, source):
    trainer, x, y = trained
    data = SOURCES[source](x, y, 16)  # 50 examples: the last batch is smaller
    assert keras_msam.modality_accuracies(trainer, data) == pytest.approx(
        keras_msam.modality_accuracies(trainer, x, y)
    )
    assert keras_msam.modality_cross_entropies(trainer, data) == pytest.approx(
        keras_msam.modality_cross_entropies(trainer, x, y), rel=1e-5
    )
    missing, reference = (
        keras_msam.evaluate_missing(trainer, data),
        keras_msam.evaluate_missing(trainer, x, y),
    )
    assert missing["accuracy"] == pytest.approx(reference["accuracy"])
    assert missing["collapse_rate"] == pytest.approx(reference["collapse_rate"])
    assert keras_msam.shapley_values(trainer, data) == pytest.approx(
        keras_msam.shapley_values(trainer, x, y), abs=1e-6
    )
    report, expected = decision_layer_report(trainer, data), decision_layer_report(trainer, x, y)
    assert report["accuracy"] == pytest.approx(expected["accuracy"])
    assert report["mean_abs_logit"] == pytest.approx(expected["mean_abs_logit"], rel=1e-5)
    measured = sharpness(trainer, data, rho=0.05, validation_data=SOURCES[source](x, y, 16))
    reference = sharpness(trainer, x, y, rho=0.05, validation_data=(x, y))
    for key in ("loss", "perturbed_loss", "accuracy", "validation_loss"):
        assert measured[key] == pytest.approx(reference[key], rel=1e-4), key


def test_a_zoo_dataset_works_with_the_helpers(tmp_path):
    """`zoo.datasets.load(...)` output, as a user passes it to `fit`, with three modalities."""
    from conftest import three_modality_zoo_model

    x, y = three_modality_data(30)
    data = ArrayDataset(x, y, batch_size=7, shuffle=True, seed=1)
    trainer = compile_trainer(Joint(three_modality_zoo_model(), log_shapley=False))
    result = keras_msam.evaluate_missing(trainer, data)
    assert result["accuracy"] == pytest.approx(
        keras_msam.evaluate_missing(trainer, x, y)["accuracy"]
    )
    assert len(result["accuracy"]) == 7


def test_arrays_need_labels_and_data_sets_refuse_them(trained):
    trainer, x, y = trained
    with pytest.raises(ValueError, match="need their labels"):
        keras_msam.modality_accuracies(trainer, x)
    with pytest.raises(ValueError, match="yields its own labels: y must be None"):
        keras_msam.modality_accuracies(trainer, ArrayDataset(x, y, batch_size=8), y)
    with pytest.raises(ValueError, match="need their labels"):
        keras_msam.shapley_values(trainer, x)


def test_bad_batches_and_sources_are_named(trained):
    trainer, x, y = trained
    with pytest.raises(ValueError, match="batch 0 is a dict; expected \\(inputs, labels\\)"):
        keras_msam.modality_accuracies(trainer, [x])
    with pytest.raises(ValueError, match="batch 0 has inputs of type list"):
        keras_msam.modality_accuracies(trainer, [([x["audio"]], y)])
    with pytest.raises(TypeError, match="got int"):
        keras_msam.evaluate_missing(trainer, 3)
    with pytest.raises(ValueError, match="modality 'visual' has 10 examples but y has 50"):
        keras_msam.modality_accuracies(
            trainer, {"audio": x["audio"], "visual": x["visual"][:10]}, y
        )
    with pytest.raises(ValueError, match="visual"):  # a batch without a modality is named
        keras_msam.modality_accuracies(trainer, [({"audio": x["audio"]}, y)])
