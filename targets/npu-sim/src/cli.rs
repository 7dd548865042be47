//! The npu-sim command line, shared by the `npu-sim` binary and `tessera npu-sim`: assemble
//! and run a kernel file on the simulated NPU, with buffers as `.npy` files, and print the
//! cycle report; also assemble to and disassemble from the binary encoding.

use std::path::Path;

use crate::npy::{read_npy, write_npy};
use crate::{
    assemble, decode_program, disassemble, encode_program, run_program, DType, KernelArgs, Mode,
    NdArray, SimError, TargetConfig,
};

const USAGE: &str = "\
usage:
  npu-sim run KERNEL.asm [options]     assemble KERNEL.asm (or load KERNEL.bin) and run it
      --in  rN=FILE.npy                input buffer; its GM address goes into rN
      --out rN=FILE.npy:DTYPE:D0xD1..  output buffer (zero-filled), written to FILE.npy after the run
      --set rN=INT | rN=f32:FLOAT      initial register value (f32 values as bit patterns)
      --mode functional|cycle|timing   default: cycle
      --target target.toml             default: the description built into the crate
  npu-sim asm KERNEL.asm OUT.bin       assemble to the 16-byte-per-instruction binary
  npu-sim disasm PROG.bin              print the canonical assembly of a binary
";

fn io<T>(r: std::io::Result<T>, what: &str) -> Result<T, SimError> {
    r.map_err(|e| SimError::Io(format!("{what}: {e}")))
}

fn parse_reg(s: &str) -> Result<u8, SimError> {
    s.strip_prefix('r')
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|&n| n < 32)
        .ok_or_else(|| SimError::Args(format!("`{s}` is not a register r0..r31")))
}

fn load_program(path: &str) -> Result<Vec<crate::Instr>, SimError> {
    if path.ends_with(".bin") {
        decode_program(&io(std::fs::read(path), path)?)
    } else {
        assemble(&io(std::fs::read_to_string(path), path)?)
    }
}

/// Runs one npu-sim command (`run`, `asm`, `disasm`, `help`) given its arguments.
pub fn main_with_args(args: &[String]) -> Result<(), SimError> {
    let Some(cmd) = args.first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match cmd.as_str() {
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        "asm" => {
            let [_, src, out] = args else {
                return Err(SimError::Args(format!(
                    "asm takes KERNEL.asm OUT.bin\n{USAGE}"
                )));
            };
            let prog = load_program(src)?;
            io(std::fs::write(out, encode_program(&prog)), out)?;
            println!(
                "{} instructions, {} bytes -> {out}",
                prog.len(),
                prog.len() * 16
            );
            Ok(())
        }
        "disasm" => {
            let [_, bin] = args else {
                return Err(SimError::Args(format!("disasm takes PROG.bin\n{USAGE}")));
            };
            print!("{}", disassemble(&load_program(bin)?));
            Ok(())
        }
        "run" => run(&args[1..]),
        other => Err(SimError::Args(format!(
            "unknown command `{other}`\n{USAGE}"
        ))),
    }
}

fn run(args: &[String]) -> Result<(), SimError> {
    let mut kernel = None;
    let mut target = None;
    let mut mode = Mode::Cycle;
    let mut kargs = KernelArgs::default();
    let mut outs: Vec<(u8, String)> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| SimError::Args(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--in" => {
                let v = val()?;
                let (r, f) = v
                    .split_once('=')
                    .ok_or_else(|| SimError::Args(format!("--in {v}: want rN=FILE.npy")))?;
                let arr = read_npy(&io(std::fs::read(f), f)?)
                    .map_err(|e| SimError::Npy(format!("{f}: {e}")))?;
                kargs = kargs.input(parse_reg(r)?, arr);
            }
            "--out" => {
                let v = val()?;
                let (r, spec) = v.split_once('=').ok_or_else(|| {
                    SimError::Args(format!("--out {v}: want rN=FILE:DTYPE:SHAPE"))
                })?;
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                let [shape, dt, file] = parts[..] else {
                    return Err(SimError::Args(format!(
                        "--out {v}: want rN=FILE.npy:DTYPE:D0xD1"
                    )));
                };
                let dt = DType::from_name(dt)
                    .ok_or_else(|| SimError::Args(format!("unknown dtype `{dt}`")))?;
                let dims: Result<Vec<usize>, _> =
                    shape.split('x').map(|d| d.parse::<usize>()).collect();
                let dims = dims.map_err(|_| SimError::Args(format!("bad shape `{shape}`")))?;
                let reg = parse_reg(r)?;
                kargs = kargs.output(reg, NdArray::zeros(dt, &dims));
                outs.push((reg, file.to_string()));
            }
            "--set" => {
                let v = val()?;
                let (r, x) = v
                    .split_once('=')
                    .ok_or_else(|| SimError::Args(format!("--set {v}: want rN=VALUE")))?;
                let value = if let Some(f) = x.strip_prefix("f32:") {
                    f.parse::<f32>()
                        .map_err(|_| SimError::Args(format!("bad f32 `{f}`")))?
                        .to_bits() as u64
                } else {
                    x.parse::<i64>()
                        .map_err(|_| SimError::Args(format!("bad integer `{x}`")))?
                        as u64
                };
                kargs = kargs.scalar(parse_reg(r)?, value);
            }
            "--mode" => {
                mode = match val()?.as_str() {
                    "functional" => Mode::Functional,
                    "cycle" => Mode::Cycle,
                    "timing" => Mode::TimingOnly,
                    m => return Err(SimError::Args(format!("unknown mode `{m}`"))),
                }
            }
            "--target" => target = Some(val()?),
            s if s.starts_with("--") => {
                return Err(SimError::Args(format!("unknown option `{s}`\n{USAGE}")))
            }
            s => {
                if kernel.replace(s.to_string()).is_some() {
                    return Err(SimError::Args("more than one kernel file given".into()));
                }
            }
        }
    }
    let kernel = kernel.ok_or_else(|| SimError::Args(format!("no kernel file\n{USAGE}")))?;
    let target = match target {
        Some(p) => TargetConfig::from_path(Path::new(&p))?,
        None => TargetConfig::default_target()?,
    };
    let prog = load_program(&kernel)?;
    let t0 = std::time::Instant::now();
    let out = run_program(&prog, &target, &kargs, mode)?;
    let secs = t0.elapsed().as_secs_f64();
    for (reg, file) in &outs {
        let arr = out
            .output(*reg)
            .ok_or_else(|| SimError::Args(format!("no output in r{reg}")))?;
        io(std::fs::write(file, write_npy(arr)?), file)?;
        println!("wrote r{reg} -> {file} ({:?} {})", arr.shape, arr.dtype);
    }
    println!(
        "{kernel}: {} instructions, simulated in {secs:.3} s",
        prog.len()
    );
    if let Some(rep) = &out.report {
        println!("{rep}");
    }
    Ok(())
}
