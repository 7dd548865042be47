//! ONNX `TensorProto.DataType` codes <-> graph-IR dtypes, as the frontend uses them, plus
//! readable names for the codes Tessera refuses.

use tessera_ir::DType;

/// The dtype for an ONNX data-type code, or `None` for codes graph IR cannot hold (complex
/// 14 and 15, float8e8m0 24): a model using them is unsupported. The table itself lives in
/// `tessera-ir`, because Cast's `to` attribute names dtypes by these codes too.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    DType::from_onnx(code)
}

/// The ONNX data-type code of a dtype. Every graph-IR dtype has one.
pub fn dtype_to_onnx(dtype: DType) -> i32 {
    dtype.to_onnx()
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
