#!/usr/bin/env bash
# Lays out what a wave-dist rank needs inside the container image, under OUT/opt/wave-dist:
#   bin/wave-dist                          the binary, its rpath pointed at site/ below
#   site/torch/lib/...                     libtorch from the pinned wheel (the wheel's own layout,
#   site/nvidia/<pkg>/lib/...              so its rpaths $ORIGIN/../../nvidia/*/lib still resolve)
#   tokenizers/bert-base-uncased/          tokenizer.json + vocab.txt
# Used by the Containerfile's builder stage and by launch/image.sh (which stages a binary built
# on the host, so CI need not compile inside the image).
#
#   launch/image-stage.sh SITE_PACKAGES BINARY TOKENIZER_DIR cpu|cuda OUT
#
# cpu: only the CPU half of libtorch. The binary and libtorch.so name libtorch_cuda.so as needed
#      (wave-dist's build.rs links it so CUDA is detected); the CPU variant drops that entry, so
#      the 3 GB of CUDA libraries stay out and `--device cuda` reports that no GPU is usable.
#      libtorch_cpu itself still loads libcudart and libcupti (a few MB), which are kept.
# cuda: every shared library of the wheel's torch/lib and nvidia/*/lib.
set -euo pipefail
if [ $# -ne 5 ]; then
  echo "usage: $0 SITE_PACKAGES BINARY TOKENIZER_DIR cpu|cuda OUT" >&2
  exit 2
fi
SITE="$1" BIN="$2" TOK="$3" VARIANT="$4" OUT="$5"
case "$VARIANT" in cpu|cuda) ;; *) echo "error: variant must be cpu or cuda, not '$VARIANT'" >&2; exit 2 ;; esac
for p in "$SITE/torch/lib/libtorch_cpu.so" "$BIN" "$TOK/tokenizer.json" "$TOK/vocab.txt"; do
  [ -e "$p" ] || { echo "error: $p does not exist" >&2; exit 1; }
done
command -v patchelf >/dev/null || { echo "error: patchelf is missing (apt-get install patchelf)" >&2; exit 1; }

DEST="$OUT/opt/wave-dist"
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/site/torch/lib" "$DEST/tokenizers/bert-base-uncased"
put() { cp -L --preserve=mode "$1" "$2"; }

if [ "$VARIANT" = cpu ]; then
  for f in libtorch_cpu.so libtorch.so libc10.so libgomp.so.1; do
    put "$SITE/torch/lib/$f" "$DEST/site/torch/lib/$f"
  done
  mkdir -p "$DEST/site/nvidia/cu13/lib"
  for f in libcudart.so.13 libcupti.so.13; do
    put "$SITE/nvidia/cu13/lib/$f" "$DEST/site/nvidia/cu13/lib/$f"
  done
  patchelf --remove-needed libtorch_cuda.so "$DEST/site/torch/lib/libtorch.so"
else
  # libtorch_python is the Python extension's half: a rank never loads it.
  find "$SITE/torch/lib" -maxdepth 1 -name '*.so*' ! -name 'libtorch_python.so' \
    -exec cp -L --preserve=mode {} "$DEST/site/torch/lib/" \;
  for lib in "$SITE"/nvidia/*/lib; do
    pkg="$(basename "$(dirname "$lib")")"
    mkdir -p "$DEST/site/nvidia/$pkg/lib"
    find "$lib" -maxdepth 1 -name '*.so*' -exec cp -L --preserve=mode {} "$DEST/site/nvidia/$pkg/lib/" \;
  done
  # cudarc opens libnccl.so; the wheel ships only libnccl.so.2.
  ln -sf libnccl.so.2 "$DEST/site/nvidia/nccl/lib/libnccl.so"
fi

put "$BIN" "$DEST/bin/wave-dist"
[ "$VARIANT" = cpu ] && patchelf --remove-needed libtorch_cuda.so "$DEST/bin/wave-dist"
patchelf --set-rpath '$ORIGIN/../site/torch/lib:$ORIGIN/../site/nvidia/nccl/lib' "$DEST/bin/wave-dist"
put "$TOK/tokenizer.json" "$DEST/tokenizers/bert-base-uncased/tokenizer.json"
put "$TOK/vocab.txt" "$DEST/tokenizers/bert-base-uncased/vocab.txt"
chmod -R a+rX "$DEST"
echo "staged $VARIANT runtime in $DEST ($(du -sh "$DEST" | cut -f1))"
