#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the real-cluster tests and to try the `slurm` launcher preset:
# munge, MariaDB + slurmdbd (accounting, so submitit sees job states), slurmctld and slurmd on localhost, no
# cgroups. Needs root (Debian/Ubuntu; installs its packages with apt when missing). Idempotent: a second start
# finds the cluster up and returns. State, logs and config live in $FMI_SLURM_DIR (default /tmp/fmi-slurm);
# /etc/slurm/slurm.conf points at that config so sbatch, squeue and sacct need no SLURM_CONF.
#   cluster/start.sh && sinfo && cluster/stop.sh
set -euo pipefail
STATE=${FMI_SLURM_DIR:-/tmp/fmi-slurm}
DB_PORT=${FMI_SLURM_DB_PORT:-3316}
CLUSTER=fmi
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (the daemons run as root, without cgroups)"
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll every 0.2 s
    local until=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $until ] || die "$what did not come up in time (logs in $STATE/log)"
        sleep 0.2
    done
}

if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid" && alive "$STATE/run/slurmdbd.pid" \
    && sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    say "already up ($STATE)"
    exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} yourself"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi

mkdir -p "$STATE"/{run,log,ctld,spool,db}
chmod 755 "$STATE"

# munge: one key for every daemon and client on this host.
[ -s /etc/munge/munge.key ] || { mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none; }
chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force
    wait_for 10 munged sh -c 'munge -n | unmunge'
fi

# MariaDB for slurmdbd, its data in $STATE/db, on 127.0.0.1:$DB_PORT (never the system's own server).
if [ ! -d "$STATE/db/mysql" ]; then
    mariadb-install-db --user=root --datadir="$STATE/db" --auth-root-authentication-method=socket \
        --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed ($STATE/log)"
fi
if ! alive "$STATE/run/mariadb.pid"; then
    mariadbd --user=root --datadir="$STATE/db" --socket="$STATE/run/mariadb.sock" --port="$DB_PORT" \
        --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$STATE/run/mariadb.pid" \
        --log-error="$STATE/log/mariadb.log" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --skip-log-bin &
    disown
fi
wait_for 30 MariaDB mariadb --socket="$STATE/run/mariadb.sock" -e 'select 1'
mariadb --socket="$STATE/run/mariadb.sock" -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;"

read -r cpus memory < <(slurmd -C | awk '/NodeName/ {for (i = 1; i <= NF; i++) {split($i, kv, "=");
    if (kv[1] == "CPUs") c = kv[2]; if (kv[1] == "RealMemory") m = kv[2]}} END {print c, m}')
cat >"$STATE/slurmdbd.conf" <<EOF
DbdHost=localhost
SlurmUser=root
AuthType=auth/munge
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
chmod 600 "$STATE/slurmdbd.conf"
cat >"$STATE/slurm.conf" <<EOF
# written by cluster/start.sh: one node, no cgroups, accounting through slurmdbd
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerParameters=sched_interval=2,bf_interval=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
DefMemPerCPU=1024
MinJobAge=300
KillWait=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$STATE/slurm.conf
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" != "$SLURM_CONF" ]; then
    [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ] \
        || die "/etc/slurm/slurm.conf is someone else's: not touching it (stop that cluster first)"
    mkdir -p /etc/slurm && ln -sfn "$SLURM_CONF" /etc/slurm/slurm.conf
fi

alive "$STATE/run/slurmdbd.pid" || slurmdbd 2>>"$STATE/log/slurmdbd.log" \
    || die "slurmdbd did not start ($STATE/log)"
wait_for 20 slurmdbd sacctmgr -n list cluster
sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
alive "$STATE/run/slurmctld.pid" || slurmctld -f "$SLURM_CONF" 2>>"$STATE/log/slurmctld.log" \
    || die "slurmctld did not start ($STATE/log)"
alive "$STATE/run/slurmd.pid" || slurmd -f "$SLURM_CONF" -N localhost 2>>"$STATE/log/slurmd.log" \
    || die "slurmd did not start ($STATE/log)"
wait_for 30 "the node" sh -c "sinfo -h -o %t | grep -qE '^(idle|mix|alloc)'"
scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
say "up: $(sinfo -h -o '%P %D %t %c CPUs %m MB') (state in $STATE)"
