"""Builds small models with onnxruntime's com.microsoft contrib ops and records onnxruntime's
outputs as reference, in the ONNX node-test layout (<case>/model.onnx,
<case>/test_data_set_0/{input,output}_K.pb), so `tessera conformance --data DIR` runs them.

Usage: make_contrib_tests.py OUT_DIR [--force]. Seeded: the same pins give the same files.
Skips work when OUT_DIR/.stamp matches this script's hash.
"""

import hashlib
import pathlib
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
F, U8, I8 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8
rng = np.random.default_rng(11)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def case(name, nodes, inputs, outputs, feeds, inits=()):
    """One model: `inputs`/`outputs` are (name, elem, shape); `feeds` maps input names to arrays."""
    graph = helper.make_graph(nodes, name, [vi(*i) for i in inputs], [vi(*o) for o in outputs], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return name, model, feeds


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def u8(*shape):
    return rng.integers(0, 256, shape).astype(np.uint8)


def i8(*shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def scalar(v, dtype):
    return np.array(v, dtype=dtype)


def cases():
    x = f32(2, 3, 8)
    yield case("test_ms_gelu", [helper.make_node("Gelu", ["x"], ["y"], domain=MS)], [("x", F, [2, 3, 8])], [("y", F, [2, 3, 8])], {"x": x})
    yield case(
        "test_ms_fast_gelu_bias",
        [helper.make_node("FastGelu", ["x", "b"], ["y"], domain=MS)],
        [("x", F, [2, 3, 8]), ("b", F, [8])],
        [("y", F, [2, 3, 8])],
        {"x": x, "b": f32(8)},
    )
    yield case("test_ms_fast_gelu", [helper.make_node("FastGelu", ["x"], ["y"], domain=MS)], [("x", F, [2, 3, 8])], [("y", F, [2, 3, 8])], {"x": x})
    yield case(
        "test_ms_bias_gelu",
        [helper.make_node("BiasGelu", ["x", "b"], ["y"], domain=MS)],
        [("x", F, [2, 3, 8]), ("b", F, [8])],
        [("y", F, [2, 3, 8])],
        {"x": x, "b": f32(8)},
    )
    yield case(
        "test_ms_fused_matmul",
        [helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, alpha=0.5, transA=1, transB=0)],
        [("a", F, [2, 5, 3]), ("b", F, [2, 5, 4])],
        [("y", F, [2, 3, 4])],
        {"a": f32(2, 5, 3), "b": f32(2, 5, 4)},
    )
    yield case(
        "test_ms_fused_matmul_trans_b",
        [helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain=MS, alpha=2.0, transB=1)],
        [("a", F, [3, 5]), ("b", F, [4, 5])],
        [("y", F, [3, 4])],
        {"a": f32(3, 5), "b": f32(4, 5)},
    )
    h = 16
    yield case(
        "test_ms_skip_layer_normalization",
        [helper.make_node("SkipLayerNormalization", ["x", "s", "g", "be", "bi"], ["y", "", "", "sum"], domain=MS, epsilon=1e-5)],
        [("x", F, [2, 3, h]), ("s", F, [2, 3, h]), ("g", F, [h]), ("be", F, [h]), ("bi", F, [h])],
        [("y", F, [2, 3, h]), ("sum", F, [2, 3, h])],
        {"x": f32(2, 3, h), "s": f32(2, 3, h), "g": f32(h), "be": f32(h), "bi": f32(h)},
    )
    yield case(
        "test_ms_skip_simplified_layer_normalization",
        [helper.make_node("SkipSimplifiedLayerNormalization", ["x", "s", "g"], ["y"], domain=MS, epsilon=1e-5)],
        [("x", F, [2, 3, h]), ("s", F, [2, 3, h]), ("g", F, [h])],
        [("y", F, [2, 3, h])],
        {"x": f32(2, 3, h), "s": f32(2, 3, h), "g": f32(h)},
    )
    q = [
        numpy_helper.from_array(scalar(0.05, np.float32), "sa"),
        numpy_helper.from_array(scalar(120, np.uint8), "za"),
        numpy_helper.from_array(scalar(0.03, np.float32), "sb"),
        numpy_helper.from_array(scalar(130, np.uint8), "zb"),
        numpy_helper.from_array(scalar(0.07, np.float32), "sc"),
        numpy_helper.from_array(scalar(125, np.uint8), "zc"),
    ]
    for op in ["QLinearAdd", "QLinearMul"]:
        yield case(
            f"test_ms_{op.lower()}",
            [helper.make_node(op, ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain=MS)],
            [("a", U8, [2, 8]), ("b", U8, [8])],
            [("y", U8, [2, 8])],
            {"a": u8(2, 8), "b": u8(8)},
            q,
        )
    yield case(
        "test_ms_qlinear_sigmoid",
        [helper.make_node("QLinearSigmoid", ["a", "sa", "za", "sc", "zc"], ["y"], domain=MS)],
        [("a", U8, [3, 8])],
        [("y", U8, [3, 8])],
        {"a": u8(3, 8)},
        q,
    )
    yield case(
        "test_ms_qlinear_leaky_relu",
        [helper.make_node("QLinearLeakyRelu", ["a", "sa", "za", "sc", "zc"], ["y"], domain=MS, alpha=0.1)],
        [("a", U8, [3, 8])],
        [("y", U8, [3, 8])],
        {"a": u8(3, 8)},
        q,
    )
    yield case(
        "test_ms_qlinear_concat",
        [helper.make_node("QLinearConcat", ["sc", "zc", "a", "sa", "za", "b", "sb", "zb"], ["y"], domain=MS, axis=1)],
        [("a", U8, [2, 3]), ("b", U8, [2, 5])],
        [("y", U8, [2, 8])],
        {"a": u8(2, 3), "b": u8(2, 5)},
        q,
    )
    yield case(
        "test_ms_matmul_integer_to_float",
        [helper.make_node("MatMulIntegerToFloat", ["a", "b", "sa", "sb", "za", "zb", "bias"], ["y"], domain=MS)],
        [("a", U8, [3, 4]), ("b", U8, [4, 5])],
        [("y", F, [3, 5])],
        {"a": u8(3, 4), "b": u8(4, 5)},
        q + [numpy_helper.from_array(f32(5), "bias")],
    )
    yield case(
        "test_ms_fused_conv_relu",
        [helper.make_node("FusedConv", ["x", "w", "b"], ["y"], domain=MS, activation="Relu", pads=[1, 1, 1, 1])],
        [("x", F, [1, 2, 5, 5])],
        [("y", F, [1, 3, 5, 5])],
        {"x": f32(1, 2, 5, 5)},
        [numpy_helper.from_array(f32(3, 2, 3, 3), "w"), numpy_helper.from_array(f32(3), "b")],
    )


def more_cases():
    q = [
        numpy_helper.from_array(scalar(0.05, np.float32), "sa"),
        numpy_helper.from_array(scalar(120, np.uint8), "za"),
        numpy_helper.from_array(scalar(0.07, np.float32), "sc"),
        numpy_helper.from_array(scalar(125, np.uint8), "zc"),
    ]
    yield case(
        "test_ms_qlinear_global_average_pool",
        [helper.make_node("QLinearGlobalAveragePool", ["x", "sa", "za", "sc", "zc"], ["y"], domain=MS, channels_last=0)],
        [("x", U8, [1, 3, 4, 4])],
        [("y", U8, [1, 3, 1, 1])],
        {"x": u8(1, 3, 4, 4)},
        q,
    )
    yield case(
        "test_ms_qlinear_average_pool",
        [helper.make_node("QLinearAveragePool", ["x", "sa", "za", "sc", "zc"], ["y"], domain=MS, kernel_shape=[2, 2], strides=[2, 2])],
        [("x", U8, [1, 2, 4, 4])],
        [("y", U8, [1, 2, 2, 2])],
        {"x": u8(1, 2, 4, 4)},
        q,
    )
    h = 16
    yield case(
        "test_ms_simplified_layer_normalization",
        [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"], axis=-1, epsilon=1e-5)],
        [("x", F, [2, 3, h]), ("g", F, [h])],
        [("y", F, [2, 3, h])],
        {"x": f32(2, 3, h), "g": f32(h)},
    )
    b, sq, nh, d = 2, 3, 2, 4
    pos = np.array([[0, 1, 2], [1, 2, 3]], dtype=np.int64)
    yield case(
        "test_ms_rotary_embedding",
        [helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain=MS, num_heads=nh, interleaved=0)],
        [("x", F, [b, sq, nh * d]), ("pos", TensorProto.INT64, [b, sq]), ("cos", F, [8, d // 2]), ("sin", F, [8, d // 2])],
        [("y", F, [b, sq, nh * d])],
        {"x": f32(b, sq, nh * d), "pos": pos, "cos": np.cos(f32(8, d // 2)), "sin": np.sin(f32(8, d // 2))},
    )
    yield case(
        "test_ms_multi_head_attention",
        [helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain=MS, num_heads=nh)],
        [("q", F, [b, sq, nh * d]), ("k", F, [b, 5, nh * d]), ("v", F, [b, 5, nh * d])],
        [("y", F, [b, sq, nh * d])],
        {"q": f32(b, sq, nh * d), "k": f32(b, 5, nh * d), "v": f32(b, 5, nh * d)},
    )


# onnxruntime on x86 CPUs with AVX2 but no VNNI multiplies u8 by s8 with `vpmaddubsw`, which
# saturates each sum of two adjacent products to int16; the exact result is the op's meaning.
# So int8 weights stay within [-64, 63], where no pair sum can saturate, and `exact` checks
# onnxruntime's outputs against numpy before they become expected values.
def i8w(*shape):
    return rng.integers(-64, 64, shape).astype(np.int8)


def dq_params(a):
    """DynamicQuantizeLinear as onnxruntime computes it (u8, range widened to include 0)."""
    lo, hi = np.float32(min(0.0, float(a.min()))), np.float32(max(0.0, float(a.max())))
    s = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    z = int(np.clip(np.rint(np.float32(0) - lo / s), 0, 255))
    return np.clip(np.rint(a / s) + z, 0, 255).astype(np.int64), s, z


def dq_matmul(a, b, bs, bz):
    q, s, z = dq_params(a)
    acc = (q - z) @ (b.astype(np.int64) - (0 if bz is None else bz.astype(np.int64)))
    return acc.astype(np.float32) * (s * bs).astype(np.float32)


def dqmm_case(name, a, b, bs, bz=None, bias=None, b_input=False):
    names = ["a", "b", "bs", "bz" if bz is not None else "", "bias" if bias is not None else ""]
    while names[-1] == "":
        names.pop()
    inits = [numpy_helper.from_array(v, k) for k, v in [("bs", bs), ("bz", bz), ("bias", bias)] if v is not None]
    inputs = [("a", F, list(a.shape))]
    feeds = {"a": a}
    if b_input:
        inputs.append(("b", helper.np_dtype_to_tensor_dtype(b.dtype), list(b.shape)))
        feeds["b"] = b
    else:
        inits.append(numpy_helper.from_array(b, "b"))
    want = dq_matmul(a.reshape(-1, a.shape[-1]), b, bs, bz).reshape(*a.shape[:-1], b.shape[1])
    if bias is not None:
        want = want + bias
    out = [*a.shape[:-1], b.shape[1]]
    c = case(name, [helper.make_node("DynamicQuantizeMatMul", names, ["y"], domain=MS)], inputs, [("y", F, out)], feeds, inits)
    EXACT[name] = [want]
    return c


def qgemm_ref(a, sa, za, b, sb, zb, c, ys, yz, alpha, ta, tb):
    a, b = (a.T if ta else a), (b.T if tb else b)
    acc = (a.astype(np.int64) - za.astype(np.int64)) @ (b.astype(np.int64) - zb.astype(np.int64))
    if c is not None:
        acc = acc + c
    m = (np.float32(alpha) * sa) * sb
    if ys is not None:
        m = (m / ys).astype(np.float32)
    v = (acc.astype(np.float32) * m).astype(np.float32)
    if yz is None:
        return v
    info = np.iinfo(yz.dtype)
    return np.clip(np.rint(v) + int(yz), info.min, info.max).astype(yz.dtype)


def qgemm_case(name, a, sa, za, b, sb, zb, c=None, ys=None, yz=None, alpha=1.0, ta=0, tb=0):
    parts = [("a", a), ("sa", sa), ("za", za), ("b", b), ("sb", sb), ("zb", zb), ("c", c), ("ys", ys), ("yz", yz)]
    names = [k if v is not None else "" for k, v in parts]
    while names[-1] == "":
        names.pop()
    inits = [numpy_helper.from_array(v, k) for k, v in parts[1:] if v is not None]
    want = qgemm_ref(a, sa, za, b, sb, zb, c, ys, yz, alpha, ta, tb)
    elem = F if yz is None else helper.np_dtype_to_tensor_dtype(yz.dtype)
    node = helper.make_node("QGemm", names, ["y"], domain=MS, alpha=alpha, transA=ta, transB=tb)
    cs = case(name, [node], [("a", helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))], [("y", elem, list(want.shape))], {"a": a}, inits)
    EXACT[name] = [want]
    return cs


def dq_lstm_ref(x, w, r, bias, ws, wz, rs, rz, h0, reverse):
    """One direction of DynamicQuantizeLSTM as onnxruntime computes it: X quantized once for
    all steps, H quantized per step, gates in iofc order."""
    seq, batch, inp = x.shape
    hid = r.shape[0]
    xw = dq_matmul(x.reshape(seq * batch, inp), w, ws, wz).reshape(seq, batch, 4 * hid)
    b = bias[: 4 * hid] + bias[4 * hid :]
    h, c = h0, np.zeros((batch, hid), np.float32)
    sig = lambda v: (1 / (1 + np.exp(-v.astype(np.float64)))).astype(np.float32)
    ys = [None] * seq
    for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
        g = (xw[t] + (0 if h is None else dq_matmul(h, r, rs, rz))) + b
        i, o, f, cc = np.split(g, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(cc)
        h = (sig(o) * np.tanh(c)).astype(np.float32)
        ys[t] = h
    return np.stack(ys), h, c


def dq_lstm_case(name, seq, batch, inp, hid, wdt, per_channel, direction, with_h0):
    dirs = 2 if direction == "bidirectional" else 1
    if wdt == np.int8:
        w, r, zv = i8w(dirs, inp, 4 * hid), i8w(dirs, hid, 4 * hid), 0
    else:
        w, r, zv = u8(dirs, inp, 4 * hid), u8(dirs, hid, 4 * hid), 128
    shp = (dirs, 4 * hid) if per_channel else (dirs,)
    ws = rng.uniform(0.005, 0.02, shp).astype(np.float32)
    rs = rng.uniform(0.005, 0.02, shp).astype(np.float32)
    wz, rz = np.full(shp, zv, wdt), np.full(shp, zv, wdt)
    bias = (0.1 * f32(dirs, 8 * hid)).astype(np.float32)
    x = f32(seq, batch, inp)
    h0 = f32(dirs, batch, hid) if with_h0 else None
    inits = [numpy_helper.from_array(v, k) for k, v in dict(w=w, r=r, b=bias, ws=ws, wz=wz, rs=rs, rz=rz).items()]
    names = ["x", "w", "r", "b", "", "h0" if with_h0 else "", "", "", "ws", "wz", "rs", "rz"]
    inputs = [("x", F, [seq, batch, inp])]
    feeds = {"x": x}
    if with_h0:
        inputs.append(("h0", F, [dirs, batch, hid]))
        feeds["h0"] = h0
    node = helper.make_node("DynamicQuantizeLSTM", names, ["y", "y_h", "y_c"], domain=MS, hidden_size=hid, direction=direction)
    outs = [("y", F, [seq, dirs, batch, hid]), ("y_h", F, [dirs, batch, hid]), ("y_c", F, [dirs, batch, hid])]
    per_dir = []
    for d in range(dirs):
        rev = direction == "reverse" or d == 1
        per_dir.append(dq_lstm_ref(x, w[d], r[d], bias[d], ws[d], wz[d].flat[0], rs[d], rz[d].flat[0], None if h0 is None else h0[d], rev))
    want = [np.stack([p[0] for p in per_dir], 1), np.stack([p[1] for p in per_dir]), np.stack([p[2] for p in per_dir])]
    EXACT[name] = want
    # onnxruntime splits the batch across threads and quantizes H per part: one thread keeps
    # the per-tensor quantization of the whole batch, whatever the machine.
    SINGLE_THREAD.add(name)
    return case(name, [node], inputs, outs, feeds, inits)


def quant_cases():
    n = 6
    yield dqmm_case("test_ms_dynamic_quantize_matmul", f32(3, 16), u8(16, n), scalar(0.03, np.float32), scalar(130, np.uint8), f32(n))
    yield dqmm_case(
        "test_ms_dynamic_quantize_matmul_per_column",
        f32(2, 3, 16),
        i8w(16, n),
        rng.uniform(0.01, 0.1, n).astype(np.float32),
        rng.integers(-4, 4, n).astype(np.int8),
    )
    yield dqmm_case("test_ms_dynamic_quantize_matmul_positive", rng.uniform(0.5, 4, (4, 16)).astype(np.float32), i8w(16, n), rng.uniform(0.01, 0.1, n).astype(np.float32))
    yield dqmm_case("test_ms_dynamic_quantize_matmul_negative", rng.uniform(-4, -0.5, (4, 16)).astype(np.float32), u8(16, n), scalar(0.02, np.float32), scalar(120, np.uint8), f32(n))
    yield dqmm_case(
        "test_ms_dynamic_quantize_matmul_wide",
        (100 * f32(3, 16)).astype(np.float32),
        u8(16, n),
        rng.uniform(0.01, 0.1, n).astype(np.float32),
        rng.integers(100, 150, n).astype(np.uint8),
        f32(n),
        b_input=True,
    )
    m, k = 3, 10
    yield qgemm_case("test_ms_qgemm", u8(m, k), scalar(0.02, np.float32), scalar(128, np.uint8), u8(k, n), scalar(0.03, np.float32), scalar(130, np.uint8), c=rng.integers(-2000, 2000, n).astype(np.int32), ys=scalar(0.4, np.float32), yz=scalar(120, np.uint8))
    yield qgemm_case(
        "test_ms_qgemm_float_per_column",
        u8(m, k),
        scalar(0.02, np.float32),
        scalar(125, np.uint8),
        i8w(n, k),
        rng.uniform(0.01, 0.05, n).astype(np.float32),
        np.zeros(n, np.int8),
        alpha=0.5,
        tb=1,
    )
    yield qgemm_case(
        "test_ms_qgemm_int8",
        i8w(k, m),
        scalar(0.02, np.float32),
        scalar(-3, np.int8),
        i8w(k, n),
        scalar(0.03, np.float32),
        scalar(2, np.int8),
        c=rng.integers(-2000, 2000, (1, n)).astype(np.int32),
        ys=scalar(0.3, np.float32),
        yz=scalar(5, np.int8),
        alpha=2.0,
        ta=1,
    )
    yield dq_lstm_case("test_ms_dynamic_quantize_lstm", 5, 1, 6, 4, np.int8, False, "forward", True)
    yield dq_lstm_case("test_ms_dynamic_quantize_lstm_per_channel_u8", 4, 2, 5, 3, np.uint8, True, "forward", False)
    yield dq_lstm_case("test_ms_dynamic_quantize_lstm_bidirectional", 4, 2, 5, 3, np.int8, True, "bidirectional", True)
    yield dq_lstm_case("test_ms_dynamic_quantize_lstm_reverse", 3, 1, 4, 5, np.uint8, False, "reverse", True)


# Expected outputs computed with numpy for the cases above, checked against onnxruntime's
# before onnxruntime's are written (exactly for integer results and the QGemm/MatMul cases'
# float products, within 1e-5 for the LSTMs' activations).
EXACT = {}
SINGLE_THREAD = set()


def write(out, name, model, feeds):
    d = out / name
    ds = d / "test_data_set_0"
    ds.mkdir(parents=True)
    onnx.save(model, str(d / "model.onnx"))
    opts = ort.SessionOptions()
    if name in SINGLE_THREAD:
        opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in model.graph.input if i.name in feeds]
    got = sess.run(None, {n: feeds[n] for n in names})
    for k, want in enumerate(EXACT.get(name, [])):
        err = float(np.abs(got[k].astype(np.float64) - want.astype(np.float64)).max())
        if err > (1e-5 if name in SINGLE_THREAD else 0.0):
            raise SystemExit(f"{name}: onnxruntime's output {k} differs from the reference by {err}")
    for k, n in enumerate(names):
        (ds / f"input_{k}.pb").write_bytes(numpy_helper.from_array(feeds[n], n).SerializeToString())
    for k, (o, v) in enumerate(zip(model.graph.output, got)):
        (ds / f"output_{k}.pb").write_bytes(numpy_helper.from_array(np.asarray(v), o.name).SerializeToString())


def main():
    out = pathlib.Path(sys.argv[1])
    stamp = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()
    if "--force" not in sys.argv and (out / ".stamp").is_file() and (out / ".stamp").read_text() == stamp:
        return
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, model, feeds in [*cases(), *more_cases(), *quant_cases()]:
        write(out, name, model, feeds)
    (out / ".stamp").write_text(stamp)


if __name__ == "__main__":
    main()
