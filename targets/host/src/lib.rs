//! `tessera-host`: the default target. Kernel IR is compiled to x86_64 machine code with
//! Cranelift ([`Host`], the compiler side) and run on this CPU with grid points spread over
//! threads ([`HostDevice`], the runtime side). The capabilities are data in `target.toml`.
//!
//! Read `compiler.rs` for [`Host`], [`codegen`] for how each kernel-IR construct becomes
//! Cranelift IR, [`blob`] for the code blob stored in artifacts, [`device`] for loading and
//! launching, [`cpu`] for the feature fingerprint. Without the default `compiler` feature the
//! crate is only the runtime side: [`HostDevice`], [`blob`] and [`cpu`], and no Cranelift.
//!
//! ```
//! use tessera_host::{Host, HostDevice};
//! use tessera_ir::DType;
//! use tessera_kir::{Access, KernelBuilder};
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
//! let host = Host::native().unwrap();
//! let blob = host.compile(&kernel).unwrap();
//! let device = HostDevice::new();
//! device.check_fingerprint(&host.fingerprint()).unwrap();
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

pub mod blob;
#[cfg(feature = "compiler")]
pub mod codegen;
pub mod cpu;
pub mod device;

#[cfg(feature = "compiler")]
pub use compiler::{desc, Host, TARGET_TOML};
pub use device::HostDevice;

/// The target's name, as artifacts and `lookup()` write it.
pub const NAME: &str = "host";

/// The LLVM x86_64 target (`tessera-llvm`), whose blobs this crate's device runs too: a
/// runtime can run its artifacts without linking LLVM (`HostDevice::new().for_target(…)`).
pub const LLVM_X86_64: &str = "llvm-x86_64";

/// The compiler side, behind the default `compiler` feature so that a runtime can use the
/// device without linking Cranelift.
#[cfg(feature = "compiler")]
mod compiler;
