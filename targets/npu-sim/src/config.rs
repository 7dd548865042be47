//! The hardware description: `target.toml`, parsed by the shared schema
//! (`tessera_target::TargetDesc`, with its `[npu]` section) and checked against what the ISA
//! encodes. The simulator takes every size, bandwidth and latency from here.

use std::collections::HashMap;

use tessera_target::{MemoryRole, TargetDesc};

use crate::error::{Result, SimError};
use crate::isa::{DType, Mem, Pipe};

/// The default description, shipped with the crate.
pub const DEFAULT_TARGET_TOML: &str = include_str!("../target.toml");

/// One memory of the core.
#[derive(Debug, Clone)]
pub struct MemDesc {
    pub size: u64,
    pub align: u64,
    pub role: String,
}

/// One DMA edge.
#[derive(Debug, Clone, Copy)]
pub struct DmaEdge {
    pub pipe: Pipe,
    pub bytes_per_cycle: u64,
    pub setup_cycles: u64,
}

/// One Cube tile shape: C[m x n] (cdt) += A[m x k] (adt) * B[k x n] (adt).
#[derive(Debug, Clone, Copy)]
pub struct MmaShape {
    pub adt: DType,
    pub cdt: DType,
    pub m: u64,
    pub k: u64,
    pub n: u64,
}

/// The checked target description.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub clock_ghz: f64,
    pub cores: u32,
    pub registers: u32,
    pub issue_cycles: u64,
    pub queue_depth: usize,
    pub ub_access_cycles: u64,
    pub gm_access_cycles: u64,
    pub flag_ids: u32,
    pub flag_max_count: u32,
    pub flag_cycles: u64,
    mems: [MemDesc; 6],
    edges: HashMap<(Mem, Mem), DmaEdge>,
    pub cube_cycles_per_tile: u64,
    pub cube_startup_cycles: u64,
    pub mma_shapes: Vec<MmaShape>,
    pub vector_bytes_per_cycle: u64,
    pub vector_startup_cycles: u64,
    /// The description as the compiler reads it.
    pub desc: TargetDesc,
}

impl TargetConfig {
    /// The description shipped in the crate's `target.toml`.
    pub fn default_target() -> Result<Self> {
        Self::from_toml(DEFAULT_TARGET_TOML)
    }

    /// Reads a description from a file.
    pub fn from_path(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses and checks a description.
    pub fn from_toml(text: &str) -> Result<Self> {
        let desc =
            TargetDesc::parse(text, "target.toml").map_err(|e| SimError::Config(e.to_string()))?;
        Self::from_desc(desc)
    }

    /// Checks a parsed description against the ISA and builds the simulator's view of it.
    pub fn from_desc(desc: TargetDesc) -> Result<Self> {
        let cfg = |m: String| SimError::Config(m);
        let npu = desc
            .npu
            .clone()
            .ok_or_else(|| cfg(format!("target `{}` has no [npu] section", desc.name)))?;
        let mut mems: Vec<Option<MemDesc>> = vec![None; Mem::ALL.len()];
        for m in &desc.memory {
            let id = Mem::from_name(&m.name)
                .ok_or_else(|| cfg(format!("unknown memory `{}`", m.name)))?;
            if m.role != mem_role(id) {
                return Err(cfg(format!(
                    "memory {} must have role {:?}, not {:?}",
                    m.name,
                    mem_role(id),
                    m.role
                )));
            }
            mems[id as usize] = Some(MemDesc {
                size: m.bytes,
                align: m.align as u64,
                role: m.about.clone(),
            });
        }
        let mut got = Vec::new();
        for (i, m) in mems.into_iter().enumerate() {
            got.push(m.ok_or_else(|| cfg(format!("memory {} missing", Mem::ALL[i])))?);
        }
        let mems: [MemDesc; 6] = got.try_into().map_err(|_| cfg("memory table".into()))?;

        let mut edges = HashMap::new();
        for e in &desc.dma {
            let src =
                Mem::from_name(&e.src).ok_or_else(|| cfg(format!("unknown memory `{}`", e.src)))?;
            let dst =
                Mem::from_name(&e.dst).ok_or_else(|| cfg(format!("unknown memory `{}`", e.dst)))?;
            edges.insert(
                (src, dst),
                DmaEdge {
                    pipe: pipe_of(e.pipe),
                    bytes_per_cycle: e.bytes_per_cycle,
                    setup_cycles: e.setup_cycles,
                },
            );
        }

        let dt = |d: tessera_ir::DType| {
            DType::from_name(d.name()).ok_or_else(|| cfg(format!("the ISA has no dtype {d}")))
        };
        let mut mma_shapes = Vec::new();
        for p in desc.mma_pairs() {
            let (a, b, c) = (dt(p.a)?, dt(p.b)?, dt(p.acc)?);
            if a != b {
                return Err(cfg(format!(
                    "MMA {a}x{b}: mixed operand dtypes are not modelled"
                )));
            }
            mma_shapes.push(MmaShape {
                adt: a,
                cdt: c,
                m: p.m as u64,
                k: p.k as u64,
                n: p.n as u64,
            });
        }
        if npu.cube.cycles_per_tile == 0 || desc.vector_bytes == 0 || npu.scalar.queue_depth == 0 {
            return Err(cfg(
                "cycles_per_tile, vector_bytes and queue_depth must be > 0".into(),
            ));
        }
        // The peak figures are documentation; check them against the shapes and the vector
        // width so the file cannot contradict itself.
        for (s, p) in mma_shapes.iter().zip(desc.mma_pairs()) {
            let want = 2 * s.m * s.n * s.k / npu.cube.cycles_per_tile;
            match desc.peak_ops_per_cycle.get(&p.a) {
                Some(&v) if v == want => {}
                Some(&v) => {
                    return Err(cfg(format!(
                        "peak_ops_per_cycle.{} = {v}, but the Cube tile shape gives {want}",
                        p.a
                    )))
                }
                None => return Err(cfg(format!("peak_ops_per_cycle.{} missing", p.a))),
            }
        }
        if let Some(&v) = desc.peak_ops_per_cycle.get(&tessera_ir::DType::F32) {
            let want = desc.vector_bytes as u64 / 4;
            if v != want {
                return Err(cfg(format!(
                    "peak_ops_per_cycle.f32 = {v}, but the vector width gives {want}"
                )));
            }
        }
        if npu.scalar.registers != 32 {
            return Err(cfg("the ISA encodes 32 scalar registers".into()));
        }
        Ok(TargetConfig {
            name: desc.name.clone(),
            clock_ghz: desc.clock_ghz,
            cores: npu.cores,
            registers: npu.scalar.registers,
            issue_cycles: npu.scalar.issue_cycles,
            queue_depth: npu.scalar.queue_depth,
            ub_access_cycles: npu.scalar.ub_access_cycles,
            gm_access_cycles: npu.scalar.gm_access_cycles,
            flag_ids: npu.sync.flag_ids,
            flag_max_count: npu.sync.max_count,
            flag_cycles: npu.sync.flag_cycles,
            mems,
            edges,
            cube_cycles_per_tile: npu.cube.cycles_per_tile,
            cube_startup_cycles: npu.cube.startup_cycles,
            mma_shapes,
            vector_bytes_per_cycle: desc.vector_bytes as u64,
            vector_startup_cycles: npu.vector.startup_cycles,
            desc,
        })
    }

    pub fn mem(&self, m: Mem) -> &MemDesc {
        &self.mems[m as usize]
    }

    pub fn edge(&self, src: Mem, dst: Mem) -> Option<DmaEdge> {
        self.edges.get(&(src, dst)).copied()
    }

    /// All DMA edges, in a stable order.
    pub fn edges(&self) -> Vec<(Mem, Mem, DmaEdge)> {
        let mut v: Vec<_> = self.edges.iter().map(|(&(s, d), &e)| (s, d, e)).collect();
        v.sort_by_key(|(s, d, _)| (*s as u8, *d as u8));
        v
    }

    pub fn mma_shape(&self, adt: DType, cdt: DType) -> Option<MmaShape> {
        self.mma_shapes
            .iter()
            .copied()
            .find(|s| s.adt == adt && s.cdt == cdt)
    }
}

/// The role the schema must give each ISA memory.
fn mem_role(m: Mem) -> MemoryRole {
    match m {
        Mem::Gm => MemoryRole::Global,
        Mem::L1 => MemoryRole::Staging,
        Mem::L0a => MemoryRole::MatrixA,
        Mem::L0b => MemoryRole::MatrixB,
        Mem::L0c => MemoryRole::Accumulator,
        Mem::Ub => MemoryRole::Vector,
    }
}

/// The ISA pipe of a schema pipe.
fn pipe_of(p: tessera_target::Pipe) -> Pipe {
    use tessera_target::Pipe as P;
    match p {
        P::Scalar => Pipe::S,
        P::Mte2 => Pipe::Mte2,
        P::Mte1 => Pipe::Mte1,
        P::Cube => Pipe::Cube,
        P::Vector => Pipe::Vec,
        P::Mte3 => Pipe::Mte3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_target_matches_the_issue() {
        let t = TargetConfig::default_target().unwrap();
        assert_eq!(t.mem(Mem::L1).size, 512 * 1024);
        assert_eq!(t.mem(Mem::L0a).size, 64 * 1024);
        assert_eq!(t.mem(Mem::L0c).size, 128 * 1024);
        assert_eq!(t.mem(Mem::Ub).size, 192 * 1024);
        let e = t.edge(Mem::Gm, Mem::L1).unwrap();
        assert_eq!(
            (e.pipe, e.bytes_per_cycle, e.setup_cycles),
            (Pipe::Mte2, 128, 100)
        );
        let e = t.edge(Mem::L1, Mem::L0b).unwrap();
        assert_eq!(
            (e.pipe, e.bytes_per_cycle, e.setup_cycles),
            (Pipe::Mte1, 256, 20)
        );
        assert!(t.edge(Mem::Gm, Mem::L0c).is_none());
        let s = t.mma_shape(DType::I8, DType::I32).unwrap();
        assert_eq!((s.m, s.k, s.n), (16, 32, 16));
    }

    #[test]
    fn contradictory_peak_is_rejected() {
        let bad = DEFAULT_TARGET_TOML.replace("\nf16 = 8192", "\nf16 = 9000");
        assert!(
            matches!(TargetConfig::from_toml(&bad), Err(SimError::Config(m)) if m.contains("peak_ops_per_cycle.f16 = 9000"))
        );
        let bad = DEFAULT_TARGET_TOML.replace("role = \"matrix-a\"", "role = \"vector\"");
        assert!(
            matches!(TargetConfig::from_toml(&bad), Err(SimError::Config(m)) if m.contains("L0A must have role"))
        );
        let bad = DEFAULT_TARGET_TOML.replace("name = \"UB\"", "name = \"XB\"");
        assert!(matches!(
            TargetConfig::from_toml(&bad),
            Err(SimError::Config(_))
        ));
    }
}
