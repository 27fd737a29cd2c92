#!/usr/bin/env bash
# Stops the cluster start-local-cluster.sh started in STATE_DIR: each process named in
# STATE_DIR/pids by its own id (TERM, then KILL after 10 s), slurmd and slurmctld before munged.
# Usage: stop-local-cluster.sh STATE_DIR
set -uo pipefail
state=${1:?usage: stop-local-cluster.sh STATE_DIR}
[ -f "$state/pids" ] || { echo "stop-local-cluster: no $state/pids: nothing to stop"; exit 0; }
mapfile -t entries < <(tac "$state/pids")
for entry in "${entries[@]}"; do
    read -r name pid <<< "$entry"
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop-local-cluster: $name (pid $pid) ignored TERM: killed"
        kill -KILL "$pid"
    fi
done
rm -f "$state/pids"
