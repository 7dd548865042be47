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


def write(out, name, model, feeds):
    d = out / name
    ds = d / "test_data_set_0"
    ds.mkdir(parents=True)
    onnx.save(model, str(d / "model.onnx"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in model.graph.input if i.name in feeds]
    got = sess.run(None, {n: feeds[n] for n in names})
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
    for name, model, feeds in [*cases(), *more_cases()]:
        write(out, name, model, feeds)
    (out / ".stamp").write_text(stamp)


if __name__ == "__main__":
    main()
