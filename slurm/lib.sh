# What slurm/cluster.sh (one node) and slurm/multinode.sh (two nodes) share: process handling, package
# installation, config writing, the private MariaDB and slurmdbd. Sourced, not run. The caller sets, before
# sourcing: LOG_TAG (the prefix of every message), STATE (state folder), PACKAGES (Debian packages), and for
# the database DB_PORT, DB_USER, DB_PASS, CLUSTER; DBD_PORT when slurmdbd listens on its own port.
# Why each setting is what it is: slurm/README.md and ../shared/notes/slurm-test-cluster.md.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

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

stop_pid() {  # stop_pid NAME PID: TERM, then KILL after 15 s
    local name=$1 pid=$2 i
    alive "$pid" || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        alive "$pid" || return 0
        sleep 0.2
    done
    log "$name did not exit on TERM, killing"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

stop_pidfile() { stop_pid "$1" "$(pid_of "$2")"; rm -f "$2"; }

# ---------------------------------------------------------------------------------------------- install
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    # Package scripts must not start the system services: we run our own daemons with our own config. The
    # two clusters may install side by side (CI starts them one after the other): wait for dpkg's lock.
    local policy=/usr/sbin/policy-rc.d created_policy=0 apt=(apt-get -o DPkg::Lock::Timeout=300)
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! "${apt[@]}" install -y -q --no-install-recommends "${PACKAGES[@]}" >"$STATE/log/apt.log" 2>&1; then
        "${apt[@]}" update -q >>"$STATE/log/apt.log" 2>&1 || true
        "${apt[@]}" install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$STATE/log/apt.log" 2>&1 \
            || { [[ $created_policy == 1 ]] && rm -f "$policy"; die "apt-get install failed: see $STATE/log/apt.log"; }
    fi
    [[ $created_policy == 1 ]] && rm -f "$policy"
    return 0
}

# ---------------------------------------------------------------------------------------------- config
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

# The slurm.conf lines both clusters have, in this order.
conf_tracking_and_scheduling() {
    cat <<'CONF'
# No cgroups on these machines: track processes through /proc, no CPU binding or memory enforcement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
CONF
}

# The slurmdbd.conf lines both clusters end with: where slurmdbd writes, and the private MariaDB.
conf_dbd_storage() {
    cat <<CONF
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
}

# ---------------------------------------------------------------------------------------------- daemons
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
    mysql_root <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

start_slurmdbd() {  # slurmdbd reads the slurmdbd.conf beside slurm.conf ($SLURM_CONF's folder, or /etc/slurm)
    if ! running "$STATE/run/slurmdbd.pid"; then
        log "starting slurmdbd${DBD_PORT:+ (port $DBD_PORT)}"
        slurmdbd
    fi
    wait_for 60 slurmdbd sacctmgr -n show cluster
    # The cluster must exist in the database before slurmctld registers with it.
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}
