"""The cosmology domain: weak-lensing convergence maps -> Omega_m (AWD's MassiveNuS experiment).

Stages (see ``awd.domain.Domain``): ``simulate`` writes a mock MassiveNuS tree, ``ingest`` reads
a real or mock tree and splits it by realisation, ``build_teacher`` makes the ResNet,
``fit_heads`` fits the peak-count heads (AWD's ``peak_counting.py``) for the baselines and every
learned wavelet, selects the wavelet and histogram edge jointly on the val split and writes the
result table, ``figures`` draws the PNGs from those files.

Files written by ``fit_heads`` into ``out_dir`` (read by :mod:`.figures`):
``table.csv`` (one row per method), ``wavelet.json`` (the selected wavelet),
``heads/predictions.csv`` (test maps: truth and every method's Omega_m),
``heads/selection.csv`` (val RMSE of every wavelet x edge), ``heads/grid.json`` (all learned
filters with their scores), ``heads/histograms.npz`` (mean peak histograms per cosmology),
``heads/attribution.npz`` (one test map, its reconstruction from the most important wavelet
coefficients and its pixel attributions).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pywt
import torch
from threadpoolctl import threadpool_limits

from awd.domain import Dataset, Domain, register
from awd.io import InputError, atomic_path, write_csv, write_json
from awd.stats import bootstrap_se, rmse
from awd.transform import qmf_np
from domains.cosmology import peaks as pk
from domains.cosmology.resnet import resnet_from_config

log = logging.getLogger(__name__)

TARGET_NAMES = ["m_nu", "omega_m", "a_s"]
HEADS_DIR = "heads"

#: (table row name, file slug) of every method, in table order.
METHODS = (("peak height", "height"), ("Laplace", "laplace"), ("Roberts cross", "roberts"), ("DB5", "db5"),
           ("AWD without interpretation loss", "awd_gamma0"), ("AWD", "awd"),
           ("DB5, signed bins + pooled covariance", "db5_pooled"), ("AWD, signed bins + pooled covariance", "awd_pooled"),
           ("teacher", "teacher"))
_BASELINES = {"height": pk.HEIGHT_EDGES, "laplace": pk.FILTER_EDGES, "roberts": pk.FILTER_EDGES}
#: Training maps per cosmology of the learning curve; all training maps are always added, and
#: sizes the training split cannot fill are left out.
LEARNING_CURVE_SIZES = (10, 30, 100, 300, 1000)
#: (table row, slug) of the heads on the learning curve.
LEARNING_CURVE_METHODS = (("peak height", "height"), ("Laplace", "laplace"), ("Roberts cross", "roberts"),
                          ("DB5", "db5"), ("AWD", "awd"))


@register
class CosmologyDomain(Domain):
    """MassiveNuS-style convergence maps; teacher ResNet; peak-count heads; target Omega_m."""

    name = "cosmology"
    signal_ndim = 2
    target = "omega_m"
    metric = "rmse"
    paper_reference = {"peak height": 0.01609, "Laplace": 0.01369, "Roberts cross": 0.01259, "DB5": 0.01569,
                       "AWD without interpretation loss": 0.01353, "AWD": 0.01026, "teacher": 0.01156}
    paper_source = ("Ha et al. 2021 (AWD), RMSE of Omega_m on 2,000 MassiveNuS test maps; notebook outputs of "
                    "Yu-Group/adaptive-wavelets notebooks/cosmology (00_peak_count, 03_analyze, 05_ablation_study)")
    # what each stage reads and runs (awd.stages); figures read the whole section
    stage_config = {
        "simulate": ("data", "mock"),
        "ingest": ("data",),
        "teacher": ("teacher", "model"),
        "distill": ("distill", "model", "teacher.seed", "teacher.loss"),
        "heads": ("heads", "bootstrap", "model", "teacher.seed", "teacher.batch_size", "teacher.loss"),
    }
    stage_code = {
        "simulate": ("mock.py",),
        "ingest": ("fits_io.py",),
        "teacher": ("resnet.py",),
        "distill": ("resnet.py",),
        "heads": ("peaks.py", "resnet.py"),
        "figures": ("figures.py",),
    }
    extra_outputs = {"heads": ["heads/predictions.csv", "heads/selection.csv", "heads/grid.json",
                               "heads/histograms.npz", "heads/attribution.npz",
                               "learning_curve.csv", "learning_curve.png"]}

    # ------------------------------------------------------------------ data
    def simulate(self, cfg: dict, raw_dir: Path, threads: int = 1) -> None:
        """Write the mock MassiveNuS tree of ``cfg['mock']`` into ``raw_dir``."""
        from domains.cosmology.mock import write_mock_tree

        mock, data = cfg["mock"], cfg["data"]
        if not math.isclose(mock["z_source"], data["redshift"]):
            raise InputError(None, f"cosmology.mock.z_source={mock['z_source']} differs from "
                                   f"cosmology.data.redshift={data['redshift']}; ingest would find no maps")
        if data["target_size"] is not None and mock["npix_out"] % data["target_size"]:
            raise InputError(None, f"cosmology.mock.npix_out={mock['npix_out']} is not a multiple of "
                                   f"cosmology.data.target_size={data['target_size']}")
        write_mock_tree(raw_dir, cosmologies=list(mock["cosmologies"]), n_maps=mock["n_maps"],
                        npix_generate=mock["npix_generate"], npix_out=mock["npix_out"], side_deg=mock["side_deg"],
                        z_source=mock["z_source"], seed=mock["seed"], shape_noise=mock["shape_noise"],
                        smoothing_arcmin=mock["smoothing_arcmin"], threads=threads,
                        model=mock.get("model", "lognormal"), halo=mock.get("halo"))

    def ingest(self, cfg: dict, raw_dir: Path, out_dir: Path, threads: int = 1) -> Dataset:
        """Read the tree under ``raw_dir``, split by realisation; write ``out_dir/maps.csv``.

        The maps go chunk by chunk into a memory-mapped scratch file in ``out_dir`` (unlinked at
        once, see ``load_maps``), so the ingest holds one chunk of maps, not all of them; the
        workflow's ``Dataset.save`` streams them into ``dataset.npz``."""
        from domains.cosmology.fits_io import load_maps, split_maps

        data = cfg["data"]
        maps = load_maps(raw_dir, redshift=data["redshift"], target_size=data["target_size"],
                         max_per_cosmology=data["max_per_cosmology"], threads=threads,
                         nan_policy=data["nan_policy"], pixel_arcmin=data["pixel_arcmin"],
                         scratch=Path(out_dir) / ".maps.scratch.npy")
        split = split_maps(maps, data["split"], seed=data["split_seed"])
        _check_split(raw_dir, split, maps.cosmology)
        _check_pixel_scale(maps.pixel_arcmin, maps.native_pixel_arcmin, int(maps.maps.shape[-1]) * maps.rebin)
        per_cosmology = np.bincount(maps.cosmology)
        table = pd.DataFrame({"file": [str(Path(f).relative_to(raw_dir)) if Path(f).is_relative_to(raw_dir) else f
                                       for f in maps.files],
                              "cosmology": maps.cosmology, "realisation": maps.realisation, "split": split,
                              **{name: maps.params[:, j] for j, name in enumerate(TARGET_NAMES)},
                              "cosmology_maps": per_cosmology[maps.cosmology],
                              "nan_pixels": maps.nonfinite,
                              "nan_patch": np.where(maps.nonfinite > 0, maps.nan_policy, "")})
        with atomic_path(Path(out_dir) / "maps.csv") as tmp:
            table.to_csv(tmp, index=False)
        ids, first = np.unique(maps.cosmology, return_index=True)
        meta = {"source": data["source"], "redshift": maps.redshift, "pixel_arcmin": maps.pixel_arcmin,
                "native_pixel_arcmin": maps.native_pixel_arcmin, "rebin": maps.rebin,
                "map_size": int(maps.maps.shape[-1]), "n_cosmologies": int(len(ids)),
                "cosmologies": [dict(zip(["id", *TARGET_NAMES, "maps", "folder"],
                                         [int(i), *map(float, maps.params[f]), int(per_cosmology[i]),
                                          maps.folders[int(i)]]))
                                for i, f in zip(ids, first)],
                "nan_patched_files": int(np.count_nonzero(maps.nonfinite)),
                "not_read": [f"{entry}: {reason}" for entry, reason in maps.skipped],
                "units": {"X": "convergence kappa", "a_s": "10^9 A_s", "m_nu": "eV"}}
        return Dataset(X=maps.maps, y=maps.params, target_names=list(TARGET_NAMES), split=split,
                       group=maps.cosmology, extra={"realisation": maps.realisation.astype(np.int64)}, meta=meta)

    def build_teacher(self, cfg: dict, dataset: Dataset):
        """The ResNet of ``cfg['model']``, weights seeded by ``cfg['teacher']['seed']``."""
        if dataset.X.ndim != 3:
            raise InputError(None, f"cosmology teacher needs maps (n, H, W), got X of shape {dataset.X.shape}")
        return resnet_from_config(cfg["model"], n_outputs=dataset.y.shape[1], seed=cfg["teacher"]["seed"])

    # ------------------------------------------------------------------ heads
    def fit_heads(self, cfg: dict, dataset: Dataset, grid: list, teacher, out_dir: Path, threads: int = 1) -> dict:
        """Peak-count heads for the baselines and every grid wavelet; see the module docstring."""
        with threadpool_limits(limits=max(1, int(threads))):
            return _fit_heads(cfg, dataset, grid, teacher, Path(out_dir), self.target)

    def figures(self, cfg: dict, results_dir: Path, raw_dir: Path, fig_dir: Path) -> list[Path]:
        from domains.cosmology.figures import draw_all

        return draw_all(cfg, Path(results_dir), Path(fig_dir))


def _check_pixel_scale(working: float, native: float, npix_file: int) -> None:
    """Warn when the working pixel scale is not the 0.82 arcmin the heads' histogram bins are made for."""
    from domains.cosmology.fits_io import AWD_PIXEL_ARCMIN

    if math.isclose(working, AWD_PIXEL_ARCMIN, rel_tol=0.02):
        return
    size = npix_file * native / AWD_PIXEL_ARCMIN
    hint = (f"cosmology.data.target_size: {round(size)} gives {AWD_PIXEL_ARCMIN:.2f} arcmin"
            if abs(size - round(size)) < 1e-6 and npix_file % round(size) == 0
            else "no block size of these files gives it")
    log.warning("working pixel scale %.3f arcmin differs from the %.2f arcmin of AWD's maps, for which the heads' "
                "histogram bins (cosmology.heads) are made: peak values shift with the pixel scale, so the bins "
                "and the paper's numbers do not carry over (%s)", working, AWD_PIXEL_ARCMIN, hint)


def _check_split(raw_dir: Path, split: np.ndarray, cosmology: np.ndarray) -> None:
    """Every split non-empty, >= 2 cosmologies, every cosmology with >= 2 training maps (chi^2 covariances)."""
    if len(np.unique(cosmology)) < 2:
        raise InputError(raw_dir, "holds maps of one cosmology only; predicting Omega_m needs maps of at least 2 "
                                  "cosmologies")
    for name in ("train", "val", "test"):
        if not np.any(split == name):
            raise InputError(raw_dir, f"the '{name}' split is empty; use more maps or change cosmology.data.split")
    counts = np.bincount(cosmology[split == "train"], minlength=cosmology.max() + 1)
    if np.any(counts[np.unique(cosmology)] < 2):
        raise InputError(raw_dir, "every cosmology needs at least 2 training maps for the peak-count heads; "
                                  "change cosmology.data.split or cosmology.data.max_per_cosmology")


def _field(record: Any, name: str) -> Any:
    """A field of a grid record (an ``awd.distill.DistillResult`` or a plain dict)."""
    return record[name] if isinstance(record, dict) else getattr(record, name)


@dataclass
class _SplitPeaks:
    """The 3x3 neighbourhoods of every peak of one split's maps (float32, chunk by chunk as
    :func:`peaks.peak_patch_chunks`), and the split's targets."""

    chunks: list
    n_maps: int
    y: np.ndarray

    @property
    def n_peaks(self) -> int:
        return sum(len(index) for _, index in self.chunks)

    def features(self, method: str, edges, kernels=None) -> np.ndarray:
        return self.features_at(method, [edges], kernels)[0]

    def features_at(self, method: str, edges_list, kernels=None) -> list[np.ndarray]:
        """Histogram features for several edge sets from one pass over the peaks."""
        return pk.chunked_features(self.chunks, self.n_maps, method, edges_list, kernels)


def _chi2_rmse(train: _SplitPeaks, F_train: np.ndarray, other: _SplitPeaks, F_other: np.ndarray,
               col: int, head=None) -> tuple[float, np.ndarray]:
    model = (pk.NearestCosmologyChi2() if head is None else head).fit(F_train, train.y)
    pred = model.predict(F_other)[:, col]
    return rmse(other.y[:, col], pred), pred


def _wavelet_scores(kernels: np.ndarray, edges_list, peaks: dict[str, _SplitPeaks], col: int) -> np.ndarray:
    """Val RMSE of the chi^2 head for one set of 4 kernels at every candidate edge."""
    edges = [pk.wavelet_edges(b) for b in edges_list]
    F_train = peaks["train"].features_at("wavelet", edges, kernels)
    F_val = peaks["val"].features_at("wavelet", edges, kernels)
    return np.asarray([_chi2_rmse(peaks["train"], F_tr, peaks["val"], F_va, col)[0]
                       for F_tr, F_va in zip(F_train, F_val)])


def _filters(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(h, dtype=np.float64)
    return h, qmf_np(h)


def _fit_heads(cfg: dict, ds: Dataset, grid: list, teacher, out_dir: Path, target: str) -> dict:
    if not grid:
        raise InputError(None, "cosmology heads: the distillation grid is empty")
    col = ds.target_names.index(target)
    hcfg, bcfg = cfg["heads"], cfg["bootstrap"]
    edge_candidates = [float(b) for b in hcfg["edge_candidates"]]
    peaks = {}
    for name in ("train", "val", "test"):  # maps streamed chunk by chunk, X never copied per split
        rows = ds.indices(name)
        chunks = pk.peak_patch_chunks(ds.iter_rows(rows, hcfg["chunk_size"]), hcfg["chunk_size"])
        peaks[name] = _SplitPeaks(chunks, len(rows), ds.y[rows].astype(np.float64))
        log.info("heads: %s split, %d maps, %.1f peaks per map", name, len(rows),
                 peaks[name].n_peaks / max(1, len(rows)))
    test = ds.subset("test")
    y_test = test.y[:, col].astype(np.float64)

    def boot(pred: np.ndarray) -> float:
        return bootstrap_se(rmse, y_test, pred, bcfg["n"], bcfg["seed"])

    rows, preds, features = [], {}, {}

    def add_row(method: str, slug: str, method_kind: str, edges, kernels=None, head=None, **extra) -> None:
        F = {s: peaks[s].features(method_kind, edges, kernels) for s in ("train", "val", "test")}
        features[slug] = F
        val_rmse = _chi2_rmse(peaks["train"], F["train"], peaks["val"], F["val"], col, head)[0]
        test_rmse, pred = _chi2_rmse(peaks["train"], F["train"], peaks["test"], F["test"], col, head)
        knn = pk.make_knn_head(hcfg["knn_neighbors"]).fit(F["train"], peaks["train"].y[:, col])
        pred_knn = knn.predict(F["test"])
        preds[f"pred_{slug}"], preds[f"knn_{slug}"] = pred, pred_knn
        rows.append({"method": method, "rmse": test_rmse, "rmse_se": boot(pred), "rmse_knn": rmse(y_test, pred_knn),
                     "rmse_knn_se": boot(pred_knn), "val_rmse": val_rmse, "n_features": F["train"].shape[1],
                     **extra})
        log.info("heads: %s test RMSE %.5f (val %.5f, k-NN %.5f)", method, test_rmse, val_rmse, rows[-1]["rmse_knn"])

    blank = {"edge": math.nan, "selected_lambda": math.nan, "selected_gamma": math.nan}
    for (method, slug) in METHODS[:3]:
        add_row(method, slug, slug, _BASELINES[slug], **blank)

    # DB5 and every learned wavelet: 4 kernels, edge b selected on val (jointly with the wavelet)
    db5_kernels = pk.extract_patches(*_filters(pywt.Wavelet("db5").rec_lo))
    db5_scores = _wavelet_scores(db5_kernels, edge_candidates, peaks, col)
    grid_h = [np.asarray(_field(r, "h"), dtype=np.float64) for r in grid]
    lams = np.array([float(_field(r, "lam")) for r in grid])
    gammas = np.array([float(_field(r, "gamma")) for r in grid])
    grid_kernels = [pk.extract_patches(*_filters(h)) for h in grid_h]
    scores = np.stack([_wavelet_scores(k, edge_candidates, peaks, col) for k in grid_kernels])

    b_db5 = int(np.argmin(db5_scores))
    add_row("DB5", "db5", "wavelet", pk.wavelet_edges(edge_candidates[b_db5]), db5_kernels,
            edge=edge_candidates[b_db5], selected_lambda=math.nan, selected_gamma=math.nan)

    def best(mask: np.ndarray) -> tuple[int, int] | None:
        if not mask.any():
            return None
        masked = np.where(mask[:, None], scores, np.inf)
        i, j = np.unravel_index(int(np.argmin(masked)), masked.shape)  # first minimum: lowest grid index
        return int(i), int(j)

    choice = {"awd_gamma0": best(gammas == 0), "awd": best(np.ones(len(grid), bool))}
    for method, slug in METHODS[4:6]:
        if choice[slug] is None:
            log.warning("heads: the grid has no gamma = 0 wavelet; row '%s' is empty", method)
            rows.append({"method": method, "rmse": math.nan, "rmse_se": math.nan, **blank})
            continue
        i, j = choice[slug]
        add_row(method, slug, "wavelet", pk.wavelet_edges(edge_candidates[j]), grid_kernels[i],
                edge=edge_candidates[j], selected_lambda=lams[i], selected_gamma=gammas[i])

    # improved heads, not the reference's: bins linspace(-b, b, 23) keep the negative filter
    # values, one pooled covariance (see domains/cosmology/README.md, "Why the wavelet heads lose")
    from domains.cosmology.diagnostics import PooledNearestCosmologyChi2, signed_edges

    add_row(METHODS[6][0], METHODS[6][1], "wavelet", signed_edges(edge_candidates[b_db5]), db5_kernels,
            head=PooledNearestCosmologyChi2(), edge=edge_candidates[b_db5], selected_lambda=math.nan,
            selected_gamma=math.nan)
    i_awd, j_awd = choice["awd"]
    add_row(METHODS[7][0], METHODS[7][1], "wavelet", signed_edges(edge_candidates[j_awd]), grid_kernels[i_awd],
            head=PooledNearestCosmologyChi2(), edge=edge_candidates[j_awd], selected_lambda=lams[i_awd],
            selected_gamma=gammas[i_awd])

    from awd.teacher import predict

    pred_teacher = predict(teacher, test.X, cfg["teacher"]["batch_size"])[:, col]
    preds["pred_teacher"] = pred_teacher
    rows.append({"method": "teacher", "rmse": rmse(y_test, pred_teacher), "rmse_se": boot(pred_teacher), **blank})

    i_sel, j_sel = choice["awd"]
    heads_dir = out_dir / HEADS_DIR
    write_csv(out_dir / "table.csv", pd.DataFrame(rows, columns=list(dict.fromkeys(k for r in rows for k in r))))
    write_csv(heads_dir / "predictions.csv", pd.DataFrame({
        "row": np.flatnonzero(ds.split == "test"), "cosmology": test.group,
        "realisation": test.extra.get("realisation", np.full(len(test.X), -1)),
        **{name: test.y[:, j] for j, name in enumerate(ds.target_names)}, **preds}))
    _write_selection(heads_dir / "selection.csv", db5_scores, scores, lams, gammas, edge_candidates, (i_sel, j_sel))
    selected = grid[i_sel]
    _save_selected_wavelet(out_dir / "wavelet.json", grid_h[i_sel], selected, edge_candidates[j_sel],
                           float(scores[i_sel, j_sel]))
    write_json(heads_dir / "grid.json", {
        "selected": i_sel, "selected_gamma0": None if choice["awd_gamma0"] is None else choice["awd_gamma0"][0],
        "edge_candidates": edge_candidates, "db5_val_rmse": db5_scores,
        "wavelets": [{"lam": lams[i], "gamma": gammas[i], "h": grid_h[i], "val_rmse": scores[i],
                      "kernels": grid_kernels[i]} for i in range(len(grid))]})
    _save_histograms(heads_dir / "histograms.npz", peaks["train"], ds.group[ds.indices("train")], {
        "height": ("height", pk.HEIGHT_EDGES, None), "laplace": ("laplace", pk.FILTER_EDGES, None),
        "roberts": ("roberts", pk.FILTER_EDGES, None),
        "db5": ("wavelet", pk.wavelet_edges(edge_candidates[b_db5]), db5_kernels),
        "awd": ("wavelet", pk.wavelet_edges(edge_candidates[j_sel]), grid_kernels[i_sel])})
    _save_attribution(heads_dir / "attribution.npz", teacher, test, grid_h[i_sel], selected, col,
                      hcfg["attribution_top_k"])
    curve = _learning_curve(features, peaks["train"].y, ds.group[ds.indices("train")], y_test, col, boot,
                            bcfg["seed"])
    write_csv(out_dir / "learning_curve.csv", curve)
    _plot_learning_curve(curve, out_dir / "learning_curve.png")
    summary = {r["method"]: {"rmse": float(r["rmse"]), "rmse_se": float(r["rmse_se"])} for r in rows}
    summary["selected"] = {"lam": float(lams[i_sel]), "gamma": float(gammas[i_sel]), "edge": edge_candidates[j_sel],
                           "val_rmse": float(scores[i_sel, j_sel])}
    return summary


def _learning_curve(features: dict, y_train: np.ndarray, groups: np.ndarray, y_test: np.ndarray, col: int,
                    boot, seed: int) -> pd.DataFrame:
    """Test RMSE (and its bootstrap standard error over the test maps) of the chi^2 head of
    every :data:`LEARNING_CURVE_METHODS` row, fitted on n training maps per cosmology: nested
    subsamples (the first n of one seeded permutation per cosmology), n in
    :data:`LEARNING_CURVE_SIZES` below the smallest cosmology's count, then all maps. The
    features (and the wavelet and edge of DB5 and AWD, chosen on val) are those of the table."""
    ids = np.unique(groups)
    counts = np.array([np.sum(groups == c) for c in ids])
    rng = np.random.default_rng(seed)
    order = [rng.permutation(np.flatnonzero(groups == c)) for c in ids]
    sizes = [n for n in LEARNING_CURVE_SIZES if 2 <= n < counts.min()] + [int(counts.max())]
    rows = []
    for n in sizes:
        sel = np.sort(np.concatenate([o[:n] for o in order]))
        for method, slug in LEARNING_CURVE_METHODS:
            if slug not in features:
                continue
            F = features[slug]
            pred = pk.NearestCosmologyChi2().fit(F["train"][sel], y_train[sel]).predict(F["test"])[:, col]
            rows.append({"method": method, "maps_per_cosmology": n, "all_maps": n == sizes[-1],
                         "n_train_maps": len(sel), "rmse": rmse(y_test, pred), "rmse_se": boot(pred)})
    return pd.DataFrame(rows, columns=["method", "maps_per_cosmology", "all_maps", "n_train_maps", "rmse",
                                       "rmse_se"])


def _plot_learning_curve(curve: pd.DataFrame, path: Path) -> None:
    """Test RMSE vs training maps per cosmology, one line per head, bootstrap error bars."""
    from matplotlib.figure import Figure

    from awd.figures import save_png

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for method, rows in curve.groupby("method", sort=False):
        ax.errorbar(rows["maps_per_cosmology"], rows["rmse"], yerr=rows["rmse_se"], marker="o", capsize=3,
                    label=method)
    ax.set_xscale("log")
    sizes = sorted(curve["maps_per_cosmology"].unique())
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("training maps per cosmology (count, log scale)")
    ax.set_ylabel(r"test RMSE of $\Omega_m$ (dimensionless)")
    ax.set_title(r"Peak-count heads ($\chi^2$ nearest cosmology): learning curve", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_png(fig, path)




def _write_selection(path: Path, db5_scores, scores, lams, gammas, edges, selected: tuple[int, int]) -> None:
    """Val RMSE of DB5 and of every grid wavelet at every candidate edge, one row each."""
    rows = [{"wavelet": "db5", "grid_index": -1, "lam": math.nan, "gamma": math.nan, "edge": b, "val_rmse": s,
             "selected": False} for b, s in zip(edges, db5_scores)]
    rows += [{"wavelet": "awd", "grid_index": i, "lam": lams[i], "gamma": gammas[i], "edge": b,
              "val_rmse": scores[i, j], "selected": (i, j) == selected}
             for i in range(len(lams)) for j, b in enumerate(edges)]
    write_csv(path, pd.DataFrame(rows))


def _save_selected_wavelet(path: Path, h: np.ndarray, record, edge: float, val_rmse: float) -> None:
    from awd.wavelet import save_wavelet

    meta = {"lam": float(_field(record, "lam")), "gamma": float(_field(record, "gamma")), "edge": edge,
            "val_rmse": val_rmse, "selection": "val RMSE of the chi^2 peak-count head, jointly over wavelet and edge"}
    save_wavelet(path, h, J=int(_field(record, "J")), mode=str(_field(record, "mode")), ndim=2, meta=meta)


def _save_histograms(path: Path, train: _SplitPeaks, groups: np.ndarray, methods: dict) -> None:
    """Per-cosmology mean and standard error of the peak histograms of the training maps."""
    ids = np.unique(groups)
    arrays: dict[str, np.ndarray] = {"cosmology_ids": ids,
                                     "cosmology_params": np.stack([train.y[groups == c][0] for c in ids]),
                                     "cosmology_counts": np.array([np.sum(groups == c) for c in ids])}
    for slug, (method, edges, kernels) in methods.items():
        F = train.features(method, edges, kernels)
        arrays[f"{slug}_edges"] = np.asarray(edges)
        arrays[f"{slug}_mean"] = np.stack([F[groups == c].mean(axis=0) for c in ids])
        arrays[f"{slug}_sem"] = np.stack([F[groups == c].std(axis=0, ddof=1) / np.sqrt(np.sum(groups == c))
                                          for c in ids])
        if kernels is not None:
            arrays[f"{slug}_kernels"] = np.asarray(kernels)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _save_attribution(path: Path, teacher, test: Dataset, h: np.ndarray, record, col: int, top_fraction: float) -> None:
    """One test map (the one nearest the median Omega_m), its reconstruction from the wavelet
    coefficients with the largest |TRIM attribution| and its input gradient (pixel attributions)."""
    from awd.transform import DWT2d, iter_coeffs
    from awd.trim import input_gradients, reconstruct, trim_attributions

    y = test.y[:, col]
    k = int(np.argmin(np.abs(y - np.median(y))))
    dtype = next(teacher.parameters()).dtype
    x = torch.as_tensor(test.X[k:k + 1], dtype=dtype)
    dwt = DWT2d(wave=h, J=int(_field(record, "J")), mode=str(_field(record, "mode")), dtype=dtype)
    dwt.h.requires_grad_(False)
    teacher.eval()
    with torch.no_grad():
        coeffs = dwt(x)
    attr = trim_attributions(teacher, dwt, x, col, "saliency", coeffs=coeffs, create_graph=False)
    flat_attr = torch.cat([a.detach().abs().reshape(-1) for a in iter_coeffs(attr)])
    n_keep = max(1, int(round(top_fraction * flat_attr.numel())))
    threshold = torch.topk(flat_attr, n_keep).values[-1]
    kept = [c * (a.detach().abs() >= threshold) for c, a in zip(iter_coeffs(coeffs), iter_coeffs(attr))]
    it = iter(kept)
    structured = [next(it) if torch.is_tensor(c) else tuple(next(it) for _ in c) for c in coeffs]
    with torch.no_grad():
        recon = reconstruct(dwt, structured, x.shape)
    grad = input_gradients(teacher, x, col, batch_size=1)[0]
    n_pix = max(1, int(round(top_fraction * grad.numel())))
    pix_threshold = torch.topk(grad.abs().reshape(-1), n_pix).values[-1]
    from awd.teacher import predict

    arrays = {"original": x[0].numpy().astype(np.float64), "reconstruction": recon[0].numpy().astype(np.float64),
              "pixel_gradient": grad.numpy().astype(np.float64),
              "top_pixels": (grad.abs() >= pix_threshold).numpy(),
              "n_coefficients_kept": np.int64(n_keep), "n_coefficients": np.int64(flat_attr.numel()),
              "params": test.y[k].astype(np.float64), "target_true": np.float64(y[k]),
              "target_pred": np.float64(predict(teacher, test.X[k:k + 1])[0, col]),
              "cosmology": np.int64(test.group[k])}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
