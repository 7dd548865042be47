#!/usr/bin/env bash
# Create/refresh the Python virtualenv used by Tessera's test-data generators.
#
# Idempotent: the venv lives at <repo>/.venv and holds a stamp file with the
# sha256 of tests/python/requirements.txt; when it matches, this is a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/tests/python/requirements.txt"
STAMP="$VENV/.tessera-requirements.sha256"
PYTHON="${PYTHON:-python3}"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    exit 0
fi

echo "setup-python: installing $REQ into $VENV" >&2
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$STAMP"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
# Sanity: the pinned packages import and agree with the pins.
"$VENV/bin/python" - "$REQ" <<'PY'
import sys
from importlib.metadata import version
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, ver = line.partition("==")
        pins[name.strip()] = ver.strip()
bad = {n: (v, version(n)) for n, v in pins.items() if version(n) != v}
if bad:
    sys.exit(f"setup-python: version mismatch (pinned, installed): {bad}")
import numpy, onnx, onnxruntime  # noqa: F401,E401
PY
echo "$want" > "$STAMP"
echo "setup-python: ready ($VENV)" >&2
