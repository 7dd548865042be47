//! `tessera._native`: the PyO3 module under the `tessera` Python package (`python/tessera/`).
//! It exposes the driver (compile, load, conformance, targets) and the runtime (`Session`,
//! a loaded model run on caller-provided buffers with the GIL released). The Python layer
//! turns numpy arrays into byte buffers and back; this module only sees bytes, dtype codes
//! (ONNX `TensorProto.DataType`) and dims. Errors become the package's exception classes with
//! the CLI's messages.

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera_driver::{CompileOptions, DriverError};
use tessera_ir::{DType, Tensor};
use tessera_runtime::{Artifact, Model, RuntimeError};

create_exception!(
    _native,
    TesseraError,
    PyException,
    "Base class of every error Tessera raises."
);
create_exception!(
    _native,
    UnsupportedError,
    TesseraError,
    "An op, dtype, attribute, option or target Tessera does not support (yet)."
);
create_exception!(
    _native,
    InvalidModelError,
    TesseraError,
    "A model or artifact that is malformed, inconsistent or corrupt."
);
create_exception!(
    _native,
    InvalidInputError,
    TesseraError,
    "Inputs that do not fit the model: missing, unknown, wrong dtype, shape or size."
);

/// Maps a driver error onto the exception hierarchy; the message is the CLI's.
fn py_err(e: DriverError) -> PyErr {
    let msg = e.to_string();
    if e.is_unsupported() {
        return UnsupportedError::new_err(msg);
    }
    match &e {
        DriverError::Onnx(_) | DriverError::Lower(_) => InvalidModelError::new_err(msg),
        DriverError::Runtime(r) => runtime_err(r, msg),
        DriverError::Usage(_) => InvalidInputError::new_err(msg),
        _ => TesseraError::new_err(msg),
    }
}

fn runtime_err(e: &RuntimeError, msg: String) -> PyErr {
    match e {
        RuntimeError::BadArtifact(_) | RuntimeError::DigestMismatch { .. } => {
            InvalidModelError::new_err(msg)
        }
        RuntimeError::Input { .. }
        | RuntimeError::Output { .. }
        | RuntimeError::Data { .. }
        | RuntimeError::Execution(_) => InvalidInputError::new_err(msg),
        _ => TesseraError::new_err(msg),
    }
}

fn rt(e: RuntimeError) -> PyErr {
    py_err(DriverError::Runtime(e))
}

/// A compiled model: the plan, constants and one code blob per kernel, for one target.
#[pyclass(frozen, module = "tessera._native")]
pub struct NativeArtifact {
    artifact: Artifact,
}

#[pymethods]
impl NativeArtifact {
    /// The target the artifact was compiled for.
    #[getter]
    fn target(&self) -> &str {
        &self.artifact.target
    }

    /// The model it was compiled from (a path, or `<model bytes>`).
    #[getter]
    fn source(&self) -> &str {
        &self.artifact.source
    }

    /// The number of kernels.
    #[getter]
    fn num_kernels(&self) -> usize {
        self.artifact.kernels.len()
    }

    /// The encoded `.tsa` file contents.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.artifact.encode())
    }

    /// Writes the `.tsa` file atomically.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        tessera_driver::write_artifact(&path, &self.artifact).map_err(py_err)
    }
}

/// Decodes the contents of a `.tsa` file.
#[pyfunction]
fn artifact_from_bytes(data: &[u8]) -> PyResult<NativeArtifact> {
    Ok(NativeArtifact {
        artifact: Artifact::decode(data).map_err(rt)?,
    })
}

/// Reads and validates a `.tsa` file.
#[pyfunction]
fn load_artifact(path: PathBuf) -> PyResult<NativeArtifact> {
    Ok(NativeArtifact {
        artifact: Artifact::read(&path).map_err(rt)?,
    })
}

/// Compiles an ONNX model, given as a file `path` or as serialized `data`. `shapes` gives
/// concrete dims for symbolic inputs; `inputs` maps names to (dtype code, dims, bytes) example
/// values, which fix shapes and bind inputs that decide a shape; `model_dir` is where the
/// external data of `data` lives.
#[pyfunction]
#[pyo3(signature = (target, shapes, inputs, path=None, data=None, model_dir=None))]
fn compile(
    py: Python<'_>,
    target: String,
    shapes: BTreeMap<String, Vec<u64>>,
    inputs: BTreeMap<String, (i32, Vec<u64>, Vec<u8>)>,
    path: Option<PathBuf>,
    data: Option<&[u8]>,
    model_dir: Option<PathBuf>,
) -> PyResult<NativeArtifact> {
    let mut named = BTreeMap::new();
    for (name, (code, dims, bytes)) in inputs {
        named.insert(name.clone(), tensor(&name, code, dims, bytes)?);
    }
    let mut opts = CompileOptions::for_target(&target).with_inputs(&named);
    opts.input_shapes.extend(shapes);
    let artifact = match (path, data) {
        (Some(path), None) => py.detach(|| tessera_driver::compile_file(&path, &opts)),
        (None, Some(bytes)) => py.detach(|| {
            tessera_driver::compile_bytes(bytes, "<model bytes>", model_dir.as_deref(), &opts)
        }),
        _ => {
            return Err(TesseraError::new_err(
                "compile: give exactly one of `path` and `data`",
            ))
        }
    }
    .map_err(py_err)?;
    Ok(NativeArtifact { artifact })
}

fn tensor(name: &str, code: i32, dims: Vec<u64>, bytes: Vec<u8>) -> PyResult<Tensor> {
    let dtype = DType::from_onnx(code).ok_or_else(|| {
        UnsupportedError::new_err(format!(
            "input `{name}`: dtype code {code} is not supported"
        ))
    })?;
    let need = dtype.storage_bytes(dims.iter().product());
    if bytes.len() as u64 != need {
        return Err(InvalidInputError::new_err(format!(
            "input `{name}`: holds {} bytes, its shape ({dtype} {dims:?}) needs {need}",
            bytes.len()
        )));
    }
    Ok(Tensor::new(dtype, dims, bytes))
}

/// A model loaded on its device, ready to run from many threads at once.
#[pyclass(frozen, module = "tessera._native")]
pub struct Session {
    model: Model,
    /// In cycle mode (npu-sim targets only): the device, which keeps a report per launch.
    npu: Option<tessera_npu_sim::NpuSimDevice>,
}

/// One kernel launch's cycle report: kernel, total cycles, (pipe, busy, stall) per pipe,
/// (src, dst, bytes, transfers) per DMA edge, MACs issued and useful, ideal Cube cycles.
type LaunchCycles = (
    String,
    u64,
    Vec<(String, u64, u64)>,
    Vec<(String, String, u64, u64)>,
    u64,
    u64,
    f64,
);

/// A buffer's address and length, carried into the GIL-free part of a run.
struct Raw(usize, usize);

#[pymethods]
impl Session {
    /// Loads `artifact` on the device of `target`; with `cycles`, on an npu-sim device in
    /// cycle mode, whose reports [`Session::take_cycles`] returns.
    #[new]
    #[pyo3(signature = (artifact, target, cycles = false))]
    fn new(
        py: Python<'_>,
        artifact: &NativeArtifact,
        target: String,
        cycles: bool,
    ) -> PyResult<Session> {
        let a = artifact.artifact.clone();
        if !cycles {
            let model = py
                .detach(|| tessera_driver::load(a, &target))
                .map_err(py_err)?;
            return Ok(Session { model, npu: None });
        }
        let npu = tessera_driver::targets::npu_sim_device(&target, tessera_npu_sim::Mode::Cycle)
            .map_err(|e| py_err(DriverError::from(e)))?
            .ok_or_else(|| {
                UnsupportedError::new_err(format!(
                    "run_with_cycles needs an npu-sim target (npu-sim, npu-sim-lite), not `{target}`"
                ))
            })?;
        let dev: std::sync::Arc<dyn tessera_runtime::Device> = std::sync::Arc::new(npu.clone());
        let model = py.detach(|| Model::load(a, dev)).map_err(rt)?;
        Ok(Session {
            model,
            npu: Some(npu),
        })
    }

    /// The cycle reports of every launch since the last call (cycle mode only; else empty).
    fn take_cycles(&self) -> Vec<LaunchCycles> {
        let Some(npu) = &self.npu else {
            return Vec::new();
        };
        npu.take_reports()
            .into_iter()
            .map(|l| {
                let r = l.report;
                let pipes = r
                    .pipes
                    .iter()
                    .map(|p| (p.pipe.name().to_string(), p.busy, p.stall))
                    .collect();
                let edges = r
                    .edges
                    .iter()
                    .map(|e| {
                        (
                            e.src.name().to_string(),
                            e.dst.name().to_string(),
                            e.bytes,
                            e.transfers,
                        )
                    })
                    .collect();
                (
                    l.kernel,
                    r.total_cycles,
                    pipes,
                    edges,
                    r.macs_issued,
                    r.macs_useful,
                    r.ideal_cube_cycles,
                )
            })
            .collect()
    }

    /// The inputs as (name, dtype code, dims), in order.
    fn inputs(&self) -> Vec<(String, i32, Vec<u64>)> {
        self.model
            .inputs()
            .iter()
            .map(|io| (io.name.clone(), io.dtype.to_onnx(), io.dims.clone()))
            .collect()
    }

    /// The outputs as (name, dtype code, dims), in order.
    fn outputs(&self) -> Vec<(String, i32, Vec<u64>)> {
        self.model
            .outputs()
            .iter()
            .map(|io| (io.name.clone(), io.dtype.to_onnx(), io.dims.clone()))
            .collect()
    }

    /// The target the model runs on.
    #[getter]
    fn target(&self) -> String {
        self.model.device().target().to_string()
    }

    /// Runs the model: `inputs` are C-contiguous byte buffers (one per input, in order),
    /// `outputs` writable C-contiguous byte buffers sized for each output. The GIL is released
    /// while the model runs; inputs are read in place.
    fn run_into(
        &self,
        py: Python<'_>,
        inputs: Vec<Bound<'_, PyAny>>,
        outputs: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let mut held = Vec::with_capacity(inputs.len() + outputs.len());
        let mut ins = Vec::with_capacity(inputs.len());
        let mut outs = Vec::with_capacity(outputs.len());
        for (k, obj) in inputs.iter().enumerate() {
            let b = byte_buffer(
                obj,
                &self
                    .model
                    .inputs()
                    .get(k)
                    .map(|io| io.name.clone())
                    .unwrap_or_default(),
                "input",
            )?;
            ins.push(Raw(b.buf_ptr() as usize, b.len_bytes()));
            held.push(b);
        }
        for (k, obj) in outputs.iter().enumerate() {
            let name = self
                .model
                .outputs()
                .get(k)
                .map(|io| io.name.clone())
                .unwrap_or_default();
            let b = byte_buffer(obj, &name, "output")?;
            if b.readonly() {
                return Err(TesseraError::new_err(format!(
                    "output `{name}`: the buffer is read-only"
                )));
            }
            outs.push(Raw(b.buf_ptr() as usize, b.len_bytes()));
            held.push(b);
        }
        let model = &self.model;
        py.detach(move || {
            // SAFETY: every buffer is held (`held`) until this returns, so the memory stays
            // valid; the outputs are writable buffers the Python layer just allocated.
            let in_slices: Vec<&[u8]> = ins.iter().map(|r| unsafe { slice(r) }).collect();
            let mut out_slices: Vec<&mut [u8]> =
                outs.iter().map(|r| unsafe { slice_mut(r) }).collect();
            model.run_into(&in_slices, &mut out_slices)
        })
        .map_err(rt)?;
        drop(held);
        Ok(())
    }
}

/// # Safety
/// `r` describes live memory valid for reads.
unsafe fn slice<'a>(r: &Raw) -> &'a [u8] {
    if r.1 == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(r.0 as *const u8, r.1)
    }
}

/// # Safety
/// `r` describes live memory valid for writes, not aliased elsewhere during the run.
unsafe fn slice_mut<'a>(r: &Raw) -> &'a mut [u8] {
    if r.1 == 0 {
        &mut []
    } else {
        std::slice::from_raw_parts_mut(r.0 as *mut u8, r.1)
    }
}

fn byte_buffer(obj: &Bound<'_, PyAny>, name: &str, what: &str) -> PyResult<PyBuffer<u8>> {
    let b = PyBuffer::<u8>::get(obj)
        .map_err(|e| TesseraError::new_err(format!("{what} `{name}`: not a byte buffer: {e}")))?;
    if !b.is_c_contiguous() {
        return Err(TesseraError::new_err(format!(
            "{what} `{name}`: the buffer is not contiguous"
        )));
    }
    Ok(b)
}

/// Every target: (name, description, available in this build, cargo feature or None).
#[pyfunction]
fn targets() -> Vec<(String, String, bool, Option<String>)> {
    tessera_driver::targets::all()
        .into_iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.description.to_string(),
                t.available,
                t.feature.map(str::to_string),
            )
        })
        .collect()
}

/// Runs the ONNX node tests under `data` on `target` and returns the JSON report.
#[pyfunction]
#[pyo3(signature = (target, data, filter=None, jobs=1))]
fn conformance(
    py: Python<'_>,
    target: String,
    data: PathBuf,
    filter: Option<String>,
    jobs: usize,
) -> PyResult<String> {
    let re = filter
        .map(|f| {
            regex::Regex::new(&f).map_err(|e| InvalidInputError::new_err(format!("filter: {e}")))
        })
        .transpose()?;
    if !Path::new(&data).is_dir() {
        return Err(TesseraError::new_err(format!(
            "{} does not exist; run scripts/gen-node-tests.sh first",
            data.display()
        )));
    }
    let results = py
        .detach(|| {
            tessera_driver::conformance::run_suite(&data, &target, re.as_ref(), jobs.max(1), None)
        })
        .map_err(py_err)?;
    Ok(tessera_driver::conformance::report_json(&target, &results))
}

/// The package version.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TesseraError", py.get_type::<TesseraError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("InvalidModelError", py.get_type::<InvalidModelError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add_class::<NativeArtifact>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(artifact_from_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(load_artifact, m)?)?;
    m.add_function(wrap_pyfunction!(targets, m)?)?;
    m.add_function(wrap_pyfunction!(conformance, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
