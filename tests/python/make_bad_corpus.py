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
