#!/usr/bin/env bash
# Sets up a fresh clone: the .venv, Python dependencies, the Kafka jars and the reflex binary. Idempotent and quick
# when nothing changed (a stamp file remembers the installed pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "setup: Python 3.11 is required" >&2; exit 1; }
import sys; sys.exit(sys.version_info[:2] != (3, 11))
PY

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi

# llama-cpp-python (the local LLM server, docs/llm.md) compiles llama.cpp from source on first
# install: ~9 minutes (8 min CPU) on 2 shared cores; then pip's wheel cache (~/.cache/pip) makes
# reinstalls take seconds. Build a portable x86-64 binary (AVX2/FMA/F16C, no -march=native and
# no AVX-512), so a wheel cached on one machine never dies with SIGILL on another CPU; skip the
# llava/mtmd library and the llama.cpp tools and tests we do not use (a shorter build).
if [ -z "${CMAKE_ARGS:-}" ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
fi

stamp=.venv/.octollm-installed
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "setup: installing Python dependencies"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".[dev]"
  cp pyproject.toml "$stamp"
fi

# llama.cpp's own llama-server (the default local LLM server: parallel slots, continuous
# batching; docs/llm.md), built from the llama-cpp-python sdist's vendored llama.cpp once into
# ~/.cache/octollm (~10 minutes on 2 cores) and linked into the venv, where the supervisor looks.
llama_server=$(scripts/build-llama-server.sh .venv/bin/python)
ln -sfn "$llama_server" .venv/bin/llama-server

# Kafka's jars from Maven Central into ~/.cache/octollm (skipped when already there).
.venv/bin/octollm infra fetch

# The reflex layer (Rust), built once into a target dir outside the clone.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/octollm/cargo-target}
cargo build --release --locked --quiet --manifest-path reflex-layer/Cargo.toml
