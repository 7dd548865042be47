"""Writes model.onnx beside this file: Relu(FusedRMSNorm(x, scale) * 2), where FusedRMSNorm is
the hand-written custom op of rmsnorm.tk (domain com.tessera.examples). The scale is seeded, so
the file is the same on every machine. Usage: python examples/custom-op/make_model.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

N, D = 6, 80
rng = np.random.default_rng(7)
scale = (rng.standard_normal(D) * 0.5 + 1.0).astype(np.float32)
nodes = [
    helper.make_node("FusedRMSNorm", ["x", "scale"], ["n"], domain="com.tessera.examples", name="rmsnorm"),
    helper.make_node("Mul", ["n", "two"], ["m"], name="double"),
    helper.make_node("Relu", ["m"], ["y"], name="relu"),
]
graph = helper.make_graph(
    nodes,
    "custom_rmsnorm",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, D])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, D])],
    [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(np.array(2.0, np.float32), "two")],
)
model = helper.make_model(
    graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.tessera.examples", 1)]
)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.onnx")
onnx.save(model, out)
print(f"wrote {out}")
