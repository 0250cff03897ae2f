"""The cosmology teacher (ResNet) and the Domain hooks end to end on a tiny mock tree."""
import numpy as np
import pandas as pd
import pytest
import pywt
import torch

from awd.config import validate
from awd.distill import DistillResult
from awd.domain import get_domain
from awd.io import InputError
from awd.stats import rmse
from awd.teacher import TeacherConfig, fit_teacher, predict
from awd.trim import is_piecewise_linear
from domains.cosmology import peaks as pk
from domains.cosmology.domain import METHODS
from domains.cosmology.resnet import ResNet


def test_full_resnet18_has_torchvision_parameter_count():
    # torchvision resnet18: 11,689,512 parameters with a 3-channel 7x7 conv1 and 1000 outputs
    expected = 11_689_512 - 64 * 3 * 49 + 64 * 1 * 49 - (512 * 1000 + 1000) + (512 * 3 + 3)
    assert sum(p.numel() for p in ResNet().parameters()) == expected


@pytest.mark.parametrize("stem,size", [("resnet", 32), ("compact", 16)])
def test_resnet_shapes_and_channel_axis(stem, size):
    model = ResNet(width=4, blocks=(1, 2, 1), stem=stem).eval()
    x = torch.randn(5, size, size)
    out = model(x)
    assert out.shape == (5, 3)
    torch.testing.assert_close(model(x[:, None]), out)
    with pytest.raises(ValueError, match="expected maps"):
        model(torch.randn(2, 3, size, size))


def test_resnet_init_is_deterministic_and_independent_of_global_rng():
    torch.manual_seed(123)
    a = ResNet(width=4, seed=7)
    torch.manual_seed(999)
    b = ResNet(width=4, seed=7)
    c = ResNet(width=4, seed=8)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_resnet_is_piecewise_linear_in_eval_mode():
    model = ResNet(width=4, blocks=(1, 1))
    assert not is_piecewise_linear(model.train())
    assert is_piecewise_linear(model.eval())
    # the Hessian-vector product of the Omega_m output vanishes in eval mode (not with batch statistics)
    torch.manual_seed(0)
    x, d = torch.randn(4, 32, 32, dtype=torch.float64), torch.randn(4, 32, 32, dtype=torch.float64)
    model = model.double()

    def hvp(m):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m(xr)[:, 1].sum(), xr, create_graph=True)
        if not g.requires_grad:
            return torch.zeros_like(x)
        (hv,) = torch.autograd.grad((g * d).sum(), xr, allow_unused=True)
        return torch.zeros_like(x) if hv is None else hv

    assert hvp(model.eval()).abs().max() == 0
    assert hvp(model.train()).abs().max() > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-cosmology mock tree ingested into a Dataset, with its config."""
    dom = get_domain("cosmology", "domains.cosmology")
    cfg = validate({"mock": {"cosmologies": [0, 3, 2], "n_maps": 12, "npix_generate": 64, "npix_out": 32,
                             "side_deg": 0.4375},
                    "data": {"target_size": 32, "split": [0.5, 0.25, 0.25]},
                    "model": {"width": 4, "blocks": [1, 1]},
                    "teacher": {"epochs": 1, "batch_size": 6},
                    "distill": {"J": 1},
                    "heads": {"edge_candidates": [0.02, 0.03], "knn_neighbors": 3, "attribution_top_k": 0.05},
                    "bootstrap": {"n": 50}}, dom.schema_path, where="cosmology")
    root = tmp_path_factory.mktemp("cosmo")
    dom.simulate(cfg, root / "raw")
    ds = dom.ingest(cfg, root / "raw", root / "data")
    return dom, cfg, root, ds


def test_ingest_dataset(tiny):
    dom, cfg, root, ds = tiny
    assert ds.X.shape == (36, 32, 32) and ds.X.dtype == np.float32
    assert ds.target_names == ["m_nu", "omega_m", "a_s"]
    assert sorted(np.unique(ds.group).tolist()) == [0, 1, 2]
    assert {s: int((ds.split == s).sum()) for s in ("train", "val", "test")} == {"train": 18, "val": 9, "test": 9}
    # every cosmology has the same realisations in each split
    for s in ("train", "val", "test"):
        real = [sorted(ds.extra["realisation"][(ds.split == s) & (ds.group == g)]) for g in range(3)]
        assert real[0] == real[1] == real[2]
    # the parameters come from the folder names of the requested MassiveNuS rows
    from domains.cosmology.theory import MASSIVENUS_COSMOLOGIES

    expected = sorted((c["m_nu"], c["omega_m"], c["a_s"]) for c in (MASSIVENUS_COSMOLOGIES[i] for i in (0, 3, 2)))
    np.testing.assert_allclose(np.unique(ds.y, axis=0), expected, rtol=1e-6)
    table = pd.read_csv(root / "data" / "maps.csv")
    assert len(table) == 36 and set(table["split"]) == {"train", "val", "test"}
    assert ds.meta["pixel_arcmin"] == pytest.approx(0.4375 * 60 / 32)


def test_ingest_rejects_an_empty_split(tiny, tmp_path):
    dom, cfg, root, _ = tiny
    bad = {**cfg, "data": {**cfg["data"], "split": [1.0, 0.0, 0.0]}}
    with pytest.raises(InputError, match="'val' split is empty"):
        dom.ingest(bad, root / "raw", tmp_path)


def test_heads_and_figures_end_to_end(tiny, tmp_path):
    dom, cfg, root, ds = tiny
    core = dom.build_teacher(cfg, ds)
    assert isinstance(core, ResNet) and core.width == 4
    teacher, _ = fit_teacher(core, ds, TeacherConfig.from_dict(cfg["teacher"]))
    h_db5 = np.asarray(pywt.Wavelet("db5").rec_lo)
    h_other = np.asarray(pywt.Wavelet("sym5").rec_lo)
    grid = [DistillResult.from_dict({"h": h_db5.tolist(), "lam": 0.005, "gamma": 0.0, "J": 1, "mode": "zero",
                                     "ndim": 2}),
            {"h": h_other, "lam": 0.005, "gamma": 0.01, "J": 1, "mode": "zero"}]
    summary = dom.fit_heads(cfg, ds, grid, teacher, tmp_path, threads=1)

    table = pd.read_csv(tmp_path / "table.csv")
    assert table["method"].tolist() == [m for m, _ in METHODS]
    for col in ("rmse", "rmse_se", "rmse_knn", "edge", "selected_lambda", "selected_gamma", "val_rmse"):
        assert col in table.columns
    assert np.all(table["rmse"] > 0) and np.all(table["rmse_se"] > 0)
    rows = table.set_index("method")
    assert rows.loc["AWD without interpretation loss", "selected_gamma"] == 0.0
    assert rows.loc["DB5", "edge"] in (0.02, 0.03)

    # the peak-height row equals an independent fit of the same pipeline
    train, test = ds.subset("train"), ds.subset("test")
    feats = pk.PeakHistogram(method="height").fit(train.X)
    model = pk.NearestCosmologyChi2().fit(feats.transform(train.X), train.y)
    expected = rmse(test.y[:, 1], model.predict(feats.transform(test.X))[:, 1])
    assert rows.loc["peak height", "rmse"] == pytest.approx(expected, rel=1e-12)
    assert rows.loc["teacher", "rmse"] == pytest.approx(rmse(test.y[:, 1], predict(teacher, test.X)[:, 1]), rel=1e-6)

    # joint selection over (wavelet, edge) on val
    sel = pd.read_csv(tmp_path / "heads" / "selection.csv")
    awd = sel[sel["wavelet"] == "awd"]
    best = awd.loc[awd["val_rmse"].idxmin()]
    assert bool(best["selected"]) and awd["selected"].sum() == 1
    assert rows.loc["AWD", "selected_gamma"] == best["gamma"] and rows.loc["AWD", "edge"] == best["edge"]
    assert rows.loc["AWD", "val_rmse"] == pytest.approx(best["val_rmse"])
    assert summary["selected"]["gamma"] == best["gamma"]

    from awd.wavelet import load_wavelet

    loaded = load_wavelet(tmp_path / "wavelet.json")
    np.testing.assert_array_equal(loaded.h, [h_db5, h_other][int(best["grid_index"])])
    assert (loaded.J, loaded.mode, loaded.ndim) == (1, "zero", 2)
    assert loaded.meta["gamma"] == best["gamma"] and loaded.meta["edge"] == best["edge"]

    pred = pd.read_csv(tmp_path / "heads" / "predictions.csv")
    assert len(pred) == 9 and {"omega_m", "pred_awd", "knn_awd", "pred_teacher"} <= set(pred.columns)
    assert set(pred["pred_height"]) <= set(np.unique(train.y[:, 1]))

    paths = dom.figures(cfg, tmp_path, root / "raw", tmp_path / "figures")
    assert len(paths) == 6
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
