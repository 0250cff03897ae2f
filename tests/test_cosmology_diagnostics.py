"""Peak-count diagnostics: chi^2 decomposition, pooled-covariance head, value fractions against
the bins, Fisher forecast against a case with a known answer."""
import math

import numpy as np
import pytest

from domains.cosmology import peaks as pk
from domains.cosmology.diagnostics import (PooledNearestCosmologyChi2, _chi2_parts, db5_kernels, fisher_table,
                                           signed_edges, value_distribution)


def test_chi2_parts_sum_to_the_heads_chi2():
    rng = np.random.default_rng(0)
    X = rng.poisson(5.0, size=(60, 6)).astype(float)
    y = np.repeat([[0.1, 0.3, 2.0], [0.1, 0.35, 2.0]], 30, axis=0)
    model = pk.NearestCosmologyChi2().fit(X, y)
    cls = np.zeros(len(X), dtype=int)
    np.testing.assert_allclose(_chi2_parts(model, X, cls).sum(1), model.chi2(X)[:, 0], rtol=1e-10)


def test_pooled_head_uses_the_within_class_covariance():
    rng = np.random.default_rng(1)
    cov = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    means = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.2], [2.0, 1.0, 0.4]])
    X = np.concatenate([rng.multivariate_normal(m, cov, 4000) for m in means])
    y = np.repeat([[0.2], [0.3], [0.4]], 4000, axis=0)
    head = PooledNearestCosmologyChi2().fit(X, y)
    for prec in head.precisions_:
        np.testing.assert_allclose(prec, np.linalg.inv(cov), rtol=0.06, atol=0.03)
    # it predicts the class of the Mahalanobis-nearest mean
    d = means[1] + np.array([0.2, -0.1, 0.05])
    assert head.predict(d[None])[0] == pytest.approx(0.3)


def test_value_fractions_and_signed_bins():
    values = np.array([-0.01, -0.001, 0.0, 0.01, 0.025, 0.03])
    row = value_distribution(values[:, None], np.linspace(0, 0.025, 23), n_maps=2)[0]
    assert (row["frac_below"], row["frac_above"], row["peaks_per_map"]) == (2 / 6, 1 / 6, 3.0)
    assert row["frac_inside"] == pytest.approx(0.5)
    hist = pk.batched_histogram(values, np.zeros(6, int), 1, signed_edges(0.025))
    assert hist.sum() == 5  # only 0.03 falls outside [-0.025, 0.025]
    # DB5's LH and HL kernels are antisymmetric in one direction and sum to zero: a peak's
    # value is negative whenever the map falls more steeply on one side (most peaks)
    k = db5_kernels()
    assert abs(k[1].sum()) < 1e-12 and abs(k[2].sum()) < 1e-12


def test_fisher_of_white_noise_height_histogram():
    """Maps of white Gaussian noise with sigma = Omega_m / 10: the peak-height histogram must
    constrain Omega_m with sigma_om_fixed_as in the range a simple estimate gives, and A_s has
    no effect, so the marginal error is not smaller than the fixed one."""
    def factory(params):
        def generate(seed):
            rng = np.random.default_rng(seed)
            return (params["omega_m"] / 10) * rng.standard_normal((40, 40))
        return generate

    bins, heads = fisher_table(factory, n_maps=200, heads=["height"], kernels={}, d_omega_m=0.03, d_a_s=0.2)
    row = heads[0]
    # about 1,200 peaks per map at heights ~sigma: the scale of the height distribution is
    # measured to ~1/sqrt(2 N) per map, i.e. sigma(Omega_m)/Omega_m ~ 2 %: between 0.5 % and 8 %
    assert 0.0015 < row["sigma_om_fixed_as"] < 0.024
    assert row["sigma_om_marginal"] >= row["sigma_om_fixed_as"] * 0.999
    assert math.isclose(sum(r["share"] for r in bins), 1.0, rel_tol=1e-9)
