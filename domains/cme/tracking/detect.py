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
5. Close pits (``mixture``, :func:`split_mixtures`): windows whose residual shows a further
   source are refitted with 2 (then 3) Gaussians, accepted by an F-test on the RSS reduction,
   as cmeAnalysis ``fitGaussianMixtures2D`` / u-track ``detectSubResFeatures2D``; an
   accepted mixture replaces its row by one row per source, before step 4's tests. Where no
   mixture is accepted the table is the same as without this step.

The auxilin (slave) channel is never detected on its own: it is fitted at the clathrin
positions with its own sigma (fixed position, then a free-position fit that is kept only if
it stays within 3 sigma_master and gives a larger amplitude), as cmeAnalysis ``runDetection``;
with ``aux_neighbours`` the clathrin neighbours with auxilin signal inside a spot's window
enter its model, so their bursts are not credited to it (:func:`fit_slave`).

PSF sigmas left null are estimated from a few frames of the movie (free-sigma fits of bright
isolated spots, as cmeAnalysis ``getGaussianPSFsigma``); configured ones are checked against
the same estimate (:func:`movie_sigmas`).
"""
from __future__ import annotations

import functools
import itertools
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

from awd.io import InputError, known_fields
from awd.compiled import AVAILABLE as COMPILER_AVAILABLE, jit

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

    ``sigma_clathrin`` / ``sigma_aux``: Gaussian PSF sd in pixels; ``None`` estimates it from
    the movie (``estimate_sigma``, :func:`movie_sigmas`), or, where that is off or too few
    spots qualify, derives it from the optics (0.21 lambda / NA over the pixel size), clamped
    to ``sigma_min`` like cmeAnalysis. ``estimate_sigma``: estimate from ``sigma_frames``
    evenly spaced frames (at least ``sigma_min_spots`` spots per channel); a configured sigma
    more than ``sigma_tolerance`` (relative) off the estimate is logged as a warning.

    ``mixture``: resolve close pits by Gaussian-mixture fits (:func:`split_mixtures`) with up to
    ``max_components`` sources per window, accepted at F-test p < ``mixture_alpha``, sources
    >= ``mixture_min_separation`` sigma apart; windows are tried where the residual's
    matched-filter or elongation score exceeds ``mixture_z``. ``aux_neighbours``: fit the
    auxilin channel with the neighbouring clathrin spots in the model (:func:`fit_slave`).
    ``slave_max_shift``: how far, in sigma_clathrin, the free auxilin fit may move from the
    clathrin position and still replace the fixed-position fit (:func:`fit_slave`). cmeAnalysis
    allows 3; auxilin at a pit lies within the channel registration offset plus a dim spot's
    localisation error, and the wider search picks noise peaks and neighbours' signal. On the
    simulated 0.0029 pits/px^2 cells of benchmarks/bench_cme_detect.py 1 gave aux+ sensitivity /
    false positives 0.869 / 0.050 (PSF 1.45) and 0.901 / 0.048 (PSF 1.2) against 0.862 / 0.051
    and 0.899 / 0.051 with 3, and on auxilin-free cells centred amplitude z-scores (mean 0.07-0.08
    instead of 0.49-0.51) with the per-frame and track tests at or below their nominal rates.

    ``alpha``: the ``Alpha`` option of cmeAnalysis ``runDetection``: the clathrin amplitude
    test is A > k sigma_r with k = z(1 - alpha/2), significant at p < 0.05. cmeAnalysis'
    default 0.05 (k = 1.96) suits Gaussian noise; with EMCCD noise (excess-noise factor sqrt 2)
    it accepts ~4.5x more background blobs than on Gaussian noise of equal pixel sd and gives
    detection precision 0.62-0.84 on simulated cells. 0.01 (k = 2.58) gives ~0.99 with the
    same recall above 2,000 ADU, and the recall-vs-amplitude curve of the reference notes'
    prototype (50 % near 900 ADU, where real tracks begin); see benchmarks/bench_cme_detect.py.
    ``alpha_aux``: the same for the auxilin fit at clathrin positions; it stays at 0.05
    because the auxilin labels are defined on that p-value.

    ``pixel_integration``: the sigmas above are those of the optical PSF; camera pixels
    integrate it, and the fits' sampled-Gaussian model matches a pixel-integrated Gaussian of
    sd sigma best with sd sqrt(sigma^2 + 1/12) (:meth:`model_sigma`), the sd the fits use. With
    the optical sd the model is too narrow, and at high SNR the mismatch shows as structure in
    the residual: spurious second mixture components that break tracks.
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
    mixture: bool = True
    aux_neighbours: bool = True
    slave_max_shift: float = 1.0
    mixture_alpha: float = 1e-4
    max_components: int = 3
    mixture_min_separation: float = 1.0
    mixture_z: float = 3.0
    estimate_sigma: bool = True
    sigma_frames: int = 5
    sigma_tolerance: float = 0.15
    sigma_min_spots: int = 20
    pixel_integration: bool = True

    @classmethod
    def from_dict(cls, d: dict | None) -> "DetectionConfig":
        d = known_fields(cls, d, "detection")
        cfg = cls(**d)
        for name in ("alpha", "alpha_aux"):
            if not 0 < getattr(cfg, name) < 1:
                raise InputError(f"config:detection.{name}", f"must be in (0, 1), got {getattr(cfg, name)}")
        for name in ("sigma_clathrin", "sigma_aux"):
            v = getattr(cfg, name)
            if v is not None and not (0.3 <= v <= 10):
                raise InputError(f"config:detection.{name}", f"PSF sigma {v} px outside [0.3, 10]")
        if not 0 < cfg.mixture_alpha < 1:
            raise InputError("config:detection.mixture_alpha", f"must be in (0, 1), got {cfg.mixture_alpha}")
        for name, lo in (("max_components", 1), ("sigma_frames", 1), ("sigma_min_spots", 3)):
            v = getattr(cfg, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"config:detection.{name}", f"must be an integer >= {lo}, got {v!r}")
        if cfg.max_components > 4:
            raise InputError("config:detection.max_components", f"at most 4 components, got {cfg.max_components}")
        for name in ("mixture_min_separation", "mixture_z", "sigma_tolerance"):
            if not getattr(cfg, name) >= 0:
                raise InputError(f"config:detection.{name}", f"must be >= 0, got {getattr(cfg, name)}")
        v = cfg.slave_max_shift
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 10:
            raise InputError("config:detection.slave_max_shift", f"must be a number in (0, 10], got {v!r}")
        return cfg

    def model_sigma(self, sigma: float) -> float:
        """The sd of the fits' sampled Gaussian for an optical PSF sd ``sigma`` (px)."""
        return float(math.sqrt(sigma ** 2 + 1 / 12)) if self.pixel_integration else float(sigma)

    def mixture_kwargs(self) -> dict | None:
        """Keyword arguments of :func:`split_mixtures` (None when mixtures are off)."""
        if not self.mixture or self.max_components < 2:
            return None
        return {"max_components": self.max_components, "mixture_alpha": self.mixture_alpha,
                "min_separation": self.mixture_min_separation, "z": self.mixture_z}

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
    """Per-pixel closed-form amplitude fit and its significance test (all arrays (H, W)).

    ``sigma_A``, ``se_k`` and ``var_sum`` (= sigma_A^2 + se_k^2) are the terms of the
    Welch-Satterthwaite degrees of freedom, which :attr:`df` forms on demand: the mask needs
    them only at the few pixels whose T passes the normal quantile.
    """

    A: np.ndarray
    c: np.ndarray
    T: np.ndarray
    log: np.ndarray
    mask: np.ndarray
    sigma_A: np.ndarray
    se_k: np.ndarray
    var_sum: np.ndarray
    n: int

    @property
    def df(self) -> np.ndarray:
        """Welch-Satterthwaite degrees of freedom of the test per pixel."""
        return _prefilter_df(self.sigma_A, self.se_k, self.var_sum, self.n)

    def pval(self) -> np.ndarray:
        """One-sided p-value of A > k sigma_res per pixel (computed on demand: it is costly)."""
        return special.stdtr(self.df, -self.T)


def _prefilter_df(sigma_A: np.ndarray, se_k: np.ndarray, var_sum: np.ndarray, n: int) -> np.ndarray:
    """Welch-Satterthwaite df of the prefilter test, n - 1 where it is undefined (0/0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (n - 1) * var_sum ** 2 / (sigma_A ** 4 + se_k ** 4)
    return np.nan_to_num(df, nan=n - 1.0)


def _kernel(sigma: float) -> tuple[int, np.ndarray, np.ndarray]:
    w = math.ceil(4 * sigma)
    x = np.arange(-w, w + 1, dtype=np.float64)
    return w, x, np.exp(-x ** 2 / (2 * sigma ** 2))


def prefilter(img: np.ndarray, sigma: float, alpha: float = 0.05) -> Prefilter:
    """cmeAnalysis prefilter: windowed least squares of A*g + c and the amplitude t-test.

    Convolutions use symmetric padding (MATLAB 'symmetric' = scipy 'reflect'). The Gaussian
    and the x-weighted Gaussian correlations share their first (vertical) pass, and the
    Welch-Satterthwaite df (two powers per pixel) is formed only where T can be significant;
    every value is computed by the same operations as the plain formulas.
    """
    img = np.asarray(img, dtype=np.float64)
    w, x, g1 = _kernel(sigma)
    n = (2 * w + 1) ** 2

    # scipy filters contiguous lines (axis 1) ~3x faster than strided columns (axis 0): the
    # vertical passes run along the rows of the transposed image (the same arithmetic per line,
    # so the same values) and are transposed back. Whole-frame transposes are slow (every
    # write misses the cache); the passes run on blocks of lines, each block transposed
    # while it is in the cache.
    img_t = np.empty(img.shape[::-1])
    for r0 in range(0, img.shape[0], 16):
        img_t[:, r0:r0 + 16] = img[r0:r0 + 16].T

    def vertical(a_t, filt, square=False):
        """``filt`` along axis 0 of the image whose transpose is ``a_t`` (of its square)."""
        out = np.empty(a_t.shape[::-1])
        for c0 in range(0, a_t.shape[0], 32):
            lines = a_t[c0:c0 + 32]
            out[:, c0:c0 + 32] = filt(lines * lines if square else lines).T
        return out

    def rows(a_t, ky):
        """Correlation along axis 0 of the image whose transpose is ``a_t``."""
        return vertical(a_t, lambda a: ndimage.correlate1d(a, ky, axis=1, mode="reflect"))

    def cols(a, kx):
        return ndimage.correlate1d(a, kx, axis=1, mode="reflect")

    def box(a_t, square=False):
        """``uniform_filter`` (axis 0, then axis 1) of the image whose transpose is ``a_t`` (of
        its square)."""
        v = vertical(a_t, lambda a: ndimage.uniform_filter1d(a, 2 * w + 1, axis=1, mode="reflect"), square)
        return ndimage.uniform_filter1d(v, 2 * w + 1, axis=1, mode="reflect")

    gx2 = g1 * x ** 2
    img_g = rows(img_t, g1)  # shared by fg and the x-weighted correlation
    fg = cols(img_g, g1)
    fu = box(img_t)
    fu2 = box(img_t, square=True)
    curv = cols(img_g, gx2)  # x- plus y-weighted correlations, for the LoG
    curv += cols(rows(img_t, gx2), g1)

    g2 = np.outer(g1, g1)
    gsum, g2sum = g2.sum(), (g2 ** 2).sum()
    C11 = np.linalg.inv(np.array([[g2sum, gsum], [gsum, n]]))[0, 0]
    k = special.ndtri(1 - alpha / 2)
    # The formulas below, evaluated in place, in the same order, on blocks of rows whose
    # arrays stay in the CPU cache (each full-frame pass would stream them from memory):
    # lap = (2 fg / sigma^2 - curv / sigma^4) / (2 pi sigma^2);  fu, fu2 (box sums) *= n
    # A = (fg - gsum fu / n) / (g2sum - gsum^2 / n);  c = (fu - A gsum) / n
    # rss = max(A^2 g2sum - 2 A (fg - c gsum) + f_c, 0) with f_c = fu2 - 2 c fu + n c^2
    # sigma_A = sqrt(rss / (n - 3) C11), sigma_res = sqrt(rss / (n - 1)), se_k = sigma_res / sqrt(2 (n - 1)) k
    # var_sum = sigma_A^2 + se_k^2;  T = (A - sigma_res k) / sqrt(var_sum / n)
    lap, A, c, T, sigma_A, se_k, var_sum = (np.empty_like(fg) for _ in range(7))
    ny, nx = fg.shape
    block = 64
    work = np.empty((4, min(block, ny), nx))
    for r0 in range(0, ny, block):
        b = slice(r0, min(r0 + block, ny))
        f_c, tmp, rss, two_A = work[:, :b.stop - r0]
        fu_b, fu2_b, fg_b, cv = fu[b], fu2[b], fg[b], curv[b]
        fu_b *= n
        fu2_b *= n
        cv /= sigma ** 4
        lp = np.multiply(2, fg_b, out=lap[b])
        lp /= sigma ** 2
        lp -= cv
        lp /= 2 * np.pi * sigma ** 2
        a = np.multiply(gsum, fu_b, out=A[b])
        a /= n
        np.subtract(fg_b, a, out=a)
        a /= g2sum - gsum ** 2 / n
        cc = np.multiply(a, gsum, out=c[b])
        np.subtract(fu_b, cc, out=cc)
        cc /= n
        np.multiply(2, cc, out=f_c)
        f_c *= fu_b
        np.subtract(fu2_b, f_c, out=f_c)
        np.square(cc, out=tmp)
        tmp *= n
        f_c += tmp
        np.square(a, out=rss)
        rss *= g2sum
        np.multiply(cc, gsum, out=tmp)
        np.subtract(fg_b, tmp, out=tmp)
        tmp *= np.multiply(2, a, out=two_A)
        rss -= tmp
        rss += f_c
        np.maximum(rss, 0.0, out=rss)
        sa = np.divide(rss, n - 3, out=sigma_A[b])
        sa *= C11
        np.sqrt(sa, out=sa)
        sigma_res = np.divide(rss, n - 1, out=rss)
        np.sqrt(sigma_res, out=sigma_res)
        sk = np.divide(sigma_res, np.sqrt(2 * (n - 1)), out=se_k[b])
        sk *= k
        vs = np.square(sa, out=var_sum[b])
        vs += np.square(sk, out=two_A)
        t = np.multiply(sigma_res, k, out=T[b])
        np.subtract(a, t, out=t)
        np.divide(vs, n, out=tmp)
        np.sqrt(tmp, out=tmp)
        with np.errstate(divide="ignore", invalid="ignore"):
            t /= tmp
    T = np.nan_to_num(T, copy=False, nan=-np.inf)
    # p < 0.05 needs T above the normal quantile (t quantiles are larger): test only those.
    mask = np.zeros(img.shape, bool)
    cand = T > special.ndtri(1 - P_SIGNIFICANT)
    df_cand = _prefilter_df(sigma_A[cand], se_k[cand], var_sum[cand], n)
    mask[cand] = special.stdtr(df_cand, -T[cand]) < P_SIGNIFICANT
    return Prefilter(A, c, T, lap, mask, sigma_A, se_k, var_sum, n)


def local_maxima(img: np.ndarray, size: int) -> np.ndarray:
    """cmeAnalysis ``locmax2d``: pixels that are the unique maximum of their size x size
    neighbourhood (flat maxima dropped), the border half-width excluded.

    A pixel is the unique maximum exactly when it exceeds the maximum of the other pixels
    of its neighbourhood; that maximum is formed separably from shifted slices (a row
    maximum with and without the centre column, then the column maximum), which is cheaper
    than a maximum filter followed by a search for ties.
    """
    h = size // 2
    ny, nx = img.shape
    lm = np.zeros(img.shape, bool)
    if ny <= 2 * h or nx <= 2 * h:
        return lm
    # row maxima over the columns x-h..x+h (all) and without x itself, for interior x
    row_nc = None
    for k in range(1, h + 1):
        left, right = img[:, h - k:nx - h - k], img[:, h + k:nx - h + k]
        pair = np.maximum(left, right)
        row_nc = pair if row_nc is None else np.maximum(row_nc, pair, out=row_nc)
    row_all = np.maximum(row_nc, img[:, h:nx - h])
    others = row_nc[h:ny - h].copy()  # centre row without the centre pixel
    for k in range(1, h + 1):
        np.maximum(others, row_all[h - k:ny - h - k], out=others)
        np.maximum(others, row_all[h + k:ny - h + k], out=others)
    lm[h:ny - h, h:nx - h] = img[h:ny - h, h:nx - h] > others
    return lm


# --------------------------------------------------------------------------------------
# Batched Gaussian fits
# --------------------------------------------------------------------------------------
def _windows(img: np.ndarray, xi: np.ndarray, yi: np.ndarray, w: int) -> np.ndarray:
    """(N, 2w+1, 2w+1) copies of the windows of ``img`` centred on (xi, yi) (inside the image):
    whole windows gathered from a sliding-window view, cheaper than per-pixel fancy indexing."""
    view = np.lib.stride_tricks.sliding_window_view(img, (2 * w + 1, 2 * w + 1))
    return view[np.asarray(yi) - w, np.asarray(xi) - w]


def _gauss1d(coords: np.ndarray, mu: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    d = coords[None, :] - mu[:, None]
    return np.exp(-d ** 2 / (2 * sigma ** 2)), d


def _model(p: np.ndarray, coords: np.ndarray, sigma: float, jac: bool = True):
    """Model (N, npx) and Jacobian (N, 4, npx; d/dx, d/dy, d/dA, d/dc; None unless ``jac``) of
    A gy gx + c at p = (x, y, A, c). The outer products gy gx are formed by einsum (faster than
    a broadcast multiply, the same products)."""
    n, nw = len(p), len(coords)
    gx, dx = _gauss1d(coords, p[:, 0], sigma)
    gy, dy = _gauss1d(coords, p[:, 1], sigma)
    if not jac:
        model = np.einsum("ny,nx->nyx", gy, gx)
        model *= p[:, 2, None, None]
        model += p[:, 3, None, None]
        return model.reshape(n, -1), None
    J = np.empty((n, 4, nw, nw))
    G = np.einsum("ny,nx->nyx", gy, gx, out=J[:, 2])
    AG = p[:, 2, None, None] * G
    np.multiply(AG, dx[:, None, :] / sigma ** 2, out=J[:, 0])
    np.multiply(AG, dy[:, :, None] / sigma ** 2, out=J[:, 1])
    J[:, 3] = 1.0
    return (AG + p[:, 3, None, None]).reshape(n, -1), J.reshape(n, 4, -1)


#: convergence tolerances of the position (px) and of A and c (ADU) steps.
_STEP_TOL = np.array([1e-4, 1e-4, 1e-2, 1e-2])

#: Gauss-Newton matrix of :func:`_lm_xyAc` from its 1-D sums S = (Sx0, Sy0, Sx1, Sy1, Sx2, Sy2,
#: Tx0, Ty0, Tx1, Ty1): entry e = coef[e] * S[U[e]] * S[V[e]] with coef (a^2, a, 1)[_H_COEF], for
#: H00, H11, H01, H02, H12, H03, H13, H22, H23 (a = A / sigma^2), then H33 = nw^2; _H_LAYOUT
#: places them row-major in the 4 x 4 matrix and _H_DIAG are the diagonal ones.
_H_COEF = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
_H_U = np.array([1, 0, 2, 1, 0, 7, 6, 0, 6])
_H_V = np.array([4, 5, 3, 2, 3, 8, 9, 1, 7])
_H_LAYOUT = np.array([0, 2, 3, 5, 2, 1, 4, 6, 3, 4, 7, 8, 5, 6, 8, 9])
_H_DIAG = np.array([0, 1, 7, 9])


def _pairwise_sum_last(a: np.ndarray) -> np.ndarray:
    """``a.sum(-1)`` with numpy's own floating-point order, as whole-array adds of its slices.

    numpy sums each row pairwise: rows shorter than 8 left to right from 0; up to 128
    elements in 8 interleaved partial sums (element i into sum i mod 8), combined as
    ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)), then the remaining elements one by one;
    longer rows split in two halves (the first a multiple of 8); the reduction starts from 0.
    A window row has only ~11 elements, where numpy's per-row overhead dominates: adding the
    slices a[..., i] of all rows at once gives the same bits ~2x faster
    (tests/test_cme_detect_speedups.py compares with ``sum`` for every length up to 300).
    """
    n = a.shape[-1]
    if n < 8:
        res = np.zeros(a.shape[:-1])
        for i in range(n):
            res += a[..., i]
        return res
    if n > 128:
        n2 = n // 2 - (n // 2) % 8
        return _pairwise_sum_last(a[..., :n2]) + _pairwise_sum_last(a[..., n2:])
    m = n - n % 8
    r = a
    if m > 8:
        r = a[..., :8].copy()
        for i in range(8, m, 8):
            r += a[..., i:i + 8]
    res = np.add(r[..., 0], r[..., 1])
    res += np.add(r[..., 2], r[..., 3])
    t = np.add(r[..., 4], r[..., 5])
    t += np.add(r[..., 6], r[..., 7])
    res += t
    for i in range(m, n):
        res += a[..., i]
    res += 0.0  # the reduction's start: turns a sum of -0.0 into +0.0 as numpy does
    return res


def _lm_xyAc(data: np.ndarray, wts: np.ndarray, p0: np.ndarray, coords: np.ndarray, sigma: float,
             escape: float, max_iter: int = 30, max_shift: float = 1.0) -> np.ndarray:
    """Batched Levenberg-Marquardt for (x, y, A, c) of A gy(y) gx(x) + c; data/wts (N, nw, nw).

    The gradient is exact (masked pixels have weight 0); the Gauss-Newton matrix is built
    from separable 1-D sums over the full window, which is exact for unmasked windows and a
    preconditioner otherwise (the accepted steps still decrease the weighted RSS). Position
    steps are clipped to ``max_shift`` px; a spot stops iterating when its step falls below
    ``_STEP_TOL`` or its position leaves ``escape`` px (it will be rejected). Only the
    still-active spots are carried through each iteration.

    Speed (this runs ~30,000 spot-iterations per dense 512^2 frame, mostly numpy call overhead
    and passes over (N, nw, nw) arrays): the x and y profiles are held as one (2, N, nw) array
    so that each 1-D quantity is one numpy call, the 1-D sums over the window are added slice
    by slice (:func:`_pairwise_sum_last`), H is assembled from its ten distinct entries
    in a few calls (:data:`_H_LAYOUT`), the residual is built in place from an einsum outer
    product, all-one weights are not applied, and an iteration keeps whichever state (old or
    new) needs fewer rows copied into it. Every value is computed by the same floating-point
    operations in the same order as the plain per-axis formulas, so the fits are bit-identical
    to them (tests/test_cme_detect_speedups.py).
    """
    s2 = sigma ** 2
    nw = len(coords)
    out = p0.copy()
    p, lam, idx = p0.copy(), np.full(len(p0), 1e-3), np.arange(len(p0))
    # all-one weights (unmasked windows: every slave fit) multiply nothing: skip them (w = None)
    d, w = data, (None if np.all(wts == 1.0) else wts)

    def evaluate(p, d, w):
        """Profiles g = (gx, gy), offsets dd = (dx, dy) (2, n, nw), weighted residual r and its RSS."""
        dd = coords[None, None, :] - p[:, :2].T[:, :, None]
        g = np.exp(-dd ** 2 / (2 * sigma ** 2))
        r = np.einsum("ny,nx->nyx", g[1], g[0])  # gy gx (outer product); r = w (d - (A gy gx + c)), in place
        r *= p[:, 2, None, None]
        r += p[:, 3, None, None]
        np.subtract(d, r, out=r)
        if w is not None:
            r *= w
        return [g, dd, r], np.einsum("nij,nij->n", r, r)

    state, rss = evaluate(p, d, w)
    for _ in range(max_iter):
        if idx.size == 0:
            break
        g, dd, r = state
        n = len(p)
        # 1-D sums over the window, one call for all: rows (Sx0, Sy0, Sx1, Sy1, Sx2, Sy2, Tx0, Ty0,
        # Tx1, Ty1) with S_k = sum g^2 d^k and T_k = sum g d^k per axis
        prods = np.empty((5,) + g.shape)  # g^2, g^2 d, g^2 d^2, g, g d
        np.multiply(g, g, out=prods[0])
        np.multiply(prods[0], dd, out=prods[1])
        np.multiply(prods[1], dd, out=prods[2])
        prods[3] = g
        gd = np.multiply(g, dd, out=prods[4])
        S = _pairwise_sum_last(prods).reshape(10, n)
        a = p[:, 2] / s2
        coef = np.stack([a * a, a, np.ones(n)])[_H_COEF]
        # the distinct entries of the symmetric H (a^2 Sy0 Sx2, ..., Tx0 Ty0, nw^2) and their layout
        vals = np.empty((10, n))
        np.multiply(coef * S[_H_U], S[_H_V], out=vals[:9])
        vals[9] = nw * nw
        diag = vals[_H_DIAG]
        vals[_H_DIAG] += lam * diag + 1e-12 * diag.max(0) + 1e-300  # Levenberg-Marquardt damping
        H = vals.T[:, _H_LAYOUT].reshape(n, 4, 4)
        Rgx = np.matmul(r, g[0][:, :, None])[:, :, 0]
        Rgxdx = np.matmul(r, gd[0][:, :, None])[:, :, 0]
        gy_R = np.empty((3, n, nw))  # gy Rgxdx, gdy Rgx, gy Rgx, summed over y
        np.multiply(g[1], Rgxdx, out=gy_R[0])
        np.multiply(gd[1], Rgx, out=gy_R[1])
        np.multiply(g[1], Rgx, out=gy_R[2])
        gy_R = _pairwise_sum_last(gy_R)
        grad = np.column_stack([a * gy_R[0], a * gy_R[1], gy_R[2], r.sum(axis=(1, 2))])
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        np.clip(step[:, :2], -max_shift, max_shift, out=step[:, :2])
        p_new = p + step
        state_new, rss_new = evaluate(p_new, d, w)
        better = rss_new < rss
        n_better = np.count_nonzero(better)
        if n_better == n:
            p, rss, state = p_new, rss_new, state_new
        elif n_better:  # copy the fewer rows: the rejected ones back, or the accepted ones over
            if 2 * n_better >= n:
                src, dst, rows = (p, rss, state), (p_new, rss_new, state_new), np.flatnonzero(~better)
            else:
                src, dst, rows = (p_new, rss_new, state_new), (p, rss, state), np.flatnonzero(better)
            dst[0][rows], dst[1][rows] = src[0][rows], src[1][rows]
            (g0, dd0, r0), (g1, dd1, r1) = src[2], dst[2]
            g1[:, rows], dd1[:, rows], r1[rows] = g0[:, rows], dd0[:, rows], r0[rows]
            p, rss, state = dst
        lam = np.where(better, np.maximum(lam / 10, 1e-9), lam * 10)
        done = np.all(np.abs(step) <= _STEP_TOL, axis=1) | (lam > 1e12) | np.any(np.abs(p[:, :2]) > escape, axis=1)
        if done.any():
            out[idx[done]] = p[done]
            keep = ~done
            p, lam, idx, rss = p[keep], lam[keep], idx[keep], rss[keep]
            d = np.compress(keep, d, axis=0)
            w = None if w is None else np.compress(keep, w, axis=0)
            g, dd, r = state
            state = [np.compress(keep, g, axis=1), np.compress(keep, dd, axis=1), np.compress(keep, r, axis=0)]
    out[idx] = p
    return out


#: Whether the Levenberg-Marquardt fits run on compiled per-spot iterations (numba; the single-spot
#: fits of :func:`fit_windows` on :func:`_lm_xyAc_compiled`, the mixture and free-sigma fits on
#: :func:`_lm_dense_compiled`) instead of the batched numpy ones (:func:`_lm_xyAc`, :func:`_lm_dense`),
#: which they follow to float rounding: about 0.15 -> 0.11 CPU s per dense 512^2 frame.
COMPILED_LM = True


#: numba-compiled with IEEE arithmetic (no fast math: a NaN trial point must fail the RSS
#: comparison, as in numpy); plain Python where numba is missing (then never called).
_exact = functools.partial(jit, fastmath=False) if COMPILER_AVAILABLE else (lambda fn: fn)


@_exact
def _solve_small(H, b, x):
    """x = H^-1 b for a small square H (Gaussian elimination, partial pivoting; H and b overwritten)."""
    n = b.shape[0]
    for c in range(n):
        piv = c
        for i in range(c + 1, n):
            if abs(H[i, c]) > abs(H[piv, c]):
                piv = i
        if piv != c:
            for j in range(n):
                H[c, j], H[piv, j] = H[piv, j], H[c, j]
            b[c], b[piv] = b[piv], b[c]
        for i in range(c + 1, n):
            f = H[i, c] / H[c, c]
            for j in range(c, n):
                H[i, j] -= f * H[c, j]
            b[i] -= f * b[c]
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for j in range(i + 1, n):
            acc -= H[i, j] * x[j]
        x[i] = acc / H[i, i]


@_exact
def _lm_evaluate(d, w, weighted, coords, two_s2, p, g, dd, rgx, rgxdx):
    """For the compiled (x, y, A, c) fit: profiles g = (gx, gy) and offsets dd = (dx, dy) of one
    window at p, and of its weighted residual r the row sums rgx = sum_x r gx and rgxdx =
    sum_x r gx dx (what the gradient needs); returns (RSS, sum of r)."""
    nw = coords.shape[0]
    for ax in range(2):
        for k in range(nw):
            dd[ax, k] = coords[k] - p[ax]
            g[ax, k] = math.exp(-dd[ax, k] ** 2 / two_s2)
    rss = 0.0
    rsum = 0.0
    for iy in range(nw):
        rgx[iy] = rgxdx[iy] = 0.0
        for ix in range(nw):
            v = d[iy, ix] - (p[2] * (g[1, iy] * g[0, ix]) + p[3])
            if weighted:
                v *= w[iy, ix]
            rss += v * v
            rgx[iy] += v * g[0, ix]
            rgxdx[iy] += v * (g[0, ix] * dd[0, ix])
            rsum += v
    return rss, rsum


@_exact
def _lm_xyAc_spots(data, wts, weighted, p0, coords, sigma, escape, max_iter, max_shift, tol, out):
    """:func:`_lm_xyAc`'s iteration, spot by spot, into out (N, 4)."""
    n, nw = data.shape[0], coords.shape[0]
    s2 = sigma ** 2
    two_s2 = 2 * sigma ** 2
    g, dd, rgx, rgxdx = np.empty((2, nw)), np.empty((2, nw)), np.empty(nw), np.empty(nw)
    g1, dd1, rgx1, rgxdx1 = np.empty((2, nw)), np.empty((2, nw)), np.empty(nw), np.empty(nw)
    H, grad, step = np.empty((4, 4)), np.empty(4), np.empty(4)
    S, T = np.empty((2, 3)), np.empty((2, 2))
    p, p1, diag = np.empty(4), np.empty(4), np.empty(4)
    for i in range(n):
        d, w = data[i], wts[i]
        p[:] = p0[i]
        rss, rsum = _lm_evaluate(d, w, weighted, coords, two_s2, p, g, dd, rgx, rgxdx)
        lam = 1e-3
        for _ in range(max_iter):
            for ax in range(2):  # S_k = sum g^2 d^k, T_k = sum g d^k per axis
                S[ax, 0] = S[ax, 1] = S[ax, 2] = T[ax, 0] = T[ax, 1] = 0.0
                for k in range(nw):
                    gg = g[ax, k] * g[ax, k]
                    S[ax, 0] += gg
                    S[ax, 1] += gg * dd[ax, k]
                    S[ax, 2] += gg * dd[ax, k] * dd[ax, k]
                    T[ax, 0] += g[ax, k]
                    T[ax, 1] += g[ax, k] * dd[ax, k]
            a = p[2] / s2
            H[0, 0], H[1, 1] = a * a * S[1, 0] * S[0, 2], a * a * S[0, 0] * S[1, 2]
            H[0, 1] = H[1, 0] = a * a * S[0, 1] * S[1, 1]
            H[0, 2] = H[2, 0] = a * S[1, 0] * S[0, 1]
            H[1, 2] = H[2, 1] = a * S[0, 0] * S[1, 1]
            H[0, 3] = H[3, 0] = a * T[1, 0] * T[0, 1]
            H[1, 3] = H[3, 1] = a * T[0, 0] * T[1, 1]
            H[2, 2], H[3, 3] = S[0, 0] * S[1, 0], nw * nw
            H[2, 3] = H[3, 2] = T[0, 0] * T[1, 0]
            grad[0] = grad[1] = grad[2] = 0.0
            for iy in range(nw):
                grad[0] += g[1, iy] * rgxdx[iy]
                grad[1] += (g[1, iy] * dd[1, iy]) * rgx[iy]
                grad[2] += g[1, iy] * rgx[iy]
            grad[0] *= a
            grad[1] *= a
            grad[3] = rsum
            for k in range(4):
                diag[k] = H[k, k]
            top = max(max(diag[0], diag[1]), max(diag[2], diag[3]))
            for k in range(4):
                H[k, k] += lam * diag[k] + 1e-12 * top + 1e-300  # Levenberg-Marquardt damping
            _solve_small(H, grad, step)
            for k in range(2):
                step[k] = min(max(step[k], -max_shift), max_shift)
            for k in range(4):
                p1[k] = p[k] + step[k]
            rss1, rsum1 = _lm_evaluate(d, w, weighted, coords, two_s2, p1, g1, dd1, rgx1, rgxdx1)
            if rss1 < rss:
                p, p1, g, g1, dd, dd1 = p1, p, g1, g, dd1, dd
                rgx, rgx1, rgxdx, rgxdx1 = rgx1, rgx, rgxdx1, rgxdx
                rss, rsum = rss1, rsum1
                lam = max(lam / 10, 1e-9)
            else:
                lam = lam * 10
            small = True
            for k in range(4):
                small = small and abs(step[k]) <= tol[k]
            if small or lam > 1e12 or abs(p[0]) > escape or abs(p[1]) > escape:
                break
        out[i] = p


def _lm_xyAc_compiled(data: np.ndarray, wts: np.ndarray, p0: np.ndarray, coords: np.ndarray, sigma: float,
                      escape: float, max_iter: int = 30, max_shift: float = 1.0) -> np.ndarray:
    """:func:`_lm_xyAc` as one compiled loop over the spots, each iterated to its own end: the same
    iteration (steps, damping, acceptance, stopping), without numpy's per-call overhead on small
    windows. Sums run in another order and the 4 x 4 solve is written out, so fits agree with
    the batched version to rounding (tests/test_cme_detect_speedups.py), not bit for bit."""
    out = np.empty((len(p0), 4))
    if len(p0):
        _lm_xyAc_spots(np.ascontiguousarray(data, dtype=np.float64), np.ascontiguousarray(wts, dtype=np.float64),
                       not np.all(wts == 1.0), np.ascontiguousarray(p0, dtype=np.float64), coords, float(sigma),
                       float(escape), int(max_iter), float(max_shift), _STEP_TOL, out)
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


def _nan_sums(res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row sums of res^2 and res ignoring NaN: ``np.nansum`` of both (the same values: the sums
    of the rows with NaN set to 0), with the NaN replacement done once instead of twice."""
    res0 = res.copy()
    res0[np.isnan(res0)] = 0.0
    return np.sum(res0 ** 2, axis=1), np.sum(res0, axis=1)


def ad_statistic(res: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Anderson-Darling A^2 of every row of ``res`` (NaN = missing) against N(0, sd^2)."""
    n = np.sum(np.isfinite(res), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.sort(res / sd[:, None], axis=1)  # NaN sorted last
    m = res.shape[1]
    i2 = np.arange(0, 2 * m, 2, dtype=np.float64)  # 2i
    invalid = i2 >= 2.0 * n[:, None]
    np.copyto(z, 0.0, where=invalid)
    # sum_i (2i+1)[ln F(z_i) + ln(1 - F(z_{n-1-i}))], regrouped per sorted value: the terms
    # (2i+1) ln F(z) + (2n-2i-1) ln F(-z), formed in place with the integer weights as floats
    terms = special.log_ndtr(z)
    terms *= i2 + 1.0
    upper = special.log_ndtr(np.negative(z, out=z))
    upper *= (2.0 * n - 1.0)[:, None] - i2
    terms += upper
    np.copyto(terms, 0.0, where=invalid)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -n - np.sum(terms, axis=1) / n


def ad_reject_normal(res: np.ndarray, sd: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """True where the AD test rejects N(0, sd^2) at ``alpha`` (mean known, sd estimated)."""
    if alpha not in _AD_CASE2_CRITICAL:
        raise InputError("config:alpha_ad", f"AD critical values exist for {sorted(_AD_CASE2_CRITICAL)}")
    return ad_statistic(res, sd) > _AD_CASE2_CRITICAL[alpha]


def extract_windows(img: np.ndarray, xi: np.ndarray, yi: np.ndarray, w: int,
                    labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(2w+1)^2 windows of ``img`` around integer centres (all inside the image) as (N, npx)
    data and 0/1 weights; with mask ``labels``, pixels of other components weigh 0."""
    data = _windows(img, xi, yi, w).reshape(len(xi), -1).astype(np.float64, copy=False)
    wts = np.ones_like(data)
    if labels is not None:
        lw = _windows(labels, xi, yi, w).reshape(len(xi), -1)
        centre = lw[:, lw.shape[1] // 2][:, None]
        wts[(lw != 0) & (lw != centre)] = 0.0
    return data, wts


def fit_windows(data: np.ndarray, wts: np.ndarray, xi: np.ndarray, yi: np.ndarray, dx0: np.ndarray,
                dy0: np.ndarray, sigma: float, *, A0=None, c0=None, mode: str = "xyAc",
                conf_radius: float = np.inf, max_amplitude: float | np.ndarray = np.inf,
                alpha: float = 0.05, normality: bool = True, return_residuals: bool = False,
                stats_where=None):
    """Fit ``A exp(-r^2/2 sigma^2) + c`` (sampled Gaussian, sigma fixed) in pre-cut windows.

    ``data``/``wts``: (N, (2w+1)^2) from :func:`extract_windows` centred on pixel (xi, yi);
    (dx0, dy0): start (or, for 'Ac', fixed) offsets of the spot from the centre pixel.
    'xyAc' frees the position (batched Levenberg-Marquardt from (dx0, dy0, A0, c0)); 'Ac'
    is the exact linear least-squares fit of A and c. Parameter sds follow cmeAnalysis:
    sqrt(RSS/(npx - n_par - 1) * diag((J^T J)^-1)); a fit is valid with >= 10 pixels and,
    for 'xyAc', |dx|, |dy| < ``conf_radius`` and A < ``max_amplitude``.

    ``normality``: run the Anderson-Darling test of the residuals (``hval_AD``; else False).
    It is the costliest statistic per window; a caller that keeps only some fits can skip it
    and test the kept ones (:func:`ad_reject_normal` of each row gives the same value in any
    batch) on the residuals that ``return_residuals`` adds: (FitResult, (N, npx) residuals,
    NaN at weight-0 pixels). ``stats_where`` ('xyAc' only): a function of the fitted (N, 4)
    window parameters giving the windows whose statistics (sds, residuals, p-value) the
    caller can use; the others get NaN and ok = False, which saves their Jacobians and
    covariances (every computed row is the same as without it).
    """
    n = len(data)
    nw = int(round(math.sqrt(data.shape[1]))) if n else 1
    w = (nw - 1) // 2
    coords = np.arange(-w, w + 1, dtype=np.float64)
    npx = wts.sum(axis=1).astype(int)
    if mode == "Ac":
        gx, _ = _gauss1d(coords, dx0, sigma)
        gy, _ = _gauss1d(coords, dy0, sigma)
        G = np.einsum("ny,nx->nyx", gy, gx).reshape(n, -1)  # outer products gy gx
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
        lm = _lm_xyAc_compiled if COMPILED_LM and COMPILER_AVAILABLE else _lm_xyAc
        p = lm(data.reshape(-1, nw, nw), wts.reshape(-1, nw, nw), p0, coords, sigma, escape=escape)
        sub = slice(None) if stats_where is None else np.flatnonzero(stats_where(p))
        if isinstance(sub, slice) or sub.size:
            model, J = _model(p[sub], coords, sigma)
        else:
            model, J = np.zeros((0, nw * nw)), np.zeros((0, 4, nw * nw))
        H = np.matmul(J * wts[sub][:, None, :], J.transpose(0, 2, 1))
        n_par = 4
    else:
        raise ValueError(f"fit_windows: unknown mode {mode!r}")
    if mode == "Ac" or stats_where is None:
        sub = slice(None)
    res = np.where(wts[sub] > 0, data[sub] - model, np.nan)
    rss, rsum = _nan_sums(res)
    cov_diag = np.einsum("nii->ni", np.linalg.pinv(H)) if len(H) else np.zeros((0, n_par))
    with np.errstate(divide="ignore", invalid="ignore"):
        pstd = np.sqrt(rss[:, None] / (npx[sub] - n_par - 1)[:, None] * cov_diag)
        sd_r = np.sqrt((rss - rsum ** 2 / npx[sub]) / (npx[sub] - 1))
    if not isinstance(sub, slice):  # statistics of the selected windows only, NaN elsewhere
        res, rss, sd_r, pstd = (_scatter_rows(a, sub, n) for a in (res, rss, sd_r, pstd))
    full = np.zeros((n, 4))
    full[:, 4 - n_par:] = pstd
    fr = FitResult(
        ok=npx >= 10, x=xi + p[:, 0], y=yi + p[:, 1], A=p[:, 2], c=p[:, 3],
        x_pstd=full[:, 0], y_pstd=full[:, 1], A_pstd=full[:, 2], c_pstd=full[:, 3],
        sigma_r=sd_r, SE_sigma_r=sd_r / np.sqrt(2 * (npx - 1)), RSS=rss,
        pval_A=amplitude_pval(p[:, 2], full[:, 2], sd_r, npx, alpha),
        hval_AD=ad_reject_normal(res, sd_r) if normality else np.zeros(n, bool), npx=npx)
    if mode == "xyAc":
        fr.ok &= (np.abs(p[:, 0]) < conf_radius) & (np.abs(p[:, 1]) < conf_radius) & (p[:, 2] < max_amplitude)
    fr.ok &= np.isfinite(fr.A) & np.isfinite(fr.pval_A)
    return (fr, res) if return_residuals else fr


def _scatter_rows(a: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """An (n, ...) array, NaN except ``a`` in ``rows``."""
    out = np.full((n,) + a.shape[1:], np.nan)
    out[rows] = a
    return out


def fit_gaussians(img: np.ndarray, x, y, sigma: float, *, A0=None, c0=None, mode: str = "xyAc",
                  labels: np.ndarray | None = None, alpha: float = 0.05,
                  window_sigma: float | None = None, normality: bool = True, return_residuals: bool = False,
                  stats_where=None):
    """Fit a Gaussian (:func:`fit_windows`) around every (x, y) of one image, as cmeAnalysis
    ``fitGaussians2D``: window half-width ceil(4 sigma_w) around round(x, y) and confinement
    radius ceil(2 sigma_w), sigma_w = ``window_sigma`` or sigma; spots whose window leaves the
    image are invalid (NaN); a free fit must also keep A below twice the image range.
    ``normality``, ``return_residuals``: as :func:`fit_windows` (residual rows of spots
    without a window are NaN). ``stats_where``: a function (spot indices, fitted x, y, A) ->
    the spots whose fit statistics are needed (see :func:`fit_windows`).
    """
    img = np.asarray(img, dtype=np.float64)
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n = len(x)
    out = FitResult.empty(n)
    sw = sigma if window_sigma is None else window_sigma
    w, w2 = math.ceil(4 * sw), math.ceil(2 * sw)
    resid = np.full((n, (2 * w + 1) ** 2), np.nan) if return_residuals else None
    if n == 0:
        return (out, resid) if return_residuals else out
    ny, nx = img.shape
    xi, yi = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    sel = np.flatnonzero((xi >= w) & (xi < nx - w) & (yi >= w) & (yi < ny - w))
    if sel.size == 0:
        return (out, resid) if return_residuals else out
    xi, yi = xi[sel], yi[sel]
    data, wts = extract_windows(img, xi, yi, w, labels)
    A0s = None if A0 is None else np.broadcast_to(A0, (n,))[sel]
    c0s = None if c0 is None else np.broadcast_to(c0, (n,))[sel]
    where = None if stats_where is None else (lambda p: stats_where(sel, xi + p[:, 0], yi + p[:, 1], p[:, 2]))
    fr = fit_windows(data, wts, xi, yi, x[sel] - xi, y[sel] - yi, sigma, A0=A0s, c0=c0s, mode=mode,
                     conf_radius=w2, max_amplitude=2 * float(img.max() - img.min()), alpha=alpha,
                     normality=normality, return_residuals=return_residuals, stats_where=where)
    if return_residuals:
        fr, resid[sel] = fr
    out.put(sel, fr)
    return (out, resid) if return_residuals else out


# --------------------------------------------------------------------------------------
# Mixtures of Gaussians and free-sigma fits (dense batched Levenberg-Marquardt)
# --------------------------------------------------------------------------------------
def _mixture_model(p: np.ndarray, coords: np.ndarray, sigma: float, K: int, jac: bool | str = True):
    """Model (N, npx) and Jacobian (N, 3K+1, npx; None unless ``jac``) of
    sum_k A_k g(x - x_k) g(y - y_k) + c, p = (x_1..x_K, y_1..y_K, A_1..A_K, c) in window
    coordinates (sampled Gaussians, fixed sigma); ``jac="only"`` skips the model (None)."""
    n, nw, s2 = len(p), len(coords), sigma ** 2
    dx = coords[None, None, :] - p[:, :K, None]
    dy = coords[None, None, :] - p[:, K:2 * K, None]
    gx, gy = np.exp(-dx ** 2 / (2 * s2)), np.exp(-dy ** 2 / (2 * s2))
    if not jac:
        model = np.einsum("nky,nkx->nyx", gy * p[:, 2 * K:3 * K, None], gx)
        return (model + p[:, 3 * K, None, None]).reshape(n, -1), None
    J = np.empty((n, 3 * K + 1, nw, nw))
    G = np.einsum("nky,nkx->nkyx", gy, gx, out=J[:, 2 * K:3 * K])  # outer products gy gx
    AG = p[:, 2 * K:3 * K, None, None] * G
    np.multiply(AG, dx[:, :, None, :] / s2, out=J[:, :K])
    np.multiply(AG, dy[:, :, :, None] / s2, out=J[:, K:2 * K])
    J[:, 3 * K] = 1.0
    if jac == "only":
        return None, J.reshape(n, 3 * K + 1, -1)
    return (AG.sum(1) + p[:, 3 * K, None, None]).reshape(n, -1), J.reshape(n, 3 * K + 1, -1)


def _free_sigma_model(p: np.ndarray, coords: np.ndarray, jac: bool | str = True):
    """Model and Jacobian of A g_s(x - x0) g_s(y - y0) + c with p = (x0, y0, A, s, c), as
    :func:`_mixture_model`: J is None unless ``jac``, and ``jac="only"`` skips the model."""
    n, nw = len(p), len(coords)
    s = p[:, 3, None]
    dx, dy = coords[None, :] - p[:, 0, None], coords[None, :] - p[:, 1, None]
    gx, gy = np.exp(-dx ** 2 / (2 * s ** 2)), np.exp(-dy ** 2 / (2 * s ** 2))
    G = gy[:, :, None] * gx[:, None, :]
    AG = p[:, 2, None, None] * G
    if not jac:
        return (AG + p[:, 4, None, None]).reshape(n, -1), None
    s2 = (s ** 2)[:, :, None]
    J = np.empty((n, 5, nw, nw))
    J[:, 0] = AG * dx[:, None, :] / s2
    J[:, 1] = AG * dy[:, :, None] / s2
    J[:, 2] = G
    J[:, 3] = AG * (dx[:, None, :] ** 2 + dy[:, :, None] ** 2) / (s2 * s[:, :, None])
    J[:, 4] = 1.0
    if jac == "only":
        return None, J.reshape(n, 5, -1)
    return (AG + p[:, 4, None, None]).reshape(n, -1), J.reshape(n, 5, -1)


@dataclass(frozen=True, eq=False)  # an array field: identity, not elementwise, equality
class _Model:
    """A window model of the dense fits: ``kind`` "mixture" (:func:`_mixture_model`, K Gaussians of
    fixed ``sigma``) or "free_sigma" (:func:`_free_sigma_model`). Called as ``fn(p, jac)`` it is the
    numpy model; :func:`_lm_dense` runs it on the compiled per-spot iteration instead."""

    kind: str
    coords: np.ndarray
    sigma: float = 0.0
    K: int = 1

    def __call__(self, p: np.ndarray, jac: bool | str = True):
        if self.kind == "mixture":
            return _mixture_model(p, self.coords, self.sigma, self.K, jac)
        return _free_sigma_model(p, self.coords, jac)


@_exact
def _dense_model(kind, K, sigma, coords, p, model, J, jac, gx, gy, dx, dy):
    """One window's model (npx,) and, with ``jac``, Jacobian rows J (P, npx) of :class:`_Model`
    ``kind`` (0 mixture, 1 free sigma), in :func:`_mixture_model`'s parameter order."""
    nw = coords.shape[0]
    if kind == 0:
        s2 = sigma ** 2
        model[:] = 0.0
        for k in range(K):
            for i in range(nw):
                dx[i] = coords[i] - p[k]
                dy[i] = coords[i] - p[K + k]
                gx[i] = math.exp(-dx[i] ** 2 / (2 * s2))
                gy[i] = math.exp(-dy[i] ** 2 / (2 * s2))
            A = p[2 * K + k]
            for iy in range(nw):
                for ix in range(nw):
                    q = iy * nw + ix
                    G = gy[iy] * gx[ix]
                    AG = A * G
                    model[q] += AG
                    if jac:
                        J[k, q] = AG * (dx[ix] / s2)
                        J[K + k, q] = AG * (dy[iy] / s2)
                        J[2 * K + k, q] = G
        c = p[3 * K]
        for q in range(nw * nw):
            model[q] += c
            if jac:
                J[3 * K, q] = 1.0
        return
    s = p[3]
    s2 = s ** 2
    for i in range(nw):
        dx[i] = coords[i] - p[0]
        dy[i] = coords[i] - p[1]
        gx[i] = math.exp(-dx[i] ** 2 / (2 * s ** 2))
        gy[i] = math.exp(-dy[i] ** 2 / (2 * s ** 2))
    for iy in range(nw):
        for ix in range(nw):
            q = iy * nw + ix
            G = gy[iy] * gx[ix]
            AG = p[2] * G
            model[q] = AG + p[4]
            if jac:
                J[0, q] = AG * dx[ix] / s2
                J[1, q] = AG * dy[iy] / s2
                J[2, q] = G
                J[3, q] = AG * (dx[ix] ** 2 + dy[iy] ** 2) / (s2 * s)
                J[4, q] = 1.0


@_exact
def _dense_normal_eq(J, r, w, weighted, free, H0, grad, Jw):
    """Gauss-Newton matrix H0 and gradient of one weighted window over the ``free`` parameters
    (Jw: scratch, the weighted Jacobian rows of the free parameters)."""
    nf, npx = free.shape[0], r.shape[0]
    for a in range(nf):
        ja = J[free[a]]
        for q in range(npx):
            Jw[a, q] = ja[q] * w[q] if weighted else ja[q]
    for a in range(nf):
        ja = Jw[a]
        g = 0.0
        for q in range(npx):
            g += ja[q] * r[q]
        grad[a] = g
        for b in range(a, nf):
            jb = Jw[b]
            h = 0.0
            for q in range(npx):
                h += ja[q] * jb[q]
            H0[a, b] = H0[b, a] = h


@_exact
def _weighted_residual(d, model, w, weighted, r):
    """r = w (d - model) of one window (w not applied where ``weighted`` is False); returns its RSS."""
    rss = 0.0
    for q in range(d.shape[0]):
        v = d[q] - model[q]
        if weighted:
            v *= w[q]
        r[q] = v
        rss += v * v
    return rss


@_exact
def _lm_dense_spots(kind, K, sigma, coords, data, wts, weighted, p0, free, tol, clip, escape, max_iter, out, out_rss):
    """:func:`_lm_dense`'s iteration, spot by spot, into out (N, P) and out_rss (N,)."""
    n, P = p0.shape
    npx, nw, nf = data.shape[1], coords.shape[0], free.shape[0]
    model, J, Jw = np.empty(npx), np.empty((P, npx)), np.empty((nf, npx))
    r, r1 = np.empty(npx), np.empty(npx)
    gx, gy, dx, dy = np.empty(nw), np.empty(nw), np.empty(nw), np.empty(nw)
    H0, H, grad, b, step, diag = (np.empty((nf, nf)), np.empty((nf, nf)), np.empty(nf), np.empty(nf),
                                  np.empty(nf), np.empty(nf))
    p, p1 = np.empty(P), np.empty(P)
    for i in range(n):
        d, w = data[i], wts[i]
        p[:] = p0[i]
        _dense_model(kind, K, sigma, coords, p, model, J, True, gx, gy, dx, dy)
        rss = _weighted_residual(d, model, w, weighted, r)
        _dense_normal_eq(J, r, w, weighted, free, H0, grad, Jw)
        lam = 1e-3
        for _ in range(max_iter):
            top = H0[0, 0]
            for a in range(nf):
                diag[a] = H0[a, a]
                top = max(top, diag[a])
            for a in range(nf):
                b[a] = grad[a]
                for c in range(nf):
                    H[a, c] = H0[a, c]
                H[a, a] += lam * diag[a] + 1e-12 * top + 1e-300  # Levenberg-Marquardt damping
            _solve_small(H, b, step)
            p1[:] = p
            for a in range(nf):
                step[a] = min(max(step[a], -clip[a]), clip[a])
                p1[free[a]] += step[a]
            _dense_model(kind, K, sigma, coords, p1, model, J, False, gx, gy, dx, dy)
            rss1 = _weighted_residual(d, model, w, weighted, r1)
            if rss1 < rss:
                p, p1, r, r1 = p1, p, r1, r
                rss = rss1
                _dense_model(kind, K, sigma, coords, p, model, J, True, gx, gy, dx, dy)
                _dense_normal_eq(J, r, w, weighted, free, H0, grad, Jw)
                lam = max(lam / 10, 1e-9)
            else:
                lam = lam * 10
            stop = lam > 1e12
            small = True
            for a in range(nf):
                small = small and abs(step[a]) <= tol[a]
                stop = stop or abs(p[free[a]]) > escape[a]
            if small or stop:
                break
        out[i] = p
        out_rss[i] = rss


def _lm_dense(data: np.ndarray, wts: np.ndarray, p0: np.ndarray, fn, free: np.ndarray, tol: np.ndarray,
              clip: np.ndarray, escape: np.ndarray, max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt with a dense Jacobian ``fn(p, jac=True) -> (model, J)``, (N, npx)
    and (N, P, npx) (J may be None when ``jac`` is False; ``jac="only"`` may skip the model).

    Only the columns ``free`` of p are fitted (the others stay fixed). ``tol``, ``clip``
    (max |step|) and ``escape`` (max |p|, for window positions) are per free column; a fit
    stops when every |step| <= tol, when lambda explodes or when a parameter passes escape.
    Returns the parameters and the weighted RSS.

    All-one weights are not applied (w = None), an iteration that takes every step
    replaces the state instead of scattering rows, and the Jacobian is not kept (only the
    normal equations it gives, recomputed where a step is taken); all give the same values
    as the plain formulas.
    """
    if COMPILED_LM and COMPILER_AVAILABLE and isinstance(fn, _Model):
        return _lm_dense_compiled(data, wts, p0, fn, free, tol, clip, escape, max_iter)
    p = p0.astype(np.float64).copy()
    out, out_rss = p.copy(), np.zeros(len(p))
    idx = np.arange(len(p))
    d, w = data, (None if np.all(wts == 1.0) else wts)
    all_free = len(free) == p.shape[1] and np.array_equal(free, np.arange(p.shape[1]))

    def normal_eq(J, r, w):
        """Gauss-Newton matrix and gradient of the weighted problem (free columns)."""
        Jw = J if all_free else J[:, free]
        if w is not None:
            Jw = Jw * w[:, None, :]
        return np.matmul(Jw, Jw.transpose(0, 2, 1)), np.matmul(Jw, r[:, :, None])[:, :, 0]

    def weighted(resid, w):
        return resid if w is None else w * resid

    model, J = fn(p)
    r = weighted(d - model, w)
    rss = np.einsum("ni,ni->n", r, r)
    out_rss[:] = rss
    H0, grad = normal_eq(J, r, w)  # recomputed only where a step is taken (J is not kept)
    del model, J
    lam = np.full(len(p), 1e-3)
    nf = len(free)
    diag_idx = np.arange(nf)
    for _ in range(max_iter):
        if idx.size == 0:
            break
        H = H0.copy()
        diag = np.einsum("nii->ni", H0)
        H[:, diag_idx, diag_idx] += lam[:, None] * diag + 1e-12 * diag.max(1, keepdims=True) + 1e-300
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        np.clip(step, -clip, clip, out=step)
        p_new = p.copy()
        p_new[:, free] += step
        model_new, _ = fn(p_new, False)
        r_new = weighted(d - model_new, w)
        rss_new = np.einsum("ni,ni->n", r_new, r_new)
        better = rss_new < rss
        if better.all():
            p, rss, r = p_new, rss_new, r_new
            H0, grad = normal_eq(fn(p, "only")[1], r, w)
        elif better.any():  # the Jacobian and normal equations only where the step was taken
            p[better], rss[better], r[better] = p_new[better], rss_new[better], r_new[better]
            H0[better], grad[better] = normal_eq(fn(p_new[better], "only")[1], r_new[better],
                                                 None if w is None else w[better])
        lam = np.where(better, np.maximum(lam / 10, 1e-9), lam * 10)
        done = np.all(np.abs(step) <= tol, axis=1) | (lam > 1e12) | np.any(np.abs(p[:, free]) > escape, axis=1)
        if done.any():
            out[idx[done]], out_rss[idx[done]] = p[done], rss[done]
            keep = ~done
            p, lam, idx, rss, r, d, H0, grad = (a[keep] for a in (p, lam, idx, rss, r, d, H0, grad))
            w = None if w is None else w[keep]
    out[idx], out_rss[idx] = p, rss
    return out, out_rss


def _lm_dense_compiled(data: np.ndarray, wts: np.ndarray, p0: np.ndarray, model: _Model, free: np.ndarray,
                       tol: np.ndarray, clip: np.ndarray, escape: np.ndarray, max_iter: int = 50):
    """:func:`_lm_dense` for a :class:`_Model` as one compiled loop over the spots: the same
    iteration, agreeing with the batched one to float rounding (tests/test_cme_detect_speedups.py)."""
    p0 = np.ascontiguousarray(p0, dtype=np.float64)
    out, out_rss = p0.copy(), np.zeros(len(p0))
    if len(p0):
        f64 = lambda a: np.ascontiguousarray(np.broadcast_to(a, (len(free),)), dtype=np.float64)  # noqa: E731
        _lm_dense_spots(0 if model.kind == "mixture" else 1, int(model.K), float(model.sigma),
                        np.ascontiguousarray(model.coords, dtype=np.float64),
                        np.ascontiguousarray(data, dtype=np.float64), np.ascontiguousarray(wts, dtype=np.float64),
                        not np.all(wts == 1.0), p0, np.ascontiguousarray(free, dtype=np.int64), f64(tol), f64(clip),
                        f64(escape), int(max_iter), out, out_rss)
    return out, out_rss


def _fit_stats(data: np.ndarray, wts: np.ndarray, model: np.ndarray, J: np.ndarray, n_par: int):
    """Residuals (NaN where masked), RSS, sd_r and the parameter sds of cmeAnalysis,
    sqrt(RSS/(npx - n_par - 1) diag((J^T J)^-1)), for the rows of J (the fitted parameters)."""
    npx = wts.sum(axis=1)
    res = np.where(wts > 0, data - model, np.nan)
    rss, rsum = _nan_sums(res)
    Jw = J * wts[:, None, :]
    cov = np.einsum("nii->ni", np.linalg.pinv(np.matmul(Jw, J.transpose(0, 2, 1))))
    with np.errstate(divide="ignore", invalid="ignore"):
        pstd = np.sqrt(rss[:, None] / (npx - n_par - 1)[:, None] * cov)
        sd_r = np.sqrt((rss - rsum ** 2 / npx) / (npx - 1))
    return res, rss, sd_r, pstd, npx


def _residual_peak(res: np.ndarray, wts: np.ndarray, sd_r: np.ndarray, coords: np.ndarray, sigma: float):
    """Where a further Gaussian source is most significant in each residual window.

    Matched filter: at every pixel position (u, v) of the window the least-squares amplitude
    of a Gaussian on the residual, a(u, v) = sum r g / sum g^2 (masked pixels excluded), and
    its z-score a sqrt(sum g^2) / sd_r. Returns (z, a, u, v) of the maximum of z.
    """
    n, nw = len(res), len(coords)
    g = np.exp(-(coords[None, :] - coords[:, None]) ** 2 / (2 * sigma ** 2))  # (position, coordinate)
    R = np.nan_to_num(res).reshape(n, nw, nw)
    W = wts.reshape(n, nw, nw)
    num = np.matmul(np.matmul(g, R), g.T)
    g2 = g * g
    den = np.matmul(np.matmul(g2, W), g2.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = num / (np.sqrt(den) * sd_r[:, None, None])
    z = np.nan_to_num(z, nan=-np.inf).reshape(n, -1)
    k = np.argmax(z, axis=1)
    rows = np.arange(n)
    a = (num.reshape(n, -1)[rows, k] / den.reshape(n, -1)[rows, k])
    return z[rows, k], a, coords[k % nw], coords[k // nw]


def _elongation_z(res: np.ndarray, wts: np.ndarray, sd_r: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                  coords: np.ndarray, sigma: float) -> np.ndarray:
    """How elongated each residual is around its fitted centre, as a z-like score.

    Two sources closer than ~2 sigma fit as one elongated blob whose residual is a quadrupole:
    its least-squares projections q_k on Q1 = (u^2 - v^2) g and Q2 = 2 u v g (u, v from the fitted
    centre, g the PSF) give T = sum_k q_k^2 sum Q_k^2 / sd_r^2, ~chi^2(2) for a lone spot
    whatever its amplitude (an isotropic PSF mismatch does not project on Q1, Q2); returns
    sqrt(T).
    """
    u = coords[None, :] - dx[:, None]
    v = coords[None, :] - dy[:, None]
    gu, gv = np.exp(-u ** 2 / (2 * sigma ** 2)), np.exp(-v ** 2 / (2 * sigma ** 2))
    n = len(res)
    G = np.einsum("nv,nu->nvu", gv, gu)
    Q1 = ((u[:, None, :] ** 2 - v[:, :, None] ** 2) * G / sigma ** 2).reshape(n, -1) * wts
    Q2 = (2 * u[:, None, :] * v[:, :, None] * G / sigma ** 2).reshape(n, -1) * wts
    R = np.nan_to_num(res)
    T = np.zeros(n)
    for Q in (Q1, Q2):
        qq = np.einsum("ni,ni->n", Q, Q)
        with np.errstate(divide="ignore", invalid="ignore"):
            T += np.einsum("ni,ni->n", R, Q) ** 2 / qq
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(T) / sd_r


def fit_mixtures(data: np.ndarray, wts: np.ndarray, xi: np.ndarray, yi: np.ndarray, single: FitResult,
                 sigma: float, *, alpha: float = 0.05, mixture_alpha: float = 1e-4, max_components: int = 3,
                 min_separation: float = 1.0, max_amplitude: float = np.inf, conf_radius: float = np.inf,
                 noise: tuple[float, float] = (1.0, 0.0)):
    """Mixture-model fitting of windows whose single-Gaussian fit hides further sources.

    As cmeAnalysis ``fitGaussianMixtures2D`` / u-track ``detectSubResFeatures2D``: the K-source
    fit (positions, amplitudes, one background, sigma fixed) is extended by a source started
    at the residual's matched-filter peak (:func:`_residual_peak`), the K+1 model is fitted by
    Levenberg-Marquardt and accepted when the F-test of the RSS reduction,
    F = ((RSS_K - RSS_K+1) / 3) / (RSS_K+1 / (npx - 3(K+1) - 1)), has p < ``mixture_alpha``
    and every source lies inside the window, all pairs are >= ``min_separation`` sigma apart
    and every amplitude passes the detection test (pval_A < 0.05, below ``max_amplitude``).
    The RSS of the F-test weigh each pixel by 1 / (v0 + kappa s), ``noise`` = (v0, kappa) and s
    the single fit's signal above background: under shot noise the peak of a bright lone spot
    is the noisiest part of its window, and an unweighted test splits it (1-4 % of spots of
    4,000-10,000 ADU on EMCCD noise); the fits themselves stay unweighted, as all others.
    ``single`` is the 1-source fit of the windows (data/wts from :func:`extract_windows`
    around (xi, yi)). Returns (rows, FitResult): the window index of every source of the
    windows where a mixture was accepted and their per-source results (shared c, RSS, sigma_r
    and normality test; own x, y, A, sds and pval_A); sources farther than ``conf_radius`` from
    the window centre (|dx| or |dy|, the single fit's confinement) are flagged ``ok`` = False:
    they are often neighbours that their own window fits better centred.
    """
    n = len(data)
    nw = int(round(math.sqrt(data.shape[1]))) if n else 1
    w = (nw - 1) // 2
    coords = np.arange(-w, w + 1, dtype=np.float64)
    best_K = np.ones(n, int)
    params = {1: np.column_stack([single.x - xi, single.y - yi, single.A, single.c])}
    sd_K = single.sigma_r.copy()
    v0, kappa = noise
    model_1 = _model(params[1], coords, sigma, jac=False)[0]
    inv_var = wts / (v0 + kappa * np.maximum(model_1 - single.c[:, None], 0.0))
    rss_K = np.einsum("ni,ni->n", (data - model_1) ** 2, inv_var)  # weighted RSS of the current model
    accepted: dict[int, tuple] = {}
    active = np.arange(n)
    for K in range(1, max_components):
        if active.size == 0:
            break
        d, wt, p = data[active], wts[active], params[K][active]
        model = _model(p, coords, sigma, jac=False)[0] if K == 1 else _mixture_model(p, coords, sigma, K)[0]
        res = np.where(wt > 0, d - model, np.nan)
        z, a, u, v = _residual_peak(res, wt, sd_K[active], coords, sigma)
        X, Y, A, c = p[:, :K], p[:, K:2 * K], p[:, 2 * K:3 * K], p[:, 3 * K]
        # start: the new source at the residual peak; the others moved back by the pull the new
        # source's light exerted on them (weighted centroid of the old and the new source)
        frac = (np.maximum(a, 0) / np.maximum(A.sum(1) + np.maximum(a, 0), 1e-12))[:, None]
        X0, Y0 = X - frac * (u[:, None] - X), Y - frac * (v[:, None] - Y)
        p0 = np.column_stack([X0, u, Y0, v, A, np.maximum(a, 0.1 * A.min(1)), c])
        K1 = K + 1
        free = np.arange(3 * K1 + 1)
        tol = np.concatenate([np.full(2 * K1, 1e-3), np.full(K1 + 1, 1e-1)])
        clip = np.concatenate([np.full(2 * K1, 1.0), np.full(K1 + 1, np.inf)])
        esc = np.concatenate([np.full(2 * K1, w + 1.0), np.full(K1 + 1, np.inf)])
        fn = _Model("mixture", coords, sigma, K1)
        p1, _ = _lm_dense(d, wt, p0, fn, free, tol, clip, esc, max_iter=20)
        model1, J1 = fn(p1)
        res1, rss1, sd1, pstd1, npx = _fit_stats(d, wt, model1, J1, 3 * K1 + 1)
        df2 = npx - (3 * K1 + 1) - 1
        rssw1 = np.einsum("ni,ni->n", (d - model1) ** 2, inv_var[active])
        with np.errstate(divide="ignore", invalid="ignore"):
            F = (rss_K[active] - rssw1) / 3 / (rssw1 / df2)
            pF = special.fdtrc(3, df2, F)
        Xn, Yn, An = p1[:, :K1], p1[:, K1:2 * K1], p1[:, 2 * K1:3 * K1]
        inside = np.all((np.abs(Xn) < w) & (np.abs(Yn) < w), axis=1)
        sep = np.hypot(Xn[:, :, None] - Xn[:, None, :], Yn[:, :, None] - Yn[:, None, :])
        sep[:, np.arange(K1), np.arange(K1)] = np.inf
        separated = sep.min(axis=(1, 2)) >= min_separation * sigma
        pA = amplitude_pval(An, pstd1[:, 2 * K1:3 * K1], sd1[:, None], npx[:, None], alpha)
        amp_ok = np.all((pA < P_SIGNIFICANT) & (An < max_amplitude) & np.isfinite(pA), axis=1)
        acc = (pF < mixture_alpha) & inside & separated & amp_ok & np.isfinite(rss1)
        ok_idx = active[acc]
        best_K[ok_idx] = K1
        params[K1] = np.full((n, 3 * K1 + 1), np.nan)
        params[K1][ok_idx] = p1[acc]
        accepted[K1] = (ok_idx, res1[acc], rss1[acc], sd1[acc], pstd1[acc], npx[acc], pA[acc])
        rss_K[ok_idx], sd_K[ok_idx] = rssw1[acc], sd1[acc]
        active = ok_idx
    # collect the accepted mixtures (largest accepted K per window)
    rows, parts = [], []
    for K1, (idx, res1, rss1, sd1, pstd1, npx, pA) in accepted.items():
        final = best_K[idx] == K1
        if not final.any():
            continue
        idx, res1, rss1, sd1, pstd1, npx, pA = (a[final] for a in (idx, res1, rss1, sd1, pstd1, npx, pA))
        p1 = params[K1][idx]
        hval = ad_reject_normal(res1, sd1)
        near = (np.abs(p1[:, :K1]) < conf_radius) & (np.abs(p1[:, K1:2 * K1]) < conf_radius)
        rep = lambda a: np.repeat(a, K1)  # noqa: E731
        rows.append(rep(idx))
        parts.append(FitResult(
            ok=near.ravel(), x=(xi[idx, None] + p1[:, :K1]).ravel(), y=(yi[idx, None] + p1[:, K1:2 * K1]).ravel(),
            A=p1[:, 2 * K1:3 * K1].ravel(), c=rep(p1[:, 3 * K1]), x_pstd=pstd1[:, :K1].ravel(),
            y_pstd=pstd1[:, K1:2 * K1].ravel(), A_pstd=pstd1[:, 2 * K1:3 * K1].ravel(), c_pstd=rep(pstd1[:, 3 * K1]),
            sigma_r=rep(sd1), SE_sigma_r=rep(sd1 / np.sqrt(2 * (npx - 1))), RSS=rep(rss1), pval_A=pA.ravel(),
            hval_AD=rep(hval), npx=rep(npx.astype(int))))
    if not rows:
        return np.zeros(0, int), FitResult.empty(0)
    rows = np.concatenate(rows)
    fr = FitResult(*(np.concatenate([getattr(pt, f.name) for pt in parts]) for f in fields(FitResult)))
    order = np.argsort(rows, kind="stable")
    return rows[order], fr.take(order)


def split_mixtures(img: np.ndarray, labels: np.ndarray, fit: FitResult, xs: np.ndarray, ys: np.ndarray,
                   sigma: float, *, alpha: float = 0.05, max_components: int = 3, mixture_alpha: float = 1e-4,
                   min_separation: float = 1.0, z: float = 3.0) -> tuple[FitResult, np.ndarray, np.ndarray]:
    """Replace single-Gaussian fits that hide close sources by the sources of a mixture fit.

    ``fit``: the valid 'xyAc' fits of candidates (xs, ys) of one frame (mask ``labels``). Only
    significant fits whose residual looks like a further source are tried: the matched-filter
    z-score of the residual (:func:`_residual_peak`, a source >~ 2 sigma away) or its
    elongation score (:func:`_elongation_z`, a closer pair) above ``z``. At z = 3 this tries
    ~10 % of lone spots and 75-100 % of pairs 2.5-4 px apart (sigma 1.2-1.45 px, 2,000 ADU);
    the Anderson-Darling test, which rejects a third of bright lone spots under shot noise,
    would triple the windows tried. A residual peak within 1.5 px of another significant fit
    is that neighbour, already detected by its own window: it does not trigger a mixture
    (this halves the windows tried in dense frames; the two single fits then keep the
    mutual pull they have without mixtures, ~0.35 instead of ~0.28 px RMS at 4-5 px). Each accepted mixture (:func:`fit_mixtures`) replaces its
    row by its sources in place (those within 1 px of the mask), and a source fitted again
    from another window is kept once; where none is accepted the fits are returned unchanged
    (the same arrays).
    """
    sig = np.flatnonzero(fit.pval_A < P_SIGNIFICANT)
    if sig.size == 0:
        return fit, xs, ys
    w = math.ceil(4 * sigma)
    coords = np.arange(-w, w + 1, dtype=np.float64)
    data, wts = extract_windows(img, xs[sig], ys[sig], w, labels)
    p = np.column_stack([fit.x[sig] - xs[sig], fit.y[sig] - ys[sig], fit.A[sig], fit.c[sig]])
    res = np.where(wts > 0, data - _model(p, coords, sigma, jac=False)[0], np.nan)
    zpk, _, u, v = _residual_peak(res, wts, fit.sigma_r[sig], coords, sigma)
    zq = _elongation_z(res, wts, fit.sigma_r[sig], p[:, 0], p[:, 1], coords, sigma)
    # a residual peak on another significant fit is that neighbour, already detected
    others = cKDTree(np.column_stack([fit.x[sig], fit.y[sig]]))
    d_nb, j_nb = others.query(np.column_stack([xs[sig] + u, ys[sig] + v]), 2)
    explained = np.where(j_nb[:, 0] == np.arange(sig.size), d_nb[:, 1], d_nb[:, 0]) < 1.5
    try_ = (zq > z) | ((zpk > z) & ~explained)
    if not try_.any():
        return fit, xs, ys
    # pixel variance v0 + kappa * signal, pooled over the frame's significant single fits
    # (shot noise); (1, 0), i.e. unweighted, where the regression does not give v0, kappa > 0
    sgn = np.nan_to_num(_model(np.column_stack([p[:, :3], np.zeros(len(p))]), coords, sigma, jac=False)[0])
    use = (wts > 0).ravel()
    X = np.column_stack([np.ones(use.sum()), sgn.ravel()[use]])
    v0, kappa = np.linalg.lstsq(X, (np.nan_to_num(res) ** 2).ravel()[use], rcond=None)[0]
    noise = (v0, kappa) if v0 > 0 and kappa > 0 else (1.0, 0.0)
    cand = sig[try_]
    rows, mix = fit_mixtures(data[try_], wts[try_], xs[cand], ys[cand], fit.take(cand), sigma, alpha=alpha,
                             mixture_alpha=mixture_alpha, max_components=max_components,
                             min_separation=min_separation, max_amplitude=2 * float(img.max() - img.min()),
                             conf_radius=math.ceil(2 * sigma), noise=noise)
    # a source must lie on (within 1 px of) the detection mask, where the prefilter found
    # signal, as fitGaussianMixtures2D confines the mixture to the mask; this drops components
    # fitted to noise clusters at the window edge
    ny, nx = labels.shape
    cx = np.clip(np.round(mix.x).astype(np.int64), 1, nx - 2)
    cy = np.clip(np.round(mix.y).astype(np.int64), 1, ny - 2)
    on_mask = np.any(_windows(labels, cx, cy, 1) > 0, axis=(1, 2))
    rows, mix = rows[on_mask], mix.take(on_mask)
    if rows.size == 0:
        return fit, xs, ys
    src = cand[rows]  # row of ``fit`` that each mixture source replaces
    n = len(xs)
    replaced = np.zeros(n, bool)
    replaced[src] = True
    # new order: every kept row once, every replaced row by its sources, in the original order
    key = np.concatenate([np.flatnonzero(~replaced), src])
    order = np.argsort(key, kind="stable")
    kept = np.flatnonzero(~replaced)
    both = FitResult(*(np.concatenate([getattr(fit, f.name)[kept], getattr(mix, f.name)])
                       for f in fields(FitResult)))
    xs2, ys2 = np.concatenate([xs[kept], xs[src]]), np.concatenate([ys[kept], ys[src]])
    from_mix = np.concatenate([np.zeros(kept.size, bool), np.ones(src.size, bool)])
    outer = np.concatenate([np.zeros(kept.size, bool), ~mix.ok])
    both, xs2, ys2, from_mix, outer = both.take(order), xs2[order], ys2[order], from_mix[order], outer[order]
    both.ok[:] = True
    # A source is often fitted from two windows (a pair partner's and its own): of two
    # significant detections from different windows, one of them a mixture source, closer than
    # min_separation sigma (twice that when one lies beyond the confinement radius of its
    # window, where it is poorly localised), keep the one nearer to its own window centre.
    # Two single fits are left to the redundancy removal, as without mixtures.
    keep = np.ones(len(xs2), bool)
    signif = np.flatnonzero(both.pval_A < P_SIGNIFICANT)
    pts = np.column_stack([both.x[signif], both.y[signif]])
    r0 = min_separation * sigma
    pairs = cKDTree(pts).query_pairs(2 * r0, output_type="ndarray")
    if len(pairs):
        i, j = signif[pairs[:, 0]], signif[pairs[:, 1]]
        dist = np.hypot(both.x[i] - both.x[j], both.y[i] - both.y[j])
        sel = ((from_mix[i] | from_mix[j]) & ((xs2[i] != xs2[j]) | (ys2[i] != ys2[j]))
               & (dist < np.where(outer[i] | outer[j], 2 * r0, r0)))
        i, j = i[sel], j[sel]
        off = np.hypot(both.x - xs2, both.y - ys2)
        for a, b in zip(*(v[np.argsort(np.minimum(off[i], off[j]), kind="stable")] for v in (i, j))):
            if keep[a] and keep[b]:
                keep[b if (off[b], b) > (off[a], a) else a] = False
    return both.take(keep), xs2[keep], ys2[keep]


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
                 mixture: dict | None = None, aux_neighbours: bool = False, aux_max_shift: float = 3.0,
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
    ``mixture``: None (single Gaussians only) or the keyword arguments of
    :func:`split_mixtures` (``max_components``, ``mixture_alpha``, ``min_separation``, ``z``),
    which replaces a fit by the sources of an accepted Gaussian mixture (same x_init/y_init).
    ``aux_neighbours``: fit auxilin with the neighbouring clathrin spots in the model
    (:func:`fit_slave`); ``aux_max_shift``: its ``max_shift``.
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
    table = None
    if lm.any():
        mask = mask | (pf.log >= pf.log[lm].min())
        lm = allmax & mask
    if cell_mask is not None:
        lm &= cell_mask
    ys, xs = np.nonzero(lm)
    det_mask = np.zeros(img.shape, bool)
    if xs.size:
        labels, _ = ndimage.label(mask)
        fit, resid = fit_gaussians(img, xs, ys, sigma, A0=pf.A[ys, xs], c0=pf.c[ys, xs], mode="xyAc",
                                   labels=labels, alpha=alpha, normality=False, return_residuals=True)
        # the normality test only where it can reach the table (valid and significant fits)
        tested = fit.ok & (fit.pval_A < P_SIGNIFICANT)
        fit.hval_AD[tested] = ad_reject_normal(resid[tested], fit.sigma_r[tested])
        ok = np.flatnonzero(fit.ok)
        fit, xs, ys = fit.take(ok), xs[ok], ys[ok]
        if mixture is not None and mixture.get("max_components", 1) > 1:
            fit, xs, ys = split_mixtures(img, labels, fit, xs, ys, sigma, alpha=alpha, **mixture)
        keep = fit.pval_A < P_SIGNIFICANT
        keep &= _remove_redundant(fit.x, fit.y, fit.RSS, redundancy_radius)
        fit, xs, ys = fit.take(keep), xs[keep], ys[keep]
        comp = labels[ys, xs]
        if comp.size:  # components holding a detection, by a lookup table over the labels
            holds = np.zeros(int(labels.max()) + 1, bool)
            holds[comp] = True
            det_mask = holds[labels]
        table = spot_table(frame, fit, xs, ys, labels, sigma, sigma_aux, alpha_aux, aux_neighbours, aux_max_shift)
    if table is None:
        table = _empty_frame_table()
    return (table, det_mask) if return_mask else table


def spot_table(frame: np.ndarray, fit: FitResult, xs: np.ndarray, ys: np.ndarray, labels: np.ndarray, sigma: float,
               sigma_aux: float | None, alpha_aux: float, aux_neighbours: bool, aux_max_shift: float) -> pd.DataFrame:
    """The detection table of one frame (:func:`detect_frame`'s columns) from its clathrin fits
    ``fit`` at candidate pixels (xs, ys): the fits, the size and mean intensity of the ``labels``
    component under each candidate (``mask_n`` / ``mask_a``; 0 and NaN off the mask) and, where
    ``frame`` holds an auxilin channel, the auxilin fitted at the spots (:func:`fit_slave`; rows
    whose auxilin window leaves the image are dropped)."""
    img = frame[0]
    comp = labels[ys, xs]
    sizes = np.bincount(labels.ravel())
    sums = np.bincount(labels.ravel(), weights=img.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        mask_n = np.where(comp > 0, sizes[comp], 0).astype(np.int64)
        mask_a = np.where(comp > 0, sums[comp] / sizes[comp], np.nan)
    cols = {
        "x": fit.x, "y": fit.y, "A": fit.A, "c": fit.c, "x_pstd": fit.x_pstd, "y_pstd": fit.y_pstd,
        "A_pstd": fit.A_pstd, "c_pstd": fit.c_pstd, "sigma_r": fit.sigma_r,
        "SE_sigma_r": fit.SE_sigma_r, "RSS": fit.RSS, "pval_A": fit.pval_A, "isPSF": ~fit.hval_AD,
        "x_init": xs.astype(np.int64), "y_init": ys.astype(np.int64), "mask_n": mask_n, "mask_a": mask_a}
    if frame.shape[0] == 2:
        cols.update(fit_slave(frame[1], fit.x, fit.y, sigma_aux if sigma_aux is not None else sigma, sigma,
                              alpha_aux, aux_neighbours, aux_max_shift))
        found = np.isfinite(cols["A_aux"])  # rows whose auxilin window lies inside the image
        cols = {k: v[found] for k, v in cols.items()}
    else:
        n_det = len(fit.x)
        cols.update({c: np.zeros(n_det, bool) if c == "isPSF_aux" else np.full(n_det, np.nan)
                     for c in AUX_COLUMNS})
    return pd.DataFrame(cols)  # built once from arrays: cheaper than adding columns to a frame


def fit_slave(img: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float, sigma_master: float,
              alpha: float = 0.05, neighbours: bool = True, max_shift: float = 3.0) -> dict[str, np.ndarray]:
    """The slave-channel columns (``x_aux`` .. ``isPSF_aux``) of :func:`fit_at_positions` at
    master positions; NaN (``isPSF_aux`` False) where a spot's window leaves the image."""
    res = fit_at_positions(img, x, y, sigma, sigma_master, alpha, neighbours, max_shift)
    out = {"x_aux": res.x, "y_aux": res.y, "A_aux": res.A, "c_aux": res.c, "A_pstd_aux": res.A_pstd,
           "c_pstd_aux": res.c_pstd, "sigma_r_aux": res.sigma_r, "SE_sigma_r_aux": res.SE_sigma_r,
           "RSS_aux": res.RSS, "pval_A_aux": res.pval_A, "isPSF_aux": ~res.hval_AD}
    for k, v in out.items():
        if k != "isPSF_aux":
            v[~res.ok] = np.nan
    return out


def fit_at_positions(img: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float, sigma_master: float,
                     alpha: float = 0.05, neighbours: bool = True, max_shift: float = 3.0) -> FitResult:
    """Fit a channel at given (master) positions as cmeAnalysis ``runDetection`` fits the slave;
    ``ok`` marks the spots whose fixed-position window lies inside the image.

    A fixed-position 'Ac' fit, then a free 'xyAc' fit started from it; the free fit is kept
    where it moved less than ``max_shift`` sigma_master (cmeAnalysis: 3; the pipeline passes
    :attr:`DetectionConfig.slave_max_shift`, default 1) and gave a larger amplitude; 0 holds
    every position (the free fits are then computed and never kept). Keeping the larger of two fits,
    one of which may wander 3-4 px, picks noise peaks and neighbours' signal: on auxilin-free
    track frames at real pit density the amplitude z-score A / A_pstd has a mean of +1.1 and
    7 % of values above 3 (0.13 % for a normal); with ``max_shift=1`` (auxilin at the pit lies
    within the registration offset, <= 0.3 px, plus the localisation error of a dim spot) they
    are centred (mean 0.05, sd 1.1). With ``neighbours`` the spots that have other master positions
    with slave signal (p < 0.05 in this fit) inside their window are refitted with those in
    the model (:func:`_fit_slave_crowded`), so that a neighbour's signal is not credited to
    them; the others keep exactly these results. (A neighbour without signal adds nothing
    to absorb; leaving it out keeps the refit to the few spots near auxilin.)

    Each spot reports the normality test of one of its fits (fixed, free or crowded): it runs
    once per spot, on the residuals of the fit kept, instead of after every fit.
    """
    img = np.asarray(img, dtype=np.float64)
    fixed, r_fixed = fit_gaussians(img, x, y, sigma, mode="Ac", alpha=alpha, normality=False,
                                   return_residuals=True)
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def may_replace(i, lx, ly, lA):
        """Free fits that can replace the fixed one (below): only their statistics are used."""
        with np.errstate(invalid="ignore"):
            return (np.hypot(lx - xa[i], ly - ya[i]) < max_shift * sigma_master) & (lA > fixed.A[i])

    loc, r_loc = fit_gaussians(img, x, y, sigma, A0=np.nan_to_num(fixed.A), c0=np.nan_to_num(fixed.c),
                               mode="xyAc", alpha=alpha, normality=False, return_residuals=True,
                               stats_where=may_replace)
    with np.errstate(invalid="ignore"):
        use_loc = loc.ok & (np.hypot(loc.x - x, loc.y - y) < max_shift * sigma_master) & (loc.A > fixed.A)
    res = fixed.take(np.arange(len(x)))
    res.put(use_loc, loc.take(use_loc))
    resid = np.where(use_loc[:, None], r_loc, r_fixed)  # residuals of the fit kept per spot
    bad = ~fixed.ok
    if neighbours and len(x) > 1:
        with np.errstate(invalid="ignore"):
            signal = ~bad & ((res.pval_A < P_SIGNIFICANT) | (fixed.pval_A < P_SIGNIFICANT))
        _fit_slave_crowded(img, np.asarray(x, float), np.asarray(y, float), sigma, sigma_master, alpha, res, bad,
                           signal, resid, max_shift)
    res.hval_AD = ad_reject_normal(resid, res.sigma_r)  # False where a spot has no window (NaN rows)
    res.ok = ~bad
    return res


def _fit_slave_crowded(img: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float, sigma_master: float,
                       alpha: float, res: FitResult, bad: np.ndarray, signal: np.ndarray,
                       resid: np.ndarray, max_shift: float = 3.0) -> None:
    """Refit, in place in ``res``, the slave fits of spots with other master positions in their window.

    For a spot with K neighbours (master positions marked ``signal`` within its (2w+1)^2
    window, w = ceil(4 sigma)) the model is K + 1 Gaussians at the master positions with free amplitudes plus
    one background, solved by linear least squares; the target's amplitude, its sd
    (sqrt(RSS/(npx - K - 3) [(J^T J)^-1]_00)), sigma_r, pval_A and the normality test are
    reported as for a lone spot. A free-position refinement of the target (neighbours fixed,
    all amplitudes free) replaces it where it is valid, moved < ``max_shift`` sigma_master, gave
    a larger amplitude and did not move closer to any neighbour. A position closer than sigma
    to the target is the same spot (two fits there make the least squares degenerate, with
    huge amplitudes of opposite sign) and is not a neighbour; a solution with an amplitude
    beyond twice the image range keeps the lone-spot fit. The residuals of the fit kept replace
    those of the spot in ``resid`` (its normality test is left to the caller, :func:`fit_slave`).
    """
    w = math.ceil(4 * sigma)
    ny, nx = img.shape
    xi, yi = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    inside_img = (xi >= w) & (xi < nx - w) & (yi >= w) & (yi < ny - w) & ~bad
    # neighbours: spots with signal in the (2w+1)^2 window, in increasing index order; the ball
    # query (over the spots with signal only) contains the window, the box test cuts it to it
    sig_idx = np.flatnonzero(signal)
    if sig_idx.size == 0:
        return
    tree = cKDTree(np.column_stack([x[sig_idx], y[sig_idx]]))
    nbl = tree.query_ball_point(np.column_stack([xi, yi]), (w + 0.5) * math.sqrt(2), return_sorted=True)
    lens = np.fromiter(map(len, nbl), np.int64, len(nbl))
    flat = sig_idx[np.fromiter(itertools.chain.from_iterable(nbl), np.int64, int(lens.sum()))]
    owner = np.repeat(np.arange(len(nbl)), lens)
    in_box = ((flat != owner) & (np.abs(x[flat] - xi[owner]) <= w + 0.5)
              & (np.abs(y[flat] - yi[owner]) <= w + 0.5)
              & (np.hypot(x[flat] - x[owner], y[flat] - y[owner]) >= sigma))
    flat, owner = flat[in_box], owner[in_box]
    counts = np.bincount(owner, minlength=len(nbl))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    coords = np.arange(-w, w + 1, dtype=np.float64)
    max_amp = 2 * float(img.max() - img.min())
    conf = math.ceil(2 * sigma)  # confinement of the free fit, as fit_gaussians
    for K in np.unique(counts[(counts > 0) & inside_img]):
        idx = np.flatnonzero((counts == K) & inside_img)
        nb = flat[starts[idx, None] + np.arange(K)]  # (m, K) neighbour indices
        m, K1 = len(idx), K + 1
        data, wts = extract_windows(img, xi[idx], yi[idx], w)
        # fixed positions: target first, then the neighbours, in window coordinates
        X = np.column_stack([x[idx] - xi[idx], x[nb] - xi[idx, None]])
        Y = np.column_stack([y[idx] - yi[idx], y[nb] - yi[idx, None]])
        gx = np.exp(-(coords[None, None, :] - X[:, :, None]) ** 2 / (2 * sigma ** 2))
        gy = np.exp(-(coords[None, None, :] - Y[:, :, None]) ** 2 / (2 * sigma ** 2))
        G = np.einsum("nky,nkx->nkyx", gy, gx).reshape(m, K1, -1)
        J = np.concatenate([G, np.ones((m, 1, G.shape[2]))], axis=1)
        H = np.matmul(J, J.transpose(0, 2, 1))
        sol = np.linalg.solve(H + 1e-12 * np.eye(K1 + 1), np.matmul(J, data[:, :, None]))[:, :, 0]
        model = np.matmul(sol[:, None, :], J)[:, 0]
        r, rss, sd_r, pstd, npx = _fit_stats(data, wts, model, J, K1 + 1)
        fixed = FitResult(ok=np.ones(m, bool), x=x[idx].copy(), y=y[idx].copy(), A=sol[:, 0], c=sol[:, K1],
                          x_pstd=np.zeros(m), y_pstd=np.zeros(m), A_pstd=pstd[:, 0], c_pstd=pstd[:, K1],
                          sigma_r=sd_r, SE_sigma_r=sd_r / np.sqrt(2 * (npx - 1)), RSS=rss,
                          pval_A=amplitude_pval(sol[:, 0], pstd[:, 0], sd_r, npx, alpha),
                          hval_AD=np.zeros(m, bool), npx=npx.astype(int))
        # free target position, neighbours fixed: p = (x_0..x_K, y_0..y_K, A_0..A_K, c)
        p0 = np.column_stack([X, Y, sol[:, :K1], sol[:, K1]])
        free = np.concatenate([[0, K1], np.arange(2 * K1, 3 * K1 + 1)])
        tol = np.concatenate([[1e-4, 1e-4], np.full(K1 + 1, 1e-2)])
        clip = np.concatenate([[1.0, 1.0], np.full(K1 + 1, np.inf)])
        esc = np.concatenate([[conf + 1.0, conf + 1.0], np.full(K1 + 1, np.inf)])
        fn = _Model("mixture", coords, sigma, K1)
        p1, _ = _lm_dense(data, wts, p0, fn, free, tol, clip, esc, max_iter=20)
        model1, J1 = fn(p1)
        r1, rss1, sd1, pstd1, npx1 = _fit_stats(data, wts, model1, J1[:, free], len(free))
        lx, ly, lA = xi[idx] + p1[:, 0], yi[idx] + p1[:, K1], p1[:, 2 * K1]
        own = np.hypot(lx - x[idx], ly - y[idx])
        closer = np.any(np.hypot(lx[:, None] - x[nb], ly[:, None] - y[nb])
                        < np.hypot(x[idx, None] - x[nb], y[idx, None] - y[nb]), axis=1)
        with np.errstate(invalid="ignore"):
            use = ((np.abs(p1[:, 0]) < conf) & (np.abs(p1[:, K1]) < conf) & (lA < max_amp)
                   & (own < max_shift * sigma_master) & (lA > fixed.A) & ~closer & np.isfinite(rss1))
        loc = FitResult(ok=np.ones(m, bool), x=lx, y=ly, A=lA, c=p1[:, 3 * K1], x_pstd=pstd1[:, 0],
                        y_pstd=pstd1[:, 1], A_pstd=pstd1[:, 2], c_pstd=pstd1[:, -1], sigma_r=sd1,
                        SE_sigma_r=sd1 / np.sqrt(2 * (npx1 - 1)), RSS=rss1,
                        pval_A=amplitude_pval(lA, pstd1[:, 2], sd1, npx1, alpha), hval_AD=np.zeros(m, bool),
                        npx=npx1.astype(int))
        fixed.put(use, loc.take(use))
        sane = np.all(np.abs(sol[:, :K1]) < max_amp, axis=1) & np.isfinite(fixed.A)
        res.put(idx[sane], fixed.take(sane))
        resid[idx[sane]] = np.where(use[sane, None], r1[sane], r[sane])


def fit_free_sigma(img: np.ndarray, x: np.ndarray, y: np.ndarray, sigma0: float, A0: np.ndarray,
                   c0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Free-sigma Gaussian fits, A exp(-r^2 / 2 s^2) + c with x, y, A, s, c free, at (x, y).

    Windows of half-width ceil(5 sigma0) around round(x, y) (NaN where they leave the image);
    returns the fitted s and A per spot (NaN where the fit failed or s left [sigma0 / 3, 3 sigma0]).
    """
    img = np.asarray(img, dtype=np.float64)
    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    out = np.full(len(x), np.nan)
    amp = np.full(len(x), np.nan)
    w = math.ceil(5 * sigma0)
    ny, nx = img.shape
    xi, yi = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    sel = np.flatnonzero((xi >= w) & (xi < nx - w) & (yi >= w) & (yi < ny - w))
    if sel.size == 0:
        return out, amp
    data, wts = extract_windows(img, xi[sel], yi[sel], w)
    coords = np.arange(-w, w + 1, dtype=np.float64)
    p0 = np.column_stack([x[sel] - xi[sel], y[sel] - yi[sel], np.asarray(A0, float)[sel],
                          np.full(sel.size, sigma0), np.asarray(c0, float)[sel]])
    free = np.arange(5)
    tol = np.array([1e-4, 1e-4, 1e-2, 1e-5, 1e-2])
    clip = np.array([1.0, 1.0, np.inf, 0.25 * sigma0, np.inf])
    esc = np.array([2.0, 2.0, np.inf, 3 * sigma0, np.inf])
    fn = _Model("free_sigma", coords)
    p, _ = _lm_dense(data, wts, p0, fn, free, tol, clip, esc)
    # Shot noise makes the pixel variance grow with the signal, var = v0 + kappa A g; unweighted
    # least squares then prefers narrow models (they absorb more of the peak's larger noise),
    # which biases s low by several percent at SNR ~10. Refit with weights 1/sd, v0 and kappa
    # pooled over the spots by regressing the squared residuals on the fitted signal.
    model, _ = fn(p)
    sig = model - p[:, 4, None]
    res2 = (data - model) ** 2
    X = np.column_stack([np.ones(sig.size), sig.ravel()])
    v0, kappa = np.linalg.lstsq(X, res2.ravel(), rcond=None)[0]
    if v0 > 0 and kappa > 0:
        wts = 1.0 / np.sqrt(v0 + kappa * np.maximum(sig, 0.0))
        p, _ = _lm_dense(data, wts, p, fn, free, tol, clip, esc)
    s = p[:, 3]
    good = (np.abs(p[:, 0]) < 2) & (np.abs(p[:, 1]) < 2) & (s > sigma0 / 3) & (s < 3 * sigma0) & (p[:, 2] > 0)
    out[sel[good]] = s[good]
    amp[sel[good]] = p[good, 2]
    return out, amp


def estimate_psf_sigma(images: np.ndarray, x: np.ndarray, y: np.ndarray, A: np.ndarray, c: np.ndarray,
                       sigma_r: np.ndarray, frame: np.ndarray, sigma0: float,
                       min_spots: int = 20) -> tuple[float, int]:
    """PSF sigma from the data, as cmeAnalysis ``getGaussianPSFsigma``: free-sigma fits
    (:func:`fit_free_sigma`) at the given isolated spots of ``images`` (T, H, W) (``frame``
    indexes them), kept where their integrated intensity A s^2 >= SIGMA_SNR sigma_r sigma0^2;
    their median, corrected for pixel integration, sqrt(s^2 - 1/12).

    The brightness cut uses the free fit's integrated intensity: a cut on the fixed-sigma
    amplitude (or on its residual normality) would favour spots that happen to look like
    sigma0 and pull the estimate towards it. The fits sample the Gaussian at pixel centres;
    a pixel-integrated Gaussian of sd sigma is fitted best with s^2 ~ sigma^2 + 1/12 (the
    variance of a uniform pixel), so the correction returns the PSF sd that the
    configuration means. Returns (sigma, number of spots used); sigma is NaN with fewer
    than ``min_spots``.
    """
    s = np.full(len(x), np.nan)
    amp = np.full(len(x), np.nan)
    for t in np.unique(frame):
        sel = frame == t
        s[sel], amp[sel] = fit_free_sigma(images[t], x[sel], y[sel], sigma0, A[sel], c[sel])
    return _sigma_of_fits(s, amp, sigma_r, sigma0, min_spots)


def _sigma_of_fits(s: np.ndarray, amp: np.ndarray, sigma_r: np.ndarray, sigma0: float,
                   min_spots: int) -> tuple[float, int]:
    """The PSF sigma of :func:`estimate_psf_sigma` from its free-sigma fits (s, amp) and the
    residual sds of the spots (the selection, median and pixel-integration correction)."""
    with np.errstate(invalid="ignore"):
        s = s[np.isfinite(s) & (amp * s ** 2 >= SIGMA_SNR * sigma_r * sigma0 ** 2)]
    if s.size < min_spots:
        return float("nan"), int(s.size)
    return float(math.sqrt(max(np.median(s) ** 2 - 1.0 / 12.0, 1e-6))), int(s.size)


#: minimal amplitude / residual sd of the spots used for a PSF sigma estimate, in terms of
#: the integrated intensity A s^2 / sigma0^2 (free-sigma fits of dimmer spots scatter more).
SIGMA_SNR = 10.0


def _sigma_spots(tab: pd.DataFrame, sigma0: float, channel: str = "") -> np.ndarray:
    """Rows of a detection table usable for a sigma estimate: significant (p < 1e-3), normal
    residuals (which drops windows with an undetected neighbour; the test, made with sigma0,
    also favours spots like sigma0, hence the second pass of :func:`movie_sigmas`) and no
    other detection within ceil(5 sigma0) + 3 px."""
    if len(tab) < 2:
        return np.zeros(len(tab), bool)
    xy = tab[["x", "y"]].to_numpy()
    nn = cKDTree(xy).query(xy, 2)[0][:, 1]
    sfx = channel
    with np.errstate(invalid="ignore"):
        return ((tab["pval_A" + sfx].to_numpy() < 1e-3) & tab["isPSF" + sfx].to_numpy().astype(bool)
                & (nn > math.ceil(5 * sigma0) + 3))


def _sigma_frames(n_frames: int, dcfg: "DetectionConfig") -> np.ndarray:
    """The evenly spaced frames whose spots estimate the PSF sigmas (:func:`movie_sigmas`)."""
    return np.unique(np.linspace(0, n_frames - 1, min(dcfg.sigma_frames, n_frames)).round().astype(int))


def _frame_sigma_fits(frame: np.ndarray, tab: pd.DataFrame, start) -> list:
    """The free-sigma fits of one frame's sigma-estimate spots (:func:`_sigma_spots` of its
    detections ``tab``, made with the sigmas ``start``): per channel of ``frame`` (C, H, W),
    (s, amp, sigma_r) of :func:`fit_free_sigma` and the spots' residual sds. Frames are
    independent, so detection workers fit their own frames (:func:`detect_movie`)."""
    out = []
    for ch in range(frame.shape[0]):
        sfx = "_aux" if ch else ""
        cols = [c + sfx for c in ("x", "y", "A", "c", "sigma_r")]
        v = tab[_sigma_spots(tab, start[ch], sfx) & _sigma_spots(tab, start[ch])][cols].to_numpy(float)
        s, amp = fit_free_sigma(frame[ch], v[:, 0], v[:, 1], start[ch], v[:, 2], v[:, 3])
        out.append((s, amp, v[:, 4]))
    return out


def _estimate_pass(data: np.ndarray, idx: np.ndarray, dcfg: "DetectionConfig", start: list[float],
                   tables: list | None = None, fits: list | None = None):
    """One estimate of the (clathrin, auxilin) sigmas from frames ``idx``, detected with the
    sigmas ``start`` (or given as ``tables``, per frame of ``data``; or their
    :func:`_frame_sigma_fits` given as ``fits``, per frame of ``idx``): [(sigma or NaN, spots
    used)] per channel of ``data``. The same numbers as :func:`estimate_psf_sigma` of the
    spots of all frames (its fits are made per frame)."""
    if fits is None:
        tabs = [tables[t] if tables is not None else
                detect_frame(data[t], sigma=start[0], sigma_aux=start[1], alpha=dcfg.alpha,
                             alpha_aux=dcfg.alpha_aux) for t in idx]
        fits = [_frame_sigma_fits(data[t], tab, start) for t, tab in zip(idx, tabs)]
    out = []
    for ch in range(data.shape[1]):
        s, amp, sigma_r = (np.concatenate([f[ch][i] for f in fits]) for i in range(3))
        out.append(_sigma_of_fits(s, amp, sigma_r, start[ch], dcfg.sigma_min_spots))
    return out


def movie_sigmas(data: np.ndarray, dcfg: "DetectionConfig", pixel_um: float,
                 tables: list | None = None, fits: list | None = None) -> tuple[float, float]:
    """(clathrin, auxilin) PSF sigma for detection, estimated from a few frames of the movie.

    A configured sigma is used as given; a null one takes the estimate (:func:`estimate_psf_sigma`
    on the spots of ``dcfg.sigma_frames`` evenly spaced frames, detected with the configured or
    optics' sigma), or the optics' value when too few spots qualify. Spots are selected with
    the starting sigma (its normality test favours spots that look like it), so an estimate
    more than 5 % off the start is redone once starting from it. Both are logged; a configured
    sigma that differs from the estimate by more than ``sigma_tolerance`` gives a warning.
    The auxilin estimate uses the significant auxilin fits at isolated clathrin spots; sparse
    auxilin (fewer than ``sigma_min_spots``) falls back to the configured or optical value.
    ``tables``: the detections of every frame made with the configured sigmas, if already
    at hand (they save the first detection pass); ``fits``: their :func:`_frame_sigma_fits`
    for the estimate's frames (:func:`_sigma_frames`), if already at hand.
    """
    optics = dcfg.sigmas(pixel_um) if (dcfg.sigma_clathrin is None or dcfg.sigma_aux is None) else None
    cfg_s = [dcfg.sigma_clathrin, dcfg.sigma_aux]
    start = [s if s is not None else optics[i] for i, s in enumerate(cfg_s)]
    if not dcfg.estimate_sigma:
        return start[0], start[1]
    idx = _sigma_frames(len(data), dcfg)
    first = _estimate_pass(data, idx, dcfg, start, tables, fits)
    again = [np.isfinite(e) and abs(e / s - 1) > 0.05 for (e, _), s in zip(first, start)]
    if any(again):
        start2 = [e if a else s for (e, _), s, a in zip(first, start, again)]
        second = _estimate_pass(data, idx, dcfg, start2)
        # a channel not redone keeps its first estimate (its start sigma did not change)
        first = [sec if a and np.isfinite(sec[0]) else fst for fst, sec, a in zip(first, second, again)]
    out = []
    names = ("clathrin", "auxilin")
    for ch, (est, n) in enumerate(first):
        given = cfg_s[ch]
        if not np.isfinite(est):
            src = "configured" if given is not None else "optics"
            log.info("%s PSF sigma: %d usable spots in %d frames (< %d), not estimated; using the %s value %.2f px",
                     names[ch], n, len(idx), dcfg.sigma_min_spots, src, start[ch])
            out.append(start[ch])
        elif given is None:
            log.info("%s PSF sigma estimated from %d spots in %d frames: %.3f px (optics %.3f px)",
                     names[ch], n, len(idx), est, optics[ch])
            out.append(est)
        else:
            log.info("%s PSF sigma configured %.3f px, estimated %.3f px from %d spots", names[ch], given, est, n)
            if abs(given / est - 1) > dcfg.sigma_tolerance:
                log.warning("%s PSF sigma: the configured %.3f px differs by %+.0f %% from the %.3f px estimated "
                            "from the movie (%d spots); check detection.sigma_%s", names[ch], given,
                            100 * (given / est - 1), est, n, "clathrin" if ch == 0 else "aux")
            out.append(given)
    if len(out) == 1:
        out.append(start[1])
    return out[0], out[1]


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


def _detect_one(data: np.ndarray, t: int, kwargs: dict, check: tuple | None) -> tuple:
    """:func:`detect_frame` of frame ``t`` of ``data`` (table and mask) and, where ``t`` is a
    frame of the sigma check ``check`` = (frames, sigmas), its :func:`_frame_sigma_fits`
    (else None): each frame's share of :func:`movie_sigmas` is done where it is detected."""
    tab, mask = detect_frame(data[t], return_mask=True, **kwargs)
    fits = _frame_sigma_fits(data[t], tab, check[1]) if check is not None and t in check[0] else None
    return tab, mask, fits


#: state of a detection worker process (:func:`detect_movie`): the movie, the keyword arguments
#: of :func:`detect_frame` and the sigma check, inherited by fork rather than pickled per task.
_WORKER: dict = {}


def _init_worker(data: np.ndarray, kwargs: dict, check: tuple | None) -> None:
    """Worker initializer: keeps the state its tasks read (:data:`_WORKER`)."""
    _WORKER.update(data=data, kwargs=kwargs, check=check)


def _detect_in_worker(t: int) -> tuple:
    """Worker task: :func:`_detect_one` of frame ``t``, its mask packed to bits (8x less to send)."""
    tab, mask, fits = _detect_one(_WORKER["data"], t, _WORKER["kwargs"], _WORKER["check"])
    return tab, np.packbits(mask), fits


def detect_movie(movie: Any, cfg: dict | None = None, threads: int = 1, *, cell_mask: np.ndarray | None = None,
                 return_masks: bool = False):
    """Detect every frame of ``movie`` (an object with ``data`` (T, 2, H, W), ``pixel_size_um``).

    ``cfg`` is the CME domain config section (its ``detection`` key is read). With
    ``threads`` > 1 the frames run in that many worker processes, one task per frame (the
    per-frame work is numpy code that holds the GIL between calls, so threads would not
    scale); the workers inherit the movie by fork, and those that detect the frames of the
    check of configured sigmas also make its fits (:func:`_frame_sigma_fits`). The result does
    not depend on ``threads``. Returns the detection table with a ``frame`` column (and the
    fits' model ``sigma``/``sigma_aux``, :meth:`DetectionConfig.model_sigma`); with ``return_masks`` also the (T, H, W) boolean detection masks
    that track processing uses.
    """
    dcfg = detection_config(cfg)
    data = movie_array(movie)
    pixel_um = float(getattr(movie, "pixel_size_um", 0.08))
    given = dcfg.sigma_clathrin is not None and (dcfg.sigma_aux is not None or data.shape[1] == 1)
    # configured sigmas: detect first and check them on the same detections afterwards
    s_cla, s_aux = dcfg.sigmas(pixel_um) if given else movie_sigmas(data, dcfg, pixel_um)
    m_cla, m_aux = dcfg.model_sigma(s_cla), dcfg.model_sigma(s_aux)  # the fits' sampled Gaussians
    kwargs = {"sigma": m_cla, "sigma_aux": m_aux, "alpha": dcfg.alpha, "alpha_aux": dcfg.alpha_aux,
              "cell_mask": cell_mask if dcfg.use_cell_mask else None,
              "redundancy_radius": dcfg.redundancy_radius, "mixture": dcfg.mixture_kwargs(),
              "aux_neighbours": dcfg.aux_neighbours, "aux_max_shift": dcfg.slave_max_shift}
    T = len(data)
    # configured sigmas are checked on the detections: the workers fit the check's frames
    check = (frozenset(_sigma_frames(T, dcfg).tolist()), (s_cla, s_aux)) if given and dcfg.estimate_sigma else None
    if threads > 1 and T > 1:
        # one task per frame, so that the workers finish within a frame of each other, the
        # sigma check's frames (more work) first
        order = sorted(range(T), key=lambda t: check is None or t not in check[0])
        ctx = multiprocessing.get_context("fork")  # no re-import of the caller's main module
        with ProcessPoolExecutor(max_workers=threads, mp_context=ctx, initializer=_init_worker,
                                 initargs=(data, kwargs, check)) as ex:
            npx = data.shape[2] * data.shape[3]
            results = [None] * T
            for t, (tab, bits, fits) in zip(order, ex.map(_detect_in_worker, order)):
                results[t] = (tab, np.unpackbits(bits, count=npx).reshape(data.shape[2:]).view(bool), fits)
    else:
        results = [_detect_one(data, t, kwargs, check) for t in range(T)]
    if check is not None:  # logs a mismatch
        movie_sigmas(data, dcfg, pixel_um, fits=[results[t][2] for t in sorted(check[0])])
    tables = []
    for t, (tab, _, _) in enumerate(results):
        tab.insert(0, "frame", np.full(len(tab), t, dtype=np.int64))
        tables.append(tab)
    det = pd.concat(tables, ignore_index=True)
    det["sigma"] = m_cla
    det["sigma_aux"] = m_aux if data.shape[1] == 2 else np.nan
    log.info("detected %d spots in %d frames (sigma %.2f / %.2f px, fitted as %.3f / %.3f px)",
             len(det), T, s_cla, s_aux, m_cla, m_aux)
    if return_masks:
        return det, np.stack([m for _, m, _ in results])
    return det
