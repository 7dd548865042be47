#!/usr/bin/env bash
# Generate (or reuse) the ONNX backend node test cases in <repo>/tests/data/node-cache.
#
# Sets up the venv via setup-python.sh, then runs tests/python/gen_node_tests.py,
# which skips work when the cache's .stamp is current. Extra arguments are passed
# through (e.g. --force, --check-determinism).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup-python.sh"
OUT="$ROOT/tests/data/node-cache"
"$ROOT/.venv/bin/python" "$ROOT/tests/python/gen_node_tests.py" "$OUT" "$@"
count="$(find "$OUT" -mindepth 2 -maxdepth 2 -name model.onnx | wc -l)"
echo "node tests in $OUT: $count"
