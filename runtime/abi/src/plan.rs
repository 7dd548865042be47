//! The plan: the small program the runtime executes around the kernels. It names every
//! buffer, binds graph inputs and outputs to buffers, and lists the steps (kernel launches
//! and copies) in order. Lowering produces it with the kernels (`tessera_kir::Program`); the
//! artifact stores it and the runtime executes it.

use crate::dtype::DType;

/// Index into [`Plan::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

/// Where a plan buffer's storage comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// Graph input number `n`, filled by the caller.
    Input(u32),
    /// Constant number `n` of [`Plan::consts`].
    Const(u32),
    /// Scratch or output storage allocated by the runtime. Buffers with the same `slot` share
    /// storage; slots are assigned so that no two live buffers share one.
    Temp { slot: u32 },
    /// The same storage as another buffer, viewed with this buffer's dims (reshapes).
    Alias(BufferId),
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlanBuffer {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<u64>,
    pub kind: BufferKind,
}

impl PlanBuffer {
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn byte_len(&self) -> u64 {
        self.dtype.storage_bytes(self.num_elements())
    }
}

/// A graph input or output as the caller sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanIo {
    pub name: String,
    pub buffer: BufferId,
    pub dtype: DType,
    pub dims: Vec<u64>,
    /// For inputs bound at compile time: the raw bytes the caller must pass again.
    pub bound: Option<Vec<u8>>,
}

/// One thing the runtime does, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Launches kernel `kernel` with `args` bound to its parameters in order.
    Launch { kernel: u32, args: Vec<BufferId> },
    /// Copies all bytes of `src` into `dst` (same byte length).
    Copy { src: BufferId, dst: BufferId },
    /// Runs `then_steps` if the bool scalar `cond` is true at run time, else `else_steps`.
    /// Each branch ends by copying its results into the buffers the plan reads afterwards.
    If {
        cond: BufferId,
        then_steps: Vec<Step>,
        else_steps: Vec<Step>,
    },
    /// Runs a loop body repeatedly (ONNX `Loop` and `Scan`); see [`LoopStep`].
    Loop(Box<LoopStep>),
    /// An op the runtime computes on the host because its result's size depends on the data
    /// (see [`HostOp`]). Each output buffer is allocated at its largest possible size; the
    /// runtime records the size actually produced, which the caller sees for graph outputs.
    Host {
        op: HostOp,
        inputs: Vec<Option<BufferId>>,
        outputs: Vec<BufferId>,
    },
}

/// The host ops of [`Step::Host`], with their attributes. Their semantics are ONNX's.
#[derive(Clone, Debug, PartialEq)]
pub enum HostOp {
    /// Indices of the non-zero elements, `[rank, count]` i64.
    NonZero,
    /// The slices along `axis` (or the elements of the flattened input) where the condition holds.
    Compress { axis: Option<i64> },
    /// Unique slices along `axis` (or elements); results: values, first indices, inverse
    /// indices, counts.
    Unique { axis: Option<i64>, sorted: bool },
    /// Selected box indices `[count, 3]` (batch, class, box), greedy by score.
    NonMaxSuppression { center_point_box: bool },
    /// Elementwise concatenation of two broadcast string tensors.
    StringConcat,
    /// `Equal` on two broadcast string tensors.
    StringEqual,
    /// Whether each string matches `pattern` as a whole (RE2-like syntax).
    RegexFullMatch { pattern: String },
    /// Case change (0 none, 1 lower, 2 upper) and stopword removal; empty results dropped.
    StringNormalizer {
        case: u8,
        case_sensitive: bool,
        stopwords: Vec<String>,
    },
    /// Splits each string at `delimiter` (whitespace runs when empty), at most `maxsplit`
    /// times; results: the parts padded with "" to the longest, and the part counts.
    StringSplit {
        delimiter: String,
        maxsplit: Option<i64>,
    },
    /// Maps each element through `keys` → `values`, else `default` (ai.onnx.ml).
    LabelEncoder {
        keys: HostValues,
        values: HostValues,
        default: HostValues,
    },
    /// N-gram counts of each row against a pool (mode 1 TF, 2 IDF, 3 TFIDF), as f32.
    TfIdf {
        min_gram: i64,
        max_gram: i64,
        max_skip: i64,
        mode: u8,
        ngram_counts: Vec<i64>,
        ngram_indexes: Vec<i64>,
        pool: HostValues,
        weights: Vec<f64>,
    },
    /// A tree ensemble (ai.onnx.ml `TreeEnsemble`), evaluated per row on the host.
    TreeEnsemble(Box<TreeEnsemble>),
}

/// The attributes of an ai.onnx.ml `TreeEnsemble`, per node and per leaf.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeEnsemble {
    /// 0 average, 1 sum, 2 min, 3 max.
    pub aggregate: u8,
    pub n_targets: i64,
    pub tree_roots: Vec<i64>,
    pub feature_ids: Vec<i64>,
    pub splits: Vec<f64>,
    /// 0 `<=`, 1 `<`, 2 `>=`, 3 `>`, 4 `==`, 5 `!=`, 6 member of a set.
    pub modes: Vec<i64>,
    pub true_ids: Vec<i64>,
    pub true_leafs: Vec<i64>,
    pub false_ids: Vec<i64>,
    pub false_leafs: Vec<i64>,
    pub missing_tracks_true: Vec<i64>,
    pub leaf_targets: Vec<i64>,
    pub leaf_weights: Vec<f64>,
    /// The sets of the member nodes, in node order, separated by NaN.
    pub membership: Vec<f64>,
}

/// A list of attribute values of a host op.
#[derive(Clone, Debug, PartialEq)]
pub enum HostValues {
    Strings(Vec<String>),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
}

/// How many iterations a [`LoopStep`] runs at most.
#[derive(Clone, Debug, PartialEq)]
pub enum Trip {
    /// Read from an i64 scalar buffer when the loop starts (ONNX `Loop`'s `M`).
    Buffer(BufferId),
    /// Known at compile time (a `Scan`'s sequence length).
    Fixed(u64),
    /// Only the condition ends the loop.
    Unbounded,
}

/// One part of a sliced buffer: `whole` is `n` equal parts of `part`'s byte length, one per
/// iteration (iteration `i` uses part `i`, or part `n - 1 - i` when `reverse`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoopSlice {
    pub whole: BufferId,
    pub part: BufferId,
    pub reverse: bool,
}

/// A loop in the plan. Each iteration `i`, while `i` is below the trip count and the
/// condition holds: the runtime writes `i` into `iter` (i64 scalar) and the condition into
/// `cond_in` (bool scalar), copies part `i` of every `scan_in` whole into its part buffer,
/// runs `body`, copies every `scan_out` part into part `i` of its whole, copies each carried
/// body result into its body parameter (all results read before any parameter is written),
/// and reads the next condition from `cond_out`. The loop-carried values keep their shapes
/// across iterations (a static plan); scan outputs are sized for the trip count, and a loop
/// that ends after a different number of iterations is a run-time error, not a short result.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopStep {
    pub trip: Trip,
    /// The initial condition (bool scalar); `None` means true.
    pub cond: Option<BufferId>,
    pub iter: Option<BufferId>,
    pub cond_in: Option<BufferId>,
    pub cond_out: Option<BufferId>,
    pub body: Vec<Step>,
    /// `(body result, body parameter)` pairs.
    pub carried: Vec<(BufferId, BufferId)>,
    pub scan_in: Vec<LoopSlice>,
    pub scan_out: Vec<LoopSlice>,
}

impl Step {
    /// Every buffer the step reads or writes, nested steps included.
    pub fn buffers(&self, out: &mut Vec<BufferId>) {
        match self {
            Step::Launch { args, .. } => out.extend(args.iter().copied()),
            Step::Copy { src, dst } => out.extend([*src, *dst]),
            Step::If {
                cond,
                then_steps,
                else_steps,
            } => {
                out.push(*cond);
                for s in then_steps.iter().chain(else_steps) {
                    s.buffers(out);
                }
            }
            Step::Host {
                inputs, outputs, ..
            } => out.extend(inputs.iter().flatten().chain(outputs).copied()),
            Step::Loop(l) => {
                if let Trip::Buffer(b) = l.trip {
                    out.push(b);
                }
                out.extend(
                    l.cond
                        .iter()
                        .chain(&l.iter)
                        .chain(&l.cond_in)
                        .chain(&l.cond_out)
                        .copied(),
                );
                for (r, p) in &l.carried {
                    out.extend([*r, *p]);
                }
                for sl in l.scan_in.iter().chain(&l.scan_out) {
                    out.extend([sl.whole, sl.part]);
                }
                for s in &l.body {
                    s.buffers(out);
                }
            }
        }
    }

    /// The number of kernel launches written in the step, nested steps included (each once).
    pub fn launches(&self) -> usize {
        match self {
            Step::Launch { .. } => 1,
            Step::Copy { .. } | Step::Host { .. } => 0,
            Step::If {
                then_steps,
                else_steps,
                ..
            } => then_steps
                .iter()
                .chain(else_steps)
                .map(Step::launches)
                .sum(),
            Step::Loop(l) => l.body.iter().map(Step::launches).sum(),
        }
    }
}

/// How one graph node was executed, for the conformance report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Execution {
    /// By one or more compiled kernels.
    Kernel,
    /// By the runtime on the host (plan copies, shape work).
    Host,
    /// By aliasing storage: no work at all (reshape-like ops).
    Alias,
    /// Computed at compile time (constants and shapes).
    Folded,
}

impl Execution {
    pub fn name(self) -> &'static str {
        match self {
            Execution::Kernel => "kernel",
            Execution::Host => "host",
            Execution::Alias => "alias",
            Execution::Folded => "folded",
        }
    }

    pub fn from_name(s: &str) -> Option<Execution> {
        [
            Execution::Kernel,
            Execution::Host,
            Execution::Alias,
            Execution::Folded,
        ]
        .into_iter()
        .find(|e| e.name() == s)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeRecord {
    /// The node's label, e.g. `Conv node "conv1"`.
    pub node: String,
    /// The op type, e.g. `Conv`.
    pub op: String,
    /// Whether the op is dense numerics (the report checks those ran as kernels).
    pub dense: bool,
    pub how: Execution,
}

/// What one data check (a kernel's `trap` instruction) is about, so the runtime can name it:
/// `Plan::traps[code]` describes code `code` of kernel `kernel`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrapSite {
    /// The kernel whose `trap` instructions use this code.
    pub kernel: u32,
    /// The node's label, e.g. `Gather node "g"`.
    pub node: String,
    /// The op type, e.g. `Gather`.
    pub op: String,
    /// The operand whose data is checked, e.g. `indices`.
    pub input: String,
    /// What the value must be, completing "holds VALUE, which is …", e.g. `out of range for
    /// axis 0 of size 1000 (valid: -1000 to 999)`.
    pub what: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub buffers: Vec<PlanBuffer>,
    pub inputs: Vec<PlanIo>,
    pub outputs: Vec<PlanIo>,
    pub steps: Vec<Step>,
    pub consts: Vec<Vec<u8>>,
    pub nodes: Vec<NodeRecord>,
    /// The data checks of every kernel, indexed by trap code (see [`TrapSite`]).
    pub traps: Vec<TrapSite>,
}

impl Plan {
    pub fn buffer(&self, id: BufferId) -> &PlanBuffer {
        &self.buffers[id.0 as usize]
    }

    /// Follows aliases to the buffer that owns the storage.
    pub fn root(&self, mut id: BufferId) -> BufferId {
        // Alias chains are acyclic by construction; the bound stops a corrupt plan looping.
        for _ in 0..self.buffers.len() {
            match self.buffers.get(id.0 as usize).map(|b| &b.kind) {
                Some(BufferKind::Alias(of)) => id = *of,
                _ => break,
            }
        }
        id
    }

    /// The byte length of each storage slot: its largest `Temp` buffer.
    pub fn slot_bytes(&self) -> Vec<u64> {
        let mut slots: Vec<u64> = Vec::new();
        for b in &self.buffers {
            if let BufferKind::Temp { slot } = b.kind {
                let s = slot as usize;
                if slots.len() <= s {
                    slots.resize(s + 1, 0);
                }
                slots[s] = slots[s].max(b.byte_len());
            }
        }
        slots
    }

    /// Assigns storage slots to `Temp` buffers so that buffers whose live ranges (first to last
    /// step that touches them or an alias of them) do not overlap share storage. Buffers that
    /// hold graph outputs are never shared. Returns the number of slots.
    pub fn assign_slots(&mut self) -> u32 {
        let n = self.buffers.len();
        let mut first = vec![usize::MAX; n];
        let mut last = vec![0usize; n];
        let touch =
            |b: BufferId, s: usize, plan: &Plan, first: &mut Vec<usize>, last: &mut Vec<usize>| {
                let r = plan.root(b).0 as usize;
                first[r] = first[r].min(s);
                last[r] = last[r].max(s);
            };
        // A control-flow step counts as one step touching every buffer inside it, so nothing
        // its body uses shares storage with anything else live across it.
        let mut used = Vec::new();
        for (s, step) in self.steps.iter().enumerate() {
            used.clear();
            step.buffers(&mut used);
            for &a in &used {
                touch(a, s, self, &mut first, &mut last);
            }
        }
        let pinned: Vec<usize> = self
            .outputs
            .iter()
            .map(|o| self.root(o.buffer).0 as usize)
            .collect();
        // Greedy interval colouring in order of first use; each slot remembers when it frees.
        let mut order: Vec<usize> = (0..n)
            .filter(|&i| matches!(self.buffers[i].kind, BufferKind::Temp { .. }))
            .collect();
        order.sort_by_key(|&i| (first[i], i));
        let mut slot_free_after: Vec<Option<usize>> = Vec::new();
        for i in order {
            let slot = if pinned.contains(&i) || first[i] == usize::MAX {
                None
            } else {
                slot_free_after
                    .iter()
                    .position(|f| f.is_some_and(|end| end < first[i]))
            };
            let slot = match slot {
                Some(s) => s,
                None => {
                    slot_free_after.push(None);
                    slot_free_after.len() - 1
                }
            };
            slot_free_after[slot] = if pinned.contains(&i) || first[i] == usize::MAX {
                None
            } else {
                Some(last[i])
            };
            self.buffers[i].kind = BufferKind::Temp { slot: slot as u32 };
        }
        slot_free_after.len() as u32
    }
}

/// The bytes of a string constant in [`Plan::consts`]: each string as a little-endian u32
/// byte length and its UTF-8 bytes. (A string buffer has no byte storage of its own.)
pub fn encode_strings(strings: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Reads `n` strings written by [`encode_strings`]; `None` if the bytes do not hold exactly that.
pub fn decode_strings(mut bytes: &[u8], n: u64) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?;
        out.push(s.to_string());
        bytes = &bytes[4 + len..];
    }
    bytes.is_empty().then_some(out)
}
