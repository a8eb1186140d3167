"""MSLR: modality-specific learning rates (the baseline shipped with AGM, Li et al., ICCV 2023).

Following the official code (``lihong2303/AGM@5a65542``, ``run/CREMAD_main.py`` lines 194–209
for the step and 671–683 for the epoch-end update; the AV-MNIST and UR-Funny scripts do the
same, the latter for three modalities):

    per step, inside the modulation epochs:   g_m ← c_m · g_m  on modality m's parameters
                                              c_m = c⁰_m · r_m
    after each epoch, from the unimodal accuracies a_m of the evaluation data:
        while fewer than K accuracies are remembered:  remember a_m            (r_m unchanged)
        otherwise:  r_m = a_m / mean(last K a_m);  forget the oldest;  remember a_m

with K = 5 and r_m = 1 at the start; the official initial factors are c⁰ = 0.9 (audio) and
1.1 (visual) on CREMA-D. Scaling a parameter's gradient by c_m is scaling its learning rate by
c_m under plain SGD (with momentum, the velocity mixes the scaled gradients, as in the official
code, which also scales ``.grad``).

Choices:

* a_m is the accuracy of modality m alone (the others zeroed, inference mode:
  `keras_msam.evaluation.modality_accuracies`), computed on ``validation_data`` at the end of
  every epoch. The official code computes it on its "test" loader, which in those scripts is
  the test split; a validation split is used here, so no setting is chosen on test data.
  ``fit`` without validation data raises.
* The modulated parameters are each modality's encoder (``modality_variables()``); the official
  ``audio_cls``/``visual_cls`` heads of its models have no counterpart in a fused head, whose
  variables (shared) keep their plain gradient.
* Any number of modalities: ``initial_factors`` maps modality names to c⁰_m (missing names: 1.0);
  the default is the official {audio: 0.9, visual: 1.1}.
* The ratio r_m and the remembered accuracies are trainer state (saved with the trainer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_msam.trainers import _checks
from keras_msam.trainers._balancing import BalancingTrainer, check_window
from keras_msam.trainers.base import StepResult

OFFICIAL_INITIAL_FACTORS = {"audio": 0.9, "visual": 1.1}


def update_ratios(
    memory: np.ndarray, count: int, accuracies: np.ndarray, ratios: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray]:
    """One epoch-end update of the official rule.

    Args:
        memory: (K, M) remembered accuracies, the oldest first; rows ≥ ``count`` are unused.
        count: How many rows of ``memory`` hold accuracies.
        accuracies: (M,) this epoch's unimodal accuracies.
        ratios: (M,) the current ratios r_m.

    Returns:
        The new memory, count and ratios.
    """
    memory = np.array(memory, dtype=np.float64)
    accuracies = np.asarray(accuracies, dtype=np.float64)
    size = memory.shape[0]
    if count < size:
        memory[count] = accuracies
        return memory, count + 1, np.asarray(ratios, dtype=np.float64)
    mean = memory.mean(axis=0)
    new_ratios = np.where(mean > 0, accuracies / np.where(mean > 0, mean, 1.0), 1.0)
    memory = np.concatenate([memory[1:], accuracies[None]], axis=0)
    return memory, count, new_ratios


class _MSLRUpdate(keras.callbacks.Callback):
    """At the end of every epoch: unimodal validation accuracies, then the ratio update."""

    def __init__(self, trainer: MSLR, validation_data: Any, batch_size: int | None) -> None:
        super().__init__()
        self._trainer = trainer
        self._validation_data = validation_data
        self._batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._trainer.end_of_epoch(self._validation_data, self._batch_size)


@keras.saving.register_keras_serializable(package="keras_msam")
class MSLR(BalancingTrainer):
    """Modality-specific learning rates, adapted each epoch from unimodal validation accuracy.

    Args:
        model: A Keras model with dict inputs keyed by modality name (two or more modalities)
            whose modalities own trainable variables (their encoders).
        initial_factors: ``{modality: c⁰_m > 0}``; modalities not named get 1.0. Default: the
            official CREMA-D factors {audio: 0.9, visual: 1.1}.
        memory: K ≥ 1, the number of past epochs' accuracies each ratio is taken against
            (official 5).
        modulation_epochs: Inclusive ``(start, end)`` epochs (0-based) in which gradients are
            scaled; None (default) scales in every epoch.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``mslr_factor_<modality>``, the factor c_m applied this step (1 outside the window).
    ``fit`` needs ``validation_data`` (or ``validation_split``).
    """

    def __init__(
        self,
        model: keras.Model,
        initial_factors: Mapping[str, float] | None = None,
        memory: int = 5,
        modulation_epochs: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        names = self.modality_names
        if initial_factors is not None and not isinstance(initial_factors, Mapping):
            raise ValueError(
                f"MSLR initial_factors must be a mapping {{modality: factor}}, got "
                f"{initial_factors!r}."
            )
        factors = dict(OFFICIAL_INITIAL_FACTORS if initial_factors is None else initial_factors)
        unknown = sorted(set(factors) - set(names))
        if unknown and initial_factors is not None:
            raise ValueError(
                f"MSLR initial_factors names {unknown}, which are not modalities of the model "
                f"(its modalities: {list(names)})."
            )
        self.initial_factors = {
            name: _checks.positive(factors.get(name, 1.0), f"MSLR initial_factors[{name!r}]",
                                   allow_zero=False)
            for name in names
        }  # fmt: skip
        self.memory = _checks.integer(memory, "MSLR memory", 1)
        self.modulation_epochs = check_window(modulation_epochs, "MSLR modulation_epochs")
        if not any(self.structure.group_index(v) >= 0 for v in self.trainable_variables):
            raise ValueError(
                f"MSLR scales each modality's encoder gradients; model {self.model.name!r} has "
                "no modality-specific trainable variables."
            )
        count = len(names)
        self._ratios = self._add_state("mslr_ratios", (count,), 1.0)
        self._memory = self._add_state("mslr_memory", (self.memory, count), 0.0)
        self._memory_count = self._add_state("mslr_memory_count")
        self._extra_trackers = [self._mean_metric(f"mslr_factor_{n}") for n in names]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "initial_factors": dict(self.initial_factors),
            "memory": self.memory,
            "modulation_epochs": self.modulation_epochs,
        }

    # ------------------------------------------------------------------ the step
    def compute_update(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        def loss_fn(weights):
            y_pred, new_nt, losses = self.stateless_call(
                weights, non_trainable, x, return_losses=True, training=True
            )
            loss, unscaled = self._compiled_loss(x, y, y_pred, sample_weight, losses)
            return loss, (unscaled, y_pred, new_nt)

        (_, (loss, y_pred, new_non_trainable)), grads = self._value_and_grad(loss_fn)(trainable)
        with self._no_gradient():
            initial = ops.convert_to_tensor(
                [self.initial_factors[n] for n in self.modality_names], dtype="float32"
            )
            active = self._in_window(non_trainable, self.modulation_epochs)
            ratios = self._read(non_trainable, self._ratios)
            factors = ops.where(active, initial * ratios, ops.ones_like(initial))
            new_grads = [
                grad
                if group < 0
                else ops.cast(factors[group] * ops.cast(grad, "float32"), grad.dtype)
                for grad, group in zip(grads, self._grad_groups())
            ]
        shapley = (
            self._shapley(trainable, non_trainable, x, y, y_pred) if self.log_shapley else None
        )
        extras = {f"mslr_factor_{n}": factors[i] for i, n in enumerate(self.modality_names)}
        return StepResult(new_grads, new_non_trainable, y_pred, loss, shapley, extras=extras)

    # --------------------------------------------------------------- the epoch end
    @property
    def ratios(self) -> dict[str, float]:
        """The current r_m by modality."""
        values = np.asarray(ops.convert_to_numpy(self._ratios))
        return {name: float(values[i]) for i, name in enumerate(self.modality_names)}

    def end_of_epoch(self, validation_data: Any, batch_size: int | None = None) -> None:
        """The official epoch-end update from the unimodal accuracies on ``validation_data``."""
        from keras_msam.evaluation import modality_accuracies

        vx, vy = _arrays(validation_data, batch_size)
        accuracy = modality_accuracies(self, vx, vy, batch_size=batch_size or 256)
        accuracies = np.array([accuracy[name] for name in self.modality_names])
        memory, count, ratios = update_ratios(
            np.asarray(ops.convert_to_numpy(self._memory)),
            int(np.asarray(ops.convert_to_numpy(self._memory_count))),
            accuracies,
            np.asarray(ops.convert_to_numpy(self._ratios)),
        )
        self._memory.assign(memory.astype("float32"))
        self._memory_count.assign(float(count))
        self._ratios.assign(ratios.astype("float32"))

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: Any = "auto",
        callbacks: Any = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        **kwargs: Any,
    ) -> Any:
        """`keras.Model.fit`, plus the epoch-end ratio update from the validation data."""
        if validation_split and validation_data is None:
            from keras.src.trainers.data_adapters import array_slicing

            (x, y, sample_weight), validation_data = array_slicing.train_validation_split(
                (x, y, kwargs.pop("sample_weight", None)), validation_split=validation_split
            )
            kwargs["sample_weight"] = sample_weight
        if validation_data is None:
            raise ValueError(
                "MSLR adapts each modality's learning rate from its unimodal accuracy on "
                "validation data after every epoch: pass validation_data=(x_val, y_val) or "
                "validation_split to fit."
            )
        update = _MSLRUpdate(self, validation_data, kwargs.get("validation_batch_size"))
        return super().fit(
            x=x,
            y=y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=[update, *(callbacks or [])],
            validation_data=validation_data,
            **kwargs,
        )


def _arrays(data: Any, batch_size: int | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(x, y)`` as numpy arrays from a tuple of arrays or any data `fit` takes."""
    from keras.src.trainers.data_adapters import data_adapter_utils, get_data_adapter

    if isinstance(data, (tuple, list)):
        vx, vy, vw = data_adapter_utils.unpack_x_y_sample_weight(tuple(data))
    else:
        vx, vy, vw = data, None, None
    adapter = get_data_adapter(vx, vy, vw, batch_size=batch_size or 256, shuffle=False)
    xs: dict[str, list[np.ndarray]] = {}
    ys: list[np.ndarray] = []
    for batch in adapter.get_numpy_iterator():
        bx, by, _ = data_adapter_utils.unpack_x_y_sample_weight(batch)
        if by is None:
            raise ValueError("MSLR: the validation data must give labels (x, y).")
        for name, value in bx.items():
            xs.setdefault(name, []).append(np.asarray(value))
        ys.append(np.asarray(by))
    if not ys:
        raise ValueError("MSLR: the validation data gave no batch.")
    return {k: np.concatenate(v) for k, v in xs.items()}, np.concatenate(ys)
