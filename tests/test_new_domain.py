"""The guide in domains/README.md is enough to add a domain: its example, copied verbatim into a
temporary folder, runs through the whole workflow without touching the core."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "domains" / "README.md"


def guide_files():
    """Every '`sines/<file>`:' heading followed by a fenced block in the guide."""
    text = GUIDE.read_text()
    return dict(re.findall(r"`(sines/[\w.]+)`:\s*\n\s*```\w*\n(.*?)```", text, re.S))


def test_guide_contains_the_whole_example():
    assert set(guide_files()) == {"sines/__init__.py", "sines/domain.py", "sines/schema.yaml"}


@pytest.mark.slow
def test_example_domain_from_the_guide_runs_through_the_workflow(tmp_path):
    pkg = tmp_path / "pkg"
    for name, body in guide_files().items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": f"{pkg}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", "2", "--config", "domains=['sines']", "domain_modules={'sines': 'sines'}", "threads=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = pd.read_csv(work / "results/sines/table.csv")
    assert {"DB5", "teacher"} <= set(table["method"]) and table["rmse"].notna().all()
    # the teacher and the heads genuinely learn the amplitude (its std is 0.43)
    assert table.set_index("method").loc["teacher", "rmse"] < 0.3
    assert (work / "results/sines/figures/learned_wavelet.png").is_file()
    assert (work / "results/tables/summary.md").read_text().count("sines") >= 1
