"""Tessera: compile ONNX models for many AI chips through one IR, and run them.

The API follows onnxruntime's, so switching is a one-line change::

    import numpy as np
    import tessera

    sess = tessera.InferenceSession("model.onnx")          # compiles for target "host"
    x = np.zeros(sess.get_inputs()[0].shape, np.float32)
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})

``tessera.compile`` makes an :class:`Artifact` (a ``.tsa`` file's contents) that
``tessera.load`` reads back and :class:`InferenceSession` runs. Errors are
:class:`TesseraError` and its subclasses, with the messages of the ``tessera`` CLI.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _native
from ._native import InvalidInputError, InvalidModelError, TesseraError, UnsupportedError

__all__ = [
    "Artifact",
    "InferenceSession",
    "InvalidInputError",
    "InvalidModelError",
    "NodeArg",
    "TesseraError",
    "UnsupportedError",
    "compile",
    "conformance",
    "load",
    "targets",
    "__version__",
]

__version__: str = _native.version()

# ONNX TensorProto.DataType code -> (ONNX type name, numpy dtype name or ml_dtypes name).
# Names starting with "ml_dtypes." come from the ml_dtypes package (bfloat16, float8, sub-byte).
_DTYPES: Dict[int, tuple] = {
    1: ("float", "float32"),
    2: ("uint8", "uint8"),
    3: ("int8", "int8"),
    4: ("uint16", "uint16"),
    5: ("int16", "int16"),
    6: ("int32", "int32"),
    7: ("int64", "int64"),
    9: ("bool", "bool"),
    10: ("float16", "float16"),
    11: ("double", "float64"),
    12: ("uint32", "uint32"),
    13: ("uint64", "uint64"),
    16: ("bfloat16", "ml_dtypes.bfloat16"),
    17: ("float8e4m3fn", "ml_dtypes.float8_e4m3fn"),
    18: ("float8e4m3fnuz", "ml_dtypes.float8_e4m3fnuz"),
    19: ("float8e5m2", "ml_dtypes.float8_e5m2"),
    20: ("float8e5m2fnuz", "ml_dtypes.float8_e5m2fnuz"),
    21: ("uint4", "ml_dtypes.uint4"),
    22: ("int4", "ml_dtypes.int4"),
    23: ("float4e2m1", "ml_dtypes.float4_e2m1fn"),
    25: ("uint2", "ml_dtypes.uint2"),
    26: ("int2", "ml_dtypes.int2"),
}

# Bits per element of the sub-byte types, which ONNX (and Tessera) store packed.
_SUB_BYTE_BITS = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2}
_SIGNED_SUB_BYTE = {22, 26}


def _np_dtype(code: int) -> np.dtype:
    try:
        _, name = _DTYPES[code]
    except KeyError:
        raise UnsupportedError(f"dtype code {code} has no numpy equivalent in tessera") from None
    if name.startswith("ml_dtypes."):
        try:
            import ml_dtypes
        except ImportError:
            raise TesseraError(f"dtype {_DTYPES[code][0]} needs the ml_dtypes package (pip install ml_dtypes)") from None
        return np.dtype(getattr(ml_dtypes, name.split(".", 1)[1]))
    return np.dtype(name)


def _code_of(dtype: np.dtype) -> Optional[int]:
    for code in _DTYPES:
        try:
            if _np_dtype(code) == dtype:
                return code
        except TesseraError:
            continue
    return None


def _pack(a: np.ndarray, bits: int) -> np.ndarray:
    """Packs sub-byte values (one per byte, as ml_dtypes holds them) as ONNX does: low bits first."""
    per = 8 // bits
    v = np.ascontiguousarray(a).reshape(-1).view(np.uint8) & ((1 << bits) - 1)
    v = np.concatenate([v, np.zeros((-len(v)) % per, np.uint8)]).reshape(-1, per)
    out = np.zeros(len(v), np.uint8)
    for i in range(per):
        out |= v[:, i] << (bits * i)
    return out


def _unpack(packed: np.ndarray, code: int, shape: Sequence[int]) -> np.ndarray:
    bits = _SUB_BYTE_BITS[code]
    per = 8 // bits
    n = int(np.prod(shape, dtype=np.int64))
    mask = (1 << bits) - 1
    v = np.stack([(packed >> (bits * i)) & mask for i in range(per)], axis=1).reshape(-1)[:n]
    dt = _np_dtype(code)
    if code in _SIGNED_SUB_BYTE:
        signed = v.astype(np.int8)
        signed = np.where(signed >= (1 << (bits - 1)), signed - (1 << bits), signed).astype(np.int8)
        return signed.astype(dt).reshape(shape)
    if code == 23:  # float4e2m1: the 4-bit code is the value's encoding.
        return v.astype(np.uint8).view(dt).reshape(shape)
    return v.astype(np.uint8).astype(dt).reshape(shape)


class NodeArg:
    """An input or output of a model: ``name``, ``shape`` (list of ints), ``type`` (onnxruntime's
    spelling, e.g. ``"tensor(float)"``) and ``dtype`` (the numpy dtype of its arrays)."""

    __slots__ = ("name", "shape", "type", "dtype", "_code")

    def __init__(self, name: str, code: int, dims: Sequence[int]) -> None:
        self.name = name
        self.shape = [int(d) for d in dims]
        self.type = f"tensor({_DTYPES.get(code, ('unknown',))[0]})"
        self._code = code
        try:
            self.dtype = _np_dtype(code)
        except TesseraError:
            self.dtype = None

    def __repr__(self) -> str:
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape})"


class Artifact:
    """A compiled model for one target: its plan, constants and kernel code. Save it with
    :meth:`save`, read it back with :func:`load`, run it with :class:`InferenceSession`."""

    def __init__(self, native: "_native.NativeArtifact") -> None:
        self._native = native

    @property
    def target(self) -> str:
        """The target the artifact was compiled for (``"host"``, ``"interp"``)."""
        return self._native.target

    @property
    def num_kernels(self) -> int:
        """How many kernels it holds."""
        return self._native.num_kernels

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the ``.tsa`` file (atomically: a temporary file, then a rename)."""
        self._native.save(os.fspath(path))

    def to_bytes(self) -> bytes:
        """The ``.tsa`` file's contents."""
        return self._native.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Artifact":
        """Decodes and validates the contents of a ``.tsa`` file."""
        return cls(_native.artifact_from_bytes(bytes(data)))

    def __repr__(self) -> str:
        return f"<tessera.Artifact target={self.target!r} kernels={self.num_kernels}>"


def _example_inputs(inputs: Optional[Mapping[str, Any]]) -> Dict[str, tuple]:
    out = {}
    for name, value in (inputs or {}).items():
        a = np.asarray(value)
        code = _code_of(a.dtype)
        if code is None:
            raise InvalidInputError(f"input `{name}`: dtype {a.dtype} is not one Tessera supports")
        data = _pack(a, _SUB_BYTE_BITS[code]) if code in _SUB_BYTE_BITS else np.ascontiguousarray(a)
        out[name] = (code, [int(d) for d in a.shape], data.tobytes())
    return out


def compile(
    model: Any,
    target: str = "host",
    *,
    precision: Optional[str] = None,
    opt_level: Optional[int] = None,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    inputs: Optional[Mapping[str, Any]] = None,
) -> Artifact:
    """Compiles an ONNX model for ``target`` and returns the :class:`Artifact`.

    ``model`` is a path to an ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
    ``shapes`` gives concrete dims for inputs whose shapes are symbolic, e.g.
    ``{"input": [1, 3, 224, 224]}``. ``inputs`` are example values (numpy arrays) that fix
    shapes and bind the inputs that decide a shape (Reshape's ``shape``, …); running with
    another value for such an input is refused.

    ``precision`` and ``opt_level`` select optimizer policies; the optimizer does not exist yet,
    so any value other than ``None`` raises :class:`UnsupportedError`.
    """
    if precision is not None:
        raise UnsupportedError(f"precision={precision!r}: precision policies need the optimizer, which Tessera does not have yet")
    if opt_level is not None:
        raise UnsupportedError(f"opt_level={opt_level!r}: optimization levels need the optimizer, which Tessera does not have yet")
    shp = {str(k): [int(d) for d in v] for k, v in (shapes or {}).items()}
    ex = _example_inputs(inputs)
    if isinstance(model, (str, os.PathLike)):
        native = _native.compile(target, shp, ex, path=os.fspath(model))
    elif isinstance(model, (bytes, bytearray, memoryview)):
        native = _native.compile(target, shp, ex, data=bytes(model))
    elif hasattr(model, "SerializeToString"):
        native = _native.compile(target, shp, ex, data=model.SerializeToString())
    else:
        raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, not {type(model).__name__}")
    return Artifact(native)


def load(path: Union[str, os.PathLike], target: Optional[str] = None) -> Artifact:
    """Reads and validates a ``.tsa`` file. With ``target``, also checks it was compiled for it."""
    art = Artifact(_native.load_artifact(os.fspath(path)))
    if target is not None and art.target != target:
        raise TesseraError(f"{os.fspath(path)}: the artifact was compiled for target `{art.target}`, not `{target}`")
    return art


class InferenceSession:
    """A model loaded on a device, shaped like ``onnxruntime.InferenceSession``.

    ``model_or_artifact`` is an :class:`Artifact`, a ``.tsa`` path, or anything
    :func:`compile` takes (compiled now for ``target``; ``shapes`` and ``inputs`` are passed on).
    One session may be run from many threads at once; the GIL is released while it runs.
    """

    def __init__(
        self,
        model_or_artifact: Any,
        target: str = "host",
        *,
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
        inputs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if isinstance(model_or_artifact, Artifact):
            art = model_or_artifact
        elif isinstance(model_or_artifact, (str, os.PathLike)) and os.fspath(model_or_artifact).endswith(".tsa"):
            art = load(model_or_artifact)
        else:
            art = compile(model_or_artifact, target, shapes=shapes, inputs=inputs)
        self._artifact = art
        self._session = _native.Session(art._native, target)
        self._cycle_session: Optional[Any] = None
        self._cycle_lock = threading.Lock()
        self._inputs = [NodeArg(n, c, d) for n, c, d in self._session.inputs()]
        self._outputs = [NodeArg(n, c, d) for n, c, d in self._session.outputs()]

    @property
    def target(self) -> str:
        """The target the model runs on."""
        return self._session.target

    @property
    def artifact(self) -> Artifact:
        """The compiled artifact this session runs."""
        return self._artifact

    def get_inputs(self) -> List[NodeArg]:
        """The model's inputs, in order."""
        return list(self._inputs)

    def get_outputs(self) -> List[NodeArg]:
        """The model's outputs, in order."""
        return list(self._outputs)

    def _input_buffer(self, arg: NodeArg, value: Any) -> np.ndarray:
        a = np.asarray(value)
        if arg.dtype is None or a.dtype != arg.dtype:
            raise InvalidInputError(f"input `{arg.name}`: expected dtype {_DTYPES[arg._code][0]}, got {a.dtype}")
        if list(a.shape) != arg.shape:
            raise InvalidInputError(f"input `{arg.name}`: expected shape {arg.shape}, got {list(a.shape)}")
        if arg._code in _SUB_BYTE_BITS:
            return _pack(a, _SUB_BYTE_BITS[arg._code])
        # A C-contiguous array is passed in place (no copy); others are made contiguous.
        return np.ascontiguousarray(a).reshape(-1).view(np.uint8)

    def run(self, output_names: Optional[Sequence[str]], input_feed: Mapping[str, Any], run_options: Any = None) -> List[np.ndarray]:
        """Runs the model on ``input_feed`` ({name: array}) and returns the outputs named in
        ``output_names`` (all of them, in order, if ``None``) as numpy arrays."""
        return self._run(self._session, output_names, input_feed)

    def _run(self, session: Any, output_names: Optional[Sequence[str]], input_feed: Mapping[str, Any]) -> List[np.ndarray]:
        feed = dict(input_feed)
        bufs = []
        for arg in self._inputs:
            if arg.name not in feed:
                raise InvalidInputError(f"missing input `{arg.name}` ({_DTYPES[arg._code][0]} {arg.shape})")
            bufs.append(self._input_buffer(arg, feed.pop(arg.name)))
        if feed:
            raise InvalidInputError(f"the model has no input named `{sorted(feed)[0]}`")
        names = [o.name for o in self._outputs]
        wanted = list(output_names) if output_names else names
        for n in wanted:
            if n not in names:
                raise InvalidInputError(f"the model has no output named `{n}`")
        outs = []
        for o in self._outputs:
            n = int(np.prod(o.shape, dtype=np.int64))
            if o._code in _SUB_BYTE_BITS:
                outs.append(np.empty((n * _SUB_BYTE_BITS[o._code] + 7) // 8, np.uint8))
            else:
                outs.append(np.empty(o.shape, o.dtype))
        session.run_into(bufs, [a.reshape(-1).view(np.uint8) for a in outs])
        results = {}
        for o, a in zip(self._outputs, outs):
            results[o.name] = _unpack(a, o._code, o.shape) if o._code in _SUB_BYTE_BITS else a
        return [results[n] for n in wanted]

    def run_with_cycles(self, output_names: Optional[Sequence[str]], input_feed: Mapping[str, Any]) -> tuple:
        """On an npu-sim target (``npu-sim``, ``npu-sim-lite``), runs the model on the simulator
        in cycle mode and returns ``(outputs, report)``. ``report`` is a dict: ``total_cycles``,
        ``cube_utilisation`` (ideal Cube cycles over total cycles), ``macs_issued``,
        ``macs_useful``, ``ideal_cube_cycles``, ``pipes`` (``{name: {"busy", "stall"}}``),
        ``edges`` (``{"SRC->DST": {"bytes", "transfers"}}``) and ``kernels``, one dict per
        launch with the same fields and the kernel's name. Cycle mode is slower than the
        functional mode :meth:`run` uses; calls are serialised so reports never mix. Raises
        :class:`UnsupportedError` on any other target."""
        with self._cycle_lock:
            if self._cycle_session is None:
                self._cycle_session = _native.Session(self._artifact._native, self.target, True)
            self._cycle_session.take_cycles()
            outputs = self._run(self._cycle_session, output_names, input_feed)
            launches = self._cycle_session.take_cycles()
        return outputs, _cycle_report(launches)


def _cycle_report(launches: List[tuple]) -> Dict[str, Any]:
    """The dict :meth:`InferenceSession.run_with_cycles` returns, from the native per-launch
    tuples (kernel, total, pipes, edges, MACs issued, MACs useful, ideal Cube cycles)."""
    kernels = []
    total: Dict[str, Any] = {"total_cycles": 0, "macs_issued": 0, "macs_useful": 0, "ideal_cube_cycles": 0.0, "pipes": {}, "edges": {}}
    for name, cycles, pipes, edges, issued, useful, ideal in launches:
        k = {
            "kernel": name,
            "total_cycles": cycles,
            "macs_issued": issued,
            "macs_useful": useful,
            "ideal_cube_cycles": ideal,
            "cube_utilisation": ideal / max(cycles, 1),
            "pipes": {p: {"busy": b, "stall": s} for p, b, s in pipes},
            "edges": {f"{s}->{d}": {"bytes": n, "transfers": t} for s, d, n, t in edges},
        }
        kernels.append(k)
        for f in ("total_cycles", "macs_issued", "macs_useful", "ideal_cube_cycles"):
            total[f] += k[f]
        for p, v in k["pipes"].items():
            acc = total["pipes"].setdefault(p, {"busy": 0, "stall": 0})
            acc["busy"] += v["busy"]
            acc["stall"] += v["stall"]
        for e, v in k["edges"].items():
            acc = total["edges"].setdefault(e, {"bytes": 0, "transfers": 0})
            acc["bytes"] += v["bytes"]
            acc["transfers"] += v["transfers"]
    total["cube_utilisation"] = total["ideal_cube_cycles"] / max(total["total_cycles"], 1)
    total["kernels"] = kernels
    return total


def targets() -> List[Dict[str, Any]]:
    """Every target Tessera knows: ``name``, ``description``, ``available`` (built and usable
    here) and ``feature`` (the cargo feature it needs, or ``None``)."""
    return [
        {"name": n, "description": d, "available": a, "feature": f}
        for n, d, a, f in _native.targets()
    ]


def conformance(
    target: str = "host",
    filter: Optional[str] = None,
    *,
    data: Union[str, os.PathLike] = "tests/data/node-cache",
    jobs: Optional[int] = None,
) -> Dict[str, Any]:
    """Runs the ONNX backend node tests in ``data`` (made by ``scripts/gen-node-tests.sh``) on
    ``target``, those whose name matches the regular expression ``filter`` if given, and returns
    the report ``tessera conformance`` writes: a dict with ``target``, ``summary`` and one entry
    per test in ``cases``."""
    report = _native.conformance(target, os.fspath(data), filter, jobs or os.cpu_count() or 1)
    return json.loads(report)
