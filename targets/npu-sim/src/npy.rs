//! A small `.npy` (NumPy array file, format versions 1-3) reader and writer for
//! the dtypes the simulator moves: f16, f32, i8, i32 (little-endian, C order).

use crate::error::{Result, SimError};
use crate::isa::DType;

/// A dense little-endian C-order array.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl NdArray {
    /// A zero-filled array.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        NdArray {
            dtype,
            shape: shape.to_vec(),
            data: vec![0; n * dtype.size() as usize],
        }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn from_f32(shape: &[usize], v: &[f32]) -> Self {
        NdArray {
            dtype: DType::F32,
            shape: shape.to_vec(),
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn from_f16(shape: &[usize], v: &[half::f16]) -> Self {
        NdArray {
            dtype: DType::F16,
            shape: shape.to_vec(),
            data: v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        }
    }
    pub fn from_i8(shape: &[usize], v: &[i8]) -> Self {
        NdArray {
            dtype: DType::I8,
            shape: shape.to_vec(),
            data: v.iter().map(|&x| x as u8).collect(),
        }
    }
    pub fn from_i32(shape: &[usize], v: &[i32]) -> Self {
        NdArray {
            dtype: DType::I32,
            shape: shape.to_vec(),
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Elements as f32 (exact for f16, bf16 and small ints; wide ints round to nearest even).
    pub fn to_f32(&self) -> Vec<f32> {
        let s = self.dtype.size() as usize;
        self.data
            .chunks_exact(s)
            .map(|b| crate::exec::read_f32(self.dtype, b))
            .collect()
    }

    pub fn to_i8(&self) -> Vec<i8> {
        self.data.iter().map(|&b| b as i8).collect()
    }
}

fn descr(dt: DType) -> Option<&'static str> {
    match dt {
        DType::F16 => Some("<f2"),
        DType::F32 => Some("<f4"),
        DType::I8 => Some("|i1"),
        DType::I32 => Some("<i4"),
        DType::U8 => Some("|u1"),
        DType::I16 => Some("<i2"),
        DType::U16 => Some("<u2"),
        DType::U32 => Some("<u4"),
        DType::I64 => Some("<i8"),
        DType::U64 => Some("<u8"),
        // NumPy has no native bfloat16.
        DType::Bf16 => None,
    }
}

/// Serialises an array as `.npy` version 1.0.
pub fn write_npy(a: &NdArray) -> Result<Vec<u8>> {
    let d =
        descr(a.dtype).ok_or_else(|| SimError::Npy(format!("{} has no .npy dtype", a.dtype)))?;
    let shape = match a.shape.len() {
        1 => format!("({},)", a.shape[0]),
        _ => format!(
            "({})",
            a.shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts on a 64-byte boundary, as NumPy does.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    let hl = u16::try_from(header.len()).map_err(|_| SimError::Npy("header too long".into()))?;
    out.extend_from_slice(&hl.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&a.data);
    Ok(out)
}

/// Parses a `.npy` file.
pub fn read_npy(bytes: &[u8]) -> Result<NdArray> {
    let e = |m: &str| SimError::Npy(m.to_string());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(e("missing \\x93NUMPY magic"));
    }
    let (hlen, hstart): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(e("truncated header length"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(SimError::Npy(format!("unsupported format version {v}"))),
    };
    let hend = hstart
        .checked_add(hlen)
        .filter(|&h| h <= bytes.len())
        .ok_or_else(|| e("truncated header"))?;
    let header = std::str::from_utf8(&bytes[hstart..hend]).map_err(|_| e("header is not UTF-8"))?;
    let field = |key: &str| -> Result<&str> {
        let pat = format!("'{key}':");
        let at = header
            .find(&pat)
            .ok_or_else(|| SimError::Npy(format!("header has no '{key}'")))?;
        Ok(header[at + pat.len()..].trim_start())
    };
    let d = field("descr")?;
    let d = d
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| e("bad descr"))?;
    let dtype = match d {
        "<f2" => DType::F16,
        "<f4" => DType::F32,
        "|i1" | "<i1" | "i1" => DType::I8,
        "<i4" => DType::I32,
        other => {
            return Err(SimError::Npy(format!(
                "unsupported dtype '{other}' (want <f2, <f4, |i1 or <i4)"
            )))
        }
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(e("Fortran-order arrays are not supported"));
    }
    let s = field("shape")?;
    let s = s.strip_prefix('(').ok_or_else(|| e("bad shape"))?;
    let s = &s[..s.find(')').ok_or_else(|| e("bad shape"))?];
    let mut shape = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(
            part.parse::<usize>()
                .map_err(|_| SimError::Npy(format!("bad shape entry '{part}'")))?,
        );
    }
    let n = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| e("shape overflows"))?;
    let nbytes = n
        .checked_mul(dtype.size() as usize)
        .ok_or_else(|| e("shape overflows"))?;
    let data = &bytes[hend..];
    if data.len() != nbytes {
        return Err(SimError::Npy(format!(
            "data is {} bytes, shape {:?} of {} needs {}",
            data.len(),
            shape,
            dtype,
            nbytes
        )));
    }
    Ok(NdArray {
        dtype,
        shape,
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let a = NdArray::from_f32(&[2, 3], &[1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]);
        let b = write_npy(&a).unwrap();
        assert_eq!((b.len() - a.data.len()) % 64, 0);
        assert_eq!(read_npy(&b).unwrap(), a);
        let v = NdArray::from_i8(&[4], &[1, -1, 127, -128]);
        assert_eq!(read_npy(&write_npy(&v).unwrap()).unwrap(), v);
        assert!(matches!(read_npy(b"nonsense"), Err(SimError::Npy(_))));
        let mut t = b.clone();
        t.pop();
        assert!(matches!(read_npy(&t), Err(SimError::Npy(m)) if m.contains("needs")));
        let mut f = b.clone();
        let at = f.windows(3).position(|w| w == b"<f4").unwrap();
        f[at..at + 3].copy_from_slice(b"<c8");
        assert!(matches!(read_npy(&f), Err(SimError::Npy(m)) if m.contains("unsupported dtype")));
    }
}
