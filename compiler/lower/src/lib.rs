//! `tessera-lower`: graph IR → kernel IR kernels plus a plan. The lowering of each op is
//! written once, here, for every target; tile sizes come from the [`TargetDesc`].
//!
//! Start at [`lower`]; [`LowerCx`] is what each op's lowering works with. Op lowerings live in
//! one file per family (`elementwise.rs`, `reduce.rs`, `dense.rs`, `movement.rs`, `quant.rs`),
//! each with one section per op.

use std::collections::{HashMap, HashSet};
use tessera_ir::{DType, Family, Graph, Node, Op, Tensor, ValueId};
use tessera_kir::{
    BufferId, BufferKind, Execution, Kernel, NodeRecord, PlanBuffer, PlanIo, Program, Step,
};
use tessera_target::TargetDesc;

pub mod contraction;
pub mod control;
pub mod custom;
pub mod dense;
pub mod elementwise;
pub mod fused;
pub mod int_dot;
pub mod movement;
pub mod panels;
pub mod quant;
pub mod random;
pub mod reduce;
pub mod rows;
pub mod select;
pub mod spatial;
pub mod strings;
pub mod util;
// added: sequence and attention ops
pub mod attention;
pub mod loss;
pub mod misc;
pub mod recurrent;
// added: spectral, training and ml ops
pub mod spectral;
// added: linear attention and quantized ops
pub mod extra;

/// Why a graph could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// The op (or this use of it: a dtype, an attribute value) has no lowering yet.
    #[error("{node}: unsupported: {message}")]
    Unsupported { node: String, message: String },
    /// The graph is malformed in a way the verifier did not catch.
    #[error("{node}: {message}")]
    Invalid { node: String, message: String },
}

pub type Result<T> = std::result::Result<T, LowerError>;

/// State shared by every op's lowering: the graph, the target, and the program so far.
pub struct LowerCx<'g> {
    pub graph: &'g Graph,
    pub desc: &'g TargetDesc,
    program: Program,
    buffers: HashMap<ValueId, BufferId>,
    /// The node being lowered, for error messages and kernel names.
    node_label: String,
    kernel_names: HashMap<String, u32>,
    /// Values whose size is known only at run time (results of host selections).
    dynamic: HashSet<ValueId>,
}

impl<'g> LowerCx<'g> {
    fn new(graph: &'g Graph, desc: &'g TargetDesc) -> LowerCx<'g> {
        LowerCx {
            graph,
            desc,
            program: Program::default(),
            buffers: HashMap::new(),
            node_label: String::new(),
            kernel_names: HashMap::new(),
            dynamic: HashSet::new(),
        }
    }

    /// An `Unsupported` error for the current node.
    pub fn unsupported(&self, message: impl Into<String>) -> LowerError {
        LowerError::Unsupported {
            node: self.node_label.clone(),
            message: message.into(),
        }
    }

    /// An `Invalid` error for the current node.
    pub fn invalid(&self, message: impl Into<String>) -> LowerError {
        LowerError::Invalid {
            node: self.node_label.clone(),
            message: message.into(),
        }
    }

    pub fn dtype(&self, v: ValueId) -> Result<DType> {
        self.graph.ty(v).map(|t| t.dtype).ok_or_else(|| {
            self.invalid(format!("value `{}` has no type", self.graph.value(v).name))
        })
    }

    /// Static dims of `v`; a symbolic dim here is an error (the driver binds every symbol).
    pub fn dims(&self, v: ValueId) -> Result<Vec<u64>> {
        if self.dynamic.contains(&v) {
            return Err(self.unsupported(format!(
                "value `{}` has a size known only at run time; only a graph output may have one",
                self.graph.value(v).name
            )));
        }
        let ty = self.graph.ty(v).ok_or_else(|| {
            self.invalid(format!("value `{}` has no type", self.graph.value(v).name))
        })?;
        ty.shape.as_static().ok_or_else(|| {
            self.invalid(format!(
                "value `{}` has symbolic shape {}; give input shapes",
                self.graph.value(v).name,
                ty.shape
            ))
        })
    }

    /// The compile-time contents of `v`, if any.
    pub fn konst(&self, v: ValueId) -> Option<&'g Tensor> {
        self.graph.konst(v)
    }

    /// The compile-time contents of operand `i` of `node` as i64s, or an error saying it must
    /// be known at compile time.
    pub fn const_ints(&self, node: &Node, i: usize) -> Result<Option<Vec<i64>>> {
        let Some(v) = node.input(i) else {
            return Ok(None);
        };
        let t = self.konst(v).ok_or_else(|| {
            self.unsupported(format!("operand {i} must be known at compile time"))
        })?;
        t.to_i64_vec()
            .map(Some)
            .ok_or_else(|| self.invalid(format!("operand {i} is not numeric")))
    }

    /// The plan buffer holding `v`, created on first use: graph inputs become `Input`,
    /// constants `Const`, everything else `Temp`.
    pub fn buffer(&mut self, v: ValueId) -> Result<BufferId> {
        if let Some(&b) = self.buffers.get(&v) {
            return Ok(b);
        }
        let dtype = self.dtype(v)?;
        if dtype == DType::String {
            return Err(self.unsupported(format!(
                "string tensor `{}` cannot live in a kernel buffer",
                self.graph.value(v).name
            )));
        }
        let dims = self.dims(v)?;
        let kind = if let Some(i) = self.graph.inputs.iter().position(|&x| x == v) {
            BufferKind::Input(i as u32)
        } else if let Some(t) = self.graph.konst(v) {
            self.program.plan.consts.push(t.bytes.as_ref().clone());
            BufferKind::Const(self.program.plan.consts.len() as u32 - 1)
        } else {
            BufferKind::Temp { slot: 0 }
        };
        let name = self.graph.value(v).name.clone();
        Ok(self.push_buffer(
            v,
            PlanBuffer {
                name,
                dtype,
                dims,
                kind,
            },
        ))
    }

    fn push_buffer(&mut self, v: ValueId, b: PlanBuffer) -> BufferId {
        self.program.plan.buffers.push(b);
        let id = BufferId(self.program.plan.buffers.len() as u32 - 1);
        self.buffers.insert(v, id);
        id
    }

    /// The buffer of string value `v`, which only host ops and graph inputs and outputs may
    /// use (kernels never see strings). A constant's strings are stored encoded.
    pub fn string_buffer(&mut self, v: ValueId) -> Result<BufferId> {
        if let Some(&b) = self.buffers.get(&v) {
            return Ok(b);
        }
        let dims = self.dims(v)?;
        let kind = if let Some(i) = self.graph.inputs.iter().position(|&x| x == v) {
            BufferKind::Input(i as u32)
        } else if let Some(t) = self.graph.konst(v) {
            self.program
                .plan
                .consts
                .push(tessera_kir::plan::encode_strings(&t.strings));
            BufferKind::Const(self.program.plan.consts.len() as u32 - 1)
        } else {
            BufferKind::Temp { slot: 0 }
        };
        let name = self.graph.value(v).name.clone();
        Ok(self.push_buffer(
            v,
            PlanBuffer {
                name,
                dtype: DType::String,
                dims,
                kind,
            },
        ))
    }

    /// [`LowerCx::string_buffer`] for strings, [`LowerCx::buffer`] otherwise.
    pub fn any_buffer(&mut self, v: ValueId) -> Result<BufferId> {
        if self.dtype(v)? == DType::String {
            self.string_buffer(v)
        } else {
            self.buffer(v)
        }
    }

    /// The buffers of a node's operands (`None` where omitted), strings included: for host steps.
    pub fn operand_buffers(&mut self, node: &Node) -> Result<Vec<Option<BufferId>>> {
        node.inputs
            .iter()
            .map(|v| v.map(|v| self.any_buffer(v)).transpose())
            .collect()
    }

    /// A constant buffer not tied to a graph value, holding `bytes` (e.g. weights packed at
    /// compile time for a backend's layout).
    pub fn const_buffer(
        &mut self,
        name: &str,
        dtype: DType,
        dims: Vec<u64>,
        bytes: Vec<u8>,
    ) -> BufferId {
        self.program.plan.consts.push(bytes);
        let kind = BufferKind::Const(self.program.plan.consts.len() as u32 - 1);
        self.program.plan.buffers.push(PlanBuffer {
            name: name.into(),
            dtype,
            dims,
            kind,
        });
        BufferId(self.program.plan.buffers.len() as u32 - 1)
    }

    /// A scratch buffer not tied to a graph value (e.g. a transposed copy).
    pub fn scratch(&mut self, name: &str, dtype: DType, dims: Vec<u64>) -> BufferId {
        self.program.plan.buffers.push(PlanBuffer {
            name: name.into(),
            dtype,
            dims,
            kind: BufferKind::Temp { slot: 0 },
        });
        BufferId(self.program.plan.buffers.len() as u32 - 1)
    }

    /// The buffer of `v`, a result whose size is known only at run time, allocated at its
    /// largest possible size `capacity`; the runtime records the size produced.
    pub fn dynamic_buffer(&mut self, v: ValueId, capacity: Vec<u64>) -> Result<BufferId> {
        let dtype = self.dtype(v)?;
        let name = self.graph.value(v).name.clone();
        self.dynamic.insert(v);
        Ok(self.push_buffer(
            v,
            PlanBuffer {
                name,
                dtype,
                dims: capacity,
                kind: BufferKind::Temp { slot: 0 },
            },
        ))
    }

    /// Makes `out` share `of`'s storage (same bytes, `out`'s dims): reshape-like ops.
    pub fn alias(&mut self, out: ValueId, of: ValueId) -> Result<()> {
        let src = self.buffer(of)?;
        let dtype = self.dtype(out)?;
        let dims = self.dims(out)?;
        let name = self.graph.value(out).name.clone();
        self.push_buffer(
            out,
            PlanBuffer {
                name,
                dtype,
                dims,
                kind: BufferKind::Alias(src),
            },
        );
        Ok(())
    }

    /// Declares value `v` as the next parameter of the kernel being built in `b` (named `name`,
    /// with `v`'s dtype and element count) and appends its plan buffer to `args`, the launch
    /// arguments, so the two lists stay in step.
    pub fn bind_param(
        &mut self,
        b: &mut tessera_kir::KernelBuilder,
        args: &mut Vec<BufferId>,
        v: ValueId,
        name: &str,
        access: tessera_kir::Access,
    ) -> Result<tessera_kir::Buf> {
        args.push(self.buffer(v)?);
        Ok(b.param(name, self.dtype(v)?, self.numel(v)?, access))
    }

    /// A kernel name unique in the program, derived from the node.
    pub fn kernel_name(&mut self, base: &str) -> String {
        let clean: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let n = self.kernel_names.entry(clean.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            clean
        } else {
            format!("{clean}_{n}")
        }
    }

    /// Adds `kernel` to the program and a step launching it on `args` (one per parameter).
    /// Trap sites registered since the last launch ([`LowerCx::trap_site`]) belong to it.
    pub fn launch(&mut self, kernel: Kernel, args: Vec<BufferId>) {
        debug_assert_eq!(
            kernel.num_params,
            args.len(),
            "kernel `{}` argument count",
            kernel.name
        );
        self.program.kernels.push(kernel);
        let k = self.program.kernels.len() as u32 - 1;
        for t in self
            .program
            .plan
            .traps
            .iter_mut()
            .filter(|t| t.kernel == PENDING_KERNEL)
        {
            t.kernel = k;
        }
        self.program
            .plan
            .steps
            .push(Step::Launch { kernel: k, args });
    }

    /// A whole-buffer copy step.
    pub fn copy(&mut self, src: BufferId, dst: BufferId) {
        self.program.plan.steps.push(Step::Copy { src, dst });
    }

    /// The number of elements of `v`.
    pub fn numel(&self, v: ValueId) -> Result<u64> {
        Ok(self.dims(v)?.iter().product())
    }
}

/// The kernel of a trap site registered before its kernel is launched.
const PENDING_KERNEL: u32 = u32::MAX;

impl LowerCx<'_> {
    /// Registers a data check of the current node on its operand `input` and returns its trap
    /// code, for [`tessera_kir::KernelBuilder::trap_if`] in the next kernel launched. `what`
    /// completes "input `…` holds VALUE, which is …", e.g. "out of range for axis 0 of size 4
    /// (valid: -4 to 3)".
    pub fn trap_site(&mut self, node: &Node, input: &str, what: impl Into<String>) -> u32 {
        self.program.plan.traps.push(tessera_kir::TrapSite {
            kernel: PENDING_KERNEL,
            node: self.node_label.clone(),
            op: node.op.name().to_string(),
            input: input.to_string(),
            what: what.into(),
        });
        self.program.plan.traps.len() as u32 - 1
    }

    /// [`LowerCx::trap_site`] for an index into an axis of `n` elements, which ONNX lets
    /// count from the end: valid values are `-n..n`.
    pub fn index_trap(&mut self, node: &Node, input: &str, axis_desc: &str, n: u64) -> u32 {
        let what = if n == 0 {
            format!("out of range for {axis_desc} of size 0 (no index is valid)")
        } else {
            format!(
                "out of range for {axis_desc} of size {n} (valid: -{n} to {})",
                n - 1
            )
        };
        self.trap_site(node, input, what)
    }
}

/// Lowers a verified, shape-inferred graph with static shapes into kernels and a plan.
pub fn lower(graph: &Graph, desc: &TargetDesc) -> Result<Program> {
    lower_traced(graph, desc).map(|(program, _)| program)
}

/// [`lower`], also returning for each graph node (in graph order) the range of indices into
/// `Program::kernels` of the kernels it became (empty for aliases, copies and folded nodes).
/// `tessera show` draws this.
pub fn lower_traced(
    graph: &Graph,
    desc: &TargetDesc,
) -> Result<(Program, Vec<std::ops::Range<usize>>)> {
    let mut cx = LowerCx::new(graph, desc);
    let spans = lower_nodes(&mut cx, &graph.nodes, "")?;
    cx.node_label = "graph".into();
    for (i, &v) in graph.inputs.iter().enumerate() {
        let buffer = cx.any_buffer(v)?;
        let bound = if graph.bound_inputs.contains(&v) {
            graph.konst(v).map(|t| t.bytes.as_ref().clone())
        } else {
            None
        };
        let io = PlanIo {
            name: graph.value(v).name.clone(),
            buffer,
            dtype: cx.dtype(v)?,
            dims: cx.dims(v)?,
            bound,
        };
        debug_assert_eq!(cx.program.plan.inputs.len(), i);
        cx.program.plan.inputs.push(io);
    }
    for &v in &graph.outputs {
        let buffer = cx.any_buffer(v)?;
        // A run-time-sized output is described by its capacity; the runtime returns its size.
        let dims = cx.program.plan.buffer(buffer).dims.clone();
        let io = PlanIo {
            name: graph.value(v).name.clone(),
            buffer,
            dtype: cx.dtype(v)?,
            dims,
            bound: None,
        };
        cx.program.plan.outputs.push(io);
    }
    cx.program.plan.assign_slots();
    Ok((cx.program, spans))
}

/// Lowers `nodes` in order, recording how each ran. `within` names the enclosing body for
/// nodes of a subgraph ("" at the top level), so errors and the report say where they are.
///
/// Returns, per node, the range of `Program::kernels` it became (bodies' kernels included).
fn lower_nodes(
    cx: &mut LowerCx,
    nodes: &[Node],
    within: &str,
) -> Result<Vec<std::ops::Range<usize>>> {
    let mut spans = Vec::with_capacity(nodes.len());
    for node in nodes {
        let label = if within.is_empty() {
            node.label()
        } else {
            format!("{} in {within}", node.label())
        };
        cx.node_label = label.clone();
        if let Some(&v) = node
            .inputs
            .iter()
            .flatten()
            .find(|v| cx.dynamic.contains(v))
        {
            // Report the cause (the run-time size), not the symbolic shape it leads to.
            cx.dims(v)?;
        }
        let first = cx.program.kernels.len();
        let how = lower_node(cx, node)?;
        spans.push(first..cx.program.kernels.len());
        let dense = node.op.family() == Family::Dense;
        cx.program.plan.nodes.push(NodeRecord {
            node: label,
            op: node.op.name().to_string(),
            dense,
            how,
        });
    }
    Ok(spans)
}

/// How an op is executed, as documentation reports it: `"kernels"`, `"host"` (a plan host
/// step: strings, run-time-sized selections, tree ensembles) or `"plan"` (control flow whose
/// bodies are kernels). Equal on strings also runs on the host; it is listed as kernels.
pub fn execution_of(op: Op) -> &'static str {
    match op {
        Op::NonZero | Op::Compress | Op::Unique | Op::NonMaxSuppression | Op::TreeEnsemble => {
            "host"
        }
        Op::StringConcat
        | Op::RegexFullMatch
        | Op::StringNormalizer
        | Op::StringSplit
        | Op::LabelEncoder
        | Op::TfIdfVectorizer => "host",
        op if op.family() == Family::Control => "plan",
        _ => "kernels",
    }
}

/// The op registry: one arm per op, dispatching to its family's file.
fn lower_node(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    // Outputs whose contents were folded at compile time need no work.
    if node.outputs.iter().all(|&o| cx.konst(o).is_some()) {
        return Ok(Execution::Folded);
    }
    match node.op {
        // Softmax and friends are reductions along one axis; they live with the reductions.
        Op::Softmax | Op::LogSoftmax | Op::Hardmax => reduce::lower(cx, node),
        // Spatial ops (resampling, transposed and integer convolution, scatters): spatial.rs.
        Op::Resize | Op::ConvTranspose | Op::ConvInteger | Op::ScatterElements | Op::ScatterND => {
            spatial::lower(cx, node)
        }
        Op::MaxUnpool
        | Op::LRN
        | Op::ReverseSequence
        | Op::CenterCropPad
        | Op::Col2Im
        | Op::GridSample
        | Op::AffineGrid => spatial::lower(cx, node),
        Op::NonZero | Op::Compress | Op::Unique | Op::NonMaxSuppression | Op::TreeEnsemble => {
            select::lower(cx, node)
        }
        Op::StringConcat
        | Op::RegexFullMatch
        | Op::StringNormalizer
        | Op::StringSplit
        | Op::LabelEncoder => strings::lower(cx, node),
        Op::TfIdfVectorizer => strings::lower(cx, node),
        Op::Equal
            if node
                .input(0)
                .is_some_and(|v| cx.dtype(v).ok() == Some(DType::String)) =>
        {
            strings::lower(cx, node)
        }
        // added: sequence and attention ops
        Op::Attention | Op::RotaryEmbedding => attention::lower(cx, node),
        Op::NegativeLogLikelihoodLoss | Op::SoftmaxCrossEntropyLoss => loss::lower(cx, node),
        Op::RNN | Op::GRU | Op::LSTM => recurrent::lower(cx, node),
        Op::CumProd | Op::Swish | Op::SwiGLU | Op::Einsum | Op::Det | Op::BitCast => {
            misc::lower(cx, node)
        }
        Op::BlackmanWindow | Op::HannWindow | Op::HammingWindow => misc::lower(cx, node),
        // added: spectral, training and ml ops
        Op::DFT | Op::STFT | Op::MelWeightMatrix | Op::Momentum | Op::Adagrad | Op::Adam => {
            spectral::lower(cx, node)
        }
        Op::Binarizer | Op::ArrayFeatureExtractor => spectral::lower(cx, node),
        // added: linear attention and quantized ops
        Op::FusedMatMul => fused::lower(cx, node),
        Op::FusedConv => fused::conv(cx, node),
        Op::LinearAttention | Op::CausalConvWithState | Op::QLinearMatMul => extra::lower(cx, node),
        Op::TensorScatter | Op::DeformConv | Op::RoiAlign | Op::QLinearConv => {
            extra::lower(cx, node)
        }
        Op::Custom => custom::lower(cx, node),
        Op::RandomUniform
        | Op::RandomNormal
        | Op::RandomUniformLike
        | Op::RandomNormalLike
        | Op::Bernoulli
        | Op::Multinomial => random::lower(cx, node),
        op => match op.family() {
            Family::Elementwise => elementwise::lower(cx, node),
            Family::Reduce => reduce::lower(cx, node),
            Family::Quant => quant::lower(cx, node),
            Family::Dense => dense::lower(cx, node),
            Family::Movement | Family::Meta => movement::lower(cx, node),
            Family::Control => control::lower(cx, node),
        },
    }
}
