"""Frequency Ratio Metric (FRM) of MWAM (Lu et al., ICLR 2026, arXiv 2602.22644, Eqs. 3–4).

The input of a modality is cut into non-overlapping p×p blocks (p = 8); each block (and
channel) gets an orthonormal 2-D DCT-II. Its top-left q×q corner (q = 2) is the low-frequency
part, its bottom-right q×q corner, flipped on both axes, the high-frequency part, so that
low(a, b) pairs with high(q−1−a, q−1−b):

    FRM(x) = Σ | I_low(a, b) / (I_high(q−1−a, q−1−b) + σ) |            σ = 1e-6

summed over blocks, channels and the batch (``reduction="sum"``, the paper and its code) or
averaged (``reduction="mean"``, our default in `MWAM`: modalities with different sizes are then
comparable, the extension the research notes recommend). Spatial sizes that are not multiples
of p are cropped to one.

Layouts (channels last): (B, H, W, C) images as in the paper; extensions for other modalities:
(B, H, W) single-channel maps (spectrograms), (B, T, H, W, C) video (frames join the batch), and
(B, D) vectors or (B, T) sequences, which get the 1-D block DCT (low = first q coefficients of a
block, high = last q, flipped).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

REDUCTIONS = ("sum", "mean")


def dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix C (size × size): coefficients = C @ signal."""
    n = np.arange(size)
    matrix = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))
    matrix *= np.sqrt(2.0 / size)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


def _check(block_size: int, keep: int, reduction: str) -> None:
    if int(block_size) < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size!r}.")
    if not 1 <= int(keep) <= int(block_size) // 2:
        raise ValueError(
            f"keep (q) must lie in [1, block_size // 2] = [1, {int(block_size) // 2}] so that "
            f"the low and high corners do not overlap, got {keep!r}."
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; use one of {REDUCTIONS}.")


def frequency_ratio(
    x: Any,
    block_size: int = 8,
    keep: int = 2,
    sigma: float = 1e-6,
    reduction: str = "sum",
) -> Any:
    """The FRM of a batch of one modality's inputs, as a float32 scalar tensor.

    Args:
        x: Inputs of one modality: (B, H, W, C), (B, H, W), (B, T, H, W, C), (B, D) or (B, T).
        block_size: DCT block size p.
        keep: Size q of the low/high corners.
        sigma: σ added to the high-frequency coefficients.
        reduction: ``"sum"`` (paper) or ``"mean"`` over batch, blocks, channels and pairs.

    Returns:
        A scalar tensor (``float(...)`` gives a Python number).

    Raises:
        ValueError: For an unsupported rank or a size smaller than ``block_size``.
    """
    _check(block_size, keep, reduction)
    p, q = int(block_size), int(keep)
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    rank = len(x.shape)
    if rank == 5:
        x = ops.reshape(x, (-1,) + tuple(x.shape[2:]))
        rank = 4
    if rank == 3:
        x = ops.expand_dims(x, -1)
        rank = 4
    basis = ops.convert_to_tensor(dct_matrix(p))
    if rank == 4:
        height, width = int(x.shape[1]), int(x.shape[2])
        if height < p or width < p:
            raise ValueError(
                f"Inputs of shape {tuple(x.shape)} are smaller than the {p}×{p} DCT block."
            )
        rows, cols, channels = height // p, width // p, int(x.shape[3])
        x = x[:, : rows * p, : cols * p, :]
        blocks = ops.reshape(x, (-1, rows, p, cols, p, channels))
        blocks = ops.transpose(blocks, (0, 1, 3, 5, 2, 4))  # (B, rows, cols, C, p, p)
        coefficients = ops.einsum("ij,...jk,lk->...il", basis, blocks, basis)
        low = coefficients[..., :q, :q]
        high = ops.flip(ops.flip(coefficients[..., p - q :, p - q :], axis=-1), axis=-2)
    elif rank == 2:
        length = int(x.shape[1])
        if length < p:
            raise ValueError(f"Inputs of shape {tuple(x.shape)} are shorter than the block {p}.")
        count = length // p
        blocks = ops.reshape(x[:, : count * p], (-1, count, p))
        coefficients = ops.einsum("ij,...j->...i", basis, blocks)
        low = coefficients[..., :q]
        high = ops.flip(coefficients[..., p - q :], axis=-1)
    else:
        raise ValueError(
            f"frequency_ratio takes (B, H, W, C), (B, H, W), (B, T, H, W, C), (B, D) or (B, T) "
            f"inputs; got shape {tuple(x.shape)}."
        )
    ratio = ops.abs(low / (high + sigma))
    return ops.sum(ratio) if reduction == "sum" else ops.mean(ratio)


def frm_weights(
    frm: Any,
    alpha: float = 1.5,
    beta: float = 1.0,
    lam: float = 6.0,
    gamma: float = 0.7,
    sigma: float = 1e-6,
) -> Any:
    """MWAM's weights K_m = α − β·sigmoid(λ(T_m − γ)), T_m = F_m / (mean_c F_c + σ) (Eqs. 5–6).

    Args:
        frm: The (smoothed) FRM of each modality, shape (M,).
        alpha, beta, lam, gamma: The paper's (α, β, λ, γ), default (1.5, 1, 6, 0.7).
        sigma: σ of the denominator.

    Returns:
        K (M,), in (α − β, α): a modality with a higher FRM gets a smaller weight.
    """
    frm = ops.cast(ops.convert_to_tensor(frm), "float32")
    relative = frm / (ops.mean(frm) + sigma)
    return alpha - beta * ops.sigmoid(lam * (relative - gamma))
