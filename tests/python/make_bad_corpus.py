"""Writes the malformed-input corpus for the CLI tests into tests/data/bad/.

Each file is tiny and committed; this script documents how they were made and can remake them.
Every model here must be refused by `tessera` with a clear error, never a panic.
"""
import os
import sys

import onnx
from onnx import TensorProto, helper

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data", "bad")
os.makedirs(OUT, exist_ok=True)


def save(name, graph, opset=17):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tessera-bad-corpus")
    model.ir_version = 8
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(model.SerializeToString())


f32 = TensorProto.FLOAT
x = helper.make_tensor_value_info("x", f32, [2, 3])
y = helper.make_tensor_value_info("y", f32, [2, 3])

# A valid model, for positive tests and as the source of the truncated file.
save("good_add.onnx", helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"], name="add")], "good", [x], [y]))
with open(os.path.join(OUT, "good_add.onnx"), "rb") as f:
    good = f.read()
with open(os.path.join(OUT, "truncated.onnx"), "wb") as f:
    f.write(good[: len(good) * 2 // 3])

save("cycle.onnx", helper.make_graph([
    helper.make_node("Relu", ["b"], ["a"], name="first"),
    helper.make_node("Relu", ["a"], ["b"], name="second"),
    helper.make_node("Add", ["x", "a"], ["y"], name="out"),
], "cycle", [x], [y]))

save("dangling.onnx", helper.make_graph([helper.make_node("Add", ["x", "nowhere"], ["y"], name="add")], "dangling", [x], [y]))

save("unknown_op.onnx", helper.make_graph([helper.make_node("FrobnicateTensor", ["x"], ["y"], name="frob")], "unknown", [x], [y]))

z = helper.make_tensor_value_info("z", f32, [4, 5])
save("mismatched_shapes.onnx", helper.make_graph([helper.make_node("Add", ["x", "z"], ["y"], name="add")], "mismatch", [x, z], [y]))

big = helper.make_tensor_value_info("big", f32, [1 << 20, 1 << 20])
bigy = helper.make_tensor_value_info("bigy", f32, [1 << 20, 1 << 20])
save("huge_dim.onnx", helper.make_graph([helper.make_node("Relu", ["big"], ["bigy"], name="relu")], "huge", [big], [bigy]))

w = TensorProto()
w.name = "w"
w.data_type = f32
w.dims.extend([2, 3])
w.data_location = TensorProto.EXTERNAL
for k, v in [("location", "../../../etc/passwd"), ("offset", "0"), ("length", "24")]:
    e = w.external_data.add()
    e.key, e.value = k, v
save("bad_external.onnx", helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], "external", [x], [y], initializer=[w]))
# A valid model whose Reshape target is a runtime input: its value is bound at compile time.
shp = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
r = helper.make_tensor_value_info("r", f32, None)
save("reshape_input.onnx", helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape")], "reshape", [x, shp], [r]))

# ---- opsets, sizes and metadata ----

# An opset from the future: refused (exit 3) unless --allow-newer-opset.
save("future_opset.onnx", helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "future", [x], [y]), opset=999)

# A negative dimension in an initializer.
neg = TensorProto()
neg.name = "w"
neg.data_type = f32
neg.dims.extend([2, -3])
save("negative_dim.onnx", helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"], name="add")], "negdim", [x], [y], initializer=[neg]))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# ModelProto.metadata_props (field 14) declaring a 1 TiB entry that is not there: the decoder
# must refuse it from the bytes present, without allocating what the length claims.
with open(os.path.join(OUT, "huge_metadata.onnx"), "wb") as f:
    f.write(good + varint((14 << 3) | 2) + varint(1 << 40) + b"\x0a\x01k")

# ---- runtime indices out of range: one model per indexing op, with its bad input ----

i64 = TensorProto.INT64


def npy(name, arr):
    import numpy as np

    np.save(os.path.join(OUT, name), np.asarray(arr))


def indexing(name, op, data_shape, ind_shape, out_shape, attrs=None, updates=None):
    data = helper.make_tensor_value_info("data", f32, data_shape)
    ind = helper.make_tensor_value_info("indices", i64, ind_shape)
    out = helper.make_tensor_value_info("out", f32, out_shape)
    ins, vis = ["data", "indices"], [data, ind]
    if updates is not None:
        ins.append("updates")
        vis.append(helper.make_tensor_value_info("updates", f32, updates))
    node = helper.make_node(op, ins, ["out"], name=name, **(attrs or {}))
    save(name + ".onnx", helper.make_graph([node], name, vis, [out]), opset=18)


import numpy as np  # noqa: E402

# The case: rows 1 and -1 (999) are fine, 100000000 is not.
indexing("gather_oob", "Gather", [1000, 2], [3], [3, 2])
npy("gather_data.npy", np.arange(2000, dtype=np.float32).reshape(1000, 2))
npy("gather_indices.npy", np.array([1, -1, 100000000], dtype=np.int64))
npy("gather_indices_ok.npy", np.array([1, -1, -1000], dtype=np.int64))

indexing("gather_elements_oob", "GatherElements", [2, 3], [2, 2], [2, 2], {"axis": 1})
npy("small_data.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
npy("gather_elements_indices.npy", np.array([[0, -3], [2, -4]], dtype=np.int64))

indexing("gather_nd_oob", "GatherND", [2, 3], [2, 2], [2])
npy("gather_nd_indices.npy", np.array([[1, 2], [2, 0]], dtype=np.int64))

indexing("scatter_elements_oob", "ScatterElements", [2, 3], [2, 2], [2, 3], {"axis": 1}, updates=[2, 2])
npy("scatter_elements_indices.npy", np.array([[0, 1], [3, 0]], dtype=np.int64))
npy("updates_2x2.npy", np.ones((2, 2), dtype=np.float32))

indexing("scatter_nd_oob", "ScatterND", [2, 3], [2, 1], [2, 3], updates=[2, 3])
npy("scatter_nd_indices.npy", np.array([[1], [-3]], dtype=np.int64))
npy("updates_2x3.npy", np.ones((2, 3), dtype=np.float32))

# A constant index of 7 into a dimension of 2.
data = helper.make_tensor_value_info("data", f32, [2, 3])
seven = helper.make_tensor("seven", i64, [1], [7])
out = helper.make_tensor_value_info("out", f32, [1, 3])
save("gather_const_oob.onnx", helper.make_graph([helper.make_node("Gather", ["data", "seven"], ["out"], name="gather_const")], "gconst", [data], [out], initializer=[seven]), opset=18)

print("wrote corpus to", OUT)

# Control flow: an If on a run-time condition whose branches read the outer `x` (valid), and a
# Loop whose carried value doubles in length each iteration (refused: the plan is static).
cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", f32, [2, 3])])
else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", f32, [2, 3])])
save("good_if.onnx", helper.make_graph(
    [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)], "good_if", [cond, x], [y]))
body = helper.make_graph(
    [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Concat", ["v_in", "v_in"], ["v_out"], axis=0)],
    "grow",
    [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
     helper.make_tensor_value_info("v_in", f32, None)],
    [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", f32, None)])
m = helper.make_tensor_value_info("m", TensorProto.INT64, [])
save("loop_grows.onnx", helper.make_graph(
    [helper.make_node("Loop", ["m", "", "x"], ["y"], name="grow", body=body)], "loop_grows", [m, x],
    [helper.make_tensor_value_info("y", f32, None)]))
