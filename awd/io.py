"""Safe file handling shared by every stage: atomic writes, input errors, contained paths."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class InputError(ValueError):
    """Bad user input: the message names the file (or config key) and the problem."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def known_fields(cls, values: dict | None, section: str) -> dict:
    """A copy of the config section ``values`` after checking that every key is a field of the
    dataclass ``cls``; an unknown key raises :class:`InputError` naming ``config:<section>`` and
    the known keys."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"config:{section}", f"unknown keys {unknown}; known: {sorted(known)}")
    return values


def is_number(v: Any) -> bool:
    """A finite int or float from a config (YAML's true/false are not numbers)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_count(v: Any) -> bool:
    """A whole number >= 1 from a config (not a bool, not 2.5)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or exception leaves no partial file at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary shared files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; move it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def json_default(obj: Any) -> Any:
    """``json.dumps`` hook: numpy scalars and arrays as numbers and lists, paths as strings."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"value of type {type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, sorted keys, numpy scalars/arrays converted."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=json_default) + "\n")


def write_csv(path: str | Path, df, float_format: str | None = None) -> None:
    """Write a pandas table as CSV atomically, without its index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(name: str) -> str:
    """A file-name component derived from a sample/cell name that cannot leave its folder."""
    cleaned = _SAFE_NAME.sub("_", str(name)).strip("._")
    if not cleaned:
        raise InputError(None, f"name {name!r} gives an empty file name")
    return cleaned


def contained(root: str | Path, *parts: str) -> Path:
    """``root / parts`` after checking the result stays inside ``root``."""
    root = Path(root).resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise InputError(path, f"path leaves the results directory {root}")
    return path
