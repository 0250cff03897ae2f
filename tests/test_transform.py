"""awd.transform against PyWavelets, hand-computed Haar cases and autograd (grad and double grad).

Every orthogonal pywt family (haar, db, sym, coif, dmey), every boundary mode, odd and even
lengths, J from 1 to beyond pywt's maximum level, and every algorithm (composed matrices,
block-Toeplitz chunks, the automatic mix) must equal ``pywt.wavedec``/``waverec`` (1D) and
``wavedec2``/``waverec2`` (2D) to 1e-12 in float64.

Perfect reconstruction is required to 1e-12 for filters that pywt tabulates orthogonal to
machine precision (haar, db, coif). pywt's sym tables are orthogonal only to 1e-13..1e-11 and
dmey (an FIR approximation) to 2e-3, so for those the round trip must be as good as pywt's own.
"""
from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import pytest
import pywt
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import awd.transform as T
from awd.transform import (MODES, DWT1d, DWT2d, coeff_len, iter_coeffs, lowpass_filter,
                           pywt_wavelet, qmf, wavedec, wavedec2, waverec, waverec2)
from awd.wavelet import filter_bank_metrics

# J beyond pywt's maximum level is tested on purpose (pywt warns; so do we: see
# test_level_warning_like_pywt, where pytest.warns still records the warning).
pytestmark = pytest.mark.filterwarnings("ignore:Level value")

F64 = torch.float64
WAVELETS = ["haar", "db2", "db4", "db10", "sym2", "sym5", "sym8", "coif1", "coif3", "coif5", "dmey"]
LENGTHS = (1, 2, 3, 8, 13, 40, 41)
ATOL = 1e-12


def _h(name: str, dtype=F64) -> torch.Tensor:
    return torch.tensor(lowpass_filter(name), dtype=dtype)


def _rng(*key) -> np.random.Generator:
    """A generator seeded from the test's parameters (crc32: stable across processes)."""
    return np.random.default_rng([zlib.crc32(k.encode()) if isinstance(k, str) else k for k in key])


def _pr_tol(wave: str, x: np.ndarray, ref_rec: np.ndarray) -> float:
    """Reconstruction tolerance: 1e-12, or pywt's own round-trip error for inexact tables."""
    if filter_bank_metrics(lowpass_filter(wave))["orthogonality_error"] < 1e-15:
        return ATOL
    return float(np.abs(ref_rec[tuple(slice(0, s) for s in x.shape)] - x).max()) + ATOL


def _assert_coeffs(ours, ref, atol=ATOL) -> None:
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        if isinstance(b, tuple):
            _assert_coeffs(list(a), list(b), atol)
        else:
            assert tuple(a.shape) == b.shape
            np.testing.assert_allclose(a.detach().numpy(), b, rtol=0, atol=atol)


def _levels(n: int, L: int) -> list[int]:
    """J = 1, pywt's maximum level, and one level beyond it."""
    top = pywt.dwt_max_level(n, L)
    return sorted({1, max(top, 1), top + 1})


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------
def test_haar_by_hand_1d():
    """x = 1..8, Haar (h = [1, 1]/sqrt2, g = [1, -1]/sqrt2), three levels."""
    x = torch.arange(1.0, 9.0, dtype=F64)
    s = math.sqrt(2.0)
    expected = [[18 / s], [-8 / s], [-2.0, -2.0], [-1 / s] * 4]
    coeffs = wavedec(x, _h("haar"), 3, "zero")
    for c, e in zip(coeffs, expected):
        np.testing.assert_allclose(c.numpy(), e, rtol=0, atol=1e-14)
    np.testing.assert_allclose(waverec(coeffs, _h("haar"), "zero").numpy(), x.numpy(), atol=1e-14)


def test_haar_by_hand_2d():
    """[[1, 2], [3, 4]]: cA = 10/2, cH = (3 - 7)/2 (high-pass down the rows), cV = (-1 - 1)/2,
    cD = (-1 + 1)/2."""
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    cA, (cH, cV, cD) = wavedec2(x, _h("haar"), 1, "periodization")
    assert [float(t) for t in (cA, cH, cV, cD)] == pytest.approx([5.0, -2.0, -1.0, 0.0], abs=1e-14)
    ref = pywt.wavedec2(x.numpy(), "haar", mode="periodization", level=1)
    _assert_coeffs([cA, (cH, cV, cD)], ref)


def test_reference_geometries():
    """Band lengths of the AWD experiments (CME: 40 samples, db5, J=4; cosmology: 256^2, J=4)."""
    h = _h("db5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [c.shape[-1] for c in wavedec(torch.zeros(40, dtype=F64), h, 4)] == [10, 10, 12, 16, 24]
    coeffs = wavedec2(torch.zeros(256, 256, dtype=F64), h, 4)
    assert [c[0].shape[-1] for c in coeffs[1:]] == [24, 39, 70, 132]


# --------------------------------------------------------------------------------------------
# Equality with PyWavelets
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wave", WAVELETS)
def test_1d_matches_pywt(wave, mode):
    h, rng = _h(wave), _rng(wave, mode)
    for n in LENGTHS:
        for J in _levels(n, h.numel()):
            x = rng.standard_normal((2, n))
            try:
                ref = pywt.wavedec(x, wave, mode=mode, level=J)
            except ValueError:  # pywt refuses (reflect on 1 sample): so must we
                with pytest.raises(ValueError):
                    wavedec(torch.from_numpy(x), h, J, mode)
                continue
            ref_rec = pywt.waverec(ref, wave, mode=mode)
            for block in (None, 0, 3):
                coeffs = wavedec(torch.from_numpy(x), h, J, mode, block=block)
                _assert_coeffs(coeffs, ref)
                rec = waverec(coeffs, h, mode, block=block)
                np.testing.assert_allclose(rec.numpy(), ref_rec, rtol=0, atol=ATOL)
                np.testing.assert_allclose(rec[..., :n].numpy(), x, rtol=0, atol=_pr_tol(wave, x, ref_rec))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wave", ["db4", "sym5", "coif2"])
def test_1d_long_signals_match_pywt(wave, mode):
    """Long signals: block-Toeplitz levels first, then one composed matrix for the rest."""
    h, rng = _h(wave), _rng(wave, mode, 1)
    for n in (300, 517):
        x = rng.standard_normal((3, n))
        for J in (2, 6):
            ref = pywt.wavedec(x, wave, mode=mode, level=J)
            for block in (None, 8):
                coeffs = wavedec(torch.from_numpy(x), h, J, mode, block=block)
                _assert_coeffs(coeffs, ref)
                np.testing.assert_allclose(waverec(coeffs, h, mode, block=block).numpy(),
                                           pywt.waverec(ref, wave, mode=mode), rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wave", ["haar", "db3", "sym4", "coif2", "db10"])
def test_2d_matches_pywt(wave, mode):
    h, rng = _h(wave), _rng(wave, mode, 2)
    for shape in ((1, 3), (5, 7), (16, 9), (33, 30)):
        for J in (1, 2, 3):
            x = rng.standard_normal((2, *shape))
            try:
                ref = pywt.wavedec2(x, wave, mode=mode, level=J)
            except ValueError:
                with pytest.raises(ValueError):
                    wavedec2(torch.from_numpy(x), h, J, mode)
                continue
            ref_rec = pywt.waverec2(ref, wave, mode=mode)
            for block in (None, 0, 3):
                coeffs = wavedec2(torch.from_numpy(x), h, J, mode, block=block)
                _assert_coeffs(coeffs, ref)
                rec = waverec2(coeffs, h, mode, block=block)
                np.testing.assert_allclose(rec.numpy(), ref_rec, rtol=0, atol=ATOL)
                np.testing.assert_allclose(rec[..., :shape[0], :shape[1]].numpy(), x, rtol=0,
                                           atol=_pr_tol(wave, x, ref_rec))


@pytest.mark.parametrize("mode", MODES)
def test_2d_large_matches_pywt(mode):
    """Axes above the dense-matrix threshold use the automatic block-Toeplitz path."""
    x = _rng(mode, 3).standard_normal((2, 131, 100))
    ref = pywt.wavedec2(x, "db3", mode=mode, level=3)
    coeffs = wavedec2(torch.from_numpy(x), _h("db3"), 3, mode)
    _assert_coeffs(coeffs, ref)
    np.testing.assert_allclose(waverec2(coeffs, _h("db3"), mode).numpy(),
                               pywt.waverec2(ref, "db3", mode=mode), rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
def test_float32_matches_pywt(mode):
    rng = _rng(mode, 4)
    x1, x2 = rng.standard_normal((4, 57)) * 3, rng.standard_normal((2, 40, 37)) * 3
    for block in (None, 0, 4):
        c1 = wavedec(torch.tensor(x1, dtype=torch.float32), _h("db5", torch.float32), 3, mode, block=block)
        _assert_coeffs(c1, pywt.wavedec(x1.astype(np.float32).astype(np.float64), "db5", mode=mode,
                                        level=3), atol=1e-5 * np.abs(x1).max())
        rec1 = waverec(c1, _h("db5", torch.float32), mode, block=block)[..., :57]
        assert rec1.dtype == torch.float32
        np.testing.assert_allclose(rec1.numpy(), x1, rtol=0, atol=1e-5 * np.abs(x1).max())
        c2 = wavedec2(torch.tensor(x2, dtype=torch.float32), _h("db5", torch.float32), 2, mode, block=block)
        _assert_coeffs(c2, pywt.wavedec2(x2.astype(np.float32).astype(np.float64), "db5", mode=mode,
                                         level=2), atol=1e-5 * np.abs(x2).max())
        rec2 = waverec2(c2, _h("db5", torch.float32), mode, block=block)[..., :40, :37]
        np.testing.assert_allclose(rec2.numpy(), x2, rtol=0, atol=1e-5 * np.abs(x2).max())


def test_batch_shapes():
    rng = _rng("batch")
    x = rng.standard_normal((2, 3, 21))
    coeffs = wavedec(torch.from_numpy(x), _h("db3"), 2, "symmetric")
    _assert_coeffs(coeffs, pywt.wavedec(x, "db3", mode="symmetric", level=2, axis=-1))
    single = wavedec(torch.from_numpy(x[1, 2]), _h("db3"), 2, "symmetric")
    assert [tuple(c.shape) for c in single] == [(c.shape[-1],) for c in coeffs]
    assert waverec(coeffs, _h("db3"), "symmetric").shape == (2, 3, 22)
    img = rng.standard_normal((2, 3, 12, 11))
    coeffs2 = wavedec2(torch.from_numpy(img), _h("db3"), 2, "periodic")
    _assert_coeffs(coeffs2, pywt.wavedec2(img, "db3", mode="periodic", level=2, axes=(-2, -1)))
    assert waverec2(coeffs2, _h("db3"), "periodic").shape == (2, 3, 12, 12)
    assert wavedec2(torch.from_numpy(img[0, 0]), _h("db3"), 1, "zero")[0].dim() == 2


@pytest.mark.parametrize("mode", MODES)
def test_none_details_are_zeros_like_pywt(mode):
    x = _rng(mode, 5).standard_normal((2, 29))
    h = _h("sym4")
    coeffs = wavedec(torch.from_numpy(x), h, 3, mode)
    ref = pywt.wavedec(x, "sym4", mode=mode, level=3)
    coeffs[2], ref[2] = None, None  # pywt: no trimming of the approximation at that level
    for block in (None, 0, 2):
        np.testing.assert_allclose(waverec(coeffs, h, mode, block=block).numpy(),
                                   pywt.waverec(ref, "sym4", mode=mode), rtol=0, atol=ATOL)
    img = _rng(mode, 6).standard_normal((13, 10))
    c2, r2 = wavedec2(torch.from_numpy(img), h, 2, mode), pywt.wavedec2(img, "sym4", mode=mode, level=2)
    c2[1], r2[1] = (None, c2[1][1], None), (None, r2[1][1], None)
    np.testing.assert_allclose(waverec2(c2, h, mode).numpy(), pywt.waverec2(r2, "sym4", mode=mode),
                               rtol=0, atol=ATOL)
    c2[2], r2[2] = None, (None, None, None)  # a whole level absent: no trimming either
    np.testing.assert_allclose(waverec2(c2, h, mode).numpy(), pywt.waverec2(r2, "sym4", mode=mode),
                               rtol=0, atol=ATOL)


def test_periodization_is_orthogonal():
    """Even sizes: the periodized transform is an orthogonal map (energy preserved)."""
    x = torch.from_numpy(_rng("energy").standard_normal((3, 64)))
    energy = sum(float((c ** 2).sum()) for c in wavedec(x, _h("coif3"), 3, "periodization"))
    assert energy == pytest.approx(float((x ** 2).sum()), rel=1e-12)
    img = torch.from_numpy(_rng("energy2").standard_normal((32, 48)))
    coeffs = wavedec2(img, _h("db4"), 2, "periodization")
    energy = sum(float((c ** 2).sum()) for c in iter_coeffs(coeffs))
    assert energy == pytest.approx(float((img ** 2).sum()), rel=1e-12)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wave", WAVELETS)
def test_qmf_and_filters_match_pywt(wave):
    w = pywt.Wavelet(wave)
    h = _h(wave)
    np.testing.assert_array_equal(h.numpy(), w.rec_lo)
    np.testing.assert_allclose(qmf(h).numpy(), w.rec_hi, rtol=0, atol=0)
    np.testing.assert_allclose(qmf(torch.stack([h, 2 * h])).numpy(), [w.rec_hi, 2 * np.array(w.rec_hi)])
    for ours, ref in zip(pywt_wavelet(h).filter_bank, w.filter_bank):
        np.testing.assert_array_equal(ours, ref)
    for n in (1, 6, 7, 40):
        for mode in MODES:
            assert coeff_len(n, h.numel(), mode) == pywt.dwt_coeff_len(n, h.numel(), mode)


def test_iter_coeffs_both_layouts():
    a, b, c, d = (torch.full((2,), float(i)) for i in range(4))
    assert [float(t[0]) for t in iter_coeffs([a, b, None, c])] == [0.0, 1.0, 2.0]
    assert [float(t[0]) for t in iter_coeffs([a, (b, None, c), None, (d, d, d)])] == [0, 1, 2, 3, 3, 3]


def test_level_warning_like_pywt():
    x, h = torch.zeros(40, dtype=F64), _h("db5")
    with pytest.warns(UserWarning, match="Level value of 3 is too high"):
        wavedec(x, h, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wavedec(x, h, pywt.dwt_max_level(40, 10))
        wavedec2(torch.zeros(64, 64, dtype=F64), h, 2)


def test_bad_input_errors():
    h = _h("db2")
    with pytest.raises(ValueError, match="not orthogonal"):
        lowpass_filter("bior2.2")
    with pytest.raises(ValueError, match="not orthogonal"):
        DWT1d(pywt.Wavelet("rbio3.3"))
    with pytest.raises(ValueError, match="unknown discrete wavelet"):
        DWT1d("morl")
    with pytest.raises(ValueError, match="even length"):
        DWT1d(np.ones(3))
    with pytest.raises(TypeError, match="dtype"):
        wavedec(torch.zeros(8), h, 1)  # float32 signal, float64 filter
    with pytest.raises(TypeError, match="dtype"):
        wavedec(torch.zeros(8, dtype=torch.int64), h, 1)
    with pytest.raises(ValueError, match="J"):
        wavedec(torch.zeros(8, dtype=F64), h, 0)
    with pytest.raises(ValueError, match="mode"):
        wavedec(torch.zeros(8, dtype=F64), h, 1, "smooth")
    with pytest.raises(ValueError, match="dimension"):
        wavedec2(torch.zeros(8, dtype=F64), h, 1)
    coeffs = wavedec(torch.zeros(16, dtype=F64), h, 2)
    coeffs[1] = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match="shape mismatch"):
        waverec(coeffs, h)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------
def test_module_attributes_and_pywt_export():
    dwt = DWT1d(wave="db5", J=4, mode="zero", dtype=F64)
    assert isinstance(dwt.h, nn.Parameter) and dwt.h.requires_grad
    assert (dwt.filter_length, dwt.J, dwt.mode, dwt.ndim) == (10, 4, "zero", 1)
    np.testing.assert_array_equal(dwt.g.detach().numpy(), pywt.Wavelet("db5").rec_hi)
    for ours, ref in zip(dwt.to_pywt().filter_bank, pywt.Wavelet("db5").filter_bank):
        np.testing.assert_array_equal(ours, ref)
    assert DWT2d("haar", 2).ndim == 2
    np.testing.assert_array_equal(DWT1d(np.array(pywt.Wavelet("sym3").rec_lo)).h.detach().numpy(),
                                  DWT1d(pywt.Wavelet("sym3")).h.detach().numpy())
    assert [n for n, _ in dwt.named_parameters()] == ["h"]


def test_module_matches_pywt_and_follows_dtype():
    x = _rng("module").standard_normal((3, 50))
    ref = pywt.wavedec(x, "db3", mode="periodic", level=3)
    dwt = DWT1d("db3", 3, "periodic", dtype=F64)
    _assert_coeffs(dwt(torch.from_numpy(x)), ref)
    rounded = DWT1d("db3", 3, "periodic", dtype=torch.float32).double()  # documented: keeps the
    assert rounded.h.dtype == F64  # float32-rounded filter, so it is close to pywt but not exact
    err = max(float(np.abs(a.detach().numpy() - b).max()) for a, b in zip(rounded(torch.from_numpy(x)), ref))
    assert 1e-12 < err < 1e-6
    with pytest.raises(TypeError, match="dtype"):
        dwt(torch.zeros(3, 50))
    dwt32 = dwt.float()
    assert dwt32(torch.zeros(3, 50))[0].dtype == torch.float32
    img = _rng("module2").standard_normal((2, 20, 19))
    dwt2 = DWT2d("coif1", 2, "reflect", dtype=F64)
    coeffs2 = dwt2(torch.from_numpy(img))
    _assert_coeffs(coeffs2, pywt.wavedec2(img, "coif1", mode="reflect", level=2))
    np.testing.assert_allclose(dwt2.inverse(coeffs2).detach().numpy(), pywt.waverec2(pywt.wavedec2(
        img, "coif1", mode="reflect", level=2), "coif1", mode="reflect"), rtol=0, atol=ATOL)


def test_module_cache_follows_filter_changes():
    """Operators cached without a graph must be rebuilt whenever h changes, however it changes."""
    x = torch.from_numpy(_rng("cache").standard_normal((4, 30)))
    dwt = DWT1d("db2", 2, "zero", dtype=F64)
    with torch.no_grad():
        before = dwt(x)
        dwt.h.add_(0.01)  # in place (bumps the version counter)
        after = dwt(x)
    expected = wavedec(x, dwt.h.detach(), 2, "zero")
    _assert_coeffs(after, [e.numpy() for e in expected])
    assert not torch.allclose(before[0], after[0])
    dwt.h.data = dwt.h.data * 0 + torch.tensor(lowpass_filter("db2"))  # .data: no version bump
    with torch.no_grad():
        _assert_coeffs(dwt(x), pywt.wavedec(x.numpy(), "db2", mode="zero", level=2))
    with torch.inference_mode():
        dwt.inverse(dwt(x))
    loss = sum(c.square().sum() for c in dwt(x))  # grad mode after inference mode
    loss.backward()
    assert dwt.h.grad is not None and torch.isfinite(dwt.h.grad).all()


@pytest.mark.parametrize("mode", ["zero", "symmetric"])
def test_a_transform_in_inference_mode_first_does_not_break_training(mode):
    """The operator indices are cached across calls: built first under ``torch.inference_mode``
    (an evaluation), they must still serve a later call that records a graph to ``h``."""
    T._index.cache_clear()
    T._gather_pieces.cache_clear()
    x = torch.from_numpy(_rng("inference").standard_normal((3, 41)))
    with torch.inference_mode():
        DWT1d("db3", 2, mode, dtype=F64).inverse(DWT1d("db3", 2, mode, dtype=F64)(x))
    h = torch.tensor(lowpass_filter("db3"), requires_grad=True)
    loss = (waverec(wavedec(x, h, 2, mode), h, mode) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, h)
    assert torch.isfinite(grad).all() and float(grad.abs().max()) > 0


def test_module_filter_gradient_equals_functional():
    x = torch.from_numpy(_rng("grad").standard_normal((5, 33)))
    img = torch.from_numpy(_rng("grad2").standard_normal((2, 17, 14)))
    for dwt, inp, dec, rec in ((DWT1d("sym4", 3, "symmetric", dtype=F64), x, wavedec, waverec),
                               (DWT2d("sym4", 2, "symmetric", dtype=F64), img, wavedec2, waverec2)):
        coeffs = dwt(inp)
        loss = (dwt.inverse(coeffs) ** 2).sum() + sum(c.abs().sum() for c in iter_coeffs(coeffs))
        loss.backward()
        h = dwt.h.detach().clone().requires_grad_(True)
        ref = dec(inp, h, dwt.J, dwt.mode)
        ref_loss = (rec(ref, h, dwt.mode) ** 2).sum() + sum(c.abs().sum() for c in iter_coeffs(ref))
        (grad,) = torch.autograd.grad(ref_loss, h)
        np.testing.assert_allclose(dwt.h.grad.numpy(), grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.from_numpy(_rng("cuda").standard_normal((2, 3, 45, 38)))
    for cls, inp in ((DWT1d, x[0, 0]), (DWT2d, x)):
        dwt = cls("db4", 2, "symmetric", dtype=F64)
        ref = dwt(inp)
        dwt = dwt.to("cuda")
        out = dwt(inp.to("cuda"))
        assert dwt.h.device.type == "cuda"
        for a, b in zip(iter_coeffs(out), iter_coeffs(ref)):
            np.testing.assert_allclose(a.cpu().detach().numpy(), b.detach().numpy(), rtol=0, atol=ATOL)
        out_rec = dwt.inverse(out)
        np.testing.assert_allclose(out_rec.cpu().detach().numpy(), dwt.cpu().inverse(ref).detach().numpy(),
                                   rtol=0, atol=ATOL)


# --------------------------------------------------------------------------------------------
# Gradients: gradcheck and gradgradcheck w.r.t. input/coefficients and the filter
# --------------------------------------------------------------------------------------------
def _filter_for_grad() -> torch.Tensor:
    """db2 slightly perturbed (not orthogonal), so no identity hides an error."""
    g = torch.Generator().manual_seed(7)
    return (_h("db2") + 0.05 * torch.randn(4, generator=g, dtype=F64)).requires_grad_(True)


def _flat(coeffs) -> torch.Tensor:
    return torch.cat([c.reshape(-1) for c in iter_coeffs(coeffs)])


@pytest.mark.parametrize("block", [0, 1])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_1d(mode, block):
    g = torch.Generator().manual_seed(1)
    h = _filter_for_grad()
    x = torch.randn(2, 7, generator=g, dtype=F64, requires_grad=True)

    def forward(x, h):
        return _flat(wavedec(x, h, 2, mode, block=block))
    assert gradcheck(forward, (x, h))
    assert gradgradcheck(forward, (x, h))
    coeffs = [c.detach().requires_grad_(True) for c in wavedec(x, h, 2, mode, block=block)]

    def inverse(h, *cs):
        return waverec(list(cs), h, mode, block=block)
    assert gradcheck(inverse, (h, *coeffs))
    assert gradgradcheck(inverse, (h, *coeffs))


@pytest.mark.parametrize("block", [0, 2])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_2d(mode, block):
    g = torch.Generator().manual_seed(2)
    h = _filter_for_grad()
    x = torch.randn(5, 6, generator=g, dtype=F64, requires_grad=True)

    def forward(x, h):
        return _flat(wavedec2(x, h, 2, mode, block=block))
    assert gradcheck(forward, (x, h))
    assert gradgradcheck(forward, (x, h))
    coeffs = wavedec2(x, h, 2, mode, block=block)
    leaves = [c.detach().requires_grad_(True) for c in iter_coeffs(coeffs)]

    def inverse(h, *flat):
        return waverec2([flat[0], tuple(flat[1:4]), tuple(flat[4:7])], h, mode, block=block)
    assert gradcheck(inverse, (h, *leaves))
    assert gradgradcheck(inverse, (h, *leaves))


def test_algorithm_constants_are_consistent():
    """The automatic choices cover both sides of every threshold used above."""
    assert 1 <= T.BLOCK and T.DENSE_AXIS_MAX < 100 and T.COMPOSITE_MAX < 300
