#!/usr/bin/env bash
# A single-node SLURM cluster for the tests marked `slurm` (make test-slurm), from Debian's
# slurm-wlm and munge packages (tested with SLURM 22.05).
#   scripts/slurm-local.sh start   # prints `export SLURM_CONF=...`; clients need it to find the cluster
#   scripts/slurm-local.sh stop    # stops its daemons by their pid files and removes the state folder
# Everything (config, state, spool, logs, munge socket) lives in $SLURM_LOCAL_DIR, so a cluster that
# already runs on this host is left alone. Needs root (SlurmUser=root, munged with the host's key).
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/transfer-lightning-slurm}"
CTLD_PORT="${SLURM_LOCAL_CTLD_PORT:-16817}"
SLURMD_PORT="${SLURM_LOCAL_SLURMD_PORT:-16818}"
NODE="$(hostname -s)"

write_config() {
    local cpus memory_mb
    cpus="$(nproc)"
    memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))  # below the machine's
    cat >"$DIR/slurm.conf" <<CONF
ClusterName=tl-local
SlurmctldHost=$NODE
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
# without it a job takes all of the node's memory and jobs run one at a time
DefMemPerCPU=1024
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# no accounting database: finished jobs are listed, one line each, in jobcomp.log
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
JobAcctGatherType=jobacct_gather/none
# finished jobs stay visible to scontrol show job for an hour
MinJobAge=3600
# short polls keep signals (time limit, requeue) prompt in the tests
KillWait=10
InactiveLimit=0
NodeName=$NODE CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    if [[ -f "$DIR/slurmctld.pid" ]] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
        echo "slurm-local: already running (state in $DIR)" >&2
        echo "export SLURM_CONF=$DIR/slurm.conf"
        return
    fi
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || { echo "slurm-local: $tool is missing; apt-get install -y slurm-wlm munge" >&2; exit 1; }
    done
    mkdir -p "$DIR/state" "$DIR/spool"
    write_config
    munged --force --socket="$DIR/munge.socket" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed" 2>>"$DIR/munged.stderr"
    export SLURM_CONF="$DIR/slurm.conf"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            echo "slurm-local: node $NODE idle (state in $DIR; $(slurmctld -V))" >&2
            echo "export SLURM_CONF=$DIR/slurm.conf"
            return
        fi
        sleep 1
    done
    echo "slurm-local: the node did not become idle in 60 s; see $DIR/*.log" >&2
    stop
    exit 1
}

stop_daemon() {  # by its pid file only: other clusters may share this host
    local pid_file="$DIR/$1.pid" pid
    [[ -f "$pid_file" ]] || return 0
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
}

stop() {
    [[ -d "$DIR" ]] || return 0
    if [[ -f "$DIR/slurm.conf" ]]; then  # jobs first, so no job process outlives its daemons
        SLURM_CONF="$DIR/slurm.conf" scancel --full --quiet --user=root 2>/dev/null || true
        sleep 1
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    rm -rf "$DIR"
    echo "slurm-local: stopped" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
