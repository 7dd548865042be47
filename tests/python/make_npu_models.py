"""Build the low-precision models whose matrix products run on npu-sim's Cube, with reference
outputs from onnxruntime.

Usage: make_npu_models.py OUTDIR [--seed N] [--force]

Writes, like make_models.py (whose helpers it uses), OUTDIR/<name>/model.onnx and
OUTDIR/<name>/test_data_set_0/{input,output}_K.pb:

* ``mlp_f16``: f16 [8, 256] -> 3 x (Gemm transB=1 with bias + Relu) -> Gemm to 128, all f16,
  shaped like make_models.py's ``mlp`` (its Gemms reach the Cube with the transposed weight and
  the bias).
* ``bert_f16``: a small BERT encoder layer in f16 (seq 32, hidden 128, 2 heads, FFN 512), the
  same graph as make_models.py's ``bert``: its eight MatMuls run on the Cube (f16 x f16 -> f32).
* ``bert_f16_base``: the same layer at BERT-base size (seq 128, hidden 768, 12 heads, FFN 3072),
  for scripts/bench-npu.sh only.
* ``matmul_f16_1024``: one f16 MatMul of 1024 x 1024 x 1024 (the weight an initializer), for
  scripts/bench-npu.sh only.
* ``qdq_i8_matmul``: f32 [16, 96] -> QuantizeLinear (int8) -> MatMulInteger with an int8 weight
  and the symmetric (all-zero) zero points of both (the integer form a QDQ MatMul becomes, run on
  the Cube's i8 x i8 -> i32 path: lowering drops zero points known to be zero) -> output
  ``acc`` (int32); then Cast, Mul by the scales and QuantizeLinear to ``y`` (int8). The scales
  are powers of two, so both outputs are exact integers every runtime must agree on.

OUTDIR/.stamp records this script's sha256, the package versions and the seed; a current stamp
makes the script a no-op unless ``--force``. OUTDIR/.gitignore keeps the data out of git.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_models as mm  # noqa: E402

F16 = TensorProto.FLOAT16
GENERATOR_ID = "tessera-make-npu-models/1"


class Graph(mm.GraphBuilder):
    """make_models.GraphBuilder with typed graph inputs and outputs."""

    def typed_model(self, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
            [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
            initializer=self.inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", mm.OPSET)],
            producer_name="tessera-make-npu-models",
        )
        model.ir_version = mm.IR_VERSION
        return model


def h(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def build_mlp_f16(rng):
    g = Graph("mlp_f16")
    x = "input"
    dims = [256, 512, 512, 256, 128]
    for i in range(4):
        w = g.init(f"fc{i}.weight", h(mm.randn(rng, (dims[i + 1], dims[i]), math.sqrt(2.0 / dims[i]))))
        b = g.init(f"fc{i}.bias", h(mm.randn(rng, (dims[i + 1],), 0.1)))
        x = g.node("Gemm", [x, w, b], "output" if i == 3 else f"fc{i}", transB=1)
        if i < 3:
            x = g.node("Relu", [x], f"relu{i}")
    model = g.typed_model([("input", F16, [8, 256])], [("output", F16, [8, 128])])
    return model, [h(mm.randn(rng, (8, 256)))]


def build_bert_f16(rng, name="bert_f16", seq=32, hidden=128, heads=2, ffn=512):
    g = Graph(name)
    hd = hidden // heads
    std = 0.02

    def linear(x, n, fin, fout):
        w = g.init(f"{n}.weight", h(mm.randn(rng, (fin, fout), std)))
        b = g.init(f"{n}.bias", h(mm.randn(rng, (fout,), std)))
        return g.node("Add", [g.node("MatMul", [x, w], f"{n}.matmul"), b], f"{n}.out")

    def layer_norm(x, n, out=None):
        gamma = g.init(f"{n}.gamma", h(1.0 + mm.randn(rng, (hidden,), 0.1)))
        beta = g.init(f"{n}.beta", h(mm.randn(rng, (hidden,), 0.02)))
        return g.node("LayerNormalization", [x, gamma, beta], out or f"{n}.out", axis=-1,
                      epsilon=1e-5)

    x = "hidden_states"
    heads_shape = g.init("shape.heads", np.array([1, seq, heads, hd], dtype=np.int64))
    hidden_shape = g.init("shape.hidden", np.array([1, seq, hidden], dtype=np.int64))

    def split(t, n, perm):
        r = g.node("Reshape", [t, heads_shape], f"{n}.reshape")
        return g.node("Transpose", [r], f"{n}.transpose", perm=perm)

    q = split(linear(x, "attn.query", hidden, hidden), "q", [0, 2, 1, 3])
    k = split(linear(x, "attn.key", hidden, hidden), "k", [0, 2, 3, 1])
    v = split(linear(x, "attn.value", hidden, hidden), "v", [0, 2, 1, 3])
    scores = g.node("MatMul", [q, k], "attn.scores")
    sqrt_d = g.init("attn.sqrt_head_dim", h(np.array(math.sqrt(hd))))
    probs = g.node("Softmax", [g.node("Div", [scores, sqrt_d], "attn.scaled")], "attn.probs",
                   axis=-1)
    ctx = g.node("MatMul", [probs, v], "attn.context")
    ctx = g.node("Transpose", [ctx], "attn.context.transpose", perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, hidden_shape], "attn.context.reshape")
    hs = layer_norm(g.node("Add", [linear(ctx, "attn.output", hidden, hidden), x],
                           "attn.residual"), "attn.ln")
    f = linear(hs, "ffn.intermediate", hidden, ffn)
    sqrt2 = g.init("gelu.sqrt2", h(np.array(math.sqrt(2.0))))
    one = g.init("gelu.one", h(np.array(1.0)))
    half = g.init("gelu.half", h(np.array(0.5)))
    e = g.node("Add", [g.node("Erf", [g.node("Div", [f, sqrt2], "gelu.div")], "gelu.erf"), one],
               "gelu.add")
    f = g.node("Mul", [g.node("Mul", [f, e], "gelu.mul"), half], "gelu.out")
    f = linear(f, "ffn.output", ffn, hidden)
    layer_norm(g.node("Add", [f, hs], "ffn.residual"), "ffn.ln", out="output")
    shape = [1, seq, hidden]
    model = g.typed_model([("hidden_states", F16, shape)], [("output", F16, shape)])
    return model, [h(mm.randn(rng, shape))]


def build_bert_f16_base(rng):
    return build_bert_f16(rng, "bert_f16_base", seq=128, hidden=768, heads=12, ffn=3072)


def build_matmul_f16_1024(rng):
    g = Graph("matmul_f16_1024")
    w = g.init("b", h(mm.randn(rng, (1024, 1024), 1 / 32)))
    g.node("MatMul", ["a", w], "y")
    model = g.typed_model([("a", F16, [1024, 1024])], [("y", F16, [1024, 1024])])
    return model, [h(mm.randn(rng, (1024, 1024)))]


def build_qdq_i8_matmul(rng):
    g = Graph("qdq_i8_matmul")
    i8 = lambda v: np.array(v, dtype=np.int8)  # noqa: E731
    sx = g.init("x.scale", np.array(1 / 16, dtype=np.float32))
    zx = g.init("x.zero_point", i8(0))
    w = g.init("w.quantized", rng.integers(-127, 128, (96, 40)).astype(np.int8))
    zw = g.init("w.zero_point", np.zeros((40,), dtype=np.int8))
    xq = g.node("QuantizeLinear", ["input", sx, zx], "x.quantized")
    acc = g.node("MatMulInteger", [xq, w, zx, zw], "acc")
    scale = g.init("acc.scale", np.array(1 / 16 / 64, dtype=np.float32))
    yf = g.node("Mul", [g.node("Cast", [acc], "acc.f32", to=TensorProto.FLOAT), scale],
                "y.f32")
    sy = g.init("y.scale", np.array(1 / 8, dtype=np.float32))
    zy = g.init("y.zero_point", i8(0))
    g.node("QuantizeLinear", [yf, sy, zy], "y")
    model = g.typed_model([("input", TensorProto.FLOAT, [16, 96])],
                          [("acc", TensorProto.INT32, [16, 40]), ("y", TensorProto.INT8, [16, 40])])
    return model, [mm.randn(rng, (16, 96), 2.0)]


MODELS = {
    "mlp_f16": build_mlp_f16,
    "bert_f16": build_bert_f16,
    "bert_f16_base": build_bert_f16_base,
    "matmul_f16_1024": build_matmul_f16_1024,
    "qdq_i8_matmul": build_qdq_i8_matmul,
}


def make_one(name: str, seed: int, outdir: str) -> None:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    model, inputs = MODELS[name](rng)
    onnx.checker.check_model(model, full_check=True)
    outputs = mm.run_onnxruntime(model, inputs)
    for out in outputs:
        assert np.all(np.isfinite(out)), name
    ds = os.path.join(outdir, name, "test_data_set_0")
    os.makedirs(ds)
    with open(os.path.join(outdir, name, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    for kind, values, vis in (("input", inputs, model.graph.input),
                              ("output", outputs, model.graph.output)):
        for k, (value, vi) in enumerate(zip(values, vis, strict=True)):
            with open(os.path.join(ds, f"{kind}_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(value, vi.name).SerializeToString(
                    deterministic=True))
    print(f"{name}: {[o.shape for o in outputs]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    outdir = os.path.abspath(args.outdir.rstrip("/"))
    want = mm.stamp_for(args.seed, list(MODELS))
    want["generator"] = GENERATOR_ID
    with open(os.path.abspath(__file__), "rb") as f:
        want["script_sha256"] = mm.hashlib.sha256(f.read()).hexdigest()
    try:
        with open(os.path.join(outdir, mm.STAMP_NAME)) as f:
            if json.load(f) == want and not args.force:
                print(f"npu models up to date in {outdir}")
                return 0
    except (OSError, ValueError):
        pass
    tmp = outdir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        mm._write_gitignore(tmp)
        for name in MODELS:
            make_one(name, args.seed, tmp)
        with open(os.path.join(tmp, mm.STAMP_NAME), "w") as f:
            json.dump(want, f, indent=1, sort_keys=True)
            f.write("\n")
        mm._replace_dir(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {len(MODELS)} models into {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
