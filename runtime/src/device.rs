//! The runtime side of a backend: a [`Device`] loads code blobs and launches them on buffers.
//! Devices here share host memory with the runtime; a device with its own memory (a GPU)
//! will add allocation and transfer methods with host-memory defaults.

use std::fmt;

/// A kernel argument: one buffer's bytes. Built only by the runtime, which guarantees the
/// pointer is valid for `len` bytes for the whole launch, aligned to 16 bytes, and that no
/// other argument of the same launch overlaps a buffer the kernel writes.
#[derive(Clone, Copy, Debug)]
pub struct KernelArg {
    ptr: *mut u8,
    len: usize,
}

// The runtime hands arguments to kernels that may run instances on several threads; the
// safety contract above is what makes that sound.
unsafe impl Send for KernelArg {}
unsafe impl Sync for KernelArg {}

impl KernelArg {
    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes while the launch runs, and
    /// buffers written by the kernel must not overlap any other argument.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> KernelArg {
        KernelArg { ptr, len }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An error raised by a device while loading or running a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    pub kernel: String,
    pub message: String,
    /// Set when the launch stopped because a kernel's `trap` fired: bad input data rather than
    /// a device failure. The runtime names the node and input from the plan's trap table.
    pub trapped: Option<Trapped>,
}

/// A data check that failed in a launch: the kernel's trap code and the offending value, from
/// the first trapping program instance in row-major grid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trapped {
    pub code: u32,
    pub value: i64,
}

impl DeviceError {
    /// A device failure (bad blob, launch problem) of `kernel`.
    pub fn new(kernel: impl Into<String>, message: impl Into<String>) -> DeviceError {
        DeviceError {
            kernel: kernel.into(),
            message: message.into(),
            trapped: None,
        }
    }

    /// A launch of `kernel` stopped by trap `code` on `value`.
    pub fn trapped(kernel: impl Into<String>, code: u32, value: i64) -> DeviceError {
        DeviceError {
            kernel: kernel.into(),
            message: format!("data check {code} failed on value {value}"),
            trapped: Some(Trapped { code, value }),
        }
    }
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel `{}`: {}", self.kernel, self.message)
    }
}

impl std::error::Error for DeviceError {}

/// A kernel loaded on a device, ready to launch any number of times, from any thread.
pub trait LoadedKernel: Send + Sync {
    /// Runs the kernel's whole launch grid on `args`, one per kernel parameter, in order.
    fn launch(&self, args: &[KernelArg]) -> Result<(), DeviceError>;
}

/// A device: where a target's kernels run.
pub trait Device: Send + Sync {
    /// The target name this device runs, as written in artifacts (`host`, `interp`).
    fn target(&self) -> &str;

    /// Checks that this device can run code compiled with `fingerprint` (CPU features, …).
    fn check_fingerprint(&self, fingerprint: &str) -> Result<(), String> {
        let _ = fingerprint;
        Ok(())
    }

    /// Loads one kernel's code blob. `name` is only for errors.
    fn load(&self, name: &str, blob: &[u8]) -> Result<Box<dyn LoadedKernel>, DeviceError>;
}
