"""Halo-model mock convergence maps: Poisson NFW haloes on a Gaussian large-scale field.

The shifted-lognormal maps of :mod:`.mock` match the power spectrum and the one-point PDF of real
maps, but their peaks are peaks of a smooth field. Peaks of real maps are mostly haloes, so
their heights and 3x3 shapes follow halo profiles. This generator follows the fast peak-count
models (CAMELUS, Lin & Kilbinger 2015): haloes drawn from a mass function, each painted as a
projected NFW profile. A Gaussian field carries the rest of the power (2-halo term, haloes below
the mass cut), so the total power is the halofit C_ell of :func:`.theory.kappa_cl`.

Model (flat LCDM, masses in M_sun, lengths in physical Mpc unless stated)
--------------------------------------------------------------------------
- Light cone: ``n_z`` redshift slices of equal width in (0, z_s), ``n_mass`` log-mass bins in
  [``mass_min``, ``mass_max``]; the expected number of haloes of a cell per map is
  dn/dlnM (pyccl, Tinker et al. 2008, M_200m) x Delta lnM x chi^2 Delta chi x Omega_map.
  Every map draws Poisson counts per cell and uniform positions (no halo clustering).
- Profile: NFW truncated at R_200m with the Duffy et al. (2008) concentration; the convergence
  of a halo integrates to M / (Sigma_crit D_A^2) (sr), Sigma_crit = c^2 D_s / (4 pi G D_l D_ls)
  (``pyccl.sigma_critical``), and its 2-D Fourier transform is that times the truncated-NFW
  transform u(k = ell/D_A) of Cooray & Sheth (2002) (:func:`nfw_fourier`; the projection of a
  3-D profile has the 3-D transform at k_z = 0).
- Painting: haloes are binned into templates of similar angular radius theta_200m (ratio
  ``template_ratio``; all haloes smaller than half a generation pixel share one template).
  Per template, the halo amplitudes are deposited on their pixels, Fourier transformed and
  multiplied by the template's profile; one inverse FFT gives the halo map. The ell = 0 mode is
  removed (the haloes' mass comes from the mean density). The halo part is multiplied by
  sqrt(T(ell)) (:func:`.theory.resolution_transfer`), the resolution of the real simulations.
- Background: a Gaussian field (``background: gaussian``; or shifted lognormal) with
  C_bg = max(C_halofit - C_1h, 0) times T(ell) on the generation grid, C_1h the Poisson power of
  the painted templates (sum over cells of N |kappa_template(ell)|^2 / Omega_map), so that the
  mean power of the maps is the halofit power wherever C_1h < C_halofit.
- Neutrinos: as in :mod:`.theory`, the massless cosmology with the same Omega_m and A_s; the
  linear power (mass function) is scaled by :func:`.theory.neutrino_suppression`, i.e. sigma8 by
  its square root.
- Then as the lognormal mocks: block means (``rebin``), optional shape noise and smoothing.

Seeds: the background's white noise is drawn first, then the halo counts and positions, then
the shape noise, all from one generator seeded with ``seed``.

Public API
----------
``HALO_DEFAULTS``: the halo-model settings (keys of ``halo=``).
``light_cone_cells(omega_m, a_s, m_nu, h, n_s, omega_b, side_deg, z_source, mass_min, mass_max, n_mass,``
``n_z)``: the cached pyccl part (cell arrays).
``HaloModel(params, *, side_deg, z_source=1, mass_min, mass_max, n_mass, n_z)``: the cells of the light cone
    (``z``, ``mass``, ``expected`` counts, ``amplitude`` in sr, ``theta_s``, ``theta_200``,
    ``concentration``), ``cl_1h(ell)``, ``mean_kappa()``, ``n_expected``.
``HaloMapGenerator(cosmology, *, npix, side_deg, z_source=1, rebin=1, halo=None, resolution_ell,``
``shape_noise, smoothing_arcmin, workers)``: ``.generate(seed)`` as :class:`.mock.MapGenerator`;
    ``.input_cl`` (target C_ell T on the grid), ``.halo_cl`` (1-halo power of the painted
    templates, T included), ``.background_cl``, ``.clipped_fraction`` (grid modes where C_1h >
    C_halofit), ``.halo_field(rng)``.
``nfw_fourier(x, c) -> array``: truncated-NFW Fourier transform, u(0) = 1, x = k r_s.
``template_profile_error(gen) -> array``: painted over exact per-cell 1-halo power on the grid.
"""
from __future__ import annotations

import functools
import math
from typing import Mapping

import numpy as np
import scipy.fft as sfft
from scipy.special import sici

from domains.cosmology.mock import MapGenerator, _ell_grid, resolve_cosmology
from domains.cosmology.theory import (RESOLUTION_ELL, kappa_cl, lognormal_kappa0, neutrino_suppression,
                                      resolution_transfer, sigma8_from_as)

__all__ = ["HALO_DEFAULTS", "HaloModel", "light_cone_cells", "HaloMapGenerator", "nfw_fourier", "ccl_cosmology", "template_profile_error"]

#: Settings of the halo model (config ``cosmology.mock.halo``).
HALO_DEFAULTS = {"mass_min": 1.0e12, "mass_max": 1.0e16, "n_mass": 48, "n_z": 40, "background": "gaussian",
                 "template_ratio": 1.4}
BACKGROUNDS = ("gaussian", "lognormal")


def nfw_fourier(x, c) -> np.ndarray:
    """Fourier transform of an NFW profile truncated at c r_s, normalised to 1 at k = 0.

    ``x`` = k r_s, ``c`` the concentration (broadcast). Cooray & Sheth (2002), eq. 81:
    [sin x (Si((1+c)x) - Si(x)) - sin(cx)/((1+c)x) + cos x (Ci((1+c)x) - Ci(x))] / m(c),
    m(c) = ln(1+c) - c/(1+c); for x < 1e-4 the series 1 - x^2 <r^2>/(6 r_s^2) is used.
    """
    x, c = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(c, dtype=np.float64))
    m = np.log1p(c) - c / (1.0 + c)
    xs = np.maximum(x, 1e-4)
    si1, ci1 = sici((1.0 + c) * xs)
    si0, ci0 = sici(xs)
    u = (np.sin(xs) * (si1 - si0) - np.sin(c * xs) / ((1.0 + c) * xs) + np.cos(xs) * (ci1 - ci0)) / m
    # <r^2>/r_s^2 of the truncated NFW mass: int_0^c x^3/(1+x)^2 dx / m(c)
    r2 = (0.5 * c * c - 2.0 * c + 3.0 * np.log1p(c) - c / (1.0 + c)) / m
    return np.where(x < 1e-4, 1.0 - x * x * r2 / 6.0, u)


@functools.lru_cache(maxsize=64)
def ccl_cosmology(omega_m: float, a_s: float, m_nu: float, h: float, n_s: float, omega_b: float):
    """pyccl cosmology of :mod:`.theory` (EH no-wiggle, halofit), sigma8 from A_s and M_nu."""
    import pyccl

    sigma8 = sigma8_from_as(omega_m=omega_m, a_s=a_s, h=h, n_s=n_s, omega_b=omega_b)
    sigma8 *= math.sqrt(neutrino_suppression(m_nu))
    return pyccl.Cosmology(Omega_c=omega_m - omega_b, Omega_b=omega_b, h=h, n_s=n_s, sigma8=sigma8, m_nu=0.0,
                           transfer_function="eisenstein_hu_nowiggles", matter_power_spectrum="halofit")


def _check_halo_settings(halo: Mapping | None) -> dict:
    settings = dict(HALO_DEFAULTS)
    if halo:
        unknown = set(halo) - set(HALO_DEFAULTS)
        if unknown:
            raise ValueError(f"halo settings take {sorted(HALO_DEFAULTS)}, got unknown keys {sorted(unknown)}")
        settings.update(halo)
    if not 0 < settings["mass_min"] < settings["mass_max"]:
        raise ValueError(f"halo mass range needs 0 < mass_min < mass_max, got {settings['mass_min']}, "
                         f"{settings['mass_max']}")
    if int(settings["n_mass"]) < 2 or int(settings["n_z"]) < 2:
        raise ValueError(f"halo n_mass and n_z must be >= 2, got {settings['n_mass']}, {settings['n_z']}")
    if settings["background"] not in BACKGROUNDS:
        raise ValueError(f"halo background must be one of {BACKGROUNDS}, got {settings['background']!r}")
    if not settings["template_ratio"] > 1.0:
        raise ValueError(f"halo template_ratio must be > 1, got {settings['template_ratio']}")
    return settings


@functools.lru_cache(maxsize=64)
def light_cone_cells(omega_m: float, a_s: float, m_nu: float, h: float, n_s: float, omega_b: float,
                     side_deg: float, z_source: float, mass_min: float, mass_max: float, n_mass: int,
                     n_z: int) -> tuple[np.ndarray, ...]:
    """(z, mass, expected, amplitude, theta_s, theta_200, concentration) of every cell, cached.

    All pyccl work of the halo model happens here; :func:`domains.cosmology.mock.write_mock_tree`
    calls it before forking workers (an OpenMP runtime used before a fork deadlocks the children).
    """
    import pyccl

    cosmo = ccl_cosmology(omega_m, a_s, m_nu, h, n_s, omega_b)
    solid_angle = math.radians(side_deg) ** 2
    mass_def = pyccl.halos.MassDef200m
    mass_function = pyccl.halos.MassFuncTinker08(mass_def=mass_def)
    concentration = pyccl.halos.ConcentrationDuffy08(mass_def=mass_def)
    z_edges = np.linspace(0.0, z_source, int(n_z) + 1)
    z_mid = 0.5 * (z_edges[1:] + z_edges[:-1])
    a_mid = 1.0 / (1.0 + z_mid)
    chi_edges = pyccl.comoving_radial_distance(cosmo, 1.0 / (1.0 + z_edges))
    chi = pyccl.comoving_radial_distance(cosmo, a_mid)
    ln_edges = np.linspace(math.log(mass_min), math.log(mass_max), int(n_mass) + 1)
    mass = np.exp(0.5 * (ln_edges[1:] + ln_edges[:-1]))
    dlnm = ln_edges[1] - ln_edges[0]
    a_source = 1.0 / (1.0 + z_source)
    rows = []
    for a, x, dx in zip(a_mid, chi, np.diff(chi_edges)):
        dn_dlog10m = mass_function(cosmo, mass, a)  # comoving Mpc^-3
        expected = dn_dlog10m * dlnm / math.log(10.0) * x * x * dx * solid_angle
        d_a = a * x
        sigma_crit = float(pyccl.sigma_critical(cosmo, a_lens=a, a_source=a_source))  # M_sun / Mpc^2
        conc = concentration(cosmo, mass, a)
        radius = mass_def.get_radius(cosmo, mass, a)  # physical Mpc
        rows.append((expected, mass / (sigma_crit * d_a * d_a), radius / conc / d_a, radius / d_a, conc))
    cells = tuple(np.stack([r[i] for r in rows]).ravel() for i in range(5))
    return (np.repeat(z_mid, len(mass)), np.tile(mass, len(z_mid))) + cells


class HaloModel:
    """Haloes of one cosmology in the light cone of one map (cells of redshift x mass)."""

    def __init__(self, params: Mapping[str, float], *, side_deg: float, z_source: float = 1.0,
                 mass_min: float = HALO_DEFAULTS["mass_min"], mass_max: float = HALO_DEFAULTS["mass_max"],
                 n_mass: int = HALO_DEFAULTS["n_mass"], n_z: int = HALO_DEFAULTS["n_z"]):
        p = resolve_cosmology(params)
        self.params = p
        self.solid_angle = math.radians(side_deg) ** 2
        (self.z, self.mass, self.expected, self.amplitude, self.theta_s, self.theta_200,
         self.concentration) = light_cone_cells(p["omega_m"], p["a_s"], p["m_nu"], p["h"], p["n_s"], p["omega_b"],
                                                float(side_deg), float(z_source), float(mass_min), float(mass_max),
                                                int(n_mass), int(n_z))

    @property
    def n_expected(self) -> float:
        """Expected number of haloes per map."""
        return float(self.expected.sum())

    def mean_kappa(self) -> float:
        """Mean convergence of the haloes (before the ell = 0 mode is removed)."""
        return float(np.sum(self.expected * self.amplitude) / self.solid_angle)

    def cl_1h(self, ell) -> np.ndarray:
        """1-halo (Poisson) power of the haloes: sum over cells of N A^2 u(ell theta_s)^2 / Omega."""
        ell = np.atleast_1d(np.asarray(ell, dtype=np.float64))
        out = np.zeros(ell.shape)
        weight = self.expected * self.amplitude ** 2 / self.solid_angle
        keep = weight > 0
        for start in range(0, int(keep.sum()), 256):
            sel = slice(start, start + 256)
            u = nfw_fourier(ell.ravel()[None, :] * self.theta_s[keep][sel, None],
                            self.concentration[keep][sel, None])
            out += (weight[keep][sel, None] * u * u).sum(axis=0).reshape(ell.shape)
        return out


class HaloMapGenerator(MapGenerator):
    """Maps of one cosmology from the halo model (see the module doc); API of :class:`MapGenerator`.

    ``halo``: settings overriding :data:`HALO_DEFAULTS`. The other keywords are those of
    :class:`MapGenerator` (the background field's kappa_0, for ``background: lognormal``, is the
    calibrated one).
    """

    def __init__(self, cosmology, *, npix: int, side_deg: float, z_source: float = 1.0, rebin: int = 1,
                 halo: Mapping | None = None, resolution_ell: float | None = RESOLUTION_ELL,
                 shape_noise: Mapping[str, float] | None = None, smoothing_arcmin: float | None = None,
                 workers: int = 1):
        settings = _check_halo_settings(halo)
        params = resolve_cosmology(cosmology)
        self.halo_settings = settings
        self.model = HaloModel(params, side_deg=side_deg, z_source=z_source,
                               **{k: settings[k] for k in ("mass_min", "mass_max", "n_mass", "n_z")})
        theory = {k: params[k] for k in ("omega_m", "a_s", "m_nu", "h", "n_s", "omega_b")}
        ell = _ell_grid(int(npix), math.radians(side_deg))
        transfer = np.ones_like(ell) if resolution_ell is None else resolution_transfer(ell, ell_res=resolution_ell)
        self.side_deg, self.npix = float(side_deg), int(npix)
        self._setup_templates(ell, np.sqrt(transfer))
        total = kappa_cl(ell, z_source=z_source, **theory)
        total[0, 0] = 0.0
        # the background carries what the painted haloes lack (C_1h of the templates, T removed)
        with np.errstate(invalid="ignore", divide="ignore"):
            background = np.maximum(total - np.where(transfer > 0, self.halo_cl / transfer, 0.0), 0.0)
        self.clipped_fraction = float(np.mean(total - self.halo_cl / np.maximum(transfer, 1e-300) < 0))

        def background_cl(grid_ell):
            if np.shape(grid_ell) != ell.shape:
                raise ValueError("the halo background is defined on the generation grid only")
            return background

        kappa0 = (lognormal_kappa0(params["omega_m"], z_source, h=params["h"])
                  if settings["background"] == "lognormal" else None)
        super().__init__(background_cl, npix=npix, side_deg=side_deg, z_source=z_source, kappa0=kappa0,
                         resolution_ell=resolution_ell, rebin=rebin, shape_noise=shape_noise,
                         smoothing_arcmin=smoothing_arcmin, workers=workers)
        self.params = params
        self.background_cl = self.input_cl
        self.input_cl = total * transfer

    def _setup_templates(self, ell: np.ndarray, amplitude_transfer: np.ndarray) -> None:
        """Group the cells by angular radius into templates; Fourier profiles on the rfft grid."""
        m = self.model
        n = self.npix
        pixel_rad = math.radians(self.side_deg) / n
        ratio = float(self.halo_settings["template_ratio"])
        smallest = 0.5 * pixel_rad
        live = m.expected > 0
        top = max(float(m.theta_200[live].max()), smallest) * ratio
        edges = smallest * ratio ** np.arange(0, math.ceil(math.log(top / smallest) / math.log(ratio)) + 1)
        cell_template = np.clip(np.searchsorted(edges, m.theta_200, side="right") - 1, 0, len(edges) - 1)
        used = np.unique(cell_template[live])
        remap = np.full(len(edges), -1)
        remap[used] = np.arange(len(used))
        self._cell_template = np.where(live, remap[cell_template], -1)
        # representative profile: power-weighted geometric mean theta_s and mean concentration
        weight = m.expected * m.amplitude ** 2
        profiles = np.empty((len(used),) + ell.shape, dtype=np.float32)
        self.template_theta_s = np.empty(len(used))
        self.template_concentration = np.empty(len(used))
        for t in range(len(used)):
            sel = self._cell_template == t
            w = weight[sel] / weight[sel].sum()
            theta_s = float(np.exp(np.sum(w * np.log(m.theta_s[sel]))))
            conc = float(np.sum(w * m.concentration[sel]))
            self.template_theta_s[t], self.template_concentration[t] = theta_s, conc
            profiles[t] = nfw_fourier(ell * theta_s, conc) * amplitude_transfer
        profiles[:, 0, 0] = 0.0
        self._profiles = profiles
        # deposit weights: each halo adds amplitude / pixel solid angle to its pixel
        self._cell_weight = (m.amplitude / pixel_rad ** 2).astype(np.float64)
        self._cell_index = np.flatnonzero(live)
        self._cell_expected = m.expected[live]
        template_power = np.bincount(self._cell_template[live], (m.expected * m.amplitude ** 2)[live],
                                     minlength=len(used)) / m.solid_angle
        self.halo_cl = np.einsum("t,tij->ij", template_power, profiles.astype(np.float64) ** 2)

    def halo_field(self, rng: np.random.Generator) -> np.ndarray:
        """The painted haloes of one map on the generation grid (float32, mean zero)."""
        n = self.npix
        counts = rng.poisson(self._cell_expected)
        cells = np.repeat(self._cell_index, counts)
        pixels = rng.integers(0, n * n, size=len(cells))
        templates = self._cell_template[cells]
        occupied = np.bincount(templates, minlength=len(self._profiles)) > 0
        present = np.flatnonzero(occupied)
        if len(present) == 0:
            return np.zeros((n, n), np.float32)
        slot = np.cumsum(occupied)[templates] - 1
        images = np.bincount(slot * (n * n) + pixels, weights=self._cell_weight[cells],
                             minlength=len(present) * n * n).reshape(len(present), n, n).astype(np.float32)
        spectra = sfft.rfft2(images, axes=(-2, -1), workers=self.workers)
        spectra *= self._profiles[present]
        return sfft.irfft2(spectra.sum(axis=0), s=(n, n), workers=self.workers).astype(np.float32)

    def field(self, rng: np.random.Generator) -> np.ndarray:
        background = super().field(rng)
        return background + self.halo_field(rng)


def template_profile_error(gen: HaloMapGenerator) -> np.ndarray:
    """Ratio of the painted (template) 1-halo power to the exact per-cell one on the grid (1 = exact)."""
    transfer = gen.input_cl / np.where(gen.input_cl > 0, kappa_cl(gen.ell, **{
        k: gen.params[k] for k in ("omega_m", "a_s", "m_nu", "h", "n_s", "omega_b")}), 1.0)
    exact = gen.model.cl_1h(gen.ell) * transfer
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(exact > 0, gen.halo_cl / exact, 1.0)

