//! `tessera-llvm`: the LLVM CPU targets (cargo feature `llvm` of the driver). Kernel IR is
//! brought to the backend subset by the shared passes, translated to LLVM IR text
//! ([`codegen`]), optimised at -O3 and compiled to an ELF object by LLVM 22 (through inkwell),
//! and [`link`]ed into a flat, position-independent image in the host blob format. The
//! runtime side is the host target's: `tessera_host::HostDevice::for_target` loads and runs
//! these blobs, so there is one CPU runtime for every CPU code generator.
//!
//! Start at [`LlvmCpu::native`]; [`cpu`] says which x86 features a level enables and how they
//! are written in the fingerprint. [`LlvmCpu::for_isa`] makes the cross targets
//! (`llvm-aarch64` with NEON, `llvm-riscv64` with RVV 1.0), whose code cannot run in this
//! process: they compile only ahead of time, into a static library ([`aot`]).
//!
//! ```
//! use tessera_host::HostDevice;
//! use tessera_ir::DType;
//! use tessera_kir::{Access, KernelBuilder};
//! use tessera_llvm::LlvmCpu;
//! use tessera_runtime::{Device, KernelArg};
//! use tessera_target::Target;
//!
//! // y[i] = x[i] + x[i] over a grid of 4 instances.
//! let mut b = KernelBuilder::new("double");
//! let x = b.param("x", DType::F32, 4, Access::Read);
//! let y = b.param("y", DType::F32, 4, Access::Write);
//! b.set_grid(&[4]);
//! let i = b.program_id(0);
//! let v = b.load(x, i, 1);
//! let s = b.add(v, v);
//! b.store(y, i, s);
//! let kernel = b.finish();
//!
//! let target = LlvmCpu::native().unwrap();
//! let blob = target.compile(&kernel).unwrap();
//! let device = HostDevice::new().for_target(tessera_llvm::X86_64);
//! device.check_fingerprint(&target.fingerprint()).unwrap();
//! let loaded = device.load(&blob.name, &blob.code).unwrap();
//!
//! let mut xs = [1.0f32, 2.0, 3.0, 4.0];
//! let mut ys = [0.0f32; 4];
//! // SAFETY: both arrays outlive the launch and do not overlap.
//! let args = unsafe {
//!     [KernelArg::new(xs.as_mut_ptr().cast(), 16), KernelArg::new(ys.as_mut_ptr().cast(), 16)]
//! };
//! loaded.launch(&args).unwrap();
//! assert_eq!(ys, [2.0, 4.0, 6.0, 8.0]);
//! ```

pub mod aot;
pub mod codegen;
pub mod cpu;
pub mod link;

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlTarget, TargetMachine,
    TargetMachineOptions, TargetTriple,
};
use inkwell::OptimizationLevel;
use tessera_host::blob::BlobHeader;
use tessera_kir::{Kernel, KirError};
use tessera_target::{KernelBlob, Target, TargetDesc, TargetError};

/// The x86_64 target's name, as artifacts and `lookup()` write it.
pub const X86_64: &str = tessera_host::LLVM_X86_64;

/// The AArch64 target's name.
pub const AARCH64: &str = "llvm-aarch64";

/// The RISC-V target's name.
pub const RISCV64: &str = "llvm-riscv64";

/// The description of `llvm-x86_64`, embedded so the crate needs no files at run time.
pub const X86_64_TOML: &str = include_str!("../../llvm-x86_64/target.toml");

/// The description of `llvm-aarch64`.
pub const AARCH64_TOML: &str = include_str!("../../llvm-aarch64/target.toml");

/// The description of `llvm-riscv64`.
pub const RISCV64_TOML: &str = include_str!("../../llvm-riscv64/target.toml");

/// The instruction set an [`LlvmCpu`] generates code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86_64, features from the CPU level (`--cpu`).
    X86_64,
    /// AArch64 (ARMv8-A) with NEON (Advanced SIMD), the baseline of every 64-bit Arm Linux.
    Aarch64,
    /// RV64GC with the V extension 1.0 (RVV), VLEN 128 bits or more, lp64d ABI.
    Riscv64,
}

impl Isa {
    /// The ISA of a target name (`llvm-aarch64`), if it is an LLVM CPU target.
    pub fn of_target(name: &str) -> Option<Isa> {
        match name {
            X86_64 => Some(Isa::X86_64),
            AARCH64 => Some(Isa::Aarch64),
            RISCV64 => Some(Isa::Riscv64),
            _ => None,
        }
    }

    /// The target's name.
    pub fn target_name(self) -> &'static str {
        match self {
            Isa::X86_64 => X86_64,
            Isa::Aarch64 => AARCH64,
            Isa::Riscv64 => RISCV64,
        }
    }

    /// The ISA as fingerprints and `uname -m` write it.
    pub fn arch(self) -> &'static str {
        match self {
            Isa::X86_64 => "x86_64",
            Isa::Aarch64 => "aarch64",
            Isa::Riscv64 => "riscv64",
        }
    }

    /// The LLVM target triple (Linux, glibc).
    pub fn triple(self) -> &'static str {
        match self {
            Isa::X86_64 => "x86_64-unknown-linux-gnu",
            Isa::Aarch64 => "aarch64-unknown-linux-gnu",
            Isa::Riscv64 => "riscv64-unknown-linux-gnu",
        }
    }

    /// Whether code of this ISA runs in this process (loaded as host blobs).
    pub fn runs_here(self) -> bool {
        self == Isa::X86_64 && cfg!(target_arch = "x86_64")
    }

    fn toml(self) -> (&'static str, &'static str) {
        match self {
            Isa::X86_64 => (X86_64_TOML, "targets/llvm-x86_64/target.toml"),
            Isa::Aarch64 => (AARCH64_TOML, "targets/llvm-aarch64/target.toml"),
            Isa::Riscv64 => (RISCV64_TOML, "targets/llvm-riscv64/target.toml"),
        }
    }
}

/// The compiler side of the LLVM CPU targets: an LLVM target machine configuration (a fresh
/// LLVM context and machine are made per kernel, so the target is `Send + Sync` and kernels
/// can compile in parallel).
pub struct LlvmCpu {
    isa: Isa,
    desc: TargetDesc,
    level: cpu::Level,
    fingerprint: String,
}

impl LlvmCpu {
    /// Code for this machine's CPU, using every extension of [`cpu::LLVM_FEATURES`] it has.
    pub fn native() -> Result<LlvmCpu, TargetError> {
        LlvmCpu::with_cpu(None)
    }

    /// Code for the x86-64 level `cpu` names (`x86-64-v2`, `x86-64-v3`, `x86-64-v4`, or
    /// `native`; `None` is native): the artifact then runs on any CPU of that level.
    pub fn with_cpu(cpu: Option<&str>) -> Result<LlvmCpu, TargetError> {
        let level = cpu::Level::parse(cpu.unwrap_or("native")).map_err(|message| {
            TargetError::Unsupported {
                target: X86_64.to_string(),
                kernel: "(any)".to_string(),
                message,
            }
        })?;
        let mut desc = TargetDesc::parse(X86_64_TOML, "targets/llvm-x86_64/target.toml")?;
        desc.vector_bytes = desc.vector_bytes.min(level.vector_bytes());
        // The register block is the desc's for its register count; a level with fewer (AVX2's
        // 16) keeps the rows and scales the vectors down, before lowering sizes tiles from it.
        if let Some(c) = desc.cpu.as_mut() {
            let regs = level.vector_registers();
            if regs < c.vector_registers {
                c.register_block[1] = (c.register_block[1] * regs / c.vector_registers).max(1);
                c.vector_registers = regs;
            }
        }
        let fingerprint = level.fingerprint();
        Ok(LlvmCpu {
            isa: Isa::X86_64,
            desc,
            level,
            fingerprint,
        })
    }

    /// The target for `isa` at its baseline: for x86_64 the same as [`LlvmCpu::with_cpu`]
    /// (`cpu` a level), for AArch64 ARMv8-A with NEON, for RISC-V RV64GCV (`cpu` must be
    /// `None` or `generic` for these two).
    pub fn for_isa(isa: Isa, cpu: Option<&str>) -> Result<LlvmCpu, TargetError> {
        if isa == Isa::X86_64 {
            return LlvmCpu::with_cpu(cpu);
        }
        if let Some(c) = cpu.filter(|c| *c != "generic") {
            return Err(TargetError::Unsupported {
                target: isa.target_name().to_string(),
                kernel: "(any)".to_string(),
                message: format!("unknown CPU `{c}` (only `generic`: the ISA's baseline with its vector extension)"),
            });
        }
        let (toml, path) = isa.toml();
        let desc = TargetDesc::parse(toml, path)?;
        let fingerprint = format!("{}:{}", isa.arch(), isa.llvm_features().replace('+', ""));
        Ok(LlvmCpu {
            isa,
            desc,
            level: cpu::Level::Portable(2),
            fingerprint,
        })
    }

    /// The instruction set this target generates.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn err_unsupported(&self, kernel: &Kernel, message: String) -> TargetError {
        TargetError::Unsupported {
            target: self.isa.target_name().to_string(),
            kernel: kernel.name.clone(),
            message,
        }
    }

    fn err_codegen(&self, kernel: &Kernel, message: String) -> TargetError {
        TargetError::Codegen {
            target: self.isa.target_name().to_string(),
            kernel: kernel.name.clone(),
            message,
        }
    }

    /// Whether the code may fuse multiply-adds (x86: the level has FMA; AArch64 and RV64GC
    /// always do).
    fn has_fma(&self) -> bool {
        match self.isa {
            Isa::X86_64 => self.level.has("fma"),
            Isa::Aarch64 | Isa::Riscv64 => true,
        }
    }

    /// Vector registers the register allocator has (AArch64 and RVV: 32).
    fn vector_registers(&self) -> u32 {
        match self.isa {
            Isa::X86_64 => self.level.vector_registers(),
            Isa::Aarch64 | Isa::Riscv64 => 32,
        }
    }

    /// Brings a kernel into the backend subset. Register blocking is this backend's choice:
    /// tiles become vectors of the desc's width, and `tile.mma` a block of
    /// `block_rows × block_vectors` f32 vector accumulators sized for the register file of
    /// the level, leaving room for the B vectors and the broadcast A element: 6 × 4 = 24 of
    /// AVX-512's 32 registers, 6 × 2 = 12 of AVX2's 16 (the classic 6 × 16 f32 block).
    fn prepare(&self, kernel: &Kernel) -> Result<Kernel, TargetError> {
        tessera_kir::verify(kernel)
            .map_err(|e| self.err_codegen(kernel, format!("the kernel fails the verifier: {e}")))?;
        let mut k = kernel.clone();
        // The desc's `[cpu] register_block` (scaled to the level in `with_cpu`); the cross
        // targets, without one, take 6 × 4 of their 32 registers.
        let (block_rows, block_vectors) =
            self.desc
                .register_block()
                .unwrap_or(if self.vector_registers() >= 32 {
                    (6, 4)
                } else {
                    (6, 2)
                });
        let opts = tessera_kir::passes::ScalarizeOptions {
            vector_bytes: self.desc.vector_bytes,
            blocked_f32_mma: true,
            blocked_i32_mma: true,
            block_rows,
            block_vectors,
            // The dot-product form keeps the register block's shape; the blocks over paneled B
            // keep panels outside (the desc's L1 is not given here).
            dot_block: (0, 0),
            l1_bytes: 0,
            // LLVM picks the FMA form that accumulates in place: one k step a trip.
            k_unroll: 1,
            // One rounding per step where the CPU fuses (the fingerprint records `fma`).
            fma: self.has_fma(),
            in_place_operands: true,
            // `dot` for the integer products of `tile.dot`: the group size the desc gives
            // (`LlvmCpu::new` sets it from the CPU level; lowering packed B for it).
            int_dot: self.desc.int_dot,
            // Row sums in vector partials: reassociated within the f32 tolerance target.toml
            // declares (as the blocked product's rounding is).
            lane_reductions: true,
        };
        tessera_kir::passes::scalarize_tiles(&mut k, &opts)
            .and_then(|()| tessera_kir::passes::to_backend_subset(&mut k))
            .map_err(|e| match e {
                KirError::Unsupported { .. } => self.err_unsupported(kernel, e.to_string()),
                other => self.err_codegen(kernel, format!("`to_backend_subset`: {other}")),
            })?;
        Ok(k)
    }

    fn machine(&self) -> Result<TargetMachine, String> {
        let init = InitializationConfig::default();
        match self.isa {
            Isa::X86_64 => LlTarget::initialize_x86(&init),
            Isa::Aarch64 => LlTarget::initialize_aarch64(&init),
            Isa::Riscv64 => LlTarget::initialize_riscv(&init),
        }
        let triple = TargetTriple::create(self.isa.triple());
        let t = LlTarget::from_triple(&triple).map_err(|e| e.to_string())?;
        let mut opts = TargetMachineOptions::new()
            .set_cpu(self.isa.llvm_cpu())
            .set_features(&self.llvm_features())
            .set_level(OptimizationLevel::Aggressive)
            .set_reloc_mode(RelocMode::PIC)
            .set_code_model(CodeModel::Small);
        if self.isa == Isa::Riscv64 {
            // Hard-float ABI: what Debian's riscv64 gcc and glibc use.
            opts = opts.set_abi("lp64d");
        }
        t.create_target_machine_from_options(&triple, opts)
            .ok_or_else(|| format!("LLVM could not create a {} target machine", self.isa.arch()))
    }

    fn llvm_features(&self) -> String {
        match self.isa {
            Isa::X86_64 => self.level.llvm_features(),
            other => other.llvm_features().to_string(),
        }
    }

    /// The kernel in the backend subset, and translated: the module (entry point `entry`; with
    /// `helpers`, the module brings its own `memset`/`memcpy`/`memmove`/`fmod`, as blob code
    /// must) and its finished text.
    fn translate(
        &self,
        kernel: &Kernel,
        tm: &TargetMachine,
        entry: &str,
        helpers: bool,
    ) -> Result<(Kernel, codegen::Module, String), TargetError> {
        let k = self.prepare(kernel)?;
        let layout = tm.get_target_data().get_data_layout();
        let dl = layout.as_str().to_string_lossy().into_owned();
        let m = codegen::module_as(&k, self.isa.triple(), &dl, self.has_fma(), entry, helpers)
            .map_err(|e| self.cg_error(kernel, e))?;
        let mut text = codegen::finish_as(&m, &self.cpu_attrs(), helpers);
        if self.isa == Isa::Riscv64 {
            text.push_str(RISCV_ABI_FLAG);
        }
        Ok((k, m, text))
    }

    /// The LLVM IR text the code generator makes of `kernel` (before optimisation).
    pub fn llvm_ir(&self, kernel: &Kernel) -> Result<String, TargetError> {
        let tm = self.machine().map_err(|e| self.err_codegen(kernel, e))?;
        Ok(self
            .translate(kernel, &tm, codegen::ENTRY, self.isa.runs_here())?
            .2)
    }

    /// The optimised assembly LLVM makes of `kernel`, as text: for reading what the vector
    /// code looks like (`vfmadd231ps` on zmm registers in a matrix product).
    pub fn assembly(&self, kernel: &Kernel) -> Result<String, TargetError> {
        let text = self.llvm_ir(kernel)?;
        let fail = |m: String| self.err_codegen(kernel, m);
        let tm = self.machine().map_err(fail)?;
        let ctx = Context::create();
        let module = self.optimised(&ctx, &tm, kernel, &text)?;
        let asm = tm
            .write_to_memory_buffer(&module, FileType::Assembly)
            .map_err(|e| fail(format!("LLVM's code generator: {e}")))?;
        Ok(String::from_utf8_lossy(asm.as_slice()).into_owned())
    }

    /// Parses, verifies and optimises `text` at -O3.
    fn optimised<'c>(
        &self,
        ctx: &'c Context,
        tm: &TargetMachine,
        kernel: &Kernel,
        text: &str,
    ) -> Result<inkwell::module::Module<'c>, TargetError> {
        let fail = |m: String| self.err_codegen(kernel, m);
        let buf = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), &kernel.name);
        let module = ctx
            .create_module_from_ir(buf)
            .map_err(|e| fail(format!("LLVM rejected the generated IR: {e}")))?;
        module
            .verify()
            .map_err(|e| fail(format!("the generated IR fails LLVM's verifier: {e}")))?;
        module
            .run_passes("default<O3>", tm, PassBuilderOptions::create())
            .map_err(|e| fail(format!("LLVM's optimiser: {e}")))?;
        Ok(module)
    }

    fn cpu_attrs(&self) -> String {
        let tune = match self.isa {
            Isa::X86_64 => self.level.tune_cpu(),
            other => other.llvm_cpu().to_string(),
        };
        // LLVM tunes AVX-512 CPUs to prefer 256-bit vectors and then legalises a kernel's
        // 512-bit vectors by splitting them in two ymm halves (twice the instructions, and the
        // register block no longer fits the register file). The kernels are written for the
        // desc's width, so the width is pinned to it.
        let width = match self.isa {
            Isa::X86_64 if self.level.vector_bytes() >= 64 => {
                " \"prefer-vector-width\"=\"512\" \"min-legal-vector-width\"=\"512\""
            }
            _ => "",
        };
        format!(
            "\"target-cpu\"=\"{}\" \"target-features\"=\"{}\" \"tune-cpu\"=\"{tune}\"{width}",
            self.isa.llvm_cpu(),
            self.llvm_features(),
        )
    }

    /// Optimised object code for `text`, linked into a flat image.
    fn object(
        &self,
        tm: &TargetMachine,
        kernel: &Kernel,
        text: &str,
    ) -> Result<Vec<u8>, TargetError> {
        let fail = |m: String| self.err_codegen(kernel, m);
        let ctx = Context::create();
        let module = self.optimised(&ctx, tm, kernel, text)?;
        let obj = tm
            .write_to_memory_buffer(&module, FileType::Object)
            .map_err(|e| fail(format!("LLVM's code generator: {e}")))?;
        link::link(obj.as_slice(), codegen::ENTRY)
            .map_err(|e| fail(format!("linking the kernel's object: {e}")))
    }
}

impl LlvmCpu {
    /// A code generator error as the `Target` trait reports it.
    fn cg_error(&self, kernel: &Kernel, e: codegen::CgError) -> TargetError {
        match e {
            codegen::CgError::Unsupported(m) => self.err_unsupported(kernel, m),
            codegen::CgError::Internal(m) => self.err_codegen(kernel, m),
        }
    }
}

/// The module flag that makes LLVM write the lp64d (hard double-float) ABI into RISC-V
/// objects, so they link with Debian's riscv64 gcc and glibc.
const RISCV_ABI_FLAG: &str =
    "!llvm.module.flags = !{!9000}\n!9000 = !{i32 1, !\"target-abi\", !\"lp64d\"}\n";

impl Isa {
    /// The CPU LLVM compiles for: the ISA's baseline.
    fn llvm_cpu(self) -> &'static str {
        match self {
            Isa::X86_64 => "x86-64",
            Isa::Aarch64 => "generic",
            Isa::Riscv64 => "generic-rv64",
        }
    }

    /// The vector extension (and the rest of the baseline) as LLVM features; x86_64's come
    /// from the CPU level instead.
    fn llvm_features(self) -> &'static str {
        match self {
            Isa::X86_64 => "",
            Isa::Aarch64 => "+neon,+fp-armv8",
            Isa::Riscv64 => "+m,+a,+f,+d,+c,+v",
        }
    }
}

impl Target for LlvmCpu {
    fn disassemble(&self, kernel: &Kernel) -> Result<Option<String>, TargetError> {
        self.assembly(kernel).map(Some)
    }

    fn desc(&self) -> &TargetDesc {
        &self.desc
    }

    fn compile(&self, kernel: &Kernel) -> Result<KernelBlob, TargetError> {
        if self.isa != Isa::X86_64 {
            return Err(self.err_unsupported(
                kernel,
                format!(
                    "{} code cannot run on this host, so there is no .tsa artifact for it; compile with `--emit static-lib`",
                    self.isa.target_name()
                ),
            ));
        }
        let tm = self.machine().map_err(|e| self.err_codegen(kernel, e))?;
        let (k, m, text) = self.translate(kernel, &tm, codegen::ENTRY, true)?;
        let code = self.object(&tm, kernel, &text)?;
        let header = BlobHeader {
            grid: m.grid,
            scratch_bytes: m.scratch_bytes,
            work: tessera_host::codegen::estimate_work(&k),
            param_bytes: m.param_bytes,
        };
        Ok(KernelBlob {
            name: kernel.name.clone(),
            code: header.encode(&code),
        })
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}
