//! Reading and writing NumPy `.npy` files (format versions 1.0–3.0, C order, little-endian),
//! for `tessera run --input NAME=FILE.npy`. Errors name the file.

use crate::DriverError;
use std::path::Path;
use tessera_ir::{DType, Tensor};

const TYPES: &[(&str, DType)] = &[
    ("f8", DType::F64),
    ("f4", DType::F32),
    ("f2", DType::F16),
    ("i8", DType::I64),
    ("i4", DType::I32),
    ("i2", DType::I16),
    ("i1", DType::I8),
    ("u8", DType::U64),
    ("u4", DType::U32),
    ("u2", DType::U16),
    ("u1", DType::U8),
    ("b1", DType::Bool),
];

fn bad(path: &Path, m: impl Into<String>) -> DriverError {
    DriverError::Io {
        path: path.display().to_string(),
        message: format!("not a readable .npy file: {}", m.into()),
    }
}

/// Parses `.npy` bytes; `path` names the file in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Tensor, DriverError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "bad magic"));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported format version {v}"))),
    };
    let header = bytes
        .get(hstart..hstart + hlen)
        .ok_or_else(|| bad(path, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(path, "header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| bad(path, "no descr"))?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad(path, "bad descr"))?;
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(bad(
            path,
            "Fortran-order arrays are not supported; save with order='C'",
        ));
    }
    let code = descr.trim_start_matches(['<', '|', '=']);
    if descr.starts_with('>') {
        return Err(bad(path, "big-endian arrays are not supported"));
    }
    let dtype = TYPES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| *d)
        .ok_or_else(|| bad(path, format!("unsupported dtype `{descr}`")))?;
    let shape = field("shape").ok_or_else(|| bad(path, "no shape"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(path, "bad shape"))?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| bad(path, format!("bad dimension `{s}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= tessera_ir::MAX_ELEMENTS);
    let n = n.ok_or_else(|| bad(path, "absurd shape"))?;
    let data = &bytes[hstart + hlen..];
    if data.len() as u64 != dtype.storage_bytes(n) {
        return Err(bad(
            path,
            format!(
                "holds {} data bytes, shape {:?} needs {}",
                data.len(),
                dims,
                dtype.storage_bytes(n)
            ),
        ));
    }
    Ok(Tensor::new(dtype, dims, data.to_vec()))
}

pub fn read(path: &Path) -> Result<Tensor, DriverError> {
    let bytes = std::fs::read(path).map_err(|e| DriverError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    decode(&bytes, path)
}

/// Encodes a tensor as `.npy` version 1.0. Dtypes NumPy lacks (bf16, float8, sub-byte) are
/// refused.
pub fn encode(t: &Tensor) -> Result<Vec<u8>, String> {
    let code = TYPES
        .iter()
        .find(|(_, d)| *d == t.dtype)
        .map(|(c, _)| *c)
        .ok_or_else(|| format!("dtype {} has no .npy form", t.dtype))?;
    let prefix = if t.dtype.bits() == 8 { "|" } else { "<" };
    let shape = match t.dims.len() {
        1 => format!("({},)", t.dims[0]),
        _ => format!(
            "({})",
            t.dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{prefix}{code}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts at a multiple of 64 bytes, ending the header with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Tensor::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let bytes = encode(&t).unwrap();
        assert_eq!(bytes.len() % 64, 24 % 64); // 64-byte header plus 24 data bytes
        assert_eq!(decode(&bytes, Path::new("t.npy")).unwrap(), t);
    }

    #[test]
    fn refuses_truncated_data() {
        let t = Tensor::from_f32(vec![4], &[1.0, 2.0, 3.0, 4.0]);
        let bytes = encode(&t).unwrap();
        let e = decode(&bytes[..bytes.len() - 1], Path::new("t.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.npy"), "{e}");
    }
}
