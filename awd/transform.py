"""Learnable orthogonal discrete wavelet transforms (1D and 2D) in PyTorch, exact to PyWavelets.

Conventions (the single place they are defined)
-----------------------------------------------
* One learnable low-pass filter ``h`` of even length L, in pywt's ``rec_lo`` convention. The
  high-pass filter is ``g = qmf(h)``, ``g[n] = (-1)^n h[L-1-n]`` (pywt's ``rec_hi``); the analysis
  filters are their reversals (``dec_lo = h[::-1]``, ``dec_hi = g[::-1]``).
* One analysis level is a stride-2 cross-correlation of the boundary-extended signal ``xp`` with
  ``W = [h; g]``: ``lo[o] = sum_k h[k] xp[2o+k]``, ``hi[o] = sum_k g[k] xp[2o+k]``. The signal sits
  at offset L-2 in ``xp`` (offset L/2-1 for 'periodization'), which reproduces pywt's ``dwt``.
* One synthesis level is the adjoint of the zero-padded analysis cropped to pywt's ``idwt`` length
  2n-L+2 (every mode but 'periodization', exactly like pywt), or the periodic adjoint with length 2n
  for 'periodization'. Odd lengths therefore reconstruct one sample longer, as in pywt.
* Coefficients are in pywt order: 1D ``[cA_J, cD_J, ..., cD_1]``; 2D
  ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]`` where cH is high-pass along axis -2
  (rows) and low-pass along axis -1. Detail entries may be ``None`` in the inverse (zeros).
* Boundary modes (:data:`MODES`): 'zero', 'symmetric' (half-sample mirror), 'reflect'
  (whole-sample mirror), 'periodic', 'periodization' (pywt's names and semantics).
* dtype: input and filter must share one floating dtype (no silent casts: a float32 signal fed to a
  float64 module raises ``TypeError``); the device follows the filter (the module's parameter).

Speed: 2D transforms in 'zero' mode on CPU (the distillation's default) run on the direct
kernels of :mod:`awd.kernels`: L multiply-adds per output, compiled by numba, with autograd
functions that are each other's derivatives (exact to any order). Everything else (other modes,
1D, other devices, an explicit ``block``, or :data:`DIRECT` off) is a GEMM on operators built
from ``h`` by scattering its taps into index patterns that depend only on the shapes (cached), so
gradients w.r.t. ``h`` and double backward (needed by the TRIM interpretation loss) are plain
autograd. Short 1D signals use one composed
J-level matrix for the analysis and one for the synthesis; longer axes are transformed level by
level with a dense per-axis matrix (short axes) or a block-Toeplitz GEMM over chunks of the
extended signal (long axes). The overlapping windows of those chunks come from a pair of
mutually adjoint autograd functions (windows / overlap-add), so derivatives of any order stay
exact. Modules cache the built operators while no gradient w.r.t. ``h`` is recorded (inference,
evaluation), and rebuild them whenever the filter values change.
"""
from __future__ import annotations

import functools
import warnings
from typing import Iterator, Sequence, Union

import numpy as np
import pywt
import torch
from torch import nn

from . import kernels

#: Boundary modes supported (pywt names).
MODES = ("zero", "symmetric", "reflect", "periodic", "periodization")

#: 1D levels whose input is at most this long are composed into one matrix (analysis and
#: synthesis); longer levels are transformed one by one.
COMPOSITE_MAX = 96
#: Axes up to this length use a dense per-level matrix; longer axes use block-Toeplitz GEMMs.
DENSE_AXIS_MAX = 96
#: Output pairs per chunk of the block-Toeplitz GEMM (at least about L/2 for long filters).
BLOCK = 8

#: Use the direct zero-mode kernels (:mod:`awd.kernels`) for 2D transforms where they apply
#: (``block=None``, CPU, float32/float64); False keeps the GEMMs everywhere (benchmarks compare both).
DIRECT = True

Wave = Union[str, "pywt.Wavelet", np.ndarray, Sequence[float], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------
def qmf(h: torch.Tensor) -> torch.Tensor:
    """High-pass filter of the low-pass ``h`` by the QMF rule ``g[n] = (-1)^n h[L-1-n]``
    (pywt's ``rec_hi`` for an orthogonal ``rec_lo``); works on the last axis, differentiable."""
    L = h.shape[-1]
    sign = torch.ones(L, dtype=h.dtype, device=h.device)
    sign[1::2] = -1
    return h.flip(-1) * sign


def qmf_np(h: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`qmf` for a 1D filter array."""
    h = np.asarray(h, dtype=np.float64)
    return h[::-1] * np.where(np.arange(h.size) % 2, -1.0, 1.0)


def _check_filter_array(h: np.ndarray, what: str) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 1 or h.size < 2 or h.size % 2:
        raise ValueError(f"{what}: need a 1D filter of even length >= 2, got shape {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{what}: filter has non-finite values")
    return h


def lowpass_filter(wave: Wave) -> np.ndarray:
    """The low-pass filter ``h`` (pywt ``rec_lo``, float64) of an orthogonal wavelet.

    ``wave`` is a pywt wavelet name ('haar', 'db5', 'sym4', 'coif2', 'dmey', ...), a
    ``pywt.Wavelet`` whose filter bank is orthogonal (``dec_lo = rec_lo[::-1]``,
    ``rec_hi = qmf(rec_lo)``, ``dec_hi = rec_hi[::-1]``), or a filter array (taken as ``h``).
    Biorthogonal and continuous wavelets raise ``ValueError``.
    """
    if isinstance(wave, torch.Tensor):
        return _check_filter_array(wave.detach().cpu().double().numpy(), "filter tensor")
    if isinstance(wave, str):
        if wave not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown discrete wavelet {wave!r}; use an orthogonal pywt wavelet "
                             "(haar, dbN, symN, coifN, dmey) or a filter array")
        wave = pywt.Wavelet(wave)
    if isinstance(wave, pywt.Wavelet):
        dec_lo, dec_hi, rec_lo, rec_hi = (np.asarray(f, np.float64) for f in wave.filter_bank)
        h = _check_filter_array(rec_lo, f"wavelet {wave.name!r}")
        tol = 1e-12 * max(1.0, np.abs(h).max())
        orthogonal = (dec_lo.shape == h.shape and rec_hi.shape == h.shape and dec_hi.shape == h.shape
                      and np.abs(dec_lo - h[::-1]).max() <= tol
                      and np.abs(rec_hi - qmf_np(h)).max() <= tol
                      and np.abs(dec_hi - rec_hi[::-1]).max() <= tol)
        if not orthogonal:
            raise ValueError(f"wavelet {wave.name!r} is not orthogonal (biorthogonal filter bank); "
                             "DWT1d/DWT2d learn one low-pass filter of an orthogonal filter bank")
        return h
    return _check_filter_array(np.asarray(wave, dtype=np.float64), "filter array")


def pywt_wavelet(h: torch.Tensor | np.ndarray, name: str = "learned") -> pywt.Wavelet:
    """A ``pywt.Wavelet`` with the orthogonal filter bank of the low-pass ``h``:
    ``filter_bank = (dec_lo, dec_hi, rec_lo, rec_hi) = (h[::-1], g[::-1], h, g)``, g = qmf(h).
    It is flagged orthogonal so that ``wavefun`` returns ``(phi, psi, x)``."""
    h = lowpass_filter(h) if isinstance(h, torch.Tensor) else _check_filter_array(h, "filter")
    g = qmf_np(h)
    w = pywt.Wavelet(name, filter_bank=(h[::-1].tolist(), g[::-1].tolist(), h.tolist(), g.tolist()))
    w.orthogonal = True
    w.biorthogonal = True
    return w


def iter_coeffs(coeffs: Sequence) -> Iterator[torch.Tensor]:
    """Every coefficient tensor of a pywt-ordered structure, flat, in order: 1D
    ``[cA, cD_J, ..., cD_1]`` or 2D ``[cA, (cH, cV, cD), ...]``. ``None`` entries are skipped."""
    for c in coeffs:
        if c is None:
            continue
        if isinstance(c, (tuple, list)):
            yield from (t for t in c if t is not None)
        else:
            yield c


# --------------------------------------------------------------------------------------------
# Shapes and index patterns (depend on sizes only; cached)
# --------------------------------------------------------------------------------------------
def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def coeff_len(n: int, L: int, mode: str) -> int:
    """Coefficients per band after one level on ``n`` samples (pywt's ``dwt_coeff_len``)."""
    return (n + 1) // 2 if mode == "periodization" else (n + L - 1) // 2


def rec_len(nc: int, L: int, mode: str) -> int:
    """Samples reconstructed by one synthesis level from ``nc`` coefficients per band."""
    return 2 * nc if mode == "periodization" else 2 * nc - L + 2


@functools.lru_cache(maxsize=4096)
def _analysis_src(n: int, L: int, mode: str) -> tuple[np.ndarray, int]:
    """Source sample of each extended-signal position (-1: zero) and the signal's offset."""
    n_out = coeff_len(n, L, mode)
    P = 2 * n_out + L - 2
    if mode == "periodization":
        left = L // 2 - 1
        src = np.minimum((np.arange(P) - left) % (n + n % 2), n - 1)
        return src, left
    left = L - 2
    i = np.arange(P) - left
    if mode == "zero":
        src = np.where((i >= 0) & (i < n), i, -1)
    elif mode == "symmetric":
        r = i % (2 * n)
        src = np.where(r < n, r, 2 * n - 1 - r)
    elif mode == "reflect":
        if n < 2:
            raise ValueError("mode 'reflect' needs at least 2 samples at every level "
                             "(lower J or use another mode)")
        r = i % (2 * n - 2)
        src = np.where(r < n, r, 2 * n - 2 - r)
    else:  # periodic
        src = i % n
    return src, left


@functools.lru_cache(maxsize=4096)
def _synthesis_dst(nc: int, L: int, mode: str) -> np.ndarray:
    """Output sample receiving each position of the full synthesis (-1: cropped away)."""
    P = 2 * nc + L - 2
    if mode == "periodization":
        return (np.arange(P) - (L // 2 - 1)) % (2 * nc)
    r = rec_len(nc, L, mode)
    if r < 1:
        raise ValueError(f"{nc} coefficients per band are too few for a filter of length {L}")
    dst = np.arange(P) - (L - 2)
    return np.where((dst >= 0) & (dst < r), dst, -1)


@functools.lru_cache(maxsize=4096)
def _index(kind: str, a: int, L: int, mode: str, device: torch.device) -> torch.Tensor:
    """Flat scatter index of the filter taps (order: output pair o, band c, tap k) into a
    matrix with one extra trailing slot that collects the taps falling outside it.

    kind 'A': analysis level matrix [2 n_out, n], rows interleaved (lo_0, hi_0, lo_1, ...)
    (a = n); 'S': synthesis level matrix [r, 2 nc], columns [lo | hi] (a = nc); 'T': analysis
    window matrix [2m, 2m+L-2] mapping a window of the extended signal to m interleaved output
    pairs; 'V': synthesis window matrix [2m+L-2, 2m] mapping windows of m+L/2-1 coefficients
    of each band ([lo window | hi window]) to 2m output samples (a = m).
    """
    k = np.arange(L)[None, None, :]
    c = np.arange(2)[None, :, None]
    if kind == "A":
        n = a
        src, _ = _analysis_src(n, L, mode)
        n_out = coeff_len(n, L, mode)
        o = np.arange(n_out)[:, None, None]
        col = src[2 * o + k]
        flat = np.where(col >= 0, (2 * o + c) * n + col, 2 * n_out * n)
    elif kind == "S":
        nc = a
        dst = _synthesis_dst(nc, L, mode)
        o = np.arange(nc)[:, None, None]
        row = dst[2 * o + k]
        flat = np.where(row >= 0, row * 2 * nc + c * nc + o, rec_len(nc, L, mode) * 2 * nc)
    elif kind == "T":
        m = a
        o = np.arange(m)[:, None, None]
        flat = (2 * o + c) * (2 * m + L - 2) + 2 * o + k
    else:
        m = a
        half = (L - 2) // 2
        o = np.arange(-half, m)[:, None, None]
        q = 2 * o + k
        row = c * (m + half) + o + half
        flat = np.where((q >= 0) & (q < 2 * m), row * 2 * m + q, (2 * m + L - 2) * 2 * m)
    flat = np.broadcast_to(flat, (flat.shape[0], 2, L)).reshape(-1)
    with torch.inference_mode(False):  # cached for later calls, which may record a graph
        return torch.tensor(flat, dtype=torch.long, device=device)


@functools.lru_cache(maxsize=4096)
def _gather_pieces(n: int, L: int, mode: str, device: torch.device):
    """Index tensors of the extension left and right of the signal, and the left length."""
    src, left = _analysis_src(n, L, mode)
    with torch.inference_mode(False):  # cached for later calls, which may record a graph
        return (torch.tensor(src[:left], dtype=torch.long, device=device),
                torch.tensor(src[left + n:], dtype=torch.long, device=device), left)


def _block_size(L: int, block: int | None) -> int:
    """Output pairs per chunk of the block-Toeplitz GEMM."""
    return block if block else max(BLOCK, (L - 1) // 2)


def _blocked(n: int, block: int | None) -> bool:
    """Block-Toeplitz (True) or dense matrix (False) for an axis of length ``n``."""
    return bool(block) or (block is None and n > DENSE_AXIS_MAX)


# --------------------------------------------------------------------------------------------
# Operators built from the filter
# --------------------------------------------------------------------------------------------
class _Bank:
    """``W = [h; g]`` and the operators built from it; ``memo`` (optional) caches operators
    between calls when no graph to ``h`` is recorded."""

    def __init__(self, h: torch.Tensor, memo: dict | None = None):
        self.h = h
        self.L = h.shape[-1]
        self.memo = memo
        self._W = None

    @property
    def W(self) -> torch.Tensor:
        if self._W is None:
            self._W = torch.stack([self.h, qmf(self.h)])
        return self._W

    def _get(self, key, build):
        if self.memo is None:
            return build()
        if key not in self.memo:
            if len(self.memo) > 256:
                self.memo.clear()
            self.memo[key] = build()
        return self.memo[key]

    def _scatter(self, kind: str, a: int, mode: str, rows: int, cols: int) -> torch.Tensor:
        idx = _index(kind, a, self.L, mode, self.h.device)
        taps = self.W.unsqueeze(0).expand(idx.numel() // (2 * self.L), 2, self.L).reshape(-1)
        flat = self.W.new_zeros(rows * cols + 1).index_add(0, idx, taps)
        return flat[:-1].view(rows, cols)

    def analysis(self, n: int, mode: str) -> torch.Tensor:
        """One level as a dense matrix [2 n_out, n], rows interleaved (lo_0, hi_0, lo_1, ...)."""
        n_out = coeff_len(n, self.L, mode)
        return self._get(("A", n, mode), lambda: self._scatter("A", n, mode, 2 * n_out, n))

    def synthesis(self, nc: int, mode: str) -> torch.Tensor:
        """One synthesis level as a dense matrix [r, 2 nc], columns [lo | hi]."""
        r = rec_len(nc, self.L, mode)
        return self._get(("S", nc, mode), lambda: self._scatter("S", nc, mode, r, 2 * nc))

    def window(self, kind: str, m: int) -> torch.Tensor:
        """Block-Toeplitz window matrix 'T' [2m, 2m+L-2] (analysis) or 'V' [2m+L-2, 2m]."""
        win = 2 * m + self.L - 2
        shape = (2 * m, win) if kind == "T" else (win, 2 * m)
        return self._get((kind, m), lambda: self._scatter(kind, m, "", *shape))

    def composite_analysis(self, n: int, J: int, mode: str) -> tuple[torch.Tensor, list[int]]:
        """The J-level analysis as one matrix [M, n], rows in pywt order, and band lengths."""
        def build():
            cur, details, lengths = None, [], []
            size = n
            for _ in range(J):
                A = self.analysis(size, mode)
                P = A if cur is None else A @ cur
                details.append(P[1::2])
                cur = P[0::2]
                size = cur.shape[0]
                lengths.append(size)
            return torch.cat([cur] + details[::-1]), [lengths[-1]] + lengths[::-1]
        return self._get(("CA", n, J, mode), build)

    def composite_synthesis(self, lengths: tuple, mode: str) -> torch.Tensor:
        """The multilevel synthesis as one matrix [r, M] for band lengths
        ``(len cA_J, len cD_J, ..., len cD_1)``; a ``None`` detail length means 'absent'
        (no columns, no trimming, as in pywt)."""
        def build():
            S = None
            size = lengths[0]
            for nd in lengths[1:]:
                nc = _matched_len(size, size if nd is None else nd)
                R = self.synthesis(nc, mode)
                lo = R[:, :nc] if S is None else R[:, :nc] @ S[:nc]
                S = lo if nd is None else torch.cat([lo, R[:, nc:]], dim=1)
                size = R.shape[0]
            return S
        return self._get(("CS", lengths, mode), build)


def _matched_len(a_len: int, d_len: int) -> int:
    """pywt's rule: an approximation one sample longer than the detail is trimmed."""
    if a_len == d_len or a_len == d_len + 1:
        return d_len
    raise ValueError(f"coefficient shape mismatch: approximation of length {a_len} "
                     f"with detail of length {d_len}")


# --------------------------------------------------------------------------------------------
# One level along one axis, interleaved band layout (lo_0, hi_0, lo_1, hi_1, ...)
# --------------------------------------------------------------------------------------------
def _pad(x: torch.Tensor, left: int, right: int, axis: int = -1) -> torch.Tensor:
    """Zero padding along ``axis`` in one pass (``F.pad`` fills the whole output first)."""
    def zeros(k):
        shape = list(x.shape)
        shape[axis] = k
        return x.new_zeros(shape)
    pieces = ([zeros(left)] if left else []) + [x] + ([zeros(right)] if right else [])
    return torch.cat(pieces, axis) if len(pieces) > 1 else x


def _extend(x: torch.Tensor, n: int, L: int, mode: str, total: int, axis: int = -1) -> torch.Tensor:
    """The boundary-extended signal (not 'zero' mode) along ``axis``, zero-filled up to length
    ``total``."""
    lo_idx, hi_idx, left = _gather_pieces(n, L, mode, x.device)
    pieces = [x.index_select(axis, lo_idx), x, x.index_select(axis, hi_idx)]
    rest = total - left - n - hi_idx.numel()
    if rest:
        shape = list(x.shape)
        shape[axis] = rest
        pieces.append(x.new_zeros(shape))
    return torch.cat(pieces, axis)


def _copy_windows(dst: torch.Tensor, band: torch.Tensor, size: int, step: int, left: int,
                  rows: bool) -> None:
    """Fill ``dst`` with the windows of ``band`` zero-extended by ``left`` (see _Windows)."""
    axis = 1 if rows else -1
    n, nb = band.shape[axis], dst.shape[0 if rows else -2]

    def windows(t):  # windows of t, laid out like dst (a view)
        return t.unfold(1, size, step).permute(1, 3, 0, 2) if rows else t.unfold(-1, size, step)

    def part(t, lo, hi):  # windows lo..hi-1
        return t[lo:hi] if rows else t[..., lo:hi, :]

    b0 = min(-(-left // step), nb)  # first window starting inside the band
    b1 = max(min((left + n - size) // step + 1, nb), b0)  # one past the last one inside it
    if b1 > b0:
        inner = windows(band.narrow(axis, b0 * step - left, n - b0 * step + left))
        part(dst, b0, b1).copy_(part(inner, 0, b1 - b0))
    for lo, hi in ((0, b0), (b1, nb)):  # boundary windows
        if hi - lo > 2:  # many (short chunks, long filter): from one zero-padded piece
            start, stop = lo * step - left, (hi - 1) * step + size - left
            s0, s1 = min(max(start, 0), n), min(max(stop, 0), n)
            s1 = max(s1, s0)
            before = max(0, min(s0 - start, stop - start))
            piece = _pad(band.narrow(axis, s0, s1 - s0), before, stop - start - (s1 - s0) - before, axis)
            part(dst, lo, hi).copy_(windows(piece))
            continue
        if hi > lo:  # one or two: zeros, then the part inside the band
            part(dst, lo, hi).zero_()
        for b in range(lo, hi):
            j0, j1 = max(0, left - b * step), min(size, left + n - b * step)
            if j1 > j0:
                src = band.narrow(axis, b * step - left + j0, j1 - j0)
                if rows:
                    dst[b, j0:j1].copy_(src.transpose(0, 1))
                else:
                    dst[..., b, j0:j1].copy_(src)


class _Windows(torch.autograd.Function):
    """Overlapping windows (``size``, ``step``) of zero-extended bands, side by side.

    Each band is placed at offset ``left`` in a zero signal of length ``total`` along its
    window axis, giving nb = (total - size) // step + 1 windows. ``rows=False``: bands
    [.., n] -> [.., nb, size * K] (last axis); ``rows=True``: bands [B, n, C] -> [nb, size * K,
    B, C] (axis 1, the layout of one batched GEMM over chunks). The zero extension is virtual.
    The adjoint is :class:`_OverlapAdd` and vice versa, so derivatives of any order are exact.
    """

    @staticmethod
    def forward(ctx, size: int, step: int, left: int, total: int, rows: bool, *bands: torch.Tensor):
        ctx.geometry = (size, step, left, total, rows)
        ctx.lengths = tuple(b.shape[1 if rows else -1] for b in bands)
        nb, K, first = (total - size) // step + 1, len(bands), bands[0]
        if rows:
            out = first.new_empty(nb, size * K, first.shape[0], first.shape[2])
        else:
            out = first.new_empty(*first.shape[:-1], nb, size * K)
        for i, band in enumerate(bands):
            dst = out[:, size * i:size * (i + 1)] if rows else out[..., size * i:size * (i + 1)]
            _copy_windows(dst, band, size, step, left, rows)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (None,) * 5 + _OverlapAdd.apply(*ctx.geometry, ctx.lengths, grad)


class _OverlapAdd(torch.autograd.Function):
    """Adjoint of :class:`_Windows`: sums the windows of each band back into the zero signal
    of length ``total`` and returns the parts at ``left`` of ``lengths`` (rows: [B, n, C])."""

    @staticmethod
    def forward(ctx, size: int, step: int, left: int, total: int, rows: bool, lengths: tuple,
                w: torch.Tensor):
        ctx.geometry = (size, step, left, total, rows)
        nb, segments = w.shape[0 if rows else -2], -(-size // step)
        length = max((nb + segments) * step, left + max(lengths))
        outs = []
        for i, n in enumerate(lengths):
            # the first segment (a full step wide) initialises the buffer; the others add on
            if rows:
                buf = w.new_empty(length, *w.shape[2:])
                buf[:nb * step].view(nb, step, *w.shape[2:]).copy_(w[:, size * i:size * i + step])
                buf[nb * step:].zero_()
            else:
                buf = w.new_empty(*w.shape[:-2], length)
                buf[..., :nb * step].view(*w.shape[:-2], nb, step).copy_(w[..., size * i:size * i + step])
                buf[..., nb * step:].zero_()
            for s in range(1, segments):
                seg = min(step, size - s * step)
                cols = slice(size * i + s * step, size * i + s * step + seg)
                if rows:
                    buf[s * step:(s + nb) * step].view(nb, step, *w.shape[2:])[:, :seg] += w[:, cols]
                else:
                    buf[..., s * step:(s + nb) * step].view(*w.shape[:-2], nb, step)[..., :seg] += w[..., cols]
            outs.append(buf[left:left + n].transpose(0, 1) if rows else buf[..., left:left + n])
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        return (None,) * 6 + (_Windows.apply(*ctx.geometry, *grads),)


def _mm_last(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``x @ M`` over the last axis as ONE 2D GEMM (torch.matmul may pick a slow batched path
    for strided or overlapping inputs)."""
    return (x.reshape(-1, x.shape[-1]) @ M).view(*x.shape[:-1], M.shape[-1])


def _bmm_chunks(M: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``M @ w[b]`` for every chunk b of row windows [nb, K, B, C] -> [nb * M_rows, B, C]."""
    nb, K, B, C = w.shape
    z = torch.bmm(M.expand(nb, *M.shape), w.view(nb, K, B * C))
    return z.view(nb * M.shape[0], B, C)


def _fold(z: torch.Tensor, offset: int, period: int, axis: int = -1) -> torch.Tensor:
    """``out[q] = sum of z[p] over p = offset + q (mod period)`` along ``axis``."""
    P = z.shape[axis]
    out = z.narrow(axis, offset, period).clone()
    start = offset - period
    while start + period > 0:  # wings left of the main period
        lo = max(start, 0)
        out.narrow(axis, lo - start, start + period - lo).add_(z.narrow(axis, lo, start + period - lo))
        start -= period
    start = offset + period
    while start < P:  # wings right of it
        hi = min(start + period, P)
        out.narrow(axis, 0, hi - start).add_(z.narrow(axis, start, hi - start))
        start += period
    return out


def _analyze_last(bank: _Bank, x: torch.Tensor, mode: str, block: int | None) -> torch.Tensor:
    """One analysis level along the last axis: interleaved bands [.., 2 n_out]."""
    n, L = x.shape[-1], bank.L
    n_out = coeff_len(n, L, mode)
    if not _blocked(n, block):
        return _mm_last(x, bank.analysis(n, mode).T)
    m = _block_size(L, block)
    nb = -(-n_out // m)
    total = 2 * m * nb + L - 2
    if mode == "zero":  # the zero extension stays virtual
        windows = _Windows.apply(2 * m + L - 2, 2 * m, L - 2, total, False, x)
    else:
        windows = _Windows.apply(2 * m + L - 2, 2 * m, 0, total, False, _extend(x, n, L, mode, total))
    y = _mm_last(windows, bank.window("T", m).T)
    return y.reshape(*y.shape[:-2], nb * 2 * m)[..., :2 * n_out]


def _analyze_rows(bank: _Bank, y: torch.Tensor, mode: str, block: int | None) -> torch.Tensor:
    """One analysis level along axis 1 of y [B, n, C]: interleaved bands, row-major
    [2 n_out, B, C] (the layout the GEMM produces without a transpose)."""
    B, n, C = y.shape
    L = bank.L
    n_out = coeff_len(n, L, mode)
    if not _blocked(n, block):
        z = bank.analysis(n, mode) @ y.transpose(0, 1).reshape(n, B * C)
        return z.view(2 * n_out, B, C)
    m = _block_size(L, block)
    nb = -(-n_out // m)
    total = 2 * m * nb + L - 2
    if mode == "zero":
        windows = _Windows.apply(2 * m + L - 2, 2 * m, L - 2, total, True, y)
    else:
        windows = _Windows.apply(2 * m + L - 2, 2 * m, 0, total, True, _extend(y, n, L, mode, total, 1))
    return _bmm_chunks(bank.window("T", m), windows)[:2 * n_out]


def _synthesis_chunks(L: int, nc: int, mode: str, m: int) -> int:
    """Chunks of 2m output samples a blocked synthesis from ``nc`` pairs must produce."""
    return -(-(2 * nc + L - 2 if mode == "periodization" else 2 * nc) // (2 * m))


def _synthesize_last(bank: _Bank, lo: torch.Tensor, hi: torch.Tensor, mode: str,
                     block: int | None) -> torch.Tensor:
    """One synthesis level along the last axis from the bands lo, hi [.., nc]."""
    L, nc = bank.L, lo.shape[-1]
    if not _blocked(2 * nc, block):
        return _mm_last(torch.cat([lo, hi], -1), bank.synthesis(nc, mode).T)
    m = _block_size(L, block)
    half, nbz = (L - 2) // 2, _synthesis_chunks(L, nc, mode, m)
    windows = _Windows.apply(m + half, m, half, m * nbz + half, False, lo, hi)
    z = _mm_last(windows, bank.window("V", m))
    z = z.reshape(*z.shape[:-2], nbz * 2 * m)
    if mode == "periodization":
        return _fold(z[..., :2 * nc + L - 2], L // 2 - 1, 2 * nc)
    return z[..., L - 2:2 * nc]


def _synthesize_rows(bank: _Bank, lo: torch.Tensor, hi: torch.Tensor, mode: str,
                     block: int | None) -> torch.Tensor:
    """One synthesis level along axis 1 from the bands lo, hi [B, nc, C]: row-major [r, B, C]."""
    B, nc, C = lo.shape
    L = bank.L
    if not _blocked(2 * nc, block):
        y = torch.cat([lo.transpose(0, 1), hi.transpose(0, 1)], 0).reshape(2 * nc, B * C)
        return (bank.synthesis(nc, mode) @ y).view(-1, B, C)
    m = _block_size(L, block)
    half, nbz = (L - 2) // 2, _synthesis_chunks(L, nc, mode, m)
    windows = _Windows.apply(m + half, m, half, m * nbz + half, True, lo, hi)
    z = _bmm_chunks(bank.window("V", m).T, windows)
    if mode == "periodization":
        return _fold(z[:2 * nc + L - 2], L // 2 - 1, 2 * nc, 0)
    return z[L - 2:2 * nc]


# --------------------------------------------------------------------------------------------
# Functional API
# --------------------------------------------------------------------------------------------
def _check_filter_tensor(h: torch.Tensor) -> None:
    if not isinstance(h, torch.Tensor) or h.dim() != 1:
        raise TypeError("the filter h must be a 1D torch tensor")
    if h.shape[0] < 2 or h.shape[0] % 2:
        raise ValueError(f"the filter h must have an even length >= 2, got {h.shape[0]}")
    if not h.is_floating_point():
        raise TypeError(f"the filter h must be floating point, got {h.dtype}")


def _check_tensor(x, h: torch.Tensor, what: str, min_dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor, got {type(x).__name__}")
    if x.dtype != h.dtype:
        raise TypeError(f"{what} has dtype {x.dtype} but the filter is {h.dtype}; convert one of "
                        "them (e.g. module.to(x.dtype) or x.to(module.h.dtype))")
    if x.device != h.device:
        raise ValueError(f"{what} is on {x.device} but the filter is on {h.device}")
    if x.dim() < min_dim:
        raise ValueError(f"{what} needs at least {min_dim} dimension(s), got shape {tuple(x.shape)}")


def _check_level(sizes: Sequence[int], L: int, J: int) -> None:
    if not isinstance(J, (int, np.integer)) or isinstance(J, bool) or J < 1:
        raise ValueError(f"J (number of levels) must be an integer >= 1, got {J!r}")
    if min(sizes) < 1:
        raise ValueError(f"cannot transform an empty axis (shape {tuple(sizes)})")
    max_level = min(pywt.dwt_max_level(s, L) for s in sizes)
    if J > max_level:
        warnings.warn(f"Level value of {J} is too high: all coefficients will experience "
                      "boundary effects.", stacklevel=3)


def _direct(x: torch.Tensor, mode: str, block: int | None) -> bool:
    """Whether this transform runs on the direct kernels of :mod:`awd.kernels` (automatic
    algorithm, zero mode, CPU float tensors, :data:`DIRECT` on) instead of the GEMMs."""
    return DIRECT and block is None and kernels.usable(x, mode)


def _wavedec(bank: _Bank, x: torch.Tensor, J: int, mode: str, block: int | None) -> list:
    _check_tensor(x, bank.h, "input", 1)
    n, L = x.shape[-1], bank.L
    _check_level([n], L, J)
    batch = x.shape[:-1]
    a, details = x.reshape(-1, n), []
    # long signals: level by level; once short (or block == 0): one composed matrix
    while len(details) < J and (block or (block is None and a.shape[-1] > COMPOSITE_MAX)):
        y = _analyze_last(bank, a, mode, block)
        a, d = y.view(*y.shape[:-1], -1, 2).unbind(-1)  # unbind: one-pass backward (stack)
        details.append(d)
    coarse = [a]
    if len(details) < J:
        A, lengths = bank.composite_analysis(a.shape[-1], J - len(details), mode)
        coarse = _mm_last(a, A.T).split(lengths, dim=-1)
    return [t.reshape(*batch, t.shape[-1]) for t in [*coarse, *details[::-1]]]


def _waverec(bank: _Bank, coeffs: Sequence, mode: str, block: int | None) -> torch.Tensor:
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) < 2:
        raise ValueError("coefficients must be a list [cA_J, cD_J, ..., cD_1] with J >= 1")
    a = coeffs[0]
    _check_tensor(a, bank.h, "approximation coefficients", 1)
    batch = a.shape[:-1]
    for d in coeffs[1:]:
        if d is not None:
            _check_tensor(d, bank.h, "detail coefficients", 1)
            if d.shape[:-1] != batch:
                raise ValueError(f"detail coefficients have batch shape {tuple(d.shape[:-1])}, "
                                 f"approximation {tuple(batch)}")
    # the coarse levels whose reconstruction stays short: one composed matrix
    lengths = [c if c is None else c.shape[-1] for c in coeffs]
    composed, size = 0, lengths[0]
    for nd in lengths[1:]:
        r = rec_len(_matched_len(size, size if nd is None else nd), bank.L, mode)
        if block or (block is None and r > COMPOSITE_MAX):
            break
        composed, size = composed + 1, r
    a = coeffs[0].reshape(-1, lengths[0])
    if composed:
        flat = [c.reshape(-1, c.shape[-1]) for c in coeffs[:composed + 1] if c is not None]
        S = bank.composite_synthesis(tuple(lengths[:composed + 1]), mode)
        a = _mm_last(torch.cat(flat, dim=-1), S.T)
    for d in coeffs[composed + 1:]:
        nc = _matched_len(a.shape[-1], a.shape[-1] if d is None else d.shape[-1])
        a = a[..., :nc]
        d = torch.zeros_like(a) if d is None else d.reshape(-1, nc)
        a = _synthesize_last(bank, a, d, mode, block)
    return a.reshape(*batch, a.shape[-1])


def _wavedec2(bank: _Bank, x: torch.Tensor, J: int, mode: str, block: int | None) -> list:
    _check_tensor(x, bank.h, "input", 2)
    H, W = x.shape[-2:]
    _check_level([H, W], bank.L, J)
    batch = x.shape[:-2]
    a = x.reshape(-1, H, W)
    details = []
    if _direct(x, mode, block):
        a, *levels = kernels.wavedec2(a, bank.W, J)
        return [a.reshape(*batch, *a.shape[-2:])] + [tuple(t.reshape(*batch, *t.shape[-2:]) for t in level)
                                                     for level in levels]
    for _ in range(J):
        z = _analyze_rows(bank, _analyze_last(bank, a, mode, block), mode, block)  # [2nh, B, 2nw]
        # bands[c][r] (c: band along W, r: along H); unbind keeps the backward to two stacks
        bands = [t.unbind(1) for t in z.view(z.shape[0] // 2, 2, z.shape[1], -1, 2).unbind(-1)]
        a, cH, cV, cD = (bands[c][r].transpose(0, 1) for r, c in ((0, 0), (1, 0), (0, 1), (1, 1)))
        details.append(tuple(t.reshape(*batch, *t.shape[-2:]) for t in (cH, cV, cD)))
    return [a.reshape(*batch, *a.shape[-2:])] + details[::-1]


def _waverec2(bank: _Bank, coeffs: Sequence, mode: str, block: int | None) -> torch.Tensor:
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) < 2:
        raise ValueError("coefficients must be a list [cA_J, (cH_J, cV_J, cD_J), ...] with J >= 1")
    a = coeffs[0]
    _check_tensor(a, bank.h, "approximation coefficients", 2)
    batch = a.shape[:-2]
    a = a.reshape(-1, *a.shape[-2:])
    direct, shape, crops, levels = _direct(a, mode, block), tuple(a.shape[-2:]), [], []
    for level in coeffs[1:]:
        level = (None, None, None) if level is None else tuple(level)
        if len(level) != 3:
            raise ValueError("each 2D detail level must be a tuple (cH, cV, cD)")
        shapes = set()
        for d in level:
            if d is not None:
                _check_tensor(d, bank.h, "detail coefficients", 2)
                if d.shape[:-2] != batch:
                    raise ValueError(f"detail coefficients have batch shape {tuple(d.shape[:-2])}, "
                                     f"approximation {tuple(batch)}")
                shapes.add(tuple(d.shape[-2:]))
        if len(shapes) > 1:
            raise ValueError(f"all detail shapes of a level must be equal, got {sorted(shapes)}")
        nh, nw = (_matched_len(s, t) for s, t in zip(shape, shapes.pop() if shapes else shape))
        shape = (rec_len(nh, bank.L, mode), rec_len(nw, bank.L, mode))  # this level's output
        if direct:  # all levels in one call of the kernels, once every level is checked
            crops.append((nh, nw))
            levels.append(tuple(a.new_zeros(len(a), nh, nw) if d is None else d.reshape(-1, nh, nw) for d in level))
            continue
        a = a[:, :nh, :nw]
        cH, cV, cD = (torch.zeros_like(a) if d is None else d.reshape(-1, nh, nw) for d in level)
        u0 = _synthesize_last(bank, a, cV, mode, block)  # along W: [B, nh, rw]
        u1 = _synthesize_last(bank, cH, cD, mode, block)
        a = _synthesize_rows(bank, u0, u1, mode, block).transpose(0, 1)  # along H: [B, rh, rw]
    if direct:
        a = kernels.waverec2(a, levels, bank.W, crops)
    return a.contiguous().reshape(*batch, *a.shape[-2:])


def wavedec(x: torch.Tensor, h: torch.Tensor, J: int, mode: str = "zero", *,
            block: int | None = None) -> list[torch.Tensor]:
    """J-level 1D DWT of ``x`` (..., N) along the last axis with low-pass filter ``h`` (L,):
    ``[cA_J, cD_J, ..., cD_1]``, equal to ``pywt.wavedec(x, pywt_wavelet(h), mode, J)``.

    Differentiable w.r.t. ``x`` and ``h`` (twice). ``block`` selects the algorithm (results are
    the same): None = automatic, 0 = composed dense matrices, k > 0 = level-by-level
    block-Toeplitz GEMMs with k output pairs per chunk.
    """
    _check_filter_tensor(h)
    return _wavedec(_Bank(h), x, J, _check_mode(mode), block)


def waverec(coeffs: Sequence, h: torch.Tensor, mode: str = "zero", *,
            block: int | None = None) -> torch.Tensor:
    """Inverse of :func:`wavedec` (``pywt.waverec``): odd lengths come back one sample longer;
    ``None`` details count as zeros."""
    _check_filter_tensor(h)
    return _waverec(_Bank(h), coeffs, _check_mode(mode), block)


def wavedec2(x: torch.Tensor, h: torch.Tensor, J: int, mode: str = "zero", *,
             block: int | None = None) -> list:
    """J-level separable 2D DWT of ``x`` (..., H, W) over the last two axes:
    ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]``, equal to ``pywt.wavedec2``.
    ``block`` as in :func:`wavedec` (0 = dense per-axis matrices); None takes the direct kernels
    of :mod:`awd.kernels` in 'zero' mode on CPU (the same values to float rounding)."""
    _check_filter_tensor(h)
    return _wavedec2(_Bank(h), x, J, _check_mode(mode), block)


def waverec2(coeffs: Sequence, h: torch.Tensor, mode: str = "zero", *,
             block: int | None = None) -> torch.Tensor:
    """Inverse of :func:`wavedec2` (``pywt.waverec2``); ``None`` details count as zeros."""
    _check_filter_tensor(h)
    return _waverec2(_Bank(h), coeffs, _check_mode(mode), block)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------
class _DWT(nn.Module):
    """Shared part of :class:`DWT1d` and :class:`DWT2d`: the filter parameter and its cache."""

    ndim: int = 0

    def __init__(self, wave: Wave = "db5", J: int = 4, mode: str = "zero", *,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        h = lowpass_filter(wave)
        if not isinstance(J, (int, np.integer)) or isinstance(J, bool) or J < 1:
            raise ValueError(f"J (number of levels) must be an integer >= 1, got {J!r}")
        self.J = int(J)
        self.mode = _check_mode(mode)
        dtype = dtype or torch.get_default_dtype()
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be floating point, got {dtype}")
        self.h = nn.Parameter(torch.tensor(h, dtype=dtype, device=device))
        self._memo: dict = {}
        self._memo_h: tuple | None = None

    @property
    def g(self) -> torch.Tensor:
        """High-pass filter ``qmf(h)`` (differentiable)."""
        return qmf(self.h)

    @property
    def filter_length(self) -> int:
        return self.h.shape[-1]

    def extra_repr(self) -> str:
        return f"L={self.filter_length}, J={self.J}, mode={self.mode!r}"

    def to_pywt(self, name: str = "learned") -> pywt.Wavelet:
        """The current filter bank as a ``pywt.Wavelet`` (float64)."""
        return pywt_wavelet(self.h, name)

    def _bank(self) -> _Bank:
        """The filter bank for this call: live ``h`` when a graph to it is recorded, otherwise a
        detached ``h`` with operators memoised until its values change."""
        h = self.h
        _check_filter_tensor(h)
        if torch.is_grad_enabled() and h.requires_grad:
            return _Bank(h)
        key = (h.dtype, h.device, torch.is_inference_mode_enabled())
        if self._memo_h is None or self._memo_h[0] != key or not torch.equal(self._memo_h[1], h):
            self._memo = {}
            self._memo_h = (key, h.detach().clone())
        return _Bank(h.detach(), self._memo)


class DWT1d(_DWT):
    """Learnable orthogonal 1D DWT with one low-pass filter ``h`` (``nn.Parameter``, pywt
    ``rec_lo``), ``J`` levels, boundary ``mode``; input (..., N).

    ``dwt(x)`` returns ``[cA_J, cD_J, ..., cD_1]`` (= ``pywt.wavedec``), ``dwt.inverse(coeffs)``
    reconstructs (= ``pywt.waverec``). ``wave``: an orthogonal pywt wavelet name or
    ``pywt.Wavelet``, or a filter array. The parameter is created in ``dtype`` (default: torch's
    default dtype); build in float64 for pywt-exact results (``.double()`` on a float32 module
    keeps the float32-rounded filter). Inputs must have the parameter's dtype and device
    (``TypeError`` / ``ValueError`` otherwise; nothing is cast silently).
    """

    ndim = 1

    def forward(self, x: torch.Tensor, *, block: int | None = None) -> list[torch.Tensor]:
        return _wavedec(self._bank(), x, self.J, self.mode, block)

    def inverse(self, coeffs: Sequence, *, block: int | None = None) -> torch.Tensor:
        return _waverec(self._bank(), coeffs, self.mode, block)


class DWT2d(_DWT):
    """Learnable orthogonal separable 2D DWT over the last two axes (..., H, W), same filter
    along both axes; ``dwt(x)`` returns ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]``
    (= ``pywt.wavedec2``), ``dwt.inverse(coeffs)`` = ``pywt.waverec2``. See :class:`DWT1d`."""

    ndim = 2

    def forward(self, x: torch.Tensor, *, block: int | None = None) -> list:
        return _wavedec2(self._bank(), x, self.J, self.mode, block)

    def inverse(self, coeffs: Sequence, *, block: int | None = None) -> torch.Tensor:
        return _waverec2(self._bank(), coeffs, self.mode, block)
