# Sourced by the launch scripts: where wave-dist keeps its caches and how it builds.
# Everything persistent lives under WAVE_DIST_HOME (outside the checkout) so a fresh clone
# reuses the venv, pip cache, tokenizers and the cargo target folder.
export WAVE_DIST_HOME="${WAVE_DIST_HOME:-$HOME/.cache/wave-dist}"
export WAVE_VENV="${WAVE_VENV:-$WAVE_DIST_HOME/venv}"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$WAVE_DIST_HOME/pip}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WAVE_DIST_HOME/target}"
# torch-sys finds libtorch through the venv's python (DESIGN §3).
export LIBTORCH_USE_PYTORCH=1
export PATH="$WAVE_VENV/bin:$HOME/.cargo/bin:$PATH"
export WAVE_DIST_BIN="$CARGO_TARGET_DIR/release/wave-dist"
# Open MPI refuses root without these; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Test binaries of the libtorch crates carry no rpath (only the wave-dist binary's build.rs adds
# one), so tests find libtorch through the loader path.
for _torch_lib in "$WAVE_VENV"/lib/python3*/site-packages/torch/lib; do
  [ -d "$_torch_lib" ] && export LD_LIBRARY_PATH="$_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
unset _torch_lib
