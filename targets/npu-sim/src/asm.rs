//! The text assembler and disassembler. `disassemble(assemble(text))` prints the
//! canonical form of a program, which assembles back to the same binary.
//!
//! Syntax, one instruction per line (the ISA manual has the full reference):
//! ```text
//! ; comment (also `#`)
//! .alias A_PTR r1        ; register alias
//! .equ BM 128            ; named immediate
//! loop:                  ; label (an instruction may follow on the same line)
//!     ADDI r2, r2, BM
//!     DMA GM->L1 f16 r3, r1, r4, r5, r6, r7, r8, r9
//!     BLT r2, r10, loop
//! ```

use std::collections::{BTreeSet, HashMap};

use crate::error::{Result, SimError};
use crate::isa::*;

/// Assembles a program text into decoded instructions.
pub fn assemble(text: &str) -> Result<Vec<Instr>> {
    // Pass 1 collects labels, aliases and constants; pass 2 parses instructions.
    let mut labels: HashMap<String, u32> = HashMap::new();
    let mut aliases: HashMap<String, u8> = HashMap::new();
    let mut equs: HashMap<String, i64> = HashMap::new();
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let err = |msg: String| SimError::Asm { line: lineno, msg };
        let mut s = raw;
        if let Some(p) = s.find([';', '#']) {
            s = &s[..p];
        }
        let mut s = s.trim();
        if s.is_empty() {
            continue;
        }
        if let Some(rest) = s.strip_prefix('.') {
            let mut it = rest.split_whitespace();
            let dir = it.next().unwrap_or("");
            let name = it
                .next()
                .ok_or_else(|| err(format!("`.{dir}` needs a name")))?;
            let value = it
                .next()
                .ok_or_else(|| err(format!("`.{dir} {name}` needs a value")))?;
            if it.next().is_some() {
                return Err(err(format!("trailing text after `.{dir} {name} {value}`")));
            }
            check_ident(name).map_err(&err)?;
            match dir {
                "alias" => {
                    let r = parse_reg_plain(value)
                        .ok_or_else(|| err(format!("`{value}` is not a register")))?;
                    aliases.insert(name.to_string(), r);
                }
                "equ" => {
                    let v = parse_int(value, &equs)
                        .ok_or_else(|| err(format!("`{value}` is not an integer")))?;
                    equs.insert(name.to_string(), v);
                }
                d => return Err(err(format!("unknown directive `.{d}`"))),
            }
            continue;
        }
        // Leading labels.
        while let Some(colon) = s.find(':') {
            let (name, rest) = s.split_at(colon);
            let name = name.trim();
            if name.contains(char::is_whitespace) {
                break;
            }
            check_ident(name).map_err(&err)?;
            let pc = u32::try_from(lines.len()).map_err(|_| err("program too long".into()))?;
            if labels.insert(name.to_string(), pc).is_some() {
                return Err(err(format!("label `{name}` defined twice")));
            }
            s = rest[1..].trim();
        }
        if !s.is_empty() {
            lines.push((lineno, s.to_string()));
        }
    }
    let ctx = Ctx {
        labels,
        aliases,
        equs,
    };
    lines
        .iter()
        .map(|(line, s)| parse_instr(s, &ctx).map_err(|msg| SimError::Asm { line: *line, msg }))
        .collect()
}

/// Prints a program in canonical text form, with `L<pc>` labels at branch targets.
pub fn disassemble(prog: &[Instr]) -> String {
    let targets: BTreeSet<u32> = prog
        .iter()
        .filter_map(|i| match i {
            Instr::Branch { target, .. } | Instr::Jmp { target } | Instr::Dbnz { target, .. } => {
                Some(*target)
            }
            _ => None,
        })
        .collect();
    let mut out = String::new();
    for (pc, ins) in prog.iter().enumerate() {
        if targets.contains(&(pc as u32)) {
            out.push_str(&format!("L{pc}:\n"));
        }
        out.push_str("    ");
        out.push_str(&format_instr(ins));
        out.push('\n');
    }
    // A branch may target the position just past the last instruction.
    if let Some(&t) = targets.iter().next_back() {
        if t as usize >= prog.len() {
            for t in targets.range(prog.len() as u32..) {
                out.push_str(&format!("L{t}:\n"));
            }
        }
    }
    out
}

fn reg(r: u8) -> String {
    format!("r{r}")
}

/// Formats one instruction; branch targets print as `L<pc>`.
pub fn format_instr(ins: &Instr) -> String {
    match ins {
        Instr::Nop => "NOP".into(),
        Instr::Halt => "HALT".into(),
        Instr::Barrier => "BARRIER".into(),
        Instr::Li { rd, imm } => format!("LI {}, {imm}", reg(*rd)),
        Instr::Alu { op, rd, rs1, rs2 } => {
            format!("{op} {}, {}, {}", reg(*rd), reg(*rs1), reg(*rs2))
        }
        Instr::AluI { op, rd, rs1, imm } => format!("{op}I {}, {}, {imm}", reg(*rd), reg(*rs1)),
        Instr::Branch {
            cond,
            rs1,
            rs2,
            target,
        } => format!("{cond} {}, {}, L{target}", reg(*rs1), reg(*rs2)),
        Instr::Jmp { target } => format!("JMP L{target}"),
        Instr::Dbnz { rd, target } => format!("DBNZ {}, L{target}", reg(*rd)),
        Instr::SetFlag { src, dst, id } => format!("SET_FLAG {src}, {dst}, {id}"),
        Instr::WaitFlag { src, dst, id } => format!("WAIT_FLAG {src}, {dst}, {id}"),
        Instr::Dma {
            src_mem,
            dst_mem,
            sdt,
            ddt,
            regs,
            scale,
            transpose,
        } => {
            let dts = if sdt == ddt {
                sdt.to_string()
            } else {
                format!("{sdt}->{ddt}")
            };
            let rs: Vec<String> = regs.iter().map(|r| reg(*r)).collect();
            let mut s = format!("DMA {src_mem}->{dst_mem} {dts} {}", rs.join(", "));
            if let Some(sc) = scale {
                s.push_str(&format!(", scale={}", reg(*sc)));
            }
            if *transpose {
                s.push_str(", transpose");
            }
            s
        }
        Instr::Mma { adt, cdt, regs } => {
            let rs: Vec<String> = regs.iter().map(|r| reg(*r)).collect();
            format!("MMA {adt}->{cdt} {}", rs.join(", "))
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
            let suffix = if *form == VecForm::VS { "S" } else { "" };
            let dts = if sdt == ddt {
                sdt.to_string()
            } else {
                format!("{sdt}->{ddt}")
            };
            let mut rs = vec![reg(*dst), reg(*src1)];
            if let Some(s2) = src2 {
                rs.push(reg(*s2));
            }
            rs.push(reg(*len));
            if let Some(m) = mask {
                rs.push(format!("mask={}", reg(*m)));
            }
            if let Some(c) = cond {
                let key = if *op == VecOp::Madd { "mul" } else { "cond" };
                rs.push(format!("{key}={}", reg(*c)));
            }
            format!("V{op}{suffix} {dts} {}", rs.join(", "))
        }
        Instr::Vred {
            op,
            dt,
            dst,
            src,
            len,
        } => format!("VRED{op} {dt} {}, {}, {}", reg(*dst), reg(*src), reg(*len)),
        Instr::VredRows {
            op,
            dt,
            dst,
            src,
            len,
            rows,
            stride,
        } => format!(
            "VRED{op} {dt} {}, {}, {}, rows={}, stride={}",
            reg(*dst),
            reg(*src),
            reg(*len),
            reg(*rows),
            reg(*stride)
        ),
        Instr::Vrow {
            op,
            dt,
            dst,
            src1,
            src2,
            len,
            row,
        } => format!(
            "V{op} {dt} {}, {}, {}, {}, row={}",
            reg(*dst),
            reg(*src1),
            reg(*src2),
            reg(*len),
            reg(*row)
        ),
        Instr::Ld {
            mem,
            dt,
            rd,
            base,
            offset,
        } => format!("LD {mem} {dt} {}, {}, {offset}", reg(*rd), reg(*base)),
        Instr::St {
            mem,
            dt,
            rs,
            base,
            offset,
        } => format!("ST {mem} {dt} {}, {}, {offset}", reg(*rs), reg(*base)),
    }
}

struct Ctx {
    labels: HashMap<String, u32>,
    aliases: HashMap<String, u8>,
    equs: HashMap<String, i64>,
}

impl Ctx {
    fn reg(&self, s: &str) -> std::result::Result<u8, String> {
        parse_reg_plain(s)
            .or_else(|| self.aliases.get(s).copied())
            .ok_or_else(|| format!("`{s}` is not a register (r0..r31) or register alias"))
    }
    fn imm(&self, s: &str) -> std::result::Result<i32, String> {
        let v = parse_int(s, &self.equs)
            .ok_or_else(|| format!("`{s}` is not an integer or .equ name"))?;
        i32::try_from(v).map_err(|_| format!("immediate {v} does not fit in 32 bits"))
    }
    fn target(&self, s: &str) -> std::result::Result<u32, String> {
        if let Some(&t) = self.labels.get(s) {
            return Ok(t);
        }
        // The disassembler's `L<pc>` names resolve even without a label line.
        s.strip_prefix('L')
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| format!("undefined label `{s}`"))
    }
}

fn check_ident(s: &str) -> std::result::Result<(), String> {
    let ok = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid name"))
    }
}

fn parse_reg_plain(s: &str) -> Option<u8> {
    let n: u8 = s
        .strip_prefix('r')
        .or_else(|| s.strip_prefix('R'))?
        .parse()
        .ok()?;
    (n < 32).then_some(n)
}

fn parse_int(s: &str, equs: &HashMap<String, i64>) -> Option<i64> {
    if let Some(v) = equs.get(s) {
        return Some(*v);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else {
        body.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn parse_dtypes(s: &str) -> std::result::Result<(DType, DType), String> {
    let dt = |t: &str| DType::from_name(t).ok_or_else(|| format!("unknown dtype `{t}`"));
    match s.split_once("->") {
        Some((a, b)) => Ok((dt(a)?, dt(b)?)),
        None => {
            let d = dt(s)?;
            Ok((d, d))
        }
    }
}

fn parse_instr(s: &str, ctx: &Ctx) -> std::result::Result<Instr, String> {
    let (mn, rest) = match s.split_once(char::is_whitespace) {
        Some((m, r)) => (m, r.trim()),
        None => (s, ""),
    };
    let mn_up = mn.to_ascii_uppercase();
    // Instructions with a type word before the operand list take it off first.
    let take_word = |r: &str| -> (String, String) {
        match r.split_once(char::is_whitespace) {
            Some((w, rest)) => (w.to_string(), rest.trim().to_string()),
            None => (r.to_string(), String::new()),
        }
    };
    let ops = |r: &str| -> Vec<String> {
        if r.trim().is_empty() {
            Vec::new()
        } else {
            r.split(',').map(|x| x.trim().to_string()).collect()
        }
    };
    let want = |v: &[String], n: usize| -> std::result::Result<(), String> {
        if v.len() != n {
            Err(format!("`{mn_up}` takes {n} operands, got {}", v.len()))
        } else {
            Ok(())
        }
    };
    let pipe = |t: &str| Pipe::from_name(t).ok_or_else(|| format!("unknown pipe `{t}`"));
    let flag_id = |t: &str| -> std::result::Result<u32, String> {
        u32::try_from(ctx.imm(t)?).map_err(|_| format!("negative flag id `{t}`"))
    };

    match mn_up.as_str() {
        "NOP" | "HALT" | "BARRIER" => {
            want(&ops(rest), 0)?;
            return Ok(match mn_up.as_str() {
                "NOP" => Instr::Nop,
                "HALT" => Instr::Halt,
                _ => Instr::Barrier,
            });
        }
        "LI" => {
            let o = ops(rest);
            want(&o, 2)?;
            return Ok(Instr::Li {
                rd: ctx.reg(&o[0])?,
                imm: ctx.imm(&o[1])?,
            });
        }
        "JMP" => {
            let o = ops(rest);
            want(&o, 1)?;
            return Ok(Instr::Jmp {
                target: ctx.target(&o[0])?,
            });
        }
        "DBNZ" => {
            let o = ops(rest);
            want(&o, 2)?;
            return Ok(Instr::Dbnz {
                rd: ctx.reg(&o[0])?,
                target: ctx.target(&o[1])?,
            });
        }
        "SET_FLAG" | "WAIT_FLAG" => {
            let o = ops(rest);
            want(&o, 3)?;
            let (src, dst, id) = (pipe(&o[0])?, pipe(&o[1])?, flag_id(&o[2])?);
            return Ok(if mn_up == "SET_FLAG" {
                Instr::SetFlag { src, dst, id }
            } else {
                Instr::WaitFlag { src, dst, id }
            });
        }
        "DMA" => {
            let (edge, r) = take_word(rest);
            let (dts, r) = take_word(&r);
            let (s, d) = edge
                .split_once("->")
                .ok_or_else(|| format!("DMA edge `{edge}` is not SRC->DST"))?;
            let mem = |t: &str| Mem::from_name(t).ok_or_else(|| format!("unknown memory `{t}`"));
            let (src_mem, dst_mem) = (mem(s)?, mem(d)?);
            let (sdt, ddt) = parse_dtypes(&dts)?;
            let mut o = ops(&r);
            let mut scale = None;
            let transpose = o
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case("transpose"));
            if transpose {
                o.pop();
            }
            if let Some(last) = o.last() {
                if let Some(sc) = last.strip_prefix("scale=") {
                    scale = Some(ctx.reg(sc.trim())?);
                    o.pop();
                }
            }
            want(&o, 8)?;
            let mut regs = [0u8; 8];
            for (i, t) in o.iter().enumerate() {
                regs[i] = ctx.reg(t)?;
            }
            return Ok(Instr::Dma {
                src_mem,
                dst_mem,
                sdt,
                ddt,
                regs,
                scale,
                transpose,
            });
        }
        "LD" | "ST" => {
            let (m, r) = take_word(rest);
            let (dts, r) = take_word(&r);
            let mem = Mem::from_name(&m).ok_or_else(|| format!("unknown memory `{m}`"))?;
            let dt = DType::from_name(&dts).ok_or_else(|| format!("unknown dtype `{dts}`"))?;
            let o = ops(&r);
            want(&o, 3)?;
            let (a, base, offset) = (ctx.reg(&o[0])?, ctx.reg(&o[1])?, ctx.imm(&o[2])?);
            return Ok(if mn_up == "LD" {
                Instr::Ld {
                    mem,
                    dt,
                    rd: a,
                    base,
                    offset,
                }
            } else {
                Instr::St {
                    mem,
                    dt,
                    rs: a,
                    base,
                    offset,
                }
            });
        }
        "MMA" => {
            let (dts, r) = take_word(rest);
            let (adt, cdt) = parse_dtypes(&dts)?;
            let o = ops(&r);
            want(&o, 7)?;
            let mut regs = [0u8; 7];
            for (i, t) in o.iter().enumerate() {
                regs[i] = ctx.reg(t)?;
            }
            return Ok(Instr::Mma { adt, cdt, regs });
        }
        _ => {}
    }
    if let Some(cond) = Cond::from_name(&mn_up) {
        let o = ops(rest);
        want(&o, 3)?;
        return Ok(Instr::Branch {
            cond,
            rs1: ctx.reg(&o[0])?,
            rs2: ctx.reg(&o[1])?,
            target: ctx.target(&o[2])?,
        });
    }
    if let Some(op) = AluOp::from_name(&mn_up) {
        let o = ops(rest);
        want(&o, 3)?;
        return Ok(Instr::Alu {
            op,
            rd: ctx.reg(&o[0])?,
            rs1: ctx.reg(&o[1])?,
            rs2: ctx.reg(&o[2])?,
        });
    }
    if let Some(op) = mn_up.strip_suffix('I').and_then(AluOp::from_name) {
        let o = ops(rest);
        want(&o, 3)?;
        return Ok(Instr::AluI {
            op,
            rd: ctx.reg(&o[0])?,
            rs1: ctx.reg(&o[1])?,
            imm: ctx.imm(&o[2])?,
        });
    }
    if let Some(red) = mn_up.strip_prefix("VRED") {
        let op = RedOp::from_name(red).ok_or_else(|| format!("unknown reduction `{mn}`"))?;
        let (dts, r) = take_word(rest);
        let dt = DType::from_name(&dts).ok_or_else(|| format!("unknown dtype `{dts}`"))?;
        let mut o = ops(&r);
        // *0.4*: the row form, `rows=rN, stride=rM` after the three operands.
        if o.len() == 5 {
            let (rows, stride) = match (o[3].strip_prefix("rows="), o[4].strip_prefix("stride=")) {
                (Some(a), Some(b)) => (ctx.reg(a.trim())?, ctx.reg(b.trim())?),
                _ => {
                    return Err(format!(
                        "`{mn_up}` takes 3 operands, or 3 and rows=, stride="
                    ))
                }
            };
            o.truncate(3);
            return Ok(Instr::VredRows {
                op,
                dt,
                dst: ctx.reg(&o[0])?,
                src: ctx.reg(&o[1])?,
                len: ctx.reg(&o[2])?,
                rows,
                stride,
            });
        }
        want(&o, 3)?;
        return Ok(Instr::Vred {
            op,
            dt,
            dst: ctx.reg(&o[0])?,
            src: ctx.reg(&o[1])?,
            len: ctx.reg(&o[2])?,
        });
    }
    if let Some(name) = mn_up.strip_prefix('V') {
        let (op, form) = if let Some(op) = VecOp::from_name(name) {
            (
                op,
                if op.is_binary() {
                    VecForm::VV
                } else {
                    VecForm::Unary
                },
            )
        } else if let Some(op) = name
            .strip_suffix('S')
            .and_then(VecOp::from_name)
            .filter(|o| o.is_binary())
        {
            (op, VecForm::VS)
        } else {
            return Err(format!("unknown mnemonic `{mn}`"));
        };
        let (dts, r) = take_word(rest);
        let (sdt, ddt) = parse_dtypes(&dts)?;
        if !op.converts() && sdt != ddt {
            return Err(format!("`{mn_up}` takes one dtype"));
        }
        let mut o = ops(&r);
        // *0.4*: the row-broadcast form, `row=rN` after the four operands.
        if let Some(row) = o.last().and_then(|l| l.strip_prefix("row=")) {
            let row = ctx.reg(row.trim())?;
            o.pop();
            if form != VecForm::VV || op.converts() || op.has_third() || sdt != ddt {
                return Err(format!("`{mn_up}` has no row form"));
            }
            want(&o, 4)?;
            return Ok(Instr::Vrow {
                op,
                dt: sdt,
                dst: ctx.reg(&o[0])?,
                src1: ctx.reg(&o[1])?,
                src2: ctx.reg(&o[2])?,
                len: ctx.reg(&o[3])?,
                row,
            });
        }
        // `SEL`'s condition and *0.5* `MADD`'s multiplier, both in `r5`.
        let third = if op == VecOp::Madd { "mul=" } else { "cond=" };
        let mut cond = None;
        if let Some(last) = o.last() {
            if let Some(c) = last.strip_prefix(third) {
                cond = Some(ctx.reg(c.trim())?);
                o.pop();
            }
        }
        let mut mask = None;
        if let Some(last) = o.last() {
            if let Some(m) = last.strip_prefix("mask=") {
                mask = Some(ctx.reg(m.trim())?);
                o.pop();
            }
        }
        if cond.is_some() != op.has_third() {
            return Err(
                "`VSEL` (and only it) takes `cond=rN`, `VMADD` (and only it) `mul=rN`".to_string(),
            );
        }
        let binary = op.is_binary();
        want(&o, if binary { 4 } else { 3 })?;
        let (dst, src1) = (ctx.reg(&o[0])?, ctx.reg(&o[1])?);
        let (src2, len) = if binary {
            (Some(ctx.reg(&o[2])?), ctx.reg(&o[3])?)
        } else {
            (None, ctx.reg(&o[2])?)
        };
        return Ok(Instr::Vec {
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
        });
    }
    Err(format!("unknown mnemonic `{mn}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_round_trips() {
        let src = "\
top:
    NOP
    LI r1, -5
    LI r2, 0x10
    ADD r3, r1, r2
    SHRI r4, r3, 2
    BLT r1, r2, top
    DBNZ r2, top
    JMP end
    SET_FLAG MTE2, MTE1, 3
    WAIT_FLAG MTE2, MTE1, 3
    BARRIER
    DMA GM->L1 f16 r1, r2, r3, r4, r5, r6, r7, r8
    DMA L0C->GM i32->i8 r1, r2, r3, r4, r5, r6, r7, r8, scale=r9
    DMA L1->L0B f16 r1, r2, r3, r4, r5, r6, r7, r8, transpose
    DMA GM->UB f16 r1, r2, r3, r4, r5, r6, r7, r8, transpose
    MMA f16->f32 r1, r2, r3, r4, r5, r6, r7
    VADD f32 r1, r2, r3, r4
    VMULS f16 r1, r2, r3, r4, mask=r5
    VEXP f32 r1, r2, r3
    VCAST f32->f16 r1, r2, r3
    VREDMAX f32 r1, r2, r3
    VREDSUM f32 r1, r2, r3, rows=r4, stride=r5
    VSUB f32 r1, r2, r3, r4, row=r5
    SRA r1, r2, r3
    DIVUI r1, r2, 7
    REMU r1, r2, r3
    MINU r1, r2, r3
    MAXUI r1, r2, -1
    BLTU r1, r2, top
    BGEU r1, r2, end
    LD UB i16 r1, r2, 6
    LD GM u64 r3, r4, -8
    ST UB u8 r1, r2, 0
    ST GM i64 r1, r2, 4096
    VREM f32 r1, r2, r3, r4
    VCMPLT f32->u8 r1, r2, r3, r4
    VCMPNES f32->u8 r1, r2, r3, r4
    VSEL f32 r1, r2, r3, r4, cond=r5
    VMADD f32 r1, r2, r3, r4, mul=r5
    VMADDS f16 r1, r2, r3, r4, mask=r6, mul=r5
    VNEG f32 r1, r2, r3
    VFLOOR f32 r1, r2, r3
    VCEIL f32 r1, r2, r3
    VROUND f32 r1, r2, r3
    VTRUNC f32 r1, r2, r3
    VDUP f32 r1, r2, r3
    VCAST i64->f32 r1, r2, r3
    VCAST f32->u16 r1, r2, r3
    VREDMIN f32 r1, r2, r3
    VREDPROD f32 r1, r2, r3
end:
    HALT
";
        let p = assemble(src).unwrap();
        let text = disassemble(&p);
        let p2 = assemble(&text).unwrap();
        assert_eq!(p, p2);
        assert_eq!(disassemble(&p2), text);
        let bin = encode_program(&p);
        assert_eq!(bin.len(), p.len() * INSTR_BYTES);
        assert_eq!(decode_program(&bin).unwrap(), p);
    }

    #[test]
    fn errors_name_the_line() {
        let e = assemble("NOP\n\n  FROB r1\n").unwrap_err();
        assert!(
            matches!(e, SimError::Asm { line: 3, ref msg } if msg.contains("FROB")),
            "{e}"
        );
        let e = assemble("ADD r1, r2\n").unwrap_err();
        assert!(matches!(e, SimError::Asm { line: 1, .. }), "{e}");
        let e = assemble("LI r40, 1\n").unwrap_err();
        assert!(matches!(e, SimError::Asm { line: 1, .. }), "{e}");
        let e = assemble("JMP nowhere\n").unwrap_err();
        assert!(
            matches!(e, SimError::Asm { line: 1, ref msg } if msg.contains("nowhere")),
            "{e}"
        );
        let e = assemble("VADD f32->f16 r1, r2, r3, r4\n").unwrap_err();
        assert!(matches!(e, SimError::Asm { line: 1, .. }), "{e}");
        // *0.5*: `VMADD` needs its multiplier, and only it takes `mul=`.
        for bad in [
            "VMADD f32 r1, r2, r3, r4\n",
            "VADD f32 r1, r2, r3, r4, mul=r5\n",
            "VMADD f32 r1, r2, r3, r4, cond=r5\n",
            "VMADD f32 r1, r2, r3, r4, row=r5\n",
        ] {
            let e = assemble(bad).unwrap_err();
            assert!(matches!(e, SimError::Asm { line: 1, .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_words_do_not_decode() {
        let mut w = Instr::Halt.encode();
        w[0] = 0x7f;
        assert!(matches!(
            Instr::decode(&w, 4),
            Err(SimError::Decode { pc: 4, .. })
        ));
        let mut w = Instr::Li { rd: 1, imm: 2 }.encode();
        w[5] = 3; // an unused register field must be 0xff
        assert!(matches!(
            Instr::decode(&w, 0),
            Err(SimError::Decode { pc: 0, .. })
        ));
        assert!(decode_program(&[0u8; 17]).is_err());
    }
}
