#!/usr/bin/env bash
# Loader throughput, Rust (wave-data Loader) vs a Python peer (pyarrow + HF tokenizers) on the same
# shards, same tokenizer, same max length, batch 64, runs interleaved. Writes bench/results/loader.{json,md}.
#
#   bench/loader_bench.sh            # env: SHARED (../shared/data), PY (venv python), SECONDS_PER_RUN (8)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$(cd .. && pwd)/shared/data}
PY=${PY:-${HOME}/.cache/wave-dist/venv/bin/python}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME}/.cache/wave-dist/target}
SECS=${SECONDS_PER_RUN:-8}
WORK=${BENCH_DATA:-${HOME}/.cache/wave-dist/bench-data}
TOK="$SHARED/tokenizers/bert-base-uncased/tokenizer.json"
OUT=bench/results
mkdir -p "$OUT" "$WORK"

cargo build --release -q -p wave-data --example loader_bench --example bench_prepare
BIN=$CARGO_TARGET_DIR/release/examples
[ -f "$WORK/gutenberg/manifest.json" ] && [ -f "$WORK/imdb/manifest.json" ] || "$BIN/bench_prepare" "$SHARED" "$WORK" "$TOK"

JSON=$OUT/loader.json
: > "$JSON"
run() { echo "+ $*" >&2; "$@" | tee -a "$JSON"; }
for t in 1 2; do
  run "$BIN/loader_bench" --uri "$WORK/imdb" --tokenizer "$TOK" --max-length 128 --batch 64 --threads $t --seconds "$SECS"
  run "$PY" bench/loader_peer.py --uri "$WORK/imdb" --tokenizer "$TOK" --max-length 128 --batch 64 --threads $t --seconds "$SECS"
done
run "$BIN/loader_bench" --uri "$WORK/imdb" --tokenizer "$TOK" --max-length 128 --batch 64 --threads 1 --seconds "$SECS" --shuffle true
run "$BIN/loader_bench" --uri "$WORK/gutenberg" --tokenizer "" --max-length 128 --batch 64 --threads 1 --seconds "$SECS"
run "$PY" bench/loader_peer.py --uri "$WORK/gutenberg" --tokenizer "" --max-length 128 --batch 64 --threads 1 --seconds "$SECS"

"$PY" - "$JSON" "$OUT/loader.md" "$SECS" <<'PYEOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
md = ["# Loader throughput: wave-data (Rust) vs pyarrow + HF tokenizers (Python)", "",
      f"Command: `bench/loader_bench.sh` (SECONDS_PER_RUN={sys.argv[3]}), runs interleaved on one machine "
      f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end: other builds share these cores, so 2 tokenizer "
      f"threads may not beat 1). Batch 64, max length 128, BERT uncased tokenizer, storage order unless noted.",
      "IMDB: 25,000 raw reviews tokenized on the fly. Gutenberg: shard 00 packed into 128-token rows (pre-tokenized).", "",
      "| data | impl | tokenizer threads | shuffle | samples/s | tokens/s |", "|---|---|---|---|---|---|"]
for r in rows:
    data = os.path.basename(r["uri"])
    thr = r["threads"] if data == "imdb" else "n/a (pre-tokenized)"
    md.append(f"| {data} | {r['impl']} | {thr} | {str(r['shuffle']).lower()} | {r['samples_per_s']:.0f} | {r['tokens_per_s']:.0f} |")
def get(data, impl, t, sh=False):
    for r in rows:
        if os.path.basename(r["uri"]) == data and r["impl"] == impl and (data != "imdb" or r["threads"] == t) and r["shuffle"] == sh:
            return r["samples_per_s"]
md += ["", "Ratios (Rust / Python, samples/s): " + ", ".join(
    f"{d} t={t}: {get(d, 'rust', t) / get(d, 'python', t):.2f}x" for d, t in [("imdb", 1), ("imdb", 2), ("gutenberg", 1)]), ""]
open(sys.argv[2], "w").write("\n".join(md))
print("\n".join(md))
PYEOF
