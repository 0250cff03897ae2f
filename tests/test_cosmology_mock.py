"""Mock convergence maps against theory and against real maps: measured power vs the input
C_ell (chi^2), lognormal one-point statistics (skewness 3y + y^3, kappa >= -kappa_0, PDF),
Gaussian peak counts vs Bond & Efstathiou (1987), shape noise and smoothing conventions,
seeding, and std/skewness/peaks/power of real MassiveNuS and Columbia maps."""
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.fft as sfft
from scipy.ndimage import gaussian_filter
from scipy.special import erfc
from scipy.stats import kstest, skew

from domains.cosmology import theory
from domains.cosmology.fits_io import read_convergence_map
from domains.cosmology.mock import (MapGenerator, cosmology_seed, generate_map, measure_power, resolve_cosmology,
                                    shape_noise_sigma, smooth_map)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-kappa"
FID = dict(omega_m=0.3, a_s=2.1, m_nu=0.0)
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real convergence maps not found at {REAL}")


def fid_cl(ell):
    return theory.kappa_cl(ell, **FID)


def interior_peaks(m):
    """Values of strict 8-neighbour maxima on interior pixels (AWD/Ribli convention)."""
    c = m[1:-1, 1:-1]
    ok = np.ones(c.shape, bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx or dy:
                ok &= c > m[1 + dx:m.shape[0] - 1 + dx, 1 + dy:m.shape[1] - 1 + dy]
    return c[ok]


def full_plane_ell(n, side_deg):
    lx = 2 * np.pi * sfft.fftfreq(n, d=math.radians(side_deg) / n)
    return np.hypot(lx[:, None], lx[None, :])


def bin_mean(values, ell, edges):
    idx = np.digitize(ell.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    return np.bincount(idx[ok], values.ravel()[ok], len(edges) - 1) / np.bincount(idx[ok], minlength=len(edges) - 1)


def expected_power(gen):
    """Exact expected power of the output grid: input C per mode, and for 2x2 block means the
    sum over the 4 aliases of cos^2(pi kx/N) cos^2(pi ky/N) C (block-mean window)."""
    n, side = gen.npix, gen.side_deg
    c = fid_cl(full_plane_ell(n, side)) * theory.resolution_transfer(full_plane_ell(n, side))
    c[0, 0] = 0
    if gen.rebin == 1:
        return c
    assert gen.rebin == 2
    k = sfft.fftfreq(n, d=1.0 / n)
    window = np.cos(np.pi * k / n) ** 2
    folded = (c * window[:, None] * window[None, :]).reshape(2, n // 2, 2, n // 2)
    # fftfreq order: index i and i + n/2 are aliases of the same coarse mode
    return folded.sum(axis=(0, 2))


def power_chi2(gen, n_maps, seed0, expected_grid=None):
    """chi^2 of the mean binned power of n_maps maps against the binned expectation."""
    maps = np.array([gen.generate(seed0 + i) for i in range(n_maps)])
    n, side = gen.npix_out, gen.side_deg
    edges = np.geomspace(180.0, 0.6 * math.pi * n / math.radians(side), 12)  # up to 0.6 Nyquist
    per_map = np.array([measure_power(m, side_deg=side, ell_edges=edges)[1] for m in maps])
    _, _, n_modes = measure_power(maps[0], side_deg=side, ell_edges=edges)
    grid = expected_power(gen) if expected_grid is None else expected_grid
    expected = bin_mean(grid, full_plane_ell(n, side), edges)
    mean, sd = per_map.mean(0), per_map.std(0, ddof=1)
    chi2 = float((((mean - expected) / (sd / math.sqrt(n_maps))) ** 2).sum())
    return chi2, len(edges) - 1, sd / mean / np.sqrt(2.0 / n_modes)


@pytest.mark.parametrize("kappa0, npix, rebin", [(None, 128, 1), (0.026, 128, 1), (0.026, 256, 2), (None, 256, 2)])
def test_mean_power_matches_input_cl(kappa0, npix, rebin):
    gen = MapGenerator(fid_cl, npix=npix, side_deg=3.5, kappa0=kappa0, rebin=rebin)
    chi2, nbins, scatter = power_chi2(gen, 200, seed0=10)
    # notes' bound n + 3 sqrt(2n); lognormal bins are correlated (non-Gaussian covariance), which
    # widens the distribution of this diagonal chi^2 (over seeds: 4-23 for 11 bins), hence 4 sqrt(2n)
    width = 3 if kappa0 is None else 4
    assert chi2 < nbins + width * math.sqrt(2 * nbins), chi2
    if kappa0 is None:  # Gaussian single-map scatter is sqrt(2 / N_modes)
        np.testing.assert_allclose(scatter, 1.0, atol=0.2)


def test_rebinned_power_is_not_the_unwindowed_input():
    # the chi^2 test has teeth: ignoring the block-mean window and aliasing fails it badly
    gen = MapGenerator(fid_cl, npix=256, side_deg=3.5, kappa0=None, rebin=2)
    ell = full_plane_ell(128, 3.5)
    unwindowed = fid_cl(ell) * theory.resolution_transfer(ell)
    chi2, nbins, _ = power_chi2(gen, 200, seed0=10, expected_grid=unwindowed)
    assert chi2 > 10 * (nbins + 3 * math.sqrt(2 * nbins)), chi2


@pytest.mark.parametrize("kappa0", [0.026, 0.015])
def test_lognormal_one_point_statistics(kappa0):
    gen = MapGenerator(fid_cl, npix=128, side_deg=3.5, kappa0=kappa0)
    maps = np.array([gen.generate(1000 + i) for i in range(100)], dtype=np.float64)
    area = math.radians(3.5) ** 2
    variance = fid_cl(full_plane_ell(128, 3.5)) * theory.resolution_transfer(full_plane_ell(128, 3.5))
    variance[0, 0] = 0
    sigma2 = variance.sum() / area  # sigma_0^2 = sum over grid modes of C / A
    y = math.sqrt(sigma2) / kappa0
    values = maps.ravel()
    per_map_skew = np.array([skew(m.ravel()) for m in maps])
    assert skew(values) == pytest.approx(3 * y + y ** 3, abs=4 * per_map_skew.std() / 10)
    assert values.var() == pytest.approx(sigma2, abs=4 * maps.var(axis=(1, 2)).std() / 10)
    assert values.min() >= -kappa0
    assert abs(values.mean()) < 0.01 * math.sqrt(sigma2)
    # kappa + kappa_0 is lognormal with sigma_G^2 = ln(1 + sigma^2 / kappa_0^2)
    sg2 = math.log1p(sigma2 / kappa0 ** 2)
    z = (np.log1p(values / kappa0) + sg2 / 2) / math.sqrt(sg2)
    assert kstest(z, "norm").statistic < 0.005


def bond_efstathiou_counts(c_grid, area, edges_nu, n_nu=20001):
    """Expected peaks per map in nu = kappa/sigma_0 bins for a Gaussian field with grid power
    c_grid (full plane), Bond & Efstathiou (1987)."""
    ell = c_grid["ell"]
    s0, s1, s2 = (math.sqrt((ell ** (2 * n) * c_grid["cl"]).sum() / area) for n in range(3))
    gam, theta2 = s1 ** 2 / (s0 * s2), 2 * s1 ** 2 / s2 ** 2
    a = 1 - gam ** 2
    nu = np.linspace(edges_nu[0], edges_nu[-1], n_nu)
    x = gam * nu
    g = ((x ** 2 - gam ** 2) * (1 - 0.5 * erfc(x / math.sqrt(2 * a)))
         + x * a * np.exp(-x ** 2 / (2 * a)) / math.sqrt(2 * math.pi * a)
         + np.exp(-x ** 2 / (3 - 2 * gam ** 2)) / math.sqrt(3 - 2 * gam ** 2)
         * (1 - 0.5 * erfc(x / math.sqrt(2 * a * (3 - 2 * gam ** 2)))))
    density = np.exp(-nu ** 2 / 2) * g / ((2 * math.pi) ** 1.5 * theta2)
    cumulative = np.concatenate([[0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(nu))]) * area
    total = area / (4 * math.sqrt(3) * math.pi * theta2)
    return np.diff(np.interp(edges_nu, nu, cumulative)), total, s0


def test_gaussian_peak_counts_follow_bond_efstathiou():
    n, side, sigma = 512, 3.5, 2.0  # 2 arcmin smoothing, far above the 0.41 arcmin pixel
    gen = MapGenerator(fid_cl, npix=n, side_deg=side, kappa0=None, smoothing_arcmin=sigma)
    maps = [gen.generate(500 + i) for i in range(100)]
    ell = full_plane_ell(n, side)
    cl = fid_cl(ell) * theory.resolution_transfer(ell) * np.exp(-(ell * math.radians(sigma / 60)) ** 2)
    cl[0, 0] = 0
    edges = np.linspace(-2.0, 4.0, 13)
    expected, total, s0 = bond_efstathiou_counts({"ell": ell, "cl": cl}, math.radians(side) ** 2, edges)
    interior = ((n - 2) / n) ** 2
    assert expected.sum() == pytest.approx(total, rel=0.01)  # bins cover almost all peaks
    counts = np.array([np.histogram(interior_peaks(m) / s0, edges)[0] for m in maps])
    totals = np.array([len(interior_peaks(m)) for m in maps])
    assert totals.mean() == pytest.approx(total * interior, abs=4 * totals.std() / 10 + 0.005 * total)
    pulls = (counts.mean(0) - expected * interior) / (counts.std(0, ddof=1) / 10)
    assert np.all(np.abs(pulls) < 3.5), pulls


def test_shape_noise_convention_and_flat_spectrum():
    # cosmology notes' table: sigma_e = 0.4, 256^2 over 3.5 deg (A_pix = 0.673 arcmin^2)
    assert shape_noise_sigma(0.4, 26, 3.5 * 60 / 256) == pytest.approx(0.068, abs=1e-3)
    assert shape_noise_sigma(0.4, 8, 3.5 * 60 / 256) == pytest.approx(0.122, abs=1e-3)
    assert shape_noise_sigma(0.4, 8, 3.5 * 60 / 512) == pytest.approx(0.244, abs=1e-3)
    gen = MapGenerator(lambda ell: np.zeros_like(ell), npix=128, side_deg=3.5, kappa0=None, rebin=2,
                       shape_noise={"sigma_e": 0.4, "n_gal": 26.0})
    maps = np.array([gen.generate(i) for i in range(40)])
    sig = shape_noise_sigma(0.4, 26.0, 3.5 * 60 / 64)
    assert maps.std() == pytest.approx(sig, rel=0.01)
    edges = np.geomspace(200, 6000, 8)
    _, cb, _ = measure_power(maps, side_deg=3.5, ell_edges=edges)
    np.testing.assert_allclose(cb, sig ** 2 * math.radians(3.5 / 64) ** 2, rtol=0.06)  # N = sigma^2 A_pix


def test_smoothing_is_a_gaussian_with_sigma_in_arcmin():
    rng = np.random.default_rng(3)
    m = rng.standard_normal((96, 96))
    got = smooth_map(m, pixel_arcmin=0.5, sigma_arcmin=1.5)
    want = gaussian_filter(m, sigma=3.0, mode="wrap", truncate=10)  # sigma in pixels
    np.testing.assert_allclose(got, want, atol=1e-8)
    # generate_map applies it as the last step: smoothing a saved unsmoothed map gives the same
    kw = dict(npix=64, side_deg=1.0, kappa0=None)
    raw = generate_map(fid_cl, seed=7, **kw)
    smoothed = generate_map(fid_cl, seed=7, smoothing_arcmin=2.0, **kw)
    np.testing.assert_allclose(smoothed, smooth_map(raw, pixel_arcmin=60 / 64, sigma_arcmin=2.0), atol=1e-14)


def test_seeding_is_deterministic_and_per_cosmology():
    params = resolve_cosmology(3)
    a = generate_map(3, npix=64, side_deg=3.5, seed=cosmology_seed(1, params, 5), rebin=2)
    b = generate_map(params, npix=64, side_deg=3.5,
                     seed=cosmology_seed(1, params, 5), rebin=2)
    np.testing.assert_array_equal(a, b)
    c = generate_map(3, npix=64, side_deg=3.5, seed=cosmology_seed(1, params, 6), rebin=2)
    d = generate_map(3, npix=64, side_deg=3.5, seed=cosmology_seed(2, params, 5), rebin=2)
    assert not np.allclose(a, c) and not np.allclose(a, d)
    # the seed depends on the cosmology's parameters, not on its position in a list
    assert cosmology_seed(1, params, 5).spawn_key == (7024, 20235, 23075, 5)


def test_cosmology_response_of_the_maps():
    # sigma_kappa rises with Omega_m at fixed A_s (about Omega_m^1.6) and with A_s
    def sigma(**p):
        gen = MapGenerator(dict(p), npix=128, side_deg=3.5, rebin=2)
        return np.mean([gen.generate(i).std() for i in range(20)])

    base = sigma(omega_m=0.3, a_s=2.1)
    slope = math.log(sigma(omega_m=0.36, a_s=2.1) / base) / math.log(0.36 / 0.3)
    assert 1.2 < slope < 2.0
    assert sigma(omega_m=0.3, a_s=2.5) > base


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError):
        MapGenerator(fid_cl, npix=64, side_deg=3.5)  # 'calibrated' kappa0 needs a cosmology
    with pytest.raises(ValueError):
        MapGenerator(0, npix=64, side_deg=3.5, rebin=3)
    with pytest.raises(ValueError):
        MapGenerator({"omega_m": 0.3}, npix=64, side_deg=3.5)
    with pytest.raises(ValueError):
        MapGenerator(0, npix=64, side_deg=3.5, shape_noise={"sigma": 0.3, "n_gal": 10})


# --- mocks against real maps at the same geometry ---------------------------------------


def map_stats(maps):
    maps = np.asarray(maps, dtype=np.float64)
    return (maps.std(axis=(1, 2)), np.array([skew(m.ravel()) for m in maps]),
            np.array([len(interior_peaks(m)) for m in maps]))


@needs_real
def test_mocks_match_the_real_massivenus_fiducial_map():
    """320^2 cut-out at 0.41 arcmin (3.5 deg / 512), z_s = 1; massless fiducial theory."""
    real, _ = read_convergence_map(REAL / "massivenus_fiducial_z1_320px.fits", target_size=None)
    gen = MapGenerator(theory.MASSLESS_FIDUCIAL_INDEX, npix=320, side_deg=320 * 3.5 / 512)
    std, skw, peaks = map_stats([gen.generate(cosmology_seed(0, gen.params, r)).astype(np.float32)
                                 for r in range(40)])
    r_std, r_skw, r_peaks = (v[0] for v in map_stats([real]))
    assert r_std == pytest.approx(0.0183, abs=1e-4) and r_peaks == 2939
    for mock_values, value in ((std, r_std), (skw, r_skw), (peaks, r_peaks)):
        assert abs(value - mock_values.mean()) < 3 * mock_values.std()
    assert r_peaks == pytest.approx(peaks.mean(), rel=0.10)


@needs_real
def test_mock_power_follows_the_real_map_with_the_resolution_transfer():
    real, _ = read_convergence_map(REAL / "massivenus_fiducial_z1_320px.fits", target_size=None)
    side = 320 * 3.5 / 512
    edges = np.geomspace(2000, 16000, 7)
    mid, cb, _ = measure_power(real.astype(np.float64), side_deg=side, ell_edges=edges)
    theory_cl = theory.kappa_cl(mid, **FID)
    np.testing.assert_allclose(cb / (theory_cl * theory.resolution_transfer(mid)), 1.0, atol=0.15)
    assert cb[-1] / theory_cl[-1] < 0.25  # without T(ell) the theory is far too high


@needs_real
def test_mocks_resemble_the_real_columbia_map_at_awd_resolution():
    """256^2 at 0.82 arcmin (512^2 generated, 2x2 block means), as AWD's data. The Columbia map
    comes from another suite with finer resolution and an unstated cosmology (Gupta et al.
    fiducial: Omega_m 0.26, sigma8 0.8), so the tolerances are 20 %."""
    real, _ = read_convergence_map(REAL / "columbia_z1_256px.fits", target_size=None)
    gen = MapGenerator(theory.MASSLESS_FIDUCIAL_INDEX, npix=512, side_deg=3.5, rebin=2)
    std, skw, peaks = map_stats([gen.generate(cosmology_seed(0, gen.params, r)).astype(np.float32)
                                 for r in range(20)])
    r_std, r_skw, r_peaks = (v[0] for v in map_stats([real]))
    assert (r_std, r_peaks) == (pytest.approx(0.0156, abs=1e-4), 3207)
    assert r_std == pytest.approx(std.mean(), rel=0.20)
    assert r_peaks == pytest.approx(peaks.mean(), rel=0.20)
    assert r_skw == pytest.approx(skw.mean(), abs=0.5)
