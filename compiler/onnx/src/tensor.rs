//! `TensorProto` <-> [`tessera_ir::Tensor`], for every dtype and every place ONNX may keep the
//! data: `raw_data`, the typed repeated fields, and external files. Also reads and writes
//! single serialized `TensorProto` files, the format of ONNX's `test_data_set_N/*.pb`.
//!
//! All sizes come from untrusted input, so every count is checked against
//! [`tessera_ir::MAX_ELEMENTS`] and against the bytes actually present before anything is
//! allocated or indexed.

use crate::dtype::{dtype_from_onnx, dtype_to_onnx, onnx_code_name};
use crate::error::{OnnxError, Result};
use crate::proto::{tensor_proto::DataLocation, TensorProto};
use prost::Message;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use tessera_ir::{DType, Tensor, MAX_ELEMENTS};

/// Converts a decoded `TensorProto` into a tensor. `model_dir` is the folder that external
/// data locations are relative to; `None` refuses external data.
pub fn tensor_from_proto(tp: &TensorProto, model_dir: Option<&Path>) -> Result<Tensor> {
    let name = display_name(&tp.name);
    let bad = |msg: String| OnnxError::BadModel(format!("tensor \"{name}\": {msg}"));
    let dtype = dtype_from_onnx(tp.data_type).ok_or_else(|| OnnxError::UnsupportedFeature {
        at: format!("tensor \"{name}\""),
        what: format!("data type {}", onnx_code_name(tp.data_type)),
    })?;
    let dims = checked_dims(&tp.dims).map_err(&bad)?;
    let n: u64 = dims.iter().product(); // checked_dims bounded the product
    if tp.segment.is_some() {
        return Err(OnnxError::UnsupportedFeature {
            at: format!("tensor \"{name}\""),
            what: "segmented tensors".into(),
        });
    }
    let expect_bytes = dtype.storage_bytes(n);

    if tp.data_location == DataLocation::External as i32 {
        if dtype == DType::String {
            return Err(bad("string tensors cannot use external data".into()));
        }
        let bytes = read_external(tp, name, model_dir, expect_bytes)?;
        return Ok(Tensor::new(dtype, dims, bytes));
    }

    if dtype == DType::String {
        if tp.string_data.len() as u64 != n {
            return Err(bad(format!(
                "dims {dims:?} need {n} strings, string_data holds {}",
                tp.string_data.len()
            )));
        }
        // Graph IR keeps strings as Rust `String`s; ONNX strings are byte strings, so an
        // invalid UTF-8 sequence is replaced rather than refused.
        let strings = tp
            .string_data
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        return Ok(Tensor::from_strings(dims, strings));
    }

    if !tp.raw_data.is_empty() || n == 0 {
        if tp.raw_data.len() as u64 != expect_bytes {
            return Err(bad(format!(
                "dims {dims:?} of {dtype} need {expect_bytes} bytes, raw_data holds {}",
                tp.raw_data.len()
            )));
        }
        return Ok(Tensor::new(dtype, dims, tp.raw_data.clone()));
    }

    let bytes = typed_field_bytes(tp, dtype, n).map_err(bad)?;
    Ok(Tensor::new(dtype, dims, bytes))
}

/// Validates dims: none negative, product within [`MAX_ELEMENTS`].
pub(crate) fn checked_dims(dims: &[i64]) -> std::result::Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(dims.len().min(64));
    let mut n: u64 = 1;
    for &d in dims {
        let d = u64::try_from(d).map_err(|_| format!("negative dimension {d} in dims {dims:?}"))?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("dims {dims:?} exceed the limit of {MAX_ELEMENTS} elements"))?;
        out.push(d);
    }
    Ok(out)
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "(unnamed)"
    } else {
        name
    }
}

/// Reads data from the typed repeated fields, checking the element count first.
fn typed_field_bytes(
    tp: &TensorProto,
    dtype: DType,
    n: u64,
) -> std::result::Result<Vec<u8>, String> {
    let count_err = |field: &str, have: usize, want: u64| {
        format!(
            "dims {:?} of {dtype} need {want} values, {field} holds {have}",
            tp.dims
        )
    };
    macro_rules! take {
        ($field:ident, $want:expr, |$v:ident| $conv:expr) => {{
            let want: u64 = $want;
            if tp.$field.len() as u64 != want {
                return Err(count_err(stringify!($field), tp.$field.len(), want));
            }
            let mut out = Vec::with_capacity(dtype.storage_bytes(n) as usize);
            for &$v in &tp.$field {
                out.extend_from_slice(&$conv);
            }
            out
        }};
    }
    use DType::*;
    let bytes = match dtype {
        F32 => take!(float_data, n, |v| v.to_le_bytes()),
        F64 => take!(double_data, n, |v| v.to_le_bytes()),
        I64 => take!(int64_data, n, |v| v.to_le_bytes()),
        // The spec keeps uint32 in uint64_data.
        U64 => take!(uint64_data, n, |v| v.to_le_bytes()),
        U32 => take!(uint64_data, n, |v| (v as u32).to_le_bytes()),
        I32 => take!(int32_data, n, |v| v.to_le_bytes()),
        // Narrow types: one element per int32, holding its value (ints, bool) or its bit
        // pattern (f16, bf16, float8), per onnx.proto's comment on int32_data.
        I16 | U16 | F16 | BF16 => take!(int32_data, n, |v| (v as u16).to_le_bytes()),
        I8 | U8 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ => {
            take!(int32_data, n, |v| [v as u8])
        }
        Bool => take!(int32_data, n, |v| [u8::from(v != 0)]),
        // Sub-byte types: int32_data holds the packed bytes, one byte per int32 (this is what
        // onnx.helper.make_tensor writes).
        I4 | U4 | F4E2M1 | I2 | U2 => take!(int32_data, dtype.storage_bytes(n), |v| [v as u8]),
        String => return Err("string data in a numeric field".into()),
    };
    Ok(bytes)
}

/// Resolves and reads an external-data reference. The location must be relative and stay
/// inside the model's folder even after following symlinks: a model must not be able to make
/// the compiler read arbitrary files.
fn read_external(
    tp: &TensorProto,
    name: &str,
    model_dir: Option<&Path>,
    expect: u64,
) -> Result<Vec<u8>> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    let ext_err = |path: &str, reason: String| OnnxError::ExternalData {
        tensor: name.to_string(),
        path: path.to_string(),
        reason,
    };
    for kv in &tp.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => {
                offset = kv
                    .value
                    .trim()
                    .parse()
                    .map_err(|_| ext_err("", format!("bad offset \"{}\"", kv.value)))?
            }
            "length" => {
                length = Some(
                    kv.value
                        .trim()
                        .parse()
                        .map_err(|_| ext_err("", format!("bad length \"{}\"", kv.value)))?,
                )
            }
            // `checksum` and unknown keys carry no layout information.
            _ => {}
        }
    }
    let location = location.ok_or_else(|| ext_err("", "no `location` key".into()))?;
    let err = |reason: String| ext_err(&location, reason);
    let dir = model_dir
        .ok_or_else(|| err("external data needs the model's folder, and none is known".into()))?;
    let path = resolve_inside(dir, &location).map_err(err)?;

    let mut file = std::fs::File::open(&path).map_err(|e| err(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot stat: {e}")))?;
    refuse_hard_link(&meta).map_err(err)?;
    let file_len = meta.len();
    let length = length.unwrap_or_else(|| file_len.saturating_sub(offset));
    if length != expect {
        return Err(err(format!(
            "length {length} does not match the {expect} bytes the tensor's dims need"
        )));
    }
    let end = offset
        .checked_add(length)
        .ok_or_else(|| err("offset + length overflows".into()))?;
    if end > file_len {
        return Err(err(format!(
            "bytes {offset}..{end} lie past the end of the {file_len}-byte file"
        )));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| err(format!("cannot seek: {e}")))?;
    // `length` is bounded by MAX_ELEMENTS (via the dims) and by the file's real size.
    let mut buf = vec![0u8; length as usize];
    file.read_exact(&mut buf)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    Ok(buf)
}

/// Refuses a file with more than one hard link. A hard link to a file outside the model's
/// folder cannot be told apart by its path, so, as onnx itself does since CVE-2026-27489, any
/// external-data file that has another name is refused.
fn refuse_hard_link(meta: &std::fs::Metadata) -> std::result::Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            return Err(format!(
                "the file has {} hard links; external data with more than one name is refused, since a hard link may reach outside the model's folder",
                meta.nlink()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// `dir/location`, refused if `location` is absolute, if it names a symlink (or passes through
/// one below `dir`), or if the path (lexically, or after resolving symlinks) leaves `dir`.
pub(crate) fn resolve_inside(dir: &Path, location: &str) -> std::result::Result<PathBuf, String> {
    let rel = Path::new(location);
    if location.is_empty() {
        return Err("empty location".into());
    }
    if rel.is_absolute()
        || rel.has_root()
        || location.starts_with('/')
        || location.starts_with('\\')
    {
        return Err(
            "absolute locations are refused; external data must lie inside the model's folder"
                .into(),
        );
    }
    let mut depth: i64 = 0;
    for c in rel.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err("the location escapes the model's folder via `..`".into());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute locations are refused".into());
            }
        }
    }
    let joined = dir.join(rel);
    // Every component below `dir` must be a plain file or folder: a symlink could point
    // anywhere, and onnx refuses them too (after CVE-2024-27318).
    let mut at = dir.to_path_buf();
    for c in rel.components() {
        if let Component::Normal(part) = c {
            at.push(part);
            if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(format!(
                    "{} is a symbolic link; external data through symlinks is refused",
                    at.display()
                ));
            }
        } else if c == Component::ParentDir {
            at.pop();
        }
    }
    let real_dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the model's folder: {e}"))?;
    let real = joined
        .canonicalize()
        .map_err(|e| format!("cannot open: {e}"))?;
    if !real.starts_with(&real_dir) {
        return Err(format!(
            "resolves to {}, outside the model's folder (via a symlink)",
            real.display()
        ));
    }
    Ok(real)
}

/// Converts a tensor to a `TensorProto`: numeric data in `raw_data`, strings in
/// `string_data`.
pub fn tensor_to_proto(t: &Tensor, name: &str) -> TensorProto {
    let mut tp = TensorProto {
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: dtype_to_onnx(t.dtype),
        name: name.to_string(),
        ..TensorProto::default()
    };
    if t.dtype == DType::String {
        tp.string_data = t.strings.iter().map(|s| s.as_bytes().to_vec()).collect();
    } else {
        tp.raw_data = t.bytes.as_ref().clone();
    }
    tp
}

/// Serializes a tensor as one `TensorProto`.
pub fn encode_tensor(t: &Tensor, name: &str) -> Vec<u8> {
    tensor_to_proto(t, name).encode_to_vec()
}

/// Decodes one serialized `TensorProto` (`file` names it in errors). External data is
/// resolved relative to `dir`, if given.
pub fn decode_tensor(bytes: &[u8], file: &str, dir: Option<&Path>) -> Result<Tensor> {
    let tp = TensorProto::decode(bytes).map_err(|e| OnnxError::Decode {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    tensor_from_proto(&tp, dir)
}

/// Reads a file holding one serialized `TensorProto`, as in ONNX's `test_data_set_N/input_K.pb`.
///
/// Test data for sequence and optional inputs holds a `SequenceProto` or `OptionalProto`
/// instead, which protobuf happily misreads as a (broken) `TensorProto`; when the tensor is
/// refused and the bytes have that message's layout, the error says so and is "unsupported".
pub fn read_tensor_file(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = crate::import::read_bounded(path)?;
    decode_tensor(&bytes, &path.display().to_string(), path.parent()).map_err(|e| {
        if looks_like_sequence_or_optional(&bytes) {
            OnnxError::UnsupportedFeature {
                at: path.display().to_string(),
                what: "sequence or optional values (the file holds a SequenceProto or OptionalProto, not a TensorProto)"
                    .into(),
            }
        } else {
            e
        }
    })
}

/// Whether `bytes` have the wire layout of a `SequenceProto` or `OptionalProto` (the two
/// share it): field 1 a text name, field 2 an element type from 1 (tensor) to 5 (optional),
/// fields 3 to 7 nested messages, and nothing else.
fn looks_like_sequence_or_optional(bytes: &[u8]) -> bool {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut at = 0;
    let mut elem_type = None;
    while at < bytes.len() {
        let Some(key) = varint(bytes, &mut at) else {
            return false;
        };
        let (field, wire) = (key >> 3, key & 7);
        match (field, wire) {
            (2, 0) => match varint(bytes, &mut at) {
                Some(t) => elem_type = Some(t),
                None => return false,
            },
            (1 | 3..=7, 2) => {
                let Some(len) = varint(bytes, &mut at) else {
                    return false;
                };
                let Some(body) = usize::try_from(len)
                    .ok()
                    .and_then(|l| bytes.get(at..at.checked_add(l)?))
                else {
                    return false;
                };
                if field == 1 && !body.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
                    return false;
                }
                at += body.len();
            }
            _ => return false,
        }
    }
    matches!(elem_type, Some(1..=5))
}

/// Writes a tensor as a serialized `TensorProto` file. The file appears whole or not at all:
/// the bytes go to a temporary file in the same folder, which is then renamed over `path`.
pub fn write_tensor_file(path: impl AsRef<Path>, t: &Tensor, name: &str) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_tensor(t, name);
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        OnnxError::io(path, e)
    })
}
