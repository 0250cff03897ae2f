"""Bounded memory for the plain distiller: samples held as index views of a memory map, input
gradients in a scratch memory map, the data digest hashed chunk by chunk; each gives exactly
what the in-memory computation gives."""
import hashlib

import numpy as np
import pytest
import torch
from torch import nn

import awd.distill as distill_mod
from awd.distill import DistillConfig, distill_path
from awd.domain import Rows

pytestmark = pytest.mark.filterwarnings("ignore:Level value:UserWarning")

N = 24


def _teacher() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(N, 16), nn.ReLU(), nn.Linear(16, 2)).eval()


def _cfg(**kw) -> DistillConfig:
    base = dict(wave="db2", J=2, mode="zero", lambdas=[0.01], gammas=[0.0, 0.05], epochs=2, batch_size=16,
                lr=5e-3, seed=3, target=1, dtype="float64", progress=False)
    return DistillConfig.from_dict({**base, **kw})


@pytest.fixture
def mapped(tmp_path):
    """90 signals in memory and the same signals memory-mapped from an .npy file, with the
    rows of a train and a val split (interleaved, as a dataset's splits are)."""
    X = np.random.default_rng(0).standard_normal((90, N)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap)
    val = np.arange(90) % 4 == 1
    return X, mm, np.flatnonzero(~val), np.flatnonzero(val)


@pytest.mark.parametrize("max_train", [None, 30])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_views_and_scratch_gradients_give_the_in_memory_filters(mapped, tmp_path, monkeypatch, max_train, dtype):
    X, mm, train, val = mapped
    cfg = _cfg(max_train=max_train, dtype=dtype)
    in_memory = distill_path(_teacher(), X[train], X[val], lam=0.01, gammas=cfg.gammas, config=cfg)

    monkeypatch.setattr(distill_mod, "GRADIENT_MEMORY_BYTES", 0)  # every gradient array to a scratch map
    monkeypatch.setattr(distill_mod, "DATA_CHUNK_BYTES", 2 * 16 * N * 8)  # chunks of 2 batches
    made = []
    compute = distill_mod._input_gradients
    monkeypatch.setattr(distill_mod, "_input_gradients", lambda *a: made.append(compute(*a)) or made[-1])
    np.save(tmp_path / "train.npy", X[train])
    bare = np.load(tmp_path / "train.npy", mmap_mode="r")  # a memory map of the train rows alone
    for X_train, X_val in [(Rows(mm, train), Rows(mm, val)), (bare, Rows(mm, val))]:
        made.clear()
        viewed = distill_path(_teacher(), X_train, X_val, lam=0.01, gammas=cfg.gammas, config=cfg)
        assert [type(g) for g in made] == [np.memmap, np.memmap]  # val, then train gradients
        assert [g.dtype for g in made] == [np.dtype(dtype)] * 2
        assert len(made[1]) == (max_train or len(train))
        for a, b in zip(in_memory, viewed):
            assert a.h.tobytes() == b.h.tobytes()
            assert a.losses == b.losses and a.train_loss == b.train_loss
    assert not np.array_equal(in_memory[1].h, in_memory[1].init_h)  # it trained


def test_in_memory_gradients_of_a_view_equal_the_whole_array_gradients(mapped, monkeypatch):
    X, mm, train, _ = mapped
    monkeypatch.setattr(distill_mod, "DATA_CHUNK_BYTES", 3 * 16 * N * 8)
    cfg = _cfg()
    model = _teacher().double()
    from_view = distill_mod._input_gradients(model, Rows(mm, train), cfg, torch.float64)
    whole = distill_mod._input_gradients(model, torch.as_tensor(X[train], dtype=torch.float64), cfg, torch.float64)
    assert isinstance(from_view, torch.Tensor) and from_view.dtype == torch.float64
    assert torch.equal(from_view, whole) and whole.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_digest_equals_the_one_shot_digest(mapped, monkeypatch, dtype):
    X, mm, train, val = mapped
    monkeypatch.setattr(distill_mod, "DATA_CHUNK_BYTES", 7 * N * 8)  # 7 rows per chunk, the last one short
    tensors = [torch.as_tensor(X[rows], dtype=dtype) for rows in (train, val)]
    reference = hashlib.sha256()  # dtype and shape, then the raw bytes, of each array
    for t in tensors:
        a = t.numpy()
        reference.update(str((a.dtype.str, a.shape)).encode() + a.tobytes())
    assert distill_mod._data_digest(*tensors) == reference.hexdigest()
    assert distill_mod._data_digest(Rows(mm, train), Rows(mm, val), dtype=dtype) == reference.hexdigest()
    other = distill_mod._data_digest(Rows(mm, train[:-1]), Rows(mm, val), dtype=dtype)
    assert other != reference.hexdigest()
