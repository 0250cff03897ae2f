"""The AWD distiller: learn one low-pass filter h by Adam over mini-batches, for a grid of
(lambda, gamma) with warm start along gamma.

For one lambda (:func:`distill_path`, the unit the workflow runs as one job) the gammas are
run in increasing order; the first starts from the initial wavelet, every later one from the
previous gamma's result. Each grid point gets a fresh Adam and a shuffling generator seeded
with ``config.seed``, so a path depends only on its inputs, never on run order or on files
already on disk. Everything is deterministic on CPU: the same seed gives the same h bytes.

Objective per mini-batch (:mod:`awd.losses`): reconstruction + five wavelet-validity terms
+ lambda * L1(coefficients) + gamma * L1(TRIM attributions). The attributions use the fast
path (precomputed input gradients, :mod:`awd.trim`) where it is exact — piecewise-linear
teachers — unless ``fast_path`` says otherwise.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pywt
import torch
from torch import nn
from tqdm.auto import tqdm

from awd.domain import Rows, gather, release_pages
from awd.io import InputError, atomic_path, read_json, write_json
from awd.losses import (FILTER_TERMS, NORMALIZATIONS, TERMS, as_floats, coefficient_l1, filter_losses,
                        reconstruction_loss, total_loss)
from awd.teacher import TrainingDiverged
from awd.transform import DWT1d, DWT2d
from awd.trim import (METHODS, attributions_from_gradients, input_gradients, is_piecewise_linear, reconstruct,
                      trim_attributions)
from awd.wavelet import filter_bank_metrics

__all__ = ["DistillConfig", "DistillResult", "TrainingDiverged", "distill_path", "distill_grid", "distill_jobs",
           "distill_job", "count_jobs", "evaluate_terms", "save_results", "load_results"]

log = logging.getLogger(__name__)

FAST_PATH_MODES = ("auto", "always", "never")
ENGINES = ("plain", "batched")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
RESULTS_FORMAT = "awd-distill-results"
MICRO_BATCH_VALUES = 2 ** 21  # input values per training-step piece when micro_batch is None
#: input gradients larger than this go to a scratch memory map (a temporary file), not into memory
GRADIENT_MEMORY_BYTES = 1 << 30
#: bytes of an index view read at a time for the data digest and the input gradients
DATA_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class DistillConfig:
    """Settings of the distiller (the ``distill`` section of a domain config).

    ``fast_path``: "auto" uses precomputed input gradients only where exact
    (:func:`awd.trim.is_piecewise_linear`), "always" forces them, "never" always does double
    back-propagation. ``normalization``: "reference" (the reference's scaling, so its grids
    carry over) or "mean" (per element). ``max_train``: optional cap on the training samples
    (a seeded subset). ``max_filter_norm``: training stops as diverged when ||h|| exceeds it.
    ``progress``: tqdm bars; None shows them only on a terminal. ``seeds``: the
    distillation seeds of the protocol (every seed runs the whole grid; empty: ``seed`` alone).
    ``micro_batch``: most samples per forward/backward pass of a training step; a larger batch
    is taken in equal pieces whose gradients are summed (the same step to float rounding),
    side by side on the torch threads (:func:`_run_pieces`). None: pieces of at most
    :data:`MICRO_BATCH_VALUES` input values (32 maps of 256^2, so batches of 100 run as 4 x 25),
    where the transform's buffers stay cache-sized; smaller batches run whole, as before.
    ``engine``: "plain" runs each (lambda, seed) path on its own (:func:`distill_path`);
    "batched" runs all lambdas of a seed in one exact batched computation
    (:mod:`awd.batched`, short 1D signals only; same filters to float rounding).
    """

    wave: str = "db5"
    J: int = 4
    mode: str = "zero"
    lambdas: tuple[float, ...] = (0.0,)
    gammas: tuple[float, ...] = (0.0,)
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    target: int = 0
    fast_path: str = "auto"
    attribution: str = "saliency"
    ig_steps: int = 32
    normalization: str = "reference"
    device: str = "cpu"
    dtype: str = "float32"
    max_train: int | None = None
    micro_batch: int | None = None
    max_filter_norm: float = 10.0
    progress: bool | None = None
    seeds: tuple[int, ...] = ()
    engine: str = "plain"

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds every grid point is distilled with (``seeds``, or ``(seed,)``)."""
        return self.seeds or (self.seed,)

    @classmethod
    def from_dict(cls, d: dict | None, source: str | Path | None = None) -> "DistillConfig":
        """Build from a plain dict (a config file section); ``source`` names that file in errors."""
        d = dict(d or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InputError(source, f"distill: unknown key(s) {unknown}; known keys: {sorted(known)}")
        values = {k: _coerce(k, v, source) for k, v in d.items()}
        cfg = cls(**values)
        cfg.validate(source)
        return cfg

    def validate(self, source: str | Path | None = None) -> None:
        """Raise :class:`~awd.io.InputError` naming the first bad value."""
        def bad(key: str, problem: str) -> InputError:
            return InputError(source, f"distill.{key}: {problem}")

        for key, allowed in (("fast_path", FAST_PATH_MODES), ("attribution", METHODS),
                             ("normalization", NORMALIZATIONS), ("dtype", tuple(DTYPES)), ("engine", ENGINES)):
            if getattr(self, key) not in allowed:
                raise bad(key, f"{getattr(self, key)!r} is not one of {list(allowed)}")
        for key in ("J", "epochs", "batch_size", "ig_steps"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.max_train is not None and self.max_train < 1:
            raise bad("max_train", f"must be >= 1 or null, got {self.max_train}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise bad("micro_batch", f"must be >= 1 or null, got {self.micro_batch}")
        for key in ("lr", "max_filter_norm"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise bad(key, f"must be a positive number, got {getattr(self, key)}")
        for key in ("lambdas", "gammas"):
            vals = getattr(self, key)
            if not vals:
                raise bad(key, "must not be empty")
            if any(not math.isfinite(v) or v < 0 for v in vals):
                raise bad(key, f"values must be finite and >= 0, got {list(vals)}")
            if len(set(vals)) != len(vals):
                raise bad(key, f"values must be distinct, got {list(vals)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise bad("seeds", f"values must be distinct, got {list(self.seeds)}")
        try:
            wavelet = pywt.Wavelet(self.wave)
        except ValueError as err:
            raise bad("wave", f"unknown wavelet {self.wave!r} ({err})") from None
        if not wavelet.orthogonal:
            raise bad("wave", f"{self.wave!r} is not an orthogonal wavelet")
        if self.mode not in pywt.Modes.modes:
            raise bad("mode", f"{self.mode!r} is not one of {pywt.Modes.modes}")
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise bad("device", str(err)) from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lambdas"], d["gammas"], d["seeds"] = list(self.lambdas), list(self.gammas), list(self.seeds)
        return d


_INT_KEYS = {"J", "epochs", "batch_size", "seed", "target", "ig_steps", "max_train", "micro_batch"}
_FLOAT_KEYS = {"lr", "max_filter_norm"}
_STR_KEYS = {"wave", "mode", "fast_path", "attribution", "normalization", "device", "dtype", "engine"}


def _coerce(key: str, value: Any, source: str | Path | None) -> Any:
    """Type-check one config value (ints stay ints, YAML numbers become floats)."""
    def bad(expected: str) -> InputError:
        return InputError(source, f"distill.{key}: expected {expected}, got {value!r}")

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if key in ("lambdas", "gammas"):
        if is_number(value):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(is_number(v) for v in value):
            raise bad("a list of numbers")
        return tuple(float(v) for v in value)
    if key == "seeds":
        if value is None:
            return ()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value):
            raise bad("a list of integers")
        return tuple(value)
    if key in _INT_KEYS:
        if key in ("max_train", "micro_batch") and value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if key in _FLOAT_KEYS:
        if not is_number(value):
            raise bad("a number")
        return float(value)
    if key in _STR_KEYS:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if key == "progress":
        if value is not None and not isinstance(value, bool):
            raise bad("true, false or null")
        return value
    raise bad("a known key")  # unreachable: unknown keys are rejected before


@dataclass
class DistillResult:
    """One grid point: the learned filter, its settings and its validation losses.

    ``losses``: every term of :data:`awd.losses.TERMS` on the validation split (unweighted;
    "objective" adds the weighted total). ``metrics``: :func:`awd.wavelet.filter_bank_metrics`.
    ``train_loss``: mean training objective per epoch.
    """

    h: np.ndarray
    lam: float
    gamma: float
    init: str
    init_h: np.ndarray
    epochs: int
    wave: str
    J: int
    mode: str
    ndim: int
    losses: dict[str, float]
    metrics: dict[str, Any]
    train_loss: list[float] = field(default_factory=list)
    fast_path: bool = False
    attribution: str = "saliency"
    normalization: str = "reference"
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["h"] = [float(v) for v in self.h]
        d["init_h"] = [float(v) for v in self.init_h]
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> "DistillResult":
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in ("h", "lam", "gamma", "J", "mode", "ndim") if n not in d)
        if missing:
            raise InputError(source, f"result record lacks {missing}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(source, f"result record has unknown keys {unknown}")
        d = dict(d)
        for key in ("h", "init_h"):
            try:
                arr = np.asarray(d.get(key, d["h"]), dtype=np.float64)
            except (TypeError, ValueError):
                arr = np.array([np.nan])
            if arr.ndim != 1 or arr.size < 2 or not np.all(np.isfinite(arr)):
                raise InputError(source, f"result record: '{key}' must be a finite 1D filter, got {d.get(key)!r}")
            d[key] = arr
        d.setdefault("init", "custom")
        d.setdefault("epochs", 0)
        d.setdefault("wave", "custom")
        d.setdefault("losses", {})
        d.setdefault("metrics", {})
        return cls(**d)


def _ndim_of(X: torch.Tensor | Rows) -> int:
    if len(X.shape) not in (2, 3):
        raise InputError(None, f"X must be (n, L) signals or (n, H, W) images, got shape {tuple(X.shape)}")
    return len(X.shape) - 1


def _initial_filter(init: str | np.ndarray | Sequence[float] | None, cfg: DistillConfig) -> tuple[np.ndarray, str]:
    """The starting filter (float64) and a label for it."""
    if init is None:
        init = cfg.wave
    if isinstance(init, str):
        try:
            return np.asarray(pywt.Wavelet(init).rec_lo, dtype=np.float64), init
        except ValueError as err:
            raise InputError(None, f"distill init: unknown wavelet {init!r} ({err})") from None
    h = np.asarray(init, dtype=np.float64)
    if h.ndim != 1 or h.size < 2 or h.size % 2 or not np.all(np.isfinite(h)):
        raise InputError(None, f"distill init: need a finite 1D filter of even length, got shape {h.shape}")
    return h, "custom"


def _make_dwt(ndim: int, h0: np.ndarray, cfg: DistillConfig, device: torch.device,
              dtype: torch.dtype) -> nn.Module:
    cls = DWT1d if ndim == 1 else DWT2d
    return cls(wave=h0, J=cfg.J, mode=cfg.mode, dtype=dtype, device=device)


def _set_filter(dwt: nn.Module, h: np.ndarray) -> None:
    with torch.no_grad():
        dwt.h.copy_(torch.as_tensor(h, dtype=dwt.h.dtype))


def _frozen_teacher(teacher: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A frozen eval-mode copy of the teacher (the caller's module is left untouched)."""
    model = copy.deepcopy(teacher).to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _use_fast_path(mode: str, teacher: nn.Module) -> bool:
    exact = is_piecewise_linear(teacher)
    if mode == "never":
        return False
    if mode == "always" and not exact:
        log.warning("fast_path='always' with a teacher that is not piecewise linear: attribution values "
                    "are exact but their gradient w.r.t. h drops the teacher-curvature term")
    return mode == "always" or exact


def _subsample(X: np.ndarray | torch.Tensor | Rows, cap: int | None, seed: int):
    """A seeded subset of at most ``cap`` rows (kept in their original order); of an index view
    or a memory map, an index view (:class:`awd.domain.Rows`), so nothing is read yet."""
    if cap is None or len(X) <= cap:
        return X
    keep = np.sort(np.random.default_rng(seed).choice(len(X), cap, replace=False))
    if isinstance(X, Rows):
        return X.take(keep)
    if isinstance(X, np.memmap):
        return Rows(X, keep)
    return X[keep]


def _as_data(X, dtype: torch.dtype) -> torch.Tensor | Rows:
    """The samples as the distiller holds them: an index view (or memory map) stays an index
    view, read batch by batch (:func:`_batch`), so a split larger than memory is never copied
    whole; anything else becomes a tensor of ``dtype``."""
    if isinstance(X, Rows):
        return X
    if isinstance(X, np.memmap):
        return Rows(X, np.arange(len(X)))
    return torch.as_tensor(np.asarray(X), dtype=dtype)


def _batch(A: torch.Tensor | Rows | np.ndarray, key: torch.Tensor | slice, dtype: torch.dtype,
           device: torch.device) -> torch.Tensor:
    """Rows ``key`` (index tensor, any order, or a slice) of samples or gradients ``A`` on ``device``.

    A tensor is indexed directly. An index view or memory map is read by :func:`awd.domain.gather`
    (ascending row order, returned in the order asked as ``dtype``: the values a tensor of all of
    ``A`` would give; the memory map's pages handed back to the kernel), so only the batch stays
    resident."""
    if isinstance(A, torch.Tensor):  # index_select: one copy per row (A[key] is ~4x slower)
        return (A.index_select(0, key) if isinstance(key, torch.Tensor) else A[key]).to(device)
    if isinstance(key, torch.Tensor):
        key = key.cpu().numpy()
    if isinstance(A, np.memmap):
        block = gather(A, np.arange(len(A))[key] if isinstance(key, slice) else key)
    else:
        block = np.asarray(A[key])
    return torch.as_tensor(block, dtype=dtype).to(device)


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _chunk_rows(X, multiple: int = 1) -> int:
    """Rows per chunk of at most about :data:`DATA_CHUNK_BYTES` at 8 bytes a value (a multiple of
    ``multiple``)."""
    row_bytes = max(1, math.prod(X.shape[1:]) * 8)
    return multiple * max(1, DATA_CHUNK_BYTES // (row_bytes * multiple))


def _data_digest(*arrays: torch.Tensor | Rows, dtype: torch.dtype | None = None) -> str:
    """sha256 of each array's dtype, shape and bytes. Tensors are hashed as they are; an index
    view is read chunk by chunk as ``dtype`` and gives the digest of the tensor it stands for
    (the chunks hash into the same sha256 one after the other)."""
    digest = hashlib.sha256()
    for arr in arrays:
        if isinstance(arr, torch.Tensor):
            a = np.ascontiguousarray(arr.detach().cpu().numpy())
            header, blocks = (a.dtype.str, a.shape), [a]
        else:
            chunk = _chunk_rows(arr)
            header = (_numpy_dtype(dtype).str, tuple(int(d) for d in arr.shape))
            blocks = (_batch(arr, slice(i, i + chunk), dtype, torch.device("cpu")).numpy()
                      for i in range(0, len(arr), chunk))
        digest.update(str(header).encode())
        for block in blocks:
            digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
    return digest.hexdigest()


def _input_gradients(model: nn.Module, X: torch.Tensor | Rows, cfg: DistillConfig,
                     dtype: torch.dtype) -> torch.Tensor | np.memmap:
    """Input gradients of ``model`` for ``X`` (:func:`awd.trim.input_gradients`, batch by batch).

    A tensor X whose gradients fit :data:`GRADIENT_MEMORY_BYTES` gets them as one tensor (as
    before). Otherwise X is taken in chunks of whole batches (the same batches, so the same
    values) and the gradients, of ``dtype`` for an index view, go into a tensor or, when larger
    than :data:`GRADIENT_MEMORY_BYTES`, into a scratch memory map on a temporary file (unlinked
    at once; its pages are handed back to the kernel after every chunk)."""
    kw = dict(method=cfg.attribution, ig_steps=cfg.ig_steps)
    dtype = X.dtype if isinstance(X, torch.Tensor) else dtype
    shape = tuple(int(d) for d in X.shape)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    large = math.prod(shape) * itemsize > GRADIENT_MEMORY_BYTES
    if isinstance(X, torch.Tensor) and not large:
        return input_gradients(model, X, cfg.target, cfg.batch_size, **kw)
    if large:
        with tempfile.TemporaryFile(prefix="awd-gradients-") as fh:  # the map keeps the file until it is freed
            out = np.memmap(fh, dtype=_numpy_dtype(dtype), mode="w+", shape=shape)
    else:
        out = torch.empty(shape, dtype=dtype)
    chunk = _chunk_rows(X, cfg.batch_size)
    for i in range(0, len(X), chunk):
        g = input_gradients(model, _batch(X, slice(i, i + chunk), dtype, torch.device("cpu")), cfg.target,
                            cfg.batch_size, **kw)
        out[i:i + len(g)] = g.numpy() if large else g
        release_pages(out)
    return out


def _weighted_terms(terms: dict[str, torch.Tensor], weight: float, acc: dict[str, float]) -> None:
    for k, v in terms.items():
        acc[k] = acc.get(k, 0.0) + weight * float(v.detach())


def evaluate_terms(teacher: nn.Module, dwt: nn.Module, X: torch.Tensor, lam: float, gamma: float,
                   cfg: DistillConfig, grads: torch.Tensor | None = None) -> dict[str, float]:
    """Every loss term (and the weighted "objective") of ``dwt`` on ``X``, batch by batch.

    The data terms are averaged over the samples exactly as one batch of all of ``X`` would
    give them. ``X``: a tensor or an index view (:class:`awd.domain.Rows`). ``grads``: input
    gradients of ``teacher`` for ``X`` (a tensor or memory map; computed when None); the
    attribution values from them are exact for any teacher.
    """
    device, dtype = dwt.h.device, dwt.h.dtype
    if grads is None:
        grads = _input_gradients(teacher, X, cfg, dtype)
    acc: dict[str, float] = {}
    n = len(X)
    with torch.no_grad():
        h_terms = filter_losses(dwt.h)
    for i in range(0, n, cfg.batch_size):
        xb = _batch(X, slice(i, i + cfg.batch_size), dtype, device)
        with torch.no_grad():
            coeffs = dwt(xb)
            x_rec = reconstruct(dwt, coeffs, xb.shape)
        attr = attributions_from_gradients(dwt, xb, _batch(grads, slice(i, i + cfg.batch_size), dtype, device),
                                           cfg.attribution, coeffs=coeffs, create_graph=False)
        batch = {"reconstruction": reconstruction_loss(xb, x_rec, cfg.normalization),
                 "sparsity": coefficient_l1(coeffs, cfg.normalization),
                 "interpretation": coefficient_l1(attr, cfg.normalization)}
        _weighted_terms(batch, len(xb) / n, acc)
    _weighted_terms(h_terms, 1.0, acc)
    terms = {k: acc[k] for k in TERMS}
    terms["objective"] = float(total_loss(terms, lam, gamma))
    return terms


class _Checkpoint:
    """Resumable state of one lambda path: finished points plus the running point's h, Adam
    state, generator state and epoch. Tensors, numbers and strings only (``weights_only``)."""

    def __init__(self, path: str | Path | None, fingerprint: str):
        self.path = None if path is None else Path(path)
        self.fingerprint = fingerprint
        self.state: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            try:
                state = torch.load(self.path, weights_only=True, map_location="cpu")
            except Exception as err:  # corrupt or foreign file
                raise InputError(self.path, f"cannot read distillation checkpoint: {err}") from None
            if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
                log.warning("%s belongs to a different run (config, data, lambda, gammas or init changed); "
                            "ignoring it and starting over", self.path)
                return
            self.state = state
            log.info("resuming from %s: %d finished grid point(s), point %d at epoch %d", self.path,
                     len(state["done"]), len(state["done"]), state.get("epoch", 0))

    @property
    def done(self) -> list[dict]:
        return list(self.state.get("done", []))

    def running(self, point: int) -> dict | None:
        """The saved mid-point state of grid point ``point``, if any."""
        if self.state.get("point") == point and "h" in self.state:
            return self.state
        return None

    def save(self, done: list[dict], point: int, running: dict | None = None) -> None:
        if self.path is None:
            return
        state = {"fingerprint": self.fingerprint, "done": done, "point": point}
        if running is not None:
            state.update(running)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        self.state = state


def _fingerprint(cfg: DistillConfig, lam: float, gammas: Sequence[float], init_h: np.ndarray,
                 X_train: torch.Tensor | Rows, X_val: torch.Tensor | Rows) -> str:
    semantic = {k: v for k, v in cfg.to_dict().items() if k not in ("progress", "lambdas", "gammas", "seeds", "engine")}
    return json.dumps({"config": semantic, "lam": lam, "gammas": list(gammas), "init": init_h.tolist(),
                       "data": _data_digest(X_train, X_val, dtype=DTYPES[cfg.dtype])},
                      sort_keys=True)


def _done_record(res: DistillResult) -> dict:
    return {"h": torch.as_tensor(res.h), "train_loss": torch.tensor(res.train_loss, dtype=torch.float64),
            "losses": torch.tensor([res.losses[k] for k in (*TERMS, "objective")], dtype=torch.float64)}


def distill_path(teacher: nn.Module, X_train, X_val, *, lam: float, gammas: Sequence[float],
                 config: DistillConfig, init: str | np.ndarray | None = None,
                 checkpoint: str | Path | None = None,
                 callback: Callable[[dict], None] | None = None) -> list[DistillResult]:
    """Distill ``teacher`` for one ``lam`` along ``gammas`` (run in increasing order, warm
    started); return one :class:`DistillResult` per gamma, in increasing gamma.

    ``X_train``/``X_val``: arrays (n, L) or (n, H, W) as the teacher takes them. Index views
    (:class:`awd.domain.Rows`) and memory maps are read batch by batch, never copied whole, and
    input gradients above :data:`GRADIENT_MEMORY_BYTES` go to a scratch memory map, so memory
    stays bounded for splits of any size (the filters are those of the same data in memory). ``init``: a
    pywt wavelet name or a low-pass filter (default ``config.wave``). ``checkpoint``: a file
    written atomically after every epoch; a rerun resumes from it bit-identically.
    ``callback(info)`` is called after every epoch (and after the checkpoint is written) with
    lam, gamma, point, epoch and train_loss.
    """
    cfg = config
    if not (math.isfinite(lam) and lam >= 0):
        raise InputError(None, f"distill: lambda must be finite and >= 0, got {lam}")
    gammas = sorted(float(g) for g in gammas)
    if not gammas or any(not math.isfinite(g) or g < 0 for g in gammas) or len(set(gammas)) != len(gammas):
        raise InputError(None, f"distill: gammas must be distinct finite numbers >= 0, got {gammas}")
    device, dtype = torch.device(cfg.device), DTYPES[cfg.dtype]
    X_tr = _as_data(_subsample(X_train, cfg.max_train, cfg.seed), dtype)
    X_va = _as_data(X_val, dtype)
    ndim = _ndim_of(X_tr)
    if len(X_tr) == 0 or len(X_va) == 0 or X_va.shape[1:] != X_tr.shape[1:]:
        raise InputError(None, f"distill: need non-empty X_train and X_val of equal sample shape, got "
                               f"{tuple(X_tr.shape)} and {tuple(X_va.shape)}")
    h_init, init_label = _initial_filter(init, cfg)
    model = _frozen_teacher(teacher, device, dtype)
    fast = _use_fast_path(cfg.fast_path, model)
    dwt = _make_dwt(ndim, h_init, cfg, device, dtype)
    log.info("distill lambda=%g over %d gamma(s): %d train / %d val samples of shape %s, %s attributions, "
             "%s path", lam, len(gammas), len(X_tr), len(X_va), tuple(X_tr.shape[1:]), cfg.attribution,
             "fast" if fast else "exact (double back-prop)")
    ckpt = _Checkpoint(checkpoint, _fingerprint(cfg, lam, gammas, h_init, X_tr, X_va))
    done = ckpt.done
    grads_val = grads_train = None
    if len(done) < len(gammas):  # input gradients, once per path (validation: exact values for any teacher)
        grads_val = _input_gradients(model, X_va, cfg, dtype)
        if fast and any(g > 0 for g in gammas[len(done):]):
            grads_train = _input_gradients(model, X_tr, cfg, dtype)
    results: list[DistillResult] = []
    h_start = h_init
    for point, gamma in enumerate(gammas):
        if point < len(done):
            rec = done[point]
            h = rec["h"].numpy().astype(np.float64)
            _set_filter(dwt, h)
            losses = dict(zip((*TERMS, "objective"), rec["losses"].tolist()))
            train_loss = rec["train_loss"].tolist()
        else:
            _set_filter(dwt, h_start)
            train_loss = _train_point(model, dwt, X_tr, grads_train, lam, gamma, cfg, fast, point, done, ckpt,
                                      callback)
            h = dwt.h.detach().cpu().to(torch.float64).numpy().reshape(-1).copy()
            losses = evaluate_terms(model, dwt, X_va, lam, gamma, cfg, grads_val)
        res = DistillResult(h=h, lam=float(lam), gamma=gamma, init=init_label, init_h=h_init.copy(),
                            epochs=cfg.epochs, wave=cfg.wave, J=cfg.J, mode=cfg.mode, ndim=ndim, losses=losses,
                            metrics=filter_bank_metrics(h), train_loss=train_loss, fast_path=fast,
                            attribution=cfg.attribution, normalization=cfg.normalization, seed=cfg.seed)
        if point >= len(done):
            done.append(_done_record(res))
            ckpt.save(done, point + 1)
            log.info("distill lambda=%g gamma=%g: validation %s", lam, gamma,
                     ", ".join(f"{k}={v:.6g}" for k, v in losses.items()))
        results.append(res)
        h_start = h
    return results


def _pieces(n: int, sample_shape: Sequence[int], micro_batch: int | None) -> list[slice]:
    """The pieces of a batch of ``n`` samples that one forward/backward pass takes: as few as
    the size limit allows, of equal sizes (within one sample)."""
    size = micro_batch or max(1, MICRO_BATCH_VALUES // max(1, math.prod(sample_shape)))
    count = -(-n // size)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def _run_pieces(work: Callable[[int], Any], count: int) -> list:
    """``[work(0), ..., work(count - 1)]``. With several pieces and several torch threads the
    pieces run side by side, one per thread, each on one intra-op thread (a piece's numbers do
    not depend on how they are scheduled: the same as running them one by one on one thread);
    the transform's GEMMs are too skinny to use two threads well (``distill_throughput.md``)."""
    threads = torch.get_num_threads()
    if count < 2 or threads < 2:
        return [work(k) for k in range(count)]
    from concurrent.futures import ThreadPoolExecutor

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=min(threads, count)) as pool:
            return list(pool.map(work, range(count)))
    finally:
        torch.set_num_threads(threads)


def _data_terms(model: nn.Module, dwt: nn.Module, xb: torch.Tensor, grads: torch.Tensor | None, gamma: float,
                cfg: DistillConfig, fast: bool) -> dict[str, torch.Tensor]:
    """Reconstruction, sparsity and (for gamma > 0) interpretation terms of one batch, with graph."""
    coeffs = dwt(xb)
    terms = {"reconstruction": reconstruction_loss(xb, reconstruct(dwt, coeffs, xb.shape), cfg.normalization),
             "sparsity": coefficient_l1(coeffs, cfg.normalization)}
    if gamma > 0:
        if fast:
            attr = attributions_from_gradients(dwt, xb, grads, cfg.attribution, coeffs=coeffs, create_graph=True)
        else:
            attr = trim_attributions(model, dwt, xb, cfg.target, cfg.attribution, coeffs=coeffs,
                                     create_graph=True, ig_steps=cfg.ig_steps)
        terms["interpretation"] = coefficient_l1(attr, cfg.normalization)
    return terms


def _train_point(model: nn.Module, dwt: nn.Module, X: torch.Tensor, grads: torch.Tensor | None, lam: float,
                 gamma: float, cfg: DistillConfig, fast: bool, point: int, done: list[dict],
                 ckpt: _Checkpoint, callback: Callable[[dict], None] | None) -> list[float]:
    """Adam over ``dwt.h`` for ``cfg.epochs`` epochs (resuming from ``ckpt`` when it holds this
    point); returns the mean training objective per epoch."""
    opt = torch.optim.Adam([dwt.h], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    start, history = 0, []
    saved = ckpt.running(point)
    if saved is not None:
        with torch.no_grad():
            dwt.h.copy_(saved["h"].reshape(dwt.h.shape))
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        start, history = int(saved["epoch"]), saved["history"].tolist()
    device = dwt.h.device
    n, bs = len(X), cfg.batch_size
    steps_per_epoch = math.ceil(n / bs)
    show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    where = f"lambda={lam:g} gamma={gamma:g}"
    first: dict[str, float] = {}  # mean size of each loss term over the first epoch (logged)
    for epoch in tqdm(range(start, cfg.epochs), desc=where, disable=not show, initial=start, total=cfg.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * bs:(step + 1) * bs]
            at = f"{where}, epoch {epoch + 1}, step {step + 1} (global step {epoch * steps_per_epoch + step + 1})"
            opt.zero_grad(set_to_none=True)
            pieces = _pieces(len(idx), X.shape[1:], cfg.micro_batch)

            def piece(k: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
                """The h-gradient, loss and terms of piece k (data terms weighted by its share)."""
                sub = idx[pieces[k]]
                xb = _batch(X, sub, dwt.h.dtype, device)
                gb = None if grads is None else _batch(grads, sub, dwt.h.dtype, device)
                terms = _data_terms(model, dwt, xb, gb, gamma, cfg, fast)
                if len(pieces) > 1:
                    terms = {key: len(sub) / len(idx) * value for key, value in terms.items()}
                terms.update(filter_losses(dwt.h) if k == 0 else dict.fromkeys(FILTER_TERMS, 0.0))
                loss = total_loss(terms, lam, gamma)
                if not torch.isfinite(loss):
                    return None, loss, terms
                (g,) = torch.autograd.grad(loss, dwt.h)
                return g, loss, terms

            step_terms: dict[str, float] = {}
            loss_value = 0.0
            for g, loss, terms in _run_pieces(piece, len(pieces)):  # in piece order
                if g is None:
                    detail = ", ".join(f"{key}={v:.4g}" for key, v in as_floats(terms).items())
                    raise TrainingDiverged(f"distill {at}: loss is {float(loss.detach())} ({detail})")
                if dwt.h.grad is None:  # the gradients of the pieces add up to the batch's
                    dwt.h.grad = g
                else:
                    dwt.h.grad += g
                loss_value += float(loss.detach())
                for key, value in as_floats(terms).items():
                    step_terms[key] = step_terms.get(key, 0.0) + value
            if not torch.all(torch.isfinite(dwt.h.grad)):
                raise TrainingDiverged(f"distill {at}: gradient w.r.t. h is not finite")
            opt.step()
            norm = float(dwt.h.detach().norm())
            if not math.isfinite(norm) or norm > cfg.max_filter_norm:
                raise TrainingDiverged(f"distill {at}: ||h|| = {norm:.4g} exceeds max_filter_norm "
                                       f"{cfg.max_filter_norm:g}")
            total += loss_value * len(idx)
            if epoch == 0:
                for key, value in step_terms.items():
                    first[key] = first.get(key, 0.0) + value * len(idx) / n
        history.append(total / n)
        if epoch == 0:
            log.info("distill %s: first-epoch mean loss terms (%s normalisation): %s; weighted: lambda x sparsity "
                     "= %.4g, gamma x interpretation = %.4g", where, cfg.normalization,
                     ", ".join(f"{k}={v:.4g}" for k, v in first.items()), lam * first.get("sparsity", 0.0),
                     gamma * first.get("interpretation", 0.0))
        ckpt.save(done, point, {"h": dwt.h.detach().cpu().clone(), "optimizer": opt.state_dict(),
                                "generator": gen.get_state(), "epoch": epoch + 1,
                                "history": torch.tensor(history, dtype=torch.float64)})
        log.debug("distill %s epoch %d/%d: train objective %.6g", where, epoch + 1, cfg.epochs, history[-1])
        if callback is not None:
            callback({"lam": lam, "gamma": gamma, "point": point, "epoch": epoch + 1, "train_loss": history[-1]})
    return history


def distill_grid(teacher: nn.Module, X_train, X_val, *, config: DistillConfig,
                 init: str | np.ndarray | None = None, checkpoint_dir: str | Path | None = None,
                 callback: Callable[[dict], None] | None = None) -> list[DistillResult]:
    """All lambdas of ``config``: one independent :func:`distill_path` each (checkpoint
    ``lambda_<i>.pt`` in ``checkpoint_dir``); results ordered by lambda index, then gamma."""
    results: list[DistillResult] = []
    for i, lam in enumerate(config.lambdas):
        ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / f"lambda_{i}.pt"
        results += distill_path(teacher, X_train, X_val, lam=lam, gammas=config.gammas, config=config,
                                init=init, checkpoint=ckpt, callback=callback)
    return results


def save_results(path: str | Path, results: Sequence[DistillResult]) -> None:
    """Write all grid points into one JSON file, atomically (floats round-trip exactly)."""
    write_json(path, {"format": RESULTS_FORMAT, "version": 1, "results": [r.to_dict() for r in results]})


def load_results(path: str | Path) -> list[DistillResult]:
    """Read a file written by :func:`save_results`; bad content raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "distillation results file does not exist")
    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or not isinstance(data.get("results"), list):
        raise InputError(path, f"not an AWD distillation results file (expected format '{RESULTS_FORMAT}')")
    return [DistillResult.from_dict(r, path) if isinstance(r, dict) else _bad_record(path, r)
            for r in data["results"]]


def _bad_record(path: Path, record: Any) -> DistillResult:
    raise InputError(path, f"result record must be an object, got {type(record).__name__}")


def distill_jobs(config: DistillConfig) -> list[list[tuple[int, int]]]:
    """How the grid splits into independent jobs (the workflow runs one job each): a list of
    jobs, each a list of (lambda index, seed) paths. Engine "plain": one path per job, seeds
    outer, lambdas inner (with one seed, job i is lambda i). Engine "batched": one job per seed
    holding all its lambdas."""
    if config.engine == "batched":
        return [[(i, seed) for i in range(len(config.lambdas))] for seed in config.seed_list]
    return [[(i, seed)] for seed in config.seed_list for i in range(len(config.lambdas))]


def count_jobs(section: dict | None) -> int:
    """Number of distillation jobs of a config's ``distill`` section (for the workflow's job
    list; reads only lambdas, seed, seeds and engine)."""
    keys = ("lambdas", "seed", "seeds", "engine")
    return len(distill_jobs(DistillConfig.from_dict({k: v for k, v in (section or {}).items() if k in keys})))


def distill_job(teacher: nn.Module, X_train, X_val, *, config: DistillConfig, job: int,
                init: str | np.ndarray | None = None, checkpoint: str | Path | None = None,
                callback: Callable[[dict], None] | None = None) -> list[DistillResult]:
    """Run job ``job`` of :func:`distill_jobs`; results ordered by path (seed, lambda), then gamma.
    One checkpoint file per job (a rerun resumes bit-identically)."""
    jobs = distill_jobs(config)
    if not 0 <= job < len(jobs):
        raise InputError(None, f"distill: job {job} out of range (the config gives {len(jobs)} jobs)")
    paths = jobs[job]
    if config.engine == "batched":
        from awd.batched import distill_paths

        per_path = distill_paths(teacher, X_train, X_val, paths=[(config.lambdas[i], s) for i, s in paths],
                                 gammas=config.gammas, config=config, init=init, checkpoint=checkpoint,
                                 callback=callback)
        return [r for path in per_path for r in path]
    ((index, seed),) = paths
    cfg = config if seed == config.seed else DistillConfig.from_dict({**config.to_dict(), "seed": seed})
    return distill_path(teacher, X_train, X_val, lam=config.lambdas[index], gammas=config.gammas, config=cfg,
                        init=init, checkpoint=checkpoint, callback=callback)
