"""Generate the ONNX backend *node* test cases for Tessera's conformance tests.

Usage: gen_node_tests.py OUTDIR [--seed N] [--expected-count N] [--force]
                                [--check-determinism]

Runs the generators of the installed ``onnx`` package
(``onnx.backend.test.case.node``) and writes, for every test case::

    OUTDIR/<test_name>/model.onnx
    OUTDIR/<test_name>/test_data_set_N/input_K.pb    (serialized TensorProto,
    OUTDIR/<test_name>/test_data_set_N/output_K.pb    SequenceProto, MapProto
                                                      or OptionalProto)

with the same per-value encoding as ``onnx.backend.test.cmd_tools``.

Determinism. The generators run at import time, one ``export_*`` static
method at a time (see ``onnx.backend.test.case.base._Exporter``). Before each
``export_*`` call this script seeds every random source, so that a case's data
depends only on the seed and on its own generator, never on which other
generators ran before it:

* ``np.random`` (legacy global state) is seeded with ``--seed`` (default 0);
  upstream onnx's exporter does the same with 0, so with the default seed the
  data equal those of onnx's own generators;
* ``np.random.default_rng()`` called *without* a seed returns a generator
  seeded from (seed, crc32 of the exporter's qualified name, call number);
* Python's ``random`` is seeded from the seed and the exporter's name.

``PYTHONHASHSEED`` is pinned to 0 (the script re-executes itself if needed),
protobuf messages are serialized deterministically, and Pillow is deliberately
not installed so ImageDecoder tests use onnx's frozen data.

Output is written atomically: into ``OUTDIR.tmp``, then renamed to OUTDIR.
``OUTDIR/.stamp`` (JSON: generator, this script's sha256, onnx and numpy
versions, seed, count) lets callers skip regeneration; an OUTDIR whose stamp
matches is left alone unless ``--force``. ``OUTDIR/.gitignore`` (``*``) keeps
the generated data out of git.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
import zlib

EXPECTED_COUNT = 1884  # node test cases produced by onnx 1.23.2
STAMP_NAME = ".stamp"
GENERATOR_ID = "tessera-gen-node-tests/1"


def _reexec_with_fixed_hash_seed() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _install_seeding(seed: int) -> None:
    """Make every ``export_*`` generator run with freshly seeded RNGs."""
    import numpy as np

    import onnx.backend.test.case.base as base

    original_default_rng = np.random.default_rng
    state = {"key": "<none>", "calls": 0}

    def seeded_default_rng(seed_arg=None, *args, **kwargs):
        if seed_arg is None and not args and not kwargs:
            state["calls"] += 1
            key_crc = zlib.crc32(state["key"].encode())
            return original_default_rng([seed, key_crc, state["calls"]])
        return original_default_rng(seed_arg, *args, **kwargs)

    np.random.default_rng = seeded_default_rng

    def exporter_init(cls, name, bases, dct):
        for k, v in dct.items():
            if not k.startswith("export"):
                continue
            if not isinstance(v, staticmethod):
                raise ValueError("Only staticmethods could be named as export.*")
            export = getattr(cls, k)
            base.Snippets[name].append(base.process_snippet(name, k, export))
            key = f"{cls.__module__}.{name}.{k}"
            state["key"], state["calls"] = key, 0
            np.random.seed(seed)
            random.seed(f"{seed}:{key}", version=2)
            export()
        type.__init__(cls, name, bases, dct)

    base._Exporter.__init__ = exporter_init


def _collect_cases(seed: int):
    _install_seeding(seed)
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        # The generators deliberately overflow casts, divide by zero, etc.
        warnings.simplefilter("ignore")
        cases = node.collect_testcases()
    names = [c.name for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SystemExit(f"duplicate test names: {sorted(dup)[:10]}")
    return cases


def _serialize_value(value, type_proto, name: str) -> bytes:
    from onnx import TensorProto, numpy_helper

    if type_proto.HasField("map_type"):
        msg = numpy_helper.from_dict(value, name)
    elif type_proto.HasField("sequence_type"):
        msg = numpy_helper.from_list(value, name)
    elif type_proto.HasField("optional_type"):
        msg = numpy_helper.from_optional(value, name)
    else:
        assert type_proto.HasField("tensor_type"), name
        msg = value if isinstance(value, TensorProto) else numpy_helper.from_array(value, name)
    return msg.SerializeToString(deterministic=True)


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def write_cases(cases, outdir: str) -> None:
    for case in cases:
        assert case.kind == "node" and case.model is not None, case.name
        case_dir = os.path.join(outdir, case.name)
        os.makedirs(case_dir)
        _write(os.path.join(case_dir, "model.onnx"), case.model.SerializeToString(deterministic=True))
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(ds)
            for j, value in enumerate(inputs):
                vi = graph.input[j]
                _write(os.path.join(ds, f"input_{j}.pb"), _serialize_value(value, vi.type, vi.name))
            for j, value in enumerate(outputs):
                vi = graph.output[j]
                _write(os.path.join(ds, f"output_{j}.pb"), _serialize_value(value, vi.type, vi.name))


def _script_sha256() -> str:
    import hashlib

    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def stamp_for(seed: int, count: int) -> dict:
    import numpy as np

    import onnx

    return {
        "generator": GENERATOR_ID,
        "script_sha256": _script_sha256(),
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "seed": seed,
        "count": count,
    }


def stamp_is_current(outdir: str, seed: int) -> bool:
    try:
        with open(os.path.join(outdir, STAMP_NAME)) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return False
    want = stamp_for(seed, st.get("count"))
    return st == want


def _dirs_identical(a: str, b: str) -> list[str]:
    """Return the relative paths that differ between trees a and b (empty if equal)."""
    diffs = []
    for root, dirs, files in os.walk(a):
        dirs.sort()
        rel = os.path.relpath(root, a)
        other = os.path.join(b, rel)
        if not os.path.isdir(other):
            diffs.append(rel)
            continue
        extra = set(os.listdir(other)) - set(dirs) - set(files)
        diffs.extend(os.path.join(rel, e) for e in sorted(extra))
        for f in files:
            p = os.path.join(other, f)
            if not os.path.isfile(p) or not filecmp.cmp(os.path.join(root, f), p, shallow=False):
                diffs.append(os.path.join(rel, f))
    return diffs


def check_determinism(outdir: str, seed: int) -> int:
    """Regenerate in a fresh interpreter and compare byte for byte with outdir."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="node-determinism-") as tmp:
        other = os.path.join(tmp, "node")
        cmd = [sys.executable, os.path.abspath(__file__), other, "--seed", str(seed),
               "--expected-count", "0"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        diffs = _dirs_identical(outdir, other) + _dirs_identical(other, outdir)
    if diffs:
        print(f"determinism check FAILED: {len(diffs)} differing paths, e.g. {diffs[:10]}",
              file=sys.stderr)
        return 1
    print("determinism check passed: second run is byte-identical")
    return 0


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
    ap.add_argument("--expected-count", type=int, default=EXPECTED_COUNT,
                    help="fail unless exactly this many cases are produced (0: don't check)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the stamp is current")
    ap.add_argument("--check-determinism", action="store_true",
                    help="also regenerate in a second process and compare byte for byte")
    args = ap.parse_args()
    outdir = os.path.abspath(args.outdir.rstrip("/"))

    if not args.force and stamp_is_current(outdir, args.seed):
        with open(os.path.join(outdir, STAMP_NAME)) as f:
            count = json.load(f)["count"]
        print(f"node tests up to date: {count} cases in {outdir}")
        return check_determinism(outdir, args.seed) if args.check_determinism else 0

    t0 = time.monotonic()
    cases = _collect_cases(args.seed)
    if args.expected_count and len(cases) != args.expected_count:
        print(f"error: generated {len(cases)} node tests, expected {args.expected_count}",
              file=sys.stderr)
        return 1

    tmp = outdir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        _write_gitignore(tmp)
        write_cases(cases, tmp)
        with open(os.path.join(tmp, STAMP_NAME), "w") as f:
            json.dump(stamp_for(args.seed, len(cases)), f, indent=1, sort_keys=True)
            f.write("\n")
        _replace_dir(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"generated {len(cases)} node tests into {outdir} in {time.monotonic() - t0:.1f}s")
    return check_determinism(outdir, args.seed) if args.check_determinism else 0


if __name__ == "__main__":
    _reexec_with_fixed_hash_seed()
    sys.exit(main())
