#!/usr/bin/env bash
# mypy --strict over the package. The package `octollm` is the folder streams/ plus arms/ as
# `octollm.arms` (see pyproject.toml), so mypy gets a view of it under .build/typecheck: a
# directory with one link per entry of streams/ and one for arms/.
set -euo pipefail
cd "$(dirname "$0")/.."
view=.build/typecheck/octollm
[ -L "$view" ] && rm "$view"   # the older one-link layout
rm -rf "$view"
mkdir -p "$view"
for entry in streams/*; do
  ln -s "../../../$entry" "$view/$(basename "$entry")"
done
ln -s ../../../arms "$view/arms"
exec .venv/bin/mypy -p octollm "$@"
