#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, one per parser of untrusted bytes; see docs/security.md) for
# SECONDS each (default 20) on one core, starting from seed corpora made from the node tests
# and example models plus the committed regression inputs (fuzz/regressions/<target>/). A crash
# fails the script; libFuzzer leaves the input under fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (scripts/test.sh installs cargo-fuzz).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
secs="${1:-20}"
shift || true
# `-O` (release) for real fuzzing; CI's short smoke run passes TESSERA_FUZZ_BUILD=--dev, which
# builds several times faster and still runs every target under AddressSanitizer.
build="${TESSERA_FUZZ_BUILD:--O}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(onnx_import ir_text kir_text tsa_load tensor_files npu_asm npu_decode)
fi
if [ ! -d fuzz/corpus ]; then
  # scripts/test.sh passes the seed writer its `cargo test` run just built (test builds
  # compile examples), which saves building the workspace again with other features.
  if [ -n "${TESSERA_FUZZ_SEEDS_BIN:-}" ] && [ -x "$TESSERA_FUZZ_SEEDS_BIN" ]; then
    "$TESSERA_FUZZ_SEEDS_BIN" fuzz/corpus
  else
    cargo run -q -p tessera-tests --example fuzz_seeds -- fuzz/corpus
  fi
fi
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t"
  # Regression inputs first: each must still pass before the timed run.
  (cd fuzz && cargo +nightly fuzz run $build "$t" "regressions/$t" -- -runs=0 2>&1 | tail -1)
  (cd fuzz && cargo +nightly fuzz run $build "$t" "corpus/$t" "regressions/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=262144 -print_final_stats=1 2>&1 \
      | grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done|==[0-9]+== ERROR|SUMMARY)" || true)
  if [ -n "$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) 2>/dev/null)" ]; then
    echo "fuzz target $t found a problem: see fuzz/artifacts/$t" >&2
    failed=1
  fi
done
exit "${failed:-0}"
