"""Builds the benchmark models that `tessera bench` times (not used by the test suite).

* ``mlp-f32``: [64, 1024] -> Gemm 1024->4096 + Relu -> Gemm 4096->4096 + Relu -> Gemm 4096->1024.
* ``mlp-f16``: the same graph with f16 weights, input and output.
* ``mlp-qdq``: the same MLP quantized as exporters write it (QDQ): per-tensor u8 activations
  (QuantizeLinear/DequantizeLinear pairs), i8 weights (per-tensor for the first two layers,
  per-column for the last) dequantized in front of each MatMul, f32 biases and ReLUs. Scales are
  calibrated on the bench input (``input.npy`` beside the model, with onnxruntime's output in
  ``expected.npy``).
* ``mlp-qdq-gemm``: the same quantized MLP with each layer a Gemm (``transB = 1``, the weights
  ``[N, K]``, the last one per output channel along axis 0), as a quantized Linear layer exports.
* ``cnn-224``: a ResNet-style CNN on [1, 3, 224, 224]: a 7x7/2 stem conv + max pool, then four
  stages of two 3x3 conv + ReLU blocks with residual adds (64, 128, 256, 512 channels, stride 2
  between stages), global average pool and a 1000-way Gemm.
* ``gemm-2048``: one f32 MatMul of an input [2048, 2048] by a constant [2048, 2048] (the
  weights), which scripts/bench.sh times on llvm-x86_64 against numpy's ``a @ b`` (OpenBLAS).

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


def bench_input(seed: int = 2028) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((64, 1024)).astype(np.float32)


def mlp_qdq(gemm: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(2026)
    sizes = [1024, 4096, 4096, 1024]
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def act_params(t: np.ndarray, i: int):
        # Per-tensor u8: the observed range, always holding 0.
        lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
        scale = np.float32((hi - lo) / 255.0 or 1.0)
        zp = np.uint8(np.clip(round(-lo / scale), 0, 255))
        return const(f"a{i}.scale", scale), const(f"a{i}.zp", zp), scale, zp

    x, h = "x", bench_input()
    for i in range(3):
        fin, fout = sizes[i], sizes[i + 1]
        w = (rng.standard_normal((fin, fout)) / np.sqrt(fin)).astype(np.float32)
        b = (rng.standard_normal(fout) * 0.1).astype(np.float32)
        s_a, z_a, sv, zv = act_params(h, i)
        nodes.append(helper.make_node("QuantizeLinear", [x, s_a, z_a], [f"q{i}"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"q{i}", s_a, z_a], [f"dq{i}"]))
        hq = (np.clip(np.round(h / sv) + zv, 0, 255) - zv) * sv
        if i < 2:
            ws = np.float32(np.abs(w).max() / 127.0)
            wq = np.clip(np.round(w / ws), -127, 127).astype(np.int8)
            wz = np.int8(0)
            axis = {}
            wd = wq.astype(np.float32) * ws
        else:
            ws = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)
            wq = np.clip(np.round(w / ws), -127, 127).astype(np.int8)
            wz = np.zeros(fout, np.int8)
            # Per output channel: axis 1 of [K, N] weights, axis 0 of a Gemm's [N, K].
            axis = {"axis": 0 if gemm else 1}
            wd = wq.astype(np.float32) * ws
        const(f"w{i}.q", wq.T.copy() if gemm else wq)
        const(f"w{i}.scale", ws)
        const(f"w{i}.zp", wz)
        const(f"b{i}", b)
        nodes.append(helper.make_node("DequantizeLinear", [f"w{i}.q", f"w{i}.scale", f"w{i}.zp"], [f"w{i}"], **axis))
        y = "y" if i == 2 else f"pre{i}"
        if gemm:
            # A quantized Linear layer as exporters write it: Gemm with the weights [N, K].
            nodes.append(helper.make_node("Gemm", [f"dq{i}", f"w{i}", f"b{i}"], [y], transB=1))
        else:
            nodes.append(helper.make_node("MatMul", [f"dq{i}", f"w{i}"], [f"mm{i}"]))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [y]))
        h = hq @ wd + b
        if i < 2:
            nodes.append(helper.make_node("Relu", [y], [f"h{i}"]))
            x, h = f"h{i}", np.maximum(h, 0)
    graph = helper.make_graph(
        nodes,
        "mlp_qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 1024])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def cnn224() -> onnx.ModelProto:
    rng = np.random.default_rng(2027)
    nodes, inits = [], []
    count = [0]

    def conv(x, cin, cout, k, stride, relu=True):
        i = count[0]
        count[0] += 1
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"cw{i}"), numpy_helper.from_array(b, f"cb{i}")])
        y = f"c{i}"
        nodes.append(helper.make_node("Conv", [x, f"cw{i}", f"cb{i}"], [y], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            y = y + "r"
        return y

    x = conv("x", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, cout in enumerate([64, 128, 256, 512]):
        stride = 1 if stage == 0 else 2
        skip = x if (stride == 1 and cin == cout) else conv(x, cin, cout, 1, stride, relu=False)
        h = conv(x, cin, cout, 3, stride)
        h = conv(h, cout, cout, 3, 1, relu=False)
        nodes.append(helper.make_node("Add", [h, skip], [f"res{stage}"]))
        nodes.append(helper.make_node("Relu", [f"res{stage}"], [f"out{stage}"]))
        x, cin = f"out{stage}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    fw = (rng.standard_normal((1000, 512)) / np.sqrt(512)).astype(np.float32)
    inits.append(numpy_helper.from_array(fw, "fw"))
    inits.append(numpy_helper.from_array(np.zeros(1000, np.float32), "fb"))
    nodes.append(helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], transB=1))
    graph = helper.make_graph(
        nodes,
        "cnn224",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def gemm2048() -> onnx.ModelProto:
    rng = np.random.default_rng(2026)
    n = 2048
    w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "gemm-2048",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(w, "b")],
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
    import onnxruntime as ort

    for name, gemm in [("mlp-qdq", False), ("mlp-qdq-gemm", True)]:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        model = mlp_qdq(gemm)
        onnx.save(model, os.path.join(d, "model.onnx"))
        x = bench_input()
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.save(os.path.join(d, "input.npy"), x)
        np.save(os.path.join(d, "expected.npy"), sess.run(None, {"x": x})[0])
        print(f"wrote {d}/model.onnx, input.npy, expected.npy")
    d = os.path.join(out, "cnn-224")
    os.makedirs(d, exist_ok=True)
    onnx.save(cnn224(), os.path.join(d, "model.onnx"))
    print(f"wrote {d}/model.onnx")
    d = os.path.join(out, "gemm-2048")
    os.makedirs(d, exist_ok=True)
    onnx.save(gemm2048(), os.path.join(d, "model.onnx"))
    print(f"wrote {d}/model.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
