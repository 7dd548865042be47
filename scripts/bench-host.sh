#!/usr/bin/env bash
# Benchmarks the host target on the bench models (tests/python/make_bench_models.py: the f32
# and f16 MLPs of batch 64, 1024->4096->4096->1024, and a ResNet-style CNN at 224x224) and the
# BERT-base encoder layer (tests/data/models/bert, seq 128), with a release build of this
# checkout. With BASELINE=/path/to/an/older/tessera it times that binary too, interleaved
# model by model in the same run, and prints the speed ratio. A benchmark, not a test: numbers
# move with machine load.
#
#   scripts/bench-host.sh                       # this checkout only
#   BASELINE=/tmp/tessera-old scripts/bench-host.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-python.sh
scripts/make-models.sh >/dev/null
models="${BENCH_MODELS:-$root/target/bench-models}"
[ -f "$models/cnn-224/model.onnx" ] || .venv/bin/python tests/python/make_bench_models.py "$models" >/dev/null
cargo build --release -q -p tessera
new="$root/target/release/tessera"
runs="${RUNS:-5}"
median() { "$1" bench "$2" --target host --runs "$3" --warmup 1 | awk '/median/ {print $3}'; }
printf '%-10s %14s %14s %8s\n' model "this (ms)" "baseline (ms)" speedup
for m in mlp-f32:"$models/mlp-f32/model.onnx" mlp-f16:"$models/mlp-f16/model.onnx" \
         cnn-224:"$models/cnn-224/model.onnx" bert:"$root/tests/data/models/bert/model.onnx"; do
  name="${m%%:*}" path="${m#*:}"
  t_new="$(median "$new" "$path" "$runs")"
  if [ -n "${BASELINE:-}" ]; then
    # The old binary may be very slow (f16 products were scalar loops): fewer runs.
    t_old="$(median "$BASELINE" "$path" "$([ "$name" = mlp-f16 ] && echo 1 || echo "$runs")")"
    ratio="$(awk -v a="$t_old" -v b="$t_new" 'BEGIN { printf "%.2fx", a / b }')"
  else
    t_old="-" ratio="-"
  fi
  printf '%-10s %14s %14s %8s\n' "$name" "$t_new" "$t_old" "$ratio"
done
