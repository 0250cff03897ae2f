"""The project's one entry to numba, without torch: the filter-bank kernels of :mod:`awd.kernels`
and the CME fits (``domains.cme.tracking.detect``) compile through :func:`jit`."""
from __future__ import annotations

try:  # pragma: no cover - exercised by the import itself
    import numba
except ImportError:  # pragma: no cover
    numba = None

#: Whether compiled kernels can be used (numba importable); callers keep a numpy or torch path.
AVAILABLE = numba is not None


def jit(fn, fastmath: bool | set = True):
    """numba-compile ``fn`` (GIL released, fast math unless ``fastmath`` says otherwise), cached on
    disk where numba finds a writable place (beside the source, or the user's cache directory);
    without one (a read-only install and no writable home) it is compiled in every process instead
    of failing."""
    try:
        return numba.njit(nogil=True, fastmath=fastmath, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, fastmath=fastmath)(fn)
