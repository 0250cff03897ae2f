#!/usr/bin/env bash
# Stops what .ci/slurm-up.sh started, by the PIDs it recorded: cancels jobs still queued or
# running, then stops slurmd, slurmctld and munged (SIGTERM, SIGKILL after 15 s). A PID whose
# process is no longer the recorded daemon is left alone. Safe to call more than once.
set -uo pipefail

PID_FILE=${AWD_SLURM_PID_FILE:-/run/awd-ci-slurm.pids}
log() { echo "[slurm-down] $*"; }

if [ ! -s "$PID_FILE" ]; then
    log "no PIDs recorded in $PID_FILE; nothing to stop"
    exit 0
fi

alive() {  # alive NAME PID: the process exists and still is NAME
    [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ]
}

pid_of() { awk -v n="$1" '$1 == n {print $2}' "$PID_FILE"; }

ctld=$(pid_of slurmctld)
if [ -n "$ctld" ] && alive slurmctld "$ctld"; then
    jobs=$(timeout 20 squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 20 scancel $jobs 2>/dev/null || true
        for _ in $(seq 15); do
            [ -z "$(timeout 10 squeue -h -t RUNNING,PENDING,COMPLETING -o %A 2>/dev/null)" ] && break
            sleep 1
        done
    fi
fi

status=0
for name in slurmd slurmctld munged; do
    pid=$(pid_of "$name")
    [ -n "$pid" ] || continue
    if ! alive "$name" "$pid"; then
        log "$name (pid $pid) is not running"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do alive "$name" "$pid" || break; sleep 0.5; done
    if alive "$name" "$pid"; then
        log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    if alive "$name" "$pid"; then
        log "could not stop $name (pid $pid)"
        status=1
    else
        log "stopped $name (pid $pid)"
    fi
done
[ "$status" -eq 0 ] && rm -f "$PID_FILE"
exit "$status"
