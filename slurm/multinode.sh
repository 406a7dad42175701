#!/usr/bin/env bash
# A real 2-node SLURM (Debian 12, slurm 22.05) on this one machine, for the multi-node tests and CI.
#
#   bash slurm/multinode.sh start            # install packages if missing, build the network, start, wait idle
#   bash slurm/multinode.sh status           # daemons, namespaces and sinfo
#   bash slurm/multinode.sh stop             # daemons, namespaces, veths, bridge and /etc/hosts lines: all gone
#   bash slurm/multinode.sh kill-node NODE   # a node dies: its link is cut, every process on it SIGKILLed
#   bash slurm/multinode.sh conf             # prints the slurm.conf path: export SLURM_CONF=$(... conf)
#
# Each node (cvnode1, cvnode2) is a network namespace with its own address on a private bridge and its own
# hostname (a UTS namespace), running its own slurmd (`slurmd -N NODE`); traffic goes only between the nodes
# and the host (no route out, no NAT). The controller, slurmdbd, a private MariaDB and a private munged run on
# the host. Everything is separate from slurm/cluster.sh's single-node cluster (own config directory, cluster
# name, ports, munge socket and key, database, state), so the two start and stop in any order and side by
# side. Clients find this cluster through SLURM_CONF, daemons through -f; the single-node cluster keeps
# /etc/slurm. Why each setting is what it is: slurm/README.md and ../shared/notes/slurm-test-cluster.md.
#
# Environment (defaults in brackets):
#   CONVIT_MN_STATE   state, config, logs, pids, munge and the MariaDB datadir [/var/tmp/convit-slurm-mn]
#   CONVIT_MN_NET     first three octets of the private /24: host .1, cvnode1 .11, cvnode2 .12 [10.231.77]
#   CONVIT_MN_PORTS   slurmctld, slurmd, slurmdbd and MariaDB ports [6827,6828,6829,3409]
# Must run as root (namespaces, /etc/hosts, daemons).
set -euo pipefail

STATE=${CONVIT_MN_STATE:-/var/tmp/convit-slurm-mn}
NET=${CONVIT_MN_NET:-10.231.77}
IFS=, read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT <<<"${CONVIT_MN_PORTS:-6827,6828,6829,3409}"
CLUSTER=convitmn
ETC=$STATE/etc
CONF=$ETC/slurm.conf
NODES=(cvnode1 cvnode2)
BRIDGE=cvmnbr0
HOST_ADDR=$NET.1
HOSTS_MARK="# convit-multinode (slurm/multinode.sh)"
MUNGE_DIR=$STATE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server iproute2)
DB_USER=slurm
DB_PASS=convit-slurm-mn-local  # a private database bound to 127.0.0.1 on a throw-away test machine
export SLURM_CONF=$CONF

LOG_TAG=multinode
# shellcheck source=slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

node_index() { local i; for i in "${!NODES[@]}"; do [[ ${NODES[$i]} == "$1" ]] && { echo $((i + 1)); return; }; done; return 1; }
node_addr() { echo "$NET.$((10 + $(node_index "$1")))"; }
node_ns() { echo "cvmn-$1"; }
node_veth() { echo "cvmn$(node_index "$1")"; }  # host side; the node side is 'mn0' inside its namespace
node_pidfile() { echo "$STATE/run/slurmd-$1.pid"; }

# ---------------------------------------------------------------------------------------------- network
hosts_lines() {
    local n
    for n in "${NODES[@]}"; do printf '%s\t%s\t%s\n' "$(node_addr "$n")" "$n" "$HOSTS_MARK"; done
}

# /etc/hosts is rewritten in place (never renamed over: in containers it is often a bind mount).
hosts_remove() {
    grep -qF "$HOSTS_MARK" /etc/hosts 2>/dev/null || return 0
    local tmp
    tmp=$(mktemp)
    grep -vF "$HOSTS_MARK" /etc/hosts >"$tmp" || true
    cat "$tmp" >/etc/hosts
    rm -f "$tmp"
}

hosts_add() {
    local want
    want=$(hosts_lines)
    [[ $(grep -F "$HOSTS_MARK" /etc/hosts 2>/dev/null || true) == "$want" ]] && return 0
    hosts_remove
    printf '%s\n' "$want" >>/etc/hosts
}

net_up() {
    # Refuse a subnet that something else on this machine already routes (not ours: our bridge carries it).
    local route
    route=$(ip -4 route show to match "$HOST_ADDR" 2>/dev/null | grep -v "dev $BRIDGE" | grep -v '^default' || true)
    [[ -z $route ]] || die "$NET.0/24 is already in use here ($route): set CONVIT_MN_NET to a free /24"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $BRIDGE ($HOST_ADDR/24)"
        ip link add "$BRIDGE" type bridge
    fi
    ip -4 addr show dev "$BRIDGE" | grep -q "inet $HOST_ADDR/" || ip addr add "$HOST_ADDR/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local n ns veth
    for n in "${NODES[@]}"; do
        ns=$(node_ns "$n") veth=$(node_veth "$n")
        [[ -e /run/netns/$ns ]] || { log "creating network namespace $ns"; ip netns add "$ns"; }
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip -n "$ns" link del mn0 2>/dev/null || true
            ip link add "$veth" type veth peer name mn0 netns "$ns"
        fi
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up
        ip -n "$ns" link set lo up
        ip -n "$ns" -4 addr show dev mn0 | grep -q "inet $(node_addr "$n")/" \
            || ip -n "$ns" addr add "$(node_addr "$n")/24" dev mn0
        ip -n "$ns" link set mn0 up
    done
    hosts_add
}

ns_pids() { ip netns pids "$1" 2>/dev/null || true; }

net_down() {
    local n ns pid
    for n in "${NODES[@]}"; do
        ns=$(node_ns "$n")
        if [[ -e /run/netns/$ns ]]; then
            for pid in $(ns_pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
            ip netns del "$ns"
        fi
        ip link del "$(node_veth "$n")" 2>/dev/null || true  # deleting the namespace may lag behind
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    hosts_remove
}

# ---------------------------------------------------------------------------------------------- config
write_config() {
    mkdir -p "$ETC" "$STATE"/{log,run,ctld,spool}
    local hw cpus mem controller=$(hostname -s) n lines=""
    # Every node sees this machine's CPUs (slurmd checks its node line against them); memory is halved
    # between the two so that the nodes together do not claim more than there is.
    hw=$(slurmd -C 2>/dev/null | head -n 1)
    [[ $hw == NodeName=* ]] || die "slurmd -C gave no node line"
    cpus=$(sed -E 's/.* (CPUs=[0-9]+ Boards=.*ThreadsPerCore=[0-9]+).*/\1/' <<<"$hw")
    mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
    for n in "${NODES[@]}"; do
        lines+="NodeName=$n NodeAddr=$(node_addr "$n") NodeHostname=$n $cpus RealMemory=$((mem / 2)) State=UNKNOWN"$'\n'
    done
    write_if_changed "$CONF" 644 <<EOF
# Written by slurm/multinode.sh: a 2-node test cluster. Do not edit; edit the script.
ClusterName=$CLUSTER
# The controller runs on this host (slurmctld checks the name) and the nodes reach it on the bridge.
SlurmctldHost=$controller($HOST_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Our own munged (its own socket and key): cluster.sh stopping its munged does not touch this cluster.
# Credentials expire after 10 s (default 120): a requeued job restarts in 10-15 s instead of about 2 min.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE/ctld
# Both slurmd share this file system: each keeps its own spool, pid and log file (%n = node name).
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
$(conf_tracking_and_scheduling)
# submitit requeues with 'scontrol requeue'; a job on a failed node is requeued; a node whose slurmd
# comes back returns to service by itself.
JobRequeue=1
ReturnToService=2
# A node that stops answering is DOWN after 10 s (default 300), so a dead node is noticed within a test.
SlurmdTimeout=10
KillWait=10
MinJobAge=300
InactiveLimit=0
# sacct (which submitit uses for job states) needs accounting: our own slurmdbd, reachable from the nodes.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST_ADDR
AccountingStoragePort=$DBD_PORT
# Connections to slurmdbd take their munge socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
${lines}PartitionName=multi Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
    write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF
# Written by slurm/multinode.sh.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=$HOST_ADDR
DbdPort=$DBD_PORT
$(conf_dbd_storage)
EOF
}

# ---------------------------------------------------------------------------------------------- daemons
munge_ok() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

start_munge() {
    if running "$MUNGE_DIR/munged.pid"; then return 0; fi
    # munged refuses a key, log, pid or socket whose parent directories are writable by anyone but root
    # or munge; our own key, so that this cluster does not depend on (or create) /etc/munge/munge.key.
    install -d -m 755 -o munge -g munge "$MUNGE_DIR"
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        log "creating $MUNGE_DIR/munge.key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_DIR/munge.key"
        else
            dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 400 "$MUNGE_DIR/munge.key"
    log "starting munged ($MUNGE_SOCKET)"
    runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
    wait_for 20 munged munge_ok
}

start_slurmctld() {
    if running "$STATE/run/slurmctld.pid"; then return 0; fi
    log "starting slurmctld (port $CTLD_PORT)"
    slurmctld -f "$CONF"
    wait_for 60 slurmctld scontrol ping
}

start_slurmd() {  # start_slurmd NODE: in the node's network namespace, under the node's own hostname
    local n=$1
    if running "$(node_pidfile "$n")"; then return 0; fi
    log "starting slurmd on $n ($(node_addr "$n"), namespace $(node_ns "$n"))"
    mkdir -p "$STATE/spool/$n"
    # nsenter, not 'ip netns exec': that remounts /sys for the namespace, which hides /sys/fs/cgroup, and
    # slurmd 22.05 refuses to start without it even with proctrack/linuxproc and task/none.
    nsenter --net="/run/netns/$(node_ns "$n")" -- unshare --uts -- /bin/sh -c \
        "hostname '$n' && exec slurmd -f '$CONF' -N '$n'"
}

nodes_ready() {
    local n state rc=0
    for n in "${NODES[@]}"; do
        state=$(sinfo -h -N -n "$n" -o %T 2>/dev/null | head -n 1)
        case $state in
            idle | mixed | allocated | completing) ;;
            down* | drain* | fail*)
                scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true
                rc=1 ;;
            *) rc=1 ;;
        esac
    done
    return $rc
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    mkdir -p "$STATE/log"
    chmod 755 "$STATE"
    local t0=$SECONDS n was_running=0
    install_packages
    running "$STATE/run/slurmctld.pid" && was_running=1
    write_config
    net_up
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    for n in "${NODES[@]}"; do start_slurmd "$n"; done
    if [[ $CONFIG_CHANGED == 1 && $was_running == 1 ]]; then
        log "slurm.conf changed: scontrol reconfigure"
        scontrol reconfigure
    fi
    wait_for 90 "both nodes idle in sinfo" nodes_ready
    log "ready in $((SECONDS - t0)) s: $(sinfo -h -N -o '%N %T %c CPUs' | paste -sd ' ' -) " \
        "(export SLURM_CONF=$CONF)"
}

cmd_kill_node() {  # what a power cut does: the link goes first, so the other node sees no FIN, then processes
    local n=${1:-} ns pid
    [[ -n $n ]] && node_index "$n" >/dev/null || die "kill-node NODE: NODE is one of ${NODES[*]}"
    ns=$(node_ns "$n")
    [[ -e /run/netns/$ns ]] || die "$n is not up (no namespace $ns)"
    ip link set "$(node_veth "$n")" down
    for pid in $(ns_pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$(node_pidfile "$n")"
    log "$n is dead: link down, every process in $ns killed ('$0 start' brings it back)"
}

cmd_stop() {
    local n
    for n in "${NODES[@]}"; do stop_pidfile "slurmd on $n" "$(node_pidfile "$n")"; done
    stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
    stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
    stop_pidfile mariadbd "$STATE/run/mariadbd.pid"
    stop_pidfile munged "$MUNGE_DIR/munged.pid"
    net_down  # kills what is left in the namespaces (job steps), removes them, the veths, the bridge, hosts
}

cmd_status() {
    local rc=0 name file n
    for name in munged mariadbd slurmdbd slurmctld "${NODES[@]}"; do
        case $name in
            munged) file=$MUNGE_DIR/munged.pid ;;
            cvnode*) file=$(node_pidfile "$name") ;;
            *) file=$STATE/run/$name.pid ;;
        esac
        [[ $name == cvnode* ]] && label="slurmd@$name" || label=$name
        if running "$file"; then
            printf '%-16s running (pid %s)\n' "$label" "$(pid_of "$file")"
        else
            printf '%-16s stopped\n' "$label"
            rc=1
        fi
    done
    for n in "${NODES[@]}"; do
        [[ -e /run/netns/$(node_ns "$n") ]] || { printf 'namespace %s missing\n' "$(node_ns "$n")"; rc=1; }
    done
    if [[ $rc == 0 ]]; then sinfo -N -o '%N %P %T %c %m' || rc=1; fi
    return $rc
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    kill-node) cmd_kill_node "${2:-}" ;;
    conf) echo "$CONF" ;;
    *) echo "usage: $0 start|stop|status|restart|kill-node NODE|conf" >&2; exit 2 ;;
esac
