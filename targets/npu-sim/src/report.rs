//! The cycle report of a run: per-pipe busy and stall time, bytes per DMA edge,
//! MACs issued against useful, and Cube utilisation.

use std::fmt;

use crate::isa::{Mem, Pipe};

/// Time accounting for one pipe. `busy + stall + idle = total_cycles`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipeReport {
    pub pipe: Pipe,
    pub instructions: u64,
    /// Cycles spent executing instructions.
    pub busy: u64,
    /// Cycles the head instruction was ready but waited for a flag.
    pub stall: u64,
    /// The rest: an empty queue.
    pub idle: u64,
}

/// Traffic along one DMA edge.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeReport {
    pub src: Mem,
    pub dst: Mem,
    pub bytes: u64,
    pub transfers: u64,
}

/// What a run cost.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleReport {
    pub total_cycles: u64,
    pub clock_ghz: f64,
    /// Instructions the scalar unit executed or issued (loop iterations count each time).
    pub scalar_instructions: u64,
    pub pipes: Vec<PipeReport>,
    pub edges: Vec<EdgeReport>,
    /// Multiply-accumulates the Cube performed, padding included.
    pub macs_issued: u64,
    /// Multiply-accumulates whose operands were both real data (not DMA padding).
    pub macs_useful: u64,
    pub cube_tiles: u64,
    /// Cycles an ideal Cube would need for the useful MACs (M*N*K/4096 for an f16 GEMM).
    pub ideal_cube_cycles: f64,
    /// `ideal_cube_cycles / total_cycles`.
    pub cube_utilisation: f64,
}

impl CycleReport {
    pub fn pipe(&self, p: Pipe) -> Option<&PipeReport> {
        self.pipes.iter().find(|r| r.pipe == p)
    }
    pub fn edge(&self, src: Mem, dst: Mem) -> Option<&EdgeReport> {
        self.edges.iter().find(|e| e.src == src && e.dst == dst)
    }
}

impl fmt::Display for CycleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.total_cycles.max(1) as f64;
        writeln!(
            f,
            "total cycles      {:>12}  ({:.3} us at {} GHz)",
            self.total_cycles,
            self.total_cycles as f64 / (self.clock_ghz * 1e3),
            self.clock_ghz
        )?;
        writeln!(f, "scalar issued     {:>12}", self.scalar_instructions)?;
        writeln!(
            f,
            "pipe   instrs        busy        stall        idle   busy%"
        )?;
        for p in &self.pipes {
            writeln!(
                f,
                "{:<5} {:>7} {:>11} {:>12} {:>11}  {:>5.1}",
                p.pipe.name(),
                p.instructions,
                p.busy,
                p.stall,
                p.idle,
                100.0 * p.busy as f64 / t
            )?;
        }
        writeln!(f, "edge          bytes   transfers")?;
        for e in &self.edges {
            writeln!(
                f,
                "{:<9} {:>12} {:>9}",
                format!("{}->{}", e.src, e.dst),
                e.bytes,
                e.transfers
            )?;
        }
        writeln!(f, "MACs issued       {:>12}", self.macs_issued)?;
        writeln!(
            f,
            "MACs useful       {:>12}  ({:.1}% of issued)",
            self.macs_useful,
            100.0 * self.macs_useful as f64 / self.macs_issued.max(1) as f64
        )?;
        writeln!(f, "ideal Cube cycles {:>12.0}", self.ideal_cube_cycles)?;
        write!(
            f,
            "Cube utilisation  {:>11.1}%",
            100.0 * self.cube_utilisation
        )
    }
}
