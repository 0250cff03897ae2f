"""Every cosmology figure is legible (awd.figures.label_problems: labelled axes with units,
non-overlapping ticks, titles clear of ticks, labelled colour bars), drawn from synthetic heads
outputs of the structure ``fit_heads`` writes: 10 cosmologies, a 2 x 3 (lambda, gamma) grid."""
import json

import numpy as np
import pandas as pd
import pywt
import pytest

from awd.domain import Dataset
from awd.figures import capture_figures, label_problems
from awd.transform import qmf_np
from domains.cosmology import figures as cf
from domains.cosmology import peaks as pk
from domains.cosmology.domain import HEADS_DIR, METHODS
from domains.cosmology.theory import MASSIVENUS_COSMOLOGIES

N_COSMO = 10


def _heads_outputs(results, n_cosmo=N_COSMO, npix=64, pixel_arcmin=0.8203125):
    """grid.json, histograms.npz, predictions.csv, table.csv, attribution.npz and the dataset meta."""
    rng = np.random.default_rng(0)
    heads = results / HEADS_DIR
    heads.mkdir(parents=True)
    db5 = np.asarray(pywt.Wavelet("db5").rec_lo)
    wavelets = []
    for lam in (0.005, 0.02):
        for gamma in (0.0, 0.00368, 0.0138):
            h = db5 + 0.02 * rng.standard_normal(db5.size)
            h *= np.sqrt(2) / h.sum()
            wavelets.append({"lam": lam, "gamma": gamma, "h": h.tolist(), "val_rmse": list(0.02 + 0.01 * rng.random(2)),
                             "kernels": pk.extract_patches(h, qmf_np(h)).tolist()})
    (heads / "grid.json").write_text(json.dumps({"selected": 4, "selected_gamma0": 3, "edge_candidates": [0.02, 0.03],
                                                 "db5_val_rmse": [0.031, 0.029], "wavelets": wavelets}))
    params = np.asarray([[c["m_nu"], c["omega_m"], c["a_s"]] for c in MASSIVENUS_COSMOLOGIES[:n_cosmo]])
    arrays = {"cosmology_ids": np.arange(n_cosmo), "cosmology_params": params,
              "cosmology_counts": np.full(n_cosmo, 40)}
    for slug, edges, n_k in [("height", pk.HEIGHT_EDGES, 1), ("laplace", pk.FILTER_EDGES, 1),
                             ("roberts", pk.FILTER_EDGES, 1), ("db5", pk.wavelet_edges(0.03), 4),
                             ("awd", pk.wavelet_edges(0.02), 4)]:
        arrays[f"{slug}_edges"] = edges
        arrays[f"{slug}_mean"] = 50 * rng.random((n_cosmo, 22 * n_k))
        arrays[f"{slug}_sem"] = rng.random((n_cosmo, 22 * n_k))
    np.savez(heads / "histograms.npz", **arrays)
    truth = np.repeat(params[:, 1], 5)
    pd.DataFrame({"omega_m": truth, **{f"pred_{s}": truth + 0.01 * rng.standard_normal(truth.size)
                                       for _, s in METHODS}}).to_csv(heads / "predictions.csv", index=False)
    pd.DataFrame({"method": [m for m, _ in METHODS], "rmse": 0.01 + 0.01 * rng.random(len(METHODS))}).to_csv(
        results / "table.csv", index=False)
    kappa = 0.02 * rng.standard_normal((npix, npix))
    grad = rng.standard_normal((npix, npix))
    np.savez(heads / "attribution.npz", original=kappa, reconstruction=0.5 * kappa, pixel_gradient=grad,
             top_pixels=np.abs(grad) > 2, n_coefficients_kept=np.int64(40), n_coefficients=np.int64(npix * npix),
             params=params[0], target_true=np.float64(0.3), target_pred=np.float64(0.31), cosmology=np.int64(0))
    Dataset(X=np.zeros((2, 4, 4), np.float32), y=np.zeros((2, 3)), target_names=["m_nu", "omega_m", "a_s"],
            split=np.asarray(["train", "test"]), group=np.zeros(2, np.int64), extra={},
            meta={"pixel_arcmin": pixel_arcmin}).save(results / cf.DATASET_FILE)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    results = tmp_path_factory.mktemp("results")
    _heads_outputs(results)
    with capture_figures() as figs:
        paths = cf.draw_all({}, results, results / "figures")
    return {p.name: fig for p, fig in figs}, paths


def test_every_figure_is_written(drawn):
    figs, paths = drawn
    assert sorted(p.name for p in paths) == sorted(figs) == sorted(
        ["wavelet_grid.png", "selection.png", "selected_wavelet.png", "peak_histograms.png",
         "predicted_vs_true.png", "attribution_map.png"])
    assert all(p.stat().st_size > 10_000 for p in paths)


@pytest.mark.parametrize("name", ["wavelet_grid.png", "selection.png", "selected_wavelet.png", "peak_histograms.png",
                                  "predicted_vs_true.png", "attribution_map.png"])
def test_figure_is_legible(drawn, name):
    assert label_problems(drawn[0][name]) == []


def test_peak_histograms_show_every_cosmology_with_10e9_as(drawn):
    fig = drawn[0]["peak_histograms.png"]
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == N_COSMO and legend.get_title().get_text() == f"all {N_COSMO} cosmologies"
    assert all("$10^9A_s$" in t and "(40 training maps)" in t for t in texts)
    height = fig.axes[0]
    assert height.get_xlabel() == "peak height $\\kappa$" and len(height.lines) == N_COSMO


def test_wavelet_grid_draws_db5_above_the_learned_curves(drawn):
    for ax in drawn[0]["wavelet_grid.png"].axes:
        if ax.lines:
            learned, db5 = ax.lines
            assert db5.get_linestyle() == "--" and db5.get_zorder() > learned.get_zorder()


def test_attribution_axes_are_angular(drawn):
    fig = drawn[0]["attribution_map.png"]
    maps = [ax for ax in fig.axes if ax.images and getattr(ax, "_colorbar", None) is None]
    assert len(maps) == 4 and all(ax.get_xlabel() == "x (arcmin)" for ax in maps)
    assert maps[0].images[0].get_extent() == pytest.approx([0, 64 * 0.8203125, 0, 64 * 0.8203125])


def test_many_cosmologies_are_spread_and_said_so(tmp_path):
    _heads_outputs(tmp_path, n_cosmo=30)
    with capture_figures() as figs:
        cf.peak_histograms(tmp_path / HEADS_DIR / "histograms.npz", tmp_path / "h.png")
    fig = figs[0][1]
    legend = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
    assert legend.get_title().get_text().startswith(f"{cf.MAX_HIST_COSMOLOGIES} of 30 cosmologies")
    assert label_problems(fig) == []
