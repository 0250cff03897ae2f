"""TRIM attributions in the wavelet domain, exact and via precomputed input gradients.

Exact path (:func:`trim_attributions`): the teacher is evaluated on
``x_rec + (x - x_rec).detach()`` with ``x_rec`` the inverse transform of the coefficients
(the "residual trick"): the teacher sees exactly ``x`` in value while gradients flow into the
coefficients through the inverse transform. With ``create_graph=True`` the attributions are
differentiable w.r.t. the filter ``h`` (double back-propagation through the teacher).

Fast path (:func:`attributions_from_gradients`): since the teacher sees exactly ``x``, the
saliency equals ``S_h^T grad_x f(x)``, the vector-Jacobian product of the synthesis operator
with the input gradient. The input gradient does not depend on ``h`` and is computed once per
sample (:func:`input_gradients`). Attribution values are then exact for every teacher; the
gradient of a loss on them w.r.t. ``h`` is exact when the teacher's Hessian vanishes, i.e.
for piecewise-linear teachers (:func:`is_piecewise_linear`); for smooth teachers it drops
the teacher-curvature term.

Methods (``target`` is an output column index; batches are independent samples):

* ``"saliency"``: ``df/ds``;
* ``"input_x_gradient"``: ``s * df/ds``;
* ``"integrated_gradients"``: ``s * mean_k df/ds`` at ``alpha_k s``, midpoint rule with
  ``ig_steps`` points, baseline zero coefficients; along the path the teacher sees exactly
  ``alpha_k x`` (the residual is scaled with the coefficients), so the path in input space is
  the straight line from 0 to ``x``.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Sequence

import torch
from torch import nn

from awd.transform import iter_coeffs

log = logging.getLogger(__name__)

METHODS = ("saliency", "input_x_gradient", "integrated_gradients")
#: Take ``S_h^T`` as the analysis where that is exact (see :func:`synthesis_adjoint`); False
#: always back-propagates through the synthesis (the slower route, kept for comparison).
ANALYSIS_ADJOINT = True

# Leaf modules whose output is a piecewise-linear function of their input (per sample).
_PIECEWISE_LINEAR = (
    nn.Linear, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.Hardtanh,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
)
# Leaf modules that are affine per sample only in eval mode.
_EVAL_ONLY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
              nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"attribution method must be one of {METHODS}, got {method!r}")


def is_piecewise_linear(model: nn.Module) -> bool:
    """True when every leaf module of ``model`` is piecewise linear in its input.

    Leaves must be Linear/Conv/ReLU-like/pooling/Flatten/Identity, or Dropout/BatchNorm in eval
    mode; anything else (Tanh, Sigmoid, GELU, LSTM, an unknown leaf module) gives False.
    Only modules are inspected: a non-linear function called inside a custom ``forward``
    (e.g. ``torch.tanh(x)``) is invisible here — use ``fast_path="never"`` for such teachers.
    """
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue  # a container or a composite module: judged by its leaves
        if isinstance(module, _EVAL_ONLY):
            if module.training:
                return False
            continue
        if not isinstance(module, _PIECEWISE_LINEAR):
            return False
    return True


def _backprop_context(model: nn.Module):
    """cuDNN RNNs cannot back-propagate in eval mode: run RNN teachers with cuDNN off (as the
    reference does around its attribution call). A no-op on CPU and for other teachers."""
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


def _flatten(coeffs: Sequence) -> list[torch.Tensor]:
    return list(iter_coeffs(coeffs))


def _restructure(coeffs: Sequence, flat: Sequence[torch.Tensor]) -> list:
    """``flat`` (in :func:`iter_coeffs` order) arranged like ``coeffs`` (tensors and tuples)."""
    it: Iterator[torch.Tensor] = iter(flat)
    out = [next(it) if torch.is_tensor(c) else tuple(next(it) for _ in c) for c in coeffs]
    if next(it, None) is not None:
        raise ValueError("more tensors than coefficient slots")
    return out


def reconstruct(dwt: nn.Module, coeffs: Sequence, shape: torch.Size) -> torch.Tensor:
    """Inverse transform of ``coeffs`` cropped to the input ``shape`` (odd sizes reconstruct
    one sample longer, as in pywt)."""
    x_rec = dwt.inverse(coeffs)
    if x_rec.shape != shape:
        if x_rec.dim() != len(shape) or any(a < b for a, b in zip(x_rec.shape, shape)):
            raise ValueError(f"inverse transform gives shape {tuple(x_rec.shape)}, input is {tuple(shape)}")
        x_rec = x_rec[tuple(slice(0, n) for n in shape)]
    return x_rec


def _target_sum(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Sum over the batch of output column ``target`` (per-sample gradients in one call)."""
    out = model(x)
    if out.dim() == 1:
        out = out[:, None]
    if out.dim() != 2:
        raise ValueError(f"teacher output must be (batch, outputs), got shape {tuple(out.shape)}")
    if not -out.shape[1] <= target < out.shape[1]:
        raise IndexError(f"target column {target} out of range for {out.shape[1]} teacher outputs")
    return out[:, target].sum()


def trim_attributions(model: nn.Module, dwt: nn.Module, x: torch.Tensor, target: int,
                      method: str = "saliency", *, coeffs: Sequence | None = None,
                      create_graph: bool = True, ig_steps: int = 32) -> list:
    """Exact TRIM attributions of ``model``'s output column ``target`` w.r.t. the wavelet
    coefficients of ``x``, shaped like the coefficients (pywt order).

    ``coeffs`` (optional) must be ``dwt(x)`` computed by the caller, so that a training step
    reuses one forward transform. With ``create_graph=True`` the result can be back-propagated
    to the filter (double back-prop through ``model``).
    """
    _check_method(method)
    with torch.enable_grad(), _backprop_context(model):
        if coeffs is None:
            coeffs = dwt(x)
        flat = _flatten(coeffs)
        if not all(t.requires_grad for t in flat):
            flat = [t.detach().requires_grad_(True) for t in flat]
        if method == "integrated_gradients":
            if ig_steps < 1:
                raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
            mean = None
            for k in range(ig_steps):
                alpha = (k + 0.5) / ig_steps
                scaled = [alpha * t for t in flat]
                x_rec = reconstruct(dwt, _restructure(coeffs, scaled), x.shape)
                x_in = x_rec + (alpha * x - x_rec).detach()
                grads = torch.autograd.grad(_target_sum(model, x_in, target), scaled,
                                            create_graph=create_graph)
                mean = list(grads) if mean is None else [m + g for m, g in zip(mean, grads)]
            attr = [t * (m / ig_steps) for t, m in zip(flat, mean)]
        else:
            x_rec = reconstruct(dwt, _restructure(coeffs, flat), x.shape)
            x_in = x_rec + (x - x_rec).detach()
            grads = torch.autograd.grad(_target_sum(model, x_in, target), flat,
                                        create_graph=create_graph)
            attr = list(grads) if method == "saliency" else [t * g for t, g in zip(flat, grads)]
    return _restructure(coeffs, attr)


def _analysis_is_adjoint(dwt: nn.Module, shape: torch.Size) -> bool:
    """Whether ``S_h^T`` equals the analysis ``A_h`` for inputs of ``shape``, for every filter:
    in "zero" mode the cropped synthesis is exactly the transpose of the zero-extended
    analysis at any size; in "periodization" mode when every level's input is even along
    each transformed axis. Other modes extend the signal, so their adjoint differs."""
    mode = getattr(dwt, "mode", None)
    if mode == "zero":
        return True
    if mode != "periodization":
        return False
    sizes = [int(n) for n in shape[-dwt.ndim:]]
    for _ in range(dwt.J):
        if any(n % 2 for n in sizes):
            return False
        sizes = [n // 2 for n in sizes]
    return True


def synthesis_adjoint(dwt: nn.Module, coeffs: Sequence, grad: torch.Tensor,
                      create_graph: bool = True) -> list:
    """``S_h^T grad``: the vector-Jacobian product of the (cropped) inverse transform with an
    input-space tensor, shaped like ``coeffs``. Computed by autograd through ``dwt.inverse``,
    so it is exact in every boundary mode and for odd sizes; with ``create_graph`` it is
    differentiable w.r.t. the filter. Only the shapes of ``coeffs`` matter (the map is linear).
    Where the adjoint is the analysis itself (:func:`_analysis_is_adjoint`: "zero" mode, and
    "periodization" at even sizes) it is computed as ``dwt(grad)``: the same values to float
    rounding at about half the cost of the double backward.
    """
    if ANALYSIS_ADJOINT and _analysis_is_adjoint(dwt, grad.shape):  # an analysis, not a double backward
        with torch.set_grad_enabled(create_graph):
            adj = dwt(grad)
        if [t.shape for t in _flatten(adj)] == [t.shape for t in _flatten(coeffs)]:
            return adj
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in _flatten(coeffs)]
        x_rec = reconstruct(dwt, _restructure(coeffs, leaves), grad.shape)
        vjp = torch.autograd.grad(x_rec, leaves, grad_outputs=grad, create_graph=create_graph)
    return _restructure(coeffs, list(vjp))


def attributions_from_gradients(dwt: nn.Module, x: torch.Tensor, grad: torch.Tensor,
                                method: str = "saliency", *, coeffs: Sequence | None = None,
                                create_graph: bool = True) -> list:
    """Attributions from precomputed input gradients (see :func:`input_gradients`, called
    with the same ``method``): no teacher call. Values equal :func:`trim_attributions` for
    any teacher; gradients w.r.t. the filter equal them for piecewise-linear teachers."""
    _check_method(method)
    with torch.enable_grad():
        if coeffs is None:
            coeffs = dwt(x)
        adj = synthesis_adjoint(dwt, coeffs, grad, create_graph=create_graph)
        if method == "saliency":
            return adj
        flat = [t * a for t, a in zip(_flatten(coeffs), _flatten(adj))]
    return _restructure(coeffs, flat)


def input_gradients(model: nn.Module, X: torch.Tensor, target: int, batch_size: int = 100, *,
                    method: str = "saliency", ig_steps: int = 32) -> torch.Tensor:
    """Per-sample input gradients of output column ``target``, computed once, batch by batch.

    For ``"integrated_gradients"`` the result is the path average
    ``mean_k grad f(alpha_k x)`` (midpoint rule, ``ig_steps`` points); otherwise ``grad f(x)``.
    Batches run on the model's device; the result has the shape, dtype and device of ``X``
    and carries no graph.
    """
    _check_method(method)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    alphas = [(k + 0.5) / ig_steps for k in range(ig_steps)] if method == "integrated_gradients" else [1.0]
    param = next(model.parameters(), None)
    device = X.device if param is None else param.device
    out = torch.empty_like(X)
    with torch.enable_grad(), _backprop_context(model):
        for i in range(0, len(X), batch_size):
            xb = X[i:i + batch_size].detach().to(device)
            acc = torch.zeros_like(xb)
            for alpha in alphas:
                xa = (alpha * xb).requires_grad_(True)
                (g,) = torch.autograd.grad(_target_sum(model, xa, target), xa)
                acc += g
            out[i:i + batch_size] = (acc / len(alphas)).to(X.device)
    return out
