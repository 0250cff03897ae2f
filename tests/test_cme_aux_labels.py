"""Auxilin measured at the clathrin pits (issue 13): the slave fit's free-position confinement,
degenerate neighbour models, and the auxilin re-fit of gap and buffer frames at the master
position. Hand-built images with known spots; the amplitude z-scores of pure-noise fits
against the standard normal."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from awd.io import InputError
from domains.cme.tracking import accuracy as acc
from domains.cme.tracking.detect import detect_movie, fit_slave
from domains.cme.tracking.processing import ProcessingConfig, process_tracks
from tests.test_cme_labels import _spot  # a pixel-integrated Gaussian spot


def test_free_slave_fit_stays_at_the_pit():
    """A spot 2.5 px from the master position (a neighbour's burst not in the model): the
    cmeAnalysis free fit (3 sigma_master, the default) moves onto it and reports its amplitude;
    confined to 1 sigma_master the fixed-position fit at the pit is kept, which sees only the
    neighbour's tail."""
    rng = np.random.default_rng(0)
    img = 1000.0 + _spot((40, 40), 22.5, 20.0, 1500.0, 1.1) + rng.normal(0, 5, (40, 40))
    x, y = np.array([20.0]), np.array([20.0])
    wide = fit_slave(img, x, y, 1.1, 1.2, neighbours=False)
    assert wide["x_aux"][0] == pytest.approx(22.5, abs=0.05) and wide["A_aux"][0] == pytest.approx(1500, rel=0.06)
    tight = fit_slave(img, x, y, 1.1, 1.2, neighbours=False, max_shift=1.0)
    assert tight["x_aux"][0] == 20.0 and tight["y_aux"][0] == 20.0
    # reference: least squares of A g + c over the 11 x 11 window (w = ceil(4 sigma)) with the
    # sampled Gaussian g at the pit, solved here with numpy
    win = img[15:26, 15:26].ravel()
    yy, xx = np.mgrid[-5:6, -5:6]
    g = np.exp(-(xx ** 2 + yy ** 2) / (2 * 1.1 ** 2)).ravel()
    ref = np.linalg.lstsq(np.column_stack([g, np.ones_like(g)]), win, rcond=None)[0][0]
    assert tight["A_aux"][0] == pytest.approx(ref, rel=1e-6) and ref < 0.25 * 1500
    # a spot at the pit is measured by the free fit within its confinement
    img = 1000.0 + _spot((40, 40), 20.4, 20.0, 1500.0, 1.1) + rng.normal(0, 5, (40, 40))
    at_pit = fit_slave(img, x, y, 1.1, 1.2, neighbours=False, max_shift=1.0)
    assert at_pit["x_aux"][0] == pytest.approx(20.4, abs=0.05) and at_pit["A_aux"][0] == pytest.approx(1500, rel=0.06)


def test_slave_amplitudes_on_pure_noise_are_centred():
    """Fits at random positions of Gaussian-noise images: the amplitude z-score A / A_pstd has
    mean ~0 and sd ~1 with a confinement of 1 sigma_master; keeping the larger of a fixed fit
    and a free fit that may move 3 sigma_master (cmeAnalysis, the default) shifts it up and
    triples its upper tail (more on real-density cells, where neighbours add to it)."""
    rng = np.random.default_rng(1)
    z = {1.0: [], 3.0: []}
    for _ in range(4):
        img = 1000.0 + rng.normal(0, 300, (120, 120))
        g = np.arange(12, 108, 12, dtype=float)
        x, y = [a.ravel() + rng.uniform(-0.5, 0.5, a.size) for a in np.meshgrid(g, g)]
        for shift in z:
            f = fit_slave(img, x, y, 1.1, 1.2, neighbours=False, max_shift=shift)  # 3.0 = the default
            z[shift].append(f["A_aux"] / f["A_pstd_aux"])
    tight, wide = np.concatenate(z[1.0]), np.concatenate(z[3.0])
    assert tight.size == 256
    assert abs(tight.mean()) < 0.25 and 0.8 < tight.std() < 1.25  # measured 0.14, 1.09
    assert wide.mean() > tight.mean() + 0.25 and (wide > 2).mean() > 2 * (tight > 2).mean()  # 0.48; 0.19 vs 0.06


def test_coinciding_master_positions_do_not_blow_up_the_neighbour_model():
    """Two master positions 0.2 px apart on one auxilin spot: modelling one as the other's
    neighbour made the least squares degenerate (amplitudes of +-1e6); a position closer than
    sigma is the same spot, so each gets the lone-spot amplitude."""
    rng = np.random.default_rng(2)
    img = 1000.0 + _spot((40, 40), 20.0, 20.0, 1200.0, 1.1) + _spot((40, 40), 24.0, 20.0, 900.0, 1.1)
    img += rng.normal(0, 20, img.shape)
    x, y = np.array([20.0, 20.2, 24.0]), np.array([20.0, 20.0, 20.0])
    f = fit_slave(img, x, y, 1.1, 1.2, neighbours=True)
    assert np.all(np.abs(f["A_aux"][:2] - 1200) < 150), f["A_aux"]
    assert f["A_aux"][2] == pytest.approx(900, rel=0.1)


@pytest.fixture(scope="module")
def neighbour_burst():
    """64 x 64, 40 frames. Pit A (20, 20) lives frames 8-19 without auxilin; pit B, 3 px away
    at (23, 20), lives frames 5-24 and has an auxilin burst of 2,000 ADU in its last frames 21-24
    (a productive pit: the burst comes as its coat leaves), i.e. in A's end buffer (frames
    20-24). Tracks by construction from detect_movie's detections."""
    T, H, W = 40, 64, 64
    rng = np.random.default_rng(5)
    data = np.empty((T, 2, H, W))
    data[:, 0], data[:, 1] = 1450.0, 1300.0
    truth = []
    for name, (x, y, amp, frames) in {"A": (20.0, 20.0, 3000.0, range(8, 20)),
                                      "B": (23.0, 20.0, 3000.0, range(5, 25))}.items():
        for t in frames:
            data[t, 0] += _spot((H, W), x, y, amp, 1.2)
            truth.append({"frame": t, "x": x, "y": y, "name": name})
    for t in range(21, 25):
        data[t, 1] += _spot((H, W), 23.0, 20.0, 2000.0, 1.1)
    data = np.round(data + rng.normal(0, 60, data.shape)).astype(np.uint16)
    movie = SimpleNamespace(data=data, frame_interval_s=1.0, pixel_size_um=0.08, name="nb", condition="test")
    det, masks = detect_movie(movie, {}, return_masks=True)
    truth = pd.DataFrame(truth)
    m = acc.match_detections(det, truth, max_dist=1.0)
    det = det.loc[m["pred"]].reset_index(drop=True)
    names = truth.loc[m["truth"], "name"].to_numpy()
    det["track_id"] = (names == "B").astype(int)
    det["compound_id"] = det["track_id"]
    out = {}
    for flag in (True, False):
        cfg = {"track_processing": {"slave_at_master": flag}}
        out[flag] = process_tracks(det, movie, masks, cfg, cell="c", cell_mask=np.ones((H, W), bool))
    return out


def test_buffer_auxilin_is_fitted_with_the_neighbours(neighbour_burst):
    """A's end-buffer auxilin is fitted with B (detected) in the model and is not credited
    with B's burst; A stays aux-, B is aux+. cmeAnalysis' per-channel re-fit from A's last
    position measures the burst 3 px away at full amplitude."""
    tracks, frames = neighbour_burst[True]
    lab = tracks.set_index("linked_track_id")
    assert bool(lab.loc[1, "aux_positive"]) and not bool(lab.loc[0, "aux_positive"])
    a_buf = frames[(frames["track_id"] == lab.loc[0, "track_id"]) & (frames["part"] == "end_buffer")]
    burst = a_buf["frame"].between(21, 24).to_numpy()
    assert burst.sum() == 4 and (a_buf["A_auxilin"].to_numpy()[burst] < 400).all()
    assert (a_buf["pval_Ar_auxilin"].to_numpy()[burst] >= 0.05).all()
    old_tracks, old_frames = neighbour_burst[False]
    old_id = old_tracks.set_index("linked_track_id").loc[0, "track_id"]
    old_buf = old_frames[(old_frames["track_id"] == old_id) & (old_frames["part"] == "end_buffer")]
    assert (old_buf["A_auxilin"].to_numpy()[old_buf["frame"].between(21, 24).to_numpy()] > 1500).any()


def test_slave_at_master_config():
    assert ProcessingConfig.from_dict({}).slave_at_master is False
    assert ProcessingConfig.from_dict({"slave_at_master": True}).slave_at_master is True
    with pytest.raises(InputError, match="slave_at_master"):
        ProcessingConfig.from_dict({"slave_at_master": "yes"})
