"""Learned wavelets: portable JSON files, wavelet functions, distances and filter-bank checks.

A learned wavelet is its low-pass filter ``h`` (pywt ``rec_lo``; the high-pass filter follows by
the QMF rule, see :func:`awd.transform.qmf`) plus the transform settings it was learned with
(``J``, boundary ``mode``, ``ndim``) and free-form provenance ``meta``. Files are small JSON
documents (never pickle), written atomically and byte-deterministically (sorted keys, floats in
Python's shortest round-trip form, so ``h`` is restored bit for bit)::

    {"format": "awd-wavelet", "version": 1, "h": [...], "J": 4, "mode": "zero", "ndim": 1,
     "metrics": {...}, "meta": {...}}

``metrics`` (see :func:`filter_bank_metrics`) is informative only and ignored when loading.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pywt
import torch

from awd.io import InputError, atomic_path, json_default
from awd.transform import MODES, DWT1d, DWT2d, _check_filter_array, pywt_wavelet, qmf_np

FORMAT = "awd-wavelet"
VERSION = 1


def _filter(h: Any, what: str = "h") -> np.ndarray:
    """``h`` as a float64 array: 1D, even length >= 2, finite (ValueError otherwise)."""
    if isinstance(h, torch.Tensor):
        h = h.detach().cpu().double().numpy()
    return _check_filter_array(np.array(h, dtype=np.float64), what)


def _check_settings(J: Any, mode: Any, ndim: Any) -> None:
    if not isinstance(J, (int, np.integer)) or isinstance(J, bool) or J < 1:
        raise ValueError(f"J must be an integer >= 1, got {J!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if ndim not in (1, 2) or isinstance(ndim, bool):
        raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")


@dataclass(frozen=True)
class LearnedWavelet:
    """A learned wavelet as stored on disk: low-pass ``h`` (float64), J, mode, ndim, meta."""

    h: np.ndarray
    J: int
    mode: str
    ndim: int
    meta: dict = field(default_factory=dict)

    @property
    def g(self) -> np.ndarray:
        """High-pass filter ``g[n] = (-1)^n h[L-1-n]``."""
        return qmf_np(self.h)

    def to_module(self, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> DWT1d | DWT2d:
        """A ``DWT1d`` / ``DWT2d`` initialised with ``h`` (``dtype`` default: torch's default;
        use float64 for pywt-exact results)."""
        cls = DWT1d if self.ndim == 1 else DWT2d
        return cls(self.h, self.J, self.mode, dtype=dtype, device=device)

    def to_pywt(self, name: str = "learned") -> pywt.Wavelet:
        """The filter bank as a ``pywt.Wavelet`` (``filter_bank = (h[::-1], g[::-1], h, g)``)."""
        return pywt_wavelet(self.h, name)


def save_wavelet(path: str | Path, h: Any, *, J: int, mode: str, ndim: int,
                 meta: dict | None = None) -> Path:
    """Write the wavelet ``h`` with its settings and ``meta`` to the JSON file ``path``
    (atomically; same inputs give the same bytes). Returns ``path``."""
    arr = _filter(h)
    _check_settings(J, mode, ndim)
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    doc = {"format": FORMAT, "version": VERSION, "h": [float(v) for v in arr], "J": int(J),
           "mode": mode, "ndim": int(ndim), "metrics": filter_bank_metrics(arr), "meta": meta}
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False, default=json_default)
    except ValueError as err:  # NaN/inf in meta
        raise ValueError(f"meta is not portable JSON: {err}") from err
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_wavelet(path: str | Path) -> LearnedWavelet:
    """Read a wavelet written by :func:`save_wavelet`; a missing, broken or foreign file
    raises :class:`awd.io.InputError` naming the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(path, f"cannot read wavelet file: {err.strerror or err}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not a JSON wavelet file: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(path, f"not an awd wavelet file (expected \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise InputError(path, f"unsupported wavelet file version {doc.get('version')!r} "
                               f"(this library reads version {VERSION})")
    missing = [k for k in ("h", "J", "mode", "ndim", "meta") if k not in doc]
    if missing:
        raise InputError(path, f"missing field(s) {', '.join(missing)}")
    h = doc["h"]
    if not isinstance(h, list) or not all(_number(v) for v in h):
        raise InputError(path, "field h must be a list of numbers")
    if not isinstance(doc["meta"], dict):
        raise InputError(path, "field meta must be an object")
    try:
        arr = _filter(h)
        _check_settings(doc["J"], doc["mode"], doc["ndim"])
    except ValueError as err:
        raise InputError(path, str(err)) from err
    return LearnedWavelet(h=arr, J=int(doc["J"]), mode=doc["mode"], ndim=int(doc["ndim"]),
                          meta=doc["meta"])


def wavefun(h: Any, level: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaling function and wavelet of the filter bank of ``h`` by the cascade algorithm
    (pywt's ``Wavelet.wavefun`` on the custom orthogonal filter bank): ``(x, phi, psi)`` on the
    grid x = k / 2^level, k = 0, 1, ..., covering the support [0, L-1].

    Normalisation (pywt's): for an orthogonal filter (sum h = sqrt 2, unit norm) the integral
    of phi is 1 and psi has unit L2 norm, both as Riemann sums with spacing 2^-level.
    """
    if not isinstance(level, (int, np.integer)) or isinstance(level, bool) or level < 1:
        raise ValueError(f"level must be an integer >= 1, got {level!r}")
    phi, psi, x = pywt_wavelet(_filter(h)).wavefun(level=int(level))
    return np.asarray(x), np.asarray(phi), np.asarray(psi)


def wavelet_distance(h1: Any, h2: Any, *, level: int = 5, sign: bool = True,
                     reverse: bool = True) -> float:
    """Distance between two wavelets for the simulation study: the smallest Euclidean norm
    ``||psi_1' - psi_2||`` over all circular shifts of psi_1 (shorter psi zero-padded at the
    end), over time reversal of psi_1 (``reverse``) and over its sign (``sign``), with psi
    sampled by :func:`wavefun` at ``level``.

    The reference implementation (awave ``misc.dist``) minimises over circular shifts and time
    reversal at level 5; ``sign=False`` reproduces it. Flipping the sign of psi gives the same
    basis, hence ``sign=True`` by default.
    """
    psi1, psi2 = wavefun(h1, level)[2], wavefun(h2, level)[2]
    n = max(psi1.size, psi2.size)
    psi1, psi2 = np.pad(psi1, (0, n - psi1.size)), np.pad(psi2, (0, n - psi2.size))
    candidates = [psi1, psi1[::-1]] if reverse else [psi1]
    if sign:
        candidates += [-c for c in candidates]
    spec2 = np.fft.rfft(psi2)
    best = math.inf
    for cand in candidates:
        # ||roll(c, s) - p||^2 = ||c||^2 + ||p||^2 - 2 sum_i p[i] c[i-s] (circular correlation)
        corr = np.fft.irfft(spec2 * np.conj(np.fft.rfft(cand)), n)
        d2 = float(np.dot(cand, cand) + np.dot(psi2, psi2) - 2.0 * corr.max())
        best = min(best, d2)
    return math.sqrt(max(best, 0.0))


def filter_bank_metrics(h: Any) -> dict[str, float]:
    """How far ``h`` is from an orthogonal wavelet filter (all 0 for db/sym/coif up to
    rounding): |sum h - sqrt 2|, |sum g|, | ||h|| - 1 |, and the largest double-shift
    orthogonality error max_m |sum_n h[n] h[n+2m] - delta_m|."""
    arr = _filter(h)
    L = arr.size
    # math.fsum: correctly rounded sums, so the values (and saved files) are platform-independent
    autocorr = [math.fsum(arr[:L - 2 * m] * arr[2 * m:]) for m in range(L // 2)]
    return {
        "lowpass_sum_error": abs(math.fsum(arr) - math.sqrt(2.0)),
        "highpass_sum": abs(math.fsum(qmf_np(arr))),
        "norm_error": abs(math.sqrt(autocorr[0]) - 1.0),
        "orthogonality_error": max(abs(c - (1.0 if m == 0 else 0.0)) for m, c in enumerate(autocorr)),
    }
