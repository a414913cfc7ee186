#!/usr/bin/env bash
# Accuracy of the quickstart recipe under wave-dist's training order vs a full per-epoch shuffle.
#
# IMDB (the aclImdb archive) is prepared with 20% of train held out (5,000 reviews), then
# configs/imdb-quick.toml (d = 256, magnitude map, 2 epochs, batch 64, max length 384) is trained
# without its wall-clock cap, 3 seeds each:
#   - wave-dist ($WAVE_DIST_BIN, or BIN=...), reading the split as prepared;
#   - the PyTorch peer (bench/peer_accuracy.py): same model and recipe, torch.randperm every epoch.
#     PEER_INITS="pytorch tch" also trains it with tch's wider default init of linear layers.
# Each line of the output is one run's summary; bench/results/shuffle_accuracy.md has the table.
#
#   bench/shuffle_accuracy.sh ARCHIVE OUT_DIR [--keep-order]
#
# --keep-order prepares the split in archive order (class-sorted, as before shuffled prepares
# existed), to measure the loader's order alone on the worst case.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$ROOT/launch/env.sh"
ARCHIVE="${1:?usage: shuffle_accuracy.sh ARCHIVE OUT_DIR [--keep-order]}"
OUT="${2:?usage: shuffle_accuracy.sh ARCHIVE OUT_DIR [--keep-order]}"
ORDER="${3:-}"
BIN="${BIN:-$WAVE_DIST_BIN}"
mkdir -p "$OUT"
DATA="$OUT/imdb"
[ -f "$DATA/manifest.json" ] || "$BIN" data prepare --format imdb --input "$ARCHIVE" --out "$DATA" \
    --tokenizer bert-base-uncased --validation-fraction 0.2 --splits train,validation $ORDER >&2
for seed in 0 1 2; do
  "$BIN" train --config "$ROOT/configs/imdb-quick.toml" --set data.uri="\"$DATA\"" \
      --set train.max_seconds=0 --set train.eval_every_steps=0 --set train.seed=$seed \
      --set train.threads=1 --set train.run_dir="\"$OUT/wave-s$seed\"" --set checkpoint.every_steps=0 \
      --set checkpoint.overwrite=true 2> "$OUT/wave-s$seed.log" | tail -1
  for init in ${PEER_INITS:-pytorch}; do
    python "$HERE/peer_accuracy.py" --data "$DATA" --config "$ROOT/configs/imdb-quick.toml" \
        --seed $seed --threads 1 --linear-init "$init" 2> "$OUT/peer-$init-s$seed.log"
  done
done
