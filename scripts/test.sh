#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (Debian packages, the
# Python venv with onnx and onnxruntime), generates the ONNX node tests, the example models and
# the com.microsoft contrib-op cases (all cached), runs every Rust test, conformance ratchets included, fuzzes each parser for a
# bounded time, then builds the Python package and runs its pytest suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-system.sh
scripts/gen-node-tests.sh
scripts/make-models.sh
scripts/make-contrib-tests.sh
# A test run from scratch gains nothing from incremental caches, which would add gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The `llvm` feature (llvm-x86_64) builds against Debian's LLVM 22, linked dynamically.
export LLVM_SYS_221_PREFIX="${LLVM_SYS_221_PREFIX:-/usr/lib/llvm-22}"
cargo test --workspace --all-features "$@"
# Fuzz every parser of untrusted bytes for a bounded time (docs/security.md): each target
# TESSERA_FUZZ_SECONDS seconds (default 20; 0 skips), on the nightly toolchain with cargo-fuzz.
fuzz_secs="${TESSERA_FUZZ_SECONDS:-20}"
if [ "$fuzz_secs" != 0 ]; then
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
  fi
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
  fi
  TESSERA_FUZZ_SEEDS_BIN="${CARGO_TARGET_DIR:-target}/debug/examples/fuzz_seeds" \
    TESSERA_FUZZ_BUILD="${TESSERA_FUZZ_BUILD:---dev}" scripts/fuzz.sh "$fuzz_secs"
fi
scripts/test-python.sh
