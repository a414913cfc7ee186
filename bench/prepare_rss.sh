#!/usr/bin/env bash
# Peak memory (RSS) of `wave-dist data prepare` on a ~5 GB corpus: Gutenberg shard 00 (133 MB of
# JSON Lines text) repeated COPIES times (symbolic links in a temporary folder; never committed),
# read through one glob, next to the same command on one copy: a bounded prepare has the same peak
# at both sizes. Two configurations: raw text shards (read, external shuffle, write), and the
# heaviest, BERT tokenization in 2 threads packed into 128-token rows. The binary's own baseline
# (`wave-dist --version`: libtorch's CUDA libraries, ~0.5 GB) is measured too. Before/after on the
# same work (IMDB + one Gutenberg copy packed, library only, no libtorch): bench_prepare built from
# commit $BASE (whole splits in memory) vs this tree. RSS from /usr/bin/time -v.
# Writes bench/results/prepare_rss.{jsonl,md}.
#
#   bench/prepare_rss.sh     # env: SHARED (../shared/data), COPIES (38), THREADS (2), BASE (8d83c65),
#                            #      BENCH_TMP (a folder with ~15 GB free; default: mktemp -d)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SHARED:-$(cd .. && pwd)/shared/data}
COPIES=${COPIES:-38}
THREADS=${THREADS:-2}
BASE=${BASE:-8d83c65}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME}/.cache/wave-dist/target}
TOK="$SHARED/tokenizers/bert-base-uncased/tokenizer.json"
GZ="$SHARED/gutenberg/gutenberg_00.jsonl.gz"
WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/prepare-rss.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p wave-dist
cp "$CARGO_TARGET_DIR/release/wave-dist" "$WORK/wave-dist"
cargo build --release -q -p wave-data --example bench_prepare
mkdir -p "$WORK/after" "$WORK/src-before"
cp "$CARGO_TARGET_DIR/release/examples/bench_prepare" "$WORK/after/"
git archive "$BASE" | tar -x -C "$WORK/src-before"
(cd "$WORK/src-before" && cargo build --release -q -p wave-data --example bench_prepare)
mkdir -p "$WORK/before"
cp "$CARGO_TARGET_DIR/release/examples/bench_prepare" "$WORK/before/"

mkdir -p "$WORK/corpus" "$WORK/spool"
for i in $(seq -w 1 "$COPIES"); do ln -s "$GZ" "$WORK/corpus/part-$i.jsonl.gz"; done
COPY_BYTES=$(gzip -dc "$GZ" | wc -c)

OUT=bench/results/prepare_rss.jsonl
: > "$OUT"
# measure NAME TEXT_BYTES COMMAND...: peak RSS, wall and CPU time of one command.
measure() {
  local name=$1 bytes=$2; shift 2
  echo "+ $*" >&2
  /usr/bin/time -v -o "$WORK/time.txt" "$@" > "$WORK/stdout.txt" 2> "$WORK/stderr.txt" || {
    cat "$WORK/stderr.txt" >&2; exit 1; }
  python3 - "$name" "$bytes" "$WORK/time.txt" "$*" >> "$OUT" <<'PYEOF'
import json, re, sys
t = open(sys.argv[3]).read()
get = lambda k: re.search(re.escape(k) + r": (.*)", t).group(1).strip()
wall = get("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
print(json.dumps({"name": sys.argv[1], "input_text_bytes": int(sys.argv[2]),
                  "peak_rss_mb": int(get("Maximum resident set size (kbytes)")) / 1024,
                  "wall_s": secs, "cpu_s": float(get("User time (seconds)")) + float(get("System time (seconds)")),
                  "command": sys.argv[4]}))
PYEOF
  tail -n 1 "$OUT" >&2
}
prepare() { # name, copies ("one" or "all"), extra flags
  local name=$1 which=$2; shift 2
  local input="$WORK/corpus/*.jsonl.gz" bytes=$((COPY_BYTES * COPIES))
  if [ "$which" = one ]; then input="$WORK/corpus/part-$(seq -w 1 "$COPIES" | head -1).jsonl.gz"; bytes=$COPY_BYTES; fi
  rm -rf "$WORK/out"
  measure "$name" "$bytes" nice -n 5 "$WORK/wave-dist" data prepare --format jsonl --input "$input" \
    --out "$WORK/out" --temp-dir "$WORK/spool" --validation-fraction 0.01 "$@"
  rm -rf "$WORK/out"
}

measure "binary baseline (wave-dist --version)" 0 "$WORK/wave-dist" --version
measure "before: bench_prepare (IMDB + Gutenberg packed)" 0 "$WORK/before/bench_prepare" "$SHARED" "$WORK/bp-before" "$TOK"
measure "after: bench_prepare (IMDB + Gutenberg packed)" 0 "$WORK/after/bench_prepare" "$SHARED" "$WORK/bp-after" "$TOK"
rm -rf "$WORK/bp-before" "$WORK/bp-after"
prepare "raw text, 1 copy" one
prepare "raw text, $COPIES copies" all
prepare "packed 128, $THREADS threads, 1 copy" one --tokenizer "$TOK" --pack-length 128 --tokenizer-threads "$THREADS"
prepare "packed 128, $THREADS threads, $COPIES copies" all --tokenizer "$TOK" --pack-length 128 --tokenizer-threads "$THREADS"

python3 - "$OUT" bench/results/prepare_rss.md "$COPIES" "$THREADS" "$BASE" <<'PYEOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["name"]: r for r in rows}
copies, threads = sys.argv[3], sys.argv[4]
md = ["# Peak memory of `data prepare` on a 5 GB corpus", "",
      f"Command: `bench/prepare_rss.sh` (COPIES={copies}, THREADS={threads}, BASE={sys.argv[5]}); peak RSS from "
      f"`/usr/bin/time -v`; {os.cpu_count()} cores shared with other builds and tests (load average "
      f"{os.getloadavg()[0]:.1f} at the end), prepares run under `nice -n 5`, so wall times are only indicative. "
      "Corpus: Gutenberg shard 00 (gzip JSON Lines, one book a line) linked "
      f"{copies} times and read through one glob; `--validation-fraction 0.01`, temporary spool on local disk.", "",
      "| run | input text | peak RSS | wall | CPU |", "|---|---|---|---|---|"]
for r in rows:
    size = f"{r['input_text_bytes'] / 1e9:.2f} GB" if r["input_text_bytes"] else "-"
    md.append(f"| {r['name']} | {size} | {r['peak_rss_mb']:.0f} MB | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} s |")
base = by["binary baseline (wave-dist --version)"]["peak_rss_mb"]
def ratio(a, b):
    return by[a]["peak_rss_mb"] / by[b]["peak_rss_mb"]
md += ["", "Ratios (peak RSS):",
       f"- raw text, {copies} copies / 1 copy: {ratio(f'raw text, {copies} copies', 'raw text, 1 copy'):.2f}x",
       f"- packed, {copies} copies / 1 copy: {ratio(f'packed 128, {threads} threads, {copies} copies', f'packed 128, {threads} threads, 1 copy'):.2f}x",
       f"- before / after, same work in the library: {ratio('before: bench_prepare (IMDB + Gutenberg packed)', 'after: bench_prepare (IMDB + Gutenberg packed)'):.2f}x",
       f"- the binary alone holds {base:.0f} MB (libtorch's CUDA libraries are loaded at start); prepare's own "
       f"share at {copies} copies packed: {by[f'packed 128, {threads} threads, {copies} copies']['peak_rss_mb'] - base:.0f} MB.", "",
       "What bounds it: records stream from the inputs into a spool on disk; each spool bucket sorted in "
       "memory is at most 128 MiB (`PrepareOptions::shuffle_memory_bytes`, larger buckets are split "
       "again); the tokenizer gets 1 MiB of text per thread at a time (its own buffers take tens of bytes "
       "per byte of the document being tokenized, so the largest document sets the rest); a row group "
       "is at most 16 MiB; shards go to the store in 8 MiB parts. None of these grows with the corpus.", ""]
open(sys.argv[2], "w").write("\n".join(md))
print("\n".join(md))
PYEOF
