"""Ingest of convergence maps as MassiveNuS distributes them (real or mock, one code path).

Layout (parameters only in the folder name; ``a_s`` is 10^9 A_s)::

    <root>/convergence_gal_mnv{M_nu:.5f}_om{Omega_m:.5f}_As{10^9 A_s:.4f}/
        Maps{10 z_s:02d}/WLconv_z{z_s:.2f}_{r:04d}r.fits

Any realisation numbering is accepted (0000 or 0001 first, any number of digits, gaps), files
may be gzipped (``.fits.gz``). A file is one 2-D image in the primary HDU (or the first image
extension), float32/float64 in either byte order, with a bare header or a LensTools header
(``ANGLE`` side in degrees, ``Z``, ``OMEGA_M``, ...). Folders whose names do not start with
``convergence`` and files that do not start with ``WLconv_`` are ignored.

Public API
----------
``scan_massivenus_tree(root, redshift) -> pandas.DataFrame``
    one row per map file: ``path, m_nu, omega_m, a_s, realisation, cosmology`` (cosmology ids
    0..n-1 follow the sorted unique (m_nu, omega_m, a_s) triples), sorted by cosmology, realisation.
``read_convergence_map(path, *, target_size, rebin="auto", nan_policy="error", pixel_arcmin=None)``
    ``-> (float32 (target_size, target_size) array, info dict)``; 2x2 (or k x k) block means
    when the file is larger than ``target_size``.
``load_maps(root, *, redshift, target_size, max_per_cosmology=None, threads=1, rebin="auto",``
``nan_policy="error", pixel_arcmin=None) -> MapSet``
    every map of the tree, checked for consistency, stacked in scan order.
``split_maps(mapset, split, seed=0) -> ndarray of 'train'/'val'/'test'``
    by realisation number, identical for every cosmology (MassiveNuS shares the initial
    conditions of a realisation across cosmologies), deterministic.
``block_mean(image, factor) -> ndarray``: mean over factor x factor blocks.
``massivenus_dir_name``, ``maps_dir_name``, ``map_file_name``: the layout's names.

Every problem with a file (not FITS, truncated, not 2-D, not square, all-NaN, constant, NaNs
under ``nan_policy="error"``, a size that cannot become ``target_size``, sizes or angles that
differ between files, a header redshift that contradicts the folder, unparseable or unknown
parameters in a folder name, two folders with the same parameters, duplicate realisations)
raises :class:`awd.io.InputError` naming the file or folder. Nothing is written here.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from awd.io import InputError

log = logging.getLogger(__name__)

#: MassiveNuS maps cover 3.5 deg x 3.5 deg; used when neither header nor config give the scale.
MASSIVENUS_SIDE_DEG = 3.5
PARAM_NAMES = ("m_nu", "omega_m", "a_s")
NAN_POLICIES = ("error", "zero", "mean")

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN_RE = re.compile(rf"^(mnv|om|As)({_NUMBER})$")
_TOKEN_KEY = {"mnv": "m_nu", "om": "omega_m", "As": "a_s"}
_FILE_RE = re.compile(r"^WLconv_z(?P<z>\d+(?:\.\d*)?)_(?P<r>\d+)r\.fits(?:\.gz)?$")


def massivenus_dir_name(m_nu: float, omega_m: float, a_s: float) -> str:
    """``convergence_gal_mnv0.10000_om0.30000_As2.1000`` (``a_s`` is 10^9 A_s)."""
    return f"convergence_gal_mnv{m_nu:.5f}_om{omega_m:.5f}_As{a_s:.4f}"


def maps_dir_name(redshift: float) -> str:
    """``Maps10`` for z_s = 1.0 (ten times the redshift, two digits)."""
    tenz = 10.0 * float(redshift)
    if not redshift > 0 or abs(tenz - round(tenz)) > 1e-6:
        raise InputError(None, f"source redshift {redshift} is not a positive multiple of 0.1, "
                               "so it has no MassiveNuS Maps folder")
    return f"Maps{int(round(tenz)):02d}"


def map_file_name(redshift: float, realisation: int) -> str:
    """``WLconv_z1.00_0001r.fits``."""
    return f"WLconv_z{redshift:.2f}_{int(realisation):04d}r.fits"


def _parse_dir_params(folder: Path) -> tuple[float, float, float]:
    """(m_nu, omega_m, a_s) from a ``convergence_gal_mnv.._om.._As..`` folder name."""
    name = folder.name
    if not name.startswith("convergence_gal_"):
        raise InputError(folder, "folder name does not start with 'convergence_gal_' "
                                 "(expected convergence_gal_mnv{M_nu}_om{Omega_m}_As{10^9 A_s})")
    values: dict[str, float] = {}
    for token in name[len("convergence_gal_"):].split("_"):
        match = _TOKEN_RE.match(token)
        if not match:
            raise InputError(folder, f"unknown or unparseable parameter '{token}' in the folder name "
                                     "(expected mnv{M_nu}, om{Omega_m}, As{10^9 A_s})")
        key = _TOKEN_KEY[match.group(1)]
        if key in values:
            raise InputError(folder, f"parameter '{match.group(1)}' appears twice in the folder name")
        values[key] = float(match.group(2))
    missing = [k for k in PARAM_NAMES if k not in values]
    if missing:
        raise InputError(folder, f"folder name lacks {missing} (expected mnv.._om.._As..)")
    m_nu, omega_m, a_s = (values[k] for k in PARAM_NAMES)
    if not (m_nu >= 0 and 0 < omega_m < 1 and a_s > 0):
        raise InputError(folder, f"implausible parameters M_nu={m_nu}, Omega_m={omega_m}, 10^9 A_s={a_s}")
    return m_nu, omega_m, a_s


def scan_massivenus_tree(root: str | Path, redshift: float) -> pd.DataFrame:
    """Index the map files of one source redshift in a MassiveNuS tree (reads no pixels)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "is not a folder (expected a MassiveNuS tree of convergence_gal_* folders)")
    maps_dir = maps_dir_name(redshift)
    rows: list[dict] = []
    seen_params: dict[tuple[float, float, float], Path] = {}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("convergence"))
    if not folders:
        raise InputError(root, "contains no convergence_gal_mnv*_om*_As* folders")
    for folder in folders:
        params = _parse_dir_params(folder)
        if params in seen_params:
            raise InputError(folder, f"gives the same parameters {params} as {seen_params[params].name}")
        seen_params[params] = folder
        sub = folder / maps_dir
        if not sub.is_dir():
            raise InputError(folder, f"has no {maps_dir} folder for source redshift {redshift}")
        by_realisation: dict[int, Path] = {}
        for path in sorted(sub.iterdir()):
            if not path.name.startswith("WLconv_"):
                continue
            match = _FILE_RE.match(path.name)
            if not match:
                raise InputError(path, "file name does not follow WLconv_z{z}_{realisation}r.fits")
            if abs(float(match.group("z")) - redshift) > 0.005:
                raise InputError(path, f"file name gives z={match.group('z')} inside {maps_dir} "
                                       f"(source redshift {redshift})")
            r = int(match.group("r"))
            if r in by_realisation:
                raise InputError(path, f"realisation {r} appears twice (also {by_realisation[r].name})")
            by_realisation[r] = path
        if not by_realisation:
            raise InputError(sub, "contains no WLconv_z*_*r.fits map files")
        rows += [{"path": str(p), "m_nu": params[0], "omega_m": params[1], "a_s": params[2],
                  "realisation": r} for r, p in by_realisation.items()]
    table = pd.DataFrame(rows)
    triples = sorted(seen_params)
    ids = {t: i for i, t in enumerate(triples)}
    table["cosmology"] = [ids[t] for t in zip(table["m_nu"], table["omega_m"], table["a_s"])]
    table = table.astype({"realisation": np.int64, "cosmology": np.int64})
    return table.sort_values(["cosmology", "realisation"], kind="stable").reset_index(drop=True)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks (2x2 rebinning for factor 2)."""
    factor = int(factor)
    if factor == 1:
        return image
    h, w = image.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"shape {image.shape} is not divisible by the block size {factor}")
    # sum of the factor^2 strided sub-images (row-major order within a block): 4x faster than
    # reshape().mean() for 512^2 maps
    total = np.zeros(image.shape[:-2] + (h // factor, w // factor), dtype=np.result_type(image, np.float32))
    for i in range(factor):
        for j in range(factor):
            total += image[..., i::factor, j::factor]
    return total / (factor * factor)


def _header_float(header, key: str, path: Path) -> float | None:
    if key not in header:
        return None
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(path, f"header keyword {key}={value!r} is not a finite number")
    return float(value)


def _read_image(path: Path):
    """(data, header) of the first HDU holding an image; InputError for anything unreadable.

    Truncated data make astropy fail while reshaping the data, which lands here too (no
    ``warnings.catch_warnings``: it is not thread-safe, and files are read by threads).
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None:
                    return np.array(hdu.data), hdu.header.copy()
    except Exception as err:  # astropy raises OSError, ValueError, TypeError, ... on junk
        raise InputError(path, f"not a readable FITS file, or truncated ({type(err).__name__}: {err})") from err
    raise InputError(path, "FITS file contains no image data")


def read_convergence_map(path: str | Path, *, target_size: int | None, rebin: int | str = "auto",
                         nan_policy: str = "error", pixel_arcmin: float | None = None):
    """Read one convergence map as native float32 (target_size x target_size).

    ``rebin``: ``"auto"`` block-averages by ``npix // target_size`` (which must divide), an int
    k requires ``npix == k * target_size``; ``target_size=None`` keeps the file's size.
    ``nan_policy`` for NaN/inf pixels: ``"error"``, ``"zero"`` (Ribli et al.) or ``"mean"``
    (the mean of the finite pixels); replaced before rebinning. All-NaN or constant maps are
    always errors. ``pixel_arcmin``: native pixel scale used only when the header has no ANGLE.

    The info dict holds ``npix_file``, ``npix``, ``rebin``, ``angle_deg`` (header ANGLE or
    None), ``pixel_arcmin`` (of the returned map; None when unknown), ``z``, ``omega_m``,
    ``m_nu``, ``a_s`` (10^9 A_s; a header A_S below 1e-6 is taken as A_s and scaled),
    ``n_nonfinite`` and ``byteorder`` of the file's data ('>' big-endian).
    """
    path = Path(path)
    if nan_policy not in NAN_POLICIES:
        raise InputError(None, f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    data, header = _read_image(path)
    if data.ndim != 2:
        raise InputError(path, f"image has {data.ndim} dimension(s) {data.shape}; expected a 2-D map")
    if data.shape[0] != data.shape[1]:
        raise InputError(path, f"map is {data.shape[0]}x{data.shape[1]}; expected a square map")
    byteorder = ">" if data.dtype.byteorder == ">" else "<" if data.dtype.byteorder in "<=" else "|"
    kappa = data.astype(np.float64)
    finite = np.isfinite(kappa)
    n_bad = int(kappa.size - finite.sum())
    if n_bad == kappa.size:
        raise InputError(path, "every pixel is NaN or inf")
    good = kappa[finite]
    if np.all(good == good[0]):
        raise InputError(path, f"constant map (every finite pixel is {float(good[0]):.6g})")
    if n_bad:
        if nan_policy == "error":
            raise InputError(path, f"{n_bad} NaN/inf pixels (nan_policy='error'; choose 'zero' or 'mean')")
        kappa[~finite] = 0.0 if nan_policy == "zero" else good.mean()

    npix_file = kappa.shape[0]
    factor = _rebin_factor(path, npix_file, target_size, rebin)
    out = block_mean(kappa, factor).astype(np.float32)

    angle = _header_float(header, "ANGLE", path)
    if angle is not None and not angle > 0:
        raise InputError(path, f"header ANGLE={angle} is not a positive side in degrees")
    native = angle * 60.0 / npix_file if angle is not None else pixel_arcmin
    a_s = _header_float(header, "A_S", path)
    info = {
        "npix_file": npix_file, "npix": out.shape[0], "rebin": factor, "angle_deg": angle,
        "pixel_arcmin": None if native is None else native * factor,
        "z": _header_float(header, "Z", path), "omega_m": _header_float(header, "OMEGA_M", path),
        "m_nu": _header_float(header, "M_NU", path),
        "a_s": None if a_s is None else (a_s * 1e9 if a_s < 1e-6 else a_s),
        "n_nonfinite": n_bad, "byteorder": byteorder,
    }
    return out, info


def _rebin_factor(path: Path, npix: int, target_size: int | None, rebin: int | str) -> int:
    if rebin == "auto":
        if target_size is None:
            return 1
        if target_size < 1 or npix % target_size:
            raise InputError(path, f"map is {npix}x{npix}; cannot make {target_size}x{target_size} "
                                   "by averaging square blocks")
        return npix // target_size
    if isinstance(rebin, bool) or not isinstance(rebin, (int, np.integer)) or rebin < 1:
        raise InputError(None, f"rebin must be 'auto' or a positive integer, got {rebin!r}")
    if npix % rebin or (target_size is not None and npix != rebin * target_size):
        want = "" if target_size is None else f" to {target_size}x{target_size}"
        raise InputError(path, f"map is {npix}x{npix}; cannot block-average by {rebin}{want}")
    return int(rebin)


@dataclass
class MapSet:
    """Maps of a tree: ``maps`` (n, N, N) float32, ``params`` (n, 3) [m_nu, omega_m, a_s]
    (a_s = 10^9 A_s), ``cosmology`` (n,) ids, ``realisation`` (n,) numbers, ``files`` (n paths),
    ``pixel_arcmin`` of the maps, ``redshift`` the source redshift."""

    maps: np.ndarray
    params: np.ndarray
    cosmology: np.ndarray
    realisation: np.ndarray
    files: list[str]
    pixel_arcmin: float
    redshift: float | None = None

    def __len__(self) -> int:
        return len(self.maps)


def _majority_check(values: list, files: list[str], what: str, same) -> None:
    """Raise for the first file whose ``what`` differs from the most common value."""
    common, _ = Counter(values).most_common(1)[0]
    for value, path in zip(values, files):
        if not same(value, common):
            raise InputError(path, f"{what} is {value} but most maps of the tree have {common} "
                                   "(mixed maps in one tree)")


def load_maps(root: str | Path, *, redshift: float, target_size: int | None,
              max_per_cosmology: int | None = None, threads: int = 1, rebin: int | str = "auto",
              nan_policy: str = "error", pixel_arcmin: float | None = None) -> MapSet:
    """Read every map of one source redshift in a MassiveNuS tree into a :class:`MapSet`.

    ``max_per_cosmology`` keeps the lowest realisation numbers of each cosmology.
    ``pixel_arcmin`` is the files' native pixel scale when headers lack ANGLE; when it is None
    too, the MassiveNuS side of 3.5 deg is assumed. Files are read by ``threads`` threads.
    """
    table = scan_massivenus_tree(root, redshift)
    if max_per_cosmology is not None:
        if max_per_cosmology < 1:
            raise InputError(None, f"max_per_cosmology must be >= 1, got {max_per_cosmology}")
        table = table.groupby("cosmology", sort=True).head(int(max_per_cosmology)).reset_index(drop=True)
    files = table["path"].tolist()

    def read(path: str):
        return read_convergence_map(path, target_size=target_size, rebin=rebin, nan_policy=nan_policy,
                                    pixel_arcmin=pixel_arcmin)

    # read the first file alone to size the output array, then fill it in place
    first, first_info = read(files[0])
    maps = np.empty((len(files), *first.shape), dtype=np.float32)
    infos: list[dict] = [first_info] + [{}] * (len(files) - 1)
    maps[0] = first

    def fill(i: int) -> None:
        image, infos[i] = read(files[i])
        if image.shape == first.shape:  # other sizes are reported below, naming the odd files
            maps[i] = image

    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        list(pool.map(fill, range(1, len(files))))

    _majority_check([i["npix_file"] for i in infos], files, "the map size", lambda a, b: a == b)
    for info, path in zip(infos, files):
        if info["z"] is not None and abs(info["z"] - redshift) > 0.005:
            raise InputError(path, f"header Z={info['z']} contradicts source redshift {redshift} "
                                   f"of its {maps_dir_name(redshift)} folder")
    if pixel_arcmin is None:
        side = MASSIVENUS_SIDE_DEG
        if any(i["angle_deg"] is None for i in infos):
            log.info("no ANGLE in some headers and no pixel_arcmin given: assuming a %.1f deg side", side)
        pixels = [i["pixel_arcmin"] if i["angle_deg"] is not None
                  else side * 60.0 / i["npix_file"] * i["rebin"] for i in infos]
    else:
        pixels = [i["pixel_arcmin"] for i in infos]
    _majority_check(pixels, files, "the pixel scale (arcmin)", lambda a, b: math.isclose(a, b, rel_tol=1e-6))
    log.info("read %d maps of %d cosmologies from %s", len(files), table["cosmology"].nunique(), root)
    return MapSet(maps=maps, params=table[list(PARAM_NAMES)].to_numpy(dtype=np.float64),
                  cosmology=table["cosmology"].to_numpy(), realisation=table["realisation"].to_numpy(),
                  files=files, pixel_arcmin=float(pixels[0]), redshift=float(redshift))


_SPLITS = ("train", "val", "test")


def _split_counts(split: Mapping[str, float] | Sequence[float], n: int) -> list[int]:
    """Counts per split from fractions (summing to 1) or integer counts (summing to n)."""
    if isinstance(split, Mapping):
        unknown = set(split) - set(_SPLITS)
        if unknown:
            raise InputError(None, f"split: unknown names {sorted(unknown)}; expected {_SPLITS}")
        values = [split.get(name, 0) for name in _SPLITS]
    else:
        values = list(split)
        if len(values) != 3:
            raise InputError(None, f"split: expected 3 values (train, val, test), got {values}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or v < 0
           for v in values):
        raise InputError(None, f"split: values must be non-negative numbers, got {values}")
    if all(isinstance(v, (int, np.integer)) for v in values) and sum(values) > 1:
        if sum(values) != n:
            raise InputError(None, f"split: counts {values} sum to {sum(values)}, but there are {n} "
                                   "realisations per cosmology")
        return [int(v) for v in values]
    fractions = np.asarray(values, dtype=float)
    if not math.isclose(fractions.sum(), 1.0, abs_tol=1e-6):
        raise InputError(None, f"split: fractions {values} do not sum to 1")
    # largest-remainder rounding; every split with a positive fraction gets >= 1 when possible
    raw = fractions * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def split_maps(mapset: MapSet, split: Mapping[str, float] | Sequence[float], seed: int | None = 0) -> np.ndarray:
    """'train'/'val'/'test' per map, assigned by realisation number.

    The distinct realisation numbers are ordered (shuffled with ``default_rng(seed)``, or kept
    ascending as in AWD when ``seed`` is None) and cut into consecutive blocks of the requested
    sizes; every map of a realisation gets its block's label, so each cosmology has the same
    realisations in each split. ``split``: fractions (e.g. ``(0.8, 0.12, 0.08)`` or a dict with
    train/val/test) or integer counts of realisations summing to their number.
    """
    realisations = np.unique(mapset.realisation)
    counts = _split_counts(split, len(realisations))
    order = realisations if seed is None else np.random.default_rng(seed).permutation(realisations)
    labels = np.repeat(np.asarray(_SPLITS, dtype="U5"), counts)
    lookup = dict(zip(order.tolist(), labels.tolist()))
    return np.asarray([lookup[r] for r in mapset.realisation.tolist()], dtype="U5")
