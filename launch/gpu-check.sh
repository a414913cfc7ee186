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
#   wave-dist       the trainer built with `nccl` and without `mpi` (runs without an MPI install)
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
  cargo build --release -p wave-dist --no-default-features --features nccl
  cp "$CARGO_TARGET_DIR/release/wave-dist" "$BIN_DIR/wave-dist"
  # Put the default (MPI) build back where the tests and scripts expect it.
  cargo build --release -p wave-dist
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

# 5. Single-GPU training on a synthetic labelled corpus made here (no data set travels) and
#    tokenized by wave-dist itself: samples/s and peak GPU memory in fp32, TF32 (libtorch reads
#    TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 at start-up) and bf16 (train.precision); checks that fail
#    when a CUDA step differs from a CPU step, or bf16/TF32 drift from fp32 over 200 steps.
if [ ! -x "$BIN_DIR/wave-dist" ]; then
  record gpu-train-steps SKIP "$BIN_DIR/wave-dist missing"
else
  WORK="$LOGS/train-work"
  rm -rf "$WORK" && mkdir -p "$WORK"
  "$PY" - "$WORK/corpus.jsonl" <<'PY'
import json, random, sys
random.seed(0)
words = [f"w{i}" for i in range(4000)]
with open(sys.argv[1], "w") as f:
    for i in range(8000):
        label = i % 2
        topical = words[label * 2000:(label + 1) * 2000]
        text = " ".join(random.choice(topical if random.random() < 0.3 else words) for _ in range(random.randint(60, 250)))
        f.write(json.dumps({"text": text, "label": label}) + "\n")
PY
  if "$BIN_DIR/wave-dist" tokenizer train --kind wordpiece --vocab-size 6000 --input "$WORK/corpus.jsonl" \
       --out "$WORK/tokenizer.json" >"$LOGS/gpu-train-prepare.log" 2>&1 &&
     "$BIN_DIR/wave-dist" data prepare --format jsonl --input "$WORK/corpus.jsonl" --out "$WORK/data" \
       --tokenizer "$WORK/tokenizer.json" >>"$LOGS/gpu-train-prepare.log" 2>&1; then
    # Training on the GPU: NAME LIMIT_S ENV... -- --set overrides...; samples/s and peak memory.
    train_gpu() {
      local name="$1" limit="$2"; shift 2
      local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
      ( while sleep 0.2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; done ) >"$LOGS/$name-memory.txt" 2>/dev/null &
      local poll=$!
      run_check "$name" "$limit" '"event":"summary"' env "${envs[@]}" \
        "$BIN_DIR/wave-dist" train --config "$ROOT/configs/imdb.toml" \
        --set "data.uri=\"$WORK/data\"" --set 'data.tokenizer=""' --set train.eval_max_batches=5 \
        --set checkpoint.every_steps=0 --set "train.run_dir=\"$WORK/$name\"" "$@"
      kill "$poll" 2>/dev/null
      local peak sps
      peak="$(sort -n "$LOGS/$name-memory.txt" | tail -1)"
      sps="$(grep -o '"train_samples_per_s":[0-9.]*' "$LOGS/$name.log" | cut -d: -f2)"
      record "$name-speed" INFO "${sps:-?} samples/s, peak GPU memory ${peak:-?} MiB (nvidia-smi, whole device)"
    }
    # Compares two runs' metrics.jsonl losses: mode `first2` (steps 1 and 2 within REL) or `final`
    # (the last logged loss within REL); prints the figures, exits 1 when they differ more.
    cat >"$WORK/compare_losses.py" <<'PY'
import json, sys
a, b, mode, rel = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def losses(d):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(d + "/metrics.jsonl")) if r["kind"] == "train"]
la, lb = losses(a), losses(b)
pairs = list(zip(la, lb))[:2] if mode == "first2" else [(la[-1], lb[-1])]
worst = max(abs(x[1] - y[1]) / abs(x[1]) for x, y in pairs)
print("compared " + ", ".join(f"step {x[0]}: {x[1]:.6f} vs {y[1]:.6f}" for x, y in pairs) + f"; worst relative difference {worst:.2e} (limit {rel})")
sys.exit(0 if worst <= rel and len(pairs) > 0 else 1)
PY
    PAPER=(--set data.max_length=256 --set train.max_steps=60 --set train.log_every_steps=10)
    # 5a. The paper's size (d = 768, length 256, batch 64) in fp32, TF32 and bf16.
    train_gpu gpu-train-fp32 300 WAVE_LOG=info -- --device cuda "${PAPER[@]}"
    train_gpu gpu-train-tf32 300 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 -- --device cuda "${PAPER[@]}"
    train_gpu gpu-train-bf16 300 WAVE_LOG=info -- --device cuda "${PAPER[@]}" --set 'train.precision="bf16"'
    # 5b. One CUDA step equals one CPU step: the loss before any update (forward) and after one
    #     (backward, AdamW) agree within 1e-4, dropout on (its masks are keyed, not drawn).
    SMALL=(--set model.d_model=256 --set data.max_length=128 --set train.log_every_steps=1)
    #     Both start from the same weights (random init differs between the CPU and CUDA
    #     generators): those of a one-step CPU run, loaded through train.init_from.
    train_gpu step-init 300 WAVE_LOG=info -- --device cpu "${SMALL[@]}" --set train.max_steps=1
    FROM=(--set "train.init_from=\"$WORK/step-init\"" --set train.max_steps=2)
    train_gpu step-cuda 300 WAVE_LOG=info -- --device cuda "${SMALL[@]}" "${FROM[@]}"
    train_gpu step-cpu 300 WAVE_LOG=info -- --device cpu "${SMALL[@]}" "${FROM[@]}"
    run_check cuda-step-equals-cpu 60 'compared' "$PY" "$WORK/compare_losses.py" "$WORK/step-cpu" "$WORK/step-cuda" first2 1e-4
    # 5c. bf16 over 200 steps stays within 3% of fp32 (the last logged loss), and TF32 within 1%.
    train_gpu long-fp32 600 WAVE_LOG=info -- --device cuda "${SMALL[@]}" --set train.max_steps=200 --set train.log_every_steps=20
    train_gpu long-bf16 600 WAVE_LOG=info -- --device cuda "${SMALL[@]}" --set train.max_steps=200 --set train.log_every_steps=20 --set 'train.precision="bf16"'
    train_gpu long-tf32 600 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 -- --device cuda "${SMALL[@]}" --set train.max_steps=200 --set train.log_every_steps=20
    run_check bf16-200-steps-vs-fp32 60 'compared' "$PY" "$WORK/compare_losses.py" "$WORK/long-fp32" "$WORK/long-bf16" final 0.03
    run_check tf32-200-steps-vs-fp32 60 'compared' "$PY" "$WORK/compare_losses.py" "$WORK/long-fp32" "$WORK/long-tf32" final 0.01
  else
    record gpu-train-steps FAIL "preparing the synthetic corpus failed (log $LOGS/gpu-train-prepare.log)"
  fi
fi

rm -rf "$SHIM"
table
exit $FAILED
