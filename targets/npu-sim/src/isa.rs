//! The instruction set: memories, pipes, dtypes, the decoded instruction form,
//! and its fixed-width 128-bit binary encoding. Start here, then read `asm.rs`.
//!
//! Every instruction is 16 bytes, little-endian, with one byte layout:
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0 | `opcode` | instruction class |
//! | 1 | `sub` | operation within the class, or the DMA scale register |
//! | 2 | `dt` | dtypes: high nibble source/A, low nibble destination/C |
//! | 3 | `mem` | memories or pipes: high nibble source, low nibble destination; VEC form |
//! | 4..12 | `r[0..8]` | register operands, `0xFF` = absent |
//! | 12..16 | `imm` | signed 32-bit immediate |
//!
//! Fields an instruction does not use must be zero (registers `0xFF`), so every
//! word has exactly one meaning and decode rejects the rest.

use crate::error::{Result, SimError};

/// Bytes per instruction word.
pub const INSTR_BYTES: usize = 16;
/// The "no register" marker in a register field.
pub const NO_REG: u8 = 0xFF;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $val:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($var = $val),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            pub fn name(self) -> &'static str { match self { $($name::$var => $text),* } }
            pub fn from_name(s: &str) -> Option<Self> {
                $(if s.eq_ignore_ascii_case($text) { return Some($name::$var); })*
                None
            }
            pub fn from_code(c: u8) -> Option<Self> {
                $(if c == $val { return Some($name::$var); })*
                None
            }
            pub fn code(self) -> u8 { self as u8 }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.name()) }
        }
    };
}

named_enum!(
    /// The memories; each is its own byte-addressed space starting at 0.
    Mem { Gm = 0, "GM"; L1 = 1, "L1"; L0a = 2, "L0A"; L0b = 3, "L0B"; L0c = 4, "L0C"; Ub = 5, "UB"; }
);

named_enum!(
    /// The execution pipes. `S` is the scalar unit, which issues into the other five.
    Pipe { S = 0, "S"; Mte2 = 1, "MTE2"; Mte1 = 2, "MTE1"; Cube = 3, "CUBE"; Vec = 4, "VEC"; Mte3 = 5, "MTE3"; }
);

named_enum!(
    /// Element types.
    DType { F16 = 0, "f16"; Bf16 = 1, "bf16"; F32 = 2, "f32"; I8 = 3, "i8"; I32 = 4, "i32";
            U8 = 5, "u8"; I16 = 6, "i16"; U16 = 7, "u16"; U32 = 8, "u32"; I64 = 9, "i64"; U64 = 10, "u64"; }
);

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F16 | DType::Bf16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::I8 | DType::U8 => 1,
            DType::I64 | DType::U64 => 8,
        }
    }
    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::Bf16 | DType::F32)
    }
}

named_enum!(
    /// Scalar ALU operations (`ALU` register form and `ALUI` immediate form).
    AluOp { Add = 0, "ADD"; Sub = 1, "SUB"; Mul = 2, "MUL"; Div = 3, "DIV"; Rem = 4, "REM";
            Min = 5, "MIN"; Max = 6, "MAX"; Shl = 7, "SHL"; Shr = 8, "SHR"; And = 9, "AND";
            Or = 10, "OR"; Xor = 11, "XOR"; Sra = 12, "SRA"; Divu = 13, "DIVU"; Remu = 14, "REMU";
            Minu = 15, "MINU"; Maxu = 16, "MAXU"; }
);

named_enum!(
    /// Branch conditions; comparisons are signed 64-bit.
    Cond { Eq = 0, "BEQ"; Ne = 1, "BNE"; Lt = 2, "BLT"; Ge = 3, "BGE"; Ltu = 4, "BLTU"; Geu = 5, "BGEU"; }
);

named_enum!(
    /// Vector elementwise operations.
    VecOp { Add = 0, "ADD"; Sub = 1, "SUB"; Mul = 2, "MUL"; Div = 3, "DIV"; Max = 4, "MAX"; Min = 5, "MIN";
            Rem = 6, "REM"; CmpEq = 7, "CMPEQ"; CmpNe = 8, "CMPNE"; CmpLt = 9, "CMPLT"; CmpLe = 10, "CMPLE";
            CmpGt = 11, "CMPGT"; CmpGe = 12, "CMPGE"; Sel = 13, "SEL"; Madd = 14, "MADD";
            Abs = 16, "ABS"; Exp = 17, "EXP"; Ln = 18, "LN"; Sqrt = 19, "SQRT"; Rsqrt = 20, "RSQRT";
            Recip = 21, "RECIP"; Relu = 22, "RELU"; Mov = 23, "MOV"; Cast = 24, "CAST"; Neg = 25, "NEG";
            Floor = 26, "FLOOR"; Ceil = 27, "CEIL"; Round = 28, "ROUND"; Trunc = 29, "TRUNC"; Dup = 30, "DUP"; }
);

impl VecOp {
    pub fn is_binary(self) -> bool {
        (self as u8) < 16
    }
    /// Comparisons write a `u8` mask (1 where the comparison holds) from `sdt` operands.
    pub fn is_compare(self) -> bool {
        (VecOp::CmpEq as u8..=VecOp::CmpGe as u8).contains(&(self as u8))
    }
    /// Whether the op reads a third UB operand through `r5`: `SEL`'s condition mask, and
    /// *0.5* `MADD`'s multiplier (`dst = src1 · src3 + src2`).
    pub fn has_third(self) -> bool {
        matches!(self, VecOp::Sel | VecOp::Madd)
    }
    /// Whether the op takes two different dtypes (`sdt->ddt`).
    pub fn converts(self) -> bool {
        self == VecOp::Cast || self.is_compare()
    }
}

named_enum!(
    /// Vector reductions.
    RedOp { Sum = 0, "SUM"; Max = 1, "MAX"; Min = 2, "MIN"; Prod = 3, "PROD"; }
);

/// The form of a binary VEC op: vector-vector, or vector with a scalar broadcast
/// from the first element at the `src2` UB address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VecForm {
    VV = 0,
    VS = 1,
    Unary = 2,
}

/// A decoded instruction. Register fields hold register numbers, not values.
#[derive(Debug, Clone, PartialEq)]
pub enum Instr {
    Nop,
    Halt,
    /// `LI rd, imm`: rd = sign-extended imm.
    Li {
        rd: u8,
        imm: i32,
    },
    /// `ADD rd, rs1, rs2` etc.
    Alu {
        op: AluOp,
        rd: u8,
        rs1: u8,
        rs2: u8,
    },
    /// `ADDI rd, rs1, imm` etc.
    AluI {
        op: AluOp,
        rd: u8,
        rs1: u8,
        imm: i32,
    },
    /// `BLT rs1, rs2, target` etc.
    Branch {
        cond: Cond,
        rs1: u8,
        rs2: u8,
        target: u32,
    },
    /// `JMP target`.
    Jmp {
        target: u32,
    },
    /// `DBNZ rd, target`: rd -= 1; branch if rd != 0.
    Dbnz {
        rd: u8,
        target: u32,
    },
    SetFlag {
        src: Pipe,
        dst: Pipe,
        id: u32,
    },
    WaitFlag {
        src: Pipe,
        dst: Pipe,
        id: u32,
    },
    Barrier,
    /// 2-D strided copy with padding and (out of L0C only) a cast.
    /// Registers: dst, src, rows, cols, src_stride, dst_stride, dst_rows, dst_cols.
    /// `transpose` (L1 -> L0A/L0B, *0.3*, and GM -> UB, *0.4*) writes the source box
    /// transposed.
    Dma {
        src_mem: Mem,
        dst_mem: Mem,
        sdt: DType,
        ddt: DType,
        regs: [u8; 8],
        scale: Option<u8>,
        transpose: bool,
    },
    /// Registers: c, a, b, m_tiles, n_tiles, k_tiles, init.
    Mma {
        adt: DType,
        cdt: DType,
        regs: [u8; 7],
    },
    /// Registers: dst, src1, src2 (binary only), len; optional mask; `cond`: for `SEL` the
    /// `u8` mask address, for `MADD` (*0.5*) the multiplier's address; absent otherwise.
    Vec {
        op: VecOp,
        form: VecForm,
        sdt: DType,
        ddt: DType,
        dst: u8,
        src1: u8,
        src2: Option<u8>,
        len: u8,
        mask: Option<u8>,
        cond: Option<u8>,
    },
    /// Registers: dst, src, len.
    Vred {
        op: RedOp,
        dt: DType,
        dst: u8,
        src: u8,
        len: u8,
    },
    /// *0.4*: the row form of `VRED` (opcode `VRED`, `r3`/`r4` present): `rows` reductions of
    /// `len` elements, row `j` from `src + j·stride` elements, its result at `dst + 32·j` bytes.
    VredRows {
        op: RedOp,
        dt: DType,
        dst: u8,
        src: u8,
        len: u8,
        rows: u8,
        stride: u8,
    },
    /// *0.4*: the row-broadcast form of a binary `VEC` (form 3, `r6` = `row`):
    /// `dst[i] = src1[i] op C[i / R[row]]`, with `C[j]` the element at `src2 + 32·j` bytes.
    Vrow {
        op: VecOp,
        dt: DType,
        dst: u8,
        src1: u8,
        src2: u8,
        len: u8,
        row: u8,
    },
    /// `LD mem dt rd, rb, imm`: scalar load of one element at `R[rb] + imm` in GM or UB,
    /// sign-extended for signed ints, zero-extended otherwise.
    Ld {
        mem: Mem,
        dt: DType,
        rd: u8,
        base: u8,
        offset: i32,
    },
    /// `ST mem dt rs, rb, imm`: scalar store of the low bits of `R[rs]`.
    St {
        mem: Mem,
        dt: DType,
        rs: u8,
        base: u8,
        offset: i32,
    },
}

mod opc {
    pub const NOP: u8 = 0x00;
    pub const HALT: u8 = 0x01;
    pub const LI: u8 = 0x02;
    pub const ALU: u8 = 0x03;
    pub const ALUI: u8 = 0x04;
    pub const BR: u8 = 0x05;
    pub const JMP: u8 = 0x06;
    pub const DBNZ: u8 = 0x07;
    pub const LD: u8 = 0x08;
    pub const ST: u8 = 0x09;
    pub const SET_FLAG: u8 = 0x10;
    pub const WAIT_FLAG: u8 = 0x11;
    pub const BARRIER: u8 = 0x12;
    pub const DMA: u8 = 0x20;
    pub const MMA: u8 = 0x30;
    pub const VEC: u8 = 0x40;
    pub const VRED: u8 = 0x41;
}

/// The raw fields of one word, before meaning is given to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    opcode: u8,
    sub: u8,
    dt: u8,
    mem: u8,
    r: [u8; 8],
    imm: i32,
}

impl Word {
    fn new(opcode: u8) -> Self {
        Word {
            opcode,
            sub: 0,
            dt: 0,
            mem: 0,
            r: [NO_REG; 8],
            imm: 0,
        }
    }
    fn to_bytes(self) -> [u8; INSTR_BYTES] {
        let mut b = [0u8; INSTR_BYTES];
        b[0] = self.opcode;
        b[1] = self.sub;
        b[2] = self.dt;
        b[3] = self.mem;
        b[4..12].copy_from_slice(&self.r);
        b[12..16].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
    fn from_bytes(b: &[u8; INSTR_BYTES]) -> Self {
        let mut r = [0u8; 8];
        r.copy_from_slice(&b[4..12]);
        Word {
            opcode: b[0],
            sub: b[1],
            dt: b[2],
            mem: b[3],
            r,
            imm: i32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
}

fn nib(hi: u8, lo: u8) -> u8 {
    (hi << 4) | lo
}

impl Instr {
    /// The pipe that executes this instruction (`S` for scalar-unit instructions).
    /// DMA pipes depend on the edge and come from the target description.
    pub fn fixed_pipe(&self) -> Option<Pipe> {
        match self {
            Instr::Mma { .. } => Some(Pipe::Cube),
            Instr::Vec { .. }
            | Instr::Vred { .. }
            | Instr::VredRows { .. }
            | Instr::Vrow { .. } => Some(Pipe::Vec),
            Instr::SetFlag { src, .. } => Some(*src),
            Instr::WaitFlag { dst, .. } => Some(*dst),
            Instr::Dma { .. } => None,
            _ => Some(Pipe::S),
        }
    }

    /// Encodes into one 16-byte word.
    pub fn encode(&self) -> [u8; INSTR_BYTES] {
        let w = match self {
            Instr::Nop => Word::new(opc::NOP),
            Instr::Halt => Word::new(opc::HALT),
            Instr::Barrier => Word::new(opc::BARRIER),
            Instr::Li { rd, imm } => {
                let mut w = Word::new(opc::LI);
                w.r[0] = *rd;
                w.imm = *imm;
                w
            }
            Instr::Alu { op, rd, rs1, rs2 } => {
                let mut w = Word::new(opc::ALU);
                w.sub = op.code();
                w.r[..3].copy_from_slice(&[*rd, *rs1, *rs2]);
                w
            }
            Instr::AluI { op, rd, rs1, imm } => {
                let mut w = Word::new(opc::ALUI);
                w.sub = op.code();
                w.r[..2].copy_from_slice(&[*rd, *rs1]);
                w.imm = *imm;
                w
            }
            Instr::Branch {
                cond,
                rs1,
                rs2,
                target,
            } => {
                let mut w = Word::new(opc::BR);
                w.sub = cond.code();
                w.r[..2].copy_from_slice(&[*rs1, *rs2]);
                w.imm = *target as i32;
                w
            }
            Instr::Jmp { target } => {
                let mut w = Word::new(opc::JMP);
                w.imm = *target as i32;
                w
            }
            Instr::Dbnz { rd, target } => {
                let mut w = Word::new(opc::DBNZ);
                w.r[0] = *rd;
                w.imm = *target as i32;
                w
            }
            Instr::SetFlag { src, dst, id } | Instr::WaitFlag { src, dst, id } => {
                let mut w = Word::new(if matches!(self, Instr::SetFlag { .. }) {
                    opc::SET_FLAG
                } else {
                    opc::WAIT_FLAG
                });
                w.mem = nib(src.code(), dst.code());
                w.imm = *id as i32;
                w
            }
            Instr::Dma {
                src_mem,
                dst_mem,
                sdt,
                ddt,
                regs,
                scale,
                transpose,
            } => {
                let mut w = Word::new(opc::DMA);
                w.sub = scale.unwrap_or(NO_REG);
                w.dt = nib(sdt.code(), ddt.code());
                w.mem = nib(src_mem.code(), dst_mem.code());
                w.r = *regs;
                w.imm = *transpose as i32;
                w
            }
            Instr::Mma { adt, cdt, regs } => {
                let mut w = Word::new(opc::MMA);
                w.dt = nib(adt.code(), cdt.code());
                w.r[..7].copy_from_slice(regs);
                w
            }
            Instr::Vec {
                op,
                form,
                sdt,
                ddt,
                dst,
                src1,
                src2,
                len,
                mask,
                cond,
            } => {
                let mut w = Word::new(opc::VEC);
                w.sub = op.code();
                w.dt = nib(sdt.code(), ddt.code());
                w.mem = *form as u8;
                w.r[0] = *dst;
                w.r[1] = *src1;
                w.r[2] = src2.unwrap_or(NO_REG);
                w.r[3] = *len;
                w.r[4] = mask.unwrap_or(NO_REG);
                w.r[5] = cond.unwrap_or(NO_REG);
                w
            }
            Instr::Ld {
                mem,
                dt,
                rd: r,
                base,
                offset,
            }
            | Instr::St {
                mem,
                dt,
                rs: r,
                base,
                offset,
            } => {
                let mut w = Word::new(if matches!(self, Instr::Ld { .. }) {
                    opc::LD
                } else {
                    opc::ST
                });
                w.dt = dt.code();
                w.mem = mem.code();
                w.r[..2].copy_from_slice(&[*r, *base]);
                w.imm = *offset;
                w
            }
            Instr::Vred {
                op,
                dt,
                dst,
                src,
                len,
            } => {
                let mut w = Word::new(opc::VRED);
                w.sub = op.code();
                w.dt = nib(dt.code(), dt.code());
                w.r[..3].copy_from_slice(&[*dst, *src, *len]);
                w
            }
            Instr::VredRows {
                op,
                dt,
                dst,
                src,
                len,
                rows,
                stride,
            } => {
                let mut w = Word::new(opc::VRED);
                w.sub = op.code();
                w.dt = nib(dt.code(), dt.code());
                w.r[..5].copy_from_slice(&[*dst, *src, *len, *rows, *stride]);
                w
            }
            Instr::Vrow {
                op,
                dt,
                dst,
                src1,
                src2,
                len,
                row,
            } => {
                let mut w = Word::new(opc::VEC);
                w.sub = op.code();
                w.dt = nib(dt.code(), dt.code());
                w.mem = 3;
                w.r[..4].copy_from_slice(&[*dst, *src1, *src2, *len]);
                w.r[6] = *row;
                w
            }
        };
        w.to_bytes()
    }

    /// Decodes one word; `pc` is only used to name the word in errors.
    pub fn decode(bytes: &[u8; INSTR_BYTES], pc: usize) -> Result<Instr> {
        let w = Word::from_bytes(bytes);
        let err = |msg: String| SimError::Decode { pc, msg };
        // Checks that exactly the first `n` register fields are used and valid.
        let regs = |n: usize| -> Result<()> {
            for (i, &r) in w.r.iter().enumerate() {
                if i < n && r >= 32 {
                    return Err(err(format!("register field {i} holds {r}, not a register")));
                }
                if i >= n && r != NO_REG {
                    return Err(err(format!(
                        "unused register field {i} is {r:#x}, must be 0xff"
                    )));
                }
            }
            Ok(())
        };
        let unused = |sub: bool, dt: bool, mem: bool, imm: bool| -> Result<()> {
            if (sub && w.sub != 0)
                || (dt && w.dt != 0)
                || (mem && w.mem != 0)
                || (imm && w.imm != 0)
            {
                return Err(err("unused field is not zero".into()));
            }
            Ok(())
        };
        let dtype = |c: u8| DType::from_code(c).ok_or_else(|| err(format!("bad dtype code {c}")));
        let mem = |c: u8| Mem::from_code(c).ok_or_else(|| err(format!("bad memory code {c}")));
        let pipe = |c: u8| Pipe::from_code(c).ok_or_else(|| err(format!("bad pipe code {c}")));
        let target = || -> Result<u32> {
            u32::try_from(w.imm).map_err(|_| err(format!("negative branch target {}", w.imm)))
        };
        let opt_reg = |r: u8| -> Result<Option<u8>> {
            match r {
                NO_REG => Ok(None),
                r if r < 32 => Ok(Some(r)),
                r => Err(err(format!("register field holds {r}, not a register"))),
            }
        };
        Ok(match w.opcode {
            opc::NOP | opc::HALT | opc::BARRIER => {
                regs(0)?;
                unused(true, true, true, true)?;
                match w.opcode {
                    opc::NOP => Instr::Nop,
                    opc::HALT => Instr::Halt,
                    _ => Instr::Barrier,
                }
            }
            opc::LI => {
                regs(1)?;
                unused(true, true, true, false)?;
                Instr::Li {
                    rd: w.r[0],
                    imm: w.imm,
                }
            }
            opc::ALU => {
                regs(3)?;
                unused(false, true, true, true)?;
                let op =
                    AluOp::from_code(w.sub).ok_or_else(|| err(format!("bad ALU op {}", w.sub)))?;
                Instr::Alu {
                    op,
                    rd: w.r[0],
                    rs1: w.r[1],
                    rs2: w.r[2],
                }
            }
            opc::ALUI => {
                regs(2)?;
                unused(false, true, true, false)?;
                let op =
                    AluOp::from_code(w.sub).ok_or_else(|| err(format!("bad ALU op {}", w.sub)))?;
                Instr::AluI {
                    op,
                    rd: w.r[0],
                    rs1: w.r[1],
                    imm: w.imm,
                }
            }
            opc::BR => {
                regs(2)?;
                unused(false, true, true, false)?;
                let cond = Cond::from_code(w.sub)
                    .ok_or_else(|| err(format!("bad branch condition {}", w.sub)))?;
                Instr::Branch {
                    cond,
                    rs1: w.r[0],
                    rs2: w.r[1],
                    target: target()?,
                }
            }
            opc::JMP => {
                regs(0)?;
                unused(true, true, true, false)?;
                Instr::Jmp { target: target()? }
            }
            opc::DBNZ => {
                regs(1)?;
                unused(true, true, true, false)?;
                Instr::Dbnz {
                    rd: w.r[0],
                    target: target()?,
                }
            }
            opc::SET_FLAG | opc::WAIT_FLAG => {
                regs(0)?;
                unused(true, true, false, false)?;
                let (src, dst) = (pipe(w.mem >> 4)?, pipe(w.mem & 15)?);
                let id =
                    u32::try_from(w.imm).map_err(|_| err(format!("negative flag id {}", w.imm)))?;
                if w.opcode == opc::SET_FLAG {
                    Instr::SetFlag { src, dst, id }
                } else {
                    Instr::WaitFlag { src, dst, id }
                }
            }
            opc::DMA => {
                regs(8)?;
                if !matches!(w.imm, 0 | 1) {
                    return Err(err(format!("DMA flags {} (only bit 0, transpose)", w.imm)));
                }
                Instr::Dma {
                    transpose: w.imm == 1,
                    src_mem: mem(w.mem >> 4)?,
                    dst_mem: mem(w.mem & 15)?,
                    sdt: dtype(w.dt >> 4)?,
                    ddt: dtype(w.dt & 15)?,
                    regs: w.r,
                    scale: opt_reg(w.sub)?,
                }
            }
            opc::MMA => {
                regs(7)?;
                unused(true, false, true, true)?;
                let mut r = [0u8; 7];
                r.copy_from_slice(&w.r[..7]);
                Instr::Mma {
                    adt: dtype(w.dt >> 4)?,
                    cdt: dtype(w.dt & 15)?,
                    regs: r,
                }
            }
            opc::VEC => {
                unused(false, false, false, true)?;
                let op =
                    VecOp::from_code(w.sub).ok_or_else(|| err(format!("bad VEC op {}", w.sub)))?;
                let form = match w.mem {
                    0 => VecForm::VV,
                    1 => VecForm::VS,
                    2 => VecForm::Unary,
                    3 => {
                        // *0.4*: the row-broadcast form of a binary arithmetic op.
                        if !op.is_binary() || op.converts() || op.has_third() {
                            return Err(err(format!("VEC op {op} has no row form")));
                        }
                        if w.r[4..6] != [NO_REG, NO_REG] || w.r[7] != NO_REG {
                            return Err(err("VEC row form: only r0..r3 and r6".into()));
                        }
                        let (sdt, ddt) = (dtype(w.dt >> 4)?, dtype(w.dt & 15)?);
                        if sdt != ddt {
                            return Err(err(format!("VEC {op} with two dtypes")));
                        }
                        let need =
                            |r: u8| opt_reg(r)?.ok_or_else(|| err("missing VEC register".into()));
                        return Ok(Instr::Vrow {
                            op,
                            dt: sdt,
                            dst: need(w.r[0])?,
                            src1: need(w.r[1])?,
                            src2: need(w.r[2])?,
                            len: need(w.r[3])?,
                            row: need(w.r[6])?,
                        });
                    }
                    f => return Err(err(format!("bad VEC form {f}"))),
                };
                if op.is_binary() == (form == VecForm::Unary) {
                    return Err(err(format!("VEC op {op} does not take form {form:?}")));
                }
                let cond = opt_reg(w.r[5])?;
                if cond.is_some() != op.has_third() {
                    return Err(err(
                        "VEC r5 (cond/mul) register present iff the op is SEL or MADD".into(),
                    ));
                }
                for (i, &r) in w.r.iter().enumerate().skip(6) {
                    if r != NO_REG {
                        return Err(err(format!(
                            "unused register field {i} is {r:#x}, must be 0xff"
                        )));
                    }
                }
                let src2 = opt_reg(w.r[2])?;
                if src2.is_some() != op.is_binary() {
                    return Err(err("VEC src2 register present iff the op is binary".into()));
                }
                let (sdt, ddt) = (dtype(w.dt >> 4)?, dtype(w.dt & 15)?);
                if !op.converts() && sdt != ddt {
                    return Err(err(format!("VEC {op} with two dtypes")));
                }
                let need = |r: u8| opt_reg(r)?.ok_or_else(|| err("missing VEC register".into()));
                Instr::Vec {
                    op,
                    form,
                    sdt,
                    ddt,
                    dst: need(w.r[0])?,
                    src1: need(w.r[1])?,
                    src2,
                    len: need(w.r[3])?,
                    mask: opt_reg(w.r[4])?,
                    cond,
                }
            }
            opc::VRED if w.r[3] != NO_REG => {
                // *0.4*: the row form.
                regs(5)?;
                unused(false, false, true, true)?;
                let op =
                    RedOp::from_code(w.sub).ok_or_else(|| err(format!("bad VRED op {}", w.sub)))?;
                let dt = dtype(w.dt & 15)?;
                if w.dt >> 4 != w.dt & 15 {
                    return Err(err("VRED dtype nibbles differ".into()));
                }
                Instr::VredRows {
                    op,
                    dt,
                    dst: w.r[0],
                    src: w.r[1],
                    len: w.r[2],
                    rows: w.r[3],
                    stride: w.r[4],
                }
            }
            opc::VRED => {
                regs(3)?;
                unused(false, false, true, true)?;
                let op =
                    RedOp::from_code(w.sub).ok_or_else(|| err(format!("bad VRED op {}", w.sub)))?;
                let dt = dtype(w.dt & 15)?;
                if w.dt >> 4 != w.dt & 15 {
                    return Err(err("VRED dtype nibbles differ".into()));
                }
                Instr::Vred {
                    op,
                    dt,
                    dst: w.r[0],
                    src: w.r[1],
                    len: w.r[2],
                }
            }
            opc::LD | opc::ST => {
                regs(2)?;
                unused(true, false, false, false)?;
                if w.dt >> 4 != 0 || w.mem >> 4 != 0 {
                    return Err(err("LD/ST use only the low dtype and memory nibbles".into()));
                }
                let (mem, dt) = (mem(w.mem)?, dtype(w.dt)?);
                if w.opcode == opc::LD {
                    Instr::Ld {
                        mem,
                        dt,
                        rd: w.r[0],
                        base: w.r[1],
                        offset: w.imm,
                    }
                } else {
                    Instr::St {
                        mem,
                        dt,
                        rs: w.r[0],
                        base: w.r[1],
                        offset: w.imm,
                    }
                }
            }
            o => return Err(err(format!("unknown opcode {o:#04x}"))),
        })
    }
}

/// Encodes a program into its binary image.
pub fn encode_program(prog: &[Instr]) -> Vec<u8> {
    prog.iter().flat_map(|i| i.encode()).collect()
}

/// Decodes a binary image; its length must be a multiple of 16 bytes.
pub fn decode_program(bytes: &[u8]) -> Result<Vec<Instr>> {
    // `%` rather than `is_multiple_of`, which is newer than the workspace MSRV (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    if bytes.len() % INSTR_BYTES != 0 {
        return Err(SimError::Decode {
            pc: bytes.len() / INSTR_BYTES,
            msg: format!(
                "image length {} is not a multiple of {INSTR_BYTES}",
                bytes.len()
            ),
        });
    }
    bytes
        .chunks_exact(INSTR_BYTES)
        .enumerate()
        .map(|(pc, c)| {
            let mut w = [0u8; INSTR_BYTES];
            w.copy_from_slice(c);
            Instr::decode(&w, pc)
        })
        .collect()
}
