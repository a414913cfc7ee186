#!/usr/bin/env bash
# Every GPU check in one go (DESIGN §6), on a machine with one GPU, a CUDA 13 driver and Python
# torch 2.11.0 installed but no Rust toolchain: only binaries travel.
#
#   launch/gpu-check.sh --build     # here, with cargo: builds the binaries into target/gpu-check/
#   launch/gpu-check.sh             # there: runs the checks, prints a table last
#
# The binaries are looked for in $WAVE_GPU_BIN_DIR (default target/gpu-check, which travels as an
# ignored path):
#   comm-check      wave-comm's example built with `nccl` only (no libmpi needed at run time)
#   comm-check-mpi  the same with `mpi` too, for the host-staged MPI path (needs mpirun there)
# The Python whose torch supplies libtorch and the NVIDIA libraries: $PYTHON (default python3).
# Logs go to $OUT/gpu-check (or /tmp/gpu-check). Exit status: 0 when nothing failed (SKIP is not
# a failure). To add a check, call run_check NAME LIMIT_S DETAIL_REGEX COMMAND... before `table`.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${WAVE_GPU_BIN_DIR:-$ROOT/target/gpu-check}"

if [ "${1:-}" = "--build" ]; then
  set -e
  # shellcheck source=/dev/null
  source "$ROOT/launch/env.sh"
  mkdir -p "$BIN_DIR"
  cd "$ROOT"
  cargo build --release -p wave-comm --no-default-features --features nccl --example comm-check
  cp "$CARGO_TARGET_DIR/release/examples/comm-check" "$BIN_DIR/comm-check"
  cargo build --release -p wave-comm --features mpi,nccl --example comm-check
  cp "$CARGO_TARGET_DIR/release/examples/comm-check" "$BIN_DIR/comm-check-mpi"
  ls -l "$BIN_DIR"
  exit 0
fi

LOGS="${OUT:-/tmp}/gpu-check"
mkdir -p "$LOGS"
RESULTS=()
FAILED=0
record() { RESULTS+=("$1|$2|$3"); [ "$2" = FAIL ] && FAILED=1; echo "== $1: $2 $3"; }
table() {
  printf '\n%-28s %-5s %s\n' check result detail
  printf '%-28s %-5s %s\n' ---------------------------- ----- ------------------------------------------
  for row in "${RESULTS[@]}"; do IFS='|' read -r name res detail <<<"$row"; printf '%-28s %-5s %s\n' "$name" "$res" "$detail"; done
}
fail_now() { record "$1" FAIL "$2"; table; exit 1; }

# 1. A GPU and its driver.
command -v nvidia-smi >/dev/null || fail_now gpu "nvidia-smi not found: no NVIDIA driver on this machine"
GPU="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || fail_now gpu "no GPU visible to nvidia-smi: $GPU"
record gpu PASS "$GPU"

# 2. libtorch and the NVIDIA libraries of the installed Python torch.
PY="${PYTHON:-python3}"
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>"$LOGS/python.log")" \
  || fail_now torch "python torch not importable with $PY (see $LOGS/python.log)"
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
SITE="$(dirname "$(dirname "$TORCH_LIB")")"
LIBS="$TORCH_LIB"
for d in "$SITE"/nvidia/*/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
# cudarc loads `libnccl.so`; pip's nvidia-nccl ships only libnccl.so.2 (DESIGN §3).
SHIM="$(mktemp -d)"
NCCL_SO="$(find "$SITE/nvidia" -name 'libnccl.so*' 2>/dev/null | head -1)"
[ -n "$NCCL_SO" ] && ln -sf "$NCCL_SO" "$SHIM/libnccl.so"
export LD_LIBRARY_PATH="$SHIM:$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
record torch PASS "$TORCH_VERSION at $TORCH_LIB; nccl ${NCCL_SO:-missing}"

[ -x "$BIN_DIR/comm-check" ] || fail_now binaries "$BIN_DIR/comm-check missing: build it with launch/gpu-check.sh --build and carry target/gpu-check"
if ldd "$BIN_DIR/comm-check" | grep -q 'not found'; then
  fail_now binaries "unresolved libraries: $(ldd "$BIN_DIR/comm-check" | grep 'not found' | tr -s ' \n\t' ' ')"
fi

# Runs a check with a time limit; its log is kept, its last matching line becomes the detail.
run_check() { # name limit_s detail_pattern command...
  local name="$1" limit="$2" pattern="$3"; shift 3
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  local detail; detail="$(grep -E "$pattern" "$LOGS/$name.log" | tail -1 | sed 's/^rank [0-9/]*: //')"
  if [ $rc -eq 0 ]; then record "$name" PASS "$detail"
  else record "$name" FAIL "exit $rc; $(grep -E '^comm-check: error|^wave-comm:' "$LOGS/$name.log" | head -1) (log $LOGS/$name.log)"; fi
}

# 3. CUDA detected, NCCL all-reduce at world size 1 on a CUDA tensor checked against the CPU
#    result (one GPU cannot host two NCCL ranks), with a 64 MB timing.
run_check cuda-nccl-world1 180 'all_reduce 64 MB' \
  "$BIN_DIR/comm-check" collectives --backend nccl --device cuda --bench-mb 64 --timeout 60

# 4. Two MPI ranks sharing the GPU: CUDA gradients staged through host memory.
if ! command -v mpirun >/dev/null; then
  record mpi-staged-2-ranks SKIP "mpirun not installed here"
elif [ ! -x "$BIN_DIR/comm-check-mpi" ]; then
  record mpi-staged-2-ranks SKIP "$BIN_DIR/comm-check-mpi missing"
elif ldd "$BIN_DIR/comm-check-mpi" | grep -q 'not found'; then
  record mpi-staged-2-ranks SKIP "unresolved: $(ldd "$BIN_DIR/comm-check-mpi" | grep 'not found' | tr -s ' \n\t' ' ')"
else
  run_check mpi-staged-2-ranks 240 'all_reduce 64 MB' \
    env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun --oversubscribe -x LD_LIBRARY_PATH -n 2 \
    "$BIN_DIR/comm-check-mpi" collectives --backend mpi --device cuda --bench-mb 64 --timeout 60
fi

rm -rf "$SHIM"
table
exit $FAILED
