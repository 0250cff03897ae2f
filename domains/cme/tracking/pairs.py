"""Track-guided pair fits: pits hidden in a neighbour's spot.

Two pits closer than about 1.5 PSF widths show as one spot; detection fits one Gaussian to it
and the linker gives that detection to one of the two tracks, so the other track stops there
(or starts there, going backwards) although its pit lives on. Frame by frame detection cannot
see the second pit (a free mixture fit of a dim pair ~2 px apart is rarely significant), but
the tracks know where it should be. :func:`fit_hidden_pairs` uses that: where a track stops
(or starts, or misses a frame) and the nearest detection of that frame belongs to another track
that was there in the frame before, it fits two Gaussians (positions, amplitudes, one
background; sigma fixed) in that detection's window, started at the track's predicted position
and at the other track's previous position, and keeps the pair when it beats the single
Gaussian in the shot-noise-weighted F-test of :func:`domains.cme.tracking.detect.fit_mixtures`,
each source stays near its start and neither is another detection of the frame. The pair
replaces the single detection (the host row is refitted, the hidden pit is a new row), a
stopped track's prediction moves on to the next frame, and the whole table is linked again, so
the continued track can join the piece where its pit reappears.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy import special
from scipy.spatial import cKDTree

from awd.io import InputError
from domains.cme.tracking.detect import (_fit_stats, _lm_dense, _Model, amplitude_pval, detection_config,
                                         extract_windows, fit_slave, movie_array)
from domains.cme.tracking.link import link, tracking_config

log = logging.getLogger(__name__)

#: master-channel fields a pair fit writes (host rows overwritten, new rows filled)
_FIT_COLUMNS = ("x", "y", "A", "c", "x_pstd", "y_pstd", "A_pstd", "c_pstd", "sigma_r", "SE_sigma_r", "RSS",
                "pval_A")


def _candidates(det: pd.DataFrame, n_frames: int, k: int) -> np.ndarray:
    """The frames where tracks with >= ``k`` detections may have lost their pit to a neighbour:
    the frame after the end and before the start, predicted at the mean position and amplitude
    of the ``k`` last / first detections, and every frame of a gap, predicted by interpolating
    its two ends. Rows in track order, each track's end, start, then its gaps' frames in order.
    Columns: track id, direction (+1 after the end, -1 before the start: followed on while
    found; 0 in a gap), frame, predicted x, y, amplitude."""
    tid, f = det["track_id"].to_numpy(), det["frame"].to_numpy()
    x, y, A = (det[c].to_numpy(float) for c in ("x", "y", "A"))
    rows = np.flatnonzero(tid >= 0)
    rows = rows[np.lexsort((f[rows], tid[rows]))]  # every track's rows in frame order
    new_track = np.r_[True, tid[rows[1:]] != tid[rows[:-1]]] if rows.size else np.zeros(0, bool)
    first = np.flatnonzero(new_track)
    size = np.diff(np.r_[first, rows.size])
    kept = size >= k
    row_kept = np.repeat(kept, size)
    first, last = first[kept], (first + size - 1)[kept]
    ends = rows[last[:, None] - np.arange(k - 1, -1, -1)]  # the k last and first rows, in frame order
    starts = rows[first[:, None] + np.arange(k)]
    ids = tid[rows[first]]
    after = np.column_stack([ids, np.ones(ids.size), f[rows[last]] + 1,
                             x[ends].mean(axis=1), y[ends].mean(axis=1), A[ends].mean(axis=1)])
    before = np.column_stack([ids, -np.ones(ids.size), f[rows[first]] - 1,
                              x[starts].mean(axis=1), y[starts].mean(axis=1), A[starts].mean(axis=1)])
    # gaps: two rows of a kept track more than a frame apart, one candidate per missing frame
    pos = np.flatnonzero(row_kept[:-1] & ~new_track[1:] & (np.diff(f[rows]) > 1))
    n = f[rows[pos + 1]] - f[rows[pos]] - 1
    a, b = np.repeat(rows[pos], n), np.repeat(rows[pos + 1], n)
    step = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + 1
    u = step / (f[b] - f[a])
    gaps = np.column_stack([tid[a], np.zeros(a.size), f[a] + step, x[a] + u * (x[b] - x[a]),
                            y[a] + u * (y[b] - y[a]), 0.5 * (A[a] + A[b])])
    track = np.r_[np.arange(ids.size), np.arange(ids.size), np.repeat(np.searchsorted(first, pos, "right") - 1, n)]
    kind = np.r_[np.zeros(ids.size), np.ones(ids.size), np.full(a.size, 2)]
    out = np.concatenate([after, before, gaps])[np.lexsort((np.arange(len(track)), kind, track))]
    return out[(out[:, 2] >= 0) & (out[:, 2] < n_frames)]


def _pair_fit(data: np.ndarray, wts: np.ndarray, host: np.ndarray, prior: np.ndarray, pred: np.ndarray,
              pred_amp: np.ndarray, coords: np.ndarray, sigma: float, alpha_amp: float) -> dict:
    """The single- and two-source fits of windows around host detections.

    ``host``: (N, 4) window-coordinate single fits (x, y, A, c) to start from; ``prior``: the
    host track's position in the frame before, ``pred``: the hidden pit's predicted position
    (N, 2 each); ``pred_amp``: its track's recent amplitude, half of which starts its source.
    Returns the two-source parameters (host source first: x_h, x_p, y_h, y_p, A_h, A_p, c), their
    sds, residual sd, RSS, pixels, amplitude p-values and the F-test p-value."""
    w = (len(coords) - 1) // 2
    one = _Model("mixture", coords, sigma, 1)
    pos_tol, lin_tol = 1e-3, 1e-1
    p1, _ = _lm_dense(data, wts, host, one, np.arange(4), np.array([pos_tol] * 2 + [lin_tol] * 2),
                         np.array([1.0, 1.0, np.inf, np.inf]), np.array([w + 1.0, w + 1.0, np.inf, np.inf]), 20)
    two = _Model("mixture", coords, sigma, 2)
    a_pit = 0.5 * pred_amp
    a_host = np.maximum(p1[:, 2] - a_pit, 0.3 * p1[:, 2])
    p0 = np.column_stack([prior[:, 0], pred[:, 0], prior[:, 1], pred[:, 1], a_host, a_pit, p1[:, 3]])
    p2, _ = _lm_dense(data, wts, p0, two, np.arange(7), np.array([pos_tol] * 4 + [lin_tol] * 3),
                      np.array([1.0] * 4 + [np.inf] * 3), np.array([w + 1.0] * 4 + [np.inf] * 3), 30)
    # the sources may have traded places: label them by the assignment nearer to the starts
    dist = lambda ix, iy, to: np.hypot(p2[:, ix] - to[:, 0], p2[:, iy] - to[:, 1])  # noqa: E731
    kept, swapped = dist(0, 2, prior) + dist(1, 3, pred), dist(1, 3, prior) + dist(0, 2, pred)
    p2[swapped < kept] = p2[swapped < kept][:, [1, 0, 3, 2, 5, 4, 6]]
    model, J = two(p2)
    _, rss2, sd2, pstd2, npx = _fit_stats(data, wts, model, J, 7)
    # the F-test weighs pixels by 1 / (v0 + kappa s), s the single fit's signal, as fit_mixtures:
    # unweighted, the shot noise at the peak of a bright lone spot reads as a second source
    model1 = one(p1, False)[0]
    signal = np.maximum(model1 - p1[:, 3, None], 0.0)
    use = wts.ravel() > 0
    v0, kappa = np.linalg.lstsq(np.column_stack([np.ones(use.sum()), signal.ravel()[use]]),
                                ((data - model1) ** 2).ravel()[use], rcond=None)[0]
    inv_var = wts / (v0 + kappa * signal) if v0 > 0 and kappa > 0 else wts
    rss1w, rss2w = (np.einsum("ni,ni->n", (data - m) ** 2, inv_var) for m in (model1, model))
    df2 = npx - 7 - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        pF = special.fdtrc(3, df2, (rss1w - rss2w) / 3 / (rss2w / df2))
    pA = amplitude_pval(p2[:, 4:6], pstd2[:, 4:6], sd2[:, None], npx[:, None], alpha_amp)
    return {"p": p2, "pstd": pstd2, "sd": sd2, "rss": rss2, "npx": npx, "pA": pA, "pF": pF}


class _Frames:
    """The detections of every frame: their rows and a k-d tree of their (original) positions."""

    def __init__(self, f: np.ndarray, x: np.ndarray, y: np.ndarray, n_frames: int):
        order = np.argsort(f, kind="stable")
        bounds = np.searchsorted(f[order], np.arange(n_frames + 1))
        self.rows = [order[bounds[t]:bounds[t + 1]] for t in range(n_frames)]
        self.trees = [cKDTree(np.column_stack([x[r], y[r]])) if r.size else None for r in self.rows]

    def nearest(self, t: int, xy: np.ndarray, k: int = 1, radius: float = np.inf):
        """Distances and rows of the ``k`` nearest detections of frame ``t`` (row -1 beyond ``radius``)."""
        d, j = self.trees[t].query(xy, k, distance_upper_bound=radius)
        rows = self.rows[t]
        return d, np.where(np.isfinite(d), rows[np.minimum(j, rows.size - 1)], -1)


class _TrackRows:
    """The row of a track at a frame: a sorted-key lookup over the rows of every track (id >= 0);
    where a track has two rows in one frame, the later row."""

    def __init__(self, tid: np.ndarray, f: np.ndarray, n_frames: int):
        rows = np.flatnonzero(tid >= 0)
        self.span = n_frames + 2  # frames -1 .. n_frames, so that keys of different tracks never meet
        keys = tid[rows].astype(np.int64) * self.span + f[rows] + 1
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], rows[order]

    def find(self, track: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Per (track, frame) pair (frames -1 .. n_frames): its row, or -1."""
        key = np.asarray(track, np.int64) * self.span + np.asarray(frame, np.int64) + 1
        if self.keys.size == 0:
            return np.full(key.shape, -1, np.int64)
        i = np.maximum(np.searchsorted(self.keys, key, side="right") - 1, 0)  # the last key <= key
        return np.where(self.keys[i] == key, self.rows[i], -1)


def _hosts(cand: np.ndarray, frames: _Frames, tid: np.ndarray, track_rows: _TrackRows, used: np.ndarray,
           radius: float):
    """Per candidate: the host (the nearest detection within ``radius`` px of the prediction),
    the host track's row in the frame before it (after, going backwards; either, in a gap),
    where its source starts, and whether the candidate is tried. A host of the candidate's own
    track, one already used, or one whose track starts there (the pit's own reappearance) is not."""
    host, prior, keep = np.full(len(cand), -1), np.full(len(cand), -1), np.zeros(len(cand), bool)
    for t in np.unique(cand[:, 2]).astype(int):
        sel = np.flatnonzero(cand[:, 2] == t)
        if frames.trees[t] is not None:
            host[sel] = frames.nearest(t, cand[sel, 3:5], radius=radius)[1]
    i = np.flatnonzero(host >= 0)
    h, t, step = host[i], cand[i, 2].astype(np.int64), cand[i, 1].astype(np.int64)
    tried = (tid[h] >= 0) & (tid[h] != cand[i, 0]) & ~used[h]
    p = track_rows.find(tid[h], t - np.where(step != 0, step, 1))
    p = np.where((p < 0) & (step == 0), track_rows.find(tid[h], t + 1), p)  # in a gap: the frame after
    tried &= p >= 0
    prior[i[tried]], keep[i[tried]] = p[tried], True
    return host, prior, keep


def _off_others(frames: _Frames, t: np.ndarray, x: np.ndarray, y: np.ndarray, host: np.ndarray,
                sigma: float) -> np.ndarray:
    """Whether each source (frame ``t``, x, y) lies >= ``sigma`` px from every detection of its frame
    but its own ``host``."""
    out = np.ones(len(t), bool)
    for fr in np.unique(t).astype(int):
        sel = np.flatnonzero(t == fr)
        d, rows = frames.nearest(fr, np.column_stack([x[sel], y[sel]]), k=2)
        out[sel] = np.where(rows[:, 0] == host[sel], d[:, 1], d[:, 0]) >= sigma
    return out


def fit_hidden_pairs(linked: pd.DataFrame, movie, cfg: dict | None = None) -> pd.DataFrame:
    """Continue tracks whose pit hides in a neighbouring track's spot (module docstring).

    ``linked``: the :func:`domains.cme.tracking.link.link` table of :func:`detect_movie`
    detections (its ``sigma``/``sigma_aux`` columns give the fits' PSF); ``movie``: the movie
    they come from; ``cfg``: the CME domain config (``tracking.pair_*`` settings,
    :class:`domains.cme.tracking.link.TrackingConfig`; the auxilin fit of ``detection``).
    Returns the detection table with the pairs' host rows refitted, a row per hidden pit
    (column ``pair_fit`` marks both), the auxilin fit redone at their positions, linked again;
    the table itself when ``tracking.pair_fits`` is off or no pair is accepted.
    """
    tcfg, dcfg = tracking_config(cfg), detection_config(cfg)
    if not tcfg.pair_fits or len(linked) == 0:
        return linked
    missing = {"frame", "x", "y", "A", "c", "track_id", "sigma"} - set(linked.columns)
    if missing:
        raise InputError(None, f"fit_hidden_pairs: detection table lacks columns {sorted(missing)}")
    data = movie_array(movie)
    n_frames, _, height, width = data.shape
    sigma = float(linked["sigma"].iloc[0])
    w = math.ceil(4 * sigma)
    coords = np.arange(-w, w + 1, dtype=np.float64)
    det = linked.reset_index(drop=True)
    f, tid = det["frame"].to_numpy(), det["track_id"].to_numpy()
    x, y, A, c = (det[k].to_numpy(float).copy() for k in ("x", "y", "A", "c"))
    frames = _Frames(f, x, y, n_frames)
    track_rows = _TrackRows(tid, f, n_frames)
    cand = _candidates(det, n_frames, tcfg.pair_track_frames)
    used = np.zeros(len(det), bool)
    host_rows, host_fits, new = [], [], []
    for _ in range(tcfg.pair_max_frames):
        if len(cand) == 0:
            break
        host, prior, keep = _hosts(cand, frames, tid, track_rows, used, tcfg.pair_radius)
        xi, yi = np.round(x[host]).astype(int), np.round(y[host]).astype(int)
        keep &= (xi >= w) & (yi >= w) & (xi < width - w) & (yi < height - w)
        # one candidate per host and frame: the nearest
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(np.hypot(x[host[idx]] - cand[idx, 3], y[host[idx]] - cand[idx, 4]), kind="stable")]
        idx = idx[np.unique(host[idx], return_index=True)[1]]
        if idx.size == 0:
            break
        cand, host, prior, xi, yi = cand[idx], host[idx], prior[idx], xi[idx], yi[idx]
        win, wts = np.empty((len(idx), coords.size ** 2)), np.empty((len(idx), coords.size ** 2))
        for t in np.unique(cand[:, 2]).astype(int):
            sel = np.flatnonzero(cand[:, 2] == t)
            win[sel], wts[sel] = extract_windows(data[t, 0].astype(np.float64), xi[sel], yi[sel], w)
        start = np.column_stack([x[host] - xi, y[host] - yi, A[host], c[host]])
        fit = _pair_fit(win, wts, start, np.column_stack([x[prior] - xi, y[prior] - yi]),
                        np.column_stack([cand[:, 3] - xi, cand[:, 4] - yi]), cand[:, 5], coords, sigma, dcfg.alpha)
        p = fit["p"]
        moved_host = np.hypot(p[:, 0] - (x[prior] - xi), p[:, 2] - (y[prior] - yi))
        moved_pit = np.hypot(p[:, 1] - (cand[:, 3] - xi), p[:, 3] - (cand[:, 4] - yi))
        ok = ((fit["pF"] < tcfg.pair_alpha) & (p[:, 4] > 0) & (p[:, 5] > 0) & np.isfinite(fit["rss"])
              & (moved_host < tcfg.pair_max_shift) & (moved_pit < tcfg.pair_max_shift)
              & (np.hypot(p[:, 0] - p[:, 1], p[:, 2] - p[:, 3]) > tcfg.pair_min_separation * sigma))
        # neither source may be another detection of the frame (a neighbour the host's window holds)
        for ix, iy in ((0, 2), (1, 3)):
            ok[ok] = _off_others(frames, cand[ok, 2], xi[ok] + p[ok, ix], yi[ok] + p[ok, iy], host[ok], sigma)
        for i in np.flatnonzero(ok):
            used[host[i]] = True
            x[host[i]], y[host[i]] = xi[i] + p[i, 0], yi[i] + p[i, 2]  # the next frame's prior
            pstd, sd, npx = fit["pstd"][i], fit["sd"][i], fit["npx"][i]
            se = sd / math.sqrt(2 * (npx - 1))
            for src, (ix, iy, ia) in enumerate(((0, 2, 4), (1, 3, 5))):
                vals = (xi[i] + p[i, ix], yi[i] + p[i, iy], p[i, ia], p[i, 6], pstd[ix], pstd[iy], pstd[ia], pstd[6],
                        sd, se, fit["rss"][i], fit["pA"][i, src])
                if src == 0:
                    host_fits.append(vals)
                else:
                    new.append((int(cand[i, 2]), *vals))
            host_rows.append(host[i])
        # the pits found after an end or before a start move on; their prediction follows the fit
        # half-way (slow pits)
        go_on = ok & (cand[:, 1] != 0)
        cand, xi, yi, p = cand[go_on].copy(), xi[go_on], yi[go_on], p[go_on]
        cand[:, 3] = 0.5 * (cand[:, 3] + xi + p[:, 1])
        cand[:, 4] = 0.5 * (cand[:, 4] + yi + p[:, 3])
        cand[:, 2] += cand[:, 1]
        cand = cand[(cand[:, 2] >= 0) & (cand[:, 2] < n_frames)]
    if not host_rows:
        return linked
    return _with_pairs(det, np.array(host_rows), host_fits, new, data, dcfg, cfg)


def link_with_pairs(detections: pd.DataFrame, movie, cfg: dict | None = None) -> pd.DataFrame:
    """The ingest's linking of one movie's detections: :func:`domains.cme.tracking.link.link`, then
    the pair fits (:func:`fit_hidden_pairs`, which links again where it adds pits)."""
    return fit_hidden_pairs(link(detections, cfg), movie, cfg)


def _with_pairs(det: pd.DataFrame, host_rows: np.ndarray, host_fits: list, new: list, data: np.ndarray, dcfg,
                cfg: dict | None) -> pd.DataFrame:
    """The detection table with the host rows refitted and the hidden pits added (auxilin fitted
    again at both, with every detection of the frame near them in the model), linked again."""
    out = det.drop(columns=["track_id", "compound_id"], errors="ignore").copy()
    out["pair_fit"] = False
    out.loc[host_rows, list(_FIT_COLUMNS)] = np.array(host_fits, dtype=float)
    out.loc[host_rows, "pair_fit"] = True
    add = pd.DataFrame(new, columns=["frame", *_FIT_COLUMNS])
    add["frame"] = add["frame"].astype(np.int64)
    hosts = out.loc[host_rows]
    for col in out.columns.difference(add.columns):  # the rest from the host detection (mask, PSF test)
        add[col] = hosts[col].to_numpy()
    add["x_init"], add["y_init"] = np.round(add["x"]).astype(np.int64), np.round(add["y"]).astype(np.int64)
    add["pair_fit"] = True
    out = pd.concat([out, add[out.columns]], ignore_index=True)
    if data.shape[1] == 2:
        out = _refit_slave_rows(out, data, dcfg)
    out = out.sort_values("frame", kind="stable").reset_index(drop=True)
    log.info("pair fits: %d hidden pits found beside %d detections", len(add), len(host_rows))
    return link(out, cfg)


def _refit_slave_rows(out: pd.DataFrame, data: np.ndarray, dcfg) -> pd.DataFrame:
    """The auxilin fit of the ``pair_fit`` rows redone as detection does it (:func:`fit_slave`),
    with the frame's detections within a window of them as neighbours; rows whose auxilin
    window leaves the image are dropped, as detection drops them."""
    sigma, sigma_aux = float(out["sigma"].iloc[0]), float(out["sigma_aux"].iloc[0])
    reach = 2 * math.ceil(4 * max(sigma, sigma_aux)) + 1
    f, flag = out["frame"].to_numpy(), out["pair_fit"].to_numpy()
    x, y = out["x"].to_numpy(float), out["y"].to_numpy(float)
    cols = {}
    for t in np.unique(f[flag]):
        rows = np.flatnonzero(f == t)
        mine = flag[rows]
        tree = cKDTree(np.column_stack([x[rows[~mine]], y[rows[~mine]]])) if (~mine).any() else None
        near = np.zeros(rows.size, bool)
        near[mine] = True
        if tree is not None:
            for nb in tree.query_ball_point(np.column_stack([x[rows[mine]], y[rows[mine]]]), reach):
                near[np.flatnonzero(~mine)[nb]] = True
        sub = rows[near]
        fit = fit_slave(data[t, 1].astype(np.float64), x[sub], y[sub], sigma_aux, sigma, dcfg.alpha_aux,
                        dcfg.aux_neighbours, dcfg.slave_max_shift)
        for k, v in fit.items():
            cols.setdefault(k, []).append((sub[flag[sub]], v[flag[sub]]))
    for k, parts in cols.items():
        out.loc[np.concatenate([r for r, _ in parts]), k] = np.concatenate([v for _, v in parts])
    return out[np.isfinite(out["A_aux"].to_numpy(float)) | ~out["pair_fit"].to_numpy()]
