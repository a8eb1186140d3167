"""The same initial weights and batch give the same weights after M-SAM steps on every backend.

The reference was computed on JAX by tests/fixtures/make_msam_reference.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures.make_msam_reference import run_step

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "msam_step_reference.npz"


def test_msam_steps_match_the_stored_reference():
    stored = np.load(REFERENCE)
    count = len([k for k in stored.files if k.startswith("initial_")])
    initial = [stored[f"initial_{i}"] for i in range(count)]
    x = {"audio": stored["x_audio"], "visual": stored["x_visual"]}
    final, logs = run_step(initial, x, stored["y"])
    assert int(logs["dominant"]) == int(stored["dominant"])
    np.testing.assert_allclose(logs["shapley_audio"], stored["shapley_audio"], atol=1e-6)
    for i, weights in enumerate(final):
        np.testing.assert_allclose(weights, stored[f"final_{i}"], rtol=1e-5, atol=1e-5)
        assert not np.allclose(weights, initial[i])  # the step moved every variable
