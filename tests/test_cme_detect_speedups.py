"""The speed-ups of ``domains.cme.tracking.detect`` (issue 13, 512^2 frames with ~1,000 pits)
compute the same numbers as the plain formulas they replace: every comparison here is exact
(``np.array_equal``), against straightforward reference implementations written out below, except
the compiled (x, y, A, c) fit, which follows the batched one to float rounding."""
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


def plain_lm_dense(data, wts, p0, fn, free, tol, clip, escape, max_iter=50):
    """The dense Levenberg-Marquardt with every fit's model, Jacobian and normal equations
    recomputed at each trial point and the weights always applied."""
    p = p0.astype(np.float64).copy()
    out, out_rss = p.copy(), np.zeros(len(p))
    idx, lam, k = np.arange(len(p)), np.full(len(p), 1e-3), np.arange(len(free))

    def normal_eq(J, r, w):
        Jw = J[:, free] * w[:, None, :]
        return np.matmul(Jw, Jw.transpose(0, 2, 1)), np.matmul(Jw, r[:, :, None])[:, :, 0]

    d, w = data, wts
    model, J = fn(p)
    r = w * (d - model)
    rss = np.einsum("ni,ni->n", r, r)
    out_rss[:] = rss
    H0, grad = normal_eq(J, r, w)
    for _ in range(max_iter):
        if idx.size == 0:
            break
        H = H0.copy()
        diag = np.einsum("nii->ni", H0)
        H[:, k, k] += lam[:, None] * diag + 1e-12 * diag.max(1, keepdims=True) + 1e-300
        step = np.clip(np.linalg.solve(H, grad[:, :, None])[:, :, 0], -clip, clip)
        p_new = p.copy()
        p_new[:, free] += step
        r_new = w * (d - fn(p_new, False)[0])
        rss_new = np.einsum("ni,ni->n", r_new, r_new)
        H_new, grad_new = normal_eq(fn(p_new, "only")[1], r_new, w)
        better = rss_new < rss
        p[better], rss[better], H0[better], grad[better] = p_new[better], rss_new[better], H_new[better], \
            grad_new[better]
        lam = np.where(better, np.maximum(lam / 10, 1e-9), lam * 10)
        done = np.all(np.abs(step) <= tol, axis=1) | (lam > 1e12) | np.any(np.abs(p[:, free]) > escape, axis=1)
        out[idx[done]], out_rss[idx[done]] = p[done], rss[done]
        keep = ~done
        p, lam, idx, rss, d, w, H0, grad = (a[keep] for a in (p, lam, idx, rss, d, w, H0, grad))
    out[idx], out_rss[idx] = p, rss
    return out, out_rss


# ----------------------------------------------------------------------------- tests
def test_pairwise_sum_last_is_numpy_sum():
    """Every path of the slice-wise sum (< 8 elements, 8 partial sums with and without
    accumulation, halving above 128) has the bits of numpy's sum, signed zeros included;
    the order matters on these rows (a left-to-right sum differs from 8 elements on)."""
    rng = np.random.default_rng(0)
    for length in range(1, 301):
        a = rng.normal(size=(3, 40, length)) * np.exp(rng.normal(size=(3, 40, length)) * 8)
        a[rng.random(a.shape) < 0.05] = -0.0
        a[0, 0] = -0.0  # a row of negative zeros sums to +0.0
        got, want = D._pairwise_sum_last(a), a.sum(-1)
        assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want)), length
        seq = np.zeros(a.shape[:-1])
        for i in range(length):
            seq += a[..., i]
        assert np.array_equal(seq, want) == (length < 8), length


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


def _xyAc_problem(frame, sigma: float, masked: bool, start=(0.0, 0.0), alpha: float = 0.05):
    """Windows, weights, start points and coords of every significant local maximum of a dense frame."""
    img = frame[0].astype(np.float64)
    w = math.ceil(4 * sigma)
    pf = D.prefilter(img, sigma, alpha)
    ys, xs = np.nonzero(D.local_maxima(pf.log, 3) & pf.mask)
    inside = (xs >= w) & (xs < img.shape[1] - w) & (ys >= w) & (ys < img.shape[0] - w)
    xs, ys = xs[inside], ys[inside]
    data, wts = D.extract_windows(img, xs, ys, w, ndimage.label(pf.mask)[0] if masked else None)
    nw = 2 * w + 1
    p0 = np.column_stack([np.full(len(xs), start[0]), np.full(len(xs), start[1]), pf.A[ys, xs], pf.c[ys, xs]])
    return (data.reshape(-1, nw, nw), wts.reshape(-1, nw, nw), p0, np.arange(-w, w + 1, dtype=np.float64), sigma), w


@pytest.mark.parametrize("masked", [False, True])
def test_lm_xyAc_is_the_plain_per_axis_iteration(frame, masked):
    args, _ = _xyAc_problem(frame, 1.2, masked, alpha=0.01)
    assert (args[1] == 0).any() == masked
    got = D._lm_xyAc(*args, escape=4.0)
    assert np.array_equal(got, plain_lm_xyAc(*args, escape=4.0))
    assert len(got) > 20 and np.mean(np.abs(got[:, :2]) < 1) > 0.8  # real fits near their pixel


@pytest.mark.parametrize("sigma", [0.7, 2.3])
def test_lm_xyAc_other_window_sizes(frame, sigma):
    """Windows of 7 and 21 pixels (the 1-D sums' short and accumulating paths)."""
    args, w = _xyAc_problem(frame, sigma, True, (0.3, -0.2))
    got = D._lm_xyAc(*args, escape=w + 1.0)
    assert np.array_equal(got, plain_lm_xyAc(*args, escape=w + 1.0))
    assert len(got) > 20 and np.mean(np.abs(got[:, 0] - 0.3) > 1e-3) > 0.5  # the fits moved


@pytest.mark.parametrize("sigma, masked, start", [(1.2, False, (0.0, 0.0)), (1.2, True, (0.0, 0.0)),
                                                  (0.7, True, (0.3, -0.2)), (2.3, False, (0.3, -0.2))])
def test_compiled_lm_xyAc_is_the_batched_iteration_to_rounding(frame, sigma, masked, start):
    """The compiled per-spot iteration (fit_windows' default) takes the batched one's steps: its fits
    agree to 1e-9 px and 1e-9 relative in A and c, far below the 1e-4 px stopping tolerance, so a
    different step, damping or stopping rule anywhere on the way would show."""
    args, w = _xyAc_problem(frame, sigma, masked, start)
    got = D._lm_xyAc_compiled(*args, escape=w + 1.0)
    want = D._lm_xyAc(*args, escape=w + 1.0)
    assert len(want) > 20 and np.mean(np.abs(want[:, 0] - start[0]) > 1e-3) > 0.5  # the fits moved
    np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got[:, 2:], want[:, 2:], rtol=1e-9, atol=1e-9)


def test_compiled_lm_xyAc_stops_where_the_batched_one_does(frame):
    """Few iterations and a small escape radius: the per-spot loop ends each spot at the same
    iteration (iteration cap, escape) as the batched one drops it."""
    args, w = _xyAc_problem(frame, 1.2, True, (0.6, -0.6))
    for max_iter, escape in ((1, 5.0), (3, 5.0), (30, 0.8)):
        got = D._lm_xyAc_compiled(*args, escape=escape, max_iter=max_iter, max_shift=0.5)
        want = D._lm_xyAc(*args, escape=escape, max_iter=max_iter, max_shift=0.5)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert np.mean(np.abs(want[:, :2]).max(1) > 0.8) > 0.05  # some spots escaped


def test_fit_windows_runs_the_compiled_fit_by_default(frame, monkeypatch):
    args, w = _xyAc_problem(frame, 1.2, True)
    data, wts, p0, coords, sigma = args
    n = len(p0)
    run = lambda: D.fit_windows(data.reshape(n, -1), wts.reshape(n, -1), np.full(n, 20), np.full(n, 20),  # noqa: E731
                                np.zeros(n), np.zeros(n), sigma, A0=p0[:, 2], c0=p0[:, 3], conf_radius=2.0)
    compiled = run()
    monkeypatch.setattr(D, "COMPILED_LM", False)
    batched = run()
    assert np.array_equal(compiled.ok, batched.ok) and compiled.ok.sum() > 20
    for name, tol in (("x", dict(rtol=0, atol=1e-9)), ("y", dict(rtol=0, atol=1e-9)), ("A", dict(rtol=1e-9)),
                      ("c", dict(rtol=1e-9)), ("pval_A", dict(rtol=1e-6, atol=1e-12))):
        np.testing.assert_allclose(getattr(compiled, name), getattr(batched, name), err_msg=name, **tol)

    def no_batched(*a, **k):
        raise AssertionError("the batched iteration ran")

    monkeypatch.setattr(D, "_lm_xyAc", no_batched)
    monkeypatch.setattr(D, "COMPILED_LM", True)
    run()  # the default never calls the batched iteration
    with pytest.raises(AssertionError, match="batched iteration ran"):
        monkeypatch.setattr(D, "COMPILED_LM", False)
        run()


def _mixture_inputs(frame):
    """Windows around the significant single fits of ``frame`` (mask weights), started as two
    sources 1 px either side of the fit, as :func:`fit_mixtures` does."""
    sigma = 1.2
    tab = D.detect_frame(frame, sigma=sigma, alpha=0.01, mixture=None)
    img = frame[0].astype(np.float64)
    pf = D.prefilter(img, sigma, 0.01)
    w = math.ceil(4 * sigma)
    xi, yi = tab["x_init"].to_numpy(), tab["y_init"].to_numpy()
    ok = (xi >= w) & (xi < img.shape[1] - w) & (yi >= w) & (yi < img.shape[0] - w)
    xi, yi, t = xi[ok], yi[ok], tab[ok]
    data, wts = D.extract_windows(img, xi, yi, w, ndimage.label(pf.mask)[0])
    dx, dy = t["x"].to_numpy() - xi, t["y"].to_numpy() - yi
    A, c = t["A"].to_numpy(), t["c"].to_numpy()
    p0 = np.column_stack([dx - 1, dx + 1, dy, dy, A / 2, A / 2, c])
    return data, wts, p0, np.arange(-w, w + 1, dtype=np.float64), sigma


#: tolerances, step clips and escape bounds of the two-source mixture fits (x1, x2, y1, y2, A1, A2, c)
MIXTURE_LIMITS = (np.array([1e-3] * 4 + [1e-1] * 3), np.array([1.0] * 4 + [np.inf] * 3),
                  np.array([6.0] * 4 + [np.inf] * 3))
#: the same for the free-sigma fits (x, y, A, sigma, c)
FREE_SIGMA_LIMITS = (np.array([1e-4, 1e-4, 1e-2, 1e-5, 1e-2]), np.array([1.0, 1.0, np.inf, 0.3, np.inf]),
                     np.array([2.0, 2.0, np.inf, 3.6, np.inf]))


def _free_sigma_inputs(frame, sigma: float):
    """ceil(5 sigma) windows around the single fits of ``frame`` that fit inside it, their pixel
    coordinates and free-sigma starts (x, y, A, sigma, c), as :func:`fit_free_sigma` takes them."""
    w5 = math.ceil(5 * sigma)
    img = frame[0].astype(np.float64)
    tab = D.detect_frame(frame, sigma=sigma, alpha=0.01, mixture=None)
    xi, yi = tab["x_init"].to_numpy(), tab["y_init"].to_numpy()
    ok = (xi >= w5) & (xi < img.shape[1] - w5) & (yi >= w5) & (yi < img.shape[0] - w5)
    d5, _ = D.extract_windows(img, xi[ok], yi[ok], w5)
    q0 = np.column_stack([tab["x"][ok] - xi[ok], tab["y"][ok] - yi[ok], tab["A"][ok], np.full(ok.sum(), sigma),
                          tab["c"][ok]])
    return d5, np.arange(-w5, w5 + 1, dtype=np.float64), q0


def _shot_noise_weights(fn, q0):
    """Weights 1 / sd of a pixel variance growing with the signal of ``fn``'s model at ``q0``."""
    return 1.0 / np.sqrt(50.0 + 0.5 * np.maximum(fn(q0, False)[0] - q0[:, 4, None], 0.0))


def test_lm_dense_is_the_plain_iteration(frame):
    """The dense LM (partial recomputation, no kept Jacobian, unapplied unit weights) gives the
    parameters and RSS of the plain iteration: all parameters free (mixtures), some free
    (crowded slave fits) and shot-noise weights (free-sigma fits)."""
    data, wts, p0, coords, sigma = _mixture_inputs(frame)
    assert (wts == 0).any() and len(p0) > 30
    fn = lambda q, jac=True: D._mixture_model(q, coords, sigma, 2, jac)  # noqa: E731
    tol, clip, esc = MIXTURE_LIMITS
    cases = [(data, wts, np.arange(7), tol, clip, esc, 20),  # every parameter free, 0/1 weights
             (data, np.ones_like(wts), np.array([0, 2, 4, 5, 6]), tol[[0, 2, 4, 5, 6]], clip[[0, 2, 4, 5, 6]],
              esc[[0, 2, 4, 5, 6]], 20)]  # source 2 fixed in place, unit weights
    for d, wt, free, t, cl, es, it in cases:
        got = D._lm_dense(d, wt, p0, fn, free, t, cl, es, max_iter=it)
        want = plain_lm_dense(d, wt, p0, fn, free, t, cl, es, max_iter=it)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        assert np.mean(np.abs(got[0][:, free] - p0[:, free]).max(1) > 1e-3) > 0.5  # the fits moved
    # free-sigma fits with shot-noise weights
    d5, c5, q0 = _free_sigma_inputs(frame, sigma)
    fs = lambda q, jac=True: D._free_sigma_model(q, c5, jac)  # noqa: E731
    args = (d5, _shot_noise_weights(fs, q0), q0, fs, np.arange(5), *FREE_SIGMA_LIMITS)
    got, want = D._lm_dense(*args), plain_lm_dense(*args)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert np.all(fs(q0, True)[0] == fs(q0, False)[0])  # the model without the Jacobian is the same


def test_compiled_lm_dense_is_the_batched_iteration_to_rounding(frame, monkeypatch):
    """A :class:`_Model` runs on the compiled per-spot iteration; it takes the batched iteration's
    steps: parameters to 1e-9 (relative in the amplitudes), RSS to 1e-12 relative, for mixtures with
    every or some parameters free, 0/1 or unit weights, and free-sigma fits with shot-noise weights."""
    data, wts, p0, coords, sigma = _mixture_inputs(frame)
    mixture = D._Model("mixture", coords, sigma, 2)
    tol, clip, esc = MIXTURE_LIMITS
    cases = [(data, wts, p0, mixture, np.arange(7), tol, clip, esc, 20),
             (data, np.ones_like(wts), p0, mixture, np.array([0, 2, 4, 5, 6]), tol[[0, 2, 4, 5, 6]],
              clip[[0, 2, 4, 5, 6]], esc[[0, 2, 4, 5, 6]], 3)]
    d5, c5, q0 = _free_sigma_inputs(frame, sigma)
    free_sigma = D._Model("free_sigma", c5)
    cases.append((d5, _shot_noise_weights(free_sigma, q0), q0, free_sigma, np.arange(5), *FREE_SIGMA_LIMITS, 50))
    for d, wt, start, model, free, t, cl, es, it in cases:
        got = D._lm_dense(d, wt, start, model, free, t, cl, es, max_iter=it)
        with monkeypatch.context() as m:
            m.setattr(D, "COMPILED_LM", False)
            want = D._lm_dense(d, wt, start, model, free, t, cl, es, max_iter=it)
        assert np.mean(np.abs(want[0][:, free] - start[:, free]).max(1) > 1e-3) > 0.5  # the fits moved
        scale = np.maximum(np.abs(want[0]), 1.0)
        np.testing.assert_array_less(np.abs(got[0] - want[0]) / scale, 1e-9)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_detect_movie_checks_configured_sigmas_on_its_detections(caplog):
    """The sigma check of detect_movie (its frames' fits made by the workers) logs what
    movie_sigmas logs on the same detections, on 1 and 2 processes; the masks come back whole."""
    cfg = SimulationConfig(height=160, width=160, n_frames=5, density=0.0037, mask_coverage=(1.0, 1.0))
    data = simulate_cell(cfg, 2).movie.data
    dcfg = {"detection": {"sigma_clathrin": 1.2, "sigma_aux": 1.1, "sigma_frames": 3, "sigma_min_spots": 5}}
    logger = "domains.cme.tracking.detect"
    logs, masks = [], []
    for threads in (1, 2):
        caplog.clear()
        with caplog.at_level("INFO", logger=logger):
            det, m = D.detect_movie(data, dcfg, threads, return_masks=True)
        logs.append([r.getMessage() for r in caplog.records if "PSF sigma" in r.getMessage()])
        masks.append(m)
    # the detections are fitted with the pixel-integrated sigmas
    kw = dict(sigma=np.sqrt(1.2 ** 2 + 1 / 12), sigma_aux=np.sqrt(1.1 ** 2 + 1 / 12), alpha=0.01, alpha_aux=0.05, mixture=D.DetectionConfig().mixture_kwargs(),
              aux_neighbours=True)
    tables = [D.detect_frame(f, **kw) for f in data]
    caplog.clear()
    with caplog.at_level("INFO", logger=logger):
        D.movie_sigmas(data, D.detection_config(dcfg), 0.08, tables=tables)
    want = [r.getMessage() for r in caplog.records if "PSF sigma" in r.getMessage()]
    assert logs[0] == logs[1] == want
    assert "clathrin PSF sigma configured 1.200 px, estimated" in want[0]
    assert np.array_equal(masks[0], masks[1]) and masks[0].dtype == bool and masks[0].any()
    assert np.array_equal(masks[0][3], D.detect_frame(data[3], return_mask=True, **kw)[1])


def test_slave_normality_is_that_of_the_fit_kept(frame):
    """Without neighbour refits, fit_slave is the fixed fit, replaced by the free fit where that
    moved < max_shift sigma_master (3, cmeAnalysis') and gave a larger amplitude, each with its
    own normality test."""
    tab = D.detect_frame(frame, sigma=1.2, alpha=0.01, mixture=None)
    x, y = tab["x"].to_numpy(), tab["y"].to_numpy()
    img = frame[1].astype(np.float64)
    got = D.fit_slave(img, x, y, 1.1, 1.2, 0.05, neighbours=False, max_shift=3.0)
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
