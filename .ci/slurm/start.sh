#!/usr/bin/env bash
# Configure and start a single-node SLURM cluster on this machine (run as root).
#
# Needs Debian's `slurm-wlm` and `munge` packages (installed by .ci/run); installs
# nothing itself. Safe to run again: daemons already running with the same
# configuration are left alone; a changed configuration restarts them.
#
# The machine has no GPU, but the pipeline's training jobs ask for one
# (Snakemake `gpu=1` -> sbatch `--gpus=1`). The node therefore advertises a fake
# GRES `gpu:2` backed by placeholder device files (see FAKE_GPU_DIR), which cons_tres
# schedules like any other counter. Jobs get no CUDA device from it; training
# falls back to CPU.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "start.sh: must run as root" >&2; exit 1; }
for exe in munged slurmctld slurmd sinfo sbatch; do
    command -v "$exe" >/dev/null || { echo "start.sh: '$exe' not found; apt-get install slurm-wlm munge" >&2; exit 1; }
done

NODE=$(hostname -s)
CPUS=$(nproc)
# Real topology as slurmd sees it (Boards/Sockets/Cores/Threads), so slurmd does
# not complain that the configured layout differs from the hardware.
TOPOLOGY=$(slurmd -C | head -1 | grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*')
# RealMemory above what slurmd measures marks the node invalid; keep a margin.
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 512 ))
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm
# slurmd 22.05 drops GPUs without File= ("Removing file-less GPU ... from final
# GRES list", gres_gpu.c), so a count-only gpu GRES cannot register. Two
# placeholder character devices (clones of /dev/null, 1:3) stand in; with
# TaskPlugin=task/none and no cgroups nothing opens them, SLURM only derives
# CUDA_VISIBLE_DEVICES from them.
FAKE_GPU_DIR=/var/lib/slurm/fake-gpu

# --- munge: shared key + daemon ----------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || { echo "start.sh: munged did not start" >&2; exit 1; }
fi

# --- configuration -----------------------------------------------------------
install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$FAKE_GPU_DIR"
for i in 0 1; do
    [[ -c $FAKE_GPU_DIR/gpu$i ]] || { rm -f "$FAKE_GPU_DIR/gpu$i"; mknod -m 0666 "$FAKE_GPU_DIR/gpu$i" c 1 3; }
done
new_conf=$(mktemp)
new_gres=$(mktemp)
trap 'rm -f "$new_conf" "$new_gres"' EXIT
cat >"$new_conf" <<EOF
# Single-node test cluster written by .ci/slurm/start.sh
ClusterName=cnnlab
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${STATE_DIR}/slurmctld
SlurmdSpoolDir=${STATE_DIR}/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
# No cgroups in containers: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No accounting database; job status comes from squeue, so keep finished
# jobs visible for an hour (MinJobAge) instead of the default 5 minutes.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
# cons_tres is needed for --gpus; memory is a consumable, 1 GiB/CPU by default
# so that jobs without --mem do not take the whole node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
GresTypes=gpu
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} ${TOPOLOGY} RealMemory=${MEM_MB} Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$new_gres" <<EOF
# Placeholder GPUs: /dev/null clones stand in for device nodes (see start.sh).
AutoDetect=off
NodeName=${NODE} Name=gpu File=${FAKE_GPU_DIR}/gpu[0-1]
EOF

changed=0
cmp -s "$new_conf" "$CONF_DIR/slurm.conf" || changed=1
cmp -s "$new_gres" "$CONF_DIR/gres.conf" || changed=1
install -m 0644 "$new_conf" "$CONF_DIR/slurm.conf"
install -m 0644 "$new_gres" "$CONF_DIR/gres.conf"

# --- daemons -----------------------------------------------------------------
running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if (( changed )); then
    "$(dirname "$0")/stop.sh" >/dev/null 2>&1 || true
fi
running /run/slurmctld.pid || slurmctld
running /run/slurmd.pid || slurmd

# --- wait for the node -------------------------------------------------------
deadline=$(( SECONDS + 60 ))
state=""
while (( SECONDS < deadline )); do
    state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1 || true)
    case $state in
        idle|mixed|allocated) break ;;
        down*|drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
case $state in
    idle|mixed|allocated)
        echo "SLURM up: node $NODE ($CPUS CPUs, ${MEM_MB} MB, gres gpu:2) is $state" ;;
    *)
        echo "start.sh: node $NODE not up after 60 s (state: '${state:-none}')" >&2
        echo "--- tail $LOG_DIR/slurmctld.log" >&2; tail -n 20 "$LOG_DIR/slurmctld.log" >&2 || true
        echo "--- tail $LOG_DIR/slurmd.log" >&2; tail -n 20 "$LOG_DIR/slurmd.log" >&2 || true
        exit 1 ;;
esac
