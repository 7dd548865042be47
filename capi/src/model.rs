//! The model functions of the C ABI: load an artifact (from a file or from memory) on the
//! device of its target, describe its inputs and outputs, and run it on caller-provided
//! buffers, from any number of threads at once.

use crate::errors::{guard, CapiError, TesseraStatus};
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::sync::Arc;
use tessera_abi::DType;
#[cfg(feature = "interp")]
use tessera_interp::InterpDevice;
use tessera_runtime::{Artifact, Device, Model};

/// A loaded model. Opaque; made by `tessera_model_load_*`, released by `tessera_model_free`.
pub struct TesseraModel {
    model: Model,
    target: CString,
    inputs: Vec<IoNames>,
    outputs: Vec<IoNames>,
}

/// The C strings and dims an info struct points into; they live as long as the model.
struct IoNames {
    name: CString,
    dtype: i32,
    dims: Vec<u64>,
    byte_len: u64,
}

/// One input or output of a model. The pointers stay valid until the model is freed.
#[repr(C)]
pub struct TesseraTensorInfo {
    /// The graph's name for it, NUL-terminated.
    pub name: *const c_char,
    /// The element type as an ONNX `TensorProto.DataType` code (1 = float, 7 = int64, 10 =
    /// float16, 16 = bfloat16, …); `tessera_dtype_name` spells it.
    pub dtype: i32,
    /// The number of dimensions.
    pub rank: usize,
    /// `rank` dimensions, outermost first.
    pub dims: *const u64,
    /// The size of its buffer in bytes: elements × element size, sub-byte types packed as ONNX
    /// packs them (two 4-bit values per byte, low nibble first).
    pub byte_len: u64,
}

/// A read-only input buffer: `len` bytes at `data`, row-major.
#[repr(C)]
pub struct TesseraInput {
    pub data: *const c_void,
    pub len: usize,
}

/// A writable output buffer of `len` bytes at `data`, filled by `tessera_model_run`.
#[repr(C)]
pub struct TesseraOutput {
    pub data: *mut c_void,
    pub len: usize,
}

/// The runtime device for a target name: only those whose runtime side this library links.
fn device_for(target: &str) -> Result<Arc<dyn Device>, CapiError> {
    match target {
        "host" => Ok(Arc::new(tessera_host::HostDevice::new())),
        // LLVM code comes in host blobs, so the host device runs it with no LLVM linked.
        tessera_host::LLVM_X86_64 => Ok(Arc::new(
            tessera_host::HostDevice::new().for_target(tessera_host::LLVM_X86_64),
        )),
        #[cfg(feature = "interp")]
        "interp" => Ok(Arc::new(InterpDevice)),
        other => Err(CapiError::UnsupportedTarget(other.to_string())),
    }
}

/// Reads an optional C string argument (NULL gives `None`).
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string.
unsafe fn opt_str<'a>(s: *const c_char, what: &'static str) -> Result<Option<&'a str>, CapiError> {
    if s.is_null() {
        return Ok(None);
    }
    CStr::from_ptr(s)
        .to_str()
        .map(Some)
        .map_err(|_| CapiError::InvalidArgument(format!("argument `{what}` is not UTF-8")))
}

fn io_names<'a>(ios: impl Iterator<Item = (&'a str, DType, &'a [u64])>) -> Vec<IoNames> {
    ios.map(|(name, dtype, dims)| IoNames {
        // Names come from the artifact; a NUL inside one cannot be shown in C.
        name: CString::new(name.replace('\0', " ")).unwrap_or_default(),
        dtype: dtype.to_onnx(),
        dims: dims.to_vec(),
        byte_len: dtype.storage_bytes(dims.iter().product()),
    })
    .collect()
}

/// Loads a decoded artifact on `target`'s device (the artifact's own target if `None`).
fn load(artifact: Artifact, target: Option<&str>) -> Result<Box<TesseraModel>, CapiError> {
    let target = target.unwrap_or(&artifact.target).to_string();
    let device = device_for(&target)?;
    let model = Model::load(artifact, device)?;
    let inputs = io_names(
        model
            .inputs()
            .iter()
            .map(|io| (io.name.as_str(), io.dtype, io.dims.as_slice())),
    );
    let outputs = io_names(
        model
            .outputs()
            .iter()
            .map(|io| (io.name.as_str(), io.dtype, io.dims.as_slice())),
    );
    Ok(Box::new(TesseraModel {
        model,
        target: CString::new(target).unwrap_or_default(),
        inputs,
        outputs,
    }))
}

/// Reads, validates and loads the `.tsa` artifact at `path`. `target` names the device
/// (`"host"`, `"llvm-x86_64"`, `"interp"`) and must match the artifact's target; NULL means the artifact's own.
/// On success `*out` holds the model; on failure it is set to NULL.
///
/// # Safety
/// `path` is a NUL-terminated string, `target` NULL or one, `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_load_file(
    path: *const c_char,
    target: *const c_char,
    out: *mut *mut TesseraModel,
) -> TesseraStatus {
    guard(|| {
        let out = out.as_mut().ok_or_else(|| CapiError::null("out"))?;
        *out = std::ptr::null_mut();
        let path = opt_str(path, "path")?.ok_or_else(|| CapiError::null("path"))?;
        let target = opt_str(target, "target")?;
        *out = Box::into_raw(load(Artifact::read(Path::new(path))?, target)?);
        Ok(())
    })
}

/// Validates and loads an artifact held in memory (`len` bytes at `data`, the contents of a
/// `.tsa` file). The bytes are copied; the caller may free them afterwards. `target` and
/// `out` are as for `tessera_model_load_file`.
///
/// # Safety
/// `data` is valid for reading `len` bytes, `target` NULL or a NUL-terminated string, `out` a
/// valid pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_load_memory(
    data: *const u8,
    len: usize,
    target: *const c_char,
    out: *mut *mut TesseraModel,
) -> TesseraStatus {
    guard(|| {
        let out = out.as_mut().ok_or_else(|| CapiError::null("out"))?;
        *out = std::ptr::null_mut();
        if data.is_null() {
            return Err(CapiError::null("data"));
        }
        let target = opt_str(target, "target")?;
        let artifact = Artifact::decode(std::slice::from_raw_parts(data, len))?;
        *out = Box::into_raw(load(artifact, target)?);
        Ok(())
    })
}

/// Releases a model. NULL is allowed and does nothing. No run may be in progress on it.
///
/// # Safety
/// `model` is NULL or a pointer from `tessera_model_load_*` not freed before.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_free(model: *mut TesseraModel) {
    if !model.is_null() {
        // A panic in a destructor must not unwind into C either.
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(Box::from_raw(model))));
    }
}

/// The target the model runs on (`"host"`, `"llvm-x86_64"`, `"interp"`), valid while the model lives; NULL if
/// `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_target(model: *const TesseraModel) -> *const c_char {
    model
        .as_ref()
        .map_or(std::ptr::null(), |m| m.target.as_ptr())
}

/// The number of inputs the model takes (0 if `model` is NULL).
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_input_count(model: *const TesseraModel) -> usize {
    model.as_ref().map_or(0, |m| m.inputs.len())
}

/// The number of outputs the model returns (0 if `model` is NULL).
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_output_count(model: *const TesseraModel) -> usize {
    model.as_ref().map_or(0, |m| m.outputs.len())
}

fn fill_info(
    list: &[IoNames],
    index: usize,
    what: &str,
    out: &mut TesseraTensorInfo,
) -> Result<(), CapiError> {
    let io = list.get(index).ok_or_else(|| {
        CapiError::InvalidArgument(format!(
            "{what} index {index} is out of range: the model has {} {what}s",
            list.len()
        ))
    })?;
    *out = TesseraTensorInfo {
        name: io.name.as_ptr(),
        dtype: io.dtype,
        rank: io.dims.len(),
        dims: io.dims.as_ptr(),
        byte_len: io.byte_len,
    };
    Ok(())
}

/// Describes input `index` (0-based, in the model's order) into `*out`.
///
/// # Safety
/// `model` is a live model and `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_input_info(
    model: *const TesseraModel,
    index: usize,
    out: *mut TesseraTensorInfo,
) -> TesseraStatus {
    guard(|| {
        let m = model.as_ref().ok_or_else(|| CapiError::null("model"))?;
        fill_info(
            &m.inputs,
            index,
            "input",
            out.as_mut().ok_or_else(|| CapiError::null("out"))?,
        )
    })
}

/// Describes output `index` (0-based, in the model's order) into `*out`.
///
/// # Safety
/// `model` is a live model and `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_output_info(
    model: *const TesseraModel,
    index: usize,
    out: *mut TesseraTensorInfo,
) -> TesseraStatus {
    guard(|| {
        let m = model.as_ref().ok_or_else(|| CapiError::null("model"))?;
        fill_info(
            &m.outputs,
            index,
            "output",
            out.as_mut().ok_or_else(|| CapiError::null("out"))?,
        )
    })
}

/// Runs the model. `inputs` holds `num_inputs` buffers, one per model input in order, each
/// exactly `byte_len` bytes as `tessera_model_input_info` reports; `outputs` holds
/// `num_outputs` writable buffers sized likewise. Nothing is written to the outputs unless the
/// inputs are valid. Safe to call from several threads at once on the same model.
///
/// # Safety
/// `model` is a live model; `inputs` and `outputs` point to arrays of the given counts whose
/// `data` pointers are valid for `len` bytes (read for inputs, written for outputs) for the
/// duration of the call. Output buffers must not overlap each other or the inputs.
#[no_mangle]
pub unsafe extern "C" fn tessera_model_run(
    model: *const TesseraModel,
    inputs: *const TesseraInput,
    num_inputs: usize,
    outputs: *const TesseraOutput,
    num_outputs: usize,
) -> TesseraStatus {
    guard(|| {
        let m = model.as_ref().ok_or_else(|| CapiError::null("model"))?;
        let ins = slice_arg(inputs, num_inputs, "inputs")?;
        let outs = slice_arg(outputs, num_outputs, "outputs")?;
        let mut in_bytes = Vec::with_capacity(ins.len());
        for (k, b) in ins.iter().enumerate() {
            in_bytes.push(if b.len == 0 {
                &[][..]
            } else if b.data.is_null() {
                return Err(CapiError::NullPointer(buffer_name("inputs", k, &m.inputs)));
            } else {
                std::slice::from_raw_parts(b.data.cast::<u8>(), b.len)
            });
        }
        let mut out_bytes = Vec::with_capacity(outs.len());
        for (k, b) in outs.iter().enumerate() {
            out_bytes.push(if b.len == 0 {
                &mut [][..]
            } else if b.data.is_null() {
                return Err(CapiError::NullPointer(buffer_name(
                    "outputs", k, &m.outputs,
                )));
            } else {
                std::slice::from_raw_parts_mut(b.data.cast::<u8>(), b.len)
            });
        }
        m.model.run_into(&in_bytes, &mut out_bytes)?;
        Ok(())
    })
}

/// Names the buffer `list[k]` for an error message.
fn buffer_name(list: &str, k: usize, ios: &[IoNames]) -> String {
    let name = ios
        .get(k)
        .map(|io| io.name.to_string_lossy().to_string())
        .unwrap_or_default();
    format!("{list}[{k}].data (`{name}`)")
}

/// Reads a C array argument; NULL is allowed only when it is empty.
///
/// # Safety
/// `p` is NULL or valid for `n` elements.
unsafe fn slice_arg<'a, T>(
    p: *const T,
    n: usize,
    what: &'static str,
) -> Result<&'a [T], CapiError> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CapiError::null(what));
    }
    Ok(std::slice::from_raw_parts(p, n))
}

/// The ONNX name of a dtype code (`"float"`, `"bfloat16"`, `"int4"`, …), static; `"unknown"`
/// for a code Tessera does not know.
#[no_mangle]
pub extern "C" fn tessera_dtype_name(dtype: i32) -> *const c_char {
    // ONNX's own spellings, so C code can print what onnx.helper prints.
    let s: &'static str = match dtype {
        1 => "float\0",
        2 => "uint8\0",
        3 => "int8\0",
        4 => "uint16\0",
        5 => "int16\0",
        6 => "int32\0",
        7 => "int64\0",
        8 => "string\0",
        9 => "bool\0",
        10 => "float16\0",
        11 => "double\0",
        12 => "uint32\0",
        13 => "uint64\0",
        16 => "bfloat16\0",
        17 => "float8e4m3fn\0",
        18 => "float8e4m3fnuz\0",
        19 => "float8e5m2\0",
        20 => "float8e5m2fnuz\0",
        21 => "uint4\0",
        22 => "int4\0",
        23 => "float4e2m1\0",
        25 => "uint2\0",
        26 => "int2\0",
        _ => "unknown\0",
    };
    s.as_ptr().cast()
}
