"""The direct zero-mode kernels (awd.kernels) against PyWavelets, the GEMM transforms and autograd."""
from __future__ import annotations

import os

import numpy as np
import pytest
import pywt
import torch

import awd.transform as T
from awd import kernels as K
from awd.transform import DWT2d, lowpass_filter, qmf, wavedec2, waverec2

pytestmark = pytest.mark.skipif(not K.AVAILABLE, reason="numba is not installed")


def _bank(wave: str, dtype=torch.float64, requires_grad: bool = False):
    h = torch.tensor(lowpass_filter(wave), dtype=dtype, requires_grad=requires_grad)
    return h, torch.stack([h, qmf(h)])


@pytest.mark.parametrize("wave", ["haar", "db2", "db5", "sym8", "coif3"])
@pytest.mark.parametrize("shape", [(3, 17, 20), (2, 31, 9), (1, 5, 4), (2, 64, 64), (1, 3, 40)])
def test_one_level_equals_pywt_dwt2_and_idwt2(wave, shape):
    h, F = _bank(wave)
    x = np.random.default_rng(sum(shape)).standard_normal(shape)
    cA, cH, cV, cD = K.analysis2(torch.from_numpy(x), F)
    rA, (rH, rV, rD) = pywt.dwt2(x, pywt.Wavelet(wave), mode="zero", axes=(-2, -1))
    for ours, ref in zip((cA, cH, cV, cD), (rA, rH, rV, rD)):
        np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)
    L = h.numel()
    shape_rec = (2 * cA.shape[1] - L + 2, 2 * cA.shape[2] - L + 2)
    rec = K.synthesis2(cA, cH, cV, cD, F, shape_rec)
    ref = pywt.idwt2((rA, (rH, rV, rD)), pywt.Wavelet(wave), mode="zero", axes=(-2, -1))
    np.testing.assert_allclose(rec.numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_multilevel_transform_matches_the_gemm_path(dtype, tol):
    """wavedec2 / waverec2 on the kernels (block=None) equal the block-Toeplitz GEMMs (block=8)."""
    h, _ = _bank("db5", dtype)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 2, 70, 53))).to(dtype)
    assert T._direct(x, "zero", None) and not T._direct(x, "zero", 8)
    ours, ref = wavedec2(x, h, 2, "zero"), wavedec2(x, h, 2, "zero", block=8)
    scale = float(x.abs().max())
    assert abs(float(ours[0].sub(ref[0]).abs().max())) <= tol * scale
    for lo, lr in zip(ours[1:], ref[1:]):
        for a, b in zip(lo, lr):
            assert a.shape == b.shape and float((a - b).abs().max()) <= tol * scale
    rec = waverec2(ours, h, "zero")
    assert float((rec - waverec2(ours, h, "zero", block=8)).abs().max()) <= tol * scale
    np.testing.assert_allclose(rec[..., :70, :53].double().numpy(), x.double().numpy(), atol=10 * tol * scale)


def _loss(h: torch.Tensor, x: torch.Tensor, g: torch.Tensor, block) -> torch.Tensor:
    """A distillation-like objective: reconstruction + L1 of the coefficients + L1 of the analysis
    of an input gradient, all through the transforms with ``block`` (None: the kernels)."""
    coeffs = wavedec2(x, h, 2, "zero", block=block)
    rec = waverec2(coeffs, h, "zero", block=block)[..., :x.shape[-2], :x.shape[-1]]
    attr = wavedec2(g, h, 2, "zero", block=block)
    l1 = sum(t.abs().sum() for t in T.iter_coeffs(coeffs)) + sum(t.abs().sum() for t in T.iter_coeffs(attr))
    return ((rec - x) ** 2).sum() + 1e-2 * l1


def test_filter_and_input_gradients_and_double_backward_match_the_gemm_path():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((2, 40, 36))).requires_grad_(True)
    g = torch.from_numpy(rng.standard_normal((2, 40, 36)))
    h0 = lowpass_filter("db4") + 0.01 * rng.standard_normal(8)  # not orthogonal: rec != x
    grads = {}
    for block in (None, 8):
        h = torch.tensor(h0, requires_grad=True)
        gh, gx = torch.autograd.grad(_loss(h, x, g, block), (h, x), create_graph=True)
        (ghh,) = torch.autograd.grad((gh ** 2).sum() + gx.abs().sum(), h)  # a second-order term
        grads[block] = (gh.detach(), gx.detach(), ghh)
    for ours, ref in zip(grads[None], grads[8]):
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-9, atol=1e-9 * float(ref.abs().max()))


@pytest.mark.parametrize("axis, shape", [("cols", (2, 7, 5)), ("rows", (2, 5, 9)), ("rows", (1, 3, 4))])
def test_pass_functions_pass_gradcheck_to_second_order(axis, shape):
    torch.manual_seed(0)
    h = torch.tensor(lowpass_filter("db3"), requires_grad=True)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)

    def bank(h):
        return torch.stack([h, qmf(h)])

    def down(x, h):
        return K.Down.apply(x, bank(h), axis)

    assert torch.autograd.gradcheck(down, (x, h)) and torch.autograd.gradgradcheck(down, (x, h))
    y0, y1 = (t.detach().requires_grad_(True) for t in down(x, h))
    n = shape[1] if axis == "cols" else shape[2]

    def up(y0, y1, h):
        return K.Up.apply(y0, y1, bank(h), axis, n)

    assert torch.autograd.gradcheck(up, (y0, y1, h)) and torch.autograd.gradgradcheck(up, (y0, y1, h))

    def corr(x, y0, y1):
        return K.Corr.apply(x, y0, y1, axis, h.numel())

    assert torch.autograd.gradcheck(corr, (x, y0, y1)) and torch.autograd.gradgradcheck(corr, (x, y0, y1))


@pytest.mark.parametrize("shape, levels", [((2, 9, 7), 1), ((1, 6, 11), 1), ((1, 13, 12), 2)])
def test_level_nodes_pass_gradcheck_to_second_order(shape, levels):
    """The one-node 2D transforms (Analysis2, Synthesis2, one or more levels, with pywt's crop of
    an approximation one sample longer): exact first and second derivatives in the input, the
    coefficients and the filter (a graph of the backward recomputes the levels from the passes)."""
    torch.manual_seed(1)
    h = torch.tensor(lowpass_filter("db2"), requires_grad=True)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)

    def analysis(x, h):
        return K.Analysis2.apply(x, torch.stack([h, qmf(h)]), levels)

    assert torch.autograd.gradcheck(analysis, (x, h)) and torch.autograd.gradgradcheck(analysis, (x, h))
    coeffs = [t.detach().requires_grad_(True) for t in analysis(x, h)]
    crops = tuple(tuple(coeffs[1 + 3 * j].shape[1:]) for j in range(levels))
    if levels > 1:  # the first level's output (2 n - L + 2 = 2 n - 2 for db2) is cut to the next details
        assert crops[1] != (2 * crops[0][0] - 2, 2 * crops[0][1] - 2)

    def synthesis(h, *coeffs):
        return K.Synthesis2.apply(torch.stack([h, qmf(h)]), crops, *coeffs)

    assert torch.autograd.gradcheck(synthesis, (h, *coeffs))
    assert torch.autograd.gradgradcheck(synthesis, (h, *coeffs))


@pytest.mark.parametrize("switch", ["LEVEL_NODES", "DIRECT_BACKWARD"])
def test_level_nodes_and_direct_backward_equal_the_three_pass_nodes(monkeypatch, switch):
    """A distillation-like loss gives the same filter gradient with a 2D transform as one node (or the
    backward calling the kernels directly) as with three autograd nodes per level, to float rounding
    (the filter gradient's terms are added in another order)."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((3, 48, 40)).astype(np.float32))
    g = torch.from_numpy(rng.standard_normal((3, 48, 40)).astype(np.float32))
    h0 = (lowpass_filter("db5") + 0.01 * rng.standard_normal(10)).astype(np.float32)
    grads = []
    for on in (True, False):
        monkeypatch.setattr(K, switch, on)
        h = torch.tensor(h0, requires_grad=True)
        grads.append(torch.autograd.grad(_loss(h, x, g, None), h)[0])
    assert not torch.equal(grads[0], torch.zeros_like(grads[0]))
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), rtol=0, atol=1e-5 * float(grads[1].abs().max()))


def test_up_is_the_transpose_of_down_and_corr_its_filter_gradient():
    """<D(x, F), y> = <x, U(y, F)> = <F, C(x, y)> for random x, y, F (hand-checkable identities)."""
    rng = np.random.default_rng(3)
    for axis, shape in (("cols", (3, 11, 6)), ("rows", (3, 6, 11))):
        x = torch.from_numpy(rng.standard_normal(shape))
        F = torch.from_numpy(rng.standard_normal((2, 6)))
        y0, y1 = (torch.from_numpy(rng.standard_normal(t.shape)) for t in K.Down.apply(x, F, axis))
        d0, d1 = K.Down.apply(x, F, axis)
        lhs = float((d0 * y0).sum() + (d1 * y1).sum())
        n = shape[1] if axis == "cols" else shape[2]
        assert lhs == pytest.approx(float((x * K.Up.apply(y0, y1, F, axis, n)).sum()), rel=1e-12)
        assert lhs == pytest.approx(float((F * K.Corr.apply(x, y0, y1, axis, 6)).sum()), rel=1e-12)


def test_results_do_not_depend_on_the_thread_count():
    """Batches large enough to be split over threads give bit-identical values and filter gradients."""
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((24, 96, 96)).astype(np.float32))
    assert 2 * 24 * 52 * 96 >= K.PARALLEL_MIN  # the first pass is split when threads > 1
    threads = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            dwt = DWT2d("db5", J=3, mode="zero", dtype=torch.float32)
            coeffs = dwt(x)
            loss = sum(t.abs().sum() for t in T.iter_coeffs(coeffs)) + ((dwt.inverse(coeffs)[:, :96, :96] - x) ** 2).sum()
            (gh,) = torch.autograd.grad(loss, dwt.h)
            out[n] = ([t.detach().clone() for t in T.iter_coeffs(coeffs)], gh)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(out[1][0], out[2][0]))
    assert torch.equal(out[1][1], out[2][1])


def test_only_zero_mode_cpu_float_tensors_take_the_kernels():
    x = torch.zeros(2, 8, 8)
    assert K.usable(x, "zero") and K.usable(x.double(), "zero")
    assert not K.usable(x, "symmetric") and not K.usable(x, "periodization")
    assert not K.usable(x.half(), "zero") and not K.usable(x.to(torch.bfloat16), "zero")
    try:
        T.DIRECT = False
        assert not T._direct(x, "zero", None)
    finally:
        T.DIRECT = True
    assert T._direct(x, "zero", None) and not T._direct(x, "zero", 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_forgets_the_parents_thread_pool():
    """The pool's threads do not survive a fork: a child must start its own pool, not queue
    work on the parent's (which would wait forever)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        K.analysis2(torch.randn(24, 96, 96), _bank("db5", torch.float32)[1])  # starts the pool here
    finally:
        torch.set_num_threads(threads)
    assert K._pool is not None
    pid = os.fork()
    if pid == 0:  # the child: no torch work (OpenMP is not fork-safe), only the pool's state
        os._exit(0 if K._pool is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert K._pool is not None  # the parent keeps its pool


def test_kernels_compile_without_a_writable_cache_location(monkeypatch):
    """A read-only install with no writable cache directory compiles the kernels in memory
    instead of failing (numba raises when no cache locator applies)."""
    import numba.core.caching as caching

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="no locator"):
        K.numba.njit(cache=True)(lambda v: v)  # what the kernels would meet
    monkeypatch.setattr(K, "_kernels", K._kernels.__wrapped__)  # build afresh, not from the lru cache
    h, F = _bank("db2")
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 9, 12)))
    cA = K.analysis2(x, F)[0]
    ref = pywt.dwt2(x.numpy(), pywt.Wavelet("db2"), mode="zero", axes=(-2, -1))[0]
    np.testing.assert_allclose(cA.numpy(), ref, rtol=0, atol=1e-12)


def test_squared_distance_and_abs_sum_equal_numpy_and_their_gradients():
    """The fused loss passes: float64 sums of float32 data, gradients 2 (a - b) and sign(t)."""
    rng = np.random.default_rng(6)
    a, b = (torch.from_numpy(rng.standard_normal((7, 33, 40)).astype(np.float32)).requires_grad_() for _ in "ab")
    c = torch.from_numpy(rng.standard_normal(11).astype(np.float32)).requires_grad_()
    an, bn, cn = (t.detach().numpy().astype(np.float64) for t in (a, b, c))
    sq = K.SquaredDistance.apply(a, b)
    assert sq.dtype == torch.float32 and float(sq.detach()) == pytest.approx(((an - bn) ** 2).sum(), rel=1e-7)
    ga, gb = torch.autograd.grad(3 * sq, (a, b))
    np.testing.assert_allclose(ga.numpy(), 6 * (an - bn), rtol=1e-6, atol=1e-6)
    assert torch.equal(gb, -ga)
    l1 = K.AbsSum.apply(a, c)
    assert float(l1.detach()) == pytest.approx(np.abs(an).sum() + np.abs(cn).sum(), rel=1e-7)
    ga, gc = torch.autograd.grad(2 * l1, (a, c))
    assert torch.equal(ga, 2 * torch.sign(a.detach())) and torch.equal(gc, 2 * torch.sign(c.detach()))
    x64, y64 = (torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True) for _ in "xy")
    assert torch.autograd.gradcheck(K.SquaredDistance.apply, (x64, y64))
    assert torch.autograd.gradgradcheck(K.SquaredDistance.apply, (x64, y64))
    assert torch.autograd.gradcheck(K.AbsSum.apply, (x64, y64))


def test_abs_sum_keeps_nan_and_zero_like_torch():
    """A NaN coefficient makes the loss NaN (divergence is detected, fast math notwithstanding);
    the gradient is torch's abs backward: sign, 0 at 0 and at NaN."""
    t = torch.tensor([[1.5, float("nan"), 0.0, -2.0]], requires_grad=True)
    loss = K.AbsSum.apply(t)
    assert torch.isnan(loss)
    (g,) = torch.autograd.grad(loss, t)
    assert g.tolist() == [[1.0, 0.0, 0.0, -1.0]] == torch.autograd.grad(t.abs().sum(), t)[0].tolist()
    assert torch.isnan(K.SquaredDistance.apply(t, torch.zeros_like(t)))


def test_loss_passes_do_not_depend_on_the_thread_count():
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((16, 128, 128)).astype(np.float32))
    y = x.flip(0).contiguous()
    assert x.numel() >= K.PARALLEL_MIN
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            xr = x.clone().requires_grad_()
            loss = K.SquaredDistance.apply(xr, y) + K.AbsSum.apply(xr)
            out.append((loss.detach(), torch.autograd.grad(loss, xr)[0]))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_only_cpu_float_tensors_of_one_dtype_take_the_loss_passes():
    x = torch.zeros(2, 3)
    assert K.fusable(x) and K.fusable(x, x) and K.fusable(x.double(), x.double())
    assert not K.fusable() and not K.fusable(x, x.double())
    assert not K.fusable(x.half()) and not K.fusable(x.long())


def test_arrays_reach_the_kernels_as_plain_contiguous_values():
    """What autograd may hand a backward: a non-contiguous gradient, a lazily negated view,
    a zero placeholder; each reaches the kernels as its values, C-contiguous."""
    x = torch.arange(12.0).reshape(3, 4)
    for t, ref in [(x.t(), x.t()), (torch._neg_view(x), -x), (torch._efficientzerotensor((3, 4)), torch.zeros(3, 4)),
                   (x.clone().requires_grad_(), x)]:
        a = K._np(t)
        assert a.flags["C_CONTIGUOUS"] and np.array_equal(a, ref.numpy())
