"""Frame-to-frame linking of clathrin detections with maintained trackers.

``trackpy``: nearest-neighbour LAP linking with a search range and a ``memory``
of missed frames (gap bridging). ``laptrack``: laptrack's own two-step LAP (Jaqaman et al.
2008) with one fixed search radius, gap closing and, optionally, merging and splitting.
``utrack`` (default): the u-track tracker cmeAnalysis runs, built on laptrack's LAP cost matrices and
solver with u-track's motion-aware costs (see :func:`_link_utrack`): per-track search radii
from the tracks' own step statistics, then one global LAP that closes gaps (cost scaled by the
amplitude ratio and a per-frame gap penalty) and, optionally, links merges and splits.

All give the detection table back with ``track_id`` (one id per linear track segment) and
``compound_id`` (segments joined by merges/splits share it; equal to ``track_id`` without
merges/splits). Spurious merge/split branches are removed the way cmeAnalysis preprocessing
does (single-frame branches; branches shorter than 4 frames that split from and merge back
into the same track, or that begin de novo and merge, or split off and end early).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from awd.io import InputError, is_count, known_fields

log = logging.getLogger(__name__)

LINKERS = ("trackpy", "laptrack", "utrack")


@dataclass(frozen=True)
class TrackingConfig:
    """Linking settings (config section ``tracking``).

    ``search_range`` px per frame; ``memory``: frames a spot may be missing inside a track
    (trackpy memory; laptrack/utrack gap closing up to ``memory + 1`` frames apart).
    ``adaptive_stop``/``adaptive_step``: trackpy shrinks the search range in over-large
    subnetworks down to ``adaptive_stop`` px instead of failing. ``merge_split`` (laptrack,
    utrack) also links merges and splits.

    utrack only: ``search_range`` is the radius of the first linking pass; later passes give
    each detection the radius ``brown_std_mult`` x the RMS frame step of its track (shrunk
    towards the movie's typical step with the weight of ``step_prior_weight`` steps), bounded
    by [``min_search_radius``, ``max_search_radius``]; ``motion_passes`` linking passes in all.
    The frame-to-frame cost (squared distance) is multiplied by the amplitude ratio (column
    ``A``, larger over smaller) to the power ``amplitude_weight`` (0: positions only); in the
    later passes a detection's side of that ratio is the mean amplitude of the last
    ``amplitude_frames`` detections of its track from the pass before (1: its own amplitude).
    Gap closing joins a track end to a track start up to ``memory`` missed frames later within
    that radius x sqrt(frames apart); its cost (squared distance over the expected squared
    step) is multiplied by the amplitude ratio of the two ends (candidates above
    ``amplitude_ratio_max`` are not joined) and by ``gap_penalty`` per missed frame.
    ``local_density`` (u-track's ``useLocalDensity``): the frame-to-frame radius of a detection
    is at least its nearest-neighbour distance in its frame over ``closest_distance_scale``,
    capped at ``density_max_radius`` (:func:`_density_radius`). ``frame_memory``: in the
    later frame-to-frame passes a track end stays open for that many frames and competes for
    the next frame's detections (0: strictly frame to frame; never more than
    ``memory``, so ``memory: 0`` still bridges no gap), within its motion radius x
    sqrt(frames apart) and at most ``frame_memory_radius`` px (:func:`_frame_links`).

    Pair fits (:func:`domains.cme.tracking.pairs.fit_hidden_pairs`, after linking; ``pair_fits``
    turns them off): where a track of >= ``pair_track_frames`` detections stops and the nearest
    detection within ``pair_radius`` px of its predicted position belongs to another track, a
    two-source fit is kept at F-test p < ``pair_alpha`` when each source lies within
    ``pair_max_shift`` px of its start and the two are > ``pair_min_separation`` sigma apart;
    a hidden pit is followed for up to ``pair_max_frames`` frames.
    """

    linker: str = "utrack"
    search_range: float = 3.0
    memory: int = 3
    adaptive_stop: float = 0.5
    adaptive_step: float = 0.95
    merge_split: bool = False
    brown_std_mult: float = 3.0
    min_search_radius: float = 1.0
    max_search_radius: float = 8.0
    motion_passes: int = 3
    step_prior_weight: float = 3.0
    gap_penalty: float = 1.5
    amplitude_ratio_max: float = 3.0
    amplitude_weight: float = 4.0
    amplitude_frames: int = 3
    local_density: bool = True
    closest_distance_scale: float = 2.0
    density_max_radius: float = 4.0
    frame_memory: int = 1
    frame_memory_radius: float = 2.0
    pair_fits: bool = True
    pair_alpha: float = 0.05
    pair_radius: float = 4.0
    pair_max_shift: float = 2.0
    pair_min_separation: float = 0.6
    pair_max_frames: int = 15
    pair_track_frames: int = 3

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrackingConfig":
        d = known_fields(cls, d, "tracking")
        cfg = cls(**d)
        if cfg.linker not in LINKERS:
            raise InputError("config:tracking.linker", f"{cfg.linker!r} is not one of {LINKERS}")
        if cfg.search_range <= 0 or cfg.memory < 0:
            raise InputError("config:tracking", "search_range must be > 0 and memory >= 0")
        if not 0 < cfg.adaptive_stop <= cfg.search_range or not 0 < cfg.adaptive_step < 1:
            raise InputError("config:tracking", "need 0 < adaptive_stop <= search_range and 0 < adaptive_step < 1")
        if cfg.brown_std_mult <= 0 or not 0 < cfg.min_search_radius <= cfg.max_search_radius:
            raise InputError("config:tracking",
                             "need brown_std_mult > 0 and 0 < min_search_radius <= max_search_radius")
        if not cfg.closest_distance_scale > 0 or not cfg.density_max_radius > 0:
            raise InputError("config:tracking", "need closest_distance_scale > 0 and density_max_radius > 0")
        whole = type(cfg.frame_memory) is int and cfg.frame_memory >= 0
        if not whole or not cfg.frame_memory_radius > 0:
            raise InputError("config:tracking", f"need frame_memory a whole number >= 0 (got {cfg.frame_memory!r}) "
                             f"and frame_memory_radius > 0 (got {cfg.frame_memory_radius!r})")
        if cfg.motion_passes < 1 or cfg.step_prior_weight < 0:
            raise InputError("config:tracking", "need motion_passes >= 1 and step_prior_weight >= 0")
        if cfg.gap_penalty < 1 or cfg.amplitude_ratio_max < 1 or cfg.amplitude_weight < 0:
            raise InputError("config:tracking",
                             "need gap_penalty >= 1, amplitude_ratio_max >= 1 and amplitude_weight >= 0")
        if not isinstance(cfg.pair_fits, bool):
            raise InputError("config:tracking.pair_fits", f"must be true or false, got {cfg.pair_fits!r}")
        if not 0 < cfg.pair_alpha < 1 or not cfg.pair_radius > 0 or not cfg.pair_max_shift > 0 \
                or cfg.pair_min_separation < 0:
            raise InputError("config:tracking", "need 0 < pair_alpha < 1, pair_radius > 0, pair_max_shift > 0 "
                             "and pair_min_separation >= 0")
        for name in ("pair_max_frames", "pair_track_frames"):
            if not is_count(getattr(cfg, name)):
                raise InputError(f"config:tracking.{name}",
                                 f"must be a whole number >= 1, got {getattr(cfg, name)!r}")
        if not is_count(cfg.amplitude_frames):
            raise InputError("config:tracking.amplitude_frames",
                             f"must be a whole number of detections >= 1, got {cfg.amplitude_frames!r}")
        return cfg


def tracking_config(cfg: dict | None) -> TrackingConfig:
    """The tracking settings from a domain config section (its ``tracking`` key)."""
    return TrackingConfig.from_dict((cfg or {}).get("tracking"))


def link(detections: pd.DataFrame, cfg: dict | None = None) -> pd.DataFrame:
    """Link detections (columns frame, x, y; utrack also uses the amplitude ``A`` where
    present) into tracks; returns a copy with ``track_id``
    and ``compound_id`` (int64, numbered by first appearance). Detections on dropped
    spurious branches get -1."""
    tcfg = tracking_config(cfg)
    missing = {"frame", "x", "y"} - set(detections.columns)
    if missing:
        raise InputError(None, f"link: detection table lacks columns {sorted(missing)}")
    det = detections.reset_index(drop=True).copy()
    if not np.isfinite(det[["x", "y"]].to_numpy(float)).all():
        raise InputError(None, "link: detection table has non-finite x/y positions")
    if len(det) == 0:
        det["track_id"] = pd.Series(dtype=np.int64)
        det["compound_id"] = pd.Series(dtype=np.int64)
        return det
    if tcfg.linker == "trackpy":
        seg = _link_trackpy(det, tcfg)
        comp = seg.copy()
    elif tcfg.linker == "utrack":
        seg, comp = _link_utrack(det, tcfg)
    else:
        seg, comp = _link_laptrack(det, tcfg)
    det["track_id"], det["compound_id"] = renumber(det, seg, comp)
    n_tracks = int(det["track_id"].max()) + 1 if (det["track_id"] >= 0).any() else 0
    log.info("%s linked %d detections into %d track segments", tcfg.linker, len(det), n_tracks)
    return det


def renumber(det: pd.DataFrame, seg: np.ndarray, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive ids in order of first appearance (frame, then row); -1 stays -1."""
    order = np.lexsort((np.arange(len(det)), det["frame"].to_numpy()))
    out = []
    for lab in (seg, comp):
        new = np.full(len(lab), -1, np.int64)
        lab_o = np.asarray(lab)[order]
        valid = lab_o >= 0
        _, first, inv = np.unique(lab_o[valid], return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        new[order[valid]] = rank[inv.ravel()]
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


# --------------------------------------------------------------------------------------
# utrack: u-track's motion-aware two-step LAP on laptrack's cost matrices and solver
# --------------------------------------------------------------------------------------
def _link_utrack(det: pd.DataFrame, tcfg: TrackingConfig) -> tuple[np.ndarray, np.ndarray]:
    """u-track linking (Jaqaman et al. 2008) with Brownian motion costs.

    1. Frame-to-frame LAP in ``motion_passes`` passes: the first with ``search_range`` for
       every detection, each later one with per-detection radii from the previous pass's
       tracks (:func:`_search_radii`). Cost = squared distance x amplitude ratio ^
       ``amplitude_weight``, the later passes comparing a detection's candidate with its
       track's mean amplitude over ``amplitude_frames`` detections (a pit whose fit shares its
       amplitude with a blending neighbour for a frame keeps its track) and the track ends of
       up to ``frame_memory`` frames before competing for each frame's detections within their
       own motion radius (the first pass has none to give them); start/end costs at
       1.05 x the frame's largest one-frame candidate cost (laptrack's default), so every link
       inside a radius beats ending a track when it competes with no better one.
    2. One global LAP over the segments (:func:`_close_gaps`): gap closing and, with
       ``merge_split``, merges and splits.
    laptrack's own candidate search (a pandas row loop over all segment pairs) took 80 % of
    its run time; here candidates come from k-d trees and the costs are vectorised, and
    laptrack builds the Jaqaman cost matrices and solves them.
    """
    n = len(det)
    frames_in = det["frame"].to_numpy(np.int64)
    order = np.argsort(frames_in, kind="stable")  # work on rows sorted by frame
    f = frames_in[order]
    p = det[["x", "y"]].to_numpy(float)[order]
    amp = None
    if "A" in det.columns:
        amp = np.abs(det["A"].to_numpy(float)[order])
        amp = np.where(np.isfinite(amp) & (amp > 0), amp, np.nan)
    bounds = np.searchsorted(f, np.arange(f.min(), f.max() + 2))
    room = _density_radius(p, bounds, tcfg)
    motion = np.full(n, float(tcfg.search_range))
    mem = dict(memory=min(tcfg.frame_memory, tcfg.memory), memory_radius=tcfg.frame_memory_radius,
               gap_penalty=tcfg.gap_penalty, ratio_max=tcfg.amplitude_ratio_max)
    nxt = _frame_links(p, bounds, np.maximum(motion, room), amp, tcfg.amplitude_weight)
    for _ in range(tcfg.motion_passes - 1):
        motion = _search_radii(p, f, nxt, tcfg, local=True)[0]
        amp_from = None if amp is None else _track_amplitude(amp, nxt, tcfg.amplitude_frames)
        nxt = _frame_links(p, bounds, np.maximum(motion, room), amp, tcfg.amplitude_weight, amp_from,
                           gap_radius=motion, **mem)
    extra = _close_gaps(p, f, amp, nxt, tcfg)
    if not any(len(e) for e in extra[1:]):  # linear chains only: label them directly
        nxt = nxt.copy()
        nxt[extra[0][:, 0]] = extra[0][:, 1]
        seg_sorted = _chain_labels(nxt, bounds)
        seg = np.empty(n, np.int64)
        seg[order] = seg_sorted
        return seg, seg.copy()
    edges = [np.column_stack([np.flatnonzero(nxt >= 0), nxt[nxt >= 0]])] + list(extra)
    edges = order[np.concatenate(edges)]
    succ: dict[int, list[int]] = {i: [] for i in range(n)}
    pred: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges.tolist():
        succ[a].append(b)
        pred[b].append(a)
    xy = det[["x", "y"]].to_numpy(float)
    seg, start_parent, end_parent = _segments(succ, pred, frames_in, xy)
    keep = _drop_spurious_branches(seg, start_parent, end_parent, succ, pred, frames_in)
    return np.where(keep, seg, -1), _components(succ, pred, keep)


def _density_radius(p: np.ndarray, bounds: np.ndarray, tcfg: TrackingConfig) -> np.ndarray:
    """u-track's local-density expansion of the frame-to-frame search radius
    (``useLocalDensity``, ``closestDistScale``): a detection may link as far as its nearest
    neighbour in the same frame over ``closest_distance_scale``, at most
    ``density_max_radius`` px; 0 where ``local_density`` is off (the radius is then the motion
    radius alone).

    A lone pit's radius then no longer depends on how slowly it moved so far: the released
    vesicle's jump at scission (1-4 px in one frame, D = 0.5 px^2/s) stays in its track, while
    crowded pits keep the radius of their own motion. Gap closing is not expanded: there a
    larger radius joins pits that end and start close together."""
    from scipy.spatial import cKDTree

    room = np.zeros(len(p))
    if not tcfg.local_density:
        return room
    for t in range(len(bounds) - 1):
        a, b = bounds[t], bounds[t + 1]
        if b - a >= 2:
            d, _ = cKDTree(p[a:b]).query(p[a:b], k=2)
            room[a:b] = d[:, 1] / tcfg.closest_distance_scale
        elif b - a == 1:
            room[a] = np.inf
    return np.minimum(room, tcfg.density_max_radius)


def _frame_links(p: np.ndarray, bounds: np.ndarray, radius: np.ndarray, amp: np.ndarray | None = None,
                 amp_weight: float = 0.0, amp_from: np.ndarray | None = None, memory: int = 0,
                 gap_radius: np.ndarray | None = None, memory_radius: float = np.inf, gap_penalty: float = 1.5,
                 ratio_max: float = np.inf) -> np.ndarray:
    """Frame-to-frame LAP; ``nxt[i]`` = the row linked to row ``i`` in a later frame, or -1.

    Rows are sorted by frame, frame t holds rows ``bounds[t]:bounds[t+1]``; a link i -> j is a
    candidate when ``|p_j - p_i| <= radius[i]``; its cost is the squared distance times the
    amplitude ratio max/min of ``amp_from[i]`` (default ``amp[i]``) and ``amp[j]`` ^
    ``amp_weight`` (1 where an amplitude is missing).

    With ``memory`` > 0 the track ends of up to that many frames before compete for the next
    frame's detections too (trackpy's memory inside the LAP): a pit missed for a frame takes its
    spot back before a neighbour's track, which it reached while the pit was missing, can hold it
    (two pits detected alternately otherwise swap tracks). Such a link dt frames long is a
    candidate within ``gap_radius[i]`` x sqrt(dt) (default ``radius``), at most
    ``memory_radius`` px, and amplitude ratios up to ``ratio_max``; it costs d^2 / dt x
    ``gap_penalty`` ^ (dt - 1) x the amplitude factor. Track start and end costs stay those of
    the one-frame candidates (laptrack's 1.05 x the largest), so an unlikely memory candidate
    does not make ending a track dearer.
    """
    if amp_from is None:
        amp_from = amp
    from laptrack._coo_matrix_builder import coo_matrix_builder
    from laptrack._cost_matrix import build_frame_cost_matrix
    from laptrack._optimization import lap_optimization
    from scipy.spatial import cKDTree

    nxt = np.full(len(p), -1, np.int64)
    fi = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    for t in range(len(bounds) - 2):
        a0, a1, b1 = bounds[t], bounds[t + 1], bounds[t + 2]
        src = np.arange(bounds[max(t - memory, 0)], a1)
        src = src[(src >= a0) | (nxt[src] < 0)]  # earlier frames: the track ends still open
        if src.size == 0 or b1 == a1:
            continue
        dt = (t + 1 - fi[src]).astype(float)
        far = (radius if gap_radius is None else gap_radius)[src] * np.sqrt(dt)
        reach = np.where(dt == 1, radius[src], np.minimum(far, memory_radius))
        pairs = cKDTree(p[src]).sparse_distance_matrix(cKDTree(p[a1:b1]), float(reach.max()),
                                                       output_type="ndarray")
        i, j, d = pairs["i"], pairs["j"], pairs["v"]
        ok = d <= reach[i]
        if not ok.any():
            continue
        i, j, d = i[ok], j[ok], d[ok]
        cost = d ** 2 / dt[i] * gap_penalty ** (dt[i] - 1)
        if amp is not None and (amp_weight > 0 or memory > 0):  # memory links are gated by ratio_max either way
            ratio = _amp_ratio(amp_from[src[i]], amp[a1 + j])
            cost = np.where((dt[i] == 1) | (ratio <= ratio_max), cost * ratio ** amp_weight, np.inf)
        keep = np.isfinite(cost)
        i, j, cost = i[keep], j[keep], cost[keep]
        if not i.size:
            continue
        dist = coo_matrix_builder((src.size, b1 - a1), row=i, col=j, data=cost, dtype=np.float32)
        edge = None  # laptrack's default, 1.05 x the largest candidate cost; with memory ones, of the others
        near = dt[i] == 1
        if near.any() and not near.all():
            edge = np.max(cost[near].astype(np.float32)) * 1.05
        xs, _ = lap_optimization(build_frame_cost_matrix(dist, track_start_cost=edge, track_end_cost=edge))
        s = np.flatnonzero(xs[:src.size] < b1 - a1)
        nxt[src[s]] = a1 + xs[s]
    return nxt


def _predecessors(nxt: np.ndarray) -> np.ndarray:
    """``prev[j]`` = the row whose ``nxt`` is ``j``, or -1 (the inverse of the links)."""
    prev = np.full(len(nxt), -1, np.int64)
    src = np.flatnonzero(nxt >= 0)
    prev[nxt[src]] = src
    return prev


def _track_amplitude(amp: np.ndarray, nxt: np.ndarray, k: int) -> np.ndarray:
    """Mean amplitude of each row and up to ``k - 1`` rows before it on its chain of ``nxt``
    (NaN amplitudes left out; NaN where all are missing)."""
    if k <= 1:
        return amp
    return _end_amplitude(amp, np.arange(len(nxt)), _predecessors(nxt), k)


def _amp_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max/min amplitude ratio, 1 where either is missing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.maximum(a, b) / np.minimum(a, b)
    return np.where(np.isfinite(r), r, 1.0)


def _chain_labels(nxt: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Segment label of every row of linear chains (``nxt`` points to later frames only)."""
    prev = _predecessors(nxt)
    seg = np.full(len(nxt), -1, np.int64)
    starts = np.flatnonzero(prev < 0)
    seg[starts] = np.arange(len(starts))
    for t in range(len(bounds) - 1):  # predecessors lie in earlier frames: labelled already
        rows = np.arange(bounds[t], bounds[t + 1])
        rows = rows[prev[rows] >= 0]
        seg[rows] = seg[prev[rows]]
    return seg


def _search_radii(p: np.ndarray, f: np.ndarray, nxt: np.ndarray, tcfg: TrackingConfig, local: bool = False):
    """Per-row search radius from the step statistics of its segment of ``nxt``.

    Mean squared step of a segment, shrunk towards the movie's typical one (the median
    squared step / ln 2, the mean of an isotropic 2D Gaussian step, robust to the few fast
    tracks) with the weight of ``step_prior_weight`` steps; radius = ``brown_std_mult`` x its
    root, bounded by [min_search_radius, max_search_radius]. Returns (radius per row, segment
    label per row, mean squared step per segment, steps per segment, global mean squared step).
    """
    seg = _chain_labels_any(nxt)
    src = np.flatnonzero(nxt >= 0)
    step2 = np.zeros(len(nxt))  # squared step to the next row, per frame across a skipped one
    step2[src] = np.sum((p[nxt[src]] - p[src]) ** 2, axis=1) / (f[nxt[src]] - f[src])
    d2 = step2[src]
    n_seg = int(seg.max()) + 1 if len(seg) else 0
    if len(d2):
        ms_glob = float(np.median(d2) / np.log(2.0))
    else:
        ms_glob = (tcfg.search_range / tcfg.brown_std_mult) ** 2
    ms_glob = max(ms_glob, 1e-6)
    s_sum = np.bincount(seg[src], weights=d2, minlength=n_seg)
    s_n = np.bincount(seg[src], minlength=n_seg).astype(float)
    w = tcfg.step_prior_weight
    ms = (s_sum + w * ms_glob) / np.maximum(s_n + w, 1e-12)
    ms = np.where(s_n + w > 0, ms, ms_glob)
    ms_row = ms[seg]
    if local and _STEP_WINDOW > 0:
        ms_row = _windowed_ms(step2, nxt, seg, ms_row, w)
    r_row = np.clip(tcfg.brown_std_mult * np.sqrt(ms_row), tcfg.min_search_radius, tcfg.max_search_radius)
    return r_row, seg, ms, s_n, ms_glob


_STEP_WINDOW = 3


def _windowed_ms(d2, nxt, seg, ms_prior, w):
    """Mean squared step of the ``_STEP_WINDOW`` links before and after each row in its
    segment, shrunk towards ``ms_prior`` (the segment's estimate) with weight ``w``: the
    radius follows changes of motion inside a track (a vesicle leaving after scission).
    ``d2``: each row's squared step to its ``nxt`` (0 where it has none). Rows must be sorted
    by frame, so the row order inside a segment is its time order."""
    n = len(nxt)
    has = nxt >= 0
    order = np.lexsort((np.arange(n), seg))
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    cs = np.concatenate([[0.0], np.cumsum(d2[order])])  # link k of the order: row order[k] -> next
    cn = np.concatenate([[0], np.cumsum(has[order])])
    first = np.searchsorted(seg[order], seg, side="left")
    last = np.searchsorted(seg[order], seg, side="right") - 1  # the segment's last row: no link
    lo = np.maximum(pos - _STEP_WINDOW, first)
    hi = np.minimum(pos + _STEP_WINDOW, last)
    s_win = cs[hi] - cs[lo]
    n_win = cn[hi] - cn[lo]
    return (s_win + w * ms_prior) / np.maximum(n_win + w, 1e-12)


def _chain_labels_any(nxt: np.ndarray) -> np.ndarray:
    """Chain labels without frame bounds (rows need not be sorted): pointer jumping."""
    prev = _predecessors(nxt)
    head = np.where(prev < 0, np.arange(len(nxt)), prev)
    while True:  # head[i] -> the first row of i's chain, in O(log length) rounds
        nh = head[head]
        if np.array_equal(nh, head):
            break
        head = nh
    _, seg = np.unique(head, return_inverse=True)
    return seg.astype(np.int64)


def _end_amplitude(amp: np.ndarray, start: np.ndarray, step: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean amplitude of up to ``k`` rows from ``start`` following ``step`` (prev or nxt)."""
    total = np.zeros(len(start))
    count = np.zeros(len(start))
    cur = start.copy()
    for _ in range(k):
        ok = cur >= 0
        a = np.where(ok, amp[np.where(ok, cur, 0)], np.nan)
        good = np.isfinite(a)
        total += np.where(good, a, 0.0)
        count += good
        cur = np.where(ok, step[np.where(ok, cur, 0)], -1)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _close_gaps(p: np.ndarray, f: np.ndarray, amp: np.ndarray | None, nxt: np.ndarray,
                tcfg: TrackingConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u-track's gap-closing/merge/split LAP over the segments of ``nxt``.

    Returns row pairs (a, b), a earlier, for gap links, merges and splits. Candidate costs are
    d^2 / (sigma^2 dt) with sigma = the pooled search radius / ``brown_std_mult`` of the two
    segments (so a cost of ``brown_std_mult``^2 is the edge of the radius x sqrt(dt)),
    times the amplitude ratio (u-track's ampRatio: max/min of the end and start amplitudes;
    for a merge the merged spot over the sum of its two parents, inverted and squared below 1)
    and ``gap_penalty`` ^ (missed frames). Not linking costs ``brown_std_mult``^2 per end,
    start, merge or split candidate, so a candidate is taken only below that cost.
    """
    from laptrack._coo_matrix_builder import coo_matrix_builder
    from laptrack._cost_matrix import build_segment_cost_matrix
    from laptrack._optimization import lap_optimization
    from scipy.spatial import cKDTree

    empty = np.empty((0, 2), np.int64)
    gmax = tcfg.memory + 1
    mult2 = tcfg.brown_std_mult ** 2
    _, seg, ms, s_n, ms_glob = _search_radii(p, f, nxt, tcfg)
    prev = _predecessors(nxt)
    n_seg = len(ms)
    first = np.empty(n_seg, np.int64)
    last = np.empty(n_seg, np.int64)
    first[seg[prev < 0]] = np.flatnonzero(prev < 0)
    last[seg[nxt < 0]] = np.flatnonzero(nxt < 0)
    w = tcfg.step_prior_weight
    s_sum = ms * (s_n + w) - w * ms_glob  # sum of squared steps per segment

    def sigma2(s_a, s_b=None):
        """Expected squared step (clamped like the radius) of one or two pooled segments."""
        if s_b is None:
            m = ms[s_a]
        else:
            m = (s_sum[s_a] + s_sum[s_b] + w * ms_glob) / np.maximum(s_n[s_a] + s_n[s_b] + w, 1e-12)
        r = np.clip(tcfg.brown_std_mult * np.sqrt(m), tcfg.min_search_radius, tcfg.max_search_radius)
        return (r / tcfg.brown_std_mult) ** 2

    r_far = tcfg.max_search_radius * np.sqrt(gmax)
    gap = coo_matrix_builder((n_seg, n_seg), dtype=np.float32)
    if n_seg > 1:
        pairs = cKDTree(p[last]).sparse_distance_matrix(cKDTree(p[first]), r_far, output_type="ndarray")
        e, s, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
        dt = f[first[s]] - f[last[e]]
        ok = (dt >= 1) & (dt <= gmax) & (e != s)
        e, s, d, dt = e[ok], s[ok], d[ok], dt[ok]
        cost = d ** 2 / (sigma2(e, s) * dt)
        if amp is not None:
            a_e = _end_amplitude(amp, last[e], prev)
            a_s = _end_amplitude(amp, first[s], nxt)
            ratio = np.maximum(a_e, a_s) / np.minimum(a_e, a_s)
            ratio = np.where(np.isfinite(ratio), ratio, 1.0)
            cost = np.where(ratio <= tcfg.amplitude_ratio_max, cost * ratio, np.inf)
        cost = cost * tcfg.gap_penalty ** (dt - 1)
        ok = cost < mult2
        gap = coo_matrix_builder((n_seg, n_seg), row=e[ok], col=s[ok], data=cost[ok], dtype=np.float32)
    merge_pts = split_pts = np.empty(0, np.int64)
    merge = coo_matrix_builder((n_seg, 0), dtype=np.float32)
    split = coo_matrix_builder((n_seg, 0), dtype=np.float32)
    if tcfg.merge_split:
        merge, merge_pts = _merge_split_candidates(p, f, amp, seg, last, prev, +1, sigma2, tcfg)
        split, split_pts = _merge_split_candidates(p, f, amp, seg, first, nxt, -1, sigma2, tcfg)
    if gap.size() + merge.size() + split.size() == 0:
        return empty, empty, empty
    cost = build_segment_cost_matrix(gap, split, merge, mult2, mult2, mult2, mult2)
    xs, ys = lap_optimization(cost)
    segs = np.arange(n_seg)
    col, row = xs[:n_seg], ys[:n_seg]
    g = col < n_seg
    gaps = np.column_stack([last[g], first[col[g]]])
    m = (col >= n_seg) & (col < n_seg + len(merge_pts))
    merges = np.column_stack([last[m], merge_pts[col[m] - n_seg]])
    sp = (row >= n_seg) & (row < n_seg + len(split_pts))
    splits = np.column_stack([split_pts[row[sp] - n_seg], first[segs[sp]]])
    return gaps.astype(np.int64), merges.astype(np.int64), splits.astype(np.int64)


def _merge_split_candidates(p, f, amp, seg, ends, step, direction, sigma2, tcfg):
    """Merge (``direction`` +1: segment ends -> a detection one frame later that continues a
    segment) or split (-1: segment starts <- a detection one frame earlier that continues)
    candidates; returns the (segments x candidate points) cost matrix and the points' rows.

    u-track's cost: d^2 / sigma^2 times the amplitude ratio rho = A_point / (A_end + A_other),
    A_other the point's own neighbour in its segment; rho < 1 is penalised as rho^-2.
    """
    from laptrack._coo_matrix_builder import coo_matrix_builder
    from scipy.spatial import cKDTree

    n_seg = len(ends)
    other = step  # merges: step = prev, the point's predecessor; splits: step = nxt, its successor
    pts = np.flatnonzero(other >= 0)
    if len(pts) == 0 or n_seg == 0:
        return coo_matrix_builder((n_seg, 0), dtype=np.float32), np.empty(0, np.int64)
    scale = 4.0 * tcfg.max_search_radius  # frame axis: balls never reach another frame
    tree_pts = cKDTree(np.column_stack([p[pts], f[pts] * scale]))
    tree_end = cKDTree(np.column_stack([p[ends], (f[ends] + direction) * scale]))
    pairs = tree_end.sparse_distance_matrix(tree_pts, tcfg.max_search_radius, output_type="ndarray")
    e, k, d = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    q = pts[k]
    ok = seg[q] != e
    e, q, d = e[ok], q[ok], d[ok]
    cost = d ** 2 / sigma2(e)
    if amp is not None:
        rho = amp[q] / (amp[ends[e]] + amp[other[q]])
        factor = np.where(rho >= 1, rho, rho ** -2.0)
        factor = np.where(np.isfinite(factor), factor, 1.0)
        cost = np.where(factor <= tcfg.amplitude_ratio_max, cost * factor, np.inf)
    ok = cost < tcfg.brown_std_mult ** 2
    e, q, cost = e[ok], q[ok], cost[ok]
    uniq, col = np.unique(q, return_inverse=True)
    return coo_matrix_builder((n_seg, len(uniq)), row=e, col=col, data=cost, dtype=np.float32), uniq
