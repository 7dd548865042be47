#!/usr/bin/env bash
# Cube utilisation on npu-sim for compiler-generated code (a benchmark, not a test): the f16
# MatMul 1024x1024x1024 and the f16 BERT-base encoder layer of tests/python/make_npu_models.py
# (tests/data/npu-models, made by scripts/make-models.sh), each compiled from ONNX and run once
# on the simulator in cycle mode (`tessera run --cycles`) with a release build of this checkout.
#
# Cube utilisation is ideal Cube cycles (useful MACs / MACs per cycle, M*N*K/4096 for f16)
# over the cycles of all the model's kernels together, as `--cycles` prints it in its totals.
# Before the totals, one line per kernel with its cycles (`PER_KERNEL=0` leaves them out): the
# BERT layer's softmax and layer norms run on the row path (src/rows.rs), its transposes on the
# tile-copy path (src/tcopy.rs), its elementwise kernels stream through the UB (src/stream.rs).
# Cycle counts are deterministic: they are the same on a loaded machine and in a debug build.
#
#   scripts/bench-npu.sh                      # npu-sim, both models
#   TARGET=npu-sim-lite MODELS=matmul_f16_1024 scripts/bench-npu.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${TARGET:-npu-sim}"
[ -f tests/data/npu-models/.stamp ] || scripts/make-models.sh >/dev/null
cargo build --release -q -p tessera
bin="$root/target/release/tessera"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for m in ${MODELS:-matmul_f16_1024 bert_f16_base}; do
  echo "== $m on $target =="
  dir="tests/data/npu-models/$m"
  "$bin" run "$dir/model.onnx" --target "$target" --inputs "$dir/test_data_set_0" \
    --outputs "$out" --cycles >"$out/report.txt"
  if [ "${PER_KERNEL:-1}" != 0 ]; then
    awk '/^== launch/ { k = $5 } /^total cycles/ && k != "" { printf "  %-24s %12s\n", k, $3; k = "" }' \
      "$out/report.txt"
  fi
  sed -n '/== totals/,$p' "$out/report.txt"
done
