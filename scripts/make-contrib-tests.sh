#!/usr/bin/env bash
# Build (or reuse) the com.microsoft contrib-op test cases in <repo>/tests/data/contrib: small
# models run through onnxruntime for reference outputs (tests/python/make_contrib_tests.py,
# which skips work when the folder's .stamp is current). Extra arguments are passed through.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup-python.sh"
"$ROOT/.venv/bin/python" "$ROOT/tests/python/make_contrib_tests.py" "$ROOT/tests/data/contrib" "$@"
