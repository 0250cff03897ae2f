"""Helpers shared by the benchmark scripts: timing a call and updating benchmarks/README.md."""
from __future__ import annotations

import time
from pathlib import Path

from awd.io import atomic_path

README = Path(__file__).resolve().parent / "README.md"


def timed(fn):
    """(seconds, result) of calling ``fn()`` once, by the wall clock."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def write_section(text: str, section: str, path: Path = README) -> None:
    """Replace the ``section`` heading's part of ``path`` (up to the next ``## `` heading) with
    ``text``, or append it when absent; the other sections are kept."""
    old = path.read_text().splitlines() if path.exists() else ["# Benchmarks"]
    start = next((i for i, line in enumerate(old) if line.strip() == section), None)
    if start is None:
        new = old + ([""] if old and old[-1] else []) + text.splitlines()
    else:
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
        tail = old[end:]
        new = old[:start] + text.splitlines() + ([""] + tail if tail else [])
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(new).rstrip("\n") + "\n")
