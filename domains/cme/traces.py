"""Tracks -> auxilin labels and the 40-point AWD input traces (the Yu-group pipeline).

Works on the two track tables of :func:`domains.cme.tracking.processing.process_tracks` or of
:mod:`domains.cme.cmeanalysis_io` (same column conventions): :func:`add_labels` computes the
auxilin labels per track from its auxilin amplitudes and p-values; :func:`build_traces` applies
the AWD filters and builds the (n, 40) clathrin traces and the per-cell z-scored
``Y_sig_mean`` target.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from awd.io import InputError, is_count, is_number, known_fields

log = logging.getLogger(__name__)

#: ``aux_thresh_sd`` default: the Yu group's absolute threshold (973 ADU) over the typical
#: auxilin pixel noise of their camera, the median fit residual sd ``sigma_r`` of the auxilin
#: channel at the tracks, 280-390 ADU per cell (midpoint 335 ADU) in cmeAnalysis outputs of 8
#: SUM159 cells imaged like the reference data (CME notes, section 2): 973 / 335 = 2.9.
AUX_THRESH_SD = 2.9

#: ``aux_colocalisation_px`` default: the auxilin fit must lie within 1.5 px of the clathrin
#: position for a frame to count. A slave fit allowed to move 3 sigma_master (cmeAnalysis; see
#: ``detection.slave_max_shift``, default 1 sigma, about 1.2-1.5 px, where this rarely applies)
#: lands on noise peaks or on a neighbour's burst 2-3 px away; true auxilin at the pit
#: sits within the channel registration offset (<= 0.3 px) plus the localisation error of a
#: dim burst (about 0.5 px per axis at SNR ~3, 95 % radius ~1.2 px) of it. On simulated cells
#: at the real pit density (issue 13), 66-100 % of the significant auxilin frames of aux- tracks
#: more than 5 px from any auxilin signal were fits that had moved > 1.5 px.
AUX_COLOCALISATION_PX = 1.5

#: ``aux_clathrin_drop`` default: a significant auxilin frame before the last
#: ``aux_drop_end`` track frames counts only where the clathrin falls after it, by at least this
#: fraction of the track's maximum (mean over ``aux_drop_frames`` frames after it against the
#: same number before it). The burst follows scission, as the coat leaves; a burst that is a
#: neighbour's, or a chance punctum, leaves the track's own clathrin where it was. The
#: reference's rule-based variant asks the same of the auxilin peak; applied to every frame it
#: cost sensitivity on tracks that end a few frames before their pit does, so the track's end
#: and its end buffer are exempt. On simulated cells at the real pit density (issue 13; eight
#: 256^2 and eight long-lived 144^2 cells per PSF, 1.45 and 1.2 px) it took the aux+ false
#: positives from 0.056-0.071 to 0.033-0.050 at 0.005-0.008 lower sensitivity; 0.1 and 0.2
#: gave overall rates within 0.004 of these (``domains/cme/README.md``).
AUX_CLATHRIN_DROP = 0.15

#: ``aux_consec_frames`` default: two significant auxilin frames at most 3 frames apart (at most
#: two frames between them) count as consecutive for ``y_consec_sig``; the reference asks for
#: adjacent frames (1). A dim burst (peak 2-3 x the pixel noise, 3-10 s long) passes the per-frame
#: amplitude test (A > 2 sigma_r) in only about half of its frames, so its significant frames are
#: often one or two frames apart; by chance, two significant frames that close are rare, since
#: 0.3-0.6 % of auxilin-free fits are significant (``p_detection``). On simulated cells at the real
#: pit density (issue 13; 16 256^2 and 16 long-lived 144^2 cells per PSF, 1.45 and 1.2 px) it
#: raised the aux+ sensitivity by 0.003-0.004 at false positives +0.000-0.001
#: (``domains/cme/README.md``).
AUX_CONSEC_FRAMES = 3


@dataclass(frozen=True)
class LabelConfig:
    """AWD label/input settings (config section ``labels``); values of the Yu-group pipeline.

    Lifetimes here are in frames (1 frame = 1 s in the reference data). The conservative
    auxilin threshold is ``aux_thresh_sd`` times the cell's auxilin noise (:func:`aux_noise`),
    which gives the reference's 973 ADU on the reference camera and follows the gain of any
    other; ``aux_thresh_adu`` (ADU) replaces it with an absolute value.

    The auxilin frames of a track (:func:`add_labels`) are its track frames plus, with
    ``aux_end_buffer``, its end buffer: the burst comes at scission, when the clathrin signal
    fades, so tracks often end a few frames early and their burst falls in the end buffer.
    With ``aux_colocalisation_px`` a frame counts only where the auxilin fit lies within that
    distance of the clathrin position (a free slave fit that wandered onto a noise peak or a
    neighbour's burst does not). With ``aux_end_window`` only the last that many track frames
    (and the end buffer) count: the burst follows scission, at the end of the pit's life, while a
    long aux- track collects chance auxilin spots (a neighbour's burst, a random punctum) all
    along it. With ``aux_clathrin_drop`` a frame before the track's last ``aux_drop_end`` track
    frames counts only where the clathrin amplitude falls after it (:func:`clathrin_drop`).
    ``aux_consec_frames`` (:data:`AUX_CONSEC_FRAMES`): how many frames apart two significant
    frames may be to count as "consecutive" (1: adjacent, the reference rule).
    ``aux_end_buffer: false, aux_colocalisation_px: null, aux_clathrin_drop: null,
    aux_consec_frames: 1, aux_thresh_adu: 973`` reproduce the reference pipeline exactly.
    """

    alpha: float = 0.05
    aux_thresh_sd: float = AUX_THRESH_SD
    aux_thresh_adu: float | None = None
    aux_end_buffer: bool = True
    aux_colocalisation_px: float | None = AUX_COLOCALISATION_PX
    aux_end_window: int | None = None
    aux_clathrin_drop: float | None = AUX_CLATHRIN_DROP
    aux_consec_frames: int = AUX_CONSEC_FRAMES
    aux_drop_frames: int = 5
    aux_drop_end: int = 5
    categories: tuple[int, ...] = (1, 2)
    min_frames: int = 3
    purity: float = 0.95
    drop_short_long: bool = True
    min_lifetime: int = 15
    n_points: int = 40
    drop_hotspots: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> "LabelConfig":
        d = known_fields(cls, d, "labels")
        if "categories" in d:
            d["categories"] = tuple(int(v) for v in d["categories"])
        cfg = cls(**d)
        if not 0.5 < cfg.purity <= 1 or cfg.n_points < 2 or not 0 < cfg.alpha < 1:
            raise InputError("config:labels", "need 0.5 < purity <= 1, n_points >= 2, 0 < alpha < 1")
        if not (math.isfinite(cfg.aux_thresh_sd) and cfg.aux_thresh_sd > 0):
            raise InputError("config:labels.aux_thresh_sd", f"must be a number > 0, got {cfg.aux_thresh_sd}")
        if cfg.aux_thresh_adu is not None and not math.isfinite(cfg.aux_thresh_adu):
            raise InputError("config:labels.aux_thresh_adu", f"must be null or a finite number of ADU, "
                             f"got {cfg.aux_thresh_adu}")
        if not isinstance(cfg.aux_end_buffer, bool):
            raise InputError("config:labels.aux_end_buffer", f"must be true or false, got {cfg.aux_end_buffer!r}")
        r = cfg.aux_colocalisation_px
        if r is not None and not (is_number(r) and r > 0):
            raise InputError("config:labels.aux_colocalisation_px", f"must be null or a number of px > 0, got {r!r}")
        w = cfg.aux_end_window
        if w is not None and not is_count(w):
            raise InputError("config:labels.aux_end_window",
                             f"must be null or a whole number of frames >= 1, got {w!r}")
        d = cfg.aux_clathrin_drop
        if d is not None and not is_number(d):
            raise InputError("config:labels.aux_clathrin_drop",
                             f"must be null or a fraction of the track's maximum, got {d!r}")
        for key in ("aux_consec_frames", "aux_drop_frames", "aux_drop_end"):
            v = getattr(cfg, key)
            if not is_count(v):
                raise InputError(f"config:labels.{key}", f"must be a whole number of frames >= 1, got {v!r}")
        return cfg


# --------------------------------------------------------------------------------------
# Labels (Yu group, outcomes.py)
# --------------------------------------------------------------------------------------
def aux_labels(Y: np.ndarray, pvals: np.ndarray, alpha: float = 0.05, aux_thresh: float = 973.0,
               near: np.ndarray | None = None, consec_frames: int = 1) -> dict:
    """Auxilin labels of one track from its auxilin amplitudes and p-values (its auxilin
    frames in time order, see :func:`add_labels`).

    ``y_consec_sig``: two significant frames at most ``consec_frames`` frames apart (1:
    consecutive, the reference rule; :data:`AUX_CONSEC_FRAMES`); ``y_conservative_thresh``: max >
    ``aux_thresh`` (ADU; the reference's 973 by default, :func:`add_labels` passes the cell's
    own); ``aux_positive`` = their OR (``y_consec_thresh``); ``hotspot``: >= 5 significant
    frames and consecutive-significance pairs more than 2 apart in the list of significant
    frames; ``Y_sig_mean``: mean of Y over significant frames (0 if none). ``near`` (bool per
    frame, None = all): frames that pass :func:`add_labels`' tests (auxilin fit colocalised with
    the clathrin spot, clathrin falling after it); the others are neither significant nor
    counted in ``Y_max``.
    """
    Y = np.asarray(Y, dtype=float)
    sig = np.asarray(pvals, dtype=float) < alpha
    if near is not None:
        near = np.asarray(near, dtype=bool)
        sig &= near
        Y = np.where(near, Y, np.nan)
    idx = np.flatnonzero(sig)
    consec = idx.size > 1 and int(np.min(np.diff(idx))) <= consec_frames
    hot = False
    if idx.size >= 5:
        pairs = np.flatnonzero(np.diff(idx) == 1)
        hot = pairs.size > 1 and int(np.max(np.diff(pairs))) > 2
    y_max = float(np.nanmax(Y)) if np.isfinite(Y).any() else float("nan")
    return {"n_sig_aux": int(idx.size), "y_consec_sig": bool(consec), "Y_max": y_max,
            "y_conservative_thresh": bool(y_max > aux_thresh), "aux_positive": bool(consec or y_max > aux_thresh),
            "hotspot": bool(hot), "Y_sig_mean": float(Y[sig].mean()) if idx.size else 0.0}


def aux_noise(frames_df: pd.DataFrame, tracks_df: pd.DataFrame | None = None) -> pd.Series:
    """The auxilin noise of each cell: the median fit residual sd ``sigma_r_auxilin`` over its
    track rows (``part == 'track'``, gaps included), in ADU; over the rows of its category-1
    tracks when ``tracks_df`` gives ``catIdx`` and the cell has any.

    Both routes have it per frame: :func:`domains.cme.tracking.processing.process_tracks`
    and the cmeAnalysis outputs (ProcessedTracks.mat and lifetimeData.mat ``sigma_r``). It is
    the statistic the reference cells' 280-390 ADU were measured with (category-1 tracks, as
    lifetimeData.mat keeps them, so both MAT files of one export give the same value), so the
    ``aux_thresh_sd`` calibration carries over; it scales with the camera gain like the
    amplitudes, so the threshold does too.
    """
    if "sigma_r_auxilin" not in frames_df.columns:
        raise InputError(None, "track frame table lacks 'sigma_r_auxilin', which labels.aux_thresh_sd needs "
                         "(the auxilin noise); set labels.aux_thresh_adu to use an absolute threshold instead")
    rows = frames_df.loc[frames_df["part"].astype(str) == "track", ["cell", "track_id", "sigma_r_auxilin"]]
    if tracks_df is not None and "catIdx" in tracks_df.columns and len(rows):
        cat1 = tracks_df.loc[tracks_df["catIdx"].astype("Float64").eq(1).fillna(False).to_numpy(bool),
                             ["cell", "track_id"]]
        in_cat1 = pd.MultiIndex.from_frame(rows[["cell", "track_id"]]).isin(pd.MultiIndex.from_frame(cat1))
        has_cat1 = rows["cell"].isin(pd.unique(rows.loc[in_cat1, "cell"])).to_numpy()
        rows = rows[in_cat1 | ~has_cat1]
    noise = rows.groupby("cell", sort=False)["sigma_r_auxilin"].median()
    bad = noise.index[~(np.isfinite(noise.to_numpy(float)) & (noise.to_numpy(float) > 0))]
    if len(bad):
        raise InputError(None, f"cells {list(bad)}: no finite 'sigma_r_auxilin' in the track rows, so the "
                         f"auxilin threshold labels.aux_thresh_sd cannot be set; set labels.aux_thresh_adu")
    return noise


def aux_thresholds(frames_df: pd.DataFrame, lcfg: LabelConfig, tracks_df: pd.DataFrame | None = None) -> pd.Series:
    """The conservative auxilin threshold in ADU of each cell: ``aux_thresh_adu`` if set, else
    ``aux_thresh_sd`` times :func:`aux_noise`."""
    cells = pd.unique(frames_df.loc[frames_df["part"].astype(str) == "track", "cell"])
    if lcfg.aux_thresh_adu is not None:
        return pd.Series(float(lcfg.aux_thresh_adu), index=pd.Index(cells, name="cell"))
    return lcfg.aux_thresh_sd * aux_noise(frames_df, tracks_df)


def _near_end(rows: pd.DataFrame, window: int) -> np.ndarray:
    """Of track-frame rows sorted by cell, track and frame: those within ``window`` frames of
    their track's last track frame (the last ``window`` track frames) or after it (end buffer)."""
    in_track = rows["part"].astype(str).eq("track")
    last = rows["frame"].where(in_track).groupby([rows["cell"], rows["track_id"]], sort=False).transform("max")
    return ~(rows["frame"] <= last - window).to_numpy()


def clathrin_drop(rows: pd.DataFrame, k: int) -> np.ndarray:
    """Of track-frame rows sorted by cell, track and frame: how far the clathrin falls after each
    row, as a fraction of its track's maximum ``A_clathrin`` over these rows: the mean of the
    ``k`` rows before it minus the mean of the ``k`` rows after it (NaN amplitudes left out).
    +inf where no row after it has an amplitude (the track's last row), -inf where none before
    it has one; 0 where the track's maximum is not positive.
    """
    A = rows["A_clathrin"].to_numpy(float)
    n = A.size
    if n == 0:
        return np.zeros(0)
    ids = rows[["cell", "track_id"]]
    starts = np.flatnonzero(np.r_[True, (ids.iloc[1:].to_numpy() != ids.iloc[:-1].to_numpy()).any(axis=1)])
    sizes = np.diff(np.r_[starts, n])
    first, end = np.repeat(starts, sizes), np.repeat(starts + sizes, sizes)
    finite = np.isfinite(A)
    peak = np.repeat(np.maximum.reduceat(np.where(finite, A, -np.inf), starts), sizes)
    total = np.concatenate([[0.0], np.cumsum(np.where(finite, A, 0.0))])
    count = np.concatenate([[0], np.cumsum(finite)])
    i = np.arange(n)
    b0, b1 = np.maximum(i - k, first), i
    a0, a1 = i + 1, np.minimum(i + 1 + k, end)
    n_before, n_after = count[b1] - count[b0], count[a1] - count[a0]
    with np.errstate(invalid="ignore", divide="ignore"):
        fall = (total[b1] - total[b0]) / n_before - (total[a1] - total[a0]) / n_after
        out = np.where(peak > 0, fall / peak, 0.0)
    out[n_before == 0] = -np.inf
    out[n_after == 0] = np.inf
    return out


def _label_rows(frames_df: pd.DataFrame, lcfg: LabelConfig) -> tuple[pd.DataFrame, bool, bool]:
    """The auxilin frames of every track (:func:`add_labels`), sorted by cell, track and frame,
    with ``_counted`` (bool: the frame passes the colocalisation and clathrin-drop tests that
    apply) when any test applies; and whether each test was applied (colocalisation,
    clathrin drop)."""
    need = {"cell", "track_id", "part", "frame", "A_auxilin", "pval_Ar_auxilin"}
    missing = need - set(frames_df.columns)
    if missing:
        raise InputError(None, f"track frame table lacks columns {sorted(missing)}")
    parts = ("track", "end_buffer") if lcfg.aux_end_buffer else ("track",)
    rows = frames_df[frames_df["part"].astype(str).isin(parts)].sort_values(["cell", "track_id", "frame"])
    drop_test = lcfg.aux_clathrin_drop is not None and "A_clathrin" in frames_df.columns
    if lcfg.aux_clathrin_drop is not None and not drop_test and len(rows):
        log.warning("track frame table lacks 'A_clathrin': auxilin labels without the clathrin-drop test "
                    "(labels.aux_clathrin_drop)")
    if drop_test:
        rows = rows.assign(_fell=(clathrin_drop(rows, lcfg.aux_drop_frames) >= lcfg.aux_clathrin_drop)
                           | _near_end(rows, lcfg.aux_drop_end))
    if lcfg.aux_end_window is not None and len(rows):
        rows = rows[_near_end(rows, lcfg.aux_end_window)]
    position_cols = {"x", "y", "x_auxilin", "y_auxilin"}
    colocalise = lcfg.aux_colocalisation_px is not None and position_cols <= set(frames_df.columns)
    if lcfg.aux_colocalisation_px is not None and not colocalise and len(rows):
        log.warning("track frame table lacks %s: auxilin labels without the colocalisation test "
                    "(labels.aux_colocalisation_px)", sorted(position_cols - set(frames_df.columns)))
    if colocalise:
        with np.errstate(invalid="ignore"):
            near = np.hypot(rows["x_auxilin"].to_numpy(float) - rows["x"].to_numpy(float),
                            rows["y_auxilin"].to_numpy(float) - rows["y"].to_numpy(float)) <= lcfg.aux_colocalisation_px
        rows = rows.assign(_near=near)
    tests = [col for col, on in (("_near", colocalise), ("_fell", drop_test)) if on]
    if tests:
        rows = rows.assign(_counted=rows[tests].all(axis=1))
    return rows, colocalise, drop_test


def add_labels(tracks_df: pd.DataFrame, frames_df: pd.DataFrame, cfg: dict | None = None) -> pd.DataFrame:
    """The per-track table with the auxilin labels (:func:`aux_labels`) computed from the
    auxilin frames of each track in ``frames_df``: its track rows (``part == 'track'``, gaps
    included) and, with ``labels.aux_end_buffer``, its end-buffer rows; with each cell's
    threshold (:func:`aux_thresholds`; also in ``attrs['aux_thresh_adu']``, str(cell) -> ADU).

    With ``labels.aux_colocalisation_px`` a frame counts only where the auxilin fit
    (``x_auxilin``, ``y_auxilin``) lies within that many px of the row's clathrin position
    (``x``, ``y``); tables without these columns (lifetimeData.mat) are labelled without the
    test, with a warning. ``attrs['aux_colocalised']`` says whether it was applied. With
    ``labels.aux_clathrin_drop`` a frame before the track's last ``aux_drop_end`` track frames
    counts only where :func:`clathrin_drop` (over ``aux_drop_frames``) reaches it; tables
    without ``A_clathrin`` are labelled without it, with a warning
    (``attrs['aux_clathrin_drop']``).
    """
    lcfg = LabelConfig.from_dict((cfg or {}).get("labels"))
    rows, colocalise, drop_test = _label_rows(frames_df, lcfg)
    counted = "_counted" in rows.columns
    thresh = aux_thresholds(frames_df, lcfg, tracks_df) if len(rows) else pd.Series(dtype=float)
    for cell, value in thresh.items():
        log.info("cell %s: auxilin threshold %.0f ADU (%s)", cell, value,
                 "labels.aux_thresh_adu" if lcfg.aux_thresh_adu is not None
                 else f"{lcfg.aux_thresh_sd:g} x auxilin noise {value / lcfg.aux_thresh_sd:.0f} ADU")
    labs = []
    for (cell, tid), g in rows.groupby(["cell", "track_id"], sort=False):
        labs.append({"cell": cell, "track_id": tid, **aux_labels(g["A_auxilin"].to_numpy(),
                                                                g["pval_Ar_auxilin"].to_numpy(),
                                                                lcfg.alpha, float(thresh[cell]),
                                                                g["_counted"].to_numpy() if counted else None,
                                                                lcfg.aux_consec_frames)})
    lab = pd.DataFrame(labs, columns=["cell", "track_id", "n_sig_aux", "y_consec_sig", "Y_max",
                                      "y_conservative_thresh", "aux_positive", "hotspot", "Y_sig_mean"])
    base = tracks_df.drop(columns=[c for c in lab.columns if c not in ("cell", "track_id")], errors="ignore")
    out = base.merge(lab, on=["cell", "track_id"], how="left", validate="one_to_one")
    out.attrs = {**tracks_df.attrs, "aux_thresh_adu": {str(c): float(v) for c, v in thresh.items()},
                 "aux_colocalised": bool(colocalise), "aux_clathrin_drop": bool(drop_test)}
    return out


def burst_ends(tracks_df: pd.DataFrame, frames_df: pd.DataFrame, cfg: dict | None, min_after: int) -> pd.DataFrame:
    """Tracks that go on for at least ``min_after`` track frames after an auxilin burst: per such
    track (``cell``, ``track_id``) the ``frame`` that ends its first burst.

    A burst is what the ``y_consec_sig`` label counts: significant auxilin frames (``alpha``,
    the colocalisation and clathrin-drop tests of :func:`add_labels`) at most
    ``aux_consec_frames`` apart, two or more of them; it ends at the last frame of that chain.
    Auxilin arrives at scission and the coat leaves with the vesicle, so a pit ends with its
    burst: a track that goes on past one for many frames holds a second pit that the linker
    joined to it (the pit born at the same spot after it, or an abortive neighbour too close to
    resolve). ``tracks_df``: the table :func:`add_labels` returns (its ``hotspot`` tracks, whose
    repeated bursts are their own, are never listed).
    """
    lcfg = LabelConfig.from_dict((cfg or {}).get("labels"))
    rows, _, _ = _label_rows(frames_df, lcfg)
    sig = rows["pval_Ar_auxilin"].to_numpy(float) < lcfg.alpha
    if "_counted" in rows.columns:
        sig &= rows["_counted"].to_numpy(bool)
    hot = pd.MultiIndex.from_frame(tracks_df.loc[tracks_df["hotspot"].astype("boolean").fillna(False).to_numpy(bool),
                                                 ["cell", "track_id"]])
    in_track = rows["part"].astype(str).eq("track").to_numpy()
    frame = rows["frame"].to_numpy()
    out = []
    for (cell, tid), idx in rows.groupby(["cell", "track_id"], sort=False).indices.items():
        f = frame[idx][sig[idx]]
        close = np.flatnonzero(np.diff(f) <= lcfg.aux_consec_frames)
        if not close.size or (cell, tid) in hot:
            continue
        j = close[0] + 1
        while j + 1 < f.size and f[j + 1] - f[j] <= lcfg.aux_consec_frames:
            j += 1
        end = int(f[j])
        if np.count_nonzero(in_track[idx] & (frame[idx] > end)) >= min_after:
            out.append({"cell": cell, "track_id": tid, "frame": end})
    return pd.DataFrame(out, columns=["cell", "track_id", "frame"])


# --------------------------------------------------------------------------------------
# AWD inputs
# --------------------------------------------------------------------------------------
def downsample(x: np.ndarray, n_points: int = 40) -> tuple[np.ndarray, int]:
    """Yu-group ``features.downsample``: NaNs dropped; uniform index subsampling
    (indices floor((n-1) i / (n_points-1))) if long enough, else zero-padding at the end.
    Returns the series and the number of padded zeros."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n >= n_points:
        idx = ((n - 1) * np.arange(n_points)) // (n_points - 1)
        return x[idx], 0
    return np.concatenate([x, np.zeros(n_points - n)]), n_points - n


def purity_thresholds(lifetime: np.ndarray, positive: np.ndarray, purity: float = 0.95) -> tuple[float, float]:
    """Yu-group ``process_tracks_by_lifetime``: short = the largest lifetime L with >= purity
    negatives among lifetimes <= L (else min - 1); long = the smallest L with >= purity
    positives among lifetimes >= L (else max + 1)."""
    lifetime = np.asarray(lifetime, dtype=float)
    positive = np.asarray(positive, dtype=float)
    levels = np.unique(lifetime)
    if levels.size == 0:
        return float("-inf"), float("inf")
    neg_low = np.array([1 - positive[lifetime <= v].mean() for v in levels])
    pos_high = np.array([positive[lifetime >= v].mean() for v in levels])
    lo = np.flatnonzero(neg_low >= purity)
    hi = np.flatnonzero(pos_high >= purity)
    short = levels[lo[-1]] if lo.size else levels[0] - 1
    long = levels[hi[0]] if hi.size else levels[-1] + 1
    return float(short), float(long)


def _zscore(values: np.ndarray) -> np.ndarray:
    sd = values.std()
    return (values - values.mean()) / sd if sd > 0 else values - values.mean()


def build_traces(tracks_df: pd.DataFrame, frames_df: pd.DataFrame, cfg: dict | None = None,
                 train_cells=None, funnel: list | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """AWD inputs and target from track tables (of :func:`process_tracks` or of
    :mod:`domains.cme.cmeanalysis_io`), as the Yu-group pipeline builds them.

    Filters: catIdx in ``categories``; > ``min_frames - 1`` frames; hotspots dropped; the
    short/long lifetime thresholds of 95 % class purity (``aux_positive``), computed on the
    ``train_cells`` (all cells if None), drop tracks <= short or >= long; lifetime >
    ``min_lifetime`` frames. X: the clathrin amplitude of the track frames (gaps included,
    buffers not) subsampled / zero-padded to ``n_points`` and z-scored per cell with one mean
    and sd over all values of the cell; y: ``Y_sig_mean`` z-scored per cell.
    Tracks without per-frame amplitudes (lifetimeData.mat keeps them for category 1 only) are
    dropped after the category filter. When ``funnel`` is a list, one dict per cell is appended
    with the number of tracks kept after each step (``tracks_read``, ``kept_category``,
    ``kept_with_amplitudes``, ``kept_min_frames``, ``kept_no_hotspot``, ``kept_short_long``,
    ``kept_min_lifetime`` = traces) and the aux+ count of the traces.
    Returns (X (n, n_points) float32, y (n,) float32, cell ids, track ids, info DataFrame).
    """
    lcfg = LabelConfig.from_dict((cfg or {}).get("labels"))
    need = {"cell", "track_id", "catIdx", "n_frames"}
    missing = need - set(tracks_df.columns)
    if missing:
        raise InputError(None, f"track table lacks columns {sorted(missing)}")
    tr = add_labels(tracks_df, frames_df, cfg)
    rows = frames_df[frames_df["part"].astype(str) == "track"]
    steps = {"tracks_read": tr}
    tr = steps["kept_category"] = tr[tr["catIdx"].isin(lcfg.categories).fillna(False).astype(bool)]
    with_data = pd.MultiIndex.from_frame(rows[["cell", "track_id"]].drop_duplicates())
    tr = steps["kept_with_amplitudes"] = tr[pd.MultiIndex.from_frame(tr[["cell", "track_id"]]).isin(with_data)]
    tr = steps["kept_min_frames"] = tr[tr["n_frames"] >= lcfg.min_frames]
    if lcfg.drop_hotspots:
        tr = tr[~tr["hotspot"].astype(bool)]
    steps["kept_no_hotspot"] = tr
    train = tr if train_cells is None else tr[tr["cell"].isin(list(train_cells))]
    short, long = (purity_thresholds(train["n_frames"].to_numpy(), train["aux_positive"].to_numpy(), lcfg.purity)
                   if lcfg.drop_short_long else (float("-inf"), float("inf")))
    tr = steps["kept_short_long"] = tr[(tr["n_frames"] > short) & (tr["n_frames"] < long)]
    tr = steps["kept_min_lifetime"] = tr[tr["n_frames"] > lcfg.min_lifetime]
    tr = tr.sort_values(["cell", "track_id"]).reset_index(drop=True)
    if funnel is not None:
        for cell in pd.unique(tracks_df["cell"]):
            row = {"cell": cell, **{k: int((v["cell"] == cell).sum()) for k, v in steps.items()}}
            row["aux_positive"] = int(tr.loc[tr["cell"] == cell, "aux_positive"].astype(bool).sum())
            row["thresh_short_frames"], row["thresh_long_frames"] = short, long
            funnel.append(row)
    series = {key: g.sort_values("frame")["A_clathrin"].to_numpy()
              for key, g in rows.groupby(["cell", "track_id"], sort=False)}
    X = np.zeros((len(tr), lcfg.n_points))
    padded = np.zeros(len(tr), np.int64)
    for i, key in enumerate(zip(tr["cell"], tr["track_id"])):
        X[i], padded[i] = downsample(series[key], lcfg.n_points)
    y = tr["Y_sig_mean"].to_numpy(float).copy()
    cells = tr["cell"].to_numpy()
    for c in pd.unique(cells):
        m = cells == c
        X[m] = _zscore(X[m])
        y[m] = _zscore(y[m])
    info = tr[["cell", "track_id", "n_frames", "lifetime_s", "catIdx", "aux_positive", "Y_sig_mean",
               "Y_max", "n_sig_aux"]].copy()
    info["n_padded"] = padded
    info["thresh_short"], info["thresh_long"] = short, long
    return X.astype(np.float32), y.astype(np.float32), cells, tr["track_id"].to_numpy(), info
