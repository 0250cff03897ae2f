"""AWD loss terms against theory, hand-computed values and an independent NumPy reference."""
import math

import numpy as np
import pytest
import pywt
import torch

from awd.losses import (FILTER_TERMS, coefficient_l1, cmf_loss, filter_losses, highpass_sum_loss,
                        lowpass_sum_loss, orthogonality_loss, reconstruction_loss, total_loss, unit_norm_loss)
from awd.transform import DWT1d, DWT2d

pytestmark = pytest.mark.filterwarnings("ignore:Level value:UserWarning")

ORTHOGONAL = ["haar", "db2", "db4", "db5", "db8", "sym4", "sym5", "sym8", "coif1", "coif2", "coif3"]


def _h(values) -> torch.Tensor:
    return torch.tensor(np.asarray(values, dtype=np.float64))


def _numpy_terms(h: np.ndarray) -> dict[str, float]:
    """Independent NumPy version of the five validity terms (written from their definitions)."""
    L = len(h)
    g = np.array([(-1) ** n * h[L - 1 - n] for n in range(L)])
    power = np.abs(np.fft.fft(h)) ** 2
    r = np.correlate(h, h, mode="full")          # lags -(L-1) .. L-1, lag 0 at index L-1
    even = r[(L - 1) % 2::2]
    delta = (np.arange(-(L - 1), L)[(L - 1) % 2::2] == 0).astype(float)
    return {
        "lowpass_sum": 0.5 * (h.sum() - math.sqrt(2)) ** 2,
        "highpass_sum": 0.5 * g.sum() ** 2,
        "unit_norm": 0.5 * ((h ** 2).sum() - 1) ** 2,
        "cmf": 0.5 * np.sum((power[: L // 2] + power[L // 2:] - 2) ** 2),
        "orthogonality": 0.5 * np.sum((even - delta) ** 2),
    }


@pytest.mark.parametrize("wave", ORTHOGONAL)
def test_filter_terms_vanish_at_orthogonal_wavelets(wave):
    terms = filter_losses(_h(pywt.Wavelet(wave).rec_lo))
    for name in FILTER_TERMS:
        assert abs(float(terms[name])) < 1e-12, (wave, name, float(terms[name]))


def test_filter_terms_hand_computed():
    # h = (1, 1, 0, 0): sum 2, norm^2 2, g = (0, 0, 1, -1), DFT H_k = 1 + exp(-i pi k / 2)
    # -> |H|^2 = (4, 2, 0, 2); CMF pairs (4 + 0 - 2)^2 + (2 + 2 - 2)^2 = 8; autocorrelation r0 = 2, r2 = 0.
    h = _h([1.0, 1.0, 0.0, 0.0])
    assert float(lowpass_sum_loss(h)) == pytest.approx(0.5 * (2 - math.sqrt(2)) ** 2, abs=1e-15)
    assert float(highpass_sum_loss(h)) == pytest.approx(0.0, abs=1e-15)
    assert float(unit_norm_loss(h)) == pytest.approx(0.5, abs=1e-15)
    assert float(cmf_loss(h)) == pytest.approx(4.0, abs=1e-13)
    assert float(orthogonality_loss(h)) == pytest.approx(0.5, abs=1e-15)
    # a 2-tap filter that is orthonormal but not low-pass: only the two sum terms are non-zero
    h2 = _h([0.8, 0.6])
    assert float(lowpass_sum_loss(h2)) == pytest.approx(0.5 * (1.4 - math.sqrt(2)) ** 2, abs=1e-15)
    assert float(highpass_sum_loss(h2)) == pytest.approx(0.5 * 0.2 ** 2, abs=1e-15)
    assert float(cmf_loss(h2)) == pytest.approx(0.0, abs=1e-15)
    assert float(orthogonality_loss(h2)) == pytest.approx(0.0, abs=1e-15)
    # orthogonality with lag 2: h = (1, 0, 1, 0)/sqrt(2): r0 = 1, r2 = 1/2 counted at m = +-1
    h3 = _h(np.array([1.0, 0.0, 1.0, 0.0]) / math.sqrt(2))
    assert float(orthogonality_loss(h3)) == pytest.approx(0.5 * 2 * 0.25, abs=1e-15)


@pytest.mark.parametrize("wave", ["db5", "sym5", "coif2", "db2"])
def test_filter_terms_match_numpy_for_perturbed_filters(wave):
    rng = np.random.default_rng(7)
    h = np.asarray(pywt.Wavelet(wave).rec_lo) + 0.05 * rng.standard_normal(len(pywt.Wavelet(wave).rec_lo))
    ours = filter_losses(_h(h))
    ref = _numpy_terms(h)
    for name in FILTER_TERMS:
        assert float(ours[name]) == pytest.approx(ref[name], rel=1e-12, abs=1e-15), name
        assert ref[name] > 1e-6, name  # the perturbation is visible in every term


def test_cmf_is_not_the_broken_pypi_version():
    """awave 0.1's fallback computed a length-1 FFT: 1/2 sum (h_k^2 + h_{k+L/2}^2 - 2)^2 (8.21 at db5)."""
    def broken(h):
        n = len(h) // 2
        return 0.5 * np.sum((h[:n] ** 2 + h[n:] ** 2 - 2) ** 2)

    h = np.asarray(pywt.Wavelet("db5").rec_lo)
    assert broken(h) == pytest.approx(8.21, abs=0.01)
    assert float(cmf_loss(_h(h))) < 1e-12
    hp = h + 0.03 * np.random.default_rng(1).standard_normal(10)
    ours = float(cmf_loss(_h(hp)))
    assert ours == pytest.approx(_numpy_terms(hp)["cmf"], rel=1e-12)
    assert abs(ours - broken(hp)) > 1.0
    assert not torch.is_complex(cmf_loss(_h(hp)))


def test_cmf_rejects_odd_length():
    with pytest.raises(ValueError, match="even"):
        cmf_loss(_h([0.5, 0.5, 0.5]))


def test_filter_term_gradients_match_finite_differences():
    h = _h(np.asarray(pywt.Wavelet("db4").rec_lo) + 0.1).requires_grad_(True)
    for name in FILTER_TERMS:
        assert torch.autograd.gradcheck(lambda t, n=name: filter_losses(t)[n], (h,)), name


def test_reconstruction_loss_normalisations():
    x = torch.zeros(2, 3, dtype=torch.float64)
    x_rec = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    assert float(reconstruction_loss(x, x_rec)) == pytest.approx(14 / 2)
    assert float(reconstruction_loss(x, x_rec, "mean")) == pytest.approx(14 / 6)
    with pytest.raises(ValueError, match="normalization"):
        reconstruction_loss(x, x_rec, "sum")
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(x, x_rec[:, :2])


def test_l1_counts_coefficient_tensors_1d_and_2d():
    a = torch.full((2, 3), -1.0, dtype=torch.float64)
    d = torch.full((2, 5), 2.0, dtype=torch.float64)
    # 1D, J=1: sum |c| = 2*3*1 + 2*5*2 = 26, 2 tensors, B = 2
    assert float(coefficient_l1([a, d])) == pytest.approx(26 / (2 * 2))
    assert float(coefficient_l1([a, d], "mean")) == pytest.approx(26 / 16)
    # 2D, J=1: [cA, (cH, cV, cD)] counts as 2 tensors (orientations stacked, as in the reference)
    cA = torch.ones(2, 2, 2, dtype=torch.float64)
    det = tuple(torch.full((2, 3, 3), v, dtype=torch.float64) for v in (1.0, -2.0, 3.0))
    total = 8 + 18 * (1 + 2 + 3)
    assert float(coefficient_l1([cA, det])) == pytest.approx(total / (2 * 2))
    assert float(coefficient_l1([cA, det], "mean")) == pytest.approx(total / (8 + 3 * 18))


def test_l1_reference_normalisation_on_real_transforms():
    torch.manual_seed(0)
    x1 = torch.randn(4, 40, dtype=torch.float64)
    with torch.no_grad():
        c1 = DWT1d("db5", J=4, mode="zero", dtype=torch.float64)(x1)
    assert len(c1) == 5
    ref1 = sum(np.abs(c).sum() for c in pywt.wavedec(x1.numpy(), "db5", mode="zero", level=4, axis=-1))
    assert float(coefficient_l1(c1)) == pytest.approx(ref1 / (5 * 4), rel=1e-12)
    x2 = torch.randn(3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        c2 = DWT2d("db2", J=3, mode="zero", dtype=torch.float64)(x2)
    ref2 = pywt.wavedec2(x2.numpy(), "db2", mode="zero", level=3, axes=(-2, -1))
    total = np.abs(ref2[0]).sum() + sum(np.abs(np.stack(lvl)).sum() for lvl in ref2[1:])
    assert float(coefficient_l1(c2)) == pytest.approx(total / (4 * 3), rel=1e-12)  # J+1 = 4 tensors


def test_total_loss_weights():
    terms = {"reconstruction": torch.tensor(1.0), "lowpass_sum": torch.tensor(0.1),
             "highpass_sum": torch.tensor(0.2), "unit_norm": torch.tensor(0.3), "cmf": torch.tensor(0.4),
             "orthogonality": torch.tensor(0.5), "sparsity": torch.tensor(10.0),
             "interpretation": torch.tensor(100.0)}
    assert float(total_loss(terms, lam=0.01, gamma=0.001)) == pytest.approx(1 + 1.5 + 0.1 + 0.1)
    assert float(total_loss(terms, lam=0.0, gamma=0.0)) == pytest.approx(2.5)
    no_attr = {k: v for k, v in terms.items() if k != "interpretation"}
    assert float(total_loss(no_attr, lam=0.01, gamma=5.0)) == pytest.approx(2.6)


@pytest.mark.parametrize("normalization", ["reference", "mean"])
def test_fused_loss_passes_equal_torchs_ops(monkeypatch, normalization):
    """Reconstruction and L1 terms on the fused kernels (the CPU default) equal torch's ops in
    value (float32 rounding) and in their gradients through a real 2D transform."""
    import awd.losses as losses

    x = torch.from_numpy(np.random.default_rng(8).standard_normal((4, 40, 36)).astype(np.float32))
    dwt = DWT2d("db3", J=2, mode="zero", dtype=torch.float32)
    out = {}
    for fused in (True, False):
        monkeypatch.setattr(losses, "FUSED", fused)
        coeffs = dwt(x)
        rec = reconstruction_loss(x, dwt.inverse(coeffs)[:, :40, :36], normalization)
        l1 = coefficient_l1(coeffs, normalization)
        assert ("SquaredDistance" in type(rec.grad_fn.next_functions[0][0]).__name__) == fused
        out[fused] = (float(rec.detach()), float(l1.detach()), torch.autograd.grad(rec + 0.1 * l1, dwt.h)[0])
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5, abs=1e-12)
    assert out[True][1] == pytest.approx(out[False][1], rel=1e-6)
    torch.testing.assert_close(out[True][2], out[False][2], rtol=1e-5, atol=1e-7)
