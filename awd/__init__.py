"""awd: Adaptive Wavelet Distillation — learned orthogonal wavelets distilled from neural networks.

Public names are imported lazily so that ``import awd`` stays cheap (the workflow imports it
while building the DAG):

- ``DWT1d``, ``DWT2d``: learnable orthogonal filter banks (``awd.transform``).
- ``save_wavelet``, ``load_wavelet``: portable JSON files of learned wavelets (``awd.wavelet``).
- ``trim_attributions``: TRIM attributions in the wavelet domain (``awd.trim``).
- ``DistillConfig``, ``distill_path``, ``distill_grid``: the AWD distiller (``awd.distill``).
- ``Dataset``, ``Domain``, ``register``, ``get_domain``: the domain interface (``awd.domain``).
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "DWT1d": "awd.transform", "DWT2d": "awd.transform",
    "save_wavelet": "awd.wavelet", "load_wavelet": "awd.wavelet",
    "trim_attributions": "awd.trim",
    "DistillConfig": "awd.distill", "distill_path": "awd.distill", "distill_grid": "awd.distill",
    "Dataset": "awd.domain", "Domain": "awd.domain", "register": "awd.domain", "get_domain": "awd.domain",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'awd' has no attribute {name!r}")
