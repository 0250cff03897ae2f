"""Many exact AWD distillation paths in one batched computation (short 1D signals).

A path is one (lambda, seed) continuation along the gamma grid, as in
:func:`awd.distill.distill_path`. Paths share the teacher, the data and the gamma grid and are
independent otherwise, so P of them advance in lock-step: their filters form one (P, L)
parameter, their mini-batches one (P, B, n) tensor, and every step is a handful of batched
matrix products instead of P separate runs. Each path keeps its own shuffling generator
(seeded with its seed, fresh at every grid point) and Adam state (Adam is element-wise, so one
Adam over the stacked filters is P independent Adams).

Exact second order without back-propagating through the teacher at every step. TRIM feeds the
teacher ``x_in = x_rec + (x - x_rec).detach()``, which equals ``x`` in value, so the saliency is
``S_h^T grad f(x_in)`` and its derivative w.r.t. the filter ``h`` is
``dS_h^T/dh grad f(x) + S_h^T Hess f(x) dx_rec/dh``. Neither ``grad f(x)`` nor ``Hess f(x)``
depends on ``h``: both are computed once per training sample by double back-propagation
through the teacher (:func:`teacher_curvature`) and reused by every step, path and seed. The
step then uses ``grad f(x)`` as the value and ``Hess f(x)`` as the derivative of the teacher's
input gradient (:class:`_CurvedGradient`): the gradient w.r.t. ``h`` is the one double
back-propagation gives, including the teacher-curvature term that the fast path
(:mod:`awd.trim`) drops. The per-sample Hessians cost ``n^2`` floats per training sample, so
this engine is for short 1D signals (``MAX_SIGNAL`` samples); for the CME traces (n = 40) they
take 6.4 kB per trace.

The wavelet operators of all paths are built in one call: the J-level analysis and synthesis
are linear maps, and ``vmap`` over the filters of :func:`awd.transform.wavedec` /
:func:`~awd.transform.waverec` applied to identity matrices gives them as (P, n, M) and
(P, M, n) matrices, the same composed matrices :class:`~awd.transform.DWT1d` uses for short
signals. In 'zero' mode the (cropped) synthesis is exactly the adjoint of the analysis for any
filter, not only orthogonal ones (each level is a stride-2 correlation of the zero-extended
signal and its transpose), so only the analysis is built, for all paths by one grouped
correlation per level.
"""
from __future__ import annotations

import json
import logging
import math
import sys
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from awd.io import InputError
from awd.losses import FILTER_TERMS, TERMS, filter_losses
from awd.transform import qmf, wavedec, waverec
from awd.trim import _backprop_context, _target_sum

__all__ = ["MAX_SIGNAL", "teacher_curvature", "path_operators", "BatchedSteps"]

log = logging.getLogger(__name__)

#: Longest 1D signal the batched engine takes (per-sample Hessians are n x n).
MAX_SIGNAL = 256
#: Methods the batched engine supports (both are linear in the teacher's input gradient).
BATCHED_METHODS = ("saliency", "input_x_gradient")


def teacher_curvature(model: nn.Module, X: torch.Tensor, target: int, batch_size: int = 500
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample input gradient ``grad f(x)`` (n_samples, n) and Hessian ``Hess f(x)``
    (n_samples, n, n) of the teacher's output column ``target``, by double back-propagation
    (one batched second backward per batch). Batches are independent samples (eval mode)."""
    n = X.shape[-1]
    param = next(model.parameters(), None)
    device = X.device if param is None else param.device
    grads = torch.empty_like(X)
    hess = X.new_empty((len(X), n, n))
    eye = torch.eye(n, dtype=X.dtype, device=device)
    with torch.enable_grad(), _backprop_context(model):
        for i in range(0, len(X), batch_size):
            xb = X[i:i + batch_size].detach().to(device).requires_grad_(True)
            (g,) = torch.autograd.grad(_target_sum(model, xb, target), xb, create_graph=True)
            basis = eye.unsqueeze(1).expand(n, len(xb), n)
            (rows,) = torch.autograd.grad(g, xb, grad_outputs=basis, is_grads_batched=True)
            grads[i:i + batch_size] = g.detach().to(X.device)
            hess[i:i + batch_size] = rows.transpose(0, 1).to(X.device)
    return grads, hess


class _CurvedGradient(torch.autograd.Function):
    """The teacher's input gradient at ``x_in = x + delta`` where ``delta`` is zero in value:
    the value is the precomputed ``grad f(x)``, the derivative w.r.t. ``delta`` is ``Hess f(x)``
    (symmetric), exactly what back-propagating through ``autograd.grad(f(x_in), create_graph)``
    gives."""

    @staticmethod
    def forward(ctx, delta: torch.Tensor, grad: torch.Tensor, hess: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(hess)
        return grad.clone()

    @staticmethod
    def backward(ctx, upstream: torch.Tensor):
        (hess,) = ctx.saved_tensors
        shape = upstream.shape
        flat = upstream.reshape(-1, shape[-1], 1)
        return torch.bmm(hess.reshape(-1, shape[-1], shape[-1]), flat).reshape(shape), None, None


def _operators(h: torch.Tensor, n: int, J: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    eye = torch.eye(n, dtype=h.dtype, device=h.device)
    bands = wavedec(eye, h, J, mode)
    lengths = [b.shape[-1] for b in bands]
    analysis_t = torch.cat(bands, -1)                                   # (n, M): x @ A^T
    if mode == "zero":  # zero mode: the (cropped) synthesis is the adjoint of the analysis, for any h
        return analysis_t, analysis_t.T
    eye_c = torch.eye(sum(lengths), dtype=h.dtype, device=h.device)
    synthesis_t = waverec(list(eye_c.split(lengths, -1)), h, mode)[..., :n]  # (M, n): c @ S^T
    return analysis_t, synthesis_t


def _zero_mode_analysis(H: torch.Tensor, n: int, J: int) -> torch.Tensor:
    """``A^T`` (P, n, M) in 'zero' mode for all filters at once: the J-level analysis of the n
    unit vectors, one grouped stride-2 correlation per level (the signal at offset L-2 of the
    zero-extended signal, as :mod:`awd.transform` defines the level)."""
    P, L = H.shape
    W = torch.stack([H, qmf(H)], 1).reshape(2 * P, 1, L)
    a = torch.eye(n, dtype=H.dtype, device=H.device)[:, None, :].expand(n, P, n)
    details = []
    for _ in range(J):
        m = a.shape[-1]
        n_out = (m + L - 1) // 2
        y = F.conv1d(F.pad(a, (L - 2, 2 * n_out - m)), W, stride=2, groups=P)  # (n, 2P, n_out)
        a = y[:, 0::2]
        details.append(y[:, 1::2])
    return torch.cat([a] + details[::-1], -1).permute(1, 0, 2)


def path_operators(H: torch.Tensor, n: int, J: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis ``A^T`` (P, n, M) and synthesis ``S^T`` (P, M, n) of the filters ``H`` (P, L)
    for signals of length ``n`` (coefficients concatenated in pywt order, M in total);
    differentiable w.r.t. ``H``."""
    if mode == "zero":
        analysis_t = _zero_mode_analysis(H, n, J)
        return analysis_t, analysis_t.transpose(1, 2)
    return torch.func.vmap(lambda h: _operators(h, n, J, mode))(H)


class BatchedSteps:
    """The per-step objective of P paths on stacked mini-batches (see the module docstring).

    ``grads``/``hess``: :func:`teacher_curvature` of the training samples (None when no grid
    point has gamma > 0). ``lams``: (P,) lambda of every path.
    """

    def __init__(self, n: int, J: int, mode: str, normalization: str, attribution: str,
                 lams: Sequence[float], grads: torch.Tensor | None, hess: torch.Tensor | None):
        if attribution not in BATCHED_METHODS:
            raise InputError(None, f"distill.engine batched supports attribution {list(BATCHED_METHODS)}, "
                                   f"got {attribution!r} (use engine: plain)")
        self.n, self.J, self.mode = n, J, mode
        self.normalization, self.attribution = normalization, attribution
        self.lams = list(lams)
        self.grads, self.hess = grads, hess
        self._filter_terms = torch.func.vmap(filter_losses)

    def _l1(self, t: torch.Tensor) -> torch.Tensor:
        if self.normalization == "mean":
            return t.abs().mean((1, 2))
        return t.abs().sum((1, 2)) / ((self.J + 1) * t.shape[1])

    def terms(self, H: torch.Tensor, xb: torch.Tensor, rows: torch.Tensor, gamma: float
              ) -> dict[str, torch.Tensor]:
        """Every loss term, (P,) each: filters ``H`` (P, L), batches ``xb`` (P, B, n) whose
        samples are training rows ``rows`` (P, B)."""
        analysis_t, synthesis_t = path_operators(H, self.n, self.J, self.mode)
        coeffs = torch.bmm(xb, analysis_t)
        x_rec = torch.bmm(coeffs, synthesis_t)
        sq = (x_rec - xb) ** 2
        rec = sq.mean((1, 2)) if self.normalization == "mean" else sq.sum((1, 2)) / xb.shape[1]
        out = {"reconstruction": rec, **self._filter_terms(H), "sparsity": self._l1(coeffs)}
        if gamma > 0:
            flat = rows.reshape(-1)
            delta = x_rec - x_rec.detach()
            g = _CurvedGradient.apply(delta, self.grads.index_select(0, flat).view_as(xb),
                                      self.hess.index_select(0, flat).view(*xb.shape, self.n))
            attr = torch.bmm(g, synthesis_t.transpose(1, 2))
            if self.attribution == "input_x_gradient":
                attr = coeffs * attr
            out["interpretation"] = self._l1(attr)
        return out

    def objective(self, terms: dict[str, torch.Tensor], gamma: float) -> torch.Tensor:
        """(P,) AWD objective, as :func:`awd.losses.total_loss` per path."""
        loss = terms["reconstruction"] + sum(terms[k] for k in FILTER_TERMS)
        lam = torch.tensor(self.lams, dtype=loss.dtype, device=loss.device)
        loss = loss + torch.where(lam != 0, lam * terms["sparsity"], torch.zeros_like(loss))
        if gamma and "interpretation" in terms:
            loss = loss + gamma * terms["interpretation"]
        return loss


# --------------------------------------------------------------------------------------------
# The driver: P paths along one gamma grid, checkpointed after every epoch
# --------------------------------------------------------------------------------------------
def _rows_of_seed(n: int, cap: int | None, seed: int) -> np.ndarray:
    """Training rows of a path: all, or the seeded subset ``awd.distill`` draws for ``max_train``."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def distill_paths(teacher: nn.Module, X_train, X_val, *, paths: Sequence[tuple[float, int]],
                  gammas: Sequence[float], config, init=None, checkpoint=None,
                  callback: Callable[[dict], None] | None = None) -> list[list]:
    """Distill ``teacher`` along ``gammas`` for every (lambda, seed) of ``paths`` at once;
    return per path its :class:`~awd.distill.DistillResult` list (increasing gamma).

    Each path gives the filters :func:`awd.distill.distill_path` gives with ``seed`` and
    exact double back-propagation (to float rounding; see the module docstring).
    ``X_train``/``X_val``: (n, L) signals, L <= :data:`MAX_SIGNAL`. ``checkpoint``: one file
    for the group, written atomically after every epoch; a rerun resumes bit-identically.
    ``callback(info)`` after every epoch and path (lam, seed, gamma, point, epoch, train_loss).
    """
    from awd.distill import (DTYPES, DistillResult, TrainingDiverged, _Checkpoint, _data_digest, _frozen_teacher,
                             _initial_filter, _make_dwt, _set_filter, evaluate_terms)
    from awd.trim import input_gradients
    from awd.wavelet import filter_bank_metrics

    cfg = config
    if cfg.attribution not in BATCHED_METHODS:
        raise InputError(None, f"distill.engine batched supports attribution {list(BATCHED_METHODS)}, "
                               f"got {cfg.attribution!r} (use engine: plain)")
    paths = [(float(lam), int(seed)) for lam, seed in paths]
    if not paths or len(set(paths)) != len(paths):
        raise InputError(None, f"distill: need distinct (lambda, seed) paths, got {paths}")
    if any(not (math.isfinite(lam) and lam >= 0) for lam, _ in paths):
        raise InputError(None, f"distill: lambdas must be finite and >= 0, got {[p[0] for p in paths]}")
    gammas = sorted(float(g) for g in gammas)
    if not gammas or any(not math.isfinite(g) or g < 0 for g in gammas) or len(set(gammas)) != len(gammas):
        raise InputError(None, f"distill: gammas must be distinct finite numbers >= 0, got {gammas}")
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    X_all = torch.as_tensor(np.asarray(X_train), dtype=dtype, device=device)
    X_va = torch.as_tensor(np.asarray(X_val), dtype=dtype)
    if X_all.dim() != 2 or X_va.dim() != 2 or X_all.shape[1] != X_va.shape[1] or not len(X_all) or not len(X_va):
        raise InputError(None, f"distill.engine batched: need non-empty (n, L) signals of equal length, got "
                               f"{tuple(X_all.shape)} and {tuple(X_va.shape)} (use engine: plain for images)")
    n_sig = X_all.shape[1]
    if n_sig > MAX_SIGNAL:
        raise InputError(None, f"distill.engine batched: signals of {n_sig} samples exceed {MAX_SIGNAL} "
                               "(per-sample Hessians); use engine: plain")
    P = len(paths)
    rows = torch.as_tensor(np.stack([_rows_of_seed(len(X_all), cfg.max_train, s) for _, s in paths]),
                           device=device)
    n = rows.shape[1]
    h_init, init_label = _initial_filter(init, cfg)
    model = _frozen_teacher(teacher, device, dtype)
    semantic = {k: v for k, v in cfg.to_dict().items()
                if k not in ("progress", "lambdas", "gammas", "seed", "seeds", "engine")}
    fingerprint = json.dumps({"config": semantic, "engine": "batched", "paths": paths, "gammas": gammas,
                              "init": h_init.tolist(), "data": _data_digest(X_all, X_va)}, sort_keys=True)
    ckpt = _Checkpoint(checkpoint, fingerprint)
    done = ckpt.done
    log.info("distill %d path(s) %s over %d gamma(s) in one batch: %d train / %d val signals of %d samples, "
             "%s attributions, exact (per-sample teacher Hessians)", P, paths, len(gammas), n, len(X_va), n_sig,
             cfg.attribution)
    grads = hess = grads_val = None
    if len(done) < len(gammas):
        grads_val = input_gradients(model, X_va, cfg.target, cfg.batch_size, method=cfg.attribution)
        if any(g > 0 for g in gammas[len(done):]):
            grads, hess = teacher_curvature(model, X_all, cfg.target)
    steps = BatchedSteps(n_sig, cfg.J, cfg.mode, cfg.normalization, cfg.attribution, [p[0] for p in paths],
                         grads, hess)
    dwt = _make_dwt(1, h_init, cfg, device, dtype)
    results: list[list] = [[] for _ in paths]
    H_start = torch.as_tensor(np.tile(h_init, (P, 1)), dtype=dtype, device=device)
    resumed = len(done)
    for point, gamma in enumerate(gammas):
        if point < resumed:
            rec = done[point]
            H_end, train_loss, losses = rec["h"], rec["train_loss"], rec["losses"]
        else:
            H_end, train_loss = _train_point(steps, H_start, X_all, rows, paths, gamma, cfg, point, done, ckpt,
                                             callback, TrainingDiverged)
            losses = []
            for p, (lam, seed) in enumerate(paths):
                _set_filter(dwt, H_end[p].detach().cpu().to(torch.float64).numpy())
                terms = evaluate_terms(model, dwt, X_va, lam, gamma, cfg, grads_val)
                losses.append([terms[k] for k in (*TERMS, "objective")])
            losses = torch.tensor(losses, dtype=torch.float64)
            done.append({"h": H_end.detach().cpu().clone(), "train_loss": train_loss, "losses": losses})
            ckpt.save(done, point + 1)
        for p, (lam, seed) in enumerate(paths):
            h = H_end[p].detach().cpu().to(torch.float64).numpy().reshape(-1).copy()
            res = DistillResult(h=h, lam=lam, gamma=gamma, init=init_label, init_h=h_init.copy(),
                                epochs=cfg.epochs, wave=cfg.wave, J=cfg.J, mode=cfg.mode, ndim=1,
                                losses=dict(zip((*TERMS, "objective"), losses[p].tolist())),
                                metrics=filter_bank_metrics(h), train_loss=train_loss[p].tolist(), fast_path=False,
                                attribution=cfg.attribution, normalization=cfg.normalization, seed=seed)
            results[p].append(res)
            if point >= resumed:
                log.info("distill lambda=%g seed=%d gamma=%g: validation %s", lam, seed, gamma,
                         ", ".join(f"{k}={v:.6g}" for k, v in res.losses.items()))
        H_start = H_end.detach().clone().to(device)
    return results


def _train_point(steps: BatchedSteps, H_start: torch.Tensor, X: torch.Tensor, rows: torch.Tensor,
                 paths: list, gamma: float, cfg, point: int, done: list, ckpt, callback, diverged
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam over the stacked filters for ``cfg.epochs`` epochs (resuming from ``ckpt``);
    returns the filters (P, L) and the mean training objective per path and epoch (P, epochs)."""
    P, n = rows.shape
    H = nn.Parameter(H_start.detach().clone())
    opt = torch.optim.Adam([H], lr=cfg.lr)
    gens = [torch.Generator().manual_seed(seed) for _, seed in paths]
    start, history = 0, torch.zeros((P, 0), dtype=torch.float64)
    saved = ckpt.running(point)
    if saved is not None:
        with torch.no_grad():
            H.copy_(saved["h"])
        opt.load_state_dict(saved["optimizer"])
        for gen, state in zip(gens, saved["generators"]):
            gen.set_state(state)
        start, history = int(saved["epoch"]), saved["history"]
    bs = cfg.batch_size
    show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    where = f"{P} paths, gamma={gamma:g}"
    for epoch in tqdm(range(start, cfg.epochs), desc=where, disable=not show, initial=start, total=cfg.epochs):
        order = torch.stack([torch.randperm(n, generator=gen) for gen in gens]).to(rows.device)
        total = torch.zeros(P, dtype=torch.float64)
        for step in range(math.ceil(n / bs)):
            batch_rows = rows.gather(1, order[:, step * bs:(step + 1) * bs])
            xb = X[batch_rows]
            terms = steps.terms(H, xb, batch_rows, gamma)
            loss = steps.objective(terms, gamma)
            at = f"gamma={gamma:g}, epoch {epoch + 1}, step {step + 1}"
            bad = ~torch.isfinite(loss.detach())
            if bad.any():
                p = int(bad.nonzero()[0])
                raise diverged(f"distill lambda={paths[p][0]:g} seed={paths[p][1]} {at}: loss is "
                               f"{float(loss[p].detach())}")
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            bad = ~torch.isfinite(H.grad).all(1)
            if bad.any():
                p = int(bad.nonzero()[0])
                raise diverged(f"distill lambda={paths[p][0]:g} seed={paths[p][1]} {at}: gradient w.r.t. h "
                               "is not finite")
            opt.step()
            norms = H.detach().norm(dim=1)
            bad = ~(torch.isfinite(norms) & (norms <= cfg.max_filter_norm))
            if bad.any():
                p = int(bad.nonzero()[0])
                raise diverged(f"distill lambda={paths[p][0]:g} seed={paths[p][1]} {at}: ||h|| = "
                               f"{float(norms[p]):.4g} exceeds max_filter_norm {cfg.max_filter_norm:g}")
            total += loss.detach().cpu().to(torch.float64) * batch_rows.shape[1]
        history = torch.cat([history, (total / n)[:, None]], 1)
        ckpt.save(done, point, {"h": H.detach().cpu().clone(), "optimizer": opt.state_dict(),
                                "generators": [g.get_state() for g in gens], "epoch": epoch + 1,
                                "history": history})
        if callback is not None:
            for p, (lam, seed) in enumerate(paths):
                callback({"lam": lam, "seed": seed, "gamma": gamma, "point": point, "epoch": epoch + 1,
                          "train_loss": float(history[p, -1])})
    return H.detach(), history
