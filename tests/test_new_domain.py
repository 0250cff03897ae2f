"""The guide in domains/README.md is enough to add a domain: its example, copied verbatim into
``domains/sines/`` of a copy of the project, runs through the whole workflow by naming it in
``domains:`` alone, and the rules the guide states hold for it."""
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "domains" / "README.md"
sys.path.insert(0, str(Path(__file__).parent))
from test_workflow import copy_project  # noqa: E402


def guide_files():
    """Every '`sines/<file>`:' heading followed by a fenced block in the guide."""
    text = GUIDE.read_text()
    return dict(re.findall(r"`(sines/[\w.]+)`:\s*\n\s*```\w*\n(.*?)```", text, re.S))


def project_with_sines(dest: Path) -> Path:
    root = copy_project(dest)
    for name, body in guide_files().items():
        (root / "domains" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "domains" / name).write_text(body)
    return root


def smk(root: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"), "--directory", str(work),
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=1200)


def test_guide_contains_the_whole_example():
    assert set(guide_files()) == {"sines/__init__.py", "sines/domain.py", "sines/schema.yaml"}


def test_guide_example_selects_on_validation_never_on_test():
    code = guide_files()["sines/domain.py"]
    assert "val_score < best[0]" in code and "score < best[0]" not in code.replace("val_score < best[0]", "")


def test_guide_schema_partial_section_keeps_the_other_defaults():
    from awd.config import validate

    schema = yaml.safe_load(guide_files()["sines/schema.yaml"])
    cfg = validate({"teacher": {"epochs": 20}, "distill": {"epochs": 5}}, schema, "sines")
    assert cfg["teacher"] == {"epochs": 20, "lr": 0.003}
    assert cfg["distill"] == {"J": 3, "lambdas": [0.001], "gammas": [0.0, 0.01], "epochs": 5, "lr": 0.003,
                              "mode": "zero"}


def test_in_tree_domain_is_found_and_other_sections_are_accepted(tmp_path):
    root = project_with_sines(tmp_path / "project")
    # a section of a registered domain that this run does not enable is accepted
    config = tmp_path / "config.yaml"
    config.write_text("domains: [simulation]\nsines: {teacher: {epochs: 3}}\n")
    res = smk(root, tmp_path / "work", "-n", "--configfile", str(config))
    assert res.returncode == 0, res.stderr[-3000:]
    res = smk(root, tmp_path / "work", "-n", "--config", "domains=[sines]")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "rule ingest" in res.stdout + res.stderr


@pytest.mark.slow
def test_example_domain_from_the_guide_runs_through_the_workflow(tmp_path):
    root = project_with_sines(tmp_path / "project")
    work = tmp_path / "work"
    res = smk(root, work, "--cores", "2", "--config", "domains=['sines']", "threads=1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = pd.read_csv(work / "results/sines/table.csv")
    assert {"DB5", "teacher"} <= set(table["method"]) and table["rmse"].notna().all()
    # the teacher and the heads genuinely learn the amplitude (its std is 0.43)
    assert table.set_index("method").loc["teacher", "rmse"] < 0.3
    assert (work / "results/sines/figures/learned_wavelet.png").is_file()
    assert (work / "results/tables/summary.md").read_text().count("sines") >= 1
    # db5 (length 10) at J=3 on 64 samples: one warning naming shorter wavelets, no pywt flood
    distill_log = "".join(p.read_text() for p in sorted((work / "logs/sines").glob("distill*.log")))
    assert distill_log.count("is too long for inputs of size 64") == 1 and "haar" in distill_log
    assert "Level value of" not in res.stderr


def test_guide_2d_section_states_what_the_library_does(tmp_path):
    import numpy as np
    import pywt
    import torch

    from awd.transform import DWT2d
    from awd.wavelet import load_wavelet, save_wavelet

    text = GUIDE.read_text()
    assert "## 2D domains (images)" in text and "[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]" in text
    assert "ndim=2" in text and "awd.figures.save_png" in text and "signal_ndim = 2" in text
    x = np.random.default_rng(0).normal(size=(2, 28, 28))
    coeffs = DWT2d(wave="db2", J=2, mode="zero", dtype=torch.float64)(torch.as_tensor(x))
    ref = pywt.wavedec2(x, "db2", mode="zero", level=2, axes=(-2, -1))
    assert np.allclose(coeffs[0].detach().numpy(), ref[0])
    for level, triple in zip(coeffs[1:], ref[1:]):
        assert all(np.allclose(c.detach().numpy(), r) for c, r in zip(level, triple))
    assert pywt.dwt_max_level(28, pywt.Wavelet("db5").dec_len) == 1  # "db5 ... J=1 at 28 x 28"
    saved = load_wavelet(save_wavelet(tmp_path / "w.json", pywt.Wavelet("db2").rec_lo, J=2, mode="zero", ndim=2))
    assert saved.ndim == 2 and saved.J == 2
