#!/usr/bin/env bash
# mypy --strict over the package. The package `octollm` is the folder streams/ (see
# pyproject.toml), so mypy gets a one-link view of it under .build/typecheck.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .build/typecheck
ln -sfn ../../streams .build/typecheck/octollm
exec .venv/bin/mypy -p octollm "$@"
