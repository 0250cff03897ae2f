"""The domain interface: what a scientific domain provides to the generic AWD stages.

The workflow runs the same stages for every domain (``simulate -> ingest -> teacher ->
distill -> heads -> figures``). A domain is a subclass of :class:`Domain` registered with
:func:`register`; the stages look it up by name with :func:`get_domain`. Domains live in
``domains/<name>/`` (in-tree) or in any package that exposes the entry-point group
``awd.domains``; nothing in ``awd/`` or in the workflow rules names a domain.

The hand-over between stages is a :class:`Dataset`: an ``.npz`` file (never pickle) with
the teacher/AWD inputs, the regression targets, the split and the group of every sample.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """Samples of one domain, ready for the teacher and for AWD.

    ``X``: float32 inputs, (n, L) for 1D domains or (n, H, W) for 2D domains.
    ``y``: float32 targets, (n, k); ``target_names`` names the k columns.
    ``split``: 'train' / 'val' / 'test' per sample.
    ``group``: int per sample (cosmology id, cell id, ...), used for grouped statistics.
    ``extra``: further per-sample numeric arrays a domain's heads need (first axis n).
    ``meta``: JSON-serialisable facts (units, provenance, data source).
    """

    X: np.ndarray
    y: np.ndarray
    target_names: list[str]
    split: np.ndarray
    group: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float32)
        self.y = np.asarray(self.y, dtype=np.float32)
        if self.y.ndim == 1:
            self.y = self.y[:, None]
        self.split = np.asarray(self.split, dtype="U5")
        self.group = np.asarray(self.group, dtype=np.int64)
        n = len(self.X)
        for name, arr in [("y", self.y), ("split", self.split), ("group", self.group), *self.extra.items()]:
            if len(arr) != n:
                raise ValueError(f"Dataset: '{name}' has {len(arr)} rows, X has {n}")
        if self.y.shape[1] != len(self.target_names):
            raise ValueError(f"Dataset: y has {self.y.shape[1]} columns, target_names {self.target_names}")
        bad = set(np.unique(self.split)) - set(SPLITS)
        if bad:
            raise ValueError(f"Dataset: unknown split labels {sorted(bad)}; expected {SPLITS}")
        if not np.all(np.isfinite(self.X)):
            raise ValueError("Dataset: X contains NaN or inf")

    def subset(self, split: str) -> "Dataset":
        """The samples of one split (a copy)."""
        m = self.split == split
        return Dataset(self.X[m], self.y[m], list(self.target_names), self.split[m], self.group[m],
                       {k: v[m] for k, v in self.extra.items()}, dict(self.meta))

    def target(self, name: str) -> np.ndarray:
        """One target column by name."""
        return self.y[:, self.target_names.index(name)]

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` atomically (no pickled objects inside)."""
        from awd.io import atomic_path

        arrays = {"X": self.X, "y": self.y, "split": self.split, "group": self.group,
                  "target_names": np.asarray(self.target_names, dtype="U64"),
                  "meta": np.asarray(json.dumps(self.meta, sort_keys=True))}
        arrays.update({f"extra__{k}": np.asarray(v) for k, v in self.extra.items()})
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        """Read a dataset written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            extra = {k[len("extra__"):]: z[k] for k in z.files if k.startswith("extra__")}
            return cls(z["X"], z["y"], [str(t) for t in z["target_names"]], z["split"], z["group"],
                       extra, json.loads(str(z["meta"])))


class Domain:
    """Base class of a scientific domain. Subclasses set ``name`` and override the hooks.

    Each hook receives ``cfg``, the validated config section of the domain
    (``config[<name>]``, defaults filled from ``schema_path``), and plain paths; hooks
    write their own outputs atomically and raise ``awd.io.InputError`` on bad input.
    """

    name: ClassVar[str] = ""
    #: 1 for signals (n, L), 2 for images (n, H, W).
    signal_ndim: ClassVar[int] = 1
    #: the target column the teacher is distilled on and the heads predict.
    target: ClassVar[str] = ""
    #: the column of ``table.csv`` that scores each method (e.g. "rmse", "r2"); its standard
    #: error is the column ``<metric>_se``.
    metric: ClassVar[str] = ""
    #: the published value of ``metric`` per method (table row name), shown beside ours.
    paper_reference: ClassVar[dict[str, float]] = {}
    #: where ``paper_reference`` comes from.
    paper_source: ClassVar[str] = ""
    #: most threads worth giving the teacher and distillation jobs (small recurrent networks
    #: run slower with more); None means as many as the config's ``threads``.
    max_torch_threads: ClassVar[int | None] = None

    @property
    def package_dir(self) -> Path:
        return Path(importlib.import_module(type(self).__module__).__file__).parent

    @property
    def schema_path(self) -> Path:
        """JSON schema (YAML) of the domain's config section, with defaults."""
        return self.package_dir / "schema.yaml"

    def has_simulator(self) -> bool:
        return type(self).simulate is not Domain.simulate

    def simulate(self, cfg: dict, raw_dir: Path, threads: int = 1) -> None:
        """Write a mock raw data set into ``raw_dir`` in the layout real data comes in."""
        raise NotImplementedError(f"domain '{self.name}' has no simulator; set data.source: files")

    def ingest(self, cfg: dict, raw_dir: Path, out_dir: Path, threads: int = 1) -> Dataset:
        """Read raw files (never modifying them) into a Dataset; may write side tables to out_dir."""
        raise NotImplementedError

    def build_teacher(self, cfg: dict, dataset: Dataset):
        """A fresh, untrained ``torch.nn.Module`` mapping X to all target columns."""
        raise NotImplementedError

    def distill_init(self, cfg: dict):
        """The filter AWD starts from: None means the config's ``distill.wave``; a domain may
        return a pywt name or a low-pass filter array (e.g. a perturbed wavelet)."""
        return None

    def fit_heads(self, cfg: dict, dataset: Dataset, grid: list, teacher, out_dir: Path,
                  threads: int = 1) -> dict:
        """Fit the interpretable heads for every learned wavelet in ``grid``; select one;
        write ``table.csv`` and the selected wavelet into ``out_dir``; return a summary."""
        raise NotImplementedError

    def figures(self, cfg: dict, results_dir: Path, raw_dir: Path, fig_dir: Path) -> list[Path]:
        """Draw the domain's figures into ``fig_dir``; return the written paths."""
        return []


_REGISTRY: dict[str, type[Domain]] = {}
_BUILTIN = ("domains.cosmology", "domains.cme", "domains.simulation")


def register(cls: type[Domain]) -> type[Domain]:
    """Class decorator: make a Domain subclass available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    for mod in _BUILTIN:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
    for ep in metadata.entry_points(group="awd.domains"):
        ep.load()


def get_domain(name: str, module: str | None = None) -> Domain:
    """The registered domain ``name``; ``module`` is imported first when given."""
    if module:
        importlib.import_module(module)
    if name not in _REGISTRY:
        _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown domain '{name}'; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]()


def available_domains() -> list[str]:
    _discover()
    return sorted(_REGISTRY)
