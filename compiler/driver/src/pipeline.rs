//! The compile pipeline: ONNX file → graph IR → kernels + plan → code blobs → [`Artifact`].
//! This is the API boundary the CLI, the conformance harness and embedders call.

use crate::targets;
use crate::DriverError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tessera_ir::{Graph, Tensor};
use tessera_runtime::artifact::StoredKernel;
use tessera_runtime::{Artifact, Model};

/// What to compile for.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub target: String,
    /// Concrete shapes for inputs whose model shapes are symbolic (or to override them).
    pub input_shapes: BTreeMap<String, Vec<u64>>,
    /// Input values known at compile time. Only inputs that decide a shape (Reshape's `shape`,
    /// Slice's `starts`, …) are bound; the rest stay runtime inputs.
    pub bound_inputs: BTreeMap<String, Tensor>,
}

impl CompileOptions {
    pub fn for_target(target: &str) -> CompileOptions {
        CompileOptions {
            target: target.to_string(),
            ..CompileOptions::default()
        }
    }

    /// Shapes and shape-deciding values from a set of example inputs.
    pub fn with_inputs(mut self, inputs: &BTreeMap<String, Tensor>) -> CompileOptions {
        for (name, t) in inputs {
            self.input_shapes.insert(name.clone(), t.dims.clone());
            self.bound_inputs.insert(name.clone(), t.clone());
        }
        self
    }
}

/// Imports an ONNX file into graph IR with static shapes.
pub fn import(model: &Path, opts: &CompileOptions) -> Result<Graph, DriverError> {
    let graph = tessera_onnx::import_file(model, &import_options(opts))?;
    check_static_inputs(graph)
}

fn import_options(opts: &CompileOptions) -> tessera_onnx::ImportOptions {
    tessera_onnx::ImportOptions {
        input_shapes: opts.input_shapes.clone(),
        bound_inputs: opts.bound_inputs.clone(),
    }
}

/// Refuses a graph whose inputs still have symbolic shapes after import.
fn check_static_inputs(graph: Graph) -> Result<Graph, DriverError> {
    for &v in &graph.inputs {
        let val = graph.value(v);
        if let Some(ty) = &val.ty {
            if !ty.shape.is_static() {
                return Err(DriverError::Usage(format!(
                    "input `{}` has symbolic shape {}; give concrete inputs to fix it",
                    val.name, ty.shape
                )));
            }
        }
    }
    Ok(graph)
}

/// Compiles a graph for `target` into an artifact.
pub fn compile_graph(graph: &Graph, source: &str, target: &str) -> Result<Artifact, DriverError> {
    Ok(compile_graph_traced(graph, source, target, &mut |_| {})?.artifact)
}

/// A step of compilation, reported to the callback of [`compile_graph_traced`] (the CLI's
/// progress bar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Lowering finished with this many kernels to compile.
    Lowered { kernels: usize },
    /// Kernel `done` of `total` has been compiled (1-based).
    Kernel { done: usize, total: usize },
}

/// What [`compile_graph_traced`] returns: the artifact, plus the kernel IR behind each code
/// blob and, for each graph node in order, the range of kernel indices it became.
pub struct Compiled {
    pub artifact: Artifact,
    pub kernels: Vec<tessera_kir::Kernel>,
    pub node_kernels: Vec<std::ops::Range<usize>>,
}

/// [`compile_graph`], reporting progress and keeping what `tessera show` draws.
pub fn compile_graph_traced(
    graph: &Graph,
    source: &str,
    target: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<Compiled, DriverError> {
    let t = targets::lookup(target)?;
    let (program, node_kernels) = tessera_lower::lower_traced(graph, t.desc())?;
    progress(Progress::Lowered {
        kernels: program.kernels.len(),
    });
    let mut kernels = Vec::with_capacity(program.kernels.len());
    for (i, k) in program.kernels.iter().enumerate() {
        tessera_kir::verify::verify(k).map_err(|e| {
            DriverError::Internal(format!("lowering produced an invalid kernel: {e}"))
        })?;
        let blob = t.compile(k)?;
        let param_bytes = k
            .params()
            .iter()
            .map(|p| p.dtype.storage_bytes(p.len))
            .collect();
        kernels.push(StoredKernel {
            name: k.name.clone(),
            param_bytes,
            blob: blob.code,
        });
        progress(Progress::Kernel {
            done: i + 1,
            total: program.kernels.len(),
        });
    }
    let artifact = Artifact {
        target: target.to_string(),
        fingerprint: t.fingerprint(),
        source: source.to_string(),
        plan: program.plan,
        kernels,
    };
    Ok(Compiled {
        artifact,
        kernels: program.kernels,
        node_kernels,
    })
}

/// Imports and compiles an ONNX file.
pub fn compile_file(model: &Path, opts: &CompileOptions) -> Result<Artifact, DriverError> {
    let graph = import(model, opts)?;
    compile_graph(&graph, &model.display().to_string(), &opts.target)
}

/// Writes `artifact` to `path` atomically: a temporary file in the same folder, then a rename,
/// so a failed write never leaves a partial artifact behind.
pub fn write_artifact(path: &Path, artifact: &Artifact) -> Result<(), DriverError> {
    write_atomic(path, &artifact.encode())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DriverError> {
    let io = |e: std::io::Error| DriverError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Loads an artifact on the device of its target (or of `target`, which must agree).
pub fn load(artifact: Artifact, target: &str) -> Result<Model, DriverError> {
    let device = targets::device(target)?;
    Ok(Model::load(artifact, device)?)
}

/// Loads a `.tsa` file for `target`.
pub fn load_file(path: &Path, target: &str) -> Result<Model, DriverError> {
    let device: Arc<dyn tessera_runtime::Device> = targets::device(target)?;
    Ok(Model::load_file(path, device)?)
}

/// Imports a serialized ONNX model (the bytes of an `.onnx` file) into graph IR with static
/// shapes. External data is looked up in `model_dir`; `None` refuses it.
pub fn import_bytes(
    bytes: &[u8],
    model_dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<Graph, DriverError> {
    check_static_inputs(tessera_onnx::import_bytes(
        bytes,
        model_dir,
        &import_options(opts),
    )?)
}

/// Imports and compiles a serialized ONNX model; `source` names it in the artifact and in errors.
pub fn compile_bytes(
    bytes: &[u8],
    source: &str,
    model_dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<Artifact, DriverError> {
    let graph = import_bytes(bytes, model_dir, opts)?;
    compile_graph(&graph, source, &opts.target)
}
