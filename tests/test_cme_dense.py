"""CME movies -> tracks at real pit densities (issue 13), scored against the simulator's truth.

The first tests check the scores themselves (``accuracy.neighbour_distance``,
``detection_scores``, ``track_scores``, ``score_movie``) on hand-made tables and on oracle
predictions built from the truth. The last ones run the ingest's path (``detect_movie`` ->
``link`` -> ``process_tracks``) on simulated cells at 0.0029 pits/px^2 (the issue's density,
inside the real 0.0017-0.0037) with the PSF of the issue's simulator (1.45 px) and the real
one (1.2 px clathrin, 1.1 px auxilin), and assert the issue's "done when" goals: recall >= 0.97
of spots with SNR >= 10 (also with a neighbour 3-5 px away), precision >= 0.98, >= 0.90 of bright
true tracks whole, <= 0.05 of project tracks merged, auxilin sensitivity >= 0.90 at <= 0.05
false positives, also for tracks longer than 80 s (a 300-frame cell). These fixed cells guard
against regressions; they are not the measure of the auxilin goals: one cell's rates carry a
standard error of 0.01-0.02, and pooled over independent cells (``benchmarks/bench_cme_detect.py``,
replicate cells) the false-positive goals are not met.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest

from domains.cme.tracking import accuracy as acc
from domains.cme.tracking import simulate as sim

DENSITY = 0.0029


# ----------------------------------------------------------------------------- the scores, by hand


def test_neighbour_distance_by_hand():
    truth = pd.DataFrame({"frame": [0, 0, 0, 1], "x": [0.0, 3.0, 10.0, 5.0], "y": [0.0, 4.0, 0.0, 5.0]},
                         index=[7, 3, 9, 1])
    np.testing.assert_allclose(acc.neighbour_distance(truth), [5.0, 5.0, math.hypot(7, 4), np.inf])


def test_detection_scores_by_hand():
    # frame 0: bright isolated A, bright pair B-C 4 px apart, bright close pair D-E 2 px apart,
    # a dim isolated F; detections of A, B, D and one false positive
    truth = pd.DataFrame({"frame": 0, "x": [10.0, 30.0, 34.0, 50.0, 52.0, 70.0], "y": 10.0,
                          "snr_clathrin": [20.0, 12.0, 12.0, 15.0, 15.0, 2.0]})
    pred = pd.DataFrame({"frame": 0, "x": [10.3, 29.8, 50.1, 90.0], "y": [10.4, 10.0, 10.0, 10.0]})
    s = acc.detection_scores(pred, truth)
    assert (s["precision"], s["recall"], s["recall_bright"]) == (0.75, 0.5, 0.6)
    assert (s["n_bright_isolated"], s["n_bright_pair"], s["n_bright_close"]) == (1, 2, 2)
    assert (s["recall_bright_isolated"], s["recall_bright_pair"], s["recall_bright_close"]) == (1.0, 0.5, 0.5)
    assert s["rmse_px"] == pytest.approx(math.sqrt((0.5 ** 2 + 0.2 ** 2 + 0.1 ** 2) / 3))
    # a neighbour outside the scored cut still counts when nn comes from the whole frame
    cut = truth.iloc[:2]
    assert acc.detection_scores(pred, cut, nn=acc.neighbour_distance(truth)[:2])["n_bright_pair"] == 1
    assert acc.detection_scores(pred, cut)["n_bright_pair"] == 0


def _rows(track: int, frames, x: float) -> pd.DataFrame:
    return pd.DataFrame({"track_id": track, "frame": list(frames), "x": x, "y": 10.0})


def test_track_scores_by_hand():
    """Whole, split, merged, lifetime and auxilin scores of a hand-made case."""
    truth = pd.concat([_rows(1, range(10), 10), _rows(2, range(10), 30), _rows(3, range(5), 50),
                       _rows(4, range(6, 12), 51), _rows(5, range(10), 70), _rows(6, range(3), 90)],
                      ignore_index=True)
    truth_tracks = pd.DataFrame({
        "track_id": [1, 2, 3, 4, 5, 6], "visibility": 1, "class": "productive",
        "aux_positive": [True, True, False, True, False, False],
        "lifetime_frames": [10, 10, 5, 6, 10, 3], "snr_max_clathrin": [20, 20, 20, 20, 20, 3.0]})
    rows = pd.concat([
        _rows(11, range(10), 10.1),                          # true track 1 whole
        _rows(12, range(5), 30.1), _rows(13, range(5, 10), 30.1),  # true track 2 split in two halves
        _rows(14, range(5), 50.1), _rows(14, [5], 50.5),     # true tracks 3 and 4 merged (gap row at 5)
        _rows(14, range(6, 12), 51.1),
        _rows(15, range(9), 70.1)], ignore_index=True)      # true track 5: 9 of 10 frames
    tracks = pd.DataFrame({"track_id": [11, 12, 13, 14, 15], "n_frames": [10, 5, 5, 12, 9],
                           "aux_positive": [True, False, True, True, False]})
    s = acc.track_scores(rows, tracks, truth, truth_tracks, long_frames=7)
    assert s["n_bright_tracks"] == 5  # the 3-frame dim track 6 is left out
    assert s["whole_fraction"] == s["whole_fraction_detected"] == 0.8  # all but track 2
    assert s["split_fraction"] == 0.2 and s["pieces_per_track"] == pytest.approx(1.2)
    # dominant tracks: 11, 12 (tie 5/5 -> lower id), 14 (twice), 15 -> one merged of four
    assert (s["n_project_tracks"], s["merged_fraction"]) == (4, 0.25)
    # lifetime errors 0, -5, +7, +6, -1
    assert s["lifetime_error_median"] == 0 and s["lifetime_error_iqr"] == [-1.0, 6.0]
    assert s["lifetime_error_mae"] == pytest.approx(19 / 5) and s["lifetime_within_3_frames"] == 0.4
    # aux+: tracks 1 (via 11, flagged), 2 (via 12, not), 4 (via 14, flagged); aux-: 3 (via 14, flagged), 5 (not)
    assert (s["n_aux_positive"], s["n_aux_negative"]) == (3, 2)
    assert s["aux_sensitivity"] == pytest.approx(2 / 3) and s["aux_false_positive_rate"] == 0.5
    assert (s["n_aux_positive_long"], s["n_aux_negative_long"]) == (2, 1)
    assert (s["aux_sensitivity_long"], s["aux_false_positive_rate_long"]) == (0.5, 0.0)
    # by peak SNR: all five scored tracks are bright (SNR 20); the dim ones are none
    assert (s["n_aux_positive_bright"], s["n_aux_negative_bright"], s["n_aux_positive_dim"]) == (3, 2, 0)
    assert s["aux_sensitivity_bright"] == pytest.approx(2 / 3) and np.isnan(s["aux_sensitivity_dim"])
    dim4 = truth_tracks.assign(snr_max_clathrin=[20, 20, 20, 6.0, 4.0, 3.0])  # tracks 4 (aux+) and 5 (aux-) dim
    s = acc.track_scores(rows, tracks, truth, dim4, long_frames=7)
    assert (s["n_aux_positive_bright"], s["n_aux_negative_bright"]) == (2, 1)
    assert (s["aux_sensitivity_bright"], s["aux_false_positive_rate_bright"]) == (0.5, 1.0)
    assert (s["aux_sensitivity_dim"], s["aux_false_positive_rate_dim"]) == (1.0, 0.0)
    assert s["aux_sensitivity"] == pytest.approx(2 / 3)  # the split leaves the totals alone
    # hotspots are not scored for auxilin; an unmatched true track counts as not flagged
    hot = truth_tracks.assign(**{"class": ["hotspot"] + ["productive"] * 5})
    assert acc.track_scores(rows, tracks, truth, hot)["n_aux_positive"] == 2
    s = acc.track_scores(rows[rows["track_id"] != 11], tracks, truth, truth_tracks)
    assert s["aux_sensitivity"] == pytest.approx(1 / 3) and s["whole_fraction"] == 0.6


def test_aux_miss_causes_by_hand():
    """Each cause of a missed long aux+ label on a hand-made case (true tracks of 10 frames, 'long' > 7)."""
    truth = pd.concat([_rows(t, range(10), x) for t, x in
                       ((1, 10), (2, 30), (3, 50), (4, 53), (5, 70), (6, 90), (7, 110), (8, 130), (9, 150))],
                      ignore_index=True)
    truth = truth[(truth["track_id"] != 9) | (truth["frame"] < 5)]  # true track 9: 5 frames, not long
    truth_tracks = pd.DataFrame({
        "track_id": range(1, 10), "visibility": 1, "class": "productive",
        "aux_positive": [True, True, True, False, True, True, True, True, True],
        "lifetime_frames": [10] * 8 + [5], "snr_max_clathrin": [20, 6.0, 20, 20, 20, 20, 20, 20, 20]})
    neighbour = _rows(15, range(10), 53.1)
    neighbour.loc[neighbour["frame"] >= 7, "x"] = 50.2  # takes true track 3's last frames
    rows = pd.concat([
        _rows(11, range(9), 10.1),                           # 1: reaches the end (8 >= 9 - 2), not labelled
        _rows(12, range(6), 30.1), _rows(13, range(6, 10), 30.1),  # 2: goes on in a new track
        _rows(14, range(7), 50.1), neighbour,                # 3: taken by the neighbour's running track
        _rows(16, range(5), 70.1),                           # 5: detected later, in no track
        _rows(17, range(5), 90.1),                           # 6: not detected after frame 4
        _rows(18, range(10), 130.1),                         # 8: labelled, not missed
        _rows(19, range(5), 150.1)], ignore_index=True)      # 9: not long
    tracks = pd.DataFrame({"track_id": range(11, 20), "n_frames": 10,
                           "aux_positive": [False, False, True, False, False, False, False, True, False]})
    detections = pd.concat([rows, _rows(-1, range(7, 10), 70.2)], ignore_index=True)
    m = acc.aux_miss_causes(rows, tracks, truth, truth_tracks, detections, long_frames=7)
    assert m["track_id"].tolist() == [1, 2, 3, 5, 6, 7]
    assert m["cause"].tolist() == ["label", "new_track", "taken", "not_tracked_after", "not_detected_after",
                                   "untracked"]
    assert m["snr_max_clathrin"].tolist() == [20, 6.0, 20, 20, 20, 20]
    np.testing.assert_array_equal(m["dominant_last_frame"], [8, 5, 6, 4, 4, np.nan])
    assert (m["true_last_frame"] == 9).all()
    # the same numbers as track_scores' misses, and by cause in score_movie's keys
    s = acc.track_scores(rows, tracks, truth, truth_tracks, long_frames=7)
    assert s["n_aux_positive_long"] * (1 - s["aux_sensitivity_long"]) == pytest.approx(len(m))
    # the end tolerance: with end_frames 0 the track ending one frame early has stopped before the end
    m0 = acc.aux_miss_causes(rows, tracks, truth, truth_tracks, detections, long_frames=7, end_frames=0)
    assert m0.loc[m0["track_id"] == 1, "cause"].item() == "not_detected_after"


def test_aux_false_positive_causes_by_hand():
    """Each cause of a long aux- track labelled aux+ on a hand-made case ('long' > 7 frames)."""
    truth = pd.concat([_rows(1, range(10), 10), _rows(2, range(10, 14), 10.2), _rows(3, range(10), 30),
                       _rows(4, range(10), 50), _rows(5, range(10), 51.5), _rows(6, range(10), 70),
                       _rows(7, range(5), 90)], ignore_index=True)
    truth["snr_auxilin"] = 0.0
    truth.loc[(truth["track_id"] == 2) & (truth["frame"] == 12), "snr_auxilin"] = 4.0  # 2 carries a burst
    truth.loc[(truth["track_id"] == 5) & (truth["frame"] == 3), "snr_auxilin"] = 0.5   # a faint tail beside 4
    puncta = pd.DataFrame({"track_id": [50, 51], "frame": [4, 4], "x": [33.0, 57.0], "y": 10.0,
                           "snr_auxilin": [3.0, 3.0]})                             # 3 px from 3; 7 px from 4
    truth_tracks = pd.DataFrame({
        "track_id": range(1, 8), "visibility": 1, "class": "abortive",
        "aux_positive": [False, True, False, False, False, False, False],
        "lifetime_frames": [10, 4, 10, 10, 10, 10, 5], "snr_max_clathrin": [20, 20, 6.0, 20, 20, 20, 20]})
    rows = pd.concat([_rows(11, range(14), 10.1),                      # 1, then 2: merged
                      _rows(13, range(10), 30.1), _rows(14, range(10), 50.1), _rows(15, range(10), 51.6),
                      _rows(16, range(10), 70.1), _rows(17, range(5), 90.1)], ignore_index=True)
    tracks = pd.DataFrame({"track_id": [11, 13, 14, 15, 16, 17], "n_frames": 10,
                           "aux_positive": [True, True, True, False, False, True]})
    fp = acc.aux_false_positive_causes(rows, tracks, truth, truth_tracks, pd.concat([truth, puncta]), long_frames=7)
    assert fp["track_id"].tolist() == [1, 3, 4] and fp["snr_max_clathrin"].tolist() == [20, 6.0, 20]
    assert fp["cause"].tolist() == ["merged", "neighbour", "no_auxilin_near"]
    s = acc.track_scores(rows, tracks, truth, truth_tracks, long_frames=7)
    assert s["n_aux_negative_long"] * s["aux_false_positive_rate_long"] == pytest.approx(len(fp))
    # the tail counts once faint auxilin does; the punctum 7 px away once near_px reaches it
    assert acc.aux_false_positive_causes(rows, tracks, truth, truth_tracks, pd.concat([truth, puncta]),
                                         long_frames=7, min_snr=0.4)["cause"].tolist()[2] == "neighbour"
    far = acc.aux_false_positive_causes(rows, tracks, truth, truth_tracks, pd.concat([truth, puncta.iloc[1:]]),
                                        long_frames=7, near_px=7.5)
    assert far["cause"].tolist() == ["merged", "no_auxilin_near", "neighbour"]
    # one frame of the burst-carrying pit is not a merge (and its burst falls after the track)
    short = rows[(rows["track_id"] != 11) | (rows["frame"] <= 10)]
    one = acc.aux_false_positive_causes(short, tracks, truth, truth_tracks, pd.concat([truth, puncta]), long_frames=7)
    assert one["cause"].tolist()[0] == "no_auxilin_near"


@pytest.fixture(scope="module")
def truth_only() -> sim.SimulatedCell:
    cfg = sim.SimulationConfig(height=192, width=192, n_frames=150, density=DENSITY)
    return sim.simulate_cell(cfg, 4, render=False)


def _oracle(cell: sim.SimulatedCell, cut_halves: bool = False):
    """Project outputs that copy the truth: every clathrin spot detected at its true position,
    tracks = true tracks (or each cut into two halves), labels = the true aux+ label."""
    truth = cell.truth_detections[cell.truth_detections["A_clathrin"] > 0]
    rows = truth[["track_id", "frame", "x", "y"]].copy()
    if cut_halves:
        rank = truth.groupby("track_id")["frame"].rank(method="first") - 1
        n = truth.groupby("track_id")["frame"].transform("size")
        rows["track_id"] = 2 * rows["track_id"] + (rank >= (n + 1) // 2)  # the first half holds >= half the spots
    tracks = rows.groupby("track_id").agg(n_frames=("frame", "size")).reset_index()
    tt = cell.truth_tracks.set_index("track_id")["aux_positive"]
    tracks["aux_positive"] = tt.reindex(tracks["track_id"] // (2 if cut_halves else 1)).to_numpy()
    return rows.assign(part="track"), tracks


def test_score_movie_of_oracle_predictions(truth_only):
    """Copies of the truth score perfectly; the same tracks cut in halves are all split and
    none whole; a detector that misses every bright spot with a 3-5 px neighbour has exactly
    that recall gap."""
    cell = truth_only
    rows, tracks = _oracle(cell)
    kw = {"shape": (192, 192), "sigma": 1.2}
    s = acc.score_movie(cell.truth_detections, cell.truth_tracks, rows, project_tracks=tracks,
                        project_rows=rows, **kw)
    assert s["det_n_bright_pair"] > 300 and s["n_bright_tracks"] > 100 and s["n_aux_positive"] > 40
    for key in ("det_precision", "det_recall", "det_recall_bright", "det_recall_bright_pair",
                "det_recall_bright_close", "whole_fraction", "aux_sensitivity"):
        assert s[key] == 1.0, key
    for key in ("split_fraction", "merged_fraction", "aux_false_positive_rate", "det_rmse_px",
                "lifetime_error_mae"):
        assert s[key] == 0.0, key
    causes = [f"aux_miss_long_{c}" for c in acc.MISS_CAUSES]
    assert s["n_aux_positive_long"] >= 5 and not any(s[k] for k in causes)
    # the same tracks unlabelled: every long aux+ miss is the label's (the tracks reach the pits' ends)
    s = acc.score_movie(cell.truth_detections, cell.truth_tracks, rows,
                        project_tracks=tracks.assign(aux_positive=False), project_rows=rows, **kw)
    assert s["aux_miss_long_label"] == s["n_aux_positive_long"] == sum(s[k] for k in causes)
    halves, half_tracks = _oracle(cell, cut_halves=True)
    s = acc.score_movie(cell.truth_detections, cell.truth_tracks, halves, project_tracks=half_tracks,
                        project_rows=halves, **kw)
    assert s["whole_fraction"] == 0.0 and s["split_fraction"] == 1.0 and s["pieces_per_track"] == 2.0
    assert s["merged_fraction"] == 0.0 and not any(s[k] for k in causes)  # both halves carry the label
    # unlabelled halves: the first (dominant) half stops mid-pit and the pit goes on in the second
    s = acc.score_movie(cell.truth_detections, cell.truth_tracks, halves,
                        project_tracks=half_tracks.assign(aux_positive=False), project_rows=halves, **kw)
    assert s["aux_miss_long_new_track"] == s["n_aux_positive_long"] >= 5
    truth = cell.truth_detections[cell.truth_detections["A_clathrin"] > 0]
    nn = acc.neighbour_distance(truth)
    bright = truth["snr_clathrin"].to_numpy() >= 10
    miss = bright & (nn >= 3) & (nn < 5)
    s = acc.score_movie(cell.truth_detections, cell.truth_tracks, rows[~miss], **kw)
    assert s["det_recall_bright_pair"] == 0.0 and s["det_recall_bright_isolated"] == 1.0
    inside = acc.interior(truth, (192, 192), math.ceil(4 * 1.2)).index
    assert s["det_recall_bright"] == pytest.approx(1 - miss[truth.index.isin(inside)].sum()
                                                   / bright[truth.index.isin(inside)].sum())


# ----------------------------------------------------------------------------- the ingest at real density

#: (frame size, frames, clathrin PSF sigma, auxilin PSF sigma, seed, extra simulator settings).
#: "long": 300 frames so that complete tracks > 80 s exist; 60 % of its abortive pits live
#: log-normal(60 s, 0.5), so that aux- tracks > 80 s are numerous enough to score (real cells
#: have them: 6 % of 80-160 s tracks are aux-), at the same density. The three cells take
#: ~40 CPU s together.
CASES = {
    "psf1.45": (256, 64, 1.45, 1.45, 1, {}),
    "psf1.2": (256, 64, 1.2, 1.1, 2, {}),
    "long": (144, 300, 1.2, 1.1, 3, {"abortive_long_fraction": 0.6, "abortive_long_median_s": 60.0,
                                      "abortive_long_sigma": 0.5}),
}


@functools.lru_cache(maxsize=None)
def run_case(name: str) -> tuple[dict, sim.SimulatedCell]:
    """Simulate the case's cell, run detect -> link -> process with the true PSF, score it."""
    size, frames, s_cla, s_aux, seed, extra = CASES[name]
    cfg = sim.SimulationConfig(height=size, width=size, n_frames=frames, density=DENSITY,
                               mask_coverage=(1.0, 1.0), psf_sigma_clathrin=s_cla, psf_sigma_auxilin=s_aux, **extra)
    cell = sim.simulate_cell(cfg, seed)
    det, tracks, track_frames = acc.movie_to_tracks(
        cell.movie, {"detection": {"sigma_clathrin": s_cla, "sigma_aux": s_aux}}, threads=1)
    scores = acc.score_movie(cell.truth_detections, cell.truth_tracks, det, shape=(size, size), sigma=s_cla,
                             project_tracks=tracks, project_rows=track_frames)
    return scores, cell


@pytest.mark.parametrize("case", ["psf1.45", "psf1.2"])
def test_the_cells_hold_enough_crowded_bright_pits(case):
    """The scores below rest on hundreds of bright spot-frames with a 3-5 px neighbour and on
    about a hundred bright tracks (the density itself is tested in test_cme_simulate)."""
    s, cell = run_case(case)
    assert s["det_n_bright_pair"] >= 250 and s["det_n_bright_close"] >= 100 and s["n_bright_tracks"] >= 60


@pytest.mark.parametrize("case", ["psf1.45", "psf1.2"])
def test_detection_at_real_density(case):
    s, _ = run_case(case)
    report = {k: round(v, 3) for k, v in s.items() if k.startswith("det_") and isinstance(v, float)}
    assert s["det_precision"] >= 0.98, report
    assert s["det_recall_bright"] >= 0.97, report
    assert s["det_recall_bright_pair"] >= 0.97, report


@pytest.mark.parametrize("case", ["psf1.45", "psf1.2", "long"])
def test_tracks_at_real_density(case):
    """psf1.45 was 0.897 whole (104 of 116) while the auxilin fit could move 3 sigma_clathrin:
    tracks whose auxilin fit wandered within ceil(4 sigma) of the border were removed (16 of
    481 linked tracks, 3 with detection.slave_max_shift = 1); 0.905 (105 of 116) before the pair
    fits (tracking.pair_fits), 0.931 (108 of 116) with them."""
    s, _ = run_case(case)
    report = {k: s[k] for k in ("n_bright_tracks", "whole_fraction", "whole_fraction_detected", "split_fraction",
                                "pieces_per_track", "n_project_tracks", "merged_fraction")}
    assert s["whole_fraction"] >= 0.90, report
    assert s["merged_fraction"] <= 0.05, report


@pytest.mark.parametrize("case", ["psf1.45", "psf1.2", "long"])
def test_auxilin_false_positives_at_real_density(case):
    s, _ = run_case(case)
    report = {k: s[k] for k in s if "aux" in k}
    assert s["n_aux_positive"] >= 15 and s["n_aux_negative"] >= 40, report
    assert s["aux_false_positive_rate"] <= 0.05, report


@pytest.mark.parametrize("case", ["psf1.45", "psf1.2", "long"])
def test_auxilin_sensitivity_at_real_density(case):
    """psf1.45 was 37 of 42 (0.881) before the pair fits (tracking.pair_fits): a dim productive
    pit whose track ran on to a neighbour after its burst; 38 of 42 with them."""
    s, _ = run_case(case)
    report = {k: s[k] for k in s if "aux" in k}
    assert s["aux_sensitivity"] >= 0.90, report


def test_auxilin_labels_of_tracks_longer_than_80_s():
    """False positives 0 of 15 aux- tracks > 80 s (1 of 15 while the auxilin fit could move 3
    sigma_clathrin, cmeAnalysis' confinement; detection.slave_max_shift)."""
    s, _ = run_case("long")
    report = {k: s[k] for k in s if "aux" in k}
    assert s["n_aux_positive_long"] >= 10 and s["n_aux_negative_long"] >= 10, report
    assert s["aux_sensitivity_long"] >= 0.90, report
    assert s["aux_false_positive_rate_long"] <= 0.05, report
