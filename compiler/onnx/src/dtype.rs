//! ONNX `TensorProto.DataType` codes <-> graph-IR dtypes. Mapping ONNX's numbering is the
//! frontend's job, so it lives here rather than in `tessera-ir`.

use tessera_ir::DType;

/// One row per ONNX code Tessera accepts. Complex (14, 15) and float8e8m0 (24) are absent:
/// graph IR has no such dtype, and a model using them is unsupported.
const CODES: &[(i32, DType)] = &[
    (1, DType::F32),
    (2, DType::U8),
    (3, DType::I8),
    (4, DType::U16),
    (5, DType::I16),
    (6, DType::I32),
    (7, DType::I64),
    (8, DType::String),
    (9, DType::Bool),
    (10, DType::F16),
    (11, DType::F64),
    (12, DType::U32),
    (13, DType::U64),
    (16, DType::BF16),
    (17, DType::F8E4M3FN),
    (18, DType::F8E4M3FNUZ),
    (19, DType::F8E5M2),
    (20, DType::F8E5M2FNUZ),
    (21, DType::U4),
    (22, DType::I4),
    (23, DType::F4E2M1),
    (25, DType::U2),
    (26, DType::I2),
];

/// The dtype for an ONNX data-type code, or `None` for codes graph IR cannot hold.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, d)| *d)
}

/// The ONNX data-type code of a dtype. Every graph-IR dtype has one.
pub fn dtype_to_onnx(dtype: DType) -> i32 {
    CODES.iter().find(|(_, d)| *d == dtype).map(|(c, _)| *c).unwrap_or(0)
}

/// A readable name for an ONNX code, for error messages about codes we refuse.
pub fn onnx_code_name(code: i32) -> String {
    match code {
        0 => "UNDEFINED".into(),
        14 => "COMPLEX64".into(),
        15 => "COMPLEX128".into(),
        24 => "FLOAT8E8M0".into(),
        c => match dtype_from_onnx(c) {
            Some(d) => d.name().to_string(),
            None => format!("unknown data type {c}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_has_a_code_that_round_trips() {
        for d in DType::ALL {
            let c = dtype_to_onnx(d);
            assert_ne!(c, 0, "{d}");
            assert_eq!(dtype_from_onnx(c), Some(d));
        }
        assert_eq!(dtype_from_onnx(14), None);
    }
}
