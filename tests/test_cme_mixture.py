"""CME detection of close pits: Gaussian-mixture fits (detect.split_mixtures / fit_mixtures)
against known truth on synthetic EMCCD frames, with mixtures off (before) and on (after)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from test_cme_detect import emccd, render

from domains.cme.tracking import accuracy as acc
from domains.cme.tracking import detect as D
from domains.cme.tracking.detect import DetectionConfig, detect_frame

MIX = DetectionConfig().mixture_kwargs()


def pair_frame(sigma, sep, amp, rng, n_side=8, spacing=20, shape=180):
    """n_side^2 pairs ``sep`` px apart (random orientation) on a grid ``spacing`` px apart;
    ``sep`` None gives lone spots with amplitudes ``amp(n)``."""
    g = 14 + spacing * np.arange(n_side)
    cx, cy = (a.ravel() + rng.uniform(-0.5, 0.5, a.size) for a in np.meshgrid(g, g))
    if sep is None:
        xs, ys = cx, cy
    else:
        th = rng.uniform(0, np.pi, cx.size)
        xs = np.concatenate([cx - sep / 2 * np.cos(th), cx + sep / 2 * np.cos(th)])
        ys = np.concatenate([cy - sep / 2 * np.sin(th), cy + sep / 2 * np.sin(th)])
    amps = amp(xs.size)
    img = emccd(render((shape, shape), xs, ys, amps, sigma, 450), rng)
    return img, pd.DataFrame({"frame": 0, "x": xs, "y": ys, "A": amps})


def score(sigma, sep, mixture, n_frames=2, seed=1, amp=3000.0):
    """Recall of pair members (matched within min(1, sep/2) px), extra detections per true spot,
    and the RMS localisation error of the matched ones."""
    rng = np.random.default_rng(seed)
    hits = n = n_pred = 0
    err = []
    for _ in range(n_frames):
        img, truth = pair_frame(sigma, sep, lambda k: np.full(k, amp), rng)
        det = detect_frame(img, sigma=sigma, alpha=DetectionConfig().alpha, mixture=mixture)
        det["frame"] = 0
        m = acc.match_detections(det, truth, min(1.0, sep / 2))
        hits, n, n_pred = hits + len(m), n + len(truth), n_pred + len(det)
        err += list(m["dist"])
    return hits / n, (n_pred - hits) / n, float(np.sqrt(np.mean(np.square(err))))


@pytest.mark.parametrize("sigma", [1.2, 1.45])
def test_close_pairs_are_resolved(sigma):
    """Pairs of 3,000-ADU pits (SNR ~10 on the 450-ADU EMCCD background) 2.5-5 px apart.

    Measured, recall off -> on (unmatched detections per true spot off -> on; RMS error on):
    sigma 1.2: 2.5 px 0.18 -> 0.94 (0.32 -> 0.031; 0.38 px), 3 px 0.19 -> 1.00 (0.31 -> 0.004;
    0.32), 4 px 0.84 -> 1.00 (0.07 -> 0.004; 0.36), 5 px 1.00 -> 1.00 (0 -> 0.004; 0.26);
    sigma 1.45: 0.13 -> 0.85 (0.38 -> 0.086; 0.43), 0.05 -> 0.98 (0.45 -> 0.008; 0.37),
    0.27 -> 1.00 (0.32 -> 0.008; 0.29), 0.93 -> 1.00 (0.03 -> 0; 0.34). RMS error without
    mixtures, of the members found: 0.85, 0.79, 0.48, 0.26 px and 0.90, 0.92, 0.78, 0.47 px.
    """
    for sep in (2.5, 3.0, 4.0, 5.0):
        rec_off, extra_off, rmse_off = score(sigma, sep, None)
        rec_on, extra_on, rmse_on = score(sigma, sep, MIX)
        assert rec_on >= (0.8 if sep == 2.5 else 0.95), (sep, rec_on)
        assert extra_on <= (0.12 if sep == 2.5 else 0.025), (sep, extra_on)
        assert rmse_on <= (0.5 if sep == 2.5 else 0.4), (sep, rmse_on)
        if sep <= 3:  # one Gaussian per pair without mixtures: at most one member found
            assert rec_off <= 0.3 and rec_on - rec_off >= 0.6 and extra_off > 0.25, (sep, rec_off, rec_on)
        else:
            assert rec_on >= rec_off and rmse_on <= rmse_off


@pytest.mark.parametrize("sigma", [1.2, 1.45])
def test_lone_spots_rarely_split(sigma):
    """Lone spots of 1,000-10,000 ADU: detections within 4 px of a spot beyond the first,
    per spot. Measured: 0.004 (sigma 1.2) and 0 (1.45) over 256 spots; without the
    shot-noise weighting of the F-test it was 0.008 and 0.016."""
    rng = np.random.default_rng(7)
    extra = found = n = 0
    for _ in range(4):
        img, truth = pair_frame(sigma, None, lambda k: np.geomspace(1000, 10000, k), rng)
        det = detect_frame(img, sigma=sigma, alpha=DetectionConfig().alpha, mixture=MIX)
        near = cKDTree(det[["x", "y"]].to_numpy()).query_ball_point(truth[["x", "y"]].to_numpy(), 4.0)
        counts = np.array([len(v) for v in near])
        extra, found, n = extra + np.maximum(counts - 1, 0).sum(), found + np.sum(counts >= 1), n + len(truth)
    assert found / n > 0.93  # the spots themselves (some 1,000-ADU ones are missed at alpha 0.01)
    assert extra / n <= 0.02


def test_single_spot_path_is_bit_identical_when_no_mixture_is_accepted(monkeypatch):
    """Mixtures on vs off on a frame of lone spots: identical tables, although some windows
    were tried (their residual scores passed the preselection) and rejected."""
    rng = np.random.default_rng(11)
    img, _ = pair_frame(1.2, None, lambda k: rng.uniform(800, 3000, k), rng)
    tried = []
    real = D.fit_mixtures

    def spy(data, *args, **kwargs):
        out = real(data, *args, **kwargs)
        tried.append((len(data), len(out[0])))
        return out

    monkeypatch.setattr(D, "fit_mixtures", spy)
    off = detect_frame(img, sigma=1.2, alpha=0.01, mixture=None)
    on = detect_frame(img, sigma=1.2, alpha=0.01, mixture=MIX)
    assert len(off) > 55 and tried and tried[0][0] >= 1 and tried[0][1] == 0
    pd.testing.assert_frame_equal(off, on, check_exact=True)


def test_fit_mixtures_recovers_a_noiseless_pair_exactly():
    """Two Gaussians 2.4 px apart (sampled, the model's own shape) on a flat background: the
    single fit lands between them; the 2-source fit returns the true positions and
    amplitudes, the F-test accepts it, and a third source is not added."""
    sigma, w = 1.3, 6
    yy, xx = np.mgrid[-w:w + 1, -w:w + 1].astype(float)
    truth = [(-0.9, 0.7, 1500.0), (1.1, -0.63, 900.0)]
    img = 300.0 + sum(a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)) for x, y, a in truth)
    img = img + np.random.default_rng(0).normal(0, 1.0, img.shape)  # tiny noise: the F-test needs an RSS
    canvas = np.full((41, 41), 300.0)
    canvas[20 - w:21 + w, 20 - w:21 + w] = img
    single = D.fit_gaussians(canvas, [20.0], [20.0], sigma, A0=[1000.0], c0=[300.0])
    assert abs(single.x[0] - 20) < 0.5 and single.RSS[0] > 1e4  # one source cannot explain it
    data, wts = D.extract_windows(canvas, np.array([20]), np.array([20]), w)
    rows, mix = D.fit_mixtures(data, wts, np.array([20]), np.array([20]), single, sigma, mixture_alpha=1e-4)
    assert rows.tolist() == [0, 0]
    got = sorted(zip(mix.x - 20, mix.y - 20, mix.A))
    for (x, y, a), (gx, gy, ga) in zip(sorted(truth), got):
        assert gx == pytest.approx(x, abs=5e-3) and gy == pytest.approx(y, abs=5e-3)
        assert ga == pytest.approx(a, abs=3.0)
    assert np.all(mix.pval_A < 1e-6) and mix.c[0] == pytest.approx(300.0, abs=0.5)


def test_elongation_score_is_rayleigh_on_noise():
    """Pure Gaussian-noise residuals: sqrt(T) with T ~ chi^2(2), so P(score > 3) = exp(-4.5)."""
    rng = np.random.default_rng(3)
    w, sigma, n = 5, 1.2, 6000
    coords = np.arange(-w, w + 1, dtype=float)
    res = rng.normal(0, 50.0, (n, (2 * w + 1) ** 2))
    wts = np.ones_like(res)
    z = D._elongation_z(res, wts, np.full(n, 50.0), rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n),
                        coords, sigma)
    assert np.mean(z > 3) == pytest.approx(math.exp(-4.5), abs=0.004)
    assert np.mean(z > 2) == pytest.approx(math.exp(-2.0), abs=0.015)


def test_mixture_config_keys_are_checked():
    cfg = DetectionConfig.from_dict({"max_components": 2, "mixture_alpha": 0.01})
    assert cfg.mixture_kwargs() == {"max_components": 2, "mixture_alpha": 0.01, "min_separation": 1.0, "z": 3.0}
    assert DetectionConfig.from_dict({"mixture": False}).mixture_kwargs() is None
    assert DetectionConfig.from_dict({"max_components": 1}).mixture_kwargs() is None
    for bad in ({"mixture_alpha": 0.0}, {"max_components": 0}, {"max_components": 2.5}, {"max_components": 9},
                {"mixture_z": -1.0}, {"sigma_frames": 0}):
        with pytest.raises(D.InputError):
            DetectionConfig.from_dict(bad)


def test_mixture_sources_stay_on_the_mask_and_apart():
    """Every detection of a dense frame (1 pit per 300 px^2, pairs included) lies on the
    1-px-dilated prefilter mask and no two are closer than sigma."""
    rng = np.random.default_rng(5)
    n, sigma = 200, 1.45
    xs, ys = rng.uniform(8, 248, n), rng.uniform(8, 248, n)
    img = emccd(render((256, 256), xs, ys, rng.uniform(1500, 5000, n), sigma, 450), rng)
    det = detect_frame(img, sigma=sigma, alpha=0.01, mixture=MIX)
    pf = D.prefilter(img.astype(float), sigma, 0.01)  # the mask as detect_frame widens it
    maxima = D.local_maxima(pf.log, 2 * math.ceil(sigma) + 1)
    mask = pf.mask | (pf.log >= pf.log[maxima & pf.mask].min())
    grown = ndimage.binary_dilation(mask, np.ones((3, 3), bool))
    assert grown[np.round(det["y"]).astype(int), np.round(det["x"]).astype(int)].all()
    d, _ = cKDTree(det[["x", "y"]].to_numpy()).query(det[["x", "y"]].to_numpy(), 2)
    assert d[:, 1].min() >= sigma * MIX["min_separation"] - 1e-9
    truth = pd.DataFrame({"frame": 0, "x": xs, "y": ys})
    det["frame"] = 0
    m = acc.match_detections(det, truth, 1.0)
    assert len(m) / len(det) >= 0.97 and len(m) / n >= 0.9
