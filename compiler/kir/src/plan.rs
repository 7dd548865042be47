//! The plan: the small program the runtime executes around the kernels. It names every
//! buffer, binds graph inputs and outputs to buffers, and lists the steps (kernel launches
//! and copies) in order. Lowering produces a [`Program`]: kernels plus a plan.

use crate::kernel::Kernel;
use tessera_ir::DType;

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
        for (s, step) in self.steps.iter().enumerate() {
            match step {
                Step::Launch { args, .. } => {
                    for &a in args {
                        touch(a, s, self, &mut first, &mut last);
                    }
                }
                Step::Copy { src, dst } => {
                    touch(*src, s, self, &mut first, &mut last);
                    touch(*dst, s, self, &mut first, &mut last);
                }
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

/// What lowering produces: the kernels and the plan that launches them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    pub kernels: Vec<Kernel>,
    pub plan: Plan,
}
