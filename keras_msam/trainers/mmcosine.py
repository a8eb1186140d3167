"""MMCosine: modality-wise cosine similarity classifier (Xu et al., ICASSP 2023).

Following the official code (``GeWu-Lab/MMCosine_ICASSP23@214797c``, ``main_CD.py``
``train_epoch``, the ``args.mmcosine`` branch), with φ_m modality m's features and W_m its
block (width_m × C) of a linear late-fusion head:

    o = s · Σ_m  normalize(φ_m) · normalize_columns(W_m)          (s = 10, ``scaling``)
    L = CE(o, y)

normalize(v) = v / max(‖v‖₂, 1e-12) (``F.normalize``), per example for φ_m and per class column
for W_m: each modality's logit for class c is s times the cosine of its features and its class
weight vector, so no modality can dominate the fused logits through the norm of its features or
weights. The head's bias is not used.

Choices and differences:

* Inference (``predict``, ``evaluate``, the unimodal accuracies) uses the same cosine logits,
  as the paper and BalanceBenchmark (``balancemm/trainer/MMCosine_trainer.py``) do. The
  official validation computes its multimodal accuracy from the model's plain head output
  (``softmax(out)``), which training never optimised directly; not followed.
* The supplementary NCE term (official ``--lam``, default 0) is not implemented.
* Any number of modalities; needs linear late fusion (zoo ``concat`` or ``sum``), whose
  per-modality blocks are read off ``unimodal_logits``. The step is the plain (Joint) step of
  these logits.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_msam.modalities import validate_inputs
from keras_msam.trainers import _checks
from keras_msam.trainers import _unimodal_heads as heads
from keras_msam.trainers.joint import Joint

_NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps


def _normalize(value: Any, axis: int) -> Any:
    norm = ops.sqrt(ops.sum(value * value, axis=axis, keepdims=True))
    return value / ops.maximum(norm, _NORM_EPS)


def cosine_logits(features: dict[str, Any], blocks: dict[str, Any], scaling: float) -> Any:
    """s · Σ_m normalize(φ_m) · normalize_columns(W_m), (B, C) float32."""
    total = None
    for name, block in blocks.items():
        feature = _normalize(ops.cast(features[name], "float32"), axis=-1)
        term = ops.matmul(feature, _normalize(ops.cast(block, "float32"), axis=0))
        total = term if total is None else total + term
    return scaling * total


@keras.saving.register_keras_serializable(package="keras_msam")
class MMCosine(Joint):
    """Joint training of a linear late-fusion model through modality-wise cosine logits.

    Args:
        model: A zoo model with linear late fusion (``concat`` or ``sum``), two or more
            modalities.
        scaling: s > 0, the logits' scale (official 10).
        **kwargs: See `MultimodalTrainer` (Shapley logging options, ``nonfinite``, ``name``).

    The trainer's own ``predict``/``evaluate`` (and saved `.keras` file) use the cosine
    logits; the wrapped model's plain output is not what was trained.
    """

    requires_multiple_modalities = True

    def __init__(self, model: keras.Model, scaling: float = 10.0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.scaling = _checks.positive(scaling, "MMCosine scaling", allow_zero=False)
        if not getattr(model, "supports_unimodal_logits", False):
            raise ValueError(
                f"MMCosine needs linear late fusion (a zoo model with 'concat' or 'sum' fusion) "
                f"to normalise each modality's block of the decision layer; model "
                f"{model.name!r} has none."
            )
        self._widths = heads.feature_widths(self, model)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scaling": self.scaling}

    def head_blocks(self) -> dict[str, Any]:
        """W_m (width_m, C) of the head, read off its linear unimodal split."""
        blocks = {}
        for name in self.modality_names:
            width = self._widths[name]
            features = {
                other: ops.eye(width) if other == name else ops.zeros((width, self._widths[other]))
                for other in self.modality_names
            }
            blocks[name] = self.model.unimodal_logits(features)[name]
        return blocks

    def call(self, inputs: Any, training: bool = False) -> Any:
        """The cosine logits o (B, C)."""
        validate_inputs(inputs, self.structure)
        features = self.model.encode(inputs, training=training)
        return cosine_logits(features, self.head_blocks(), self.scaling)
