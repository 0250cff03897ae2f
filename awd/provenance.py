"""Provenance written next to the results: resolved config, versions, seeds, git revision
(dirty when any project or domain file differs from the commit, untracked files included) and
content hashes of each domain's code and of each stage's code and config slice."""
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


#: What counts as the project's code and settings when deciding whether the tree is dirty.
PROJECT_PATHS = ("Snakefile", "awd", "workflow", "domains", "pyproject.toml", "environment.yml")


def git_revision(repo: str | Path, paths: tuple[str, ...] = PROJECT_PATHS) -> dict:
    """The commit of ``repo`` and whether anything under ``paths`` differs from it: modified,
    staged, deleted or untracked files (ignored files, such as results and caches, excepted).
    ``changes`` lists the differing files (at most 50)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=all", "--", *paths)
    changes = None if status is None else [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": rev, "dirty": None if changes is None else bool(changes),
            "changes": None if changes is None else changes[:50]}


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


def write_provenance(path: str | Path, config: dict, code_hash: str, repo: str | Path,
                     hashes: dict | None = None) -> None:
    """``hashes``: per domain, the content hash of its code and of each stage's code and config
    slice (``awd.stages``), the values that decide what reruns."""
    write_json(path, {
        "config": config,
        "seeds": collect_seeds(config),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_revision(repo),
        "library_hash": code_hash,
        "domains": hashes or {},
    })
