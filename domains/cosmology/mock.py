"""Mock MassiveNuS-like convergence maps: shifted-lognormal fields with theory C_ell.

The maps imitate AWD's data (MassiveNuS, z_s = 1, 3.5 deg, 512^2 maps rebinned 2x2 to 256^2):
C_ell from :func:`domains.cosmology.theory.kappa_cl`, times the resolution transfer
T(ell) = 1/(1 + (ell/6300)^2.6) of the real simulations, drawn as a shifted-lognormal field
(exact on the periodic grid) with kappa_0 = 0.40 |kappa_empty| at 512^2, then block-averaged
2x2 (which also applies the pixel window). :func:`write_mock_tree` writes them as FITS in the
MassiveNuS tree, so real and mock data go through the same ingest (:mod:`.fits_io`).

Conventions
-----------
- Grid: N x N pixels of side ``side_deg``; multipoles ell = 2 pi fftfreq(N, d=theta/N), C(0) = 0.
  The field is periodic; its power estimator is |FFT2 kappa|^2 A / N^4 (A = theta^2 in sr).
- Shifted lognormal: xi_kappa = IFFT2[C] N^2/A, xi_G = ln(1 + xi_kappa/kappa0^2),
  C_G = FFT2[xi_G] A/N^2 (negative values clipped to 0), G Gaussian with C_G,
  kappa = kappa0 (exp(G - sigma_G^2/2) - 1): kappa >= -kappa0, <kappa> = 0, and the power of
  kappa is exactly C on the grid. ``kappa0=None`` draws the Gaussian field itself.
- Shape noise (optional, after rebinning, before smoothing): white Gaussian noise per output
  pixel with sigma_pix = sigma_e / sqrt(2 n_gal A_pix) (Ribli / Zorrilla-Matilla convention):
  ``sigma_e`` is the *total* intrinsic ellipticity dispersion (about 0.4; per component it is
  sigma_e/sqrt(2)), ``n_gal`` galaxies per arcmin^2, A_pix the output pixel area in arcmin^2.
  (LensTools/Kratochvil write sigma_gamma/sqrt(n_gal A_pix) with the per-component sigma_gamma.)
- Smoothing (optional, last step): Gaussian kernel exp(-theta^2 / (2 sigma^2)) with
  standard deviation sigma = ``smoothing_arcmin`` (not the FWHM = 2.355 sigma, nor the theta_G of
  exp(-theta^2/theta_G^2) = sqrt(2) sigma), applied in Fourier space as exp(-ell^2 sigma^2 / 2),
  i.e. periodic boundaries like the mock itself (``scipy.ndimage.gaussian_filter`` with
  sigma in pixels and mode='wrap' gives the same).
- Seeds: map r of cosmology p uses ``SeedSequence(seed, spawn_key=(M_nu 1e5, Omega_m 1e5,
  10^9 A_s 1e4, r))`` (the folder-name digits), so adding cosmologies or maps never changes
  existing maps; the Gaussian white noise of the field is drawn first, then the shape noise.

Public API
----------
``MASSIVENUS_COSMOLOGIES``, ``DEFAULT_COSMOLOGY_INDICES`` (re-exported from :mod:`.theory`).
``generate_map(cl, *, npix, side_deg, seed, z_source=1, kappa0="calibrated", resolution_ell=6300,``
``rebin=1, shape_noise=None, smoothing_arcmin=None, workers=1) -> float32 array``
    one map; ``cl`` is a callable ell -> C_ell or a cosmology (index into the table or a dict
    with ``omega_m``, ``a_s`` and optionally ``m_nu``, ``h``, ``n_s``, ``omega_b``).
``MapGenerator(cl, **same keywords)``: the same with the per-cosmology setup done once;
    ``.generate(seed)``, ``.input_cl`` (C on the generation grid, rfft layout), ``.ell``,
    ``.kappa0``, ``.pixel_arcmin``, ``.npix_out``.
``write_mock_tree(raw_dir, *, cosmologies, n_maps, npix_generate=512, npix_out=256, side_deg=3.5,``
``z_source=1.0, seed, shape_noise=None, smoothing_arcmin=None, threads=1, kappa0_factor=0.40,``
``resolution_ell=6300, first_realisation=1) -> list[Path]``
    the FITS tree (float32, LensTools keywords, a flat TAN WCS), written atomically.
``shape_noise_sigma(sigma_e, n_gal, pixel_arcmin) -> float``, ``smooth_map(kappa, *, pixel_arcmin,``
``sigma_arcmin) -> array``, ``measure_power(kappa, *, side_deg, ell_edges) -> (ell_mid, C_b, n_modes)``,
``resolve_cosmology(spec) -> dict``, ``cosmology_seed(seed, params, realisation) -> SeedSequence``.
"""
from __future__ import annotations

import json
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.fft as sfft

from awd.io import InputError, atomic_dir
from domains.cosmology.fits_io import block_mean, map_file_name, maps_dir_name, massivenus_dir_name
from domains.cosmology.theory import (
    DEFAULT_COSMOLOGY_INDICES,
    H_FIDUCIAL,
    KAPPA0_FACTOR,
    MASSIVENUS_COSMOLOGIES,
    N_S_FIDUCIAL,
    OMEGA_B_FIDUCIAL,
    RESOLUTION_ELL,
    kappa_cl,
    lognormal_kappa0,
    resolution_transfer,
)

__all__ = ["MASSIVENUS_COSMOLOGIES", "DEFAULT_COSMOLOGY_INDICES", "MapGenerator", "generate_map",
           "write_mock_tree", "shape_noise_sigma", "smooth_map", "measure_power", "resolve_cosmology",
           "cosmology_seed"]

log = logging.getLogger(__name__)

ARCMIN = math.pi / (180.0 * 60.0)
#: Marker file written at the root of a mock tree (generation settings, for provenance).
SETTINGS_FILE = "mock_settings.json"
#: Generators of :func:`write_mock_tree` (config ``cosmology.mock.model``).
MODELS = ("lognormal", "halo")
_COSMO_KEYS = {"m_nu", "omega_m", "a_s", "h", "n_s", "omega_b"}


def resolve_cosmology(spec: int | Mapping[str, float]) -> dict[str, float]:
    """A full parameter dict from an index into ``MASSIVENUS_COSMOLOGIES`` or a partial dict."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not 0 <= spec < len(MASSIVENUS_COSMOLOGIES):
            raise ValueError(f"cosmology index {spec} outside 0..{len(MASSIVENUS_COSMOLOGIES) - 1}")
        spec = MASSIVENUS_COSMOLOGIES[int(spec)]
    if not isinstance(spec, Mapping):
        raise ValueError(f"a cosmology is an index or a dict, got {spec!r}")
    unknown = set(spec) - _COSMO_KEYS
    if unknown or "omega_m" not in spec or "a_s" not in spec:
        raise ValueError(f"cosmology {dict(spec)} needs omega_m and a_s (10^9 A_s), optional "
                         f"m_nu, h, n_s, omega_b; unknown keys {sorted(unknown)}")
    params = {"m_nu": 0.0, "h": H_FIDUCIAL, "n_s": N_S_FIDUCIAL, "omega_b": OMEGA_B_FIDUCIAL}
    params.update({k: float(v) for k, v in spec.items()})
    return params


def cosmology_seed(seed: int, params: Mapping[str, float], realisation: int) -> np.random.SeedSequence:
    """Seed of one map: independent of which other cosmologies or maps are generated."""
    key = (round(params["m_nu"] * 1e5), round(params["omega_m"] * 1e5), round(params["a_s"] * 1e4),
           int(realisation))
    if int(seed) < 0 or min(key) < 0:
        raise ValueError(f"seed {seed} and realisation {realisation} must be non-negative")
    return np.random.SeedSequence(int(seed), spawn_key=key)


def shape_noise_sigma(sigma_e: float, n_gal: float, pixel_arcmin: float) -> float:
    """Per-pixel noise sigma_e / sqrt(2 n_gal A_pix); sigma_e total dispersion, n_gal per arcmin^2."""
    if not (sigma_e > 0 and n_gal > 0 and pixel_arcmin > 0):
        raise ValueError(f"shape noise needs sigma_e, n_gal, pixel_arcmin > 0, got {sigma_e}, {n_gal}, "
                         f"{pixel_arcmin}")
    return sigma_e / math.sqrt(2.0 * n_gal * pixel_arcmin ** 2)


def _ell_grid(npix: int, side_rad: float) -> np.ndarray:
    """|ell| on the rfft2 layout (npix, npix//2 + 1) of an npix^2 map of side ``side_rad``."""
    lx = 2.0 * np.pi * sfft.fftfreq(npix, d=side_rad / npix)
    ly = 2.0 * np.pi * sfft.rfftfreq(npix, d=side_rad / npix)
    return np.hypot(lx[:, None], ly[None, :])


def smooth_map(kappa: np.ndarray, *, pixel_arcmin: float, sigma_arcmin: float, workers: int = 1) -> np.ndarray:
    """Periodic Gaussian smoothing with standard deviation ``sigma_arcmin`` (see module doc)."""
    n = kappa.shape[-1]
    ell = _ell_grid(n, n * pixel_arcmin * ARCMIN)
    window = np.exp(-0.5 * (ell * sigma_arcmin * ARCMIN) ** 2).astype(np.result_type(kappa.dtype, np.float32))
    return sfft.irfft2(sfft.rfft2(kappa, workers=workers) * window, s=kappa.shape[-2:], workers=workers)


def measure_power(kappa: np.ndarray, *, side_deg: float, ell_edges: np.ndarray):
    """Binned power |FFT2 kappa|^2 A / N^4 of one map or the mean over a stack (n, N, N).

    Returns the bin centres (mean |ell| of the modes), C_b (C_ell, not ell(ell+1)C/2pi) and the
    number of full-plane FFT modes per bin (single-map scatter is C_b sqrt(2 / n_modes)).
    """
    kappa = np.asarray(kappa, dtype=float)
    n = kappa.shape[-1]
    side = math.radians(side_deg)
    power = np.abs(sfft.fft2(kappa)) ** 2 * side ** 2 / n ** 4
    if power.ndim == 3:
        power = power.mean(axis=0)
    lx = 2.0 * np.pi * sfft.fftfreq(n, d=side / n)
    ell = np.hypot(lx[:, None], lx[None, :]).ravel()
    idx = np.digitize(ell, ell_edges) - 1
    ok = (idx >= 0) & (idx < len(ell_edges) - 1)
    nb = len(ell_edges) - 1
    counts = np.bincount(idx[ok], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = np.bincount(idx[ok], ell[ok], minlength=nb) / counts
        cb = np.bincount(idx[ok], power.ravel()[ok], minlength=nb) / counts
    return mid, cb, counts


class MapGenerator:
    """Draws maps of one cosmology; the C_ell and lognormal setup is done once here.

    ``cl``: callable ell -> C_ell, or a cosmology (index or dict, see :func:`resolve_cosmology`)
    whose :func:`kappa_cl` at ``z_source`` is used. ``kappa0``: ``"calibrated"`` (needs a
    cosmology: :func:`lognormal_kappa0`), a number, or None for a Gaussian field.
    ``resolution_ell``: T(ell) damping scale (None: no damping). The field is drawn on
    ``npix`` x ``npix`` pixels over ``side_deg`` and block-averaged by ``rebin``; then shape
    noise (dict ``sigma_e``, ``n_gal``) and smoothing (sigma in arcmin) at the output pixels.
    """

    def __init__(self, cl: Callable | int | Mapping[str, float], *, npix: int, side_deg: float,
                 z_source: float = 1.0, kappa0: float | str | None = "calibrated",
                 resolution_ell: float | None = RESOLUTION_ELL, rebin: int = 1,
                 shape_noise: Mapping[str, float] | None = None, smoothing_arcmin: float | None = None,
                 workers: int = 1):
        if npix < 4 or rebin < 1 or npix % rebin:
            raise ValueError(f"npix={npix} must be >= 4 and divisible by rebin={rebin}")
        if not side_deg > 0:
            raise ValueError(f"side_deg must be positive, got {side_deg}")
        self.npix, self.rebin, self.side_deg, self.workers = int(npix), int(rebin), float(side_deg), int(workers)
        self.npix_out = self.npix // self.rebin
        self.pixel_arcmin = self.side_deg * 60.0 / self.npix_out
        self.params = None if callable(cl) else resolve_cosmology(cl)
        if self.params is not None:
            theory = {k: self.params[k] for k in ("omega_m", "a_s", "m_nu", "h", "n_s", "omega_b")}

            def cl_fn(ell):
                return kappa_cl(ell, z_source=z_source, **theory)
        else:
            cl_fn = cl
        if kappa0 == "calibrated":
            if self.params is None:
                raise ValueError("kappa0='calibrated' needs a cosmology, not a C_ell callable")
            kappa0 = lognormal_kappa0(self.params["omega_m"], z_source, h=self.params["h"])
        if kappa0 is not None and not float(kappa0) > 0:
            raise ValueError(f"kappa0 must be positive or None, got {kappa0}")
        self.kappa0 = None if kappa0 is None else float(kappa0)

        side_rad = math.radians(self.side_deg)
        area = side_rad ** 2
        n = self.npix
        self.ell = _ell_grid(n, side_rad)
        c = np.asarray(cl_fn(self.ell), dtype=float)
        if resolution_ell is not None:
            c = c * resolution_transfer(self.ell, ell_res=resolution_ell)
        c[0, 0] = 0.0
        if np.any(~np.isfinite(c)) or np.any(c < 0):
            raise ValueError("C_ell must be finite and non-negative on the map's ell grid")
        self.input_cl = c
        if self.kappa0 is None:
            c_field = c
            self._shift = 0.0
        else:
            xi_kappa = sfft.irfft2(c, s=(n, n), workers=self.workers) * n * n / area
            if np.min(xi_kappa) / self.kappa0 ** 2 <= -1.0:
                raise ValueError(f"kappa0={self.kappa0} too small for the correlation function "
                                 f"(min xi={np.min(xi_kappa):.3g})")
            xi_g = np.log1p(xi_kappa / self.kappa0 ** 2)
            c_field = sfft.rfft2(xi_g, workers=self.workers).real * area / (n * n)
            negative = c_field < 0
            if negative.any():
                log.debug("clipped %d negative Gaussian-field C_ell modes", int(negative.sum()))
                c_field = np.where(negative, 0.0, c_field)
            c_field[0, 0] = 0.0
            # variance of the Gaussian field actually drawn (= xi_G(0) when nothing was clipped)
            self._shift = 0.5 * float(sfft.irfft2(c_field, s=(n, n), workers=self.workers)[0, 0]) * n * n / area
        # per-map synthesis runs in float32 (the maps are stored as float32): about 1.7x faster
        self._amplitude = (n * np.sqrt(c_field / area)).astype(np.float32)
        self._shift = np.float32(self._shift)

        self.noise_sigma = None
        if shape_noise is not None:
            unknown = set(shape_noise) - {"sigma_e", "n_gal"}
            if unknown:
                raise ValueError(f"shape_noise takes sigma_e and n_gal, got unknown keys {sorted(unknown)}")
            self.noise_sigma = shape_noise_sigma(float(shape_noise["sigma_e"]), float(shape_noise["n_gal"]),
                                                 self.pixel_arcmin)
        if smoothing_arcmin is not None and not smoothing_arcmin > 0:
            raise ValueError(f"smoothing_arcmin must be positive or None, got {smoothing_arcmin}")
        self.smoothing_arcmin = None if smoothing_arcmin is None else float(smoothing_arcmin)

    def generate(self, seed: int | np.random.SeedSequence) -> np.ndarray:
        """One map (npix_out x npix_out, float32) from ``seed``."""
        rng = np.random.default_rng(seed)
        return self.finish(self.field(rng), rng)

    def field(self, rng: np.random.Generator) -> np.ndarray:
        """The (lognormal or Gaussian) field on the generation grid (npix x npix, float32)."""
        n = self.npix
        white = rng.standard_normal((n, n), dtype=np.float32)
        field = sfft.irfft2(sfft.rfft2(white, workers=self.workers) * self._amplitude, s=(n, n),
                            workers=self.workers)
        if self.kappa0 is not None:
            field -= self._shift
            np.expm1(field, out=field)
            field *= np.float32(self.kappa0)
        return field

    def finish(self, field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Block mean of a generation-grid field, then shape noise and smoothing (output pixels)."""
        kappa = block_mean(field, self.rebin)
        if self.noise_sigma is not None:
            kappa += np.float32(self.noise_sigma) * rng.standard_normal(kappa.shape, dtype=np.float32)
        if self.smoothing_arcmin is not None:
            kappa = smooth_map(kappa, pixel_arcmin=self.pixel_arcmin, sigma_arcmin=self.smoothing_arcmin,
                               workers=self.workers)
        return kappa


def generate_map(cl: Callable | int | Mapping[str, float], *, npix: int, side_deg: float,
                 seed: int | np.random.SeedSequence, **options) -> np.ndarray:
    """One mock map (float32); ``options`` are the keywords of :class:`MapGenerator`."""
    return MapGenerator(cl, npix=npix, side_deg=side_deg, **options).generate(seed)


def _fits_header(params: Mapping[str, float], *, npix: int, side_deg: float, z_source: float, kappa0,
                 resolution_ell, npix_generate: int, seed: int, shape_noise, smoothing_arcmin):
    """LensTools-compatible header (ANGLE in deg, Z, OMEGA_M, ...) plus a flat TAN WCS for DS9."""
    from astropy.io import fits

    h = params["h"]
    pix_deg = side_deg / npix
    cards = [
        ("ANGLE", side_deg, "side of the map [deg]"),
        ("NPIX", npix, "pixels per side"),
        ("Z", z_source, "source redshift"),
        ("OMEGA_M", params["omega_m"], "total matter density, neutrinos included"),
        ("OMEGA_L", 1.0 - params["omega_m"], "dark energy density (flat)"),
        ("OMEGA_B", params["omega_b"], "baryon density"),
        ("M_NU", params["m_nu"], "sum of neutrino masses [eV]"),
        ("A_S", params["a_s"] * 1e-9, "scalar amplitude (folder names: 1e9 A_s)"),
        ("N_S", params["n_s"], "scalar spectral index"),
        ("H0", 100.0 * h, "Hubble constant [km/s/Mpc]"),
        ("H", h, "H0 / (100 km/s/Mpc)"),
        ("W0", -1.0, "dark energy equation of state"),
        ("WA", 0.0, "dark energy equation of state evolution"),
        ("ITYPE", "ConvergenceMap", "LensTools image type"),
        ("KAPPA0", 0.0 if kappa0 is None else kappa0, "lognormal shift (0: Gaussian field)"),
        ("RES_ELL", 0.0 if resolution_ell is None else resolution_ell, "T(ell)=1/(1+(ell/RES_ELL)^2.6); 0: none"),
        ("NPIXGEN", npix_generate, "pixels per side of the generated field"),
        ("SEED", seed, "root seed of the mock tree"),
        ("SIGMA_E", 0.0 if shape_noise is None else shape_noise["sigma_e"], "total ellipticity dispersion"),
        ("N_GAL", 0.0 if shape_noise is None else shape_noise["n_gal"], "galaxies per arcmin^2 (0: noiseless)"),
        ("SMOOTH", 0.0 if smoothing_arcmin is None else smoothing_arcmin, "Gaussian smoothing sigma [arcmin]"),
        ("WCSAXES", 2, "flat-sky patch, arbitrary centre"),
        ("CTYPE1", "RA---TAN", ""), ("CTYPE2", "DEC--TAN", ""),
        ("CUNIT1", "deg", ""), ("CUNIT2", "deg", ""),
        ("CRPIX1", (npix + 1) / 2.0, ""), ("CRPIX2", (npix + 1) / 2.0, ""),
        ("CRVAL1", 0.0, ""), ("CRVAL2", 0.0, ""),
        ("CDELT1", -pix_deg, "pixel size [deg]"), ("CDELT2", pix_deg, "pixel size [deg]"),
    ]
    header = fits.Header(cards)
    header["COMMENT"] = ("Mock weak-lensing convergence map from awd-workbench (domains.cosmology.mock): "
                         "shifted-lognormal field with pyccl halofit C_ell, MassiveNuS-like geometry.")
    # the structural keywords (SIMPLE, BITPIX = -32, NAXIS...) as astropy writes them
    return fits.PrimaryHDU(data=np.zeros((npix, npix), np.float32), header=header).header


def _write_fits_image(path: Path, header, image: np.ndarray) -> None:
    """Write a float32 primary-HDU FITS file: the bytes astropy's ``writeto`` produces, 10x faster
    (astropy renders the header; the data are big-endian float32 padded to 2880-byte blocks)."""
    data = np.ascontiguousarray(image, dtype=">f4").tobytes()
    with open(path, "wb") as fh:
        fh.write(header.tostring().encode("ascii"))
        fh.write(data)
        fh.write(b"\0" * (-len(data) % 2880))


def _write_cosmology(task: dict) -> list[str]:
    """Write the maps of one cosmology under ``task['root']``; return their relative paths."""
    params = task["params"]
    kappa0 = (None if task["kappa0_factor"] is None
              else lognormal_kappa0(params["omega_m"], task["z_source"], h=params["h"], factor=task["kappa0_factor"]))
    common = dict(npix=task["npix_generate"], side_deg=task["side_deg"], z_source=task["z_source"],
                  resolution_ell=task["resolution_ell"], rebin=task["npix_generate"] // task["npix_out"],
                  shape_noise=task["shape_noise"], smoothing_arcmin=task["smoothing_arcmin"])
    if task["model"] == "halo":
        from domains.cosmology.halo import HaloMapGenerator

        gen = HaloMapGenerator(params, halo=task["halo"], **common)
        kappa0 = gen.kappa0
    else:
        gen = MapGenerator(params, kappa0=kappa0, **common)
    header = _fits_header(params, npix=task["npix_out"], side_deg=task["side_deg"], z_source=task["z_source"],
                          kappa0=kappa0, resolution_ell=task["resolution_ell"],
                          npix_generate=task["npix_generate"], seed=task["seed"],
                          shape_noise=task["shape_noise"], smoothing_arcmin=task["smoothing_arcmin"])
    header["MODEL"] = (task["model"], "mock generator (lognormal or halo)")
    rel_dir = Path(massivenus_dir_name(params["m_nu"], params["omega_m"], params["a_s"])) / maps_dir_name(
        task["z_source"])
    out_dir = Path(task["root"]) / rel_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in task["realisations"]:
        kappa = gen.generate(cosmology_seed(task["seed"], params, r))
        header["REALIS"] = (r, "realisation number")
        rel = rel_dir / map_file_name(task["z_source"], r)
        _write_fits_image(Path(task["root"]) / rel, header, kappa)
        written.append(str(rel))
    return written


def _check_replaceable(raw_dir: Path) -> None:
    """Refuse to replace a non-empty folder that is not a mock tree (it may hold real data)."""
    if raw_dir.exists():
        if not raw_dir.is_dir():
            raise InputError(raw_dir, "exists and is not a folder")
        if any(raw_dir.iterdir()) and not (raw_dir / SETTINGS_FILE).is_file():
            raise InputError(raw_dir, f"is not empty and has no {SETTINGS_FILE}: not a mock tree, "
                                      "refusing to replace it")


def write_mock_tree(raw_dir: str | Path, *,
                    cosmologies: Sequence[int | Mapping[str, float]] = DEFAULT_COSMOLOGY_INDICES, n_maps: int, npix_generate: int = 512, npix_out: int = 256, side_deg: float = 3.5,
                    z_source: float = 1.0, seed: int, shape_noise: Mapping[str, float] | None = None,
                    smoothing_arcmin: float | None = None, threads: int = 1,
                    kappa0_factor: float | None = KAPPA0_FACTOR, resolution_ell: float | None = RESOLUTION_ELL,
                    first_realisation: int = 1, model: str = "lognormal",
                    halo: Mapping | None = None) -> list[Path]:
    """Write ``n_maps`` maps per cosmology as a MassiveNuS tree under ``raw_dir``.

    Realisations are numbered ``first_realisation``, ... (MassiveNuS starts at 0001). The tree
    is built in a temporary folder and moved onto ``raw_dir`` at the end, replacing a previous
    mock tree there (a non-empty folder without ``mock_settings.json`` is refused). One
    process per cosmology with ``threads`` workers; the result does not depend on ``threads``.
    ``kappa0_factor=None`` gives Gaussian fields. ``model="halo"`` draws the maps with
    :class:`domains.cosmology.halo.HaloMapGenerator` (settings ``halo``; ``kappa0_factor`` unused).
    Returns the written paths, sorted.
    """
    raw_dir = Path(raw_dir)
    params = [resolve_cosmology(c) for c in cosmologies]
    names = [massivenus_dir_name(p["m_nu"], p["omega_m"], p["a_s"]) for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"cosmologies repeat a MassiveNuS folder name: {names}")
    if n_maps < 1 or first_realisation < 0:
        raise ValueError(f"n_maps must be >= 1 and first_realisation >= 0, got {n_maps}, {first_realisation}")
    if npix_out < 4 or npix_generate % npix_out:
        raise ValueError(f"npix_generate={npix_generate} must be a multiple of npix_out={npix_out} >= 4")
    maps_dir_name(z_source)  # validates the redshift
    if shape_noise is not None:
        shape_noise = {"sigma_e": float(shape_noise["sigma_e"]), "n_gal": float(shape_noise["n_gal"])}
    if model not in MODELS:
        raise ValueError(f"mock model must be one of {MODELS}, got {model!r}")
    if model == "halo":
        from domains.cosmology.halo import _check_halo_settings

        halo = _check_halo_settings(halo)
    else:
        halo = None
    _check_replaceable(raw_dir)
    realisations = list(range(first_realisation, first_realisation + n_maps))
    settings = {"cosmologies": params, "n_maps": n_maps, "first_realisation": first_realisation,
                "npix_generate": npix_generate, "npix_out": npix_out, "side_deg": side_deg,
                "z_source": z_source, "seed": int(seed), "shape_noise": shape_noise,
                "smoothing_arcmin": smoothing_arcmin, "kappa0_factor": kappa0_factor,
                "resolution_ell": resolution_ell, "model": model, "halo": halo}
    with atomic_dir(raw_dir) as tmp:
        tasks = [dict(settings, params=p, root=str(tmp), realisations=realisations) for p in params]
        workers = max(1, min(int(threads), len(tasks)))
        # C_ell of every cosmology is computed here, once: pyccl runs OpenMP, and an OpenMP
        # runtime used before a fork deadlocks in the forked workers; they reuse the cache.
        for p in params:
            kappa_cl(1000.0, z_source=z_source, **{k: p[k] for k in ("omega_m", "a_s", "m_nu", "h", "n_s", "omega_b")})
            if model == "halo":
                from domains.cosmology.halo import light_cone_cells

                light_cone_cells(*(p[k] for k in ("omega_m", "a_s", "m_nu", "h", "n_s", "omega_b")), float(side_deg),
                                 float(z_source), float(halo["mass_min"]), float(halo["mass_max"]),
                                 int(halo["n_mass"]), int(halo["n_z"]))
        if workers == 1:
            rel_paths = [_write_cosmology(t) for t in tasks]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                rel_paths = list(pool.map(_write_cosmology, tasks))
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        written = sorted(raw_dir / rel for paths in rel_paths for rel in paths)
    log.info("wrote %d mock maps of %d cosmologies to %s", len(written), len(params), raw_dir)
    return written
