"""CME linking (trackpy, laptrack) and the accuracy metrics, on hand-made detections and on
the simulator's ground truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from awd.io import InputError
from domains.cme.tracking import accuracy as acc
from domains.cme.tracking.detect import detect_movie
from domains.cme.tracking.link import TrackingConfig, link


def brownian_detections(n_tracks=25, n_frames=20, step=0.3, drop=(), seed=0):
    """Well-separated Brownian tracks on a 15 px grid; ``drop`` = (track, frame) pairs missed."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_tracks):
        x0, y0 = 10 + 15 * (k % 5), 10 + 15 * (k // 5)
        walk = np.cumsum(rng.normal(0, step, (n_frames, 2)), axis=0)
        for t in range(n_frames):
            if (k, t) not in drop:
                rows.append((t, x0 + walk[t, 0], y0 + walk[t, 1], k))
    det = pd.DataFrame(rows, columns=["frame", "x", "y", "true_id"])
    return det.sample(frac=1.0, random_state=1).reset_index(drop=True)  # order must not matter


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a, b))) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("linker", ["trackpy", "laptrack", "utrack"])
def test_linkers_recover_tracks_and_bridge_gaps(linker):
    drop = {(0, 5), (1, 7), (1, 8), (2, 3), (2, 4), (2, 5)}  # gaps of 1, 2 and 3 frames
    det = brownian_detections(drop=drop)
    out = link(det, {"tracking": {"linker": linker, "memory": 2}})
    assert len(out) == len(det) and (out["track_id"] >= 0).all()
    # memory 2 bridges gaps of 1-2 missed frames; the 3-frame gap splits track 2
    assert out["track_id"].nunique() == 26
    keep = out["true_id"] != 2
    assert same_partition(out.loc[keep, "track_id"].to_numpy(), out.loc[keep, "true_id"].to_numpy())
    assert out.loc[~keep].groupby("track_id")["frame"].agg(["min", "max"]).values.tolist() == [[0, 2], [6, 19]]
    assert (out["compound_id"] == out["track_id"]).all()
    no_memory = link(det, {"tracking": {"linker": linker, "memory": 0}})
    assert no_memory["track_id"].nunique() == 25 + 3
    # ids are numbered by first appearance
    first = out.groupby("track_id")["frame"].min()
    assert first.is_monotonic_increasing


def test_laptrack_merge_split_and_spurious_branches():
    rows = [(t, 10.0, 10.0) for t in range(10)]                       # parent, frames 0-9
    rows += [(t, 10.0 + 0.6 * (t - 4), 10.0) for t in range(5, 10)]  # splits off at frame 5
    rows += [(6, 10.0, 11.2)]                                         # one-frame spurious branch
    det = pd.DataFrame(rows, columns=["frame", "x", "y"])
    out = link(det, {"tracking": {"linker": "laptrack", "merge_split": True}})
    assert out.loc[15, "track_id"] == -1  # the one-frame branch is dropped
    parent = out.loc[:9, "track_id"]
    child = out.loc[10:14, "track_id"]
    assert parent.nunique() == 1 and child.nunique() == 1 and parent.iloc[0] != child.iloc[0]
    assert out.loc[:14, "compound_id"].nunique() == 1  # one compound track of two segments
    plain = link(det, {"tracking": {"linker": "laptrack", "merge_split": False}})
    assert plain["track_id"].nunique() == 3 and (plain["compound_id"] == plain["track_id"]).all()


def test_tracking_config_validation():
    assert TrackingConfig.from_dict({}).memory == 3
    with pytest.raises(InputError):
        TrackingConfig.from_dict({"linker": "btrack"})
    with pytest.raises(InputError):
        TrackingConfig.from_dict({"radius": 3})
    with pytest.raises(InputError):
        link(pd.DataFrame({"frame": [0], "x": [1.0]}), {})


def test_match_detections_is_globally_optimal():
    # greedy nearest-first would pair p1-t0 (0.5 px) and leave p0 unmatched; Hungarian pairs both
    pred = pd.DataFrame({"frame": [0, 0], "x": [0.0, 1.5], "y": [0.0, 0.0]})
    truth = pd.DataFrame({"frame": [0, 0, 1], "x": [1.0, 2.9, 0.0], "y": [0.0, 0.0, 0.0]})
    m = acc.match_detections(pred, truth, max_dist=2.0)
    assert sorted(zip(m["pred"], m["truth"])) == [(0, 0), (1, 1)]
    np.testing.assert_allclose(sorted(m["dist"]), [1.0, 1.4])
    r = acc.detection_metrics(pred.assign(A=1.0), truth.assign(A_clathrin=[100.0, 3000.0, 3000.0]), m)
    assert r["precision"] == 1.0 and r["recall"] == pytest.approx(2 / 3)
    assert [b["recall"] for b in r["recall_by_amplitude"] if b["n"]] == [1.0, 0.5]


def test_link_metrics_hand_example():
    # one true track seen in frames 0-4; the tracker splits it after frame 2 and links a false spot
    truth = pd.DataFrame({"frame": range(5), "x": 0.0, "y": 0.0, "track_id": 7})
    pred = pd.DataFrame({"frame": [0, 1, 2, 3, 4, 5], "x": 0.0, "y": 0.0, "track_id": [0, 0, 0, 1, 1, 1]})
    m = acc.match_detections(pred, truth)
    r = acc.link_metrics(pred, truth, m)
    # true links (0,1)(1,2)(2,3)(3,4); predicted (0,1)(1,2)(3,4)(4,5); (4,5) has an unmatched end
    assert (r["n_true_links"], r["n_pred_links"], r["n_correct"]) == (4, 4, 3)
    assert r["recall"] == 0.75 and r["precision"] == 1.0 and r["precision_all"] == 0.75
    t = acc.track_metrics(pred, truth, m)
    assert t["recovered_fraction"] == 0.0 and t["lifetime_error_median"] == -2.0  # 3 of 5 frames


@pytest.fixture(scope="module")
def simulated():
    from domains.cme.tracking.simulate import SimulationConfig, simulate_cell

    cell = simulate_cell(SimulationConfig.from_dict({"height": 160, "width": 160, "n_frames": 60}), 21)
    det = detect_movie(cell.movie, {}, threads=2)
    truth = cell.truth_detections[cell.truth_detections["A_clathrin"] > 0]
    return cell, det, truth


@pytest.mark.parametrize("linker", ["trackpy", "laptrack", "utrack"])
def test_link_accuracy_against_simulator_truth(simulated, linker):
    cell, det, truth = simulated
    linked = link(det, {"tracking": {"linker": linker}})
    m = acc.match_detections(linked, truth)
    r = acc.link_metrics(linked, truth, m)
    assert r["n_true_links"] > 1000
    assert r["recall"] >= 0.95 and r["precision"] >= 0.95
    t = acc.track_metrics(linked, truth, m)
    assert t["recovered_fraction"] >= 0.8
    assert abs(t["lifetime_error_median"]) <= 2
