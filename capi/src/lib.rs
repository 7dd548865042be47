//! `tessera-capi`: the C ABI of the Tessera runtime, built as `libtessera_capi.so` and
//! `libtessera_capi.a`, declared by `include/tessera.h` (generated from this crate by
//! cbindgen; a test keeps it current). It links the runtime and the runtime sides of the
//! `host` and `interp` devices, never the compiler.
//!
//! Conventions every function follows:
//! - A fallible function returns a `TesseraStatus` (`TESSERA_OK` = 0) and stores a readable
//!   message for the calling thread, read with `tessera_last_error`.
//! - Null pointers are checked and refused with `TESSERA_ERR_NULL_POINTER`.
//! - No panic crosses the boundary: each entry point runs under `catch_unwind`, and a panic is
//!   reported as `TESSERA_ERR_INTERNAL`.
//! - A loaded model is immutable; any number of threads may call `tessera_model_run` on it at
//!   once (each run owns its scratch memory).
//!
//! [`errors`] holds the status codes and the error type, [`model`] the model functions.

pub mod errors;
pub mod model;

pub use errors::*;
pub use model::*;

use std::ffi::c_char;

/// The version of this ABI. It changes whenever a function, struct or constant of
/// `tessera.h` changes incompatibly; compare `tessera_abi_version` with it at startup.
pub const TESSERA_ABI_VERSION: u32 = 1;

/// The ABI version the library implements (`TESSERA_ABI_VERSION` of the header it was built
/// with). A program should refuse to run when it differs from the header it was compiled with.
#[no_mangle]
pub extern "C" fn tessera_abi_version() -> u32 {
    TESSERA_ABI_VERSION
}

/// The library's version, as a static NUL-terminated string such as `"0.1.0"`.
#[no_mangle]
pub extern "C" fn tessera_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
