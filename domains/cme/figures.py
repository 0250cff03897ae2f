"""Figures of the CME domain, drawn from the files ingest and the heads stage wrote (no refitting).

PNG files (matplotlib's object API, no pyplot state):

* ``example_traces.png``: clathrin and auxilin amplitudes of example tracks, buffers shaded,
  significant auxilin detections marked (as cmeDataViewer shows them);
* ``wavelet.png``: scaling function phi and wavelet psi of the selected AWD wavelet vs DB5;
* ``seed_wavelets.png`` (several distillation seeds only): phi and psi of every seed's selected
  wavelet over DB5;
* ``aux_fraction_vs_lifetime.png``: fraction of aux+ tracks per lifetime bin (complete tracks),
  with the curve measured on real cells for comparison;
* ``intensity_cohorts.png``: mean +- SE clathrin and auxilin amplitude per lifetime cohort,
  tracks rescaled to the cohort length with their buffers, as cmeAnalysis plots them;
* ``kymograph.png``: two-channel kymograph along a line through an example track (needs the
  raw movies; left out with a warning when only cmeAnalysis outputs are available);
* ``feature_reconstruction.png``: a test trace and its reconstructions from its most
  important single wavelet coefficients (by linear-model contribution);
* ``predicted_vs_true.png`` and ``selection.png``: test predictions of every method and the CV
  R^2 of every grid wavelet.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from awd.domain import Dataset
from awd.figures import require_file, save_png
from awd.io import InputError, read_json
from awd.wavelet import wavefun
from domains.cme.head import HEADS_DIR, METHODS, head_from_json, single_coefficient_reconstructions

log = logging.getLogger(__name__)

DPI = 110
COLORS = {"clathrin": "#c2185b", "auxilin": "#2e7d32"}
#: aux+ fraction per lifetime bin measured on 8 real SUM159 cells (cme.md section 2).
REAL_AUX_FRACTION = {"edges": (0, 5, 10, 15, 20, 40, 80, 160, np.inf),
                     "fraction": (0.07, 0.17, 0.26, 0.35, 0.53, 0.83, 0.94, 0.96)}


def _save(fig: Figure, path: Path) -> Path:
    return save_png(fig, path, DPI)


def _require(path: Path) -> Path:
    return require_file(path, "run the ingest and heads stages first")


def draw_all(cfg: dict, results_dir: Path, raw_dir: Path, fig_dir: Path) -> list[Path]:
    """Every figure of the domain into ``fig_dir``; returns the written paths."""
    data_dir, heads_dir = results_dir / "data", results_dir / HEADS_DIR
    tracks = pd.read_parquet(_require(data_dir / "tracks.parquet"))
    frames = pd.read_parquet(_require(data_dir / "tracks_frames.parquet"))
    traces = pd.read_parquet(_require(data_dir / "traces.parquet"))
    heads = read_json(_require(heads_dir / "heads.json"))
    preds = pd.read_csv(_require(heads_dir / "predictions.csv"))
    fig_dir.mkdir(parents=True, exist_ok=True)
    alpha = float(cfg["labels"]["alpha"])
    paths = [
        example_traces(traces, frames, cfg["figures"]["n_examples"], alpha, fig_dir / "example_traces.png"),
        wavelet_figure(heads, fig_dir / "wavelet.png"),
        aux_fraction_vs_lifetime(tracks, fig_dir / "aux_fraction_vs_lifetime.png"),
        intensity_cohorts(tracks, frames, cfg["track_processing"]["cohort_bounds_s"], cfg["track_processing"]["buffer"],
                          fig_dir / "intensity_cohorts.png"),
        feature_reconstruction(Dataset.load(_require(data_dir / "dataset.npz")), heads, preds,
                               cfg["figures"]["n_top_coefficients"], fig_dir / "feature_reconstruction.png"),
        predicted_vs_true(preds, pd.read_csv(_require(results_dir / "table.csv")), fig_dir / "predicted_vs_true.png"),
        selection_figure(pd.read_csv(_require(heads_dir / "selection.csv")), fig_dir / "selection.png"),
    ]
    seed_file = heads_dir / "seed_wavelets.json"
    if seed_file.exists() and len(read_json(seed_file)) > 1:
        paths.append(seed_wavelets_figure(read_json(seed_file), fig_dir / "seed_wavelets.png"))
    kymo = kymograph(cfg, raw_dir, traces, frames, fig_dir / "kymograph.png")
    if kymo is not None:
        paths.append(kymo)
    return paths


# ----------------------------------------------------------------------------- tracks


def _track_rows(frames: pd.DataFrame, cell, track_id) -> pd.DataFrame:
    rows = frames[(frames["cell"] == cell) & (frames["track_id"] == track_id)]
    return rows.sort_values("frame", kind="stable")


def _times(rows: pd.DataFrame) -> np.ndarray:
    """Frame times in s (the frame index when a table has no times, e.g. some cmeAnalysis files)."""
    t = rows["t_s"].to_numpy(float) if "t_s" in rows else np.full(len(rows), np.nan)
    return t if np.all(np.isfinite(t)) else rows["frame"].to_numpy(float)


def pick_examples(traces: pd.DataFrame, n: int) -> pd.DataFrame:
    """Aux+ traces spread over the lifetime range (quantiles), plus one aux- trace."""
    pos = traces[traces["aux_positive"].astype(bool)].sort_values("lifetime_s", kind="stable")
    neg = traces[~traces["aux_positive"].astype(bool)].sort_values("lifetime_s", kind="stable")
    n_pos = min(len(pos), max(n - (1 if len(neg) else 0), 1))
    picks = [pos.iloc[np.linspace(0, len(pos) - 1, n_pos).round().astype(int)]] if n_pos else []
    if len(neg) and n > n_pos:
        picks.append(neg.iloc[[len(neg) // 2]])
    return pd.concat(picks).drop_duplicates(["cell", "track_id"]) if picks else traces.head(0)


def example_traces(traces: pd.DataFrame, frames: pd.DataFrame, n: int, alpha: float, path: Path) -> Path:
    """Clathrin and auxilin amplitude of example tracks with their buffers and significant frames."""
    examples = pick_examples(traces, n)
    fig = Figure(figsize=(7.5, 2.1 * max(len(examples), 1)))
    axes = fig.subplots(max(len(examples), 1), 1, squeeze=False)[:, 0]
    for ax, (_, ex) in zip(axes, examples.iterrows()):
        rows = _track_rows(frames, ex["cell"], ex["track_id"])
        t = _times(rows)
        part = rows["part"].astype(str).to_numpy()
        for name in ("clathrin", "auxilin"):
            ax.plot(t, rows[f"A_{name}"], "-", color=COLORS[name], lw=1.2, label=name)
        sig = rows["pval_Ar_auxilin"].to_numpy(float) < alpha
        ax.plot(t[sig], rows["A_auxilin"].to_numpy(float)[sig], "o", ms=3.5, color=COLORS["auxilin"],
                label=f"auxilin p < {alpha:g}")
        if "gap" in rows:
            gap = rows["gap"].to_numpy(bool)
            ax.plot(t[gap], rows["A_clathrin"].to_numpy(float)[gap], "o", ms=4, mfc="none",
                    color=COLORS["clathrin"], label="gap (re-fitted)")
        step = float(np.median(np.diff(t))) if t.size > 1 else 1.0
        for buf in ("start_buffer", "end_buffer"):
            if np.any(part == buf):
                ax.axvspan(t[part == buf].min() - step / 2, t[part == buf].max() + step / 2, color="0.9", lw=0,
                           label="start/end buffer" if buf == "start_buffer" else None)
        ax.set_ylabel("A (ADU)")
        ax.set_xlabel("time (s)" if "t_s" in rows and np.all(np.isfinite(rows["t_s"])) else "frame")
        ax.set_title(f"{ex['cell']} track {ex['track_id']}: lifetime {ex['lifetime_s']:.0f} s, "
                     f"{'aux+' if ex['aux_positive'] else 'aux-'}, Y_sig_mean {ex['Y_sig_mean']:.0f} ADU",
                     fontsize=9)
    axes[0].legend(fontsize=7, ncol=5, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def aux_fraction_vs_lifetime(tracks: pd.DataFrame, path: Path) -> Path:
    """Aux+ fraction of complete single tracks (catIdx 1) per lifetime bin, +- binomial SE."""
    t = tracks[(tracks["catIdx"] == 1) & tracks["aux_positive"].notna()]
    edges = np.asarray(REAL_AUX_FRACTION["edges"], float)
    labels = [f"<= {int(edges[1])}"] + [f"{int(a)}-{int(b)}" for a, b in zip(edges[1:-2], edges[2:-1])] + \
             [f"> {int(edges[-2])}"]
    idx = np.digitize(t["lifetime_s"].to_numpy(float), edges[1:-1], right=True)
    pos = t["aux_positive"].to_numpy(bool)
    n = np.bincount(idx, minlength=len(labels))
    k = np.bincount(idx, weights=pos, minlength=len(labels))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = k / n
        se = np.sqrt(frac * (1 - frac) / n)
    x = np.arange(len(labels))
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    ax.errorbar(x, frac, yerr=se, fmt="o-", color=COLORS["auxilin"], capsize=3, label="this data")
    ax.plot(x, REAL_AUX_FRACTION["fraction"], "s--", color="0.5", label="real SUM159 cells (cme.md)")
    ax.set_xticks(x, [f"{label}\nn={ni}" for label, ni in zip(labels, n)], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("lifetime (s); n = tracks per bin")
    ax.set_ylabel("aux+ fraction")
    ax.set_title("Auxilin-positive fraction vs lifetime (catIdx 1 tracks)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def cohort_profiles(tracks: pd.DataFrame, frames: pd.DataFrame, bounds, channel: str,
                    buffer: int) -> list[dict]:
    """Per lifetime cohort [lo, hi) s: every catIdx-1 track's amplitude rescaled to the cohort's
    mid length (linear interpolation, as cmeAnalysis), start/end buffers appended unscaled;
    mean and SE over tracks. Cohorts with fewer than 3 tracks are left out."""
    t = tracks[tracks["catIdx"] == 1]
    groups = {key: g for key, g in frames.groupby(["cell", "track_id"], sort=False)}
    dt = float(np.nanmedian(t["lifetime_s"] / t["n_frames"])) if len(t) else 1.0
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        members = t[(t["lifetime_s"] >= lo) & (t["lifetime_s"] < hi)]
        n_c = max(int(round((lo + hi) / 2 / dt)), 2)
        curves = []
        for key in zip(members["cell"], members["track_id"]):
            g = groups.get(key)
            if g is None:
                continue
            g = g.sort_values("frame", kind="stable")
            part = g["part"].astype(str).to_numpy()
            a = g[f"A_{channel}"].to_numpy(float)
            core = a[part == "track"]
            if core.size < 2:
                continue
            sb = np.full(buffer, np.nan)
            eb = np.full(buffer, np.nan)
            s_vals, e_vals = a[part == "start_buffer"][-buffer:], a[part == "end_buffer"][:buffer]
            sb[buffer - s_vals.size:] = s_vals
            eb[:e_vals.size] = e_vals
            scaled = np.interp(np.linspace(0, core.size - 1, n_c), np.arange(core.size), core)
            curves.append(np.concatenate([sb, scaled, eb]))
        if len(curves) < 3:
            continue
        c = np.vstack(curves)
        count = np.sum(np.isfinite(c), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nanmean(c, axis=0)
            se = np.nanstd(c, axis=0, ddof=1) / np.sqrt(count)
        time = (np.arange(-buffer, n_c + buffer)) * dt
        out.append({"lo": lo, "hi": hi, "n": len(curves), "t": time, "mean": mean, "se": se})
    return out


def intensity_cohorts(tracks: pd.DataFrame, frames: pd.DataFrame, bounds, buffer: int, path: Path) -> Path:
    """Clathrin and auxilin intensity cohort plots (mean +- SE per lifetime cohort)."""
    import matplotlib

    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["viridis"]
    for ax, channel in zip(axes, ("clathrin", "auxilin")):
        profiles = cohort_profiles(tracks, frames, list(bounds), channel, buffer)
        for i, p in enumerate(profiles):
            color = cmap(i / max(len(profiles) - 1, 1))
            ax.fill_between(p["t"], p["mean"] - p["se"], p["mean"] + p["se"], color=color, alpha=0.25, lw=0)
            ax.plot(p["t"], p["mean"], color=color, lw=1.3,
                    label=f"{p['lo']:g}-{p['hi']:g} s (n={p['n']})")
        if not profiles:
            ax.text(0.5, 0.5, "fewer than 3 complete tracks per cohort", ha="center", transform=ax.transAxes)
        ax.axvline(0, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("time from track start (s), rescaled within each cohort")
        ax.set_ylabel(f"{channel} A (ADU)")
        ax.set_title(f"{channel} intensity cohorts", fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def kymograph(cfg: dict, raw_dir: Path, traces: pd.DataFrame, frames: pd.DataFrame, path: Path) -> Path | None:
    """Two-channel kymograph along a horizontal line through the longest aux+ trace's mean
    position (3-pixel-wide line, frames from 10 before to 10 after the track)."""
    from domains.cme.domain import list_movies
    from domains.cme.tracking.movie_io import read_movie

    d = cfg["data"]
    need = (f"it needs track positions (x, y: movies or ProcessedTracks.mat) and the raw movies "
            f"(<cell>/{d['master']}/*.tif and <cell>/{d['slave']}/*.tif, or multi-channel TIFFs) under the data root")
    if not {"x", "y"} <= set(frames.columns):
        log.warning("kymograph.png not drawn: the track tables hold no positions (lifetimeData.mat has none); %s",
                    need)
        return None
    try:
        movies = list_movies(Path(raw_dir), d)
    except InputError as err:
        log.warning("kymograph.png not drawn: no raw movies under %s (%s); %s", raw_dir, err.args[0] if err.args
                    else err, need)
        return None
    cand = traces[traces["aux_positive"].astype(bool) & traces["cell"].isin(movies["cell"])]
    if cand.empty:
        log.warning("kymograph.png not drawn: no aux+ trace of a cell with a raw movie; %s", need)
        return None
    ex = cand.sort_values(["lifetime_s", "Y_sig_mean"], ascending=False, kind="stable").iloc[0]
    row = movies[movies["cell"] == ex["cell"]].iloc[0]
    movie = read_movie(row["path"], frame_interval_s=d["frame_interval_s"], pixel_size_um=d["pixel_size_um"],
                       master=d["master"], slave=d["slave"], min_frames=d["min_frames"],
                       channels=d.get("channel_indices"))
    rows = _track_rows(frames, ex["cell"], ex["track_id"])
    core = rows[rows["part"].astype(str) == "track"]
    T, _, H, W = movie.data.shape
    w = int(cfg["figures"]["kymograph_half_width_px"])
    x0 = int(np.clip(round(float(np.nanmedian(core["x"]))), 0, W - 1))
    y0 = int(np.clip(round(float(np.nanmedian(core["y"]))), 1, H - 2))
    f0, f1 = max(int(core["frame"].min()) - 10, 0), min(int(core["frame"].max()) + 10, T - 1)
    cols = np.arange(max(x0 - w, 0), min(x0 + w, W - 1) + 1)
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(2, 1, sharex=True)
    dt = movie.frame_interval_s
    for ax, (c, name) in zip(axes, enumerate(("clathrin", "auxilin"))):
        kymo = movie.data[f0:f1 + 1, c, y0 - 1:y0 + 2, :][:, :, cols].astype(float).mean(axis=1).T
        lo, hi = np.percentile(kymo, [1, 99.5])
        image = ax.imshow(kymo, aspect="auto", cmap="gray", vmin=lo, vmax=hi, origin="lower",
                          extent=(f0 * dt, (f1 + 1) * dt, cols[0] - 0.5, cols[-1] + 0.5))
        fig.colorbar(image, ax=ax, pad=0.01).set_label("A (ADU)", fontsize=8)
        ax.plot(core["frame"] * dt + 0.5 * dt, core["x"], ".", ms=2, color=COLORS[name], alpha=0.7,
                label="track position")
        ax.set_ylabel(f"{name}\nx (px)")
    axes[0].set_title(f"Kymograph of {ex['cell']} track {ex['track_id']} (row y = {y0} px, "
                      f"lifetime {ex['lifetime_s']:.0f} s); dots: track positions", fontsize=9)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- wavelets and heads


def wavelet_figure(heads: dict, path: Path) -> Path:
    """phi and psi of the selected AWD wavelet (and the gamma = 0 one) against DB5."""
    fig = Figure(figsize=(9, 3.4))
    ax_phi, ax_psi = fig.subplots(1, 2)
    styles = {"awd": ("AWD (selected)", "#1565c0", "-"), "awd_gamma0": ("AWD, gamma = 0", "#ef6c00", "-."),
              "db5": ("DB5", "0.4", "--")}
    for key, (label, color, ls) in styles.items():
        if key not in heads:
            continue
        x, phi, psi = wavefun(heads[key]["h"])
        ax_phi.plot(x, phi, ls, color=color, label=label, lw=1.4)
        ax_psi.plot(x, psi, ls, color=color, label=label, lw=1.4)
    _label_phi_psi(ax_phi, ax_psi, "scaling function phi", legend_size=8)
    fig.tight_layout()
    return _save(fig, path)


def _label_phi_psi(ax_phi, ax_psi, phi_title: str, legend_size: float) -> None:
    """Titles, axis labels, zero line and legend of a (phi, psi) pair of panels."""
    ax_phi.set_title(phi_title, fontsize=10)
    ax_psi.set_title("wavelet psi", fontsize=10)
    ax_phi.set_ylabel("phi(x)")
    ax_psi.set_ylabel("psi(x)")
    for ax in (ax_phi, ax_psi):
        ax.axhline(0, color="0.8", lw=0.6)
        ax.set_xlabel("x (support, in samples of the finest scale)")
    ax_psi.legend(fontsize=legend_size)


def seed_wavelets_figure(seed_wavelets: dict, path: Path) -> Path:
    """phi and psi of every distillation seed's selected wavelet over DB5 (the paper's CME
    wavelet figure); ``seed_wavelets``: heads/seed_wavelets.json (seed -> h, lam, gamma)."""
    import pywt

    fig = Figure(figsize=(9, 3.4))
    ax_phi, ax_psi = fig.subplots(1, 2)
    x, phi, psi = wavefun(np.asarray(pywt.Wavelet("db5").rec_lo))
    ax_phi.plot(x, phi, "--", color="0.4", lw=1.6, label="DB5")
    ax_psi.plot(x, psi, "--", color="0.4", lw=1.6, label="DB5")
    colors = ["#1565c0", "#ef6c00", "#2e7d32", "#c2185b", "#6a1b9a", "#00838f", "#5d4037"]
    for i, (seed, rec) in enumerate(seed_wavelets.items()):
        x, phi, psi = wavefun(np.asarray(rec["h"], dtype=np.float64))
        label = f"seed {seed} (lambda {rec['lam']:g}, gamma {rec['gamma']:g})"
        ax_phi.plot(x, phi, color=colors[i % len(colors)], lw=1.1, label=label)
        ax_psi.plot(x, psi, color=colors[i % len(colors)], lw=1.1, label=label)
    _label_phi_psi(ax_phi, ax_psi, "scaling function phi, selected AWD wavelet per seed", legend_size=7)
    fig.tight_layout()
    return _save(fig, path)


def feature_reconstruction(ds: Dataset, heads: dict, preds: pd.DataFrame, n_top: int, path: Path) -> Path:
    """The test trace with the highest AWD prediction, and its reconstructions from its most
    important single coefficients (|OLS coefficient x feature value|)."""
    head = head_from_json(heads["awd"])
    test = ds.subset("test")
    best = preds.sort_values("pred_awd", ascending=False, kind="stable").iloc[0]
    match = test.group == best["cell_id"]
    if "track_id" in test.extra and "track_id" in best:
        match &= test.extra["track_id"] == best["track_id"]
    x = test.X[np.flatnonzero(match)[0]].astype(np.float64)
    recs = single_coefficient_reconstructions(x, head, n_top=n_top)
    fig = Figure(figsize=(7.5, 1.9 * (len(recs) + 1)))
    axes = fig.subplots(len(recs) + 1, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].plot(x, "k.-", lw=1, ms=3, label="trace (z-scored clathrin)")
    if recs:
        axes[0].plot(np.sum([r["reconstruction"] for r in recs], axis=0), color="#1565c0", lw=1.4,
                     label=f"sum of the top {len(recs)} single-coefficient reconstructions")
    axes[0].set_title(f"test trace (cell {int(best['cell_id'])}): AWD prediction {best['pred_awd']:.2f}, "
                      f"true {best['y_true']:.2f} (z-scored auxilin)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[0].set_ylabel("clathrin (z)")
    for ax, r in zip(axes[1:], recs):
        ax.plot(x, color="0.8", lw=1, label="trace")
        ax.plot(r["reconstruction"], color="#c62828", lw=1.5, label="single-coefficient reconstruction")
        ax.set_ylabel("clathrin (z)")
        ax.set_title(f"{r['feature']} (scale {r['scale']}, position {r['position']}): coefficient "
                     f"{r['coefficient']:.2f}, contribution {r['contribution']:+.3f}", fontsize=8)
    axes[-1].set_xlabel("sample (of 40)")
    fig.tight_layout()
    return _save(fig, path)


def predicted_vs_true(preds: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path:
    """Test predictions of every method against the true z-scored auxilin signal."""
    columns = {"AWD": "pred_awd", "DB5": "pred_db5", "AWD without interpretation loss": "pred_awd_gamma0",
               "LSTM": "pred_lstm"}
    r2 = dict(zip(table["method"], table["r2"]))
    fig = Figure(figsize=(12, 3.3))
    axes = fig.subplots(1, len(METHODS), sharex=True, sharey=True)
    y = preds["y_true"].to_numpy(float)
    lim = (np.nanmin(y), np.nanmax(y))
    for ax, method in zip(axes, METHODS):
        p = preds[columns[method]].to_numpy(float)
        ax.plot(y, p, ".", ms=3, alpha=0.5, label="test trace")
        ax.plot(lim, lim, color="0.6", lw=0.8, label="predicted = true")
        ax.set_title(f"{method}\nR^2 = {r2.get(method, np.nan):.3f}", fontsize=9)
        ax.set_xlabel("true auxilin (z-scored)")
    axes[0].set_ylabel("predicted auxilin (z-scored)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def selection_figure(selection: pd.DataFrame, path: Path) -> Path:
    """CV R^2 (and test R^2) of every grid wavelet against gamma, one line per lambda; DB5 dashed."""
    grid = selection[selection["grid_index"] >= 0]
    db5 = selection[selection["grid_index"] < 0]
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    gammas = np.sort(grid["gamma"].unique())
    pos = {g: i for i, g in enumerate(gammas)}
    for lam, g in grid.groupby("lam"):
        g = g.sort_values("gamma")
        line, = ax.plot([pos[v] for v in g["gamma"]], g["cv_r2"], "o-", label=f"lambda = {lam:g} (CV)")
        ax.plot([pos[v] for v in g["gamma"]], g["test_r2"], "x:", color=line.get_color(), alpha=0.6)
    sel = grid[grid["selected"].astype(bool)]
    ax.plot([pos[v] for v in sel["gamma"]], sel["cv_r2"], "*", ms=14, color="gold", mec="k", label="selected")
    if len(db5):
        ax.axhline(float(db5["cv_r2"].iloc[0]), color="0.4", ls="--", label="DB5 (CV)")
    ax.set_xticks(range(len(gammas)), [f"{g:g}" for g in gammas], fontsize=8)
    ax.set_xlabel("gamma (interpretation loss weight)")
    ax.set_ylabel("R^2 (o: 5-fold CV on train, x: test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
