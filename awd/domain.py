"""The domain interface: what a scientific domain provides to the generic AWD stages.

The workflow runs the same stages for every domain (``simulate -> ingest -> teacher ->
distill -> heads -> figures``). A domain is a subclass of :class:`Domain` registered with
:func:`register`; the stages look it up by name with :func:`get_domain`. Domains live in
``domains/<name>/`` (in-tree: every sub-package there is imported, so a new folder is found
without being listed anywhere), in a module named by the config's ``domain_modules``, or in any
package that exposes the entry-point group ``awd.domains``; nothing in ``awd/`` or in the
workflow rules names a domain.

The hand-over between stages is a :class:`Dataset`: an ``.npz`` file (never pickle) with
the teacher/AWD inputs, the regression targets, the split and the group of every sample.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SPLITS = ("train", "val", "test")
#: bytes of X written per chunk by :meth:`Dataset.save` and gathered per chunk by :class:`Rows`.
SAVE_CHUNK_BYTES = 64 << 20


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
        if not (isinstance(self.X, np.memmap) and self.X.dtype == np.float32):
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
        for _, block in self.iter_rows(np.arange(n)):
            if not np.all(np.isfinite(block)):
                raise ValueError("Dataset: X contains NaN or inf")

    def subset(self, split: str) -> "Dataset":
        """The samples of one split (a copy)."""
        m = self.split == split
        X = np.asarray(self.X[m])
        _release(self.X)
        return Dataset(X, self.y[m], list(self.target_names), self.split[m], self.group[m],
                       {k: v[m] for k, v in self.extra.items()}, dict(self.meta))

    def indices(self, split: str) -> np.ndarray:
        """Row numbers of one split (ascending): select with them instead of copying X per split."""
        return np.flatnonzero(self.split == split)

    def view(self, split: str) -> "Rows":
        """The maps of one split as an index view of X (:class:`Rows`): nothing is copied until
        rows are read, so a stage holds one batch of a memory-mapped X, not the split."""
        return Rows(self.X, self.indices(split))

    def iter_rows(self, rows: np.ndarray, chunk: int = 256):
        """``(start, X[rows[start:start + chunk]])`` chunk by chunk, each block an in-memory copy.

        With a memory-mapped X (:meth:`load`) the pages read are handed back to the kernel
        after each chunk, so a pass over all maps keeps only one chunk resident."""
        rows = np.asarray(rows)
        for start in range(0, len(rows), max(1, int(chunk))):
            block = np.asarray(self.X[rows[start:start + chunk]])
            _release(self.X)
            yield start, block

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
            # the members np.savez writes (uncompressed, zip64, in this order), with X streamed
            # chunk by chunk so that a memory-mapped X is never resident as a whole
            with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in arrays.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        if name != "X":
                            np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
                            continue
                        np.lib.format.write_array_header_1_0(member, {
                            "descr": np.lib.format.dtype_to_descr(self.X.dtype), "fortran_order": False,
                            "shape": tuple(int(d) for d in self.X.shape)})
                        for block in Rows(self.X, np.arange(len(self.X))).chunks():
                            member.write(np.ascontiguousarray(block).tobytes())

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> "Dataset":
        """Read a dataset written by :meth:`save` (``allow_pickle=False``).

        With ``mmap`` (default) X is memory-mapped copy-on-write where the file stores it as an
        uncompressed float32 member (``np.savez`` does), so a stage reads only the maps it
        uses; the file is never written. Otherwise X is read whole."""
        with np.load(path, allow_pickle=False) as z:
            extra = {k[len("extra__"):]: z[k] for k in z.files if k.startswith("extra__")}
            X = (_mapped_member(path, "X") if mmap else None)
            return cls(z["X"] if X is None else X, z["y"], [str(t) for t in z["target_names"]], z["split"],
                       z["group"], extra, json.loads(str(z["meta"])))


class Rows:
    """Selected rows of an X (an index view): ``len``, ``shape``, ``ndim`` and ``dtype`` as an
    array of those rows, read only when indexed.

    ``view[i:j]`` and ``view[positions]`` return in-memory arrays of those rows in the order
    asked, gathered from X in ascending row order (sequential reads of a memory map);
    ``np.asarray(view)`` gathers all of them. With a memory-mapped X the pages read are handed
    back to the kernel after every gather, so a pass over a split keeps one batch resident.
    """

    def __init__(self, X: np.ndarray, rows: np.ndarray):
        self.X = X
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *(int(d) for d in self.X.shape[1:]))

    @property
    def ndim(self) -> int:
        return self.X.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.X.dtype.itemsize

    def take(self, positions) -> "Rows":
        """A view of some of these rows (positions into this view), still not read."""
        return Rows(self.X, self.rows[np.asarray(positions, dtype=np.int64)])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return gather(self.X, self.rows[[key]])[0]
        return gather(self.X, self.rows[key])

    def chunks(self, chunk: int | None = None):
        """In-memory blocks of consecutive rows of the view, in order (``chunk`` rows each;
        default about :data:`SAVE_CHUNK_BYTES`)."""
        chunk = chunk or max(1, SAVE_CHUNK_BYTES // max(1, self.nbytes // max(1, len(self))))
        for start in range(0, len(self), chunk):
            yield self[start:start + chunk]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.X.dtype)
        start = 0
        for block in self.chunks():
            out[start:start + len(block)] = block
            start += len(block)
        return out if dtype is None else out.astype(dtype, copy=False)


def gather(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``X[rows]`` as an in-memory array, read in ascending row order; the pages of a
    memory-mapped X are handed back to the kernel afterwards (see :func:`_release`)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not isinstance(X, np.memmap):
        return np.asarray(X[rows])
    out = np.empty((len(rows), *X.shape[1:]), dtype=X.dtype)
    order = np.argsort(rows, kind="stable")
    out[order] = X[rows[order]]
    _release(X)
    return out


def _mapped_member(path: str | Path, name: str) -> np.memmap | None:
    """A copy-on-write memory map of the float32 array ``name`` inside an ``.npz``, or None when
    the member is compressed, not float32 or not C-ordered (then it is read normally)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(fh)
            header = fh.tell()
    if fortran or dtype != np.dtype("<f4") or 0 in shape:
        return None
    with open(path, "rb") as raw:  # the member's data follow its local file header
        raw.seek(info.header_offset)
        local = raw.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    if start + header + int(np.prod(shape)) * dtype.itemsize > Path(path).stat().st_size:
        return None  # truncated: the normal reader reports it
    return np.memmap(path, dtype=dtype, mode="c", offset=start + header, shape=shape)


def release_pages(X: np.ndarray) -> None:
    """Hand the resident pages of a memory-mapped X back to the kernel (they are re-read from
    the page cache, or the file, when touched again; written pages of a shared map are kept in
    the file); a no-op for in-memory arrays."""
    import mmap

    m, advice = getattr(X, "_mmap", None), getattr(mmap, "MADV_DONTNEED", None)
    if m is not None and advice is not None and hasattr(m, "madvise"):
        m.madvise(advice)


_release = release_pages


class Domain:
    """Base class of a scientific domain. Subclasses set ``name`` and override the hooks.

    Each hook receives ``cfg``, the validated config section of the domain
    (``config[<name>]``, defaults filled from ``schema_path``), and plain paths; hooks
    write their own outputs atomically and raise ``awd.io.InputError`` on bad input.
    """

    name: ClassVar[str] = ""
    #: 1 for signals (n, L), 2 for images (n, H, W); ingest's X is checked against it.
    signal_ndim: ClassVar[int] = 1
    #: the teacher output distilled and predicted by the heads when the config's
    #: ``distill.target`` is not set (a name from ``awd.teacher.output_names``).
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
    #: What each stage reads of the domain's config section, as dotted keys ("data",
    #: "distill.mode"). A stage's job gets only these keys (reading another raises a KeyError
    #: that names this attribute) and reruns only when they change. A stage left out gets the
    #: whole section except the generic sections of later stages (see ``awd.stages``).
    stage_config: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: The modules of the domain's package each stage runs, as file names relative to the
    #: package ("figures.py"); the stage's code hash covers them, the class's own module and
    #: everything they import. A stage left out depends on every ``.py`` file of the package.
    stage_code: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: Extra files a stage writes, tracked by Snakemake as outputs and shown in the report
    #: (CSV, PNG): stage name ("ingest", "heads") -> file names relative to that stage's output
    #: folder (ingest: ``results/<name>/data/``, heads: ``results/<name>/``).
    extra_outputs: ClassVar[dict[str, list[str]]] = {}

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
#: the package whose sub-packages are the in-tree domains.
IN_TREE_PACKAGE = "domains"
_HOW_TO_REGISTER = (
    "a domain registers when its module is imported: put a package in domains/<name>/ whose "
    "__init__.py imports a Domain subclass decorated with @awd.domain.register (see domains/README.md), "
    "or, for a module outside this repository, name it in the config (domain_modules: {<name>: <module>}) "
    "or expose it in the entry-point group 'awd.domains'")


def register(cls: type[Domain]) -> type[Domain]:
    """Class decorator: make a Domain subclass available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def in_tree_domains() -> list[str]:
    """Module names of the sub-packages of ``domains/`` (each may register a domain)."""
    try:
        pkg = importlib.import_module(IN_TREE_PACKAGE)
    except ModuleNotFoundError as err:
        if err.name != IN_TREE_PACKAGE:
            raise
        return []
    return sorted(f"{IN_TREE_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if m.ispkg)


def _discover() -> None:
    """Import every in-tree domain package and every ``awd.domains`` entry point."""
    for mod in in_tree_domains():
        importlib.import_module(mod)
    for ep in metadata.entry_points(group="awd.domains"):
        ep.load()


def get_domain(name: str, module: str | None = None) -> Domain:
    """The registered domain ``name``; ``module`` is imported first when given."""
    if module:
        importlib.import_module(module)
    if name not in _REGISTRY:
        _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown domain '{name}'; registered: {sorted(_REGISTRY)}. To add one, {_HOW_TO_REGISTER}")
    return _REGISTRY[name]()


def available_domains() -> list[str]:
    _discover()
    return sorted(_REGISTRY)
