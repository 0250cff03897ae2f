"""The CME movie simulator against its own parameters, camera/PSF theory and its truth tables."""
from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, ndimage, stats

from awd.io import InputError
from domains.cme.tracking import simulate as sim
from domains.cme.tracking.movie_io import read_movie, scan_cell_tree

SMALL = sim.SimulationConfig(height=128, width=128, n_frames=100)


@pytest.fixture(scope="module")
def cell() -> sim.SimulatedCell:
    return sim.simulate_cell(SMALL, 11)


@pytest.fixture(scope="module")
def long_cell() -> sim.SimulatedCell:
    return sim.simulate_cell(replace(SMALL, n_frames=300), 21)


# ----------------------------------------------------------------------------- config


def test_config_from_dict_round_trip_and_errors():
    cfg = sim.SimulationConfig.from_dict({"height": 64, "mask_coverage": [0.6, 0.7], "camera": "scmos"})
    assert cfg.height == 64 and cfg.mask_coverage == (0.6, 0.7) and cfg.camera == "scmos"
    assert sim.SimulationConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="unknown simulator settings"):
        sim.SimulationConfig.from_dict({"heigth": 64})
    with pytest.raises(InputError, match="sum to 1"):
        sim.SimulationConfig.from_dict({"share_dim": 0.5})
    with pytest.raises(InputError, match="camera"):
        sim.SimulationConfig.from_dict({"camera": "ccd"})
    with pytest.raises(InputError, match="pair"):
        sim.SimulationConfig.from_dict({"dim_peak": [1000, 500]})
    with pytest.raises(InputError, match="height"):
        sim.SimulationConfig.from_dict({"height": 2.5})


# ----------------------------------------------------------------------------- distributions


def test_lifetime_samplers_match_their_distributions():
    cfg = sim.SimulationConfig()
    rng = np.random.default_rng(0)
    n = 20_000
    # productive: log-normal clipped to [8, 250] s -> point masses at the clips, log-normal inside
    x = sim.sample_lifetimes_s(cfg, "productive", n, rng)
    lo, hi = cfg.productive_lifetime_range_s
    dist = stats.lognorm(cfg.productive_lifetime_sigma, scale=cfg.productive_lifetime_median_s)
    for observed, p in ((np.mean(x == lo), dist.cdf(lo)), (np.mean(x == hi), dist.sf(hi))):
        assert abs(observed - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-4
    inside = x[(x > lo) & (x < hi)]
    truncated = lambda v: (dist.cdf(v) - dist.cdf(lo)) / (dist.cdf(hi) - dist.cdf(lo))
    assert stats.kstest(inside, truncated).pvalue > 1e-3
    # abortive: mixture of a shifted exponential and a log-normal subgroup
    x = sim.sample_lifetimes_s(cfg, "abortive", n, rng)
    p = cfg.abortive_long_fraction
    mixture = lambda v: ((1 - p) * stats.expon.cdf(v, loc=cfg.abortive_lifetime_offset_s,
                                                   scale=cfg.abortive_lifetime_mean_s)
                         + p * stats.lognorm.cdf(v, cfg.abortive_long_sigma,
                                                 scale=cfg.abortive_long_median_s))
    assert stats.kstest(x, mixture).pvalue > 1e-3
    for name, (a, b) in (("dim", cfg.dim_lifetime_s), ("hotspot", cfg.hotspot_lifetime_s)):
        x = sim.sample_lifetimes_s(cfg, name, n, rng)
        assert stats.kstest(x, stats.uniform(a, b - a).cdf).pvalue > 1e-3
    # the shifted-exponential part alone would fail: the test can tell the distributions apart
    assert stats.kstest(sim.sample_lifetimes_s(cfg, "abortive", n, rng),
                        stats.expon(loc=2, scale=6).cdf).pvalue < 1e-6


def test_truth_tables_follow_the_parameters():
    cfg = sim.SimulationConfig(height=160, width=160, n_frames=300)
    cells = [sim.simulate_cell(cfg, seed) for seed in (1, 2)]
    tracks = pd.concat([c.truth_tracks for c in cells])
    born = tracks[(tracks["birth_frame"] >= 0) & (tracks["class"] != "aux_only")]
    # class shares among births inside the movie (no visibility bias there)
    counts = born["class"].value_counts().reindex(list(sim.CLASSES[:4]), fill_value=0).to_numpy()
    assert stats.chisquare(counts, np.asarray(cfg.shares) * counts.sum()).pvalue > 1e-3
    # mean productive lifetime: clipped log-normal mean, by quadrature
    prod = born.loc[born["class"] == "productive", "lifetime_s"].to_numpy()
    lo, hi = cfg.productive_lifetime_range_s
    dist = stats.lognorm(cfg.productive_lifetime_sigma, scale=cfg.productive_lifetime_median_s)
    expected = lo * dist.cdf(lo) + hi * dist.sf(hi) + integrate.quad(lambda v: v * dist.pdf(v), lo, hi)[0]
    assert abs(prod.mean() - expected) < 4 * prod.std() / math.sqrt(prod.size)
    # spots present per frame per px^2 of cell
    for c in cells:
        det = c.truth_detections
        per_frame = det[det["class"] != "aux_only"].groupby("frame").size()
        density = per_frame.mean() / c.mask.sum()
        assert density == pytest.approx(cfg.density, rel=0.12)
        assert c.mask.mean() == pytest.approx(c.info["mask_coverage"])
        assert cfg.mask_coverage[0] <= c.mask.mean() <= cfg.mask_coverage[1]


def test_density_is_alive_pits_per_px2_of_cell():
    """``density`` sets the clathrin spots alive per px^2 of cell mask in every frame, at both
    ends of the real range, whatever the mask covers: measured on the truth of seeded 512^2 x
    300-frame cells (each draws its own mask coverage in 0.6-0.9), within 5 % on average and
    10 % per cell (the sampling sd is ~3 % per cell, mostly from the long hotspots)."""
    for density in (0.0017, 0.0037):
        cfg = sim.SimulationConfig(height=512, width=512, n_frames=300, density=density, mask_coverage=(0.6, 0.9))
        measured = []
        for seed in range(4):
            c = sim.simulate_cell(cfg, seed, render=False)
            det = c.truth_detections[c.truth_detections["class"] != "aux_only"]
            per_frame = det.groupby("frame").size().reindex(range(cfg.n_frames), fill_value=0)
            measured.append(per_frame.mean() / c.mask.sum())
            # steady state: births per frame x mean lifetime in frames = alive spots
            assert c.info["birth_rate_per_frame"] == pytest.approx(
                density * c.mask.sum() / sim.expected_lifetime_frames(cfg), rel=1e-12)
        assert np.mean(measured) == pytest.approx(density, rel=0.05)
        np.testing.assert_allclose(measured, density, rtol=0.10)


def test_render_false_gives_the_same_truth():
    cfg = replace(SMALL, height=64, width=64, n_frames=30)
    full, bare = sim.simulate_cell(cfg, 8), sim.simulate_cell(cfg, 8, render=False)
    assert bare.movie is None and full.movie is not None and bare.info == full.info
    pd.testing.assert_frame_equal(bare.truth_tracks, full.truth_tracks)
    pd.testing.assert_frame_equal(bare.truth_detections, full.truth_detections)
    np.testing.assert_array_equal(bare.mask, full.mask)


def test_snr_is_amplitude_over_the_local_pixel_noise_of_the_movie(cell):
    """``noise_sd_clathrin`` is the sd of the movie's pixel at a spot's position in frames with
    no true spot within 6 px (background only), and ``snr_clathrin`` = A / that sd."""
    det, movie = cell.truth_detections, cell.movie.data[:, 0].astype(float)
    np.testing.assert_allclose(det["snr_clathrin"], det["A_clathrin"] / det["noise_sd_clathrin"])
    np.testing.assert_allclose(det["snr_auxilin"], det["A_auxilin"] / det["noise_sd_auxilin"])
    T, H, W = movie.shape
    near = np.zeros((T, H, W), bool)  # pixels within 6 px of any spot (either channel)
    yy, xx = np.mgrid[-6:7, -6:7]
    disk = np.hypot(yy, xx) <= 6
    for f, x, y in det[["frame", "x", "y"]].itertuples(index=False):
        cy, cx = int(round(y)), int(round(x))
        y0, x0 = max(cy - 6, 0), max(cx - 6, 0)
        y1, x1 = min(cy + 7, H), min(cx + 7, W)
        near[f, y0:y1, x0:x1] |= disk[y0 - cy + 6:y1 - cy + 6, x0 - cx + 6:x1 - cx + 6]
    inner = ndimage.binary_erosion(cell.mask, iterations=6)
    spots = det.drop_duplicates("track_id")
    ratios, levels = [], []
    g, read = SMALL.gain_adu_per_e, SMALL.read_noise_adu
    for f, x, y, sd in spots[["frame", "x", "y", "noise_sd_clathrin"]].itertuples(index=False):
        cy, cx = int(round(y)), int(round(x))
        if not (0 <= cy < H and 0 <= cx < W and inner[cy, cx]):
            continue
        free = movie[~near[:, cy, cx], cy, cx]
        if free.size >= 30:
            ratios.append(free.var(ddof=1) / sd ** 2)
            # the background level behind the sd (EMCCD: sd^2 = 2 g level + read^2)
            levels.append((free.mean() - SMALL.offset_adu) / ((sd ** 2 - read ** 2) / (2 * g)))
    ratios, levels = np.array(ratios), np.array(levels)
    assert ratios.size > 100
    assert ratios.mean() == pytest.approx(1.0, abs=4 * ratios.std() / math.sqrt(ratios.size))
    assert 0.9 < ratios.mean() < 1.1
    assert levels.mean() == pytest.approx(1.0, abs=0.02)


def test_truth_table_internal_consistency(cell):
    tracks, det = cell.truth_tracks, cell.truth_detections
    by_class = tracks.groupby("class")
    assert (by_class.get_group("abortive")["A_max_auxilin"] == 0).all()
    assert (by_class.get_group("dim")["A_max_auxilin"] == 0).all()
    assert (by_class.get_group("aux_only")["A_max_clathrin"] == 0).all()
    prod = by_class.get_group("productive")
    assert (prod["n_bursts"] >= 1).all() and prod["aux_positive"].all() and prod["is_productive"].all()
    complete = prod[prod["visibility"] == 1]
    before_end = complete["birth_frame"] + complete["lifetime_frames"] - 1 - complete["aux_peak_frame"]
    assert before_end.between(0, math.ceil(SMALL.frames(SMALL.aux_peak_before_end_s[1]))).all()
    assert (complete["scission_frame"] < complete["aux_peak_frame"]).all()
    # Y_sig_mean_true = mean true auxilin over the frames above the significance level
    sig = det[det["A_auxilin"] > cell.info["aux_significance_adu"]]
    np.testing.assert_array_equal(sig.index, det.index[det["in_burst"]])
    y = sig.groupby("track_id")["A_auxilin"].mean().reindex(tracks["track_id"], fill_value=0.0)
    np.testing.assert_allclose(tracks["Y_sig_mean_true"], y.to_numpy(), rtol=1e-12)
    # visible frames and the per-frame table agree
    n = det.groupby("track_id").size().reindex(tracks["track_id"]).to_numpy()
    np.testing.assert_array_equal(n, tracks["n_visible"])
    assert det["frame"].between(0, SMALL.n_frames - 1).all()
    # per-track SNR maximum and burst timing agree with the per-frame table
    g = det.groupby("track_id")
    np.testing.assert_array_equal(tracks["snr_max_clathrin"], g["snr_clathrin"].max().reindex(tracks["track_id"]))
    burst = det[det["in_burst"]].groupby("track_id")["frame"]
    np.testing.assert_array_equal(tracks["first_burst_frame"], burst.min().reindex(tracks["track_id"]).to_numpy(float))
    np.testing.assert_array_equal(tracks["last_burst_frame"], burst.max().reindex(tracks["track_id"]).to_numpy(float))
    assert tracks.loc[tracks["n_sig_frames"] == 0, "first_burst_frame"].isna().all()
    assert (tracks["burst_onset_frame"].notna() == (tracks["n_bursts"] > 0)).all()
    # a productive pit's first burst starts after scission and before its auxilin peak
    b = complete.set_index("track_id")
    onset = tracks.set_index("track_id").loc[b.index, "burst_onset_frame"]
    assert (onset >= b["scission_frame"] - 1e-9).all() and (onset <= b["aux_peak_frame"]).all()


def test_amplitude_parameters_and_profiles(long_cell):
    tracks = long_cell.truth_tracks
    cfg = SMALL
    by_class = dict(tuple(tracks.groupby("class")))
    log_normal = [("productive", "peak_clathrin", cfg.productive_peak_median, cfg.productive_peak_sigma),
                  ("productive", "peak_auxilin", cfg.aux_peak_median, cfg.aux_peak_sigma),
                  ("aux_only", "peak_auxilin", cfg.aux_only_peak_median, cfg.aux_only_peak_sigma)]
    for cls, column, median, sigma in log_normal:
        values = np.log(by_class[cls][column].to_numpy())
        assert stats.kstest(values, stats.norm(math.log(median), sigma).cdf).pvalue > 1e-3, (cls, column)
    for cls, (a, b) in (("dim", cfg.dim_peak), ("hotspot", cfg.hotspot_plateau)):
        assert stats.kstest(by_class[cls]["peak_clathrin"], stats.uniform(a, b - a).cdf).pvalue > 1e-3
    # one-frame spots sit exactly at their peak (sin(pi/2) = 1); longer profiles never exceed it
    for cls, column in (("dim", "clathrin"), ("aux_only", "auxilin")):
        t = by_class[cls]
        one = t[t["lifetime_frames"] == 1]
        assert len(one) > 5
        np.testing.assert_allclose(one[f"A_max_{column}"], one[f"peak_{column}"], rtol=1e-12)
        assert (t[f"A_max_{column}"] <= t[f"peak_{column}"] * (1 + 1e-12)).all()
    prod = by_class["productive"]
    assert (prod["A_max_clathrin"] <= prod["peak_clathrin"] * (1 + 1e-12)).all()
    assert (prod["A_max_auxilin"] <= prod["peak_auxilin"] * (1 + cfg.aux_double_amplitude[1])).all()


def test_brownian_motion_matches_the_diffusion_constant(long_cell):
    det, tracks = long_cell.truth_detections, long_cell.truth_tracks.set_index("track_id")
    slow = tracks[(tracks["diffusion"] == SMALL.diffusion) & tracks["class"].isin(["abortive", "hotspot"])]
    d = det[det["track_id"].isin(slow.index)].sort_values(["track_id", "frame"])
    same = d["track_id"].to_numpy()[1:] == d["track_id"].to_numpy()[:-1]
    steps = np.concatenate([np.diff(d["x"].to_numpy())[same], np.diff(d["y"].to_numpy())[same]])
    # per-axis step variance 2 D dt, chi-square spread of the sample variance
    expected = 2 * SMALL.diffusion * SMALL.frame_interval_s
    assert steps.size > 4000
    assert steps.var() == pytest.approx(expected, rel=4 * math.sqrt(2 / steps.size))
    assert abs(steps.mean()) < 4 * math.sqrt(expected / steps.size)
    # events born inside the movie start at their birth position
    born = tracks[tracks["birth_frame"] >= 0]
    first = det.groupby("track_id").first().loc[born.index]
    np.testing.assert_allclose(first[["x", "y"]].to_numpy(), born[["x0", "y0"]].to_numpy(), atol=1e-12)


# ----------------------------------------------------------------------------- camera, PSF, bleaching


@pytest.mark.parametrize("camera,signal", [("emccd", 450.0), ("emccd", 0.0), ("scmos", 450.0)])
def test_camera_noise_mean_and_variance_match_theory(camera, signal):
    cfg = sim.SimulationConfig(camera=camera)
    out = sim.camera_noise(np.full((1000, 1000), signal), cfg, np.random.default_rng(5)).astype(float)
    g = cfg.gain_adu_per_e
    if camera == "emccd":  # Poisson electrons, Gamma gain: Var = 2 g S + read^2
        var = 2 * g * signal + cfg.read_noise_adu ** 2
    else:  # Var = g S + (read_e g)^2
        var = g * signal + (cfg.scmos_read_noise_e * g) ** 2
    var += 1 / 12  # rounding to integer counts
    assert out.mean() == pytest.approx(cfg.offset_adu + signal, abs=5 * math.sqrt(var / out.size))
    assert out.var() == pytest.approx(var, rel=0.02)
    np.testing.assert_allclose(sim.pixel_noise_sd(cfg, signal) ** 2 + 1 / 12, var)


def test_psf_rendering_integrates_to_amplitude_times_area():
    sigma, amplitude = 1.2, 1000.0
    img = sim.render_spots(1, (41, 41), np.array([0]), np.array([20.3]), np.array([19.65]),
                           np.array([amplitude]), sigma)[0]
    # +-4 sigma window: only the mass beyond ~3.75 sigma per axis is left out
    assert img.sum() == pytest.approx(amplitude * 2 * np.pi * sigma ** 2, rel=1e-3)
    # each pixel = integral of the continuous Gaussian over the pixel area
    gauss = lambda y, x: amplitude * np.exp(-((x - 20.3) ** 2 + (y - 19.65) ** 2) / (2 * sigma ** 2))
    for row, col in ((20, 20), (19, 21), (22, 18)):
        ref = integrate.dblquad(gauss, col - 0.5, col + 0.5, row - 0.5, row + 0.5, epsabs=1e-10)[0]
        assert img[row, col] == pytest.approx(ref, rel=1e-7)
    # spots straddling the border are clipped, not wrapped or dropped
    edge = sim.render_spots(2, (16, 16), np.array([1]), np.array([-0.5]), np.array([8.0]),
                            np.array([amplitude]), sigma)
    assert edge[0].sum() == 0 and edge[1, :, -3:].sum() == 0
    assert edge[1].sum() == pytest.approx(amplitude * 2 * np.pi * sigma ** 2 * stats.norm.sf(0), rel=2e-3)


def test_bleaching_curve_of_the_background():
    cfg = sim.SimulationConfig(height=64, width=64, n_frames=300, density=0.0, aux_only_rate=0.0,
                               mask_coverage=(0.9, 0.9))
    cell = sim.simulate_cell(cfg, 3)
    inner = cell.mask & (np.add.reduce([np.roll(cell.mask, s, a) for s in (-4, 4) for a in (0, 1)]) == 4)
    t = np.arange(cfg.n_frames)
    for c, rate in enumerate((cfg.bleach_clathrin, cfg.bleach_auxilin)):
        level = cell.movie.data[:, c][:, inner].astype(float).mean(axis=1) - cfg.offset_adu
        slope = np.polyfit(t, np.log(level), 1)[0]
        assert -slope == pytest.approx(rate, rel=0.08)
    outside = cell.movie.data[:, :, ~cell.mask].astype(float)  # camera offset and read noise only
    assert outside.size > 10_000
    assert outside.mean() == pytest.approx(cfg.offset_adu, abs=0.5)
    assert outside.var() == pytest.approx(cfg.read_noise_adu ** 2 + 1 / 12, rel=0.05)


# ----------------------------------------------------------------------------- truth vs movie


@pytest.mark.parametrize("channel,column,sigma_name", [(0, "A_clathrin", "psf_sigma_clathrin"),
                                                       (1, "A_auxilin", "psf_sigma_auxilin")])
def test_movie_pixels_follow_the_truth(cell, channel, column, sigma_name):
    """At isolated bright truth spots, pixel minus local background = PSF model of the amplitude."""
    det, movie = cell.truth_detections, cell.movie.data
    sigma = getattr(SMALL, sigma_name)
    dx, dy = cell.info["channel_offset_px"] if channel == 1 else (0.0, 0.0)
    x, y = det["x"].to_numpy() + dx, det["y"].to_numpy() + dy
    frames = det["frame"].to_numpy()
    isolated = np.ones(len(det), dtype=bool)
    for f, idx in det.groupby("frame").indices.items():
        d = np.hypot(x[idx, None] - x[None, idx], y[idx, None] - y[None, idx])
        np.fill_diagonal(d, np.inf)
        isolated[idx] = d.min(axis=1) > 9
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    inside = (ix >= 9) & (ix < SMALL.width - 9) & (iy >= 9) & (iy < SMALL.height - 9)
    amp = det[column].to_numpy()
    in_cell = cell.mask[np.clip(iy, 0, SMALL.height - 1), np.clip(ix, 0, SMALL.width - 1)]
    pick = np.flatnonzero(isolated & inside & in_cell & (amp > 800))
    assert pick.size > 50
    yy, xx = np.mgrid[-8:9, -8:9]
    ring = (np.hypot(yy, xx) >= 6) & (np.hypot(yy, xx) <= 8)
    measured, expected = [], []
    for i in pick:
        window = movie[frames[i], channel, iy[i] - 8:iy[i] + 9, ix[i] - 8:ix[i] + 9].astype(float)
        measured.append(window[8, 8] - window[ring].mean())
        px = stats.norm.cdf(ix[i] + 0.5, x[i], sigma) - stats.norm.cdf(ix[i] - 0.5, x[i], sigma)
        py = stats.norm.cdf(iy[i] + 0.5, y[i], sigma) - stats.norm.cdf(iy[i] - 0.5, y[i], sigma)
        expected.append(amp[i] * 2 * np.pi * sigma ** 2 * px * py)
    measured, expected = np.array(measured), np.array(expected)
    residual = measured - expected
    assert abs(residual.mean()) < 4 * residual.std() / math.sqrt(pick.size)
    fit = stats.linregress(expected, measured)
    assert abs(fit.slope - 1.0) < 4 * fit.stderr and fit.stderr < 0.15


# ----------------------------------------------------------------------------- determinism, files


def _digest(c: sim.SimulatedCell) -> str:
    h = hashlib.sha256(c.movie.data.tobytes())
    h.update(pd.util.hash_pandas_object(c.truth_tracks, index=False).to_numpy().tobytes())
    h.update(pd.util.hash_pandas_object(c.truth_detections, index=False).to_numpy().tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_different_seed_differs(cell):
    cfg = replace(SMALL, n_frames=40)
    a, b, c = (sim.simulate_cell(cfg, s) for s in (4, 4, 5))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert not np.array_equal(a.movie.data, c.movie.data)
    seq = np.random.SeedSequence(4)
    assert _digest(sim.simulate_cell(cfg, seq)) == _digest(sim.simulate_cell(cfg, seq)) == _digest(a)


def test_dataset_layout_round_trip_and_threads(tmp_path):
    cfg = replace(SMALL, height=64, width=64, n_frames=30)
    one = sim.write_simulated_dataset(tmp_path / "a", cfg, n_cells=2, seed=9, threads=1)
    two = sim.write_simulated_dataset(tmp_path / "b", cfg.to_dict(), n_cells=2, seed=9, threads=2)
    assert [p.name for p in one] == ["Cell1_1s", "Cell2_1s"]
    table = scan_cell_tree(tmp_path / "a")
    assert list(table["cell"]) == ["Cell1_1s", "Cell2_1s"] and list(table["interval_s"]) == [1.0, 1.0]
    assert set(table["condition"]) == {"sim"}
    children = np.random.SeedSequence(9).spawn(2)
    for k, cell_dir in enumerate(one):
        movie = read_movie(cell_dir)
        expected = sim.simulate_cell(cfg, children[k], name=f"Cell{k + 1}")
        np.testing.assert_array_equal(movie.data, expected.movie.data)
        assert movie.frame_interval_s == 1.0 and movie.pixel_size_um == pytest.approx(0.08)
        pd.testing.assert_frame_equal(pd.read_parquet(cell_dir / "truth_tracks.parquet"),
                                      expected.truth_tracks)
        pd.testing.assert_frame_equal(pd.read_parquet(cell_dir / "truth_detections.parquet"),
                                      expected.truth_detections)
        for f in sorted(p.relative_to(cell_dir) for p in cell_dir.rglob("*.tif")):
            assert (cell_dir / f).read_bytes() == (two[k] / f).read_bytes()
    assert (tmp_path / "a" / sim.MARKER).is_file()
    # re-running replaces an earlier simulation, but never a folder it did not write
    assert len(sim.write_simulated_dataset(tmp_path / "a", cfg, n_cells=1, seed=1)) == 1
    assert not (tmp_path / "a" / "sim" / "Cell2_1s").exists()
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("lab data")
    with pytest.raises(InputError, match="not replacing"):
        sim.write_simulated_dataset(tmp_path / "real", cfg, n_cells=1, seed=1)
    assert (tmp_path / "real" / "keep.txt").read_text() == "lab data"


def test_burst_amplitude_follows_the_coat_with_the_set_correlation():
    """aux_clathrin_correlation couples a productive pit's log burst amplitude to its log
    clathrin peak with that correlation, keeps both log-normal marginals, and 0 leaves every
    draw as it was."""
    mask = np.ones((256, 256), dtype=bool)
    base = replace(SMALL, n_frames=300)
    draws = {}
    for rho in (0.0, 0.7):
        cfg = sim.SimulationConfig.from_dict({**base.to_dict(), "aux_clathrin_correlation": rho})
        events, bursts = sim._draw_events(cfg, np.random.default_rng(11), mask)  # the movie-free part
        first = bursts.groupby("event").first()
        prod = events.index[events["cls"] == 0].intersection(first.index)
        draws[rho] = (np.log(events.loc[prod, "peak"].to_numpy()), np.log(first.loc[prod, "amplitude"].to_numpy()))
    clathrin, aux = draws[0.7]
    assert len(prod) > 400
    assert abs(np.corrcoef(clathrin, aux)[0, 1] - 0.7) < 0.08
    assert abs(np.corrcoef(*draws[0.0])[0, 1]) < 0.1
    assert stats.kstest(aux, stats.norm(math.log(base.aux_peak_median), base.aux_peak_sigma).cdf).pvalue > 1e-3
    np.testing.assert_array_equal(draws[0.0][0], clathrin)  # the clathrin draws are untouched
    with pytest.raises(InputError, match="aux_clathrin_correlation"):
        sim.SimulationConfig.from_dict({"aux_clathrin_correlation": 1.5})
