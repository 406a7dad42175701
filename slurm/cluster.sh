#!/usr/bin/env bash
# A real single-node SLURM (Debian 12, slurm 22.05) for tests and CI: munge, a private MariaDB, slurmdbd,
# slurmctld and slurmd, run as plain background daemons (no systemd, no cgroups needed).
#
#   bash slurm/cluster.sh start    # install packages if missing, configure, start, wait for an idle node
#   bash slurm/cluster.sh status   # daemons and sinfo
#   bash slurm/cluster.sh stop     # stop the daemons by their pid files (state is kept)
#
# Why each setting is what it is: ../shared/notes/slurm-test-cluster.md and slurm/README.md.
# Environment:
#   CONVIT_SLURM_STATE    state, logs, pids and the MariaDB datadir (default /var/tmp/convit-slurm)
#   CONVIT_SLURM_DB_PORT  TCP port of the private MariaDB on 127.0.0.1 (default 3399)
#   CONVIT_SLURM_CLUSTER  ClusterName (default convit)
# Must run as root: it writes /etc/slurm (Debian's compiled-in config dir, so sbatch/sacct/submitit need no
# SLURM_CONF) and starts daemons.
set -euo pipefail

STATE=${CONVIT_SLURM_STATE:-/var/tmp/convit-slurm}
DB_PORT=${CONVIT_SLURM_DB_PORT:-3399}
CLUSTER=${CONVIT_SLURM_CLUSTER:-convit}
ETC=/etc/slurm
HOST=$(hostname -s)
# The nodes every partition spans, comma-separated (one node today; a second node's name goes here too).
NODES=$HOST
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
DB_USER=slurm
DB_PASS=convit-slurm-local  # a private database bound to 127.0.0.1 on a throw-away test machine

LOG_TAG=cluster
# shellcheck source=slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------- config
ensure_hostname() {
    # SlurmctldHost and NodeName use the short hostname, so it must resolve.
    getent hosts "$HOST" >/dev/null && return 0
    log "adding $HOST to /etc/hosts (it did not resolve)"
    printf '127.0.0.1\t%s\n' "$HOST" >>/etc/hosts
}

write_config() {
    mkdir -p "$ETC" "$STATE"/{log,run,ctld,spool}
    local node
    # The node line comes from the hardware as slurmd sees it (CPUs, sockets, cores, threads, memory).
    node=$(slurmd -C 2>/dev/null | head -n 1)
    [[ $node == NodeName=* ]] || die "slurmd -C gave no node line"
    node=${node/NodeName=$(hostname)/NodeName=$HOST}
    write_if_changed "$ETC/slurm.conf" 644 <<EOF
# Written by slurm/cluster.sh: a single-node test cluster. Do not edit; edit the script.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Credentials expire after 10 s (default 120): a requeued job restarts in 10-15 s instead of about 2 min.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$(conf_tracking_and_scheduling)
# submitit requeues with 'scontrol requeue'; a restarted node comes back by itself.
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=300
InactiveLimit=0
# sacct (which submitit uses for job states) needs accounting.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# Real preemption: a job in 'urgent' requeues one in 'debug'; the victim gets submitit's signal
# (preempt_send_user_signal), not only SIGTERM, which submitit ignores.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
$node State=UNKNOWN
PartitionName=debug Nodes=$NODES Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=urgent Nodes=$NODES Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
# Limits like a real cluster's, for the launcher's time-limit and node checks (tests/test_slurm_limits.py):
# 'short' allows 5 minutes a job (2 by default) and one CPU per node, so a second job there waits (Resources)
# while the first runs; 'single' one node a job. EnforcePartLimits is left at its default (NO), as on many
# clusters: sbatch accepts a job over a limit, which then pends with the limit as its reason.
PartitionName=short Nodes=$NODES Default=NO DefaultTime=00:02:00 MaxTime=00:05:00 MaxCPUsPerNode=1 State=UP PriorityTier=1 GraceTime=30
PartitionName=single Nodes=$NODES Default=NO MaxTime=INFINITE MaxNodes=1 State=UP PriorityTier=1 GraceTime=30
EOF
    write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
# Written by slurm/cluster.sh.
AuthType=auth/munge
DbdHost=localhost
$(conf_dbd_storage)
EOF
}

# ---------------------------------------------------------------------------------------------- daemons
start_munge() {
    local dir=$STATE/munge
    if running "$dir/munged.pid"; then return 0; fi
    # munged refuses a log or pid file whose parent directories are writable by anyone but root or munge.
    install -d -m 755 -o munge -g munge "$dir" /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file="$dir/munged.pid" --log-file="$dir/munged.log"
    wait_for 20 munged munge -n
}

start_slurmctld() {
    if running "$STATE/run/slurmctld.pid"; then
        # A running controller keeps the partitions it started with: apply a changed slurm.conf (new or
        # changed partitions; a new node needs 'restart').
        if [[ $CONFIG_CHANGED == 1 ]]; then
            log "slurm.conf changed: scontrol reconfigure"
            scontrol reconfigure
        fi
        return 0
    fi
    log "starting slurmctld"
    slurmctld
    wait_for 60 slurmctld scontrol ping
}

start_slurmd() {
    if running "$STATE/run/slurmd.pid"; then return 0; fi
    log "starting slurmd"
    slurmd
}

node_ready() {
    local state
    state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1)
    case $state in
        idle | mixed | allocated | completing) return 0 ;;
        down* | drain* | fail*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
            return 1 ;;
        *) return 1 ;;
    esac
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    mkdir -p "$STATE/log"
    local t0=$SECONDS
    install_packages
    ensure_hostname
    write_config
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_for 90 "an idle node in sinfo" node_ready
    log "ready in $((SECONDS - t0)) s: $(sinfo -h -N -o '%N %T %c CPUs %m MB' | head -n 1) (state in $STATE)"
}

cmd_stop() {
    stop_pidfile slurmd "$STATE/run/slurmd.pid"
    stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
    stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
    stop_pidfile mariadbd "$STATE/run/mariadbd.pid"
    stop_pidfile munged "$STATE/munge/munged.pid"
}

cmd_status() {
    local rc=0 name file
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        file=$STATE/run/$name.pid
        [[ $name == munged ]] && file=$STATE/munge/munged.pid
        if running "$file"; then
            printf '%-10s running (pid %s)\n' "$name" "$(pid_of "$file")"
        else
            printf '%-10s stopped\n' "$name"
            rc=1
        fi
    done
    if [[ $rc == 0 ]]; then sinfo -N -o '%N %P %T %c %m' || rc=1; fi
    return $rc
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
