//! The one target-description schema: [`TargetDesc`], parsed from a backend's `target.toml`
//! and checked. The compiler (lowering, cost models, codegen) and the simulators read the same
//! typed data; where a field has a fixed set of values it is an enum, so a typo is a parse
//! error naming the file and the field, never a silently ignored string.
//!
//! The common part describes any chip: ISA, launch model, vector width, dtypes, on-chip
//! memories with their roles, DMA edges and the pipes that drive them, matrix-unit tile shapes
//! per dtype pair, peak throughput and output tolerances. A chip family may add its own
//! section; the Da Vinci-style NPUs use [`NpuDesc`] under `[npu]` (scalar unit, queues, flags,
//! Cube and Vector timing).

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::str::FromStr;
use tessera_ir::DType;

use crate::TargetError;

/// A target's capabilities, as written in its `target.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetDesc {
    /// kebab-case name, e.g. `host`.
    pub name: String,
    pub description: String,
    /// ISA or triple, e.g. `x86_64`, `kernel-ir`, `npu-sim`.
    pub isa: String,
    /// How program instances of a launch run.
    pub launch: Launch,
    /// Widest vector register (or vector-unit row per cycle) in bytes; 0: no vectors.
    pub vector_bytes: u32,
    /// Dtypes the target can hold in buffers.
    #[serde(deserialize_with = "dtype_list")]
    pub dtypes: Vec<DType>,
    /// Matrix-unit tile shapes per dtype pair, e.g. `"f16xf16->f32" = [16, 16, 16]` (m, n, k).
    /// Every key is checked to name three dtypes on load; [`TargetDesc::mma_pairs`] gives them typed.
    #[serde(default)]
    pub mma: BTreeMap<String, [u32; 3]>,
    /// Default tile sizes lowering uses for matrix products on this target (m, n, k).
    pub matmul_tile: [u32; 3],
    /// Memories: global memory, caches, on-chip buffers.
    #[serde(default)]
    pub memory: Vec<MemoryDesc>,
    /// DMA edges between memories, and the pipe each runs on.
    #[serde(default)]
    pub dma: Vec<DmaEdgeDesc>,
    /// Peak operations per cycle, per dtype (a multiply-add counts as two).
    #[serde(default, deserialize_with = "dtype_map")]
    pub peak_ops_per_cycle: BTreeMap<DType, u64>,
    /// Clock in GHz (0 where meaningless).
    #[serde(default)]
    pub clock_ghz: f64,
    /// Output tolerances: relative and absolute, per dtype name.
    #[serde(default)]
    pub tolerance: BTreeMap<String, [f64; 2]>,
    /// The Da Vinci-style NPU section (`[npu]`), for chips that have one.
    #[serde(default)]
    pub npu: Option<NpuDesc>,
    /// A CPU's integer dot product, by its group size: 0 (the default) none; 2 for i16 pairs
    /// (`pmaddwd`); 4 for u8 × i8 quads (`vpdpbusd`), which implies pairs. Lowering then
    /// computes 8-bit integer products in i32 with the weights packed in groups of k
    /// (`tile.dot`), where without it they are widened to the f32 product.
    #[serde(default)]
    pub int_dot: u32,
    /// The CPU schedule section (`[cpu]`), for targets whose matrix products run on CPU
    /// cores: operand layouts chosen at compile time.
    #[serde(default)]
    pub cpu: Option<CpuDesc>,
}

/// How a CPU target wants the compile-time-constant operand of a matrix product laid out.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OperandLayout {
    /// As the graph holds it (row-major, transposed or not).
    #[default]
    AsIs,
    /// Packed at compile time into panels of one output tile's columns: `[⌈N/tn⌉][K'][tn]`
    /// (K' rounded up to the k step, zero-padded), so every tile of it is one contiguous,
    /// in-range block whatever the graph's transposition (mmt4d-style).
    Panels,
}

/// The `[cpu]` section: what lowering needs to schedule matrix products for CPU cores.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CpuDesc {
    /// Layout of a matrix product's constant operand (a MatMul/Gemm's weights, B).
    #[serde(default)]
    pub constant_operand: OperandLayout,
    /// Vector registers the code generator allocates at `vector_bytes`.
    #[serde(default)]
    pub vector_registers: u32,
    /// The f32 register block of a matrix product's micro-kernel: accumulator rows by
    /// vectors per row (`[0, 0]`: the backend's default). The backend blocks `tile.mma` so,
    /// and lowering sizes the k step so that one B panel of `vectors × vector_bytes` per row
    /// stays in half the level-1 cache.
    #[serde(default)]
    pub register_block: [u32; 2],
    /// The backend vectorises plain scalar loops itself (LLVM's loop vectorizer, which also
    /// turns a bounds test per element into masked or selected vectors). Lowering then keeps
    /// such loops simple; for a backend without one (Cranelift) it writes the vector runs.
    #[serde(default)]
    pub loop_vectorizer: bool,
}

/// The launch model.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Launch {
    /// One program instance at a time (the interpreter).
    #[default]
    Serial,
    /// Grid points spread over CPU threads.
    Threads,
    /// A GPU grid of thread blocks.
    Simt,
    /// The grid runs as a loop inside one program on one NPU core.
    NpuCore,
}

/// What a memory is for. Lowering and codegen place tiles by role, never by name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryRole {
    /// Off-chip memory holding kernel inputs and outputs (GM, DRAM, HBM).
    Global,
    /// A hardware-managed cache (informational for cost models).
    Cache,
    /// A software-managed staging buffer between global memory and the operand buffers (L1).
    Staging,
    /// The matrix unit's left operand buffer (L0A).
    MatrixA,
    /// The matrix unit's right operand buffer (L0B).
    MatrixB,
    /// The matrix unit's accumulators (L0C).
    Accumulator,
    /// The vector unit's operand buffer (Unified Buffer).
    Vector,
}

/// One memory.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryDesc {
    /// The name the ISA uses (`GM`, `UB`, `L1D`).
    pub name: String,
    pub bytes: u64,
    /// Byte alignment every access base address must meet (a power of two).
    pub align: u32,
    pub role: MemoryRole,
    /// Free text for people.
    #[serde(default)]
    pub about: String,
    /// Bytes per cycle into this memory (0: unknown, or given by the DMA edges).
    #[serde(default)]
    pub bandwidth: u64,
}

/// The pipes of a Da Vinci-style core: the scalar unit issues into the other five.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pipe {
    /// The scalar unit.
    #[serde(rename = "S")]
    Scalar,
    /// GM → L1/UB.
    #[serde(rename = "MTE2")]
    Mte2,
    /// L1 → L0A/L0B.
    #[serde(rename = "MTE1")]
    Mte1,
    /// The matrix unit.
    #[serde(rename = "CUBE")]
    Cube,
    /// The vector unit (also moves L0C → UB).
    #[serde(rename = "VEC")]
    Vector,
    /// L0C/UB → GM.
    #[serde(rename = "MTE3")]
    Mte3,
}

/// One DMA edge: `src` → `dst` on `pipe`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DmaEdgeDesc {
    pub src: String,
    pub dst: String,
    pub pipe: Pipe,
    pub bytes_per_cycle: u64,
    /// Fixed cost of every transfer.
    #[serde(default)]
    pub setup_cycles: u64,
}

/// One matrix-unit tile shape: `C[m×n] (acc) += A[m×k] (a) · B[k×n] (b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmaPair {
    pub a: DType,
    pub b: DType,
    pub acc: DType,
    pub m: u32,
    pub n: u32,
    pub k: u32,
}

/// The Da Vinci-style NPU section, `[npu]`: what the simulator needs beyond the common part.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NpuDesc {
    pub cores: u32,
    pub scalar: NpuScalar,
    pub sync: NpuSync,
    pub cube: NpuCube,
    pub vector: NpuVector,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NpuScalar {
    /// Scalar registers, 64-bit.
    pub registers: u32,
    /// Cycles the scalar unit takes per instruction it executes or issues.
    pub issue_cycles: u64,
    /// Depth of each pipe's in-order queue.
    pub queue_depth: usize,
    /// Extra cycles of a scalar load or store to the Unified Buffer.
    pub ub_access_cycles: u64,
    /// Extra cycles of a scalar load or store to global memory.
    pub gm_access_cycles: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NpuSync {
    /// Flag ids per ordered (source pipe, destination pipe) pair.
    pub flag_ids: u32,
    /// A flag is a counting semaphore; setting it past this count is an error.
    pub max_count: u32,
    /// Pipe time taken by SET_FLAG and WAIT_FLAG.
    pub flag_cycles: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NpuCube {
    /// Cycles per tile-MMA once the Cube runs.
    pub cycles_per_tile: u64,
    /// Fixed start-up latency of each MMA instruction.
    pub startup_cycles: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NpuVector {
    /// Fixed start-up latency of each VEC/VRED instruction. Its width is `vector_bytes`.
    pub startup_cycles: u64,
}

fn dtype_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DType>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| DType::from_str(n).map_err(serde::de::Error::custom))
        .collect()
}

fn dtype_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<DType, u64>, D::Error> {
    let m = BTreeMap::<String, u64>::deserialize(d)?;
    m.into_iter()
        .map(|(k, v)| Ok((DType::from_str(&k).map_err(serde::de::Error::custom)?, v)))
        .collect()
}

/// Splits an mma key `"f16xf16->f32"` into its dtypes.
fn parse_pair(key: &str) -> Option<(DType, DType, DType)> {
    let (ab, acc) = key.split_once("->")?;
    let (a, b) = ab.split_once('x')?;
    Some((a.parse().ok()?, b.parse().ok()?, acc.parse().ok()?))
}

impl TargetDesc {
    /// Parses and checks a `target.toml`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<TargetDesc, TargetError> {
        let d: TargetDesc = toml::from_str(text).map_err(|e| TargetError::Desc {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        d.check().map_err(|message| TargetError::Desc {
            path: path.to_string(),
            message,
        })?;
        Ok(d)
    }

    /// The checks serde cannot express: names are unique and known, sizes and alignments
    /// sensible, tile shapes non-empty, tolerance keys dtypes.
    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.memory {
            if !seen.insert(m.name.as_str()) {
                return Err(format!("memory `{}` listed twice", m.name));
            }
            if m.bytes == 0 || m.align == 0 || !m.align.is_power_of_two() {
                return Err(format!(
                    "memory `{}`: bytes must be > 0 and align a power of two",
                    m.name
                ));
            }
        }
        for e in &self.dma {
            for end in [&e.src, &e.dst] {
                if self.memory_named(end).is_none() {
                    return Err(format!(
                        "DMA edge {}->{} names memory `{end}`, which is not listed",
                        e.src, e.dst
                    ));
                }
            }
            if e.src == e.dst {
                return Err(format!(
                    "DMA edge {}->{} joins a memory to itself",
                    e.src, e.dst
                ));
            }
            if matches!(e.pipe, Pipe::Scalar | Pipe::Cube) {
                return Err(format!(
                    "DMA edge {}->{} cannot run on pipe {:?}",
                    e.src, e.dst, e.pipe
                ));
            }
            if e.bytes_per_cycle == 0 {
                return Err(format!(
                    "DMA edge {}->{}: bytes_per_cycle must be > 0",
                    e.src, e.dst
                ));
            }
            if self
                .dma
                .iter()
                .filter(|o| o.src == e.src && o.dst == e.dst)
                .count()
                > 1
            {
                return Err(format!("DMA edge {}->{} listed twice", e.src, e.dst));
            }
        }
        for (key, shape) in &self.mma {
            if parse_pair(key).is_none() {
                return Err(format!(
                    "mma key `{key}` is not of the form `AxB->ACC` with three dtypes"
                ));
            }
            if shape.contains(&0) {
                return Err(format!("mma `{key}`: tile dims must be > 0"));
            }
        }
        for key in self.tolerance.keys() {
            DType::from_str(key).map_err(|e| format!("tolerance: {e}"))?;
        }
        if let Some(c) = &self.cpu {
            let [rows, vectors] = c.register_block;
            if (rows == 0) != (vectors == 0) {
                return Err("cpu.register_block: give both rows and vectors, or neither".into());
            }
            if rows * vectors + vectors + 1 > c.vector_registers.max(1) && rows > 0 {
                return Err(format!(
                    "cpu.register_block [{rows}, {vectors}] needs {} vector registers \
                     (accumulators, B vectors, one A broadcast); vector_registers is {}",
                    rows * vectors + vectors + 1,
                    c.vector_registers
                ));
            }
        }
        if !matches!(self.int_dot, 0 | 2 | 4) {
            return Err(format!(
                "int_dot = {}: expected 0 (none), 2 (i16 pairs) or 4 (u8 x i8 quads)",
                self.int_dot
            ));
        }
        Ok(())
    }

    /// Whether the matrix unit runs `a x b -> acc` natively.
    pub fn has_mma(&self, a: &str, b: &str, acc: &str) -> bool {
        self.mma.contains_key(&format!("{a}x{b}->{acc}"))
    }

    /// The matrix-unit tile shapes, typed, in key order.
    pub fn mma_pairs(&self) -> Vec<MmaPair> {
        self.mma
            .iter()
            .filter_map(|(k, s)| {
                parse_pair(k).map(|(a, b, acc)| MmaPair {
                    a,
                    b,
                    acc,
                    m: s[0],
                    n: s[1],
                    k: s[2],
                })
            })
            .collect()
    }

    /// The tile shape of one dtype pair.
    pub fn mma_pair(&self, a: DType, b: DType, acc: DType) -> Option<MmaPair> {
        self.mma_pairs()
            .into_iter()
            .find(|p| p.a == a && p.b == b && p.acc == acc)
    }

    pub fn memory_named(&self, name: &str) -> Option<&MemoryDesc> {
        self.memory.iter().find(|m| m.name == name)
    }

    /// The first memory with `role`.
    pub fn memory_with_role(&self, role: MemoryRole) -> Option<&MemoryDesc> {
        self.memory.iter().find(|m| m.role == role)
    }

    /// The (relative, absolute) tolerance of outputs of `dtype`, if the file gives one.
    pub fn tolerance_of(&self, dtype: DType) -> Option<(f64, f64)> {
        self.tolerance.get(dtype.name()).map(|t| (t[0], t[1]))
    }

    pub fn has_dtype(&self, dtype: DType) -> bool {
        self.dtypes.contains(&dtype)
    }

    /// The layout this target wants for the constant operand of a matrix product.
    pub fn constant_operand_layout(&self) -> OperandLayout {
        self.cpu
            .as_ref()
            .map(|c| c.constant_operand)
            .unwrap_or_default()
    }

    /// Whether the `[cpu]` table says the code generator vectorises plain loops (LLVM does,
    /// Cranelift does not), so lowering may shape loops for it rather than emit vectors itself.
    pub fn loop_vectorizer(&self) -> bool {
        self.cpu.as_ref().is_some_and(|c| c.loop_vectorizer)
    }

    /// The `[cpu]` register block (rows, vectors), if the file gives one.
    pub fn register_block(&self) -> Option<(u32, u32)> {
        let c = self.cpu.as_ref()?;
        let [r, v] = c.register_block;
        (r > 0 && v > 0).then_some((r, v))
    }

    /// Bytes of the first cache of this target (its level-1 data cache) and of the last one,
    /// in file order; `None` where it lists no cache.
    pub fn cache_bytes(&self) -> Option<(u64, u64)> {
        let mut caches = self.memory.iter().filter(|m| m.role == MemoryRole::Cache);
        let first = caches.next()?.bytes;
        Some((first, caches.last().map_or(first, |m| m.bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"
name = "t"
description = "d"
isa = "x"
launch = "serial"
vector_bytes = 16
dtypes = ["f32"]
matmul_tile = [1, 1, 1]
"#;

    #[test]
    fn enums_refuse_unknown_values_and_the_checks_hold() {
        assert!(TargetDesc::parse(MINI, "t.toml").is_ok());
        let bad = MINI.replace("serial", "sequential");
        let e = TargetDesc::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("sequential"), "{e}");
        let bad = MINI.replace("[\"f32\"]", "[\"f33\"]");
        let e = TargetDesc::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("unknown dtype `f33`"), "{e}");
        let bad = format!("{MINI}[mma]\n\"f16xf16\" = [16, 16, 16]\n");
        let e = TargetDesc::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("mma key `f16xf16`"), "{e}");
        let bad =
            format!("{MINI}[[memory]]\nname = \"UB\"\nbytes = 10\nalign = 3\nrole = \"vector\"\n");
        let e = TargetDesc::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("align a power of two"), "{e}");
        let bad =
            format!("{MINI}[[memory]]\nname = \"UB\"\nbytes = 10\nalign = 4\nrole = \"vectr\"\n");
        let e = TargetDesc::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("vectr"), "{e}");
        let bad = format!(
            "{MINI}[[dma]]\nsrc = \"GM\"\ndst = \"UB\"\npipe = \"MTE2\"\nbytes_per_cycle = 1\n"
        );
        let e = TargetDesc::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("memory `GM`, which is not listed"), "{e}");
    }

    #[test]
    fn mma_pairs_are_typed() {
        let d = TargetDesc::parse(
            &format!("{MINI}[mma]\n\"i8xi8->i32\" = [16, 16, 32]\n"),
            "t.toml",
        )
        .unwrap();
        assert!(d.has_mma("i8", "i8", "i32"));
        let p = d.mma_pair(DType::I8, DType::I8, DType::I32).unwrap();
        assert_eq!((p.m, p.n, p.k), (16, 16, 32));
    }
}
