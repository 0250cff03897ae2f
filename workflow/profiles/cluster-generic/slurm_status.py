#!/usr/bin/env python3
"""Job status for the cluster-generic executor: prints running, success or failed.

Uses squeue while the job is known to the controller and sacct (when accounting exists)
afterwards; a job that left the queue without accounting is taken as finished, and its exit
is then judged by Snakemake from the outputs it wrote.
"""
import subprocess
import sys

RUNNING = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def query(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(job_id: str) -> str:
    state = query(["squeue", "-h", "-j", job_id, "-o", "%T"]).split("\n")[0].strip()
    if state:
        return "failed" if state in FAILED else "running"
    state = query(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"]).split("\n")[0].strip()
    state = state.split(" ")[0]
    if state in FAILED:
        return "failed"
    if state in RUNNING:
        return "running"
    if state == "COMPLETED" or not state:
        return "success"
    return "failed"


if __name__ == "__main__":
    print(main(sys.argv[1]))
