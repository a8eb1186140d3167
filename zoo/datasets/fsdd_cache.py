"""The FSDD feature cache: computed log-mel features kept on disk, one file per recordings
folder and feature settings, checked against each file's modification time and size."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np

from zoo.datasets.errors import DataFormatError

if TYPE_CHECKING:
    from zoo.datasets.fsdd import SpeechFeatures


CACHE_DIR_ENV = "KERAS_MSAM_CACHE_DIR"
CACHE_VERSION = 3  # bump when the feature computation changes, so old cache files are ignored
INDEX_FIELDS = ("key", "mtime_ns", "size")  # the cache file's index (see FeatureCache)
CACHE_MIN_RECORDINGS = 256  # smaller splits compute in milliseconds: no cache file is written


def default_cache_dir() -> str:
    """The default feature cache directory, never inside a repository.

    ``$KERAS_MSAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/keras-msam``, else ``~/.cache/keras-msam``.
    """
    if os.environ.get(CACHE_DIR_ENV):
        return os.environ[CACHE_DIR_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "keras-msam")


_PENDING_WRITES: list[threading.Thread] = []


def wait_for_cache_writes() -> None:
    """Blocks until every feature cache file being written in the background is on disk."""
    while _PENDING_WRITES:
        _PENDING_WRITES.pop().join()


class FeatureCache:
    """A persistent cache of computed features, one file per recordings folder and settings.

    The file lives in ``<directory>/fsdd/``, is named ``<hash>.cache`` by a hash of the folder's
    real path, the feature settings and `CACHE_VERSION`, and holds two ``.npy`` arrays back to
    back: the index (a structured array of ``key``, ``mtime_ns``, ``size``) and the features
    (``(entries, *shape)`` float32), read with two ``np.load`` calls on one open file. (Plain
    ``.npy`` streams, unlike ``.npz``, are written and read by numpy's C code without holding
    the GIL, so the background write does not slow the first epoch.) Each entry is keyed by the
    file's path (relative to the folder when inside it, else absolute), modification time (ns)
    and size, so an edited, replaced or removed recording is decoded again. Unreadable files are
    never cached (their error is raised again on every load). A cache file that cannot be read
    is ignored and rewritten. Writes happen in a background (non-daemon) thread, so training
    starts without waiting for them, and are atomic (temporary file, then rename): processes
    sharing the directory never see a partial file.
    """

    def __init__(self, directory: str, folder: str, settings: dict):
        key = json.dumps(
            {"folder": os.path.realpath(folder), "version": CACHE_VERSION, **settings},
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = os.path.join(os.path.expanduser(directory), "fsdd", f"{digest}.cache")
        self.prefix = os.path.join(folder, "")

    def keys(self, paths: list[str]) -> list[str]:
        """The entry key of each path: relative to the folder when inside it, else absolute.

        (A slice per path: about 10x cheaper than ``os.path.abspath``, which matters in the
        background writer, whose Python work holds the GIL while the first epoch runs.)
        """
        prefix, cut = self.prefix, len(self.prefix)
        return [p[cut:] if p.startswith(prefix) else os.path.abspath(p) for p in paths]

    def _read(self, shape: tuple[int, ...]) -> dict[str, np.ndarray] | None:
        try:
            with open(self.path, "rb") as handle:
                index = np.load(handle, allow_pickle=False)
                features = np.load(handle, allow_pickle=False)
        except Exception:  # missing, partial or foreign file: ignored, rewritten later
            return None
        if index.ndim != 1 or index.dtype.names != INDEX_FIELDS:
            return None
        if features.shape != (len(index), *shape) or features.dtype != np.float32:
            return None
        stamps = np.stack([index["mtime_ns"], index["size"]], axis=1).astype(np.int64)
        return {"paths": index["key"], "stamps": stamps, "features": features}

    def lookup(
        self, paths: list[str], shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(rows, stamps)``: each path's row in the cache file's features (-1 when it has no
        current entry) and its (mtime_ns, size) ((-1, -1) when it cannot be stat'ed).

        Without a readable cache file every row is -1 and ``stamps`` is None: nothing is
        stat'ed, the stamps come from reading the files (`SpeechFeatures.compute_many`).
        """
        rows = np.full(len(paths), -1, np.int64)
        self._stored = self._read(shape)
        if self._stored is None:
            return rows, None
        stamps = np.full((len(paths), 2), -1, np.int64)
        for index, path in enumerate(paths):
            try:
                stat = os.stat(path)
            except OSError:
                continue
            stamps[index] = stat.st_mtime_ns, stat.st_size
        where = {p: i for i, p in enumerate(self._stored["paths"].tolist())}
        rows[:] = [where.get(key, -1) for key in self.keys(paths)]
        found = rows >= 0
        current = np.all(self._stored["stamps"][rows[found]] == stamps[found], axis=1)
        found[found] = current & (stamps[found, 0] >= 0)
        rows[~found] = -1
        return rows, stamps

    def features(self, rows: np.ndarray | None) -> np.ndarray:
        """The cached features of ``rows`` (from `lookup`, all >= 0); None: all, as stored."""
        stored = self._stored["features"]
        return stored if rows is None else stored[rows]

    def store(
        self, paths: list[str], stamps: np.ndarray, features: np.ndarray, chosen: np.ndarray
    ) -> None:
        """Adds (or replaces) the entries ``paths[chosen]`` in the background, keeping others.

        All the work (gathering, merging with the entries already stored, writing) runs in the
        writer thread, so the first epoch does not wait for it; ``features`` must not change.
        """
        writer = threading.Thread(
            target=self._merge_and_write,
            args=(paths, stamps, features, chosen, getattr(self, "_stored", None)),
            name="fsdd-feature-cache",
        )
        writer.start()
        _PENDING_WRITES.append(writer)

    def _merge_and_write(self, paths, stamps, features, chosen, old) -> None:
        chosen = chosen[stamps[chosen, 0] >= 0]
        merged = {
            "paths": np.array(self.keys([paths[i] for i in chosen]), dtype=str),
            "stamps": stamps[chosen],
            # every row, in order (a first run): written as it is, no 15 MB copy
            "features": features if len(chosen) == len(features) else features[chosen],
        }
        if old is not None:
            kept = ~np.isin(old["paths"], merged["paths"])
            merged = {k: np.concatenate([old[k][kept], merged[k]]) for k in merged}
        index = np.empty(
            len(merged["paths"]),
            [("key", merged["paths"].dtype), ("mtime_ns", "<i8"), ("size", "<i8")],
        )
        index["key"] = merged["paths"]
        index["mtime_ns"], index["size"] = merged["stamps"].T
        self._write(index, merged["features"])

    def _write(self, index: np.ndarray, features: np.ndarray) -> None:
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as out:
                    np.save(out, index, allow_pickle=False)
                    np.save(out, np.ascontiguousarray(features), allow_pickle=False)
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as error:
            warnings.warn(
                f"Could not write the FSDD feature cache {self.path} ({error}); features will "
                f"be computed again next time. Set feature_cache=<dir> or {CACHE_DIR_ENV}.",
                RuntimeWarning,
                stacklevel=2,
            )


def compute_features(
    paths: list[str],
    features: SpeechFeatures,
    cache_dir: str | None = None,
    folder: str | None = None,
) -> tuple[np.ndarray, dict[int, DataFormatError]]:
    """Features of every path (vectorised), through the disk cache when ``cache_dir`` is set.

    The disk cache holds log-mel features only (waveforms are as quick to decode as to read),
    and is written only for splits of at least `CACHE_MIN_RECORDINGS` recordings.
    """
    if cache_dir is None or features.kind != "log_mel" or not paths:
        return features.compute_many(paths)
    cache = FeatureCache(cache_dir, folder or os.path.dirname(paths[0]), features.settings)
    rows, stamps = cache.lookup(paths, features.shape)
    if stamps is None:  # no cache file yet: every file is read, and stamped as it is read
        stamps = np.full((len(paths), 2), -1, np.int64)
        out, errors = features.compute_many(paths, stamps)
        missing = np.arange(len(paths))
    elif np.array_equal(rows, np.arange(len(paths))):  # the file holds exactly these paths
        return cache.features(None), {}
    else:
        hit = rows >= 0
        out = np.empty((len(paths), *features.shape), np.float32)
        if hit.any():
            out[hit] = cache.features(rows[hit])
        missing = np.flatnonzero(~hit)
        errors: dict[int, DataFormatError] = {}
        if missing.size:
            fresh = np.full((missing.size, 2), -1, np.int64)
            computed, missing_errors = features.compute_many([paths[i] for i in missing], fresh)
            out[missing], stamps[missing] = computed, fresh
            errors = {int(missing[i]): error for i, error in missing_errors.items()}
    if missing.size and len(paths) >= CACHE_MIN_RECORDINGS:
        good = missing[~np.isin(missing, np.fromiter(errors, np.int64, len(errors)))]
        if good.size:
            cache.store(paths, stamps, out, good)
    return out, errors


def resolve_cache_dir(feature_cache: bool | str | os.PathLike | None) -> str | None:
    """``feature_cache`` option -> cache directory: True = `default_cache_dir`, False = none."""
    if feature_cache is None or feature_cache is False:
        return None
    if feature_cache is True:
        return default_cache_dir()
    return os.fspath(feature_cache)
