#!/usr/bin/env bash
# Stops the one-node cluster of cluster/start.sh: cancels its jobs, then stops slurmd, slurmctld, slurmdbd,
# MariaDB and munged (only those started from $FMI_SLURM_DIR, by their pid files) and waits until each is gone.
# Idempotent: stopping a stopped cluster does nothing. The state stays (a later start is quicker);
# `cluster/stop.sh --wipe` also removes it (job ids then start again at 1).
set -euo pipefail
STATE=${FMI_SLURM_DIR:-/tmp/fmi-slurm}
say() { echo "cluster: $*" >&2; }
pid_of() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"; }

stop_pids() {  # stop_pids PID...: TERM to all at once, KILL to any still there after 10 s; returns once all are gone
    local until=$((SECONDS + 10)) pid
    [ $# -gt 0 ] || return 0
    kill "$@" 2>/dev/null || true
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null; do
            if [ $SECONDS -ge $until ]; then say "pid $pid ignored TERM: killing it"; kill -9 "$pid" 2>/dev/null || true; fi
            sleep 0.1
        done
    done
}

export SLURM_CONF=$STATE/slurm.conf
if pid_of "$STATE/run/slurmctld.pid" >/dev/null; then
    scancel --full --quiet --state=RUNNING,PENDING,SUSPENDED 2>/dev/null || true
    scancel --quiet 2>/dev/null || true
    until=$((SECONDS + 15))  # let slurmd tear the steps down while it still runs
    while [ -n "$(squeue -h -t RUNNING,COMPLETING 2>/dev/null)" ] && [ $SECONDS -lt $until ]; do sleep 0.2; done
fi
pids=()
for name in slurmd slurmctld slurmdbd; do pids+=($(pid_of "$STATE/run/$name.pid" || true)); done
stop_pids "${pids[@]}"
# job steps that outlived slurmd (this cluster is the only SLURM here: slurmstepd processes are its own)
steps=()
for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/exe" 2>/dev/null)" = /usr/sbin/slurmstepd ] && steps+=("${proc#/proc/}")
done
stop_pids "${steps[@]}"
stop_pids $(pid_of "$STATE/run/mariadb.pid" || true) $(pid_of /run/munge/munged.pid || true)
if [ "${1:-}" = "--wipe" ]; then
    [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
    rm -rf "$STATE"
fi
say "stopped"
