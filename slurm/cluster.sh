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

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------- processes
# A pid is alive when /proc/PID exists and is not a zombie: right after a kill a daemon can linger as one.
alive() {
    local pid=$1 state
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    state=$(sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]]
}

pid_of() { [[ -s $1 ]] && tr -dc '0-9' <"$1" || true; }

running() { alive "$(pid_of "$1")"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "timed out after ${limit}s waiting for $what (logs in $STATE/log)"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, then KILL after 15 s
    local name=$1 pid i
    pid=$(pid_of "$2")
    if ! alive "$pid"; then rm -f "$2"; return 0; fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        alive "$pid" || break
        sleep 0.2
    done
    if alive "$pid"; then
        log "$name did not exit on TERM, killing"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$2"
}

# ---------------------------------------------------------------------------------------------- install
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    # Package scripts must not start the system services: we run our own daemons with our own config.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$STATE/log/apt.log" 2>&1; then
        apt-get update -q >>"$STATE/log/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$STATE/log/apt.log" 2>&1 \
            || { [[ $created_policy == 1 ]] && rm -f "$policy"; die "apt-get install failed: see $STATE/log/apt.log"; }
    fi
    [[ $created_policy == 1 ]] && rm -f "$policy"
    return 0
}

# ---------------------------------------------------------------------------------------------- config
ensure_hostname() {
    # SlurmctldHost and NodeName use the short hostname, so it must resolve.
    getent hosts "$HOST" >/dev/null && return 0
    log "adding $HOST to /etc/hosts (it did not resolve)"
    printf '127.0.0.1\t%s\n' "$HOST" >>/etc/hosts
}

CONFIG_CHANGED=0
write_if_changed() {  # write_if_changed FILE MODE (content on stdin): keeps mtimes stable on restarts
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 0; fi
    install -m "$2" "$tmp" "$1"
    rm -f "$tmp"
    CONFIG_CHANGED=1
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
# No cgroups on these machines: track processes through /proc, no CPU binding or memory enforcement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
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
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
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

mysql_root() { mariadb --no-defaults --protocol=socket -S "$STATE/mysql.sock" -uroot "$@"; }

start_mariadb() {
    local data=$STATE/mysql pidfile=$STATE/run/mariadbd.pid
    if running "$pidfile"; then return 0; fi
    if [[ ! -d $data/mysql ]]; then
        log "initialising MariaDB in $data"
        mkdir -p "$data"
        mariadb-install-db --no-defaults --user=root --datadir="$data" --skip-test-db \
            --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed: see $STATE/log/mariadb-install.log"
    fi
    log "starting MariaDB on 127.0.0.1:$DB_PORT"
    setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$data" --bind-address=127.0.0.1 \
        --port="$DB_PORT" --socket="$STATE/mysql.sock" --pid-file="$pidfile" \
        --log-error="$STATE/log/mariadb.log" --skip-name-resolve --innodb-buffer-pool-size=32M \
        </dev/null >>"$STATE/log/mariadb.log" 2>&1 &
    wait_for 60 MariaDB mysql_root -e "SELECT 1"
    mysql_root <<EOF
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
    if ! running "$STATE/run/slurmdbd.pid"; then
        log "starting slurmdbd"
        slurmdbd
    fi
    wait_for 60 slurmdbd sacctmgr -n show cluster
    # The cluster must exist in the database before slurmctld registers with it.
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
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
