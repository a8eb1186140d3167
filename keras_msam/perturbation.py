"""The SAM ascent step ε, written once on `keras.ops`.

ε = ρ · g / ‖g‖₂ (``norm="l2"``, Foret et al.) or ε = ρ · sign(g) (``norm="linf"``), where ``g`` is
the gradient restricted to the perturbed variables. The norm is taken in float32 (fp16 gradients
overflow a sum of squares), and a non-finite gradient gives ε = 0 for the whole step, so a NaN or
Inf never reaches the weights through the perturbation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

NORMS = ("l2", "linf")
_EPSILON = 1e-12


def all_finite(tensors: Sequence[Any]) -> Any:
    """A boolean scalar: every element of every tensor is finite."""
    flags = [ops.all(ops.isfinite(t)) for t in tensors]
    result = flags[0]
    for flag in flags[1:]:
        result = ops.logical_and(result, flag)
    return result


def global_norm(tensors: Sequence[Any]) -> Any:
    """‖(t_1, …, t_n)‖₂ over all tensors, computed in float32."""
    return ops.sqrt(sum(ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors))


def sam_perturbation(
    grads: Sequence[Any],
    rho: float,
    norm: str = "l2",
    include: Sequence[Any] | None = None,
) -> list[Any]:
    """The ascent step ε for each variable.

    Args:
        grads: Gradients, one per trainable variable (possibly loss-scaled: ε does not depend
            on a positive scale factor of the gradient).
        rho: Neighbourhood radius ρ ≥ 0.
        norm: ``"l2"`` or ``"linf"``.
        include: Optional per-variable 0/1 factors (Python numbers or scalar tensors); variables
            with factor 0 are not perturbed and do not enter the norm.

    Returns:
        One tensor per variable, with the variable's gradient dtype; all zeros if any gradient
        of the perturbed set is non-finite.
    """
    if include is not None:
        grads = [_masked(g, factor) for g, factor in zip(grads, include)]
    finite = all_finite(grads)
    if norm == "l2":
        scale = rho / (global_norm(grads) + _EPSILON)
        steps = [ops.cast(g, "float32") * scale for g in grads]
    elif norm == "linf":
        steps = [rho * ops.sign(ops.cast(g, "float32")) for g in grads]
    else:
        raise ValueError(f"Unknown perturbation norm {norm!r}; use one of {NORMS}.")
    return [ops.cast(ops.where(finite, s, 0.0), g.dtype) for s, g in zip(steps, grads)]


def _masked(grad: Any, factor: Any) -> Any:
    if isinstance(factor, (int, float)):
        return grad if factor else ops.zeros_like(grad)
    return grad * ops.cast(factor, grad.dtype)


def orthogonal_component(sam_grads: Sequence[Any], grads: Sequence[Any]) -> list[Any]:
    """g_v = g_s − (⟨g_s, g⟩/‖g‖²)·g: the part of the SAM gradient orthogonal to the plain one.

    LookSAM (Liu et al., CVPR 2022) keeps this direction from a full SAM step and reuses it on the
    cheap steps in between. Computed in float32 over all variables at once.
    """
    dot = sum(
        ops.sum(ops.cast(a, "float32") * ops.cast(b, "float32")) for a, b in zip(sam_grads, grads)
    )
    squared = sum(ops.sum(ops.square(ops.cast(b, "float32"))) for b in grads)
    coefficient = dot / (squared + _EPSILON)
    return [
        ops.cast(a, "float32") - coefficient * ops.cast(b, "float32")
        for a, b in zip(sam_grads, grads)
    ]


def looksam_gradient(
    grads: Sequence[Any], direction: Sequence[Any], alpha: float, reference_norm: Any = None
) -> list[Any]:
    """The stand-in for the SAM gradient on a cheap step.

    ``reference_norm=None``: LookSAM's g + α·(‖g‖/‖g_v‖)·g_v (the reused direction always
    has norm α‖g‖). Otherwise g + α·(‖g‖/reference_norm)·g_v, reference_norm = ‖g0‖ of the
    full step that measured g_v: g_v keeps its measured size relative to the gradient.
    """
    denominator = global_norm(direction) if reference_norm is None else reference_norm
    scale = alpha * global_norm(grads) / (ops.cast(denominator, "float32") + _EPSILON)
    return [g + ops.cast(scale * ops.cast(v, "float32"), g.dtype) for g, v in zip(grads, direction)]
