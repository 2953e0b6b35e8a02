#!/usr/bin/env bash
# Stop the one-node Slurm cluster that up.sh started, leaving no process behind.
#
# Cancels every job first (otherwise slurmstepd and the job processes outlive slurmd), then
# SIGTERMs the daemons up.sh recorded in $SLURM_CI_DIR/*.pid (checking /proc/PID/comm first),
# waits up to 15 s and SIGKILLs what is left. A munged up.sh did not start is left alone.
# Keeps $SLURM_CI_DIR (logs, jobcomp) unless SLURM_CI_PURGE=1. Safe to run twice.
set -uo pipefail

DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
export PATH=$PATH:/usr/sbin:/sbin
log() { printf 'slurm-ci down: %s\n' "$*" >&2; }

recorded_pid() { # name -> pid when alive and really that daemon
    local name=$1 pid
    pid=$(cat "$DIR/$name.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

stepds() { # slurmstepd processes whose parent chain is not ours to judge: list by comm
    local p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] && echo "${p#/proc/}"
    done
}

if recorded_pid slurmctld >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q ' is UP'; then
    if [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]; then
        for user in $(timeout 10 squeue -h -o %u 2>/dev/null | sort -u); do
            timeout 10 scancel -u "$user" 2>/dev/null
        done
        deadline=$((SECONDS + 15))
        while [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.3
        done
    fi
fi

pids=()
for name in slurmd slurmctld munged; do
    if pid=$(recorded_pid "$name"); then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
done
deadline=$((SECONDS + 15))
for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
done
# Steps of jobs that were cancelled above exit within KillWait; kill any straggler by pid.
deadline=$((SECONDS + 7))
while [ -n "$(stepds)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
for pid in $(stepds); do
    log "slurmstepd $pid still alive; killing it"
    kill -KILL "$pid" 2>/dev/null
done
rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid" "$DIR/munged.pid"
if [ "${SLURM_CI_PURGE:-0}" = 1 ]; then
    rm -rf "$DIR"
fi
log "stopped (${#pids[@]} daemons) in ${SECONDS}s"
