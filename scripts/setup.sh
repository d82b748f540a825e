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

stamp=.venv/.octollm-installed
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "setup: installing Python dependencies"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e ".[dev]"
  cp pyproject.toml "$stamp"
fi

# Kafka's jars from Maven Central into ~/.cache/octollm (skipped when already there).
.venv/bin/octollm infra fetch

# The reflex layer (Rust), built once into a target dir outside the clone.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/octollm/cargo-target}
cargo build --release --locked --quiet --manifest-path reflex-layer/Cargo.toml
