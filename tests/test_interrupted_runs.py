"""Runs that stop early: a workflow killed (SIGKILL) in the middle of its teacher and then of
its distillation rule resumes from the atomic checkpoints and ends with results identical to an
uninterrupted run; teacher checkpoints resume bit-identically and another run's state is ignored;
training that diverges or meets NaN stops with an error naming the stage and the step and
writes no model, no distillation result and no wavelet."""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import pywt
import torch
import yaml

import awd.teacher
from awd.config import validate
from awd.distill import DistillResult, TrainingDiverged, load_results
from awd.domain import get_domain
from awd.io import InputError
from awd.pipeline import remove_stale_temporaries, run_distill, run_teacher, stage
from awd.simulation import simulation_dataset
from awd.teacher import StandardizedTeacher, TeacherConfig, fit_teacher, save_teacher
from awd.wavelet import save_wavelet

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- killing a run


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL snakemake and every process it started (jobs may run in groups of their own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGSTOP)  # freeze the group: no job starts while we collect
    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    psutil.wait_procs(procs, timeout=30)


def _run_until(cli, workdir: Path, marker: Path, log: Path, *args: str, timeout: float = 600) -> None:
    """Start the workflow and SIGKILL it as soon as ``marker`` exists."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cli.command(workdir, *args), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if proc.poll() is not None:
                    raise AssertionError(f"the run ended (exit {proc.returncode}) before {marker.name} appeared:\n"
                                         f"{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{marker.name} did not appear within {timeout} s")
                time.sleep(0.005)
        finally:
            _kill_tree(proc)


def _epochs_done(path: Path, epochs_per_point: int = 0) -> int:
    """Epochs recorded in a checkpoint, which must load safely (it was written atomically);
    a distillation checkpoint counts its finished grid points as ``epochs_per_point`` each."""
    state = torch.load(path, weights_only=True)
    return len(state.get("done", [])) * epochs_per_point + int(state.get("epoch", 0))


@pytest.mark.slow
def test_sigkill_in_teacher_then_in_distillation_then_rerun_gives_identical_results(
        reference_run, reliability_cli, reliability_targets, compare_results, tmp_path):
    work, res = tmp_path / "work", tmp_path / "work/results/simulation"
    work.mkdir()
    targets = reliability_targets("simulation")
    teacher_ckpt = res / "teacher/checkpoint.pt"
    distill_ckpt = res / "distill/lambda_0.checkpoint.pt"

    _run_until(reliability_cli, work, teacher_ckpt, tmp_path / "run1.log", "--cores", "2", *targets)
    assert 1 <= _epochs_done(teacher_ckpt) <= 20
    assert not (res / "teacher/teacher.pt").exists() and not (res / "distill").exists()

    reliability_cli.run(work, "--unlock")
    _run_until(reliability_cli, work, distill_ckpt, tmp_path / "run2.log", "--cores", "2", "--rerun-incomplete",
               *targets)
    teacher_log = (work / "logs/simulation/teacher.log").read_text()
    resumed = re.search(r"teacher: resumed from \S+ at epoch (\d+)", teacher_log)
    assert resumed and 1 <= int(resumed.group(1)) <= 20, teacher_log[-2000:]
    assert not teacher_ckpt.exists()  # removed once the teacher is saved
    assert 1 <= _epochs_done(distill_ckpt, epochs_per_point=30) <= 2 * 30
    assert not (res / "distill/lambda_0.json").exists() and not (res / "wavelet.json").exists()

    reliability_cli.run(work, "--unlock")
    reliability_cli.run(work, "--cores", "2", "--rerun-incomplete", *targets)
    assert "resuming from" in (work / "logs/simulation/distill_0.log").read_text()
    assert not distill_ckpt.exists()
    assert list(res.rglob("*.tmp")) == []  # temporaries of writes the kills interrupted are gone
    files = {str(p) for p in compare_results(reference_run, work, "simulation")}
    assert {"results/simulation/table.csv", "results/simulation/wavelet.json",
            "results/simulation/distill/lambda_0.json", "results/simulation/teacher/metrics.json"} <= files


def test_temporaries_of_killed_atomic_writes_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "teacher").mkdir()
    stale = [tmp_path / "teacher/.checkpoint.pt.k2j4x9.tmp", tmp_path / "teacher/.teacher.pt.a1b2c3.tmp",
             tmp_path / ".data.q8w7e6.tmp"]
    kept = [tmp_path / "teacher/checkpoint.pt", tmp_path / "teacher/.other.pt.a1b2c3.tmp",
            tmp_path / "teacher/teacher.pt.tmp", tmp_path / "teacher/.checkpoint.pt.tmp", tmp_path / "data"]
    for path in stale[:2] + kept[:4]:
        path.write_bytes(b"x")
    (stale[2] / "napari").mkdir(parents=True)
    kept[4].mkdir()
    removed = remove_stale_temporaries(tmp_path / "teacher/checkpoint.pt", tmp_path / "teacher/teacher.pt",
                                       tmp_path / "data", None)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


# ----------------------------------------------------------------------------- teacher checkpoints


def _small_run(epochs: int = 4, lr: float = 3e-3):
    ds = simulation_dataset(120, 40, 40, seed=3)
    cfg = TeacherConfig(epochs=epochs, batch_size=32, lr=lr, seed=5)
    dom_cfg = {"model": {"hidden": 8}, "teacher": {"seed": 5}}
    return ds, cfg, lambda: get_domain("simulation").build_teacher(dom_cfg, ds)


class _Killed(Exception):
    pass


def _interrupt_after(monkeypatch, n_saves: int) -> None:
    """Make training stop right after its ``n_saves``-th checkpoint, as a kill there would."""
    original, count = awd.teacher._save_checkpoint, [0]

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        count[0] += 1
        if count[0] == n_saves:
            raise _Killed

    monkeypatch.setattr(awd.teacher, "_save_checkpoint", save_then_stop)


@pytest.mark.parametrize("stop_after", [1, 3])
def test_teacher_resumes_bit_identically_from_its_checkpoint(tmp_path, monkeypatch, stop_after):
    ds, cfg, core = _small_run()
    reference, ref_history = fit_teacher(core(), ds, cfg)
    ckpt = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as m:
        _interrupt_after(m, stop_after)
        with pytest.raises(_Killed):
            fit_teacher(core(), ds, cfg, checkpoint=ckpt)
    assert _epochs_done(ckpt) == stop_after
    resumed, history = fit_teacher(core(), ds, cfg, checkpoint=ckpt)
    assert history == ref_history
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


@pytest.mark.parametrize("change", ["lr", "data", "seed"])
def test_teacher_checkpoint_of_another_run_is_ignored(tmp_path, monkeypatch, caplog, change):
    ds, cfg, core = _small_run()
    ckpt = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(_Killed):
            fit_teacher(core(), ds, cfg, checkpoint=ckpt)
    model = core()
    if change == "lr":
        cfg = TeacherConfig(**{**awd.teacher.config_dict(cfg), "lr": 1e-2})
    elif change == "data":
        ds = simulation_dataset(120, 40, 40, seed=4)
    else:
        model = get_domain("simulation").build_teacher({"model": {"hidden": 8}, "teacher": {"seed": 6}}, ds)
    fresh, fresh_history = fit_teacher(copy.deepcopy(model), ds, cfg)
    with caplog.at_level("WARNING", logger="awd.teacher"):
        resumed, history = fit_teacher(model, ds, cfg, checkpoint=ckpt)
    assert "different run" in caplog.text and str(ckpt) in caplog.text
    assert history == fresh_history and len(history) == cfg.epochs
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_unreadable_teacher_checkpoint_is_refused(tmp_path):
    ds, cfg, core = _small_run()
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(InputError, match="cannot read teacher checkpoint") as err:
        fit_teacher(core(), ds, cfg, checkpoint=ckpt)
    assert err.value.path == str(ckpt)


# ----------------------------------------------------------------------------- numerical guards


@pytest.fixture
def isolated_stage():
    """Undo what :func:`awd.pipeline.stage` sets process-wide (logging, torch threads and
    deterministic mode), so the stage can run inside the test process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield stage
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:], root.level = handlers, level
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def _simulation_cfg(**sections) -> dict:
    dom = get_domain("simulation")
    tiny = yaml.safe_load((REPO / "workflow/config/tiny.yaml").read_text())["simulation"]
    for key, values in sections.items():
        tiny[key] = {**tiny.get(key, {}), **values}
    return validate(tiny, dom.schema_path, "simulation")


def _distill_inputs(tmp_path: Path, cfg: dict, nan_weights: bool = False) -> tuple[Path, Path]:
    """A small dataset and an (untrained) simulation teacher saved as the workflow saves them."""
    ds = simulation_dataset(60, 20, 20, seed=1)
    ds.save(tmp_path / "dataset.npz")
    model = StandardizedTeacher(get_domain("simulation").build_teacher(cfg, ds), 1)
    model.set_standardization(ds.X, ds.y)
    if nan_weights:
        with torch.no_grad():
            model.core[0].weight.fill_(float("nan"))
    save_teacher(tmp_path / "teacher.pt", model)
    return tmp_path / "dataset.npz", tmp_path / "teacher.pt"


def _json_files(folder: Path) -> list[str]:
    """Distillation results and wavelets are JSON files: none may exist after a failure."""
    return sorted(p.name for p in folder.rglob("*.json"))


def test_diverging_distillation_stops_naming_the_stage_and_step(tmp_path, isolated_stage):
    cfg = _simulation_cfg(distill={"lr": 1e3, "epochs": 2, "gammas": [0.0]})
    data, teacher = _distill_inputs(tmp_path, cfg)
    log_file, out = tmp_path / "logs/distill_0.log", tmp_path / "distill/lambda_0.json"
    with pytest.raises(TrainingDiverged) as err:
        with isolated_stage("distill[0]", str(log_file)):
            run_distill("simulation", cfg, data, teacher, 0, out, checkpoint=tmp_path / "distill/ckpt.pt")
    message = str(err.value)
    assert message.startswith("distill lambda=0 gamma=0, epoch 1, step 1 ")
    assert "exceeds max_filter_norm 10" in message
    logged = log_file.read_text()
    assert "stage distill[0] failed: TrainingDiverged: distill lambda=0 gamma=0, epoch 1, step 1" in logged
    assert not out.exists() and _json_files(tmp_path) == []


def test_nan_teacher_stops_distillation_at_the_first_interpretation_step(tmp_path, isolated_stage):
    cfg = _simulation_cfg(distill={"epochs": 1, "gammas": [0.0, 0.1]})
    data, teacher = _distill_inputs(tmp_path, cfg, nan_weights=True)
    out = tmp_path / "distill/lambda_0.json"
    with pytest.raises(TrainingDiverged, match=r"^distill lambda=0 gamma=0\.1, epoch 1, step 1 .*loss is nan"):
        with isolated_stage("distill[0]", str(tmp_path / "distill_0.log")):
            run_distill("simulation", cfg, data, teacher, 0, out)
    assert not out.exists() and _json_files(tmp_path) == []


def test_diverging_teacher_stops_naming_epoch_and_step_and_saves_nothing(tmp_path, isolated_stage):
    cfg = _simulation_cfg(teacher={"lr": 1e30, "epochs": 3, "batch_size": 10})
    data, _ = _distill_inputs(tmp_path, cfg)
    model, metrics = tmp_path / "teacher/teacher.pt", tmp_path / "teacher/metrics.json"
    with pytest.raises(TrainingDiverged, match=r"^teacher training: loss is (nan|inf) at epoch 1, step \d+$"):
        with isolated_stage("teacher", str(tmp_path / "teacher.log")):
            run_teacher("simulation", cfg, data, model, metrics, checkpoint=tmp_path / "teacher/checkpoint.pt")
    assert "stage teacher failed: TrainingDiverged" in (tmp_path / "teacher.log").read_text()
    assert not model.exists() and not metrics.exists() and not (tmp_path / "teacher/checkpoint.pt").exists()


def test_a_wavelet_full_of_nans_is_never_written_or_read(tmp_path):
    h = np.asarray(pywt.Wavelet("db4").rec_lo)
    bad = h.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_wavelet(tmp_path / "wavelet.json", bad, J=2, mode="zero", ndim=1)
    assert list(tmp_path.iterdir()) == []
    record = {"h": h.tolist(), "lam": 0.0, "gamma": 0.0, "J": 2, "mode": "zero", "ndim": 1}
    assert np.array_equal(DistillResult.from_dict(record).h, h)
    path = tmp_path / "lambda_0.json"
    path.write_text(json.dumps({"format": "awd-distill-results", "version": 1,
                                "results": [{**record, "h": bad.tolist()}]}))  # NaN is written as NaN
    with pytest.raises(InputError, match="'h' must be a finite 1D filter") as err:
        load_results(path)
    assert err.value.path == str(path)
