"""Peak-count heads: peaks, filters, kernels, histograms and predictors against hand computations
and independent re-implementations (numpy loops, scipy.ndimage, the reference's torch code)."""
import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from scipy import ndimage
from sklearn.base import clone
from sklearn.utils.estimator_checks import (check_estimator, check_get_params_invariance,
                                            check_no_attributes_set_in_init, check_parameters_default_constructible,
                                            check_set_params)

from domains.cosmology import peaks as pk


def slow_peaks(image: np.ndarray) -> list[tuple[int, int]]:
    """Strict 8-neighbour maxima on interior pixels, by explicit loops."""
    out = []
    H, W = image.shape
    for r in range(1, H - 1):
        for c in range(1, W - 1):
            nb = np.delete(image[r - 1:r + 2, c - 1:c + 2].ravel(), 4)
            if np.all(image[r, c] > nb):
                out.append((r, c))
    return out


def hand_map() -> np.ndarray:
    m = np.zeros((8, 9))
    m[2, 2] = 5.0          # isolated peak
    m[1, 6] = 3.0          # peak on the first interior row
    m[5, 5] = m[5, 6] = 4.0  # plateau: neither pixel is strictly greater than the other
    m[0, 3] = 9.0          # border maximum: never a peak
    m[6, 1] = 2.0
    m[7, 1] = 2.5          # (6, 1) has a larger neighbour on the border: not a peak
    m[4, 8] = 7.0          # border column
    return m


def test_find_peaks_hand_made_map():
    m = hand_map()
    mask = pk.find_peaks(m)
    assert mask.shape == (1, 6, 7)
    found = [(r + 1, c + 1) for _, r, c in zip(*np.nonzero(mask))]
    assert found == [(1, 6), (2, 2)]
    patches, index = pk.peak_patches(m[None])
    assert index.tolist() == [0, 0]
    assert patches[:, 1, 1].tolist() == [3.0, 5.0]
    np.testing.assert_array_equal(patches[1], m[1:4, 1:4])


def test_find_peaks_matches_loops_on_random_maps():
    rng = np.random.default_rng(3)
    maps = np.round(rng.normal(size=(5, 23, 19)), 1)  # rounding makes ties (plateaus) common
    patches, index = pk.peak_patches(maps, chunk_size=2)
    for i, image in enumerate(maps):
        expected = slow_peaks(image)
        assert len(expected) > 5
        got = patches[index == i]
        assert len(got) == len(expected)
        for p, (r, c) in zip(got, expected):
            np.testing.assert_array_equal(p, image[r - 1:r + 2, c - 1:c + 2])


def test_laplace_value_by_hand():
    patch = np.array([[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]])
    edges, corners = 2 + 4 + 5 + 7, 1 + 3 + 6 + 8
    expected = 10 / 3 * 9 - 2 / 3 * edges - 1 / 6 * corners
    assert pk.values_from_patches(patch[None], "laplace")[0, 0] == pytest.approx(expected, abs=1e-12)
    assert pk.LAPLACE_KERNEL.sum() == pytest.approx(0.0, abs=1e-15)


def test_roberts_value_by_hand():
    patch = np.array([[1.0, 2.0, 3.0], [4.0, 9.0, 5.0], [6.0, 7.0, 8.0]])
    # TL (1-9, 2-4), TR (2-5, 3-9), BL (4-7, 9-6), BR (9-8, 5-7)
    expected = np.sqrt(68) + np.sqrt(45) + np.sqrt(18) + np.sqrt(5)
    assert pk.roberts_cross(patch[None])[0] == pytest.approx(expected, abs=1e-12)


def reference_filtered_maps(image: np.ndarray) -> dict[str, np.ndarray]:
    """AWD's peak_counting.py filters (F.conv2d, valid), in float64."""
    ims = torch.as_tensor(image, dtype=torch.float64)[None, None]
    lap = torch.as_tensor(pk.LAPLACE_KERNEL)[None, None]
    rx = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)[None, None]
    ry = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)[None, None]
    rob = 0
    for sub in (ims[..., :-1, :-1], ims[..., :-1, 1:], ims[..., 1:, :-1], ims[..., 1:, 1:]):
        rob = rob + torch.sqrt(F.conv2d(sub, rx) ** 2 + F.conv2d(sub, ry) ** 2)
    return {"height": image[1:-1, 1:-1], "laplace": F.conv2d(ims, lap)[0, 0].numpy(), "roberts": rob[0, 0].numpy()}


def test_filters_match_reference_convolutions():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(40, 37)) * 0.02
    mask = pk.find_peaks(image)[0]
    ref = reference_filtered_maps(image)
    patches, _ = pk.peak_patches(image)
    for method in ("height", "laplace", "roberts"):
        np.testing.assert_allclose(pk.values_from_patches(patches, method)[:, 0], ref[method][mask], rtol=0, atol=1e-14)
    kernels = pk.extract_patches(*pywt.Wavelet("db5").filter_bank[2:])
    scipy_vals = np.stack([ndimage.correlate(image, k, mode="constant")[1:-1, 1:-1][mask] for k in kernels], 1)
    np.testing.assert_allclose(pk.values_from_patches(patches, "wavelet", kernels), scipy_vals, atol=1e-14)


def reference_extract_patches(h: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """eval_cosmology.extract_patches of the AWD repository, verbatim logic."""
    def small(f):
        fc = f - f.mean()
        var = np.array([torch.sum(fc[left:left + 3] ** 2) for left in range(len(f) - 3)])
        return f[np.argmax(var):np.argmax(var) + 3]

    hs, gs = small(h), small(g)
    ll = hs.unsqueeze(0) * hs.unsqueeze(1)
    lh = hs.unsqueeze(0) * gs.unsqueeze(1)
    hl = gs.unsqueeze(0) * hs.unsqueeze(1)
    hh = gs.unsqueeze(0) * gs.unsqueeze(1)
    return [ll, lh - lh.mean(), hl - hl.mean(), hh - hh.mean()]


def test_extract_patches_db5_matches_notes_and_reference():
    w = pywt.Wavelet("db5")
    h, g = np.array(w.rec_lo), np.array(w.rec_hi)
    kernels = pk.extract_patches(h, g)
    # the notes: h[0:3] = (0.1601, 0.6038, 0.7243), g[6:9] = (0.1384, -0.7243, 0.6038)
    h3, g3 = np.array([0.1601, 0.6038, 0.7243]), np.array([0.1384, -0.7243, 0.6038])
    np.testing.assert_allclose(kernels[0], np.outer(h3, h3), atol=2e-4)
    np.testing.assert_allclose(np.diag(kernels[0]), h3 ** 2, atol=2e-4)
    lh = np.outer(g3, h3)
    np.testing.assert_allclose(kernels[1], lh - lh.mean(), atol=2e-4)
    hl = np.outer(h3, g3)
    np.testing.assert_allclose(kernels[2], hl - hl.mean(), atol=2e-4)
    np.testing.assert_allclose(kernels[1:].sum(axis=(1, 2)), 0.0, atol=1e-15)
    ref = reference_extract_patches(torch.as_tensor(h), torch.as_tensor(g))
    np.testing.assert_allclose(kernels, torch.stack(ref).numpy(), atol=1e-15)
    # the skipped last window g[7:10] has more centred energy than the chosen g[6:9]
    gc = g - g.mean()
    assert np.sum(gc[7:10] ** 2) > np.sum(gc[6:9] ** 2)


def test_extract_patches_random_filters_match_reference():
    rng = np.random.default_rng(5)
    for _ in range(5):
        h = rng.normal(size=10)
        g = h[::-1] * np.where(np.arange(10) % 2, -1.0, 1.0)
        ref = reference_extract_patches(torch.as_tensor(h), torch.as_tensor(g))
        np.testing.assert_allclose(pk.extract_patches(h, g), torch.stack(ref).numpy(), atol=1e-14)


def test_batched_histogram_matches_numpy():
    rng = np.random.default_rng(1)
    edges = pk.HEIGHT_EDGES
    values = np.concatenate([rng.uniform(-0.05, 0.21, 3000), edges, [edges[-1]] * 3, [-0.2, 0.5]])
    index = rng.integers(0, 7, len(values))
    hist = pk.batched_histogram(values, index, 8, edges)
    assert hist.shape == (8, 22)
    for i in range(8):
        np.testing.assert_array_equal(hist[i], np.histogram(values[index == i], edges)[0])
    assert hist[7].sum() == 0


def test_peak_histogram_transformer():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(4, 30, 30)) * 0.03
    est = pk.PeakHistogram(method="height").fit(maps)
    feats = est.transform(maps)
    assert feats.shape == (4, 22)
    for i, image in enumerate(maps):
        heights = [image[r, c] for r, c in slow_peaks(image)]
        np.testing.assert_array_equal(feats[i], np.histogram(heights, pk.HEIGHT_EDGES)[0])
    kernels = pk.extract_patches(*pywt.Wavelet("db5").filter_bank[2:])
    est = pk.PeakHistogram(method="wavelet", kernels=kernels, edges=pk.wavelet_edges(0.03)).fit(maps)
    assert est.transform(maps).shape == (4, 88)
    assert est.get_feature_names_out()[[0, 22, 87]].tolist() == ["LL_bin00", "LH_bin00", "HH_bin21"]
    with pytest.raises(ValueError, match="needs kernels"):
        pk.PeakHistogram(method="wavelet").fit(maps).transform(maps)


def gaussian_histograms(rng, means, n_per_class, sigma):
    X = np.concatenate([rng.normal(m, sigma, size=(n_per_class, len(m))) for m in means])
    labels = np.repeat(np.arange(len(means)), n_per_class)
    return X, labels


def test_chi2_predictor_recovers_classes_exactly():
    rng = np.random.default_rng(4)
    means = rng.uniform(0, 50, size=(5, 6))
    params = np.array([[0.1, 0.2, 2.0], [0.2, 0.3, 1.9], [0.0, 0.25, 2.1], [0.3, 0.35, 1.8], [0.1, 0.4, 2.3]])
    X, labels = gaussian_histograms(rng, means, 40, 1.0)
    Xt, lt = gaussian_histograms(rng, means, 30, 1.0)
    model = pk.NearestCosmologyChi2().fit(X, params[labels])
    np.testing.assert_array_equal(model.predict(Xt), params[lt])
    # 1-D targets give 1-D predictions on the same grid
    one = pk.NearestCosmologyChi2().fit(X, params[labels, 1])
    np.testing.assert_array_equal(one.predict(Xt), params[lt, 1])
    # chi^2 against an explicit per-cosmology loop with pinv(cov)
    order = np.lexsort(params.T[::-1])  # the model sorts cosmologies by their parameter rows
    chi = model.chi2(Xt[:3])
    for k, c in enumerate(order):
        d = Xt[:3] - X[labels == c].mean(0)
        prec = np.linalg.pinv(np.cov(X[labels == c].T))
        np.testing.assert_allclose(chi[:, k], [r @ prec @ r for r in d], rtol=1e-10)


def test_chi2_predictor_singular_covariance_and_errors():
    rng = np.random.default_rng(6)
    means = np.array([[5.0, 0.0, 1.0], [9.0, 0.0, 4.0]])
    X, labels = gaussian_histograms(rng, means, 20, 0.5)
    X[:, 1] = 0.0  # an always-empty histogram bin: singular covariance
    model = pk.NearestCosmologyChi2().fit(X, labels.astype(float))
    np.testing.assert_array_equal(model.predict(X), labels)
    with pytest.raises(ValueError, match="only one sample"):
        pk.NearestCosmologyChi2().fit(X[:3], np.array([0.0, 0.0, 1.0]))


def test_knn_head_on_standardised_histograms():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(30, 4))
    y = rng.normal(size=30)
    np.testing.assert_allclose(pk.make_knn_head(1).fit(X, y).predict(X), y)
    pred = pk.make_knn_head(30).fit(X, y).predict(X[:2])
    np.testing.assert_allclose(pred, y.mean())


# Checks that draw continuous random targets, i.e. one "cosmology" per row, which the chi^2
# head cannot fit (it needs >= 2 rows per cosmology to estimate a covariance).
CONTINUOUS_TARGET_CHECKS = {
    name: "continuous random targets give one row per cosmology"
    for name in ("check_n_features_in_after_fitting", "check_regressors_train", "check_regressor_data_not_an_array",
                 "check_regressor_multioutput", "check_regressors_no_decision_function", "check_fit_idempotent",
                 "check_fit_check_is_fitted", "check_n_features_in")
}


def test_sklearn_compatibility():
    check_estimator(pk.NearestCosmologyChi2(), expected_failed_checks=CONTINUOUS_TARGET_CHECKS)
    for est in (pk.PeakHistogram(method="roberts", edges=pk.FILTER_EDGES), pk.NearestCosmologyChi2(rcond=1e-10)):
        name = type(est).__name__
        check_parameters_default_constructible(name, est)
        check_no_attributes_set_in_init(name, est)
        check_get_params_invariance(name, est)
        check_set_params(name, est)
        twin = clone(est)
        assert twin is not est and twin.get_params().keys() == est.get_params().keys()
    assert clone(pk.PeakHistogram(method="laplace")).set_params(method="height").method == "height"


def lognormal_maps(n: int, size: int = 40, seed: int = 0) -> np.ndarray:
    """Skewed, smooth random maps (many peaks, a few thousand in all)."""
    rng = np.random.default_rng(seed)
    g = ndimage.gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 1.2, 1.2), mode="wrap")
    return (0.03 * (np.exp(g / g.std()) - np.exp(0.5))).astype(np.float32)


def test_chunked_features_equal_whole_array_histograms():
    maps = lognormal_maps(23)
    patches, index = pk.peak_patches(maps)
    blocks = [(s, maps[s:s + 5]) for s in range(0, len(maps), 5)]
    chunks = pk.peak_patch_chunks(blocks, chunk_size=2)
    assert len(chunks) == 5 and all(i.dtype == np.int32 for _, i in chunks)
    np.testing.assert_array_equal(np.concatenate([p for p, _ in chunks]), patches)
    np.testing.assert_array_equal(np.concatenate([i for _, i in chunks]), index)
    kernels = pk.extract_patches(pywt.Wavelet("db5").rec_lo, pywt.Wavelet("db5").rec_hi)
    for method, edges_list, k in (("height", [pk.HEIGHT_EDGES], None), ("laplace", [pk.FILTER_EDGES], None),
                                  ("roberts", [pk.FILTER_EDGES], None),
                                  ("wavelet", [pk.wavelet_edges(b) for b in (0.01, 0.02, 0.03)], kernels)):
        got = pk.chunked_features(chunks, len(maps), method, edges_list, k)
        values = pk.values_from_patches(patches, method, k)
        for F_chunked, edges in zip(got, edges_list):
            expected = pk.histogram_features(values, index, len(maps), edges)
            assert expected.sum() > 0
            np.testing.assert_array_equal(F_chunked, expected)
    empty = pk.chunked_features([], 3, "wavelet", [pk.wavelet_edges(0.02)], kernels)[0]
    assert empty.shape == (3, 88) and not empty.any()


def _heads_inputs(tmp_path, chunk_size: int):
    from awd.domain import Dataset

    n_cosmo, per = 3, 16
    maps = np.concatenate([lognormal_maps(per, 32, seed=c) * (1 + 0.3 * c) for c in range(n_cosmo)])
    y = np.repeat([[0.0, 0.25 + 0.05 * c, 2.1] for c in range(n_cosmo)], per, axis=0)
    split = np.tile(["train"] * 12 + ["val"] * 2 + ["test"] * 2, n_cosmo)
    Dataset(maps, y, ["m_nu", "omega_m", "a_s"], split, np.repeat(np.arange(n_cosmo), per),
            {"realisation": np.tile(np.arange(per), n_cosmo)}).save(tmp_path / "dataset.npz")
    cfg = {"heads": {"edge_candidates": [0.02, 0.03], "knn_neighbors": 3, "chunk_size": chunk_size,
                     "attribution_top_k": 0.05}, "bootstrap": {"n": 20, "seed": 1}, "teacher": {"batch_size": 8}}
    grid = [{"h": np.asarray(pywt.Wavelet(w).rec_lo), "lam": 0.005, "gamma": g, "J": 1, "mode": "zero"}
            for w, g in (("db5", 0.0), ("sym5", 0.01))]
    return Dataset.load(tmp_path / "dataset.npz"), cfg, grid


def test_heads_stream_maps_in_chunks_and_write_the_learning_curve(tmp_path):
    import pandas as pd

    from awd.domain import get_domain
    from domains.cosmology.domain import LEARNING_CURVE_METHODS
    from domains.cosmology.resnet import ResNet

    dom = get_domain("cosmology", "domains.cosmology")
    teacher = ResNet(width=4, blocks=(1,), seed=0).eval()
    tables = {}
    for chunk in (5, 512):  # chunked streaming gives the same numbers as one block
        ds, cfg, grid = _heads_inputs(tmp_path / f"c{chunk}", chunk)
        assert isinstance(ds.X, np.memmap)
        dom.fit_heads(cfg, ds, grid, teacher, tmp_path / f"c{chunk}", threads=1)
        tables[chunk] = (tmp_path / f"c{chunk}" / "table.csv").read_bytes()
    assert tables[5] == tables[512]
    out = tmp_path / "c5"
    table = pd.read_csv(out / "table.csv").set_index("method")
    curve = pd.read_csv(out / "learning_curve.csv")
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curve["maps_per_cosmology"].unique().tolist() == [10, 12]  # 10 < 12 training maps, then all
    assert curve.groupby("maps_per_cosmology")["n_train_maps"].first().tolist() == [30, 36]
    assert curve["method"].unique().tolist() == [m for m, _ in LEARNING_CURVE_METHODS]
    assert np.all(curve["rmse_se"] > 0)
    full = curve[curve["all_maps"]].set_index("method")
    for method, _ in LEARNING_CURVE_METHODS:  # all training maps: the table's fit
        assert full.loc[method, "rmse"] == pytest.approx(table.loc[method, "rmse"], rel=1e-12)
    # a subsample point equals an independent chi^2 fit on the same maps (first 10 of the seeded permutations)
    ds, cfg, _ = _heads_inputs(tmp_path / "again", 5)
    rows = ds.indices("train")
    groups = ds.group[rows]
    rng = np.random.default_rng(cfg["bootstrap"]["seed"])
    sel = np.sort(np.concatenate([rng.permutation(np.flatnonzero(groups == c))[:10] for c in np.unique(groups)]))
    hist = pk.PeakHistogram("height").fit(ds.X[rows])
    y = ds.y.astype(np.float64)
    model = pk.NearestCosmologyChi2().fit(hist.transform(ds.X[rows][sel]), y[rows][sel])
    test = ds.indices("test")
    pred = model.predict(hist.transform(ds.X[test]))[:, 1]
    expected = float(np.sqrt(np.mean((y[test, 1] - pred) ** 2)))
    got = curve[(curve["method"] == "peak height") & (curve["maps_per_cosmology"] == 10)]["rmse"].item()
    assert got == pytest.approx(expected, rel=1e-12)
