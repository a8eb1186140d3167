"""The shared trainer: a `keras.Model` wrapper whose `train_step` is written once on `keras.ops`.

Every method computes its update as a pure function of the state arrays
``(trainable, non_trainable)`` and the batch (`compute_update`), using two
primitives the backend module supplies: ``self._value_and_grad(fn)`` and ``self._no_gradient()``.
The backend module (`keras_msam.backend`) then applies the optimizer once, at the original
weights, threads BatchNorm/seed state, and updates the metrics. Forward passes go through
`stateless_call`, so the perturbed SAM pass never writes into the weights on any backend, reuses
the first pass's dropout masks (same seed state), and its BatchNorm updates are dropped.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops
from keras.src.losses.loss import unscale_loss_for_distribution

from keras_msam.absence import (
    deserialize_rules,
    serialize_rules,
)
from keras_msam.backend import BackendTrainer
from keras_msam.modalities import ModalityStructure, modality_structure, validate_inputs
from keras_msam.shapley import (
    DEFAULT_NUM_SAMPLES,
    DEFAULT_THRESHOLD,
    EMPTY_CONVENTIONS,
    VALUE_FUNCTIONS,
    coalition_plan,
    from_logits_of_loss,
)
from keras_msam.trainers import _checks
from keras_msam.trainers._checks import NONFINITE_POLICIES
from keras_msam.trainers._coalitions import (  # noqa: F401  (re-exported)
    COALITION_MEMORY_BUDGET,
    COALITION_MODES,
    CoalitionMixin,
    ShapleyResult,
)
from keras_msam.trainers._labels import LabelChecks


class StepResult(NamedTuple):
    """What a method's `compute_update` hands to the backend step.

    Attributes:
        grads: Update direction, one tensor per trainable variable (loss-scaled like the loss).
        non_trainable: New non-trainable values (from the first, clean training pass).
        y_pred: Predictions of the first pass, for the compiled metrics.
        loss: Unscaled loss ℓ(θ) of the first pass.
        shapley: `ShapleyResult` or None when Shapley logging is off.
        sharpness: ℓ(θ+ε) − ℓ(θ), or None for methods without a perturbed pass.
        extras: Optional ``{name: scalar}`` of per-step values a method logs; each name must be
            one of the method's ``_extra_trackers`` (`keras.metrics.Mean`). Trackers without a
            value this step (e.g. on validation batches) are left out of the logs.
        sharpness_weight: Weight of ``sharpness`` in its running mean (0 on steps that did not
            measure it); None means 1.
    """

    grads: list[Any]
    non_trainable: list[Any]
    y_pred: Any
    loss: Any
    shapley: ShapleyResult | None = None
    sharpness: Any = None
    extras: dict[str, Any] | None = None
    sharpness_weight: Any = None


class _StepCount(keras.metrics.Sum):
    """A `Sum` whose result is a new tensor. `Sum.result` casts its variable to its own dtype,
    which on PyTorch returns the variable's storage itself: the epoch's logs then change when
    validation resets the metric (``skipped_steps`` read 0 in History after ``fit`` with
    validation data)."""

    def result(self) -> Any:
        return ops.copy(ops.cast(self.total, self.dtype))


class NonFiniteGradientsError(FloatingPointError):
    """A training step's update direction held NaN or inf (trainers built with
    ``nonfinite="raise"``). The step's update was skipped: the weights are those before it."""


_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


def _portable_optimizers(config: Any) -> Any:
    """A copy of a serialized config with backend-specific optimizer classes (Keras's PyTorch
    ``keras.src.backend.torch.optimizers.*``) replaced by the public ``keras.optimizers`` ones."""
    if isinstance(config, (list, tuple)):
        return type(config)(_portable_optimizers(item) for item in config)
    if not isinstance(config, dict):
        return config
    config = {key: _portable_optimizers(value) for key, value in config.items()}
    module = config.get("module")
    if (
        isinstance(module, str)
        and module.startswith("keras.src.backend.")
        and ".optimizers." in module
        and "class_name" in config
    ):
        config["module"] = "keras.optimizers"
    return config


_TRAINING_DEPENDENT_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.Dropout,  # and the SpatialDropout layers
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
)


def _depends_on_training(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, _TRAINING_DEPENDENT_LAYERS):
        return True
    if not getattr(layer, "_call_has_training_arg", False):
        return False
    if type(layer).__module__.startswith("keras."):
        # Built-in layers that take `training` only for their optional dropout / augmentation.
        rates = (getattr(layer, name, 0) for name in ("dropout", "recurrent_dropout", "_dropout"))
        return type(layer).__name__.startswith("Random") or any(
            isinstance(rate, (int, float)) and rate > 0 for rate in rates
        )
    return True  # a custom layer that takes `training`: assume it uses it


def is_training_invariant(model: keras.Model) -> bool:
    """True when ``model`` gives the same outputs in training and inference mode.

    That is: no BatchNorm, no dropout or noise layer, no recurrent/attention dropout, no random
    augmentation, and no custom layer whose ``call`` accepts ``training`` (conservative).
    """
    return not any(
        _depends_on_training(layer)
        for layer in model._flatten_layers(include_self=False)
        if not isinstance(layer, keras.Model)  # containers only pass `training` on
    )


class MultimodalTrainer(BackendTrainer, CoalitionMixin, LabelChecks, keras.Model):
    """Base class of the keras-msam trainers (not used directly: see `Joint`, `SAM`, `MSAM`).

    Args:
        model: A Keras model whose inputs are a dict keyed by modality name.
        modalities: Modality names, only needed for subclassed models that do not declare them.
        log_shapley: Compute and log each modality's Shapley share every step
            (``shapley_<name>``, ``dominant``), and on validation batches.
        shapley_value: Coalition value: ``"accuracy"``, ``"neg_loss"`` or ``"true_class_prob"``.
        empty_coalition: ``"evaluate"`` (run the all-zero coalition) or ``"zero"`` (u(∅) = 0).
        shapley_threshold: Exact Shapley for M ≤ threshold, permutation sampling above.
        shapley_samples: Number of sampled permutations above the threshold.
        shapley_seed: Seed of the (fixed) sampled permutations.
        from_logits: Whether the model outputs logits; read from the compiled loss when None.
        coalitions: Where coalitions are formed. ``"inputs"``: absent modalities' inputs are
            zeroed and the whole model runs on every coalition. ``"features"``: for models with
            per-modality encoders (the zoo protocol: ``encode``/``fuse``), each encoder runs
            once on the batch and once on a single all-zero example, and only the fusion head
            runs per coalition, an absent modality's features being its encoder's output for a
            zero input. Both give the same values: an encoder that sees only its own modality
            maps a zeroed input to exactly those features. ``"auto"`` (default): ``"features"``
            when the model has ``encode``/``fuse``, else ``"inputs"``.
        coalition_chunk: With input coalitions, the most coalition copies of the batch that one
            forward stacks; None (default) picks as many as fit in 256 MiB of stacked inputs.
            Chunking changes the memory peak, not the values.
        nonfinite: What a training step does when its update direction holds NaN or inf (one
            reduction per step, inside the compiled step). ``"skip"`` (default): the update is
            not applied: weights, optimizer state (its ``iterations`` too) and the model's
            non-trainable state (BatchNorm statistics, the method's own running state) keep
            their values, the batch is left out of the loss and metric means, and the step is
            counted in the ``skipped_steps`` log (per epoch, in the progress bar and History).
            ``"raise"``: the same skip, then `NonFiniteGradientsError` (a
            `FloatingPointError`) from `fit`/`train_on_batch`, raised on the host after the
            compiled step returns (one device-to-host read of the flag per call of the train
            function). ``"ignore"``: no check (the update is applied whatever it holds). With a
            `keras.optimizers.LossScaleOptimizer` (``mixed_float16``), non-finite gradients are
            the loss scaler's routine overflow signal: the optimizer always receives them (it
            skips the step and lowers its scale), the trainer keeps the non-trainable state
            and counts the step, and ``"raise"`` acts as ``"skip"``.
        absence: What an absent modality's inputs hold in a coalition (`keras_msam.absence`):
            ``{modality: rule}`` or, for a modality of several inputs (a dict such as
            ``{"token_ids", "padding_mask"}``), ``{modality: {input: rule}}``; a rule is a fill
            number, ``"zeros"``, ``"keep_first"`` (a padding mask keeping its first position)
            or a callable. Defaults: zeros, and ``"keep_first"`` for inputs named ``*mask``.
            The evaluation helpers given this trainer use the same rules.
        **kwargs: Passed to `keras.Model` (``name``...).
    """

    #: Whether this method needs two or more modalities.
    requires_multiple_modalities = False
    #: Whether this method runs a perturbed pass and logs ``sharpness``.
    has_sharpness = False
    #: Per-step scalars a method logs (`keras.metrics.Mean`, set in its ``__init__``).
    _extra_trackers: tuple = ()

    def __init__(
        self,
        model: keras.Model,
        modalities: list[str] | None = None,
        log_shapley: bool = True,
        shapley_value: str = "accuracy",
        empty_coalition: str = "evaluate",
        shapley_threshold: int = DEFAULT_THRESHOLD,
        shapley_samples: int = DEFAULT_NUM_SAMPLES,
        shapley_seed: int = 0,
        from_logits: bool | None = None,
        coalitions: str = "auto",
        coalition_chunk: int | None = None,
        nonfinite: str = "skip",
        absence: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"{type(self).__name__} wraps a keras.Model with dict inputs; got "
                f"{type(model).__name__}."
            )
        kwargs.setdefault("dtype", model.dtype_policy)
        super().__init__(**kwargs)
        self.model = model
        self.modalities = list(modalities) if modalities is not None else None
        self.log_shapley = _checks.flag(log_shapley, "log_shapley")
        self.shapley_value = _checks.choice(shapley_value, "shapley_value", VALUE_FUNCTIONS)
        self.empty_coalition = _checks.choice(empty_coalition, "empty_coalition", EMPTY_CONVENTIONS)
        self.shapley_threshold = _checks.integer(shapley_threshold, "shapley_threshold", 1)
        self.shapley_samples = _checks.integer(shapley_samples, "shapley_samples", 1)
        self.shapley_seed = _checks.integer(shapley_seed, "shapley_seed", 0)
        self.from_logits = None if from_logits is None else _checks.flag(from_logits, "from_logits")
        self.nonfinite = _checks.choice(nonfinite, "nonfinite", NONFINITE_POLICIES)
        coalitions = _checks.choice(coalitions, "coalitions", COALITION_MODES)
        has_encoders = callable(getattr(model, "encode", None)) and callable(
            getattr(model, "fuse", None)
        )
        if coalitions == "features" and not has_encoders:
            raise ValueError(
                f"coalitions='features' needs a model with per-modality encoders "
                f"(`encode(inputs)` and `fuse(features)`, as zoo models have); model "
                f"{model.name!r} has none. Use coalitions='inputs'."
            )
        self.coalitions = coalitions
        if coalition_chunk is not None:
            try:
                coalition_chunk = _checks.integer(coalition_chunk, "coalition_chunk", 1)
            except ValueError:
                raise ValueError(
                    f"coalition_chunk must be a positive integer or None, got {coalition_chunk!r}."
                ) from None
        self.coalition_chunk = coalition_chunk
        self._feature_coalitions = coalitions == "features" or (
            coalitions == "auto" and has_encoders
        )
        if absence is not None and not isinstance(absence, dict):
            raise ValueError(
                f"absence must be a dict {{modality: rule}} or {{modality: {{input: rule}}}}, "
                f"got {type(absence).__name__}."
            )
        self.absence = deserialize_rules(absence) if absence is not None else None
        structure = modality_structure(model, modalities, self.absence)
        if self.requires_multiple_modalities and len(structure.names) < 2:
            raise ValueError(
                f"{type(self).__name__} balances modalities and needs a model with two or more; "
                f"model {model.name!r} has only {list(structure.names)}."
            )
        self._structure = structure
        self._plan = coalition_plan(
            len(structure.names),
            empty_coalition,
            self.shapley_threshold,
            self.shapley_samples,
            self.shapley_seed,
        )
        self._training_invariant = is_training_invariant(model)
        self._share_trackers = [
            keras.metrics.Mean(name=f"shapley_{name}") for name in structure.names
        ]
        if self.has_sharpness:
            self._sharpness_tracker = keras.metrics.Mean(name="sharpness")
        if self.nonfinite != "ignore":
            self._skipped_tracker = _StepCount(name="skipped_steps")
        if model.built:
            self.built = True

    # ----------------------------------------------------------------------------------------
    # Keras plumbing

    @property
    def structure(self) -> ModalityStructure:
        """Modality names, input shapes and the variable split of the wrapped model."""
        return self._structure

    @property
    def modality_names(self) -> tuple[str, ...]:
        """The wrapped model's modality names, sorted."""
        return self._structure.names

    def build(self, input_shape: Any = None) -> None:
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        validate_inputs(inputs, self._structure)
        return self.model(inputs, training=training)

    @property
    def resolved_from_logits(self) -> bool | None:
        """Whether outputs are logits: the ``from_logits`` argument, else the compiled loss's."""
        if self.from_logits is not None:
            return self.from_logits
        return from_logits_of_loss(getattr(self, "loss", None))

    def get_config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "modalities": self.modalities,
            "log_shapley": self.log_shapley,
            "shapley_value": self.shapley_value,
            "empty_coalition": self.empty_coalition,
            "shapley_threshold": self.shapley_threshold,
            "shapley_samples": self.shapley_samples,
            "shapley_seed": self.shapley_seed,
            "from_logits": self.from_logits,
            "coalitions": self.coalitions,
            "coalition_chunk": self.coalition_chunk,
            "nonfinite": self.nonfinite,
        }
        if self.absence is not None:
            config["absence"] = serialize_rules(self.absence)
        return config

    def get_compile_config(self) -> dict[str, Any]:
        return _portable_optimizers(super().get_compile_config())

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Keras's `compile_from_config`, with optimizers made backend-neutral first.

        On PyTorch, Keras serializes an optimizer as its PyTorch implementation (module
        ``keras.src.backend.torch.optimizers.torch_sgd``), which another backend would load as
        is and then fail on its first step; the public class (``keras.optimizers.SGD``) is the
        one to rebuild, on whatever backend loads the file (files written before this fix too).
        """
        return super().compile_from_config(_portable_optimizers(config))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultimodalTrainer:
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)

    # ----------------------------------------------------------------------------------------
    # The step, written once

    def _state_mapping(
        self, trainable: list[Any], non_trainable: list[Any]
    ) -> list[tuple[Any, Any]]:
        """``(variable, value)`` pairs of the step's state arrays, for `keras.StatelessScope`."""
        return list(zip(self.trainable_variables, trainable)) + list(
            zip(self.non_trainable_variables, non_trainable)
        )

    # ----------------------------------------------------------------------------------------
    # Non-finite updates (``nonfinite=``): checked once here for every method and backend

    def _update_is_finite(self, grads: list[Any]) -> Any:
        """Scalar bool tensor: every value of the update direction is finite.

        None with ``nonfinite="ignore"``. One pass over the gradients (``all(isfinite)`` per
        tensor, like `keras.optimizers.LossScaleOptimizer`), inside the compiled step.
        """
        if self.nonfinite == "ignore":
            return None
        flags = [ops.all(ops.isfinite(g)) for g in grads if g is not None]
        if not flags:
            return ops.convert_to_tensor(True)
        return ops.all(ops.stack(flags))

    @property
    def _optimizer_skips_nonfinite(self) -> bool:
        """Whether the optimizer skips non-finite steps itself (loss scaling): it must see them."""
        return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    def _state_advancing_on_skip(self) -> set[int]:
        """Positions in ``non_trainable_variables`` that advance even on a skipped step.

        A method's step counter that schedules its work (M-SAM's ``amortised_step``) counts
        batches, so that the schedule does not depend on which steps were skipped (and the
        JAX host schedule stays in step with the state). Everything else is kept.
        """
        return set()

    def _kept_if_skipped(self, finite: Any, before: list[Any], after: list[Any]) -> list[Any]:
        """``after`` where the step's update is finite, else ``before``, entry by entry.

        ``finite`` is a scalar bool tensor (an `ops.where` on the state, no Python branch, so it
        works inside jitted and graph steps), a Python bool decided on the host, or None (no
        check). Entries the step did not change pass through untouched.
        """
        if finite is None or finite is True:
            return list(after)
        if finite is False:  # decided on the host (eager PyTorch steps)
            return list(before)
        kept = []
        for old, new in zip(before, after):
            if new is old:
                kept.append(new)
            else:
                dtype = keras.backend.standardize_dtype(old.dtype)
                kept.append(ops.cast(ops.where(finite, new, old), dtype))
        return kept

    def _guard_non_trainable(self, finite: Any, before: list[Any], after: list[Any]) -> list[Any]:
        """The step's new non-trainable values, or the old ones if the update is skipped."""
        kept = self._kept_if_skipped(finite, before, after)
        for index in self._state_advancing_on_skip():
            kept[index] = after[index]
        return kept

    def make_train_function(self, force: bool = False) -> Any:
        """Keras's train function; with ``nonfinite="raise"``, checked on the host after each call.

        The compiled step skips a non-finite update and counts it in ``skipped_steps``; this
        wrapper reads that count after each call of the train function (one device-to-host
        read) and raises `NonFiniteGradientsError`. With ``steps_per_execution=k`` it is read
        once per k steps.
        """
        super().make_train_function(force)
        function = self.train_function
        if self.nonfinite != "raise" or getattr(function, "_keras_msam_raises", False):
            return function

        jax = keras.backend.backend() == "jax"

        def train_function(*args: Any, **kwargs: Any) -> Any:
            outputs = function(*args, **kwargs)
            try:
                self._raise_if_skipped(outputs[0] if jax else outputs)
            except NonFiniteGradientsError:
                if jax:  # the step's input buffers were donated: keep the state it returned
                    self._adopt_step_state(outputs[1])
                raise
            return outputs

        train_function._keras_msam_raises = True
        self.train_function = train_function
        return train_function

    def _raise_if_skipped(self, logs: Any) -> None:
        if self._optimizer_skips_nonfinite or not isinstance(logs, dict):
            return
        count = logs.get("skipped_steps")
        if count is None or float(np.asarray(keras.ops.convert_to_numpy(count))) <= 0:
            return
        raise NonFiniteGradientsError(
            f"{type(self).__name__}: non-finite gradients (NaN or inf) in a training step; "
            f"the update was skipped, so the weights are still finite. The batch (inputs or "
            f"labels) or the loss holds NaN/inf values: check the data (e.g. "
            f"np.isfinite(x[modality]).all(), zoo.datasets.check) or lower the learning rate. "
            f"Build the trainer with nonfinite='skip' to skip such steps and count them in the "
            f"'skipped_steps' log instead."
        )

    # ----------------------------------------------------------------------------------------
    # Labels, checked on the host once per `fit` (cheap: the label array, never the inputs)

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.fit`, after checking the class labels of in-memory data.

        Labels given as arrays (``y``, ``validation_data``) or held by a `keras.utils.PyDataset`
        as a ``labels`` array (the zoo loaders) must be class indices in ``[0, num_classes)``
        when the compiled loss is a sparse categorical one or the labels are integers; a
        `ValueError` names the bad labels and their indices before any step runs. Labels that
        only exist batch by batch (``tf.data``, generators, other PyDatasets) are not checked
        here; non-finite values in them are caught by the step's ``nonfinite`` check.
        """
        bound = _FIT_SIGNATURE.bind_partial(None, *args, **kwargs).arguments
        self._check_labels(bound.get("y"), "y")
        x = bound.get("x")
        if bound.get("y") is None:
            self._check_labels(getattr(x, "labels", None), "x.labels")
        validation = bound.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            self._check_labels(validation[1], "validation_data[1]")
        elif validation is not None:
            self._check_labels(getattr(validation, "labels", None), "validation_data.labels")
        return super().fit(*args, **kwargs)

    def train_on_batch(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`keras.Model.train_on_batch`, after the label check of `fit`."""
        self._check_labels(y, "y")
        return super().train_on_batch(x, y, *args, **kwargs)

    def _check_batch(self, x: Any, y: Any) -> None:
        validate_inputs(x, self._structure, where="x")
        if y is None:
            raise ValueError(
                f"{type(self).__name__} needs labels: batches must be `({{modality: array}}, y)`."
            )

    def _loss_fn(
        self,
        trainable: list[Any],
        non_trainable: list[Any],
        x: Any,
        y: Any,
        sample_weight: Any,
        training: bool = True,
    ) -> tuple[Any, tuple[Any, Any, list[Any]]]:
        """Scaled loss at ``trainable`` and ``(unscaled loss, y_pred, new non-trainables)``.

        Regularisation and ``add_loss`` terms are those of this very forward pass (so the
        perturbed pass regularises the perturbed weights); the loss is scaled by the optimizer
        (loss scaling under ``mixed_float16``) like Keras's own step.
        """
        y_pred, new_non_trainable, losses = self.stateless_call(
            trainable, non_trainable, x, return_losses=True, training=training
        )
        loss, unscaled = self._loss_of_forward(x, y, y_pred, sample_weight, losses, training)
        return loss, (unscaled, y_pred, new_non_trainable)

    def _loss_of_forward(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any, losses: list[Any], training: bool
    ) -> tuple[Any, Any]:
        """(scaled, unscaled) loss of a forward's predictions and its own ``add_loss`` terms."""
        if losses:
            self._losses_override.clear()
            self._losses_override = losses
        loss = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if losses:
            self._losses_override.clear()
        unscaled = loss
        if training and self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        return loss, unscaled

    def compute_update(
        self,
        trainable: list[Any],
        non_trainable: list[Any],
        x: Any,
        y: Any,
        sample_weight: Any,
    ) -> StepResult:
        """The method's update direction at the state arrays (each method overrides this)."""
        raise TypeError(f"{type(self).__name__} does not define compute_update().")

    def evaluate_batch(
        self, trainable: list[Any], non_trainable: list[Any], x: Any, y: Any, sample_weight: Any
    ) -> StepResult:
        """Inference-mode predictions, loss and (when logged) Shapley values of a batch.

        With Shapley logging on, the full coalition of the stacked forward *is* the inference
        forward, so evaluation costs no extra pass for predictions.
        """
        if self.log_shapley and bool(self._plan.masks[-1].all()):
            outputs = self._coalition_outputs(trainable, non_trainable, x)
            y_pred = outputs[-1]
            shapley = self._shapley_from_outputs(outputs, y)
        else:
            with self._no_gradient():
                y_pred, _ = self.stateless_call(trainable, non_trainable, x, training=False)
            shapley = None
        loss = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
        )
        return StepResult([], non_trainable, y_pred, loss, shapley, None)

    def _record(
        self, x: Any, y: Any, sample_weight: Any, result: StepResult, finite: Any = None
    ) -> dict[str, Any]:
        """Updates the loss, compiled and keras-msam metrics; returns the step's logs.

        ``finite`` (training steps, unless ``nonfinite="ignore"``): a skipped step leaves every
        metric as it was (the batch does not enter the epoch's means) and adds 1 to
        ``skipped_steps``.
        """
        if finite is not None:
            counter = {id(v) for v in self._skipped_tracker.variables}
            watched = [v for v in self.metrics_variables if id(v) not in counter]
            before = [ops.copy(v.value) for v in watched]
        batch_size = next(t for t in keras.tree.flatten(x) if t is not None).shape[0]
        self._loss_tracker.update_state(
            unscale_loss_for_distribution(result.loss), sample_weight=batch_size
        )
        if result.shapley is not None:
            for index, tracker in enumerate(self._share_trackers):
                tracker.update_state(result.shapley.shares[index])
        if result.sharpness is not None:
            self._sharpness_tracker.update_state(
                unscale_loss_for_distribution(result.sharpness),
                sample_weight=result.sharpness_weight,
            )
        extras = result.extras or {}
        for tracker in self._extra_trackers:
            if tracker.name in extras:
                tracker.update_state(extras[tracker.name])
        logs = self.compute_metrics(x, y, result.y_pred, sample_weight)
        if finite is not None:
            for variable, old in zip(watched, before):
                variable.assign(ops.where(finite, variable.value, old))
            self._skipped_tracker.update_state(ops.cast(ops.logical_not(finite), "float32"))
            logs = self.get_metrics_result()
        else:
            logs.pop("skipped_steps", None)
        for tracker in self._extra_trackers:
            if tracker.name not in extras:
                logs.pop(tracker.name, None)
        if result.shapley is None:
            for tracker in self._share_trackers:
                logs.pop(tracker.name, None)
        else:
            logs["dominant"] = result.shapley.dominant
        if self.has_sharpness and result.sharpness is None:
            logs.pop("sharpness", None)
        return logs
