#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (Debian packages, the
# Python venv with onnx and onnxruntime), generates the ONNX node tests and the example models
# (both cached), runs every Rust test, conformance ratchets included, then builds the Python
# package and runs its pytest suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-system.sh
scripts/gen-node-tests.sh
scripts/make-models.sh
cargo test --workspace --all-features "$@"
scripts/test-python.sh
