"""CME track processing (cmeAnalysis categories, gaps, buffers), auxilin labels and the
40-point AWD traces: hand-built movies and tables, and the simulator's ground truth."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from awd.io import InputError
from domains.cme.tracking import accuracy as acc
from domains.cme.tracking.detect import detect_movie
from domains.cme.tracking.link import link
from domains.cme.tracking.processing import _prctile, process_tracks, to_napari_tracks, write_napari_tracks, write_tables
from domains.cme.traces import (AUX_THRESH_SD, LabelConfig, add_labels, aux_labels, aux_noise, build_traces,
                                burst_ends, clathrin_drop, downsample, purity_thresholds)


# ------------------------------------------------------------------ small pieces
def test_prctile_is_matlab_prctile():
    # MATLAB: prctile([1 2 3 4], [2.5 25 50]) = [1 1.5 2.5]; prctile(1:10, [5 95]) = [1 10]
    np.testing.assert_allclose(_prctile([1, 2, 3, 4], [2.5, 25, 50]), [1.0, 1.5, 2.5])
    np.testing.assert_allclose(_prctile(np.arange(1, 11), [5, 95]), [1.0, 10.0])
    assert np.isnan(_prctile([np.nan], 50))


def test_aux_labels_follow_the_reference_rules():
    p = np.ones(20)
    Y = np.arange(20.0) * 10
    p[[3, 4]] = 0.01
    lab = aux_labels(Y, p)
    assert lab["y_consec_sig"] and lab["aux_positive"] and not lab["hotspot"]
    assert lab["Y_sig_mean"] == pytest.approx(35.0) and lab["n_sig_aux"] == 2
    p = np.ones(20)
    p[[3, 7]] = 0.01  # significant but not consecutive
    lab = aux_labels(Y, p)
    assert not lab["y_consec_sig"] and not lab["aux_positive"] and lab["Y_sig_mean"] == pytest.approx(50.0)
    # 4 frames apart: consecutive only with consec_frames >= 4
    assert aux_labels(Y, p, consec_frames=4)["y_consec_sig"] and not aux_labels(Y, p, consec_frames=3)["y_consec_sig"]
    p = np.ones(20)
    p[[3, 5]] = 0.01  # 2 frames apart (one not significant between them): consecutive from consec_frames 2
    assert not aux_labels(Y, p)["aux_positive"]
    assert aux_labels(Y, p, consec_frames=2)["aux_positive"] and aux_labels(Y, p, consec_frames=3)["y_consec_sig"]
    lab = aux_labels(np.r_[Y[:-1], 1000.0], np.ones(20))  # no significant frame, max > 973
    assert lab["y_conservative_thresh"] and lab["aux_positive"] and lab["Y_sig_mean"] == 0.0
    # hotspot: >= 5 significant frames and consecutive pairs more than 2 apart in the list of
    # significant frames: sig idx [0 1 5 9 13 17 18] -> pairs at list positions 0 and 5
    p = np.ones(20)
    p[[0, 1, 5, 9, 13, 17, 18]] = 0.01
    assert aux_labels(Y, p)["hotspot"]
    p = np.ones(20)
    p[[0, 1, 2, 3, 15, 16]] = 0.01  # pair positions 0, 1, 2, 4: max step 2 -> not a hotspot
    assert not aux_labels(Y, p)["hotspot"]


def test_downsample_and_purity_thresholds():
    x = np.arange(45.0)
    ds, pad = downsample(x, 40)
    np.testing.assert_array_equal(ds, (44 * np.arange(40)) // 39)
    assert pad == 0 and ds[0] == 0 and ds[-1] == 44
    ds, pad = downsample(np.r_[1.0, np.nan, 2.0, 3.0], 40)
    assert pad == 37 and list(ds[:3]) == [1.0, 2.0, 3.0] and not ds[3:].any()
    life = np.array([3, 3, 4, 5, 5, 6, 8, 20, 30, 30, 40, 50])
    pos = np.array([0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1])
    # negatives among life <= L: 3 -> 1, 4 -> 1, 5 -> 0.8, 6 -> 0.83, 8 -> 0.71, ...
    # positives among life >= L: ..., 6 -> 0.71, 8 -> 0.83, 20 -> 0.8, 30 -> 0.75, 40 -> 1, 50 -> 1
    assert purity_thresholds(life, pos, 0.95) == (4.0, 40.0)
    assert purity_thresholds(life, pos, 0.75) == (6.0, 8.0)
    assert purity_thresholds([10, 20], [1, 0], 0.95) == (9.0, 21.0)  # none pure: nothing dropped


# ------------------------------------------------------------------ hand-built movie
def _spot(shape, x, y, amp, sigma):
    s2 = math.sqrt(2) * sigma
    r, c = np.arange(shape[0]), np.arange(shape[1])
    ex = 0.5 * (special.erf((c + 0.5 - x) / s2) - special.erf((c - 0.5 - x) / s2))
    ey = 0.5 * (special.erf((r + 0.5 - y) / s2) - special.erf((r - 0.5 - y) / s2))
    return amp * 2 * np.pi * sigma ** 2 * np.outer(ey, ex)


@pytest.fixture(scope="module")
def scenario():
    """64x64, 40 frames. A: complete, frames 10-25, one gap (15) it is visible in, auxilin
    burst 20-23; B: starts in frame 0; C: whole movie; D: invalid gaps (13-14, 16-17, spot
    absent there); E: a single frame; F: at the border; G: two events 3 px apart linked across
    an empty frame (15), which cmeAnalysis cuts into two tracks."""
    T, H, W = 40, 64, 64
    rng = np.random.default_rng(3)
    spots = {"A": (20.0, 20.0, 6000.0, range(10, 26)), "B": (42.0, 20.0, 2500.0, range(0, 13)),
             "C": (20.0, 44.0, 2500.0, range(0, 40)), "E": (44.0, 30.0, 2500.0, range(30, 31)),
             "F": (2.0, 30.0, 2500.0, range(5, 20)),
             "D": (44.0, 46.0, 2500.0, [*range(8, 13), 15, *range(18, 31)]),
             "G": (31.0, 8.0, 2500.0, range(5, 15)), "G2": (34.0, 8.0, 2500.0, range(16, 26))}
    data = np.empty((T, 2, H, W))
    data[:, 0] = 1450.0
    data[:, 1] = 1300.0
    det_rows = []
    for name, (x, y, amp, frames) in spots.items():
        for t in frames:
            data[t, 0] += _spot((H, W), x, y, amp, 1.2)
            if name != "A" or t != 15:
                det_rows.append({"frame": t, "x": x + rng.normal(0, 0.05), "y": y + rng.normal(0, 0.05),
                                 "name": name[0]})
    for t in range(20, 24):
        data[t, 1] += _spot((H, W), 20.2, 20.0, 2000.0, 1.1)
    data = np.round(data + rng.normal(0, 60, data.shape)).astype(np.uint16)
    movie = SimpleNamespace(data=data, frame_interval_s=1.0, pixel_size_um=0.08, name="hand", condition="test")
    # detections as detect_movie gives them, linked by construction
    det = detect_movie(movie, {})
    truth = pd.DataFrame(det_rows)
    m = acc.match_detections(det, truth, max_dist=1.0)
    det = det.loc[m["pred"]].reset_index(drop=True)
    names = truth.loc[m["truth"], "name"].to_numpy()
    ids = {n: i for i, n in enumerate("ABCDEFG")}
    det["track_id"] = [ids[n] for n in names]
    det["compound_id"] = det["track_id"]
    _, masks = detect_movie(movie, {}, return_masks=True)
    tracks, frames = process_tracks(det, movie, masks, {}, cell="c1", cell_mask=np.ones((H, W), bool))
    key = {int(t): n for t, n in zip(det["track_id"], names)}
    tracks["name"] = [key[t] for t in tracks["linked_track_id"]]
    frames = frames.merge(tracks[["track_id", "name"]], on="track_id")
    return tracks.set_index("name"), frames, movie


def test_process_tracks_categories_visibility_and_filters(scenario):
    tracks, frames, _ = scenario
    assert sorted(tracks.index) == ["A", "B", "C", "D", "G", "G"]  # E single-frame, F at the border
    g = tracks.loc["G"].sort_values("start_frame")  # cut at the empty frame between the two sites
    assert g[["start_frame", "end_frame"]].values.tolist() == [[5, 14], [16, 25]]
    assert (g["catIdx"] == 1).all() and (g["split_from"] == g["linked_track_id"]).all()
    assert np.abs(g["x_mean"].to_numpy() - [31.0, 34.0]).max() < 0.1
    assert tracks.loc["A", "catIdx"] == 1 and tracks.loc["A", "visibility"] == 1
    assert tracks.loc["B", "catIdx"] == 3 and tracks.loc["B", "visibility"] == 2
    assert tracks.loc["C", "catIdx"] == 4 and tracks.loc["C", "visibility"] == 3
    assert tracks.loc["D", "catIdx"] == 2 and not tracks.loc["D", "valid_gaps"]
    assert tracks.loc["D", "n_gaps"] == 4 and tracks.loc["A", "n_gaps"] == 1
    assert (tracks.loc["A", ["start_frame", "end_frame", "n_frames"]].tolist() == [10, 25, 16])
    assert tracks.loc["A", "lifetime_s"] == 16.0
    assert tracks.loc["A", "isCCP"]


def test_gap_and_buffer_refits(scenario):
    _, frames, _ = scenario
    a = frames[frames["name"] == "A"].set_index("frame")
    assert list(a.loc[a["part"] == "start_buffer"].index) == [5, 6, 7, 8, 9]
    assert list(a.loc[a["part"] == "end_buffer"].index) == [26, 27, 28, 29, 30]
    gap = a.loc[15]
    assert gap["gap"] and gap["part"] == "track"
    # the spot is in the image at the gap frame: the re-fit finds it at the track position
    assert gap["A_clathrin"] == pytest.approx(a.loc[[14, 16], "A_clathrin"].mean(), rel=0.1)
    assert gap["pval_Ar_clathrin"] < 1e-6 and abs(gap["x"] - 20.0) < 0.2
    buf = a[a["part"] != "track"]
    assert (buf["pval_Ar_clathrin"] > 0.05).mean() >= 0.8
    assert np.all(np.abs(buf["A_clathrin"]) < 500)
    d = frames[(frames["name"] == "D") & frames["gap"]]
    assert sorted(d["frame"]) == [13, 14, 16, 17] and (d["pval_Ar_clathrin"] > 0.05).all()


def test_auxilin_labels_and_slave_flags(scenario):
    tracks, frames, _ = scenario
    a = tracks.loc["A"]
    # the burst's first frame (20) lies before A's last 5 track frames (21-25) and A's clathrin
    # stays flat after it (it ends in frame 25): labels.aux_clathrin_drop leaves it out
    assert a["aux_positive"] and a["y_consec_sig"] and a["n_sig_aux"] == 3
    assert a["significantMaster_auxilin"] and a["significantSlave_auxilin"]
    aux = frames[(frames["name"] == "A") & (frames["part"] == "track")].set_index("frame")["A_auxilin"]
    assert a["Y_sig_mean"] == pytest.approx(aux.loc[21:23].mean())
    assert 1700 < a["Y_sig_mean"] < 2100  # 2,000 ADU burst, sampled-Gaussian fit
    ref = add_labels(tracks.reset_index(), frames, {"labels": {"aux_clathrin_drop": None}}).set_index("name")
    assert ref.loc["A", "n_sig_aux"] == 4 and ref.loc["A", "Y_sig_mean"] == pytest.approx(aux.loc[20:23].mean())
    for name in "BCD":  # no auxilin there: at most an isolated chance detection
        assert not tracks.loc[name, "aux_positive"] and tracks.loc[name, "n_sig_aux"] <= 1
    assert tracks.attrs["p_detection_auxilin"] < 0.01
    assert tracks.loc["A", "msd_max"] < 0.1 and tracks.loc["A", "total_displacement"] < 0.3


def test_napari_export_and_tables(scenario, tmp_path):
    tracks, frames, _ = scenario
    arr = to_napari_tracks(frames)
    core = frames[frames["part"] == "track"]
    assert arr.shape == (len(core), 4)
    assert np.all(np.diff(arr[:, 0]) >= 0)
    same = np.diff(arr[:, 0]) == 0
    assert np.all(np.diff(arr[:, 1])[same] == 1)  # consecutive frames within a track, gaps included
    path = write_napari_tracks(tmp_path / "tracks.csv", frames)
    back = pd.read_csv(path)
    assert list(back.columns) == ["track_id", "t", "y", "x"]
    np.testing.assert_allclose(back.to_numpy(float), arr)
    with pytest.raises(InputError):
        to_napari_tracks(pd.concat([frames, frames.assign(cell="c2")]))
    p1, p2 = write_tables(tmp_path, tracks.reset_index(), frames)
    back_tracks = pd.read_parquet(p1)
    assert len(back_tracks) == len(tracks) == 6 and len(pd.read_parquet(p2)) == len(frames)
    pd.testing.assert_series_equal(back_tracks["catIdx"], tracks.reset_index()["catIdx"])


# ------------------------------------------------------------------ build_traces on hand tables
def _tables(seed=0):
    """Per-track and per-frame tables of three cells with lifetimes 3-60 frames: aux- below
    20 frames, aux+ from 30, alternating (even lifetimes aux+) in 20-29; cell c3 (a test
    cell) is aux+ throughout. Track 21 of c1 and tracks 40-45 are category 3."""
    rng = np.random.default_rng(seed)
    trs, frs = [], []
    for cell in ("c1", "c2", "c3"):
        for L in range(3, 61):
            pos = cell == "c3" or L >= 30 or (L >= 20 and L % 2 == 0)
            cat = 3 if (40 <= L <= 45 or (cell == "c1" and L == 21)) else 1
            A = rng.normal(1500 + 300 * (cell == "c2"), 300, L)
            Y = np.where(pos, rng.normal(1200, 200, L), rng.normal(0, 50, L))
            p = np.where(pos & (np.arange(L) >= L - 4), 0.001, 0.5)
            trs.append({"cell": cell, "track_id": L, "catIdx": cat, "n_frames": L, "lifetime_s": float(L)})
            frs.append(pd.DataFrame({"cell": cell, "track_id": L, "part": "track", "frame": np.arange(L),
                                     "A_clathrin": A, "A_auxilin": Y, "pval_Ar_auxilin": p,
                                     "sigma_r_auxilin": rng.normal(300, 10, L)}))
    return pd.DataFrame(trs), pd.concat(frs, ignore_index=True)


def test_build_traces_filters_and_normalises():
    tracks, frames = _tables()
    X, y, cells, tids, info = build_traces(tracks, frames, {}, train_cells=["c1", "c2"])
    # thresholds from c1, c2 only: <= 19 all aux- (<= 20: 17/18 < 0.95); >= 28: 32/33 aux+,
    # >= 27: 32/34 < 0.95 -> short 19, long 28; hard tracks: 20-27 frames, category 1
    assert info["thresh_short"].iloc[0] == 19 and info["thresh_long"].iloc[0] == 28
    expect = {(c, L) for c in ("c1", "c2", "c3") for L in range(20, 28) if not (c == "c1" and L == 21)}
    assert set(zip(cells, tids)) == expect and X.shape == (len(expect), 40) and X.dtype == np.float32
    assert (info["n_padded"] == 40 - info["n_frames"]).all()
    for c in ("c1", "c2", "c3"):  # one mean and sd per cell over all its values
        m = cells == c
        assert X[m].mean() == pytest.approx(0, abs=1e-5) and X[m].std() == pytest.approx(1, abs=1e-5)
        assert y[m].mean() == pytest.approx(0, abs=1e-5) and y[m].std() == pytest.approx(1, abs=1e-5)
    # one cell by hand: raw series -> zero-padded 40 points -> the cell's single mean and sd
    m = cells == "c2"
    g = frames[frames["cell"] == "c2"]
    raw = np.stack([np.r_[g[g["track_id"] == t].sort_values("frame")["A_clathrin"].to_numpy(),
                          np.zeros(40 - t)] for t in tids[m]])
    np.testing.assert_allclose(X[m], (raw - raw.mean()) / raw.std(), rtol=1e-5, atol=1e-5)
    ysm = np.array([g[(g["track_id"] == t) & (g["pval_Ar_auxilin"] < 0.05)]["A_auxilin"].mean()
                    if t % 2 == 0 else 0.0 for t in tids[m]])
    np.testing.assert_allclose(info.loc[m, "Y_sig_mean"], ysm)
    np.testing.assert_allclose(y[m], (ysm - ysm.mean()) / ysm.std(), rtol=1e-5)
    # without the purity filter: catIdx 1 and lifetime > 15 frames
    X2, *_ , info2 = build_traces(tracks, frames, {"labels": {"drop_short_long": False}})
    assert len(X2) == 3 * 45 - 6 * 3 - 1
    with pytest.raises(InputError):
        build_traces(tracks.drop(columns=["catIdx"]), frames, {})


def test_aux_threshold_follows_the_noise():
    """Y_max > aux_thresh_sd x the cell's median auxilin sigma_r (973 ADU at the reference
    camera's 335 ADU), or an absolute aux_thresh_adu; hand-made cells of known noise."""
    assert AUX_THRESH_SD * 335 == pytest.approx(973, rel=0.01)
    rows = []
    for cell, noise in (("quiet", 200.0), ("loud", 400.0)):
        for tid, y_max in enumerate((500.0, 700.0, 1000.0, 1300.0)):
            Y = np.r_[np.zeros(9), y_max]
            rows.append(pd.DataFrame({"cell": cell, "track_id": tid, "part": "track", "frame": np.arange(10),
                                      "A_auxilin": Y, "pval_Ar_auxilin": 0.5,
                                      "sigma_r_auxilin": noise + np.r_[-50.0, 50.0, np.zeros(8)]}))
        # buffer rows do not count towards the noise
        rows.append(pd.DataFrame({"cell": cell, "track_id": 0, "part": "start_buffer", "frame": [-1],
                                  "A_auxilin": [0.0], "pval_Ar_auxilin": [0.5], "sigma_r_auxilin": [5000.0]}))
    frames = pd.concat(rows, ignore_index=True)
    tracks = frames[["cell", "track_id"]].drop_duplicates().reset_index(drop=True)
    assert aux_noise(frames).to_dict() == {"quiet": 200.0, "loud": 400.0}
    lab = add_labels(tracks, frames, {})
    # thresholds 580 and 1160 ADU
    assert lab.attrs["aux_thresh_adu"] == pytest.approx({"quiet": 580.0, "loud": 1160.0})
    pos = lab.set_index(["cell", "track_id"])["aux_positive"]
    assert pos["quiet"].tolist() == [False, True, True, True] and pos["loud"].tolist() == [False, False, False, True]
    # the same cells at twice the gain: the same labels
    double = frames.assign(A_auxilin=2 * frames["A_auxilin"], sigma_r_auxilin=2 * frames["sigma_r_auxilin"])
    pd.testing.assert_series_equal(add_labels(tracks, double, {})["aux_positive"], lab["aux_positive"])
    # the reference pipeline's absolute threshold, which does not follow the gain
    cfg = {"labels": {"aux_thresh_adu": 973.0}}
    absolute = add_labels(tracks, frames, cfg)
    assert absolute.attrs["aux_thresh_adu"] == {"quiet": 973.0, "loud": 973.0}
    assert absolute["aux_positive"].tolist() == [False, False, True, True] * 2
    assert add_labels(tracks, double, cfg)["aux_positive"].tolist() == [True, True, True, True] * 2
    # with categories, the noise comes from the category-1 tracks of a cell (lifetimeData.mat
    # keeps only those), from all its tracks if it has none
    cats = tracks.assign(catIdx=np.where(tracks["track_id"] == 0, 1, 2))
    cats.loc[cats["cell"] == "loud", "catIdx"] = 3
    noisy = frames.assign(sigma_r_auxilin=np.where(frames["track_id"] == 0, frames["sigma_r_auxilin"],
                                                   2 * frames["sigma_r_auxilin"]))
    assert aux_noise(noisy, cats).to_dict() == {"quiet": 200.0, "loud": 800.0}
    assert add_labels(cats, noisy, {}).attrs["aux_thresh_adu"] == pytest.approx({"quiet": 580.0, "loud": 2320.0})
    # an absolute threshold needs no noise column; the relative one does, per cell
    add_labels(tracks, frames.drop(columns=["sigma_r_auxilin"]), cfg)
    with pytest.raises(InputError, match="sigma_r_auxilin"):
        add_labels(tracks, frames.drop(columns=["sigma_r_auxilin"]), {})
    with pytest.raises(InputError, match="loud"):
        add_labels(tracks, frames.assign(sigma_r_auxilin=np.where(frames["cell"] == "loud", np.nan, 300.0)), {})
    for bad in ({"aux_thresh_sd": 0}, {"aux_thresh_sd": float("nan")}, {"aux_thresh_adu": float("inf")},
                {"aux_thresh": 973}):
        with pytest.raises(InputError):
            LabelConfig.from_dict(bad)


def test_aux_consec_frames_joins_significant_frames_a_few_frames_apart():
    """Two significant auxilin frames (800 ADU, below the 973 ADU threshold) 2 frames apart make
    a track aux+ with the default aux_consec_frames (3) but not with the reference's adjacent
    frames (1); 4 frames apart they do not; a burst across the track's end and its end buffer
    counts like one inside the track. Bad values are refused."""
    frames = pd.concat([
        _track_rows(1, 10, 5, (7, 9), 800.0, 0.0),     # one frame between them
        _track_rows(2, 10, 5, (5, 9), 800.0, 0.0),     # three frames between them
        _track_rows(3, 10, 5, (9, 12), 800.0, 0.0)], ignore_index=True)  # last track frame, end buffer
    tracks = pd.DataFrame({"cell": "c", "track_id": [1, 2, 3]})
    absolute = {"aux_thresh_adu": 973.0}
    lab = add_labels(tracks, frames, {"labels": absolute}).set_index("track_id")
    assert lab["aux_positive"].tolist() == [True, False, True] and lab["n_sig_aux"].tolist() == [2, 2, 2]
    ref = add_labels(tracks, frames, {"labels": {**absolute, "aux_consec_frames": 1}})
    assert ref["aux_positive"].tolist() == [False, False, False]
    wide = add_labels(tracks, frames, {"labels": {**absolute, "aux_consec_frames": 4}})
    assert wide["aux_positive"].tolist() == [True, True, True]
    for bad in (0, 2.5, True, None):
        with pytest.raises(InputError, match="aux_consec_frames"):
            LabelConfig.from_dict({"aux_consec_frames": bad})


def _track_rows(tid, n_track, n_buffer, sig, Y, offset_px):
    """One track: ``n_track`` track rows and ``n_buffer`` end-buffer rows, clathrin at (10, 10);
    rows in ``sig`` have auxilin amplitude ``Y`` (p = 0.01), fitted ``offset_px`` px away in x."""
    n = n_track + n_buffer
    A = np.zeros(n)
    p = np.full(n, 0.5)
    A[list(sig)], p[list(sig)] = Y, 0.01
    dx = np.zeros(n)
    dx[list(sig)] = offset_px
    return pd.DataFrame({"cell": "c", "track_id": tid, "frame": np.arange(n),
                         "part": ["track"] * n_track + ["end_buffer"] * n_buffer, "gap": False,
                         "x": 10.0, "y": 10.0, "x_auxilin": 10.0 + dx, "y_auxilin": 10.0,
                         "A_auxilin": A, "pval_Ar_auxilin": p, "sigma_r_auxilin": 300.0})


def test_aux_labels_colocalisation_and_end_buffer():
    """Frames whose auxilin fit lies > aux_colocalisation_px from the clathrin spot count as
    neither significant nor Y_max; the end buffer counts with aux_end_buffer; the reference
    rule (track rows only, no colocalisation test) comes back with both switched off."""
    Y, p = np.array([0.0, 100, 1200, 1100, 50]), np.array([1, 1, 0.01, 0.01, 1])
    lab = aux_labels(Y, p, aux_thresh=1150.0)
    assert lab["y_consec_sig"] and lab["y_conservative_thresh"] and lab["Y_max"] == 1200
    lab = aux_labels(Y, p, aux_thresh=1150.0, near=[True, True, False, True, True])
    assert not lab["y_consec_sig"] and not lab["aux_positive"] and lab["n_sig_aux"] == 1
    assert lab["Y_max"] == 1100 and lab["Y_sig_mean"] == 1100
    frames = pd.concat([
        _track_rows(1, 10, 5, (11, 12), 800.0, 0.3),   # burst in the end buffer, at the pit
        _track_rows(2, 10, 5, (3, 4), 800.0, 2.5),     # a neighbour's burst 2.5 px away
        _track_rows(3, 10, 5, (3, 4), 800.0, 1.0),     # a burst 1 px away (within 1.5 px)
        _track_rows(4, 10, 5, (6,), 2000.0, 2.5),      # one bright frame 2.5 px away
        _track_rows(5, 10, 5, (6,), 2000.0, 0.0)], ignore_index=True)  # one bright frame at the pit
    tracks = pd.DataFrame({"cell": "c", "track_id": [1, 2, 3, 4, 5]})
    absolute = {"aux_thresh_adu": 973.0}
    new = add_labels(tracks, frames, {"labels": absolute}).set_index("track_id")
    assert new["aux_positive"].tolist() == [True, False, True, False, True]
    assert new["y_consec_sig"].tolist() == [True, False, True, False, False]
    assert new.loc[1, "Y_sig_mean"] == 800.0 and new.loc[2, "Y_sig_mean"] == 0.0 and new.loc[2, "Y_max"] == 0.0
    assert new.attrs["aux_colocalised"]
    ref = {**absolute, "aux_end_buffer": False, "aux_colocalisation_px": None, "aux_clathrin_drop": None,
           "aux_consec_frames": 1}
    old = add_labels(tracks, frames, {"labels": ref}).set_index("track_id")
    assert old["aux_positive"].tolist() == [False, True, True, True, True]
    assert old.loc[1, "Y_sig_mean"] == 0.0 and old.loc[2, "Y_sig_mean"] == 800.0
    # each switch alone
    only_buffer = add_labels(tracks, frames, {"labels": {**absolute, "aux_colocalisation_px": None}})
    assert only_buffer["aux_positive"].tolist() == [True, True, True, True, True]
    wide = add_labels(tracks, frames, {"labels": {**absolute, "aux_colocalisation_px": 3.0}})
    assert wide["aux_positive"].tolist() == [True, True, True, True, True]
    # tables without fitted positions (lifetimeData.mat): no colocalisation test, end buffer kept
    bare = add_labels(tracks, frames.drop(columns=["x_auxilin", "y_auxilin"]), {"labels": absolute})
    assert bare["aux_positive"].tolist() == [True, True, True, True, True] and not bare.attrs["aux_colocalised"]
    for bad in ({"aux_colocalisation_px": 0}, {"aux_colocalisation_px": -1.0}, {"aux_colocalisation_px": "near"},
                {"aux_colocalisation_px": float("nan")}, {"aux_end_buffer": "yes"}):
        with pytest.raises(InputError):
            LabelConfig.from_dict(bad)


# ------------------------------------------------------------------ simulator ground truth
@pytest.fixture(scope="module")
def simulated_tracks():
    from domains.cme.tracking.simulate import SimulationConfig, simulate_cell

    cell = simulate_cell(SimulationConfig.from_dict({"height": 192, "width": 192, "n_frames": 100}), 31)
    det, masks = detect_movie(cell.movie, {}, threads=2, return_masks=True)
    linked = link(det, {})
    tracks, frames = process_tracks(linked, cell.movie, masks, {}, cell=1, cell_mask=cell.mask)
    truth = cell.truth_detections[cell.truth_detections["A_clathrin"] > 0]
    rows = frames[(frames["part"] == "track") & ~frames["gap"]].reset_index(drop=True)
    m = acc.match_detections(rows, truth)
    pairs = pd.DataFrame({"track_id": rows.loc[m["pred"], "track_id"].to_numpy(),
                          "true_id": truth.loc[m["truth"], "track_id"].to_numpy()})
    dom = pairs.value_counts().reset_index().drop_duplicates("track_id").set_index("track_id")["true_id"]
    tracks["true_id"] = dom.reindex(tracks["track_id"]).to_numpy()
    tt = cell.truth_tracks.set_index("track_id")
    for col in ("class", "Y_sig_mean_true", "lifetime_frames", "aux_peak_frame"):
        tracks[f"true_{col}"] = tt[col].reindex(tracks["true_id"]).to_numpy()
    return tracks, frames


def test_simulated_tracks_labels_follow_truth(simulated_tracks):
    tracks, frames = simulated_tracks
    assert set(tracks["catIdx"]) <= set(range(1, 9)) and (tracks["catIdx"] == 1).sum() > 50
    valid = tracks[tracks["catIdx"].isin([1, 2])]
    # productive pits seen through their auxilin burst (dim early phases fragment some tracks)
    peak = valid["true_aux_peak_frame"]
    burst = (valid["start_frame"] <= peak) & (valid["end_frame"] >= peak)
    prod = valid[(valid["true_class"] == "productive") & burst]
    abort = valid[valid["true_class"].isin(["abortive", "dim"])]
    assert len(prod) > 15 and len(abort) > 30
    assert prod["aux_positive"].mean() >= 0.9
    assert abort["aux_positive"].mean() <= 0.15
    pos = prod[prod["aux_positive"]]
    assert stats.spearmanr(pos["Y_sig_mean"], pos["true_Y_sig_mean_true"]).statistic > 0.7
    # complete productive tracks: lifetime close to the truth
    full = prod[prod["catIdx"] == 1]
    rel = np.abs(full["n_frames"] - full["true_lifetime_frames"]) / full["true_lifetime_frames"]
    assert len(full) >= 10 and np.median(rel) <= 0.1  # at least 10 tracks for the median


def test_simulated_labels_do_not_depend_on_the_gain(simulated_tracks):
    """The simulated cell's track tables with every ADU value doubled (camera gain x2) get
    the same labels; the reference's absolute 973 ADU would relabel tracks."""
    tracks, frames = simulated_tracks
    adu = [c for c in frames.columns
           if c.split("_")[0] in ("A", "c", "sigma", "SE") and c.endswith(("clathrin", "auxilin"))]
    assert {"A_auxilin", "sigma_r_auxilin", "A_pstd_auxilin", "SE_sigma_r_auxilin"} <= set(adu)
    double = frames.copy()
    double[adu] = 2 * frames[adu]
    cols = ["n_sig_aux", "y_consec_sig", "y_conservative_thresh", "aux_positive", "hotspot"]
    one, two = add_labels(tracks, frames, {}), add_labels(tracks, double, {})
    pd.testing.assert_frame_equal(one[cols], two[cols])
    np.testing.assert_allclose(two["Y_sig_mean"], 2 * one["Y_sig_mean"])
    # the cell's threshold: 2.9 x the median auxilin sigma_r of its category-1 tracks
    # (simulated pixel noise ~250 ADU)
    cat1 = tracks.loc[tracks["catIdx"] == 1, "track_id"]
    noise = frames.loc[(frames["part"] == "track") & frames["track_id"].isin(cat1), "sigma_r_auxilin"].median()
    assert 200 < noise < 320 and one.attrs["aux_thresh_adu"]["1"] == pytest.approx(AUX_THRESH_SD * noise)
    cfg = {"labels": {"aux_thresh_adu": 973.0}}
    flips = (add_labels(tracks, frames, cfg)["y_conservative_thresh"]
             != add_labels(tracks, double, cfg)["y_conservative_thresh"]).sum()
    assert flips >= 10


def test_simulated_traces(simulated_tracks):
    tracks, frames = simulated_tracks
    X, y, cells, tids, info = build_traces(tracks, frames, {})
    assert X.shape[1] == 40 and len(X) == len(y) == len(info) > 10
    assert (info["n_frames"] > 15).all() and info["catIdx"].isin([1, 2]).all()
    assert np.isfinite(X).all() and np.isfinite(y).all()
    assert X.mean() == pytest.approx(0, abs=1e-5) and y.std() == pytest.approx(1, abs=1e-5)
    assert (info["n_padded"] == np.maximum(0, 40 - info["n_frames"])).all()


def test_process_tracks_single_channel_empty_and_bad_input():
    from domains.cme.tracking.simulate import SimulationConfig, simulate_cell

    cell = simulate_cell(SimulationConfig.from_dict({"height": 96, "width": 96, "n_frames": 30}), 3)
    one = SimpleNamespace(data=cell.movie.data[:, :1], frame_interval_s=1.0, pixel_size_um=0.08, name="c")
    det, masks = detect_movie(one, {}, return_masks=True)
    tracks, frames = process_tracks(link(det, {}), one, masks, {}, cell=0)
    assert len(tracks) > 5 and not any("auxilin" in c for c in frames.columns)
    assert tracks["catIdx"].between(1, 4).all()
    blank = SimpleNamespace(data=np.full((20, 2, 40, 40), 1000, np.uint16), frame_interval_s=1.0,
                            pixel_size_um=0.08, name="blank")
    det, masks = detect_movie(blank, {}, return_masks=True)
    tracks, frames = process_tracks(link(det, {}), blank, masks, {}, cell=0)
    assert len(det) == len(tracks) == len(frames) == 0 and "catIdx" in tracks.columns
    with pytest.raises(InputError):
        process_tracks(det, blank, masks, {})  # not linked
    with pytest.raises(InputError):
        process_tracks(link(det, {}), blank, masks[:5], {})


def test_aux_end_window_counts_only_the_end_of_the_track():
    """Three 40-frame tracks plus a 5-frame end buffer: a significant pair at frames 5-6 (a
    chance spot early in the track), at frames 33-34 (inside the last 10 track frames) and in the
    end buffer (frames 41-42). Without the window all three are aux+; with aux_end_window 10 the
    early pair no longer counts (nor its Y_max), the others still do; bad values are refused."""
    rows = []
    for tid, pair in enumerate(((5, 6), (33, 34), (41, 42))):
        frame = np.arange(45)
        p = np.where(np.isin(frame, pair), 0.001, 0.5)
        rows.append(pd.DataFrame({"cell": "c", "track_id": tid, "frame": frame,
                                  "part": np.where(frame < 40, "track", "end_buffer"),
                                  "A_auxilin": np.where(np.isin(frame, pair), 800.0, 0.0), "pval_Ar_auxilin": p,
                                  "sigma_r_auxilin": 300.0}))
    frames = pd.concat(rows, ignore_index=True)
    tracks = frames[["cell", "track_id"]].drop_duplicates().reset_index(drop=True)
    whole = add_labels(tracks, frames, {})
    assert whole["aux_positive"].tolist() == [True, True, True]
    windowed = add_labels(tracks, frames, {"labels": {"aux_end_window": 10}})
    assert windowed["aux_positive"].tolist() == [False, True, True]
    assert windowed["n_sig_aux"].tolist() == [0, 2, 2]
    assert windowed["Y_max"].tolist() == [0.0, 800.0, 800.0]
    # a window reaching frame 5 (the last 35 track frames) counts the early pair again
    assert add_labels(tracks, frames, {"labels": {"aux_end_window": 35}})["aux_positive"].tolist() == [True] * 3
    assert add_labels(tracks, frames, {"labels": {"aux_end_window": 34}})["aux_positive"].tolist() == [False, True, True]
    for bad in (0, 2.5, True, "10"):
        with pytest.raises(InputError, match="aux_end_window"):
            add_labels(tracks, frames, {"labels": {"aux_end_window": bad}})


def test_clathrin_drop_by_hand():
    """Mean of the k rows before minus mean of the k after, over the track's maximum; NaN
    amplitudes left out; -inf / +inf without rows before / after; tracks never mix (the same
    track id in another cell is another track)."""
    rows = pd.DataFrame({"cell": ["a"] * 6 + ["a"] * 4 + ["b"] * 3, "track_id": [1] * 6 + [2] * 4 + [1] * 3,
                         "frame": [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 7, 8, 9],
                         "A_clathrin": [100, 100, 100, 100, 50, 0, np.nan, 200, np.nan, 100, 0, 0, 0]})
    got = clathrin_drop(rows, 2)
    # track a/1, k = 2: row 2 (100 - mean(100, 50)) / 100; row 3 (100 - 25) / 100; row 4 (100 - 0) / 100
    np.testing.assert_array_equal(got[:6], [-np.inf, 0.0, 0.25, 0.75, 1.0, np.inf])
    # track a/2, peak 200: row 1 has only a NaN before it; row 2 (200 - 100) / 200
    np.testing.assert_array_equal(got[6:10], [-np.inf, -np.inf, 0.5, np.inf])
    # track b/1: no positive amplitude, no fall
    np.testing.assert_array_equal(got[10:], [-np.inf, 0.0, np.inf])
    assert clathrin_drop(rows.iloc[:0], 2).size == 0


def test_aux_clathrin_drop_counts_auxilin_only_where_the_clathrin_falls():
    """Three 40-frame tracks with a 5-frame end buffer, clathrin 1000 ADU throughout (the pit
    outlives the track), one significant auxilin pair each (800 ADU, below the 973 ADU threshold):
    at frames 33-34 with no clathrin fall after it (a neighbour's burst: not counted), at frames
    35-36 (inside the last aux_drop_end = 5 track frames: counted), and at frames 20-21 of a track
    whose clathrin falls to 700 after frame 21 (falls of 0.24 and 0.3 of the maximum: counted).
    Without the test all three are aux+; bad values are refused."""
    rows = []
    for tid, pair in enumerate(((33, 34), (35, 36), (20, 21))):
        frame = np.arange(45)
        cla = np.where((tid == 2) & (frame > 21), 700.0, 1000.0)
        rows.append(pd.DataFrame({"cell": "c", "track_id": tid, "frame": frame,
                                  "part": np.where(frame < 40, "track", "end_buffer"), "A_clathrin": cla,
                                  "A_auxilin": np.where(np.isin(frame, pair), 800.0, 0.0),
                                  "pval_Ar_auxilin": np.where(np.isin(frame, pair), 0.001, 0.5)}))
    frames = pd.concat(rows, ignore_index=True)
    tracks = frames[["cell", "track_id"]].drop_duplicates().reset_index(drop=True)
    absolute = {"aux_thresh_adu": 973.0}
    lab = add_labels(tracks, frames, {"labels": absolute})
    assert lab["aux_positive"].tolist() == [False, True, True] and lab.attrs["aux_clathrin_drop"]
    assert lab["n_sig_aux"].tolist() == [0, 2, 2] and lab["Y_max"].tolist() == [0.0, 800.0, 800.0]
    # a fall of 0.3 needed: frame 20 (0.24) no longer counts, frame 21 (0.3) still does
    assert add_labels(tracks, frames, {"labels": {**absolute, "aux_clathrin_drop": 0.3}})["n_sig_aux"].tolist() == [0, 2, 1]
    # only the last track frame exempt: the pair at 35-36 needs a fall too
    assert add_labels(tracks, frames, {"labels": {**absolute, "aux_drop_end": 1}})["aux_positive"].tolist() == [False, False, True]
    # a 10-frame exempt end reaches frames 33-34 (frames > 39 - 10)
    assert add_labels(tracks, frames, {"labels": {**absolute, "aux_drop_end": 10}})["aux_positive"].tolist() == [True] * 3
    off = add_labels(tracks, frames, {"labels": {**absolute, "aux_clathrin_drop": None}})
    assert off["aux_positive"].tolist() == [True] * 3 and not off.attrs["aux_clathrin_drop"]
    bare = add_labels(tracks, frames.drop(columns=["A_clathrin"]), {"labels": absolute})
    assert bare["aux_positive"].tolist() == [True] * 3 and not bare.attrs["aux_clathrin_drop"]
    for bad in ({"aux_clathrin_drop": "yes"}, {"aux_clathrin_drop": float("nan")}, {"aux_clathrin_drop": True},
                {"aux_drop_frames": 0}, {"aux_drop_frames": 2.5}, {"aux_drop_end": 0}):
        with pytest.raises(InputError, match="aux_(clathrin_drop|drop_frames|drop_end)"):
            LabelConfig.from_dict(bad)


# ------------------------------------------------------------------ tracks cut after a burst
def test_burst_ends_by_hand():
    """The frame ending the first burst (significant frames at most aux_consec_frames apart,
    colocalised) of tracks that go on for >= min_after track frames after it: end-buffer rows do
    not count as going on, a lone bright frame is no burst, a far fit is not counted, hotspots are
    not listed; with the clathrin-drop test a burst counts only where the clathrin falls."""
    def track(tid, sig, offset_px=0.0, fall_after=None):
        rows = _track_rows(tid, 40, 5, sig, 800.0, offset_px)
        rows["A_clathrin"] = np.where(rows["frame"] > fall_after, 300.0, 1000.0) if fall_after else 1000.0
        return rows

    frames = pd.concat([
        track(1, (10, 11, 13), fall_after=13),  # a chain 10-11-13, then 26 track frames
        track(2, (10, 11, 17)),                 # 11 -> 17 is no chain: the burst ends at 11
        track(3, (34, 35)),                     # 4 track frames after it (and the end buffer)
        track(4, (10,)),                        # one frame is no burst
        track(5, (10, 11), offset_px=2.5),      # a neighbour's burst 2.5 px away
        track(6, (5, 6, 15, 17, 19, 25, 26)),   # a hotspot: repeated bursts
        track(7, (20, 21))], ignore_index=True)  # 18 track frames after it
    tracks = frames[["cell", "track_id"]].drop_duplicates().reset_index(drop=True)
    no_drop = {"labels": {"aux_thresh_adu": 973.0, "aux_clathrin_drop": None}}
    lab = add_labels(tracks, frames, no_drop)
    assert lab.set_index("track_id").loc[6, "hotspot"]
    ends = burst_ends(lab, frames, no_drop, 10)
    assert ends[["track_id", "frame"]].values.tolist() == [[1, 13], [2, 11], [7, 21]]
    assert burst_ends(lab, frames, no_drop, 19)["track_id"].tolist() == [1, 2]
    assert burst_ends(lab, frames, no_drop, 4)["track_id"].tolist() == [1, 2, 3, 7]
    # the default labels ask the clathrin to fall after a burst that is not at the track's end
    default = {"labels": {"aux_thresh_adu": 973.0}}
    assert burst_ends(add_labels(tracks, frames, default), frames, default, 10)["track_id"].tolist() == [1]


@pytest.fixture(scope="module")
def joined_pits():
    """64x64, 50 frames: pit P (6,000 ADU) lives in frames 5-23 and ends with an auxilin burst in
    frames 19-22; pit Q (3,000 ADU, no auxilin) appears at the same spot in frame 24 and lives to
    frame 44. The detections are linked as one track, as a linker joins a pit born where another
    ended."""
    T, H, W = 50, 64, 64
    rng = np.random.default_rng(5)
    data = np.empty((T, 2, H, W))
    data[:, 0], data[:, 1] = 1450.0, 1300.0
    for t in range(5, 45):
        data[t, 0] += _spot((H, W), 30.0, 30.0, 6000.0 if t <= 23 else 3000.0, 1.2)
    for t in range(19, 23):
        data[t, 1] += _spot((H, W), 30.1, 30.0, 2000.0, 1.1)
    data = np.round(data + rng.normal(0, 60, data.shape)).astype(np.uint16)
    movie = SimpleNamespace(data=data, frame_interval_s=1.0, pixel_size_um=0.08, name="joined", condition="test")
    det, masks = detect_movie(movie, {}, return_masks=True)
    det = det[np.hypot(det["x"] - 30.0, det["y"] - 30.0) < 1.0].reset_index(drop=True)
    assert sorted(det["frame"]) == list(range(5, 45))
    det["track_id"] = det["compound_id"] = 0
    return det, movie, masks


def test_tracks_are_cut_after_an_auxilin_burst(joined_pits):
    """With track_processing.burst_split_frames (default 10) the joined track is cut after P's
    burst: P's piece is aux+, Q's aux-; both come from the one linked track. Off, the one track
    is aux+ (Q inherits P's burst)."""
    det, movie, masks = joined_pits
    tracks, frames = process_tracks(det, movie, masks, {}, cell="c", cell_mask=np.ones(movie.data.shape[2:], bool))
    assert tracks[["start_frame", "end_frame"]].values.tolist() in ([[5, 21], [22, 44]], [[5, 22], [23, 44]])
    assert tracks["aux_positive"].tolist() == [True, False]
    assert (tracks["linked_track_id"] == 0).all() and (tracks["split_from"] == 0).all()
    first = frames[frames["track_id"] == 0]
    # P's piece: its end buffer is the next rows of the parent, Q's start buffer the last of P's
    assert first.loc[first["part"] == "end_buffer", "frame"].min() == tracks.loc[0, "end_frame"] + 1
    off = {"track_processing": {"burst_split_frames": None}}
    whole, _ = process_tracks(det, movie, masks, off, cell="c", cell_mask=np.ones(movie.data.shape[2:], bool))
    assert whole[["start_frame", "end_frame"]].values.tolist() == [[5, 44]] and whole["aux_positive"].all()
    # a track going on for fewer frames than the setting after its burst is kept whole
    long_after = {"track_processing": {"burst_split_frames": 30}}
    kept, _ = process_tracks(det, movie, masks, long_after, cell="c", cell_mask=np.ones(movie.data.shape[2:], bool))
    assert len(kept) == 1
    for bad in (0, 2.5, "10", True):
        with pytest.raises(InputError, match="burst_split_frames"):
            process_tracks(det, movie, masks, {"track_processing": {"burst_split_frames": bad}})
