#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine for the tests (Debian's slurm-wlm and munge):
# munged, slurmctld and slurmd on localhost with their state, sockets, logs and slurm.conf in
# STATE_DIR, each started in the foreground in the background so that STATE_DIR/pids holds the
# processes' own ids (scripts/slurm/stop-local-cluster.sh STATE_DIR stops exactly those).
# Prints `export SLURM_CONF=...`; waits (at most TIMEOUT seconds, default 60) for the node to be idle.
# Usage: start-local-cluster.sh STATE_DIR [CTLD_PORT] [TIMEOUT]
set -euo pipefail
state=${1:?usage: start-local-cluster.sh STATE_DIR [CTLD_PORT] [TIMEOUT]}
port=${2:-16817}
timeout=${3:-60}
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "start-local-cluster: $tool not found: install slurm-wlm and munge (scripts/setup.sh)" >&2; exit 2; }
done
mkdir -p "$state"
state=$(cd "$state" && pwd)
[ -e "$state/pids" ] && { echo "start-local-cluster: $state/pids exists: a cluster may be running there; stop it first" >&2; exit 2; }
mkdir -p "$state/munge" "$state/ctld" "$state/slurmd" "$state/log"
chmod 700 "$state/munge"
user=$(id -un)
host=$(hostname -s)
cpus=$(nproc)
memory=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)

# munge: a fresh key and a private socket, so nothing system-wide is touched.
[ -f "$state/munge/munge.key" ] || { dd if=/dev/urandom bs=1 count=1024 of="$state/munge/munge.key" status=none; chmod 400 "$state/munge/munge.key"; }
socket="$state/munge/munge.socket"

cat > "$state/slurm.conf" <<CONF
ClusterName=backdoorlab
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

: > "$state/pids"
start() {  # name, command...: exec'd in the foreground of a background subshell, so $! is the daemon itself
    local name=$1; shift
    (
        # The daemons keep none of the caller's descriptors (a caller waiting for this script's
        # pipes or sockets to close would otherwise wait for the cluster to stop).
        for fd in $(ls /proc/$BASHPID/fd); do ((fd > 2)) && eval "exec $fd>&-"; done
        exec "$@" > "$state/log/$name.out" 2>&1 < /dev/null
    ) &
    echo "$name $!" >> "$state/pids"
}
start munged munged --foreground --force --socket="$socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/munge/munged.pid" --seed-file="$state/munge/munge.seed" --log-file="$state/log/munged.log"
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "start-local-cluster: munged did not open $socket:" >&2; cat "$state/log/munged.out" "$state/log/munged.log" >&2 2>/dev/null; exit 1; }
export SLURM_CONF="$state/slurm.conf"
start slurmctld slurmctld -D -i -f "$SLURM_CONF"
start slurmd slurmd -D -f "$SLURM_CONF"

deadline=$((SECONDS + timeout))
until [ "$(sinfo -h -o %T 2>/dev/null | head -1)" = idle ]; do
    if ((SECONDS >= deadline)); then
        echo "start-local-cluster: the node is not idle after ${timeout}s (sinfo: $(sinfo -h -o %T 2>&1 | head -1)); logs:" >&2
        tail -n 20 "$state"/log/*.log "$state"/log/*.out >&2 2>/dev/null || true
        exit 1
    fi
    while read -r name pid; do
        kill -0 "$pid" 2>/dev/null || { echo "start-local-cluster: $name (pid $pid) exited:" >&2; tail -n 20 "$state/log/$name"*.log "$state/log/$name.out" >&2 2>/dev/null; exit 1; }
    done < "$state/pids"
    sleep 0.5
done
echo "export SLURM_CONF=$SLURM_CONF"
