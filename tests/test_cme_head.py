"""The CME head (top-m signed coefficients per scale + OLS) against PyWavelets, numpy and
hand-computed cases; CV selection on a synthetic task; the LSTM teacher's shapes."""
import numpy as np
import pytest
import pywt
import torch

from awd.stats import r2
from domains.cme.head import (MaxCoefficients, cv_r2, fit_and_score, make_head, select_best,
                              single_coefficient_reconstructions, wavelet_coefficients)
from domains.cme.lstm import LSTMNet, build_lstm

DB5 = np.array(pywt.Wavelet("db5").rec_lo)
# J = 4 with a 10-tap filter on 40 samples is beyond pywt's "useful" level; the reference uses it
LEVEL_WARNING = pytest.mark.filterwarnings("ignore:Level value of:UserWarning")
S2 = np.sqrt(2.0)


@LEVEL_WARNING
def test_pywt_features_agree_with_awd_transform_for_a_learned_filter():
    # the head uses pywt with the filter bank of h; the distiller's torch DWT1d must give the same
    from awd.transform import DWT1d

    rng = np.random.default_rng(0)
    h = DB5 + 0.01 * rng.normal(size=DB5.size)  # a perturbed, non-orthogonal "learned" filter
    X = rng.normal(size=(20, 40))
    dwt = DWT1d(h, J=4, mode="zero", dtype=torch.float64)
    with torch.no_grad():
        torch_coeffs = [c.numpy() for c in dwt(torch.as_tensor(X))]
    np_coeffs = wavelet_coefficients(X, h, 4, "zero")
    assert [c.shape for c in torch_coeffs] == [c.shape for c in np_coeffs]
    for a, b in zip(torch_coeffs, np_coeffs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    with pytest.warns(UserWarning):
        ref = pywt.wavedec(X, "db5", mode="zero", level=4, axis=-1)
    for a, b in zip(wavelet_coefficients(X, DB5, 4, "zero"), ref):
        np.testing.assert_array_equal(a, b)


def test_haar_features_by_hand_signed_sorted_and_zero_padded():
    # Haar, J=1: a_k = (x_2k + x_2k+1)/sqrt2, d_k = (x_2k - x_2k+1)/sqrt2 (pywt's sign convention)
    x = np.array([[4.0, 0.0, 1.0, 3.0, -2.0, 2.0, 5.0, 5.0]])
    tf = MaxCoefficients(h=pywt.Wavelet("haar").rec_lo, J=1, mode="zero", m=6).fit(x)
    feats, pos = tf.features_and_positions(x)
    # a = [4, 4, 0, 10]/sqrt2 -> [10, 4, 4, 0]/sqrt2 then two zero pads
    # d = [4, -2, -4, 0]/sqrt2 -> [4, 0, -2, -4]/sqrt2: signed order, -4 is last (not first by magnitude)
    want = np.array([10, 4, 4, 0, 0, 0, 4, 0, -2, -4, 0, 0]) / S2
    np.testing.assert_allclose(feats[0], want, atol=1e-14)
    np.testing.assert_array_equal(pos[0], [3, 0, 1, 2, -1, -1, 0, 3, 1, 2, -1, -1])
    assert list(tf.get_feature_names_out()[:2]) == ["a1_top1", "a1_top2"]
    assert tf.scale_lengths_ == [4, 4]


def test_db5_features_match_pywt_wavedec_top6_descending():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 40))
    feats = MaxCoefficients(h=DB5, J=4, mode="zero", m=6).fit_transform(X)
    assert feats.shape == (50, 30)
    with pytest.warns(UserWarning):  # pywt warns that J=4 is "too high" for 40 samples with db5
        ref = pywt.wavedec(X, "db5", mode="zero", level=4, axis=-1)
    assert [c.shape[1] for c in ref] == [10, 10, 12, 16, 24]
    want = np.hstack([np.sort(c, axis=1)[:, ::-1][:, :6] for c in ref])
    np.testing.assert_allclose(feats, want, rtol=0, atol=1e-12)
    # signed, not magnitude: a trace with one large negative detail coefficient does not rank it first
    assert np.all(np.diff(feats.reshape(50, 5, 6), axis=2) <= 0)


def test_padding_when_scales_are_shorter_than_m():
    # haar, L=8, J=3: scale lengths a3=1, d3=1, d2=2, d1=4 -> 5, 5, 4, 2 zero pads
    x = np.arange(8, dtype=float)[None, :] - 3.0
    tf = MaxCoefficients(h=pywt.Wavelet("haar").rec_lo, J=3, m=6).fit(x)
    feats, pos = tf.features_and_positions(x)
    assert tf.scale_lengths_ == [1, 1, 2, 4]
    assert feats.shape == (1, 24)
    ref = pywt.wavedec(x[0], "haar", mode="zero", level=3)
    for s, c in enumerate(ref):
        block, bpos = feats[0, 6 * s:6 * s + 6], pos[0, 6 * s:6 * s + 6]
        np.testing.assert_allclose(block[:len(c)], np.sort(c)[::-1], atol=1e-13)
        assert np.all(block[len(c):] == 0) and np.all(bpos[len(c):] == -1)


def test_ols_pipeline_matches_numpy_lstsq():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 40))
    y = rng.normal(size=300)
    X_test = rng.normal(size=(40, 40))
    pipe = make_head(DB5).fit(X, y)
    F = MaxCoefficients(h=DB5).fit_transform(X)
    A = np.hstack([np.ones((len(F), 1)), F])
    beta = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(pipe.named_steps["ols"].intercept_, beta[0], atol=1e-9)
    np.testing.assert_allclose(pipe.named_steps["ols"].coef_, beta[1:], atol=1e-9)
    F_test = MaxCoefficients(h=DB5).fit_transform(X_test)
    np.testing.assert_allclose(pipe.predict(X_test), beta[0] + F_test @ beta[1:], atol=1e-9)


def test_cv_selection_picks_the_wavelet_that_carries_the_signal():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 40))
    sym5 = np.array(pywt.Wavelet("sym5").rec_lo)
    coif2 = np.array(pywt.Wavelet("coif2").rec_lo)
    F = MaxCoefficients(h=sym5).fit_transform(X)
    beta = rng.normal(size=F.shape[1])
    signal = F @ beta
    y = signal + 0.1 * signal.std() * rng.normal(size=len(X))
    cands = [DB5, sym5, coif2]
    scores = [cv_r2(h, X, y)[0] for h in cands]
    assert select_best(scores) == 1
    assert scores[1] > 0.97  # noise sd 0.1 of the signal sd -> R^2 ~ 0.99
    assert max(scores[0], scores[2]) < scores[1] - 0.05
    # unshuffled 5-fold KFold, computed by hand, gives the same CV score
    fold_scores = []
    for k in range(5):
        test = np.arange(k * 120, (k + 1) * 120)
        train = np.setdiff1d(np.arange(600), test)
        pipe = make_head(sym5).fit(X[train], y[train])
        fold_scores.append(r2(y[test], pipe.predict(X[test])))
    assert scores[1] == pytest.approx(np.mean(fold_scores), abs=1e-12)


def test_fit_and_score_reports_test_r2_and_bootstrap_se():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 40))
    y = MaxCoefficients(h=DB5).fit_transform(X)[:, 0] + 0.5 * rng.normal(size=400)
    res = fit_and_score(DB5, X[:300], y[:300], X[300:], y[300:], n_boot=200, seed=0)
    assert res.r2 == pytest.approx(r2(y[300:], res.pred))
    assert 0.5 < res.r2 < 0.95
    assert 0.005 < res.r2_se < 0.2


def test_single_coefficient_reconstruction_is_the_synthesis_atom():
    # db5 in 'zero' mode keeps every coefficient of the full convolution, so analysis W is an
    # isometry and synthesis is W^T: a reconstruction r from one coefficient c obeys <r, x> = c^2
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 40))
    head = make_head(DB5).fit(X, X[:, 5] - X[:, 30])
    recs = single_coefficient_reconstructions(X[0], head, n_top=4)
    assert len(recs) == 4
    assert abs(recs[0]["contribution"]) >= abs(recs[-1]["contribution"])
    for rec in recs:
        assert rec["reconstruction"].shape == (40,)
        assert rec["reconstruction"] @ X[0] == pytest.approx(rec["coefficient"] ** 2, rel=1e-10)
        c = wavelet_coefficients(X[:1], DB5, 4, "zero")[["a4", "d4", "d3", "d2", "d1"].index(rec["scale"])]
        assert c[0, rec["position"]] == rec["coefficient"]


def test_lstm_shapes_and_not_piecewise_linear():
    from awd.trim import is_piecewise_linear

    net = build_lstm(n_outputs=1, seed=0)
    assert net.lstm.hidden_size == 20 and net.lstm.input_size == 1 and net.lstm.batch_first
    assert tuple(net.fc.weight.shape) == (1, 20)
    x = torch.randn(7, 40)
    out = net(x)
    assert out.shape == (7, 1)
    torch.testing.assert_close(net(x[:, :, None]), out)
    # the output is the linear map of the last hidden state of the LSTM
    _, (h_n, _) = net.lstm(x[:, :, None])
    torch.testing.assert_close(out, h_n[0] @ net.fc.weight.T + net.fc.bias)
    assert not is_piecewise_linear(net)
    assert LSTMNet(hidden_size=5, n_outputs=3)(x).shape == (7, 3)
    with pytest.raises(ValueError):
        net(torch.randn(2, 40, 2))
    # same seed, same weights; the global RNG is untouched
    state = torch.random.get_rng_state()
    torch.testing.assert_close(build_lstm(seed=3).fc.weight, build_lstm(seed=3).fc.weight)
    assert torch.equal(state, torch.random.get_rng_state())


def _lstm_saliency_grads(net, x, dwt):
    """Gradient w.r.t. h of the L1 interpretation loss: exact (double back-prop) and fast
    (precomputed input gradients); also the attribution values of both paths."""
    from awd.trim import attributions_from_gradients, input_gradients, trim_attributions

    attr_exact = trim_attributions(net, dwt, x, 0, "saliency", create_graph=True)
    (g_exact,) = torch.autograd.grad(sum(a.abs().sum() for a in attr_exact), dwt.h)
    grads = input_gradients(net, x, 0, batch_size=len(x))
    attr_fast = attributions_from_gradients(dwt, x, grads, "saliency", create_graph=True)
    (g_fast,) = torch.autograd.grad(sum(a.abs().sum() for a in attr_fast), dwt.h)
    return attr_exact, attr_fast, g_exact, g_fast


@LEVEL_WARNING
def test_lstm_fast_path_values_exact_but_filter_gradient_is_not():
    from awd.transform import DWT1d

    torch.manual_seed(0)
    net = build_lstm(seed=1).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(16, 40, dtype=torch.float64)
    dwt = DWT1d("db5", J=4, mode="zero", dtype=torch.float64)
    attr_exact, attr_fast, g_exact, g_fast = _lstm_saliency_grads(net, x, dwt)
    for a, b in zip(attr_exact, attr_fast):  # attribution values: equal for any teacher
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    rel = float((g_exact - g_fast).norm() / g_exact.norm())
    # the fast path drops the LSTM's curvature term: a clear, not a rounding, difference
    assert rel > 1e-3, rel
    # with a linear teacher the two gradients coincide (the curvature term vanishes)
    lin = torch.nn.Linear(40, 1).double()
    for p in lin.parameters():
        p.requires_grad_(False)
    _, _, g_lin_exact, g_lin_fast = _lstm_saliency_grads(lin, x, dwt)
    torch.testing.assert_close(g_lin_exact, g_lin_fast, rtol=1e-9, atol=1e-12)


@LEVEL_WARNING
def test_distiller_auto_uses_exact_path_for_the_lstm():
    from awd.distill import DistillConfig, distill_path

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 40)).astype(np.float32)
    net = build_lstm(seed=0)
    results = {}
    for mode in ("auto", "always"):
        cfg = DistillConfig(epochs=1, batch_size=15, fast_path=mode, progress=False)
        results[mode] = distill_path(net, X[:20], X[20:], lam=1e-3, gammas=[0.1], config=cfg)[0]
    assert results["auto"].fast_path is False
    assert results["always"].fast_path is True
    # both trained from db5; same data and seed, only the interpretation gradient differs (its
    # size is measured in benchmarks/bench_cme_models.py)
    for res in results.values():
        assert np.abs(res.h - DB5).max() > 1e-4
    assert np.abs(results["auto"].h - results["always"].h).max() < 1e-3


@pytest.mark.filterwarnings("ignore:Level value of:UserWarning")
def test_selection_and_scores_per_distillation_seed(tmp_path):
    """Several seeds: each seed selects its own best-CV wavelet; the table keeps the first
    seed's row and adds the mean and sample sd over seeds; one seed: no seed columns."""
    import pandas as pd

    from awd.domain import Dataset
    from domains.cme.head import METHODS, evaluate_heads

    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 40)).astype(np.float32)
    sym5, coif2 = np.array(pywt.Wavelet("sym5").rec_lo), np.array(pywt.Wavelet("coif2").rec_lo)
    y = (MaxCoefficients(h=sym5).fit_transform(X) @ rng.normal(size=30) + rng.normal(size=300)).astype(np.float32)
    split = np.array(["train"] * 180 + ["val"] * 20 + ["test"] * 100)
    ds = Dataset(X=X, y=y[:, None], target_names=["auxilin"], split=split,
                 group=np.repeat([1, 2, 3], 100))
    cfg = {"heads": {"m": 6, "cv_folds": 5}, "distill": {"J": 4, "mode": "zero"},
           "bootstrap": {"n": 50, "seed": 0}, "teacher": {"batch_size": 100}}
    rec = lambda h, gamma, seed: {"h": h, "lam": 0.001, "gamma": gamma, "J": 4, "mode": "zero",  # noqa: E731
                                  "seed": seed}
    grid = [rec(DB5 + 0.01, 0.0, 1), rec(sym5, 0.05, 1), rec(coif2, 0.0, 10), rec(DB5 - 0.01, 0.05, 10)]
    teacher = build_lstm(seed=0).eval()
    evaluate_heads(cfg, ds, grid, teacher, tmp_path / "two", "auxilin")
    fit, test = split != "test", split == "test"
    y = y.astype(np.float64)
    expect = {}
    for seed, cands in ((1, grid[:2]), (10, grid[2:])):
        cv = [cv_r2(c["h"], X[fit].astype(float), y[fit])[0] for c in cands]
        best = cands[select_best(cv)]
        expect[seed] = fit_and_score(best["h"], X[fit], y[fit], X[test], y[test], n_boot=10).r2
    assert expect[1] > expect[10] + 0.1  # seed 1 has the signal's wavelet
    seeds = pd.read_csv(tmp_path / "two/heads/seeds.csv")
    assert len(seeds) == 2 * len(METHODS)
    got = seeds[seeds["method"] == "AWD"].set_index("seed")["r2"]
    assert got[1] == pytest.approx(expect[1], abs=1e-9) and got[10] == pytest.approx(expect[10], abs=1e-9)
    table = pd.read_csv(tmp_path / "two/table.csv").set_index("method")
    assert table.loc["AWD", "r2"] == pytest.approx(expect[1], abs=1e-9)  # first seed's run
    assert table.loc["AWD", "r2_seed_mean"] == pytest.approx((expect[1] + expect[10]) / 2, abs=1e-9)
    assert table.loc["AWD", "r2_seed_sd"] == pytest.approx(abs(expect[1] - expect[10]) / np.sqrt(2), abs=1e-9)
    assert table.loc["LSTM", "r2_seed_sd"] == 0 and table.loc["DB5", "r2_seed_sd"] == 0
    assert (table["n_seeds"] == 2).all()
    evaluate_heads(cfg, ds, grid[:2], teacher, tmp_path / "one", "auxilin")
    one = pd.read_csv(tmp_path / "one/table.csv")
    assert list(one.columns) == ["method", "r2", "r2_se", "cv_r2", "cv_r2_sd", "lam", "gamma", "n_train", "n_test"]
    assert one.set_index("method").loc["AWD", "r2"] == pytest.approx(expect[1], abs=1e-9)


def test_seed_wavelets_figure_draws_every_seed(tmp_path):
    from domains.cme.figures import seed_wavelets_figure
    seeds = {str(s): {"h": (DB5 + 0.01 * np.sin(s + np.arange(10))).tolist(), "lam": 0.001, "gamma": 0.01}
             for s in (1, 10, 100)}
    path = seed_wavelets_figure(seeds, tmp_path / "seed_wavelets.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
