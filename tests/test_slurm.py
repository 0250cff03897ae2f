"""The workflow on a real SLURM cluster through workflow/profiles/slurm.

The tiny simulation-domain config runs under SLURM and, at the same time, locally; a second SLURM
run whose data folder does not exist starts once the local run is done. Every cluster rule must
run as its own SLURM job that SLURM reports as completed and whose SLURM log was kept, the results
must be byte-identical to the local run's, and the failing job must end its run with an error
within minutes, the rule's log naming the missing folder.

Needs `sinfo` on PATH, an idle node and snakemake-executor-plugin-slurm (pip install -e ".[slurm]");
otherwise the tests are skipped, or fail when AWD_REQUIRE_SLURM=1 (set by .ci/run, which starts
a single-node cluster with .ci/slurm-up.sh). AWD_SLURM_PARTITION picks the partition (default:
the default partition with an idle node) and AWD_SLURM_ACCOUNT the account (default: none). On a
multi-node cluster, run pytest with --basetemp on a shared filesystem.
"""
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
DOMAIN = ["--config", "domains=['simulation']"]
TINY = ["--snakefile", str(REPO / "Snakefile"), "--configfile", str(REPO / "workflow/config/tiny.yaml")]
# summary, provenance: localrules; the simulation domain declares extra heads outputs, so its heads
# rule is heads_simulation
REMOTE_RULES = {"simulate", "ingest", "teacher", "distill", "heads_simulation", "figures"}
COMPARED = ["table.csv", "wavelet.json"]
RUN_TIMEOUT_S = 1200
FAIL_TIMEOUT_S = 300
# The plugin checks job states i, i+10, i+20, ... seconds apart (i is this value), back to i after
# a job finished; a tiny rule's job takes 15-33 s here, so 13 finds nearly all at the 2nd check (36 s).
FIRST_STATUS_CHECK_S = 13
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", re.M)


def _query(*cmd):
    """stdout of a SLURM client command, or None when it fails or does not answer."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def _find_cluster():
    """(partition, node memory in MB) of an idle node, or the reason why there is none."""
    if shutil.which("sinfo") is None:
        return None, "sinfo is not on PATH: no SLURM cluster here (CI starts one with .ci/slurm-up.sh)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return None, "snakemake-executor-plugin-slurm is not installed: pip install -e '.[slurm]'"
    wanted = os.environ.get("AWD_SLURM_PARTITION")
    out = _query("sinfo", "-h", "-t", "idle", "-o", "%P %m", *(["-p", wanted] if wanted else []))
    rows = [line.split() for line in (out or "").splitlines() if line.strip()]
    if not rows:
        where = f"partition {wanted!r}" if wanted else "any partition"
        return None, f"no idle SLURM node answers in {where} (sinfo -t idle is empty or failed)"
    rows.sort(key=lambda row: not row[0].endswith("*"))  # the default partition first
    partition, memory = rows[0]
    return (partition.rstrip("*"), int(re.match(r"\d+", memory).group())), None


@pytest.fixture(scope="module")
def cluster():
    found, reason = _find_cluster()
    if found is None:
        if os.environ.get("AWD_REQUIRE_SLURM") == "1":
            pytest.fail(f"AWD_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    return found


def slurm_args(cluster):
    """The SLURM profile with the test cluster's partition (and account, if given), memory
    capped below the node's (--resources caps every rule's mem_mb), and quick status checks."""
    partition, node_mb = cluster
    account = os.environ.get("AWD_SLURM_ACCOUNT")
    return ["--workflow-profile", str(REPO / "workflow/profiles/slurm"),
            "--default-resources", f"slurm_partition={partition}",
            *([f"slurm_account={account}"] if account else []),
            "--resources", f"mem_mb={min(2000, node_mb // 2)}",
            "--slurm-init-seconds-before-status-checks", str(FIRST_STATUS_CHECK_S),
            "--retries", "0"]


@dataclass
class Run:
    """A Snakemake run in the background, its output going to a file in its work folder."""
    workdir: Path
    proc: subprocess.Popen
    out_file: IO[str]


@dataclass
class Result:
    workdir: Path
    returncode: int | None  # None: interrupted after its deadline
    output: str


def start(args, workdir):
    workdir.mkdir(parents=True, exist_ok=True)
    out_file = open(workdir / "snakemake.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args, "--directory", str(workdir)],
                            cwd=REPO, stdout=out_file, stderr=subprocess.STDOUT, text=True)
    return Run(workdir, proc, out_file)


def finish(run, deadline):
    """Wait until the monotonic deadline; a run still going then is interrupted (Snakemake
    cancels its SLURM jobs on SIGINT)."""
    try:
        rc = run.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.proc.send_signal(signal.SIGINT)
        try:
            run.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()
        rc = None
    run.out_file.close()
    return Result(run.workdir, rc, (run.workdir / "snakemake.out").read_text())


def succeeded(result):
    assert result.returncode is not None, f"snakemake did not finish in time:\n{result.output[-4000:]}"
    assert result.returncode == 0, result.output[-4000:]
    return result


def submitted_jobs(output):
    """{rule: (SLURM job id, SLURM log path)} from Snakemake's submission messages."""
    jobs = {}
    for job_id, log in SUBMITTED.findall(output):
        rule = re.search(r"/rule_([^/]+)/", log).group(1)
        jobs[rule] = (job_id, Path(log))
    return jobs


def slurm_states(job_ids):
    """{job id: state} as SLURM reports it: squeue while it remembers finished jobs (MinJobAge),
    then sacct where an accounting database exists."""
    states = {}
    out = _query("squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%i %T") or ""
    for line in out.splitlines():
        job_id, state = line.split()
        states[job_id] = state
    for job_id in set(job_ids) - set(states):
        out = _query("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State") or ""
        states[job_id] = out.strip().split(" ")[0] or "UNKNOWN"
    return states


def missing_data_override(folder):
    return f"simulation={{'data': {{'source': 'files', 'root': '{folder}'}}}}"


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """{"slurm", "local", "failing"}: Results of the three runs. The failing run starts when the
    local one is done, so that no more than two jobs share a two-CPU test node."""
    slurm_dir = tmp_path_factory.mktemp("slurm_run")
    local_dir = tmp_path_factory.mktemp("local_run")
    failing_dir = tmp_path_factory.mktemp("failing_run")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    slurm = start([*TINY, *DOMAIN, *slurm_args(cluster), "--slurm-keep-successful-logs"], slurm_dir)
    local = start([*TINY, *DOMAIN, "--cores", "1", *(f"results/simulation/{f}" for f in COMPARED)],
                  local_dir)
    results = {"local": finish(local, deadline)}
    failing = start([*TINY, *DOMAIN, missing_data_override(failing_dir / "no_such_data"),
                     *slurm_args(cluster)], failing_dir)
    results["failing"] = finish(failing, min(deadline, time.monotonic() + FAIL_TIMEOUT_S))
    results["slurm"] = finish(slurm, deadline)
    return results


def test_every_cluster_rule_ran_as_a_completed_slurm_job(runs):
    slurm = succeeded(runs["slurm"])
    jobs = submitted_jobs(slurm.output)
    assert set(jobs) == REMOTE_RULES, slurm.output[-4000:]
    ids = [job_id for job_id, _ in jobs.values()]
    assert len(set(ids)) == len(REMOTE_RULES)
    assert slurm_states(ids) == {job_id: "COMPLETED" for job_id in ids}
    for rule, (job_id, log) in jobs.items():
        # Written by SLURM itself (sbatch --output .../%j.log); the job step ran the rule inside.
        assert log.name == f"{job_id}.log" and log.is_relative_to(slurm.workdir / ".snakemake/slurm_logs")
        assert f"rule {rule}:" in log.read_text()
    for rule in ("summary", "provenance"):
        assert f"localrule {rule}:" in slurm.output
    assert (slurm.workdir / "results/provenance.json").is_file()
    assert any((slurm.workdir / "results/simulation/figures").glob("*.png"))


@pytest.mark.parametrize("name", COMPARED)
def test_slurm_results_are_byte_identical_to_a_local_run(runs, name):
    slurm, local = succeeded(runs["slurm"]), succeeded(runs["local"])
    slurm_bytes = (slurm.workdir / "results/simulation" / name).read_bytes()
    assert slurm_bytes == (local.workdir / "results/simulation" / name).read_bytes()
    assert len(slurm_bytes) > 100


def test_failing_slurm_job_ends_the_run_with_an_error(runs):
    failing = runs["failing"]
    assert failing.returncode is not None, f"no answer from SLURM in time:\n{failing.output[-4000:]}"
    assert failing.returncode != 0
    jobs = submitted_jobs(failing.output)
    assert set(jobs) == {"ingest"}, failing.output[-4000:]
    job_id, _ = jobs["ingest"]
    assert f"SLURM-job '{job_id}' failed" in failing.output
    assert slurm_states([job_id]) == {job_id: "FAILED"}
    rule_log = (failing.workdir / "logs/simulation/ingest.log").read_text()
    assert "InputError" in rule_log and str(failing.workdir / "no_such_data") in rule_log
