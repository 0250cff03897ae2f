"""Shared fixtures: running the workflow through its command line, and one reference run of a
tiny configuration that the determinism and interrupted-run tests compare against."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "workflow" / "config" / "tiny.yaml"

#: The tiny config for two domains on the CPU, with the simulation domain's teacher and
#: distillation long enough (a few seconds each) that a run can be killed in the middle of them.
RELIABILITY_CONFIG = {
    "label": "reliability",
    "device": "cpu",
    "domains": ["simulation", "cosmology"],
    "simulation": {"teacher": {"epochs": 20}, "distill": {"epochs": 30}},
}


def heads_targets(*domains: str) -> list[str]:
    """The result table and selected wavelet of each domain (figures and summaries left out)."""
    return [f"results/{d}/{name}" for d in domains for name in ("table.csv", "wavelet.json")]


#: Result files compared byte for byte; .npz and .pt are compared array by array (their zip
#: containers hold write times and temporary file names).
BYTE_SUFFIXES = (".csv", ".json", ".md")
#: Folders of results/<domain> left out of comparisons: timings, figures, raw mock data.
SKIPPED_FOLDERS = ("benchmarks", "figures", "raw")
#: Pictures anywhere (a heads stage may draw one beside its tables) are not compared byte for byte.
SKIPPED_SUFFIXES = (".png",)


def result_files(workdir: Path, domain: str) -> list[Path]:
    """Result files of one domain, relative to ``workdir``."""
    root = workdir / "results" / domain
    return sorted(p.relative_to(workdir) for p in root.rglob("*")
                  if p.is_file() and not set(p.relative_to(root).parts) & set(SKIPPED_FOLDERS)
                  and p.suffix not in SKIPPED_SUFFIXES)


def _same_npz(a: Path, b: Path) -> None:
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        assert sorted(za.files) == sorted(zb.files), a
        for key in za.files:
            assert za[key].dtype == zb[key].dtype and np.array_equal(za[key], zb[key]), f"{a}: {key}"


def _same_torch(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert sa["state_dict"].keys() == sb["state_dict"].keys(), a
    for key, value in sa["state_dict"].items():
        assert torch.equal(value, sb["state_dict"][key]), f"{a}: {key}"


def assert_same_results(first: Path, second: Path, domain: str) -> list[Path]:
    """Every result file of ``domain`` is identical in two working directories; returns them."""
    files = result_files(first, domain)
    assert files == result_files(second, domain)
    for rel in files:
        a, b = first / rel, second / rel
        if rel.suffix in BYTE_SUFFIXES:
            assert a.read_bytes() == b.read_bytes(), f"{rel} differs between the two runs"
        elif rel.suffix == ".npz":
            _same_npz(a, b)
        elif rel.suffix == ".pt":
            _same_torch(a, b)
        else:
            raise AssertionError(f"no comparison defined for {rel}")
    return files


class WorkflowCLI:
    """``python -m snakemake`` on the repository's Snakefile in a working directory of its own."""

    def __init__(self, configfiles: list[Path]):
        self.configfiles = [str(p) for p in configfiles]

    def command(self, workdir: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                "--directory", str(workdir), "--configfile", *self.configfiles, *args]

    def run(self, workdir: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run to the end; with ``check``, a non-zero exit fails the test with the output's tail."""
        res = subprocess.run(self.command(workdir, *args), cwd=REPO, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
        return res


def _config_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reliability.yaml"
    path.write_text(yaml.safe_dump(RELIABILITY_CONFIG, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def reliability_cli(tmp_path_factory) -> WorkflowCLI:
    """The workflow CLI with tiny.yaml overlaid by :data:`RELIABILITY_CONFIG`."""
    return WorkflowCLI([TINY, _config_file(tmp_path_factory.mktemp("reliability_config"))])


@pytest.fixture(scope="session")
def tiny_cli() -> WorkflowCLI:
    """The workflow CLI with workflow/config/tiny.yaml alone."""
    return WorkflowCLI([TINY])


@pytest.fixture(scope="session")
def compare_results():
    """:func:`assert_same_results`."""
    return assert_same_results


@pytest.fixture(scope="session")
def reference_run(reliability_cli, tmp_path_factory) -> Path:
    """Working directory of one uninterrupted run of the reliability config, up to the tables
    and wavelets of its domains."""
    workdir = tmp_path_factory.mktemp("reference_run")
    reliability_cli.run(workdir, "--cores", "2", *heads_targets(*RELIABILITY_CONFIG["domains"]))
    return workdir


@pytest.fixture(scope="session")
def reliability_targets():
    """:func:`heads_targets`."""
    return heads_targets
