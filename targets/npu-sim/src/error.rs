//! The one error type of the crate: every failure names its cause, and the
//! simulator's errors name the pc and the disassembled instruction.

use thiserror::Error;

/// Everything that can go wrong while loading a target, assembling, decoding or
/// simulating a kernel. Each variant's doc says whose fault it is.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SimError {
    /// Bad input: the target description is malformed or contradicts itself.
    #[error("target description: {0}")]
    Config(String),

    /// Bad input: the assembly text does not parse.
    #[error("assembly line {line}: {msg}")]
    Asm { line: usize, msg: String },

    /// Bad input: a binary instruction word does not decode.
    #[error("decode at pc {pc}: {msg}")]
    Decode { pc: usize, msg: String },

    /// Bad input: an access falls outside its memory.
    #[error(
        "pc {pc} `{instr}`: out-of-bounds {mem} access [{addr:#x}, {end:#x}) (size {size:#x})"
    )]
    OutOfBounds {
        pc: usize,
        instr: String,
        mem: &'static str,
        addr: u64,
        end: u64,
        size: u64,
    },

    /// Bad input: an access base address breaks the memory's alignment rule.
    #[error(
        "pc {pc} `{instr}`: misaligned {mem} address {addr:#x} (needs {align}-byte alignment)"
    )]
    Misaligned {
        pc: usize,
        instr: String,
        mem: &'static str,
        addr: u64,
        align: u64,
    },

    /// Bad input: L0C was read (DMA out, or MMA accumulate) before any MMA wrote it.
    #[error("pc {pc} `{instr}`: read of uninitialised L0C at {addr:#x}")]
    UninitL0C { pc: usize, instr: String, addr: u64 },

    /// Bad input: a VEC, VRED or scalar load read bytes that nothing wrote.
    #[error("pc {pc} `{instr}`: read of uninitialised {mem} at {addr:#x}")]
    UninitRead {
        pc: usize,
        instr: String,
        mem: &'static str,
        addr: u64,
    },

    /// Bad input: a flag wait (or a full queue behind one) can never be satisfied.
    #[error("pc {pc} `{instr}`: deadlock: {detail}")]
    Deadlock {
        pc: usize,
        instr: String,
        detail: String,
    },

    /// Bad input: an operand value is illegal (negative count, unknown DMA edge,
    /// dtype not supported by the unit, flag overflow, division by zero, ...).
    #[error("pc {pc} `{instr}`: {msg}")]
    BadOperand {
        pc: usize,
        instr: String,
        msg: String,
    },

    /// Bad input: control ran off the end of the program without HALT.
    #[error("pc {pc}: execution ran past the end of the program (missing HALT?)")]
    PcOutOfRange { pc: usize },

    /// A limit was exceeded: the run issued more instructions than allowed.
    #[error(
        "step limit of {limit} instructions exceeded at pc {pc} (an infinite loop, or a kernel \
         longer than the limit: `TESSERA_NPU_SIM_MAX_STEPS` raises it)"
    )]
    StepLimit { pc: usize, limit: u64 },

    /// Bad input: a .npy file is malformed or of an unsupported dtype.
    #[error("npy: {0}")]
    Npy(String),

    /// Bad input: kernel arguments (buffers, registers) are inconsistent.
    #[error("kernel arguments: {0}")]
    Args(String),

    /// An I/O error reading or writing a file.
    #[error("io: {0}")]
    Io(String),
}

impl SimError {
    /// The pc an execution error refers to, if any.
    pub fn pc(&self) -> Option<usize> {
        match self {
            SimError::Decode { pc, .. }
            | SimError::OutOfBounds { pc, .. }
            | SimError::Misaligned { pc, .. }
            | SimError::UninitL0C { pc, .. }
            | SimError::UninitRead { pc, .. }
            | SimError::Deadlock { pc, .. }
            | SimError::BadOperand { pc, .. }
            | SimError::PcOutOfRange { pc }
            | SimError::StepLimit { pc, .. } => Some(*pc),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, SimError>;
