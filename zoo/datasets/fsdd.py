"""Free Spoken Digit Dataset: a folder of ``{digit}_{speaker}_{take}.wav`` recordings."""

from __future__ import annotations

import os
import re
import struct
import threading
from typing import Any

import numpy as np

from zoo.datasets._common import Problems, check_splits
from zoo.datasets._io import fit_to_length, log_mel, read_wav, require
from zoo.datasets.errors import CheckReport, DataFormatError
from zoo.datasets.fsdd_cache import compute_features, resolve_cache_dir
from zoo.datasets.pipeline import FileDataset

SAMPLE_RATE = 8000
NUM_CLASSES = 10
FILE_NAME = re.compile(r"^(?P<digit>\d+)_(?P<speaker>[A-Za-z0-9-]+)_(?P<take>\d+)\.wav$")
AUDIO_FEATURES = ("log_mel", "waveform")
SPLIT_BY = ("take", "speaker")
CHUNK_SIZE = 32  # recordings per vectorised chunk (its buffers stay in the CPU cache)


def recordings_dir(root: str) -> str:
    """``root/recordings`` when it exists (the FSDD repository layout), else ``root``."""
    nested = os.path.join(root, "recordings")
    return nested if os.path.isdir(nested) else root


def index_recordings(root: str, problems: Problems) -> list[tuple[str, int, str, int]]:
    """Lists (path, digit, speaker, take) of every recording, reporting misnamed wav files."""
    folder = recordings_dir(root)
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".wav"))
    except FileNotFoundError:
        problems(folder, "recordings folder is missing")
        return []
    records = []
    prefix = os.path.join(folder, "")  # one join, not one per file
    for name in names:
        path = prefix + name
        match = FILE_NAME.match(name)
        if match is None:
            problems(path, "file name does not match '{digit}_{speaker}_{take}.wav'")
            continue
        digit = int(match["digit"])
        if not 0 <= digit < NUM_CLASSES:
            problems(path, f"unknown label {digit} (digits are 0..9)")
            continue
        records.append((path, digit, match["speaker"], int(match["take"])))
    if not records and not names:
        problems(folder, "no .wav recordings found")
    return records


def split_records(
    records: list[tuple[str, int, str, int]],
    split: str,
    split_by: str = "take",
    test_speakers: tuple[str, ...] = ("theo",),
    validation_speakers: tuple[str, ...] = ("nicolas",),
) -> list[tuple[str, int, str, int]]:
    """Selects a split's recordings.

    ``split_by="take"``: test = takes 0-4 (the FSDD authors' convention), validation = takes 5-9,
    train = the rest. ``split_by="speaker"`` (speaker-independent): test = ``test_speakers``,
    validation = ``validation_speakers``, train = every other speaker.
    """
    if split_by == "take":

        def which(record):
            take = record[3]
            return "test" if take < 5 else "validation" if take < 10 else "train"
    elif split_by == "speaker":
        overlap = set(test_speakers) & set(validation_speakers)
        if overlap:
            raise ValueError(f"Speakers {sorted(overlap)} are in both test and validation.")

        def which(record):
            speaker = record[2]
            if speaker in test_speakers:
                return "test"
            return "validation" if speaker in validation_speakers else "train"
    else:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}.")
    return [r for r in records if which(r) == split]


def read_file(path: str) -> tuple[bytes, int, int] | None:
    """``(contents, mtime_ns, size)`` of a file, or None when it cannot be opened or read.

    One ``open`` / ``fstat`` / ``read`` / ``close`` (a quarter of Python's buffered ``open()``
    cost per small file); the stamp comes from the very file that was read, so the disk cache
    never pairs new contents with an old stamp or the other way round.
    """
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        stat = os.fstat(handle)
        data = os.read(handle, stat.st_size)
    except OSError:
        return None
    finally:
        os.close(handle)
    return data, stat.st_mtime_ns, stat.st_size


_CANONICAL_HEADER = struct.Struct("<4sI8sIHHIIHH4sI")  # RIFF, fmt chunk of 16, data chunk


def parse_pcm16(data: bytes) -> np.ndarray | None:
    """The int16 samples of a canonical FSDD file: RIFF/WAVE, PCM 16-bit, mono, 8 kHz.

    ``soundfile`` gives exactly ``int16 / 32768`` as float32. For any other file (another
    encoding or rate, extra channels, a truncated or malformed chunk, no samples) it returns
    None, and the caller decodes the file with the reference `read_wav` (soundfile,
    resampling, and its `DataFormatError` naming the file).
    """
    if len(data) >= 44:  # the usual 44-byte header, checked in one unpack
        riff, _, wave, fmt_size, tag, channels, rate, _, _, bits, chunk, size = (
            _CANONICAL_HEADER.unpack_from(data)
        )
        if (riff, wave, fmt_size, chunk) == (b"RIFF", b"WAVEfmt ", 16, b"data"):
            if (tag, channels, rate, bits) != (1, 1, SAMPLE_RATE, 16):
                return None
            if size < 2 or size % 2 or 44 + size > len(data):
                return None
            return np.frombuffer(data, "<i2", size // 2, 44)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, fmt = 12, None
    while offset + 8 <= len(data):  # any other chunk layout (LIST, fact, ... chunks)
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt ":
            if size < 16 or body + 16 > len(data):
                return None
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            if fmt != (1, 1, SAMPLE_RATE, 16) or size < 2 or size % 2 or body + size > len(data):
                return None
            return np.frombuffer(data, "<i2", size // 2, body)
        offset = body + size + (size & 1)
    return None


def read_pcm16(path: str) -> np.ndarray | None:
    """`parse_pcm16` of a file's contents (None when it cannot be read or is not canonical)."""
    contents = read_file(path)
    return None if contents is None else parse_pcm16(contents[0])


class _Workspace:
    """Reusable buffers for the log-mel of a chunk of clips.

    A clip is written after n_fft // 2 zeros into ``clip`` (librosa's ``center=True``), and its
    frames, rows of a strided view of that buffer, are windowed straight into ``segments``:
    no padded copy of the chunk and no gather. Reused across chunks, so a split's features
    touch a few MB of fresh memory once; allocating temporaries per chunk made a new
    process page-fault more than it computed FFTs.
    """

    def __init__(self, features: SpeechFeatures, chunk: int):
        hop, n_fft = features.hop_length, features.n_fft
        self.half = n_fft // 2
        padded_length = features.length + 2 * self.half
        self.computed = min(features.num_frames, 1 + (padded_length - n_fft) // hop)
        self.clip = np.zeros(self.half + features.length + n_fft, np.float32)
        item = self.clip.itemsize
        self.frames = np.lib.stride_tricks.as_strided(
            self.clip, (self.computed, n_fft), (hop * item, item), writeable=False
        )
        self.segments = np.empty((chunk * self.computed, n_fft), np.float32)
        self.power = np.empty(chunk * self.computed * (n_fft // 2 + 1), np.float32)
        self.reach = np.zeros(chunk, np.int64)  # frames of each clip of the chunk
        self.filled = 0  # frames in ``segments`` so far
        self.count = 0  # samples of the clip in ``clip`` (all after it are zeros)
        self.window = features._filters()[0]
        self.sums = np.empty((chunk, 1, 1), np.float32)


class SpeechFeatures:
    """Turns recordings into fixed-shape features (thread-safe, picklable).

    Two paths give the same numbers (within float32 round-off): ``features(path)``, the
    per-file reference (soundfile + ``librosa.feature.melspectrogram``), and
    ``features.compute_many(paths)``, which decodes every file and computes the log-mel of
    chunks of `CHUNK_SIZE` clips in vectorised numpy passes (librosa's mel filterbank and
    periodic Hann window, centred zero-padded frames, ``scipy.fft``).
    """

    def __init__(
        self,
        audio_features: str = "log_mel",
        duration: float = 1.0,
        num_mels: int = 40,
        num_frames: int = 40,
        n_fft: int = 256,
    ):
        if audio_features not in AUDIO_FEATURES:
            raise ValueError(
                f"audio_features must be one of {AUDIO_FEATURES}, got {audio_features!r}"
            )
        self.kind = audio_features
        self.length = int(round(duration * SAMPLE_RATE))
        self.num_mels, self.num_frames, self.n_fft = num_mels, num_frames, n_fft
        self.hop_length = max(1, -(-self.length // num_frames))

    @property
    def shape(self) -> tuple[int, ...]:
        if self.kind == "waveform":
            return (self.length,)
        return (self.num_mels, self.num_frames, 1)

    @property
    def settings(self) -> dict:
        """Everything that defines the features' values (the disk cache's key)."""
        return {
            "kind": self.kind,
            "sample_rate": SAMPLE_RATE,
            "length": self.length,
            "num_mels": self.num_mels,
            "num_frames": self.num_frames,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
        }

    def __call__(self, path: str) -> np.ndarray:
        samples = fit_to_length(read_wav(path, SAMPLE_RATE), self.length)
        if self.kind == "waveform":
            return samples.astype(np.float32)
        mel = log_mel(
            samples, SAMPLE_RATE, self.num_mels, self.num_frames, self.n_fft, self.hop_length
        )
        mel = (mel - mel.mean()) / (mel.std() + 1e-6)  # per-clip z-score
        return mel[..., None].astype(np.float32)

    def compute_many(
        self, paths: list[str], stamps: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[int, DataFormatError]]:
        """Features of every path, ``(len(paths), *shape)`` float32, and the unreadable files.

        Returns the features (zeros in the rows of unreadable files) and ``{index: error}`` for
        each file that could not be decoded; the caller raises or skips those, as it would for
        the per-file path. ``stamps`` (``(len(paths), 2)`` int64), when given, receives each
        file's ``(mtime_ns, size)`` as it was read (-1 where it could not be read).

        One thread: decoding is Python that holds the GIL, and a second thread (decoding, or
        computing features while this one decodes) made it 1.5-2.5x slower on a 2-core
        machine, each numpy call waiting for the GIL.
        """
        out = np.empty((len(paths), *self.shape), np.float32)
        errors: dict[int, DataFormatError] = {}
        if not paths:
            return out, errors
        require("soundfile", purpose="Reading wav files")  # as the per-file path needs it
        if self.kind == "log_mel":
            require("librosa", purpose="Computing log-mel features")
            workspace = _Workspace(self, min(CHUNK_SIZE, len(paths)))
        scale = np.float32(1 / 32768)  # soundfile's int16 -> float32 scaling
        for start in range(0, len(paths), CHUNK_SIZE):
            stop = min(start + CHUNK_SIZE, len(paths))
            for row, index in enumerate(range(start, stop)):
                samples = self._read_samples(paths[index], index, errors, stamps)
                if self.kind == "waveform":
                    count = 0 if samples is None else min(len(samples), self.length)
                    if count:
                        np.multiply(samples[:count], scale, out=out[index, :count])
                    out[index, count:] = 0
                else:
                    self._window_clip(workspace, row, samples)
            if self.kind == "log_mel":
                self._log_mel_rows(workspace, stop - start, out[start:stop])
        out[list(errors)] = 0
        return out, errors

    @staticmethod
    def _read_samples(
        path: str,
        index: int,
        errors: dict[int, DataFormatError],
        stamps: np.ndarray | None,
    ) -> np.ndarray | None:
        """A file's samples as int16 values (the canonical fast path) or read_wav's floats
        times 32768 (exact: a power of 2); None, with ``errors[index]`` set, if unreadable."""
        contents = read_file(path)
        samples = None if contents is None else parse_pcm16(contents[0])
        if samples is None:
            try:
                samples = read_wav(path, SAMPLE_RATE) * np.float32(32768)
            except DataFormatError as error:
                errors[index] = error
                return None
        if stamps is not None and contents is not None:
            stamps[index] = contents[1:]
        return samples

    def _window_clip(self, workspace: _Workspace, row: int, samples: np.ndarray | None) -> None:
        """Puts the Hann-windowed frames of one clip (int16-scaled values) into the workspace
        rows after those of the chunk's earlier clips (row 0 starts a chunk), and records how
        many it has."""
        half, hop = workspace.half, self.hop_length
        count = 0 if samples is None else min(len(samples), self.length)
        if count:
            workspace.clip[half : half + count] = samples[:count]
        if count < workspace.count:  # the buffer past the clip stays all zeros
            workspace.clip[half + count : half + workspace.count] = 0
        workspace.count = count
        # frame t holds samples [t * hop - n_fft // 2, ... + n_fft) of the clip: only zeros (an
        # exactly zero spectrum) once t * hop - n_fft // 2 >= count
        reach = min(-(-(count + half) // hop), workspace.computed)
        first = workspace.filled if row else 0
        segments = workspace.segments[first : first + reach]
        np.multiply(workspace.frames[:reach], workspace.window, out=segments)
        workspace.reach[row], workspace.filled = reach, first + reach

    def log_mel_many(self, waves: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Z-scored log-mel features of clips ``(N, length)``, as `__call__` computes them.

        Reproduces ``librosa.feature.melspectrogram(center=True)`` (zero padding of n_fft // 2
        at both ends, periodic Hann window, power 2, Slaney mel filterbank), then
        ``log(mel + 1e-6)``, frames past librosa's last one set to ``log(1e-6)``, and the
        per-clip z-score. ``valid`` (samples before the zero padding of each clip) lets it skip
        the frames that hold only padding, whose spectrum is exactly zero.
        """
        waves = np.asarray(waves, np.float32) * np.float32(32768)  # exact: a power of 2
        valid = np.full(len(waves), self.length) if valid is None else np.asarray(valid)
        out = np.empty((len(waves), *self.shape), np.float32)
        workspace = _Workspace(self, min(CHUNK_SIZE, max(1, len(waves))))
        for start in range(0, len(waves), CHUNK_SIZE):
            stop = min(start + CHUNK_SIZE, len(waves))
            for row, index in enumerate(range(start, stop)):
                self._window_clip(workspace, row, waves[index, : valid[index]])
            self._log_mel_rows(workspace, stop - start, out[start:stop])
        return out

    def _log_mel_rows(self, workspace: _Workspace, count: int, out: np.ndarray) -> None:
        """Log-mel of the chunk's ``count`` windowed clips, z-scored per clip, into ``out``."""
        _, basis = self._filters()
        reach = workspace.reach[:count]
        frames = int(reach.sum())
        rows = np.repeat(np.arange(count), reach)
        cols = np.arange(frames) - np.repeat(np.cumsum(reach) - reach, reach)
        spectrum = _rfft(workspace.segments[:frames])  # (frames, bins)
        power = workspace.power[: spectrum.size].reshape(spectrum.shape[::-1])
        np.abs(spectrum.T, out=power)  # transposed: (bins, frames), C-contiguous
        np.square(power, out=power)
        mel = out[..., 0]  # (count, num_mels, num_frames), written in place
        mel.fill(0)
        # (num_mels, bins) sparse @ (bins, frames): each value sums its bins in a fixed order,
        # so a clip's features never depend on which clips share its chunk (BLAS sgemm's do)
        mel[rows, :, cols] = (basis @ power).T
        flat = mel.reshape(count, -1)
        flat += np.float32(1e-6)
        np.log(flat, out=flat)
        # per-clip z-score: centre first, then the spread of the centred values (no E[x^2] -
        # E[x]^2 cancellation in float32)
        flat -= flat.mean(axis=1, keepdims=True)
        squares = workspace.sums[:count]
        np.matmul(flat[:, None, :], flat[:, :, None], out=squares)
        spread = np.sqrt(squares[:, 0] / np.float32(flat.shape[1])) + np.float32(1e-6)
        flat /= spread

    def _filters(self) -> tuple[np.ndarray, Any]:
        """librosa's periodic Hann window / 32768, and its mel basis (num_mels, bins) as a
        scipy CSR matrix (each FFT bin feeds at most two mel bands)."""
        filters = self.__dict__.get("_filter_cache")
        if filters is None:
            librosa = require("librosa", purpose="Computing log-mel features")
            window = librosa.filters.get_window("hann", self.n_fft, fftbins=True)
            basis = librosa.filters.mel(
                sr=SAMPLE_RATE, n_fft=self.n_fft, n_mels=self.num_mels, dtype=np.float32
            )
            sparse = require("scipy.sparse", purpose="Computing log-mel features")
            # the window carries the int16 -> [-1, 1] scaling (exact: a power of 2)
            window = window.astype(np.float32) * np.float32(1 / 32768)
            filters = (window, sparse.csr_matrix(basis))
            self.__dict__["_filter_cache"] = filters
        return filters


def _rfft(segments: np.ndarray) -> np.ndarray:
    """Real FFT along the last axis, complex64 for float32 input (scipy's is faster)."""
    try:
        import scipy.fft  # librosa depends on scipy
    except ImportError:  # pragma: no cover
        return np.fft.rfft(segments, axis=-1).astype(np.complex64)
    return scipy.fft.rfft(segments, axis=-1, overwrite_x=True)


class FSDDReader:
    """Reads one example's features; thread-safe, picklable.

    With ``bulk=True`` (the loaders' default, with ``cache=True``) the first read computes the
    features of every recording at once (`compute_features`: vectorised chunks, disk cache)
    and keeps them, and `read_batch` gathers a whole batch at once; an unreadable file's
    `DataFormatError` is raised when its example is read, as on the per-file path. With
    ``bulk=False`` each read decodes its file on its own.
    """

    def __init__(
        self,
        paths: list[str],
        features: SpeechFeatures,
        bulk: bool = True,
        cache_dir: str | None = None,
        folder: str | None = None,
    ):
        self.paths, self.features = paths, features
        self.bulk, self.cache_dir, self.folder = bulk, cache_dir, folder
        self._lock = threading.Lock()
        self._audio: np.ndarray | None = None
        self._errors: dict[int, DataFormatError] = {}
        self._prefetching: threading.Thread | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_lock")
        state["_prefetching"] = None
        return state

    def prefetch(self) -> None:
        """Starts computing every recording's features in a background thread (bulk mode), so
        that a `fit` started later finds them ready instead of waiting in its first batch; a
        read before the thread is done waits for it (no work is repeated). An error is left to
        the first read, which computes again and raises it there."""
        if not self.bulk or self._audio is not None or self._prefetching is not None:
            return

        def compute() -> None:
            try:
                self._bulk_audio()
            except Exception:  # noqa: BLE001  (raised again by the first read)
                pass

        self._prefetching = threading.Thread(
            target=compute, name="keras-msam-speech-features", daemon=True
        )
        self._prefetching.start()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._prefetching = None

    def _bulk_audio(self) -> np.ndarray:
        """Every recording's features, computed (or read from the disk cache) at first use."""
        if self._audio is None:
            with self._lock:
                if self._audio is None:
                    audio, self._errors = compute_features(
                        self.paths, self.features, self.cache_dir, self.folder
                    )
                    self._audio = audio
        return self._audio

    def audio(self, index: int) -> np.ndarray:
        """One recording's features; raises the file's `DataFormatError` when unreadable."""
        if not self.bulk:
            return self.features(self.paths[index])
        audio = self._bulk_audio()
        error = self._errors.get(index)
        if error is not None:
            raise error
        return audio[index]

    def audio_batch(self, indices: np.ndarray) -> np.ndarray | None:
        """The stacked features of ``indices`` in one gather (bulk mode), or None when bulk is
        off or one of them is unreadable: the caller then reads them one by one, which raises
        or skips that file."""
        if not self.bulk:
            return None
        audio = self._bulk_audio()
        if self._errors and not self._errors.keys().isdisjoint(np.asarray(indices).tolist()):
            return None
        return audio[indices]

    def read_batch(self, indices: np.ndarray) -> dict[str, np.ndarray] | None:
        """``{"audio": (len(indices), *shape)}`` or None (see `audio_batch`)."""
        audio = self.audio_batch(indices)
        return None if audio is None else {"audio": audio}

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return {"audio": self.audio(index)}


FEATURE_OPTIONS = ("audio_features", "duration", "num_mels", "num_frames", "n_fft")
SPLIT_OPTIONS = ("split_by", "test_speakers", "validation_speakers")


def _pop(options: dict, names: tuple[str, ...]) -> dict:
    return {k: options.pop(k) for k in names if k in options}


def make_reader(
    root: str, records: list, features: SpeechFeatures, cache: bool, options: dict
) -> FSDDReader:
    """The reader the loaders use: bulk (vectorised, disk-cached) when ``cache`` is on.

    Takes ``feature_cache`` and ``prefetch`` (default True: the features are computed in a
    background thread from this call on, `FSDDReader.prefetch`) out of ``options``; with
    ``cache`` on it also sets
    ``options["workers"] = 1``: batches are then gathers from memory, which Keras' worker
    thread pool only slows down (measured: first epoch 1.8x slower, later epochs 5x slower
    with 2 workers, each batch waiting on thread hand-offs). ``cache=False`` (a file decoded
    per read) keeps the ``workers`` asked for.
    """
    cache_dir = resolve_cache_dir(options.pop("feature_cache", True))
    prefetch = bool(options.pop("prefetch", True))
    if cache:
        options["workers"] = 1
    reader = FSDDReader(
        [r[0] for r in records],
        features,
        bulk=cache,
        cache_dir=cache_dir,
        folder=recordings_dir(root),
    )
    if prefetch:
        reader.prefetch()
    return reader


def _build(
    root: str,
    split: str,
    problems: Problems,
    on_error: str = "raise",
    cache: bool = True,
    **options,
) -> FileDataset | None:
    features = SpeechFeatures(**_pop(options, FEATURE_OPTIONS))
    split_options = _pop(options, SPLIT_OPTIONS)
    records = split_records(index_recordings(root, problems), split, **split_options)
    if not records:
        raise DataFormatError(recordings_dir(root), f"no recording falls in the {split} split")
    return FileDataset(
        make_reader(root, records, features, cache, options),
        np.array([r[1] for r in records], np.int32),
        {"audio": features.shape},
        on_error=on_error,
        cache=cache,
        num_classes=NUM_CLASSES,
        class_names=[str(d) for d in range(NUM_CLASSES)],
        split=split,
        **options,
    )


def load(root: str, split: str, **options) -> FileDataset:
    """Free Spoken Digit Dataset (Jakobovski/free-spoken-digit-dataset): real spoken digits.

    ``root`` is the repository folder (with ``recordings/``) or the folder of wavs itself; files
    are named ``{digit}_{speaker}_{take}.wav`` (mono 8 kHz). Label = digit (0..9).

    Audio, resampled to 8 kHz and zero-padded or cut to ``duration`` (1.0) s:
    ``audio_features="log_mel"`` (default) -> "audio" (num_mels, num_frames, 1) = (40, 40, 1),
    log(mel power + 1e-6), n_fft 256, hop ceil(8000 / num_frames), z-scored per clip;
    ``"waveform"`` -> "audio" (8000,) for an in-model ``keras.layers.MelSpectrogram``.

    Splits (see `split_records`): ``split_by="take"`` (default) puts takes 0-4 in test (the FSDD
    convention), 5-9 in validation, the rest in train; ``split_by="speaker"`` holds out
    ``test_speakers`` (theo) and ``validation_speakers`` (nicolas).

    Features: with ``cache=True`` (default) the first batch read computes the features of the
    whole split at once (each wav decoded once, the log-mel of chunks of clips in vectorised
    numpy passes; equal to the per-file librosa path within float32 round-off) and keeps them in
    memory (about 6 KB per recording), so no later batch decodes anything: a batch is one
    gather per modality. Log-mel features are also kept on disk (``feature_cache``): True
    (default) = the directory `default_cache_dir` (``$KERAS_MSAM_CACHE_DIR``, else
    ``~/.cache/keras-msam``), a path = that directory, False = off. Entries are keyed by file
    path, modification time, size and the feature settings, so a changed recording is decoded
    again; splits of fewer than 256 recordings are not written. With ``prefetch=True``
    (default) that computation starts in a background thread when ``load`` returns, so that a
    `fit` started afterwards (model building, compilation) finds the features ready and its
    first epoch does not wait on them. ``workers`` is ignored (1)
    with ``cache=True``: batches are gathers from memory, which worker threads only slow down.
    ``cache=False`` decodes each file per read (the reference path; ``workers`` threads). An
    unreadable file raises (or, with ``on_error="skip"``, is skipped) when its example is read.
    """
    return _build(root, split, Problems(), **options)


def check(root: str, report: CheckReport, deep: bool = True, **options) -> None:
    """Checks file names and labels, and (deep) decodes every recording."""

    def build(root: str, split: str, problems: Problems):
        return _build(root, split, problems, **options)

    check_splits(root, report, build, deep=deep)
