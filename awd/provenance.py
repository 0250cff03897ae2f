"""Provenance written next to the results: resolved config, versions, seeds, git revision."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from awd.io import write_json

PACKAGES = ("torch", "numpy", "scipy", "PyWavelets", "astropy", "scikit-image", "tifffile", "pandas",
            "scikit-learn", "matplotlib", "snakemake", "pyccl", "trackpy", "laptrack", "h5py", "pyarrow")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(repo: str | Path) -> dict[str, str | bool | None]:
    """The commit of ``repo`` and whether its tracked files have uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": rev, "dirty": None if status is None else bool(status)}


def collect_seeds(config: dict, prefix: str = "") -> dict[str, int]:
    """Every config entry named ``seed`` with its dotted key path."""
    seeds = {}
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            seeds.update(collect_seeds(value, path))
        elif key == "seed":
            seeds[path] = value
    return seeds


def write_provenance(path: str | Path, config: dict, code_hash: str, repo: str | Path) -> None:
    write_json(path, {
        "config": config,
        "seeds": collect_seeds(config),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_revision(repo),
        "library_hash": code_hash,
    })
