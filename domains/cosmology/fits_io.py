"""Ingest of convergence-map trees as MassiveNuS distributes them and as AWD's authors prepared
them (real or mock, one code path).

MassiveNuS layout (parameters only in the folder name; ``a_s`` is 10^9 A_s)::

    <root>/convergence_gal_mnv{M_nu:.5f}_om{Omega_m:.5f}_As{10^9 A_s:.4f}/
        Maps{10 z_s:02d}/WLconv_z{z_s:.2f}_{r:04d}r.fits

AWD layout (``awave/data/cosmology.py``; row i of the parameter file is ``model{i:03d}``)::

    <data>/cosmological_parameters.txt
    <data>/z1_256/model%03d/WLconv_z1.00_%04dr.fits

``root`` may hold the ``model%03d`` folders directly or in one subfolder; the parameter file is
looked for beside them, then one folder up. Both layouts may sit under one root.

Any realisation numbering is accepted (0000 or 0001 first, any number of digits, gaps), files
may be gzipped (``.fits.gz``). A file is one 2-D image (the primary HDU or the one image
extension; tile-compressed and BSCALE-scaled integer images included), float32/float64 in
either byte order, with a bare header, a LensTools header (``ANGLE`` side in degrees, ``Z``,
``OMEGA_M``, ...) or a linear WCS (``CDELT``/``CD`` with ``CUNIT``). Everything under the root
that is not read (other redshifts, junk files and folders) is listed in one warning with the
reason, and returned with the scan.

Public API
----------
``scan_tree(root, redshift) -> pandas.DataFrame``
    one row per map file: ``path, m_nu, omega_m, a_s, realisation, layout, cosmology``
    (cosmology ids 0..n-1 follow the sorted unique (m_nu, omega_m, a_s) triples), sorted by
    cosmology, realisation; ``attrs['skipped']`` and ``attrs['folders']``.
    ``scan_massivenus_tree`` is the same without ``layout``.
``read_parameter_file(path) -> (n, 3) array`` of AWD's ``cosmological_parameters.txt``.
``read_convergence_map(path, *, target_size, rebin="auto", nan_policy="error", pixel_arcmin=None)``
    ``-> (float32 (target_size, target_size) array, info dict)``; 2x2 (or k x k) block means
    when the file is larger than ``target_size``.
``load_maps(root, *, redshift, target_size, max_per_cosmology=None, threads=1, rebin="auto",``
``nan_policy="error", pixel_arcmin=None) -> MapSet``
    every map of the tree, checked for consistency, stacked in scan order; logs maps per
    cosmology, NaN patches and the native and working pixel scales.
``split_maps(mapset, split, seed=0) -> ndarray of 'train'/'val'/'test'``
    by realisation number, identical for every cosmology (MassiveNuS shares the initial
    conditions of a realisation across cosmologies), deterministic.
``block_mean(image, factor) -> ndarray``: mean over factor x factor blocks.
``massivenus_dir_name``, ``maps_dir_name``, ``map_file_name``: the layout's names.

Every problem with a file (not FITS, truncated, not 2-D, not square, several images, integer
pixels without BSCALE, all-NaN, constant, NaNs under ``nan_policy="error"``, a size that cannot
become ``target_size``, sizes or pixel scales that differ between files or from
``pixel_arcmin``, ANGLE and WCS that disagree, a header redshift that contradicts the folder,
unparseable or unknown parameters in a folder name, a model folder without a parameter row,
two folders with the same parameters, duplicate realisations) raises
:class:`awd.io.InputError` naming the file or folder (every bad file at once where files are
read) and the config key to change. Nothing is written here.
"""
from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from awd.domain import release_pages
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


AWD_PARAMETER_FILE = "cosmological_parameters.txt"
#: Pixel scale in arcmin of AWD's maps (MassiveNuS 3.5 deg at 256^2), for which the heads' bins are made.
AWD_PIXEL_ARCMIN = MASSIVENUS_SIDE_DEG * 60.0 / 256
_MODEL_RE = re.compile(r"^model(\d+)$")
_MOCK_SETTINGS = "mock_settings.json"
#: Column names a parameter-file header may use for each parameter (compared lower-case, without '_').
_PARAM_ALIASES = {"m_nu": {"mnu", "mnv", "mν", "sum_mnu", "mnu_ev"}, "omega_m": {"omegam", "om", "omm", "omega_m"},
                  "a_s": {"as", "10^9as", "1e9as", "a_s"}}


def massivenus_dir_name(m_nu: float, omega_m: float, a_s: float) -> str:
    """``convergence_gal_mnv0.10000_om0.30000_As2.1000`` (``a_s`` is 10^9 A_s)."""
    return f"convergence_gal_mnv{m_nu:.5f}_om{omega_m:.5f}_As{a_s:.4f}"


def maps_dir_name(redshift: float) -> str:
    """``Maps10`` for z_s = 1.0 (ten times the redshift, two digits)."""
    tenz = 10.0 * float(redshift)
    if not redshift > 0 or abs(tenz - round(tenz)) > 1e-6:
        raise InputError(None, f"cosmology.data.redshift={redshift} is not a positive multiple of 0.1, "
                               "so it has no MassiveNuS Maps folder")
    return f"Maps{int(round(tenz)):02d}"


def map_file_name(redshift: float, realisation: int) -> str:
    """``WLconv_z1.00_0001r.fits``."""
    return f"WLconv_z{redshift:.2f}_{int(realisation):04d}r.fits"


def _check_params(where: Path, m_nu: float, omega_m: float, a_s: float) -> None:
    if not (m_nu >= 0 and 0 < omega_m < 1 and a_s > 0):
        raise InputError(where, f"implausible parameters M_nu={m_nu}, Omega_m={omega_m}, 10^9 A_s={a_s}")


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
    _check_params(folder, m_nu, omega_m, a_s)
    return m_nu, omega_m, a_s


def read_parameter_file(path: str | Path) -> np.ndarray:
    """(n, 3) [m_nu, omega_m, 10^9 A_s] per row of AWD's ``cosmological_parameters.txt``.

    Row i belongs to ``model{i:03d}``. Columns are separated by blanks or commas; lines
    starting with ``#`` are comments. A header comment naming the columns (``Mnu``/``M_nu``,
    ``Omegam``/``Om``, ``As``/``A_s``) decides which columns are read; without one, five
    columns are read as AWD's loader does (``[1:-1]``: id, M_nu, Omega_m, 10^9 A_s, sigma_8)
    and three as (M_nu, Omega_m, 10^9 A_s). A_s given as A_s (below 1e-6) is scaled by 1e9.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read the parameter file ({err})") from err
    header: list[str] | None = None
    rows: list[list[float]] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            if not rows:
                header = [t for t in re.split(r"[\s,]+", text.lstrip("#").strip()) if t]
            continue
        tokens = [t for t in re.split(r"[\s,]+", text) if t]
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            if not rows and header is None and not any(re.fullmatch(_NUMBER, t) for t in tokens):
                header = tokens  # an uncommented header line: names only
                continue
            raise InputError(path, f"line {number} holds a value that is not a number: {text!r}") from None
        if rows and len(values) != len(rows[0]):
            raise InputError(path, f"line {number} has {len(values)} columns, the first row {len(rows[0])}")
        rows.append(values)
    if not rows:
        raise InputError(path, "holds no parameter rows")
    table = np.asarray(rows, dtype=np.float64)
    ncol = table.shape[1]
    columns = None
    if header is not None and len(header) == ncol:
        names = [h.lower().replace("_", "").replace("$", "").replace("\\", "") for h in header]
        aliases = {k: {a.replace("_", "") for a in v} for k, v in _PARAM_ALIASES.items()}
        found = {k: [i for i, n in enumerate(names) if n in aliases[k]] for k in PARAM_NAMES}
        if all(len(v) == 1 for v in found.values()):
            columns = [found[k][0] for k in PARAM_NAMES]
    if columns is None:
        if ncol == 5:
            columns = [1, 2, 3]
        elif ncol == 3:
            columns = [0, 1, 2]
        else:
            raise InputError(path, f"has {ncol} columns and no header naming them; expected AWD's 5 columns "
                                   "(id, M_nu, Omega_m, 10^9 A_s, sigma_8), 3 columns (M_nu, Omega_m, 10^9 A_s), "
                                   "or a '#' header line naming the Mnu, Omegam and As columns")
    params = table[:, columns].copy()
    params[:, 2] = np.where(params[:, 2] < 1e-6, params[:, 2] * 1e9, params[:, 2])
    for row in params:
        _check_params(path, *row.tolist())
    return params


@dataclass
class _Scan:
    """What a tree scan found: map rows, and every entry not read with the reason."""

    rows: list
    skipped: list
    folders: dict  # (m_nu, omega_m, a_s) -> folder, to refuse two folders with the same parameters


def _map_files(folder: Path, redshift: float, scan: _Scan, root: Path, strict_z: bool) -> dict[int, Path]:
    """Realisation -> file of the ``WLconv_z{z}_{r}r.fits`` files in ``folder``; others go to skipped."""
    by_realisation: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        rel = path.relative_to(root)
        if path.is_dir():
            scan.skipped.append((rel, "a folder inside a map folder"))
            continue
        if not path.name.startswith("WLconv_"):
            scan.skipped.append((rel, "not a WLconv_z{z}_{realisation}r.fits map file"))
            continue
        match = _FILE_RE.match(path.name)
        if not match:
            raise InputError(path, "file name does not follow WLconv_z{z}_{realisation}r.fits")
        if abs(float(match.group("z")) - redshift) > 0.005:
            if strict_z:
                raise InputError(path, f"file name gives z={match.group('z')} inside {folder.name} "
                                       f"(source redshift {redshift})")
            scan.skipped.append((rel, f"source redshift z={match.group('z')}, not cosmology.data.redshift={redshift}"))
            continue
        r = int(match.group("r"))
        if r in by_realisation:
            raise InputError(path, f"realisation {r} appears twice (also {by_realisation[r].name})")
        by_realisation[r] = path
    return by_realisation


def _add_cosmology(scan: _Scan, params: tuple, folder: Path, files: dict[int, Path], layout: str) -> None:
    if params in scan.folders:
        raise InputError(folder, f"gives the same parameters {params} as {scan.folders[params].name}")
    scan.folders[params] = folder
    scan.rows += [{"path": str(p), "m_nu": params[0], "omega_m": params[1], "a_s": params[2],
                   "realisation": r, "layout": layout} for r, p in files.items()]


def _scan_massivenus_folder(folder: Path, redshift: float, scan: _Scan, root: Path) -> None:
    params = _parse_dir_params(folder)
    maps_dir = maps_dir_name(redshift)
    sub = folder / maps_dir
    if not sub.is_dir():
        raise InputError(folder, f"has no {maps_dir} folder for source redshift {redshift} "
                                 "(cosmology.data.redshift)")
    for entry in sorted(folder.iterdir()):
        if entry != sub:
            reason = (f"other source redshift (cosmology.data.redshift={redshift} reads {maps_dir})"
                      if entry.is_dir() and re.fullmatch(r"Maps\d+", entry.name) else "not the Maps folder read")
            scan.skipped.append((entry.relative_to(root), reason))
    files = _map_files(sub, redshift, scan, root, strict_z=True)
    if not files:
        raise InputError(sub, "contains no WLconv_z*_*r.fits map files")
    _add_cosmology(scan, params, folder, files, "massivenus")


def _find_parameter_file(model_parent: Path, root: Path) -> Path:
    for place in dict.fromkeys([model_parent, root, model_parent.parent]):
        if (place / AWD_PARAMETER_FILE).is_file():
            return place / AWD_PARAMETER_FILE
    raise InputError(model_parent, f"holds AWD model### folders but no {AWD_PARAMETER_FILE} was found here or "
                                   "one folder up; provide it (one row of M_nu, Omega_m, 10^9 A_s per model, "
                                   "row i for model{i:03d}, as AWD's loader reads it)")


def _scan_awd_models(parent: Path, models: list[Path], redshift: float, scan: _Scan, root: Path) -> Path:
    """Read AWD's ``model%03d`` folders in ``parent`` with their parameter-file rows."""
    param_file = _find_parameter_file(parent, root)
    table = read_parameter_file(param_file)
    for folder in models:
        index = int(_MODEL_RE.match(folder.name).group(1))
        if index >= len(table):
            raise InputError(folder, f"has no row in {param_file.name} ({len(table)} rows; row i is model{{i:03d}})")
        files = _map_files(folder, redshift, scan, root, strict_z=False)
        if not files:
            raise InputError(folder, f"contains no WLconv_z{redshift:.2f}_*r.fits map files "
                                     "(cosmology.data.redshift)")
        _add_cosmology(scan, tuple(float(v) for v in table[index]), folder, files, "awd")
    unused = len(table) - len(models)
    if unused > 0:
        log.info("%s: %d of %d parameter rows have a model folder in %s (AWD reads the first 10)",
                 param_file, len(models), len(table), parent)
    return param_file


def scan_tree(root: str | Path, redshift: float) -> pd.DataFrame:
    """Index the map files of one source redshift (reads no pixels); see the module docstring.

    Returns one row per map: ``path, m_nu, omega_m, a_s, realisation, layout, cosmology``;
    ``table.attrs['skipped']`` lists ``(path relative to root, reason)`` of every entry not read,
    which is also logged as one warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "is not a folder (expected a MassiveNuS tree of convergence_gal_* folders "
                               "or AWD's model### folders with cosmological_parameters.txt)")
    scan = _Scan(rows=[], skipped=[], folders={})
    entries = sorted(root.iterdir())
    models = [p for p in entries if p.is_dir() and _MODEL_RE.match(p.name)]
    # AWD's data folder: cosmological_parameters.txt beside z1_256/model%03d
    nested = {p: sorted(q for q in p.iterdir() if q.is_dir() and _MODEL_RE.match(q.name))
              for p in entries if p.is_dir() and not _MODEL_RE.match(p.name) and not p.name.startswith("convergence")}
    nested = {p: m for p, m in nested.items() if m}
    if len(nested) + bool(models) > 1:
        places = ([str(root)] if models else []) + [str(p) for p in nested]
        raise InputError(root, f"holds AWD model### folders in several places ({', '.join(places)}); "
                               "set cosmology.data.root to the one to read")
    used: set[Path] = set()
    if models:
        used |= {_scan_awd_models(root, models, redshift, scan, root), *models}
    for parent, group in nested.items():
        used |= {_scan_awd_models(parent, group, redshift, scan, root), parent}
        for entry in sorted(parent.iterdir()):
            if entry not in group and entry.name != AWD_PARAMETER_FILE:
                scan.skipped.append((entry.relative_to(root), "not an AWD model### folder"))
    for entry in entries:
        if entry in used:
            continue
        if entry.is_dir() and entry.name.startswith("convergence"):
            _scan_massivenus_folder(entry, redshift, scan, root)
        elif entry.name == _MOCK_SETTINGS:
            continue  # the mock generator's record of its settings
        elif entry.is_dir():
            scan.skipped.append((entry.relative_to(root), "neither a MassiveNuS convergence_gal_* folder nor an "
                                                          "AWD model### folder"))
        else:
            scan.skipped.append((entry.relative_to(root), "a file at the top of the tree (maps are read from "
                                                          "convergence_gal_*/Maps* or model### folders)"))
    if not scan.rows:
        found = "; ".join(f"{rel} ({reason})" for rel, reason in scan.skipped[:8])
        raise InputError(root, "contains no convergence_gal_mnv*_om*_As* folders and no AWD model### folders "
                               "(set cosmology.data.root to the folder holding them; convert other formats, e.g. "
                               "HDF5 or .npy maps, to one FITS image per map in either layout)"
                               + (f"; found: {found}" if found else ""))
    if scan.skipped:
        by_reason: dict[str, list[str]] = {}
        for rel, reason in scan.skipped:
            by_reason.setdefault(reason, []).append(str(rel))
        log.warning("%s: %d %s not read:\n%s", root, len(scan.skipped),
                    "entry" if len(scan.skipped) == 1 else "entries",
                    "\n".join(f"  {reason}: {', '.join(paths)}" for reason, paths in by_reason.items()))
    table = pd.DataFrame(scan.rows)
    ids = {t: i for i, t in enumerate(sorted(scan.folders))}
    table["cosmology"] = [ids[t] for t in zip(table["m_nu"], table["omega_m"], table["a_s"])]
    table = table.astype({"realisation": np.int64, "cosmology": np.int64})
    table = table.sort_values(["cosmology", "realisation"], kind="stable").reset_index(drop=True)
    table.attrs["skipped"] = [(str(rel), reason) for rel, reason in scan.skipped]
    table.attrs["folders"] = {ids[t]: str(f.relative_to(root)) for t, f in scan.folders.items()}
    return table


def scan_massivenus_tree(root: str | Path, redshift: float) -> pd.DataFrame:
    """:func:`scan_tree` without the ``layout`` column (the MassiveNuS-only interface)."""
    return scan_tree(root, redshift).drop(columns="layout")


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


def _image_hdu(hdul, path: Path):
    """The one HDU of ``hdul`` holding an image; InputError for none or several."""
    images = [(i, hdu) for i, hdu in enumerate(hdul) if hdu.is_image and hdu.header.get("NAXIS", 0) > 0]
    if not images:
        raise InputError(path, "FITS file contains no image data (expected a 2-D image HDU; tables and HEALPix "
                               "maps are not flat patches)")
    if len(images) > 1:
        desc = ", ".join(f"HDU {i} '{hdu.name}' " + "x".join(str(hdu.header.get(f"NAXIS{k}", "?"))
                                                            for k in range(hdu.header["NAXIS"], 0, -1))
                         for i, hdu in images)
        raise InputError(path, f"holds {len(images)} images ({desc}); expected one convergence map per "
                               "file (write the kappa map alone, without shear or mask images)")
    return images[0][1]


def _read_image(path: Path):
    """(data, header) of the file's image HDU; InputError for anything unreadable or ambiguous.

    Integer images must carry a BSCALE (astropy applies BSCALE/BZERO); unit axes beyond the
    first two (NAXIS3 = 1) are dropped. Truncated data make astropy fail while reshaping the
    data, which lands here too (no ``warnings.catch_warnings``: it is not thread-safe, and files
    are read by threads).
    """
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = _image_hdu(hdul, path)
            header = hdu.header.copy()  # before the data: astropy rewrites BITPIX once it scales
            bitpix, bscale = header.get("BITPIX", -32), header.get("BSCALE", 1.0)
            if isinstance(bitpix, int) and bitpix > 0 and bscale == 1.0:
                raise InputError(path, f"integer pixels (BITPIX={bitpix}) without BSCALE; a convergence map "
                                       "must be stored as floats (BITPIX -32 or -64) or scaled integers "
                                       "(BSCALE/BZERO)")
            data = np.array(hdu.data)
    except InputError:
        raise
    except Exception as err:  # astropy raises OSError, ValueError, TypeError, ... on junk
        raise InputError(path, f"not a readable FITS file, or truncated ({type(err).__name__}: {err})") from err
    if data.ndim > 2 and all(n == 1 for n in data.shape[:-2]):
        data = data.reshape(data.shape[-2:])
    return data, header


_DIMENSIONLESS = {"", "dimensionless", "none", "1", "kappa", "convergence"}
_ANGLE_UNITS = {"deg": 60.0, "degree": 60.0, "degrees": 60.0, "arcmin": 1.0, "arcsec": 1.0 / 60.0}


def _wcs_pixel_arcmin(header, path: Path) -> float | None:
    """Pixel side in arcmin from CDELTi or CDi_j (CUNITi, deg by default); None without them."""
    if "CDELT1" in header and "CDELT2" in header:
        steps = [_header_float(header, "CDELT1", path), _header_float(header, "CDELT2", path)]
    elif "CD1_1" in header and "CD2_2" in header:
        if abs(header.get("CD1_2", 0.0)) > 1e-12 or abs(header.get("CD2_1", 0.0)) > 1e-12:
            raise InputError(path, "rotated WCS (CD1_2/CD2_1 non-zero); expected a flat map on a square pixel grid")
        steps = [_header_float(header, "CD1_1", path), _header_float(header, "CD2_2", path)]
    else:
        return None
    arcmin = []
    for k, step in enumerate(steps, 1):
        unit = str(header.get(f"CUNIT{k}", "deg")).strip().lower() or "deg"
        if unit not in _ANGLE_UNITS:
            raise InputError(path, f"CUNIT{k}={unit!r} is not an angle unit (deg, arcmin, arcsec)")
        arcmin.append(abs(step) * _ANGLE_UNITS[unit])
    if not arcmin[0] > 0 or not math.isclose(arcmin[0], arcmin[1], rel_tol=1e-4):
        raise InputError(path, f"WCS pixel steps {arcmin[0]:.6g} x {arcmin[1]:.6g} arcmin; expected square pixels")
    return arcmin[0]


def read_convergence_map(path: str | Path, *, target_size: int | None, rebin: int | str = "auto",
                         nan_policy: str = "error", pixel_arcmin: float | None = None):
    """Read one convergence map as native float32 (target_size x target_size).

    ``rebin``: ``"auto"`` block-averages by ``npix // target_size`` (which must divide), an int
    k requires ``npix == k * target_size``; ``target_size=None`` keeps the file's size.
    ``nan_policy`` for NaN/inf pixels: ``"error"``, ``"zero"`` (Ribli et al.) or ``"mean"``
    (the mean of the finite pixels); replaced before rebinning. All-NaN or constant maps are
    always errors. ``pixel_arcmin``: native pixel scale used only when the header gives none.

    The native pixel scale comes from the header's ``ANGLE`` (LensTools, side in degrees), else
    from WCS ``CDELT``/``CD`` steps, else ``pixel_arcmin``; ANGLE and WCS must agree.
    The info dict holds ``npix_file``, ``npix``, ``rebin``, ``angle_deg`` (header ANGLE or
    None), ``header_pixel_arcmin`` (native scale from the header; None without one),
    ``pixel_arcmin`` (of the returned map; None when unknown), ``z``, ``omega_m``,
    ``m_nu``, ``a_s`` (10^9 A_s; a header A_S below 1e-6 is taken as A_s and scaled),
    ``n_nonfinite`` and ``byteorder`` of the file's data ('>' big-endian).
    """
    path = Path(path)
    if nan_policy not in NAN_POLICIES:
        raise InputError(None, f"cosmology.data.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    data, header = _read_image(path)
    if data.ndim != 2:
        raise InputError(path, f"image has {data.ndim} dimension(s) {data.shape}; expected a 2-D map")
    if data.shape[0] != data.shape[1]:
        raise InputError(path, f"map is {data.shape[0]}x{data.shape[1]}; expected a square map (crop the files "
                               "to N x N: the wavelet transforms and the teacher take square maps)")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(path, f"pixels of type {data.dtype}; expected real numbers")
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
            raise InputError(path, f"{n_bad} NaN/inf pixels (nan_policy='error'; set cosmology.data.nan_policy "
                                   "to 'zero' or 'mean' to patch them)")
        kappa[~finite] = 0.0 if nan_policy == "zero" else good.mean()

    npix_file = kappa.shape[0]
    factor = _rebin_factor(path, npix_file, target_size, rebin)
    out = block_mean(kappa, factor).astype(np.float32)

    angle = _header_float(header, "ANGLE", path)
    if angle is not None and not angle > 0:
        raise InputError(path, f"header ANGLE={angle} is not a positive side in degrees")
    wcs = _wcs_pixel_arcmin(header, path)
    from_angle = None if angle is None else angle * 60.0 / npix_file
    if from_angle is not None and wcs is not None and not math.isclose(from_angle, wcs, rel_tol=0.01):
        raise InputError(path, f"header ANGLE={angle} deg gives {from_angle:.4g} arcmin per pixel but the WCS "
                               f"steps give {wcs:.4g}; fix one of them")
    header_scale = from_angle if from_angle is not None else wcs
    native = header_scale if header_scale is not None else pixel_arcmin
    a_s = _header_float(header, "A_S", path)
    info = {
        "npix_file": npix_file, "npix": out.shape[0], "rebin": factor, "angle_deg": angle,
        "header_pixel_arcmin": header_scale,
        "pixel_arcmin": None if native is None else native * factor,
        "z": _header_float(header, "Z", path), "omega_m": _header_float(header, "OMEGA_M", path),
        "m_nu": _header_float(header, "M_NU", path),
        "a_s": None if a_s is None else (a_s * 1e9 if a_s < 1e-6 else a_s),
        "n_nonfinite": n_bad, "byteorder": byteorder,
        "unit": str(header.get("BUNIT", header.get("UNIT", ""))).strip(),
    }
    return out, info


def _divisors_hint(npix: int) -> str:
    options = [d for d in range(npix, 15, -1) if npix % d == 0][:4]
    return (f"set cosmology.data.target_size to a divisor of {npix} ({', '.join(map(str, options))}) "
            f"or to null to keep {npix}") if options else "set cosmology.data.target_size to null"


def _rebin_factor(path: Path, npix: int, target_size: int | None, rebin: int | str) -> int:
    if rebin == "auto":
        if target_size is None:
            return 1
        if target_size < 1 or npix % target_size:
            raise InputError(path, f"map is {npix}x{npix}; cannot make {target_size}x{target_size} "
                                   f"by averaging square blocks: {_divisors_hint(npix)}")
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
    ``pixel_arcmin`` of the maps, ``redshift`` the source redshift; ``nonfinite`` (n,) NaN/inf
    pixels patched per file under ``nan_policy``, ``native_pixel_arcmin`` and ``rebin`` of the
    files, ``folders`` {cosmology id: folder relative to the root}, ``skipped`` [(entry, reason)]
    of everything under the root that was not read."""

    maps: np.ndarray
    params: np.ndarray
    cosmology: np.ndarray
    realisation: np.ndarray
    files: list[str]
    pixel_arcmin: float
    redshift: float | None = None
    nonfinite: np.ndarray | None = None
    nan_policy: str = "error"
    native_pixel_arcmin: float | None = None
    rebin: int = 1
    folders: dict | None = None
    skipped: list | None = None

    def __len__(self) -> int:
        return len(self.maps)


def _majority_check(values: list, files: list[str], what: str, same, hint: str = "mixed maps in one tree") -> None:
    """Raise for the files whose ``what`` differs from the most common value (all of them named)."""
    common, _ = Counter(values).most_common(1)[0]
    odd = [(value, path) for value, path in zip(values, files) if not same(value, common)]
    if len(odd) == 1:
        raise InputError(odd[0][1], f"{what} is {odd[0][0]} but most maps of the tree have {common} ({hint})")
    if odd:
        raise InputError(None, f"{len(odd)} files have {what} other than the {common} of most maps ({hint}):\n"
                         + "\n".join(f"  {path}: {value}" for value, path in odd))


def _raise_all(root: Path, errors: list[InputError]) -> None:
    """One InputError naming every bad file (the error itself when there is one)."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputError(root, f"{len(errors)} map files cannot be used (all listed):\n"
                         + "\n".join(f"  {err}" for err in errors))


def load_maps(root: str | Path, *, redshift: float, target_size: int | None,
              max_per_cosmology: int | None = None, threads: int = 1, rebin: int | str = "auto",
              nan_policy: str = "error", pixel_arcmin: float | None = None,
              scratch: str | Path | None = None, chunk: int = 512) -> MapSet:
    """Read every map of one source redshift in a MassiveNuS or AWD tree into a :class:`MapSet`.

    With ``scratch`` (a file path on a disk with room for all maps) the maps are written to a
    memory-mapped ``.npy`` there, ``chunk`` files at a time, whose pages are handed back to the
    kernel after every chunk: reading N maps then holds one chunk in memory, and ``maps`` is
    that memory map. The file is unlinked as soon as it is created (the mapping keeps its data
    until it is dropped), so nothing is left behind. Without it the maps are one in-memory array.

    ``max_per_cosmology`` keeps the lowest realisation numbers of each cosmology.
    ``pixel_arcmin`` is the files' native pixel scale when headers give none; when it is None
    too, the MassiveNuS side of 3.5 deg is assumed. Files are read by ``threads`` threads. Every
    unreadable file (and, under ``nan_policy='error'``, every file with NaN/inf pixels) is
    named in one error. Logs what was read, skipped and patched, maps per cosmology (a warning
    for cosmologies with fewer maps than the others) and the native and working pixel scales.
    """
    root = Path(root)
    if nan_policy not in NAN_POLICIES:
        raise InputError(None, f"cosmology.data.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    table = scan_tree(root, redshift)
    folders, skipped = table.attrs["folders"], table.attrs["skipped"]
    if max_per_cosmology is not None:
        if max_per_cosmology < 1:
            raise InputError(None, f"cosmology.data.max_per_cosmology must be >= 1, got {max_per_cosmology}")
        n_all = len(table)
        table = table.groupby("cosmology", sort=True).head(int(max_per_cosmology)).reset_index(drop=True)
        if len(table) < n_all:
            log.info("cosmology.data.max_per_cosmology=%d: read the lowest realisation numbers, %d of %d map "
                     "files not read", max_per_cosmology, n_all - len(table), n_all)
    files = table["path"].tolist()
    read_policy = "zero" if nan_policy == "error" else nan_policy  # NaN files are all reported below

    def read(path: str):
        return read_convergence_map(path, target_size=target_size, rebin=rebin, nan_policy=read_policy,
                                    pixel_arcmin=pixel_arcmin)

    errors: dict[int, InputError] = {}
    infos: list[dict] = [{}] * len(files)
    first = None
    for start, path in enumerate(files):  # the first readable file sizes the output array
        try:
            first, infos[start] = read(path)
            break
        except InputError as err:
            errors[start] = err
    if first is None:
        _raise_all(root, list(errors.values()))
    if scratch is None:
        maps = np.empty((len(files), *first.shape), dtype=np.float32)
    else:
        folder = Path(scratch).parent
        made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
        folder.mkdir(parents=True, exist_ok=True)
        maps = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=(len(files), *first.shape))
        os.unlink(scratch)
        for p in made:  # leave no folder behind either
            p.rmdir()
    maps[start] = first

    def fill(i: int) -> None:
        try:
            image, infos[i] = read(files[i])
        except InputError as err:
            errors[i] = err
            return
        if image.shape == first.shape:  # other sizes are reported below, naming the odd files
            maps[i] = image

    step = max(1, int(chunk)) if scratch is not None else len(files)
    with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
        for lo in range(start + 1, len(files), step):
            list(pool.map(fill, range(lo, min(lo + step, len(files)))))
            if scratch is not None:
                maps.flush()
                release_pages(maps)
    nonfinite = np.asarray([info.get("n_nonfinite", 0) for info in infos], dtype=np.int64)
    if nan_policy == "error":
        for i in np.flatnonzero(nonfinite):
            errors.setdefault(int(i), InputError(files[i], f"{nonfinite[i]} NaN/inf pixels (nan_policy='error'; "
                                                 "set cosmology.data.nan_policy to 'zero' or 'mean' to patch them)"))
    _raise_all(root, [errors[i] for i in sorted(errors)])

    _majority_check([i["npix_file"] for i in infos], files, "the map size", lambda a, b: a == b)
    for info, path in zip(infos, files):
        if info["z"] is not None and abs(info["z"] - redshift) > 0.005:
            raise InputError(path, f"header Z={info['z']} contradicts source redshift {redshift} "
                                   f"(cosmology.data.redshift) of its folder")
    npix_file, factor = infos[0]["npix_file"], infos[0]["rebin"]
    header_scales = [i["header_pixel_arcmin"] for i in infos]
    if any(s is not None for s in header_scales):
        _majority_check([s for s in header_scales if s is not None],
                        [f for f, s in zip(files, header_scales) if s is not None],
                        "the native pixel scale (arcmin, from the header)",
                        lambda a, b: math.isclose(a, b, rel_tol=1e-6))
    known = [s for s in header_scales if s is not None]
    if known and pixel_arcmin is not None and not math.isclose(known[0], pixel_arcmin, rel_tol=0.01):
        raise InputError(files[header_scales.index(known[0])],
                         f"the header gives {known[0]:.4g} arcmin per pixel but cosmology.data.pixel_arcmin="
                         f"{pixel_arcmin}; remove the key (headers win) or fix the headers")
    if len(known) < len(infos):
        if pixel_arcmin is not None:
            source = "cosmology.data.pixel_arcmin"
            native = float(pixel_arcmin)
        elif known:
            source = "the headers of the other files"
            native = known[0]
        else:
            source = (f"assumed: MassiveNuS side of {MASSIVENUS_SIDE_DEG} deg over {npix_file} pixels; "
                      "set cosmology.data.pixel_arcmin if your maps differ")
            native = MASSIVENUS_SIDE_DEG * 60.0 / npix_file
        (log.info if pixel_arcmin is not None else log.warning)(
            "%d of %d files give no pixel scale in the header (ANGLE or WCS CDELT); using %s", len(infos) - len(known),
            len(infos), source)
    else:
        source, native = "file headers", known[0]
    working = native * factor
    log.info("pixel scale: native %.4f arcmin (%d px, %s), working %.4f arcmin (%d px%s)", native, npix_file, source,
             working, first.shape[0], f", {factor}x{factor} block means" if factor > 1 else "")

    units = sorted({i["unit"] for i in infos if i["unit"].lower() not in _DIMENSIONLESS})
    if units:
        log.warning("header unit(s) %s: convergence is dimensionless; the maps are read as kappa values "
                    "unchanged, so check that the files hold kappa", units)
    sigma = float(np.median(maps[: min(len(maps), 64)].std(axis=(1, 2))))
    if not 1e-3 <= sigma <= 0.3:
        log.warning("median standard deviation of the maps is %.3g, unlike weak-lensing convergence (about "
                    "0.005-0.05 at arcmin pixels); the heads' bins are absolute kappa values (peak heights "
                    "-0.03 to 0.19): check that the files hold kappa, not shear, S/N or rescaled values", sigma)
    patched = np.flatnonzero(nonfinite)
    for i in patched:
        log.warning("%s: %d NaN/inf pixels set to %s (cosmology.data.nan_policy='%s')", files[i], nonfinite[i],
                    "0" if nan_policy == "zero" else "the mean of the finite pixels", nan_policy)
    if len(patched):
        log.warning("NaN/inf pixels patched in %d of %d files (%d pixels; listed in the maps table)",
                    len(patched), len(files), int(nonfinite.sum()))
    counts = table.groupby("cosmology").size()
    params = table.groupby("cosmology")[list(PARAM_NAMES)].first()
    log.info("maps per cosmology:\n%s", "\n".join(
        f"  {c}: {counts[c]} maps, M_nu={p.m_nu:g} eV, Omega_m={p.omega_m:g}, 10^9 A_s={p.a_s:g} ({folders[c]})"
        for c, p in params.iterrows()))
    most = int(counts.max())
    short = counts[counts < most]
    if len(short):
        log.warning("cosmologies with fewer maps than the others (%d): %s; the split is by realisation number, "
                    "so their splits are smaller", most, ", ".join(f"{c} ({folders[c]}) {n} of {most}"
                                                               for c, n in short.items()))
    log.info("read %d maps of %d cosmologies from %s", len(files), table["cosmology"].nunique(), root)
    return MapSet(maps=maps, params=table[list(PARAM_NAMES)].to_numpy(dtype=np.float64),
                  cosmology=table["cosmology"].to_numpy(), realisation=table["realisation"].to_numpy(),
                  files=files, pixel_arcmin=float(working), redshift=float(redshift), nonfinite=nonfinite,
                  nan_policy=nan_policy, native_pixel_arcmin=float(native), rebin=int(factor), folders=folders,
                  skipped=skipped)


_SPLITS = ("train", "val", "test")


def _split_counts(split: Mapping[str, float] | Sequence[float], n: int) -> list[int]:
    """Counts per split from fractions (summing to 1) or integer counts (summing to n)."""
    if isinstance(split, Mapping):
        unknown = set(split) - set(_SPLITS)
        if unknown:
            raise InputError(None, f"cosmology.data.split: unknown names {sorted(unknown)}; expected {_SPLITS}")
        values = [split.get(name, 0) for name in _SPLITS]
    else:
        values = list(split)
        if len(values) != 3:
            raise InputError(None, f"cosmology.data.split: expected 3 values (train, val, test), got {values}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or v < 0
           for v in values):
        raise InputError(None, f"cosmology.data.split: values must be non-negative numbers, got {values}")
    if all(isinstance(v, (int, np.integer)) for v in values) and sum(values) > 1:
        if sum(values) != n:
            raise InputError(None, f"cosmology.data.split: counts {values} sum to {sum(values)}, but there are {n} "
                                   "realisations per cosmology")
        return [int(v) for v in values]
    fractions = np.asarray(values, dtype=float)
    if not math.isclose(fractions.sum(), 1.0, abs_tol=1e-6):
        raise InputError(None, f"cosmology.data.split: fractions {values} do not sum to 1")
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
