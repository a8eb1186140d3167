"""M-SAM on the PyTorch backend with 2 `torch.distributed` gloo processes on loopback.

    python tests/distributed/torch_gloo.py OUT.npz [--processes N]

Each process fits its contiguous shard of every global batch of 32; with ``--processes 0`` one
process fits the whole batches. Rank 0 writes the final weights to OUT.npz.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GLOBAL_BATCH = 32


def _data():
    import numpy as np

    rng = np.random.default_rng(7)
    x = {
        "audio": rng.standard_normal((96, 6)).astype("float32"),
        "visual": rng.standard_normal((96, 4)).astype("float32"),
    }
    y = rng.integers(0, 4, size=96).astype("int32")
    return x, y


def train(rank: int, world: int, out: str, port: int) -> None:
    import numpy as np
    import torch

    if world > 1:
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    import keras
    from conftest import small_av_model

    import keras_msam

    x, y = _data()
    local = GLOBAL_BATCH // max(world, 1)
    rows = np.concatenate(
        [
            np.arange(start + rank * local, start + (rank + 1) * local)
            for start in range(0, len(y), GLOBAL_BATCH)
        ]
    )
    model = small_av_model()
    model.set_weights(
        [
            np.random.default_rng(8).normal(0, 0.4, size=w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )
    trainer = keras_msam.MSAM(model, rho=0.3)
    trainer.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = trainer.fit(
        {k: v[rows] for k, v in x.items()},
        y[rows],
        batch_size=local,
        epochs=2,
        shuffle=False,
        verbose=0,
    )
    if rank == 0:
        np.savez(
            out,
            *[np.asarray(w) for w in model.get_weights()],
            shapley_audio=np.array(history.history["shapley_audio"]),
        )
    if world > 1:
        # Every rank waits for rank 0's write before any tears gloo down: a rank that destroys
        # its group while a peer still holds the pairs open can abort at exit under load.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        # The results are written and the group is down; leave without interpreter teardown,
        # where native threads of the loaded runtimes have aborted a spawned child (CI, stop 18).
        print(f"rank {rank}: finished", file=sys.stderr, flush=True)
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--processes", type=int, default=0)
    args = parser.parse_args()
    if args.processes <= 1:
        train(0, 1, args.out, 0)
        return
    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(train, args=(args.processes, args.out, port), nprocs=args.processes, join=True)


if __name__ == "__main__":
    main()
