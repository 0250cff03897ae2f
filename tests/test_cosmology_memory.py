"""Bounded memory for the cosmology stages: index views of X instead of copies per split, X
streamed into dataset.npz, maps ingested through a scratch memory map.

Every memory-saving path is checked for exact equality with the in-memory (copying) computation
it replaces: the teacher against a copy of the copying training loop, the distiller fed views
against the distiller fed copies, the streamed file against ``np.savez``.
"""
import zipfile

import numpy as np
import pytest
import torch

import awd.domain as domain_mod
import awd.teacher as teacher_mod
from awd.distill import DistillConfig, distill_job
from awd.domain import Dataset, get_domain
from awd.teacher import StandardizedTeacher, TeacherConfig, fit_teacher, predict
from domains.cosmology.resnet import ResNet


def _dataset(n: int = 45, side: int = 16, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = (0.02 * rng.standard_normal((n, side, side)) + 0.001 * np.arange(n)[:, None, None]).astype(np.float32)
    y = rng.normal(size=(n, 3)).astype(np.float32) * [0.1, 0.05, 0.3] + [0.1, 0.3, 2.0]
    split = np.array(["train", "train", "val", "train", "test"] * n)[:n]
    return Dataset(X, y, ["m_nu", "omega_m", "a_s"], split, np.arange(n) % 3, {"realisation": np.arange(n)},
                   {"source": "test"})


@pytest.fixture
def mapped(tmp_path):
    """The dataset in memory and as the stages read it (X memory-mapped inside dataset.npz)."""
    ds = _dataset()
    ds.save(tmp_path / "dataset.npz")
    loaded = Dataset.load(tmp_path / "dataset.npz")
    assert isinstance(loaded.X, np.memmap)
    return ds, loaded


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_save_streams_x_into_the_members_np_savez_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(domain_mod, "SAVE_CHUNK_BYTES", 3 * 16 * 16 * 4)  # X in 15 chunks of 3 maps
    ds = _dataset()
    reference = tmp_path / "reference.npz"
    np.savez(reference, X=ds.X, y=ds.y, split=ds.split, group=ds.group,
             target_names=np.asarray(ds.target_names, dtype="U64"),
             meta=np.asarray('{"source": "test"}'), extra__realisation=ds.extra["realisation"])
    ds.save(tmp_path / "in_memory.npz")
    assert _members(tmp_path / "in_memory.npz") == _members(reference)
    Dataset.load(tmp_path / "in_memory.npz").save(tmp_path / "from_map.npz")  # X streamed from a memory map
    assert _members(tmp_path / "from_map.npz") == _members(reference)
    with zipfile.ZipFile(tmp_path / "from_map.npz") as zf:
        assert zf.getinfo("X.npy").compress_type == zipfile.ZIP_STORED  # still memory-mappable


def test_rows_view_reads_exactly_the_rows_asked(mapped, monkeypatch):
    ds, loaded = mapped
    monkeypatch.setattr(domain_mod, "SAVE_CHUNK_BYTES", 4 * 16 * 16 * 4)
    view = loaded.view("train")
    rows = np.flatnonzero(ds.split == "train")
    assert len(view) == len(rows) == 27 and view.shape == (27, 16, 16) and view.dtype == np.float32
    positions = np.array([5, 0, 26, 3, 3])  # unsorted, repeated
    for got, want in [(view[positions], ds.X[rows[positions]]), (view[2:9], ds.X[rows[2:9]]),
                      (view[4], ds.X[rows[4]]), (np.asarray(view), ds.X[rows]),
                      (np.asarray(view.take([7, 1])), ds.X[rows[[7, 1]]])]:
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, want)
    assert sum(len(b) for b in view.chunks()) == 27 and max(len(b) for b in view.chunks()) == 4


def _core(seed: int = 0) -> ResNet:
    return ResNet(width=4, blocks=(1, 1), n_outputs=3, stem="compact", seed=seed, augment=True)


def _fit_copying(core, ds: Dataset, cfg: TeacherConfig):
    """The teacher's training loop as it was before the index views: the train and val splits
    copied whole, batches indexed from the in-memory tensor (no checkpoint)."""
    train = ds.subset("train")
    val = ds.subset("val")
    model = StandardizedTeacher(core, ds.y.shape[1])
    model.x_shift.fill_(float(train.X.mean()))
    model.x_scale.fill_(float(train.X.std()) or 1.0)
    y_scale = train.y.std(axis=0)
    model.y_shift.copy_(torch.as_tensor(train.y.mean(axis=0)))
    model.y_scale.copy_(torch.as_tensor(np.where(y_scale > 0, y_scale, 1.0)))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    X, Y = torch.as_tensor(train.X), torch.as_tensor(train.y)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(X), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(X), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2:
                continue
            loss = torch.nn.functional.mse_loss(model.standardized(X[idx]), (Y[idx] - model.y_shift) / model.y_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        model.eval()
        pred = torch.as_tensor(predict(model, val.X, cfg.batch_size), dtype=torch.float32)
        val_loss = float(torch.nn.functional.mse_loss((pred - model.y_shift) / model.y_scale,
                                                      (torch.as_tensor(val.y) - model.y_shift) / model.y_scale))
        history.append({"epoch": epoch + 1, "train_loss": total / count, "val_loss": val_loss})
    model.eval()
    return model, history


def _assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_teacher_on_index_views_equals_the_copying_path(mapped):
    ds, loaded = mapped
    cfg = TeacherConfig(epochs=2, batch_size=13, lr=1e-3, seed=3)  # 27 train maps: batches 13, 13, 1 (skipped)
    torch.manual_seed(0)
    reference, ref_history = _fit_copying(_core(), ds, cfg)
    torch.manual_seed(0)
    model, history = fit_teacher(_core(), loaded, cfg)
    assert history == ref_history
    _assert_same_model(model, reference)
    np.testing.assert_array_equal(predict(model, loaded.view("test"), 4), predict(reference, ds.subset("test").X, 4))


def test_teacher_max_train_and_max_val_train_on_seeded_subsets(mapped):
    ds, loaded = mapped
    cfg = TeacherConfig(epochs=2, batch_size=5, lr=1e-3, seed=7, max_train=12, max_val=4)
    train, val = np.flatnonzero(ds.split == "train"), np.flatnonzero(ds.split == "val")
    keep_train = train[np.sort(np.random.default_rng(7).choice(len(train), 12, replace=False))]
    keep_val = val[np.sort(np.random.default_rng(7).choice(len(val), 4, replace=False))]
    keep = np.concatenate([keep_train, keep_val])
    small = Dataset(ds.X[keep], ds.y[keep], ds.target_names, ds.split[keep], ds.group[keep])
    torch.manual_seed(0)
    reference, ref_history = _fit_copying(_core(), small, TeacherConfig(epochs=2, batch_size=5, lr=1e-3, seed=7))
    torch.manual_seed(0)
    model, history = fit_teacher(_core(), loaded, cfg)
    assert float(model.x_shift) == float(ds.X[keep_train].mean())
    assert history == ref_history
    _assert_same_model(model, reference)
    # caps at or above the split size are the whole split
    torch.manual_seed(0)
    full, full_history = fit_teacher(_core(), loaded, TeacherConfig(epochs=1, batch_size=5, seed=7))
    torch.manual_seed(0)
    capped, capped_history = fit_teacher(_core(), loaded, TeacherConfig(epochs=1, batch_size=5, seed=7,
                                                                        max_train=27, max_val=1000))
    assert capped_history == full_history
    _assert_same_model(capped, full)


def test_teacher_config_subset_keys():
    assert TeacherConfig.from_dict({"max_train": None, "max_val": 3}).max_val == 3
    with pytest.raises(ValueError, match="teacher.max_train: must be >= 1"):
        TeacherConfig.from_dict({"max_train": 0})
    with pytest.raises(ValueError, match="teacher.max_val: expected an integer"):
        TeacherConfig.from_dict({"max_val": 2.5})


def test_large_inputs_are_standardised_chunk_by_chunk(mapped, monkeypatch):
    ds, loaded = mapped
    view = loaded.view("train")
    exact = teacher_mod.x_moments(view)
    train = ds.X[ds.split == "train"]
    assert exact == (float(train.mean()), float(train.std()))  # numpy's float32 values, bit for bit
    monkeypatch.setattr(teacher_mod, "EXACT_MOMENTS_BYTES", 0)
    monkeypatch.setattr(domain_mod, "SAVE_CHUNK_BYTES", 5 * 16 * 16 * 4)
    mean, std = teacher_mod.x_moments(view)
    x64 = train.astype(np.float64)
    assert mean == pytest.approx(x64.mean(), rel=1e-13) and std == pytest.approx(x64.std(), rel=1e-12)
    assert mean == pytest.approx(exact[0], rel=1e-5) and std == pytest.approx(exact[1], rel=1e-5)


@pytest.mark.parametrize("max_train", [None, 10])
def test_distill_on_index_views_equals_distill_on_copies(mapped, max_train):
    ds, loaded = mapped
    torch.manual_seed(0)
    teacher = StandardizedTeacher(_core(1), 3)
    teacher.set_standardization(ds.X, ds.y)
    teacher.eval()
    cfg = DistillConfig.from_dict({"wave": "db2", "J": 1, "lambdas": [0.01], "gammas": [0.0, 0.01], "epochs": 1,
                                   "batch_size": 8, "target": 1, "max_train": max_train, "seed": 4})
    copies = distill_job(teacher, ds.subset("train").X, ds.subset("val").X, config=cfg, job=0)
    views = distill_job(teacher, loaded.view("train"), loaded.view("val"), config=cfg, job=0)
    assert len(copies) == len(views) == 2
    for a, b in zip(copies, views):
        np.testing.assert_array_equal(a.h, b.h)
        assert a.losses == b.losses and a.train_loss == b.train_loss
        assert not np.array_equal(a.h, a.init_h)  # it did learn something


def test_ingest_through_a_scratch_map_equals_the_in_memory_read(tmp_path):
    from awd.config import validate
    from awd.pipeline import run_ingest
    from domains.cosmology.fits_io import load_maps

    dom = get_domain("cosmology", "domains.cosmology")
    cfg = validate({"mock": {"cosmologies": [0, 3], "n_maps": 7, "npix_generate": 32, "npix_out": 16,
                             "side_deg": 0.22},
                    "data": {"target_size": 16, "split": [3, 2, 2]}}, dom.schema_path, where="cosmology")
    dom.simulate(cfg, tmp_path / "raw")
    in_memory = load_maps(tmp_path / "raw", redshift=1.0, target_size=16)
    scratch = tmp_path / "scratch" / "maps.npy"  # a folder that does not exist yet
    mapped = load_maps(tmp_path / "raw", redshift=1.0, target_size=16, scratch=scratch, chunk=4, threads=2)
    assert isinstance(mapped.maps, np.memmap) and not scratch.parent.exists()  # unlinked at once, folder too
    assert type(in_memory.maps) is np.ndarray and in_memory.maps.shape == (14, 16, 16)
    np.testing.assert_array_equal(mapped.maps, in_memory.maps)
    assert mapped.files == in_memory.files

    ds = run_ingest("cosmology", cfg, tmp_path / "raw", tmp_path / "data", tmp_path / "data" / "dataset.npz")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["dataset.npz", "maps.csv"]
    loaded = Dataset.load(tmp_path / "data" / "dataset.npz", mmap=False)
    np.testing.assert_array_equal(loaded.X, in_memory.maps)
    np.testing.assert_array_equal(np.asarray(ds.X), in_memory.maps)
