#!/usr/bin/env bash
# Start a one-node Slurm cluster on 127.0.0.1 for the integration tests (tests/slurm.rs).
#
# Runs as root on Debian/Ubuntu without systemd (Docker-style images, CI containers).
# Idempotent: when the cluster it started is already up and idle it returns at once; when the
# packages are installed it only (re)starts the daemons (<1 s); from nothing it installs
# slurmctld, slurmd, slurm-client and munge from the distribution's archive (~15 s).
#
# Environment:
#   SLURM_CI_DIR         state, spool, logs, pid files (default /tmp/slurm-ci); must not be noexec
#   SLURM_CI_KEEP_STATE  1 = keep the controller's saved state (job ids continue) on restart
#
# Stop everything with down.sh.
set -euo pipefail

DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
CONF=/etc/slurm/slurm.conf
log() { printf 'slurm-ci up: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, /etc/slurm, starting munged as munge)"

# A pid recorded in $DIR/<name>.pid that is alive and really is <name>.
alive() {
    local name=$1 pid
    pid=$(cat "$DIR/$name.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

wait_for() { # seconds, description, command...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what (logs in $DIR/log)"
        sleep 0.2
    done
}

node_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null | sort -u)" = idle ]; }
ctld_up() { scontrol ping 2>/dev/null | grep -q ' is UP'; }

# Already up: nothing to do (the daemons were started by an earlier up.sh).
if alive slurmctld && alive slurmd && ctld_up; then
    wait_for 30 "the node to be idle" node_idle
    log "already up ($(sinfo -h -N -o '%N %T %c CPUs' | head -n 1))"
    exit 0
fi
if alive slurmctld || alive slurmd; then
    die "a half-started cluster from an earlier up.sh is running; run down.sh first"
fi

# --- packages ---------------------------------------------------------------------------
need_install=0
for bin in slurmctld slurmd sbatch munged; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need_install=1
done
if [ "$need_install" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(slurmctld slurmd slurm-client munge)
    log "installing ${pkgs[*]}"
    if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
fi
export PATH=$PATH:/usr/sbin:/sbin

# --- munge ------------------------------------------------------------------------------
# Without systemd nobody creates /run/munge; munged refuses a key it does not own.
if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
mkdir -p "$DIR"
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    # A munged we did not start (systemd, another tool): use it, never stop it.
    alive munged || rm -f "$DIR/munged.pid"
else
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    wait_for 10 "munged" bash -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$DIR/munged.pid"
fi

# --- directories and config -------------------------------------------------------------
if [ "${SLURM_CI_KEEP_STATE:-0}" != 1 ]; then
    rm -rf "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/jobcomp.txt"
fi
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
touch "$DIR/jobcomp.txt"
chown slurm:slurm "$DIR/state" "$DIR/log" "$DIR/jobcomp.txt"
chmod 0755 "$DIR" "$DIR/state" "$DIR/spool" "$DIR/log"

host=$(hostname -s)
node_line=$(slurmd -C | head -n 1)
case $node_line in NodeName=*) ;; *) die "slurmd -C printed no NodeName line: $node_line" ;; esac
# The daemons bind to the address the host name resolves to when NoInAddrAny is set; only
# ask for loopback-only listening when that address is 127.0.0.1, or nothing can connect.
comm_line=""
if [ "$(getent hosts "$host" | awk '{print $1; exit}')" = 127.0.0.1 ]; then
    comm_line="CommunicationParameters=NoInAddrAny,NoCtldInAddrAny"
fi

mkdir -p /etc/slurm
cat >"$CONF.tmp" <<CONFEOF
# Single-node loopback Slurm cluster for the orchestrate tests (written by .ci/slurm/up.sh)
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
$comm_line
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=86400
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
InactiveLimit=0
MailProg=/bin/true
KillWait=5
SlurmdTimeout=30
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
# Exists but never runs anything: tests of tasks that stay pending (reason PartitionDown).
PartitionName=ci-down Nodes=ALL Default=NO MaxTime=INFINITE State=DOWN
CONFEOF
mv "$CONF.tmp" "$CONF"

# --- daemons ----------------------------------------------------------------------------
rm -f "$DIR/slurmctld.pid" "$DIR/slurmd.pid"
slurmctld -f "$CONF"
wait_for 20 "slurmctld to answer" ctld_up
slurmd -f "$CONF"
wait_for 30 "the node to be idle" node_idle
log "up in ${SECONDS}s ($(sinfo -h -N -o '%N %T %c CPUs' | head -n 1); partitions $(sinfo -h -o %P | paste -sd ' '))"
