"""The stage hand-over file: Dataset.load memory-maps X inside the .npz, rows stream in chunks."""
import zipfile

import numpy as np
import pytest

from awd.domain import Dataset


def small(n: int = 30) -> Dataset:
    rng = np.random.default_rng(0)
    split = np.array(["train", "train", "val", "test"] * n)[:n]
    return Dataset(rng.normal(size=(n, 6, 5)), rng.normal(size=(n, 2)), ["a", "b"], split, np.arange(n) % 3,
                   {"realisation": np.arange(n)}, {"source": "test"})


def test_load_maps_x_inside_the_npz_and_never_writes_the_file(tmp_path):
    ds = small()
    path = tmp_path / "dataset.npz"
    ds.save(path)
    before = path.read_bytes()
    loaded = Dataset.load(path)
    assert isinstance(loaded.X, np.memmap) and loaded.X.dtype == np.float32
    np.testing.assert_array_equal(loaded.X, ds.X)
    np.testing.assert_array_equal(Dataset.load(path, mmap=False).X, ds.X)
    loaded.X[0] = 7.0  # copy-on-write: the caller's change stays private
    assert path.read_bytes() == before
    np.testing.assert_array_equal(Dataset.load(path).X, ds.X)
    val = loaded.subset("val")
    assert type(val.X) is np.ndarray
    np.testing.assert_array_equal(val.X, ds.X[ds.split == "val"])


def test_compressed_or_non_float32_members_are_read_whole(tmp_path):
    ds = small()
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, X=ds.X, y=ds.y, split=ds.split, group=ds.group,
                        target_names=np.asarray(ds.target_names), meta=np.asarray("{}"))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("X.npy").compress_type == zipfile.ZIP_DEFLATED
    loaded = Dataset.load(path)
    assert not isinstance(loaded.X, np.memmap)
    np.testing.assert_array_equal(loaded.X, ds.X)
    path64 = tmp_path / "float64.npz"
    np.savez(path64, X=ds.X.astype(np.float64), y=ds.y, split=ds.split, group=ds.group,
             target_names=np.asarray(ds.target_names), meta=np.asarray("{}"))
    loaded = Dataset.load(path64)
    assert not isinstance(loaded.X, np.memmap) and loaded.X.dtype == np.float32


def test_iter_rows_and_indices(tmp_path):
    ds = small(23)
    ds.save(tmp_path / "d.npz")
    loaded = Dataset.load(tmp_path / "d.npz")
    rows = loaded.indices("train")
    np.testing.assert_array_equal(rows, np.flatnonzero(ds.split == "train"))
    blocks = list(loaded.iter_rows(rows, chunk=4))
    assert [s for s, _ in blocks] == list(range(0, len(rows), 4))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), ds.X[rows])
    assert all(type(b) is np.ndarray for _, b in blocks)


def test_non_finite_maps_are_found_chunk_by_chunk(tmp_path):
    ds = small(700)
    X = ds.X.copy()
    X[650, 1, 1] = np.nan  # beyond the first chunk
    np.savez(tmp_path / "bad.npz", X=X, y=ds.y, split=ds.split, group=ds.group,
             target_names=np.asarray(ds.target_names), meta=np.asarray("{}"))
    with pytest.raises(ValueError, match="NaN or inf"):
        Dataset.load(tmp_path / "bad.npz")
