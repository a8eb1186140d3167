"""PyTorch: gradients from `torch.autograd.grad` on the state tensors; the optimizer and
BatchNorm state are updated in place after the step, under `no_grad`.

Data parallelism: when `torch.distributed` is initialised with more than one process (e.g. 2 gloo
processes on loopback, each fitting its shard of every batch), the step does what
DistributedDataParallel does for a plain loop, explicitly: the update direction is averaged over
processes before the optimizer, and ε and the Shapley coalition values are taken from the global
(all-reduced) gradient and values, so every process applies the same update as one device.
"""

from __future__ import annotations

import keras
import torch
from keras.src.trainers.data_adapters.data_adapter_utils import unpack_x_y_sample_weight

from keras_msam.backend.stateful import current_state, write_back


def _rng_state() -> list:
    state = [torch.get_rng_state()]
    if torch.cuda.is_available():
        state.append(torch.cuda.get_rng_state())
    return state


def _set_rng_state(state: list) -> None:
    torch.set_rng_state(state[0])
    if len(state) > 1:
        torch.cuda.set_rng_state(state[1])


def _world_size() -> int:
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_world_size()
    return 1


def _detach(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


class BackendTrainer:
    """PyTorch half of `MultimodalTrainer`."""

    _step_rng_state = None

    def _value_and_grad(self, fn):
        def value_and_grad(trainable, *args, **kwargs):
            # Unseeded torch dropout draws from the global generator: replay the step's
            # generator state so every gradient pass of the step sees the same masks.
            if self._step_rng_state is None:
                self._step_rng_state = _rng_state()
            else:
                _set_rng_state(self._step_rng_state)
            leaves = [
                t if (t.is_leaf and t.requires_grad) else t.detach().requires_grad_(True)
                for t in trainable
            ]
            with torch.enable_grad():
                loss, aux = fn(leaves, *args, **kwargs)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
            aux = keras.tree.map_structure(_detach, aux)
            return (_detach(loss), aux), grads

        return value_and_grad

    _static_branch = None  # steps branch inside the graph (`ops.cond`) on this backend

    def _host_schedule(self):
        return None

    def _no_gradient(self):
        return torch.no_grad()

    def _cross_replica_sum(self, tensors):
        """Sum over `torch.distributed` processes (identity in a single process)."""
        if _world_size() == 1:
            return tensors
        reduced = [t.detach().clone() for t in tensors]
        for tensor in reduced:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return reduced

    def _cross_replica_mean(self, tensor):
        """Mean over `torch.distributed` processes of a per-process statistic."""
        world = _world_size()
        if world == 1:
            return tensor
        return self._cross_replica_sum([tensor])[0] / world

    def train_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        self._check_batch(x, y)
        trainable, non_trainable = current_state(self)
        self._step_rng_state = None
        try:
            result = self.compute_update(trainable, non_trainable, x, y, sample_weight)
        finally:
            self._step_rng_state = None
        grads = result.grads
        world = _world_size()
        if world > 1:  # each process holds the mean over its shard: average them
            grads = [g / world for g in self._cross_replica_sum(grads)]
        # Checked on the averaged gradients, so every process takes the same decision. Eager
        # steps branch in Python (one host read of the flag per step, as the loss scaler does).
        finite = self._update_is_finite(grads)
        skip = finite is not None and not bool(finite)
        with torch.no_grad():
            if not skip or self._optimizer_skips_nonfinite:
                self.optimizer.apply(grads, self.trainable_variables)
            kept = self._guard_non_trainable(not skip, non_trainable, result.non_trainable)
            write_back(self, non_trainable, kept)
        return self._record(x, y, sample_weight, result, finite)

    def test_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        self._check_batch(x, y)
        trainable, non_trainable = current_state(self)
        with torch.no_grad():
            result = self.evaluate_batch(trainable, non_trainable, x, y, sample_weight)
            return self._record(x, y, sample_weight, result)
