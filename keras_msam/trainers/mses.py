"""MSES: modality-specific early stopping (the baseline shipped with AGM, Li et al., ICCV 2023).

Following the official code (``lihong2303/AGM@5a65542``, ``run/CREMAD_main.py`` lines 211–225
for the step and 685–745 for the epoch-end rule):

    per step, inside the modulation epochs:   g_m ← c_m · g_m  on modality m's parameters,
                                              c_m ∈ {1, 0}  (1 until modality m is stopped)
    after epoch t (1-based), from the unimodal validation losses ℓ_m(t):
        s_m(t) = ℓ_m(1)                                   for t = 1
        s_m(t) = w · ℓ_m(t − 1) + (1 − w) · ℓ_m(t)         otherwise, w = 0.6
        if s_m(t) < best_m:  best_m = s_m(t), t*_m = t, keep a copy of the model and optimizer
        if t − t*_m > P and c_m ≠ 0:  c_m = 0, and the model and optimizer return to the copy
                                       kept at t*_m ("modality m's training finished")
        when every c_m = 0: training stops

with patience P = 80 in the official scripts. Note the smoothing mixes the *raw* loss of the
previous epoch, not the smoothed one (as the official code does): it is a two-epoch weighted
mean, not an exponential moving average.

Choices:

* ℓ_m is the cross-entropy of the model's output with modality m alone (the others zeroed,
  inference mode: `keras_msam.evaluation.modality_cross_entropies`) on ``validation_data``. The
  official code uses its unimodal heads' losses on its "test" loader (the test split); a
  validation split is used here, so no setting is chosen on test data. ``fit`` without
  validation data raises.
* The rollback restores the model's variables and the optimizer's slots (momentum etc.), not
  its iteration count or learning rate (the official code likewise keeps its scheduler going).
  It is applied when the next epoch begins, not at the epoch end where the stop is decided:
  every end-of-epoch callback (checkpoints, early stopping, the experiment runner's best-epoch
  copy) then sees the weights that were just validated. The official code rolls back before
  its own best-accuracy checkpoint, which then stores the rolled-back weights under the
  accuracy of the others. A stop decided at the last epoch of ``fit`` is applied when ``fit``
  is called again (``pending_rollbacks``).
  The copy for t = 1 is kept too (the official code only has it when another rule saved a
  checkpoint that epoch). The copies live in memory, one per modality; a trainer saved to
  `.keras` keeps the stopping state (c_m, best_m, t*_m) but not the copies, so a stop after a
  reload keeps the current weights and warns.
* ``modulation_epochs`` defaults to every epoch: the official default window (epochs 0–20)
  with P = 80 would re-enable a stopped modality's gradient, making the stop a rollback only.
* Any number of modalities; the modulated parameters are each modality's encoder
  (``modality_variables()``), the shared ones (fusion, head) train until every modality stopped.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_msam.trainers import _checks
from keras_msam.trainers._epoch_factors import EpochFactorTrainer

OFFICIAL_PATIENCE = 80
OFFICIAL_PREVIOUS_WEIGHT = 0.6


def update_stopping(
    state: dict[str, Any], losses: np.ndarray, patience: int, previous_weight: float
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One epoch-end step of the official rule.

    Args:
        state: ``{"epoch": epochs seen, "best": (M,), "best_epoch": (M,), "previous": (M,),
            "factors": (M,)}`` before this epoch.
        losses: (M,) this epoch's unimodal validation losses.
        patience: P, epochs without a new minimum after which a modality stops.
        previous_weight: w, the weight of the previous epoch's raw loss.

    Returns:
        The new state (with ``"smoothed"``), the modalities that reached a new minimum this
        epoch (keep a copy) and the modalities stopped this epoch (roll back), as boolean (M,).
    """
    losses = np.asarray(losses, dtype=np.float64)
    epoch = int(state["epoch"]) + 1
    factors = np.array(state["factors"], dtype=np.float64)
    if epoch == 1:
        smoothed = losses
        improved = np.ones(losses.shape, dtype=bool)
        best, best_epoch = losses.copy(), np.ones(losses.shape)
    else:
        smoothed = previous_weight * np.asarray(state["previous"]) + (1 - previous_weight) * losses
        best = np.asarray(state["best"], dtype=np.float64)
        improved = best > smoothed
        best = np.where(improved, smoothed, best)
        best_epoch = np.where(improved, float(epoch), np.asarray(state["best_epoch"]))
    stopped = (epoch - best_epoch > patience) & (factors != 0)
    factors = np.where(stopped, 0.0, factors)
    new_state = {
        "epoch": epoch,
        "best": best,
        "best_epoch": best_epoch,
        "previous": losses,
        "factors": factors,
        "smoothed": smoothed,
    }
    return new_state, improved, stopped


@keras.saving.register_keras_serializable(package="keras_msam")
class MSES(EpochFactorTrainer):
    """Modality-specific early stopping on unimodal validation loss, with rollback.

    Args:
        model: A Keras model with dict inputs keyed by modality name (two or more modalities)
            whose modalities own trainable variables (their encoders).
        patience: P ≥ 1, epochs without a new minimum of a modality's smoothed validation loss
            after which that modality stops (official 80).
        previous_weight: w in [0, 1), the weight of the previous epoch's raw loss in the
            smoothed loss (official 0.6).
        modulation_epochs: Inclusive ``(start, end)`` epochs (0-based) in which stopped
            modalities get no gradient; None (default) in every epoch.
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    Logs ``mses_factor_<modality>`` (1 while modality m trains, 0 once stopped). ``fit`` needs
    ``validation_data`` (or ``validation_split``) and ends early once every modality stopped.
    """

    method = "MSES"
    log_prefix = "mses"

    def __init__(
        self,
        model: keras.Model,
        patience: int = OFFICIAL_PATIENCE,
        previous_weight: float = OFFICIAL_PREVIOUS_WEIGHT,
        modulation_epochs: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, modulation_epochs=modulation_epochs, **kwargs)
        self.patience = _checks.integer(patience, "MSES patience", 1)
        self.previous_weight = _checks.number(previous_weight, "MSES previous_weight", 0.0)
        if self.previous_weight >= 1.0:
            raise ValueError(
                f"MSES previous_weight must be in [0, 1) (the weight of the previous epoch's "
                f"loss; 1 would ignore the current one), got {previous_weight!r}."
            )
        count = len(self.modality_names)
        self._factors = self._add_state("mses_factors", (count,), 1.0)
        self._best = self._add_state("mses_best_loss", (count,), np.inf)
        self._best_epoch = self._add_state("mses_best_epoch", (count,), 0.0)
        self._previous = self._add_state("mses_previous_loss", (count,), 0.0)
        self._epochs_seen = self._add_state("mses_epochs_seen")
        self._copies: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self._pending: list[int] = []
        self.last_smoothed_losses: dict[str, float] = {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "patience": self.patience,
            "previous_weight": self.previous_weight,
        }

    def _step_factors(self, non_trainable: list[Any]) -> Any:
        return self._read(non_trainable, self._factors)

    # --------------------------------------------------------------- the epoch end
    @property
    def stopped(self) -> dict[str, bool]:
        """Whether each modality's training has finished."""
        values = np.asarray(ops.convert_to_numpy(self._factors))
        return {name: bool(values[i] == 0) for i, name in enumerate(self.modality_names)}

    @property
    def best_epochs(self) -> dict[str, int]:
        """The (1-based) epoch of each modality's lowest smoothed validation loss."""
        values = np.asarray(ops.convert_to_numpy(self._best_epoch))
        return {name: int(values[i]) for i, name in enumerate(self.modality_names)}

    def _state(self) -> dict[str, Any]:
        def read(variable: Any) -> np.ndarray:
            return np.asarray(ops.convert_to_numpy(variable), dtype=np.float64)

        return {
            "epoch": int(read(self._epochs_seen)),
            "best": read(self._best),
            "best_epoch": read(self._best_epoch),
            "previous": read(self._previous),
            "factors": read(self._factors),
        }

    def _rolled_back_variables(self) -> tuple[list[Any], list[Any]]:
        """The model's variables and the optimizer's slots (not its step count or rate)."""
        optimizer = self.optimizer
        skip = {id(getattr(optimizer, "iterations", None))}
        skip.add(id(getattr(optimizer, "_learning_rate", None)))
        slots = [v for v in getattr(optimizer, "variables", []) if id(v) not in skip]
        return list(self.model.variables), slots

    def _keep_copy(self, index: int) -> None:
        model_vars, slots = self._rolled_back_variables()
        self._copies[index] = (
            [np.array(ops.convert_to_numpy(v)) for v in model_vars],
            [np.array(ops.convert_to_numpy(v)) for v in slots],
        )

    def _schedule_roll_back(self, index: int) -> None:
        """Queues the return to modality ``index``'s best copy for the next epoch's start."""
        name = self.modality_names[index]
        copy = self._copies.get(index)
        if copy is None or len(copy[1]) != len(self._rolled_back_variables()[1]):
            warnings.warn(
                f"MSES stopped modality {name!r} but holds no copy of its best epoch (the "
                "trainer was reloaded since): the current weights are kept.",
                stacklevel=2,
            )
            return
        self._pending.append(index)

    @property
    def pending_rollbacks(self) -> list[str]:
        """Modalities stopped at the last epoch end whose roll-back the next epoch applies."""
        return [self.modality_names[i] for i in self._pending]

    def begin_epoch(self) -> None:
        """Applies the roll-backs queued at the last epoch end (in modality order)."""
        model_vars, slots = self._rolled_back_variables()
        for index in self._pending:
            weights, slot_values = self._copies[index]
            for variable, value in zip(model_vars, weights, strict=True):
                variable.assign(value)
            for variable, value in zip(slots, slot_values, strict=True):
                variable.assign(value)
        self._pending = []

    def end_of_epoch(self, validation_data: Any, batch_size: int | None = None) -> None:
        """The official epoch-end rule from the unimodal losses on ``validation_data``."""
        from keras_msam.evaluation import modality_cross_entropies

        vx, vy = self._validation_arrays(validation_data, batch_size)
        from_logits = self.resolved_from_logits is not False
        loss = modality_cross_entropies(self, vx, vy, from_logits, batch_size=batch_size or 256)
        losses = np.array([loss[name] for name in self.modality_names])
        state, improved, stopped = update_stopping(
            self._state(), losses, self.patience, self.previous_weight
        )
        for index in np.flatnonzero(improved):
            self._keep_copy(int(index))
        for index in np.flatnonzero(stopped):  # in modality order, as the official code
            self._schedule_roll_back(int(index))
        self._epochs_seen.assign(float(state["epoch"]))
        self._best.assign(state["best"].astype("float32"))
        self._best_epoch.assign(state["best_epoch"].astype("float32"))
        self._previous.assign(state["previous"].astype("float32"))
        self._factors.assign(state["factors"].astype("float32"))
        self.last_smoothed_losses = dict(zip(self.modality_names, map(float, state["smoothed"])))
        if not np.any(state["factors"]):
            self.stop_training = True
