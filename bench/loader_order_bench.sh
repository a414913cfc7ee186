#!/usr/bin/env bash
# Loader throughput of the block-shuffled training order, side by side with the loader before it
# (built from commit $BASE: whole row groups permuted, windows of 16,384 rows), on IMDB (raw text,
# tokenized on the fly) and Gutenberg shard 00 packed into 128-token rows (pre-tokenized, so
# reading and decoding dominate). Both datasets are prepared twice: by $BASE's prepare (large data
# pages, source order) and by this tree's (32-row pages with an offset index, shuffled). Runs are
# interleaved; batch 64, max length 128, 1 tokenizer thread, training order (shuffled).
# Writes bench/results/loader_order.{jsonl,md}.
#
#   bench/loader_order_bench.sh        # env: SHARED (../shared/data), BASE (8d83c65), SECONDS_PER_RUN (8), REPS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$(cd .. && pwd)/shared/data}
BASE=${BASE:-8d83c65}
SECS=${SECONDS_PER_RUN:-8}
REPS=${REPS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME}/.cache/wave-dist/target}
TOK="$SHARED/tokenizers/bert-base-uncased/tokenizer.json"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

build() { # $1 = source tree, $2 = where to put the two example binaries
  (cd "$1" && cargo build --release -q -p wave-data --example loader_bench --example bench_prepare)
  mkdir -p "$2"
  cp "$CARGO_TARGET_DIR/release/examples/loader_bench" "$CARGO_TARGET_DIR/release/examples/bench_prepare" "$2/"
}
mkdir -p "$WORK/src-before"
git archive "$BASE" | tar -x -C "$WORK/src-before"
build "$WORK/src-before" "$WORK/before"
build "$ROOT" "$WORK/after"
"$WORK/before/bench_prepare" "$SHARED" "$WORK/data-before" "$TOK" > /dev/null
"$WORK/after/bench_prepare" "$SHARED" "$WORK/data-after" "$TOK" > /dev/null

OUT=bench/results/loader_order.jsonl
: > "$OUT"
run() { # loader, dataset, data, extra flags...
  local loader=$1 dataset=$2 data=$3; shift 3
  local tok=$TOK
  [ "$data" = gutenberg ] && tok=""
  local r
  r=$("$WORK/$loader/loader_bench" --uri "$WORK/data-$dataset/$data" --tokenizer "$tok" --max-length 128 \
      --batch 64 --threads 1 --seconds "$SECS" --shuffle true "$@")
  echo "{\"loader\":\"$loader\",\"dataset\":\"$dataset\",\"data\":\"$data\",\"flags\":\"$*\",\"result\":$r}" | tee -a "$OUT"
}
for rep in $(seq "$REPS"); do
  for data in imdb gutenberg; do
    run before before "$data"
    run after before "$data"
    run after after "$data"
    run after after "$data" --shuffle-block 1024 --shuffle-window 16384
  done
done

python3 - "$OUT" bench/results/loader_order.md "$SECS" "$REPS" "$BASE" <<'PYEOF'
import json, os, sys
from statistics import mean
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def sps(loader, dataset, data, flags=""):
    v = [r["result"]["samples_per_s"] for r in rows
         if (r["loader"], r["dataset"], r["data"], r["flags"]) == (loader, dataset, data, flags)]
    return mean(v), min(v), max(v)
md = ["# Loader throughput: block-shuffled training order vs the order before it", "",
      f"Command: `bench/loader_order_bench.sh` (SECONDS_PER_RUN={sys.argv[3]}, REPS={sys.argv[4]}, BASE={sys.argv[5]}), "
      f"runs interleaved on one machine ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end: "
      "other builds and tests share these cores, so single figures are noisy; compare within a row). "
      "Training order (shuffled), batch 64, max length 128, 1 tokenizer thread.",
      "IMDB: 25,000 raw reviews, tokenized on the fly. Gutenberg: shard 00 packed into 128-token rows "
      "(240,140 rows, pre-tokenized: reading and decoding dominate).",
      "`before` = the loader and prepare of the base commit (whole row groups permuted, windows of "
      "16,384 rows; shards with large data pages); `after` = this tree (32-row blocks, windows of "
      "32,768 rows; shards with 32-row pages and an offset index). Samples/s, mean (min–max) over reps.", "",
      "| data | loader / dataset | order | samples/s | vs before |", "|---|---|---|---|---|"]
for data in ["imdb", "gutenberg"]:
    ref = sps("before", "before", data)[0]
    for loader, dataset, flags, order in [
        ("before", "before", "", "row groups, window 16384"),
        ("after", "before", "", "32-row blocks, window 32768"),
        ("after", "after", "", "32-row blocks, window 32768"),
        ("after", "after", "--shuffle-block 1024 --shuffle-window 16384", "row groups, window 16384"),
    ]:
        m, lo, hi = sps(loader, dataset, data, flags)
        md.append(f"| {data} | {loader} / {dataset} | {order} | {m:.0f} ({lo:.0f}–{hi:.0f}) | {m / ref:.2f}x |")
md += ["", "Reading: on IMDB tokenization dominates and the rows differ by no more than repeats of "
       "one configuration do on these shared cores (up to ±20% between repeats, measured separately). "
       "On pre-tokenized packed rows, where reading and decoding are all the loader does, compare the "
       "last two rows of Gutenberg (same binary, same shards): the block order reads every row group "
       "once per window, a few pages at a time, instead of each row group once per epoch, which costs "
       "throughput, yet it stays at a quarter of a million samples/s, orders of magnitude above what "
       "training consumes (about 90 samples/s for IMDB at d = 768 on these cores, "
       "bench/results/loader.md). On shards prepared before the 32-row pages, every block decodes a "
       "whole page (`after / before`): prepare such datasets again.", ""]
open(sys.argv[2], "w").write("\n".join(md))
print("\n".join(md))
PYEOF
