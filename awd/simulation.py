"""The AWD paper's simulation study: data whose response depends on three db5 coefficients.

x in R^64 has i.i.d. N(0, 1) entries; y = beta * (sum of three detail coefficients of the
ground-truth wavelet) + N(0, noise^2). Defaults follow the reference (``ex_simulation.py``):
db5, J=4, 'zero' mode, the third detail level counted from the finest, positions 7-9,
beta = 2, noise 0.1. The teacher is a 64 -> 32 -> 32 -> 1 ReLU MLP. AWD started from a
perturbed filter should move back towards the ground-truth wavelet, more so with the
interpretation loss than without.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pywt
import torch
from torch import nn

from awd.domain import Dataset
from awd.teacher import StandardizedTeacher, TeacherConfig, fit_teacher


@dataclass(frozen=True)
class SimulationSpec:
    """Ground truth of the simulation: which coefficients drive the response."""

    d: int = 64
    wave: str = "db5"
    J: int = 4
    mode: str = "zero"
    level: int = 3                      # detail level, 1 = finest
    positions: tuple[int, ...] = (7, 8, 9)
    beta: float = 2.0
    noise: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.level <= self.J:
            raise ValueError(f"level must be in 1..J={self.J}, got {self.level}")
        n_coef = len(self.coefficients(np.zeros((1, self.d)))[0])
        if any(not 0 <= p < n_coef for p in self.positions):
            raise ValueError(f"positions {self.positions} outside the {n_coef} coefficients of level {self.level}")

    def coefficients(self, X: np.ndarray) -> np.ndarray:
        """The detail coefficients of level ``level`` of every row of ``X`` (float64)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pywt: "level too high" for d=64, J=4
            coeffs = pywt.wavedec(np.asarray(X, np.float64), self.wave, mode=self.mode, level=self.J, axis=-1)
        return coeffs[self.J + 1 - self.level]  # pywt order [cA_J, cD_J, ..., cD_1]

    def response(self, X: np.ndarray) -> np.ndarray:
        """The noise-free response: beta times the sum of the selected coefficients."""
        return self.beta * self.coefficients(X)[:, list(self.positions)].sum(axis=1)


def simulate(n: int, seed: int, spec: SimulationSpec = SimulationSpec()) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: X float32 (n, d) ~ N(0, 1), y float64 (n,) = response(X) + noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, spec.d)).astype(np.float32)
    y = spec.response(X) + spec.noise * rng.standard_normal(n)
    return X, y


def simulation_dataset(n_train: int, n_val: int, n_test: int, seed: int,
                       spec: SimulationSpec = SimulationSpec()) -> Dataset:
    """A :class:`~awd.domain.Dataset` with train/val/test splits (in that order) and target 'y'."""
    n = n_train + n_val + n_test
    X, y = simulate(n, seed, spec)
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    meta = {"source": "awd.simulation", "seed": seed, **{k: getattr(spec, k) for k in spec.__dataclass_fields__}}
    meta["positions"] = list(spec.positions)
    return Dataset(X, y, ["y"], split, np.zeros(n, dtype=np.int64), meta=meta)


def mlp_teacher(d: int = 64, hidden: int = 32, seed: int = 0) -> nn.Sequential:
    """The reference's 3-layer ReLU MLP (d -> hidden -> hidden -> 1), initialised from ``seed``
    without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, 1))


def train_teacher(dataset: Dataset, *, epochs: int = 20, batch_size: int = 100, lr: float = 3e-3,
                  hidden: int = 32, seed: int = 0) -> StandardizedTeacher:
    """Fit the MLP teacher on the train split (Adam, MSE); returns it frozen in eval mode."""
    core = mlp_teacher(dataset.X.shape[1], hidden, seed)
    cfg = TeacherConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    teacher, _ = fit_teacher(core, dataset, cfg)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def perturbed_filter(wave: str, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """The low-pass filter (pywt ``rec_lo``) of ``wave`` plus ``noise`` * N(0, 1) per tap."""
    h = np.asarray(pywt.Wavelet(wave).rec_lo, dtype=np.float64)
    return h + noise * np.random.default_rng(seed).standard_normal(h.shape)
