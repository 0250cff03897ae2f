"""The AWD distiller: config, determinism, warm start, resume, divergence, results files."""
import json
import math

import numpy as np
import pytest
import pywt
import torch
from torch import nn

from awd.distill import (DistillConfig, DistillResult, TrainingDiverged, distill_grid, distill_path, evaluate_terms,
                         load_results, save_results)
from awd.io import InputError
from awd.losses import coefficient_l1, filter_losses, reconstruction_loss
from awd.transform import DWT1d
from awd.trim import trim_attributions

pytestmark = pytest.mark.filterwarnings("ignore:Level value:UserWarning")

N = 24  # signal length of the small problems


def _relu_teacher(n: int = N, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n, 16), nn.ReLU(), nn.Linear(16, 2)).eval()


def _tanh_teacher(n: int = N, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n, 8), nn.Tanh(), nn.Linear(8, 1)).eval()


def _data(n_train=60, n_val=25, n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_train, n)).astype(np.float32), rng.standard_normal((n_val, n)).astype(np.float32)


def _cfg(**kw) -> DistillConfig:
    base = dict(wave="db2", J=2, mode="zero", lambdas=[0.01], gammas=[0.0, 0.05], epochs=3, batch_size=16,
                lr=5e-3, seed=3, target=1, dtype="float64", progress=False)
    base.update(kw)
    return DistillConfig.from_dict(base)


def _h_bytes(results):
    return [r.h.tobytes() for r in results]


# ----------------------------------------------------------------------------------------- config
def test_config_from_dict_roundtrip_and_defaults():
    cfg = DistillConfig.from_dict({"lambdas": 0.02, "gammas": [0, 0.001], "epochs": 2, "fast_path": "never"})
    assert cfg.lambdas == (0.02,) and cfg.gammas == (0.0, 0.001)
    assert cfg.batch_size == 100 and cfg.lr == 1e-3 and cfg.wave == "db5" and cfg.J == 4 and cfg.mode == "zero"
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg
    assert DistillConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("bad, message", [
    ({"epoch": 3}, r"unknown key\(s\) \['epoch'\]"),
    ({"epochs": 2.5}, "distill.epochs: expected an integer"),
    ({"epochs": True}, "distill.epochs: expected an integer"),
    ({"lr": "fast"}, "distill.lr: expected a number"),
    ({"lr": -1.0}, "distill.lr: must be a positive number"),
    ({"gammas": [0.1, "x"]}, "distill.gammas: expected a list of numbers"),
    ({"gammas": [0.1, 0.1]}, "distill.gammas: values must be distinct"),
    ({"lambdas": [-0.1]}, "distill.lambdas: values must be finite and >= 0"),
    ({"fast_path": "sometimes"}, "distill.fast_path: 'sometimes' is not one of"),
    ({"attribution": "gradcam"}, "distill.attribution"),
    ({"normalization": "sum"}, "distill.normalization"),
    ({"wave": "bior2.2"}, "not an orthogonal wavelet"),
    ({"wave": "nope"}, "unknown wavelet"),
    ({"mode": "wrap"}, "distill.mode"),
    ({"batch_size": 0}, "distill.batch_size: must be >= 1"),
    ({"micro_batch": 0}, "distill.micro_batch: must be >= 1 or null"),
    ({"micro_batch": 2.0}, "distill.micro_batch: expected an integer"),
])
def test_config_errors_name_the_key(bad, message):
    with pytest.raises(InputError, match=message) as err:
        DistillConfig.from_dict(bad, source="config/test.yaml")
    assert "config/test.yaml" in str(err.value)


# ----------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_and_seed_matters():
    X_tr, X_va = _data()
    teacher = _relu_teacher()
    a = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=[0.0, 0.05], config=_cfg())
    b = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=[0.05, 0.0], config=_cfg())  # order of input
    assert [r.gamma for r in a] == [0.0, 0.05]
    assert _h_bytes(a) == _h_bytes(b)
    assert [r.losses for r in a] == [r.losses for r in b]
    c = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=[0.0, 0.05], config=_cfg(seed=4))
    assert all(not np.array_equal(x.h, y.h) for x, y in zip(a, c))
    # the caller's teacher is untouched (still trainable parameters, same mode)
    assert all(p.requires_grad for p in teacher.parameters())


def test_warm_start_along_gamma():
    """Each gamma starts from the previous gamma's result: rerunning the last point alone
    from the previous h reproduces it bit for bit."""
    X_tr, X_va = _data()
    teacher = _relu_teacher()
    path = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=[0.0, 0.02, 0.05], config=_cfg())
    assert path[0].init == "db2" and np.array_equal(path[0].init_h, pywt.Wavelet("db2").rec_lo)
    assert all(np.array_equal(r.init_h, path[0].init_h) for r in path)
    alone = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=[0.05], config=_cfg(), init=path[1].h)
    assert alone[0].h.tobytes() == path[2].h.tobytes()
    assert alone[0].init == "custom"
    # and the filter did move (the gamma > 0 steps are real)
    assert np.abs(path[2].h - path[1].h).max() > 1e-4


def test_grid_is_independent_of_lambda_order(tmp_path):
    X_tr, X_va = _data()
    teacher = _relu_teacher()
    cfg = _cfg(lambdas=[0.0, 0.05], gammas=[0.0, 0.05], epochs=2)
    grid = distill_grid(teacher, X_tr, X_va, config=cfg, checkpoint_dir=tmp_path / "ck")
    assert [(r.lam, r.gamma) for r in grid] == [(0.0, 0.0), (0.0, 0.05), (0.05, 0.0), (0.05, 0.05)]
    second = distill_path(teacher, X_tr, X_va, lam=0.05, gammas=cfg.gammas, config=cfg)
    first = distill_path(teacher, X_tr, X_va, lam=0.0, gammas=cfg.gammas, config=cfg)
    assert _h_bytes(grid) == _h_bytes(first + second)
    # a rerun with the finished checkpoints on disk returns the same results without training
    again = distill_grid(teacher, X_tr, X_va, config=cfg, checkpoint_dir=tmp_path / "ck",
                         callback=lambda info: pytest.fail("trained again"))
    assert _h_bytes(again) == _h_bytes(grid)


# ------------------------------------------------------------------------------ fast/exact paths
def test_fast_path_selection_and_agreement_for_relu_teacher():
    X_tr, X_va = _data()
    relu, tanh = _relu_teacher(), _tanh_teacher()
    fast = distill_path(relu, X_tr, X_va, lam=0.0, gammas=[0.1], config=_cfg(target=0))
    exact = distill_path(relu, X_tr, X_va, lam=0.0, gammas=[0.1], config=_cfg(target=0, fast_path="never"))
    assert fast[0].fast_path and not exact[0].fast_path
    np.testing.assert_allclose(fast[0].h, exact[0].h, rtol=0, atol=1e-12)
    assert fast[0].losses["interpretation"] == pytest.approx(exact[0].losses["interpretation"], rel=1e-10)
    assert not distill_path(tanh, X_tr, X_va, lam=0.0, gammas=[0.1], config=_cfg(target=0))[0].fast_path
    forced = distill_path(tanh, X_tr, X_va, lam=0.0, gammas=[0.1], config=_cfg(target=0, fast_path="always"))
    assert forced[0].fast_path


def test_validation_terms_equal_one_full_batch():
    """Batch-wise evaluation reproduces every term computed on the whole split at once."""
    _, X_va = _data(n_val=37)
    teacher = _tanh_teacher().double()
    cfg = _cfg(batch_size=10, target=0)
    h = np.asarray(pywt.Wavelet("db2").rec_lo) + 0.05
    dwt = DWT1d(h, J=2, mode="zero", dtype=torch.float64)
    X = torch.as_tensor(X_va, dtype=torch.float64)
    terms = evaluate_terms(teacher, dwt, X, lam=0.3, gamma=0.7, cfg=cfg)
    attr = trim_attributions(teacher, dwt, X, 0, create_graph=False)
    with torch.no_grad():
        coeffs = dwt(X)
        x_rec = dwt.inverse(coeffs)[:, :N]
    expected = {"reconstruction": reconstruction_loss(X, x_rec), "sparsity": coefficient_l1(coeffs),
                "interpretation": coefficient_l1(attr), **filter_losses(dwt.h)}
    expected = {k: float(v.detach()) for k, v in expected.items()}
    for k, v in expected.items():
        assert terms[k] == pytest.approx(v, rel=1e-12), k
    assert terms["reconstruction"] > 1e-3 and terms["cmf"] > 1e-4
    objective = sum(float(expected[k]) for k in ("reconstruction", "lowpass_sum", "highpass_sum", "unit_norm",
                                                  "cmf", "orthogonality"))
    objective += 0.3 * float(expected["sparsity"]) + 0.7 * float(expected["interpretation"])
    assert terms["objective"] == pytest.approx(objective, rel=1e-12)


def test_training_restores_a_perturbed_wavelet():
    """With lam = gamma = 0 the objective is reconstruction + validity: training from a
    perturbed db2 drives both down by orders of magnitude, towards an orthogonal filter."""
    X_tr, X_va = _data()
    h0 = np.asarray(pywt.Wavelet("db2").rec_lo) + 0.02 * np.random.default_rng(5).standard_normal(4)
    cfg = _cfg(epochs=25, lr=2e-3)
    res = distill_path(_relu_teacher(), X_tr, X_va, lam=0.0, gammas=[0.0], config=cfg, init=h0)[0]
    dwt = DWT1d(h0, J=2, mode="zero", dtype=torch.float64)
    before = evaluate_terms(_relu_teacher().double(), dwt, torch.as_tensor(X_va, dtype=torch.float64), 0.0, 0.0,
                            cfg)
    validity = ("lowpass_sum", "highpass_sum", "unit_norm", "cmf", "orthogonality")
    assert res.losses["reconstruction"] < 0.01 * before["reconstruction"]
    assert sum(res.losses[k] for k in validity) < 0.05 * sum(before[k] for k in validity)
    assert res.train_loss[-1] < 0.05 * res.train_loss[0]
    assert len(res.train_loss) == 25 and res.epochs == 25 and res.ndim == 1 and res.init == "custom"


def test_two_dimensional_distillation():
    rng = np.random.default_rng(0)
    X_tr, X_va = rng.standard_normal((20, 12, 14)), rng.standard_normal((6, 12, 14))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = nn.Sequential(nn.Unflatten(1, (1, 12)), nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2),
                                nn.Flatten(), nn.Linear(3 * 5 * 6, 2)).eval()
    res = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=[0.0, 0.1],
                       config=_cfg(J=2, epochs=2, batch_size=8))
    assert all(r.ndim == 2 and r.h.shape == (4,) and r.fast_path for r in res)
    assert res[1].losses["interpretation"] < res[0].losses["interpretation"]


def test_max_train_uses_a_seeded_subset():
    X_tr, X_va = _data(n_train=80)
    teacher = _relu_teacher()
    capped = distill_path(teacher, X_tr, X_va, lam=0.0, gammas=[0.05], config=_cfg(max_train=30))
    keep = np.sort(np.random.default_rng(3).choice(80, 30, replace=False))
    manual = distill_path(teacher, X_tr[keep], X_va, lam=0.0, gammas=[0.05], config=_cfg())
    assert _h_bytes(capped) == _h_bytes(manual)


@pytest.mark.parametrize("fast_path", ["always", "never"])
def test_micro_batches_give_the_whole_batch_step(fast_path):
    """A batch taken in pieces (gradients summed, data terms weighted by piece size) trains
    the same filter as the whole batch, to float64 rounding, on both attribution paths."""
    X_tr, X_va = _data(n_train=50)
    teacher = _relu_teacher()
    runs = [distill_path(teacher, X_tr, X_va, lam=0.02, gammas=[0.0, 0.05],
                         config=_cfg(micro_batch=mb, fast_path=fast_path)) for mb in (None, 5, 7)]
    whole = runs[0]
    assert abs(whole[1].h - whole[1].init_h).max() > 1e-3  # it trained
    for pieces in runs[1:]:
        for a, b in zip(whole, pieces):
            np.testing.assert_allclose(b.h, a.h, rtol=0, atol=1e-12)
            np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=1e-12)
            assert a.losses["interpretation"] == pytest.approx(b.losses["interpretation"], rel=1e-12)


def test_pieces_on_two_threads_give_the_one_thread_bytes():
    """With several torch threads the pieces of a step run side by side (one intra-op thread
    each): the filters are byte for byte those of the same pieces run one by one on one thread."""
    X_tr, X_va = _data(n_train=50)
    teacher = _relu_teacher()
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(distill_path(teacher, X_tr, X_va, lam=0.02, gammas=[0.0, 0.05],
                                     config=_cfg(micro_batch=5, dtype="float32", fast_path="always")))
    finally:
        torch.set_num_threads(threads)
    assert _h_bytes(runs[0]) == _h_bytes(runs[1])
    assert [r.train_loss for r in runs[0]] == [r.train_loss for r in runs[1]]


def test_automatic_micro_batches_split_only_large_maps():
    from awd.distill import MICRO_BATCH_VALUES, _pieces

    assert MICRO_BATCH_VALUES == 32 * 256 * 256
    assert [(p.start, p.stop) for p in _pieces(100, (256, 256), None)] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert _pieces(100, (128, 128), None) == [slice(0, 100)]  # the default maps run whole
    assert _pieces(100, (40,), None) == [slice(0, 100)]
    assert [(p.start, p.stop) for p in _pieces(10, (40,), 4)] == [(0, 3), (3, 7), (7, 10)]


# ---------------------------------------------------------------------------------- checkpoints
class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_at", [(0, 2), (1, 1), (1, 3)])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, stop_at):
    X_tr, X_va = _data()
    teacher = _relu_teacher()
    cfg = _cfg(gammas=[0.0, 0.05], epochs=3)
    reference = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=cfg.gammas, config=cfg)

    def stop(info):
        if (info["point"], info["epoch"]) == stop_at:
            raise _Interrupt

    ckpt = tmp_path / "path.pt"
    with pytest.raises(_Interrupt):
        distill_path(teacher, X_tr, X_va, lam=0.01, gammas=cfg.gammas, config=cfg, checkpoint=ckpt, callback=stop)
    state = torch.load(ckpt, weights_only=True)  # tensors, numbers and strings only
    assert state["point"] == stop_at[0] and state["epoch"] == stop_at[1]
    seen = []
    resumed = distill_path(teacher, X_tr, X_va, lam=0.01, gammas=cfg.gammas, config=cfg, checkpoint=ckpt,
                           callback=lambda info: seen.append((info["point"], info["epoch"])))
    point, epoch = stop_at
    next_epoch = (point, epoch + 1) if epoch < cfg.epochs else (point + 1, 1)
    assert seen[:1] == ([next_epoch] if next_epoch[0] < len(cfg.gammas) else [])
    assert _h_bytes(resumed) == _h_bytes(reference)
    assert [r.losses for r in resumed] == [r.losses for r in reference]
    assert [r.train_loss for r in resumed] == [r.train_loss for r in reference]


def test_checkpoint_of_another_run_is_ignored(tmp_path, caplog):
    X_tr, X_va = _data()
    ckpt = tmp_path / "path.pt"
    distill_path(_relu_teacher(), X_tr, X_va, lam=0.01, gammas=[0.0], config=_cfg(epochs=1), checkpoint=ckpt)
    for lam, shift in ((0.02, 0.0), (0.01, 1.0)):
        fresh = distill_path(_relu_teacher(), X_tr + shift, X_va, lam=lam, gammas=[0.0], config=_cfg(epochs=1))
        with caplog.at_level("WARNING", logger="awd.distill"):
            again = distill_path(_relu_teacher(), X_tr + shift, X_va, lam=lam, gammas=[0.0], config=_cfg(epochs=1),
                                 checkpoint=ckpt)
        assert "different run" in caplog.text
        caplog.clear()
        np.testing.assert_array_equal(again[0].h, fresh[0].h)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        distill_path(_relu_teacher(), X_tr, X_va, lam=0.01, gammas=[0.0], config=_cfg(epochs=1), checkpoint=ckpt)


# ----------------------------------------------------------------------------------- divergence
def test_divergence_names_the_step():
    X_tr, X_va = _data()
    with pytest.raises(TrainingDiverged, match=r"gamma=0, epoch 1, step 1 \(global step 1\).*max_filter_norm"):
        distill_path(_relu_teacher(), X_tr, X_va, lam=0.0, gammas=[0.0], config=_cfg(lr=100.0),
                     init=np.asarray(pywt.Wavelet("db2").rec_lo) + 0.01)


class _NaNAfterward(nn.Module):
    """Finite outputs but a NaN input gradient (sqrt at 0): the interpretation loss becomes NaN."""

    def forward(self, x):
        return torch.sqrt(torch.relu(x[:, :1]) * 0.0)


def test_nan_loss_raises_training_diverged():
    X_tr, X_va = _data()
    with pytest.raises(TrainingDiverged, match=r"gamma=0.1, epoch 1, step 1 .*loss is nan"):
        distill_path(_NaNAfterward(), X_tr, X_va, lam=0.0, gammas=[0.1], config=_cfg(target=0, fast_path="never"))


# ---------------------------------------------------------------------------------- results I/O
def test_save_and_load_results_roundtrip(tmp_path):
    X_tr, X_va = _data()
    results = distill_path(_relu_teacher(), X_tr, X_va, lam=0.01, gammas=[0.0, 0.05], config=_cfg(epochs=1))
    path = tmp_path / "lambda_0.json"
    save_results(path, results)
    loaded = load_results(path)
    assert len(loaded) == 2 and all(isinstance(r, DistillResult) for r in loaded)
    for a, b in zip(results, loaded):
        assert a.h.tobytes() == b.h.tobytes() and b.h.dtype == np.float64
        assert a.losses == b.losses and a.lam == b.lam and a.gamma == b.gamma and a.J == b.J
        assert set(a.losses) >= {"reconstruction", "lowpass_sum", "highpass_sum", "unit_norm", "cmf",
                                 "orthogonality", "sparsity", "interpretation", "objective"}
        assert all(math.isfinite(v) for v in a.losses.values())
    save_results(tmp_path / "again.json", loaded)
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    (json.dumps({"results": []}), "not an AWD distillation results file"),
    (json.dumps({"format": "awd-distill-results", "results": [{"h": [1.0, "x"], "lam": 0, "gamma": 0, "J": 1,
                                                                "mode": "zero", "ndim": 1}]}), "h"),
    (json.dumps({"format": "awd-distill-results", "results": [{"h": [0.7, 0.7], "lam": 0}]}), "lacks"),
    (json.dumps({"format": "awd-distill-results", "results": [3]}), "must be an object"),
])
def test_load_results_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_results(path)


# ------------------------------------------------------------------ batched exact engine, seeds
def _lstm_teacher(seed: int = 1) -> nn.Module:
    from domains.cme.lstm import build_lstm
    return build_lstm(hidden_size=6, seed=seed).eval()


def _seq_data(n_train=70, n_val=20, n=16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n_train, n)), rng.standard_normal((n_val, n))


def _batched_cfg(**kw) -> DistillConfig:
    return _cfg(**{"J": 2, "lambdas": [0.01, 0.1], "gammas": [0.0, 0.05, 0.3], "lr": 5e-3, "epochs": 2,
                   "fast_path": "never", "target": 0, "seeds": [1, 7], **kw})


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 2e-6)])
def test_batched_engine_gives_the_plain_exact_filters(dtype, tol):
    """All (lambda, seed) paths in one batched computation == each path run alone with exact
    double back-propagation through the LSTM; the fast path (no curvature term) does not."""
    from awd.batched import distill_paths
    teacher, (X, Xv) = _lstm_teacher(), _seq_data(n_train=48)
    cfg = _batched_cfg(dtype=dtype)
    paths = [(0.01, 1), (0.1, 1), (0.1, 7)]
    batched = distill_paths(teacher, X, Xv, paths=paths, gammas=cfg.gammas, config=cfg)
    worst_fast = 0.0
    for (lam, seed), got in zip(paths, batched):
        one = DistillConfig.from_dict({**cfg.to_dict(), "seed": seed})
        plain = distill_path(teacher, X, Xv, lam=lam, gammas=cfg.gammas, config=one)
        assert [r.gamma for r in got] == list(cfg.gammas) and all(r.seed == seed and r.lam == lam for r in got)
        for a, b in zip(plain, got):
            assert np.abs(a.h - b.h).max() <= tol
            assert math.isclose(a.losses["interpretation"], b.losses["interpretation"], rel_tol=1e-5, abs_tol=tol)
            np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-5)
        assert np.abs(got[-1].h - got[-1].init_h).max() > 1e-4  # the filters did move
        if dtype == "float64":
            fast = distill_path(teacher, X, Xv, lam=lam, gammas=cfg.gammas,
                                config=DistillConfig.from_dict({**one.to_dict(), "fast_path": "always"}))
            worst_fast = max(worst_fast, max(np.abs(a.h - f.h).max() for a, f in zip(plain, fast)))
    if dtype == "float64":
        assert worst_fast > 1e-7  # the curvature term matters at this tolerance


def test_teacher_curvature_equals_autograd_hessian():
    from awd.batched import teacher_curvature
    teacher = _lstm_teacher().double()
    X = torch.as_tensor(_seq_data()[0][:5])
    grads, hess = teacher_curvature(teacher, X, target=0, batch_size=3)
    for x, g, H in zip(X, grads, hess):
        f = lambda v: teacher(v[None])[0, 0]  # noqa: E731
        torch.testing.assert_close(H, torch.autograd.functional.hessian(f, x), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, torch.autograd.functional.jacobian(f, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stop_at", [1, 3])
def test_batched_resume_is_bit_identical(tmp_path, stop_at):
    from awd.batched import distill_paths
    teacher, (X, Xv) = _lstm_teacher(), _seq_data()
    cfg = _batched_cfg(dtype="float32")
    paths = [(lam, s) for s in cfg.seeds for lam in cfg.lambdas]
    full = distill_paths(teacher, X, Xv, paths=paths, gammas=cfg.gammas, config=cfg)
    seen = []

    def stop(info):
        seen.append(info)
        if len(seen) == stop_at * len(paths):
            raise KeyboardInterrupt
    ckpt = tmp_path / "group.pt"
    with pytest.raises(KeyboardInterrupt):
        distill_paths(teacher, X, Xv, paths=paths, gammas=cfg.gammas, config=cfg, checkpoint=ckpt, callback=stop)
    resumed = distill_paths(teacher, X, Xv, paths=paths, gammas=cfg.gammas, config=cfg, checkpoint=ckpt)
    for a, b in zip(full, resumed):
        assert _h_bytes(a) == _h_bytes(b) and [r.train_loss for r in a] == [r.train_loss for r in b]


def test_jobs_split_the_grid_by_engine():
    from awd.distill import distill_jobs
    assert distill_jobs(_cfg(lambdas=[0.1, 0.2], seeds=[])) == [[(0, 3)], [(1, 3)]]  # seed 3: as before
    assert distill_jobs(_cfg(lambdas=[0.1, 0.2], seeds=[1, 10])) == [[(0, 1)], [(1, 1)], [(0, 10)], [(1, 10)]]
    assert distill_jobs(_cfg(lambdas=[0.1, 0.2], seeds=[1, 10], engine="batched")) == [[(0, 1), (1, 1)],
                                                                                       [(0, 10), (1, 10)]]


def test_batched_engine_rejects_what_it_cannot_do():
    from awd.batched import distill_paths
    teacher, (X, Xv) = _lstm_teacher(), _seq_data()
    cfg = _batched_cfg(attribution="integrated_gradients")
    with pytest.raises(InputError, match="attribution"):
        distill_paths(teacher, X, Xv, paths=[(0.1, 1)], gammas=[0.1], config=cfg)
    with pytest.raises(InputError, match="engine: plain"):
        distill_paths(teacher, X.reshape(70, 4, 4), Xv.reshape(20, 4, 4), paths=[(0.1, 1)], gammas=[0.1],
                      config=_batched_cfg())
    with pytest.raises(InputError, match="distill.seeds: values must be distinct"):
        _cfg(seeds=[1, 1])
    with pytest.raises(InputError, match="distill.engine"):
        _cfg(engine="fast")


def test_count_jobs_reads_a_config_section():
    from awd.distill import count_jobs
    assert count_jobs({"lambdas": [0.1, 0.2], "target": "auxilin", "epochs": 3}) == 2
    assert count_jobs({"lambdas": [0.1, 0.2, 0.3], "seeds": [1, 10]}) == 6
    assert count_jobs({"lambdas": [0.1, 0.2, 0.3], "seeds": [1, 10], "engine": "batched"}) == 2


@pytest.mark.parametrize("mode", ["zero", "symmetric"])
def test_path_operators_are_the_dwt_of_each_filter(mode):
    """The batched operators equal DWT1d per filter: coefficients x @ A^T in pywt order and
    reconstructions c @ S^T (in zero mode S = A^T for any filter)."""
    from awd.batched import path_operators
    rng = np.random.default_rng(2)
    H = torch.as_tensor(pywt.Wavelet("db3").rec_lo) + 0.05 * torch.as_tensor(rng.standard_normal((3, 6)))
    x = torch.as_tensor(rng.standard_normal((4, 33)))
    analysis_t, synthesis_t = path_operators(H, 33, 3, mode)
    for p in range(3):
        dwt = DWT1d(wave=H[p].numpy(), J=3, mode=mode, dtype=torch.float64)
        coeffs = dwt(x)
        torch.testing.assert_close(x @ analysis_t[p], torch.cat(coeffs, -1), rtol=0, atol=1e-13)
        torch.testing.assert_close(torch.cat(coeffs, -1) @ synthesis_t[p], dwt.inverse(coeffs)[..., :33],
                                   rtol=0, atol=1e-13)
