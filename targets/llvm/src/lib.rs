//! `tessera-llvm`: the LLVM CPU targets (cargo feature `llvm` of the driver). Kernel IR is
//! brought to the backend subset by the shared passes, translated to LLVM IR text
//! ([`codegen`]), optimised at -O3 and compiled to an ELF object by LLVM 22 (through inkwell),
//! and [`link`]ed into a flat, position-independent image in the host blob format. The
//! runtime side is the host target's: `tessera_host::HostDevice::for_target` loads and runs
//! these blobs, so there is one CPU runtime for every CPU code generator.
//!
//! Start at [`LlvmCpu::native`]; [`cpu`] says which x86 features a level enables and how they
//! are written in the fingerprint.
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

pub mod codegen;
pub mod cpu;
pub mod link;

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlTarget, TargetMachine,
    TargetTriple,
};
use inkwell::OptimizationLevel;
use tessera_host::blob::BlobHeader;
use tessera_kir::{Kernel, KirError};
use tessera_target::{KernelBlob, Target, TargetDesc, TargetError};

/// The x86_64 target's name, as artifacts and `lookup()` write it.
pub const X86_64: &str = tessera_host::LLVM_X86_64;

/// The description of `llvm-x86_64`, embedded so the crate needs no files at run time.
pub const X86_64_TOML: &str = include_str!("../../llvm-x86_64/target.toml");

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The compiler side of `llvm-x86_64`: an LLVM target machine configuration (a fresh LLVM
/// context and machine are made per kernel, so the target is `Send + Sync` and kernels can
/// compile in parallel).
pub struct LlvmCpu {
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
        let fingerprint = level.fingerprint();
        Ok(LlvmCpu {
            desc,
            level,
            fingerprint,
        })
    }

    fn err_unsupported(kernel: &Kernel, message: String) -> TargetError {
        TargetError::Unsupported {
            target: X86_64.to_string(),
            kernel: kernel.name.clone(),
            message,
        }
    }

    fn err_codegen(kernel: &Kernel, message: String) -> TargetError {
        TargetError::Codegen {
            target: X86_64.to_string(),
            kernel: kernel.name.clone(),
            message,
        }
    }

    /// Brings a kernel into the backend subset. Register blocking is this backend's choice:
    /// tiles become vectors of the desc's width, and `tile.mma` a block of
    /// `block_rows × block_vectors` f32 vector accumulators sized for the register file of
    /// the level, leaving room for the B vectors and the broadcast A element: 6 × 4 = 24 of
    /// AVX-512's 32 registers, 6 × 2 = 12 of AVX2's 16 (the classic 6 × 16 f32 block).
    fn prepare(&self, kernel: &Kernel) -> Result<Kernel, TargetError> {
        tessera_kir::verify(kernel).map_err(|e| {
            Self::err_codegen(kernel, format!("the kernel fails the verifier: {e}"))
        })?;
        let mut k = kernel.clone();
        let (block_rows, block_vectors) = if self.level.vector_registers() >= 32 {
            (6, 4)
        } else {
            (6, 2)
        };
        let opts = tessera_kir::passes::ScalarizeOptions {
            vector_bytes: self.desc.vector_bytes,
            blocked_f32_mma: true,
            block_rows,
            block_vectors,
            // One rounding per step where the CPU fuses (the fingerprint records `fma`).
            fma: self.level.has("fma"),
        };
        tessera_kir::passes::scalarize_tiles(&mut k, &opts)
            .and_then(|()| tessera_kir::passes::to_backend_subset(&mut k))
            .map_err(|e| match e {
                KirError::Unsupported { .. } => Self::err_unsupported(kernel, e.to_string()),
                other => Self::err_codegen(kernel, format!("`to_backend_subset`: {other}")),
            })?;
        Ok(k)
    }

    fn machine(&self) -> Result<TargetMachine, String> {
        LlTarget::initialize_x86(&InitializationConfig::default());
        let triple = TargetTriple::create(TRIPLE);
        let t = LlTarget::from_triple(&triple).map_err(|e| e.to_string())?;
        t.create_target_machine(
            &triple,
            "x86-64",
            &self.level.llvm_features(),
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Small,
        )
        .ok_or_else(|| "LLVM could not create an x86_64 target machine".to_string())
    }

    /// The LLVM IR text the code generator makes of `kernel` (before optimisation).
    pub fn llvm_ir(&self, kernel: &Kernel) -> Result<String, TargetError> {
        let k = self.prepare(kernel)?;
        let tm = self.machine().map_err(|e| Self::err_codegen(kernel, e))?;
        let layout = tm.get_target_data().get_data_layout();
        let dl = layout.as_str().to_string_lossy().into_owned();
        let m = codegen::module(&k, TRIPLE, &dl, self.level.has("fma"))
            .map_err(|e| cg_error(kernel, e))?;
        Ok(codegen::finish(&m, &self.cpu_attrs()))
    }

    /// The optimised assembly LLVM makes of `kernel`, as text: for reading what the vector
    /// code looks like (`vfmadd231ps` on zmm registers in a matrix product).
    pub fn assembly(&self, kernel: &Kernel) -> Result<String, TargetError> {
        let text = self.llvm_ir(kernel)?;
        let fail = |m: String| Self::err_codegen(kernel, m);
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
        let fail = |m: String| Self::err_codegen(kernel, m);
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
        format!(
            "\"target-cpu\"=\"x86-64\" \"target-features\"=\"{}\" \"tune-cpu\"=\"{}\"",
            self.level.llvm_features(),
            self.level.tune_cpu()
        )
    }

    /// Optimised object code for `text`, linked into a flat image.
    fn object(
        &self,
        tm: &TargetMachine,
        kernel: &Kernel,
        text: &str,
    ) -> Result<Vec<u8>, TargetError> {
        let fail = |m: String| Self::err_codegen(kernel, m);
        let ctx = Context::create();
        let module = self.optimised(&ctx, tm, kernel, text)?;
        let obj = tm
            .write_to_memory_buffer(&module, FileType::Object)
            .map_err(|e| fail(format!("LLVM's code generator: {e}")))?;
        link::link(obj.as_slice(), codegen::ENTRY)
            .map_err(|e| fail(format!("linking the kernel's object: {e}")))
    }
}

/// A code generator error as the `Target` trait reports it.
fn cg_error(kernel: &Kernel, e: codegen::CgError) -> TargetError {
    match e {
        codegen::CgError::Unsupported(m) => LlvmCpu::err_unsupported(kernel, m),
        codegen::CgError::Internal(m) => LlvmCpu::err_codegen(kernel, m),
    }
}

impl Target for LlvmCpu {
    fn desc(&self) -> &TargetDesc {
        &self.desc
    }

    fn compile(&self, kernel: &Kernel) -> Result<KernelBlob, TargetError> {
        let k = self.prepare(kernel)?;
        let tm = self.machine().map_err(|e| Self::err_codegen(kernel, e))?;
        let dl = tm
            .get_target_data()
            .get_data_layout()
            .as_str()
            .to_string_lossy()
            .into_owned();
        let m = codegen::module(&k, TRIPLE, &dl, self.level.has("fma"))
            .map_err(|e| cg_error(kernel, e))?;
        let text = codegen::finish(&m, &self.cpu_attrs());
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
