"""Build Tessera's realistic f32 end-to-end test models with reference outputs.

Usage: make_models.py OUTDIR [--seed N] [--force] [--only NAME ...]

Builds three models with ``onnx.helper`` (opset 17, IR version 8), with
weights and inputs drawn from fixed numpy seeds, and writes for each::

    OUTDIR/<name>/model.onnx
    OUTDIR/<name>/test_data_set_0/input_K.pb    one serialized TensorProto per
                                                graph input, in order
    OUTDIR/<name>/test_data_set_0/output_K.pb   reference outputs computed by
                                                onnxruntime (CPU, no graph
                                                optimizations, 1 thread)

Models:

* ``mlp``:  [8, 1024] -> 3 x (Gemm 1024x1024 transB=1 + Relu) -> Gemm to 1000.
* ``cnn``:  small ResNet: [1, 3, 32, 32] -> Conv3x3+BN+Relu -> MaxPool 2x2 ->
  basic residual block -> strided residual block with 1x1 projection ->
  GlobalAveragePool -> Flatten -> Gemm to 10 classes.
* ``bert``: one BERT-base encoder layer on [1, 128, 768] (12 heads of 64,
  FFN 3072, Erf-based GELU, post-LayerNormalization with epsilon 1e-12).

Every model is checked with ``onnx.checker.check_model(full_check=True)`` and
the onnxruntime output is compared with an independent float64 numpy
implementation of the same network, so the reference is known to be faithful.

Seeding: each model draws from ``np.random.default_rng([seed, crc32(name)])``
(default seed 0), so a model's data do not depend on the others. Output is
written atomically (``OUTDIR.tmp`` then rename) and ``OUTDIR/.stamp`` records
this script's sha256, the package versions and the seed; a current stamp makes
the script a no-op unless ``--force``. ``OUTDIR/.gitignore`` (``*``) keeps the
generated data out of git.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
STAMP_NAME = ".stamp"
GENERATOR_ID = "tessera-make-models/1"
F32 = TensorProto.FLOAT


class GraphBuilder:
    """Tiny helper that accumulates nodes and initializers with unique names."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.weights: dict[str, np.ndarray] = {}

    def init(self, name: str, value: np.ndarray) -> str:
        assert name not in self.weights, name
        self.weights[name] = value
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{out}", **attrs))
        return out

    def model(self, inputs, outputs) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(n, F32, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, F32, s) for n, s in outputs],
            initializer=self.inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="tessera-make-models",
        )
        model.ir_version = IR_VERSION
        return model


def randn(rng: np.random.Generator, shape, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float32)


def uniform(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(np.float32)


# ---------------------------------------------------------------- mlp


def build_mlp(rng: np.random.Generator):
    g = GraphBuilder("mlp")
    x = "input"
    dims = [1024, 1024, 1024, 1024, 1000]
    for i in range(4):
        fan_in, fan_out = dims[i], dims[i + 1]
        w = g.init(f"fc{i}.weight", randn(rng, (fan_out, fan_in), math.sqrt(2.0 / fan_in)))
        b = g.init(f"fc{i}.bias", randn(rng, (fan_out,), 0.1))
        out = "output" if i == 3 else f"fc{i}"
        x = g.node("Gemm", [x, w, b], out, transB=1)
        if i < 3:
            x = g.node("Relu", [x], f"relu{i}")
    model = g.model([("input", [8, 1024])], [("output", [8, 1000])])
    inputs = [randn(rng, (8, 1024))]
    return model, inputs, g.weights


def ref_mlp(w, x):
    h = x.astype(np.float64)
    for i in range(4):
        h = h @ w[f"fc{i}.weight"].astype(np.float64).T + w[f"fc{i}.bias"]
        if i < 3:
            h = np.maximum(h, 0)
    return [h]


# ---------------------------------------------------------------- cnn


def build_cnn(rng: np.random.Generator):
    g = GraphBuilder("cnn")

    def conv_bn(x, name, cin, cout, k, stride, relu, bias=False):
        w = g.init(f"{name}.conv.weight", randn(rng, (cout, cin, k, k), math.sqrt(2.0 / (cin * k * k))))
        ins = [x, w]
        if bias:
            ins.append(g.init(f"{name}.conv.bias", randn(rng, (cout,), 0.1)))
        p = k // 2
        y = g.node("Conv", ins, f"{name}.conv", kernel_shape=[k, k], strides=[stride, stride],
                   pads=[p, p, p, p])
        # Inference BatchNormalization with non-trivial statistics.
        scale = g.init(f"{name}.bn.scale", uniform(rng, 0.5, 1.5, (cout,)))
        shift = g.init(f"{name}.bn.bias", randn(rng, (cout,), 0.1))
        mean = g.init(f"{name}.bn.mean", randn(rng, (cout,), 0.1))
        var = g.init(f"{name}.bn.var", uniform(rng, 0.5, 1.5, (cout,)))
        y = g.node("BatchNormalization", [y, scale, shift, mean, var], f"{name}.bn", epsilon=1e-5)
        if relu:
            y = g.node("Relu", [y], f"{name}.relu")
        return y

    x = conv_bn("input", "stem", 3, 16, 3, 1, relu=True, bias=True)            # 16x32x32
    x = g.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])  # 16x16x16
    # Basic block, identity skip.
    y = conv_bn(x, "block1.a", 16, 16, 3, 1, relu=True)
    y = conv_bn(y, "block1.b", 16, 16, 3, 1, relu=False)
    x = g.node("Relu", [g.node("Add", [y, x], "block1.add")], "block1.relu")
    # Strided block, 1x1 projection on the skip.                              # 32x8x8
    y = conv_bn(x, "block2.a", 16, 32, 3, 2, relu=True)
    y = conv_bn(y, "block2.b", 32, 32, 3, 1, relu=False)
    s = conv_bn(x, "block2.proj", 16, 32, 1, 2, relu=False)
    x = g.node("Relu", [g.node("Add", [y, s], "block2.add")], "block2.relu")
    x = g.node("GlobalAveragePool", [x], "gap")
    x = g.node("Flatten", [x], "flatten", axis=1)
    w = g.init("fc.weight", randn(rng, (10, 32), math.sqrt(1.0 / 32)))
    b = g.init("fc.bias", randn(rng, (10,), 0.1))
    g.node("Gemm", [x, w, b], "output", transB=1)
    model = g.model([("input", [1, 3, 32, 32])], [("output", [1, 10])])
    inputs = [randn(rng, (1, 3, 32, 32))]
    return model, inputs, g.weights


def _conv2d(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    co, ci, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, co, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_cnn(w, x):
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def conv_bn(x, name, stride, relu):
        k = w[f"{name}.conv.weight"].shape[2]
        y = _conv2d(x, w[f"{name}.conv.weight"], w.get(f"{name}.conv.bias"), stride, k // 2)
        c = lambda s: w[f"{name}.bn.{s}"][None, :, None, None]  # noqa: E731
        y = (y - c("mean")) / np.sqrt(c("var") + 1e-5) * c("scale") + c("bias")
        return np.maximum(y, 0) if relu else y

    x = conv_bn(x.astype(np.float64), "stem", 1, True)
    n, ch, h, wd = x.shape
    x = x.reshape(n, ch, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
    y = conv_bn(conv_bn(x, "block1.a", 1, True), "block1.b", 1, False)
    x = np.maximum(y + x, 0)
    y = conv_bn(conv_bn(x, "block2.a", 2, True), "block2.b", 1, False)
    x = np.maximum(y + conv_bn(x, "block2.proj", 2, False), 0)
    x = x.mean(axis=(2, 3))
    return [x @ w["fc.weight"].T + w["fc.bias"]]


# ---------------------------------------------------------------- bert

SEQ, HIDDEN, HEADS, FFN = 128, 768, 12, 3072
HEAD_DIM = HIDDEN // HEADS
LN_EPS = 1e-12


def build_bert(rng: np.random.Generator):
    g = GraphBuilder("bert_encoder_layer")
    std = 0.02  # BERT initializer_range

    def linear(x, name, fin, fout):
        w = g.init(f"{name}.weight", randn(rng, (fin, fout), std))
        b = g.init(f"{name}.bias", randn(rng, (fout,), std))
        return g.node("Add", [g.node("MatMul", [x, w], f"{name}.matmul"), b], f"{name}.out")

    def layer_norm(x, name, out=None):
        gamma = g.init(f"{name}.gamma", (1.0 + randn(rng, (HIDDEN,), 0.1)).astype(np.float32))
        beta = g.init(f"{name}.beta", randn(rng, (HIDDEN,), 0.02))
        return g.node("LayerNormalization", [x, gamma, beta], out or f"{name}.out", axis=-1,
                      epsilon=LN_EPS)

    x = "hidden_states"
    heads_shape = g.init("shape.heads", np.array([1, SEQ, HEADS, HEAD_DIM], dtype=np.int64))
    hidden_shape = g.init("shape.hidden", np.array([1, SEQ, HIDDEN], dtype=np.int64))

    def split_heads(t, name, perm):
        r = g.node("Reshape", [t, heads_shape], f"{name}.reshape")
        return g.node("Transpose", [r], f"{name}.transpose", perm=perm)

    q = split_heads(linear(x, "attn.query", HIDDEN, HIDDEN), "q", [0, 2, 1, 3])  # [1,12,128,64]
    k = split_heads(linear(x, "attn.key", HIDDEN, HIDDEN), "k", [0, 2, 3, 1])    # [1,12,64,128]
    v = split_heads(linear(x, "attn.value", HIDDEN, HIDDEN), "v", [0, 2, 1, 3])  # [1,12,128,64]
    scores = g.node("MatMul", [q, k], "attn.scores")
    sqrt_d = g.init("attn.sqrt_head_dim", np.array(math.sqrt(HEAD_DIM), dtype=np.float32))
    scores = g.node("Div", [scores, sqrt_d], "attn.scaled")
    probs = g.node("Softmax", [scores], "attn.probs", axis=-1)
    ctx = g.node("MatMul", [probs, v], "attn.context")                          # [1,12,128,64]
    ctx = g.node("Transpose", [ctx], "attn.context.transpose", perm=[0, 2, 1, 3])
    ctx = g.node("Reshape", [ctx, hidden_shape], "attn.context.reshape")        # [1,128,768]
    attn = linear(ctx, "attn.output", HIDDEN, HIDDEN)
    h = layer_norm(g.node("Add", [attn, x], "attn.residual"), "attn.ln")

    f = linear(h, "ffn.intermediate", HIDDEN, FFN)
    # GELU(x) = x * 0.5 * (1 + erf(x / sqrt(2)))
    sqrt2 = g.init("gelu.sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    one = g.init("gelu.one", np.array(1.0, dtype=np.float32))
    half = g.init("gelu.half", np.array(0.5, dtype=np.float32))
    e = g.node("Erf", [g.node("Div", [f, sqrt2], "gelu.div")], "gelu.erf")
    e = g.node("Add", [e, one], "gelu.add")
    f = g.node("Mul", [g.node("Mul", [f, e], "gelu.mul"), half], "gelu.out")
    f = linear(f, "ffn.output", FFN, HIDDEN)
    layer_norm(g.node("Add", [f, h], "ffn.residual"), "ffn.ln", out="output")
    model = g.model([("hidden_states", [1, SEQ, HIDDEN])], [("output", [1, SEQ, HIDDEN])])
    inputs = [randn(rng, (1, SEQ, HIDDEN))]
    return model, inputs, g.weights


def ref_bert(w, x):
    from math import erf

    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = x.astype(np.float64)
    lin = lambda t, n: t @ w[f"{n}.weight"] + w[f"{n}.bias"]  # noqa: E731

    def ln(t, n):
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + LN_EPS) * w[f"{n}.gamma"] + w[f"{n}.beta"]

    def heads(t):
        return t.reshape(1, SEQ, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    q, k, v = (heads(lin(x, f"attn.{n}")) for n in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HEAD_DIM)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = (p @ v).transpose(0, 2, 1, 3).reshape(1, SEQ, HIDDEN)
    h = ln(lin(ctx, "attn.output") + x, "attn.ln")
    f = lin(h, "ffn.intermediate")
    f = f * 0.5 * (1.0 + np.vectorize(erf)(f / math.sqrt(2.0)))
    return [ln(lin(f, "ffn.output") + h, "ffn.ln")]


MODELS = {
    "mlp": (build_mlp, ref_mlp),
    "cnn": (build_cnn, ref_cnn),
    "bert": (build_bert, ref_bert),
}

# ---------------------------------------------------------------- driver


def run_onnxruntime(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {i.name: v for i, v in zip(sess.get_inputs(), inputs, strict=True)}
    return sess.run(None, feeds)


def make_one(name: str, seed: int, outdir: str) -> dict:
    build, ref = MODELS[name]
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    model, inputs, weights = build(rng)
    onnx.checker.check_model(model, full_check=True)
    outputs = run_onnxruntime(model, inputs)

    expected = ref(weights, *inputs)
    info = {"params": int(sum(v.size for v in weights.values()))}
    for k, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        assert got.dtype == np.float32 and got.shape == want.shape, (name, got.shape, want.shape)
        assert np.all(np.isfinite(got)), name
        err = float(np.max(np.abs(got - want)))
        scale = float(np.max(np.abs(want)))
        if err > 1e-4 * max(scale, 1.0):
            raise SystemExit(f"{name}: onnxruntime output {k} differs from numpy reference "
                             f"by {err:.3g} (max |ref| {scale:.3g})")
        info[f"output_{k}"] = {"shape": list(got.shape), "std": round(float(got.std()), 4),
                               "max_abs_err_vs_f64": float(f"{err:.3g}")}

    case_dir = os.path.join(outdir, name)
    ds = os.path.join(case_dir, "test_data_set_0")
    os.makedirs(ds)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    for kind, values, vis in (("input", inputs, model.graph.input),
                              ("output", outputs, model.graph.output)):
        for k, (value, vi) in enumerate(zip(values, vis, strict=True)):
            with open(os.path.join(ds, f"{kind}_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(value, vi.name).SerializeToString(deterministic=True))
    return info


def _script_sha256() -> str:
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def stamp_for(seed: int, names: list[str]) -> dict:
    return {
        "generator": GENERATOR_ID,
        "script_sha256": _script_sha256(),
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "seed": seed,
        "models": sorted(names),
    }


def _write_gitignore(path: str) -> None:
    """Keep generated data (and a leftover OUTDIR.tmp) out of git."""
    with open(os.path.join(path, ".gitignore"), "w") as f:
        f.write(f"# Generated by tests/python/{os.path.basename(__file__)}; not committed.\n*\n")


def _replace_dir(tmp: str, outdir: str) -> None:
    """Move the finished tmp tree to outdir, replacing any previous one."""
    if os.path.exists(outdir):
        old = outdir + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(outdir, old)
        os.rename(tmp, outdir)
        shutil.rmtree(old)
    else:
        os.rename(tmp, outdir)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if the stamp is current")
    ap.add_argument("--only", nargs="+", choices=sorted(MODELS), help="build only these models")
    args = ap.parse_args()
    outdir = os.path.abspath(args.outdir.rstrip("/"))
    names = args.only or list(MODELS)
    want = stamp_for(args.seed, names)

    try:
        with open(os.path.join(outdir, STAMP_NAME)) as f:
            current = json.load(f) == want
    except (OSError, ValueError):
        current = False
    if current and not args.force:
        print(f"models up to date in {outdir}: {', '.join(names)}")
        return 0

    tmp = outdir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        _write_gitignore(tmp)
        for name in names:
            t0 = time.monotonic()
            info = make_one(name, args.seed, tmp)
            print(f"{name}: {info} ({time.monotonic() - t0:.1f}s)")
        with open(os.path.join(tmp, STAMP_NAME), "w") as f:
            json.dump(want, f, indent=1, sort_keys=True)
            f.write("\n")
        _replace_dir(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {len(names)} models into {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
