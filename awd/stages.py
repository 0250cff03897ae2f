"""What each workflow stage of a domain depends on: its slice of the config and its code.

Every stage rule gets, as Snakemake params, the config keys its stage reads and a hash of the
code its stage runs, and nothing else; Snakemake reruns a job when its params change, so a
change reruns exactly the stages it affects (and, through their outputs, what follows them).

* Config: ``Domain.stage_config[stage]`` lists dotted keys ("data", "distill.mode"). A stage
  the domain does not declare gets the whole section except the generic sections of later
  stages (``teacher`` and ``distill`` are withheld from simulate and ingest, ``distill`` from
  teacher). The job sees only its slice (:class:`StageConfig`): reading any other key raises
  a KeyError naming the declaration to extend, so a slice can never be silently too small.
* Code: the stage runner (``awd.pipeline``), the domain class's module and the domain modules
  of ``Domain.stage_code[stage]`` (default: every ``.py`` file of the domain's package), with
  everything they import from ``awd``, ``domains`` or the domain's package, found by reading
  their import statements. The runner and the domain class hold code of every stage: imports
  inside another stage's ``run_<stage>`` function or Domain hook (:data:`HOOKS`) are not
  followed; imports anywhere else are.
"""
from __future__ import annotations

import ast
import copy
import functools
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Iterable

#: The stages of every domain, in order.
STAGES = ("simulate", "ingest", "teacher", "distill", "heads", "figures")
#: Generic sections withheld from a stage that declares nothing: those of later stages.
WITHHELD = {"simulate": ("teacher", "distill"), "ingest": ("teacher", "distill"), "teacher": ("distill",)}
#: The Domain hooks each stage calls.
HOOKS = {"simulate": ("simulate",), "ingest": ("ingest",), "teacher": ("build_teacher",),
         "distill": ("build_teacher", "distill_init"), "heads": ("build_teacher", "fit_heads"),
         "figures": ("figures",)}
#: The stage runner: its ``run_<stage>`` functions hold each stage's generic code.
RUNNER = "awd.pipeline"
AWD_DIR = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- config


def config_keys(domain, stage: str, section: dict) -> tuple[str, ...]:
    """The dotted config keys ``stage`` of ``domain`` reads (declared or the default)."""
    declared = type(domain).stage_config.get(stage)
    if declared is not None:
        return tuple(declared)
    return tuple(k for k in section if k not in WITHHELD.get(stage, ()))


def config_slice(domain, stage: str, section: dict) -> dict:
    """The part of a domain's validated config section that ``stage`` reads (a copy).

    Keys the section lacks (optional settings without a default) are left out.
    """
    out: dict = {}
    for key in config_keys(domain, stage, section):
        *parents, last = key.split(".")
        src, dst = section, out
        for part in parents:
            src = src.get(part) if isinstance(src, dict) else None
            dst = dst.setdefault(part, {})
        if isinstance(src, dict) and last in src:
            dst[last] = copy.deepcopy(src[last])
    return out


class StageConfig(dict):
    """A stage's config slice: a dict whose missing keys raise a KeyError that says which
    declaration (``<Domain>.stage_config[<stage>]``) lacks them."""

    def __init__(self, data: dict | None = None, where: str = "", declaration: str = ""):
        super().__init__()
        self.where, self.declaration = where, declaration
        for key, value in (data or {}).items():
            self[key] = (StageConfig(value, f"{where}.{key}" if where else str(key), declaration)
                         if isinstance(value, dict) and not isinstance(value, StageConfig) else value)

    def __missing__(self, key: Any):
        raise KeyError(f"config key '{self.where + '.' if self.where else ''}{key}' is not available here: "
                       f"add it to {self.declaration} (the keys this stage reads)")

    def __reduce__(self):
        return (dict, (dict(self),))

    def __deepcopy__(self, memo):
        return copy.deepcopy(dict(self), memo)


def stage_config(domain, stage: str, cfg: dict) -> StageConfig:
    """``cfg`` (a stage's slice) as a :class:`StageConfig` for the domain's hooks."""
    return StageConfig(cfg, domain.name, f"{type(domain).__name__}.stage_config['{stage}']")


def config_hash(cfg: dict) -> str:
    """Content hash of a config slice (key order does not matter)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- code


def _imports(tree: ast.Module, package: str, skip: frozenset[str]) -> list[str]:
    """Module names imported in ``tree`` outside the functions named in ``skip``
    (``from a import b`` gives "a" and "a.b"). Only statements are visited (imports are
    statements), which keeps this fast."""
    names: list[str] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.append(base)
            names += [f"{base}.{a.name}" for a in node.names if a.name != "*"]
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo += [c for c in getattr(node, name, ()) if isinstance(c, ast.AST)]
    return [n for n in names if n]


@functools.lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_bytes(), filename=str(path))


@functools.lru_cache(maxsize=None)
def _file_imports(path: Path, mtime_ns: int, package: str, skip: frozenset[str]) -> tuple[str, ...]:
    return tuple(_imports(_parse(path, mtime_ns), package, skip))


def _module_file(name: str, roots: dict[Path, str]) -> Path | None:
    """The source file of module ``name`` when it lies under one of ``roots`` (nothing is imported)."""
    for root, prefix in roots.items():
        if name == prefix or name.startswith(prefix + "."):
            rest = name[len(prefix):].lstrip(".").split(".") if name != prefix else []
            base = root.joinpath(*rest)
            for candidate in (base.with_suffix(".py") if rest else None, base / "__init__.py"):
                if candidate is not None and candidate.is_file():
                    return candidate.resolve()
    return None


def _module_name(path: Path, roots: dict[Path, str]) -> str | None:
    for root, prefix in roots.items():
        if path.is_relative_to(root):
            rel = path.relative_to(root).with_suffix("")
            parts = [prefix, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join(p for p in parts if p)
    return None


def code_files(entries: Iterable[str], roots: dict[Path, str],
               skips: dict[str, frozenset[str]] | None = None) -> list[Path]:
    """The files of modules ``entries`` and of everything they import that lies under
    ``roots`` (folder -> its package name), parent packages' ``__init__.py`` included.
    Imports inside the functions ``skips[module]`` of a module are not followed."""
    skips = skips or {}
    todo, seen = list(entries), set()
    while todo:
        path = _module_file(todo.pop(), roots)
        if path is None or path in seen:
            continue
        seen.add(path)
        mod = _module_name(path, roots)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        todo += [".".join(mod.split(".")[:i]) for i in range(1, len(mod.split(".")))]
        todo += _file_imports(path, path.stat().st_mtime_ns, package, skips.get(mod, frozenset()))
    return sorted(seen)


def files_hash(files: Iterable[Path], roots: dict[Path, str]) -> str:
    """Content hash of ``files``, named relative to their root (stable when the tree moves)."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: _module_name(p, roots) or str(p)):
        h.update((_module_name(path, roots) or path.name).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def code_roots(domain) -> dict[Path, str]:
    """Folders whose modules count as the workflow's code: ``awd``, the in-tree domains and
    the domain's own package (wherever it lives)."""
    roots = {AWD_DIR: "awd", AWD_DIR.parent / "domains": "domains"}
    pkg_module = type(domain).__module__.rpartition(".")[0] or type(domain).__module__
    roots.setdefault(domain.package_dir.resolve(), pkg_module)
    return roots


def _other_stages(functions: dict[str, tuple[str, ...]], stage: str) -> frozenset[str]:
    """Function names that belong to other stages only."""
    mine = set(functions[stage])
    return frozenset(f for s, names in functions.items() if s != stage for f in names if f not in mine)


def stage_code_files(domain, stage: str) -> list[Path]:
    """Every source file the ``stage`` job of ``domain`` runs (see the module docstring)."""
    cls = type(domain)
    pkg_dir = domain.package_dir.resolve()
    roots = code_roots(domain)
    declared = cls.stage_code.get(stage)
    if declared is None:
        domain_files = sorted(p.resolve() for p in pkg_dir.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        domain_files = [(pkg_dir / f).resolve() for f in declared]
        missing = [str(f) for f in domain_files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{cls.__name__}.stage_code['{stage}'] names files that do not exist: {missing}")
    skips = {RUNNER: _other_stages({s: (f"run_{s}",) for s in STAGES}, stage),
             cls.__module__: _other_stages(HOOKS, stage)}
    entries = [RUNNER, cls.__module__, *(_module_name(f, roots) for f in domain_files)]
    return code_files(entries, roots, skips)


def stage_code_hash(domain, stage: str) -> str:
    return files_hash(stage_code_files(domain, stage), code_roots(domain))


def domain_code_hash(domain) -> str:
    """Content hash of every ``.py`` file of the domain's package."""
    pkg_dir = domain.package_dir.resolve()
    files = [p.resolve() for p in pkg_dir.rglob("*.py") if "__pycache__" not in p.parts]
    return files_hash(files, code_roots(domain))
