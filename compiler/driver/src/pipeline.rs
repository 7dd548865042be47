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
    let io = tessera_onnx::ImportOptions {
        input_shapes: opts.input_shapes.clone(),
        bound_inputs: opts.bound_inputs.clone(),
    };
    let graph = tessera_onnx::import_file(model, &io)?;
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
    let t = targets::lookup(target)?;
    let program = tessera_lower::lower(graph, t.desc())?;
    let mut kernels = Vec::with_capacity(program.kernels.len());
    for k in &program.kernels {
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
    }
    Ok(Artifact {
        target: target.to_string(),
        fingerprint: t.fingerprint(),
        source: source.to_string(),
        plan: program.plan,
        kernels,
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
