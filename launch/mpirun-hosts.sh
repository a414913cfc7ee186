#!/usr/bin/env bash
# Data-parallel wave-dist over a list of hosts with Open MPI's mpirun (ssh between hosts), one
# rank per GPU (or per slot on CPU hosts).
#
#   launch/mpirun-hosts.sh [--dry-run] [--cpu] HOSTFILE CONFIG [wave-dist train arguments]
#
# HOSTFILE: one host per line, `NAME slots=N` (N = GPUs of that host, or ranks for --cpu);
# blank lines and `#` comments are ignored. Every host needs the same wave-dist binary path,
# the config at the same path, and passwordless ssh from this host.
#
# GPUs: rank r runs on cuda:<local rank> with NCCL (bootstrapped through MPI), ranks filling
# each host's slots in turn (--map-by slot), with no CPU binding (the loader and libtorch
# threads share the host's cores). --cpu: the same ranks with MPI collectives on CPU tensors.
#
# Environment forwarded to every rank (by name: values never appear on the command line):
# object-store credentials and endpoints (AWS_*, GOOGLE_*, AZURE_*, AZURITE_*), wave-dist's own
# (WAVE_*), logging (WAVE_LOG, RUST_LOG), NCCL_* and LD_LIBRARY_PATH, when set here.
# WAVE_DIST: the binary on the hosts (default wave-dist on PATH).
set -euo pipefail

die() { echo "mpirun-hosts.sh: error: $*" >&2; exit 1; }
DRY=0 DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --cpu) DEVICE=cpu ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) break ;;
  esac
  shift
done
[ $# -ge 2 ] || die "usage: $0 [--dry-run] [--cpu] HOSTFILE CONFIG [wave-dist train arguments]"
HOSTFILE="$1" CONFIG="$2"; shift 2
[ -f "$HOSTFILE" ] || die "hostfile $HOSTFILE does not exist"
[ -f "$CONFIG" ] || die "config $CONFIG does not exist"

hosts=() total=0 per_host=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line="${line%%#*}"
  [ -z "${line// }" ] && continue
  read -r name spec extra <<<"$line"
  [[ "${spec:-}" =~ ^slots=([0-9]+)$ ]] && [ -z "${extra:-}" ] && [ "${BASH_REMATCH[1]}" -ge 1 ] ||
    die "$HOSTFILE line $lineno: expected \`HOST slots=N\` with N >= 1, got '$line'"
  hosts+=("$name"); per_host+=("${BASH_REMATCH[1]}"); total=$((total + BASH_REMATCH[1]))
done < "$HOSTFILE"
[ ${#hosts[@]} -gt 0 ] || die "$HOSTFILE lists no hosts"

forward=()
while IFS='=' read -r name _; do
  case "$name" in
    AWS_*|GOOGLE_*|AZURE_*|AZURITE_*|WAVE_*|NCCL_*|RUST_LOG|LD_LIBRARY_PATH) forward+=(-x "$name") ;;
  esac
done < <(env | LC_ALL=C sort)

if [ "$DEVICE" = cuda ]; then backend=nccl; else backend=mpi; fi
# rtc_hwloc_vmhole none: Open MPI 4.1's remote daemons otherwise copy hwloc's topology into a
# shared-memory segment at their largest free address range, a write that now and then segfaults
# the daemon before any rank starts; the sharing only saves memory.
cmd=(mpirun -n "$total" --hostfile "$HOSTFILE" --map-by slot --bind-to none --mca rtc_hwloc_vmhole none "${forward[@]}"
     "${WAVE_DIST:-wave-dist}" train --config "$CONFIG" --device "$DEVICE" --backend "$backend" "$@")
summary=""
for i in "${!hosts[@]}"; do summary+="${hosts[$i]}:${per_host[$i]} "; done
echo "wave-dist over mpirun: $total ranks on ${#hosts[@]} host(s) (${summary% }), $DEVICE, backend $backend"
if [ "$DRY" = 1 ]; then
  echo "would run: ${cmd[*]}"
  exit 0
fi
exec "${cmd[@]}"
