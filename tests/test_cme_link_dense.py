"""u-track-style linking (linker ``utrack``) at realistic pit density, against the simulator's
truth, and its gap-closing rules on hand-made cases.

The dense cases link the simulator's true spot positions with localisation noise (0.25 px
per axis), 4 % random one-frame dropouts and amplitude noise like that of the fits, so they
measure linking alone; the truth id of each detection is known exactly. A spot within 1.5 px
of a brighter one is dropped (a detector sees one spot there; the simulator places pits
independently, so a few overlap, and no linker can tell two overlapping pits apart).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from awd.io import InputError
from domains.cme.tracking import accuracy as acc
from domains.cme.tracking.link import TrackingConfig, _frame_links, _search_radii, link
from domains.cme.tracking.simulate import SimulationConfig, simulate_cell


def dense_truth_detections(diffusion: float, seed: int, size: int = 256, n_frames: int = 100):
    """True clathrin spots of a simulated cell at ~0.003 spots/px^2 as a detection table:
    positions + N(0, 0.25 px), A = A_true x exp(N(0, 0.05)) + N(0, 150 ADU) (>= 30), 4 % of
    the spots dropped; ``true_id`` = the simulator's track id. Rows shuffled."""
    cfg = SimulationConfig.from_dict({"height": size, "width": size, "n_frames": n_frames,
                                      "density": 0.0035, "diffusion": diffusion})
    truth = simulate_cell(cfg, seed).truth_detections
    truth = truth[truth["A_clathrin"] > 0]
    truth = truth[resolved(truth, 1.5)]
    rng = np.random.default_rng(seed)
    truth = truth[rng.random(len(truth)) >= 0.04]
    n = len(truth)
    det = pd.DataFrame({
        "frame": truth["frame"].to_numpy(),
        "x": truth["x"].to_numpy() + rng.normal(0, 0.25, n),
        "y": truth["y"].to_numpy() + rng.normal(0, 0.25, n),
        "A": np.maximum(truth["A_clathrin"].to_numpy() * np.exp(rng.normal(0, 0.05, n))
                        + rng.normal(0, 150.0, n), 30.0),
        "true_id": truth["track_id"].to_numpy()})
    return det.sample(frac=1.0, random_state=seed).reset_index(drop=True), truth


def resolved(truth: pd.DataFrame, min_sep: float) -> np.ndarray:
    """False for spots within ``min_sep`` px of a brighter spot of the same frame."""
    keep = np.ones(len(truth), bool)
    frame, amp = truth["frame"].to_numpy(), truth["A_clathrin"].to_numpy()
    xy = truth[["x", "y"]].to_numpy()
    for f in np.unique(frame):
        rows = np.flatnonzero(frame == f)
        pairs = cKDTree(xy[rows]).query_pairs(min_sep, output_type="ndarray")
        if len(pairs):
            i, j = rows[pairs[:, 0]], rows[pairs[:, 1]]
            keep[np.where(amp[i] < amp[j], i, j)] = False
    return keep


def whole_split_merged(linked: pd.DataFrame, min_len: int = 5) -> dict:
    """From the exact truth ids: true tracks (>= ``min_len`` detections) whose largest predicted
    track holds >= 80 % of them (whole), that fall into > 1 predicted track (split), and
    predicted tracks (>= ``min_len`` detections) holding detections of > 1 true track (merged)."""
    size = linked.groupby("true_id").size()
    true_ids = size.index[size >= min_len]
    kept = linked[linked["true_id"].isin(true_ids) & (linked["track_id"] >= 0)]
    pieces = kept.groupby(["true_id", "track_id"]).size()
    largest = pieces.groupby(level=0).max().reindex(true_ids, fill_value=0)
    n_pieces = pieces.groupby(level=0).size().reindex(true_ids, fill_value=0)
    pred = linked[linked["track_id"] >= 0]
    psize = pred.groupby("track_id").size()
    long_pred = pred[pred["track_id"].isin(psize.index[psize >= min_len])]
    n_true_in = long_pred.groupby("track_id")["true_id"].nunique()
    return {"whole": float((largest >= 0.8 * size[true_ids]).mean()), "split": float((n_pieces > 1).mean()),
            "merged": float((n_true_in > 1).mean()), "n_true": len(true_ids)}


@pytest.fixture(scope="module")
def dense_slow():
    return dense_truth_detections(diffusion=0.04, seed=5)  # the simulator's D of pits, 0.04 px^2/s


@pytest.fixture(scope="module")
def dense_mobile():
    return dense_truth_detections(diffusion=0.156, seed=6)  # 0.001 um^2/s at 80 nm/px


@pytest.mark.parametrize("scene", ["dense_slow", "dense_mobile"])
def test_dense_scenes_are_realistic(scene, request):
    det, _ = request.getfixturevalue(scene)
    per_px2 = det.groupby("frame").size().mean() / 256 ** 2
    assert 0.0024 <= per_px2 <= 0.0037  # cme.md: 0.0017-0.0037 spots/px^2 in real cells


# measured (seeds 5 and 6, 100 frames): slow whole 0.960 merged 0.071 (0.962 / 0.057 without
# local_density); mobile whole 0.926 merged 0.084 (0.922 / 0.077) (trackpy, 3 px, memory 2:
# whole 0.899, split 0.189, merged 0.103)
@pytest.mark.parametrize("scene, whole_min, merged_max", [("dense_slow", 0.93, 0.075), ("dense_mobile", 0.89, 0.10)])
def test_utrack_recovers_dense_tracks(scene, whole_min, merged_max, request):
    det, truth = request.getfixturevalue(scene)
    out = link(det, {"tracking": {"linker": "utrack", "memory": 3}})
    r = whole_split_merged(out)
    assert r["n_true"] > 400
    assert r["whole"] >= whole_min and r["merged"] <= merged_max, r
    # the matching-based metric of accuracy.py agrees (matches by position within 2 px)
    t = acc.track_metrics(out, truth, acc.match_detections(out, truth))
    assert t["recovered_fraction"] >= whole_min - 0.01
    if scene == "dense_mobile":
        # trackpy with its fixed 3 px range (the old default) splits and merges more
        old = whole_split_merged(link(det, {"tracking": {"linker": "trackpy"}}))
        assert old["split"] > r["split"] + 0.02 and old["merged"] > r["merged"] + 0.01, (old, r)


def _pit(frames, x, y, amp, step=0.0, seed=0):
    """One pit: rows (frame, x, y, A); Brownian steps of sd ``step`` px per axis and frame."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, step, (len(frames), 2)), axis=0) if step else np.zeros((len(frames), 2))
    walk -= walk[0]  # starts at (x, y)
    return pd.DataFrame({"frame": list(frames), "x": x + walk[:, 0], "y": y + walk[:, 1], "A": float(amp)})


def _background_pits(n=30, seed=1):
    """Distractors: immobile pits on a 20 px grid away from the test pits (x >= 60)."""
    return pd.concat([_pit(range(30), 60 + 20 * (k % 6), 10 + 20 * (k // 6), 1500, 0.3, seed + k)
                      for k in range(n)], ignore_index=True)


def test_utrack_closes_blinks_of_one_and_two_frames():
    a = _pit([t for t in range(30) if t != 10], 10, 10, 2000, 0.3, seed=3)          # 1-frame blink
    b = _pit([t for t in range(30) if t not in (12, 13)], 30, 10, 1000, 0.3, seed=4)  # 2-frame blink
    det = pd.concat([a.assign(pit=0), b.assign(pit=1), _background_pits().assign(pit=-1)], ignore_index=True)
    out = link(det, {"tracking": {"linker": "utrack", "memory": 2}})
    for pit in (0, 1):
        assert out.loc[out["pit"] == pit, "track_id"].nunique() == 1
    assert out["track_id"].nunique() == 32


@pytest.mark.parametrize("amp2, joined", [(1200.0, False), (3000.0, True)])
def test_utrack_does_not_join_different_pits_ending_and_starting_nearby(amp2, joined):
    # a mobile pit (0.6 px/frame per axis) ends at frame 14; 2 px from its last position a
    # second pit starts 2 frames later: within the first's motion radius, so only the
    # amplitude tells them apart (3000 vs 1200 ADU). With equal amplitudes the two are taken
    # for one pit that blinked and are joined.
    first = _pit(range(15), 10, 40, 3000, 0.6, seed=7)
    x_end, y_end = first["x"].iloc[-1], first["y"].iloc[-1]
    second = _pit(range(16, 30), x_end + 2.0, y_end, amp2, 0.6, seed=8)
    det = pd.concat([first.assign(pit=0), second.assign(pit=1), _background_pits().assign(pit=-1)],
                    ignore_index=True)
    out = link(det, {"tracking": {"linker": "utrack", "memory": 2}})
    ids = out.loc[out["pit"] >= 0].groupby("pit")["track_id"].agg(["nunique", "first"])
    assert (ids["nunique"] == 1).all()
    assert (ids.loc[0, "first"] == ids.loc[1, "first"]) == joined


def test_utrack_immobile_pits_two_px_apart_are_not_joined_without_amplitudes():
    # immobile pits (0.1 px jitter): a 2 px jump across a 1-frame gap is far outside the
    # motion model (radius = min_search_radius 1 px x sqrt(2)), whatever the amplitudes
    first = _pit(range(15), 10, 40, 2000, 0.1, seed=9).drop(columns="A")
    second = _pit(range(16, 30), first["x"].iloc[-1] + 2.0, first["y"].iloc[-1], 2000, 0.1, seed=10).drop(columns="A")
    out = link(pd.concat([first, second], ignore_index=True), {"tracking": {"linker": "utrack"}})
    assert out["track_id"].nunique() == 2
    # 0.5 px apart it is a blink of one pit
    second["x"] -= 1.5
    out = link(pd.concat([first, second], ignore_index=True), {"tracking": {"linker": "utrack"}})
    assert out["track_id"].nunique() == 1


def _alternating_pair(gap_p: int = 11, gap_q: int = 10) -> pd.DataFrame:
    """Two immobile pits 2.75 px apart (P 2000 ADU, Q 1800 ADU, frames 0-29) that detection
    sees one at a time for two frames: Q is missed in frame ``gap_q``, P in frame ``gap_p``."""
    p = _pit([t for t in range(30) if t != gap_p], 10, 40, 2000, 0.05, seed=21)
    q = _pit([t for t in range(30) if t != gap_q], 12.75, 40, 1800, 0.05, seed=22)
    return pd.concat([p.assign(pit=0), q.assign(pit=1), _background_pits().assign(pit=-1)], ignore_index=True)


@pytest.mark.parametrize("frame_memory, pieces", [(1, 1), (0, 2)])
def test_utrack_frame_memory_keeps_alternately_detected_neighbours_apart(frame_memory, pieces):
    # Frame 10 holds P only, frame 11 Q only. Linking strictly frame to frame, P's frame-10
    # detection can only reach Q's frame-11 one (2.75 px, inside the 4 px density radius of a
    # lone spot) and takes it; Q's track, which ended at frame 9, and P's frames from 12 on
    # are too far apart to close (immobile pits: radius 1 px x sqrt(3)), so P is cut in two
    # and half of Q is on P's track. With frame_memory 1, Q's frame-9 end still competes
    # for frame 11 (0.1 px, cost ~0.01 x 1.5 against 2.75^2 x 1.5) and P's frame-10 end for
    # frame 12, so each pit keeps one track.
    det = _alternating_pair()
    out = link(det, {"tracking": {"linker": "utrack", "frame_memory": frame_memory}})
    pieces_p = out.loc[out["pit"] == 0, "track_id"].nunique()
    assert pieces_p == pieces
    shared = set(out.loc[out["pit"] == 0, "track_id"]) & set(out.loc[out["pit"] == 1, "track_id"])
    assert bool(shared) == (frame_memory == 0)
    assert out["track_id"].nunique() == 30 + (2 if frame_memory else 3)  # the 30 distractors: one track each


@pytest.mark.parametrize("cap, linked", [(2.0, False), (3.0, True)])
def test_frame_links_memory_reach_is_capped(cap, linked):
    # an open end at frame 0 (nothing in frame 1) and a spot 2.5 px away in frame 2: inside
    # the motion radius x sqrt(2) (2.5 x 1.41 px), so only the cap decides.
    p = np.array([[10.0, 10.0], [50.0, 50.0], [12.5, 10.0]])
    bounds = np.array([0, 1, 2, 3])  # frames 0, 1, 2 hold rows 0, 1, 2
    radius = np.full(3, 2.5)
    nxt = _frame_links(p, bounds, radius, memory=1, memory_radius=cap, gap_radius=radius)
    assert nxt[1] == -1
    assert (nxt[0] == 2) == linked
    assert (_frame_links(p, bounds, radius) == -1).all()  # no memory: frame-to-frame only


@pytest.mark.parametrize("amp_weight", [0.0, 4.0])
def test_frame_links_memory_needs_a_plausible_amplitude_ratio(amp_weight):
    # an open end at frame 0 (1,000 ADU) and a spot 1 px away in frame 2: joined at 2,500 ADU
    # (ratio 2.5), not at 5,000 (ratio 5 > ratio_max 3), with or without amplitudes in the cost
    p = np.array([[10.0, 10.0], [50.0, 50.0], [11.0, 10.0]])
    bounds = np.array([0, 1, 2, 3])
    radius = np.full(3, 2.5)
    for a2, linked in ((2500.0, True), (5000.0, False)):
        nxt = _frame_links(p, bounds, radius, np.array([1000.0, 1000.0, a2]), amp_weight, memory=1,
                           memory_radius=2.0, gap_radius=radius, ratio_max=3.0)
        assert (nxt[0] == 2) == linked
    # a one-frame link is not gated by the ratio
    nxt = _frame_links(p[[0, 2]], np.array([0, 1, 2]), radius[:2], np.array([1000.0, 5000.0]), amp_weight,
                       ratio_max=3.0)
    assert nxt[0] == 1


def test_search_radii_count_a_step_across_a_missed_frame_per_frame():
    # track A steps 1 px per frame (frames 0, 1, 2); track B steps 1.41 px across one missed
    # frame (frames 0 -> 2): 1 px^2 per frame like A's. Each segment's mean squared step is
    # shrunk towards the movie's (median 1 / ln 2) with the weight of 3 steps.
    p = np.array([[0.0, 0.0], [20.0, 0.0], [1.0, 0.0], [2.0, 0.0], [21.0, 1.0]])
    f = np.array([0, 0, 1, 2, 2])
    nxt = np.array([2, 4, 3, -1, -1])
    radius, seg, ms, n_steps, ms_glob = _search_radii(p, f, nxt, TrackingConfig())
    g = 1.0 / np.log(2.0)
    assert ms_glob == pytest.approx(g) and n_steps.tolist() == [2.0, 1.0]
    assert ms == pytest.approx([(2.0 + 3 * g) / 5, (1.0 + 3 * g) / 4])  # B counted as 2 px^2: (2 + 3 g) / 4
    assert radius == pytest.approx(3.0 * np.sqrt(ms[seg]))


def _released_vesicle(jump: float, seed: int = 11) -> pd.DataFrame:
    """An immobile pit (0.1 px jitter) for 20 frames whose released vesicle jumps ``jump`` px
    in +y at frame 20 and then diffuses (0.7 px per axis and frame, D = 0.5 px^2/s)."""
    pit = _pit(range(20), 10, 10, 3000, 0.1, seed=seed)
    vesicle = _pit(range(20, 26), pit["x"].iloc[-1], pit["y"].iloc[-1] + jump, 2500, 0.7, seed=seed + 1)
    return pd.concat([pit, vesicle], ignore_index=True)


def test_utrack_local_density_keeps_a_lone_vesicle_jump_in_its_track():
    # the pit's own steps give a motion radius of ~1 px (min_search_radius); alone in its
    # neighbourhood (next pit >= 20 px away) its radius widens to density_max_radius (4 px)
    det = pd.concat([_released_vesicle(3.5).assign(pit=0), _background_pits().assign(pit=-1)], ignore_index=True)
    out = link(det, {"tracking": {"linker": "utrack"}})
    assert out.loc[out["pit"] == 0, "track_id"].nunique() == 1
    off = link(det, {"tracking": {"linker": "utrack", "local_density": False}})
    assert off.loc[off["pit"] == 0, "track_id"].nunique() == 2
    # beyond density_max_radius the jump is not linked
    far = pd.concat([_released_vesicle(5.0).assign(pit=0), _background_pits().assign(pit=-1)], ignore_index=True)
    assert link(far, {"tracking": {"linker": "utrack"}}).loc[lambda d: d["pit"] == 0, "track_id"].nunique() == 2


def test_utrack_local_density_does_not_widen_crowded_pits():
    # the same 3.5 px jump next to an immobile neighbour 3 px away: room = 3 / 2 = 1.5 px, so
    # the jump stays outside the radius and the neighbour keeps its own single track
    neighbour = _pit(range(26), 13, 10, 3000, 0.1, seed=12)
    det = pd.concat([_released_vesicle(3.5).assign(pit=0), neighbour.assign(pit=1),
                     _background_pits().assign(pit=-1)], ignore_index=True)
    out = link(det, {"tracking": {"linker": "utrack"}})
    assert out.loc[out["pit"] == 0, "track_id"].nunique() == 2
    assert out.loc[out["pit"] == 1, "track_id"].nunique() == 1
    assert set(out.loc[out["pit"] == 1, "track_id"]).isdisjoint(out.loc[out["pit"] == 0, "track_id"])


def _blending_neighbour() -> pd.DataFrame:
    """An immobile pit P (4000 ADU, frames 0-29) and a dimmer neighbour N rising 1.4 px from it
    (frames 11-15). At frame 15 the mixture fit shares P's amplitude with N (P 2000 ADU); from
    frame 16 the two blend into one spot 0.7 px from either, as bright as both (5000 ADU)."""
    p = _pit(range(16), 10, 10, 4000, 0.05, seed=13)
    p.loc[p["frame"] == 15, "A"] = 2000.0
    n = _pit(range(11, 16), 10, 8.6, 0, 0.05, seed=14).assign(A=[800.0, 1500.0, 2000.0, 3000.0, 3100.0])
    blend = _pit(range(16, 30), 10, 9.3, 5000, 0.05, seed=15)
    return pd.concat([p.assign(pit=0), n.assign(pit=1), blend.assign(pit=2)], ignore_index=True)


@pytest.mark.parametrize("frames, p_keeps_spot", [(3, True), (1, False)])
def test_utrack_track_amplitude_keeps_a_pit_whose_fit_dipped_for_a_frame(frames, p_keeps_spot):
    # frame 15 -> 16, both candidates 0.7 px away. By the last amplitudes (P 2000, N 3100)
    # the bright blended spot costs P (5000 / 2000)^4 = 39 x 0.49 and N (5000 / 3100)^4 = 6.8
    # x 0.49, so N takes it; by the means of the last 3 detections (P 3333, N 2700) P costs
    # 5.1 x 0.49 and N 11.8 x 0.49, so P keeps its spot and N ends.
    det = pd.concat([_blending_neighbour(), _background_pits().assign(pit=-1)], ignore_index=True)
    out = link(det, {"tracking": {"linker": "utrack", "amplitude_frames": frames}})
    track = out.groupby("pit")["track_id"].agg(["nunique", "first"])
    assert (track.loc[[0, 1, 2], "nunique"] == 1).all()
    assert (track.loc[2, "first"] == track.loc[0, "first"]) == p_keeps_spot
    assert (track.loc[2, "first"] == track.loc[1, "first"]) == (not p_keeps_spot)


def test_utrack_merge_split_links_a_split_and_keeps_segments():
    rows = [(t, 10.0, 10.0, 2000.0) for t in range(10)]                       # parent, frames 0-9
    rows += [(t, 10.0 + 0.6 * (t - 4), 10.0, 1000.0) for t in range(5, 10)]  # splits off at frame 5
    det = pd.DataFrame(rows, columns=["frame", "x", "y", "A"])
    out = link(det, {"tracking": {"linker": "utrack", "merge_split": True}})
    assert out.loc[:9, "track_id"].nunique() == 1 and out.loc[10:, "track_id"].nunique() == 1
    assert out.loc[0, "track_id"] != out.loc[10, "track_id"]
    assert out["compound_id"].nunique() == 1
    plain = link(det, {"tracking": {"linker": "utrack"}})
    assert plain["track_id"].nunique() == 2 and (plain["compound_id"] == plain["track_id"]).all()


def test_utrack_handles_empty_frames_and_missing_amplitudes():
    det = pd.DataFrame({"frame": [0, 1, 5, 6], "x": [1.0, 1.2, 50.0, 50.1], "y": [1.0, 1.1, 5.0, 5.0]})
    out = link(det, {"tracking": {"linker": "utrack"}})
    assert out["track_id"].tolist() == [0, 0, 1, 1]
    det["A"] = [100.0, np.nan, -5.0, 200.0]  # missing/invalid amplitudes leave the cost unscaled
    assert link(det, {"tracking": {"linker": "utrack"}})["track_id"].tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("bad", [{"min_search_radius": 5.0, "max_search_radius": 2.0}, {"brown_std_mult": 0},
                                 {"motion_passes": 0}, {"gap_penalty": 0.5}, {"amplitude_ratio_max": 0.9},
                                 {"amplitude_weight": -1}, {"linker": "u-track"}, {"closest_distance_scale": 0},
                                 {"density_max_radius": -1.0}, {"amplitude_frames": 0}, {"amplitude_frames": 2.5},
                                 {"amplitude_frames": True}, {"frame_memory": -1}, {"frame_memory": 1.5},
                                 {"frame_memory": True}, {"frame_memory_radius": 0}])
def test_utrack_config_validation(bad):
    with pytest.raises(InputError):
        TrackingConfig.from_dict({"linker": "utrack", **bad})


def test_link_rejects_non_finite_positions():
    with pytest.raises(InputError, match="non-finite"):
        link(pd.DataFrame({"frame": [0, 1], "x": [1.0, np.nan], "y": [1.0, 1.0]}), {"tracking": {"linker": "utrack"}})


def test_oracle_link_takes_the_true_track_of_each_matched_detection():
    """Hand case: true tracks 7 and 3 over frames 0-2 (3 missed in frame 1), a false detection
    3 px from any pit and one 2.5 px off its pit (beyond max_dist): matched rows share their true
    track, the others are tracks of their own, ids numbered by first appearance."""
    truth = pd.DataFrame({"frame": [0, 1, 2, 0, 1, 2], "x": [10.0, 10.2, 10.1, 30.0, 30.0, 30.1],
                          "y": [10.0, 10.0, 10.3, 30.0, 30.2, 30.0], "track_id": [7, 7, 7, 3, 3, 3],
                          "A_clathrin": [900.0, 950, 800, 1200, 1100, 1000]})
    det = pd.DataFrame({"frame": [2, 0, 0, 1, 2, 0, 1],
                        "x": [30.4, 30.3, 9.8, 10.0, 10.1, 40.0, 32.7],
                        "y": [30.0, 29.8, 10.1, 10.3, 10.0, 40.0, 30.2]})
    out = acc.oracle_link(det, truth)
    # frame order: rows 1 (pit 3), 2 (pit 7), 5 (false) in frame 0; 3 (pit 7), 6 (off) in 1; 0, 4 in 2
    assert out["track_id"].tolist() == [0, 0, 1, 1, 1, 2, 3]
    assert out["compound_id"].tolist() == out["track_id"].tolist()
    assert out[["frame", "x", "y"]].equals(det)  # the input is copied, not changed
    assert "track_id" not in det
