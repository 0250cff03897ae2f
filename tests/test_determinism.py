"""Determinism on CPU: the same config run twice gives byte-identical result tables, wavelet
files and distillation results, and identical datasets and teacher weights (the simulation and
cosmology domains through the workflow); the stages are also repeatable within one process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from awd.config import validate
from awd.distill import DistillConfig, distill_path, save_results
from awd.domain import get_domain
from awd.teacher import TeacherConfig, fit_teacher

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("simulation", "cosmology")


@pytest.mark.slow
def test_same_config_twice_gives_byte_identical_tables_and_wavelets(reference_run, reliability_cli,
                                                                    reliability_targets, compare_results, tmp_path):
    reliability_cli.run(tmp_path, "--cores", "2", *reliability_targets(*DOMAINS))
    for domain in DOMAINS:
        files = {str(p) for p in compare_results(reference_run, tmp_path, domain)}
        for required in ("table.csv", "wavelet.json", "distill/lambda_0.json", "teacher/teacher.pt",
                         "data/dataset.npz"):
            assert f"results/{domain}/{required}" in files


def _simulation_config() -> dict:
    dom = get_domain("simulation")
    tiny = yaml.safe_load((REPO / "workflow/config/tiny.yaml").read_text())["simulation"]
    return validate(tiny, dom.schema_path, "simulation")


def test_teacher_distillation_and_heads_repeat_exactly_in_one_process(tmp_path):
    """Two in-process passes of teacher -> distill -> heads give identical weights and bytes,
    whatever the global torch RNG state in between."""
    dom, cfg = get_domain("simulation"), _simulation_config()
    dom.simulate(cfg, tmp_path)
    ds = dom.ingest(cfg, tmp_path, tmp_path)
    outputs = []
    for attempt, global_seed in enumerate((0, 12345)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)  # must not matter: every random step has its own seed
            model, history = fit_teacher(dom.build_teacher(cfg, ds), ds,
                                         TeacherConfig.from_dict(cfg["teacher"]))
            dcfg = DistillConfig.from_dict({**cfg["distill"], "progress": False})
            train, val = ds.subset("train"), ds.subset("val")
            grid = distill_path(model, train.X, val.X, lam=dcfg.lambdas[0], gammas=dcfg.gammas, config=dcfg,
                                init=dom.distill_init(cfg))
        out = tmp_path / f"pass{attempt}"
        save_results(out / "lambda_0.json", grid)
        dom.fit_heads(cfg, ds, grid, model, out)
        outputs.append((model.state_dict(), history, out))
    (state_a, hist_a, out_a), (state_b, hist_b, out_b) = outputs
    assert hist_a == hist_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    for name in ("lambda_0.json", "table.csv", "wavelet.json", "grid.csv", "selection.json"):
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    h = np.asarray(yaml.safe_load((out_a / "wavelet.json").read_text())["h"])
    assert h.shape == (12,) and np.all(np.isfinite(h))  # coif2, as the config starts from
