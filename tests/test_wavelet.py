"""awd.wavelet: JSON files of learned wavelets, wavelet functions, distances, filter metrics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import pywt
import torch

from awd.io import InputError
from awd.transform import DWT1d, DWT2d, lowpass_filter
from awd.wavelet import (LearnedWavelet, filter_bank_metrics, load_wavelet, save_wavelet,
                         wavefun, wavelet_distance)


def _perturbed_db5(seed: int = 0) -> np.ndarray:
    return lowpass_filter("db5") + 0.01 * np.random.default_rng(seed).standard_normal(10)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def test_save_load_round_trip_is_exact(tmp_path):
    h = _perturbed_db5()
    meta = {"lambda": 0.02, "gamma": np.float64(0.00368), "seed": np.int64(3), "data": "cme"}
    path = save_wavelet(tmp_path / "sub" / "w.json", h, J=4, mode="zero", ndim=1, meta=meta)
    w = load_wavelet(path)
    assert isinstance(w, LearnedWavelet)
    assert w.h.dtype == np.float64 and np.array_equal(w.h, h)  # bit for bit
    assert (w.J, w.mode, w.ndim) == (4, "zero", 1)
    assert w.meta == {"lambda": 0.02, "gamma": 0.00368, "seed": 3, "data": "cme"}
    np.testing.assert_array_equal(w.g, [(-1) ** n * h[9 - n] for n in range(10)])
    assert [p.name for p in path.parent.iterdir()] == ["w.json"]  # no temporary left behind


def test_save_accepts_tensor_and_module_round_trip(tmp_path):
    dwt = DWT2d("sym4", J=3, mode="periodization", dtype=torch.float64)
    path = save_wavelet(tmp_path / "w.json", dwt.h, J=dwt.J, mode=dwt.mode, ndim=dwt.ndim)
    w = load_wavelet(path)
    module = w.to_module(dtype=torch.float64)
    assert isinstance(module, DWT2d) and (module.J, module.mode) == (3, "periodization")
    assert torch.equal(module.h.detach(), dwt.h.detach())
    assert isinstance(LearnedWavelet(w.h, 2, "zero", 1).to_module(), DWT1d)
    for ours, ref in zip(w.to_pywt().filter_bank, pywt.Wavelet("sym4").filter_bank):
        np.testing.assert_array_equal(ours, ref)


def test_files_are_byte_deterministic(tmp_path):
    h = _perturbed_db5(1)
    a = save_wavelet(tmp_path / "a.json", h, J=4, mode="zero", ndim=1, meta={"b": 1, "a": [1.5, 2]})
    b = save_wavelet(tmp_path / "b.json", h.copy(), J=4, mode="zero", ndim=1, meta={"a": [1.5, 2], "b": 1})
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    assert doc["format"] == "awd-wavelet" and doc["version"] == 1
    assert [float.hex(v) for v in doc["h"]] == [float.hex(float(v)) for v in h]  # repr-exact floats
    c = save_wavelet(tmp_path / "c.json", np.nextafter(h, 1.0), J=4, mode="zero", ndim=1,
                     meta={"b": 1, "a": [1.5, 2]})
    assert c.read_bytes() != a.read_bytes()


def test_failed_save_leaves_no_file(tmp_path):
    target = tmp_path / "w.json"
    with pytest.raises(TypeError, match="not JSON serialisable"):
        save_wavelet(target, _perturbed_db5(), J=4, mode="zero", ndim=1, meta={"x": object()})
    with pytest.raises(ValueError, match="portable JSON"):
        save_wavelet(target, _perturbed_db5(), J=4, mode="zero", ndim=1, meta={"x": float("nan")})
    assert list(tmp_path.iterdir()) == []
    for kwargs in ({"J": 0, "mode": "zero", "ndim": 1}, {"J": 2, "mode": "smooth", "ndim": 1},
                   {"J": 2, "mode": "zero", "ndim": 3}):
        with pytest.raises(ValueError):
            save_wavelet(target, _perturbed_db5(), **kwargs)
    with pytest.raises(ValueError, match="even length"):
        save_wavelet(target, np.ones(5), J=1, mode="zero", ndim=1)
    assert list(tmp_path.iterdir()) == []


def _valid_doc() -> dict:
    return {"format": "awd-wavelet", "version": 1, "h": list(lowpass_filter("db2")), "J": 2,
            "mode": "zero", "ndim": 1, "meta": {}}


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read"),
    ("{not json", "not a JSON"),
    (b"\xff\xfe\x00", "not a JSON"),
    ("[1, 2]", "not an awd wavelet file"),
    ('{"format": "something-else"}', "not an awd wavelet file"),
    ({"version": 2}, "unsupported wavelet file version"),
    ({"h": None}, "missing field"),
    ({"h": [0.5, "x"]}, "list of numbers"),
    ({"h": [0.5, True]}, "list of numbers"),
    ({"h": [0.5, 0.5, 0.5]}, "even length"),
    ({"h": [0.5, float("nan")]}, "non-finite"),
    ({"J": 0}, "J must be"),
    ({"J": 1.5}, "J must be"),
    ({"mode": "smooth"}, "mode must be"),
    ({"ndim": 3}, "ndim must be"),
    ({"meta": [1]}, "meta must be"),
])
def test_broken_or_foreign_files_raise_input_error(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    if isinstance(content, dict):
        doc = {**_valid_doc(), **content}
        doc = {k: v for k, v in doc.items() if v is not None}
        path.write_text(json.dumps(doc))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=problem) as err:
        load_wavelet(path)
    assert str(path) in str(err.value) and err.value.path == str(path)


# --------------------------------------------------------------------------------------------
# Wavelet functions and distances
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["haar", "db2", "db5", "sym4", "coif2"])
def test_wavefun_matches_pywt_and_is_normalised(name):
    x, phi, psi = wavefun(lowpass_filter(name), level=8)
    ref_phi, ref_psi, ref_x = pywt.Wavelet(name).wavefun(level=8)
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_allclose(phi, ref_phi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(psi, ref_psi, rtol=0, atol=1e-12)
    dx = 2.0 ** -8
    assert x[0] == 0 and x[1] - x[0] == dx and x[-1] >= len(pywt.Wavelet(name).rec_lo) - 1
    assert phi.sum() * dx == pytest.approx(1.0, abs=1e-9)  # integral of phi
    assert (psi ** 2).sum() * dx == pytest.approx(1.0, abs=1e-9)  # unit L2 norm
    assert abs(psi.sum() * dx) < 1e-9  # zero mean


def _reference_distance(h1, h2, level=5):
    """awave's misc.dist transcribed: psi from pywt's cascade, zero-pad, circular shifts and
    time reversal of psi_1, Euclidean norm (brute force)."""
    def psi(h):
        g = np.array([(-1) ** n * h[len(h) - 1 - n] for n in range(len(h))])
        bank = (list(h[::-1]), list(g[::-1]), list(h), list(g))
        w = pywt.Wavelet("w", filter_bank=bank)
        w.orthogonal = True
        return w.wavefun(level=level)[1]
    p1, p2 = psi(h1), psi(h2)
    n = max(p1.size, p2.size)
    p1, p2 = np.pad(p1, (0, n - p1.size)), np.pad(p2, (0, n - p2.size))
    return min(np.linalg.norm(np.roll(c, i) - p2) for c in (p1, p1[::-1]) for i in range(n))


def test_wavelet_distance():
    db5, sym5, coif2 = (lowpass_filter(n) for n in ("db5", "sym5", "coif2"))
    noisy = _perturbed_db5(2)
    assert wavelet_distance(db5, db5) == pytest.approx(0.0, abs=1e-6)
    assert wavelet_distance(db5, -db5) == pytest.approx(0.0, abs=1e-6)  # sign of psi
    assert wavelet_distance(db5, db5[::-1]) == pytest.approx(0.0, abs=1e-6)  # time reversal
    for a, b in ((db5, sym5), (db5, noisy), (sym5, coif2)):
        expected = _reference_distance(a, b)
        assert expected > 0.05
        assert wavelet_distance(a, b, sign=False) == pytest.approx(expected, rel=1e-9)
        assert wavelet_distance(a, b) <= wavelet_distance(a, b, sign=False) + 1e-12
        assert wavelet_distance(a, b) == pytest.approx(wavelet_distance(b, a), rel=1e-9)
    assert wavelet_distance(db5, -db5, sign=False) > 1.0
    assert wavelet_distance(db5, db5[::-1], reverse=False) > 0.1


def test_filter_bank_metrics_by_hand():
    for name in ("haar", "db5", "coif3"):
        assert max(filter_bank_metrics(lowpass_filter(name)).values()) < 1e-15
    m = filter_bank_metrics(2 * lowpass_filter("db5"))  # sum 2 sqrt2, norm 2, autocorr 4 delta
    assert m["lowpass_sum_error"] == pytest.approx(math.sqrt(2), abs=1e-15)
    assert m["norm_error"] == pytest.approx(1.0, abs=1e-15)
    assert m["orthogonality_error"] == pytest.approx(3.0, abs=1e-15)
    assert m["highpass_sum"] < 1e-15
    # h = [a, b, c, d]: g = [d, -c, b, -a]; lag-2 autocorrelation a c + b d
    m = filter_bank_metrics(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert m == pytest.approx({"lowpass_sum_error": 10 - math.sqrt(2), "highpass_sum": 2.0,
                               "norm_error": math.sqrt(30) - 1, "orthogonality_error": 29.0})
