#!/usr/bin/env bash
# Benchmarks Tessera's CPU targets against onnxruntime in one run: the bench models
# (tests/python/make_bench_models.py: f32 and f16 MLPs of batch 64, 1024->4096->4096->1024, the
# int8 QDQ MLP of the same shape (per-tensor u8 activations, i8 weights; onnxruntime runs the
# QDQ model itself, Tessera its own integer kernels), a ResNet-style CNN at 224x224) and the
# BERT-base encoder layer (tests/data/models/bert, seq
# 128), on `host`, `llvm-x86_64` (when this build has the `llvm` feature) and onnxruntime, at 1
# and 2 threads (`taskset` pins the process; the host device sizes its pool from the affinity
# mask, onnxruntime gets intra_op_num_threads). Prints per model and thread count: median
# latency, GFLOP/s (multiply-adds of Gemm/MatMul/Conv counted twice), the speed relative to
# onnxruntime (>1 is faster) and the max abs error of the outputs against onnxruntime's.
# A benchmark, not a test: numbers move with machine load.
#
# Then, with the llvm feature, an f32 GEMM of 2048^3 (`gemm-2048`: an input times constant
# weights) on llvm-x86_64 against numpy's `a @ b` (OpenBLAS, OPENBLAS_NUM_THREADS threads) in
# the same run: GFLOP/s and the ratio (issue 10 asks >= 0.90). GEMM=0 skips it.
#
#   scripts/bench.sh                      # RUNS=5 THREADS="1 2" TARGETS="host llvm-x86_64"
#   MODELS="mlp-f32 bert" scripts/bench.sh
#   TESSERA_BIN=target/debug/tessera scripts/bench.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-python.sh
scripts/make-models.sh >/dev/null
export LLVM_SYS_221_PREFIX="${LLVM_SYS_221_PREFIX:-/usr/lib/llvm-22}"
models="${BENCH_MODELS:-$root/target/bench-models}"
[ -f "$models/cnn-224/model.onnx" ] && [ -f "$models/mlp-qdq/model.onnx" ] && [ -f "$models/gemm-2048/model.onnx" ] || .venv/bin/python tests/python/make_bench_models.py "$models" >/dev/null
features=()
[ -x "$LLVM_SYS_221_PREFIX/bin/llvm-config" ] && features=(--features llvm)
# TESSERA_BIN=path times an already built binary instead (kernel code is the same in any
# profile: Cranelift and LLVM generate it at run time of the compiler, not cargo).
if [ -n "${TESSERA_BIN:-}" ]; then
  bin="$TESSERA_BIN"
else
  cargo build --release -q -p tessera "${features[@]}"
  bin="$root/target/release/tessera"
fi
runs="${RUNS:-5}"
threads="${THREADS:-1 2}"
targets="${TARGETS:-host llvm-x86_64}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
py=.venv/bin/python

# onnxruntime's side (tests/python/bench_ort.py): `time` writes the seeded inputs and ort's
# outputs as .npy and prints "median_ms gflop"; `maxerr` compares tessera's outputs with them.
maxerr() { "$py" tests/python/bench_ort.py maxerr "$@"; }

printf '%-9s %3s %-12s %12s %9s %9s %9s\n' model thr target "median(ms)" GFLOP/s "vs ort" maxerr
for name in ${MODELS:-mlp-f32 mlp-f16 mlp-qdq cnn-224 bert}; do
  case "$name" in
    bert) path="$root/tests/data/models/bert/model.onnx" ;;
    *) path="$models/$name/model.onnx" ;;
  esac
  for t in $threads; do
    cpus="$(seq -s, 0 $((t - 1)))"
    dir="$work/$name.$t"; mkdir -p "$dir"
    read -r ort_ms gflop < <(taskset -c "$cpus" "$py" tests/python/bench_ort.py time "$path" "$dir" "$t" "$runs")
    printf '%-9s %3s %-12s %12s %9.1f %9s %9s\n' "$name" "$t" onnxruntime "$ort_ms" \
      "$(awk -v g="$gflop" -v m="$ort_ms" 'BEGIN { print g / m * 1e3 }')" 1.00 0
    ins=()
    for f in "$dir"/in.*.npy; do n="${f##*/in.}"; ins+=(--input "${n%.npy}=$f"); done
    for target in $targets; do
      # Without LLVM 22 installed the build has no llvm-* targets.
      case "$target" in llvm-*) [ ${#features[@]} -gt 0 ] || continue ;; esac
      ms="$(taskset -c "$cpus" "$bin" bench "$path" --target "$target" "${ins[@]}" --runs "$runs" --warmup 1 2>&1 | awk '/median/ {print $3}')"
      if [ -z "$ms" ]; then
        printf '%-9s %3s %-12s %12s\n' "$name" "$t" "$target" failed
        continue
      fi
      od="$dir/$target"; mkdir -p "$od"
      taskset -c "$cpus" "$bin" run "$path" --target "$target" "${ins[@]}" --outputs "$od" >/dev/null 2>&1 || true
      printf '%-9s %3s %-12s %12s %9.1f %9.2f %9s\n' "$name" "$t" "$target" "$ms" \
        "$(awk -v g="$gflop" -v m="$ms" 'BEGIN { print g / m * 1e3 }')" \
        "$(awk -v o="$ort_ms" -v m="$ms" 'BEGIN { print o / m }')" "$(maxerr "$dir" "$od")"
    done
  done
done

# The 2048^3 GEMM against numpy (OpenBLAS) on llvm-x86_64.
if [ "${GEMM:-1}" != 0 ] && [ ${#features[@]} -gt 0 ]; then
  path="$models/gemm-2048/model.onnx"
  printf '\n%-9s %3s %-12s %12s %9s %9s %9s\n' model thr target "median(ms)" GFLOP/s "vs numpy" maxerr
  for t in $threads; do
    cpus="$(seq -s, 0 $((t - 1)))"
    dir="$work/gemm.$t"; mkdir -p "$dir"
    read -r np_ms gflop < <(OPENBLAS_NUM_THREADS="$t" taskset -c "$cpus" "$py" tests/python/bench_ort.py numpy "$path" "$dir" "$runs")
    printf '%-9s %3s %-12s %12s %9.1f %9s %9s\n' gemm-2048 "$t" numpy "$np_ms" \
      "$(awk -v g="$gflop" -v m="$np_ms" 'BEGIN { print g / m * 1e3 }')" 1.00 0
    ms="$(taskset -c "$cpus" "$bin" bench "$path" --target llvm-x86_64 --input "a=$dir/in.a.npy" --runs "$runs" --warmup 1 2>&1 | awk '/median/ {print $3}')"
    if [ -z "$ms" ]; then
      printf '%-9s %3s %-12s %12s\n' gemm-2048 "$t" llvm-x86_64 failed
      continue
    fi
    od="$dir/llvm"; mkdir -p "$od"
    taskset -c "$cpus" "$bin" run "$path" --target llvm-x86_64 --input "a=$dir/in.a.npy" --outputs "$od" >/dev/null 2>&1 || true
    printf '%-9s %3s %-12s %12s %9.1f %9.2f %9s\n' gemm-2048 "$t" llvm-x86_64 "$ms" \
      "$(awk -v g="$gflop" -v m="$ms" 'BEGIN { print g / m * 1e3 }')" \
      "$(awk -v o="$np_ms" -v m="$ms" 'BEGIN { print o / m }')" "$(maxerr "$dir" "$od")"
  done
fi
