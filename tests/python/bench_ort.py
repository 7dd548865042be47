"""onnxruntime's side of scripts/bench.sh (a benchmark helper, not a test).

* ``time MODEL OUTDIR THREADS RUNS``: makes seeded inputs for MODEL, runs onnxruntime with
  THREADS intra-op threads, saves ``in.NAME.npy`` and ``ort.NAME.npy`` in OUTDIR and prints
  ``median_ms gflop`` (Gemm/MatMul/Conv multiply-adds counted as two operations).
* ``numpy MODEL OUTDIR RUNS``: for a model of one MatMul of input ``a`` by a constant ``b``
  (``gemm-2048``), saves a seeded ``in.a.npy`` and numpy's result (as ``ort.y.npy``, the name
  ``maxerr`` reads) in OUTDIR and prints numpy's (OpenBLAS's)
  ``median_ms gflop`` for ``a @ b``; the thread count is OPENBLAS_NUM_THREADS, set by the caller.
* ``maxerr OUTDIR GOTDIR``: the max abs difference between onnxruntime's outputs in OUTDIR
  and the ``NAME.npy`` files in GOTDIR (``missing`` when one is absent).
"""
import glob
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as rt
from onnx import numpy_helper, shape_inference


def time_ort(argv):
    path, out, threads, runs = argv[0], argv[1], int(argv[2]), int(argv[3])
    m = shape_inference.infer_shapes(onnx.load(path))
    g = m.graph
    dims = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        dims[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for t in g.initializer:
        dims[t.name] = list(t.dims)
    flop = 0
    for n in g.node:
        if n.op_type in ("Gemm", "MatMul"):
            a, y = dims.get(n.input[0]), dims.get(n.output[0])
            if a and y:
                trans_a = any(x.name == "transA" and x.i for x in n.attribute)
                k = a[-2] if trans_a else a[-1]
                flop += 2 * int(np.prod(y)) * k
        elif n.op_type == "Conv":
            w, y = dims.get(n.input[1]), dims.get(n.output[0])
            if w and y:
                flop += 2 * int(np.prod(y)) * int(np.prod(w[1:]))
    o = rt.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    s = rt.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    feeds = {}
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        x = rng.standard_normal(shape).astype(types.get(i.type, np.float32))
        if i.type == "tensor(int64)":
            x = rng.integers(0, 100, shape).astype(np.int64)
        feeds[i.name] = x
        np.save(os.path.join(out, f"in.{i.name}.npy"), x)
    outs = s.run(None, feeds)
    for o_, v in zip(s.get_outputs(), outs):
        np.save(os.path.join(out, f"ort.{o_.name}.npy"), v)
    ts = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        s.run(None, feeds)
        ts.append(time.perf_counter() - t)
    ts = sorted(ts[1:])
    print(f"{ts[len(ts) // 2] * 1e3:.3f} {flop / 1e9:.4f}")


def time_numpy(argv):
    path, out, runs = argv[0], argv[1], int(argv[2])
    g = onnx.load(path).graph
    b = numpy_helper.to_array(g.initializer[0])
    n = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    a = np.random.default_rng(7).standard_normal(n).astype(np.float32)
    np.save(os.path.join(out, "in.a.npy"), a)
    np.save(os.path.join(out, "ort.y.npy"), a @ b)
    ts = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    ts = sorted(ts[1:])
    flop = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    print(f"{ts[len(ts) // 2] * 1e3:.3f} {flop / 1e9:.4f}")


def maxerr(argv):
    ref, got = argv[0], argv[1]
    worst = 0.0
    for f in glob.glob(os.path.join(ref, "ort.*.npy")):
        name = os.path.basename(f)[4:]
        g = os.path.join(got, name)
        if not os.path.exists(g):
            print("missing")
            return
        a, b = np.load(f).astype(np.float64), np.load(g).astype(np.float64)
        worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
    print(f"{worst:.2e}")


if __name__ == "__main__":
    {"time": time_ort, "numpy": time_numpy, "maxerr": maxerr}[sys.argv[1]](sys.argv[2:])
