"""The AV-MNIST and affect loaders against MultiBench's own ``get_data.py`` (pliang279/MultiBench;
fixture ``multibench_reference.json``, provenance in ``tests/fixtures/README.md``).

The fixture holds the input rows (AV-MNIST) or the whole pickle (affect) and what MultiBench's
dataloaders yield for them; the tests write the same inputs in the real formats and compare
our loader's arrays. Tolerance: exact up to float32 rounding (1e-6). Layout differences, each
documented in the loader: channels last (MultiBench: channels first), "visual" for MultiBench's
``image``/``vision``. Runs on the backend of KERAS_BACKEND (the loaders are numpy)."""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import zoo.datasets

pytestmark = pytest.mark.backend_agnostic  # numpy only: run on one backend

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "multibench_reference.json").read_text())


# ----------------------------------------------------------------------------- AV-MNIST
def _write_avmnist(root: Path) -> None:
    reference = FIXTURE["avmnist"]
    shapes = {"image": (784,), "audio": (112, 112), "labels": ()}
    for part, inputs in reference["inputs_base64"].items():
        count = len(reference["rows"][part])
        for kind, encoded in inputs.items():
            dtype = np.int64 if kind == "labels" else np.uint8
            array = np.frombuffer(base64.b64decode(encoded), dtype).reshape(count, *shapes[kind])
            if kind != "labels":
                array = array.astype(np.float32)  # MultiBench divides the arrays in place
            path = root / (f"{part}_labels.npy" if kind == "labels" else f"{kind}/{part}_data.npy")
            os.makedirs(path.parent, exist_ok=True)
            np.save(path, array)


def test_avmnist_rows_and_splits_equal_multibench(tmp_path):
    """The reference keeps the last 5000 of 60000 train rows for validation: our
    ``validation_size`` rule; here 6 stored rows stand at MultiBench's positions 0, 1, 54998,
    54999 (train) and 55000, 59999 (validation)."""
    reference = FIXTURE["avmnist"]
    assert reference["sizes"] == {"train": 55000, "validation": 5000, "test": 10000}
    _write_avmnist(tmp_path)
    image_at = np.array(reference["image_indices"])
    audio_at = np.array(reference["audio_indices"])
    ours = {}
    for split in ("train", "validation", "test"):
        x, y = zoo.datasets.load("avmnist", tmp_path, split, validation_size=2, as_numpy=True)
        ours[split] = [(x["visual"][i], x["audio"][i], y[i]) for i in range(len(y))]
    expected = reference["examples"]["train"] + reference["examples"]["test"]
    got = ours["train"] + ours["validation"] + ours["test"]
    assert [e["split"] for e in expected] == ["train"] * 4 + ["validation"] * 2 + ["test"] * 2
    assert len(got) == len(expected)
    for (visual, audio, label), want in zip(got, expected, strict=True):
        assert visual.shape == (28, 28, 1) and want["image_shape"] == [1, 28, 28]
        assert audio.shape == (112, 112, 1) and want["audio_shape"] == [1, 112, 112]
        assert audio.dtype == np.float32 and want["dtype"] == "float32"
        np.testing.assert_allclose(visual.reshape(-1)[image_at], want["image_values"], rtol=1e-6)
        np.testing.assert_allclose(audio.reshape(-1)[audio_at], want["audio_values"], rtol=1e-6)
        assert visual.astype(np.float64).sum() == pytest.approx(want["image_sum"], rel=1e-6)
        assert audio.astype(np.float64).sum() == pytest.approx(want["audio_sum"], rel=1e-6)
        assert int(label) == want["label"]


# ------------------------------------------------------------------------------- affect
NAMES = {"mosi": "cmu_mosi", "humor": "ur_funny", "sarcasm": "mustard"}


@pytest.mark.parametrize(
    "case", FIXTURE["affect"]["cases"], ids=lambda c: f"{c['data_type']}-{c['task']}"
)
def test_affect_arrays_and_labels_equal_multibench(tmp_path, case):
    """Aligned to the first text step, cut/padded at the end to max_seq_len, -inf audio → 0,
    empty-text rows dropped, labels per data set and task: as MultiBench's dataloaders."""
    path = tmp_path / "data.pkl"
    path.write_bytes(base64.b64decode(FIXTURE["affect"]["pickle_base64"]))
    for split, want in case["outputs"].items():
        x, y = zoo.datasets.load(
            NAMES[case["data_type"]],
            path,
            split,
            task=case["task"],
            max_seq_len=case["max_seq_len"],
            as_numpy=True,
        )
        for key in ("visual", "audio", "text"):
            np.testing.assert_allclose(x[key], want[key], atol=1e-6, err_msg=f"{split} {key}")
        if case["data_type"] == "humor" and case["task"] == "classification":
            _assert_humor_labels(path, split, y, want["labels"])
        else:
            np.testing.assert_allclose(y, want["labels"], err_msg=split)


def _assert_humor_labels(path, split, ours, reference):
    """UR-FUNNY's labels are 0/1; MultiBench casts them to int (``[flag]``), we threshold at 0,
    so both agree on 0/1 labels (the real data) and ours stays binary on any other value (the
    fixture's -2, 0.4 and 2.5 give MultiBench -2, 0 and 2: not two classes)."""
    scores = np.array(
        pickle.loads(path.read_bytes())[{"validation": "valid"}.get(split, split)]["labels"]
    ).reshape(-1)
    text = pickle.loads(path.read_bytes())[{"validation": "valid"}.get(split, split)]["text"]
    scores = scores[text.reshape(len(scores), -1).sum(axis=1) != 0]
    binary = np.isin(scores, (0.0, 1.0))
    assert binary.any() and not binary.all()
    np.testing.assert_array_equal(ours[binary], np.asarray(reference)[binary])
    np.testing.assert_array_equal(ours, (scores > 0).astype(np.int32))


def test_affect_without_alignment_keeps_the_pickle_time_axis(tmp_path):
    """``align=False`` is our documented option, not MultiBench's: the left padding stays."""
    path = tmp_path / "data.pkl"
    raw = base64.b64decode(FIXTURE["affect"]["pickle_base64"])
    path.write_bytes(raw)
    data = pickle.loads(raw)
    x, _ = zoo.datasets.load(
        "cmu_mosi", path, "train", align=False, max_seq_len=None, as_numpy=True
    )
    np.testing.assert_allclose(x["text"], data["train"]["text"])
    aligned, _ = zoo.datasets.load("cmu_mosi", path, "train", max_seq_len=8, as_numpy=True)
    assert not np.allclose(aligned["text"], data["train"]["text"])


def test_affect_bad_max_seq_len_is_named(tmp_path):
    path = tmp_path / "data.pkl"
    path.write_bytes(base64.b64decode(FIXTURE["affect"]["pickle_base64"]))
    with pytest.raises(ValueError, match="max_seq_len must be a positive integer"):
        zoo.datasets.load("cmu_mosi", path, "train", max_seq_len=0)
