//! Ahead-of-time static libraries (`tessera compile --emit static-lib`) and running them: the
//! pipeline to [`tessera_llvm::aot::StaticLib`], writing the `.a`/`.o` and header, and
//! [`run_static`], which links a library with the C driver (`examples/c/aot_driver.c`) by the
//! ISA's C compiler and runs it natively or under qemu-user. The conformance runner uses it
//! for the cross targets (`llvm-aarch64`, `llvm-riscv64`), whose code cannot run in this
//! process.

use crate::pipeline::{import, optimize, CompileOptions};
use crate::{targets, DriverError};
use std::path::{Path, PathBuf};
use std::process::Command;
use tessera_ir::Tensor;
pub use tessera_llvm::aot::StaticLib;
pub use tessera_llvm::Isa;

/// The generic C driver, built against each library by [`run_static`].
pub const DRIVER_C: &str = include_str!("../../../examples/c/aot_driver.c");

/// Imports, optimizes, lowers and compiles `model` into a static library for `opts.target`
/// (an LLVM CPU target) whose symbols start with `prefix`.
pub fn compile_static_lib(
    model: &Path,
    opts: &CompileOptions,
    prefix: &str,
) -> Result<StaticLib, DriverError> {
    let cpu = targets::llvm_cpu(&opts.target)?;
    let (graph, _) = optimize(&import(model, opts)?, opts)?;
    let program = tessera_lower::lower(&graph, tessera_target::Target::desc(&cpu))?;
    for k in &program.kernels {
        tessera_kir::verify::verify(k).map_err(|e| {
            DriverError::Internal(format!("lowering produced an invalid kernel: {e}"))
        })?;
    }
    Ok(tessera_llvm::aot::build(
        &cpu,
        &program.kernels,
        &program.plan,
        prefix,
        &model.display().to_string(),
    )?)
}

/// The library name `-o PATH` implies: its file stem as a C identifier (`model.a` → `model`).
pub fn prefix_for(out: &Path) -> String {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    tessera_llvm::aot::c_identifier(stem.strip_prefix("lib").unwrap_or(&stem))
}

/// Writes `lib` to `out` (an ELF object when it ends in `.o`, otherwise an `ar` archive) and
/// its header next to it (`out` with extension `.h`); returns the header's path.
pub fn write_static_lib(lib: &StaticLib, out: &Path) -> Result<PathBuf, DriverError> {
    let bytes = if out.extension().is_some_and(|e| e == "o") {
        lib.object.clone()
    } else {
        let member = format!("{}.o", &lib.prefix[..lib.prefix.len().min(13)]);
        tessera_llvm::aot::archive(&lib.object, &member, &lib.symbols)
    };
    crate::write_atomic(out, &bytes)?;
    let header = out.with_extension("h");
    crate::write_atomic(&header, lib.header.as_bytes())?;
    Ok(header)
}

/// How to build and run a program for `isa` here: the C compiler and the command prefix that
/// runs its binaries (empty when they run natively).
pub fn toolchain(isa: Isa, riscv_vlen: u32) -> (String, Vec<String>) {
    let native = std::env::consts::ARCH == isa.arch();
    let cc = if native {
        "cc".to_string()
    } else {
        format!("{}-linux-gnu-gcc", isa.arch())
    };
    let runner = if native {
        Vec::new()
    } else {
        match isa {
            Isa::Riscv64 => vec![
                "qemu-riscv64".into(),
                "-cpu".into(),
                format!("rv64,v=true,vlen={riscv_vlen}"),
            ],
            other => vec![format!("qemu-{}", other.arch())],
        }
    };
    (cc, runner)
}

/// The RISC-V vector length the conformance runner's qemu uses: `TESSERA_RISCV_VLEN` (128 by
/// default; 256 is the other tested one).
pub fn riscv_vlen() -> u32 {
    std::env::var("TESSERA_RISCV_VLEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

/// Whether the C compiler and runner for `isa` are installed (`scripts/setup-system.sh`
/// installs them); `Err` names what is missing.
pub fn tools_present(isa: Isa) -> Result<(), String> {
    let (cc, runner) = toolchain(isa, 128);
    let mut missing = Vec::new();
    for tool in std::iter::once(&cc).chain(runner.first()) {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(tool.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{} not installed", missing.join(" and ")))
    }
}

fn io_err(path: &Path, e: std::io::Error) -> DriverError {
    DriverError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Links `lib` (whose prefix must be `model`) with the C driver for `isa`, runs it on
/// `inputs` in a fresh folder under `dir`, and returns the outputs with the library's
/// dtypes and shapes. A missing tool, a failed link or a failed run (the driver's message,
/// e.g. the status `P_run` returned) is a `DriverError::Tool`.
pub fn run_static(
    lib: &StaticLib,
    isa: Isa,
    riscv_vlen: u32,
    inputs: &[Tensor],
    dir: &Path,
) -> Result<Vec<Tensor>, DriverError> {
    if lib.prefix != "model" {
        return Err(DriverError::Internal(format!(
            "run_static needs a library named `model`, not `{}`",
            lib.prefix
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, DriverError> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(|e| io_err(&p, e))?;
        Ok(p)
    };
    let a = write(
        "model.a",
        &tessera_llvm::aot::archive(&lib.object, "model.o", &lib.symbols),
    )?;
    write("model.h", lib.header.as_bytes())?;
    let c = write("aot_driver.c", DRIVER_C.as_bytes())?;
    for (k, t) in inputs.iter().enumerate() {
        write(&format!("input_{k}.bin"), &t.bytes)?;
    }
    let (cc, runner) = toolchain(isa, riscv_vlen);
    let exe = dir.join("aot_driver");
    let out = Command::new(&cc)
        .args(["-O1", "-static", "-I"])
        .arg(dir)
        .arg(&c)
        .arg(&a)
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .map_err(|e| DriverError::Tool(format!("cannot start `{cc}`: {e}")))?;
    if !out.status.success() {
        return Err(DriverError::Tool(format!(
            "`{cc}` could not link the library with the driver: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut cmd = match runner.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let run = cmd
        .arg(dir)
        .arg(dir)
        .output()
        .map_err(|e| DriverError::Tool(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    if !run.status.success() {
        return Err(DriverError::Tool(format!(
            "the static library's run failed ({}): {}",
            run.status,
            String::from_utf8_lossy(&run.stderr).trim()
        )));
    }
    let mut outs = Vec::with_capacity(lib.outputs.len());
    for (k, io) in lib.outputs.iter().enumerate() {
        let p = dir.join(format!("output_{k}.bin"));
        let bytes = std::fs::read(&p).map_err(|e| io_err(&p, e))?;
        outs.push(Tensor::new(io.dtype, io.dims.clone(), bytes));
    }
    Ok(outs)
}
