"""Detection and tracking accuracy against simulator ground truth.

* Detection: per frame, optimal one-to-one matching (Hungarian, ``linear_sum_assignment``) of
  predicted to true spots within ``max_dist`` px; precision, recall and recall per true
  amplitude bin.
* Linking: a true link joins two consecutive matched detections of one true track (at most
  ``max_gap`` frames apart); a predicted link joins two consecutive detections of one
  predicted track. Recall = recovered true links / true links; precision = true predicted
  links / predicted links whose two ends are matched to true spots (``precision_all``
  counts every predicted link, so false-positive detections lower it too).
* Tracks: a true track of >= ``min_len`` frames is recovered when one predicted track holds
  >= ``min_frac`` of its true frames; the lifetime error compares that predicted track's
  first-to-last frame span with the true one.
* Real pit densities (issue 13): :func:`score_movie` gives every score of one simulated movie
  in one flat dict, the one place where tests (``tests/test_cme_dense.py``) and the benchmark
  (``benchmarks/bench_cme_detect.py``) score: precision and recall overall, for SNR >= 10 and
  by nearest-neighbour distance (:func:`detection_scores`); whole, split and merged tracks,
  lifetime errors and auxilin sensitivity / false positives of the processed tracks
  (:func:`track_scores`); why long aux+ tracks lose their label (:func:`aux_miss_causes`) and
  long aux- tracks gain one (:func:`aux_false_positive_causes`).
  :func:`movie_to_tracks` runs the ingest's detect -> link -> process.
* Oracle linking: :func:`oracle_link` links detections by the true track each one matches, so
  a movie scored once with the linker and once with the oracle splits what linking costs from
  what detection, fitting and labelling cost. :func:`oracle_detect` is the perfect detector
  (every true spot fitted at its true position, kept where significant); linked by the oracle,
  it scores what the labels reach when neither detection nor linking errs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from awd.io import InputError
from domains.cme.tracking.link import renumber

#: the amplitude bins of the CME notes (ADU).
AMPLITUDE_BINS = (0.0, 500.0, 800.0, 1200.0, 2000.0, np.inf)


def _require(df: pd.DataFrame, cols, what: str) -> None:
    missing = set(cols) - set(df.columns)
    if missing:
        raise InputError(None, f"{what} lacks columns {sorted(missing)}")


def match_detections(pred: pd.DataFrame, truth: pd.DataFrame, max_dist: float = 2.0) -> pd.DataFrame:
    """One-to-one matches per frame within ``max_dist`` px (minimal total distance).

    Returns columns frame, pred (row label in ``pred``), truth (row label in ``truth``), dist.
    """
    _require(pred, ("frame", "x", "y"), "predicted detections")
    _require(truth, ("frame", "x", "y"), "true detections")
    out = []
    tgroups = dict(tuple(truth.groupby("frame", sort=False)))
    for frame, p in pred.groupby("frame", sort=True):
        t = tgroups.get(frame)
        if t is None or len(t) == 0:
            continue
        d = cdist(p[["x", "y"]].to_numpy(float), t[["x", "y"]].to_numpy(float))
        big = max_dist * 1e3 + 1.0
        r, c = linear_sum_assignment(np.where(d <= max_dist, d, big))
        ok = d[r, c] <= max_dist
        out.append(pd.DataFrame({"frame": frame, "pred": p.index.to_numpy()[r[ok]],
                                 "truth": t.index.to_numpy()[c[ok]], "dist": d[r[ok], c[ok]]}))
    if not out:
        return pd.DataFrame({"frame": pd.Series(dtype=np.int64), "pred": pd.Series(dtype=np.int64),
                             "truth": pd.Series(dtype=np.int64), "dist": pd.Series(dtype=float)})
    return pd.concat(out, ignore_index=True)


def interior(df: pd.DataFrame, shape: tuple[int, int], margin: float) -> pd.DataFrame:
    """Rows whose rounded position lies >= ``margin`` px inside an image of ``shape`` (H, W).

    cmeAnalysis fits (2w+1)^2 windows and ignores spots whose window leaves the image, so
    scores are taken inside the margin w = ceil(4 sigma).
    """
    xr, yr = np.round(df["x"].to_numpy(float)), np.round(df["y"].to_numpy(float))
    H, W = shape
    return df[(xr >= margin) & (xr <= W - 1 - margin) & (yr >= margin) & (yr <= H - 1 - margin)]


def detection_metrics(pred: pd.DataFrame, truth: pd.DataFrame, matches: pd.DataFrame | None = None, *,
                      max_dist: float = 2.0, amp_col: str = "A_clathrin",
                      bins=AMPLITUDE_BINS, pred_amp_col: str = "A") -> dict:
    """Precision, recall, recall per true-amplitude bin, localisation RMSE, amplitude ratio.

    ``matches`` must come from :func:`match_detections` on the same two tables.
    """
    if matches is None:
        matches = match_detections(pred, truth, max_dist)
    n_pred, n_true, n_match = len(pred), len(truth), len(matches)
    found = np.zeros(n_true, bool)
    found[truth.index.get_indexer(matches["truth"])] = True
    amp = truth[amp_col].to_numpy(float)
    by_bin = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (amp >= lo) & (amp < hi)
        by_bin.append({"lo": float(lo), "hi": float(hi), "n": int(m.sum()),
                       "recall": float(found[m].mean()) if m.any() else float("nan")})
    ratio = float("nan")
    if n_match and pred_amp_col in pred.columns:
        ratio = float(np.median(pred.loc[matches["pred"], pred_amp_col].to_numpy(float)
                                / truth.loc[matches["truth"], amp_col].to_numpy(float)))
    return {"n_pred": n_pred, "n_true": n_true, "n_matched": n_match,
            "precision": n_match / n_pred if n_pred else float("nan"),
            "recall": n_match / n_true if n_true else float("nan"),
            "recall_by_amplitude": by_bin,
            "rmse_px": float(np.sqrt(np.mean(matches["dist"] ** 2))) if n_match else float("nan"),
            "amplitude_ratio_median": ratio}


def _consecutive_pairs(ids: np.ndarray, frames: np.ndarray, keys: np.ndarray, max_gap: int | None) -> set:
    """{(key_a, key_b)} of consecutive (by frame) members of each id group."""
    order = np.lexsort((frames, ids))
    ids, frames, keys = ids[order], frames[order], keys[order]
    same = ids[1:] == ids[:-1]
    if max_gap is not None:
        same &= (frames[1:] - frames[:-1]) <= max_gap
    return set(zip(keys[:-1][same].tolist(), keys[1:][same].tolist()))


def link_metrics(pred: pd.DataFrame, truth: pd.DataFrame, matches: pd.DataFrame, *,
                 max_gap: int = 3, pred_track_col: str = "track_id", truth_track_col: str = "track_id") -> dict:
    """Link recall and precision (module docstring); ``pred`` has ``pred_track_col`` per row."""
    _require(pred, ("frame", pred_track_col), "predicted detections")
    _require(truth, ("frame", truth_track_col), "true detections")
    m = matches.copy()
    m["tid"] = truth.loc[m["truth"], truth_track_col].to_numpy()
    true_links = _consecutive_pairs(m["tid"].to_numpy(), m["frame"].to_numpy(), m["pred"].to_numpy(), max_gap)
    p = pred[pred[pred_track_col] >= 0]
    pred_links = _consecutive_pairs(p[pred_track_col].to_numpy(), p["frame"].to_numpy(), p.index.to_numpy(), None)
    matched = set(m["pred"].tolist())
    pred_matched = {lk for lk in pred_links if lk[0] in matched and lk[1] in matched}
    hit = len(pred_links & true_links)
    return {"n_true_links": len(true_links), "n_pred_links": len(pred_links), "n_correct": hit,
            "recall": hit / len(true_links) if true_links else float("nan"),
            "precision": hit / len(pred_matched) if pred_matched else float("nan"),
            "precision_all": hit / len(pred_links) if pred_links else float("nan")}


def track_metrics(pred: pd.DataFrame, truth: pd.DataFrame, matches: pd.DataFrame, *, min_len: int = 5,
                  min_frac: float = 0.8, pred_track_col: str = "track_id",
                  truth_track_col: str = "track_id") -> dict:
    """Whole-track recovery and lifetime error (frames) of the dominant predicted track.

    The dominant predicted track of a true track holds most of its matched detections.
    ``recovered_fraction``: true tracks with >= ``min_len`` matched detections whose dominant
    track holds >= ``min_frac`` of them (linking quality given the detections);
    ``recovered_fraction_frames``: true tracks spanning >= ``min_len`` frames whose dominant
    track holds >= ``min_frac`` of all their true frames (detection limits included).
    Lifetime error: dominant-track span minus true span, over true tracks with a dominant track.
    """
    true_len = truth.groupby(truth_track_col)["frame"].agg(lambda f: f.max() - f.min() + 1)
    true_n = truth.groupby(truth_track_col).size()
    m = pd.DataFrame({"tid": truth.loc[matches["truth"], truth_track_col].to_numpy(),
                      "pid": pred.loc[matches["pred"], pred_track_col].to_numpy()})
    n_matched = m.groupby("tid").size()
    m = m[m["pid"] >= 0]
    counts = m.groupby(["tid", "pid"]).size().rename("n").reset_index()
    dom = counts.sort_values(["tid", "n", "pid"], ascending=[True, False, True]).drop_duplicates("tid")
    dom = dom.set_index("tid")
    pspan = pred[pred[pred_track_col] >= 0].groupby(pred_track_col)["frame"].agg(lambda f: f.max() - f.min() + 1)
    n_dom = dom["n"].reindex(true_len.index).fillna(0).to_numpy()
    n_match = n_matched.reindex(true_len.index).fillna(0).to_numpy()
    by_match = n_match >= min_len
    by_frames = true_len.to_numpy() >= min_len
    rec_match = n_dom[by_match] >= min_frac * n_match[by_match]
    rec_frames = n_dom[by_frames] >= min_frac * true_n.to_numpy()[by_frames]
    err = pspan.reindex(dom["pid"]).to_numpy() - true_len.reindex(dom.index).to_numpy()
    q = np.percentile(err, [25, 50, 75]) if err.size else [np.nan] * 3
    frac = (lambda a: float(a.mean()) if a.size else float("nan"))
    return {"n_true_tracks": int(by_match.sum()), "recovered_fraction": frac(rec_match),
            "n_true_tracks_frames": int(by_frames.sum()), "recovered_fraction_frames": frac(rec_frames),
            "lifetime_error_median": float(q[1]), "lifetime_error_iqr": [float(q[0]), float(q[2])],
            "lifetime_error_mae": float(np.mean(np.abs(err))) if err.size else float("nan")}


# ----------------------------------------------------------------------------- realistic density (issue 13)
#
# The scores below take the simulator's truth tables as they come (``truth_detections`` with
# ``snr_clathrin``, ``truth_tracks`` with ``visibility``, ``class``, ``aux_positive``,
# ``snr_max_clathrin``) and the project's outputs (the ``detect_movie`` table; the
# ``process_tracks`` track table and its per-track-frame table). :func:`score_movie` gathers
# them into one flat dict, the single place where tests and benchmarks score a movie.

#: nearest-neighbour bands (px) of the crowding scores: close pairs, pairs, isolated spots.
NEIGHBOUR_BANDS = {"close": (0.0, 3.0), "pair": (3.0, 5.0), "isolated": (5.0, np.inf)}


def neighbour_distance(truth: pd.DataFrame) -> np.ndarray:
    """Distance (px) from each true spot to the nearest other true spot of the same frame
    (inf when alone), in the order of ``truth``'s rows."""
    _require(truth, ("frame", "x", "y"), "true detections")
    from scipy.spatial import cKDTree

    out = np.full(len(truth), np.inf)
    xy = truth[["x", "y"]].to_numpy(float)
    for idx in truth.groupby("frame", sort=False).indices.values():
        if idx.size > 1:
            d, _ = cKDTree(xy[idx]).query(xy[idx], k=2)
            out[idx] = d[:, 1]
    return out


def _fraction(hit: np.ndarray) -> float:
    return float(np.mean(hit)) if hit.size else float("nan")


def detection_scores(pred: pd.DataFrame, truth: pd.DataFrame, matches: pd.DataFrame | None = None, *,
                     max_dist: float = 2.0, snr_min: float = 10.0, snr_col: str = "snr_clathrin",
                     nn: np.ndarray | None = None) -> dict:
    """Precision and recall overall, recall of bright spots (``snr_col`` >= ``snr_min``) and
    of bright spots by the distance to their nearest true neighbour (:data:`NEIGHBOUR_BANDS`),
    localisation RMSE. ``nn``: :func:`neighbour_distance` of ``truth`` (computed when None;
    pass it when ``truth`` is a cut of a larger table, so neighbours outside the cut count).
    """
    _require(truth, (snr_col,), "true detections")
    if matches is None:
        matches = match_detections(pred, truth, max_dist)
    nn = neighbour_distance(truth) if nn is None else np.asarray(nn, float)
    found = np.zeros(len(truth), bool)
    found[truth.index.get_indexer(matches["truth"])] = True
    bright = truth[snr_col].to_numpy(float) >= snr_min
    n_pred = len(pred)
    out = {"n_pred": n_pred, "n_true": len(truth), "n_matched": len(matches),
           "precision": len(matches) / n_pred if n_pred else float("nan"),
           "recall": _fraction(found), "n_bright": int(bright.sum()), "recall_bright": _fraction(found[bright]),
           "rmse_px": float(np.sqrt(np.mean(matches["dist"] ** 2))) if len(matches) else float("nan")}
    for band, (lo, hi) in NEIGHBOUR_BANDS.items():
        sel = bright & (nn >= lo) & (nn < hi)
        out[f"n_bright_{band}"] = int(sel.sum())
        out[f"recall_bright_{band}"] = _fraction(found[sel])
    return out


def _assign(project_rows: pd.DataFrame, truth: pd.DataFrame, max_dist: float,
            truth_track_col: str, pred_track_col: str) -> pd.DataFrame:
    """(tid, pid, frame) of every true spot-frame matched to a project track row (one-to-one per frame)."""
    rows = project_rows[np.isfinite(project_rows["x"].to_numpy(float))
                        & np.isfinite(project_rows["y"].to_numpy(float))]
    m = match_detections(rows, truth, max_dist)
    return pd.DataFrame({"tid": truth.loc[m["truth"], truth_track_col].to_numpy(),
                         "pid": rows.loc[m["pred"], pred_track_col].to_numpy(), "frame": m["frame"].to_numpy()})


def _dominant(a: pd.DataFrame) -> pd.DataFrame:
    """Per true track (index tid): its dominant project track ``pid`` (most matched frames, the
    lower id on ties) and that track's count ``n``; from :func:`_assign`'s table."""
    counts = a.groupby(["tid", "pid"]).size().rename("n").reset_index()
    dom = counts.sort_values(["tid", "n", "pid"], ascending=[True, False, True]).drop_duplicates("tid")
    return dom.set_index("tid")


@dataclass(frozen=True, eq=False)
class _Matched:
    """Project track rows matched to the true spot-frames (:func:`_match_tracks`): what the track
    scores and the cause tables of one movie all start from, computed once per movie."""

    a: pd.DataFrame  # (tid, pid, frame) of every matched true spot-frame (:func:`_assign`)
    dom: pd.DataFrame  # per true track: its dominant project track pid and its count n (:func:`_dominant`)
    n_true: pd.Series  # spot-frames per true track
    tt: pd.DataFrame  # the true tracks of the spot-frames (truth_tracks rows, indexed by true id)
    dom_pid: pd.Series  # dominant project track per row of tt (NaN: none)


def _match_tracks(project_rows: pd.DataFrame, truth: pd.DataFrame, truth_tracks: pd.DataFrame, max_dist: float,
                  truth_track_col: str, pred_track_col: str) -> _Matched:
    """:class:`_Matched` of project rows and true spot-frames (one-to-one per frame within ``max_dist``)."""
    a = _assign(project_rows, truth, max_dist, truth_track_col, pred_track_col)
    dom = _dominant(a)
    n_true = truth.groupby(truth_track_col).size()
    tt = truth_tracks.set_index(truth_track_col)
    tt = tt.loc[tt.index.intersection(n_true.index)]
    return _Matched(a, dom, n_true, tt, dom["pid"].reindex(tt.index))


def _aux_population(tt: pd.DataFrame, frames: np.ndarray, min_len: int) -> np.ndarray:
    """The true tracks (rows of ``tt``) whose auxilin labels are scored: complete, >= ``min_len``
    frames, not hotspots or auxilin-only puncta (the branch drops hotspots)."""
    return ((tt["visibility"].to_numpy() == 1) & (frames >= min_len)
            & ~tt["class"].isin(["hotspot", "aux_only"]).to_numpy())


def _flagged(project_tracks: pd.DataFrame, dom_pid: pd.Series, aux_col: str, pred_track_col: str) -> np.ndarray:
    """Whether each dominant project track of ``dom_pid`` (NaN: none; not labelled) is labelled ``aux_col``."""
    label = project_tracks.set_index(pred_track_col)[aux_col].astype("boolean").fillna(False).astype(bool)
    flagged = np.zeros(len(dom_pid), bool)
    has = dom_pid.notna().to_numpy()
    flagged[has] = label.reindex(dom_pid[has].astype(np.int64)).fillna(False).to_numpy(bool)
    return flagged


def track_scores(project_rows: pd.DataFrame, project_tracks: pd.DataFrame, truth: pd.DataFrame,
                 truth_tracks: pd.DataFrame, *, max_dist: float = 2.0, min_len: int = 5,
                 min_frac: float = 0.8, snr_min: float = 10.0, long_frames: float = 80.0,
                 aux_col: str = "aux_positive", truth_track_col: str = "track_id",
                 pred_track_col: str = "track_id", matched: _Matched | None = None) -> dict:
    """Whole tracks, splits, merges, lifetimes and auxilin labels of project tracks vs truth.

    ``project_rows``: one row per project track and frame (track_id, frame, x, y; the
    ``process_tracks`` frame table's track rows, gap frames included at their fitted position);
    ``project_tracks``: the track table (track_id, n_frames, ``aux_col``). True spot-frames
    are matched one-to-one per frame to project rows within ``max_dist`` (``matched``: that
    matching, :func:`_match_tracks`, when the caller has it). A true track's *dominant* project
    track holds most of its matched frames.

    * bright tracks: true tracks with >= ``min_len`` frames in ``truth`` and a peak SNR >=
      ``snr_min``; ``whole_fraction``: those whose dominant track holds >= ``min_frac`` of all
      their frames (missed detections count against it); ``whole_fraction_detected``: the same
      of their matched frames (linking alone); ``split_fraction``: those whose matched frames
      fall in >= 2 project tracks; ``pieces_per_track``: mean number of project tracks per
      bright true track with a match.
    * ``merged_fraction``: project tracks that are the dominant track of >= 2 true tracks (any
      brightness, each contributing >= 2 frames), over project tracks that are the dominant
      track of >= 1 such true track.
    * lifetimes, over complete (visibility 1) bright tracks: the dominant project track's
      ``n_frames`` minus the true lifetime in frames (median, IQR, mean |error|, share within
      3 frames).
    * auxilin, over complete true tracks of >= ``min_len`` frames that are not hotspots or
      auxilin-only puncta (the branch drops hotspots): ``aux_sensitivity`` = true aux+ tracks
      whose dominant project track is labelled ``aux_col``; ``aux_false_positive_rate`` = the
      same for true aux- tracks (a track without any project track counts as not labelled);
      both again for true lifetimes > ``long_frames`` frames (``_long``), and split by the
      clathrin peak SNR of the true track at ``snr_min`` (``_bright`` / ``_dim``, also with
      ``_long``): a dim pit is detected in only part of its frames, so its labels measure
      detection as much as labelling.
    """
    _require(project_rows, ("frame", "x", "y", pred_track_col), "project track rows")
    _require(project_tracks, (pred_track_col, "n_frames"), "project tracks")
    _require(truth, ("frame", "x", "y", truth_track_col), "true detections")
    _require(truth_tracks, (truth_track_col, "visibility", "class", "aux_positive", "lifetime_frames",
                            "snr_max_clathrin"), "true tracks")
    if matched is None:
        matched = _match_tracks(project_rows, truth, truth_tracks, max_dist, truth_track_col, pred_track_col)
    a, dom, n_true, tt, dom_pid = matched.a, matched.dom, matched.n_true, matched.tt, matched.dom_pid
    counts = a.groupby(["tid", "pid"]).size().rename("n").reset_index()
    n_pieces = counts.groupby("tid").size()
    n_matched = counts.groupby("tid")["n"].sum()
    frames = n_true.reindex(tt.index).to_numpy()
    dom_n = dom["n"].reindex(tt.index).fillna(0).to_numpy()
    n_found = n_matched.reindex(tt.index).fillna(0).to_numpy()
    pieces = n_pieces.reindex(tt.index).fillna(0).to_numpy()
    bright = (frames >= min_len) & (tt["snr_max_clathrin"].to_numpy(float) >= snr_min)
    out = {"n_bright_tracks": int(bright.sum()),
           "whole_fraction": _fraction(dom_n[bright] >= min_frac * frames[bright]),
           "whole_fraction_detected": _fraction(dom_n[bright & (n_found > 0)]
                                                >= min_frac * n_found[bright & (n_found > 0)]),
           "split_fraction": _fraction(pieces[bright] >= 2),
           "pieces_per_track": float(pieces[bright & (pieces > 0)].mean()) if (bright & (pieces > 0)).any()
           else float("nan")}
    # merges: project tracks dominant for >= 2 true tracks (each with >= 2 frames in it)
    held = dom[dom["n"] >= 2]
    per_project = held.groupby("pid").size()
    out["n_project_tracks"] = int(per_project.size)
    out["merged_fraction"] = _fraction(per_project.to_numpy() >= 2)
    # lifetimes of complete bright tracks
    n_frames = project_tracks.set_index(pred_track_col)["n_frames"]
    complete = tt["visibility"].to_numpy() == 1
    sel = bright & complete & dom_pid.notna().to_numpy()
    err = (n_frames.reindex(dom_pid[sel].astype(np.int64)).to_numpy(float)
           - tt["lifetime_frames"].to_numpy(float)[sel])
    q = np.percentile(err, [25, 50, 75]) if err.size else [np.nan] * 3
    out.update({"n_lifetime_tracks": int(err.size), "lifetime_error_median": float(q[1]),
                "lifetime_error_iqr": [float(q[0]), float(q[2])],
                "lifetime_error_mae": float(np.mean(np.abs(err))) if err.size else float("nan"),
                "lifetime_within_3_frames": _fraction(np.abs(err) <= 3)})
    # auxilin labels through the dominant project track
    if aux_col in project_tracks:
        flagged = _flagged(project_tracks, dom_pid, aux_col, pred_track_col)
        pop = _aux_population(tt, frames, min_len)
        pos = tt["aux_positive"].to_numpy(bool)
        long = tt["lifetime_frames"].to_numpy(float) > long_frames
        snr = tt["snr_max_clathrin"].to_numpy(float) >= snr_min
        for suffix, extra in (("", np.ones(len(tt), bool)), ("_long", long), ("_bright", snr), ("_dim", ~snr),
                              ("_bright_long", snr & long), ("_dim_long", ~snr & long)):
            p, n = pop & extra & pos, pop & extra & ~pos
            out[f"n_aux_positive{suffix}"] = int(p.sum())
            out[f"n_aux_negative{suffix}"] = int(n.sum())
            out[f"aux_sensitivity{suffix}"] = _fraction(flagged[p])
            out[f"aux_false_positive_rate{suffix}"] = _fraction(flagged[n])
    return out


#: why the dominant project track of a true aux+ track is not labelled aux+ (:func:`aux_miss_causes`),
#: in the order they are tested.
MISS_CAUSES = {
    "untracked": "no project track holds any of its frames",
    "label": "its dominant track reaches the pit's last frame (within end_frames); its auxilin frames did not "
             "pass the label tests",
    "taken": "its dominant track ends early and the pit's next frame is held by a track that began before it "
             "(a neighbour's, or a swap within a pair too close to resolve)",
    "new_track": "its dominant track ends early and the pit goes on in a track that begins there (a gap or a jump "
                 "the linker did not close)",
    "not_tracked_after": "its dominant track ends early; the pit is detected later, but in no kept track",
    "not_detected_after": "its dominant track ends early and the pit is not detected after it (its fading end "
                          "lies below the detection limit)",
}


def aux_miss_causes(project_rows: pd.DataFrame, project_tracks: pd.DataFrame, truth: pd.DataFrame,
                    truth_tracks: pd.DataFrame, detections: pd.DataFrame, *, max_dist: float = 2.0,
                    min_len: int = 5, long_frames: float = 80.0, end_frames: int = 2,
                    aux_col: str = "aux_positive", truth_track_col: str = "track_id",
                    pred_track_col: str = "track_id", matched: _Matched | None = None) -> pd.DataFrame:
    """The true aux+ tracks longer than ``long_frames`` frames that :func:`track_scores` counts
    as missed (its ``aux_sensitivity_long`` population, dominant project track not labelled
    ``aux_col``), each with the cause of the miss (:data:`MISS_CAUSES`).

    The burst comes at the pit's end, so a label is lost when the dominant track stops before
    it: what follows the stop tells linking (``taken``, ``new_track``) from detection
    (``not_detected_after``). ``detections``: the detected spots (frame, x, y) the tracks were
    linked from, matched to ``truth`` within ``max_dist``; ``matched`` as in :func:`track_scores`.
    Returns columns ``track_id`` (true), ``snr_max_clathrin``, ``cause``, ``dominant_last_frame``,
    ``true_last_frame``.
    """
    _require(detections, ("frame", "x", "y"), "detections")
    columns = [truth_track_col, "snr_max_clathrin", "cause", "dominant_last_frame", "true_last_frame"]
    if aux_col not in project_tracks:
        return pd.DataFrame(columns=columns)
    if matched is None:
        matched = _match_tracks(project_rows, truth, truth_tracks, max_dist, truth_track_col, pred_track_col)
    a, n_true, tt, dom_pid = matched.a, matched.n_true, matched.tt, matched.dom_pid
    true_last = truth.groupby(truth_track_col)["frame"].max()
    sel = (_aux_population(tt, n_true.reindex(tt.index).to_numpy(), min_len) & tt["aux_positive"].to_numpy(bool)
           & (tt["lifetime_frames"].to_numpy(float) > long_frames)
           & ~_flagged(project_tracks, dom_pid, aux_col, pred_track_col))
    rows_span = project_rows.groupby(pred_track_col)["frame"].agg(["min", "max"])
    m = match_detections(detections, truth, max_dist)
    detected = pd.DataFrame({"tid": truth.loc[m["truth"], truth_track_col].to_numpy(), "frame": m["frame"].to_numpy()})
    by_tid, det_by_tid = a.groupby("tid"), detected.groupby("tid")
    out = []
    for tid in tt.index[sel]:
        end = int(true_last[tid])
        if pd.isna(dom_pid[tid]):
            out.append((tid, "untracked", np.nan, end))
            continue
        last = int(rows_span.loc[int(dom_pid[tid]), "max"])
        if last >= end - end_frames:
            cause = "label"
        else:
            later = by_tid.get_group(tid)
            later = later[later["frame"] > last].sort_values("frame")
            if len(later):
                nxt = later.iloc[0]
                cause = "taken" if rows_span.loc[nxt["pid"], "min"] < nxt["frame"] else "new_track"
            elif tid in det_by_tid.groups and (det_by_tid.get_group(tid)["frame"] > last).any():
                cause = "not_tracked_after"
            else:
                cause = "not_detected_after"
        out.append((tid, cause, last, end))
    res = pd.DataFrame(out, columns=[truth_track_col, "cause", "dominant_last_frame", "true_last_frame"])
    res.insert(1, "snr_max_clathrin", tt["snr_max_clathrin"].reindex(res[truth_track_col]).to_numpy(float))
    return res[columns]


#: why the dominant project track of a true aux- track is labelled aux+
#: (:func:`aux_false_positive_causes`), in the order they are tested.
FALSE_POSITIVE_CAUSES = {
    "merged": "its dominant track also holds >= 2 frames of another true track that carries auxilin (an aux+ "
              "pit or a hotspot): a merge, or a swap within a pair",
    "neighbour": "true auxilin of another pit or punctum lies within near_px of the dominant track in one of its "
                 "frames (spill-over, or an auxilin fit drawn to it)",
    "no_auxilin_near": "no true auxilin within near_px of the dominant track: noise passed the label tests",
}


def aux_false_positive_causes(project_rows: pd.DataFrame, project_tracks: pd.DataFrame, truth: pd.DataFrame,
                              truth_tracks: pd.DataFrame, auxilin_truth: pd.DataFrame, *, max_dist: float = 2.0,
                              min_len: int = 5, long_frames: float = 80.0, near_px: float = 4.0,
                              min_snr: float = 1.0,
                              aux_col: str = "aux_positive", truth_track_col: str = "track_id",
                              pred_track_col: str = "track_id", matched: _Matched | None = None) -> pd.DataFrame:
    """The true aux- tracks longer than ``long_frames`` frames whose dominant project track is
    labelled ``aux_col`` (:func:`track_scores`' ``aux_false_positive_rate_long`` hits), each with
    the cause (:data:`FALSE_POSITIVE_CAUSES`).

    ``auxilin_truth``: the simulator's spots with their true auxilin (frame, x, y,
    ``snr_auxilin``, track id; all of them, auxilin-only puncta included, which ``truth``, the
    clathrin spots, leaves out); auxilin is present where its peak reaches ``min_snr`` x the
    pixel noise (the faint tails of a burst do not count); ``matched`` as in :func:`track_scores`.
    Returns columns ``track_id`` (true), ``snr_max_clathrin``, ``cause``.
    """
    _require(auxilin_truth, ("frame", "x", "y", "snr_auxilin", truth_track_col), "true auxilin spots")
    columns = [truth_track_col, "snr_max_clathrin", "cause"]
    if aux_col not in project_tracks:
        return pd.DataFrame(columns=columns)
    if matched is None:
        matched = _match_tracks(project_rows, truth, truth_tracks, max_dist, truth_track_col, pred_track_col)
    a, n_true, tt, dom_pid = matched.a, matched.n_true, matched.tt, matched.dom_pid
    sel = (_aux_population(tt, n_true.reindex(tt.index).to_numpy(), min_len) & ~tt["aux_positive"].to_numpy(bool)
           & (tt["lifetime_frames"].to_numpy(float) > long_frames)
           & _flagged(project_tracks, dom_pid, aux_col, pred_track_col))
    aux = auxilin_truth[auxilin_truth["snr_auxilin"].to_numpy(float) >= min_snr]
    carriers = set(aux[truth_track_col].tolist())
    held = a.groupby(["pid", "tid"]).size()
    aux_by_frame = aux.groupby("frame")
    out = []
    for tid in tt.index[sel]:
        pid = int(dom_pid[tid])
        others = held.loc[pid]
        if any(n >= 2 and t != tid and t in carriers for t, n in others.items()):
            out.append((tid, "merged"))
            continue
        cause = "no_auxilin_near"
        own = project_rows.loc[project_rows[pred_track_col] == pid, ["frame", "x", "y"]]
        for f, x, y in own.itertuples(index=False):
            if f not in aux_by_frame.groups:
                continue
            g = aux_by_frame.get_group(f)
            g = g[g[truth_track_col] != tid]
            if (np.hypot(g["x"].to_numpy(float) - x, g["y"].to_numpy(float) - y) <= near_px).any():
                cause = "neighbour"
                break
        out.append((tid, cause))
    res = pd.DataFrame(out, columns=[truth_track_col, "cause"])
    res.insert(1, "snr_max_clathrin", tt["snr_max_clathrin"].reindex(res[truth_track_col]).to_numpy(float))
    return res[columns]


def score_movie(truth_detections: pd.DataFrame, truth_tracks: pd.DataFrame, detections: pd.DataFrame, *,
                shape: tuple[int, int], sigma: float, project_tracks: pd.DataFrame | None = None,
                project_rows: pd.DataFrame | None = None, max_dist: float = 2.0, snr_min: float = 10.0,
                min_len: int = 5, min_frac: float = 0.8, long_frames: float = 80.0) -> dict:
    """Every accuracy score of one simulated movie as one flat dict (the issue-13 table).

    ``detections``: predicted spots (frame, x, y), e.g. the ``detect_movie`` table or a
    baseline's; ``project_tracks``/``project_rows``: the ``process_tracks`` track table and
    per-track-frame table (only rows with ``part == 'track'`` are used); without them only the
    detection scores are returned. The truth is the simulator's clathrin spots (A > 0).
    Detection is scored inside the ceil(4 sigma) border (cmeAnalysis cannot fit windows that
    leave the image), with neighbours counted over the whole frame; tracks are scored on true
    tracks that never come within ceil(4 sigma) + 1 px of the border (track processing drops
    tracks touching it). Keys: those of :func:`detection_scores` prefixed ``det_`` and of
    :func:`track_scores` (with ``snr_min``, ``max_dist``); with auxilin labels also the number
    of missed aux+ tracks longer than ``long_frames`` per cause of :func:`aux_miss_causes`
    (``aux_miss_long_<cause>``; of dim pits, peak SNR < ``snr_min``: ``aux_miss_dim_long_<cause>``)
    and of the false positives among aux- tracks longer than ``long_frames`` per cause of
    :func:`aux_false_positive_causes` (``aux_fp_long_<cause>``, ``aux_fp_dim_long_<cause>``).
    """
    truth = truth_detections[truth_detections["A_clathrin"] > 0]
    nn = pd.Series(neighbour_distance(truth), index=truth.index)
    margin = math.ceil(4 * sigma)
    t_in = interior(truth, shape, margin)
    p_in = interior(detections, shape, margin)
    det = detection_scores(p_in, t_in, max_dist=max_dist, snr_min=snr_min, nn=nn.loc[t_in.index].to_numpy())
    out = {"snr_min": snr_min, "max_dist": max_dist, **{f"det_{k}": v for k, v in det.items()}}
    if project_tracks is None or project_rows is None:
        return out
    rows = project_rows
    if "part" in rows:
        rows = rows[rows["part"].astype(str) == "track"]
    inside = interior(truth, shape, margin + 1)
    edge_tracks = set(truth.loc[truth.index.difference(inside.index), "track_id"])
    t_tracks = truth[~truth["track_id"].isin(edge_tracks)]
    rows = rows.reset_index(drop=True)
    matched = _match_tracks(rows, t_tracks, truth_tracks, max_dist, "track_id", "track_id")
    out.update(track_scores(rows, project_tracks, t_tracks, truth_tracks, max_dist=max_dist, min_len=min_len,
                            min_frac=min_frac, snr_min=snr_min, long_frames=long_frames, matched=matched))
    if "aux_positive" in project_tracks:
        miss = aux_miss_causes(rows, project_tracks, t_tracks, truth_tracks, detections, max_dist=max_dist,
                               min_len=min_len, long_frames=long_frames, matched=matched)
        out.update(_cause_counts(miss, MISS_CAUSES, "aux_miss", snr_min))
        fp = aux_false_positive_causes(rows, project_tracks, t_tracks, truth_tracks, truth_detections,
                                       max_dist=max_dist, min_len=min_len, long_frames=long_frames, matched=matched)
        out.update(_cause_counts(fp, FALSE_POSITIVE_CAUSES, "aux_fp", snr_min))
    return out


def _cause_counts(table: pd.DataFrame, causes, prefix: str, snr_min: float) -> dict:
    """``<prefix>_long_<cause>`` and, of dim pits (peak SNR < ``snr_min``), ``<prefix>_dim_long_<cause>``:
    the rows of a cause table (:func:`aux_miss_causes`, :func:`aux_false_positive_causes`) per cause."""
    dim = table["snr_max_clathrin"].to_numpy(float) < snr_min
    out = {}
    for cause in causes:
        hit = table["cause"].to_numpy() == cause
        out[f"{prefix}_long_{cause}"] = int(hit.sum())
        out[f"{prefix}_dim_long_{cause}"] = int((hit & dim).sum())
    return out


def oracle_link(detections: pd.DataFrame, truth_detections: pd.DataFrame, max_dist: float = 2.0) -> pd.DataFrame:
    """The detection table linked by the truth: a detection matched (:func:`match_detections`,
    within ``max_dist`` px) to a true clathrin spot takes that spot's true track; every other
    detection is a track of its own. Returns a copy with ``track_id`` and ``compound_id`` (equal,
    int64, numbered by first appearance like ``link``), ready for ``process_tracks``: the best
    any linker could do with these detections."""
    _require(truth_detections, ("frame", "x", "y", "track_id", "A_clathrin"), "true detections")
    det = detections.reset_index(drop=True).copy()
    truth = truth_detections[truth_detections["A_clathrin"] > 0]
    m = match_detections(det, truth, max_dist)
    label = np.full(len(det), -1, np.int64)
    label[m["pred"].to_numpy()] = truth.loc[m["truth"].to_numpy(), "track_id"].to_numpy(np.int64)
    alone = np.flatnonzero(label < 0)
    label[alone] = (label.max() + 1 if len(label) else 0) + np.arange(alone.size)
    det["track_id"], det["compound_id"] = renumber(det, label, label)
    return det


def oracle_detect(movie, truth_detections: pd.DataFrame, masks: np.ndarray, cfg: dict | None = None) -> pd.DataFrame:
    """The detection table of a perfect detector: every true clathrin spot (A > 0) fitted at its
    true position, its amplitude and background solved with the frame's other significant true
    spots in the model (``fit_at_positions``' crowded fits with positions held: two pits closer than
    sigma stay one source, the resolution limit), and kept where that amplitude passes the
    detection's test (p < 0.05 at ``detection.alpha``); the auxilin fitted there as detection
    fits it (``fit_slave``, the true spots as neighbours). Columns as ``detect_movie``'s
    (``mask_n`` / ``mask_a`` from the component of the detection ``masks`` under the spot, 0 and
    NaN off them). Linked by :func:`oracle_link` and processed, it scores what the labels reach
    when neither detection (missed and blended pits, position errors) nor linking errs. The PSF
    sigmas are the configured ones (``detection.sigma_clathrin`` / ``sigma_aux``, else from the
    optics)."""
    from scipy import ndimage

    from domains.cme.tracking.detect import (P_SIGNIFICANT, detection_config, fit_at_positions, movie_array,
                                             spot_table)

    _require(truth_detections, ("frame", "x", "y", "A_clathrin"), "true detections")
    data = movie_array(movie)
    dcfg = detection_config(cfg)
    s_cla, s_aux = (dcfg.model_sigma(s) for s in dcfg.sigmas(float(getattr(movie, "pixel_size_um", 0.08))))
    truth = truth_detections[truth_detections["A_clathrin"] > 0]
    tables = []
    for t, spots in truth.groupby("frame", sort=True):
        frame = data[int(t)].astype(np.float64)
        x, y = spots["x"].to_numpy(float), spots["y"].to_numpy(float)
        fit = fit_at_positions(frame[0], x, y, s_cla, s_cla, dcfg.alpha, neighbours=True, max_shift=0.0)
        with np.errstate(invalid="ignore"):
            fit = fit.take(np.flatnonzero(fit.ok & (fit.pval_A < P_SIGNIFICANT)))
        xs, ys = np.round(fit.x).astype(np.int64), np.round(fit.y).astype(np.int64)
        labels, _ = ndimage.label(masks[int(t)])
        tab = spot_table(frame, fit, xs, ys, labels, s_cla, s_aux, dcfg.alpha_aux, dcfg.aux_neighbours,
                         dcfg.slave_max_shift)
        tab.insert(0, "frame", np.int64(t))
        tables.append(tab)
    det = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["frame", "x", "y"])
    det["sigma"], det["sigma_aux"] = s_cla, (s_aux if data.shape[1] == 2 else np.nan)
    return det


def movie_to_tracks(movie, cfg: dict | None = None, threads: int = 1):
    """The ingest's movies -> tracks path of one movie (as ``domains.cme.domain.track_movies``):
    ``detect_movie`` -> ``link_with_pairs`` -> ``process_tracks``; returns (detections with the
    linker's ``track_id``, track table, per-track-frame table)."""
    from domains.cme.tracking.detect import detect_movie
    from domains.cme.tracking.pairs import link_with_pairs
    from domains.cme.tracking.processing import process_tracks

    det, masks = detect_movie(movie, cfg, threads, return_masks=True)
    det = link_with_pairs(det, movie, cfg)
    tracks, frames = process_tracks(det, movie, masks, cfg)
    return det, tracks, frames
