"""Distributed training on Keras's own engines gives the same weights as one device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parent / "distributed"


def _run(script: str, flag: str, count: int, out: Path) -> dict[str, np.ndarray]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / script), str(out), flag, str(count)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(np.load(out))


def _assert_same_run(distributed: dict, single: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        np.testing.assert_allclose(distributed[key], single[key], rtol=1e-5, atol=1e-6)
    weights = [k for k in single if k.startswith("arr_")]
    assert weights
    for key in weights:
        np.testing.assert_allclose(distributed[key], single[key], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution is JAX's")
def test_jax_data_parallel_on_four_cpu_devices_matches_one_device(tmp_path):
    single = _run("jax_data_parallel.py", "--devices", 0, tmp_path / "single.npz")
    parallel = _run("jax_data_parallel.py", "--devices", 4, tmp_path / "parallel.npz")
    _assert_same_run(parallel, single, ("shapley_audio",))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute is TF's")
def test_tf_mirrored_strategy_on_two_cpu_replicas_matches_one_device(tmp_path):
    single = _run("tf_mirrored.py", "--replicas", 0, tmp_path / "single.npz")
    mirrored = _run("tf_mirrored.py", "--replicas", 2, tmp_path / "mirrored.npz")
    _assert_same_run(mirrored, single, ("shapley_audio", "loss", "sharpness"))


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.distributed is torch's")
def test_torch_two_gloo_processes_match_one_process(tmp_path):
    single = _run("torch_gloo.py", "--processes", 0, tmp_path / "single.npz")
    parallel = _run("torch_gloo.py", "--processes", 2, tmp_path / "parallel.npz")
    _assert_same_run(parallel, single, ("shapley_audio",))
