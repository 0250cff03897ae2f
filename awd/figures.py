"""Small helpers shared by the domains' figure code: atomic PNG writing and input checks."""
from __future__ import annotations

from pathlib import Path

from awd.io import InputError, atomic_path

#: Resolution of every PNG the workflow writes.
DPI = 110


def save_png(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` as PNG, atomically (no half-written file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def require_file(path: str | Path, hint: str) -> Path:
    """``path`` if it is a file, else an InputError naming it and ``hint`` (what writes it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"missing; {hint}")
    return path
