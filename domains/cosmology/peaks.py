"""Peak-count heads of the AWD cosmology experiment, as scikit-learn estimators.

The statistic (Ribli et al. 2019; AWD's ``peak_counting.py``): find the strict 8-neighbour
local maxima of the raw convergence map on interior pixels, evaluate a filtered map at those
peaks, histogram the values (22 bins) and predict the parameters of the training cosmology
whose mean histogram is nearest in chi^2 (per-cosmology pseudo-inverse covariance).

Every filter is a 3x3 stencil centred on the peak, so only the 3x3 neighbourhood of each peak
is gathered (:func:`peak_patches`) and the filtered values are dot products with it; no full
filtered map is ever computed. Filters are cross-correlations (the reference uses
``F.conv2d``) evaluated in float64.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

#: 23 edges -> 22 bins of the raw peak height (AWD and Ribli).
HEIGHT_EDGES = np.linspace(-0.03, 0.19, 23)
#: 23 edges -> 22 bins of the Laplace and Roberts-cross values.
FILTER_EDGES = np.linspace(0.0, 0.22, 23)
#: Candidate upper edges b of the AWD/DB5 bins ``linspace(0, b, 23)``, chosen on the val split.
WAVELET_EDGE_CANDIDATES = np.linspace(0.015, 0.035, 5)
#: AWD's ``laplace_v1``: centre +10/3, edges -2/3, corners -1/6 (sums to zero).
LAPLACE_KERNEL = (10.0 / 3.0) * np.array([[-0.05, -0.2, -0.05], [-0.2, 1.0, -0.2], [-0.05, -0.2, -0.05]])
#: Peak statistics this module computes; "wavelet" uses the 4 kernels of :func:`extract_patches`.
METHODS = ("height", "laplace", "roberts", "wavelet")
KERNEL_NAMES = ("LL", "LH", "HL", "HH")


def wavelet_edges(b: float, n_bins: int = 22) -> np.ndarray:
    """Bin edges ``linspace(0, b, n_bins + 1)`` of the AWD/DB5 filter values."""
    return np.linspace(0.0, float(b), n_bins + 1)


def default_edges(method: str) -> np.ndarray:
    """The reference's bin edges for ``method`` (the wavelet method uses b = 0.025)."""
    if method == "height":
        return HEIGHT_EDGES.copy()
    if method in ("laplace", "roberts"):
        return FILTER_EDGES.copy()
    if method == "wavelet":
        return wavelet_edges(0.025)
    raise ValueError(f"unknown peak method {method!r}; expected one of {METHODS}")


def _as_maps(maps) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3 or maps.shape[1] < 3 or maps.shape[2] < 3:
        raise ValueError(f"expected maps of shape (n, H, W) with H, W >= 3, got {maps.shape}")
    return maps


def find_peaks(maps) -> np.ndarray:
    """Boolean mask (n, H-2, W-2) of strict 8-neighbour maxima on the interior pixels.

    A pixel is a peak when it is strictly greater than all 8 neighbours, so plateaus are
    never peaks; border pixels are never peaks (AWD/Ribli; LensTools instead wraps around).
    """
    maps = _as_maps(maps)
    H, W = maps.shape[1:]
    centre = maps[:, 1:-1, 1:-1]
    mask = np.ones(centre.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            mask &= centre > maps[:, dy:H - 2 + dy, dx:W - 2 + dx]
    return mask


def peak_patches(maps, chunk_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The 3x3 neighbourhoods of all peaks: (P, 3, 3) values (dtype of the maps) and (P,) map index.

    Peaks are ordered by map, then row-major within a map. Works in chunks of maps so the
    temporary masks stay small for thousands of maps.
    """
    maps = _as_maps(maps)
    n, H, W = maps.shape
    offsets = (np.arange(3)[:, None] * W + np.arange(3)[None, :]).ravel()
    patches, index = [], []
    for start in range(0, n, chunk_size):
        block = maps[start:start + chunk_size]
        m, r, c = np.nonzero(find_peaks(block))
        flat = block.reshape(len(block), -1)
        top_left = r * W + c  # (r, c) index the interior, i.e. pixel (r+1, c+1) is the peak
        patches.append(flat[m[:, None], top_left[:, None] + offsets[None, :]].reshape(-1, 3, 3))
        index.append(m.astype(np.int64) + start)
    if not patches:
        return np.zeros((0, 3, 3), maps.dtype), np.zeros(0, np.int64)
    return np.concatenate(patches), np.concatenate(index)


def apply_kernels(patches: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Cross-correlation of each 3x3 patch with each kernel: (P, 3, 3), (K, 3, 3) -> (P, K) float64."""
    kernels = np.asarray(kernels, dtype=np.float64).reshape(-1, 9)
    return np.asarray(patches, dtype=np.float64).reshape(-1, 9) @ kernels.T


def roberts_cross(patches: np.ndarray) -> np.ndarray:
    """Roberts-cross steepness of each patch centre: the sum over the four 2x2 blocks that
    contain the centre of sqrt((x00 - x11)^2 + (x01 - x10)^2) (Ribli; AWD's Rx, Ry)."""
    p = np.asarray(patches, dtype=np.float64)
    total = np.zeros(len(p))
    for r in (0, 1):
        for c in (0, 1):
            block = p[:, r:r + 2, c:c + 2]
            total += np.hypot(block[:, 0, 0] - block[:, 1, 1], block[:, 0, 1] - block[:, 1, 0])
    return total


def _best_window(f: np.ndarray) -> int:
    """Start of the 3-tap window of largest centred energy, searched over starts 0..L-4.

    The reference loops ``for left in range(len(h) - 3)``, so the last window (start L-3) is
    never considered. Kept for fidelity: for db5 it changes g's window from g[7:10] to g[6:9].
    """
    centred = f - f.mean()
    energy = [np.sum(centred[i:i + 3] ** 2) for i in range(len(f) - 3)]
    return int(np.argmax(energy))


def extract_patches(h, g, centering: bool = True) -> np.ndarray:
    """The four 3x3 kernels (LL, LH, HL, HH) of AWD's ``eval_cosmology.extract_patches``.

    ``h``/``g`` are the low/high-pass filters (pywt rec_lo/rec_hi convention). In each, the 3
    consecutive raw taps of largest mean-centred energy are kept (h3, g3; see
    :func:`_best_window` for the reference's off-by-one search), and LL = h3 h3^T,
    LH = g3 h3^T (rows along g), HL = h3 g3^T, HH = g3 g3^T. With ``centering`` LH, HL and HH
    have their mean subtracted; LL is never centred. Returns (4, 3, 3) float64.
    """
    h = np.asarray(h, dtype=np.float64).ravel()
    g = np.asarray(g, dtype=np.float64).ravel()
    if len(h) < 4 or len(g) < 4:
        raise ValueError(f"filters need at least 4 taps, got {len(h)} and {len(g)}")
    ih, ig = _best_window(h), _best_window(g)
    h3, g3 = h[ih:ih + 3], g[ig:ig + 3]
    kernels = np.stack([np.outer(h3, h3), np.outer(g3, h3), np.outer(h3, g3), np.outer(g3, g3)])
    if centering:
        kernels[1:] -= kernels[1:].mean(axis=(1, 2), keepdims=True)
    return kernels


def batched_histogram(values: np.ndarray, index: np.ndarray, n_maps: int, edges) -> np.ndarray:
    """Per-map histograms, identical to ``np.histogram(values[index == i], edges)[0]``.

    Bins are half-open [e_k, e_k+1) except the last, which is closed; values outside
    [e_0, e_last] are dropped. Returns (n_maps, len(edges) - 1) int64.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be a strictly increasing 1-D array of at least 2 values")
    values = np.asarray(values, dtype=np.float64)
    n_bins = len(edges) - 1
    bins = np.searchsorted(edges, values, side="right") - 1
    bins[values == edges[-1]] = n_bins - 1
    keep = (bins >= 0) & (bins < n_bins)
    flat = np.asarray(index)[keep].astype(np.int64) * n_bins + bins[keep]
    return np.bincount(flat, minlength=n_maps * n_bins).reshape(n_maps, n_bins)


def peak_values(maps, method: str, kernels=None, chunk_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Filtered values at every peak: (P, K) float64 (K = 4 for "wavelet", else 1) and (P,) map index."""
    patches, index = peak_patches(maps, chunk_size)
    return values_from_patches(patches, method, kernels), index


def values_from_patches(patches: np.ndarray, method: str, kernels=None) -> np.ndarray:
    """Filtered values (P, K) of peak patches for ``method`` (see :data:`METHODS`)."""
    if method == "height":
        return np.asarray(patches[:, 1, 1], dtype=np.float64)[:, None]
    if method == "laplace":
        return apply_kernels(patches, LAPLACE_KERNEL[None])
    if method == "roberts":
        return roberts_cross(patches)[:, None]
    if method == "wavelet":
        if kernels is None:
            raise ValueError("method 'wavelet' needs kernels, e.g. extract_patches(h, g)")
        return apply_kernels(patches, kernels)
    raise ValueError(f"unknown peak method {method!r}; expected one of {METHODS}")


def histogram_features(values: np.ndarray, index: np.ndarray, n_maps: int, edges) -> np.ndarray:
    """Concatenated per-kernel histograms: (P, K) values -> (n_maps, K * n_bins) float64."""
    values = np.asarray(values).reshape(len(index), -1)
    return np.hstack([batched_histogram(values[:, k], index, n_maps, edges)
                      for k in range(values.shape[1])]).astype(np.float64)


def peak_patch_chunks(blocks, chunk_size: int = 512) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`peak_patches` of maps arriving block by block, as ``(start, maps)`` pairs (e.g.
    ``Dataset.iter_rows``): one ``(patches, index)`` pair per block, the index counting maps
    from the first block (int32 when it fits). The patches keep the maps' dtype; nothing is
    concatenated, so memory holds each peak's 3x3 values once."""
    chunks = []
    for start, maps in blocks:
        patches, index = peak_patches(maps, chunk_size)
        index = index + int(start)
        if index.size and index.max() < np.iinfo(np.int32).max:
            index = index.astype(np.int32)
        chunks.append((patches, index))
    return chunks


def chunked_features(chunks, n_maps: int, method: str, edges_list, kernels=None) -> list[np.ndarray]:
    """Histogram features of peaks stored as :func:`peak_patch_chunks`, for several bin-edge
    sets at once: equal to ``histogram_features(values_from_patches(all patches), ...)`` for
    each edge set, while the float64 filter values exist for one chunk at a time."""
    n_kernels = len(np.asarray(kernels).reshape(-1, 9)) if method == "wavelet" else 1
    out = [np.zeros((n_maps, n_kernels * (len(np.asarray(e)) - 1)), np.int64) for e in edges_list]
    for patches, index in chunks:
        values = values_from_patches(patches, method, kernels).reshape(len(index), -1)
        for F, edges in zip(out, edges_list):
            F += np.hstack([batched_histogram(values[:, k], index, n_maps, edges) for k in range(n_kernels)])
    return [F.astype(np.float64) for F in out]


class PeakHistogram(TransformerMixin, BaseEstimator):
    """Maps (n, H, W) -> peak histograms (n, K * n_bins).

    ``method``: "height", "laplace", "roberts" or "wavelet"; ``edges``: bin edges (default:
    the reference's edges for the method); ``kernels``: (4, 3, 3) for "wavelet", usually
    :func:`extract_patches` of a wavelet's filters. Stateless: ``fit`` only checks the input.
    """

    def __init__(self, method: str = "height", edges=None, kernels=None, chunk_size: int = 512):
        self.method = method
        self.edges = edges
        self.kernels = kernels
        self.chunk_size = chunk_size

    def _edges(self) -> np.ndarray:
        return default_edges(self.method) if self.edges is None else np.asarray(self.edges, dtype=np.float64)

    def fit(self, X, y=None):
        maps = _as_maps(X)
        if self.method not in METHODS:
            raise ValueError(f"unknown peak method {self.method!r}; expected one of {METHODS}")
        if self.method == "wavelet" and (self.kernels is None or np.asarray(self.kernels).shape[-2:] != (3, 3)):
            raise ValueError("method 'wavelet' needs kernels of shape (K, 3, 3), e.g. extract_patches(h, g)")
        self.map_shape_ = maps.shape[1:]
        self.n_features_out_ = self._n_kernels() * (len(self._edges()) - 1)
        return self

    def _n_kernels(self) -> int:
        return len(np.asarray(self.kernels).reshape(-1, 9)) if self.method == "wavelet" else 1

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "map_shape_")
        maps = _as_maps(X)
        values, index = peak_values(maps, self.method, self.kernels, self.chunk_size)
        return histogram_features(values, index, len(maps), self._edges())

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "map_shape_")
        names = KERNEL_NAMES if self.method == "wavelet" else (self.method,)
        n_bins = len(self._edges()) - 1
        return np.asarray([f"{name}_bin{b:02d}" for name in names[:self._n_kernels()] for b in range(n_bins)],
                          dtype=object)


def _class_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of y (sorted, as the reference sorts its parameter tuples) and each row's class."""
    rows, labels = np.unique(y, axis=0, return_inverse=True)
    return rows, labels.ravel()


class NearestCosmologyChi2(RegressorMixin, BaseEstimator):
    """Nearest training cosmology by chi^2 (AWD/Ribli peak-count predictor; not k-NN).

    ``fit(X, y)`` groups the training rows by their (unique) target row -- one group per
    cosmology --, stores each group's mean histogram mu_c and the pseudo-inverse of its sample
    covariance (``np.linalg.pinv(np.cov(...))``); ``predict`` returns, for each row d, the target
    row of argmin_c (d - mu_c)^T C_c^+ (d - mu_c): a value on the grid of training cosmologies.
    ``y`` may be 1-D (e.g. Omega_m only) or 2-D (the parameter triple). Ties go to the first
    cosmology in sorted order. Groups need at least 2 rows.
    """

    def __init__(self, rcond: float = 1e-15):
        self.rcond = rcond

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._y_1d = y.ndim == 1
        params, labels = _class_labels(y.reshape(len(y), -1))
        counts = np.bincount(labels, minlength=len(params))
        if np.any(counts < 2):
            raise ValueError(f"{int(np.sum(counts < 2))} of {len(counts)} cosmologies have only one sample; "
                             "the chi^2 head needs at least 2 rows per cosmology (target row)")
        self.class_params_ = params
        self.class_counts_ = counts
        self.means_ = np.stack([X[labels == k].mean(axis=0) for k in range(len(params))])
        self.precisions_ = np.stack([
            np.linalg.pinv(np.atleast_2d(np.cov(X[labels == k], rowvar=False)), rcond=self.rcond)
            for k in range(len(params))])
        return self

    def chi2(self, X) -> np.ndarray:
        """chi^2 of every row against every training cosmology: (n, n_cosmologies)."""
        check_is_fitted(self, "means_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = np.empty((len(X), len(self.means_)))
        for k, (mu, prec) in enumerate(zip(self.means_, self.precisions_)):
            d = X - mu
            out[:, k] = np.einsum("nf,fg,ng->n", d, prec, d)
        return out

    def predict_class(self, X) -> np.ndarray:
        """Index (into ``class_params_``) of the nearest cosmology of each row."""
        return np.argmin(self.chi2(X), axis=1)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "means_")
        pred = self.class_params_[self.predict_class(X)]
        return pred[:, 0] if self._y_1d else pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        tags.regressor_tags.poor_score = True
        return tags


def make_knn_head(n_neighbors: int = 10) -> Pipeline:
    """k-NN regression on standardised histograms (a smooth alternative to the chi^2 head)."""
    return make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=n_neighbors))
