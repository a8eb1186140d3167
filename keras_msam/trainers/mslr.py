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
from keras_msam.trainers._epoch_factors import EpochFactorTrainer

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


@keras.saving.register_keras_serializable(package="keras_msam")
class MSLR(EpochFactorTrainer):
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

    method = "MSLR"
    log_prefix = "mslr"

    def __init__(
        self,
        model: keras.Model,
        initial_factors: Mapping[str, float] | None = None,
        memory: int = 5,
        modulation_epochs: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, modulation_epochs=modulation_epochs, **kwargs)
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
        count = len(names)
        self._ratios = self._add_state("mslr_ratios", (count,), 1.0)
        self._memory = self._add_state("mslr_memory", (self.memory, count), 0.0)
        self._memory_count = self._add_state("mslr_memory_count")

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "initial_factors": dict(self.initial_factors),
            "memory": self.memory,
        }

    # ------------------------------------------------------------------ the step
    def _step_factors(self, non_trainable: list[Any]) -> Any:
        initial = ops.convert_to_tensor(
            [self.initial_factors[n] for n in self.modality_names], dtype="float32"
        )
        return initial * self._read(non_trainable, self._ratios)

    # --------------------------------------------------------------- the epoch end
    @property
    def ratios(self) -> dict[str, float]:
        """The current r_m by modality."""
        values = np.asarray(ops.convert_to_numpy(self._ratios))
        return {name: float(values[i]) for i, name in enumerate(self.modality_names)}

    def end_of_epoch(self, validation_data: Any, batch_size: int | None = None) -> None:
        """The official epoch-end update from the unimodal accuracies on ``validation_data``."""
        from keras_msam.evaluation import modality_accuracies

        vx, vy = self._validation_arrays(validation_data, batch_size)
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
