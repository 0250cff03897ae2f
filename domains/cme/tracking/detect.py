"""Point-source detection of clathrin pits as cmeAnalysis does it, vectorised in numpy.

Per frame (Aguet et al. 2013, ``pointSourceDetection``):

1. Prefilter: a closed-form least-squares fit of ``A*g + c`` in every (2w+1)^2 window
   (w = ceil(4 sigma)), computed by separable convolutions, and a one-sided Welch-type
   t-test of ``A > k*sigma_res`` (k = z(1 - alpha/2)); pixels with p < 0.05 form the mask.
2. Candidates: local maxima of the Laplacian of Gaussian in a (2 ceil(sigma) + 1)^2
   neighbourhood inside the mask; the mask is widened to LoG >= the weakest accepted maximum.
3. Sub-pixel fit of ``A exp(-r^2 / 2 sigma^2) + c`` (sigma fixed, x, y, A, c free) in every
   candidate window by a batched Levenberg-Marquardt; pixels of other mask components are
   ignored. Fits that move >= ceil(2 sigma) or give A > 2x the image range are rejected.
4. Amplitude test ``pval_A`` on the fit (same statistic as the prefilter, with the fit's
   residual sd and amplitude sd), Anderson-Darling normality test of the residuals (isPSF),
   and removal of redundant detections within 0.25 px (lowest RSS kept).

The auxilin (slave) channel is never detected on its own: it is fitted at the clathrin
positions with its own sigma (fixed position, then a free-position fit that is kept only if
it stays within 3 sigma_master and gives a larger amplitude), as cmeAnalysis ``runDetection``.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, special
from scipy.spatial import cKDTree

from awd.io import InputError

log = logging.getLogger(__name__)

#: Anderson-Darling critical values for a normal sample with known mean and estimated sd
#: (Stephens' "case 2"), as used by cmeAnalysis for the residuals of every fit.
_AD_CASE2_CRITICAL = {0.25: 1.072, 0.15: 1.430, 0.10: 1.743, 0.05: 2.308, 0.025: 2.898,
                      0.01: 3.702, 0.005: 4.324}

#: p-value below which an amplitude counts as significant. cmeAnalysis fixes it at 0.05 in
#: the prefilter mask and the fit test; its ``Alpha`` option only sets the level k.
P_SIGNIFICANT = 0.05

MASTER_COLUMNS = ["x", "y", "A", "c", "x_pstd", "y_pstd", "A_pstd", "c_pstd", "sigma_r",
                  "SE_sigma_r", "RSS", "pval_A", "isPSF"]
AUX_COLUMNS = ["x_aux", "y_aux", "A_aux", "c_aux", "A_pstd_aux", "c_pstd_aux", "sigma_r_aux",
               "SE_sigma_r_aux", "RSS_aux", "pval_A_aux", "isPSF_aux"]


@dataclass(frozen=True)
class DetectionConfig:
    """Detection settings (config section ``detection``).

    ``sigma_clathrin`` / ``sigma_aux``: Gaussian PSF sd in pixels; ``None`` derives it from the
    optics (0.21 lambda / NA over the pixel size) and clamps it to ``sigma_min`` like cmeAnalysis.

    ``alpha``: the ``Alpha`` option of cmeAnalysis ``runDetection``: the clathrin amplitude
    test is A > k sigma_r with k = z(1 - alpha/2), significant at p < 0.05. cmeAnalysis'
    default 0.05 (k = 1.96) suits Gaussian noise; with EMCCD noise (excess-noise factor sqrt 2)
    it accepts ~4.5x more background blobs than on Gaussian noise of equal pixel sd and gives
    detection precision 0.62-0.84 on simulated cells. 0.01 (k = 2.58) gives ~0.99 with the
    same recall above 2,000 ADU, and the recall-vs-amplitude curve of the reference notes'
    prototype (50 % near 900 ADU, where real tracks begin); see benchmarks/bench_cme_detect.py.
    ``alpha_aux``: the same for the auxilin fit at clathrin positions; it stays at 0.05
    because the auxilin labels are defined on that p-value.
    """

    sigma_clathrin: float | None = 1.2
    sigma_aux: float | None = 1.1
    numerical_aperture: float = 1.49
    wavelength_clathrin_nm: float = 584.0
    wavelength_aux_nm: float = 509.0
    sigma_min: float = 1.1
    alpha: float = 0.01
    alpha_aux: float = 0.05
    redundancy_radius: float = 0.25
    use_cell_mask: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "DetectionConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError("config:detection", f"unknown keys {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        for name in ("alpha", "alpha_aux"):
            if not 0 < getattr(cfg, name) < 1:
                raise InputError(f"config:detection.{name}", f"must be in (0, 1), got {getattr(cfg, name)}")
        for name in ("sigma_clathrin", "sigma_aux"):
            v = getattr(cfg, name)
            if v is not None and not (0.3 <= v <= 10):
                raise InputError(f"config:detection.{name}", f"PSF sigma {v} px outside [0.3, 10]")
        return cfg

    def sigmas(self, pixel_size_um: float) -> tuple[float, float]:
        """(clathrin, auxilin) PSF sigma in pixels."""
        out = []
        for sigma, wl in ((self.sigma_clathrin, self.wavelength_clathrin_nm),
                          (self.sigma_aux, self.wavelength_aux_nm)):
            if sigma is None:
                sigma = max(psf_sigma_px(wl, self.numerical_aperture, pixel_size_um), self.sigma_min)
            out.append(float(sigma))
        return out[0], out[1]


def psf_sigma_px(wavelength_nm: float, numerical_aperture: float, pixel_size_um: float) -> float:
    """Gaussian approximation of the widefield PSF, sigma = 0.21 lambda / NA, in pixels."""
    if wavelength_nm <= 0 or numerical_aperture <= 0 or pixel_size_um <= 0:
        raise InputError("config:detection", "wavelength, NA and pixel size must be positive")
    return 0.21 * wavelength_nm / numerical_aperture / (pixel_size_um * 1000.0)


def detection_config(cfg: dict | None) -> DetectionConfig:
    """The detection settings from a domain config section (its ``detection`` key)."""
    return DetectionConfig.from_dict((cfg or {}).get("detection"))


# --------------------------------------------------------------------------------------
# Prefilter
# --------------------------------------------------------------------------------------
@dataclass
class Prefilter:
    """Per-pixel closed-form amplitude fit and its significance test (all arrays (H, W))."""

    A: np.ndarray
    c: np.ndarray
    T: np.ndarray
    df: np.ndarray
    log: np.ndarray
    mask: np.ndarray

    def pval(self) -> np.ndarray:
        """One-sided p-value of A > k sigma_res per pixel (computed on demand: it is costly)."""
        return special.stdtr(self.df, -self.T)


def _kernel(sigma: float) -> tuple[int, np.ndarray, np.ndarray]:
    w = math.ceil(4 * sigma)
    x = np.arange(-w, w + 1, dtype=np.float64)
    return w, x, np.exp(-x ** 2 / (2 * sigma ** 2))


def prefilter(img: np.ndarray, sigma: float, alpha: float = 0.05) -> Prefilter:
    """cmeAnalysis prefilter: windowed least squares of A*g + c and the amplitude t-test.

    Convolutions use symmetric padding (MATLAB 'symmetric' = scipy 'reflect').
    """
    img = np.asarray(img, dtype=np.float64)
    w, x, g1 = _kernel(sigma)
    n = (2 * w + 1) ** 2

    def sep(a, ky, kx):
        return ndimage.correlate1d(ndimage.correlate1d(a, ky, axis=0, mode="reflect"), kx, axis=1,
                                   mode="reflect")

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
    # p < 0.05 needs T above the normal quantile (t quantiles are larger): test only those.
    mask = np.zeros(img.shape, bool)
    cand = T > special.ndtri(1 - P_SIGNIFICANT)
    mask[cand] = special.stdtr(df[cand], -T[cand]) < P_SIGNIFICANT
    return Prefilter(A, c, T, df, lap, mask)


def local_maxima(img: np.ndarray, size: int) -> np.ndarray:
    """cmeAnalysis ``locmax2d``: pixels that are the unique maximum of their size x size
    neighbourhood (flat maxima dropped), the border half-width excluded."""
    h = size // 2
    mx = ndimage.maximum_filter(img, size=size, mode="constant", cval=-np.inf)
    lm = img == mx
    lm[:h] = lm[-h:] = False
    lm[:, :h] = lm[:, -h:] = False
    ys, xs = np.nonzero(lm)
    if ys.size:
        ties = np.sum(_windows(img, xs, ys, h) == img[ys, xs][:, None, None], axis=(1, 2)) > 1
        lm[ys[ties], xs[ties]] = False
    return lm


# --------------------------------------------------------------------------------------
# Batched Gaussian fits
# --------------------------------------------------------------------------------------
def _windows(img: np.ndarray, xi: np.ndarray, yi: np.ndarray, w: int) -> np.ndarray:
    off = np.arange(-w, w + 1)
    return img[(yi[:, None] + off)[:, :, None], (xi[:, None] + off)[:, None, :]]


def _gauss1d(coords: np.ndarray, mu: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    d = coords[None, :] - mu[:, None]
    return np.exp(-d ** 2 / (2 * sigma ** 2)), d


def _model(p: np.ndarray, coords: np.ndarray, sigma: float):
    """Model (N, npx) and Jacobian (N, 4, npx; d/dx, d/dy, d/dA, d/dc) of A gy gx + c at p = (x, y, A, c)."""
    n, nw = len(p), len(coords)
    gx, dx = _gauss1d(coords, p[:, 0], sigma)
    gy, dy = _gauss1d(coords, p[:, 1], sigma)
    J = np.empty((n, 4, nw, nw))
    G = np.multiply(gy[:, :, None], gx[:, None, :], out=J[:, 2])
    AG = p[:, 2, None, None] * G
    np.multiply(AG, dx[:, None, :] / sigma ** 2, out=J[:, 0])
    np.multiply(AG, dy[:, :, None] / sigma ** 2, out=J[:, 1])
    J[:, 3] = 1.0
    return (AG + p[:, 3, None, None]).reshape(n, -1), J.reshape(n, 4, -1)


#: convergence tolerances of the position (px) and of A and c (ADU) steps.
_STEP_TOL = np.array([1e-4, 1e-4, 1e-2, 1e-2])


def _lm_xyAc(data: np.ndarray, wts: np.ndarray, p0: np.ndarray, coords: np.ndarray, sigma: float,
             escape: float, max_iter: int = 30, max_shift: float = 1.0) -> np.ndarray:
    """Batched Levenberg-Marquardt for (x, y, A, c) of A gy(y) gx(x) + c; data/wts (N, nw, nw).

    The gradient is exact (masked pixels have weight 0); the Gauss-Newton matrix is built
    from separable 1-D sums over the full window, which is exact for unmasked windows and a
    preconditioner otherwise (the accepted steps still decrease the weighted RSS). Position
    steps are clipped to ``max_shift`` px; a spot stops iterating when its step falls below
    ``_STEP_TOL`` or its position leaves ``escape`` px (it will be rejected). Only the
    still-active spots are carried through each iteration.
    """
    s2 = sigma ** 2
    nw = len(coords)
    out = p0.copy()
    p, lam, idx = p0.copy(), np.full(len(p0), 1e-3), np.arange(len(p0))
    d, w = data, wts

    def evaluate(p, d, w):
        gx, dx = _gauss1d(coords, p[:, 0], sigma)
        gy, dy = _gauss1d(coords, p[:, 1], sigma)
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
        state = tuple(np.where(better.reshape((-1,) + (1,) * (o.ndim - 1)), n_, o)
                      for o, n_ in zip(state, state_new))
        lam = np.where(better, np.maximum(lam / 10, 1e-9), lam * 10)
        done = np.all(np.abs(step) <= _STEP_TOL, axis=1) | (lam > 1e12) | np.any(np.abs(p[:, :2]) > escape, axis=1)
        if done.any():
            out[idx[done]] = p[done]
            keep = ~done
            p, lam, idx, rss, d, w = p[keep], lam[keep], idx[keep], rss[keep], d[keep], w[keep]
            state = tuple(o[keep] for o in state)
    out[idx] = p
    return out


@dataclass
class FitResult:
    """Per-spot fit results (arrays of length N); ``ok`` marks valid fits."""

    ok: np.ndarray
    x: np.ndarray
    y: np.ndarray
    A: np.ndarray
    c: np.ndarray
    x_pstd: np.ndarray
    y_pstd: np.ndarray
    A_pstd: np.ndarray
    c_pstd: np.ndarray
    sigma_r: np.ndarray
    SE_sigma_r: np.ndarray
    RSS: np.ndarray
    pval_A: np.ndarray
    hval_AD: np.ndarray
    npx: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "FitResult":
        nan = lambda: np.full(n, np.nan)  # noqa: E731
        return cls(np.zeros(n, bool), *(nan() for _ in range(12)), np.zeros(n, bool), np.zeros(n, int))

    def take(self, idx) -> "FitResult":
        return FitResult(*(getattr(self, f.name)[idx] for f in fields(self)))

    def put(self, idx, other: "FitResult") -> None:
        for f in fields(self):
            getattr(self, f.name)[idx] = getattr(other, f.name)


def amplitude_pval(A, A_pstd, sigma_r, npx, alpha: float = 0.05) -> np.ndarray:
    """cmeAnalysis amplitude test: p of A > k sigma_r, k = z(1 - alpha/2), Welch-Satterthwaite df."""
    k = special.ndtri(1 - alpha / 2)
    se = np.asarray(sigma_r) / np.sqrt(2 * (np.asarray(npx) - 1)) * k
    var_sum = np.asarray(A_pstd) ** 2 + se ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (npx - 1) * var_sum ** 2 / (np.asarray(A_pstd) ** 4 + se ** 4)
        T = (np.asarray(A) - np.asarray(sigma_r) * k) / np.sqrt(var_sum / npx)
    return special.stdtr(df, -T)


def ad_statistic(res: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Anderson-Darling A^2 of every row of ``res`` (NaN = missing) against N(0, sd^2)."""
    n = np.sum(np.isfinite(res), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.sort(res / sd[:, None], axis=1)  # NaN sorted last
    i = np.arange(res.shape[1])[None, :]
    valid = i < n[:, None]
    z = np.where(valid, z, 0.0)
    # sum_i (2i+1)[ln F(z_i) + ln(1 - F(z_{n-1-i}))], regrouped per sorted value
    terms = (2 * i + 1) * special.log_ndtr(z) + (2 * n[:, None] - 2 * i - 1) * special.log_ndtr(-z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -n - np.sum(np.where(valid, terms, 0.0), axis=1) / n


def ad_reject_normal(res: np.ndarray, sd: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """True where the AD test rejects N(0, sd^2) at ``alpha`` (mean known, sd estimated)."""
    if alpha not in _AD_CASE2_CRITICAL:
        raise InputError("config:alpha_ad", f"AD critical values exist for {sorted(_AD_CASE2_CRITICAL)}")
    return ad_statistic(res, sd) > _AD_CASE2_CRITICAL[alpha]


def extract_windows(img: np.ndarray, xi: np.ndarray, yi: np.ndarray, w: int,
                    labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(2w+1)^2 windows of ``img`` around integer centres (all inside the image) as (N, npx)
    data and 0/1 weights; with mask ``labels``, pixels of other components weigh 0."""
    data = _windows(img, xi, yi, w).reshape(len(xi), -1).astype(np.float64)
    wts = np.ones_like(data)
    if labels is not None:
        lw = _windows(labels, xi, yi, w).reshape(len(xi), -1)
        centre = lw[:, lw.shape[1] // 2][:, None]
        wts[(lw != 0) & (lw != centre)] = 0.0
    return data, wts


def fit_windows(data: np.ndarray, wts: np.ndarray, xi: np.ndarray, yi: np.ndarray, dx0: np.ndarray,
                dy0: np.ndarray, sigma: float, *, A0=None, c0=None, mode: str = "xyAc",
                conf_radius: float = np.inf, max_amplitude: float | np.ndarray = np.inf,
                alpha: float = 0.05) -> FitResult:
    """Fit ``A exp(-r^2/2 sigma^2) + c`` (sampled Gaussian, sigma fixed) in pre-cut windows.

    ``data``/``wts``: (N, (2w+1)^2) from :func:`extract_windows` centred on pixel (xi, yi);
    (dx0, dy0): start (or, for 'Ac', fixed) offsets of the spot from the centre pixel.
    'xyAc' frees the position (batched Levenberg-Marquardt from (dx0, dy0, A0, c0)); 'Ac'
    is the exact linear least-squares fit of A and c. Parameter sds follow cmeAnalysis:
    sqrt(RSS/(npx - n_par - 1) * diag((J^T J)^-1)); a fit is valid with >= 10 pixels and,
    for 'xyAc', |dx|, |dy| < ``conf_radius`` and A < ``max_amplitude``.
    """
    n = len(data)
    nw = int(round(math.sqrt(data.shape[1]))) if n else 1
    w = (nw - 1) // 2
    coords = np.arange(-w, w + 1, dtype=np.float64)
    npx = wts.sum(axis=1).astype(int)
    if mode == "Ac":
        gx, _ = _gauss1d(coords, dx0, sigma)
        gy, _ = _gauss1d(coords, dy0, sigma)
        G = (gy[:, :, None] * gx[:, None, :]).reshape(n, -1)
        J = np.stack([G, np.ones_like(G)], axis=1)
        Jw = J * wts[:, None, :]
        H = np.matmul(Jw, J.transpose(0, 2, 1))
        sol = np.linalg.solve(H + 1e-12 * np.eye(2), np.matmul(Jw, data[:, :, None]))[:, :, 0]
        p = np.column_stack([dx0, dy0, sol])
        model = sol[:, :1] * G + sol[:, 1:2]
        n_par = 2
    elif mode == "xyAc":
        if A0 is None or c0 is None:
            raise ValueError("fit_windows: mode 'xyAc' needs A0 and c0")
        p0 = np.column_stack([dx0, dy0, np.broadcast_to(A0, (n,)), np.broadcast_to(c0, (n,))]).astype(float)
        escape = min(conf_radius, w) + 1.0
        p = _lm_xyAc(data.reshape(-1, nw, nw), wts.reshape(-1, nw, nw), p0, coords, sigma, escape=escape)
        model, J = _model(p, coords, sigma)
        H = np.matmul(J * wts[:, None, :], J.transpose(0, 2, 1))
        n_par = 4
    else:
        raise ValueError(f"fit_windows: unknown mode {mode!r}")
    res = np.where(wts > 0, data - model, np.nan)
    rss = np.nansum(res ** 2, axis=1)
    rsum = np.nansum(res, axis=1)
    cov_diag = np.einsum("nii->ni", np.linalg.pinv(H)) if n else np.zeros((0, n_par))
    with np.errstate(divide="ignore", invalid="ignore"):
        pstd = np.sqrt(rss[:, None] / (npx - n_par - 1)[:, None] * cov_diag)
        sd_r = np.sqrt((rss - rsum ** 2 / npx) / (npx - 1))
    full = np.zeros((n, 4))
    full[:, 4 - n_par:] = pstd
    fr = FitResult(
        ok=npx >= 10, x=xi + p[:, 0], y=yi + p[:, 1], A=p[:, 2], c=p[:, 3],
        x_pstd=full[:, 0], y_pstd=full[:, 1], A_pstd=full[:, 2], c_pstd=full[:, 3],
        sigma_r=sd_r, SE_sigma_r=sd_r / np.sqrt(2 * (npx - 1)), RSS=rss,
        pval_A=amplitude_pval(p[:, 2], full[:, 2], sd_r, npx, alpha),
        hval_AD=ad_reject_normal(res, sd_r), npx=npx)
    if mode == "xyAc":
        fr.ok &= (np.abs(p[:, 0]) < conf_radius) & (np.abs(p[:, 1]) < conf_radius) & (p[:, 2] < max_amplitude)
    fr.ok &= np.isfinite(fr.A) & np.isfinite(fr.pval_A)
    return fr


def fit_gaussians(img: np.ndarray, x, y, sigma: float, *, A0=None, c0=None, mode: str = "xyAc",
                  labels: np.ndarray | None = None, alpha: float = 0.05,
                  window_sigma: float | None = None) -> FitResult:
    """Fit a Gaussian (:func:`fit_windows`) around every (x, y) of one image, as cmeAnalysis
    ``fitGaussians2D``: window half-width ceil(4 sigma_w) around round(x, y) and confinement
    radius ceil(2 sigma_w), sigma_w = ``window_sigma`` or sigma; spots whose window leaves the
    image are invalid (NaN); a free fit must also keep A below twice the image range.
    """
    img = np.asarray(img, dtype=np.float64)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n = len(x)
    out = FitResult.empty(n)
    if n == 0:
        return out
    sw = sigma if window_sigma is None else window_sigma
    w, w2 = math.ceil(4 * sw), math.ceil(2 * sw)
    ny, nx = img.shape
    xi, yi = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    sel = np.flatnonzero((xi >= w) & (xi < nx - w) & (yi >= w) & (yi < ny - w))
    if sel.size == 0:
        return out
    xi, yi = xi[sel], yi[sel]
    data, wts = extract_windows(img, xi, yi, w, labels)
    A0s = None if A0 is None else np.broadcast_to(A0, (n,))[sel]
    c0s = None if c0 is None else np.broadcast_to(c0, (n,))[sel]
    fr = fit_windows(data, wts, xi, yi, x[sel] - xi, y[sel] - yi, sigma, A0=A0s, c0=c0s, mode=mode,
                     conf_radius=w2, max_amplitude=2 * float(img.max() - img.min()), alpha=alpha)
    out.put(sel, fr)
    return out


# --------------------------------------------------------------------------------------
# Frame and movie detection
# --------------------------------------------------------------------------------------
def _remove_redundant(x, y, rss, radius: float) -> np.ndarray:
    """Keep-mask: within every ball of ``radius`` only the lowest-RSS detection survives."""
    keep = np.ones(len(x), bool)
    if len(x) < 2 or radius <= 0:
        return keep
    tree = cKDTree(np.column_stack([x, y]))
    for i, nb in enumerate(tree.query_ball_point(np.column_stack([x, y]), radius)):
        if len(nb) > 1:
            nb = np.asarray(nb)
            keep[nb[rss[nb] != rss[nb].min()]] = False
    return keep


def _empty_frame_table() -> pd.DataFrame:
    cols = MASTER_COLUMNS + ["x_init", "y_init", "mask_n", "mask_a"] + AUX_COLUMNS
    return pd.DataFrame({c: pd.Series(dtype=bool if c.startswith("isPSF") else
                                      (np.int64 if c in ("x_init", "y_init", "mask_n") else np.float64))
                         for c in cols})


def detect_frame(frame: np.ndarray, *, sigma: float, alpha: float = 0.05, sigma_aux: float | None = None,
                 alpha_aux: float = 0.05, cell_mask: np.ndarray | None = None, redundancy_radius: float = 0.25,
                 return_mask: bool = False):
    """Detect clathrin spots in one frame; fit auxilin at their positions when present.

    ``frame``: (H, W) clathrin image or (2, H, W) with channel 0 clathrin, 1 auxilin.
    ``alpha``/``alpha_aux``: set the amplitude test levels k of clathrin and auxilin
    (cmeAnalysis default 0.05; see :class:`DetectionConfig`); ``cell_mask`` restricts the
    candidates. Returns a DataFrame with one row per significant (p < 0.05) detection: x, y
    (column, row, px), A, c, their sds, sigma_r, SE_sigma_r, RSS, pval_A, isPSF, x_init/y_init
    (candidate pixel), mask_n/mask_a (size and mean intensity of the mask component) and the
    same fields of the auxilin fit with suffix ``_aux`` (NaN without an auxilin channel). With
    ``return_mask`` also the binary detection mask (components that hold a detection).
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[None]
    if frame.ndim != 3 or frame.shape[0] not in (1, 2):
        raise InputError(None, f"detect_frame: expected (H, W) or (2, H, W), got shape {frame.shape}")
    img = frame[0].astype(np.float64)
    pf = prefilter(img, sigma, alpha)
    allmax = local_maxima(pf.log, 2 * math.ceil(sigma) + 1)
    mask = pf.mask
    lm = allmax & mask
    table = _empty_frame_table()
    if lm.any():
        mask = mask | (pf.log >= pf.log[lm].min())
        lm = allmax & mask
    if cell_mask is not None:
        lm &= cell_mask
    ys, xs = np.nonzero(lm)
    det_mask = np.zeros(img.shape, bool)
    if xs.size:
        labels, _ = ndimage.label(mask)
        fit = fit_gaussians(img, xs, ys, sigma, A0=pf.A[ys, xs], c0=pf.c[ys, xs], mode="xyAc",
                            labels=labels, alpha=alpha)
        ok = np.flatnonzero(fit.ok)
        fit, xs, ys = fit.take(ok), xs[ok], ys[ok]
        keep = fit.pval_A < P_SIGNIFICANT
        keep &= _remove_redundant(fit.x, fit.y, fit.RSS, redundancy_radius)
        fit, xs, ys = fit.take(keep), xs[keep], ys[keep]
        comp = labels[ys, xs]
        sizes = np.bincount(labels.ravel())
        sums = np.bincount(labels.ravel(), weights=img.ravel())
        det_mask = np.isin(labels, np.unique(comp)) if comp.size else det_mask
        table = pd.DataFrame({
            "x": fit.x, "y": fit.y, "A": fit.A, "c": fit.c, "x_pstd": fit.x_pstd, "y_pstd": fit.y_pstd,
            "A_pstd": fit.A_pstd, "c_pstd": fit.c_pstd, "sigma_r": fit.sigma_r,
            "SE_sigma_r": fit.SE_sigma_r, "RSS": fit.RSS, "pval_A": fit.pval_A, "isPSF": ~fit.hval_AD,
            "x_init": xs.astype(np.int64), "y_init": ys.astype(np.int64),
            "mask_n": sizes[comp].astype(np.int64), "mask_a": sums[comp] / sizes[comp]})
        aux = fit_slave(frame[1], table["x"].to_numpy(), table["y"].to_numpy(),
                        sigma_aux if sigma_aux is not None else sigma, sigma, alpha_aux) \
            if frame.shape[0] == 2 else None
        if aux is not None:
            for col, vals in aux.items():
                table[col] = vals
            table = table[np.isfinite(table["A_aux"].to_numpy())].reset_index(drop=True)
        else:
            for col in AUX_COLUMNS:
                table[col] = False if col == "isPSF_aux" else np.nan
    return (table, det_mask) if return_mask else table


def fit_slave(img: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float, sigma_master: float,
              alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Fit the slave channel at master positions as cmeAnalysis ``runDetection``.

    A fixed-position 'Ac' fit, then a free 'xyAc' fit started from it; the free fit is kept
    where it moved less than 3 sigma_master and gave a larger amplitude. Spots whose window
    leaves the image get NaN.
    """
    img = np.asarray(img, dtype=np.float64)
    fixed = fit_gaussians(img, x, y, sigma, mode="Ac", alpha=alpha)
    loc = fit_gaussians(img, x, y, sigma, A0=np.nan_to_num(fixed.A), c0=np.nan_to_num(fixed.c),
                        mode="xyAc", alpha=alpha)
    with np.errstate(invalid="ignore"):
        use_loc = loc.ok & (np.hypot(loc.x - x, loc.y - y) < 3 * sigma_master) & (loc.A > fixed.A)
    res = fixed.take(np.arange(len(x)))
    res.put(use_loc, loc.take(use_loc))
    bad = ~fixed.ok
    out = {"x_aux": res.x, "y_aux": res.y, "A_aux": res.A, "c_aux": res.c, "A_pstd_aux": res.A_pstd,
           "c_pstd_aux": res.c_pstd, "sigma_r_aux": res.sigma_r, "SE_sigma_r_aux": res.SE_sigma_r,
           "RSS_aux": res.RSS, "pval_A_aux": res.pval_A, "isPSF_aux": ~res.hval_AD}
    for k, v in out.items():
        if k != "isPSF_aux":
            v[bad] = np.nan
    return out


def movie_array(movie: Any) -> np.ndarray:
    """The (T, C, H, W) pixel array of a movie (object with ``data``, or an array; C = 1 or 2)."""
    data = getattr(movie, "data", movie)
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[:, None]
    if data.ndim != 4 or data.shape[1] not in (1, 2):
        raise InputError(getattr(movie, "name", None),
                         f"movie must be (T, 2, H, W) or (T, H, W), got shape {data.shape}")
    return data


def _detect_frames(frames: np.ndarray, kwargs: dict) -> list:
    """Worker: :func:`detect_frame` of each frame of a chunk (tables and masks)."""
    return [detect_frame(f, return_mask=True, **kwargs) for f in frames]


def detect_movie(movie: Any, cfg: dict | None = None, threads: int = 1, *, cell_mask: np.ndarray | None = None,
                 return_masks: bool = False):
    """Detect every frame of ``movie`` (an object with ``data`` (T, 2, H, W), ``pixel_size_um``).

    ``cfg`` is the CME domain config section (its ``detection`` key is read). With
    ``threads`` > 1 chunks of frames run in that many worker processes (the per-frame work is
    numpy code that holds the GIL between calls, so threads would not scale); the result does
    not depend on ``threads``. Returns the detection table with a ``frame`` column (and the PSF
    ``sigma``/``sigma_aux``); with ``return_masks`` also the (T, H, W) boolean detection masks
    that track processing uses.
    """
    dcfg = detection_config(cfg)
    data = movie_array(movie)
    pixel_um = float(getattr(movie, "pixel_size_um", 0.08))
    s_cla, s_aux = dcfg.sigmas(pixel_um)
    kwargs = {"sigma": s_cla, "sigma_aux": s_aux, "alpha": dcfg.alpha, "alpha_aux": dcfg.alpha_aux,
              "cell_mask": cell_mask if dcfg.use_cell_mask else None,
              "redundancy_radius": dcfg.redundancy_radius}
    T = len(data)
    if threads > 1 and T > 1:
        chunk = max(1, min(8, -(-T // (2 * threads))))
        starts = range(0, T, chunk)
        ctx = multiprocessing.get_context("fork")  # no re-import of the caller's main module
        with ProcessPoolExecutor(max_workers=threads, mp_context=ctx) as ex:
            parts = ex.map(_detect_frames, [data[a:a + chunk] for a in starts], [kwargs] * len(starts))
            results = [r for part in parts for r in part]
    else:
        results = _detect_frames(data, kwargs)
    tables = []
    for t, (tab, _) in enumerate(results):
        tab.insert(0, "frame", np.full(len(tab), t, dtype=np.int64))
        tables.append(tab)
    det = pd.concat(tables, ignore_index=True)
    det["sigma"] = s_cla
    det["sigma_aux"] = s_aux if data.shape[1] == 2 else np.nan
    log.info("detected %d spots in %d frames (sigma %.2f / %.2f px)", len(det), T, s_cla, s_aux)
    if return_masks:
        return det, np.stack([m for _, m in results])
    return det
