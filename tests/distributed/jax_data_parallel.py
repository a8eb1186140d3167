"""One M-SAM run on the JAX backend, optionally under `keras.distribution.DataParallel`.

    python tests/distributed/jax_data_parallel.py OUT.npz [--devices N]

With ``--devices N`` it sets ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX
starts and trains under a DataParallel mesh of N CPU devices; the weights are written to OUT.npz.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=0)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "jax"
    if args.devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import keras
    import numpy as np
    from conftest import small_av_model

    import keras_msam

    if args.devices:
        devices = keras.distribution.list_devices("cpu")
        assert len(devices) == args.devices, devices
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))

    rng = np.random.default_rng(7)
    model = small_av_model()
    model.set_weights(
        [rng.normal(0, 0.4, size=w.shape).astype("float32") for w in model.get_weights()]
    )
    x = {
        "audio": rng.standard_normal((96, 6)).astype("float32"),
        "visual": rng.standard_normal((96, 4)).astype("float32"),
    }
    y = rng.integers(0, 4, size=96).astype("int32")
    trainer = keras_msam.MSAM(model, rho=0.3)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = trainer.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    np.savez(
        args.out,
        *[np.asarray(w) for w in model.get_weights()],
        shapley_audio=np.array(history.history["shapley_audio"]),
    )


if __name__ == "__main__":
    main()
