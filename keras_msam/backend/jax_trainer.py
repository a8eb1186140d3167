"""JAX: stateless steps. State arrays are threaded explicitly; purged variables are only read
through a `StatelessScope` that maps them to the state (keras3.md §1.3)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import jax
import keras
import numpy as np
from keras.src.trainers.data_adapters.data_adapter_utils import unpack_x_y_sample_weight


def _scope(variables: list[Any], values: list[Any]) -> keras.StatelessScope:
    return keras.StatelessScope(state_mapping=list(zip(variables, values)))


def _read_back(scope: keras.StatelessScope, variables: list[Any]) -> list[Any]:
    values = []
    for variable in variables:
        value = scope.get_current_value(variable)
        values.append(variable.value if value is None else value)
    return values


class BackendTrainer:
    """JAX half of `MultimodalTrainer`.

    Host-scheduled steps: a method whose step alternates between an expensive and a cheap
    variant on a schedule of the step count (M-SAM's ``sam_every`` and ``amortise_after``) gets
    two jitted step functions and the host picks one per step from a Python step counter, read
    from the state once per `fit`.
    XLA:CPU runs convolutions inside `lax.cond` several times slower than outside, so a traced
    branch would cost more than it saves; the other backends branch inside the step.
    """

    _static_branch = None
    _host_step = None

    def _host_schedule(self) -> tuple[Callable[[int], bool], str] | None:
        """(step count → expensive variant?, counter variable name) of a host-scheduled step,
        or None (overridden)."""
        return None

    def make_train_function(self, force=False):
        schedule = self._host_schedule()
        if schedule is None or keras.distribution.distribution() is not None:
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        is_expensive, counter = schedule
        variants = {
            flag: jax.jit(functools.partial(self._branch_train_step, flag), donate_argnums=0)
            for flag in (True, False)
        }
        position = self._amortised_positions()[counter]

        def step(state, data):
            if self._host_step is None:  # one host read per fit / train_on_batch call
                self._host_step = int(np.asarray(state[1][position]))
            flag = bool(is_expensive(self._host_step))
            self._host_step += 1
            return variants[flag](state, data)

        self.train_function = self._make_function(step)
        return self.train_function

    def _branch_train_step(self, flag, state, data):
        self._static_branch = flag
        try:
            return self.train_step(state, data)
        finally:
            self._static_branch = None

    def fit(self, *args, **kwargs):
        self._host_step = None
        return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._host_step = None
        return super().train_on_batch(*args, **kwargs)

    def _adopt_step_state(self, state):
        """Writes a step's returned state into the variables (before an error leaves `fit`).

        The jitted step donates its input buffers, so the state Keras would sync on the way
        out of `fit`/`train_on_batch` is gone; the step's outputs are the live state.
        """
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        self._jax_state = {
            "trainable_variables": trainable,
            "non_trainable_variables": non_trainable,
            "optimizer_variables": optimizer_variables,
            "metrics_variables": metrics_variables,
        }
        self._jax_state_synced = False
        self.jax_state_sync()

    def _value_and_grad(self, fn):
        return jax.value_and_grad(fn, has_aux=True)

    def _no_gradient(self):
        return nullcontext()

    def _cross_replica_sum(self, tensors):
        """Identity: JAX's DataParallel works on global arrays: nothing to reduce."""
        return tensors

    def _cross_replica_mean(self, tensor):
        return tensor

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        self._check_batch(x, y)
        # Loss scaling reads the optimizer's (purged) variables: map them to the state.
        with _scope(self.optimizer.variables, optimizer_variables):
            result = self.compute_update(trainable, non_trainable, x, y, sample_weight)
        finite = self._update_is_finite(result.grads)
        new_trainable, new_optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, result.grads, trainable
        )
        if not self._optimizer_skips_nonfinite:  # a skipped step keeps weights and slots
            new_trainable = self._kept_if_skipped(finite, trainable, new_trainable)
            new_optimizer_variables = self._kept_if_skipped(
                finite, optimizer_variables, new_optimizer_variables
            )
        new_non_trainable = self._guard_non_trainable(finite, non_trainable, result.non_trainable)
        with _scope(self.metrics_variables, metrics_variables) as scope:
            logs = self._record(x, y, sample_weight, result, finite)
        metrics_variables = _read_back(scope, self.metrics_variables)
        return logs, (new_trainable, new_non_trainable, new_optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        self._check_batch(x, y)
        with _scope(self.metrics_variables, metrics_variables) as scope:
            result = self.evaluate_batch(trainable, non_trainable, x, y, sample_weight)
            logs = self._record(x, y, sample_weight, result)
        metrics_variables = _read_back(scope, self.metrics_variables)
        return logs, (trainable, non_trainable, metrics_variables)
