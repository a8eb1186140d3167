"""The vectorised FSDD feature path, its disk cache and the batched read protocol, on small
wav files written here (canonical 8 kHz PCM-16 and the variants that must fall back)."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

import zoo
from zoo.datasets import fsdd, fsdd_cache
from zoo.datasets.pipeline import FileDataset

pytestmark = pytest.mark.backend_agnostic  # numpy only: run on one backend

pytest.importorskip("soundfile")
pytest.importorskip("librosa")


def wav_bytes(samples: np.ndarray, rate: int = 8000, extra_chunk: bytes = b"") -> bytes:
    """A PCM-16 wav (channels = columns of ``samples``) with an optional chunk before data."""
    samples = np.asarray(samples, "<i2")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    data = samples.tobytes()
    fmt = struct.pack(
        "<4sIHHIIHH", b"fmt ", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16
    )
    body = b"WAVE" + fmt + extra_chunk + struct.pack("<4sI", b"data", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    time = np.arange(count) / 8000
    wave = 0.4 * np.sin(2 * np.pi * (200 + 37 * seed) * time) + 0.05 * rng.standard_normal(count)
    return (wave * 32767).astype(np.int16)


@pytest.fixture
def clips(tmp_path):
    """Recordings of every length class (shorter than a frame, one hop, typical, longer than
    the 1 s window) plus the layouts that leave the canonical fast path."""
    import soundfile

    folder = tmp_path / "recordings"
    folder.mkdir()
    paths = []
    for i, count in enumerate([5, 100, 200, 329, 1000, 3773, 7999, 8000, 8001, 12000]):
        path = folder / f"{i % 10}_alice_{i}.wav"
        path.write_bytes(wav_bytes(tone(count, i) if i != 4 else np.zeros(count)))  # 4: silent
        paths.append(path)
    list_chunk = b"LIST" + struct.pack("<I", 8) + b"INFOabcd"  # metadata before the samples
    (folder / "1_bob_0.wav").write_bytes(wav_bytes(tone(3000, 20), extra_chunk=list_chunk))
    (folder / "2_bob_0.wav").write_bytes(wav_bytes(tone(16000, 21), rate=16000))  # resampled
    stereo = np.stack([tone(2500, 22), tone(2500, 23)], axis=1)
    (folder / "3_bob_0.wav").write_bytes(wav_bytes(stereo))
    soundfile.write(folder / "4_bob_0.wav", tone(4000, 24) / 32768.0, 8000, subtype="FLOAT")
    soundfile.write(folder / "5_bob_0.wav", tone(4000, 25) / 32768.0, 8000, subtype="PCM_24")
    paths += [folder / f"{d}_bob_0.wav" for d in range(1, 6)]
    return [str(p) for p in paths]


def test_parse_pcm16_reads_canonical_and_chunked_files_and_refuses_the_rest(clips):
    import soundfile

    for path in clips[:11]:  # the ten canonical files and the one with a LIST chunk
        samples = fsdd.read_pcm16(path)
        reference, _ = soundfile.read(path, dtype="int16")
        np.testing.assert_array_equal(samples, reference)
    for path in clips[11:]:  # 16 kHz, stereo, float, 24-bit: left to soundfile
        assert fsdd.read_pcm16(path) is None
    assert fsdd.parse_pcm16(open(clips[5], "rb").read()[:60]) is None  # data cut short
    assert fsdd.read_file(os.path.join(os.path.dirname(clips[0]), "missing.wav")) is None
    data, mtime_ns, size = fsdd.read_file(clips[0])
    stat = os.stat(clips[0])
    assert (mtime_ns, size) == (stat.st_mtime_ns, stat.st_size) and len(data) == size


@pytest.mark.parametrize("kind", ["log_mel", "waveform"])
def test_vectorised_path_matches_the_per_file_reference_for_every_layout(clips, kind):
    features = fsdd.SpeechFeatures(kind)
    reference = np.stack([features(p) for p in clips])
    stamps = np.full((len(clips), 2), -1, np.int64)
    fast, errors = features.compute_many(clips, stamps)
    assert errors == {} and fast.dtype == np.float32 and fast.shape == reference.shape
    if kind == "waveform":
        np.testing.assert_array_equal(fast, reference)
    else:
        np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-4)
    expected = [(os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in clips]
    assert [tuple(s) for s in stamps.tolist()] == expected


def test_a_clips_features_do_not_depend_on_the_clips_beside_it(clips, monkeypatch):
    """Chunks of 3 in two orders: each file's features are bit-identical (buffers reused across
    clips and chunks leave nothing behind, and no reduction depends on the chunk's size)."""
    monkeypatch.setattr(fsdd, "CHUNK_SIZE", 3)
    features = fsdd.SpeechFeatures()
    forward, _ = features.compute_many(clips)
    order = np.random.default_rng(0).permutation(len(clips))
    shuffled, _ = features.compute_many([clips[i] for i in order])
    np.testing.assert_array_equal(shuffled, forward[order])
    alone = np.stack([features.compute_many([p])[0][0] for p in clips[:4]])
    np.testing.assert_array_equal(alone, forward[:4])
    waves = np.stack([fsdd.SpeechFeatures("waveform")(p) for p in clips])
    valid = [min(len(fsdd.read_pcm16(p)), 8000) for p in clips[:10]]
    from_waves = features.log_mel_many(waves[:10], np.array(valid))
    np.testing.assert_allclose(from_waves, forward[:10], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["log_mel", "waveform"])
def test_unreadable_files_are_reported_with_zero_rows_and_no_stamp(clips, tmp_path, kind):
    broken = tmp_path / "recordings" / "9_carol_0.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    paths = [clips[0], str(broken), clips[6]]
    stamps = np.full((3, 2), -1, np.int64)
    out, errors = fsdd.SpeechFeatures(kind).compute_many(paths, stamps)
    assert list(errors) == [1] and errors[1].path == str(broken)
    assert "unreadable audio file" in str(errors[1])
    assert np.all(out[1] == 0) and stamps[1].tolist() == [-1, -1] and stamps[2, 0] > 0
    reference = fsdd.SpeechFeatures(kind)(clips[6])
    np.testing.assert_allclose(out[2], reference, rtol=0, atol=1e-4)


def test_cache_file_round_trips_and_a_truncated_one_is_recomputed(clips, tmp_path, monkeypatch):
    monkeypatch.setattr(fsdd_cache, "CACHE_MIN_RECORDINGS", 1)
    folder = os.path.dirname(clips[0])
    features = fsdd.SpeechFeatures()
    cache_dir = str(tmp_path / "cache")
    first, _ = fsdd_cache.compute_features(clips, features, cache_dir, folder)
    fsdd_cache.wait_for_cache_writes()
    cache = fsdd_cache.FeatureCache(cache_dir, folder, features.settings)
    stored = cache._read(features.shape)
    assert stored["paths"].tolist() == [os.path.basename(p) for p in clips]  # folder-relative
    np.testing.assert_array_equal(stored["features"], first)
    rows, stamps = cache.lookup(clips, features.shape)
    assert rows.tolist() == list(range(len(clips))) and stamps.shape == (len(clips), 2)
    size = os.path.getsize(cache.path)
    with open(cache.path, "r+b") as handle:
        handle.truncate(size // 2)
    assert cache._read(features.shape) is None
    again, _ = fsdd_cache.compute_features(clips, features, cache_dir, folder)
    fsdd_cache.wait_for_cache_writes()
    np.testing.assert_array_equal(again, first)
    assert cache._read(features.shape) is not None  # rewritten whole


def test_cache_is_found_from_a_relative_root_in_another_directory(clips, tmp_path, monkeypatch):
    monkeypatch.setattr(fsdd_cache, "CACHE_MIN_RECORDINGS", 1)
    cache_dir = str(tmp_path / "cache")
    data_root = os.path.dirname(os.path.dirname(clips[0]))
    options = dict(
        as_numpy=True,
        feature_cache=cache_dir,
        split_by="speaker",
        test_speakers=("alice", "bob"),
        validation_speakers=(),
    )
    x, _ = zoo.datasets.load("fsdd", data_root, "test", **options)
    fsdd_cache.wait_for_cache_writes()
    computed = []
    original = fsdd.SpeechFeatures.compute_many
    monkeypatch.setattr(
        fsdd.SpeechFeatures,
        "compute_many",
        lambda self, paths, stamps=None: (
            computed.append(len(paths)) or original(self, paths, stamps)
        ),
    )
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(data_root, tmp_path)
    assert not os.path.isabs(relative)
    x_relative, _ = zoo.datasets.load("fsdd", relative, "test", **options)
    assert computed == []  # every entry found: keys are relative to the folder
    np.testing.assert_array_equal(x_relative["audio"], x["audio"])


def test_in_memory_loaders_gather_in_the_calling_thread(clips):
    root = os.path.dirname(os.path.dirname(clips[0]))
    bulk = zoo.datasets.load("fsdd", root, "test", workers=2, feature_cache=False)
    per_file = zoo.datasets.load("fsdd", root, "test", workers=2, cache=False)
    assert bulk.workers == 1 and per_file.workers == 2


def test_load_starts_the_feature_computation_in_the_background(clips):
    root = os.path.dirname(os.path.dirname(clips[0]))
    options = dict(
        feature_cache=False, split_by="speaker", test_speakers=("alice", "bob"),
        validation_speakers=(), batch_size=4,
    )  # fmt: skip
    early = zoo.datasets.load("fsdd", root, "test", **options)
    reader = early.read_example
    assert reader._prefetching is not None  # started by load, before any read
    reader._prefetching.join(timeout=60)
    assert reader._audio is not None  # computed without a read
    late = zoo.datasets.load("fsdd", root, "test", prefetch=False, **options)
    assert late.read_example._prefetching is None and late.read_example._audio is None
    for index in range(len(early)):
        np.testing.assert_array_equal(early[index][0]["audio"], late[index][0]["audio"])
    digits = zoo.datasets.load("av_digits", root, "test", audio_snr_db=5.0, **options)
    digits.read_example.speech._prefetching.join(timeout=60)
    assert digits.read_example.speech._audio is not None


class _Reader:
    """A toy reader: example i is i * ones; read_batch optional and configurable."""

    def __init__(self, batch_mode: str):
        self.batch_mode = batch_mode

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return {"a": np.full((2,), index, np.float32), "b": np.full((3, 1), -index, np.float32)}

    def read_batch(self, indices):
        if self.batch_mode == "decline":
            return None
        indices = np.asarray(indices)
        a = np.repeat(indices[:, None], 2, axis=1).astype(np.float64)
        b = -np.repeat(indices[:, None, None], 3, axis=1).astype(np.float32)
        if self.batch_mode == "bad_shape":
            b = b[:, :2]
        return {"a": a, "b": b, "unused": a}


class _PerExampleReader(_Reader):
    read_batch = None  # no batched read: FileDataset reads example by example


def _dataset(batch_mode):
    reader = _PerExampleReader("") if batch_mode is None else _Reader(batch_mode)
    return FileDataset(
        reader,
        np.arange(10) % 3,
        {"a": (2,), "b": (3, 1)},
        batch_size=4,
        shuffle=True,
        seed=5,
        name="toy",
        split="train",
    )


def test_read_batch_gives_the_per_example_batches():
    per_example = _dataset(None)
    for mode in ("gather", "decline"):
        batched = _dataset(mode)
        for index in range(len(per_example)):
            (x, y), (x_ref, y_ref) = batched[index], per_example[index]
            np.testing.assert_array_equal(y, y_ref)
            assert sorted(x) == ["a", "b"]
            for modality in x_ref:
                assert x[modality].dtype == np.float32 and x[modality].flags.c_contiguous
                np.testing.assert_array_equal(x[modality], x_ref[modality])


def test_read_batch_with_a_wrong_shape_names_the_modality():
    with pytest.raises(ValueError, match=r"b shape \(4, 2, 1\), expected \(4, 3, 1\)"):
        _dataset("bad_shape")[0]
