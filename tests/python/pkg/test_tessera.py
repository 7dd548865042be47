"""pytest suite of the `tessera` Python package (python/), run by scripts/test.sh after
`pip install ./python`: the example models against onnxruntime, every model form compile
accepts, artifacts, dtypes (float16, bfloat16 through ml_dtypes, packed int4), each exception
class raised by a real bad input, one session run from many threads with the GIL released,
targets(), conformance(), and the complete example of docs/python.md."""

import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tessera

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "tests" / "data" / "models"
BAD = ROOT / "tests" / "data" / "bad"
CNN = ROOT / "examples" / "cnn" / "model.onnx"


def example(name):
    d = MODELS / name
    x = numpy_helper.to_array(onnx.load_tensor(str(d / "test_data_set_0" / "input_0.pb")))
    return d / "model.onnx", x


def one_node_model(op, inputs, outputs, **attrs):
    """A one-node model; inputs/outputs are (name, elem_type, shape) triples."""
    vi = lambda t: helper.make_tensor_value_info(*t)  # noqa: E731
    node = helper.make_node(op, [t[0] for t in inputs], [t[0] for t in outputs], name=f"{op.lower()}0", **attrs)
    graph = helper.make_graph([node], op.lower(), [vi(t) for t in inputs], [vi(t) for t in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 11
    return model


@pytest.mark.parametrize("name", ["mlp", "cnn", "bert"])
def test_example_models_match_onnxruntime(name):
    path, x = example(name)
    sess = tessera.InferenceSession(str(path))
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    (got,) = sess.run(None, feed)
    (want,) = ref.run(None, feed)
    assert got.dtype == want.dtype and got.shape == want.shape
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
    assert err <= 1e-4, f"{name}: relative error {err:.3e}"


def test_model_forms_path_bytes_proto_and_artifacts(tmp_path):
    x = np.load(ROOT / "examples" / "cnn" / "input.npy")
    outs = []
    for form in [str(CNN), CNN, CNN.read_bytes(), onnx.load(str(CNN))]:
        outs.append(tessera.InferenceSession(form).run(["output"], {"input": x})[0])
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])

    art = tessera.compile(CNN, "interp")
    assert (art.target, art.num_kernels > 0) == ("interp", True)
    tsa = tmp_path / "cnn.tsa"
    art.save(tsa)
    loaded = tessera.load(tsa, target="interp")
    assert loaded.to_bytes() == art.to_bytes() == tsa.read_bytes()
    for sess in [tessera.InferenceSession(loaded, target="interp"), tessera.InferenceSession(str(tsa), target="interp")]:
        np.testing.assert_allclose(sess.run(None, {"input": x})[0], outs[0], rtol=1e-4, atol=1e-5)
    assert tessera.Artifact.from_bytes(tsa.read_bytes()).target == "interp"


def test_session_describes_inputs_and_outputs_like_onnxruntime():
    sess = tessera.InferenceSession(CNN)
    ref = ort.InferenceSession(str(CNN), providers=["CPUExecutionProvider"])
    for mine, theirs in [(sess.get_inputs(), ref.get_inputs()), (sess.get_outputs(), ref.get_outputs())]:
        assert [(a.name, a.shape, a.type) for a in mine] == [(b.name, b.shape, b.type) for b in theirs]
    assert sess.get_inputs()[0].dtype == np.float32


def test_float16_bfloat16_and_packed_int4():
    f16 = one_node_model("Add", [("a", TensorProto.FLOAT16, [2, 3]), ("b", TensorProto.FLOAT16, [2, 3])], [("y", TensorProto.FLOAT16, [2, 3])])
    a = np.arange(6, dtype=np.float16).reshape(2, 3) / 3
    (y,) = tessera.InferenceSession(f16).run(None, {"a": a, "b": a})
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, a + a)

    to_bf16 = one_node_model("Cast", [("x", TensorProto.FLOAT, [5])], [("y", TensorProto.BFLOAT16, [5])], to=TensorProto.BFLOAT16)
    x = np.array([1.0, -2.5, 3.14159, 1e-3, 65504.0], np.float32)
    (y,) = tessera.InferenceSession(to_bf16).run(None, {"x": x})
    assert y.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(y, x.astype(ml_dtypes.bfloat16))
    from_bf16 = one_node_model("Cast", [("x", TensorProto.BFLOAT16, [5])], [("y", TensorProto.FLOAT, [5])], to=TensorProto.FLOAT)
    (z,) = tessera.InferenceSession(from_bf16).run(None, {"x": y})
    np.testing.assert_array_equal(z, y.astype(np.float32))

    # int4 is packed two to a byte in the runtime (as ONNX stores it); Python sees ml_dtypes.int4.
    to_i4 = one_node_model("Cast", [("x", TensorProto.FLOAT16, [7])], [("y", TensorProto.INT4, [7])], to=TensorProto.INT4)
    v = np.array([-8, -3, -1, 0, 1, 5, 7], np.float16)
    (q,) = tessera.InferenceSession(to_i4).run(None, {"x": v})
    assert q.dtype == ml_dtypes.int4 and q.shape == (7,)
    np.testing.assert_array_equal(q.astype(np.int8), v.astype(np.int8))
    from_i4 = one_node_model("Cast", [("x", TensorProto.INT4, [7])], [("y", TensorProto.INT8, [7])], to=TensorProto.INT8)
    (back,) = tessera.InferenceSession(from_i4).run(None, {"x": q})
    np.testing.assert_array_equal(back, v.astype(np.int8))


def test_non_contiguous_inputs_are_accepted():
    add = one_node_model("Add", [("a", TensorProto.FLOAT, [3, 2]), ("b", TensorProto.FLOAT, [3, 2])], [("y", TensorProto.FLOAT, [3, 2])])
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = tessera.InferenceSession(add).run(None, {"a": base.T, "b": np.ones((3, 2), np.float32)})
    np.testing.assert_array_equal(y, base.T + 1)


def test_run_with_cycles_on_npu_sim():
    mm = one_node_model("MatMul", [("a", TensorProto.FLOAT, [8, 16]), ("b", TensorProto.FLOAT, [16, 4])], [("y", TensorProto.FLOAT, [8, 4])])
    rng = np.random.default_rng(3)
    feed = {"a": rng.standard_normal((8, 16), np.float32), "b": rng.standard_normal((16, 4), np.float32)}
    sess = tessera.InferenceSession(mm, "npu-sim")
    (y,), report = sess.run_with_cycles(None, feed)
    np.testing.assert_allclose(y, feed["a"] @ feed["b"], rtol=1e-5, atol=1e-5)
    assert report["total_cycles"] > 0 and len(report["kernels"]) >= 1
    assert report["total_cycles"] == sum(k["total_cycles"] for k in report["kernels"])
    assert 0.0 <= report["cube_utilisation"] <= 1.0
    assert report["pipes"] and all(v["busy"] >= 0 for v in report["pipes"].values())
    # A second call reports only its own launches.
    _, again = sess.run_with_cycles(None, feed)
    assert again["total_cycles"] == report["total_cycles"]


def test_unsupported_error():
    with pytest.raises(tessera.UnsupportedError, match="FrobnicateTensor") as e:
        tessera.compile(BAD / "unknown_op.onnx")
    assert isinstance(e.value, tessera.TesseraError)
    with pytest.raises(tessera.UnsupportedError, match="precision policies need the optimizer"):
        tessera.compile(CNN, precision="fp16")
    with pytest.raises(tessera.UnsupportedError, match="needs cargo feature `llvm`"):
        tessera.compile(CNN, "nvptx")
    with pytest.raises(tessera.UnsupportedError, match="run_with_cycles needs an npu-sim target"):
        tessera.InferenceSession(CNN).run_with_cycles(None, {})


def test_invalid_model_error(tmp_path):
    for bad in ["truncated.onnx", "cycle.onnx", "dangling.onnx", "mismatched_shapes.onnx"]:
        with pytest.raises(tessera.InvalidModelError):
            tessera.compile(BAD / bad)
    with pytest.raises(tessera.InvalidModelError, match=r"<model bytes>"):
        tessera.compile(b"\x08\x01 not a model")
    art = tessera.compile(CNN, "interp").to_bytes()
    broken = bytearray(art)
    broken[len(broken) // 2] ^= 0x40
    path = tmp_path / "broken.tsa"
    path.write_bytes(bytes(broken))
    with pytest.raises(tessera.InvalidModelError, match=rf"^invalid artifact: {re.escape(str(path))}: "):
        tessera.load(path)


def test_invalid_input_error():
    sess = tessera.InferenceSession(CNN)
    x = np.load(ROOT / "examples" / "cnn" / "input.npy")
    cases = [
        ({}, r"^missing input `input` \(float \[1, 3, 32, 32\]\)$"),
        ({"input": x, "extra": x}, r"^the model has no input named `extra`$"),
        ({"input": x[:, :2]}, r"^input `input`: expected shape \[1, 3, 32, 32\], got \[1, 2, 32, 32\]$"),
        ({"input": x.astype(np.float64)}, r"^input `input`: expected dtype float, got float64$"),
    ]
    for feed, msg in cases:
        with pytest.raises(tessera.InvalidInputError, match=msg):
            sess.run(None, feed)
    with pytest.raises(tessera.InvalidInputError, match=r"^the model has no output named `nope`$"):
        sess.run(["nope"], {"input": x})
    # Input data a kernel's data check refuses: an index out of range for Gather.
    gather = tessera.InferenceSession(BAD / "gather_oob.onnx")
    data, indices = np.load(BAD / "gather_data.npy"), np.load(BAD / "gather_indices.npy")
    with pytest.raises(tessera.InvalidInputError, match=r'^Gather node "gather_oob": input `indices` holds 100000000'):
        gather.run(None, {"data": data, "indices": indices})
    (rows,) = gather.run(None, {"data": data, "indices": np.load(BAD / "gather_indices_ok.npy")})
    assert rows.shape[1] == 2
    # A symbolic input shape without shapes= is the CLI's usage error.
    sym = one_node_model("Relu", [("x", TensorProto.FLOAT, ["n", 4])], [("y", TensorProto.FLOAT, ["n", 4])])
    with pytest.raises(tessera.InvalidInputError, match=r"^input `x` has symbolic shape"):
        tessera.compile(sym)
    (y,) = tessera.InferenceSession(sym, shapes={"x": [2, 4]}).run(None, {"x": -np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(y, np.zeros((2, 4), np.float32))


def test_plain_tessera_error_for_unknown_target_and_missing_file(tmp_path):
    with pytest.raises(tessera.TesseraError, match=r"^unknown target `tpu9000`; `tessera targets` lists them$"):
        tessera.compile(CNN, "tpu9000")
    with pytest.raises(tessera.TesseraError, match="no-such.tsa"):
        tessera.load(tmp_path / "no-such.tsa")
    art = tessera.compile(CNN, "interp")
    with pytest.raises(tessera.TesseraError, match="compiled for target `interp`, but the device runs `host`"):
        tessera.InferenceSession(art, target="host")


def test_one_session_from_many_threads():
    path, x = example("cnn")
    sess = tessera.InferenceSession(path)
    want = sess.run(None, {"input": x})[0]
    inputs = [x + np.float32(k) / 10 for k in range(8)]
    serial = [sess.run(None, {"input": i})[0] for i in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda i: sess.run(None, {"input": i})[0], inputs * 3))
    for k, got in enumerate(parallel):
        np.testing.assert_array_equal(got, serial[k % len(inputs)])
    np.testing.assert_array_equal(sess.run(None, {"input": x})[0], want)


def test_the_gil_is_released_while_a_model_runs():
    # The interpreter takes tens of milliseconds on the CNN; while it runs on another thread,
    # this thread must keep running Python code.
    x = np.load(ROOT / "examples" / "cnn" / "input.npy")
    sess = tessera.InferenceSession(CNN, "interp")
    done = threading.Event()
    ticks = 0

    def work():
        for _ in range(3):
            sess.run(None, {"input": x})
        done.set()

    t = threading.Thread(target=work)
    start = time.perf_counter()
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    t.join()
    elapsed = time.perf_counter() - start
    assert ticks > 100, f"only {ticks} Python iterations in {elapsed:.3f} s while the model ran"


def test_targets_and_conformance():
    ts = {t["name"]: t for t in tessera.targets()}
    assert ts["host"]["available"] and ts["interp"]["available"]
    assert ts["nvptx"] == {"name": "nvptx", "description": ts["nvptx"]["description"], "available": False, "feature": "llvm"}
    data = ROOT / "tests" / "data" / "node-cache"
    if not data.is_dir():
        pytest.skip("node tests not generated (scripts/gen-node-tests.sh)")
    report = tessera.conformance("host", r"^test_(abs|relu)$", data=data)
    assert (report["target"], report["total"], report["pass"]) == ("host", 2, 2)
    assert sorted(c["name"] for c in report["cases"]) == ["test_abs", "test_relu"]
    with pytest.raises(tessera.InvalidInputError, match="^filter: "):
        tessera.conformance("host", "([", data=data)


def test_docs_python_md_example_runs(tmp_path):
    doc = (ROOT / "docs" / "python.md").read_text()
    m = re.search(r"```python\n(.*?)```", doc, re.S)
    assert m, "docs/python.md has a ```python example"
    script = tmp_path / "example.py"
    script.write_text(m.group(1))
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "max abs difference vs onnxruntime:" in out.stdout, out.stdout
    diff = float(out.stdout.split("max abs difference vs onnxruntime:")[1].split()[0])
    assert diff < 1e-4, out.stdout
