"""Training, checkpointing and loading of teacher networks, for any domain.

A domain supplies an untrained core network (``Domain.build_teacher``); this module wraps it
in :class:`StandardizedTeacher` so that it eats raw inputs and predicts targets in raw units
(AWD's lambda/gamma grids refer to raw-scale inputs and outputs, as in the reference), while
the optimiser sees standardised values. Checkpoints hold tensors and numbers only and load with
``torch.load(..., weights_only=True)``; training resumes bit-identically from the last epoch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from awd.domain import Dataset, Rows
from awd.io import InputError, atomic_path

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf; the message names the stage and the step."""


LOSSES = ("mse", "l1", "cross_entropy")
#: losses for class labels: the teacher's outputs are logits, one per class, not standardised.
CLASSIFICATION_LOSSES = ("cross_entropy",)


@dataclass(frozen=True)
class TeacherConfig:
    """Settings of teacher training (the ``teacher`` section of a domain config).

    ``loss``: "mse" or "l1" regress every target column (standardised); "cross_entropy"
    classifies: ``y`` has one column of integer class labels 0..C-1 and the network returns C
    logits (see :func:`output_names`), which are not standardised.
    ``max_train`` / ``max_val``: train / validate on at most this many samples of the split, a
    subset drawn with ``seed`` (None: all, the default).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    loss: str = "mse"
    seed: int = 0
    max_train: int | None = None
    max_val: int | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "TeacherConfig":
        d = dict(d or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"teacher: unknown key(s) {unknown}; known keys: {sorted(known)}")
        for key, value in d.items():
            kind = known[key].type
            if kind == "int | None":
                if value is None:
                    continue
                kind = "int"
            ok = (isinstance(value, int) and not isinstance(value, bool) if kind == "int" else
                  isinstance(value, (int, float)) and not isinstance(value, bool) if kind == "float" else
                  isinstance(value, str))
            if not ok:
                raise ValueError(f"teacher.{key}: expected {'an integer' if kind == 'int' else 'a number' if kind == 'float' else 'a string'}, got {value!r}")
        cfg = cls(**d)
        if cfg.optimizer not in ("adam", "sgd"):
            raise ValueError(f"teacher.optimizer: '{cfg.optimizer}' is not one of adam, sgd")
        if cfg.loss not in LOSSES:
            raise ValueError(f"teacher.loss: '{cfg.loss}' is not one of {', '.join(LOSSES)}")
        if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0:
            raise ValueError("teacher: epochs, batch_size and lr must be positive")
        for key in ("max_train", "max_val"):
            if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
                raise ValueError(f"teacher.{key}: must be >= 1 or null, got {getattr(cfg, key)}")
        return cfg

    @property
    def classifies(self) -> bool:
        return self.loss in CLASSIFICATION_LOSSES


def class_labels(y: np.ndarray) -> np.ndarray:
    """The integer class labels of a classification dataset's ``y`` (one column, values 0..C-1)."""
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise InputError(None, f"teacher.loss cross_entropy needs one target column of class labels, "
                                   f"got {y.shape[1]} columns")
        y = y[:, 0]
    if len(y) and (not np.all(np.isfinite(y)) or np.any(y < 0) or np.any(y != np.round(y))):
        raise InputError(None, "teacher.loss cross_entropy needs integer class labels 0, 1, ... in y")
    return y.astype(np.int64)


def n_outputs(dataset: Dataset, loss: str = "mse") -> int:
    """Outputs the teacher network must have: one per target column, or one logit per class."""
    if loss in CLASSIFICATION_LOSSES:
        return int(class_labels(dataset.y).max()) + 1 if len(dataset.y) else 0
    return dataset.y.shape[1]


def output_names(dataset: Dataset, loss: str = "mse") -> list[str]:
    """Names of the teacher's outputs, the values ``distill.target`` may take: the target
    names, or ``<target>=<class>`` per logit of a classifier (``dataset.meta['classes']`` names
    the classes when given)."""
    if loss not in CLASSIFICATION_LOSSES:
        return list(dataset.target_names)
    classes = dataset.meta.get("classes") or list(range(n_outputs(dataset, loss)))
    return [f"{dataset.target_names[0]}={c}" for c in classes]


class StandardizedTeacher(nn.Module):
    """``core`` between fixed input and output standardisation: raw X in, raw targets out
    (for a classifier: raw X in, logits out; the output buffers stay 0 and 1)."""

    def __init__(self, core: nn.Module, n_targets: int):
        super().__init__()
        self.core = core
        self.register_buffer("x_shift", torch.zeros(()))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("y_shift", torch.zeros(n_targets))
        self.register_buffer("y_scale", torch.ones(n_targets))

    def set_standardization(self, X: np.ndarray | Rows, y: np.ndarray | None) -> None:
        """Fix the buffers from training data: one scalar for X, one per target column;
        ``y=None`` (class outputs) leaves the outputs unscaled. ``X`` may be an index view
        (see :func:`x_moments`)."""
        mean, std = x_moments(X)
        self.x_shift.fill_(mean)
        self.x_scale.fill_(std or 1.0)
        if y is None:
            return
        y_scale = y.std(axis=0)
        self.y_shift.copy_(torch.as_tensor(y.mean(axis=0)))
        self.y_scale.copy_(torch.as_tensor(np.where(y_scale > 0, y_scale, 1.0)))

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in standardised target units (what the training loss sees)."""
        return self.core((x - self.x_shift) / self.x_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardized(x) * self.y_scale + self.y_shift


#: Training inputs up to this size are standardised from one in-memory copy with numpy's float32
#: mean and std (as they always were); larger ones chunk by chunk in float64.
EXACT_MOMENTS_BYTES = 1 << 30


def x_moments(X: np.ndarray | Rows) -> tuple[float, float]:
    """Mean and standard deviation of all values of ``X`` (an array or an index view).

    Up to :data:`EXACT_MOMENTS_BYTES` these are ``X.mean()`` and ``X.std()`` of the gathered
    float32 array, bit for bit. A larger X is never held whole: two passes of float64 sums over
    chunks (mean, then squared deviations), equal to the float32 values to about 1e-6."""
    if X.nbytes <= EXACT_MOMENTS_BYTES:
        a = np.asarray(X)
        return float(a.mean()), float(a.std())
    view = X if isinstance(X, Rows) else Rows(X, np.arange(len(X)))
    size = view.nbytes // view.dtype.itemsize
    mean = sum(float(block.sum(dtype=np.float64)) for block in view.chunks()) / size
    sq = sum(float(np.square(block.astype(np.float64) - mean).sum()) for block in view.chunks())
    return mean, math.sqrt(sq / size)


def seeded_rows(n: int, cap: int | None, seed: int) -> np.ndarray:
    """Positions of a seeded subset of at most ``cap`` of ``n`` samples, ascending (all when
    ``cap`` is None or not below ``n``); the draw of ``awd.distill``'s ``max_train``."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def _criterion(name: str):
    """loss(standardised prediction, raw target batch, model) in the training's units."""
    if name in CLASSIFICATION_LOSSES:
        return lambda pred, y, model: nn.functional.cross_entropy(pred, y[:, 0].long())
    fn = nn.functional.mse_loss if name == "mse" else nn.functional.l1_loss
    return lambda pred, y, model: fn(pred, (y - model.y_shift) / model.y_scale)


def _fingerprint(model: nn.Module, cfg: TeacherConfig, *splits: tuple[np.ndarray | Rows, np.ndarray]) -> str:
    """What a checkpoint must match to be resumed: the settings, the data (``(X, y)`` per split,
    X read chunk by chunk) and the initial weights and buffers (they carry the architecture
    and its seed). Unset subset keys are left out, so checkpoints of full-split runs stay valid."""
    settings = {k: v for k, v in asdict(cfg).items() if not (k in ("max_train", "max_val") and v is None)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    arrays = [a for s in splits for a in s]
    arrays += [t.detach().cpu().numpy() for t in model.state_dict().values()]
    for arr in arrays:
        blocks = arr.chunks() if isinstance(arr, Rows) else [np.ascontiguousarray(arr)]
        digest.update(str((np.dtype(arr.dtype).str, tuple(arr.shape))).encode())
        for block in blocks:
            digest.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                     epoch: int, history: list[dict], fingerprint: str) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "epoch": epoch, "history": [[h["epoch"], h["train_loss"], h["val_loss"]] for h in history],
             "fingerprint": fingerprint}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def fit_teacher(core: nn.Module, dataset: Dataset, cfg: TeacherConfig,
                checkpoint: str | Path | None = None,
                device: str | torch.device = "cpu") -> tuple[StandardizedTeacher, list[dict]]:
    """Train ``core`` on the train split of ``dataset``; return the wrapped eval teacher and
    the per-epoch history (train and val loss in standardised units).

    X is never copied per split: every batch is gathered from the dataset's X (memory-mapped
    when loaded from a file) by row numbers, so memory holds one batch, not the split.
    ``cfg.max_train`` / ``cfg.max_val`` restrict training / validation to seeded subsets.

    With ``checkpoint``, state is written atomically after every epoch and training resumes
    from it when present, giving the same weights as an uninterrupted run; a checkpoint of
    another run (settings, data or initial weights differ) is ignored with a warning, an
    unreadable one raises InputError.
    """
    train_rows, val_rows = dataset.indices("train"), dataset.indices("val")
    train_rows = train_rows[seeded_rows(len(train_rows), cfg.max_train, cfg.seed)]
    val_rows = val_rows[seeded_rows(len(val_rows), cfg.max_val, cfg.seed)]
    train_X, train_y = Rows(dataset.X, train_rows), dataset.y[train_rows]
    val_X, val_y = Rows(dataset.X, val_rows), dataset.y[val_rows]
    if len(train_X) == 0:
        raise ValueError("teacher: the train split is empty")
    device = torch.device(device)
    model = StandardizedTeacher(core, n_outputs(dataset, cfg.loss))
    if cfg.classifies:
        class_labels(dataset.y)
    model.set_standardization(train_X, None if cfg.classifies else train_y)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    loss_fn = _criterion(cfg.loss)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    start = 0
    fingerprint = _fingerprint(model, cfg, (train_X, train_y), (val_X, val_y))
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            state = torch.load(checkpoint, weights_only=True, map_location=device)
        except Exception as err:  # corrupt or foreign file
            raise InputError(checkpoint, f"cannot read teacher checkpoint: {err}") from None
        if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
            log.warning("teacher: %s belongs to a different run (teacher settings, data or initial weights "
                        "changed); ignoring it and starting over", checkpoint)
            state = None
    else:
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start = int(state["epoch"])
        history = [{"epoch": int(e), "train_loss": float(t), "val_loss": float(v)}
                   for e, t, v in state["history"]]
        log.info("teacher: resumed from %s at epoch %d", checkpoint, start)

    Y = torch.as_tensor(train_y, device=device)
    n = len(train_X)
    for epoch in range(start, cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for step, i in enumerate(range(0, n, cfg.batch_size)):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2 and n >= 2:
                continue  # a batch of one breaks BatchNorm statistics
            xb = torch.as_tensor(train_X[idx.numpy()], device=device)
            idx = idx.to(device)
            pred = model.standardized(xb)
            loss = loss_fn(pred, Y[idx], model)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"teacher training: loss is {loss.item()} at epoch {epoch + 1}, "
                                       f"step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        val_loss = evaluate_loss(model, (val_X, val_y), cfg) if len(val_X) else math.nan
        history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_loss": val_loss})
        log.info("teacher epoch %d/%d: train %.4g val %.4g", epoch + 1, cfg.epochs, history[-1]["train_loss"],
                 val_loss)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), model, opt, gen, epoch + 1, history, fingerprint)
    model.eval()
    return model, history


@torch.no_grad()
def evaluate_loss(model: StandardizedTeacher, data: Dataset | tuple[np.ndarray | Rows, np.ndarray],
                  cfg: TeacherConfig) -> float:
    """Mean training loss (standardised units) of ``model`` on ``data`` (a Dataset or an
    ``(X, y)`` pair, X possibly an index view), in eval mode."""
    X, y = (data.X, data.y) if isinstance(data, Dataset) else data
    was_training = model.training
    model.eval()
    pred = torch.as_tensor(predict(model, X, cfg.batch_size), device=model.y_shift.device,
                           dtype=torch.float32)
    y = torch.as_tensor(y, device=model.y_shift.device)
    loss = _criterion(cfg.loss)((pred - model.y_shift) / model.y_scale, y, model)
    model.train(was_training)
    return float(loss)


@torch.no_grad()
def predict(model: nn.Module, X: np.ndarray | Rows, batch_size: int = 256) -> np.ndarray:
    """Predictions (n, k) in raw target units (a classifier's logits), in eval mode batch by
    batch; ``X`` may be an index view (:class:`awd.domain.Rows`), read one batch at a time."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(torch.as_tensor(X[i:i + batch_size], device=device)).cpu().numpy()
           for i in range(0, len(X), batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def save_teacher(path: str | Path, model: StandardizedTeacher, meta: dict | None = None) -> None:
    """Save the wrapped teacher's state dict (tensors only) atomically."""
    state = {"state_dict": model.state_dict(), "n_targets": model.y_shift.numel()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_teacher(path: str | Path, core: nn.Module) -> StandardizedTeacher:
    """Rebuild the wrapped teacher around a freshly built ``core`` and load its weights safely
    (tensors and numbers only; anything else raises InputError naming the file)."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # missing, corrupt, or holding objects other than tensors
        raise InputError(path, f"cannot read teacher weights: {err}") from None
    if not isinstance(state, dict) or not {"state_dict", "n_targets"} <= set(state):
        raise InputError(path, "not a teacher file written by awd.teacher.save_teacher")
    model = StandardizedTeacher(core, int(state["n_targets"]))
    model.load_state_dict(state["state_dict"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def config_dict(cfg: TeacherConfig) -> dict:
    return asdict(cfg)
