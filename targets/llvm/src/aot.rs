//! Ahead-of-time output (`tessera compile --emit static-lib`): every kernel of a program and
//! its plan compiled into one object file with a C entry point, plus the C header that
//! declares it (docs/aot.md).
//!
//! The object holds, all prefixed with the library's name `P`:
//!
//! - `P_k0 … P_kN`: the kernels, each the blob entry point of [`tessera_host::blob`]
//!   (`args, scratch, begin, end, trap`), compiled at -O3 for the target's ISA;
//! - `P_const0 …`: the plan's constants, as read-only data;
//! - `P_run(inputs, outputs, workspace)`: the plan, generated as LLVM IR: it copies the inputs
//!   into the workspace, runs the steps in order (each launch loops over its whole grid on the
//!   calling thread; copies, `If` and `Loop` steps as the runtime runs them) and copies the
//!   outputs out. Every buffer has a byte offset in the caller's workspace fixed at compile
//!   time ([`Layout`]);
//! - `P_error_message(status)` and `P_error_value(workspace)`: what a non-zero status means.
//!
//! What the object needs from the C library: `memset`, `memcpy`, `memmove`, `memcmp`, and
//! libm's `fmodf`/`fmod` when a kernel takes a float remainder. Plan steps that are not
//! expressible without the runtime (host ops, strings) are refused with an error naming the
//! op and node. [`archive`] wraps the object into a `.a`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::FileType;
use inkwell::values::UnnamedAddress;
use inkwell::AddressSpace;
use tessera_ir::DType;
use tessera_kir::{
    BufferId, BufferKind, Execution, HostOp, Kernel, LoopSlice, LoopStep, Plan, Step, Trip,
};
use tessera_target::TargetError;

use crate::LlvmCpu;

/// The version of the C interface the header declares (`TESSERA_AOT_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;

/// Alignment of the workspace and of every buffer in it.
pub const ALIGN: u64 = 64;

/// Bytes at the start of the workspace that hold the status of a run: three `int64_t`s
/// (trapped flag, data-check code, offending value), as kernels write them.
const STATUS_BYTES: u64 = 64;

/// Why a program could not become a static library.
#[derive(Debug, thiserror::Error)]
pub enum AotError {
    /// The plan uses something the static library cannot do without the runtime.
    #[error("--emit static-lib: {0}")]
    Unsupported(String),
    /// A kernel failed to compile (as it would for a `.tsa`).
    #[error("{0}")]
    Target(#[from] TargetError),
    /// A bug: LLVM refused what this module generated, or the plan is inconsistent.
    #[error("--emit static-lib: internal error (a bug in Tessera): {0}")]
    Internal(String),
}

/// A compiled static library: the object file and the C header declaring it.
pub struct StaticLib {
    /// The C identifier every symbol and macro starts with.
    pub prefix: String,
    /// The ELF relocatable object.
    pub object: Vec<u8>,
    /// The text of the generated header.
    pub header: String,
    /// The global symbols the object defines (for the archive's index).
    pub symbols: Vec<String>,
    /// The bytes of workspace a run needs.
    pub workspace_bytes: u64,
    /// The model's inputs and outputs, in order, as `P_run` takes and writes them.
    pub inputs: Vec<tessera_kir::PlanIo>,
    pub outputs: Vec<tessera_kir::PlanIo>,
    /// Kernel launches written in the plan (each once).
    pub launches: usize,
}

/// Makes a C identifier of `name` (a file stem): other characters become `_`, and a leading
/// digit gets a `_` before it.
pub fn c_identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Where every buffer's storage lies in the workspace (or which constant or input it is).
#[derive(Debug, Clone)]
pub struct Layout {
    /// Byte offset of each `Temp` slot.
    pub slots: Vec<u64>,
    /// Byte offset of each input's private copy.
    pub inputs: Vec<u64>,
    /// Byte offset of the per-instance scratch area of the kernels (local buffers).
    pub scratch: u64,
    /// Byte offset of each loop's area for its carried values (in plan order, nested
    /// loops depth first).
    pub carries: Vec<u64>,
    /// Bytes zeroed at the start of a run (status, scratch, slots).
    pub zeroed: u64,
    /// Total bytes.
    pub total: u64,
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Checks that the plan can run without the runtime and lays out its buffers.
fn layout(plan: &Plan, kernels: &[Kernel], scratch: u64) -> Result<Layout, AotError> {
    for b in &plan.buffers {
        if b.dtype == DType::String {
            return Err(AotError::Unsupported(format!(
                "string tensor `{}` (strings have no fixed-size layout; run the model with the runtime)",
                b.name
            )));
        }
        match b.kind {
            BufferKind::Input(n) if n as usize >= plan.inputs.len() => {
                return Err(AotError::Internal(format!(
                    "buffer `{}` is input #{n}",
                    b.name
                )))
            }
            BufferKind::Const(n) if n as usize >= plan.consts.len() => {
                return Err(AotError::Internal(format!(
                    "buffer `{}` is constant #{n}",
                    b.name
                )))
            }
            BufferKind::Alias(a) if a.0 as usize >= plan.buffers.len() => {
                return Err(AotError::Internal(format!(
                    "buffer `{}` aliases #{}",
                    b.name, a.0
                )))
            }
            _ => {}
        }
    }
    let mut loops = 0usize;
    let mut carry_bytes = Vec::new();
    check_steps(plan, kernels, &plan.steps, &mut loops, &mut carry_bytes)?;
    let mut at = STATUS_BYTES;
    let scratch_at = at;
    at = align_up(at + scratch);
    let slot_len = plan.slot_bytes();
    let mut slots = Vec::with_capacity(slot_len.len());
    for len in slot_len {
        slots.push(at);
        at = align_up(at + len);
    }
    let zeroed = at;
    let mut inputs = Vec::new();
    for io in &plan.inputs {
        inputs.push(at);
        at = align_up(at + io.dtype.storage_bytes(io.dims.iter().product()));
    }
    let mut carries = Vec::new();
    for len in carry_bytes {
        carries.push(at);
        at = align_up(at + len);
    }
    Ok(Layout {
        slots,
        inputs,
        scratch: scratch_at,
        carries,
        zeroed,
        total: at,
    })
}

/// Refuses host steps and checks launches against their kernels; counts loops and the bytes
/// of their carried results.
fn check_steps(
    plan: &Plan,
    kernels: &[Kernel],
    steps: &[Step],
    loops: &mut usize,
    carry: &mut Vec<u64>,
) -> Result<(), AotError> {
    let mut used = Vec::new();
    for s in steps {
        used.clear();
        s.buffers(&mut used);
        if let Some(b) = used.iter().find(|b| b.0 as usize >= plan.buffers.len()) {
            return Err(AotError::Internal(format!("a step names buffer #{}", b.0)));
        }
        match s {
            Step::Launch { kernel, args } => {
                let k = kernels.get(*kernel as usize).ok_or_else(|| {
                    AotError::Internal(format!("a launch names kernel #{kernel}"))
                })?;
                let params = k.params();
                if params.len() != args.len() {
                    return Err(AotError::Internal(format!(
                        "kernel `{}` takes {} parameters, its launch passes {}",
                        k.name,
                        params.len(),
                        args.len()
                    )));
                }
                for (p, a) in params.iter().zip(args) {
                    let have = plan.buffer(*a).byte_len();
                    let need = p.dtype.storage_bytes(p.len);
                    if have < need {
                        return Err(AotError::Internal(format!(
                            "kernel `{}` parameter `{}` needs {need} bytes, buffer `{}` has {have}",
                            k.name,
                            p.name,
                            plan.buffer(*a).name
                        )));
                    }
                }
            }
            Step::Copy { .. } => {}
            Step::If {
                then_steps,
                else_steps,
                ..
            } => {
                check_steps(plan, kernels, then_steps, loops, carry)?;
                check_steps(plan, kernels, else_steps, loops, carry)?;
            }
            Step::Loop(l) => {
                *loops += 1;
                let bytes = if l.carried.len() > 1 {
                    l.carried
                        .iter()
                        .map(|(r, _)| align_up(plan.buffer(*r).byte_len()))
                        .sum()
                } else {
                    0
                };
                carry.push(bytes);
                check_steps(plan, kernels, &l.body, loops, carry)?;
            }
            Step::Host { op, .. } => {
                let name = host_op_name(op);
                let node = plan
                    .nodes
                    .iter()
                    .find(|n| n.how == Execution::Host && n.op == name)
                    .map(|n| n.node.clone())
                    .unwrap_or_else(|| format!("{name} node"));
                return Err(AotError::Unsupported(format!(
                    "host op {name} ({node}) is not supported: its result's size depends on the data, which a library with buffers laid out at compile time cannot hold; run the model with the runtime (a .tsa)"
                )));
            }
        }
    }
    Ok(())
}

/// The ONNX op a host op implements.
fn host_op_name(op: &HostOp) -> &'static str {
    match op {
        HostOp::NonZero => "NonZero",
        HostOp::Compress { .. } => "Compress",
        HostOp::Unique { .. } => "Unique",
        HostOp::NonMaxSuppression { .. } => "NonMaxSuppression",
        HostOp::StringConcat => "StringConcat",
        HostOp::StringEqual => "Equal",
        HostOp::RegexFullMatch { .. } => "RegexFullMatch",
        HostOp::StringNormalizer { .. } => "StringNormalizer",
        HostOp::StringSplit { .. } => "StringSplit",
        HostOp::LabelEncoder { .. } => "LabelEncoder",
        HostOp::TfIdf { .. } => "TfIdfVectorizer",
        HostOp::TreeEnsemble(_) => "TreeEnsemble",
    }
}

/// Compiles `kernels` and `plan` for `cpu` into a static library whose symbols start with
/// `prefix` (a C identifier, see [`c_identifier`]); `source` is written into the header.
pub fn build(
    cpu: &LlvmCpu,
    kernels: &[Kernel],
    plan: &Plan,
    prefix: &str,
    source: &str,
) -> Result<StaticLib, AotError> {
    if c_identifier(prefix) != prefix {
        return Err(AotError::Internal(format!(
            "library name `{prefix}` is not a C identifier"
        )));
    }
    let tm = cpu.machine().map_err(AotError::Internal)?;
    let ctx = Context::create();
    // Every kernel: translated for the library (named, no private helpers), optimised alone.
    let mut modules = Vec::with_capacity(kernels.len());
    let mut grids = Vec::with_capacity(kernels.len());
    let mut scratch = 0u64;
    for (i, k) in kernels.iter().enumerate() {
        let name = format!("{prefix}_k{i}");
        let (_, m, text) = cpu.translate(k, &tm, &name, false)?;
        grids.push(m.grid.iter().fold(1u64, |a, &g| a.saturating_mul(g.max(1))));
        scratch = scratch.max(m.scratch_bytes);
        modules.push(cpu.optimised(&ctx, &tm, k, &text)?);
    }
    let lay = layout(plan, kernels, align_up(scratch))?;
    let mut messages = Vec::new();
    for t in &plan.traps {
        messages.push(format!(
            "{}: input `{}` holds a value (see {prefix}_error_value) which is {}",
            t.node, t.input, t.what
        ));
    }
    let dl = tm
        .get_target_data()
        .get_data_layout()
        .as_str()
        .to_string_lossy()
        .into_owned();
    let mut g = EntryGen {
        plan,
        lay: &lay,
        prefix,
        grids: &grids,
        out: String::new(),
        allocas: String::new(),
        globals: String::new(),
        next: 0,
        loops: 0,
        messages,
        max_args: 1,
    };
    let entry_text = g.module(&dl, cpu)?;
    let buf = MemoryBuffer::create_from_memory_range_copy(entry_text.as_bytes(), "entry");
    let entry = ctx
        .create_module_from_ir(buf)
        .map_err(|e| AotError::Internal(format!("LLVM rejected the plan's IR: {e}")))?;
    entry
        .verify()
        .map_err(|e| AotError::Internal(format!("the plan's IR fails LLVM's verifier: {e}")))?;
    entry
        .run_passes("default<O2>", &tm, PassBuilderOptions::create())
        .map_err(|e| AotError::Internal(format!("LLVM's optimiser on the plan: {e}")))?;
    // The constants, built through the API (no text round trip for megabytes of weights).
    let consts = ctx.create_module("consts");
    consts.set_triple(&tm.get_triple());
    consts.set_data_layout(&tm.get_target_data().get_data_layout());
    let mut symbols: BTreeSet<String> = BTreeSet::new();
    for (n, bytes) in plan.consts.iter().enumerate() {
        let name = format!("{prefix}_const{n}");
        add_const(&ctx, &consts, &name, bytes);
        symbols.insert(name);
    }
    entry
        .link_in_module(consts)
        .map_err(|e| AotError::Internal(format!("linking the constants: {e}")))?;
    for (i, m) in modules.into_iter().enumerate() {
        entry
            .link_in_module(m)
            .map_err(|e| AotError::Internal(format!("linking kernel {i}: {e}")))?;
        symbols.insert(format!("{prefix}_k{i}"));
    }
    entry
        .verify()
        .map_err(|e| AotError::Internal(format!("the linked module fails LLVM's verifier: {e}")))?;
    let obj = tm
        .write_to_memory_buffer(&entry, FileType::Object)
        .map_err(|e| AotError::Internal(format!("LLVM's code generator: {e}")))?;
    for s in ["run", "error_message", "error_value"] {
        symbols.insert(format!("{prefix}_{s}"));
    }
    let names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
    let header = header(plan, prefix, source, cpu, lay.total, &names);
    Ok(StaticLib {
        prefix: prefix.to_string(),
        object: obj.as_slice().to_vec(),
        header,
        symbols: symbols.into_iter().collect(),
        workspace_bytes: lay.total,
        inputs: plan.inputs.clone(),
        outputs: plan.outputs.clone(),
        launches: plan.steps.iter().map(Step::launches).sum(),
    })
}

/// Defines constant `name` holding `bytes`, 64-byte aligned, read-only.
fn add_const<'c>(ctx: &'c Context, m: &Module<'c>, name: &str, bytes: &[u8]) {
    let init = ctx.const_string(bytes, false);
    let g = m.add_global(init.get_type(), Some(AddressSpace::default()), name);
    g.set_initializer(&init);
    g.set_constant(true);
    g.set_alignment(ALIGN as u32);
    g.set_linkage(Linkage::External);
    g.set_visibility(inkwell::GlobalVisibility::Hidden);
    g.set_unnamed_address(UnnamedAddress::Global);
}

/// Writes the plan's entry function (LLVM IR text).
struct EntryGen<'a> {
    plan: &'a Plan,
    lay: &'a Layout,
    prefix: &'a str,
    /// Program instances of each kernel.
    grids: &'a [u64],
    out: String,
    /// `alloca`s, placed in the entry block.
    allocas: String,
    /// Private globals (error strings, bound input values).
    globals: String,
    next: u32,
    /// Loops numbered so far (indexes `Layout::carries`).
    loops: usize,
    /// Error messages; status `n` (1-based) is `messages[n - 1]`. The first ones are the
    /// plan's data checks, numbered as kernels report them.
    messages: Vec<String>,
    max_args: usize,
}

/// A byte array as LLVM's `c"…"` string body.
fn c_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for &c in b {
        if c.is_ascii_graphic() && c != b'"' && c != b'\\' || c == b' ' {
            s.push(c as char);
        } else {
            let _ = write!(s, "\\{c:02X}");
        }
    }
    s
}

impl EntryGen<'_> {
    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn fresh(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}{}", self.next)
    }

    /// A new error status for `message`.
    fn status(&mut self, message: String) -> u32 {
        self.messages.push(message);
        self.messages.len() as u32
    }

    /// Returns status `code` with `value` (an i64 operand) as the error value.
    fn fail(&mut self, code: u32, value: &str) {
        let p = self.fresh("ev");
        self.line(&format!(
            "  %{p} = getelementptr inbounds i8, ptr %ws, i64 16\n  store i64 {value}, ptr %{p}, align 8\n  ret i32 {code}"
        ));
    }

    /// A pointer operand to the storage of buffer `id`.
    fn ptr(&mut self, id: BufferId) -> String {
        let root = self.plan.root(id);
        match self.plan.buffer(root).kind {
            BufferKind::Const(n) => format!("@{}_const{n}", self.prefix),
            BufferKind::Input(n) => self.ws_at(self.lay.inputs[n as usize]),
            BufferKind::Temp { slot } => self.ws_at(self.lay.slots[slot as usize]),
            // `root` never stops at an alias of a well-formed plan; point at nothing usable.
            BufferKind::Alias(_) => "null".to_string(),
        }
    }

    fn ws_at(&mut self, off: u64) -> String {
        let p = self.fresh("p");
        self.line(&format!(
            "  %{p} = getelementptr inbounds i8, ptr %ws, i64 {off}"
        ));
        format!("%{p}")
    }

    fn bytes(&self, id: BufferId) -> u64 {
        self.plan.buffer(id).byte_len()
    }

    fn copy(&mut self, dst: &str, src: &str, n: u64) {
        if n > 0 {
            self.line(&format!(
                "  call void @llvm.memmove.p0.p0.i64(ptr {dst}, ptr {src}, i64 {n}, i1 false)"
            ));
        }
    }

    /// Loads a bool scalar buffer as an `i1` operand.
    fn truthy(&mut self, id: BufferId) -> String {
        let p = self.ptr(id);
        let (v, c) = (self.fresh("b"), self.fresh("t"));
        self.line(&format!(
            "  %{v} = load i8, ptr {p}, align 1\n  %{c} = icmp ne i8 %{v}, 0"
        ));
        format!("%{c}")
    }

    fn module(&mut self, dl: &str, cpu: &LlvmCpu) -> Result<String, AotError> {
        let plan = self.plan;
        let p = self.prefix.to_string();
        // Clear the status, scratch and slots: the runtime hands every run zeroed storage.
        self.line(&format!(
            "  call void @llvm.memset.p0.i64(ptr align {ALIGN} %ws, i8 0, i64 {}, i1 false)",
            self.lay.zeroed
        ));
        for (k, io) in plan.inputs.iter().enumerate() {
            let n = io.dtype.storage_bytes(io.dims.iter().product());
            let (pp, src) = (self.fresh("ip"), self.fresh("in"));
            self.line(&format!(
                "  %{pp} = getelementptr inbounds ptr, ptr %inputs, i64 {k}\n  %{src} = load ptr, ptr %{pp}, align 8"
            ));
            if let Some(bound) = &io.bound {
                let code = self.status(format!(
                    "input `{}` differs from the value it was bound to when the library was compiled (it decides a shape); recompile with the new value",
                    io.name
                ));
                let g = format!("@{p}_bound{k}");
                let _ = writeln!(
                    self.globals,
                    "{g} = private unnamed_addr constant [{} x i8] c\"{}\", align 1",
                    bound.len(),
                    c_bytes(bound)
                );
                let (r, ne, bad, ok) = (
                    self.fresh("cmp"),
                    self.fresh("ne"),
                    self.fresh("bound_bad"),
                    self.fresh("bound_ok"),
                );
                self.line(&format!(
                    "  %{r} = call i32 @memcmp(ptr %{src}, ptr {g}, i64 {})\n  %{ne} = icmp ne i32 %{r}, 0\n  br i1 %{ne}, label %{bad}, label %{ok}\n{bad}:",
                    bound.len()
                ));
                self.fail(code, &k.to_string());
                self.line(&format!("{ok}:"));
            }
            let dst = self.ws_at(self.lay.inputs[k]);
            self.copy(&dst, &format!("%{src}"), n);
        }
        self.steps(&plan.steps)?;
        for (k, io) in plan.outputs.iter().enumerate() {
            let n = io.dtype.storage_bytes(io.dims.iter().product());
            if io.buffer.0 as usize >= plan.buffers.len() || self.bytes(io.buffer) < n {
                return Err(AotError::Internal(format!(
                    "output `{}` is not backed by a buffer of {n} bytes",
                    io.name
                )));
            }
            let (pp, dst) = (self.fresh("op"), self.fresh("out"));
            self.line(&format!(
                "  %{pp} = getelementptr inbounds ptr, ptr %outputs, i64 {k}\n  %{dst} = load ptr, ptr %{pp}, align 8"
            ));
            let src = self.ptr(io.buffer);
            if n > 0 {
                self.line(&format!(
                    "  call void @llvm.memcpy.p0.p0.i64(ptr %{dst}, ptr {src}, i64 {n}, i1 false)"
                ));
            }
        }
        self.line("  ret i32 0");

        let mut t = String::new();
        let _ = writeln!(t, "; the plan of `{p}`, generated by tessera-llvm (aot.rs)");
        let _ = writeln!(t, "target datalayout = \"{dl}\"");
        let _ = writeln!(t, "target triple = \"{}\"", cpu.isa.triple());
        for (n, b) in plan.consts.iter().enumerate() {
            let _ = writeln!(
                t,
                "@{p}_const{n} = external hidden constant [{} x i8], align {ALIGN}",
                b.len()
            );
        }
        for (i, _) in self.grids.iter().enumerate() {
            let _ = writeln!(t, "declare void @{p}_k{i}(ptr, ptr, i64, i64, ptr)");
        }
        t.push_str("declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)\n");
        t.push_str("declare void @llvm.memmove.p0.p0.i64(ptr, ptr, i64, i1)\n");
        t.push_str("declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)\n");
        t.push_str("declare i32 @memcmp(ptr, ptr, i64)\n");
        t.push_str("declare i64 @llvm.smax.i64(i64, i64)\n");
        t.push_str(&self.globals);
        let _ = writeln!(
            t,
            "define i32 @{p}_run(ptr noalias %inputs, ptr noalias %outputs, ptr noalias align {ALIGN} %ws) #0 {{\nentry:\n  %args = alloca [{} x ptr], align 8\n  %scratch = getelementptr inbounds i8, ptr %ws, i64 {}",
            self.max_args, self.lay.scratch
        );
        t.push_str(&self.allocas);
        t.push_str(&self.out);
        t.push_str("trapped:\n  %tc.p = getelementptr inbounds i8, ptr %ws, i64 8\n  %tc = load i64, ptr %tc.p, align 8\n  %tc1 = add i64 %tc, 1\n  %tcs = trunc i64 %tc1 to i32\n  ret i32 %tcs\n}\n");
        // The messages, and the function that picks one.
        let mut table = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            let bytes = m.as_bytes();
            let _ = writeln!(
                t,
                "@{p}_msg{i} = private unnamed_addr constant [{} x i8] c\"{}\\00\", align 1",
                bytes.len() + 1,
                c_bytes(bytes)
            );
            table.push(format!("ptr @{p}_msg{i}"));
        }
        let _ = writeln!(
            t,
            "@{p}_msg_ok = private unnamed_addr constant [8 x i8] c\"success\\00\", align 1\n@{p}_msg_unknown = private unnamed_addr constant [35 x i8] c\"unknown status (not of this model)\\00\", align 1"
        );
        let n = table.len();
        let _ = writeln!(
            t,
            "@{p}_msgs = private unnamed_addr constant [{n} x ptr] [{}], align 8",
            table.join(", ")
        );
        let _ = writeln!(
            t,
            "define ptr @{p}_error_message(i32 %s) #0 {{\nentry:\n  %z = icmp eq i32 %s, 0\n  br i1 %z, label %ok, label %some\nok:\n  ret ptr @{p}_msg_ok\nsome:\n  %i = sub i32 %s, 1\n  %in = icmp ult i32 %i, {n}\n  br i1 %in, label %known, label %unknown\nknown:\n  %iw = zext i32 %i to i64\n  %pp = getelementptr inbounds [{n} x ptr], ptr @{p}_msgs, i64 0, i64 %iw\n  %m = load ptr, ptr %pp, align 8\n  ret ptr %m\nunknown:\n  ret ptr @{p}_msg_unknown\n}}"
        );
        let _ = writeln!(
            t,
            "define i64 @{p}_error_value(ptr %ws) #0 {{\nentry:\n  %v.p = getelementptr inbounds i8, ptr %ws, i64 16\n  %v = load i64, ptr %v.p, align 8\n  ret i64 %v\n}}"
        );
        let _ = writeln!(t, "attributes #0 = {{ nounwind {} }}", cpu.cpu_attrs());
        if cpu.isa == crate::Isa::Riscv64 {
            t.push_str(crate::RISCV_ABI_FLAG);
        }
        Ok(t)
    }

    fn steps(&mut self, steps: &[Step]) -> Result<(), AotError> {
        for s in steps {
            match s {
                Step::Launch { kernel, args } => {
                    self.max_args = self.max_args.max(args.len());
                    for (j, &a) in args.iter().enumerate() {
                        let p = self.ptr(a);
                        let slot = self.fresh("a");
                        self.line(&format!(
                            "  %{slot} = getelementptr inbounds ptr, ptr %args, i64 {j}\n  store ptr {p}, ptr %{slot}, align 8"
                        ));
                    }
                    let n = self.grids[*kernel as usize];
                    let (t, c, next) = (self.fresh("tf"), self.fresh("tr"), self.fresh("after"));
                    self.line(&format!(
                        "  call void @{}_k{kernel}(ptr %args, ptr %scratch, i64 0, i64 {n}, ptr %ws)\n  %{t} = load i64, ptr %ws, align 8\n  %{c} = icmp ne i64 %{t}, 0\n  br i1 %{c}, label %trapped, label %{next}\n{next}:",
                        self.prefix
                    ));
                }
                Step::Copy { src, dst } => {
                    let n = self.bytes(*src);
                    if self.bytes(*dst) < n {
                        return Err(AotError::Internal(format!(
                            "a copy of {n} bytes into buffer `{}` of {}",
                            self.plan.buffer(*dst).name,
                            self.bytes(*dst)
                        )));
                    }
                    let (s, d) = (self.ptr(*src), self.ptr(*dst));
                    self.copy(&d, &s, n);
                }
                Step::If {
                    cond,
                    then_steps,
                    else_steps,
                } => {
                    let c = self.truthy(*cond);
                    let (th, el, end) =
                        (self.fresh("then"), self.fresh("else"), self.fresh("endif"));
                    self.line(&format!("  br i1 {c}, label %{th}, label %{el}\n{th}:"));
                    self.steps(then_steps)?;
                    self.line(&format!("  br label %{end}\n{el}:"));
                    self.steps(else_steps)?;
                    self.line(&format!("  br label %{end}\n{end}:"));
                }
                Step::Loop(l) => self.looped(l)?,
                Step::Host { .. } => {
                    return Err(AotError::Internal("a host step passed the checks".into()))
                }
            }
        }
        Ok(())
    }

    /// `(part bytes, parts)` of a sliced buffer.
    fn parts(&self, sl: &LoopSlice) -> (u64, u64) {
        let part = self.bytes(sl.part);
        (part, self.bytes(sl.whole).checked_div(part).unwrap_or(0))
    }

    /// The i64 operand of the part index of iteration `%i` in a slice of `count` parts.
    fn part_index(&mut self, i: &str, count: u64, reverse: bool) -> String {
        if !reverse {
            return i.to_string();
        }
        let r = self.fresh("rev");
        self.line(&format!(
            "  %{r} = sub i64 {}, {i}",
            count.saturating_sub(1)
        ));
        format!("%{r}")
    }

    /// A plan loop, as [`tessera_kir::LoopStep`] defines it.
    fn looped(&mut self, l: &LoopStep) -> Result<(), AotError> {
        let carry_at = self.lay.carries[self.loops];
        self.loops += 1;
        let (iv, cv) = (self.fresh("li"), self.fresh("lc"));
        let _ = writeln!(
            self.allocas,
            "  %{iv} = alloca i64, align 8\n  %{cv} = alloca i1, align 1"
        );
        let trip = match l.trip {
            Trip::Buffer(b) => {
                let p = self.ptr(b);
                let (m, m0) = (self.fresh("trip"), self.fresh("trip0"));
                self.line(&format!(
                    "  %{m} = load i64, ptr {p}, align 8\n  %{m0} = call i64 @llvm.smax.i64(i64 %{m}, i64 0)"
                ));
                Some(format!("%{m0}"))
            }
            Trip::Fixed(n) => Some(n.to_string()),
            Trip::Unbounded => None,
        };
        let c0 = match l.cond {
            Some(c) => self.truthy(c),
            None => "true".to_string(),
        };
        let (head, body, exit) = (
            self.fresh("lhead"),
            self.fresh("lbody"),
            self.fresh("lexit"),
        );
        self.line(&format!(
            "  store i64 0, ptr %{iv}, align 8\n  store i1 {c0}, ptr %{cv}, align 1\n  br label %{head}\n{head}:"
        ));
        let (i, c, go) = (self.fresh("i"), self.fresh("c"), self.fresh("go"));
        self.line(&format!(
            "  %{i} = load i64, ptr %{iv}, align 8\n  %{c} = load i1, ptr %{cv}, align 1"
        ));
        match &trip {
            Some(m) => {
                let inb = self.fresh("inb");
                self.line(&format!(
                    "  %{inb} = icmp ult i64 %{i}, {m}\n  %{go} = and i1 %{c}, %{inb}"
                ));
            }
            None => self.line(&format!("  %{go} = and i1 %{c}, true")),
        }
        self.line(&format!(
            "  br i1 %{go}, label %{body}, label %{exit}\n{body}:"
        ));
        let i = format!("%{i}");
        for sl in &l.scan_out {
            let (_, count) = self.parts(sl);
            let code = self.status(format!(
                "a loop ran more than the {count} iterations its scan output `{}` was sized for at compile time",
                self.plan.buffer(sl.whole).name
            ));
            let (ok, bad, okl) = (self.fresh("sok"), self.fresh("sbad"), self.fresh("sgo"));
            self.line(&format!(
                "  %{ok} = icmp ult i64 {i}, {count}\n  br i1 %{ok}, label %{okl}, label %{bad}\n{bad}:"
            ));
            self.fail(code, &i);
            self.line(&format!("{okl}:"));
        }
        if let Some(b) = l.iter {
            let p = self.ptr(b);
            self.line(&format!("  store i64 {i}, ptr {p}, align 8"));
        }
        if let Some(b) = l.cond_in {
            let p = self.ptr(b);
            let z = self.fresh("cz");
            self.line(&format!(
                "  %{z} = zext i1 %{c} to i8\n  store i8 %{z}, ptr {p}, align 1"
            ));
        }
        for sl in &l.scan_in {
            let (n, count) = self.parts(sl);
            let code = self.status(format!(
                "a loop ran more than the {count} iterations its scan input `{}` holds",
                self.plan.buffer(sl.whole).name
            ));
            let (ok, bad, okl) = (self.fresh("iok"), self.fresh("ibad"), self.fresh("igo"));
            self.line(&format!(
                "  %{ok} = icmp ult i64 {i}, {count}\n  br i1 %{ok}, label %{okl}, label %{bad}\n{bad}:"
            ));
            self.fail(code, &i);
            self.line(&format!("{okl}:"));
            let k = self.part_index(&i, count, sl.reverse);
            let whole = self.ptr(sl.whole);
            let (off, src) = (self.fresh("off"), self.fresh("src"));
            self.line(&format!(
                "  %{off} = mul i64 {k}, {n}\n  %{src} = getelementptr inbounds i8, ptr {whole}, i64 %{off}"
            ));
            let part = self.ptr(sl.part);
            self.copy(&part, &format!("%{src}"), n);
        }
        self.steps(&l.body)?;
        for sl in &l.scan_out {
            let (n, count) = self.parts(sl);
            let k = self.part_index(&i, count, sl.reverse);
            let whole = self.ptr(sl.whole);
            let (off, dst) = (self.fresh("off"), self.fresh("dst"));
            self.line(&format!(
                "  %{off} = mul i64 {k}, {n}\n  %{dst} = getelementptr inbounds i8, ptr {whole}, i64 %{off}"
            ));
            let part = self.ptr(sl.part);
            self.copy(&format!("%{dst}"), &part, n);
        }
        // Every carried result is read before any parameter is written: a body may swap them.
        if l.carried.len() == 1 {
            let (r, p) = l.carried[0];
            let (rs, ps) = (self.ptr(r), self.ptr(p));
            self.copy(&ps, &rs, self.bytes(r).min(self.bytes(p)));
        } else if !l.carried.is_empty() {
            let mut at = carry_at;
            let mut staged = Vec::new();
            for &(r, p) in &l.carried {
                let n = self.bytes(r).min(self.bytes(p));
                let (rs, tmp) = (self.ptr(r), self.ws_at(at));
                self.copy(&tmp, &rs, n);
                staged.push((tmp, p, n));
                at = align_up(at + self.bytes(r));
            }
            for (tmp, p, n) in staged {
                let ps = self.ptr(p);
                self.copy(&ps, &tmp, n);
            }
        }
        let c1 = match l.cond_out {
            Some(b) => self.truthy(b),
            None => "true".to_string(),
        };
        let i1 = self.fresh("inext");
        self.line(&format!(
            "  store i1 {c1}, ptr %{cv}, align 1\n  %{i1} = add i64 {i}, 1\n  store i64 %{i1}, ptr %{iv}, align 8\n  br label %{head}\n{exit}:"
        ));
        if !l.scan_out.is_empty() {
            let done = self.fresh("done");
            self.line(&format!("  %{done} = load i64, ptr %{iv}, align 8"));
            for sl in &l.scan_out {
                let (_, count) = self.parts(sl);
                let code = self.status(format!(
                    "a loop ended before the {count} iterations its scan output `{}` was sized for at compile time (the plan's shapes are static)",
                    self.plan.buffer(sl.whole).name
                ));
                let (ok, bad, okl) = (self.fresh("eok"), self.fresh("ebad"), self.fresh("ego"));
                self.line(&format!(
                    "  %{ok} = icmp eq i64 %{done}, {count}\n  br i1 %{ok}, label %{okl}, label %{bad}\n{bad}:"
                ));
                self.fail(code, &format!("%{done}"));
                self.line(&format!("{okl}:"));
            }
        }
        Ok(())
    }
}

/// The C header of the library.
fn header(
    plan: &Plan,
    p: &str,
    source: &str,
    cpu: &LlvmCpu,
    workspace: u64,
    kernels: &[&str],
) -> String {
    let up = p.to_ascii_uppercase();
    let guard = format!("{up}_TESSERA_AOT_H");
    let src = source.replace("*/", "* /");
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* {p}.h: the C interface of a model compiled ahead of time by Tessera {} (`tessera compile --emit static-lib`).\n * Target: {} ({}). Model: {src}.\n * Generated: do not edit. See docs/aot.md. */",
        env!("CARGO_PKG_VERSION"),
        cpu.isa.target_name(),
        cpu.isa.triple()
    );
    let _ = writeln!(
        h,
        "#ifndef {guard}\n#define {guard}\n\n#include <stddef.h>\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {{\n#endif\n"
    );
    let _ = writeln!(
        h,
        "/* The version of this interface; a library and a header of other versions do not mix. */\n#define TESSERA_AOT_ABI_VERSION {ABI_VERSION}\n#define {up}_ABI_VERSION {ABI_VERSION}\n#define {up}_TARGET \"{}\"\n#define {up}_ARCH \"{}\"\n",
        cpu.isa.target_name(),
        cpu.isa.arch()
    );
    let _ = writeln!(
        h,
        "/* Bytes of workspace one run needs, and the alignment its start must have. */\n#define {up}_WORKSPACE_BYTES {workspace}u\n#define {up}_WORKSPACE_ALIGN {ALIGN}u\n"
    );
    let _ = writeln!(
        h,
        "#define {up}_NUM_INPUTS {}\n#define {up}_NUM_OUTPUTS {}\n",
        plan.inputs.len(),
        plan.outputs.len()
    );
    let ios = |h: &mut String, kind: &str, list: &[tessera_kir::PlanIo]| {
        let ku = kind.to_ascii_uppercase();
        for (k, io) in list.iter().enumerate() {
            let n = io.dtype.storage_bytes(io.dims.iter().product());
            let dims: Vec<String> = io.dims.iter().map(u64::to_string).collect();
            let _ = writeln!(
                h,
                "/* {kind} {k} `{}`: {} [{}], {n} bytes, row-major{} */",
                io.name.replace("*/", "* /"),
                io.dtype.name(),
                dims.join(", "),
                if io.bound.is_some() {
                    "; bound at compile time: pass the same value"
                } else {
                    ""
                }
            );
            let m = format!("{up}_{ku}_{k}");
            let _ = writeln!(
                h,
                "#define {m}_NAME {}\n#define {m}_DTYPE \"{}\"\n#define {m}_ONNX_DTYPE {}\n#define {m}_RANK {}\n#define {m}_DIMS {{{}}}\n#define {m}_BYTES {n}u",
                c_string(&io.name),
                io.dtype.name(),
                io.dtype.to_onnx(),
                io.dims.len(),
                if dims.is_empty() { "0".to_string() } else { dims.join(", ") }
            );
        }
        let names: Vec<String> = list.iter().map(|io| c_string(&io.name)).collect();
        let dtypes: Vec<String> = list
            .iter()
            .map(|io| format!("\"{}\"", io.dtype.name()))
            .collect();
        let bytes: Vec<String> = list
            .iter()
            .map(|io| format!("{}u", io.dtype.storage_bytes(io.dims.iter().product())))
            .collect();
        let shapes: Vec<String> = list
            .iter()
            .map(|io| {
                let d: Vec<String> = io.dims.iter().map(u64::to_string).collect();
                format!("\"{}\"", d.join("x"))
            })
            .collect();
        let with_end = |mut v: Vec<String>, end: &str| {
            v.push(end.to_string());
            v.join(", ")
        };
        let _ = writeln!(
            h,
            "/* The {kind}s as tables, in order, each ending with a NULL / 0 entry. */\nstatic const char *const {p}_{kind}_names[] = {{{}}};\nstatic const char *const {p}_{kind}_dtypes[] = {{{}}};\nstatic const char *const {p}_{kind}_shapes[] = {{{}}};\nstatic const uint64_t {p}_{kind}_bytes[] = {{{}}};\n",
            with_end(names, "NULL"),
            with_end(dtypes, "NULL"),
            with_end(shapes, "NULL"),
            with_end(bytes, "0u")
        );
    };
    ios(&mut h, "input", &plan.inputs);
    ios(&mut h, "output", &plan.outputs);
    let _ = writeln!(
        h,
        "/* Runs the model once on the calling thread.\n *   inputs[k]:  {up}_INPUT_k_BYTES bytes of input k (dtype and shape as above), read only;\n *   outputs[k]: {up}_OUTPUT_k_BYTES bytes the outputs are written to;\n *   workspace:  {up}_WORKSPACE_BYTES bytes aligned to {up}_WORKSPACE_ALIGN, owned by this run\n *               (no other run may use it at the same time; no need to clear it).\n * The library keeps no state: runs with separate workspaces may go on in any number of\n * threads at once. Returns 0 on success; otherwise a status that {p}_error_message names\n * (the outputs are then unspecified). */\nint32_t {p}_run(const void *const inputs[], void *const outputs[], void *workspace);\n\n/* What a status of {p}_run means (a static string; \"success\" for 0). */\nconst char *{p}_error_message(int32_t status);\n\n/* The value a failed data check found (an index out of range, …), or the iteration or input\n * number an error names, read from the workspace of the failed run. */\nint64_t {p}_error_value(const void *workspace);\n"
    );
    let _ = writeln!(
        h,
        "/* The object's kernels (for reading its disassembly), symbol = kernel:",
    );
    for (i, k) in kernels.iter().enumerate() {
        let _ = writeln!(h, " *   {p}_k{i} = {}", k.replace("*/", "* /"));
    }
    h.push_str(" */\n\n");
    let _ = writeln!(
        h,
        "/* Generic names for drivers that serve any one model (include a single model header). */\n#define TESSERA_AOT_MODEL {p}\n#define TESSERA_AOT_NUM_INPUTS {up}_NUM_INPUTS\n#define TESSERA_AOT_NUM_OUTPUTS {up}_NUM_OUTPUTS\n#define TESSERA_AOT_WORKSPACE_BYTES {up}_WORKSPACE_BYTES\n#define TESSERA_AOT_WORKSPACE_ALIGN {up}_WORKSPACE_ALIGN\n#define TESSERA_AOT_TARGET {up}_TARGET\n\n#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {guard} */"
    );
    h
}

/// `s` as a C string literal (non-printable bytes and quotes escaped in octal).
fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for &b in s.as_bytes() {
        if (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\' && b != b'?' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\{b:03o}");
        }
    }
    out.push('"');
    out
}

/// A GNU/System V `ar` archive holding `object` as member `member` (at most 15 bytes, no
/// `/`), with the symbol index linkers need (`symbols` are the globals it defines).
pub fn archive(object: &[u8], member: &str, symbols: &[String]) -> Vec<u8> {
    fn header(out: &mut Vec<u8>, name: &str, size: usize) {
        let h = format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 644);
        out.extend_from_slice(h.as_bytes());
    }
    let mut index = Vec::new();
    let mut names = Vec::new();
    for s in symbols {
        names.extend_from_slice(s.as_bytes());
        names.push(0);
    }
    let index_len = 4 + 4 * symbols.len() + names.len();
    let padded = index_len + index_len % 2;
    // The object's header follows the magic, the index's header and the padded index.
    let obj_at = (8 + 60 + padded) as u32;
    index.extend_from_slice(&(symbols.len() as u32).to_be_bytes());
    for _ in symbols {
        index.extend_from_slice(&obj_at.to_be_bytes());
    }
    index.extend_from_slice(&names);
    if index.len() % 2 == 1 {
        index.push(b'\n');
    }
    let mut out = b"!<arch>\n".to_vec();
    header(&mut out, "/", index_len);
    out.extend_from_slice(&index);
    header(&mut out, &format!("{member}/"), object.len());
    out.extend_from_slice(object);
    if object.len() % 2 == 1 {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_strings_are_c() {
        assert_eq!(c_identifier("model"), "model");
        assert_eq!(c_identifier("my-model.v2"), "my_model_v2");
        assert_eq!(c_identifier("3d"), "_3d");
        assert_eq!(c_string("a\"b\\?\n"), "\"a\\042b\\134\\077\\012\"");
        assert_eq!(c_bytes(b"a\"\0"), "a\\22\\00");
    }

    #[test]
    fn archives_have_an_index() {
        let a = archive(b"OBJ", "model.o", &["model_run".into()]);
        assert!(a.starts_with(b"!<arch>\n/               "));
        // The index points at the object's member header.
        let at = u32::from_be_bytes(a[8 + 60 + 4..8 + 60 + 8].try_into().unwrap()) as usize;
        assert_eq!(&a[at..at + 8], b"model.o/");
        assert!(a.ends_with(b"OBJ\n"));
    }
}
