#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (the Python venv
# with onnx and onnxruntime), generates the ONNX node tests, the example models and the
# com.microsoft contrib-op cases (all cached), then runs every Rust test, conformance ratchets included.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/gen-node-tests.sh
scripts/make-models.sh
scripts/make-contrib-tests.sh
cargo test --workspace --all-features "$@"
