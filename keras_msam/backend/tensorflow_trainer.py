"""TensorFlow: gradients from a `GradientTape`; the optimizer and BatchNorm state are updated
by assignment after the step (the perturbed pass never writes into the weights)."""

from __future__ import annotations

from contextlib import nullcontext

import tensorflow as tf
from keras.src.trainers.data_adapters.data_adapter_utils import unpack_x_y_sample_weight

from keras_msam.backend.stateful import current_state, write_back


class BackendTrainer:
    """TensorFlow half of `MultimodalTrainer`."""

    def _value_and_grad(self, fn):
        def value_and_grad(trainable, *args, **kwargs):
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                loss, aux = fn(trainable, *args, **kwargs)
            grads = tape.gradient(
                loss, trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            # An embedding's gradient is `tf.IndexedSlices`; the methods combine gradients with
            # `keras.ops` (sums, norms, `cond`), as dense tensors on every backend.
            grads = [
                tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
            ]
            return (loss, aux), grads

        return value_and_grad

    _static_branch = None  # steps branch inside the graph (`ops.cond`) on this backend

    def _host_schedule(self):
        return None

    def _no_gradient(self):
        return nullcontext()

    def _cross_replica_sum(self, tensors):
        """Sum over replicas under `tf.distribute` (MirroredStrategy...); identity otherwise."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tensors
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)

    def _cross_replica_mean(self, tensor):
        """Mean over replicas of a per-replica statistic (equal per-replica batches)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tensor
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, tensor)

    def train_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        self._check_batch(x, y)
        trainable, non_trainable = current_state(self)
        result = self.compute_update(trainable, non_trainable, x, y, sample_weight)
        finite = self._update_is_finite(result.grads)
        if finite is not None:  # every replica must take the same decision
            bad = self._cross_replica_sum([tf.cast(tf.logical_not(finite), tf.float32)])[0]
            finite = tf.equal(bad, 0.0)
        new_non_trainable = self._guard_non_trainable(finite, non_trainable, result.non_trainable)
        if finite is None or self._optimizer_skips_nonfinite:
            self.optimizer.apply(result.grads, self.trainable_variables)
        else:
            self._apply_if_finite(finite, result.grads)
        write_back(self, non_trainable, new_non_trainable)
        return self._record(x, y, sample_weight, result, finite)

    def _apply_if_finite(self, finite, grads):
        """The optimizer step under a graph `tf.cond` (a skipped step leaves weights and slots).

        As `keras.optimizers.LossScaleOptimizer` does: strategies that need a merge call
        (MirroredStrategy) cannot hold one in a replica-context `cond` branch, so the `cond` is
        taken in the cross-replica context there.
        """

        def apply():
            self.optimizer.apply(grads, self.trainable_variables)

        def keep():
            pass

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, apply, keep)
            return

        def cross_replica(distribution, finite, grads):
            flag = distribution.experimental_local_results(finite)[0]

            def apply_everywhere():
                distribution.extended.call_for_each_replica(
                    lambda g: self.optimizer.apply(g, self.trainable_variables), args=(grads,)
                )

            tf.cond(flag, apply_everywhere, keep)

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads))

    def test_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        self._check_batch(x, y)
        trainable, non_trainable = current_state(self)
        result = self.evaluate_batch(trainable, non_trainable, x, y, sample_weight)
        return self._record(x, y, sample_weight, result)
