"""Write a convergence-map tree in the layout of AWD's own cosmology data (Ha et al. 2021,
``Yu-Group/adaptive-wavelets``, ``awave/data/resize_imgs.py`` and ``awave/data/cosmology.py``)::

    <data>/cosmological_parameters.txt
    <data>/z1_256/model000/WLconv_z1.00_0000r.fits
    <data>/z1_256/model000/WLconv_z1.00_0001r.fits ... model009/...

- ``model%03d`` folders: row i of the parameter file belongs to ``model{i:03d}``; AWD reads
  the first 10 rows (``np.loadtxt(parameter_file)[:ncosmo]``).
- ``cosmological_parameters.txt``: plain numbers separated by blanks, one row per MassiveNuS
  model, five columns (id, M_nu [eV], Omega_m, 10^9 A_s, sigma_8); AWD keeps ``[1:-1]``. The
  file lists more models than have map folders (MassiveNuS has 101).
- ``WLconv_z1.00_%04dr.fits``: realisations numbered from 0000 (AWD's renumbered copy), one
  256 x 256 float32 image in the primary HDU, big-endian (astropy writes FITS big-endian),
  header ``bare`` (SIMPLE/BITPIX/NAXIS only, as the re-saved MassiveNuS cut-outs) or
  ``lenstools`` (LensTools' ``saveFITS`` keywords with ANGLE in degrees).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from domains.cosmology.theory import MASSIVENUS_COSMOLOGIES, sigma8_from_as

PARAMETER_FILE = "cosmological_parameters.txt"
SIDE_DEG = 3.5


def lenstools_header(omega_m: float) -> dict:
    """The keywords LensTools' ``ConvergenceMap.save`` writes (``ANGLE`` in degrees)."""
    return {"H0": 70.0, "h": 0.7, "OMEGA_M": omega_m, "OMEGA_L": 1.0 - omega_m, "W0": -1.0, "WA": 0.0,
            "Z": 1.0, "ANGLE": SIDE_DEG, "ITYPE": "ConvergenceMap"}


def parameter_rows(n_rows: int) -> np.ndarray:
    """(n_rows, 5): id, M_nu, Omega_m, 10^9 A_s, sigma_8 of the first MassiveNuS models."""
    rows = []
    for i, c in enumerate(MASSIVENUS_COSMOLOGIES[:n_rows]):
        s8 = sigma8_from_as(omega_m=c["omega_m"], a_s=c["a_s"])
        rows.append([i, c["m_nu"], c["omega_m"], c["a_s"], s8])
    return np.asarray(rows)


def write_parameter_file(path: Path, rows: np.ndarray) -> Path:
    """Write the rows as AWD's loader reads them (``np.loadtxt``; blank-separated, no header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(f"{int(row[0]):d} {row[1]:.5f} {row[2]:.5f} {row[3]:.4f} {row[4]:.5f}\n")
    return path


def awd_map(model: int, realisation: int, npix: int) -> np.ndarray:
    """A reproducible float32 map with convergence-like values (skewed, sigma ~ 0.02)."""
    g = np.random.default_rng(1000 * model + realisation).standard_normal((npix, npix))
    return (0.026 * (np.exp(0.6 * g - 0.18) - 1.0)).astype(np.float32)


def write_awd_tree(data_dir: str | Path, *, n_models: int = 3, n_realisations: int = 4, npix: int = 256,
                   header: str = "bare", n_rows: int = 12, subfolder: str = "z1_256") -> dict:
    """Write the tree described in the module docstring; return {(model, realisation): map}.

    ``subfolder=""`` puts the ``model%03d`` folders directly into ``data_dir``.
    """
    data_dir = Path(data_dir)
    rows = parameter_rows(n_rows)
    write_parameter_file(data_dir / PARAMETER_FILE, rows)
    written = {}
    for m in range(n_models):
        folder = data_dir / subfolder / f"model{m:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for r in range(n_realisations):
            data = awd_map(m, r, npix)
            hdu = fits.PrimaryHDU(data=data)
            if header == "lenstools":
                for key, value in lenstools_header(float(rows[m, 2])).items():
                    hdu.header[key] = value
            elif header != "bare":
                raise ValueError(f"header must be 'bare' or 'lenstools', got {header!r}")
            hdu.writeto(folder / f"WLconv_z1.00_{r:04d}r.fits")
            written[(m, r)] = data
    return written
