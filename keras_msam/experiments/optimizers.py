"""The optimizers of the experiment runner: SGD with momentum, Adam or AdamW, with the learning
rate schedules and the (coupled) weight decay of the field's reference protocols."""

from __future__ import annotations

from typing import Any

import keras

from keras_msam.experiments.config import ConfigError, ExperimentConfig


def make_optimizer(
    config: ExperimentConfig, steps_per_epoch: int | None = None
) -> keras.optimizers.Optimizer:
    """SGD with ``momentum``, Adam or AdamW, at learning rate ``lr`` with ``lr_schedule`` and
    ``weight_decay``.

    The schedule is a `keras.optimizers.schedules.LearningRateSchedule` of the optimizer's
    iteration count, so a run resumed from its backup (which restores ``iterations``) continues
    on it. ``steps_per_epoch`` is the length of the training loader (needed unless the schedule
    is ``"constant"``):

    - ``"constant"``: ``lr`` throughout;
    - ``"step"``: ``lr * lr_gamma ** (epoch // lr_step_size)``, PyTorch's
      ``StepLR(step_size=lr_step_size, gamma=lr_gamma)`` stepped once per epoch, as in the
      OGM-GE / AGM reference code (epochs counted from 0; constant within an epoch);
    - ``"cosine"``: per step from ``lr`` down to 0 at the run's last step
      (``epochs * steps_per_epoch``), `keras.optimizers.schedules.CosineDecay`.

    ``weight_decay`` for ``sgd`` and ``adam`` is *coupled* L2, PyTorch's ``SGD``/``Adam``
    ``weight_decay``: ``weight_decay * w`` is added to each gradient right before the
    optimizer's update (after a method's own gradient changes, such as SAM's perturbed gradient
    or OGM-GE's modulation), so with momentum it goes through the momentum buffer. That is what
    the OGM-GE, AGM and PMR reference code run (torch SGD, weight decay 1e-4) and what M-SAM's
    update writes (θ ← θ − η (∇L_d(θ + ε) + ∇L_s(θ) + λ θ)), so a protocol's 1e-4 means the same
    here. Keras's own ``weight_decay=`` argument is decoupled (``w ← w − lr·wd·w`` beside the
    update), which differs from L2 as soon as momentum or Adam's scaling is used. For ``adamw``
    it is AdamW's decoupled decay, as its name says; None leaves Keras's default (0.004).
    The same on every backend.
    """
    lr = _learning_rate(config, steps_per_epoch)
    decay = config.weight_decay
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, **({} if decay is None else {"weight_decay": decay}))
    if decay:
        if config.optimizer == "adam":
            return CoupledL2Adam(lr, l2=decay)
        return CoupledL2SGD(lr, momentum=config.momentum, l2=decay)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.SGD(lr, momentum=config.momentum)


def _learning_rate(
    config: ExperimentConfig, steps_per_epoch: int | None
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``config.lr``, or the `LearningRateSchedule` of ``config.lr_schedule``."""
    if config.lr_schedule == "constant":
        return config.lr
    if steps_per_epoch is None or steps_per_epoch < 1:
        raise ConfigError(
            f"lr_schedule={config.lr_schedule!r} needs the number of training steps per epoch "
            f"(make_optimizer(config, steps_per_epoch=len(train))), got {steps_per_epoch!r}."
        )
    if config.lr_schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            config.lr,
            decay_steps=config.lr_step_size * steps_per_epoch,
            decay_rate=config.lr_gamma,
            staircase=True,
        )
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.lr, decay_steps=config.epochs * steps_per_epoch, alpha=0.0
        )
    raise ConfigError(f"Unknown lr_schedule {config.lr_schedule!r}.")


class _CoupledL2:
    """Adds ``l2 * w`` to each gradient right before the optimizer's update step: PyTorch's
    coupled ``weight_decay`` (an L2 term in the gradient), on every backend."""

    def __init__(self, *args: Any, l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.l2 = float(l2)

    def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> Any:
        # The common hook of every backend's apply, after empty gradients are dropped, loss
        # scaling undone and clipping applied, as torch's optimizer.step() adds it.
        grads = [
            keras.ops.add(g, keras.ops.multiply(keras.ops.cast(self.l2, g.dtype), v.value))
            for g, v in zip(grads, trainable_variables)
        ]
        return super()._backend_update_step(grads, trainable_variables, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="keras_msam")
class CoupledL2SGD(_CoupledL2, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with coupled L2 weight decay ``l2`` (torch ``SGD``'s)."""


@keras.saving.register_keras_serializable(package="keras_msam")
class CoupledL2Adam(_CoupledL2, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with coupled L2 weight decay ``l2`` (torch ``Adam``'s)."""
