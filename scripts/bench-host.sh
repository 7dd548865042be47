#!/usr/bin/env bash
# Benchmarks the host target on the bench models (tests/python/make_bench_models.py: the f32
# and f16 MLPs of batch 64, 1024->4096->4096->1024, and a ResNet-style CNN at 224x224) and the
# BERT-base encoder layer (tests/data/models/bert, seq 128), with a release build of this
# checkout. With BASELINE=/path/to/an/older/tessera it times that binary too, interleaved
# model by model in the same run, and prints the speed ratio. A benchmark, not a test: numbers
# move with machine load.
#
# BASELINE=pre-tiles builds the last commit before the tile kernel IR (13f53ef^, the "today"
# of issue 6's "host no slower than today") in a worktree under target/baseline-pre-tiles, once,
# and times that. Each model runs interleaved, baseline then this checkout, pinned to one CPU
# (`taskset -c ${CPU:-1}`), ROUNDS times (default 3), and the medians of the rounds are
# compared.
#
#   scripts/bench-host.sh                       # this checkout only
#   BASELINE=pre-tiles scripts/bench-host.sh    # against the pre-tiles compiler
#   MODELS="mlp-f32 cnn-224" BASELINE=pre-tiles scripts/bench-host.sh
#   BASELINE=/tmp/tessera-old scripts/bench-host.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ "${BASELINE:-}" = pre-tiles ]; then
  wt="$root/target/baseline-pre-tiles"
  if [ ! -x "$wt/target/release/tessera" ]; then
    [ -d "$wt" ] || git worktree add -f --detach "$wt" 13f53ef^ >/dev/null
    (cd "$wt" && cargo build --release -q -p tessera)
  fi
  BASELINE="$wt/target/release/tessera"
fi
scripts/setup-python.sh
scripts/make-models.sh >/dev/null
models="${BENCH_MODELS:-$root/target/bench-models}"
[ -f "$models/cnn-224/model.onnx" ] || .venv/bin/python tests/python/make_bench_models.py "$models" >/dev/null
cargo build --release -q -p tessera
new="$root/target/release/tessera"
runs="${RUNS:-5}"
cpu="${CPU:-1}"
rounds="${ROUNDS:-3}"
one() { taskset -c "$cpu" "$1" bench "$2" --target host --runs "$3" --warmup 1 | awk '/median/ {print $3}'; }
# The median over `rounds` rounds of one binary's median; rounds alternate with the other binary
# (the caller interleaves), so load drifts hit both alike.
mid() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
printf '%-10s %14s %14s %8s\n' model "this (ms)" "baseline (ms)" speedup
for m in mlp-f32:"$models/mlp-f32/model.onnx" mlp-f16:"$models/mlp-f16/model.onnx" \
         cnn-224:"$models/cnn-224/model.onnx" bert:"$root/tests/data/models/bert/model.onnx"; do
  name="${m%%:*}" path="${m#*:}"
  case " ${MODELS:-$name} " in *" $name "*) ;; *) continue ;; esac
  olds=() news=()
  for _ in $(seq "$rounds"); do
    if [ -n "${BASELINE:-}" ]; then
      # The old binary may be very slow (f16 products were scalar loops): fewer runs.
      olds+=("$(one "$BASELINE" "$path" "$([ "$name" = mlp-f16 ] && echo 1 || echo "$runs")")")
    fi
    news+=("$(one "$new" "$path" "$runs")")
    [ "$name" = mlp-f16 ] && [ -n "${BASELINE:-}" ] && break
  done
  t_new="$(printf '%s\n' "${news[@]}" | mid)"
  if [ -n "${BASELINE:-}" ]; then
    t_old="$(printf '%s\n' "${olds[@]}" | mid)"
    ratio="$(awk -v a="$t_old" -v b="$t_new" 'BEGIN { printf "%.2fx", a / b }')"
  else
    t_old="-" ratio="-"
  fi
  printf '%-10s %14s %14s %8s\n' "$name" "$t_new" "$t_old" "$ratio"
done
