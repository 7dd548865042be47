//! The cost model: estimated cycles of each e-node on one target, computed only from its
//! [`TargetDesc`]: the `mma` table and `peak_ops_per_cycle` (matrix-product throughput per
//! dtype pair), `vector_bytes` (elementwise lanes), DMA edges and memory bandwidths (bytes
//! moved), and the launch model (the fixed cost of one kernel). Extraction minimises the sum.
//!
//! A node costs `launch + bytes / bandwidth + work / throughput`:
//! - *bytes* are its operands and results (reshape-like ops alias storage and cost ~0);
//! - *work* is MACs for matrix products, run at the `mma` pair's rate when the target has the
//!   pair, else at `peak_ops_per_cycle` of the operand dtype; a narrow float with neither is
//!   emulated in f32 at half the f32 rate;
//! - other ops do a few operations per element on `vector_bytes / 4` lanes (transcendentals
//!   count 20, row ops 10).

use crate::analysis::EGraph;
use crate::lang::TNode;
use egg::{CostFunction, Id, Language};
use tessera_ir::{DType, Op, TensorType};
use tessera_target::{Launch, MemoryRole, TargetDesc};

/// One target's figures, read once from its description.
#[derive(Clone, Debug)]
pub struct CostModel {
    pub target: String,
    /// Fixed cycles of one kernel launch.
    pub launch: f64,
    /// Bytes per cycle to and from global memory.
    pub bandwidth: f64,
    /// f32 lanes of the vector unit.
    pub lanes: f64,
    desc: TargetDesc,
}

impl CostModel {
    pub fn new(desc: &TargetDesc) -> CostModel {
        let gm_edges: Vec<_> = desc
            .dma
            .iter()
            .filter(|e| {
                desc.memory_named(&e.src)
                    .is_some_and(|m| m.role == MemoryRole::Global)
            })
            .collect();
        let bandwidth = if let Some(bw) = gm_edges.iter().map(|e| e.bytes_per_cycle).max() {
            bw as f64
        } else if let Some(bw) = desc
            .memory
            .iter()
            .filter(|m| m.bandwidth > 0)
            .map(|m| m.bandwidth)
            .min()
        {
            bw as f64
        } else {
            desc.vector_bytes.max(4) as f64
        };
        let launch = match desc.launch {
            Launch::NpuCore => {
                let setup = gm_edges.iter().map(|e| e.setup_cycles).min().unwrap_or(0);
                let npu = desc
                    .npu
                    .as_ref()
                    .map_or(0, |n| n.cube.startup_cycles + n.vector.startup_cycles);
                (setup + npu).max(1) as f64
            }
            // Waking worker threads and joining them: about 2 µs at the target's clock.
            Launch::Threads | Launch::Simt => 2000.0 * desc.clock_ghz.max(1.0),
            Launch::Serial => 100.0,
        };
        CostModel {
            target: desc.name.clone(),
            launch,
            bandwidth: bandwidth.max(1.0),
            lanes: (desc.vector_bytes as f64 / 4.0).max(1.0),
            desc: desc.clone(),
        }
    }

    /// Multiply-adds per cycle of a product of `a × b` accumulating in `acc` (at least 1e-3, so
    /// that a description with a zero rate cannot make a cost infinite).
    pub fn macs_per_cycle(&self, a: DType, b: DType, acc: DType) -> f64 {
        self.raw_macs_per_cycle(a, b, acc).max(1e-3)
    }

    fn raw_macs_per_cycle(&self, a: DType, b: DType, acc: DType) -> f64 {
        let peak = |d: DType| {
            self.desc
                .peak_ops_per_cycle
                .get(&d)
                .map(|&p| p as f64 / 2.0)
        };
        if let Some(p) = self.desc.mma_pair(a, b, acc) {
            return peak(a).unwrap_or((p.m * p.n * p.k) as f64);
        }
        // Unsigned ints run at the rate of the signed ones of their width.
        let signed = match a {
            DType::U8 => DType::I8,
            DType::U16 => DType::I16,
            DType::U32 => DType::I32,
            d => d,
        };
        if let Some(p) = peak(a).or_else(|| peak(signed)) {
            return p;
        }
        let f32_rate = peak(DType::F32).unwrap_or(self.lanes);
        if a.is_float() {
            f32_rate / 2.0
        } else {
            f32_rate
        }
    }

    /// The cycles of one e-node, its operands' classes typed by `eg`.
    pub fn node_cost(&self, eg: &EGraph, node: &TNode) -> f64 {
        let TNode::Op(key, ch) = node else {
            return 0.0;
        };
        let Some(id) = eg.lookup(node.clone()) else {
            return self.launch;
        };
        // A concatenation of constants (`matmul-merge`'s weights) is folded by the driver
        // after the optimizer: no kernel runs it.
        if key.op == Op::Concat
            && ch
                .iter()
                .all(|&c| eg[c].data.konst.is_some() && !eg[c].data.input)
        {
            return 0.0;
        }
        let out = &eg[id].data.tys;
        let ins: Vec<Option<&TensorType>> = ch
            .iter()
            .map(|&c| {
                let d = &eg[c].data;
                if d.tys.len() == 1 {
                    d.tys.first()
                } else {
                    None
                }
            })
            .collect();
        self.op_cost(key.op, &ins, out)
    }

    /// The cycles of `op` on operands `ins` (None: omitted or untyped) giving `outs`.
    pub fn op_cost(&self, op: Op, ins: &[Option<&TensorType>], outs: &[TensorType]) -> f64 {
        use Op::*;
        let bytes = |t: &TensorType| {
            t.shape
                .num_elements()
                .map_or(0.0, |n| t.dtype.storage_bytes(n) as f64)
        };
        let elems = |t: &TensorType| t.shape.num_elements().unwrap_or(1) as f64;
        if matches!(op, Reshape | Flatten | Squeeze | Unsqueeze | Identity) {
            return 0.01;
        }
        let moved: f64 = ins.iter().flatten().map(|t| bytes(t)).sum::<f64>()
            + outs.iter().map(bytes).sum::<f64>();
        let base = self.launch + moved / self.bandwidth;
        let Some(y) = outs.first() else {
            return base;
        };
        let work = match op {
            MatMul | MatMulInteger | FusedMatMul | Gemm | QLinearMatMul => {
                let (a, b) = match op {
                    QLinearMatMul => (ins.first(), ins.get(3)),
                    _ => (ins.first(), ins.get(1)),
                };
                let (Some(Some(a)), Some(Some(b))) = (a, b) else {
                    return base;
                };
                // K: A's last dim; for Gemm (A may be transposed) A's size over M.
                let k = match op {
                    Gemm => {
                        let m = y
                            .shape
                            .0
                            .first()
                            .and_then(|d| d.fixed())
                            .unwrap_or(1)
                            .max(1);
                        elems(a) / m as f64
                    }
                    _ => a.shape.0.last().and_then(|d| d.fixed()).unwrap_or(1) as f64,
                };
                let acc = if a.dtype.is_int() {
                    DType::I32
                } else {
                    DType::F32
                };
                elems(y) * k / self.macs_per_cycle(a.dtype, b.dtype, acc)
            }
            Conv | FusedConv | ConvInteger | QLinearConv => {
                let w = ins.get(if op == QLinearConv { 3 } else { 1 });
                let per = w
                    .copied()
                    .flatten()
                    .map(|w| {
                        elems(w)
                            / w.shape
                                .0
                                .first()
                                .and_then(|d| d.fixed())
                                .unwrap_or(1)
                                .max(1) as f64
                    })
                    .unwrap_or(1.0);
                let dt = ins
                    .first()
                    .copied()
                    .flatten()
                    .map_or(DType::F32, |t| t.dtype);
                let acc = if dt.is_int() { DType::I32 } else { DType::F32 };
                elems(y) * per / self.macs_per_cycle(dt, dt, acc)
            }
            Exp | Log | Erf | Tanh | Sigmoid | Gelu | Sin | Cos | Pow | Softplus | Mish | Elu
            | Selu | Celu | HardSwish | Swish => 20.0 * elems(y) / self.lanes,
            Softmax
            | LogSoftmax
            | LayerNormalization
            | RMSNormalization
            | BatchNormalization
            | InstanceNormalization
            | GroupNormalization => 10.0 * elems(y) / self.lanes,
            _ => {
                let n = ins
                    .iter()
                    .flatten()
                    .map(|t| elems(t))
                    .fold(elems(y), f64::max);
                n / self.lanes
            }
        };
        let c = base + work;
        if c.is_finite() {
            c
        } else {
            1e30
        }
    }

    /// The cost of a whole graph: the sum over its nodes.
    pub fn graph_cost(&self, g: &tessera_ir::Graph) -> f64 {
        g.nodes
            .iter()
            .map(|n| {
                let ins: Vec<Option<&TensorType>> =
                    n.inputs.iter().map(|i| i.and_then(|v| g.ty(v))).collect();
                let outs: Vec<TensorType> =
                    n.outputs.iter().filter_map(|&o| g.ty(o).cloned()).collect();
                if n.op == Op::Constant {
                    0.0
                } else {
                    self.op_cost(n.op, &ins, &outs)
                }
            })
            .sum()
    }
}

/// The extraction cost: a node's cycles plus its operands' (egg's tree cost), except that a
/// result of a multi-result node pays only its share of that node. Each result of a tuple
/// class, a fraction `s` of its elements, is charged the tuple's cost less `1 − s` of the
/// tuple's own kernel and, for a `Split` that is the only reader of what it splits (as
/// `matmul-merge` builds it), less `1 − s` of the kernel that produced that. The tree cost
/// would charge a merged product once per result it hands out; this charges it once, as the
/// built graph runs it.
pub struct Cycles<'a> {
    pub eg: &'a EGraph,
    pub model: &'a CostModel,
}

impl CostFunction<TNode> for Cycles<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &TNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        if let TNode::Proj(k, [t]) = enode {
            let share = self.share(*t, *k as usize);
            let shared = self.shared(*t);
            return (costs(*t) - (1.0 - share) * shared).max(0.0);
        }
        let own = self.model.node_cost(self.eg, enode);
        enode.children().iter().fold(own, |acc, &c| acc + costs(c))
    }
}

impl Cycles<'_> {
    /// Result `k`'s part of tuple class `t`, by elements (1/n where they are unknown), so
    /// that a narrow result pays less of a merged product than a wide one.
    fn share(&self, t: Id, k: usize) -> f64 {
        let tys = &self.eg[t].data.tys;
        let elems: Option<Vec<f64>> = tys
            .iter()
            .map(|t| t.shape.num_elements().map(|n| n as f64))
            .collect();
        match elems {
            Some(e) if e.iter().sum::<f64>() > 0.0 && k < e.len() => e[k] / e.iter().sum::<f64>(),
            _ => 1.0 / tys.len().max(1) as f64,
        }
    }

    /// The own cycles of tuple class `t`'s kernel and, when it is a `Split`, of the cheapest
    /// kernel of the class it splits: what the results of `t` share.
    fn shared(&self, t: Id) -> f64 {
        let own = |c: Id| {
            self.eg[c]
                .nodes
                .iter()
                .filter(|n| matches!(n, TNode::Op(..)))
                .map(|n| self.model.node_cost(self.eg, n))
                .fold(f64::INFINITY, f64::min)
        };
        let tuple = own(t);
        if !tuple.is_finite() {
            return 0.0;
        }
        let split = self.eg[t].nodes.iter().find_map(|n| match n {
            TNode::Op(k, ch) if k.op == Op::Split => ch.first().copied(),
            _ => None,
        });
        // Only a split that is its input's one reader shares that input's kernel.
        let split = split.filter(|&c| crate::rules::only_user(self.eg, c, t));
        tuple + split.map(own).filter(|c| c.is_finite()).unwrap_or(0.0)
    }
}
