"""Where the peak-count heads find their information, and how mock and real maps differ at peaks.

Three measurements (``python -m domains.cosmology.diagnostics`` writes them as tables):

- **Fisher information per bin** (:func:`fisher_table`): for each head (peak height, Laplace,
  Roberts cross, DB5, optionally a learned AWD wavelet) the mean histogram is measured at the
  fiducial cosmology and at Omega_m +- dOmega_m, 10^9 A_s +- dA_s (central differences; every
  cosmology uses the same seeds, so the realisation noise largely cancels in the differences).
  Per bin: F_b = (d mu_b / d Omega_m)^2 / var_b, the information the bin carries alone. Per head:
  the Fisher matrix of (Omega_m, A_s) with the full covariance (pseudo-inverse over the bins that
  are ever filled, Hartlap-corrected), sigma(Omega_m) with A_s fixed and marginalised.
- **Filter values at peaks against the bins** (:func:`value_distribution`): per kernel, the
  fraction of peak values below the first edge, inside, and above the last edge (dropped by the
  histogram), and quantiles, at the reference's bins (``linspace(0, b, 23)`` for DB5/AWD).
- **Real against mock maps** (:func:`real_vs_mock`): one-point statistics, peak counts, the
  high-peak tail, mean filter values at peaks and band powers of a real map against mocks of
  the same geometry (pixel scale, size) from each generator.

Public API: ``HEADS``, ``head_values(patches, head, kernels)``, ``head_edges(head, b)``,
``value_distribution(values, edges, n_maps)``, ``fisher_table(generator_factory, ...)``,
``map_summary(maps, side_deg, kernels)``, ``real_vs_mock(real, side_deg, factories, n_mocks)``,
``REAL_MAPS`` (file, side in degrees, cosmology, resolution of each real map), ``main(argv)``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pywt
from scipy.stats import skew

from awd.transform import qmf_np
from domains.cosmology import peaks as pk
from domains.cosmology.theory import MASSLESS_FIDUCIAL_INDEX, RESOLUTION_ELL, MASSIVENUS_COSMOLOGIES

HEADS = ("height", "laplace", "roberts", "db5", "awd")
#: Upper edge b of the DB5/AWD bins used when none is given (the middle reference candidate).
DEFAULT_WAVELET_EDGE = 0.025
#: Peaks above this convergence count as "high peaks" (halo-dominated tail).
HIGH_PEAK = 0.05
#: Band edges in ell of the power comparison.
POWER_BANDS = (300.0, 1000.0, 3000.0, 6000.0, 12000.0, 24000.0)

_TNG = {"omega_m": 0.3089, "a_s": 2.1, "m_nu": 0.0, "h": 0.6774, "n_s": 0.9667, "omega_b": 0.0486}
#: The three real maps of ``shared/data/real-kappa`` (file, side in degrees, cosmology, z_s, T(ell)
#: scale). Columbia: cosmology not stated, the MassiveNuS fiducial is assumed (as the tests do).
#: kappaTNG: TNG300 (Planck 2015) cosmology with A_s set to give sigma8 = 0.8159 (see
#: :func:`tng_cosmology`), z_s = 1.2 (its power over halofit is 0.8-1.2 at ell 500-12,000 for z_s = 1.2,
#: 1.0-1.5 for 1.034, 0.5-0.9 for 1.5), no resolution damping.
#: Tuples: file, side [deg], block size applied to the real map, block size of the mocks (generated
#: at that many times the output pixels), cosmology, z_s, T(ell) scale.
REAL_MAPS = {
    "massivenus_0.41": ("massivenus_fiducial_z1_320px.fits", 320 * 3.5 / 512, 1, 1, "fiducial", 1.0, RESOLUTION_ELL),
    "massivenus_0.82": ("massivenus_fiducial_z1_320px.fits", 320 * 3.5 / 512, 2, 2, "fiducial", 1.0, RESOLUTION_ELL),
    "columbia_0.82": ("columbia_z1_256px.fits", 3.5, 1, 2, "fiducial", 1.0, RESOLUTION_ELL),
    "kappatng_0.29": ("kappatng_360px.fits", 5.0 * 360 / 1024, 1, 1, "tng", 1.2, None),
}


def tng_cosmology() -> dict:
    """TNG300 parameters with 10^9 A_s chosen so that sigma8 = 0.8159 (A_s scales sigma8^2)."""
    from domains.cosmology.theory import sigma8_from_as

    p = dict(_TNG)
    s8 = sigma8_from_as(omega_m=p["omega_m"], a_s=p["a_s"], h=p["h"], n_s=p["n_s"], omega_b=p["omega_b"])
    p["a_s"] = p["a_s"] * (0.8159 / s8) ** 2
    return p


def wavelet_kernels(h) -> np.ndarray:
    """The reference's 4 kernels (LL, LH, HL, HH) of a low-pass filter (pywt rec_lo convention)."""
    h = np.asarray(h, dtype=np.float64)
    return pk.extract_patches(h, qmf_np(h))


def db5_kernels() -> np.ndarray:
    return wavelet_kernels(pywt.Wavelet("db5").rec_lo)


def head_values(patches: np.ndarray, head: str, kernels: Mapping[str, np.ndarray]) -> np.ndarray:
    """(P, K) values at the peaks of one head; ``kernels`` maps 'db5'/'awd' to (4, 3, 3) kernels."""
    if head in ("db5", "awd"):
        return pk.values_from_patches(patches, "wavelet", kernels[head])
    return pk.values_from_patches(patches, head)


def head_edges(head: str, b: float = DEFAULT_WAVELET_EDGE) -> np.ndarray:
    """The reference's bin edges of a head (``linspace(0, b, 23)`` for DB5/AWD)."""
    return pk.wavelet_edges(b) if head in ("db5", "awd") else pk.default_edges(head)


def kernel_names(head: str) -> tuple[str, ...]:
    return pk.KERNEL_NAMES if head in ("db5", "awd") else (head,)


def value_distribution(values: np.ndarray, edges: np.ndarray, n_maps: int) -> list[dict]:
    """Per kernel: peaks per map and the fractions below, inside and above the bins, quantiles."""
    values = np.asarray(values).reshape(len(values), -1)
    rows = []
    for k in range(values.shape[1]):
        v = values[:, k]
        below, above = np.mean(v < edges[0]), np.mean(v > edges[-1])
        q = np.quantile(v, [0.05, 0.5, 0.95]) if len(v) else [math.nan] * 3
        rows.append({"kernel": k, "peaks_per_map": len(v) / n_maps, "frac_below": float(below),
                     "frac_inside": float(1 - below - above), "frac_above": float(above),
                     "q05": float(q[0]), "median": float(q[1]), "q95": float(q[2])})
    return rows


def _features(maps: np.ndarray, heads: Sequence[str], kernels: Mapping, b: float) -> dict[str, np.ndarray]:
    patches, index = pk.peak_patches(maps)
    return {h: pk.histogram_features(head_values(patches, h, kernels), index, len(maps), head_edges(h, b))
            for h in heads}


def fisher_table(factory: Callable[[dict], Callable[[int], np.ndarray]], *, n_maps: int, heads: Sequence[str],
                 kernels: Mapping[str, np.ndarray], b: float = DEFAULT_WAVELET_EDGE,
                 fiducial: Mapping | None = None, d_omega_m: float = 0.02, d_a_s: float = 0.15,
                 seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Per-bin and per-head Fisher information on Omega_m (see the module doc).

    ``factory(params)`` returns ``generate(seed) -> map`` for one cosmology. Returns (per-bin rows,
    per-head rows); a per-head row has ``sigma_om_fixed_as`` (1/sqrt(F_oo)),
    ``sigma_om_marginal`` (sqrt((F^-1)_oo)), ``sigma_om_diagonal`` (bins treated as independent)
    and the share of the diagonal information in the top 3 bins.
    """
    fid = dict(MASSIVENUS_COSMOLOGIES[MASSLESS_FIDUCIAL_INDEX] if fiducial is None else fiducial)
    shifts = {"fid": {}, "om+": {"omega_m": fid["omega_m"] + d_omega_m}, "om-": {"omega_m": fid["omega_m"] - d_omega_m},
              "as+": {"a_s": fid["a_s"] + d_a_s}, "as-": {"a_s": fid["a_s"] - d_a_s}}
    feats = {}
    for name, change in shifts.items():
        generate = factory({**fid, **change})
        maps = np.stack([generate(seed + i) for i in range(n_maps)])
        feats[name] = _features(maps, heads, kernels, b)
    bin_rows, head_rows = [], []
    for h in heads:
        fid_f = feats["fid"][h]
        mean, var = fid_f.mean(0), fid_f.var(0, ddof=1)
        d_om = (feats["om+"][h].mean(0) - feats["om-"][h].mean(0)) / (2 * d_omega_m)
        d_as = (feats["as+"][h].mean(0) - feats["as-"][h].mean(0)) / (2 * d_a_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            f_bin = np.where(var > 0, d_om ** 2 / var, 0.0)
        n_bins = len(head_edges(h, b)) - 1
        names = kernel_names(h)
        for j in range(len(mean)):
            bin_rows.append({"head": h, "kernel": names[j // n_bins], "bin": j % n_bins,
                             "lo": float(head_edges(h, b)[j % n_bins]), "mean_count": float(mean[j]),
                             "d_mean_d_om": float(d_om[j]), "fisher_om": float(f_bin[j]),
                             "share": float(f_bin[j] / f_bin.sum()) if f_bin.sum() > 0 else 0.0})
        used = var > 0
        cov = np.cov(fid_f[:, used], rowvar=False)
        hartlap = (n_maps - used.sum() - 2) / (n_maps - 1)
        if hartlap <= 0:
            raise ValueError(f"head {h}: {used.sum()} filled bins need more than {used.sum() + 2} maps per "
                             f"cosmology for an inverse covariance, got n_maps={n_maps}")
        prec = hartlap * np.linalg.pinv(np.atleast_2d(cov))
        derivs = np.stack([d_om[used], d_as[used]])
        fisher = derivs @ prec @ derivs.T
        top3 = np.sort(f_bin)[::-1][:3].sum() / f_bin.sum() if f_bin.sum() > 0 else math.nan
        head_rows.append({"head": h, "n_features": int(len(mean)), "n_filled": int(used.sum()),
                          "sigma_om_fixed_as": float(1 / math.sqrt(fisher[0, 0])),
                          "sigma_om_marginal": float(math.sqrt(np.linalg.pinv(fisher)[0, 0])),
                          "sigma_om_diagonal": float(1 / math.sqrt(f_bin.sum())),
                          "top3_share": float(top3), "hartlap": float(hartlap)})
    return bin_rows, head_rows


class PooledNearestCosmologyChi2(pk.NearestCosmologyChi2):
    """Nearest training cosmology by chi^2 with one covariance pooled over the cosmologies.

    Not the reference's head (it uses one covariance per cosmology): the within-cosmology
    scatter of all training maps is pooled, so 88 histogram features need ~10x fewer maps per
    cosmology for a stable inverse, and sparse bins no longer get near-zero variances.
    """

    def fit(self, X, y):
        super().fit(X, y)
        X = np.asarray(X, dtype=np.float64)
        _, labels = np.unique(np.asarray(y, dtype=np.float64).reshape(len(y), -1), axis=0, return_inverse=True)
        resid = X - self.means_[labels.ravel()]
        prec = np.linalg.pinv(np.atleast_2d(np.cov(resid, rowvar=False)), rcond=self.rcond)
        self.precisions_ = np.broadcast_to(prec, (len(self.means_),) + prec.shape).copy()
        return self


def signed_edges(b: float, n_bins: int = 22) -> np.ndarray:
    """Bins ``linspace(-b, b, n_bins + 1)``: keep the negative LL/LH/HL/HH values the reference drops."""
    return np.linspace(-float(b), float(b), n_bins + 1)


def _chi2_parts(model: pk.NearestCosmologyChi2, X: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Per-bin terms d_b (P d)_b of each row's chi^2 against cosmology ``cls`` (they sum to chi^2)."""
    d = X - model.means_[cls]
    return d * np.einsum("nfg,ng->nf", model.precisions_[cls], d)


def _pooled_chi2_predict(X_train, labels, params, X_test) -> np.ndarray:
    """Nearest cosmology with one covariance pooled over the cosmologies (within-class scatter)."""
    means = np.stack([X_train[labels == k].mean(0) for k in range(len(params))])
    resid = X_train - means[labels]
    prec = np.linalg.pinv(np.atleast_2d(np.cov(resid, rowvar=False)))
    d = X_test[:, None, :] - means[None]
    return params[np.argmin(np.einsum("ncf,fg,ncg->nc", d, prec, d), axis=1)]


def chi2_head_analysis(train: Mapping[str, np.ndarray], y_train: np.ndarray, test: Mapping[str, np.ndarray],
                       y_test: np.ndarray, col: int = 1, sparse_count: float = 1.0) -> list[dict]:
    """How the chi^2 nearest-cosmology head uses the bins, and what it loses, per head.

    ``train``/``test``: head -> (n, n_features) histograms; ``y``: (n, 3) parameter rows; ``col``:
    the target column (Omega_m). A bin is *sparse* when its mean training count is below
    ``sparse_count`` per map. Row: RMSE of the reference head, the fraction of misclassified
    maps, the median share of chi^2 (against the true cosmology) from sparse bins, of the maps
    that are misclassified, and the RMSE without the sparse bins and with a pooled covariance.
    """
    params, labels = np.unique(y_train, axis=0, return_inverse=True)
    labels = labels.ravel()
    true_cls = np.array([int(np.flatnonzero((params == row).all(1))[0]) for row in y_test])
    rows = []
    for head in train:
        Xtr, Xte = np.asarray(train[head], float), np.asarray(test[head], float)
        model = pk.NearestCosmologyChi2().fit(Xtr, y_train)
        pred_cls = model.predict_class(Xte)
        pred = model.class_params_[pred_cls][:, col]
        sparse = Xtr.mean(0) < sparse_count
        parts = _chi2_parts(model, Xte, true_cls)
        share = parts[:, sparse].sum(1) / np.maximum(parts.sum(1), 1e-300)
        wrong = pred_cls != true_cls
        keep = ~sparse
        dense = pk.NearestCosmologyChi2().fit(Xtr[:, keep], y_train).predict(Xte[:, keep])[:, col]
        pooled = _pooled_chi2_predict(Xtr, labels, params, Xte)[:, col]
        rows.append({"head": head, "n_features": int(Xtr.shape[1]), "n_sparse": int(sparse.sum()),
                     "rmse": float(np.sqrt(np.mean((pred - y_test[:, col]) ** 2))),
                     "misclassified": float(wrong.mean()),
                     "sparse_chi2_share_wrong": float(np.median(share[wrong])) if wrong.any() else math.nan,
                     "sparse_chi2_share_right": float(np.median(share[~wrong])) if (~wrong).any() else math.nan,
                     "rmse_dense_bins": float(np.sqrt(np.mean((dense - y_test[:, col]) ** 2))),
                     "rmse_pooled_cov": float(np.sqrt(np.mean((pooled - y_test[:, col]) ** 2)))})
    return rows


def labelled_features(factory, cosmologies: Sequence[int], n_train: int, n_test: int, heads: Sequence[str],
                      kernels: Mapping, b: float, seed: int = 0, extra_edges: Mapping | None = None):
    """Histograms of train/test maps of several cosmologies: ({head: F}, y) for each split.

    ``extra_edges``: more rows, name -> (head, edges), e.g. DB5 with symmetric bins.
    """
    from domains.cosmology.mock import cosmology_seed, resolve_cosmology

    out = {"train": ({}, []), "test": ({}, [])}
    for c in cosmologies:
        p = resolve_cosmology(c)
        generate = factory(p)
        for split, r0, n in (("train", 1, n_train), ("test", 1 + n_train, n_test)):
            maps = np.stack([generate(cosmology_seed(seed, p, r)) for r in range(r0, r0 + n)])
            patches, index = pk.peak_patches(maps)
            feats, ys = out[split]
            todo = {h: (h, head_edges(h, b)) for h in heads}
            todo.update(extra_edges or {})
            for name, (h, edges) in todo.items():
                f = pk.histogram_features(head_values(patches, h, kernels), index, len(maps), edges)
                feats.setdefault(name, []).append(f)
            ys.append(np.tile([p["m_nu"], p["omega_m"], p["a_s"]], (n, 1)))
    return ({k: np.concatenate(v) for k, v in out["train"][0].items()}, np.concatenate(out["train"][1]),
            {k: np.concatenate(v) for k, v in out["test"][0].items()}, np.concatenate(out["test"][1]))


def power_bands(maps: np.ndarray, side_deg: float, bands: Sequence[float] = POWER_BANDS) -> np.ndarray:
    """Mean band powers (n_bands,) of a stack of maps; bands above the map's Nyquist are NaN."""
    from domains.cosmology.mock import measure_power

    maps = np.asarray(maps, dtype=np.float64)
    _, cb, counts = measure_power(maps - maps.mean(axis=(-2, -1), keepdims=True), side_deg=side_deg,
                                  ell_edges=np.asarray(bands))
    return np.where(counts > 0, cb, np.nan)


def map_summary(maps: np.ndarray, side_deg: float, kernels: Mapping[str, np.ndarray],
                b: float = DEFAULT_WAVELET_EDGE) -> dict[str, np.ndarray]:
    """Per-map statistics (each an (n_maps,) array) of a stack of maps of side ``side_deg``."""
    maps = np.asarray(maps, dtype=np.float64)
    n = len(maps)
    area = side_deg ** 2
    patches, index = pk.peak_patches(maps)
    out = {"std": maps.std(axis=(1, 2)), "skewness": np.array([skew(m.ravel()) for m in maps]),
           "peaks_per_deg2": np.bincount(index, minlength=n) / area}
    height = patches[:, 1, 1].astype(np.float64)
    out[f"high_peaks_per_deg2 (kappa>{HIGH_PEAK})"] = np.bincount(index[height > HIGH_PEAK], minlength=n) / area
    out["high_peaks_per_deg2 (kappa>0.1)"] = np.bincount(index[height > 0.1], minlength=n) / area

    def per_map_mean(v):
        return np.bincount(index, v, minlength=n) / np.maximum(np.bincount(index, minlength=n), 1)

    for h in [x for x in HEADS if x != "awd" or "awd" in kernels]:
        values = head_values(patches, h, kernels)
        edges = head_edges(h, b)
        for k, name in enumerate(kernel_names(h)):
            label = name if h not in ("db5", "awd") else f"{h} {name}"
            out[f"mean {label} at peaks"] = per_map_mean(values[:, k])
            if h in ("db5", "awd"):
                out[f"{label}: fraction < 0"] = per_map_mean((values[:, k] < edges[0]).astype(float))
                out[f"{label}: fraction > b"] = per_map_mean((values[:, k] > edges[-1]).astype(float))
            else:
                out[f"{label}: fraction outside bins"] = per_map_mean(
                    ((values[:, k] < edges[0]) | (values[:, k] > edges[-1])).astype(float))
    return out


def real_vs_mock(real: np.ndarray, side_deg: float, mocks: Mapping[str, np.ndarray],
                 kernels: Mapping[str, np.ndarray], b: float = DEFAULT_WAVELET_EDGE) -> list[dict]:
    """One row per statistic: the real map's value, each generator's mean and sd, and the ratio."""
    real_stats = map_summary(real[None], side_deg, kernels, b)
    mock_stats = {g: map_summary(m, side_deg, kernels, b) for g, m in mocks.items()}
    rows = []
    for stat, value in real_stats.items():
        row = {"statistic": stat, "real": float(value[0])}
        for g, s in mock_stats.items():
            row[f"{g}_mean"], row[f"{g}_sd"] = float(s[stat].mean()), float(s[stat].std(ddof=1))
            row[f"{g}_ratio"] = float(value[0] / s[stat].mean()) if s[stat].mean() != 0 else math.nan
        rows.append(row)
    real_p = power_bands(real[None], side_deg)
    mock_p = {g: power_bands(m, side_deg) for g, m in mocks.items()}
    for j in range(len(POWER_BANDS) - 1):
        if not np.isfinite(real_p[j]):
            continue
        row = {"statistic": f"C_ell ell {POWER_BANDS[j]:.0f}-{POWER_BANDS[j + 1]:.0f} (x1e9)", "real": real_p[j] * 1e9}
        for g, p in mock_p.items():
            row[f"{g}_mean"], row[f"{g}_sd"], row[f"{g}_ratio"] = p[j] * 1e9, math.nan, real_p[j] / p[j]
        rows.append(row)
    return rows


# ------------------------------------------------------------------ command line
def _factory(model: str, *, npix: int, side_deg: float, rebin: int, z_source: float = 1.0,
             resolution_ell=RESOLUTION_ELL, halo: Mapping | None = None):
    """``params -> generate(seed)`` for the lognormal or halo generator at one geometry."""
    from domains.cosmology.mock import MapGenerator

    def make(params):
        if model == "halo":
            from domains.cosmology.halo import HaloMapGenerator

            gen = HaloMapGenerator(params, npix=npix, side_deg=side_deg, rebin=rebin, z_source=z_source,
                                   resolution_ell=resolution_ell, halo=halo)
        else:
            gen = MapGenerator(params, npix=npix, side_deg=side_deg, rebin=rebin, z_source=z_source,
                               resolution_ell=resolution_ell)
        return lambda seed: gen.generate(seed).astype(np.float32)
    return make


def _markdown(rows: list[dict], columns: Sequence[str], fmt: str = "{:.4g}") -> str:
    def cell(v):
        return fmt.format(v) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/cosmology_diagnostics"),
                        help="output prefix (.md and .json are written)")
    parser.add_argument("--real-dir", type=Path, default=None, help="folder of the real maps (REAL_MAPS files)")
    parser.add_argument("--wavelet", type=Path, default=None, help="a learned wavelet file (wavelet.json) for the AWD head")
    parser.add_argument("--edge", type=float, default=DEFAULT_WAVELET_EDGE, help="upper edge b of the DB5/AWD bins")
    parser.add_argument("--fisher-maps", type=int, default=400, help="maps per cosmology for the Fisher derivatives")
    parser.add_argument("--mocks", type=int, default=30, help="mock maps per real map")
    parser.add_argument("--models", default="lognormal,halo")
    parser.add_argument("--train-maps", type=int, default=420, help="training maps per cosmology (chi^2 head)")
    parser.add_argument("--test-maps", type=int, default=180, help="test maps per cosmology (chi^2 head)")
    parser.add_argument("--npix", type=int, default=128, help="map side in pixels of the Fisher run (0.82 arcmin)")
    args = parser.parse_args(argv)

    from domains.cosmology.fits_io import block_mean, read_convergence_map

    models = [m for m in args.models.split(",") if m]
    kernels = {"db5": db5_kernels()}
    if args.wavelet is not None:
        from awd.wavelet import load_wavelet

        kernels["awd"] = wavelet_kernels(load_wavelet(args.wavelet).h)
    heads = [h for h in HEADS if h != "awd" or "awd" in kernels]
    report = {"edge": args.edge, "fisher": {}, "fisher_bins": {}, "real": {}, "distribution": {}}
    md = [f"# Peak-count diagnostics (DB5/AWD bins linspace(0, {args.edge}, 23))", ""]
    side = args.npix * 2 * 3.5 / 512  # 0.41' generation pixels, 2x2 block means: 0.82' as AWD's data
    for model in models:
        factory = _factory(model, npix=2 * args.npix, side_deg=side, rebin=2)
        bins, per_head = fisher_table(factory, n_maps=args.fisher_maps, heads=heads, kernels=kernels, b=args.edge)
        report["fisher"][model], report["fisher_bins"][model] = per_head, bins
        md += [f"## Fisher information on Omega_m, {model} mocks ({args.npix}^2, 0.82', {args.fisher_maps} maps "
               "per cosmology)", "", _markdown(per_head, ["head", "n_features", "n_filled", "sigma_om_fixed_as",
                                                         "sigma_om_marginal", "sigma_om_diagonal", "top3_share"]), ""]
        md += [f"### Bins carrying 80 % of the diagonal information ({model})", ""]
        for h in heads:
            rows = sorted((r for r in bins if r["head"] == h), key=lambda r: -r["share"])
            cum, chosen = 0.0, []
            for r in rows:
                if cum >= 0.8:
                    break
                cum += r["share"]
                chosen.append(f"{r['kernel']}[{r['bin']}] (lo {r['lo']:.4f}, {100 * r['share']:.0f} %)")
            md.append(f"- {h}: " + ", ".join(chosen))
        md.append("")
        # the chi^2 head on the 10 default cosmologies (the default run's sizes)
        sym = np.linspace(-args.edge, args.edge, 23)
        extra = {f"{h} (bins linspace(-b, b, 23))": (h, sym) for h in heads if h in ("db5", "awd")}
        Ftr, ytr, Fte, yte = labelled_features(factory, range(10), args.train_maps, args.test_maps, heads, kernels,
                                               args.edge, extra_edges=extra)
        chi2_rows = chi2_head_analysis(Ftr, ytr, Fte, yte)
        report.setdefault("chi2", {})[model] = chi2_rows
        md += [f"## The chi^2 head on the 10 default cosmologies, {model} mocks ({args.train_maps} train / "
               f"{args.test_maps} test maps each)", "",
               _markdown(chi2_rows, ["head", "n_features", "n_sparse", "rmse", "misclassified",
                                     "sparse_chi2_share_wrong", "sparse_chi2_share_right", "rmse_dense_bins",
                                     "rmse_pooled_cov"]), ""]
        # filter values at peaks against the bins (fiducial cosmology)
        generate = factory(dict(MASSIVENUS_COSMOLOGIES[MASSLESS_FIDUCIAL_INDEX]))
        maps = np.stack([generate(i) for i in range(args.mocks * 4)])
        patches, index = pk.peak_patches(maps)
        dist = []
        for h in heads:
            for name, row in zip(kernel_names(h), value_distribution(head_values(patches, h, kernels),
                                                                     head_edges(h, args.edge), len(maps))):
                dist.append({"head": h, **row, "kernel": name})
        report["distribution"][model] = dist
        md += [f"## Values at peaks against the bins, {model} mocks (fiducial)", "",
               _markdown(dist, ["head", "kernel", "peaks_per_map", "frac_below", "frac_inside", "frac_above", "q05",
                                "median", "q95"]), ""]
    if args.real_dir is not None:
        for label, (fname, side_deg, real_rebin, rebin, cosmo, z_s, res) in REAL_MAPS.items():
            real, _ = read_convergence_map(args.real_dir / fname, target_size=None)
            real = block_mean(real.astype(np.float64), real_rebin)
            npix = real.shape[-1] * rebin
            params = tng_cosmology() if cosmo == "tng" else dict(MASSIVENUS_COSMOLOGIES[MASSLESS_FIDUCIAL_INDEX])
            mocks = {}
            for model in models:
                generate = _factory(model, npix=npix, side_deg=side_deg, rebin=rebin, z_source=z_s,
                                    resolution_ell=res)(params)
                mocks[model] = np.stack([generate(1000 + i) for i in range(args.mocks)])
            rows = real_vs_mock(real, side_deg, mocks, kernels, args.edge)
            report["real"][label] = rows
            cols = ["statistic", "real"] + [f"{m}_{s}" for m in models for s in ("mean", "sd", "ratio")]
            md += [f"## Real map {label} ({fname}, {real.shape[-1]}^2, {side_deg * 60 / real.shape[-1]:.2f}' pixels, "
                   f"z_s {z_s}) against {args.mocks} mocks per generator", "", _markdown(rows, cols), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.md").write_text("\n".join(md) + "\n")
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
