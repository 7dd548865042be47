//! Status codes, the crate's error type, the per-thread last-error message, and the guard that
//! keeps panics and errors from crossing the FFI boundary.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tessera_runtime::RuntimeError;

/// What a fallible function returns: `TESSERA_OK` or one of the `TESSERA_ERR_*` codes.
pub type TesseraStatus = i32;

/// Success.
pub const TESSERA_OK: TesseraStatus = 0;
/// A required pointer argument was NULL.
pub const TESSERA_ERR_NULL_POINTER: TesseraStatus = 1;
/// An argument is out of range or malformed (an index, a string that is not UTF-8, a count).
pub const TESSERA_ERR_INVALID_ARGUMENT: TesseraStatus = 2;
/// The artifact is corrupt, truncated, of another format version, or inconsistent.
pub const TESSERA_ERR_INVALID_ARTIFACT: TesseraStatus = 3;
/// The artifact was compiled for another target than the one asked for.
pub const TESSERA_ERR_WRONG_TARGET: TesseraStatus = 4;
/// This machine cannot run the artifact's code (missing CPU features, …).
pub const TESSERA_ERR_INCOMPATIBLE_DEVICE: TesseraStatus = 5;
/// An input buffer has the wrong size, or a bound input has another value.
pub const TESSERA_ERR_INVALID_INPUT: TesseraStatus = 6;
/// An output buffer has the wrong size.
pub const TESSERA_ERR_INVALID_OUTPUT: TesseraStatus = 7;
/// A kernel failed to load or run on the device.
pub const TESSERA_ERR_DEVICE: TesseraStatus = 8;
/// A file could not be read.
pub const TESSERA_ERR_IO: TesseraStatus = 9;
/// The target is unknown, or has no runtime device in this library.
pub const TESSERA_ERR_UNSUPPORTED_TARGET: TesseraStatus = 10;
/// A bug in Tessera (a caught panic); the message says where.
pub const TESSERA_ERR_INTERNAL: TesseraStatus = 11;
/// Bad input data found while running: a data check in a kernel failed (an index out of range,
/// a bad size). The message names the node, its op, the input and the value.
pub const TESSERA_ERR_INVALID_DATA: TesseraStatus = 12;
/// A run would need more scratch memory than the runtime's limit allows.
pub const TESSERA_ERR_MEMORY_LIMIT: TesseraStatus = 13;

/// Everything a C ABI call can fail with; [`CapiError::status`] is its code.
#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("argument `{0}` is NULL")]
    NullPointer(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("target `{0}` has no device in the Tessera runtime library (it has: host, interp)")]
    UnsupportedTarget(String),
    #[error("internal error (a bug in Tessera): {0}")]
    Internal(String),
}

impl CapiError {
    pub(crate) fn null(what: &str) -> CapiError {
        CapiError::NullPointer(what.to_string())
    }

    pub fn status(&self) -> TesseraStatus {
        match self {
            CapiError::Runtime(e) => match e {
                RuntimeError::BadArtifact(_) => TESSERA_ERR_INVALID_ARTIFACT,
                RuntimeError::WrongTarget { .. } => TESSERA_ERR_WRONG_TARGET,
                RuntimeError::IncompatibleDevice(_) => TESSERA_ERR_INCOMPATIBLE_DEVICE,
                RuntimeError::Input { .. } => TESSERA_ERR_INVALID_INPUT,
                RuntimeError::Output { .. } => TESSERA_ERR_INVALID_OUTPUT,
                RuntimeError::Device(_) => TESSERA_ERR_DEVICE,
                RuntimeError::Io { .. } => TESSERA_ERR_IO,
                RuntimeError::Data { .. } | RuntimeError::Execution(_) => TESSERA_ERR_INVALID_DATA,
                RuntimeError::DigestMismatch { .. } => TESSERA_ERR_INVALID_ARTIFACT,
                RuntimeError::MemoryLimit { .. } => TESSERA_ERR_MEMORY_LIMIT,
            },
            CapiError::NullPointer(_) => TESSERA_ERR_NULL_POINTER,
            CapiError::InvalidArgument(_) => TESSERA_ERR_INVALID_ARGUMENT,
            CapiError::UnsupportedTarget(_) => TESSERA_ERR_UNSUPPORTED_TARGET,
            CapiError::Internal(_) => TESSERA_ERR_INTERNAL,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs cannot appear in a C string; show them as spaces.
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last call on this thread that failed, as a NUL-terminated string (empty
/// if none failed yet). It stays valid until the next failing call on the same thread.
#[no_mangle]
pub extern "C" fn tessera_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A static name for a status code, e.g. `"TESSERA_ERR_INVALID_INPUT"`, or `"unknown status"`.
#[no_mangle]
pub extern "C" fn tessera_status_name(status: TesseraStatus) -> *const c_char {
    let s: &'static str = match status {
        TESSERA_OK => "TESSERA_OK\0",
        TESSERA_ERR_NULL_POINTER => "TESSERA_ERR_NULL_POINTER\0",
        TESSERA_ERR_INVALID_ARGUMENT => "TESSERA_ERR_INVALID_ARGUMENT\0",
        TESSERA_ERR_INVALID_ARTIFACT => "TESSERA_ERR_INVALID_ARTIFACT\0",
        TESSERA_ERR_WRONG_TARGET => "TESSERA_ERR_WRONG_TARGET\0",
        TESSERA_ERR_INCOMPATIBLE_DEVICE => "TESSERA_ERR_INCOMPATIBLE_DEVICE\0",
        TESSERA_ERR_INVALID_INPUT => "TESSERA_ERR_INVALID_INPUT\0",
        TESSERA_ERR_INVALID_OUTPUT => "TESSERA_ERR_INVALID_OUTPUT\0",
        TESSERA_ERR_DEVICE => "TESSERA_ERR_DEVICE\0",
        TESSERA_ERR_IO => "TESSERA_ERR_IO\0",
        TESSERA_ERR_UNSUPPORTED_TARGET => "TESSERA_ERR_UNSUPPORTED_TARGET\0",
        TESSERA_ERR_INTERNAL => "TESSERA_ERR_INTERNAL\0",
        TESSERA_ERR_INVALID_DATA => "TESSERA_ERR_INVALID_DATA\0",
        TESSERA_ERR_MEMORY_LIMIT => "TESSERA_ERR_MEMORY_LIMIT\0",
        _ => "unknown status\0",
    };
    s.as_ptr().cast()
}

/// Runs one entry point's body: an error or a panic becomes a status code plus this thread's
/// last-error message, so neither crosses into C.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), CapiError>) -> TesseraStatus {
    let result = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(CapiError::Internal(what))
    });
    match result {
        Ok(()) => TESSERA_OK,
        Err(e) => {
            set_last_error(&e.to_string());
            e.status()
        }
    }
}
