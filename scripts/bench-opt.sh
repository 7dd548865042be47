#!/usr/bin/env bash
# Benchmarks the e-graph optimizer (docs/optimizer.md). A benchmark, not a test: numbers move
# with machine load. For each model it prints the optimizer's report summary (rules fired,
# e-graph, time, cost) and `tessera bench` of the optimizer on (--opt-level 2) against
# --opt-level 0 on host, in one run:
# - the int8 QDQ MLP (batch 64, 1024->4096->4096->1024, per-tensor u8 activations, i8 weights;
#   tests/python/make_bench_models.py), whose output is also checked against onnxruntime's,
#   and the same MLP with each layer a QDQ Gemm (`transB = 1`, `mlp-qdq-gemm`);
# - the f32 BERT-base encoder layer (tests/data/models/bert, seq 128), fusion only (exact);
# - on npu-sim, the example MLP's total cycles under --precision bf16 against exact;
# - with NPU_BERT=1, the same for the f32 BERT-base layer, and the bf16 run's error against the
#   exact run's (the exact layer issues tens of 10^9 simulator instructions: minutes in a release
#   build; TESSERA_NPU_SIM_MAX_STEPS lifts the simulator's per-launch limit for it).
#
#   scripts/bench-opt.sh                  # release build of this checkout
#   TESSERA=target/debug/tessera scripts/bench-opt.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ -x .venv/bin/python ] || scripts/setup-python.sh
models="${BENCH_MODELS:-$root/target/bench-models}"
[ -f "$models/mlp-qdq/expected.npy" ] && [ -f "$models/mlp-qdq-gemm/expected.npy" ] || .venv/bin/python tests/python/make_bench_models.py "$models" >/dev/null
if [ -z "${TESSERA:-}" ]; then
  cargo build --release -q -p tessera
  TESSERA="$root/target/release/tessera"
fi
runs="${RUNS:-5}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

summary() { grep -E '^(optimizer|  e-graph|  cost|  rules fired|    [a-z0-9-]+ +[0-9]+$)' || true; }

for m in mlp-qdq:"$models/mlp-qdq/model.onnx" mlp-qdq-gemm:"$models/mlp-qdq-gemm/model.onnx" \
         bert:"$root/tests/data/models/bert/model.onnx"; do
  name="${m%%:*}" path="${m#*:}"
  echo "== $name =="
  "$TESSERA" compile "$path" -o "$tmp/$name.tsa" --opt-level 2 --report | summary
  "$TESSERA" bench "$path" --target host --opt-level 2 --baseline-opt-level 0 --runs "$runs" --warmup 1
done

for q in mlp-qdq mlp-qdq-gemm; do
  echo "== $q accuracy against onnxruntime =="
  "$TESSERA" run "$models/$q/model.onnx" --opt-level 2 --input "x=$models/$q/input.npy" \
    --outputs "$tmp/out-$q" >/dev/null
  .venv/bin/python - "$tmp/out-$q/y.npy" "$models/$q/expected.npy" <<'PY'
import sys
import numpy as np
got, want = np.load(sys.argv[1]).astype(np.float64), np.load(sys.argv[2]).astype(np.float64)
rel = np.abs(got - want).max() / np.abs(want).max()
print(f"relative error (max |got - ort| / max |ort|): {rel:.3e} ({'ok' if rel <= 1e-2 else 'ABOVE 1e-2'})")
PY
done

echo "== npu-sim: example MLP, total cycles, --precision exact vs bf16 =="
mlp="$root/tests/data/models/mlp"
for p in exact bf16; do
  c="$("$TESSERA" run "$mlp/model.onnx" --target npu-sim --cycles --precision "$p" --opt-level 2 \
       --inputs "$mlp/test_data_set_0" --outputs "$tmp/npu-$p" | awk '/^total cycles/ && !/us at/ {print $3}')"
  echo "$p: $c cycles"
done

if [ "${NPU_BERT:-0}" = 1 ]; then
  echo "== npu-sim: f32 BERT-base layer, total cycles, --precision exact vs bf16 =="
  bert="$root/tests/data/models/bert"
  for p in exact bf16; do
    c="$(TESSERA_NPU_SIM_MAX_STEPS="${TESSERA_NPU_SIM_MAX_STEPS:-1000000000000}" \
         "$TESSERA" run "$bert/model.onnx" --target npu-sim --cycles --precision "$p" --opt-level 2 \
         --inputs "$bert/test_data_set_0" --outputs "$tmp/bert-$p" | awk '/^total cycles/ && !/us at/ {print $3}')"
    echo "$p: $c cycles"
  done
  .venv/bin/python - "$tmp/bert-exact" "$tmp/bert-bf16" <<'PY'
import sys, glob, os
import numpy as np, onnx
from onnx import numpy_helper
def load(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.pb"))):
        t = onnx.TensorProto()
        t.ParseFromString(open(f, "rb").read())
        out[os.path.basename(f)] = numpy_helper.to_array(t).astype(np.float64)
    return out
exact, bf16 = load(sys.argv[1]), load(sys.argv[2])
for k in exact:
    e, b = exact[k], bf16[k]
    rel = np.abs(b - e).max() / np.abs(e).max()
    print(f"{k}: bf16 against exact: max abs {np.abs(b - e).max():.3e}, relative (max |bf16 - exact| / max |exact|) {rel:.3e} ({'ok' if rel <= 3e-2 else 'ABOVE the 3e-2 bound'})")
PY
fi
