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

from awd.domain import Dataset
from awd.io import InputError, atomic_path

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf; the message names the stage and the step."""


@dataclass(frozen=True)
class TeacherConfig:
    """Settings of teacher training (the ``teacher`` section of a domain config)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    loss: str = "mse"
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict | None) -> "TeacherConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"teacher config: unknown keys {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        if cfg.optimizer not in ("adam", "sgd"):
            raise ValueError(f"teacher.optimizer: '{cfg.optimizer}' is not one of adam, sgd")
        if cfg.loss not in ("mse", "l1"):
            raise ValueError(f"teacher.loss: '{cfg.loss}' is not one of mse, l1")
        if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0:
            raise ValueError("teacher: epochs, batch_size and lr must be positive")
        return cfg


class StandardizedTeacher(nn.Module):
    """``core`` between fixed input and output standardisation: raw X in, raw targets out."""

    def __init__(self, core: nn.Module, n_targets: int):
        super().__init__()
        self.core = core
        self.register_buffer("x_shift", torch.zeros(()))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("y_shift", torch.zeros(n_targets))
        self.register_buffer("y_scale", torch.ones(n_targets))

    def set_standardization(self, X: np.ndarray, y: np.ndarray) -> None:
        """Fix the buffers from training data: one scalar for X, one per target column."""
        y_scale = y.std(axis=0)
        self.x_shift.fill_(float(X.mean()))
        self.x_scale.fill_(float(X.std()) or 1.0)
        self.y_shift.copy_(torch.as_tensor(y.mean(axis=0)))
        self.y_scale.copy_(torch.as_tensor(np.where(y_scale > 0, y_scale, 1.0)))

    def standardized(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in standardised target units (what the training loss sees)."""
        return self.core((x - self.x_shift) / self.x_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardized(x) * self.y_scale + self.y_shift


def _loss_fn(name: str):
    return nn.functional.mse_loss if name == "mse" else nn.functional.l1_loss


def _fingerprint(model: nn.Module, cfg: TeacherConfig, *splits: Dataset) -> str:
    """What a checkpoint must match to be resumed: the settings, the data and the initial
    weights and buffers (they carry the architecture and its seed)."""
    digest = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    arrays = [a for s in splits for a in (s.X, s.y)]
    arrays += [t.detach().cpu().numpy() for t in model.state_dict().values()]
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(a.reshape(-1).view(np.uint8).data)
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

    With ``checkpoint``, state is written atomically after every epoch and training resumes
    from it when present, giving the same weights as an uninterrupted run; a checkpoint of
    another run (settings, data or initial weights differ) is ignored with a warning, an
    unreadable one raises InputError.
    """
    train, val = dataset.subset("train"), dataset.subset("val")
    if len(train.X) == 0:
        raise ValueError("teacher: the train split is empty")
    device = torch.device(device)
    model = StandardizedTeacher(core, dataset.y.shape[1])
    model.set_standardization(train.X, train.y)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    loss_fn = _loss_fn(cfg.loss)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    start = 0
    fingerprint = _fingerprint(model, cfg, train, val)
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

    X = torch.as_tensor(train.X, device=device)
    Y = torch.as_tensor(train.y, device=device)
    y_shift, y_scale = model.y_shift, model.y_scale
    for epoch in range(start, cfg.epochs):
        model.train()
        order = torch.randperm(len(X), generator=gen).to(device)
        total, count = 0.0, 0
        for step, i in enumerate(range(0, len(X), cfg.batch_size)):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2 and len(X) >= 2:
                continue  # a batch of one breaks BatchNorm statistics
            pred = model.standardized(X[idx])
            loss = loss_fn(pred, (Y[idx] - y_shift) / y_scale)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"teacher training: loss is {loss.item()} at epoch {epoch + 1}, "
                                       f"step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        val_loss = evaluate_loss(model, val, cfg) if len(val.X) else math.nan
        history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_loss": val_loss})
        log.info("teacher epoch %d/%d: train %.4g val %.4g", epoch + 1, cfg.epochs, history[-1]["train_loss"],
                 val_loss)
        if checkpoint is not None:
            _save_checkpoint(Path(checkpoint), model, opt, gen, epoch + 1, history, fingerprint)
    model.eval()
    return model, history


@torch.no_grad()
def evaluate_loss(model: StandardizedTeacher, data: Dataset, cfg: TeacherConfig) -> float:
    """Mean training loss (standardised units) of ``model`` on ``data``, in eval mode."""
    was_training = model.training
    model.eval()
    pred = torch.as_tensor(predict(model, data.X, cfg.batch_size), device=model.y_shift.device,
                           dtype=torch.float32)
    y = torch.as_tensor(data.y, device=model.y_shift.device)
    loss = _loss_fn(cfg.loss)((pred - model.y_shift) / model.y_scale, (y - model.y_shift) / model.y_scale)
    model.train(was_training)
    return float(loss)


@torch.no_grad()
def predict(model: nn.Module, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predictions (n, k) in raw target units, computed in eval mode batch by batch."""
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
