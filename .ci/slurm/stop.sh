#!/usr/bin/env bash
# Stop the single-node SLURM started by start.sh (munged is left running: it is
# cheap and other tools may use it). Safe to run when nothing is running.
set -uo pipefail

stop_pidfile() {
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
}

stop_pidfile /run/slurmd.pid
stop_pidfile /run/slurmctld.pid
echo "SLURM stopped"
