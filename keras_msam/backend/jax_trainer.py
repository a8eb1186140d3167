"""JAX: stateless steps. State arrays are threaded explicitly; purged variables are only read
through a `StatelessScope` that maps them to the state (keras3.md §1.3)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import jax
import keras
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
    """JAX half of `MultimodalTrainer`."""

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
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, result.grads, trainable
        )
        with _scope(self.metrics_variables, metrics_variables) as scope:
            logs = self._record(x, y, sample_weight, result)
        metrics_variables = _read_back(scope, self.metrics_variables)
        return logs, (trainable, list(result.non_trainable), optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        self._check_batch(x, y)
        with _scope(self.metrics_variables, metrics_variables) as scope:
            result = self.evaluate_batch(trainable, non_trainable, x, y, sample_weight)
            logs = self._record(x, y, sample_weight, result)
        metrics_variables = _read_back(scope, self.metrics_variables)
        return logs, (trainable, non_trainable, metrics_variables)
