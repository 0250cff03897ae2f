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
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from awd.io import InputError

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
