"""The speed-ups of ``domains.cme.tracking.detect`` (issue 13, 512^2 frames with ~1,000 pits)
compute the same numbers as the plain formulas they replace: every comparison here is exact
(``np.array_equal``), against straightforward reference implementations written out below."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, special

from domains.cme.tracking import detect as D
from domains.cme.tracking.simulate import SimulationConfig, simulate_cell


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """One (2, 128, 128) frame of a dense simulated cell (real density, cell filling the frame)."""
    cfg = SimulationConfig(height=128, width=128, n_frames=3, density=0.0037, mask_coverage=(1.0, 1.0))
    return simulate_cell(cfg, 5).movie.data[1]


# ----------------------------------------------------------------------------- references
def plain_prefilter(img: np.ndarray, sigma: float, alpha: float):
    """The prefilter's formulas as written in cmeAnalysis (one expression each)."""
    img = np.asarray(img, dtype=np.float64)
    w, x, g1 = D._kernel(sigma)
    n = (2 * w + 1) ** 2

    def sep(a, ky, kx):
        return ndimage.correlate1d(ndimage.correlate1d(a, ky, axis=0, mode="reflect"), kx, axis=1, mode="reflect")

    fg = sep(img, g1, g1)
    fu = ndimage.uniform_filter(img, 2 * w + 1, mode="reflect") * n
    fu2 = ndimage.uniform_filter(img * img, 2 * w + 1, mode="reflect") * n
    gx2 = g1 * x ** 2
    lap = 2 * fg / sigma ** 2 - (sep(img, g1, gx2) + sep(img, gx2, g1)) / sigma ** 4
    lap /= 2 * np.pi * sigma ** 2
    g2 = np.outer(g1, g1)
    gsum, g2sum = g2.sum(), (g2 ** 2).sum()
    A = (fg - gsum * fu / n) / (g2sum - gsum ** 2 / n)
    c = (fu - A * gsum) / n
    C11 = np.linalg.inv(np.array([[g2sum, gsum], [gsum, n]]))[0, 0]
    f_c = fu2 - 2 * c * fu + n * c ** 2
    rss = np.maximum(A ** 2 * g2sum - 2 * A * (fg - c * gsum) + f_c, 0.0)
    sigma_A = np.sqrt(rss / (n - 3) * C11)
    sigma_res = np.sqrt(rss / (n - 1))
    k = special.ndtri(1 - alpha / 2)
    se_k = sigma_res / np.sqrt(2 * (n - 1)) * k
    var_sum = sigma_A ** 2 + se_k ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (n - 1) * var_sum ** 2 / (sigma_A ** 4 + se_k ** 4)
        T = (A - sigma_res * k) / np.sqrt(var_sum / n)
    T = np.nan_to_num(T, nan=-np.inf)
    df = np.nan_to_num(df, nan=n - 1.0)
    mask = special.stdtr(df, -T) < D.P_SIGNIFICANT
    return {"A": A, "c": c, "T": T, "df": df, "log": lap, "mask": mask}


def plain_local_maxima(img: np.ndarray, size: int) -> np.ndarray:
    """Maximum filter, border excluded, then every tie of the maximum in the window removed."""
    h = size // 2
    lm = img == ndimage.maximum_filter(img, size=size, mode="constant", cval=-np.inf)
    lm[:h] = lm[-h:] = False
    lm[:, :h] = lm[:, -h:] = False
    for y, x in zip(*np.nonzero(lm)):
        if np.sum(img[y - h:y + h + 1, x - h:x + h + 1] == img[y, x]) > 1:
            lm[y, x] = False
    return lm


def plain_lm_xyAc(data, wts, p0, coords, sigma, escape, max_iter=30, max_shift=1.0):
    """The batched Levenberg-Marquardt of (x, y, A, c) with per-axis 1-D formulas."""
    s2, nw = sigma ** 2, len(coords)
    out = p0.copy()
    p, lam, idx = p0.copy(), np.full(len(p0), 1e-3), np.arange(len(p0))
    d, w = data, wts

    def gauss(mu):
        dd = coords[None, :] - mu[:, None]
        return np.exp(-dd ** 2 / (2 * sigma ** 2)), dd

    def evaluate(p, d, w):
        gx, dx = gauss(p[:, 0])
        gy, dy = gauss(p[:, 1])
        r = w * (d - (p[:, 2, None, None] * (gy[:, :, None] * gx[:, None, :]) + p[:, 3, None, None]))
        return (gx, dx, gy, dy, r), np.einsum("nij,nij->n", r, r)

    state, rss = evaluate(p, d, w)
    for _ in range(max_iter):
        if idx.size == 0:
            break
        gx, dx, gy, dy, r = state
        gx2, gy2 = gx * gx, gy * gy
        Sx0, Sx1, Sx2 = gx2.sum(1), (gx2 * dx).sum(1), (gx2 * dx * dx).sum(1)
        Sy0, Sy1, Sy2 = gy2.sum(1), (gy2 * dy).sum(1), (gy2 * dy * dy).sum(1)
        Tx0, Tx1, Ty0, Ty1 = gx.sum(1), (gx * dx).sum(1), gy.sum(1), (gy * dy).sum(1)
        a = p[:, 2] / s2
        H = np.empty((len(p), 4, 4))
        H[:, 0, 0], H[:, 1, 1] = a * a * Sy0 * Sx2, a * a * Sx0 * Sy2
        H[:, 0, 1] = H[:, 1, 0] = a * a * Sx1 * Sy1
        H[:, 0, 2] = H[:, 2, 0] = a * Sy0 * Sx1
        H[:, 1, 2] = H[:, 2, 1] = a * Sx0 * Sy1
        H[:, 0, 3] = H[:, 3, 0] = a * Ty0 * Tx1
        H[:, 1, 3] = H[:, 3, 1] = a * Tx0 * Ty1
        H[:, 2, 2], H[:, 2, 3], H[:, 3, 2], H[:, 3, 3] = Sx0 * Sy0, Tx0 * Ty0, Tx0 * Ty0, nw * nw
        Rgx = np.matmul(r, gx[:, :, None])[:, :, 0]
        Rgxdx = np.matmul(r, (gx * dx)[:, :, None])[:, :, 0]
        grad = np.column_stack([a * (gy * Rgxdx).sum(1), a * (gy * dy * Rgx).sum(1), (gy * Rgx).sum(1),
                                r.sum(axis=(1, 2))])
        diag = np.einsum("nii->ni", H).copy()
        H[:, np.arange(4), np.arange(4)] += lam[:, None] * diag + 1e-12 * diag.max(1, keepdims=True) + 1e-300
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        step[:, :2] = np.clip(step[:, :2], -max_shift, max_shift)
        p_new = p + step
        state_new, rss_new = evaluate(p_new, d, w)
        better = rss_new < rss
        p[better], rss[better] = p_new[better], rss_new[better]
        for o, n_ in zip(state, state_new):
            o[better] = n_[better]
        lam = np.where(better, np.maximum(lam / 10, 1e-9), lam * 10)
        done = np.all(np.abs(step) <= D._STEP_TOL, axis=1) | (lam > 1e12) | np.any(np.abs(p[:, :2]) > escape, axis=1)
        if done.any():
            out[idx[done]] = p[done]
            keep = ~done
            p, lam, idx, rss, d, w = p[keep], lam[keep], idx[keep], rss[keep], d[keep], w[keep]
            state = tuple(o[keep] for o in state)
    out[idx] = p
    return out


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("sigma, alpha", [(1.2, 0.01), (1.45, 0.05)])
def test_prefilter_is_the_plain_formulas(frame, sigma, alpha):
    pf = D.prefilter(frame[0], sigma, alpha)
    ref = plain_prefilter(frame[0], sigma, alpha)
    for name, want in ref.items():
        assert np.array_equal(getattr(pf, name), want), name
    assert np.array_equal(pf.pval(), special.stdtr(ref["df"], -ref["T"]))
    assert pf.mask.sum() > 50  # dense frame: plenty of signal


@pytest.mark.parametrize("size", [3, 5, 7])
def test_local_maxima_equal_filter_with_tie_removal(frame, size):
    rng = np.random.default_rng(size)
    log = D.prefilter(frame[0], 1.2).log
    plateaus = np.round(rng.normal(size=(60, 70)) * 2)  # many ties of the maximum
    for img in (log, plateaus, -log):
        got, want = D.local_maxima(img, size), plain_local_maxima(img, size)
        assert np.array_equal(got, want)
        assert want.sum() > 10


def test_windows_are_the_pixels_around_each_centre(frame):
    rng = np.random.default_rng(1)
    xi, yi = rng.integers(5, 123, 40), rng.integers(5, 123, 40)
    got = D._windows(frame[0], xi, yi, 5)
    off = np.arange(-5, 6)
    assert np.array_equal(got, frame[0][(yi[:, None] + off)[:, :, None], (xi[:, None] + off)[:, None, :]])


@pytest.mark.parametrize("masked", [False, True])
def test_lm_xyAc_is_the_plain_per_axis_iteration(frame, masked):
    sigma = 1.2
    img = frame[0].astype(np.float64)
    pf = D.prefilter(img, sigma, 0.01)
    lm = D.local_maxima(pf.log, 3) & pf.mask
    ys, xs = np.nonzero(lm)
    w = math.ceil(4 * sigma)
    inside = (xs >= w) & (xs < img.shape[1] - w) & (ys >= w) & (ys < img.shape[0] - w)
    xs, ys = xs[inside], ys[inside]
    labels = ndimage.label(pf.mask)[0] if masked else None
    data, wts = D.extract_windows(img, xs, ys, w, labels)
    assert (wts == 0).any() == masked
    nw = 2 * w + 1
    coords = np.arange(-w, w + 1, dtype=np.float64)
    p0 = np.column_stack([np.zeros(len(xs)), np.zeros(len(xs)), pf.A[ys, xs], pf.c[ys, xs]])
    args = (data.reshape(-1, nw, nw), wts.reshape(-1, nw, nw), p0, coords, sigma)
    got = D._lm_xyAc(*args, escape=4.0)
    assert np.array_equal(got, plain_lm_xyAc(*args, escape=4.0))
    assert len(got) > 20 and np.mean(np.abs(got[:, :2]) < 1) > 0.8  # real fits near their pixel


def test_slave_normality_is_that_of_the_fit_kept(frame):
    """Without neighbour refits, fit_slave is the fixed fit, replaced by the free fit where that
    moved < 3 sigma_master and gave a larger amplitude, each with its own normality test."""
    tab = D.detect_frame(frame, sigma=1.2, alpha=0.01, mixture=None)
    x, y = tab["x"].to_numpy(), tab["y"].to_numpy()
    img = frame[1].astype(np.float64)
    got = D.fit_slave(img, x, y, 1.1, 1.2, 0.05, neighbours=False)
    fixed = D.fit_gaussians(img, x, y, 1.1, mode="Ac", alpha=0.05)
    loc = D.fit_gaussians(img, x, y, 1.1, A0=np.nan_to_num(fixed.A), c0=np.nan_to_num(fixed.c), mode="xyAc",
                          alpha=0.05)
    use = loc.ok & (np.hypot(loc.x - x, loc.y - y) < 3 * 1.2) & (loc.A > fixed.A)
    assert 0 < use.sum() < len(x)
    assert np.array_equal(got["isPSF_aux"], ~np.where(use, loc.hval_AD, fixed.hval_AD))
    for col, field in (("x_aux", "x"), ("y_aux", "y"), ("A_aux", "A"), ("c_aux", "c"), ("A_pstd_aux", "A_pstd"),
                       ("c_pstd_aux", "c_pstd"), ("sigma_r_aux", "sigma_r"), ("SE_sigma_r_aux", "SE_sigma_r"),
                       ("RSS_aux", "RSS"), ("pval_A_aux", "pval_A")):
        want = np.where(use, getattr(loc, field), getattr(fixed, field))
        want[~fixed.ok] = np.nan
        assert np.array_equal(got[col], want, equal_nan=True), col
    assert 0 < got["isPSF_aux"].mean() < 1


def test_fit_statistics_of_selected_spots_only(frame):
    """``stats_where`` leaves the selected fits as they are and marks the others invalid."""
    img = frame[1].astype(np.float64)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(8, 120, 200), rng.uniform(8, 120, 200)
    full = D.fit_gaussians(img, x, y, 1.1, A0=100.0, c0=50.0)
    chosen = {}

    def where(i, fx, fy, fA):
        chosen["i"] = i
        assert np.array_equal(fx, full.x[i]) and np.array_equal(fA, full.A[i])
        return fA > np.median(fA)

    part = D.fit_gaussians(img, x, y, 1.1, A0=100.0, c0=50.0, stats_where=where)
    sel = np.zeros(len(x), bool)
    sel[chosen["i"][full.A[chosen["i"]] > np.median(full.A[chosen["i"]])]] = True
    assert 50 < sel.sum() < 150
    for f in D.fields(D.FitResult):
        a, b = getattr(full, f.name), getattr(part, f.name)
        assert np.array_equal(a[sel], b[sel], equal_nan=True), f.name
    assert not part.ok[~sel].any() and np.isnan(part.pval_A[~sel]).all()
    assert np.array_equal(part.x, full.x) and np.array_equal(part.A, full.A)


def test_master_normality_matches_a_full_test(frame):
    """detect_frame tests residual normality only on valid significant fits: the same values as
    the test run on every fit."""
    sigma = 1.2
    tab = D.detect_frame(frame, sigma=sigma, alpha=0.01, mixture=None)
    img = frame[0].astype(np.float64)
    pf = D.prefilter(img, sigma, 0.01)
    mask = pf.mask | (pf.log >= pf.log[D.local_maxima(pf.log, 2 * math.ceil(sigma) + 1) & pf.mask].min())
    labels = ndimage.label(mask)[0]
    xs, ys = tab["x_init"].to_numpy(), tab["y_init"].to_numpy()
    full = D.fit_gaussians(img, xs, ys, sigma, A0=pf.A[ys, xs], c0=pf.c[ys, xs], labels=labels, alpha=0.01)
    assert np.array_equal(full.x, tab["x"].to_numpy()) and np.array_equal(full.RSS, tab["RSS"].to_numpy())
    assert np.array_equal(~full.hval_AD, tab["isPSF"].to_numpy())
    assert 0 < tab["isPSF"].mean() < 1


def test_nan_sums_are_nansum():
    rng = np.random.default_rng(2)
    res = rng.normal(size=(50, 121)) * 30
    res[rng.random(res.shape) < 0.1] = np.nan
    res[3, 7], res[4, 9], res[5] = np.inf, -np.inf, np.nan
    rss, rsum = D._nan_sums(res)
    assert np.array_equal(rss, np.nansum(res ** 2, axis=1))
    assert np.array_equal(rsum, np.nansum(res, axis=1), equal_nan=True)
