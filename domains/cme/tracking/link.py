"""Frame-to-frame linking of clathrin detections with maintained trackers.

``trackpy`` (default): nearest-neighbour LAP linking with a search range and a ``memory``
of missed frames (gap bridging). ``laptrack``: the u-track-style two-step LAP (Jaqaman et al.
2008) with gap closing and, optionally, merging and splitting, the closest to the u-track
tracker cmeAnalysis runs (search radius 3 px, gaps of up to 2 frames).

Both give the detection table back with ``track_id`` (one id per linear track segment) and
``compound_id`` (segments joined by merges/splits share it; equal to ``track_id`` without
merges/splits). Spurious merge/split branches are removed the way cmeAnalysis preprocessing
does (single-frame branches; branches shorter than 4 frames that split from and merge back
into the same track, or that begin de novo and merge, or split off and end early).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from awd.io import InputError

log = logging.getLogger(__name__)

LINKERS = ("trackpy", "laptrack")


@dataclass(frozen=True)
class TrackingConfig:
    """Linking settings (config section ``tracking``).

    ``search_range`` px per frame; ``memory``: frames a spot may be missing inside a track
    (trackpy memory; laptrack gap closing up to ``memory + 1`` frames apart).
    ``adaptive_stop``/``adaptive_step``: trackpy shrinks the search range in over-large
    subnetworks down to ``adaptive_stop`` px instead of failing. ``merge_split`` (laptrack
    only) also links merges and splits within ``search_range``.
    """

    linker: str = "trackpy"
    search_range: float = 3.0
    memory: int = 2
    adaptive_stop: float = 0.5
    adaptive_step: float = 0.95
    merge_split: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrackingConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError("config:tracking", f"unknown keys {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        if cfg.linker not in LINKERS:
            raise InputError("config:tracking.linker", f"{cfg.linker!r} is not one of {LINKERS}")
        if cfg.search_range <= 0 or cfg.memory < 0:
            raise InputError("config:tracking", "search_range must be > 0 and memory >= 0")
        if not 0 < cfg.adaptive_stop <= cfg.search_range or not 0 < cfg.adaptive_step < 1:
            raise InputError("config:tracking", "need 0 < adaptive_stop <= search_range and 0 < adaptive_step < 1")
        return cfg


def tracking_config(cfg: dict | None) -> TrackingConfig:
    """The tracking settings from a domain config section (its ``tracking`` key)."""
    return TrackingConfig.from_dict((cfg or {}).get("tracking"))


def link(detections: pd.DataFrame, cfg: dict | None = None) -> pd.DataFrame:
    """Link detections (columns frame, x, y) into tracks; returns a copy with ``track_id``
    and ``compound_id`` (int64, numbered by first appearance). Detections on dropped
    spurious branches get -1."""
    tcfg = tracking_config(cfg)
    missing = {"frame", "x", "y"} - set(detections.columns)
    if missing:
        raise InputError(None, f"link: detection table lacks columns {sorted(missing)}")
    det = detections.reset_index(drop=True).copy()
    if len(det) == 0:
        det["track_id"] = pd.Series(dtype=np.int64)
        det["compound_id"] = pd.Series(dtype=np.int64)
        return det
    if tcfg.linker == "trackpy":
        seg = _link_trackpy(det, tcfg)
        comp = seg.copy()
    else:
        seg, comp = _link_laptrack(det, tcfg)
    det["track_id"], det["compound_id"] = _renumber(det, seg, comp)
    n_tracks = int(det["track_id"].max()) + 1 if (det["track_id"] >= 0).any() else 0
    log.info("%s linked %d detections into %d track segments", tcfg.linker, len(det), n_tracks)
    return det


def _renumber(det: pd.DataFrame, seg: np.ndarray, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive ids in order of first appearance (frame, then row); -1 stays -1."""
    order = np.lexsort((np.arange(len(det)), det["frame"].to_numpy()))
    out = []
    for lab in (seg, comp):
        new = np.full(len(lab), -1, np.int64)
        mapping: dict[int, int] = {}
        for i in order:
            if lab[i] >= 0:
                new[i] = mapping.setdefault(int(lab[i]), len(mapping))
        out.append(new)
    return out[0], out[1]


def _link_trackpy(det: pd.DataFrame, tcfg: TrackingConfig) -> np.ndarray:
    import trackpy

    trackpy.quiet()
    f = pd.DataFrame({"x": det["x"].to_numpy(float), "y": det["y"].to_numpy(float),
                      "frame": det["frame"].to_numpy(np.int64)})
    with warnings.catch_warnings():
        # trackpy 0.7 calls DataFrame.sort_values(inplace=...), deprecated in pandas 3
        warnings.filterwarnings("ignore", message="The inplace keyword")
        linked = trackpy.link(f, tcfg.search_range, memory=tcfg.memory, t_column="frame", pos_columns=["x", "y"],
                              adaptive_stop=tcfg.adaptive_stop, adaptive_step=tcfg.adaptive_step)
    return linked.loc[f.index, "particle"].to_numpy(np.int64)


def _link_laptrack(det: pd.DataFrame, tcfg: TrackingConfig) -> tuple[np.ndarray, np.ndarray]:
    try:
        from laptrack import LapTrack
    except ImportError as err:  # pragma: no cover - laptrack is a declared dependency
        raise InputError("config:tracking.linker", f"laptrack is not importable: {err}") from err

    frames = det["frame"].to_numpy(np.int64)
    xy = det[["x", "y"]].to_numpy(float)
    n_frames = int(frames.max()) + 1
    rows_per_frame = [np.flatnonzero(frames == t) for t in range(n_frames)]
    coords = [xy[r] for r in rows_per_frame]
    r2 = tcfg.search_range ** 2
    # no-link (track/segment start and end) costs at the cutoff: every link within the search
    # range beats ending a track, as in trackpy; laptrack's default percentile-based costs
    # reject links longer than the typical step (e.g. across a gap of immobile pits)
    lt = LapTrack(metric="sqeuclidean", cutoff=r2, gap_closing_cutoff=r2 if tcfg.memory > 0 else False,
                  gap_closing_max_frame_count=tcfg.memory + 1,
                  splitting_cutoff=r2 if tcfg.merge_split else False,
                  merging_cutoff=r2 if tcfg.merge_split else False,
                  track_start_cost=r2, track_end_cost=r2, segment_start_cost=r2, segment_end_cost=r2,
                  no_splitting_cost=r2, no_merging_cost=r2)
    graph = lt.predict(coords)
    # laptrack nodes are (frame, index within that frame) -> detection row
    node_row = {(t, j): int(r[j]) for t, r in enumerate(rows_per_frame) for j in range(len(r))}
    succ: dict[int, list[int]] = {i: [] for i in range(len(det))}
    pred: dict[int, list[int]] = {i: [] for i in range(len(det))}
    for a, b in graph.edges():
        ra, rb = node_row[tuple(a)], node_row[tuple(b)]
        if frames[ra] > frames[rb]:
            ra, rb = rb, ra
        succ[ra].append(rb)
        pred[rb].append(ra)
    seg, start_parent, end_parent = _segments(succ, pred, frames, xy)
    keep = np.ones(len(det), bool)
    if tcfg.merge_split:
        keep = _drop_spurious_branches(seg, start_parent, end_parent, succ, pred, frames)
    seg = np.where(keep, seg, -1)
    comp = _components(succ, pred, keep)
    return seg, comp


def _segments(succ, pred, frames, xy) -> tuple[np.ndarray, dict, dict]:
    """u-track-like segments of the track graph: at a split the nearer successor continues
    the segment and the other starts a new one (``start_parent``); at a merge the nearer
    predecessor continues and the others end (``end_parent``: the segment they merge into)."""
    def dist(a, b):
        return float(np.hypot(*(xy[a] - xy[b])))

    cont = {i: min(ss, key=lambda j: dist(i, j)) for i, ss in succ.items() if ss}
    seg = np.full(len(frames), -1, np.int64)
    start_parent: dict[int, int] = {}
    end_parent: dict[int, int] = {}
    n_seg = 0
    for j in np.argsort(frames, kind="stable"):
        cands = [p for p in pred[j] if cont.get(p) == j]
        if cands:
            p = min(cands, key=lambda q: dist(q, j))
            seg[j] = seg[p]
            for q in cands:
                if q != p:
                    end_parent[int(seg[q])] = int(seg[j])
        else:
            seg[j] = n_seg
            if pred[j]:
                start_parent[n_seg] = int(seg[min(pred[j], key=lambda q: dist(q, j))])
            n_seg += 1
    return seg, start_parent, end_parent


def _drop_spurious_branches(seg, start_parent, end_parent, succ, pred, frames) -> np.ndarray:
    """cmeAnalysis preprocessing: rows of spurious merge/split segments are not kept.

    In a compound track of >= 2 segments a segment is dropped if it is 1 frame long, or
    shorter than 4 frames and it splits from and merges into the same segment, or it begins
    after the compound's start and merges, or it splits off and ends before the compound's end.
    """
    keep = np.ones(len(seg), bool)
    comp = _components(succ, pred, keep)
    seg_s = pd.Series(seg)
    first, last = pd.Series(frames).groupby(seg_s).min(), pd.Series(frames).groupby(seg_s).max()
    comp_of = pd.Series(comp).groupby(seg_s).first()
    c_first, c_last = pd.Series(frames).groupby(comp).min(), pd.Series(frames).groupby(comp).max()
    n_in_comp = comp_of.value_counts()
    for s in first.index:
        c = comp_of[s]
        if n_in_comp[c] < 2:
            continue
        length = last[s] - first[s] + 1
        sp, ep = start_parent.get(s), end_parent.get(s)
        short_branch = ((sp is not None and sp == ep)
                        or (sp is None and ep is not None and first[s] > c_first[c])
                        or (sp is not None and ep is None and last[s] < c_last[c]))
        if length == 1 or (length < 4 and short_branch):
            keep[seg == s] = False
    return keep


def _components(succ, pred, keep) -> np.ndarray:
    """Weakly connected components (compound tracks) over kept rows; -1 for dropped rows."""
    comp = np.full(len(keep), -1, np.int64)
    k = 0
    for start in np.flatnonzero(keep):
        if comp[start] >= 0:
            continue
        stack = [int(start)]
        comp[start] = k
        while stack:
            i = stack.pop()
            for j in succ[i] + pred[i]:
                if keep[j] and comp[j] < 0:
                    comp[j] = k
                    stack.append(j)
        k += 1
    return comp
