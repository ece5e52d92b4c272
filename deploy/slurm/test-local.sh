#!/usr/bin/env bash
# Runs tessera-array.sbatch on a throw-away single-node Slurm cluster on this machine
# (munged + slurmctld + slurmd from Debian 12, all state in a temporary folder, non-default
# ports) and checks that every slide of a 3-slide manifest has its results.
#
#   deploy/slurm/test-local.sh [TESSERA_BINARY]
#
# Needs root (slurmd runs jobs as the submitting user; here root). Installs slurmctld, slurmd,
# slurm-client and munge with apt when missing. No cgroups (proctrack/linuxproc, task/none),
# so it runs in containers without cgroup delegation. Takes about 15 s once installed;
# scripts/check-deploy.sh runs it (TESSERA_CHECK_SLURM=0 skips it). Ports 16817/16818 must be
# free. Set KEEP=1 to keep the temporary folder for a look at the logs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:-}
if [ -z "$binary" ]; then
  for candidate in "$root/.build-deploy/release/tessera" "$root/.build/release/tessera" "$root/.build/debug/tessera"; do
    if [ -x "$candidate" ]; then binary=$candidate; break; fi
  done
fi
if [ -z "$binary" ] || [ ! -x "$binary" ]; then echo "test-local: build tessera first or pass its path" >&2; exit 1; fi
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
[ "$(id -u)" -eq 0 ] || { echo "test-local: run as root (slurmd must start jobs)" >&2; exit 1; }

missing=()
for package in slurmctld slurmd slurm-client munge; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-local: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/tessera-slurm.XXXXXX)
chmod 0755 "$work"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  if [ $status -ne 0 ]; then
    for log in "$work"/log/*.log; do echo "--- $log"; tail -n 20 "$log"; done 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "test-local: kept $work"; else rm -rf "$work"; fi
  exit $status
}
trap cleanup EXIT
mkdir -p "$work"/{log,state,spool,munge,shared/results,slides,tmp}

# munge with its own key and socket, so that a munged already running here is left alone.
key="$work/munge/munge.key"
if command -v mungekey >/dev/null 2>&1; then
  mungekey --create --keyfile="$key" --bits=1024
else
  dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
fi
chmod 0400 "$key"
socket="$work/munge/munge.socket"
munged --force --key-file="$key" --socket="$socket" --pid-file="$work/munge/munged.pid" \
  --seed-file="$work/munge/seed" --foreground 2>"$work/log/munged.log" &
pids+=($!)
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "test-local: munged did not start" >&2; exit 1; }

host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
conf="$work/slurm.conf"
cat > "$conf" <<CONF
ClusterName=tessera-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
# No cgroups: containers rarely delegate them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf"
slurmctld -D -i -f "$conf" >"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$conf" >"$work/log/slurmd.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
  case $state in idle|mixed|allocated) break ;; esac
  sleep 0.2
done
echo "test-local: Slurm $(sinfo -V | awk '{print $2}') up, node $host: ${state:-unknown}"
case $state in idle|mixed|allocated) ;; *) echo "test-local: the node did not come up" >&2; exit 1 ;; esac

# Three small slides, one of them with spaces in its name, listed with a comment and a blank line.
"$binary" sample-slide "$work/slides/a.tif" --width 2400 --height 1800 >/dev/null
"$binary" sample-slide "$work/slides/b.tif" --width 2000 --height 2000 >/dev/null
"$binary" sample-slide "$work/slides/slide c.tif" --width 1800 --height 1600 >/dev/null
manifest="$work/slides.txt"
printf '# three synthetic slides\n%s\n\n%s\n%s\n' "$work/slides/a.tif" "$work/slides/b.tif" "$work/slides/slide c.tif" > "$manifest"

results="$work/shared/results"
job=$(cd "$work" && TESSERA_BIN="$binary" TESSERA_SCRATCH="$work/tmp" \
      sbatch --parsable --array=1-3 --cpus-per-task=1 --mem=1G \
      --output="$work/log/task-%A_%a.log" "$here/tessera-array.sbatch" "$manifest" "$results")
echo "test-local: submitted array job $job"
deadline=$((SECONDS + 300))
while squeue -h -j "$job" 2>/dev/null | grep -q .; do
  [ $SECONDS -lt $deadline ] || { echo "test-local: the array did not finish in 300 s" >&2; squeue -j "$job" >&2; exit 1; }
  sleep 1
done

failed=0
for name in a.tif b.tif slide_c.tif; do
  for file in summary.json tiles.csv annotations.geojson heatmap.png; do
    if [ ! -s "$results/$name/$file" ]; then echo "test-local: missing $results/$name/$file" >&2; failed=1; fi
  done
done
for log in "$work"/log/task-*.log; do echo "--- $(basename "$log")"; cat "$log"; done
if [ "$(ls -A "$work/tmp")" ]; then echo "test-local: task scratch folders were left behind" >&2; failed=1; fi
[ $failed -eq 0 ] || exit 1

# Submitting again skips slides that already have results.
again=$(cd "$work" && TESSERA_BIN="$binary" TESSERA_SCRATCH="$work/tmp" \
        sbatch --parsable --array=1-3 --cpus-per-task=1 --mem=1G \
        --output="$work/log/again-%A_%a.log" "$here/tessera-array.sbatch" "$manifest" "$results")
deadline=$((SECONDS + 120))
while squeue -h -j "$again" 2>/dev/null | grep -q .; do
  [ $SECONDS -lt $deadline ] || { echo "test-local: the second array did not finish" >&2; exit 1; }
  sleep 1
done
skipped=$(cat "$work"/log/again-*.log | grep -c "already done; skipping" || true)
[ "$skipped" -eq 3 ] || { echo "test-local: resubmission redid $((3 - skipped)) slides" >&2; exit 1; }
echo "test-local: 3 array tasks wrote their results to the shared folder; a resubmission skipped all 3"
echo "1 passed, 0 failed"
