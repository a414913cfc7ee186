#!/usr/bin/env bash
# Builds the wave-dist container image with buildah and checks it with real podman containers.
#
#   launch/image.sh [all]          base + build + check (what launch/test.sh runs)
#   launch/image.sh base           a Debian bookworm base image made offline with debootstrap,
#                                  imported as $WAVE_IMAGE_BASE (cached under $WAVE_DIST_HOME/image)
#   launch/image.sh build [--full] [--variant cpu|cuda] [--base IMAGE] [--tag TAG]
#        default: the runtime stage from the binary built here (cargo build --features nccl),
#                 staged with launch/image-stage.sh: no compiler in the image build (CI)
#        --full:  the whole multi-stage build, Rust toolchain and torch wheel inside the builder
#                 stage (slow: compiles everything); RUST_IMAGE defaults to a local stand-in for
#                 rust:<version>-slim-bookworm made from the base and this machine's toolchain
#   launch/image.sh check [--tag TAG]   python launch/image_checks.py (smoke run, MPIJob and
#                                  Indexed-Job contracts, manifests against the image)
#
# Environment: WAVE_DIST_HOME (caches), WAVE_IMAGE (tag, default localhost/wave-dist:latest),
# WAVE_IMAGE_BASE (default localhost/wave-dist-base:bookworm), CONTAINERS_CONF (default: a file
# under $WAVE_DIST_HOME/image selecting runc and explicit ulimits; crun and podman's default
# rlimits fail on hosts with hybrid cgroups).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
source "$HERE/env.sh"
IMG_HOME="$WAVE_DIST_HOME/image"
TAG="${WAVE_IMAGE:-localhost/wave-dist:latest}"
BASE="${WAVE_IMAGE_BASE:-localhost/wave-dist-base:bookworm}"
VARIANT=cpu FULL=0

die() { echo "error: $*" >&2; exit 1; }
need() {
  command -v "$1" >/dev/null ||
    die "$1 is not installed; launch/setup.sh installs it (apt-get install podman buildah debootstrap)"
}
timed() { local t=$SECONDS rc=0; "$@" || rc=$?; echo "    ($(( SECONDS - t )) s)"; return $rc; }

containers_conf() {
  [ -n "${CONTAINERS_CONF:-}" ] && return
  mkdir -p "$IMG_HOME"
  # Limits no higher than this shell's hard limits, which a container cannot exceed; buildah's
  # chroot isolation refuses nproc above 32768 even where the shell's limit is higher.
  local n p; n="$(ulimit -Hn)" p="$(ulimit -Hu)"
  [ "$n" = unlimited ] && n=65536
  { [ "$p" = unlimited ] || [ "$p" -gt 32768 ]; } && p=32768
  cat > "$IMG_HOME/containers.conf.tmp" <<EOF
[containers]
default_ulimits = ["nofile=$n:$n", "nproc=$p:$p"]
[engine]
runtime = "runc"
EOF
  mv "$IMG_HOME/containers.conf.tmp" "$IMG_HOME/containers.conf"
  export CONTAINERS_CONF="$IMG_HOME/containers.conf"
}

base() {
  need podman; need debootstrap
  if podman image exists "$BASE"; then echo "==> base image $BASE: present"; return; fi
  local tar="$IMG_HOME/bookworm-minbase.tar"
  if [ ! -s "$tar" ]; then
    echo "==> debootstrap --variant=minbase bookworm (cached as $tar)"
    local dir; dir="$(mktemp -d "$IMG_HOME/rootfs.XXXX")"
    timed debootstrap --variant=minbase bookworm "$dir" >"$IMG_HOME/debootstrap.log" 2>&1 ||
      { rm -rf "$dir"; die "debootstrap failed; see $IMG_HOME/debootstrap.log"; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$dir"
  fi
  echo "==> podman import $tar as $BASE"
  podman import --quiet "$tar" "$BASE" >/dev/null
}

# A local stand-in for the official rust:*-slim-bookworm image (no registry is reachable here):
# the base plus this machine's stable toolchain.
rust_base() {
  local image="localhost/wave-dist-rust:bookworm"
  podman image exists "$image" && { echo "$image"; return; }
  local tc; tc="$(rustc --print sysroot)"
  local c; c="$(buildah from --pull=never "$BASE")"
  buildah copy --quiet "$c" "$tc" /usr/local/rust >/dev/null
  buildah config --env PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo "$c"
  buildah commit --quiet "$c" "$image" >/dev/null
  buildah rm "$c" >/dev/null
  echo "$image"
}

build() {
  need buildah; need podman
  podman image exists "$BASE" ||
    die "base image $BASE is not in local storage (run \`launch/image.sh base\`, or pass --base with an image you have)"
  local args=(--pull=never --isolation chroot --layers --build-arg "BASE_IMAGE=$BASE"
              --build-arg "VARIANT=$VARIANT" --target runtime -t "$TAG" -f Containerfile)
  if [ "$FULL" = 1 ]; then
    local rust="${RUST_IMAGE:-}"
    [ -n "$rust" ] || rust="$(rust_base)"
    echo "==> full build of $TAG ($VARIANT) from $BASE and $rust"
    # pip and cargo inside the build trust what this host trusts (a TLS-intercepting proxy's CA
    # may be in the host's bundle only).
    local ca=/etc/ssl/certs/ca-certificates.crt
    (cd "$ROOT" && timed buildah bud "${args[@]}" --build-arg "RUST_IMAGE=$rust" --build-arg BINARY_FROM=builder \
       -v "$ca:/etc/build-host-ca.crt:ro" --build-arg PIP_CERT=/etc/build-host-ca.crt \
       --build-arg CARGO_HTTP_CAINFO=/etc/build-host-ca.crt .)
  else
    echo "==> cargo build --release -p wave-dist --features nccl (the binary the image carries)"
    (cd "$ROOT" && cargo build --release -p wave-dist --features nccl)
    local ctx="$IMG_HOME/context"
    rm -rf "$ctx" && mkdir -p "$ctx/k8s" "$ctx/launch"
    cp "$ROOT/Containerfile" "$ctx/" && cp "$ROOT/k8s/sshd_config" "$ctx/k8s/"
    cp "$HERE/image-stage.sh" "$ctx/launch/"
    local site; site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$HERE/image-stage.sh" "$site" "$CARGO_TARGET_DIR/release/wave-dist" \
      "$WAVE_DIST_HOME/tokenizers/bert-base-uncased" "$VARIANT" "$ctx/prebuilt"
    echo "==> runtime stage of $TAG ($VARIANT) from $BASE and the staged binary"
    timed buildah bud "${args[@]}" --build-arg BINARY_FROM=prebuilt "$ctx"
  fi
  podman image inspect --format "    $TAG: {{.Size}} bytes" "$TAG"
}

check() {
  need podman
  podman image exists "$TAG" || die "image $TAG is not built (run \`launch/image.sh build\`)"
  echo "==> cargo build --release -p wave-comm --example comm-check (the Indexed-Job check's rendezvous probe)"
  (cd "$ROOT" && cargo build --release -p wave-comm --example comm-check --features nccl)
  echo "==> image checks on $TAG"
  WAVE_DIST_BIN="$CARGO_TARGET_DIR/release/wave-dist" WAVE_IMAGE_BASE="$BASE" \
    python "$HERE/image_checks.py" --image "$TAG" --root "$ROOT"
}

cmd="${1:-all}"; [ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
  case "$1" in
    --full) FULL=1 ;;
    --variant) VARIANT="${2:?--variant needs cpu or cuda}"; shift ;;
    --base) BASE="${2:?--base needs an image}"; shift ;;
    --tag) TAG="${2:?--tag needs a name}"; shift ;;
    *) die "unknown option $1 (see the header of $0)" ;;
  esac
  shift
done
case "$VARIANT" in cpu|cuda) ;; *) die "--variant must be cpu or cuda, not '$VARIANT'" ;; esac
containers_conf
case "$cmd" in
  base) base ;;
  build) build ;;
  check) check ;;
  all) base; build; check ;;
  *) die "unknown command '$cmd' (base, build, check or all)" ;;
esac
