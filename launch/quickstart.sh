#!/usr/bin/env bash
# README command 1: set up, fetch a data set, prepare Parquet shards, train a Wave Network on CPU
# for a bounded time, evaluate, and print the result.
#   launch/quickstart.sh [agnews|imdb]        (default agnews)
#   WAVE_DATA_MIRROR=DIR   take the official archives from DIR instead of downloading them
set -euo pipefail
DATASET="${1:-agnews}"
# The splits each recipe trains and validates on (validation is carved from train, stratified).
case "$DATASET" in
  agnews) ARCHIVE=ag_news_csv.tgz;   SPLITS=train,validation,test ;;
  imdb)   ARCHIVE=aclImdb_v1.tar.gz; SPLITS=train,validation ;;
  *) echo "usage: $0 [agnews|imdb]" >&2; exit 2 ;;
esac
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
"$HERE/setup.sh"
source "$HERE/env.sh"
cd "$ROOT"
BIN="$WAVE_DIST_BIN"
START=$(date +%s)

echo "==> fetch $DATASET${WAVE_DATA_MIRROR:+ (mirror: $WAVE_DATA_MIRROR)}"
"$BIN" data fetch "$DATASET" --out data/raw

echo "==> prepare data/$DATASET (Parquet shards, BERT-uncased token ids)"
if [ ! -f "data/$DATASET/manifest.json" ]; then
  "$BIN" data prepare --format "$DATASET" --input "data/raw/$ARCHIVE" --out "data/$DATASET" \
    --splits "$SPLITS" --tokenizer bert-base-uncased --tokenizer-threads 2
fi

echo "==> train configs/$DATASET-quick.toml on CPU"
"$BIN" train --config "configs/$DATASET-quick.toml" --device cpu | tee "data/$DATASET-summary.json"
RUN_DIR="runs/$DATASET-quick"
"$BIN" plot "$RUN_DIR" || true

echo "==> result ($(( $(date +%s) - START )) s after set-up)"
python3 - "data/$DATASET-summary.json" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
e, p = s["eval"], s["params"]
print(f"steps {s['steps']}, final train loss {s['final_loss']:.4f}, "
      f"validation accuracy {100 * e['accuracy']:.2f}% on {e['samples']} samples, "
      f"{s['train_samples_per_s']:.1f} samples/s, parameters {p['total']:,} "
      f"({p['non_embedding']:,} non-embedding), peak RSS {s['peak_rss_mb']:.0f} MiB")
PY
echo "curves: $RUN_DIR/*.png   metrics: $RUN_DIR/metrics.jsonl"
