"""What the TensorFlow and PyTorch steps share: they read the variables' current values as the
step's state and write the changed non-trainable values back after it (JAX threads arrays)."""

from __future__ import annotations

from typing import Any


def current_state(trainer: Any) -> tuple[list[Any], list[Any]]:
    """The trainable and non-trainable values the step starts from (the variables themselves)."""
    trainable = [v.value for v in trainer.trainable_variables]
    non_trainable = [v.value for v in trainer.non_trainable_variables]
    return trainable, non_trainable


def write_back(trainer: Any, before: list[Any], after: list[Any]) -> None:
    """Assigns every non-trainable value the step changed (BatchNorm statistics, counters...)."""
    for variable, old, new in zip(trainer.non_trainable_variables, before, after):
        if new is not old:
            variable.assign(new)
