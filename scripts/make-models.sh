#!/usr/bin/env bash
# Build (or reuse) Tessera's end-to-end test models (mlp, cnn, bert) in <repo>/tests/data/models,
# and the low-precision models for npu-sim's Cube in <repo>/tests/data/npu-models.
#
# Sets up the venv via setup-python.sh, then runs tests/python/make_models.py,
# which skips work when the folder's .stamp is current. Extra arguments are
# passed through (e.g. --force).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup-python.sh"
"$ROOT/.venv/bin/python" "$ROOT/tests/python/make_models.py" "$ROOT/tests/data/models" "$@"
"$ROOT/.venv/bin/python" "$ROOT/tests/python/make_npu_models.py" "$ROOT/tests/data/npu-models" "$@"
