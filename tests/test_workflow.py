"""The Snakemake workflow: every shipped config builds a DAG, lint is clean, bad configs are
rejected with the key named, and a tiny run of all domains completes and is up to date after."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "workflow/config").glob("*.yaml"))


def smk(*args, cwd=REPO, check=True, env=None):
    cmd = [sys.executable, "-m", "snakemake", *args]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=3000)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_dry_run_of_every_shipped_config(config, tmp_path):
    res = smk("-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
              "--configfile", str(config), cwd=REPO)
    out = res.stdout + res.stderr
    assert "rule heads" in out and "rule all" in out


def test_lint_is_clean():
    res = smk("--lint", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations" in res.stdout + res.stderr


@pytest.mark.parametrize("override, key", [
    ("cosmology={'teacher': {'epochs': -1}}", "cosmology.teacher.epochs"),
    ("cme={'distill': {'lambdas': 'many'}}", "cme.distill.lambdas"),
    ("threads=0", "config.threads"),
    ("domains=['astronomy']", "astronomy"),
    ("cosmology={'data': {'source': 'web'}}", "cosmology.data.source"),
])
def test_bad_config_value_is_rejected_naming_the_key(override, key):
    res = smk("-n", "--config", override, check=False)
    assert res.returncode != 0
    assert key in res.stdout + res.stderr


@pytest.mark.slow
def test_tiny_run_of_all_domains_then_nothing_to_do(tmp_path):
    common = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
              "--configfile", str(REPO / "workflow/config/tiny.yaml")]
    smk(*common, "--cores", "2")
    for domain in ("cosmology", "cme", "simulation"):
        table = pd.read_csv(tmp_path / f"results/{domain}/table.csv")
        assert len(table) >= 3 and table.iloc[:, 1].notna().all()
        assert (tmp_path / f"results/{domain}/wavelet.json").is_file()
        assert any((tmp_path / f"results/{domain}/figures").glob("*.png"))
    summary = pd.read_csv(tmp_path / "results/tables/summary.csv")
    assert set(summary["domain"]) == {"cosmology", "cme", "simulation"}
    again = smk(*common, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    report = tmp_path / "report.html"
    smk(*common, "--report", str(report))
    assert report.stat().st_size > 10_000
