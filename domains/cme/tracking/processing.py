"""cmeAnalysis track processing: linked detections -> per-track and per-track-frame tables.

:func:`process_tracks` turns linked detections into the two tables cell biologists expect,
following cmeAnalysis ``runTrackProcessing`` and ``runSlaveChannelClassification``:

* drop single-frame tracks and tracks within ceil(4 sigma) px of the image border;
* visibility (1 complete, 2 cut by the movie ends, 3 persistent), 5-frame start/end buffers
  of complete tracks and the gap frames, all re-fitted at the track position: clathrin by a
  free-position fit, or the fixed-position amplitude fit if it wanders > ceil(2 sigma);
  auxilin the same way, or (``slave_at_master``) as detection fits it, at that clathrin position;
* gap status (valid if 1 frame long or between segments longer than 1 frame), categories
  ``catIdx`` 1-8 with the cmeAnalysis fixes (invalid-gap tracks reaching the 2.5th percentile
  of their lifetime cohort become 1; buffer, hotspot-splitting, gap-fraction and displacement
  checks), ``isCCP``, MSD / total displacement, and the slave-channel significance flags;
* tracks that go on for ``burst_split_frames`` frames after an auxilin burst are cut after it
  (:func:`domains.cme.traces.burst_ends`: scission ends a pit, so the rest is another pit);
* the auxilin labels of :func:`domains.cme.traces.add_labels`.

Tables (same column conventions as :mod:`domains.cme.cmeanalysis_io`, so existing cmeAnalysis
outputs feed :func:`domains.cme.traces.build_traces` too): per track one row of scalars; per
track frame one row (``part`` start_buffer / track / end_buffer, ``gap``) with
``<field>_clathrin`` and ``<field>_auxilin`` columns.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, special, stats
from scipy.spatial import cKDTree

from awd.io import InputError, atomic_path, is_count, known_fields
from domains.cme.traces import add_labels, burst_ends
from domains.cme.tracking.detect import movie_array, detection_config, extract_windows, fit_slave, fit_windows

log = logging.getLogger(__name__)

CHANNELS = ("clathrin", "auxilin")
#: per-frame fields of each channel (column ``<field>_<channel>``).
FRAME_FIELDS = ("x", "y", "A", "c", "A_pstd", "c_pstd", "sigma_r", "SE_sigma_r", "pval_Ar", "hval_AD")
#: detection-table column of each field, per channel.
_DET_COLUMNS = ({"x": "x", "y": "y", "A": "A", "c": "c", "A_pstd": "A_pstd", "c_pstd": "c_pstd",
                 "sigma_r": "sigma_r", "SE_sigma_r": "SE_sigma_r", "pval_Ar": "pval_A", "isPSF": "isPSF"},
                {"x": "x_aux", "y": "y_aux", "A": "A_aux", "c": "c_aux", "A_pstd": "A_pstd_aux",
                 "c_pstd": "c_pstd_aux", "sigma_r": "sigma_r_aux", "SE_sigma_r": "SE_sigma_r_aux",
                 "pval_Ar": "pval_A_aux", "isPSF": "isPSF_aux"})
PARTS = ("start_buffer", "track", "end_buffer")
#: per-track columns (labels and auxilin flags follow when there is an auxilin channel).
_TRACK_COLUMNS = ["condition", "cell", "track_id", "start_frame", "end_frame", "n_frames", "lifetime_s", "catIdx",
                  "nSeg", "visibility", "isCCP", "n_gaps", "valid_gaps", "linked_track_id", "compound_id",
                  "split_from", "t_start_s", "x_mean", "y_mean", "A_max_clathrin", "total_displacement", "msd_max",
                  "msd_lag1", "D_px2_per_frame"]


@dataclass(frozen=True)
class ProcessingConfig:
    """Track-processing settings (config section ``track_processing``); cmeAnalysis defaults.
    ``slave_at_master``: fit the auxilin of gaps and buffers as detection does
    (:func:`_refit_slave`) instead of cmeAnalysis' per-channel re-fit. ``burst_split_frames``
    (not in cmeAnalysis; null: off): cut a track after its first auxilin burst when it goes on
    for at least that many frames (:func:`domains.cme.traces.burst_ends`)."""

    buffer: int = 5
    cohort_bounds_s: tuple[float, ...] = (10, 20, 40, 60, 80, 100, 125, 150)
    alpha: float = 0.05
    background_frames: int = 16
    background_positions: int = 256
    background_seed: int = 0
    msd_max_lag: int = 10
    diffusion_max_lag: int = 4
    postprocess: bool = True
    slave_at_master: bool = False
    burst_split_frames: int | None = 10

    @classmethod
    def from_dict(cls, d: dict | None) -> "ProcessingConfig":
        d = known_fields(cls, d, "track_processing")
        if "cohort_bounds_s" in d:
            d["cohort_bounds_s"] = tuple(float(v) for v in d["cohort_bounds_s"])
        cfg = cls(**d)
        if (cfg.buffer < 2 or cfg.background_frames < 1 or cfg.background_positions < 20 or cfg.msd_max_lag < 1
                or cfg.diffusion_max_lag < 2):
            raise InputError("config:track_processing", "need buffer >= 2, background_frames >= 1, "
                             "background_positions >= 20, msd_max_lag >= 1, diffusion_max_lag >= 2")
        if not isinstance(cfg.slave_at_master, bool):
            raise InputError("config:track_processing.slave_at_master",
                             f"must be true or false, got {cfg.slave_at_master!r}")
        if cfg.burst_split_frames is not None and not is_count(cfg.burst_split_frames):
            raise InputError("config:track_processing.burst_split_frames",
                             f"must be null or a whole number of frames >= 1, got {cfg.burst_split_frames!r}")
        return cfg


def _prctile(x: np.ndarray, q) -> np.ndarray | float:
    """MATLAB ``prctile`` (NaNs ignored; midpoint plotting positions = numpy 'hazen')."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.full(np.shape(q), np.nan) if np.ndim(q) else float("nan")
    return np.percentile(x, q, method="hazen")


# --------------------------------------------------------------------------------------
# Per-track container
# --------------------------------------------------------------------------------------
@dataclass
class _Track:
    """One track: per-row arrays over [start buffer | track frames | end buffer]."""

    tid: int
    compound: int
    n_seg: int
    f: np.ndarray          # frame of every row
    part: np.ndarray       # 0 start buffer, 1 track, 2 end buffer
    gap: np.ndarray        # True for gap rows of the track part
    v: dict                # field -> (n_channels, n_rows) float
    visibility: int = 1
    cat: int = 0
    split_from: int = -1
    gap_status: tuple = ()

    @property
    def core(self) -> np.ndarray:
        return self.part == 1

    @property
    def start(self) -> int:
        return int(self.f[self.core][0])

    @property
    def end(self) -> int:
        return int(self.f[self.core][-1])

    def col(self, name: str, ch: int = 0, core: bool = True) -> np.ndarray:
        a = self.v[name][ch]
        return a[self.core] if core else a


def _gap_runs(gap: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) indices of the runs of True in ``gap``."""
    d = np.diff(np.concatenate([[0], gap.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def _gap_status(gap: np.ndarray) -> tuple[int, ...]:
    """cmeAnalysis gap status: 4 (valid) if 1 frame long or between segments longer than 1 frame."""
    runs = _gap_runs(gap)
    seg_runs = _gap_runs(~gap)
    out = []
    for g, (a, b) in enumerate(runs):
        before = seg_runs[g][1] - seg_runs[g][0] + 1
        after = seg_runs[g + 1][1] - seg_runs[g + 1][0] + 1
        out.append(4 if (before > 1 and after > 1) or b == a else 5)
    return tuple(out)


# --------------------------------------------------------------------------------------
# Re-fits of gaps and buffers
# --------------------------------------------------------------------------------------
def _refit(tracks: list[_Track], data: np.ndarray, masks: np.ndarray, sigmas, alpha: float,
           slave: dict | None = None) -> None:
    """Fill every gap and buffer row of every track with a fit in its frame, both channels.

    cmeAnalysis ``interpTrack``: window and confinement from the master sigma, pixels of other
    detection-mask components ignored; a free-position fit, replaced by the fixed-position
    amplitude fit where it moved >= ceil(2 sigma_master). All rows of a channel are fitted in
    one batch. With ``slave`` (keyword arguments of :func:`_refit_slave`) the slave channels
    are instead fitted where detection fits them, at the master position (:func:`_refit_slave`).
    """
    rows = [np.flatnonzero(tr.gap | (tr.part != 1)) for tr in tracks]
    counts = np.array([r.size for r in rows])
    if counts.sum() == 0:
        return
    frames = np.concatenate([tr.f[r] for tr, r in zip(tracks, rows)])
    w, w2 = math.ceil(4 * sigmas[0]), math.ceil(2 * sigmas[0])
    order = np.argsort(frames, kind="stable")
    n_ch = data.shape[1]
    pos = [{k: np.concatenate([tr.v[k][ch, r] for tr, r in zip(tracks, rows)]) for k in ("x", "y", "A", "c")}
           for ch in range(n_ch)]
    cent = [(np.round(p["x"]).astype(np.int64), np.round(p["y"]).astype(np.int64)) for p in pos]
    win = np.empty((n_ch, len(frames), (2 * w + 1) ** 2))
    wts = np.empty_like(win)
    sorted_frames = frames[order]
    for f in np.unique(frames):
        sel = order[np.searchsorted(sorted_frames, f, "left"):np.searchsorted(sorted_frames, f, "right")]
        labels = ndimage.label(masks[f])[0]
        for ch in range(n_ch):
            win[ch, sel], wts[ch, sel] = extract_windows(data[f, ch], cent[ch][0][sel], cent[ch][1][sel], w, labels)
    for ch in range(n_ch if slave is None else 1):
        x, y, A0, c0 = pos[ch]["x"], pos[ch]["y"], pos[ch]["A"], pos[ch]["c"]
        xi, yi = cent[ch]
        res = fit_windows(win[ch], wts[ch], xi, yi, x - xi, y - yi, sigmas[ch], A0=A0, c0=c0, mode="xyAc",
                          conf_radius=w2, alpha=alpha)
        moved = ~(np.isfinite(res.x) & (np.abs(res.x - xi) < w2) & (np.abs(res.y - yi) < w2))
        if moved.any():
            m = np.flatnonzero(moved)
            res.put(m, fit_windows(win[ch, m], wts[ch, m], xi[m], yi[m], (x - xi)[m], (y - yi)[m], sigmas[ch],
                                   mode="Ac", alpha=alpha))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for k, (tr, r) in enumerate(zip(tracks, rows)):
            if r.size == 0:
                continue
            sl = slice(offsets[k], offsets[k + 1])
            for name in ("x", "y", "A", "c", "A_pstd", "c_pstd", "sigma_r", "SE_sigma_r"):
                tr.v[name][ch, r] = getattr(res, name)[sl]
            tr.v["pval_Ar"][ch, r] = res.pval_A[sl]
            tr.v["hval_AD"][ch, r] = res.hval_AD[sl]
    if slave is not None and n_ch > 1:
        _refit_slave(tracks, rows, (pos[0]["x"], pos[0]["y"]), data, sigmas, alpha, **slave)


def _refit_slave(tracks: list[_Track], rows: list[np.ndarray], initial: tuple[np.ndarray, np.ndarray],
                 data: np.ndarray, sigmas, alpha: float, *,
                 positions: dict, starts: dict, alpha_fit: float, neighbours: bool,
                 max_shift: float = 3.0) -> None:
    """The slave channels of the gap and buffer ``rows`` of each track, fitted as detection fits
    them (:func:`fit_slave`, cmeAnalysis ``runDetection``): at the master position, a free fit
    kept where it moved < ``max_shift`` sigma_master (detection ``slave_max_shift``) and gave a
    larger amplitude, with the frame's clathrin detections ``positions[f]`` = (x, y) within
    reach as neighbours when ``neighbours``.

    The master position of a row is its re-fitted clathrin position where that fit is
    significant (p < ``alpha``; a vesicle that moves after scission is followed into the end
    buffer) and not within sigma_master of a detection of another track that was already
    there at this track's last frame (the confined clathrin re-fit may move ~3 px onto such a
    neighbour and would credit its burst to this track; a track piece that starts later may be
    this pit's own continuation), else its initial position (interpolated in gaps, the
    first/last track position in buffers). ``starts[f]``: the first frame of the linked track
    of each detection in ``positions[f]``. cmeAnalysis re-fits every channel on its own from
    the initial position, so in buffers the auxilin fit started up to a few px from a moved
    vesicle's burst and wandered onto noise, and it did not see neighbouring pits. (A detection
    at a row's position is the same spot and :func:`fit_slave` does not model it as a
    neighbour.)
    """
    s_m, s_a = sigmas
    reach = (math.ceil(4 * s_a) + 1.5) * math.sqrt(2)
    empty = (np.zeros(0), np.zeros(0))
    frames = np.concatenate([tr.f[r] for tr, r in zip(tracks, rows)])
    px = np.concatenate([tr.v["x"][0, r] for tr, r in zip(tracks, rows)])
    py = np.concatenate([tr.v["y"][0, r] for tr, r in zip(tracks, rows)])
    sig = np.concatenate([tr.v["pval_Ar"][0, r] for tr, r in zip(tracks, rows)]) < alpha
    ix, iy = initial
    H, W = data.shape[-2:]
    w = math.ceil(4 * s_a)
    with np.errstate(invalid="ignore"):  # the slave window must lie inside the image, as at the initial position
        use = (sig & (np.round(px) >= w) & (np.round(px) < W - w) & (np.round(py) >= w)
               & (np.round(py) < H - w))
    last = np.repeat([tr.end for tr in tracks], [r.size for r in rows])
    for f in np.unique(frames[use]):  # a re-fit onto a pit that coexisted with the track is a neighbour
        dx, dy = positions.get(int(f), empty)[:2]
        if dx.size:
            born = starts.get(int(f), np.full(dx.size, f))
            m = np.flatnonzero(use & (frames == f))
            for i, hits in zip(m, cKDTree(np.column_stack([dx, dy])).query_ball_point(
                    np.column_stack([px[m], py[m]]), s_m)):
                use[i] = not any(born[j] <= last[i] for j in hits)
    ax, ay = np.where(use, px, ix), np.where(use, py, iy)
    out = {name: np.full((data.shape[1], frames.size), np.nan) for name in FRAME_FIELDS}
    order = np.argsort(frames, kind="stable")
    bounds = np.flatnonzero(np.diff(frames[order])) + 1
    for sel in np.split(order, bounds):
        f = int(frames[sel[0]])
        x, y = ax[sel], ay[sel]
        if neighbours:
            dx, dy = positions.get(f, empty)
            if dx.size:
                near = cKDTree(np.column_stack([x, y])).query(np.column_stack([dx, dy]))[0] <= reach
                x, y = np.concatenate([x, dx[near]]), np.concatenate([y, dy[near]])
        for ch in range(1, data.shape[1]):
            fit = fit_slave(data[f, ch], x, y, s_a, s_m, alpha_fit, neighbours=neighbours, max_shift=max_shift)
            for name, col in _DET_COLUMNS[1].items():
                vals = fit[col][:sel.size]
                out[name if name != "isPSF" else "hval_AD"][ch, sel] = 1.0 - vals if name == "isPSF" else vals
    offsets = np.concatenate([[0], np.cumsum([r.size for r in rows])])
    for k, (tr, r) in enumerate(zip(tracks, rows)):
        if r.size:
            for name in FRAME_FIELDS:
                tr.v[name][1:, r] = out[name][1:, offsets[k]:offsets[k + 1]]


# --------------------------------------------------------------------------------------
# Building tracks from linked detections
# --------------------------------------------------------------------------------------
def _build_tracks(det: pd.DataFrame, n_frames: int, n_ch: int, buffer: int) -> list[_Track]:
    """Tracks of >= 2 frames with their gap rows (interpolated start values) and, for
    complete tracks, buffer rows (first/last position); the fits fill them later."""
    if len(det) == 0:
        return []
    det = det.sort_values(["track_id", "frame"], kind="stable")
    tids = det["track_id"].to_numpy()
    bounds = np.flatnonzero(np.diff(tids)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(det)]])
    frames = det["frame"].to_numpy(np.int64)
    comp = det["compound_id"].to_numpy(np.int64) if "compound_id" in det else tids
    cols = {}
    for ch in range(n_ch):
        for name, col in _DET_COLUMNS[ch].items():
            cols[(name, ch)] = det[col].to_numpy(float) if col in det else np.full(len(det), np.nan)
    n_seg_of = pd.Series(tids).groupby(comp).nunique()
    out = []
    for a, b in zip(starts, ends):
        fr = frames[a:b]
        s, e = int(fr[0]), int(fr[-1])
        if e == s:
            continue  # single-frame track
        vis = 1 if (s >= buffer and e <= n_frames - 1 - buffer) else (3 if s == 0 and e == n_frames - 1 else 2)
        sb = min(buffer, s) if vis == 1 else 0
        eb = min(buffer, n_frames - 1 - e) if vis == 1 else 0
        L = e - s + 1
        n = sb + L + eb
        f_all = np.arange(s - sb, e + eb + 1)
        part = np.ones(n, np.int8)
        part[:sb], part[sb + L:] = 0, 2
        pos = sb + (fr - s)
        gap = np.zeros(n, bool)
        gap[sb:sb + L] = True
        gap[pos] = False
        v = {name: np.full((n_ch, n), np.nan) for name in FRAME_FIELDS}
        for ch in range(n_ch):
            for name in FRAME_FIELDS[:-1]:
                v[name][ch, pos] = cols[(name, ch)][a:b]
            v["hval_AD"][ch, pos] = 1.0 - cols[("isPSF", ch)][a:b]
            # initial values of gaps (linear interpolation) and buffers (first/last position)
            for name in ("x", "y", "A", "c"):
                row = v[name][ch]
                row[sb:sb + L] = np.interp(np.arange(s, e + 1), fr, row[pos])
                row[:sb], row[sb + L:] = row[sb], row[sb + L - 1]
        out.append(_Track(int(tids[a]), int(comp[a]), int(n_seg_of[comp[a]]), f_all, part, gap, v, vis))
    return out


def cell_mask_from_movie(movie: Any) -> np.ndarray:
    """A cell mask from the mean clathrin projection: Otsu threshold of the smoothed image,
    holes filled, largest component (cmeAnalysis derives its mask from the same projection)."""
    from skimage.filters import threshold_otsu

    data = movie_array(movie)
    proj = ndimage.gaussian_filter(data[:, 0].astype(np.float64).mean(axis=0), 2.0)
    mask = ndimage.binary_fill_holes(proj > threshold_otsu(proj))
    lab, n = ndimage.label(mask)
    if n > 1:
        mask = lab == (1 + np.argmax(np.bincount(lab.ravel())[1:]))
    return mask


# --------------------------------------------------------------------------------------
# Post-processing steps
# --------------------------------------------------------------------------------------
def _categories(tracks: list[_Track], frame_interval: float, n_frames: int, pcfg: ProcessingConfig) -> None:
    for tr in tracks:
        tr.gap_status = _gap_status(tr.gap[tr.core])
        valid = max(tr.gap_status + (4,)) == 4
        base = {1: 1 if valid else 2, 2: 3, 3: 4}[tr.visibility]
        tr.cat = base + (4 if tr.n_seg > 1 else 0)
    if not pcfg.postprocess:
        return
    min_lft = 2 * frame_interval
    bounds = [b for b in pcfg.cohort_bounds_s if b > min_lft]
    bounds = np.array([min_lft, *bounds, n_frames * frame_interval])
    lft = np.array([(tr.end - tr.start + 1) * frame_interval for tr in tracks])
    maxA = np.array([np.nanmax(tr.col("A")) for tr in tracks])
    cat = np.array([tr.cat for tr in tracks])
    lengths = np.array([tr.end - tr.start + 1 for tr in tracks])
    # III. invalid-gap tracks whose max intensity reaches the 2.5th pct of their cohort -> 1
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        in_c = (lft >= lo) & (lft < hi)
        thr = _prctile(maxA[in_c & (cat == 1)], 2.5)
        for k in np.flatnonzero(in_c & (cat == 2) & (maxA >= thr) & (lengths > 4)):
            tracks[k].cat = 1
    # IV. buffers: two consecutive non-significant frames in each, and buffer A + c <= track max
    for tr in tracks:
        if tr.cat != 1:
            continue
        sig = tr.v["pval_Ar"][0] < 0.05
        ok = True
        for p in (0, 2):
            m = tr.part == p
            runs = _gap_runs(~sig[m])
            ok &= any(b - a + 1 >= 2 for a, b in runs)
        buf = tr.part != 1
        ac = tr.v["A"][0] + tr.v["c"][0]
        if not ok or np.nanmax(ac[buf]) > np.nanmax(ac[tr.core]):
            tr.cat = 2


def _split_hotspots(tracks: list[_Track]) -> list[_Track]:
    """cmeAnalysis VI: cut category-1 tracks at gaps with background-level amplitude that
    separate two spatially distinct position clusters."""
    out = []
    for tr in tracks:
        core = np.flatnonzero(tr.core)
        L = core.size
        if tr.cat != 1 or not tr.gap[core].any() or L <= 4:
            out.append(tr)
            continue
        g_idx = np.flatnonzero(tr.gap[core])
        sr, se = tr.v["sigma_r"][0, core[g_idx]], tr.v["SE_sigma_r"][0, core[g_idx]]
        npx = np.round((sr / se) ** 2 / 2 + 1)
        A, sA = tr.v["A"][0, core[g_idx]], tr.v["A_pstd"][0, core[g_idx]]
        with np.errstate(divide="ignore", invalid="ignore"):
            pval = stats.t.cdf((A - sA) / (sA / np.sqrt(npx)), npx - 1)
        g_idx = g_idx[pval < 0.05]
        delta = np.diff(np.concatenate([[0], g_idx, [L - 1]]))
        g_idx = g_idx[(delta[:-1] >= 5) & (delta[1:] >= 5)]
        x, y = tr.v["x"][0, core], tr.v["y"][0, core]
        cut_runs = []
        runs = _gap_runs(tr.gap[core])
        for g in g_idx:
            x1, y1, x2, y2 = x[:g], y[:g], x[g + 1:], y[g + 1:]
            m1 = np.array([np.median(x1), np.median(y1)])
            v = np.array([np.median(x2), np.median(y2)]) - m1
            norm = np.hypot(*v)
            if norm == 0:
                continue
            v /= norm
            sp1 = (x1 - m1[0]) * v[0] + (y1 - m1[1]) * v[1]
            sp2 = (x2 - m1[0]) * v[0] + (y2 - m1[1]) * v[1]
            distinct = ((sp1.mean() < sp2.mean() and _prctile(sp1, 95) < _prctile(sp2, 5))
                        or (sp1.mean() > sp2.mean() and _prctile(sp1, 5) > _prctile(sp2, 95)))
            run = next(r for r in runs if r[0] <= g <= r[1])
            if distinct and run not in cut_runs:
                cut_runs.append(run)
        if not cut_runs:
            out.append(tr)
            continue
        out.extend(_cut(tr, core, cut_runs))
    return out


def _cut(tr: _Track, core: np.ndarray, cut_runs) -> list[_Track]:
    """Pieces between the cut gap runs; inner buffers are the parent's adjacent rows."""
    nb = max(int((tr.part == 0).sum()), int((tr.part == 2).sum()))
    lbs = [0] + [b + 1 for _, b in cut_runs]
    ubs = [a - 1 for a, _ in cut_runs] + [core.size - 1]
    pieces = []
    for lb, ub in zip(lbs, ubs):
        lo_row, hi_row = core[lb], core[ub]
        first = max(0, lo_row - nb) if lb > 0 else 0
        last = min(len(tr.f) - 1, hi_row + nb) if ub < core.size - 1 else len(tr.f) - 1
        rows = np.arange(first, last + 1)
        part = np.where(rows < lo_row, 0, np.where(rows > hi_row, 2, 1)).astype(np.int8)
        gap = tr.gap[rows] & (part == 1)
        piece = _Track(tr.tid, tr.compound, tr.n_seg, tr.f[rows], part, gap,
                       {k: a[:, rows].copy() for k, a in tr.v.items()}, tr.visibility, tr.cat, tr.tid)
        piece.gap_status = _gap_status(gap[part == 1])
        pieces.append(piece)
    return pieces


def _split_after_bursts(tracks: list[_Track], ends: dict) -> list[_Track]:
    """Cut each track of ``ends`` (list position -> frame, :func:`domains.cme.traces.burst_ends`)
    after that frame, where its pit ended with an auxilin burst; what follows is another pit the
    linker joined to it. The pieces are made as the hotspot split makes them (:func:`_cut`:
    each keeps the parent's category, inner buffers are the parent's adjacent rows)."""
    ends = {int(k): int(v) for k, v in ends.items()}
    out = []
    for k, tr in enumerate(tracks):
        if k not in ends:
            out.append(tr)
            continue
        core = np.flatnonzero(tr.core)
        gap = tr.gap[core]
        first = int(np.searchsorted(tr.f[core], ends[k], side="right"))  # the second piece's first row
        last = first - 1
        while gap[last]:  # pieces begin and end with a detection: gap rows at the cut are dropped
            last -= 1
        while gap[first]:
            first += 1
        out.extend(_cut(tr, core, [(last + 1, first - 1)]))  # pieces [0, last] and [first, end]
    return out


def _displacement_check(tracks: list[_Track]) -> None:
    """Gap fraction >= 50 % -> 2; category-1 tracks with > 4 steps above the 95th percentile
    of the per-track median step -> 2."""
    steps, med = [], []
    for tr in tracks:
        n_gap = int(tr.gap[tr.core].sum())
        if n_gap / (tr.end - tr.start + 1) >= 0.5:
            tr.cat = 2
        x, y = tr.col("x"), tr.col("y")
        d = np.hypot(np.diff(x), np.diff(y))
        steps.append(d)
        med.append(np.nanmedian(d) if np.isfinite(d).any() else np.nan)
    thr = _prctile(np.array(med), 95)
    for tr, d in zip(tracks, steps):
        if tr.cat == 1 and np.sum(d > thr) > 4:
            tr.cat = 2


def _motion(tr: _Track, max_lag: int, d_lags: int) -> dict:
    x, y = tr.col("x"), tr.col("y")
    msd = np.full(max_lag, np.nan)
    for lag in range(1, min(max_lag, x.size - 1) + 1):
        msd[lag - 1] = np.mean((x[lag:] - x[:-lag]) ** 2 + (y[lag:] - y[:-lag]) ** 2)
    lags = np.arange(1, d_lags + 1)
    ok = np.isfinite(msd[:d_lags])
    D = np.polyfit(lags[ok], msd[:d_lags][ok], 1)[0] / 4 if ok.sum() >= 2 else np.nan
    return {"total_displacement": float(np.hypot(x[-1] - x[0], y[-1] - y[0])),
            "msd_max": float(np.nanmax(msd)) if np.isfinite(msd).any() else np.nan,
            "msd_lag1": float(msd[0]), "D_px2_per_frame": float(D)}


@dataclass(frozen=True)
class SlaveBackground:
    """The auxilin channel's null distribution, from slave fits at background positions.

    ``A``, ``A_pstd``, ``npx``, ``pval``, ``frame``: one entry per finite fit; ``frames`` and
    ``noise``: the sampled frames and the median fit residual sd (pixel noise) of their
    background fits; ``level``: the reference level of the per-frame test (cmeAnalysis' bg95,
    here calibrated, see :func:`_slave_background`) at the movie's median noise, scaled per
    frame by :meth:`level_at`; ``p_detection``: the fraction of background fits with an
    auxilin amplitude significant at the track-processing alpha (cmeAnalysis' pDetection).
    """

    A: np.ndarray
    A_pstd: np.ndarray
    npx: np.ndarray
    pval: np.ndarray
    frame: np.ndarray
    frames: np.ndarray
    noise: np.ndarray
    level: float
    p_detection: float

    @property
    def n(self) -> int:
        return int(self.A.size)

    def scale(self, frame) -> np.ndarray:
        """Noise of ``frame`` relative to the movie's median (piecewise linear in time between
        the sampled frames, constant beyond them): bleaching lowers the pixel noise over a
        movie, and the test level follows it."""
        if self.frames.size == 0:
            return np.full(np.shape(frame), np.nan)
        return np.interp(np.asarray(frame, dtype=float), self.frames, self.noise) / np.median(self.noise)

    def level_at(self, frame) -> np.ndarray:
        """The test level in ADU at each of ``frame``."""
        return self.level * self.scale(frame)


def _vs_background(A, A_pstd, npx, level, alpha: float) -> np.ndarray:
    """cmeAnalysis ``significantVsBackground``: one-sided Welch t-test of A > ``level`` (scalar
    or per row), the level's standard error taken as level / sqrt(2 npx - 1); True where
    p < ``alpha``. Scaling A, A_pstd and the level by one factor leaves the result unchanged."""
    A, sA, npx, level = (np.asarray(v, dtype=float) for v in (A, A_pstd, npx, level))
    with np.errstate(divide="ignore", invalid="ignore"):
        se_bg = level / np.sqrt(2 * npx - 1)
        df2 = (npx - 1) * (sA ** 2 + se_bg ** 2) ** 2 / (sA ** 4 + se_bg ** 4)
        T = (A - level) / np.sqrt((sA ** 2 + se_bg ** 2) / npx)
        return special.stdtr(df2, -T) < alpha


def _calibrated_level(A, A_pstd, npx, alpha: float) -> float:
    """The level at which a fraction ``alpha`` of the background fits pass :func:`_vs_background`.

    cmeAnalysis tests against the 95th percentile of its background amplitudes; since the
    t-test adds a small margin (about t(0.95) sd(A)/sqrt(npx)) above the level, the plain
    percentile would let fewer than 5 % of background fits through. Bisection on the level
    (the pass fraction is non-increasing in it) makes the rate on background exactly alpha
    up to one fit.
    """
    lo, hi = float(np.min(A)), float(np.max(A))
    target = alpha * A.size
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _vs_background(A, A_pstd, npx, mid, alpha).sum() > target:
            lo = mid
        else:
            hi = mid
    return hi


def _background_positions(rng: np.random.Generator, allowed: np.ndarray, spacing: int, n: int,
                          max_batches: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches of random sub-pixel positions on ``allowed`` pixels, about ``n`` in all.

    Each batch is a grid of step ``spacing`` px with a uniform random offset and +-0.5 px
    jitter, so positions within a batch are more than ``spacing`` - 1 px apart in x or y and
    never enter each other's fit model as neighbours; batches are drawn until ``n`` positions
    (at most ``max_batches``), and the last one is thinned at random to reach ``n``.
    """
    H, W = allowed.shape
    out, total = [], 0
    for _ in range(max_batches):
        oy, ox = rng.integers(0, spacing, 2)
        gy, gx = np.meshgrid(np.arange(oy, H, spacing), np.arange(ox, W, spacing), indexing="ij")
        y = gy.ravel() + rng.uniform(-0.5, 0.5, gy.size)
        x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
        yi, xi = np.clip(np.round(y).astype(int), 0, H - 1), np.clip(np.round(x).astype(int), 0, W - 1)
        keep = np.flatnonzero(allowed[yi, xi])
        if keep.size > n - total:
            keep = np.sort(rng.choice(keep, size=n - total, replace=False))
        if keep.size:
            out.append((x[keep], y[keep]))
            total += keep.size
        if total >= n:
            break
    return out


def _slave_background(data, masks, cell_mask, sigmas, positions: dict, alpha_fit: float, alpha: float,
                      neighbours: bool, pcfg: ProcessingConfig, max_shift: float = 3.0) -> SlaveBackground:
    """The auxilin null distribution of one movie, measured with the estimator it is compared with.

    cmeAnalysis takes bg95 from the prefilter amplitudes of the cell background, whose spread
    is smaller than that of the slave fits at the tracks (fixed-position fit, replaced by the
    free fit where that gives a larger amplitude): on auxilin-free simulated frames its
    per-frame test fired on ~21 % instead of 5 %. Here the detection's own slave fit
    (:func:`fit_slave`, with the frame's clathrin detections ``positions[f]`` = (x, y) in the
    model when ``neighbours``, and detection's ``max_shift``, as :func:`detect_frame` fits them) runs at about
    ``pcfg.background_positions`` seeded random sub-pixel positions (:func:`_background_positions`)
    in each of ``pcfg.background_frames`` evenly spaced frames, inside the cell mask, with the
    window inside the image, and away from the clathrin pits: outside the detection masks
    dilated by ceil(4 sigma_aux) (cmeAnalysis' background mask) for lone fits, or at least
    ceil(2 sigma_clathrin) px from every detection with the neighbour model (which then holds
    the nearby pits as at a track). Each fit is divided by its frame's noise scale
    (:meth:`SlaveBackground.scale`), and the level is set where a fraction ``alpha`` of them
    pass the per-frame test (:func:`_calibrated_level`). ``alpha_fit``: the auxilin fit's
    test level (detection ``alpha_aux``); ``alpha``: the significance level of the slave tests.
    """
    T, _, H, W = data.shape
    s_m, s_a = sigmas
    w = math.ceil(4 * s_a)
    yy, xx = np.mgrid[-w:w + 1, -w:w + 1]
    disk = xx ** 2 + yy ** 2 <= w ** 2
    inner = np.zeros((H, W), bool)
    inner[w + 1:H - w - 1, w + 1:W - w - 1] = True
    r0 = math.ceil(2 * s_m)
    reach = (w + 1.5) * math.sqrt(2)
    rng = np.random.default_rng(pcfg.background_seed)
    parts = {k: [] for k in ("A", "A_pstd", "npx", "pval", "frame")}
    frames, noise = [], []
    empty = (np.zeros(0), np.zeros(0))
    for f in np.unique(np.round(np.linspace(0, T - 1, pcfg.background_frames)).astype(int)):
        px, py = positions.get(f, empty)
        if neighbours:
            pits = np.ones((H, W), bool)
            pits[np.clip(np.round(py).astype(int), 0, H - 1), np.clip(np.round(px).astype(int), 0, W - 1)] = False
            away = ndimage.distance_transform_edt(pits) >= r0
        else:
            away = ~ndimage.binary_dilation(masks[f], structure=disk) if masks[f].any() else ~masks[f]
        allowed = cell_mask & away & inner
        if not allowed.any():
            continue
        fits = []
        for x, y in _background_positions(rng, allowed, w + 3, pcfg.background_positions):
            n = x.size
            if neighbours and px.size:  # the detections that can enter these positions' windows
                near = cKDTree(np.column_stack([x, y])).query(np.column_stack([px, py]))[0] <= reach
                x, y = np.concatenate([x, px[near]]), np.concatenate([y, py[near]])
            fit = fit_slave(data[f, 1], x, y, s_a, s_m, alpha_fit, neighbours=neighbours, max_shift=max_shift)
            fits.append({k: v[:n] for k, v in fit.items()})
        fit = {k: np.concatenate([b[k] for b in fits]) for k in fits[0]} if fits else {}
        if not fit:
            continue
        sr, se = fit["sigma_r_aux"], fit["SE_sigma_r_aux"]
        with np.errstate(divide="ignore", invalid="ignore"):
            npx = np.round((sr / se) ** 2 / 2 + 1)
        ok = np.isfinite(fit["A_aux"]) & np.isfinite(fit["A_pstd_aux"]) & np.isfinite(npx) & (sr > 0)
        if not ok.any():
            continue
        frames.append(f)
        noise.append(float(np.median(sr[ok])))
        for k, v in (("A", fit["A_aux"]), ("A_pstd", fit["A_pstd_aux"]), ("npx", npx),
                     ("pval", fit["pval_A_aux"]), ("frame", np.full(sr.size, f))):
            parts[k].append(v[ok])
    vals = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    bg = SlaveBackground(**vals, frames=np.asarray(frames, float), noise=np.asarray(noise),
                         level=float("nan"), p_detection=float("nan"))
    if bg.n < 20:
        log.warning("auxilin background: only %d fits at background positions (cell mask too small or "
                    "covered by detections); no slave classification flags", bg.n)
        return bg
    r = bg.scale(bg.frame)
    level = _calibrated_level(bg.A / r, bg.A_pstd / r, bg.npx, alpha)
    return dataclasses.replace(bg, level=level, p_detection=float(np.mean(bg.pval < alpha)))


def _slave_flags(track_of_row: np.ndarray, n_tracks: int, frame: np.ndarray, core: np.ndarray, gap: np.ndarray,
                 V: dict, bg: SlaveBackground, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cmeAnalysis slave classification over all rows at once.

    significantMaster: significant auxilin detections (not gaps) > binoinv(0.95, L, pDetection);
    significantVsBackground (per frame): t-test of A > the background level of that frame;
    significantSlave: their count > binoinv(0.95, L, alpha); L = track frames. Both reference
    rates come from
    :func:`_slave_background`, so each per-frame test fires on a fraction alpha (resp.
    pDetection) of auxilin-free frames.
    """
    L = np.bincount(track_of_row[core], minlength=n_tracks)
    sig = core & ~gap & (V["pval_Ar"][1] < alpha)
    n_sig = np.bincount(track_of_row[sig], minlength=n_tracks)
    sr, se = V["sigma_r"][1], V["SE_sigma_r"][1]
    with np.errstate(divide="ignore", invalid="ignore"):
        npx = np.round((sr / se) ** 2 / 2 + 1)
    hval = core & _vs_background(V["A"][1], V["A_pstd"][1], npx, bg.level_at(frame), alpha)
    n_bg = np.bincount(track_of_row[hval], minlength=n_tracks)
    return (n_sig > stats.binom.ppf(0.95, L, bg.p_detection)), (n_bg > stats.binom.ppf(0.95, L, alpha)), hval


# --------------------------------------------------------------------------------------
# Main entry
# --------------------------------------------------------------------------------------
def process_tracks(detections: pd.DataFrame, movie: Any, masks: np.ndarray, cfg: dict | None = None, *,
                   cell: Any = 0, cell_mask: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Linked detections of one movie -> (per-track table, per-track-frame table).

    ``detections``: the :func:`domains.cme.tracking.detect.detect_movie` table with ``track_id``
    (and ``compound_id``) from :func:`domains.cme.tracking.link.link`; ``masks``: the (T, H, W)
    detection masks of ``detect_movie(..., return_masks=True)``; ``cell_mask`` defaults to
    :func:`cell_mask_from_movie`. ``cfg`` is the CME domain config section.
    """
    pcfg = ProcessingConfig.from_dict((cfg or {}).get("track_processing"))
    data = movie_array(movie)
    T, n_ch, H, W = data.shape
    if masks is None or masks.shape != (T, H, W):
        raise InputError(getattr(movie, "name", None),
                         f"detection masks of shape {None if masks is None else masks.shape}, expected {(T, H, W)}")
    interval = float(getattr(movie, "frame_interval_s", 1.0))
    pixel_um = float(getattr(movie, "pixel_size_um", np.nan))
    s_m, s_a = detection_config(cfg).sigmas(pixel_um if np.isfinite(pixel_um) else 0.08)
    if "sigma" in detections and len(detections):
        s_m = float(detections["sigma"].iloc[0])
        s_a = float(detections["sigma_aux"].iloc[0]) if "sigma_aux" in detections else s_a
    sigmas = (s_m, s_a)
    if "track_id" not in detections:
        raise InputError(None, "process_tracks: detections are not linked (no 'track_id'); run track.link first")
    det = detections[detections["track_id"] >= 0]
    # border removal (cmeAnalysis): every position of every channel >= ceil(4 sigma) px from the edge
    w4 = math.ceil(4 * s_m)
    bad = np.zeros(len(det), bool)
    for cx, cy in (("x", "y"), ("x_aux", "y_aux")):
        if cx in det:
            xr, yr = np.round(det[cx].to_numpy()), np.round(det[cy].to_numpy())
            with np.errstate(invalid="ignore"):
                bad |= (xr < w4) | (xr > W - 1 - w4) | (yr < w4) | (yr > H - 1 - w4)
    det = det[~det["track_id"].isin(det["track_id"][bad])]
    tracks = _build_tracks(det, T, n_ch, pcfg.buffer)
    dcfg = detection_config(cfg)
    positions = {int(f): (g["x"].to_numpy(float), g["y"].to_numpy(float))
                 for f, g in detections.groupby("frame", sort=False)} if len(detections) else {}
    slave = None
    if pcfg.slave_at_master and len(detections):
        first = detections.groupby("track_id")["frame"].transform("min").to_numpy()
        first = np.where(detections["track_id"].to_numpy() >= 0, first, detections["frame"].to_numpy())
        starts = {int(f): first[idx] for f, idx in detections.groupby("frame", sort=False).indices.items()}
        slave = {"positions": positions, "starts": starts, "alpha_fit": dcfg.alpha_aux,
                 "neighbours": dcfg.aux_neighbours, "max_shift": dcfg.slave_max_shift}
    _refit(tracks, data, masks, sigmas, pcfg.alpha, slave)
    _categories(tracks, interval, T, pcfg)
    if pcfg.postprocess:
        tracks = _split_hotspots(tracks)
        _displacement_check(tracks)
    if cell_mask is None:
        cell_mask = cell_mask_from_movie(movie)
    bg = None
    if n_ch > 1:
        bg = _slave_background(data, masks, cell_mask, sigmas, positions, dcfg.alpha_aux, pcfg.alpha,
                               dcfg.aux_neighbours, pcfg, dcfg.slave_max_shift)
    condition = str(getattr(movie, "condition", ""))
    tables = dict(n_ch=n_ch, interval=interval, pixel_um=pixel_um, bg=bg, pcfg=pcfg, condition=condition,
                  cell=cell, cfg=cfg)
    tracks_df, frames_df = _tables(tracks, **tables)
    if n_ch > 1 and pcfg.burst_split_frames is not None and len(tracks_df):
        ends = burst_ends(tracks_df, frames_df, cfg, pcfg.burst_split_frames)
        if len(ends):
            tracks = _split_after_bursts(tracks, dict(zip(ends["track_id"], ends["frame"])))
            tracks_df, frames_df = _tables(tracks, **tables)
            log.info("cell %s: %d tracks cut after an auxilin burst (track_processing.burst_split_frames)",
                     cell, len(ends))
    tracks_df.attrs.update({"bg95_auxilin": bg.level if bg else np.nan,
                            "p_detection_auxilin": bg.p_detection if bg else np.nan,
                            "n_background_fits_auxilin": bg.n if bg else 0,
                            "sigma_clathrin": s_m, "sigma_auxilin": s_a})
    log.info("cell %s: %d tracks (%d in category 1)", cell, len(tracks_df),
             int((tracks_df["catIdx"] == 1).sum()) if len(tracks_df) else 0)
    return tracks_df, frames_df


def _tables(tracks: list[_Track], *, n_ch: int, interval: float, pixel_um: float, bg: SlaveBackground | None,
            pcfg: ProcessingConfig, condition: str, cell: Any, cfg: dict | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-track and per-track-frame tables of ``tracks`` (ids = list positions), labelled."""
    frames_df, sig_master, sig_slave = _frame_table(tracks, n_ch, interval, pixel_um, bg, pcfg.alpha)
    track_rows = []
    for new_id, tr in enumerate(tracks):
        L = tr.end - tr.start + 1
        row = {"condition": condition, "cell": cell, "track_id": new_id, "start_frame": tr.start,
               "end_frame": tr.end, "n_frames": L, "lifetime_s": L * interval, "catIdx": tr.cat,
               "nSeg": tr.n_seg, "visibility": tr.visibility,
               "isCCP": not bool(np.nansum(tr.v["hval_AD"][0][tr.core & ~tr.gap])),
               "n_gaps": int(tr.gap.sum()), "valid_gaps": max(tr.gap_status + (4,)) == 4,
               "linked_track_id": tr.tid, "compound_id": tr.compound, "split_from": tr.split_from,
               "t_start_s": tr.start * interval,
               "x_mean": float(np.nanmean(tr.col("x"))), "y_mean": float(np.nanmean(tr.col("y"))),
               "A_max_clathrin": float(np.nanmax(tr.col("A")))}
        row.update(_motion(tr, pcfg.msd_max_lag, pcfg.diffusion_max_lag) if tr.cat < 5 else
                   {"total_displacement": np.nan, "msd_max": np.nan, "msd_lag1": np.nan, "D_px2_per_frame": np.nan})
        if n_ch > 1:
            row["A_max_auxilin"] = float(np.nanmax(tr.col("A", 1)))
            row["significantMaster_auxilin"] = bool(sig_master[new_id])
            row["significantSlave_auxilin"] = bool(sig_slave[new_id])
        track_rows.append(row)
    tracks_df = pd.DataFrame(track_rows, columns=None if track_rows else _TRACK_COLUMNS)
    if len(tracks_df):
        tracks_df["mean_total_displacement"] = tracks_df["total_displacement"] / tracks_df["lifetime_s"]
        tracks_df["D_um2_per_s"] = tracks_df["D_px2_per_frame"] * pixel_um ** 2 / interval
    frames_df.insert(0, "cell", [cell] * len(frames_df))
    frames_df.insert(0, "condition", condition)
    if n_ch > 1 and len(tracks_df):
        tracks_df = add_labels(tracks_df, frames_df, cfg)
    return tracks_df, frames_df


def _frame_table(tracks: list[_Track], n_ch: int, interval: float, pixel_um: float,
                 bg: SlaveBackground | None, alpha: float):
    """The long per-track-frame table of all tracks, and the slave flags per track."""
    if not tracks:
        return _empty_frames(n_ch), np.zeros(0, bool), np.zeros(0, bool)
    counts = [len(tr.f) for tr in tracks]
    row_track = np.repeat(np.arange(len(tracks)), counts)
    f = np.concatenate([tr.f for tr in tracks]).astype(np.int64)
    part = np.concatenate([tr.part for tr in tracks])
    gap = np.concatenate([tr.gap for tr in tracks])
    V = {name: np.concatenate([tr.v[name] for tr in tracks], axis=1) for name in FRAME_FIELDS}
    core = part == 1
    d = {"track_id": row_track, "segment": core.astype(np.int64),
         "part": pd.Categorical.from_codes(part, categories=list(PARTS)),
         "frame": f, "t_s": f * interval, "gap": gap, "x": V["x"][0], "y": V["y"][0],
         "x_um": V["x"][0] * pixel_um, "y_um": V["y"][0] * pixel_um}
    for ch in range(n_ch):
        name = CHANNELS[ch]
        for field in FRAME_FIELDS[:-1]:
            d[f"{field}_{name}"] = V[field][ch]
        d[f"isPSF_{name}"] = V["hval_AD"][ch] == 0
        d[f"hval_Ar_{name}"] = V["pval_Ar"][ch] < 0.05
    sig_master = sig_slave = np.zeros(len(tracks), bool)
    if n_ch > 1:
        sig_master, sig_slave, hval = _slave_flags(row_track, len(tracks), f, core, gap, V, bg, alpha)
        d["significantVsBackground_auxilin"] = hval
    return pd.DataFrame(d), sig_master, sig_slave


def _empty_frames(n_ch: int) -> pd.DataFrame:
    cols = ["track_id", "segment", "part", "frame", "t_s", "gap", "x", "y", "x_um", "y_um"]
    for ch in range(n_ch):
        name = CHANNELS[ch]
        cols += [f"{f}_{name}" for f in FRAME_FIELDS[:-1]] + [f"isPSF_{name}", f"hval_Ar_{name}"]
    return pd.DataFrame({c: [] for c in cols})


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------
def detection_track_ids(detections: pd.DataFrame, tracks_df: pd.DataFrame, frames_df: pd.DataFrame) -> np.ndarray:
    """The processed track id (``tracks_df.track_id``) of every linked detection of one cell.

    The linker's ids (``detections.track_id``) are not those of the processed tracks: single-frame
    and border tracks are dropped, tracks are renumbered and some are cut in two. A detection
    belongs to the processed track whose own (non-gap) frame it is; -1 when none (its linked
    track was dropped). Detections then join the track tables on (cell, track_id, frame).
    """
    if len(detections) == 0 or len(tracks_df) == 0:
        return np.full(len(detections), -1, np.int64)
    own = frames_df[(frames_df["part"].astype(str) == "track") & ~frames_df["gap"].astype(bool)]
    own = own[["track_id", "frame"]].merge(tracks_df[["track_id", "linked_track_id"]], on="track_id",
                                           validate="many_to_one")
    own = own.drop_duplicates(["linked_track_id", "frame"])
    key = detections[["track_id", "frame"]].rename(columns={"track_id": "linked_track_id"})
    hit = key.merge(own, on=["linked_track_id", "frame"], how="left", validate="many_to_one")
    return hit["track_id"].fillna(-1).to_numpy(np.int64)


def to_napari_tracks(detections: pd.DataFrame) -> np.ndarray:
    """napari Tracks layer data (N, 4) [track_id, t, y, x], sorted by track then time.

    Buffer rows (``part`` not 'track') are left out; one cell per call (track ids must be
    unique), rows without a track (-1) are dropped. Compound cmeAnalysis tracks (merges and
    splits) keep their first segment where segments share a frame, since napari takes one
    position per track and time point.
    """
    need = {"track_id", "frame", "x", "y"}
    missing = need - set(detections.columns)
    if missing:
        raise InputError(None, f"napari export: table lacks columns {sorted(missing)}")
    d = detections
    if "part" in d:
        d = d[d["part"].astype(str) == "track"]
    if "cell" in d and d["cell"].nunique() > 1:
        raise InputError(None, "napari export: several cells in one table; export one cell at a time")
    d = d[d["track_id"] >= 0].sort_values(["track_id", "frame"], kind="stable")
    d = d.drop_duplicates(["track_id", "frame"], keep="first")
    return d[["track_id", "frame", "y", "x"]].to_numpy(float)


def write_napari_tracks(path: str | Path, detections: pd.DataFrame) -> Path:
    """Write the napari Tracks array as CSV (header track_id,t,y,x), atomically."""
    arr = to_napari_tracks(detections)
    out = pd.DataFrame(arr, columns=["track_id", "t", "y", "x"]).astype({"track_id": np.int64, "t": np.int64})
    path = Path(path)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return path


def write_tables(out_dir: str | Path, tracks_df: pd.DataFrame, frames_df: pd.DataFrame,
                 stem: str = "tracks") -> tuple[Path, Path]:
    """Write ``<stem>.parquet`` (per track) and ``<stem>_frames.parquet`` (per track frame)."""
    out_dir = Path(out_dir)
    paths = (out_dir / f"{stem}.parquet", out_dir / f"{stem}_frames.parquet")
    for df, path in zip((tracks_df, frames_df), paths):
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
    return paths
