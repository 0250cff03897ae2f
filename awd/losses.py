"""AWD loss terms, each a separate function so every term can be logged on its own.

The default normalisation ("reference") reproduces the AWD reference implementation exactly,
so its (lambda, gamma) grids carry over:

* reconstruction: sum over all elements of (x_rec - x)^2, divided by the batch size B;
* the five wavelet-validity terms on the low-pass filter h (high-pass g by the QMF rule), each
  one half of a squared residual, weight 1;
* sparsity (lambda) and interpretation (gamma): sum of |.| over all coefficients (attributions),
  divided by (number of coefficient tensors) * B.

"Number of coefficient tensors" is the length of the pywt-ordered coefficient list: J+1 in 1D
(``[cA_J, cD_J, ..., cD_1]``) and also J+1 in 2D, where each level's ``(cH, cV, cD)`` triple
counts as ONE tensor — the reference stacks the three orientations of a level in one tensor.

The "mean" normalisation is scale-free instead: mean squared error per element, and mean |.|
per coefficient (all coefficient elements of the batch).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from awd import kernels
from awd.transform import iter_coeffs, qmf

NORMALIZATIONS = ("reference", "mean")
#: Whether the squared error and the L1 sums run as single fused passes on CPU
#: (:class:`awd.kernels.SquaredDistance`, :class:`awd.kernels.AbsSum`: float64 sums, no temporaries)
#: instead of torch's element-wise ops; the same gradients to float rounding (the L1's: the same bits).
FUSED = True

#: Names of the five filter (wavelet-validity) terms, in the reference's order.
FILTER_TERMS = ("lowpass_sum", "highpass_sum", "unit_norm", "cmf", "orthogonality")
#: Every term of the AWD objective, in logging order.
TERMS = ("reconstruction", *FILTER_TERMS, "sparsity", "interpretation")


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _flat_filter(h: torch.Tensor) -> torch.Tensor:
    if h.dim() != 1:
        h = h.reshape(-1)
    return h


def lowpass_sum_loss(h: torch.Tensor) -> torch.Tensor:
    """1/2 (sum_n h[n] - sqrt 2)^2: the low-pass filter passes constants with gain sqrt 2."""
    h = _flat_filter(h)
    return 0.5 * (h.sum() - math.sqrt(2.0)) ** 2


def highpass_sum_loss(h: torch.Tensor) -> torch.Tensor:
    """1/2 (sum_n g[n])^2 with g = qmf(h): the high-pass filter removes constants (G(0) = 0)."""
    return 0.5 * qmf(_flat_filter(h)).sum() ** 2


def unit_norm_loss(h: torch.Tensor) -> torch.Tensor:
    """1/2 (sum_n h[n]^2 - 1)^2."""
    h = _flat_filter(h)
    return 0.5 * ((h * h).sum() - 1.0) ** 2


def cmf_loss(h: torch.Tensor) -> torch.Tensor:
    """Conjugate-mirror condition on the L-point DFT H of h (no zero padding):
    1/2 sum_{k<L/2} (|H_k|^2 + |H_{k+L/2}|^2 - 2)^2.

    Uses the squared modulus |H_k|^2 = Re^2 + Im^2 (the PyPI awave 0.1 fallback computed a
    length-1 FFT instead and gave 8.21 at exact db5).
    """
    h = _flat_filter(h)
    n = h.numel()
    if n % 2:
        raise ValueError(f"the CMF condition needs an even filter length, got {n}")
    power = torch.fft.fft(h).abs() ** 2
    half = n // 2
    return 0.5 * ((power[:half] + power[half:] - 2.0) ** 2).sum()


def orthogonality_loss(h: torch.Tensor) -> torch.Tensor:
    """Double-shift orthogonality: 1/2 sum_m (sum_n h[n] h[n+2m] - delta_m)^2 over all integer m.

    The autocorrelation is symmetric, so each lag 2m > 0 is counted twice (m and -m).
    """
    h = _flat_filter(h)
    n = h.numel()
    loss = 0.5 * ((h * h).sum() - 1.0) ** 2
    for lag in range(2, n, 2):
        loss = loss + (h[:-lag] * h[lag:]).sum() ** 2
    return loss


def filter_losses(h: torch.Tensor) -> dict[str, torch.Tensor]:
    """The five wavelet-validity terms of ``h`` (names in :data:`FILTER_TERMS`)."""
    return {
        "lowpass_sum": lowpass_sum_loss(h),
        "highpass_sum": highpass_sum_loss(h),
        "unit_norm": unit_norm_loss(h),
        "cmf": cmf_loss(h),
        "orthogonality": orthogonality_loss(h),
    }


def reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor,
                        normalization: str = "reference") -> torch.Tensor:
    """Squared reconstruction error: sum / B ("reference") or mean per element ("mean")."""
    _check_normalization(normalization)
    if x.shape != x_rec.shape:
        raise ValueError(f"reconstruction has shape {tuple(x_rec.shape)}, input {tuple(x.shape)}")
    if FUSED and kernels.fusable(x_rec, x):
        total = kernels.SquaredDistance.apply(x_rec, x)
    else:
        total = F.mse_loss(x_rec, x, reduction="sum")
    return total / (x.numel() if normalization == "mean" else x.shape[0])


def coefficient_l1(coeffs: Sequence, normalization: str = "reference") -> torch.Tensor:
    """L1 norm of a pywt-ordered coefficient structure (wavelet coefficients or attributions).

    "reference": sum |c| / (len(coeffs) * B), where len(coeffs) = J+1 in 1D and 2D (one tensor
    per level, a 2D level's (cH, cV, cD) triple counting as one). "mean": mean |c| over every
    coefficient element of the batch.
    """
    _check_normalization(normalization)
    tensors = list(iter_coeffs(coeffs))
    if FUSED and kernels.fusable(*tensors):
        total = kernels.AbsSum.apply(*tensors)
    else:
        total = sum(t.abs().sum() for t in tensors)
    if normalization == "mean":
        return total / sum(t.numel() for t in tensors)
    return total / (len(coeffs) * tensors[0].shape[0])


def total_loss(terms: dict[str, torch.Tensor | float], lam: float, gamma: float,
               filter_weight: float = 1.0) -> torch.Tensor:
    """The AWD objective: reconstruction + filter_weight * (five validity terms)
    + lam * sparsity + gamma * interpretation. Missing sparsity/interpretation count as 0."""
    loss = terms["reconstruction"] + filter_weight * sum(terms[k] for k in FILTER_TERMS)
    if lam and "sparsity" in terms:
        loss = loss + lam * terms["sparsity"]
    if gamma and "interpretation" in terms:
        loss = loss + gamma * terms["interpretation"]
    return loss


def as_floats(terms: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Detach a dict of scalar terms into plain floats (for logging and JSON)."""
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
