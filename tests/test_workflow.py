"""The Snakemake workflow: every shipped config builds a DAG, lint is clean, bad configs are
rejected with the key named, and a tiny run of all domains completes and is up to date after."""
import json
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
    # declared extra outputs of a stage are tracked and the tables and pictures among them reported
    assert (tmp_path / "results/cme/data/funnel.csv").is_file()
    report = tmp_path / "report.html"
    smk(*common, "--report", str(report))
    assert report.stat().st_size > 10_000
    html = report.read_text(errors="replace")
    for name in ("funnel.csv", "learning_curve.png", "learning_curve.csv", "heads/predictions.csv", "grid.csv"):
        assert name in html, name


# ----------------------------------------------------------------------------- reruns and data
# One real run of the simulation domain on a data folder (data.source: files), in a copy of the
# project so that its code and YAML files can be edited; then dry runs that list what a change
# reruns. Snakemake's default rerun triggers (code, input checksums, mtime, params).

SIM_CONFIG = """\
# a config file of the rerun tests
label: reruns
domains: [simulation]
threads: 1
device: cpu
simulation:
  data: {{source: files, root: {root}, split: [200, 100, 100]}}
  teacher: {{epochs: 2}}
  distill: {{epochs: 1, gammas: [0.0, 0.1]}}
  selection: {{max_wavelet_loss: 1.0}}
"""


def copy_project(dest: Path) -> Path:
    """The workflow's files (Snakefile, awd, workflow, domains) copied into ``dest``."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", ".snakemake")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for name in ("awd", "workflow", "domains"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


def write_simulation_data(root: Path, n: int = 400, seed: int = 0) -> Path:
    from awd.config import validate
    from awd.domain import get_domain

    dom = get_domain("simulation")
    cfg = validate({"data": {"split": [n - 200, 100, 100]}, "truth": {"seed": seed}}, dom.schema_path, "simulation")
    root.mkdir(parents=True, exist_ok=True)
    dom.simulate(cfg, root)
    return root / "simulation.npz"


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule name -> number of jobs."""
    if "Nothing to be done" in output:
        return {}
    block = output.split("Job stats:")[1].split("total")[0]
    rows = [line.split() for line in block.splitlines()[3:] if line.strip()]
    return {name: int(count) for name, count in rows}


class Project:
    def __init__(self, root: Path, config: Path):
        self.root, self.config, self.work = root, config, root / "work"

    def smk(self, *args, check=True, extra_configs=()):
        return smk("--snakefile", str(self.root / "Snakefile"), "--directory", str(self.work),
                   "--configfile", str(self.config), *map(str, extra_configs), *args, cwd=self.root, check=check)

    def reruns(self, *extra_configs) -> set[str]:
        res = self.smk("-n", extra_configs=extra_configs)
        return set(job_counts(res.stdout + res.stderr))


@pytest.fixture(scope="module")
def simulation_project(tmp_path_factory):
    """A completed run of the simulation domain on a data folder with two files."""
    base = tmp_path_factory.mktemp("reruns")
    root = copy_project(base / "project")
    data = base / "data"
    write_simulation_data(data)
    (data / "README.txt").write_text("simulated samples for the rerun tests\n")
    config = base / "config.yaml"
    config.write_text(SIM_CONFIG.format(root=data))
    project = Project(root, config)
    project.data = data
    project.smk("--cores", "2")
    return project


def test_unchanged_tree_comments_and_touched_files_rerun_nothing(simulation_project):
    p = simulation_project
    assert (p.work / "results/simulation/inputs/manifest.tsv").read_text().count("\n") == 3
    prov = json.loads((p.work / "results/provenance.json").read_text())
    hashes = prov["domains"]["simulation"]
    assert set(hashes["stages"]) == {"simulate", "ingest", "teacher", "distill", "heads", "figures"}
    assert all(len(h["code"]) == 16 and len(h["config"]) == 16 for h in hashes["stages"].values())
    assert {"commit", "dirty", "changes"} <= set(prov["git"])
    schema = p.root / "domains/simulation/schema.yaml"
    schema.write_text(schema.read_text() + "# a comment in a domain's YAML file\n")
    p.config.write_text(p.config.read_text() + "# a comment in the config\n")
    for path in p.data.iterdir():  # same bytes, new modification times
        path.write_bytes(path.read_bytes())
    assert p.reruns() == set()


def test_changing_distill_epochs_reruns_only_distill_and_what_follows(simulation_project, tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("simulation: {distill: {epochs: 2}}\n")
    # provenance records the config, so it is rewritten too
    assert simulation_project.reruns(override) == {"distill", "heads_simulation", "figures", "summary",
                                                     "provenance", "all"}


def test_editing_a_figure_module_reruns_only_the_figures(simulation_project):
    module = simulation_project.root / "domains/simulation/figures.py"
    original = module.read_text()
    module.write_text(original.replace("Recovery of the ground-truth wavelet", "Recovery of the true wavelet"))
    try:
        # provenance records every stage's code hash, so it is rewritten too
        assert simulation_project.reruns() == {"figures", "provenance", "all"}
    finally:
        module.write_text(original)


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_changed_added_or_removed_data_file_reruns_ingest_and_what_follows(simulation_project, change):
    data = simulation_project.data
    saved = {p.name: p.read_bytes() for p in data.iterdir()}
    if change == "edit":
        write_simulation_data(data, seed=1)
    elif change == "add":
        (data / "notes.txt").write_text("one more file\n")
    else:
        (data / "README.txt").unlink()
    try:
        reruns = simulation_project.reruns()
        assert {"ingest", "teacher", "distill", "heads_simulation", "figures"} <= reruns
        assert "simulate" not in reruns
    finally:
        for p in data.iterdir():
            p.unlink()
        for name, content in saved.items():
            (data / name).write_bytes(content)
    assert simulation_project.reruns() == set()


def test_a_failed_run_ends_with_the_failed_jobs_error_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "simulation.npz").write_bytes(b"not an npz file")
    config = tmp_path / "config.yaml"
    config.write_text(SIM_CONFIG.format(root=data))
    res = smk("--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path / "work"),
              "--configfile", str(config), "--cores", "1", check=False)
    assert res.returncode != 0
    tail = [line for line in res.stderr.splitlines() if line.strip()][-2:]
    assert tail[0] == "AWD workflow: 1 job(s) failed:"
    assert tail[1].startswith("  ingest (logs/simulation/ingest.log): stage ingest failed: InputError: ")
    assert "simulation.npz" in tail[1]


def test_nested_config_values_are_read_as_yaml():
    res = smk("-n", "--config", "domains=[simulation]", "simulation={teacher: {epochs: 3}, distill: {lr: 0.01}}")
    assert "rule teacher" in res.stdout + res.stderr


def test_nested_config_error_shows_the_configfile_form():
    res = smk("-n", "--config", "domains=[simulation]", "simulation={teacher: {epochs: many}}", check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "simulation.teacher.epochs" in out
    assert "--configfile override.yaml" in out and "teacher:" in out and "BaseLoader" in out


@pytest.mark.parametrize("section, message", [
    ("{teacher: {epoch: 3}}", "simulation.teacher: Additional properties are not allowed ('epoch'"),
    ("{distill: {lambda: [0.1]}}", "simulation.distill: unknown key(s) ['lambda']"),  # not in the schema
    ("{data: {source: files}}", "simulation.data"),
])
def test_mistakes_in_a_section_stop_the_dry_run(section, message):
    res = smk("-n", "--config", "domains=[simulation]", f"simulation={section}", check=False)
    assert res.returncode != 0 and message in res.stdout + res.stderr
