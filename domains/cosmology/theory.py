"""Theory for the mock convergence maps: MassiveNuS parameters, C_ell^kk, lognormal kappa_0.

Conventions (as in MassiveNuS file names): ``m_nu`` is the sum of neutrino masses in eV,
``omega_m`` the total matter density (neutrinos included), ``a_s`` is **10^9 A_s**. The
parameters MassiveNuS keeps fixed are the defaults: h = 0.7, n_s = 0.97, Omega_b = 0.046, w = -1.

Public API
----------
``MASSIVENUS_COSMOLOGIES``
    tuple of dicts ``{"m_nu", "omega_m", "a_s"}``: 99 MassiveNuS models in the order of the
    public list, then the massless fiducial twin (index 99). ``FIDUCIAL_INDEX`` (0.1, 0.3, 2.1),
    ``MASSLESS_FIDUCIAL_INDEX`` and ``DEFAULT_COSMOLOGY_INDICES`` (the first 10 rows).
``kappa_cl(ell, *, omega_m, a_s, m_nu=0, z_source=1, h, n_s, omega_b) -> ndarray``
    convergence power C_ell^kk of one source plane (not ell(ell+1)C/2pi): pyccl, Takahashi
    halofit, Limber, sigma8 from A_s; cached per cosmology, interpolated in log-log.
``sigma8_from_as(*, omega_m, a_s, h, n_s, omega_b) -> float``
    sigma8 of the A_s-normalised Eisenstein-Hu no-wiggle linear power.
``kappa_empty(omega_m, z_source, *, h) -> float``
    empty-beam convergence (negative), the minimum kappa a lensing map can reach.
``lognormal_kappa0(omega_m, z_source=1, *, h, factor=0.40) -> float``
    shift parameter of the shifted-lognormal field, ``factor * |kappa_empty|`` (0.40 is
    calibrated on a real MassiveNuS map).
``resolution_transfer(ell, *, ell_res=6300, power=2.6) -> ndarray``
    T(ell) = 1 / (1 + (ell/ell_res)^power), the power lost by the finite resolution of the
    MassiveNuS ray tracing (fitted to the real fiducial map to +-0.01).
``neutrino_suppression(m_nu) -> float``
    exp(-0.75 m_nu/eV), the approximate C_ell ratio at fixed Omega_m and A_s.

Massive neutrinos: pyccl's analytic (Eisenstein-Hu) power spectra need sigma8 and carry no
neutrino suppression, and CAMB is not a dependency. The model is therefore the massless
cosmology with the same Omega_m (Omega_c = Omega_m - Omega_b), normalised by A_s, times
``neutrino_suppression(m_nu)``; pyccl+CAMB gives 0.935/0.79/0.60 at 0.1/0.3/0.6 eV (ell = 1000),
this approximation 0.928/0.80/0.64.
"""
from __future__ import annotations

import functools
import math

import numpy as np

#: (M_nu [eV], Omega_m, 10^9 A_s) of 99 MassiveNuS models: CosmoStat/shear-pipe-peaks,
#: input/list_cosmo_peaks_z065.txt @ 72415efc (the directory names of the suite), in file order.
#: The last row is the massless twin of the fiducial model (also in that repository's input/).
_MASSIVENUS_TABLE = """
0.06271 0.38154 2.2004
0.06522 0.28205 1.8826
0.06773 0.41591 1.6231
0.07024 0.20235 2.3075
0.07275 0.32826 2.2883
0.07526 0.33551 1.5659
0.07778 0.25966 2.4333
0.08030 0.27832 2.3824
0.08282 0.27575 1.8292
0.08535 0.31316 1.9913
0.08788 0.29264 1.7376
0.09041 0.28447 2.1757
0.09295 0.31553 2.4949
0.09550 0.35898 2.4624
0.09805 0.30056 1.9744
0.10000 0.30000 2.1000
0.10061 0.27958 2.0161
0.10318 0.39765 2.2607
0.10575 0.30509 1.9117
0.10833 0.28327 2.3595
0.11092 0.37629 2.0404
0.11351 0.18409 1.7932
0.11612 0.30851 1.8056
0.11874 0.31434 2.0079
0.12136 0.34568 1.9483
0.12400 0.30282 2.3174
0.12665 0.27035 1.9658
0.12931 0.29831 2.2342
0.13198 0.25432 1.2886
0.13467 0.34384 2.0324
0.13737 0.35641 1.6678
0.14008 0.30395 2.1198
0.14281 0.31673 2.1596
0.14556 0.26894 2.1839
0.14832 0.26132 1.8724
0.15110 0.35177 2.2429
0.15389 0.31198 2.0484
0.15671 0.25794 2.1356
0.15954 0.23187 1.8620
0.16240 0.33106 2.1039
0.16527 0.30622 2.2171
0.16817 0.26749 1.9211
0.17109 0.30736 2.4475
0.17404 0.32042 2.0564
0.17701 0.25238 2.0644
0.18001 0.29944 1.6465
0.18303 0.33868 2.0243
0.18608 0.27174 2.5322
0.18917 0.33708 2.5769
0.19228 0.25616 2.2517
0.19543 0.32425 1.9022
0.19861 0.22808 1.6872
0.20183 0.24598 2.5535
0.20508 0.29491 2.0961
0.20837 0.29378 2.2978
0.21508 0.27705 1.5292
0.21851 0.29034 1.9303
0.22198 0.32295 1.9393
0.22550 0.32965 2.4068
0.22907 0.36478 2.3276
0.23270 0.34762 1.4826
0.23638 0.38820 2.1921
0.24013 0.24823 2.3944
0.24394 0.28802 2.3708
0.24782 0.31795 2.2789
0.25177 0.26601 1.9571
0.25580 0.24359 2.1436
0.25991 0.29605 2.6708
0.26411 0.34206 2.4781
0.26840 0.30169 2.1118
0.27278 0.29149 1.7219
0.27728 0.32556 2.0802
0.28188 0.27444 2.2087
0.28661 0.26292 1.8405
0.29147 0.31082 2.2697
0.29647 0.23522 1.8176
0.30162 0.21846 2.4198
0.30694 0.36813 2.5128
0.31244 0.21180 2.6341
0.31814 0.25036 2.0882
0.32406 0.33399 1.7525
0.33021 0.33251 1.9996
0.33664 0.28918 2.1277
0.34337 0.24102 2.2256
0.35044 0.26449 2.1676
0.35789 0.34964 1.7802
0.36578 0.28082 1.7051
0.37417 0.29718 2.7836
0.38317 0.28566 1.4164
0.39287 0.27310 1.8925
0.40343 0.35402 1.5966
0.41504 0.30966 2.3486
0.42800 0.28684 2.0723
0.44273 0.32690 2.6034
0.45988 0.22371 1.7667
0.48062 0.34034 2.1516
0.50723 0.23825 2.7174
0.54543 0.36175 2.3380
0.62036 0.32168 1.9829
0.00000 0.30000 2.1000
"""

MASSIVENUS_COSMOLOGIES: tuple[dict[str, float], ...] = tuple(
    {"m_nu": float(m), "omega_m": float(om), "a_s": float(a)}
    for m, om, a in (line.split() for line in _MASSIVENUS_TABLE.strip().splitlines())
)
#: The MassiveNuS fiducial model (0.1 eV, 0.3, 2.1).
FIDUCIAL_INDEX = 15
#: Its massless twin (0.0 eV, 0.3, 2.1).
MASSLESS_FIDUCIAL_INDEX = 99
#: The default 10 cosmologies: the first 10 rows of the public list (Omega_m 0.20-0.42,
#: 10^9 A_s 1.57-2.43, M_nu 0.063-0.085 eV). Which 10 models AWD used is not recorded.
DEFAULT_COSMOLOGY_INDICES: tuple[int, ...] = tuple(range(10))

#: Parameters MassiveNuS keeps fixed.
H_FIDUCIAL = 0.7
N_S_FIDUCIAL = 0.97
OMEGA_B_FIDUCIAL = 0.046

#: Hubble distance c/H0 for h = 1, in Mpc.
HUBBLE_DISTANCE_H = 2997.92
T_CMB = 2.7255
#: d ln C / d M_nu of the neutrino approximation, per eV.
NEUTRINO_SLOPE = 0.75
#: Resolution transfer of MassiveNuS maps: T(ell) = 1 / (1 + (ell/6300)^2.6).
RESOLUTION_ELL = 6300.0
RESOLUTION_POWER = 2.6
#: kappa_0 = 0.40 |kappa_empty|, calibrated on the real MassiveNuS fiducial map (skewness 2.3).
KAPPA0_FACTOR = 0.40

# ell grid on which C_ell is computed once per cosmology and interpolated (log-log, cubic).
_ELL_GRID = np.geomspace(1.0, 3.0e5, 320)


def _efunc(z, omega_m: float):
    """E(z) = H(z)/H0 of flat LCDM without radiation."""
    return np.sqrt(omega_m * (1.0 + np.asarray(z)) ** 3 + 1.0 - omega_m)


def eh_nowiggle_transfer(k, *, omega_m: float, h: float = H_FIDUCIAL, omega_b: float = OMEGA_B_FIDUCIAL,
                         t_cmb: float = T_CMB) -> np.ndarray:
    """Eisenstein & Hu (1998) no-wiggle transfer function T(k), k in 1/Mpc."""
    k = np.asarray(k, dtype=float)
    om_h2, ob_h2 = omega_m * h * h, omega_b * h * h
    f_b = omega_b / omega_m
    theta = t_cmb / 2.7
    s = 44.5 * np.log(9.83 / om_h2) / np.sqrt(1.0 + 10.0 * ob_h2 ** 0.75)
    alpha = 1.0 - 0.328 * np.log(431.0 * om_h2) * f_b + 0.38 * np.log(22.3 * om_h2) * f_b ** 2
    gamma_eff = omega_m * h * (alpha + (1.0 - alpha) / (1.0 + (0.43 * k * s) ** 4))
    q = (k / h) * theta ** 2 / gamma_eff
    l0 = np.log(2.0 * math.e + 1.8 * q)
    c0 = 14.2 + 731.0 / (1.0 + 62.5 * q)
    return l0 / (l0 + c0 * q * q)


def growth_unnormalised(omega_m: float, a: float = 1.0) -> float:
    """Linear growth D(a) = (5 Omega_m / 2) E(a) int_0^a da' / (a' E(a'))^3, with D -> a early."""
    from scipy.integrate import quad

    def integrand(x: float) -> float:
        return 1.0 / (x * float(_efunc(1.0 / x - 1.0, omega_m))) ** 3 if x > 0 else 0.0

    # for a' -> 0 the integrand tends to a'^{3/2} / Omega_m^{3/2}; quad handles it directly
    val, _ = quad(integrand, 0.0, a, epsabs=0.0, epsrel=1e-10, limit=200)
    return 2.5 * omega_m * float(_efunc(1.0 / a - 1.0, omega_m)) * val


def _tophat(x):
    x = np.asarray(x, dtype=float)
    small = x < 1e-3
    xs = np.where(small, 1.0, x)
    w = 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs ** 3
    return np.where(small, 1.0 - x * x / 10.0, w)


def sigma8_from_as(*, omega_m: float, a_s: float, h: float = H_FIDUCIAL, n_s: float = N_S_FIDUCIAL,
                   omega_b: float = OMEGA_B_FIDUCIAL) -> float:
    """sigma8 of the linear power Delta^2(k) = (4/25) A_s (k/0.05)^(n_s-1) (k/H0)^4 T^2 (D(1)/Omega_m)^2.

    ``a_s`` is 10^9 A_s; T is :func:`eh_nowiggle_transfer` (the transfer pyccl uses below), the
    pivot 0.05/Mpc. Within 0.3-1.7 % of CAMB for massless neutrinos.
    """
    h0 = h / HUBBLE_DISTANCE_H
    k = np.geomspace(1e-5, 1e2, 4000)
    t = eh_nowiggle_transfer(k, omega_m=omega_m, h=h, omega_b=omega_b)
    d1 = growth_unnormalised(omega_m, 1.0)
    delta2 = 0.16 * a_s * 1e-9 * (k / 0.05) ** (n_s - 1.0) * (k / h0) ** 4 * t ** 2 * (d1 / omega_m) ** 2
    integrand = delta2 * _tophat(k * 8.0 / h) ** 2
    return float(np.sqrt(np.trapezoid(integrand, np.log(k))))


def neutrino_suppression(m_nu: float) -> float:
    """Approximate C_ell(M_nu)/C_ell(0) at fixed Omega_m and A_s: exp(-0.75 M_nu/eV)."""
    return float(np.exp(-NEUTRINO_SLOPE * m_nu))


def _check_params(omega_m: float, a_s: float, m_nu: float, z_source: float) -> None:
    if not 0.0 < omega_m < 1.0:
        raise ValueError(f"omega_m must lie in (0, 1), got {omega_m}")
    if not a_s > 0.0:
        raise ValueError(f"a_s (10^9 A_s) must be positive, got {a_s}")
    if not m_nu >= 0.0:
        raise ValueError(f"m_nu must be >= 0 eV, got {m_nu}")
    if not z_source > 0.0:
        raise ValueError(f"z_source must be positive, got {z_source}")


@functools.lru_cache(maxsize=256)
def _log_cl_table(omega_m: float, a_s: float, m_nu: float, z_source: float, h: float, n_s: float,
                  omega_b: float):
    """log C_ell on ``_ELL_GRID`` as a cubic spline in log ell (one pyccl run per cosmology)."""
    import pyccl
    from scipy.interpolate import CubicSpline

    sigma8 = sigma8_from_as(omega_m=omega_m, a_s=a_s, h=h, n_s=n_s, omega_b=omega_b)
    cosmo = pyccl.Cosmology(Omega_c=omega_m - omega_b, Omega_b=omega_b, h=h, n_s=n_s, sigma8=sigma8,
                            m_nu=0.0, transfer_function="eisenstein_hu_nowiggles",
                            matter_power_spectrum="halofit")
    # a single source plane: the CMB-lensing tracer is the kappa kernel of one plane at z_source
    tracer = pyccl.CMBLensingTracer(cosmo, z_source=z_source, n_samples=200)
    cl = pyccl.angular_cl(cosmo, tracer, tracer, _ELL_GRID) * neutrino_suppression(m_nu)
    return CubicSpline(np.log(_ELL_GRID), np.log(cl), extrapolate=False), float(np.log(cl[-1])), float(
        np.log(cl[-1] / cl[-2]) / np.log(_ELL_GRID[-1] / _ELL_GRID[-2]))


def kappa_cl(ell, *, omega_m: float, a_s: float, m_nu: float = 0.0, z_source: float = 1.0,
             h: float = H_FIDUCIAL, n_s: float = N_S_FIDUCIAL, omega_b: float = OMEGA_B_FIDUCIAL) -> np.ndarray:
    """Convergence power spectrum C_ell^kk of a single source plane at ``z_source``.

    pyccl (Eisenstein-Hu no-wiggle transfer normalised to ``a_s`` = 10^9 A_s through
    :func:`sigma8_from_as`, Takahashi 2012 halofit, Limber with ell + 1/2), times
    :func:`neutrino_suppression`. Computed once per cosmology on 320 ell in [1, 3e5] and
    interpolated in log-log (agrees with a direct pyccl call to < 1e-4); extrapolated as a power
    law above 3e5; zero below ell = 1. Returns C_ell itself, not ell(ell+1)C_ell/2pi.
    """
    _check_params(omega_m, a_s, m_nu, z_source)
    spline, log_last, slope = _log_cl_table(float(omega_m), float(a_s), float(m_nu), float(z_source),
                                            float(h), float(n_s), float(omega_b))
    ell = np.asarray(ell, dtype=float)
    out = np.zeros(ell.shape)
    inside = (ell >= _ELL_GRID[0]) & (ell <= _ELL_GRID[-1])
    out[inside] = np.exp(spline(np.log(ell[inside])))
    above = ell > _ELL_GRID[-1]
    out[above] = np.exp(log_last + slope * np.log(ell[above] / _ELL_GRID[-1]))
    return out


def kappa_empty(omega_m: float, z_source: float = 1.0, *, h: float = H_FIDUCIAL) -> float:
    """Empty-beam convergence -(3/2) Omega_m H0^2 int_0^chi_s chi (chi_s - chi)/chi_s (1+z) dchi.

    Flat LCDM without radiation; -0.0494, -0.0644, -0.0764 for Omega_m = 0.2, 0.3, 0.4 at z_s = 1.
    """
    h0 = h / HUBBLE_DISTANCE_H
    z = np.linspace(0.0, z_source, 4001)
    dchi_dz = 1.0 / (h0 * _efunc(z, omega_m))
    chi = np.concatenate([[0.0], np.cumsum(0.5 * (dchi_dz[1:] + dchi_dz[:-1]) * np.diff(z))])
    chi_s = chi[-1]
    integrand = chi * (chi_s - chi) / chi_s * (1.0 + z) * dchi_dz
    return float(-1.5 * omega_m * h0 ** 2 * np.trapezoid(integrand, z))


def lognormal_kappa0(omega_m: float, z_source: float = 1.0, *, h: float = H_FIDUCIAL,
                     factor: float = KAPPA0_FACTOR) -> float:
    """Shift kappa_0 = factor * |kappa_empty(Omega_m, z_s)| of the shifted-lognormal field.

    The default factor 0.40 (0.026 at Omega_m = 0.3, z_s = 1) reproduces the skewness of a real
    MassiveNuS map; the Hilbert et al. (2011) fit would give 0.0334 there.
    """
    if not factor > 0:
        raise ValueError(f"kappa0 factor must be positive, got {factor}")
    return factor * abs(kappa_empty(omega_m, z_source, h=h))


def resolution_transfer(ell, *, ell_res: float = RESOLUTION_ELL, power: float = RESOLUTION_POWER) -> np.ndarray:
    """Power transfer T(ell) = 1 / (1 + (ell/ell_res)^power) of the MassiveNuS ray tracing."""
    ell = np.asarray(ell, dtype=float)
    return 1.0 / (1.0 + (ell / ell_res) ** power)
