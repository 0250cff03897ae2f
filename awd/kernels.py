"""Direct (compiled) kernels of the zero-mode filter-bank pass, with exact autograd of any order.

One analysis pass of :mod:`awd.transform` along an axis of length n is, in 'zero' mode, the
stride-2 correlation ``D``:

    Y[k, b, o] = sum_j F[k, j] x[b, 2o + j - s],   s = L - 2,  o < (n + L - 1) // 2,

with the filters ``F = [h; g]`` (K = 2, length L) and x zero outside [0, n). Its transpose in x is
the zero-mode synthesis ``U`` (output length n; pywt's ``idwt`` length 2 nc - L + 2 when n is
taken so), and its transpose in F is the correlation ``C``:

    U(Y, F)[b, p] = sum_{k, o, j: 2o + j - s = p} F[k, j] Y[k, b, o]
    C(x, Y)[k, j] = sum_{b, o} Y[k, b, o] x[b, 2o + j - s].

All three are bilinear and their derivatives are each other (``dD/dx^T = U``, ``dD/dF^T = C``,
``dU/dY^T = D``, ``dU/dF^T = C`` with the roles swapped, ``dC/dx^T = U``, ``dC/dY^T = D``), so
three autograd functions give exact gradients of every order, as the TRIM losses need. A whole
2D transform (each level a pass down the columns, then two along the rows) is one autograd node,
:class:`Analysis2` / :class:`Synthesis2`, whose backward calls the transposed kernels directly when
no graph of it is built: per training piece that saves over a hundred autograd calls
(``benchmarks/out/distill_throughput.md``); with a graph it recomputes the levels from the three
functions and differentiates those.

Each runs along axis 1 ('cols') or axis 2 ('rows') of a C-contiguous (B, n, m) array, with the
two bands as two arrays (no stacking, no band gathering in the backward): down the rows every
output is a register sum over the taps of whole rows, vectorised over the contiguous axis; along
the rows the signal is first split into its even and odd samples (polyphase), so the inner loops
are unit-stride SIMD code too. The kernels are compiled per filter length (the tap loops unroll).
Against the GEMMs of :mod:`awd.transform` this does L multiply-adds per output instead of a dense
chunk, and no window copies (``benchmarks/out/distill_throughput.md``, ``benchmarks/README.md``).
A call over many items splits its batch over ``torch.get_num_threads()`` threads (the kernels
release the GIL); the filter correlations add fixed blocks of items in a fixed order, so no value
depends on the thread count. Inside :func:`awd.distill._run_pieces` each piece runs on one thread.

Two loss passes live here too, for the same reason (one pass over memory instead of several):
:class:`SquaredDistance` (the reconstruction error) and :class:`AbsSum` (the L1 terms), each a
float64 sum per batch item, used by :mod:`awd.losses` on CPU float tensors.

Needs numba (a dependency); :data:`AVAILABLE` is False without it, and the transforms then use
their GEMM path for every mode (and the losses torch's ops).
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from awd.compiled import AVAILABLE, jit, numba  # noqa: F401 (AVAILABLE, numba: part of this module's API)

#: Batch items per partial sum of the filter correlation: the partials are added in a fixed
#: order, so the gradients do not depend on how many threads computed them.
CORR_BLOCK = 8
#: Calls with fewer output values than this run on the calling thread only.
PARALLEL_MIN = 1 << 17


@functools.lru_cache(maxsize=None)
def _kernels(L: int) -> dict:
    """The six kernels for the two filters of length L, compiled with L as a constant (numba
    freezes closure variables): the tap loops unroll and each output is accumulated in a
    register over all its taps before one store, instead of one pass over the row per tap.
    Compiled code is cached on disk per (L, dtype). Each kernel fills the batch items
    b0 <= b < b1 (a thread's share); the correlations fill per-block float64 partial sums."""
    S, HALF, S2 = L - 2, L // 2, (L - 2) // 2

    @jit
    def split_row(src, n, xe, xo):
        """xe[S2 + q] = src[2q], xo[S2 + q] = src[2q + 1] (the rest of xe, xo stays zero); one
        loop over the pairs, so that the strided loads vectorise as one interleaved group."""
        for q in range(n // 2):
            xe[S2 + q] = src[2 * q]
            xo[S2 + q] = src[2 * q + 1]
        if n % 2:
            xe[S2 + n // 2] = src[n - 1]

    @jit
    def down_cols(x, F, y0, y1, b0, b1):
        n, m = x.shape[1], x.shape[2]
        no = y0.shape[1]
        for b in range(b0, b1):
            for o in range(no):
                r0, r1 = y0[b, o], y1[b, o]
                jlo, jhi = max(0, S - 2 * o), min(L, n + S - 2 * o)
                if jlo == 0 and jhi == L:  # every tap inside: one register sum per output
                    for c in range(m):
                        v = x[b, 2 * o - S, c]
                        a0, a1 = F[0, 0] * v, F[1, 0] * v
                        for j in range(1, L):
                            v = x[b, 2 * o - S + j, c]
                            a0 += F[0, j] * v
                            a1 += F[1, j] * v
                        r0[c], r1[c] = a0, a1
                else:
                    for c in range(m):
                        r0[c], r1[c] = 0.0, 0.0
                    for j in range(jlo, jhi):
                        f0, f1 = F[0, j], F[1, j]
                        src = x[b, 2 * o + j - S]
                        for c in range(m):
                            r0[c] += f0 * src[c]
                            r1[c] += f1 * src[c]

    @jit
    def down_rows(x, F, y0, y1, b0, b1):
        r, n = x.shape[1], x.shape[2]
        no = y0.shape[2]
        xe = np.zeros(no + HALF, dtype=x.dtype)
        xo = np.zeros(no + HALF, dtype=x.dtype)
        for b in range(b0, b1):
            for i in range(r):
                split_row(x[b, i], n, xe, xo)
                r0, r1 = y0[b, i], y1[b, i]
                for o in range(no):
                    a0 = F[0, 0] * xe[o] + F[0, 1] * xo[o]
                    a1 = F[1, 0] * xe[o] + F[1, 1] * xo[o]
                    for t in range(1, HALF):
                        a0 += F[0, 2 * t] * xe[o + t] + F[0, 2 * t + 1] * xo[o + t]
                        a1 += F[1, 2 * t] * xe[o + t] + F[1, 2 * t + 1] * xo[o + t]
                    r0[o], r1[o] = a0, a1

    @jit
    def up_cols(y0, y1, F, out, b0, b1):
        no, m = y0.shape[1], y0.shape[2]
        n = out.shape[1]
        for b in range(b0, b1):
            for p in range(n):
                row = out[b, p]
                par = p % 2
                o_hi = (p + S - par) // 2  # tap par + 2t reads coefficient o_hi - t
                if o_hi < no and o_hi - HALF + 1 >= 0:  # every tap inside
                    for c in range(m):
                        acc = F[0, par] * y0[b, o_hi, c] + F[1, par] * y1[b, o_hi, c]
                        for t in range(1, HALF):
                            acc += F[0, par + 2 * t] * y0[b, o_hi - t, c] + F[1, par + 2 * t] * y1[b, o_hi - t, c]
                        row[c] = acc
                else:
                    for c in range(m):
                        row[c] = 0.0
                    for j in range(par, L, 2):
                        o = (p + S - j) // 2
                        if o >= 0 and o < no:
                            f0, f1 = F[0, j], F[1, j]
                            s0, s1 = y0[b, o], y1[b, o]
                            for c in range(m):
                                row[c] += f0 * s0[c] + f1 * s1[c]

    @jit
    def up_rows(y0, y1, F, out, b0, b1):
        r, no = y0.shape[1], y0.shape[2]
        n = out.shape[2]
        ne, nodd = (n + 1) // 2, n // 2
        # out[2q] = sum_{k, u} F[k, 2(S2 - u)] y_k[q + u], out[2q + 1] the same with F[k, 2(S2 - u) + 1]:
        # unit-stride correlations of zero-padded copies of the rows (q + u < ne + HALF)
        ev = np.empty(ne, dtype=out.dtype)
        od = np.empty(ne, dtype=out.dtype)
        p0 = np.zeros(ne + HALF, dtype=out.dtype)
        p1 = np.zeros(ne + HALF, dtype=out.dtype)
        top = min(no, ne + HALF)
        for b in range(b0, b1):
            for i in range(r):
                s0, s1 = y0[b, i], y1[b, i]
                for q in range(top):
                    p0[q], p1[q] = s0[q], s1[q]
                for q in range(ne):
                    ae = F[0, 2 * S2] * p0[q] + F[1, 2 * S2] * p1[q]
                    ao = F[0, 2 * S2 + 1] * p0[q] + F[1, 2 * S2 + 1] * p1[q]
                    for u in range(1, HALF):
                        ae += F[0, 2 * (S2 - u)] * p0[q + u] + F[1, 2 * (S2 - u)] * p1[q + u]
                        ao += F[0, 2 * (S2 - u) + 1] * p0[q + u] + F[1, 2 * (S2 - u) + 1] * p1[q + u]
                    ev[q], od[q] = ae, ao
                row = out[b, i]
                for q in range(nodd):  # interleave: one loop, stores as one group
                    row[2 * q] = ev[q]
                    row[2 * q + 1] = od[q]
                if n % 2:
                    row[n - 1] = ev[nodd]

    @jit
    def corr_cols(x, y0, y1, out, block, blk0, blk1):
        B, no, m = y0.shape
        n = x.shape[1]
        zero = np.zeros(1, dtype=y0.dtype)[0]
        for blk in range(blk0, blk1):
            out[blk] = 0.0
            for b in range(blk * block, min(B, (blk + 1) * block)):
                for o in range(no):
                    s0, s1 = y0[b, o], y1[b, o]
                    for j in range(max(0, S - 2 * o), min(L, n + S - 2 * o)):
                        src = x[b, 2 * o + j - S]
                        d0, d1 = zero, zero
                        for c in range(m):
                            d0 += s0[c] * src[c]
                            d1 += s1[c] * src[c]
                        out[blk, 0, j] += d0
                        out[blk, 1, j] += d1

    @jit
    def corr_rows(x, y0, y1, out, block, blk0, blk1):
        B, r, no = y0.shape
        n = x.shape[2]
        xe = np.zeros(no + HALF, dtype=x.dtype)
        xo = np.zeros(no + HALF, dtype=x.dtype)
        zero = np.zeros(1, dtype=y0.dtype)[0]
        for blk in range(blk0, blk1):
            out[blk] = 0.0
            for b in range(blk * block, min(B, (blk + 1) * block)):
                for i in range(r):
                    split_row(x[b, i], n, xe, xo)
                    s0, s1 = y0[b, i], y1[b, i]
                    for t in range(HALF):
                        e0, o0, e1, o1 = zero, zero, zero, zero
                        for o in range(no):
                            e0 += s0[o] * xe[o + t]
                            o0 += s0[o] * xo[o + t]
                            e1 += s1[o] * xe[o + t]
                            o1 += s1[o] * xo[o + t]
                        out[blk, 0, 2 * t] += e0
                        out[blk, 0, 2 * t + 1] += o0
                        out[blk, 1, 2 * t] += e1
                        out[blk, 1, 2 * t + 1] += o1

    return {"down": {"cols": down_cols, "rows": down_rows}, "up": {"cols": up_cols, "rows": up_rows},
            "corr": {"cols": corr_cols, "rows": corr_rows}}


_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool() -> None:
    """After a fork the child has none of the pool's threads: start a new pool on next use."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def _threads(items: int, size: int) -> int:
    """Threads for a call over ``items`` batch items (or blocks) writing ``size`` values."""
    return max(1, min(torch.get_num_threads(), items)) if size >= PARALLEL_MIN else 1


def _run(kernel, items: int, size: int, *args) -> None:
    """``kernel(*args, lo, hi)`` over [0, items), split into contiguous shares run side by side
    on up to ``torch.get_num_threads()`` threads (the kernels release the GIL)."""
    global _pool, _pool_size
    threads = _threads(items, size)
    if threads <= 1:
        kernel(*args, 0, items)
        return
    if _pool_size < threads:  # none yet, or more threads asked than it has: a larger one
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool_size = max(threads, os.cpu_count() or 1)
        _pool = ThreadPoolExecutor(max_workers=_pool_size)
    bounds = [round(i * items / threads) for i in range(threads + 1)]
    for f in [_pool.submit(kernel, *args, lo, hi) for lo, hi in zip(bounds, bounds[1:])]:
        f.result()


def out_len(n: int, L: int) -> int:
    """Coefficients per band of a zero-mode analysis of n samples (pywt ``dwt_coeff_len``)."""
    return (n + L - 1) // 2


def rec_len(nc: int, L: int) -> int:
    """Samples a zero-mode synthesis gives from nc coefficients per band (pywt ``idwt``'s length)."""
    return 2 * nc - L + 2


def _length(x: torch.Tensor, axis: str) -> int:
    return x.shape[1] if axis == "cols" else x.shape[2]


def _np(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous NumPy view of a CPU tensor ``t`` (a copy only where autograd passes a
    non-contiguous gradient or a zero placeholder); called for every array of every kernel call,
    so without ``numpy(force=True)``'s extra conversions."""
    if t.requires_grad:
        t = t.detach()
    if t._is_zerotensor() or t.is_neg():  # autograd's zero placeholder or a lazily negated view
        return np.ascontiguousarray(t.numpy(force=True))
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def _down(x: torch.Tensor, F: torch.Tensor, axis: str) -> tuple[torch.Tensor, torch.Tensor]:
    B, n, m = x.shape
    L = F.shape[1]
    shape = (B, out_len(n, L), m) if axis == "cols" else (B, n, out_len(m, L))
    y0, y1 = torch.empty(shape, dtype=x.dtype), torch.empty(shape, dtype=x.dtype)
    if y0.numel():
        _run(_kernels(L)["down"][axis], B, 2 * y0.numel(), _np(x), _np(F), y0.numpy(), y1.numpy())
    return y0, y1


def _up(y0: torch.Tensor, y1: torch.Tensor, F: torch.Tensor, axis: str, n: int) -> torch.Tensor:
    B, a, c = y0.shape
    out = torch.empty((B, n, c) if axis == "cols" else (B, a, n), dtype=y0.dtype)
    if out.numel():
        _run(_kernels(F.shape[1])["up"][axis], B, out.numel(), _np(y0), _np(y1), _np(F), out.numpy())
    return out


def _corr(x: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, axis: str, L: int) -> torch.Tensor:
    B = y0.shape[0]
    blocks = -(-B // CORR_BLOCK)
    partial = np.zeros((blocks, 2, L))
    if y0.numel() and x.numel():
        _run(_kernels(L)["corr"][axis], blocks, 2 * y0.numel(), _np(x), _np(y0), _np(y1), partial, CORR_BLOCK)
    return torch.from_numpy(partial.sum(axis=0)).to(y0.dtype)


#: Whether a backward that builds no graph calls the kernels directly instead of through
#: the autograd functions (the same values, without the per-call autograd bookkeeping).
DIRECT_BACKWARD = True
#: Whether a 2D transform is one autograd node (:class:`Analysis2`, :class:`Synthesis2`) instead of three per level.
LEVEL_NODES = True


def _passes(*names: str) -> tuple:
    """The passes a backward needs (default: up and corr), in that order: the autograd functions'
    ``apply`` where a graph of the backward is built (double backward), else the plain kernel calls."""
    names = names or ("up", "corr")
    if torch.is_grad_enabled() or not DIRECT_BACKWARD:
        table = {"down": Down.apply, "up": Up.apply, "corr": Corr.apply}
    else:
        table = {"down": _down, "up": _up, "corr": _corr}
    return tuple(table[n] for n in names)


class Down(torch.autograd.Function):
    """``D(x, F)`` along ``axis`` of x (B, n, m): the two bands, each (B, no, m) for 'cols' or
    (B, n, no) for 'rows'."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, F: torch.Tensor, axis: str):
        ctx.save_for_backward(x, F)
        ctx.axis = axis
        return _down(x, F, axis)

    @staticmethod
    def backward(ctx, g0: torch.Tensor, g1: torch.Tensor):
        x, F = ctx.saved_tensors
        up, corr = _passes()
        gx = up(g0, g1, F, ctx.axis, _length(x, ctx.axis)) if ctx.needs_input_grad[0] else None
        gF = corr(x, g0, g1, ctx.axis, F.shape[1]) if ctx.needs_input_grad[1] else None
        return gx, gF, None


class Up(torch.autograd.Function):
    """``U(y0, y1, F)``, the transpose of :class:`Down` in x, with output length ``n`` along ``axis``."""

    @staticmethod
    def forward(ctx, y0: torch.Tensor, y1: torch.Tensor, F: torch.Tensor, axis: str, n: int):
        ctx.save_for_backward(y0, y1, F)
        ctx.axis = axis
        return _up(y0, y1, F, axis, n)

    @staticmethod
    def backward(ctx, gx: torch.Tensor):
        y0, y1, F = ctx.saved_tensors
        g0 = g1 = gF = None
        down, corr = _passes("down", "corr")
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            g0, g1 = down(gx, F, ctx.axis)
        if ctx.needs_input_grad[2]:
            gF = corr(gx, y0, y1, ctx.axis, F.shape[1])
        return g0, g1, gF, None, None


class Corr(torch.autograd.Function):
    """``C(x, y0, y1)``: the (2, L) filter gradient of ``<y0, D_0(x, F)> + <y1, D_1(x, F)>``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, axis: str, L: int):
        ctx.save_for_backward(x, y0, y1)
        ctx.axis = axis
        return _corr(x, y0, y1, axis, L)

    @staticmethod
    def backward(ctx, gF: torch.Tensor):
        x, y0, y1 = ctx.saved_tensors
        gx = g0 = g1 = None
        up, down = _passes("up", "down")
        if ctx.needs_input_grad[0]:
            gx = up(y0, y1, gF, ctx.axis, _length(x, ctx.axis))
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            g0, g1 = down(x, gF, ctx.axis)
        return gx, g0, g1, None, None


#: fast-math flags of the loss reductions: reordered (vectorised) sums, but NaN and infinity
#: kept, so a diverging batch still gives a non-finite loss
_REDUCE_MATH = {"reassoc", "contract", "nsz", "arcp"}


@functools.lru_cache(maxsize=None)
def _loss_kernels() -> dict:
    """The kernels of :class:`SquaredDistance` and :class:`AbsSum`, each over the rows lo <= i < hi
    of 2D arrays (one batch item a row), sums accumulated in float64."""

    reduce_jit = functools.partial(jit, fastmath=_REDUCE_MATH)

    @reduce_jit
    def squared_distance(a, b, out, lo, hi):
        """out[i] = sum_k (a[i, k] - b[i, k])^2."""
        for i in range(lo, hi):
            acc = 0.0
            for k in range(a.shape[1]):
                d = np.float64(a[i, k]) - np.float64(b[i, k])
                acc += d * d
            out[i] = acc

    @reduce_jit
    def scaled_difference(a, b, c, out, lo, hi):
        """out[i, k] = c (a[i, k] - b[i, k])."""
        for i in range(lo, hi):
            for k in range(a.shape[1]):
                out[i, k] = c * (a[i, k] - b[i, k])

    @reduce_jit
    def abs_sum(a, out, lo, hi):
        """out[i] = sum_k |a[i, k]|."""
        for i in range(lo, hi):
            acc = 0.0
            for k in range(a.shape[1]):
                acc += abs(np.float64(a[i, k]))
            out[i] = acc

    @reduce_jit
    def sign_times(a, g, out, lo, hi):
        """out[i, k] = g sign(a[i, k]), 0 at 0 and at NaN (as torch.sign)."""
        for i in range(lo, hi):
            for k in range(a.shape[1]):
                v = a[i, k]
                out[i, k] = g if v > 0 else (-g if v < 0 else 0.0)

    return {"squared_distance": squared_distance, "scaled_difference": scaled_difference, "abs_sum": abs_sum,
            "sign_times": sign_times}


def _rows(t: torch.Tensor) -> np.ndarray:
    """``t`` as a C-contiguous 2D array, one batch item a row (a scalar as one row)."""
    return _np(t).reshape(len(t), -1) if t.dim() else _np(t).reshape(1, 1)


def _row_sums(kernel: str, *arrays: np.ndarray) -> float:
    """The per-row sums of a loss kernel over 2D arrays, added in row order (thread-count independent)."""
    rows = np.zeros(len(arrays[0]))
    if arrays[0].size:
        _run(_loss_kernels()[kernel], len(rows), arrays[0].size, *arrays, rows)
    return float(rows.sum())


def _elementwise(kernel: str, scale: float, a: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    """A new tensor shaped as ``a``, filled row by row by the loss kernel
    ``kernel(a, *others, scale, out, lo, hi)`` (the arrays as :func:`_rows`, ``scale`` in their dtype)."""
    out = torch.empty(a.shape, dtype=a.dtype)
    rows = _rows(a)
    if rows.size:
        _run(_loss_kernels()[kernel], len(rows), rows.size, rows, *map(_rows, others), rows.dtype.type(scale),
             out.numpy().reshape(rows.shape))
    return out


class SquaredDistance(torch.autograd.Function):
    """``sum((a - b)^2)`` of two tensors of one shape in one pass (no difference or squared
    temporaries, each batch item's sum in float64); the backward, ``2 g (a - b)``, is one pass too
    (differentiable where a graph of it is built). In the reconstruction loss it replaces torch's
    ``mse_loss``, whose backward zero-fills its output before a second pass."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor):
        ctx.save_for_backward(a, b)
        return torch.tensor(_row_sums("squared_distance", _rows(a), _rows(b)), dtype=a.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        a, b = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of the backward: torch's ops, differentiable
            ga = (a - b) * (2 * g)
        else:  # one pass
            ga = _elementwise("scaled_difference", 2 * g.item(), a, b)
        return (ga if ctx.needs_input_grad[0] else None), (-ga if ctx.needs_input_grad[1] else None)


class AbsSum(torch.autograd.Function):
    """``sum_t sum(|t|)`` over several tensors, one pass each (no absolute-value temporaries, each
    batch item's sum in float64); the backward writes ``g sign(t)`` in one pass per tensor (torch:
    a sign pass and a product pass)."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor):
        ctx.save_for_backward(*tensors)
        return torch.tensor(sum(_row_sums("abs_sum", _rows(t)) for t in tensors), dtype=tensors[0].dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        grads = []
        for t, needed in zip(ctx.saved_tensors, ctx.needs_input_grad):
            if not needed:
                grads.append(None)
            elif torch.is_grad_enabled():  # a graph of the backward: differentiable in g
                grads.append(torch.sign(t) * g)
            else:
                grads.append(_elementwise("sign_times", g.item(), t))
        return tuple(grads)


def fusable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels take these tensors (CPU, one float dtype): :class:`SquaredDistance` and
    :class:`AbsSum` always, the filter-bank passes in zero mode (:func:`usable`)."""
    return AVAILABLE and bool(tensors) and tensors[0].dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == tensors[0].dtype for t in tensors)


def usable(x: torch.Tensor, mode: str) -> bool:
    """Whether a transform of ``x`` in ``mode`` can run on these kernels (zero mode, CPU, float)."""
    return mode == "zero" and fusable(x)


def _regraph(ctx, forward, inputs: tuple, grads: tuple) -> list:
    """A multi-level node's backward as a graph (double backward): ``forward`` recomputed with the
    three pass functions, which are exact to any order, and differentiated; None where no gradient is needed."""
    need = [i for i, t in enumerate(inputs) if ctx.needs_input_grad[i] and t is not None]
    with torch.enable_grad():
        outs = forward(*inputs)
    found = torch.autograd.grad(outs, [inputs[i] for i in need], grads, create_graph=True, allow_unused=True)
    out = [None] * len(inputs)
    for i, g in zip(need, found):
        out[i] = g
    return out


def _composed_analysis(a: torch.Tensor, F: torch.Tensor, levels: int) -> tuple[torch.Tensor, ...]:
    """:class:`Analysis2`'s outputs from the three pass functions, three nodes per level."""
    details = []
    for _ in range(levels):
        lo, hi = Down.apply(a, F, "cols")  # low / high pass along H
        a, cV = Down.apply(lo, F, "rows")
        cH, cD = Down.apply(hi, F, "rows")
        details.append((cH, cV, cD))
    return (a, *(t for level in details[::-1] for t in level))


def _composed_synthesis(F: torch.Tensor, crops: tuple, a: torch.Tensor, *details: torch.Tensor) -> torch.Tensor:
    """:class:`Synthesis2`'s output from the three pass functions, three nodes per level."""
    L = F.shape[1]
    for (nh, nw), (cH, cV, cD) in zip(crops, zip(*[iter(details)] * 3)):
        a = a[:, :nh, :nw]
        lo = Up.apply(a, cV, F, "rows", rec_len(nw, L))
        hi = Up.apply(cH, cD, F, "rows", rec_len(nw, L))
        a = Up.apply(lo, hi, F, "cols", rec_len(nh, L))
    return a


class Analysis2(torch.autograd.Function):
    """``levels`` 2D zero-mode analysis levels of a (B, H, W) as one autograd node: cA of the last
    level, then (cH, cV, cD) of every level from the last to the first, each (B, nh, nw). Its backward
    runs the transposes (:func:`_up`, :func:`_corr`) directly; where a graph of the backward is built
    it recomputes the levels from the pass functions and differentiates those (any order)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, F: torch.Tensor, levels: int):
        saved, details = [], []
        for _ in range(levels):
            lo, hi = _down(a, F, "cols")  # low / high pass along H
            cA, cV = _down(lo, F, "rows")
            cH, cD = _down(hi, F, "rows")
            saved += [a, lo, hi]
            details.append((cH, cV, cD))
            a = cA
        ctx.save_for_backward(F, *saved)
        ctx.levels = levels
        return (a, *(t for level in details[::-1] for t in level))

    @staticmethod
    def backward(ctx, gA: torch.Tensor, *g_details: torch.Tensor):
        F, *saved = ctx.saved_tensors
        if torch.is_grad_enabled() or not DIRECT_BACKWARD:
            ga, gF = _regraph(ctx, lambda a, F: _composed_analysis(a, F, ctx.levels), (saved[0], F), (gA, *g_details))
            return ga, gF, None
        L, gF, g = F.shape[1], None, gA
        for level in reversed(range(ctx.levels)):  # the last (coarsest) level first
            a, lo, hi = saved[3 * level:3 * level + 3]
            gH, gV, gD = g_details[3 * (ctx.levels - 1 - level):3 * (ctx.levels - level)]
            glo, ghi = _up(g, gV, F, "rows", lo.shape[2]), _up(gH, gD, F, "rows", hi.shape[2])
            if ctx.needs_input_grad[1]:
                part = _corr(lo, g, gV, "rows", L) + _corr(hi, gH, gD, "rows", L) + _corr(a, glo, ghi, "cols", L)
                gF = part if gF is None else gF + part
            g = _up(glo, ghi, F, "cols", a.shape[1]) if level or ctx.needs_input_grad[0] else None
        return g, gF, None


class Synthesis2(torch.autograd.Function):
    """2D zero-mode synthesis levels (the transpose of :class:`Analysis2`) as one autograd node: from
    the coarsest approximation ``a`` and the flat details (cH, cV, cD of each level, coarsest first),
    ``a`` cropped to ``crops[j]`` = (nh, nw) before level j (pywt's rule for an approximation one sample
    longer), each level's output (:func:`rec_len` of nh and nw). Its backward as :class:`Analysis2`'s."""

    @staticmethod
    def forward(ctx, F: torch.Tensor, crops: tuple, a: torch.Tensor, *details: torch.Tensor):
        L, saved, shapes, a_in = F.shape[1], [], [], a
        for (nh, nw), (cH, cV, cD) in zip(crops, zip(*[iter(details)] * 3)):
            shapes.append(a.shape)
            a = a[:, :nh, :nw].contiguous()
            lo = _up(a, cV, F, "rows", rec_len(nw, L))
            hi = _up(cH, cD, F, "rows", rec_len(nw, L))
            saved += [a, lo, hi]
            a = _up(lo, hi, F, "cols", rec_len(nh, L))
        ctx.save_for_backward(F, a_in, *saved, *details)
        ctx.crops, ctx.shapes = crops, shapes
        return a

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        F, a_in, *rest = ctx.saved_tensors
        levels = len(ctx.crops)
        saved, details = rest[:3 * levels], rest[3 * levels:]
        if torch.is_grad_enabled() or not DIRECT_BACKWARD:
            grads = _regraph(ctx, lambda F, _, a, *d: _composed_synthesis(F, ctx.crops, a, *d),
                             (F, None, a_in, *details), (g,))
            return grads[0], None, *grads[2:]
        L, gF, g_details = F.shape[1], None, [None] * len(details)
        for level in reversed(range(levels)):  # the finest level first
            a, lo, hi = saved[3 * level:3 * level + 3]
            cH, cV, cD = details[3 * level:3 * level + 3]
            glo, ghi = _down(g, F, "cols")
            ga, gV = _down(glo, F, "rows")
            gH, gD = _down(ghi, F, "rows")
            if ctx.needs_input_grad[0]:
                part = _corr(g, lo, hi, "cols", L) + _corr(glo, a, cV, "rows", L) + _corr(ghi, cH, cD, "rows", L)
                gF = part if gF is None else gF + part
            g_details[3 * level:3 * level + 3] = gH, gV, gD
            shape = ctx.shapes[level]
            if tuple(ga.shape) != tuple(shape):  # the crop's transpose: zeros where a was cut
                ga = torch.nn.functional.pad(ga, (0, shape[2] - ga.shape[2], 0, shape[1] - ga.shape[1]))
            g = ga
        return gF, None, g, *g_details


def wavedec2(a: torch.Tensor, F: torch.Tensor, levels: int) -> list:
    """``levels`` 2D zero-mode analysis levels of a (B, H, W) in pywt order:
    ``[cA, (cH, cV, cD) of the last level, ..., of the first]``."""
    if LEVEL_NODES:
        flat = Analysis2.apply(a, F, levels)
    else:
        flat = _composed_analysis(a, F, levels)
    return [flat[0], *zip(*[iter(flat[1:])] * 3)]


def waverec2(a: torch.Tensor, levels: list, F: torch.Tensor, crops: list) -> torch.Tensor:
    """The inverse of :func:`wavedec2`: from the coarsest approximation ``a`` and ``levels``
    [(cH, cV, cD), ...] (coarsest first), ``a`` cropped to ``crops[j]`` = (nh, nw) before level j."""
    details = [t for level in levels for t in level]
    if LEVEL_NODES:
        return Synthesis2.apply(F, tuple(map(tuple, crops)), a, *details)
    return _composed_synthesis(F, tuple(map(tuple, crops)), a, *details)


def analysis2(a: torch.Tensor, F: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One 2D zero-mode analysis level of a (B, H, W): (cA, cH, cV, cD), each (B, nh, nw)."""
    cA, (cH, cV, cD) = wavedec2(a, F, 1)
    return cA, cH, cV, cD


def synthesis2(cA: torch.Tensor, cH: torch.Tensor, cV: torch.Tensor, cD: torch.Tensor, F: torch.Tensor,
               shape: tuple[int, int]) -> torch.Tensor:
    """One 2D zero-mode synthesis level (the transpose of :func:`analysis2`) to ``shape`` (rh, rw):
    pywt's idwt2 length, :func:`rec_len` of the details' size (cA taken to that size)."""
    rec = tuple(rec_len(n, F.shape[1]) for n in cH.shape[1:])
    if rec != tuple(shape):
        raise ValueError(f"a zero-mode synthesis of {tuple(cH.shape[1:])} coefficients gives {rec}, not {tuple(shape)}")
    return waverec2(cA, [(cH, cV, cD)], F, [tuple(cH.shape[1:])])
