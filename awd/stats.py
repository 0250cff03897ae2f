"""Metrics and bootstrap standard errors shared by every domain's result table."""
from __future__ import annotations

from typing import Callable

import numpy as np


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot (sklearn's definition)."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    ss_tot = np.sum((y_true - y_true.mean(axis=0)) ** 2)
    if ss_tot == 0:
        return float("nan")
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / ss_tot)


def bootstrap_se(metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray,
                 y_pred: np.ndarray, n_boot: int = 1000, seed: int = 0) -> float:
    """Standard deviation of ``metric`` over ``n_boot`` resamples of the rows (with replacement)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if n != len(y_pred):
        raise ValueError(f"bootstrap_se: {n} true values but {len(y_pred)} predictions")
    if n < 2 or n_boot < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    values = np.array([metric(y_true[i], y_pred[i]) for i in idx])
    return float(np.nanstd(values, ddof=1))
