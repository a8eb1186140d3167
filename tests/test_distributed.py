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


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution is JAX's")
def test_jax_data_parallel_on_four_cpu_devices_matches_one_device(tmp_path):
    results = {}
    for devices in (0, 4):
        out = tmp_path / f"weights_{devices}.npz"
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
        run = subprocess.run(
            [
                sys.executable,
                str(SCRIPTS / "jax_data_parallel.py"),
                str(out),
                "--devices",
                str(devices),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results[devices] = np.load(out)
    single, parallel = results[0], results[4]
    np.testing.assert_allclose(parallel["shapley_audio"], single["shapley_audio"], atol=1e-6)
    weights = [k for k in single.files if k.startswith("arr_")]
    assert weights
    for key in weights:
        np.testing.assert_allclose(parallel[key], single[key], rtol=1e-5, atol=1e-5)
