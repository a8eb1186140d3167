"""One M-SAM run on the TensorFlow backend, optionally under `tf.distribute.MirroredStrategy`.

    python tests/distributed/tf_mirrored.py OUT.npz [--replicas N]

With ``--replicas N`` the CPU is split into N logical devices before TensorFlow starts and the
model is built, compiled and trained inside a MirroredStrategy over them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--replicas", type=int, default=0)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "tensorflow"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import tensorflow as tf

    scope = contextlib.nullcontext()
    if args.replicas:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(args.replicas)]
        )
        names = [d.name for d in tf.config.list_logical_devices("CPU")]
        scope = tf.distribute.MirroredStrategy(names).scope()

    import keras
    import numpy as np
    from conftest import small_av_model

    import keras_msam

    rng = np.random.default_rng(7)
    x = {
        "audio": rng.standard_normal((96, 6)).astype("float32"),
        "visual": rng.standard_normal((96, 4)).astype("float32"),
    }
    y = rng.integers(0, 4, size=96).astype("int32")
    with scope:
        model = small_av_model()
        initial = [
            np.random.default_rng(8).normal(0, 0.4, size=w.shape).astype("float32")
            for w in model.get_weights()
        ]
        model.set_weights(initial)
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
        loss=np.array(history.history["loss"]),
        sharpness=np.array(history.history["sharpness"]),
    )


if __name__ == "__main__":
    main()
