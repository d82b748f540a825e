#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (continuous batching over parallel slots, docs/llm.md)
# from the llama.cpp source that the llama-cpp-python sdist ships in vendor/llama.cpp, so the
# binary is exactly the llama.cpp our Python package was built from and comes from PyPI, not
# from a download at run time. Only the llama-server target is built, statically linked, into
# ~/.cache/octollm/llama-server/<version>-<flags hash>/llama-server: a second run (a fresh clone,
# CI on the same machine) finds it there and returns at once.
#
# Usage: scripts/build-llama-server.sh [python]   (prints the binary's path on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:-.venv/bin/python}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${OCTO_CACHE_DIR:-$HOME/.cache/octollm}
# Portable x86-64 (AVX2/FMA/F16C, no -march=native, no AVX-512), as for the llama-cpp-python
# wheel in scripts/setup.sh. No CURL and no OpenSSL: the server never fetches a model itself.
# No web UI: llama.cpp would otherwise try to download its prebuilt assets from Hugging Face at
# build time (LLAMA_USE_PREBUILT_UI) or run npm (LLAMA_BUILD_UI).
FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON \
-DGGML_AVX512=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_APP=OFF"
# One patch to the vendored source: JSON under a schema gets compact whitespace (one optional
# space between tokens), as llama-cpp-python's grammar converter gives it. llama.cpp's own allows
# newlines and 20 spaces of indentation, and SmolLM2-135M then pretty-prints an array such as a
# plan step's depends_on forever ("1", "1", ...) until max_tokens: measured 0 of 3 schema answers
# complete at 256 tokens, where llama-cpp-python's server completed 3 of 3 in 80-90 tokens.
SPACE_FROM='const std::string SPACE_RULE = "| \" \" | \"\\n\"{1,2} [ \\t]{0,20}";'
SPACE_TO='const std::string SPACE_RULE = "\" \"?";'
KEY=$(printf '%s|%s' "$FLAGS" "$SPACE_TO" | sha256sum | cut -c1-10)
DEST="$CACHE/llama-server/$VERSION-$KEY"
BIN="$DEST/llama-server"

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

command -v cmake >/dev/null || { echo "build-llama-server: cmake is required" >&2; exit 1; }
WORK="$CACHE/llama-server/build-$VERSION-$KEY"
rm -rf "$WORK"
mkdir -p "$WORK" "$DEST"
trap 'rm -rf "$WORK"' EXIT

echo "build-llama-server: fetching the llama-cpp-python $VERSION sdist from PyPI" >&2
"$PY" -m pip download --quiet --no-binary :all: --no-deps \
  "llama-cpp-python==$VERSION" -d "$WORK" >&2
tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
[ -f "$SRC/tools/server/CMakeLists.txt" ] || {
  echo "build-llama-server: no tools/server in the sdist's vendor/llama.cpp" >&2
  exit 1
}

GRAMMAR="$SRC/common/json-schema-to-grammar.cpp"
grep -qF "$SPACE_FROM" "$GRAMMAR" || {
  echo "build-llama-server: $GRAMMAR has no SPACE_RULE to patch (llama.cpp changed?)" >&2
  exit 1
}
SPACE_FROM="$SPACE_FROM" SPACE_TO="$SPACE_TO" "$PY" - "$GRAMMAR" <<'PY'
import os, sys
path = sys.argv[1]
text = open(path).read()
open(path, "w").write(text.replace(os.environ["SPACE_FROM"], os.environ["SPACE_TO"], 1))
PY
grep -qF "$SPACE_TO" "$GRAMMAR" || { echo "build-llama-server: patching $GRAMMAR failed" >&2; exit 1; }

JOBS=${OCTO_BUILD_JOBS:-$(nproc)}
echo "build-llama-server: building llama-server ($JOBS jobs; ~5-10 minutes on 2 cores)" >&2
# shellcheck disable=SC2086
nice cmake -S "$SRC" -B "$WORK/build" $FLAGS >"$WORK/configure.log" 2>&1 || {
  tail -30 "$WORK/configure.log" >&2
  exit 1
}
nice cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 || {
  tail -40 "$WORK/build.log" >&2
  exit 1
}
install -m 0755 "$WORK/build/bin/llama-server" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2
echo "$BIN"
