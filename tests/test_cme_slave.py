"""Slave-channel (auxilin) classification: the per-frame test against the background holds its
nominal false-positive rate on auxilin-free simulated movies, the track flags hold theirs, and
the auxilin labels do not depend on the camera gain."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage, stats

from domains.cme.tracking.detect import detect_movie, prefilter
from domains.cme.tracking.link import link
from domains.cme.tracking.processing import _vs_background, process_tracks
from domains.cme.tracking.simulate import SimulationConfig, simulate_cell
from domains.cme.traces import add_labels

ALPHA = 0.05


@pytest.fixture(scope="module")
def aux_free():
    """A 256^2, 150-frame cell at the default pit density with the auxilin switched off
    (no auxilin-only puncta, bursts of 1e-6 ADU): every track frame is auxilin-free."""
    cfg = SimulationConfig.from_dict({"height": 256, "width": 256, "n_frames": 150, "aux_only_rate": 0.0,
                                      "aux_peak_median": 1e-6})
    cell = simulate_cell(cfg, 7)
    assert cell.truth_detections["A_auxilin"].max() < 1e-3
    det, masks = detect_movie(cell.movie, {}, threads=2, return_masks=True)
    tracks, frames = process_tracks(link(det, {}), cell.movie, masks, {}, cell=1, cell_mask=cell.mask)
    return cell, masks, tracks, frames


def test_per_frame_background_test_holds_its_nominal_rate(aux_free):
    cell, masks, tracks, frames = aux_free
    core = frames[frames["part"] == "track"]
    hval = core["significantVsBackground_auxilin"].to_numpy(bool)
    n = hval.size
    assert n >= 15000  # binomial sd of the rate <= 0.0018
    assert hval.mean() == pytest.approx(ALPHA, abs=0.01)
    # the rate holds over the movie although bleaching lowers the noise by ~14 %
    first, last = core["frame"] < 50, core["frame"] >= 100
    assert hval[first.to_numpy()].mean() == pytest.approx(ALPHA, abs=0.015)
    assert hval[last.to_numpy()].mean() == pytest.approx(ALPHA, abs=0.015)
    # cmeAnalysis' level (95th pct of prefilter amplitudes in the cell background, 16 frames)
    # is below the fitted amplitudes' 95th percentile, since the fit kept is the larger of a
    # fixed-position fit (the prefilter's) and a free one. With the free fit confined to 1
    # sigma_clathrin (detection.slave_max_shift) the gap is small: 219 vs 233 ADU (ratio 0.94;
    # 0.93 on seed 8), and at that level the same test fires on 6.2 % of these frames (6.4 %)
    # instead of 5 %. With cmeAnalysis' 3 sigma_clathrin, whose free fit lands on noise peaks,
    # the ratio was 0.61 and the rate 20 %.
    w = math.ceil(4 * 1.1)
    yy, xx = np.mgrid[-w:w + 1, -w:w + 1]
    bg = []
    for f in np.unique(np.round(np.linspace(0, cell.movie.data.shape[0] - 1, 16)).astype(int)):
        free = cell.mask & ~ndimage.binary_dilation(masks[f], structure=xx ** 2 + yy ** 2 <= w ** 2)
        bg.append(prefilter(cell.movie.data[f, 1].astype(float), 1.1).A[free])
    bg95_prefilter = np.percentile(np.concatenate(bg), 95)
    assert 0.85 * tracks.attrs["bg95_auxilin"] < bg95_prefilter < 0.99 * tracks.attrs["bg95_auxilin"]
    npx = np.round((core["sigma_r_auxilin"] / core["SE_sigma_r_auxilin"]) ** 2 / 2 + 1)
    old = _vs_background(core["A_auxilin"], core["A_pstd_auxilin"], npx, bg95_prefilter, ALPHA)
    assert 1.1 * ALPHA < old.mean() < 1.5 * ALPHA  # binomial sd 0.0018


def test_track_flags_hold_their_nominal_rate(aux_free):
    _, _, tracks, frames = aux_free
    core = frames[frames["part"] == "track"]
    assert len(tracks) > 600
    # significantSlave: more above-background frames than binoinv(0.95, L, 0.05); with the
    # per-frame rate at 0.05 and independent frames at most 5 % of auxilin-free tracks qualify
    # (fewer: the binomial quantile is discrete). Expected rate from the binomial itself:
    L = core.groupby("track_id").size().reindex(tracks["track_id"]).to_numpy()
    expected = np.mean(stats.binom.sf(stats.binom.ppf(0.95, L, ALPHA), L, ALPHA))
    sd = math.sqrt(expected * (1 - expected) / len(tracks))
    rate = tracks["significantSlave_auxilin"].mean()
    assert rate <= ALPHA and abs(rate - expected) < 4 * sd + 0.01
    # significantMaster: significant auxilin fits (p < 0.05) beyond the chance rate measured at
    # background positions with the same fit. That rate is the chance rate of the track frames
    # (not gaps) of this auxilin-free movie, within binomial error: 0.0056 of 4,096 background
    # fits, 0.0041 of 16,038 track frames (seed 8: 0.0034, 0.0040). It is small because
    # cmeAnalysis' amplitude test asks A > 1.96 sigma_r, about 4 A_pstd: on Gaussian noise a
    # fixed-position fit never passed it in 6,480 tries, the free fit within 1 sigma_clathrin
    # on 0.08 %; EMCCD noise and neighbouring pits raise that to ~0.5 %. (With cmeAnalysis' 3
    # sigma_clathrin the free fit's wider search for the largest amplitude gave 0.025.)
    p_det, n_bg = tracks.attrs["p_detection_auxilin"], tracks.attrs["n_background_fits_auxilin"]
    detected = core[~core["gap"].astype(bool)]
    p_track = (detected["pval_Ar_auxilin"] < ALPHA).mean()
    assert n_bg >= 3000 and len(detected) >= 15000
    assert abs(p_det - p_track) < 3 * math.sqrt(p_track * (1 - p_track) * (1 / n_bg + 1 / len(detected)))
    assert 0.001 < p_det < 0.015
    # the track test then fires on the binomial expectation, well below 5 % as the quantile is
    # discrete at such small rates (measured 0.010 and 0.019 on seeds 7 and 8)
    expected_master = np.mean(stats.binom.sf(stats.binom.ppf(0.95, L, p_det), L, p_det))
    sd_master = math.sqrt(expected_master * (1 - expected_master) / len(tracks))
    assert tracks["significantMaster_auxilin"].mean() <= ALPHA
    assert abs(tracks["significantMaster_auxilin"].mean() - expected_master) < 4 * sd_master + 0.01
    # the auxilin label (two consecutive significant frames, or a maximum above 2.9 noise sd)
    # fires on few tracks of a movie without auxilin (0.010 and 0.009 of ~600 on seeds 7 and 8)
    assert tracks["aux_positive"].mean() <= 0.03


def test_labels_and_slave_flags_do_not_depend_on_the_camera_gain():
    """The same cell recorded with twice the gain (every ADU above the offset doubled): the
    per-frame test level and the auxilin threshold double, the labels and flags stay."""
    cell = simulate_cell(SimulationConfig.from_dict({"height": 128, "width": 128, "n_frames": 80}), 11)
    offset = 1000.0
    doubled = SimpleNamespace(data=(cell.movie.data.astype(np.float64) - offset) * 2 + offset,
                              frame_interval_s=1.0, pixel_size_um=0.08, name="doubled")
    out = {}
    for name, movie in (("x1", cell.movie), ("x2", doubled)):
        det, masks = detect_movie(movie, {}, return_masks=True)
        out[name] = process_tracks(link(det, {}), movie, masks, {}, cell=1, cell_mask=cell.mask)
    (t1, f1), (t2, f2) = out["x1"], out["x2"]
    assert len(t1) == len(t2) > 30
    assert t2.attrs["bg95_auxilin"] == pytest.approx(2 * t1.attrs["bg95_auxilin"], rel=1e-6)
    assert t2.attrs["aux_thresh_adu"]["1"] == pytest.approx(2 * t1.attrs["aux_thresh_adu"]["1"], rel=1e-6)
    # fixed-position fits scale exactly; free fits stop within the optimiser's tolerance
    diff = np.abs(f2["A_auxilin"] - 2 * f1["A_auxilin"])
    assert np.median(diff) < 1e-3 and (diff < 1.0).mean() > 0.99 and diff.max() < 20
    for col in ("aux_positive", "y_conservative_thresh", "y_consec_sig", "hotspot",
                "significantSlave_auxilin", "significantMaster_auxilin"):
        assert (t1[col] == t2[col]).all(), col
    assert (f1["significantVsBackground_auxilin"] == f2["significantVsBackground_auxilin"]).all()
    assert t1["aux_positive"].sum() >= 3
    # an absolute threshold does not follow the gain: 973 ADU labels differ between the two
    cfg = {"labels": {"aux_thresh_adu": 973.0}}
    a1, a2 = add_labels(t1, f1, cfg), add_labels(t2, f2, cfg)
    assert (a1["y_conservative_thresh"] != a2["y_conservative_thresh"]).sum() >= 1
