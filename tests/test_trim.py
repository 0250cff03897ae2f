"""TRIM attributions in the wavelet domain: exact path, fast path, piecewise-linearity check."""
import logging

import numpy as np
import pytest
import pywt
import torch
from torch import nn

from awd.losses import coefficient_l1
from awd.transform import DWT1d, DWT2d, iter_coeffs
from awd.trim import (METHODS, attributions_from_gradients, input_gradients, is_piecewise_linear,
                      synthesis_adjoint, trim_attributions)

F64 = torch.float64
log = logging.getLogger(__name__)

pytestmark = pytest.mark.filterwarnings("ignore:Level value:UserWarning")


def _perturbed(wave: str, scale: float = 0.02, seed: int = 0) -> np.ndarray:
    h = np.asarray(pywt.Wavelet(wave).rec_lo)
    return h + scale * np.random.default_rng(seed).standard_normal(h.size)


def _seeded(build, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().to(F64).eval()


class LSTMTeacher(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x):
        _, (h, _) = self.lstm(x.unsqueeze(-1))
        return self.fc(h[-1])


def relu_cnn_1d(n: int) -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, n)), nn.Conv1d(1, 4, 5), nn.BatchNorm1d(4), nn.ReLU(),
                         nn.MaxPool1d(2), nn.Conv1d(4, 4, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * ((n - 4) // 2), 2))


def relu_cnn_2d(height: int) -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, height)), nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3))


def _loss_grad(model, dwt, x, target, method, fast, ig_steps=6):
    """Gradient of the L1 interpretation loss w.r.t. h, and the attribution values."""
    dwt.h.grad = None
    if fast:
        g = input_gradients(model, x, target, 7, method=method, ig_steps=ig_steps)
        attr = attributions_from_gradients(dwt, x, g, method)
    else:
        attr = trim_attributions(model, dwt, x, target, method, ig_steps=ig_steps)
    coefficient_l1(attr).backward()
    return dwt.h.grad.clone(), [t.detach() for t in iter_coeffs(attr)]


def test_saliency_of_linear_teacher_is_the_dwt_of_its_weights():
    """For an orthogonal filter in 'zero' mode the synthesis is the adjoint of the analysis,
    so the saliency of f(x) = w.x is pywt.wavedec(w) for every sample."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 2).to(F64)
    x = torch.randn(5, 64, dtype=F64)
    dwt = DWT1d("db5", J=4, mode="zero", dtype=F64)
    sal = trim_attributions(lin, dwt, x, target=1, create_graph=False)
    ref = pywt.wavedec(lin.weight[1].detach().numpy(), "db5", mode="zero", level=4)
    for ours, expected in zip(sal, ref):
        np.testing.assert_allclose(ours.detach().numpy(), np.broadcast_to(expected, ours.shape), atol=1e-13)
    # input x gradient sums to w.x (the output minus the bias) when reconstruction is perfect
    ixg = trim_attributions(lin, dwt, x, target=1, method="input_x_gradient", create_graph=False)
    total = sum(t.sum(dim=-1) for t in ixg)
    np.testing.assert_allclose(total.detach().numpy(), (x @ lin.weight[1]).detach().numpy(), atol=1e-12)


def test_saliency_of_linear_teacher_2d():
    torch.manual_seed(1)
    W = torch.randn(24, 20, dtype=F64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(480, 1, bias=False)).to(F64)
    with torch.no_grad():
        model[1].weight.copy_(W.reshape(1, -1))
    dwt = DWT2d("sym4", J=2, mode="zero", dtype=F64)
    sal = trim_attributions(model, dwt, torch.randn(3, 24, 20, dtype=F64), target=0, create_graph=False)
    ref = pywt.wavedec2(W.numpy(), "sym4", mode="zero", level=2)
    np.testing.assert_allclose(sal[0][1].detach().numpy(), ref[0], atol=1e-13)
    for ours, expected in zip(sal[1:], ref[1:]):
        for o, e in zip(ours, expected):
            np.testing.assert_allclose(o[2].detach().numpy(), e, atol=1e-13)


def test_integrated_gradients_completeness_for_relu_network():
    """sum of IG over coefficients = f(x) - f(0) (path from 0 to x in input space)."""
    model = _seeded(lambda: nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)))
    x = torch.randn(4, 32, dtype=F64, generator=torch.Generator().manual_seed(2))
    dwt = DWT1d("db3", J=3, mode="zero", dtype=F64)
    ig = trim_attributions(model, dwt, x, 0, "integrated_gradients", create_graph=False, ig_steps=200)
    total = sum(t.sum(dim=-1) for t in ig).detach()
    with torch.no_grad():
        expected = (model(x) - model(torch.zeros_like(x)))[:, 0]
    np.testing.assert_allclose(total.numpy(), expected.numpy(), atol=2e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("teacher", ["tanh", "lstm", "relu"])
def test_fast_path_attribution_values_are_exact_for_any_teacher(teacher, method):
    n = 37  # odd: reconstruction is one sample longer and gets cropped
    builders = {"tanh": lambda: nn.Sequential(nn.Linear(n, 16), nn.Tanh(), nn.Linear(16, 1)),
                "lstm": lambda: LSTMTeacher(), "relu": lambda: relu_cnn_1d(n)}
    model = _seeded(builders[teacher])
    x = torch.randn(9, n, dtype=F64, generator=torch.Generator().manual_seed(3))
    for mode in ("zero", "symmetric", "periodization"):
        dwt = DWT1d(_perturbed("db4"), J=3, mode=mode, dtype=F64)
        exact = trim_attributions(model, dwt, x, 0, method, create_graph=False, ig_steps=5)
        g = input_gradients(model, x, 0, batch_size=4, method=method, ig_steps=5)
        fast = attributions_from_gradients(dwt, x, g, method, create_graph=False)
        for e, f in zip(iter_coeffs(exact), iter_coeffs(fast)):
            assert e.shape == f.shape
            np.testing.assert_allclose(f.detach().numpy(), e.detach().numpy(), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_fast_path_h_gradient_equals_double_backprop_relu_cnn_1d(method):
    model = _seeded(lambda: relu_cnn_1d(41))
    x = torch.randn(12, 41, dtype=F64, generator=torch.Generator().manual_seed(4))
    dwt = DWT1d(_perturbed("db5", 0.05), J=3, mode="symmetric", dtype=F64)
    g_exact, a_exact = _loss_grad(model, dwt, x, 1, method, fast=False)
    g_fast, a_fast = _loss_grad(model, dwt, x, 1, method, fast=True)
    assert float(g_exact.norm()) > 1e-3
    assert float((g_fast - g_exact).norm() / g_exact.norm()) < 1e-6
    np.testing.assert_allclose(g_fast.numpy(), g_exact.numpy(), atol=1e-9)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_fast_path_h_gradient_equals_double_backprop_relu_cnn_2d(method):
    model = _seeded(lambda: relu_cnn_2d(19))
    x = torch.randn(5, 19, 22, dtype=F64, generator=torch.Generator().manual_seed(5))
    dwt = DWT2d(_perturbed("db2", 0.05), J=2, mode="zero", dtype=F64)
    g_exact, _ = _loss_grad(model, dwt, x, 2, method, fast=False)
    g_fast, _ = _loss_grad(model, dwt, x, 2, method, fast=True)
    assert float(g_exact.norm()) > 1e-3
    assert float((g_fast - g_exact).norm() / g_exact.norm()) < 1e-6


@pytest.mark.parametrize("teacher", ["tanh", "lstm"])
def test_fast_path_gap_for_smooth_teachers(teacher):
    """For smooth teachers the fast path drops the curvature term: the h-gradient differs."""
    n = 40
    builders = {"tanh": lambda: nn.Sequential(nn.Linear(n, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                                              nn.Linear(16, 1)),
                "lstm": lambda: LSTMTeacher(8)}
    model = _seeded(builders[teacher])
    x = torch.randn(32, n, dtype=F64, generator=torch.Generator().manual_seed(6))
    dwt = DWT1d(_perturbed("db5"), J=4, mode="zero", dtype=F64)
    g_exact, a_exact = _loss_grad(model, dwt, x, 0, "saliency", fast=False)
    g_fast, a_fast = _loss_grad(model, dwt, x, 0, "saliency", fast=True)
    for e, f in zip(a_exact, a_fast):
        np.testing.assert_allclose(f.numpy(), e.numpy(), atol=1e-12)
    gap = float((g_fast - g_exact).norm() / g_exact.norm())
    log.info("fast-path relative h-gradient gap, %s teacher: %.4f", teacher, gap)
    assert 1e-3 < gap < 10.0


def test_synthesis_adjoint_is_the_transpose_of_the_inverse():
    """<S c, v> = <c, S^T v> for random coefficients and input-space vectors (odd size)."""
    dwt = DWT1d(_perturbed("sym4"), J=3, mode="reflect", dtype=F64)
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 45, dtype=F64, generator=gen)
    with torch.no_grad():
        coeffs = [torch.randn(c.shape, dtype=F64, generator=gen) for c in dwt(x)]
        x_rec = dwt.inverse(coeffs)[:, :45]
    v = torch.randn(3, 45, dtype=F64, generator=gen)
    adj = synthesis_adjoint(dwt, coeffs, v, create_graph=False)
    lhs = (x_rec * v).sum()
    rhs = sum((c * a).sum() for c, a in zip(coeffs, adj))
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)


@pytest.mark.parametrize("cls, shape, J, mode, shortcut", [
    (DWT1d, (3, 45), 3, "zero", True), (DWT1d, (3, 64), 3, "periodization", True),
    (DWT1d, (3, 45), 2, "periodization", False), (DWT1d, (3, 45), 2, "reflect", False),
    (DWT2d, (2, 19, 22), 2, "zero", True), (DWT2d, (2, 32, 24), 2, "periodization", True),
    (DWT2d, (2, 32, 22), 2, "periodization", False)])
@pytest.mark.parametrize("use_analysis", [True, False])
def test_synthesis_adjoint_values_and_filter_gradient_match_the_inverse(cls, shape, J, mode, shortcut, use_analysis,
                                                                        monkeypatch):
    """<c, S_h^T v> = <S_h c, v> as functions of h: equal values and equal h-gradients, whether
    the adjoint is taken as the analysis (zero; periodization at even sizes) or by autograd."""
    from awd.trim import _analysis_is_adjoint

    monkeypatch.setattr("awd.trim.ANALYSIS_ADJOINT", use_analysis)
    dwt = cls(_perturbed("db3", 0.05), J=J, mode=mode, dtype=F64)
    assert _analysis_is_adjoint(dwt, torch.Size(shape)) is shortcut
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        layout = dwt(torch.zeros(shape, dtype=F64))
    coeffs = [torch.randn(c.shape, dtype=F64, generator=gen) for c in iter_coeffs(layout)]
    it = iter(coeffs)
    structured = [next(it) if torch.is_tensor(c) else tuple(next(it) for _ in c) for c in layout]
    v = torch.randn(shape, dtype=F64, generator=gen)

    dwt.h.grad = None
    adj = synthesis_adjoint(dwt, structured, v, create_graph=True)
    lhs = sum((c * a).sum() for c, a in zip(coeffs, iter_coeffs(adj)))
    lhs.backward()
    g_adjoint = dwt.h.grad.clone()
    dwt.h.grad = None
    x_rec = dwt.inverse(structured)[tuple(slice(0, n) for n in shape)]
    rhs = (x_rec * v).sum()
    rhs.backward()
    assert float(lhs.detach()) == pytest.approx(float(rhs.detach()), rel=1e-12)
    assert float(g_adjoint.norm()) > 1e-3
    np.testing.assert_allclose(g_adjoint.numpy(), dwt.h.grad.numpy(), rtol=1e-10, atol=1e-12)
    no_graph = synthesis_adjoint(dwt, structured, v, create_graph=False)
    assert not any(t.requires_grad for t in iter_coeffs(no_graph))


def test_input_gradients_match_per_sample_autograd_and_ignore_batch_size():
    model = _seeded(lambda: nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 3)))
    X = torch.randn(11, 10, dtype=F64, generator=torch.Generator().manual_seed(9))
    g = input_gradients(model, X, target=2, batch_size=4)
    for i in (0, 5, 10):
        xi = X[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(model(xi)[0, 2], xi)
        np.testing.assert_allclose(g[i].numpy(), gi[0].numpy(), atol=1e-14)
    np.testing.assert_array_equal(input_gradients(model, X, 2, batch_size=100).numpy(), g.numpy())
    # integrated-gradients summary: the mean gradient along alpha * x
    gi = input_gradients(model, X, 2, 5, method="integrated_gradients", ig_steps=3)
    mean = sum(input_gradients(model, a * X, 2, 5) for a in (1 / 6, 3 / 6, 5 / 6)) / 3
    np.testing.assert_allclose(gi.numpy(), mean.numpy(), atol=1e-14)


def test_bad_target_and_method():
    model = _seeded(lambda: nn.Linear(8, 2))
    x = torch.randn(2, 8, dtype=F64)
    dwt = DWT1d("haar", J=2, dtype=F64)
    with pytest.raises(IndexError, match="target column 2"):
        trim_attributions(model, dwt, x, target=2)
    with pytest.raises(ValueError, match="method"):
        trim_attributions(model, dwt, x, target=0, method="gradcam")


def test_is_piecewise_linear():
    assert is_piecewise_linear(relu_cnn_1d(20).eval())
    assert is_piecewise_linear(relu_cnn_2d(19).eval())
    assert not is_piecewise_linear(relu_cnn_1d(20).train())  # BatchNorm/Dropout in training mode
    for act in (nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.SiLU(), nn.Softplus()):
        assert not is_piecewise_linear(nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 1)).eval())
    assert not is_piecewise_linear(LSTMTeacher().eval())
    assert is_piecewise_linear(nn.Sequential(nn.Linear(4, 4), nn.ReLU6(), nn.Identity()).eval())
