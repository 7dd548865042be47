//! The hardware description: `target.toml` parsed and checked. The simulator
//! takes every size, bandwidth and latency from here.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{Result, SimError};
use crate::isa::{DType, Mem, Pipe};

/// The default description, shipped with the crate.
pub const DEFAULT_TARGET_TOML: &str = include_str!("../target.toml");

#[derive(Debug, Clone, Deserialize)]
struct RawTarget {
    name: String,
    clock_ghz: f64,
    cores: u32,
    scalar: RawScalar,
    sync: RawSync,
    memory: Vec<RawMemory>,
    dma: Vec<RawDma>,
    cube: RawCube,
    vector: RawVector,
    peak_ops_per_cycle: HashMap<String, u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawScalar {
    registers: u32,
    issue_cycles: u64,
    queue_depth: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct RawSync {
    flag_ids: u32,
    max_count: u32,
    flag_cycles: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct RawMemory {
    name: String,
    size: u64,
    align: u64,
    role: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RawDma {
    src: String,
    dst: String,
    pipe: String,
    bytes_per_cycle: u64,
    setup_cycles: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct RawCube {
    cycles_per_tile: u64,
    startup_cycles: u64,
    mma: Vec<RawMma>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawMma {
    a: String,
    b: String,
    c: String,
    m: u64,
    k: u64,
    n: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct RawVector {
    bytes_per_cycle: u64,
    startup_cycles: u64,
}

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
    pub peak_ops_per_cycle: HashMap<String, u64>,
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
        let raw: RawTarget = toml::from_str(text).map_err(|e| SimError::Config(e.to_string()))?;
        let cfg = |m: String| SimError::Config(m);
        let mut mems: Vec<Option<MemDesc>> = vec![None; Mem::ALL.len()];
        for m in &raw.memory {
            let id = Mem::from_name(&m.name)
                .ok_or_else(|| cfg(format!("unknown memory `{}`", m.name)))?;
            if m.size == 0 || m.align == 0 || !m.align.is_power_of_two() {
                return Err(cfg(format!(
                    "memory {}: size must be > 0 and align a power of two",
                    m.name
                )));
            }
            if mems[id as usize]
                .replace(MemDesc {
                    size: m.size,
                    align: m.align,
                    role: m.role.clone(),
                })
                .is_some()
            {
                return Err(cfg(format!("memory {} listed twice", m.name)));
            }
        }
        let mut got = Vec::new();
        for (i, m) in mems.into_iter().enumerate() {
            got.push(m.ok_or_else(|| cfg(format!("memory {} missing", Mem::ALL[i])))?);
        }
        let mems: [MemDesc; 6] = got.try_into().map_err(|_| cfg("memory table".into()))?;

        let mut edges = HashMap::new();
        for e in &raw.dma {
            let src =
                Mem::from_name(&e.src).ok_or_else(|| cfg(format!("unknown memory `{}`", e.src)))?;
            let dst =
                Mem::from_name(&e.dst).ok_or_else(|| cfg(format!("unknown memory `{}`", e.dst)))?;
            let pipe = Pipe::from_name(&e.pipe)
                .ok_or_else(|| cfg(format!("unknown pipe `{}`", e.pipe)))?;
            if src == dst {
                return Err(cfg(format!(
                    "DMA edge {}->{} joins a memory to itself",
                    e.src, e.dst
                )));
            }
            if pipe == Pipe::S || pipe == Pipe::Cube {
                return Err(cfg(format!(
                    "DMA {}->{} cannot run on pipe {pipe}",
                    e.src, e.dst
                )));
            }
            if e.bytes_per_cycle == 0 {
                return Err(cfg(format!(
                    "DMA {}->{}: bytes_per_cycle must be > 0",
                    e.src, e.dst
                )));
            }
            edges.insert(
                (src, dst),
                DmaEdge {
                    pipe,
                    bytes_per_cycle: e.bytes_per_cycle,
                    setup_cycles: e.setup_cycles,
                },
            );
        }

        let dt = |s: &str| DType::from_name(s).ok_or_else(|| cfg(format!("unknown dtype `{s}`")));
        let mut mma_shapes = Vec::new();
        for m in &raw.cube.mma {
            let (a, b, c) = (dt(&m.a)?, dt(&m.b)?, dt(&m.c)?);
            if a != b {
                return Err(cfg(format!(
                    "MMA {}x{}: mixed operand dtypes are not modelled",
                    m.a, m.b
                )));
            }
            if m.m == 0 || m.k == 0 || m.n == 0 {
                return Err(cfg("MMA tile dims must be > 0".into()));
            }
            mma_shapes.push(MmaShape {
                adt: a,
                cdt: c,
                m: m.m,
                k: m.k,
                n: m.n,
            });
        }
        if raw.cube.cycles_per_tile == 0
            || raw.vector.bytes_per_cycle == 0
            || raw.scalar.queue_depth == 0
        {
            return Err(cfg(
                "cycles_per_tile, vector bytes_per_cycle and queue_depth must be > 0".into(),
            ));
        }
        // The peak figures are documentation; check them against the shapes so
        // the file cannot contradict itself.
        for s in &mma_shapes {
            let key = format!("cube_{}", s.adt);
            let want = 2 * s.m * s.n * s.k / raw.cube.cycles_per_tile;
            match raw.peak_ops_per_cycle.get(&key) {
                Some(&v) if v == want => {}
                Some(&v) => {
                    return Err(cfg(format!(
                        "peak_ops_per_cycle.{key} = {v}, but the tile shape gives {want}"
                    )))
                }
                None => return Err(cfg(format!("peak_ops_per_cycle.{key} missing"))),
            }
        }
        for d in [DType::F32, DType::F16] {
            let key = format!("vector_{d}");
            let want = raw.vector.bytes_per_cycle / d.size();
            if let Some(&v) = raw.peak_ops_per_cycle.get(&key) {
                if v != want {
                    return Err(cfg(format!(
                        "peak_ops_per_cycle.{key} = {v}, but the vector width gives {want}"
                    )));
                }
            }
        }
        if raw.scalar.registers != 32 {
            return Err(cfg("the ISA encodes 32 scalar registers".into()));
        }
        Ok(TargetConfig {
            name: raw.name,
            clock_ghz: raw.clock_ghz,
            cores: raw.cores,
            registers: raw.scalar.registers,
            issue_cycles: raw.scalar.issue_cycles,
            queue_depth: raw.scalar.queue_depth,
            flag_ids: raw.sync.flag_ids,
            flag_max_count: raw.sync.max_count,
            flag_cycles: raw.sync.flag_cycles,
            mems,
            edges,
            cube_cycles_per_tile: raw.cube.cycles_per_tile,
            cube_startup_cycles: raw.cube.startup_cycles,
            mma_shapes,
            vector_bytes_per_cycle: raw.vector.bytes_per_cycle,
            vector_startup_cycles: raw.vector.startup_cycles,
            peak_ops_per_cycle: raw.peak_ops_per_cycle,
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
        let bad = DEFAULT_TARGET_TOML.replace("cube_f16 = 8192", "cube_f16 = 9000");
        assert!(
            matches!(TargetConfig::from_toml(&bad), Err(SimError::Config(m)) if m.contains("cube_f16"))
        );
        let bad = DEFAULT_TARGET_TOML.replace("name = \"UB\"", "name = \"XB\"");
        assert!(matches!(
            TargetConfig::from_toml(&bad),
            Err(SimError::Config(_))
        ));
    }
}
