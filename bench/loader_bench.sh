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

# The trainer's own consumption on the same data and settings (paper model, configs/imdb.toml at
# max length 128, tokenizing on the fly): samples/s over the steps after the first metrics window.
cargo build --release -q -p wave-dist
TRAIN_RUN=$(mktemp -d)
"$CARGO_TARGET_DIR/release/wave-dist" train --config configs/imdb.toml --set "data.uri=\"$WORK/imdb\"" \
  --set data.train_split=\"train\" --set data.eval_split=\"train\" --set "data.tokenizer=\"$TOK\"" \
  --set data.max_length=128 --set train.max_steps=12 --set train.log_every_steps=4 \
  --set train.eval_max_batches=1 --set checkpoint.every_steps=0 --set "train.run_dir=\"$TRAIN_RUN\"" > /dev/null 2>&1
"$PY" - "$TRAIN_RUN/metrics.jsonl" "$WORK/imdb" >> "$JSON" <<'PYEOF'
import json, sys
lines = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "train"][1:]
secs = sum(l["data_wait_s"] + l["compute_s"] for l in lines)
sps = sum(l["samples_per_s"] * (l["data_wait_s"] + l["compute_s"]) for l in lines) / secs
tps = sum(l["tokens_per_s"] * (l["data_wait_s"] + l["compute_s"]) for l in lines) / secs
print(json.dumps({"impl": "trainer", "uri": sys.argv[2], "threads": 1, "shuffle": True,
                  "samples_per_s": sps, "tokens_per_s": tps}))
PYEOF
rm -rf "$TRAIN_RUN"

"$PY" - "$JSON" "$OUT/loader.md" "$SECS" <<'PYEOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
md = ["# Loader throughput: wave-data (Rust) vs pyarrow + HF tokenizers (Python)", "",
      f"Command: `bench/loader_bench.sh` (SECONDS_PER_RUN={sys.argv[3]}), runs interleaved on one machine "
      f"({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end: other builds share these cores, so 2 tokenizer "
      f"threads may not beat 1). Batch 64, max length 128, BERT uncased tokenizer, storage order unless noted.",
      "IMDB: 25,000 raw reviews tokenized on the fly. Gutenberg: shard 00 packed into 128-token rows (pre-tokenized).", "",
      "| data | impl | tokenizer threads | shuffle | samples/s | tokens/s |", "|---|---|---|---|---|---|"]
trainer = next(r for r in rows if r["impl"] == "trainer")
for r in rows:
    if r["impl"] == "trainer":
        continue
    data = os.path.basename(r["uri"])
    thr = r["threads"] if data == "imdb" else "n/a (pre-tokenized)"
    md.append(f"| {data} | {r['impl']} | {thr} | {str(r['shuffle']).lower()} | {r['samples_per_s']:.0f} | {r['tokens_per_s']:.0f} |")
def get(data, impl, t, sh=False):
    for r in rows:
        if os.path.basename(r["uri"]) == data and r["impl"] == impl and (data != "imdb" or r["threads"] == t) and r["shuffle"] == sh:
            return r["samples_per_s"]
md += ["", "Ratios (Rust / Python, samples/s): " + ", ".join(
    f"{d} t={t}: {get(d, 'rust', t) / get(d, 'python', t):.2f}x" for d, t in [("imdb", 1), ("imdb", 2), ("gutenberg", 1)]), "",
    f"The trainer's own consumption on the same IMDB data (configs/imdb.toml: d = 768, max length 128, "
    f"tokenizing on the fly, 1 tokenizer thread, shuffled): {trainer['samples_per_s']:.1f} samples/s. "
    f"Loader / trainer (imdb, 1 thread, shuffled): {get('imdb', 'rust', 1, True) / trainer['samples_per_s']:.1f}x.", ""]
open(sys.argv[2], "w").write("\n".join(md))
print("\n".join(md))
PYEOF
