"""Theory side of the cosmology mocks against independent references: a hand-written Limber
integral over pyccl's P(k), the notes' measured sensitivities and kappa_empty values, pyccl's own
Eisenstein-Hu spectrum, Planck 2018's sigma8, and the MassiveNuS parameter list."""
import math

import numpy as np
import pyccl
import pytest

from domains.cosmology import theory
from domains.cosmology.theory import (DEFAULT_COSMOLOGY_INDICES, FIDUCIAL_INDEX, MASSIVENUS_COSMOLOGIES,
                                      MASSLESS_FIDUCIAL_INDEX, kappa_cl, kappa_empty, lognormal_kappa0,
                                      resolution_transfer, sigma8_from_as)

FID = dict(omega_m=0.3, a_s=2.1)


def test_massivenus_table_matches_the_published_list():
    assert len(MASSIVENUS_COSMOLOGIES) == 100
    listed = MASSIVENUS_COSMOLOGIES[:99]
    # ranges of the 99 models in CosmoStat/shear-pipe-peaks' list (cosmology notes, section 1.1)
    assert min(c["m_nu"] for c in listed) == 0.06271 and max(c["m_nu"] for c in listed) == 0.62036
    assert min(c["omega_m"] for c in listed) == 0.18409 and max(c["omega_m"] for c in listed) == 0.41591
    assert min(c["a_s"] for c in listed) == 1.2886 and max(c["a_s"] for c in listed) == 2.7836
    assert len({tuple(c.values()) for c in MASSIVENUS_COSMOLOGIES}) == 100
    assert MASSIVENUS_COSMOLOGIES[FIDUCIAL_INDEX] == {"m_nu": 0.1, "omega_m": 0.3, "a_s": 2.1}
    assert MASSIVENUS_COSMOLOGIES[MASSLESS_FIDUCIAL_INDEX] == {"m_nu": 0.0, "omega_m": 0.3, "a_s": 2.1}
    default = [MASSIVENUS_COSMOLOGIES[i] for i in DEFAULT_COSMOLOGY_INDICES]
    assert len(default) == 10 and default[0] == {"m_nu": 0.06271, "omega_m": 0.38154, "a_s": 2.2004}
    assert max(c["omega_m"] for c in default) - min(c["omega_m"] for c in default) > 0.2


@pytest.mark.parametrize("omega_m, expected", [(0.2, -0.0494), (0.3, -0.0644), (0.4, -0.0764)])
def test_kappa_empty_matches_the_notes(omega_m, expected):
    assert kappa_empty(omega_m, 1.0) == pytest.approx(expected, abs=1e-4)


def test_calibrated_kappa0_is_040_of_the_empty_beam():
    assert lognormal_kappa0(0.3, 1.0) == pytest.approx(0.026, abs=3e-4)
    assert lognormal_kappa0(0.3, 1.0, factor=1.0) == pytest.approx(0.0644, abs=1e-4)
    # kappa_0 grows with the source distance
    assert lognormal_kappa0(0.3, 2.0) > 1.5 * lognormal_kappa0(0.3, 1.0)


def test_eh_transfer_is_the_one_pyccl_uses():
    # pyccl's linear P(k) = norm * k^n_s * T(k)^2; normalise both at k = 1e-4/Mpc
    cosmo = pyccl.Cosmology(Omega_c=0.3 - 0.046, Omega_b=0.046, h=0.7, n_s=0.97, sigma8=0.8,
                            transfer_function="eisenstein_hu_nowiggles")
    k = np.geomspace(1e-3, 10.0, 30)
    p = pyccl.linear_matter_power(cosmo, k, 1.0) / k ** 0.97
    t2 = theory.eh_nowiggle_transfer(k, omega_m=0.3) ** 2
    ratio = (p / t2) / (p[0] / t2[0])
    np.testing.assert_allclose(ratio, 1.0, rtol=2e-3)


def test_growth_matches_pyccl_and_sigma8_from_as_is_near_planck():
    cosmo = pyccl.Cosmology(Omega_c=0.3 - 0.046, Omega_b=0.046, h=0.7, n_s=0.97, sigma8=0.8,
                            transfer_function="eisenstein_hu_nowiggles")
    ratio = theory.growth_unnormalised(0.3, 1.0) / theory.growth_unnormalised(0.3, 0.5)
    assert ratio == pytest.approx(pyccl.growth_factor(cosmo, 1.0) / pyccl.growth_factor(cosmo, 0.5), rel=2e-3)
    assert theory.growth_unnormalised(0.3, 1.0) == pytest.approx(0.779, abs=2e-3)  # Carroll et al. fit
    # Planck 2018 (TT,TE,EE+lowE+lensing): 10^9 A_s 2.105, n_s 0.9665, h 0.6766, Omega_m 0.3111,
    # omega_b 0.02242 -> sigma8 0.811 with 0.06 eV neutrinos (about 0.816 massless). The A_s
    # normalisation of the Eisenstein-Hu spectrum runs 0.3-2 % high against a Boltzmann code.
    s8 = sigma8_from_as(omega_m=0.3111, a_s=2.105, h=0.6766, n_s=0.9665, omega_b=0.02242 / 0.6766 ** 2)
    assert 0.811 < s8 < 0.816 * 1.03
    # sigma8 scales as sqrt(A_s)
    assert sigma8_from_as(a_s=4 * 2.1, omega_m=0.3) == pytest.approx(2 * sigma8_from_as(**FID), rel=1e-12)


def test_kappa_cl_is_the_single_plane_limber_integral():
    """Independent Limber integral C = int dchi W^2/chi^2 P_NL((l+1/2)/chi), W = 1.5 Om H0^2 chi/a (chi_s-chi)/chi_s."""
    ell = np.array([100.0, 316.0, 1000.0, 3162.0, 10000.0, 25000.0])
    s8 = sigma8_from_as(**FID)
    cosmo = pyccl.Cosmology(Omega_c=0.3 - 0.046, Omega_b=0.046, h=0.7, n_s=0.97, sigma8=s8,
                            transfer_function="eisenstein_hu_nowiggles", matter_power_spectrum="halofit")
    h0 = 0.7 / 2997.92
    z = np.linspace(1e-4, 1.0, 600)
    a = 1.0 / (1.0 + z)
    chi = pyccl.comoving_radial_distance(cosmo, a)
    chi_s = pyccl.comoving_radial_distance(cosmo, 0.5)
    w = 1.5 * cosmo["Omega_m"] * h0 ** 2 * chi / a * (chi_s - chi) / chi_s
    dchi_dz = 1.0 / (h0 * pyccl.h_over_h0(cosmo, a))
    expected = []
    for l in ell:
        pk = np.array([pyccl.nonlin_matter_power(cosmo, (l + 0.5) / c, s) for c, s in zip(chi, a)])
        expected.append(np.trapezoid(w ** 2 / chi ** 2 * pk * dchi_dz, z))
    np.testing.assert_allclose(kappa_cl(ell, **FID), expected, rtol=3e-3)
    # massive neutrinos: the massless spectrum times exp(-0.75 M_nu)
    np.testing.assert_allclose(kappa_cl(ell, m_nu=0.3, **FID), np.exp(-0.225) * kappa_cl(ell, **FID), rtol=1e-12)
    # C(0) = 0, finite power-law continuation far above the table
    c = kappa_cl(np.array([0.0, 5e5, 1e6]), **FID)
    assert c[0] == 0 and 0 < c[2] < c[1] < kappa_cl(3e5, **FID)


def _dlog(fn, x, eps=0.01):
    return (np.log(fn(x * (1 + eps))) - np.log(fn(x * (1 - eps)))) / (2 * eps)


def test_sensitivities_match_the_notes_table():
    ell = np.array([300.0, 1000.0, 3000.0, 1e4])
    d_om = _dlog(lambda om: kappa_cl(ell, omega_m=om, a_s=2.1), 0.3)
    d_as = _dlog(lambda a: kappa_cl(ell, omega_m=0.3, a_s=a), 2.1)
    s_om = _dlog(lambda om: sigma8_from_as(omega_m=om, a_s=2.1), 0.3)
    # at fixed sigma8: d ln A_s = -2 (d ln sigma8/d ln Omega_m) d ln Omega_m
    d_om_s8 = d_om - 2 * s_om * d_as
    np.testing.assert_allclose(d_as, [1.3, 1.4, 1.2, 0.9], atol=0.1)
    np.testing.assert_allclose(d_om_s8, [1.5, 1.5, 1.6, 1.5], atol=0.15)
    # fixed A_s: the notes' numpy code gives 3.3/3.4/3.2/2.7; the A_s normalisation here
    # (Eisenstein-Hu, growth without radiation) differs from it by up to 0.25
    np.testing.assert_allclose(d_om, [3.3, 3.4, 3.2, 2.7], atol=0.3)


def test_resolution_transfer_fits_the_real_map_ratios():
    # P_map/P_theory of the real MassiveNuS fiducial map (cosmology notes, section 3.3); the map's
    # own scatter at ell ~ 4000 is a few per cent
    ell = np.array([4100.0, 6200.0, 9500.0, 14500.0, 22000.0])
    measured = np.array([0.77, 0.51, 0.26, 0.10, 0.04])
    np.testing.assert_allclose(resolution_transfer(ell), measured, atol=0.02)
    assert resolution_transfer(6300.0) == 0.5 and resolution_transfer(0.0) == 1.0


def test_bad_parameters_are_rejected():
    for bad in (dict(omega_m=1.2, a_s=2.1), dict(omega_m=0.3, a_s=-1.0), dict(omega_m=0.3, a_s=2.1, m_nu=-0.1)):
        with pytest.raises(ValueError):
            kappa_cl([100.0], **bad)
    with pytest.raises(ValueError):
        lognormal_kappa0(0.3, factor=0.0)
    assert math.isfinite(kappa_cl(1000.0, **FID))
