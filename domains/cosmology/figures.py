"""Figures of the cosmology domain, drawn from the files ``fit_heads`` writes (no refitting).

PNG files (matplotlib's object API, no pyplot state, so any backend works):
``wavelet_grid.png`` (learned psi over lambda x gamma), ``selection.png`` (val RMSE over the
grid), ``selected_wavelet.png`` (phi, psi and the 3x3 kernels of the selected wavelet vs DB5),
``peak_histograms.png`` (mean peak histograms per cosmology for every filter),
``predicted_vs_true.png`` (test Omega_m of every method) and ``attribution_map.png`` (a map,
its reconstruction from the most important wavelet coefficients, its pixel attributions).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pywt
from matplotlib.figure import Figure

from awd.figures import require_file, save_png
from awd.io import read_json
from awd.transform import qmf_np
from awd.wavelet import wavefun
from domains.cosmology.domain import HEADS_DIR, METHODS
from domains.cosmology.peaks import KERNEL_NAMES

DPI = 110
#: The ingest's dataset, relative to the domain's results folder (its meta holds the pixel scale).
DATASET_FILE = Path("data") / "dataset.npz"


def _save(fig: Figure, path: Path) -> Path:
    return save_png(fig, path, DPI)


def _require(path: Path) -> Path:
    return require_file(path, "run the heads stage first")


def _wavefun(h, level: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phi, psi, x) of the orthogonal filter bank of ``h``."""
    x, phi, psi = wavefun(np.asarray(h, dtype=np.float64), level=level)
    return phi, psi, x


def draw_all(cfg: dict, results_dir: Path, fig_dir: Path) -> list[Path]:
    """Every figure of the domain into ``fig_dir``; returns the written paths."""
    heads = results_dir / HEADS_DIR
    grid = read_json(_require(heads / "grid.json"))
    fig_dir.mkdir(parents=True, exist_ok=True)
    return [
        wavelet_grid(grid, fig_dir / "wavelet_grid.png"),
        selection_map(grid, fig_dir / "selection.png"),
        selected_wavelet(grid, fig_dir / "selected_wavelet.png"),
        peak_histograms(_require(heads / "histograms.npz"), fig_dir / "peak_histograms.png"),
        predicted_vs_true(_require(heads / "predictions.csv"), _require(results_dir / "table.csv"),
                          fig_dir / "predicted_vs_true.png"),
        attribution_map(_require(heads / "attribution.npz"), fig_dir / "attribution_map.png",
                        pixel_arcmin=_pixel_arcmin(results_dir / DATASET_FILE)),
    ]


def _pixel_arcmin(dataset: Path) -> float | None:
    """Working pixel scale (arcmin) recorded by the ingest in the dataset's meta; None without it."""
    if not dataset.is_file():
        return None
    with np.load(dataset, allow_pickle=False) as z:
        if "meta" not in z.files:
            return None
        value = json.loads(str(z["meta"])).get("pixel_arcmin")
    return float(value) if value else None


def _grid_axes(grid: dict) -> tuple[list[float], list[float], dict[tuple[float, float], int]]:
    lams = sorted({w["lam"] for w in grid["wavelets"]})
    gammas = sorted({w["gamma"] for w in grid["wavelets"]})
    where = {(w["lam"], w["gamma"]): i for i, w in enumerate(grid["wavelets"])}
    return lams, gammas, where


def wavelet_grid(grid: dict, path: Path) -> Path:
    """psi of every learned wavelet, lambda in rows and gamma in columns; the selected one in red,
    DB5 (the warm start) drawn on top as a dashed black line."""
    lams, gammas, where = _grid_axes(grid)
    _, psi_db5, x_db5 = _wavefun(pywt.Wavelet("db5").rec_lo)
    fig = Figure(figsize=(2.4 * len(gammas) + 0.8, 1.9 * len(lams) + 1.0), layout="constrained")
    axes = fig.subplots(len(lams), len(gammas), squeeze=False, sharex=True, sharey=True)
    handles = {}
    for r, lam in enumerate(lams):
        for c, gamma in enumerate(gammas):
            ax = axes[r, c]
            i = where.get((lam, gamma))
            if i is None:
                ax.set_axis_off()
                continue
            _, psi, x = _wavefun(grid["wavelets"][i]["h"])
            selected = i == grid["selected"]
            handles["selected AWD" if selected else "learned (AWD)"], = ax.plot(
                x, psi, color="C3" if selected else "C0", lw=1.4, zorder=2)
            handles["DB5 (warm start)"], = ax.plot(x_db5, psi_db5, color="k", lw=0.9, ls="--", zorder=3)
            ax.set_title(f"$\\lambda$={lam:g}, $\\gamma$={gamma:g}\nval RMSE {min(grid['wavelets'][i]['val_rmse']):.4f}",
                         fontsize=8)
            if r == len(lams) - 1:
                ax.set_xlabel("t (filter taps)", fontsize=8)
            if c == 0:
                ax.set_ylabel("$\\psi(t)$", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=len(handles), fontsize=8)
    fig.suptitle("Learned wavelets $\\psi$ over the ($\\lambda$, $\\gamma$) grid", fontsize=10)
    return _save(fig, path)


def selection_map(grid: dict, path: Path) -> Path:
    """Validation RMSE of the chi^2 head (best edge) for every (lambda, gamma), DB5 for reference."""
    lams, gammas, where = _grid_axes(grid)
    values = np.full((len(lams), len(gammas)), np.nan)
    for (lam, gamma), i in where.items():
        values[lams.index(lam), gammas.index(gamma)] = min(grid["wavelets"][i]["val_rmse"])
    fig = Figure(figsize=(1.2 * len(gammas) + 2.8, 0.8 * len(lams) + 1.8), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(values, cmap="viridis_r", aspect="auto")
    for r in range(len(lams)):
        for c in range(len(gammas)):
            if np.isfinite(values[r, c]):
                ax.text(c, r, f"{values[r, c]:.4f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(gammas)), [f"{g:g}" for g in gammas], fontsize=7, rotation=45)
    ax.set_yticks(range(len(lams)), [f"{lam:g}" for lam in lams], fontsize=7)
    ax.set_xlabel("$\\gamma$ (interpretation loss)")
    ax.set_ylabel("$\\lambda$ (sparsity)")
    ax.set_title(f"Val RMSE($\\Omega_m$), best edge; DB5: {min(grid['db5_val_rmse']):.4f}", fontsize=9)
    fig.colorbar(im, ax=ax, label="val RMSE($\\Omega_m$)")
    return _save(fig, path)


def selected_wavelet(grid: dict, path: Path) -> Path:
    """phi and psi of the selected wavelet vs DB5, and both sets of 3x3 peak kernels on one
    colour scale per row."""
    from domains.cosmology.peaks import extract_patches

    sel = grid["wavelets"][grid["selected"]]
    h_db5 = np.asarray(pywt.Wavelet("db5").rec_lo)
    g_db5 = qmf_np(h_db5)
    kernels = {"AWD": np.asarray(sel["kernels"]), "DB5": extract_patches(h_db5, g_db5)}
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    fig.suptitle(f"Selected wavelet: $\\lambda$={sel['lam']:g}, $\\gamma$={sel['gamma']:g}", fontsize=10)
    gs = fig.add_gridspec(2, 7, width_ratios=[1.4, 1.4, 1, 1, 1, 1, 0.12])
    for row, (fn, name, ylabel) in enumerate([(0, "scaling function", "$\\phi(t)$"),
                                              (1, "wavelet", "$\\psi(t)$")]):
        ax = fig.add_subplot(gs[row, :2])
        for h, label, color, style in [(h_db5, "DB5", "k", "--"), (np.asarray(sel["h"]), "AWD (selected)", "C3", "-")]:
            out = _wavefun(h)
            ax.plot(out[2], out[fn], color=color, ls=style, label=label)
        ax.set_title(f"{ylabel} ({name})", fontsize=9)
        ax.set_xlabel("t (filter taps)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for row, (label, ks) in enumerate(kernels.items()):
        vmax = float(np.abs(ks).max()) or 1.0
        for k, kname in enumerate(KERNEL_NAMES):
            ax = fig.add_subplot(gs[row, 2 + k])
            im = ax.imshow(ks[k], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_title(f"{label} {kname} (3x3)", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        cax = fig.add_subplot(gs[row, 6])
        fig.colorbar(im, cax=cax, label=f"{label} kernel weight")
    return _save(fig, path)


def _spread(n: int, k: int) -> np.ndarray:
    """Up to ``k`` indices evenly spread over 0..n-1."""
    return np.unique(np.round(np.linspace(0, n - 1, min(n, k))).astype(int))


#: x-axis labels of the histogram panels (what a peak's value is).
_HIST_XLABEL = {"height": "peak height $\\kappa$", "laplace": "Laplace filter at peaks",
                "roberts": "Roberts cross at peaks", "awd": "AWD {} filter at peaks",
                "db5": "DB5 {} filter at peaks"}
#: Most cosmologies drawn in one panel; beyond that an even spread over Omega_m is drawn.
MAX_HIST_COSMOLOGIES = 12


def peak_histograms(npz: Path, path: Path) -> Path:
    """Mean peak histograms per map (+- standard error) of every cosmology (an even spread over
    Omega_m of at most MAX_HIST_COSMOLOGIES, named in the legend), coloured by Omega_m."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    with np.load(npz, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    params = data["cosmology_params"]
    order = np.argsort(params[:, 1], kind="stable")
    shown = order[_spread(len(order), MAX_HIST_COSMOLOGIES)]
    counts = data.get("cosmology_counts")
    cmap = colormaps["viridis"]
    colours = {c: cmap(i / max(1, len(shown) - 1)) for i, c in enumerate(shown)}
    panels = [("height", 0, "peak height"), ("laplace", 0, "Laplace"), ("roberts", 0, "Roberts cross")]
    panels += [("awd", k, f"AWD {name}") for k, name in enumerate(KERNEL_NAMES)]
    panels += [("db5", k, f"DB5 {name}") for k, name in enumerate(KERNEL_NAMES)]
    fig = Figure(figsize=(15, 9.5), layout="constrained")
    axes = fig.subplots(3, 4).ravel()
    for ax, (slug, k, title) in zip(axes[[0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]], panels):
        edges = data[f"{slug}_edges"]
        n_bins = len(edges) - 1
        centres = 0.5 * (edges[1:] + edges[:-1])
        for c in shown:
            mean = data[f"{slug}_mean"][c, k * n_bins:(k + 1) * n_bins]
            sem = data[f"{slug}_sem"][c, k * n_bins:(k + 1) * n_bins]
            ax.plot(centres, mean, lw=1.1, color=colours[c])
            ax.fill_between(centres, mean - sem, mean + sem, color=colours[c], alpha=0.2, lw=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(_HIST_XLABEL[slug].format(KERNEL_NAMES[k]), fontsize=8)
        ax.set_ylabel("peaks per map and bin", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.tick_params(labelsize=7)
    key = axes[3]
    key.set_axis_off()
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[c], lw=2) for c in shown]
    labels = [f"$\\Omega_m$={params[c, 1]:.3f}, $10^9A_s$={params[c, 2]:.2f}, $M_\\nu$={params[c, 0]:.2f} eV"
              + ("" if counts is None else f" ({int(counts[c])} training maps)") for c in shown]
    title = (f"all {len(order)} cosmologies" if len(shown) == len(order)
             else f"{len(shown)} of {len(order)} cosmologies, evenly spread over $\\Omega_m$")
    key.legend(handles, labels, fontsize=7, loc="center", title=title, title_fontsize=8)
    fig.suptitle("Mean peak counts per map and bin (training maps, bands: $\\pm$ standard error)", fontsize=10)
    return _save(fig, path)


def predicted_vs_true(predictions: Path, table: Path, path: Path) -> Path:
    """Test Omega_m predicted vs true for every method: individual maps and per-cosmology mean +- sd."""
    df = pd.read_csv(predictions)
    rmse = pd.read_csv(table).set_index("method")["rmse"]
    shown = [(m, s) for m, s in METHODS if f"pred_{s}" in df.columns]
    fig = Figure(figsize=(3.0 * len(shown), 3.2))
    axes = fig.subplots(1, len(shown), squeeze=False, sharex=True, sharey=True)[0]
    lo, hi = df["omega_m"].min(), df["omega_m"].max()
    pad = 0.05 * (hi - lo + 1e-3)
    rng = np.random.default_rng(0)
    for ax, (method, slug) in zip(axes, shown):
        pred = df[f"pred_{slug}"]
        jitter = rng.uniform(-0.3, 0.3, len(df)) * pad
        ax.scatter(df["omega_m"] + jitter, pred, s=4, alpha=0.25, color="C0", lw=0)
        stats = pred.groupby(df["omega_m"]).agg(["mean", "std"])
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], fmt="o", ms=3, color="C3", lw=1)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=0.8, ls="--")
        ax.set_title(f"{method}\nRMSE {rmse.get(method, np.nan):.4f}", fontsize=8)
        ax.set_xlabel("true $\\Omega_m$", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("predicted $\\Omega_m$", fontsize=8)
    return _save(fig, path)


def attribution_map(npz: Path, path: Path, pixel_arcmin: float | None = None) -> Path:
    """The map, its reconstruction from the top wavelet coefficients by TRIM attribution, its
    input gradient and the top pixels by |input gradient|; axes in arcmin when the pixel scale is
    known (``pixel_arcmin``), else in pixels."""
    with np.load(npz, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    n = d["original"].shape[-1]
    scale, unit = (pixel_arcmin, "arcmin") if pixel_arcmin else (1.0, "pixels")
    extent = [0.0, n * scale, 0.0, n * scale]
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    axes = fig.subplots(1, 4)
    vmax = np.percentile(d["original"], 99.5)
    vmin = d["original"].min()
    panels = [(d["original"], "original map", "magma", vmin, vmax, "convergence $\\kappa$"),
              (d["reconstruction"], f"top {int(d['n_coefficients_kept'])} of {int(d['n_coefficients'])} "
               "coefficients\n(TRIM attribution)", "magma", None, None, "reconstructed $\\kappa$")]
    g = d["pixel_gradient"]
    gmax = np.abs(g).max() or 1.0
    panels.append((g, "pixel attribution", "RdBu_r", -gmax, gmax,
                   "$\\partial \\Omega_m / \\partial \\kappa$ (teacher)"))
    panels.append((np.where(d["top_pixels"], d["original"], np.nan), f"top {int(d['top_pixels'].sum())} pixels",
                   "magma", vmin, vmax, "convergence $\\kappa$"))
    for ax, (img, title, cmap, lo, hi, label) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, origin="lower", extent=extent)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(f"x ({unit})", fontsize=8)
        ax.set_ylabel(f"y ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, label=label)
    fig.suptitle(f"Test map: $\\Omega_m$={float(d['target_true']):.4f} (teacher {float(d['target_pred']):.4f})",
                 fontsize=10)
    return _save(fig, path)
