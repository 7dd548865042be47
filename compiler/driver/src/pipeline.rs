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
    /// Custom-op files (`.tk`) or folders of them: hand-written kernels bound to ONNX ops.
    pub custom_ops: Vec<std::path::PathBuf>,
    /// Treat an opset newer than the newest Tessera knows as that newest opset instead of
    /// refusing the model (see [`newer_opsets`] for what it overrides).
    pub allow_newer_opset: bool,
    /// How hard the e-graph optimizer works (`--opt-level`; 0 skips it, 1 is the default).
    pub opt_level: tessera_opt::OptLevel,
    /// Which dtypes the optimizer may change (`--precision`; `exact` never changes one).
    pub precision: tessera_opt::Precision,
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

/// Reads custom-op files: each path is a `.tk` file or a folder whose `.tk` files are read in
/// name order. Two definitions of one `(domain, op_type)` are an error.
pub fn load_custom_ops(
    paths: &[std::path::PathBuf],
) -> Result<Vec<tessera_ir::custom::CustomOp>, DriverError> {
    let io = |p: &Path, e: std::io::Error| DriverError::Io {
        path: p.display().to_string(),
        message: e.to_string(),
    };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut in_dir: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "tk"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    let mut ops: Vec<tessera_ir::custom::CustomOp> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| io(&f, e))?;
        let op = tessera_ir::custom::CustomOp::parse(&text)
            .map_err(|e| DriverError::Usage(format!("custom op file `{}`: {e}", f.display())))?;
        if ops
            .iter()
            .any(|o| o.domain == op.domain && o.op_type == op.op_type)
        {
            return Err(DriverError::Usage(format!(
                "custom op file `{}`: op `{}` of domain \"{}\" is defined twice",
                f.display(),
                op.op_type,
                op.domain
            )));
        }
        ops.push(op);
    }
    Ok(ops)
}

/// Imports an ONNX file into graph IR with static shapes.
pub fn import(model: &Path, opts: &CompileOptions) -> Result<Graph, DriverError> {
    let graph = tessera_onnx::import_file(model, &import_options(opts)?)?;
    check_static_inputs(graph)
}

fn import_options(opts: &CompileOptions) -> Result<tessera_onnx::ImportOptions, DriverError> {
    Ok(tessera_onnx::ImportOptions {
        input_shapes: opts.input_shapes.clone(),
        bound_inputs: opts.bound_inputs.clone(),
        custom_ops: load_custom_ops(&opts.custom_ops)?,
        allow_newer_opset: opts.allow_newer_opset,
        folder: Some(crate::fold::InterpFolder::shared()),
    })
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

/// The opset imports of an ONNX file that are newer than the newest Tessera knows: what
/// [`CompileOptions::allow_newer_opset`] overrides, for the caller to warn about.
pub fn newer_opsets(model: &Path) -> Result<Vec<tessera_onnx::NewerOpset>, DriverError> {
    let bytes = std::fs::read(model).map_err(|e| DriverError::Io {
        path: model.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(tessera_onnx::newer_opsets(&tessera_onnx::decode_model(
        &bytes,
        &model.display().to_string(),
    )?))
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
    if targets::is_cross(target) {
        // No .tsa for code this process cannot load; the static library is the way.
        return Err(targets::foreign(targets::split_cpu(target).0).into());
    }
    let (program, node_kernels) = tessera_lower::lower_traced(graph, t.desc())?;
    progress(Progress::Lowered {
        kernels: program.kernels.len(),
    });
    for k in &program.kernels {
        tessera_kir::verify::verify(k).map_err(|e| {
            DriverError::Internal(format!("lowering produced an invalid kernel: {e}"))
        })?;
    }
    let blobs = compile_kernels(&*t, &program.kernels, progress);
    let mut kernels = Vec::with_capacity(program.kernels.len());
    for (k, blob) in program.kernels.iter().zip(blobs) {
        let param_bytes = k
            .params()
            .iter()
            .map(|p| p.dtype.storage_bytes(p.len))
            .collect();
        kernels.push(StoredKernel {
            name: k.name.clone(),
            param_bytes,
            blob: blob?.code,
        });
    }
    let artifact = Artifact {
        // The target's own name: `llvm-x86_64@x86-64-v3` compiles `llvm-x86_64` artifacts.
        target: targets::split_cpu(target).0.to_string(),
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

/// What `tessera compile --emit kir|asm` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelText {
    /// The kernel IR lowering made, before the target's own passes.
    Kir,
    /// The target's code for each kernel (machine instructions, or the chip's assembly).
    Asm,
}

/// The text of every kernel `graph` lowers to on `target`, in plan order, each headed by a
/// `// kernel NAME` line. Cross targets work too (nothing is loaded). A target without a text
/// form of its code is refused for `Asm`, naming it.
pub fn kernel_text(graph: &Graph, target: &str, what: KernelText) -> Result<String, DriverError> {
    let t = targets::lookup(target)?;
    let program = tessera_lower::lower(graph, t.desc())?;
    if what == KernelText::Kir {
        return Ok(tessera_kir::text::print_program(&program.kernels));
    }
    let mut out = String::new();
    for k in &program.kernels {
        let Some(text) = t.disassemble(k)? else {
            return Err(tessera_target::TargetError::Unsupported {
                target: target.to_string(),
                kernel: k.name.clone(),
                message: "this target has no text form of its code (`--emit asm`)".into(),
            }
            .into());
        };
        out.push_str(&format!("// kernel {}\n{text}", k.name));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Compiles every kernel, on as many threads as the machine offers (LLVM's -O3 makes this the
/// slow stage of `llvm-*` compiles). The blobs come back in kernel order whatever order they
/// finish in, so the artifact is the same byte for byte; `progress` is called on this thread.
fn compile_kernels(
    t: &dyn tessera_target::Target,
    ks: &[tessera_kir::Kernel],
    progress: &mut dyn FnMut(Progress),
) -> Vec<Result<tessera_target::KernelBlob, tessera_target::TargetError>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = ks.len();
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n);
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<_>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let (tx, next) = (tx.clone(), &next);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || tx.send((i, t.compile(&ks[i]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (done, (i, r)) in rx.iter().enumerate() {
            out[i] = Some(r);
            progress(Progress::Kernel {
                done: done + 1,
                total: n,
            });
        }
    });
    // Every index below `n` was sent exactly once (each is taken once from `next`, and the
    // receiver outlives the senders), so no slot is empty.
    out.into_iter()
        .map(|r| r.expect("every kernel was compiled"))
        .collect()
}

/// Runs the e-graph optimizer (`tessera-opt`) on an imported graph for `opts.target`, at
/// `opts.opt_level` and `opts.precision`: the step between import and lowering. Then folds
/// again what the optimizer made known (the casts of constant weights `--precision bf16`
/// inserts become constant tensors of the new dtype), by the same size bound as import.
pub fn optimize(
    graph: &Graph,
    opts: &CompileOptions,
) -> Result<(Graph, tessera_opt::Report), DriverError> {
    let t = targets::lookup(&opts.target)?;
    let folder = crate::fold::InterpFolder::shared();
    let o = tessera_opt::OptOptions {
        level: opts.opt_level,
        precision: opts.precision,
        limits: None,
        folder: Some(folder.clone()),
    };
    let (mut out, report) = tessera_opt::optimize(graph, t.desc(), &o)?;
    if report.changed {
        tessera_ir::fold::fold_constants(&mut out, &*folder)
            .and_then(|_| tessera_ir::verify(&out))
            .map_err(|e| {
                DriverError::Internal(format!("folding the optimized graph failed: {e}"))
            })?;
    }
    Ok((out, report))
}

/// Imports, optimizes and compiles an ONNX file.
pub fn compile_file(model: &Path, opts: &CompileOptions) -> Result<Artifact, DriverError> {
    let (graph, _) = optimize(&import(model, opts)?, opts)?;
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
    load_file_expecting(path, target, None)
}

/// Loads a `.tsa` file for `target`, refusing it unless its SHA-256 digest is `expect` (when
/// given); see [`tessera_runtime::Model::load_file_expecting`].
pub fn load_file_expecting(
    path: &Path,
    target: &str,
    expect: Option<&[u8; 32]>,
) -> Result<Model, DriverError> {
    let device: Arc<dyn tessera_runtime::Device> = targets::device(target)?;
    Ok(Model::load_file_expecting(path, device, expect)?)
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
        &import_options(opts)?,
    )?)
}

/// Imports and compiles a serialized ONNX model; `source` names it in the artifact and in errors.
pub fn compile_bytes(
    bytes: &[u8],
    source: &str,
    model_dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<Artifact, DriverError> {
    let (graph, _) = optimize(&import_bytes(bytes, model_dir, opts)?, opts)?;
    compile_graph(&graph, source, &opts.target)
}
