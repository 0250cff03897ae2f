"""Figures of the simulation study, drawn from the files the heads stage writes (no refitting):
``distance_vs_gamma.png`` (distance of the learned wavelet to the truth over the grid) and
``learned_wavelets.png`` (psi of the truth, the start and the learned wavelets)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pywt
from matplotlib.figure import Figure

from awd.distill import load_results
from awd.figures import save_png
from awd.wavelet import wavefun


def draw_all(cfg: dict, results_dir: Path, fig_dir: Path) -> list[Path]:
    """Both figures into ``fig_dir``; returns the written paths."""
    grid = [r for p in sorted((results_dir / "distill").glob("lambda_*.json")) for r in load_results(p)]
    points = pd.read_csv(results_dir / "grid.csv")
    truth = np.asarray(pywt.Wavelet(cfg["truth"]["wave"]).rec_lo)
    return [distance_vs_gamma(points, fig_dir / "distance_vs_gamma.png"),
            learned_wavelets(grid, truth, cfg["truth"]["wave"], fig_dir / "learned_wavelets.png")]


def distance_vs_gamma(points: pd.DataFrame, path: Path) -> Path:
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for lam, part in points.groupby("lam"):
        ax.plot(part["gamma"], part["distance"], "o-", label=f"lambda = {lam:g}")
    ax.set_xscale("symlog", linthresh=min([g for g in points["gamma"] if g > 0], default=1e-3))
    ax.set_xlabel("gamma (interpretation loss weight)")
    ax.set_ylabel("distance to the true wavelet")
    ax.set_title("Recovery of the ground-truth wavelet")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def learned_wavelets(grid: list, truth: np.ndarray, truth_name: str, path: Path) -> Path:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    x, _, psi = wavefun(truth)
    ax.plot(x, psi, "k-", lw=2, label=f"truth ({truth_name})")
    x, _, psi = wavefun(grid[0].init_h)
    ax.plot(x, psi, ":", label="initial")
    gammas = [r.gamma for r in grid]
    for r in grid:
        if r.gamma in (min(gammas), max(gammas)):
            x, _, psi = wavefun(r.h)
            ax.plot(x, psi, label=f"learned, lambda={r.lam:g}, gamma={r.gamma:g}")
    ax.set_xlabel("position (samples of the finest scale)")
    ax.set_ylabel("wavelet psi")
    ax.set_title("Wavelet psi: truth, start and learned")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)
