"""Builds the benchmark models that `tessera bench` times (not used by the test suite).

* ``mlp-f32``: [64, 1024] -> Gemm 1024->4096 + Relu -> Gemm 4096->4096 + Relu -> Gemm 4096->1024.
* ``mlp-f16``: the same graph with f16 weights, input and output.

Usage: ``.venv/bin/python tests/python/make_bench_models.py OUTDIR``. Weights are seeded
(seed 2026), so the files are the same on every machine.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp(dtype: np.dtype, name: str) -> onnx.ModelProto:
    rng = np.random.default_rng(2026)
    sizes = [1024, 4096, 4096, 1024]
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16
    nodes, inits = [], []
    x = "x"
    for i in range(3):
        fin, fout = sizes[i], sizes[i + 1]
        w = (rng.standard_normal((fout, fin)) / np.sqrt(fin)).astype(dtype)
        b = (rng.standard_normal(fout) * 0.1).astype(dtype)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        y = f"h{i}" if i < 2 else "y"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [y + ("_pre" if i < 2 else "")], transB=1))
        if i < 2:
            nodes.append(helper.make_node("Relu", [y + "_pre"], [y]))
        x = y
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", elem, [64, 1024])],
        [helper.make_tensor_value_info("y", elem, [64, 1024])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def main() -> int:
    out = sys.argv[1]
    for dt, name in [(np.float32, "mlp-f32"), (np.float16, "mlp-f16")]:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        onnx.save(mlp(dt, name), os.path.join(d, "model.onnx"))
        print(f"wrote {d}/model.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
