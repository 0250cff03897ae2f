#!/usr/bin/env bash
# Single-node SLURM for CI (Debian 12, Slurm 22.05): no systemd, no cgroups, no accounting
# database. Installs the Debian packages, writes a one-node slurm.conf, starts munged, slurmctld
# and slurmd in the foreground as background processes and appends each PID to $PID_FILE as soon
# as it is started, so that .ci/slurm-down.sh stops exactly these processes, even after a
# half-finished start. Needs root.
#
#   .ci/slurm-up.sh            # then: sinfo; .ci/slurm-down.sh
#
# Environment: AWD_SLURM_PID_FILE (default /run/awd-ci-slurm.pids),
#              AWD_SLURM_PARTITION (default ci), AWD_SLURM_LOG_DIR (default /var/log/slurm).
set -euo pipefail

PID_FILE=${AWD_SLURM_PID_FILE:-/run/awd-ci-slurm.pids}
PARTITION=${AWD_SLURM_PARTITION:-ci}
LOG_DIR=${AWD_SLURM_LOG_DIR:-/var/log/slurm}
NODE=localhost

log() { echo "[slurm-up] $*"; }
die() { echo "[slurm-up] error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts daemons)"
if [ -s "$PID_FILE" ]; then
    while read -r _ pid; do
        kill -0 "$pid" 2>/dev/null && die "$PID_FILE lists running process $pid; run .ci/slurm-down.sh first"
    done < "$PID_FILE"
fi
pids_named() {  # PIDs of processes whose name is exactly $1 (no procps needed)
    local comm
    for comm in /proc/[0-9]*/comm; do
        [ "$(cat "$comm" 2>/dev/null)" = "$1" ] && basename "$(dirname "$comm")"
    done
    return 0
}
for daemon in slurmctld slurmd; do
    others=$(pids_named "$daemon" | tr '\n' ' ')
    [ -z "$others" ] || die "$daemon already runs (pid $others) and was not started here; stop it first"
done

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
fi

# munge: the key is created by Debian's postinst; create it when missing.
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge "$LOG_DIR" \
    /var/spool/slurmctld /var/spool/slurmd /etc/slurm
chown munge:munge /run/munge /var/log/munge /var/lib/munge

CPUS=$(nproc)
REAL_MB=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
[ -n "$REAL_MB" ] || die "slurmd -C did not report RealMemory"
MEM_MB=$(( REAL_MB * 9 / 10 ))
cat > /etc/slurm/slurm.conf <<CONF
# Written by .ci/slurm-up.sh: one node, no accounting, no cgroups.
ClusterName=awdci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs stay visible to squeue for 10 minutes: the executor plugin reads job states
# with squeue here (no accounting database), and that needs MinJobAge >= 3x its first check delay.
MinJobAge=600
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

: > "$PID_FILE"
start() {  # start NAME CMD...: run CMD in the background, record "NAME PID"
    local name=$1; shift
    "$@" >> "$LOG_DIR/$name.out" 2>&1 < /dev/null &
    echo "$name $!" >> "$PID_FILE"
    log "started $name (pid $!)"
}

start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null || die "munge does not answer (see $LOG_DIR/munged.out)"

start slurmctld /usr/sbin/slurmctld -D -c
start slurmd /usr/sbin/slurmd -D -c -N "$NODE"   # NodeName differs from the hostname

state=""
for _ in $(seq 60); do
    state=$(sinfo -h -p "$PARTITION" -o %T 2>/dev/null || true)
    [ "$state" = "idle" ] && break
    sleep 1
done
if [ "$state" != "idle" ]; then
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    die "node did not become idle (state '$state')"
fi
sinfo
out=$(timeout 60 srun --partition="$PARTITION" --ntasks=1 --mem=100 --time=1 \
      bash -c 'echo "job $SLURM_JOB_ID on $(hostname)"') || die "smoke job failed"
log "smoke job: $out"
