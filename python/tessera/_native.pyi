"""Type stubs for tessera._native, the PyO3 module under the tessera package. Use the
package's API (tessera.compile, tessera.InferenceSession, ...); this layer sees bytes, ONNX
dtype codes and dims only."""

from typing import Dict, List, Optional, Tuple

class TesseraError(Exception):
    """Base class of every error Tessera raises."""

class UnsupportedError(TesseraError):
    """An op, dtype, attribute, option or target Tessera does not support (yet)."""

class InvalidModelError(TesseraError):
    """A model or artifact that is malformed, inconsistent or corrupt."""

class InvalidInputError(TesseraError):
    """Inputs that do not fit the model: missing, unknown, wrong dtype, shape or size."""

class NativeArtifact:
    """A compiled model: the plan, constants and one code blob per kernel, for one target."""
    @property
    def target(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def num_kernels(self) -> int: ...
    def to_bytes(self) -> bytes: ...
    def save(self, path: str) -> None: ...

class Session:
    """A model loaded on its device, ready to run from many threads at once."""
    def __init__(self, artifact: NativeArtifact, target: str, cycles: bool = False) -> None: ...
    @property
    def target(self) -> str: ...
    def inputs(self) -> List[Tuple[str, int, List[int]]]: ...
    def outputs(self) -> List[Tuple[str, int, List[int]]]: ...
    def run_into(self, inputs: List[object], outputs: List[object]) -> None:
        """Runs on C-contiguous byte buffers (inputs read in place, outputs written in place),
        with the GIL released."""
    def take_cycles(
        self,
    ) -> List[Tuple[str, int, List[Tuple[str, int, int]], List[Tuple[str, str, int, int]], int, int, float]]:
        """Cycle mode only: one (kernel, total cycles, pipes, edges, MACs issued, MACs useful,
        ideal Cube cycles) per launch since the last call."""

def compile(
    target: str,
    shapes: Dict[str, List[int]],
    inputs: Dict[str, Tuple[int, List[int], bytes]],
    path: Optional[str] = None,
    data: Optional[bytes] = None,
    model_dir: Optional[str] = None,
) -> NativeArtifact: ...
def artifact_from_bytes(data: bytes) -> NativeArtifact: ...
def load_artifact(path: str) -> NativeArtifact: ...
def targets() -> List[Tuple[str, str, bool, Optional[str]]]: ...
def conformance(target: str, data: str, filter: Optional[str] = None, jobs: int = 1) -> str: ...
def version() -> str: ...
