"""Safe loading: nothing a user can supply is unpickled (model and training checkpoints load
with ``weights_only=True``, arrays with ``allow_pickle=False``, YAML with ``safe_load``), a file
carrying a pickle payload is refused without running it, and output paths built from sample,
cell or condition names cannot leave their results folder."""
from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from awd.config import ConfigError, load_yaml, validate
from awd.distill import DistillConfig, distill_path
from awd.domain import Dataset, get_domain
from awd.io import InputError, contained, safe_name
from awd.pipeline import run_ingest, run_simulate
from awd.simulation import mlp_teacher, simulation_dataset
from awd.teacher import StandardizedTeacher, TeacherConfig, fit_teacher, load_teacher

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("awd", "domains", "workflow/scripts", "benchmarks")


# ----------------------------------------------------------------------------- the source code


def _python_sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 30
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def unsafe_calls(tree: ast.AST) -> list[str]:
    """Imports and calls that could unpickle or execute what a file holds."""
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            problems += [f"line {node.lineno}: imports {n}" for n in names
                         if n and n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal")]
        if not isinstance(node, ast.Call):
            continue
        name, where = _dotted(node.func), f"line {node.lineno}: {_dotted(node.func)}"
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            problems.append(f"{where} without weights_only=True")
        elif name.endswith(".load") and name.split(".")[0] in ("np", "numpy") and \
                _keyword(node, "allow_pickle") not in (None, False):
            problems.append(f"{where} with allow_pickle")
        elif name in ("yaml.load", "yaml.load_all") and _dotted(_keyword(node, "Loader") or ast.Name("?")) not in (
                "yaml.SafeLoader", "yaml.CSafeLoader"):
            problems.append(f"{where} without a safe loader")
        elif name in ("yaml.unsafe_load", "yaml.full_load", "pd.read_pickle", "pandas.read_pickle", "eval", "exec"):
            problems.append(where)
    return problems


def test_the_checker_finds_unsafe_loading():
    code = ("import pickle\nimport torch, yaml, numpy as np\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
            "np.load(p, allow_pickle=True)\nyaml.load(s, Loader=yaml.Loader)\nyaml.unsafe_load(s)\neval(s)\n"
            "torch.load(p, weights_only=True)\nnp.load(p)\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\n")
    found = sorted(int(p.split(":")[0].removeprefix("line ")) for p in unsafe_calls(ast.parse(code)))
    assert found == [1, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("path", _python_sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_source_file_unpickles_or_evaluates_what_it_reads(path):
    assert unsafe_calls(ast.parse(path.read_text(), str(path))) == []


def test_workflow_files_load_nothing_unsafely():
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        text = path.read_text()
        for needle in ("pickle", "torch.load", "yaml.load", "unsafe_load", "eval(", "exec("):
            assert needle not in text, f"{path.name}: {needle}"


# ----------------------------------------------------------------------------- payloads


class Payload:
    """Unpickling this object creates a marker file: proof that a loader ran the pickle."""

    marker: Path

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "a loader executed a pickle payload"


def _evil_torch_file(path: Path, marker: Path, **tensors) -> Path:
    torch.save({**tensors, "extra": Payload(marker)}, path)
    return path


def test_teacher_weights_with_a_payload_are_refused(tmp_path, marker):
    model = StandardizedTeacher(mlp_teacher(8, 4, 0), 1)
    path = _evil_torch_file(tmp_path / "teacher.pt", marker, state_dict=model.state_dict(), n_targets=1)
    with pytest.raises(InputError, match="cannot read teacher weights.*Weights only load failed") as err:
        load_teacher(path, mlp_teacher(8, 4, 0))
    assert err.value.path == str(path)


def test_teacher_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(InputError, match="not a teacher file"):
        load_teacher(path, mlp_teacher(8, 4, 0))


def test_training_checkpoints_with_a_payload_are_refused(tmp_path, marker):
    ds = simulation_dataset(40, 10, 10, seed=0)
    ckpt = _evil_torch_file(tmp_path / "teacher_ckpt.pt", marker, epoch=1)
    with pytest.raises(InputError, match="cannot read teacher checkpoint") as err:
        fit_teacher(mlp_teacher(64, 4, 0), ds, TeacherConfig(epochs=2, batch_size=20), checkpoint=ckpt)
    assert err.value.path == str(ckpt)

    teacher = StandardizedTeacher(mlp_teacher(64, 4, 0), 1).eval()
    ckpt = _evil_torch_file(tmp_path / "distill_ckpt.pt", marker, done=[])
    cfg = DistillConfig(wave="db2", J=2, epochs=1, batch_size=20, progress=False)
    with pytest.raises(InputError, match="cannot read distillation checkpoint") as err:
        distill_path(teacher, ds.X[:20], ds.X[20:], lam=0.0, gammas=[0.0], config=cfg, checkpoint=ckpt)
    assert err.value.path == str(ckpt)


def test_dataset_file_with_pickled_objects_is_refused(tmp_path, marker):
    path = tmp_path / "dataset.npz"
    simulation_dataset(5, 2, 2, seed=0).save(path)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["meta"] = np.array([Payload(marker)], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        Dataset.load(path)


def test_raw_simulation_file_with_pickled_objects_is_refused(tmp_path, marker):
    raw = tmp_path / "raw"
    raw.mkdir()
    np.savez(raw / "simulation.npz", X=np.array([Payload(marker)], dtype=object), y=np.zeros(1))
    dom = get_domain("simulation")
    cfg = validate({"data": {"source": "files", "root": str(raw), "split": [1, 1, 1]}}, dom.schema_path, "simulation")
    with pytest.raises(InputError, match="simulation.npz: not a simulation.npz"):
        run_ingest("simulation", cfg, raw, tmp_path / "data", tmp_path / "data/dataset.npz")


EVIL_YAML = "domains: [simulation]\nsimulation: !!python/object/apply:builtins.open [{marker}, w]\n"


def test_yaml_with_python_tags_is_refused_by_the_library(tmp_path, marker):
    path = tmp_path / "config.yaml"
    path.write_text(EVIL_YAML.format(marker=marker))
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        validate({}, path)  # a schema file is read the same way


def test_yaml_with_python_tags_is_refused_by_the_workflow(tmp_path, marker):
    path = tmp_path / "config.yaml"
    path.write_text(EVIL_YAML.format(marker=marker))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
                          "--directory", str(tmp_path / "work"), "--configfile", str(path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "Config file is not valid JSON or YAML" in res.stdout + res.stderr


def test_loaders_in_use_are_the_safe_ones():
    assert yaml.safe_load("a: !!float 1") == {"a": 1.0}
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("a: !!python/name:os.system")


# ----------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "etc_passwd"), ("Cell 1/../../x", "Cell_1_.._.._x"), ("/abs/cell", "abs_cell"),
    ("..\\..\\win", "win"), ("Cell3_1s", "Cell3_1s"), (".hidden", "hidden"), ("a\x00b", "a_b"),
])
def test_names_become_single_safe_file_names(name, expected, tmp_path):
    assert safe_name(name) == expected
    assert Path(expected).name == expected and not expected.startswith(".")
    assert (tmp_path / safe_name(name)).parent == tmp_path


@pytest.mark.parametrize("name", ["..", "/", "", "./.", "\x00"])
def test_names_without_a_usable_part_are_refused(name):
    with pytest.raises(InputError, match="empty file name"):
        safe_name(name)


def test_contained_paths_cannot_leave_the_results_folder(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    assert contained(root, "cme", "napari", "x.csv") == (root / "cme/napari/x.csv").resolve()
    assert contained(root, "a/../b") == (root / "b").resolve()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    for parts in (("..", "x"), ("/etc/passwd",), ("a", "../../x"), ("link", "f")):
        with pytest.raises(InputError, match="leaves the results directory"):
            contained(root, *parts)


def test_simulated_condition_name_cannot_write_outside_the_raw_folder(tmp_path):
    dom = get_domain("cme")
    cfg = validate({"simulator": {"n_cells": 1, "height": 48, "width": 48, "n_frames": 24,
                                  "condition": "../../escape"}}, dom.schema_path, "cme")
    raw = tmp_path / "inside" / "raw"
    run_simulate("cme", cfg, raw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]
    assert sorted(p.name for p in (tmp_path / "inside").iterdir()) == ["raw"]
    conditions = [p.name for p in raw.iterdir() if p.is_dir()]
    assert conditions == ["escape"] and (raw / "escape" / "Cell1_1s" / "TagRFP").is_dir()
    assert all(raw.resolve() in p.resolve().parents for p in raw.rglob("*"))
    assert not any(".." in p.name for p in raw.rglob("*"))
