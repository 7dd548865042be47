//! tessera-npu-sim: a simulated Da Vinci-style NPU core. It has an ISA with a
//! 128-bit binary encoding and a text assembly (`isa`, `asm`), a hardware
//! description read from `target.toml` (`config`), and a simulator with a
//! functional and a cycle-approximate mode (`sim`, `exec`, `report`).
//! Start with [`run_kernel`]; the ISA manual is `docs/npu-sim-isa.md`.
//!
//! As a Tessera target: [`NpuSim`] (feature `compiler`, on by default) compiles kernel IR to
//! the ISA ([`codegen`]) and [`NpuSimDevice`] runs the blobs ([`blob`]) on the simulator. The
//! device side needs no compiler crate.
//!
//! ```
//! use tessera_npu_sim::{run_kernel, KernelArgs, Mode, TargetConfig};
//! let target = TargetConfig::default_target().unwrap();
//! let out = run_kernel("LI r1, 7\nHALT\n", &target, &KernelArgs::default(), Mode::Cycle).unwrap();
//! assert_eq!(out.regs[1], 7);
//! ```

pub mod asm;
pub mod blob;
pub mod cli;
#[cfg(feature = "compiler")]
pub mod codegen;
#[cfg(feature = "compiler")]
mod compiler;
pub mod config;
#[cfg(feature = "compiler")]
pub mod cube;
pub mod device;
pub mod error;
pub mod exec;
pub mod isa;
pub mod mem;
pub mod npy;
pub mod report;
#[cfg(feature = "compiler")]
pub mod rows;
pub mod sim;
pub mod stream;
#[cfg(feature = "compiler")]
pub mod tcopy;

pub use asm::{assemble, disassemble};
#[cfg(feature = "compiler")]
pub use compiler::NpuSim;
pub use config::TargetConfig;
pub use device::{LaunchReport, NpuSimDevice};
pub use error::{Result, SimError};
pub use isa::{decode_program, encode_program, DType, Instr, Mem, Pipe};
pub use npy::NdArray;
pub use report::CycleReport;
pub use sim::{Machine, Mode};

/// Where the first kernel buffer is placed in GM; address 0 stays unused so a
/// forgotten pointer register faults instead of reading a buffer.
pub const GM_BASE: u64 = 0x1000;
/// GM buffers start on this boundary.
pub const GM_BUFFER_ALIGN: u64 = 512;

/// A GM buffer handed to the kernel: its address goes into register `reg`.
#[derive(Debug, Clone)]
pub struct BufferArg {
    pub reg: u8,
    pub array: NdArray,
    /// Outputs are read back after the run.
    pub output: bool,
}

/// Everything a kernel launch passes in.
#[derive(Debug, Clone, Default)]
pub struct KernelArgs {
    pub buffers: Vec<BufferArg>,
    /// Initial register values (shapes, scales as f32 bits, ...).
    pub scalars: Vec<(u8, u64)>,
}

impl KernelArgs {
    pub fn input(mut self, reg: u8, array: NdArray) -> Self {
        self.buffers.push(BufferArg {
            reg,
            array,
            output: false,
        });
        self
    }
    pub fn output(mut self, reg: u8, array: NdArray) -> Self {
        self.buffers.push(BufferArg {
            reg,
            array,
            output: true,
        });
        self
    }
    pub fn scalar(mut self, reg: u8, value: u64) -> Self {
        self.scalars.push((reg, value));
        self
    }
    /// An f32 scalar, passed as its bit pattern (as DMA `scale=` expects).
    pub fn scalar_f32(self, reg: u8, value: f32) -> Self {
        self.scalar(reg, value.to_bits() as u64)
    }
}

/// What a launch returns.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Output buffers, by the register that pointed at them.
    pub outputs: Vec<(u8, NdArray)>,
    /// The cycle report (present in `Cycle` and `TimingOnly` modes).
    pub report: Option<CycleReport>,
    /// Registers at HALT.
    pub regs: [u64; 32],
}

impl RunOutput {
    pub fn output(&self, reg: u8) -> Option<&NdArray> {
        self.outputs.iter().find(|(r, _)| *r == reg).map(|(_, a)| a)
    }
}

/// Assembles `source` and runs it once on `target`.
pub fn run_kernel(
    source: &str,
    target: &TargetConfig,
    args: &KernelArgs,
    mode: Mode,
) -> Result<RunOutput> {
    let prog = assemble(source)?;
    run_program(&prog, target, args, mode)
}

/// Runs an already assembled (or decoded) program.
pub fn run_program(
    prog: &[Instr],
    target: &TargetConfig,
    args: &KernelArgs,
    mode: Mode,
) -> Result<RunOutput> {
    let mut used = [false; 32];
    let mut claim = |r: u8| -> Result<()> {
        if r >= 32 {
            return Err(SimError::Args(format!("r{r} is not a register")));
        }
        if std::mem::replace(&mut used[r as usize], true) {
            return Err(SimError::Args(format!("r{r} is given two values")));
        }
        Ok(())
    };
    let mut addrs = Vec::new();
    let mut top = GM_BASE;
    for b in &args.buffers {
        claim(b.reg)?;
        let need = b.array.len() as u64 * b.array.dtype.size();
        if b.array.data.len() as u64 != need {
            return Err(SimError::Args(format!(
                "buffer for r{} has {} bytes, its shape needs {need}",
                b.reg,
                b.array.data.len()
            )));
        }
        addrs.push(top);
        top = (top + need).div_ceil(GM_BUFFER_ALIGN) * GM_BUFFER_ALIGN;
    }
    for (r, _) in &args.scalars {
        claim(*r)?;
    }
    let mut m = Machine::new(target, top, mode)?;
    for (b, &addr) in args.buffers.iter().zip(&addrs) {
        let gm = &mut m.mems[Mem::Gm as usize];
        let (s, e) = (addr as usize, addr as usize + b.array.data.len());
        gm.data[s..e].copy_from_slice(&b.array.data);
        gm.tag[s..e].fill(mem::WRITTEN | mem::REAL);
        m.regs[b.reg as usize] = addr;
    }
    for &(r, v) in &args.scalars {
        m.regs[r as usize] = v;
    }
    let report = m.run(prog)?;
    let outputs = args
        .buffers
        .iter()
        .zip(&addrs)
        .filter(|(b, _)| b.output)
        .map(|(b, &addr)| {
            let gm = &m.mems[Mem::Gm as usize];
            let mut a = b.array.clone();
            let n = a.data.len();
            a.data
                .copy_from_slice(&gm.data[addr as usize..addr as usize + n]);
            (b.reg, a)
        })
        .collect();
    Ok(RunOutput {
        outputs,
        report: (mode != Mode::Functional).then_some(report),
        regs: m.regs,
    })
}
