#!/usr/bin/env bash
# Cube utilisation on npu-sim for compiler-generated code (a benchmark, not a test): the f16
# MatMul 1024x1024x1024 and the f16 BERT-base encoder layer of tests/python/make_npu_models.py
# (tests/data/npu-models, made by scripts/make-models.sh), each compiled from ONNX and run once
# on the simulator in cycle mode with a release build of this checkout.
#
# Cube utilisation is ideal Cube cycles (useful MACs / MACs per cycle, M*N*K/4096 for f16)
# over the cycles of all the model's kernels together, as `tessera bench --cycles` prints it.
#
#   scripts/bench-npu.sh                  # npu-sim
#   TARGET=npu-sim-lite scripts/bench-npu.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${TARGET:-npu-sim}"
[ -f tests/data/npu-models/.stamp ] || scripts/make-models.sh >/dev/null
cargo build --release -q -p tessera
bin="$root/target/release/tessera"
for m in matmul_f16_1024 bert_f16_base; do
  echo "== $m on $target =="
  "$bin" bench "tests/data/npu-models/$m/model.onnx" --target "$target" --runs 1 --warmup 0 --cycles \
    | sed -n '/== totals/,$p'
done
