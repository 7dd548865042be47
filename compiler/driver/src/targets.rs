//! The target registry: every target Tessera knows, by name, with the compiler-side
//! [`Target`] and the runtime-side [`Device`] for each. Feature-gated targets are listed even
//! when their feature is off, so "feature disabled" and "unknown target" read differently.

use std::sync::Arc;
use tessera_interp::InterpDevice;
use tessera_kir::Kernel;
use tessera_runtime::Device;
use tessera_target::{KernelBlob, Target, TargetDesc, TargetError};

/// Why a target name could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown target `{0}`; `tessera targets` lists them")]
    Unknown(String),
    #[error("target `{name}` needs cargo feature `{feature}`, which this build lacks")]
    FeatureDisabled { name: String, feature: String },
    #[error("target `{name}` could not start: {message}")]
    Init { name: String, message: String },
    /// Known and planned, but without a code generator yet.
    #[error("target `{name}` has no code generator yet: {message}")]
    NotYet { name: String, message: String },
    /// A cross target: its code is for another ISA and cannot run in this process.
    #[error("{name} code cannot run on this {host} host; use `tessera compile --target {name} --emit static-lib` and run the library on {arch} (or under qemu-{arch})")]
    ForeignIsa {
        name: String,
        host: String,
        arch: String,
    },
}

/// One row of `tessera targets`.
pub struct TargetInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// The cargo feature that enables it, or `None` if always built.
    pub feature: Option<&'static str>,
    pub available: bool,
}

/// Every target, available or not.
pub fn all() -> Vec<TargetInfo> {
    vec![
        TargetInfo {
            name: "host",
            description: "this CPU, via Cranelift (default)",
            feature: None,
            available: true,
        },
        TargetInfo {
            name: "interp",
            description: "the reference kernel-IR interpreter",
            feature: None,
            available: true,
        },
        TargetInfo {
            name: "npu-sim",
            description: "simulated Da Vinci-style NPU: npu-sim ISA, run by the simulator",
            feature: None,
            available: true,
        },
        TargetInfo {
            name: "npu-sim-lite",
            description: "a smaller npu-sim chip (less L0/L1/UB, other Cube tiles, no bf16)",
            feature: None,
            available: true,
        },
        TargetInfo {
            name: "llvm-x86_64",
            description: "LLVM 22 CPU code, AVX2/AVX-512 (`--cpu x86-64-v3` for a portable level)",
            feature: Some("llvm"),
            available: cfg!(feature = "llvm"),
        },
        TargetInfo {
            name: "llvm-aarch64",
            description: "LLVM 22 CPU code, NEON (ahead of time: `--emit static-lib`)",
            feature: Some("llvm"),
            available: cfg!(feature = "llvm"),
        },
        TargetInfo {
            name: "llvm-riscv64",
            description: "LLVM 22 CPU code, RVV 1.0 (ahead of time: `--emit static-lib`)",
            feature: Some("llvm"),
            available: cfg!(feature = "llvm"),
        },
        TargetInfo {
            name: "nvptx",
            description: "PTX for sm_80/sm_90 via LLVM",
            // With the feature on, these are planned targets the LLVM backend lacks yet.
            feature: (!cfg!(feature = "llvm")).then_some("llvm"),
            available: false,
        },
        TargetInfo {
            name: "mlir",
            description: "export to MLIR linalg/tensor/arith",
            feature: Some("mlir"),
            available: false,
        },
    ]
}

/// Splits `TARGET@CPU` (what `--cpu` makes of a target name) into the target and the CPU.
pub fn split_cpu(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((t, cpu)) => (t, Some(cpu)),
        None => (name, None),
    }
}

/// The compiler-side target for `name`, which may name a CPU as `TARGET@CPU` for the targets
/// that take one (`llvm-x86_64@x86-64-v3`).
pub fn lookup(name: &str) -> Result<Box<dyn Target>, LookupError> {
    let (name, cpu) = split_cpu(name);
    if let Some(cpu) = cpu {
        return lookup_cpu(name, cpu);
    }
    match name {
        "host" => tessera_host::Host::native()
            .map(|h| Box::new(h) as Box<dyn Target>)
            .map_err(|e| LookupError::Init {
                name: name.into(),
                message: e.to_string(),
            }),
        "interp" => Ok(Box::new(Interp::new())),
        #[cfg(feature = "llvm")]
        tessera_llvm::X86_64 | tessera_llvm::AARCH64 | tessera_llvm::RISCV64 => {
            llvm_cpu(name).map(|t| Box::new(t) as Box<dyn Target>)
        }
        _ => match npu_chip(name) {
            Some((toml, path)) => tessera_npu_sim::NpuSim::from_toml(toml, path)
                .map(|t| Box::new(t) as Box<dyn Target>)
                .map_err(|e| LookupError::Init {
                    name: name.into(),
                    message: e.to_string(),
                }),
            None => Err(unavailable(name)),
        },
    }
}

/// A target for one CPU level; only the LLVM CPU targets take one.
fn lookup_cpu(name: &str, cpu: &str) -> Result<Box<dyn Target>, LookupError> {
    match name {
        #[cfg(feature = "llvm")]
        tessera_llvm::X86_64 | tessera_llvm::AARCH64 | tessera_llvm::RISCV64 => {
            llvm_cpu(&format!("{name}@{cpu}")).map(|t| Box::new(t) as Box<dyn Target>)
        }
        _ => match lookup(name) {
            Ok(_) => Err(LookupError::Init {
                name: name.into(),
                message: format!("it takes no CPU choice (`--cpu {cpu}`)"),
            }),
            Err(e) => Err(e),
        },
    }
}

/// The LLVM CPU target `name` (`TARGET` or `TARGET@CPU`) as its concrete type, for what only
/// it can do (the static library of `--emit static-lib`).
#[cfg(feature = "llvm")]
pub fn llvm_cpu(name: &str) -> Result<tessera_llvm::LlvmCpu, LookupError> {
    let (target, cpu) = split_cpu(name);
    let Some(isa) = tessera_llvm::Isa::of_target(target) else {
        return match lookup(target) {
            Ok(_) => Err(LookupError::Init {
                name: target.into(),
                message: "`--emit static-lib` needs an LLVM CPU target (llvm-x86_64, llvm-aarch64, llvm-riscv64)".into(),
            }),
            Err(e) => Err(e),
        };
    };
    tessera_llvm::LlvmCpu::for_isa(isa, cpu).map_err(|e| LookupError::Init {
        name: target.into(),
        message: e.to_string(),
    })
}

/// The npu-sim family: one code generator and one simulator, one description file per chip.
/// A new chip of the family is one row here and one in [`all`] (docs/adding-a-target.md).
const NPU_CHIPS: &[(&str, &str, &str)] = &[
    (
        "npu-sim",
        include_str!("../../../targets/npu-sim/target.toml"),
        "targets/npu-sim/target.toml",
    ),
    (
        "npu-sim-lite",
        include_str!("../../../targets/npu-sim-lite/target.toml"),
        "targets/npu-sim-lite/target.toml",
    ),
];

/// The description (text, path) of an npu-sim-family chip.
fn npu_chip(name: &str) -> Option<(&'static str, &'static str)> {
    NPU_CHIPS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, p)| (*t, *p))
}

/// The simulator device of an npu-sim-family chip, in `mode` (cycle mode records a report per
/// launch). `None` when `name` is not such a chip.
pub fn npu_sim_device(
    name: &str,
    mode: tessera_npu_sim::Mode,
) -> Result<Option<tessera_npu_sim::NpuSimDevice>, LookupError> {
    let Some((toml, path)) = npu_chip(name) else {
        return Ok(None);
    };
    let cfg = tessera_npu_sim::TargetConfig::from_toml(toml).map_err(|e| LookupError::Init {
        name: name.into(),
        message: format!("{path}: {e}"),
    })?;
    let mut dev = tessera_npu_sim::NpuSimDevice::new(cfg).with_mode(mode);
    if let Some(steps) = npu_sim_max_steps().map_err(|message| LookupError::Init {
        name: name.into(),
        message,
    })? {
        dev = dev.with_max_steps(steps);
    }
    Ok(Some(dev))
}

/// The environment variable that raises (or lowers) the simulator's per-launch step limit.
pub const NPU_SIM_MAX_STEPS_VAR: &str = "TESSERA_NPU_SIM_MAX_STEPS";

/// The step limit `TESSERA_NPU_SIM_MAX_STEPS` asks for (a positive integer; `_` separators
/// allowed), `None` when it is unset, and an error naming the variable when it is malformed.
fn npu_sim_max_steps() -> Result<Option<u64>, String> {
    std::env::var_os(NPU_SIM_MAX_STEPS_VAR)
        .map(|v| parse_max_steps(&v.to_string_lossy()))
        .transpose()
}

/// A step limit as `TESSERA_NPU_SIM_MAX_STEPS` writes it: a positive integer, `_` allowed.
fn parse_max_steps(v: &str) -> Result<u64, String> {
    match v.trim().replace('_', "").parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{NPU_SIM_MAX_STEPS_VAR}={v}: not a positive number of instructions"
        )),
    }
}

#[cfg(test)]
mod max_steps_tests {
    use super::parse_max_steps;

    #[test]
    fn the_step_limit_variable_takes_positive_integers_and_names_itself_otherwise() {
        assert_eq!(parse_max_steps("50_000_000_000"), Ok(50_000_000_000));
        assert_eq!(parse_max_steps(" 7 "), Ok(7));
        for bad in ["0", "-3", "1e12", "", "lots"] {
            let e = parse_max_steps(bad).unwrap_err();
            assert!(e.starts_with("TESSERA_NPU_SIM_MAX_STEPS="), "{e}");
            assert!(e.contains("not a positive number"), "{e}");
        }
    }
}

/// The runtime-side device for `name`.
pub fn device(name: &str) -> Result<Arc<dyn Device>, LookupError> {
    let (name, _cpu) = split_cpu(name);
    match name {
        "host" => Ok(Arc::new(tessera_host::HostDevice::new())),
        // One CPU runtime: LLVM code comes in host blobs.
        #[cfg(feature = "llvm")]
        tessera_llvm::X86_64 if tessera_llvm::Isa::X86_64.runs_here() => Ok(Arc::new(
            tessera_host::HostDevice::new().for_target(tessera_llvm::X86_64),
        )),
        #[cfg(feature = "llvm")]
        tessera_llvm::X86_64 | tessera_llvm::AARCH64 | tessera_llvm::RISCV64 => Err(foreign(name)),
        "interp" => Ok(Arc::new(InterpDevice)),
        _ => match npu_sim_device(name, tessera_npu_sim::Mode::Functional)? {
            Some(d) => Ok(Arc::new(d)),
            None => Err(unavailable(name)),
        },
    }
}

/// The refusal to run code of the LLVM cross target `name` in this process.
pub fn foreign(name: &str) -> LookupError {
    let arch = name.strip_prefix("llvm-").unwrap_or(name);
    LookupError::ForeignIsa {
        name: name.into(),
        host: std::env::consts::ARCH.into(),
        arch: arch.into(),
    }
}

/// Whether `name` (`TARGET[@CPU]`) is a target whose code runs only ahead of time, as a
/// static library (the conformance runner links it with the C driver and runs it, under
/// qemu-user on another ISA).
pub fn is_cross(name: &str) -> bool {
    matches!(split_cpu(name).0, "llvm-aarch64" | "llvm-riscv64")
}

fn unavailable(name: &str) -> LookupError {
    match all().into_iter().find(|t| t.name == name) {
        Some(TargetInfo {
            feature: Some(f), ..
        }) => LookupError::FeatureDisabled {
            name: name.into(),
            feature: f.into(),
        },
        Some(TargetInfo {
            feature: None,
            available: false,
            ..
        }) => LookupError::NotYet {
            name: name.into(),
            message: if name.starts_with("llvm-") || name == "nvptx" {
                "the LLVM backend generates CPU code only so far (`llvm-x86_64`, `llvm-aarch64`, `llvm-riscv64`)".into()
            } else {
                "the simulator and its ISA exist; `tessera npu-sim run KERNEL.asm` runs hand-written kernels".into()
            },
        },
        _ => LookupError::Unknown(name.into()),
    }
}

/// The `interp` target: its "code" is the kernel's text form, which the interp device parses.
pub struct Interp {
    desc: TargetDesc,
}

impl Interp {
    pub fn new() -> Interp {
        let desc = TargetDesc::parse(
            include_str!("../../../targets/interp/target.toml"),
            "targets/interp/target.toml",
        )
        .expect("the bundled interp target.toml parses (checked by a test)");
        Interp { desc }
    }
}

impl Default for Interp {
    fn default() -> Self {
        Interp::new()
    }
}

impl Target for Interp {
    fn desc(&self) -> &TargetDesc {
        &self.desc
    }

    fn compile(&self, kernel: &Kernel) -> Result<KernelBlob, TargetError> {
        Ok(KernelBlob {
            name: kernel.name.clone(),
            code: tessera_kir::text::print_kernel(kernel).into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_descriptions_parse_and_lookup_distinguishes_errors() {
        assert_eq!(lookup("interp").unwrap().desc().name, "interp");
        assert_eq!(lookup("host").unwrap().desc().name, "host");
        if cfg!(feature = "llvm") {
            assert!(matches!(lookup("nvptx"), Err(LookupError::NotYet { .. })));
            let t = lookup("llvm-x86_64@x86-64-v3").unwrap();
            assert_eq!(t.desc().name, "llvm-x86_64");
            assert_eq!(t.desc().vector_bytes, 32);
            assert_eq!(
                device("llvm-x86_64@x86-64-v3").unwrap().target(),
                "llvm-x86_64"
            );
        } else {
            assert!(matches!(
                lookup("nvptx"),
                Err(LookupError::FeatureDisabled { .. })
            ));
            assert!(matches!(
                lookup("llvm-x86_64"),
                Err(LookupError::FeatureDisabled { .. })
            ));
        }
        // Only the LLVM CPU targets take a CPU.
        assert_eq!(
            lookup("host@x86-64-v3").err().unwrap().to_string(),
            "target `host` could not start: it takes no CPU choice (`--cpu x86-64-v3`)"
        );
        assert!(matches!(lookup("tpu9000"), Err(LookupError::Unknown(_))));
        if cfg!(feature = "llvm") {
            for t in ["llvm-aarch64", "llvm-riscv64"] {
                assert_eq!(lookup(t).unwrap().desc().name, t);
                let e = device(t).err().unwrap();
                assert!(
                    e.to_string()
                        .starts_with(&format!("{t} code cannot run on this x86_64 host")),
                    "{e}"
                );
            }
            assert_eq!(lookup("llvm-aarch64").unwrap().desc().vector_bytes, 16);
        }
        assert_eq!(lookup("npu-sim").unwrap().desc().name, "npu-sim");
        assert_eq!(lookup("npu-sim-lite").unwrap().desc().name, "npu-sim-lite");
        assert_eq!(device("npu-sim-lite").unwrap().target(), "npu-sim-lite");
    }
}
