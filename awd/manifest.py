"""The manifest of an external data folder: every file under it with its size and content hash.

The workflow refreshes it whenever it builds the DAG and makes it an input of the ingest (and
figures) job of a domain that reads ``data.root``. The file is rewritten only when its content
changes, and Snakemake compares input checksums, so editing, adding or removing a file under
``data.root`` reruns ingest and what follows, while an unchanged tree (even one whose files were
only touched) reruns nothing.

Hashing a large tree is paid once: a cache beside the manifest keeps each file's hash with its
size and modification time (ns), and a file is read again only when those change.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from awd.io import atomic_path

HEADER = "path\tsize\tsha256"


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def scan(root: str | Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under ``root``, symbolic links followed."""
    root = Path(root)
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            st = path.stat()
            out.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _read_cache(path: Path) -> dict[str, tuple[int, int, str]]:
    cache = {}
    if path.is_file():
        for line in path.read_text().splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
                cache[parts[0]] = (int(parts[1]), int(parts[2]), parts[3])
    return cache


def manifest_text(root: str | Path, cache_path: str | Path | None = None) -> str:
    """The manifest of ``root`` (one line per file: path, size, sha256); with ``cache_path``,
    hashes of files whose size and mtime are unchanged are taken from that cache, which is
    then rewritten."""
    root = Path(root)
    cache = _read_cache(Path(cache_path)) if cache_path else {}
    rows, new_cache = [], []
    for rel, size, mtime in scan(root):
        hit = cache.get(rel)
        digest = hit[2] if hit and hit[:2] == (size, mtime) else _sha256(root / rel)
        rows.append(f"{rel}\t{size}\t{digest}")
        new_cache.append(f"{rel}\t{size}\t{mtime}\t{digest}")
    if cache_path:
        text = "\n".join(["path\tsize\tmtime_ns\tsha256", *new_cache]) + "\n"
        if not Path(cache_path).is_file() or Path(cache_path).read_text() != text:
            with atomic_path(cache_path) as tmp:
                tmp.write_text(text)
    return "\n".join([HEADER, *rows]) + "\n"


def update_manifest(root: str | Path, manifest: str | Path) -> bool:
    """Write the manifest of ``root`` to ``manifest`` when its content differs; True if written."""
    manifest = Path(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    text = manifest_text(root, manifest.with_name(f".{manifest.name}.cache"))
    if manifest.is_file() and manifest.read_text() == text:
        return False
    with atomic_path(manifest) as tmp:
        tmp.write_text(text)
    return True
