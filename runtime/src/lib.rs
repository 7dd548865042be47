//! `tessera-runtime`: loads `.tsa` artifacts, binds inputs, executes the plan on a [`Device`]
//! and returns outputs. It depends on no compiler crate: only on `tessera-kir` for the plan
//! and for the interpreter the `interp` device runs.

pub mod device;

pub use device::{Device, DeviceError, KernelArg, LoadedKernel};
