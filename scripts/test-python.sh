#!/usr/bin/env bash
# Builds and installs the Python package (python/, PyO3 + maturin, cargo's dev profile) into
# the project venv and runs its pytest suite (tests/python/pkg). Called by scripts/test.sh
# after the Rust tests, so the package build reuses their compiled crates.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-python.sh
# --no-build-isolation: build with the venv's pinned maturin rather than fetching one.
PATH="$root/.venv/bin:$PATH" .venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps ./python
.venv/bin/python -m pytest -q tests/python/pkg "$@"
