//! Element types of tensors: the dtype vocabulary shared by the graph IR, the kernel IR and the
//! runtime. Start at [`DType`].

use std::fmt;
use std::str::FromStr;

/// Every element type Tessera knows. Sub-byte types (`I4`, `U4`, `I2`, `U2`, `F4E2M1`) are
/// stored packed, lowest bits first, as ONNX stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    F4E2M1,
    I64,
    I32,
    I16,
    I8,
    I4,
    I2,
    U64,
    U32,
    U16,
    U8,
    U4,
    U2,
    Bool,
    String,
}

/// The text name of each dtype, used by both IR text formats. One row per dtype.
const NAMES: &[(DType, &str)] = &[
    (DType::F64, "f64"),
    (DType::F32, "f32"),
    (DType::F16, "f16"),
    (DType::BF16, "bf16"),
    (DType::F8E4M3FN, "f8e4m3fn"),
    (DType::F8E4M3FNUZ, "f8e4m3fnuz"),
    (DType::F8E5M2, "f8e5m2"),
    (DType::F8E5M2FNUZ, "f8e5m2fnuz"),
    (DType::F4E2M1, "f4e2m1"),
    (DType::I64, "i64"),
    (DType::I32, "i32"),
    (DType::I16, "i16"),
    (DType::I8, "i8"),
    (DType::I4, "i4"),
    (DType::I2, "i2"),
    (DType::U64, "u64"),
    (DType::U32, "u32"),
    (DType::U16, "u16"),
    (DType::U8, "u8"),
    (DType::U4, "u4"),
    (DType::U2, "u2"),
    (DType::Bool, "bool"),
    (DType::String, "string"),
];

impl DType {
    pub const ALL: [DType; 23] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::F4E2M1,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::I4,
        DType::I2,
        DType::U64,
        DType::U32,
        DType::U16,
        DType::U8,
        DType::U4,
        DType::U2,
        DType::Bool,
        DType::String,
    ];

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(d, _)| *d == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// Storage width in bits. Strings have no fixed width and report 0.
    pub fn bits(self) -> u32 {
        use DType::*;
        match self {
            F64 | I64 | U64 => 64,
            F32 | I32 | U32 => 32,
            F16 | BF16 | I16 | U16 => 16,
            F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | I8 | U8 | Bool => 8,
            F4E2M1 | I4 | U4 => 4,
            I2 | U2 => 2,
            String => 0,
        }
    }

    /// Bytes needed to store `n` packed elements.
    pub fn storage_bytes(self, n: u64) -> u64 {
        (n * self.bits() as u64).div_ceil(8)
    }

    pub fn is_float(self) -> bool {
        use DType::*;
        matches!(
            self,
            F64 | F32 | F16 | BF16 | F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F4E2M1
        )
    }

    /// Float types narrower than f32: computed in f32 and rounded back after every op.
    pub fn is_low_precision_float(self) -> bool {
        self.is_float() && self.bits() < 32
    }

    pub fn is_int(self) -> bool {
        self.is_signed_int() || self.is_unsigned_int()
    }

    pub fn is_signed_int(self) -> bool {
        use DType::*;
        matches!(self, I64 | I32 | I16 | I8 | I4 | I2)
    }

    pub fn is_unsigned_int(self) -> bool {
        use DType::*;
        matches!(self, U64 | U32 | U16 | U8 | U4 | U2)
    }

    /// Whether elements are packed several to a byte.
    pub fn is_sub_byte(self) -> bool {
        self.bits() > 0 && self.bits() < 8
    }

    /// Numeric: can live in a kernel buffer (everything but strings).
    pub fn is_numeric(self) -> bool {
        self != DType::String
    }

    /// The dtype for an ONNX `TensorProto.DataType` code (as used by `Cast`'s `to`,
    /// `QuantizeLinear`'s `output_dtype` and tensor protos). `None` for codes Tessera does not
    /// support (undefined, complex, float8e8m0) and unknown codes.
    pub fn from_onnx(code: i32) -> Option<DType> {
        ONNX_CODES.iter().find(|(c, _)| *c == code).map(|(_, d)| *d)
    }

    /// The ONNX `TensorProto.DataType` code of this dtype.
    pub fn to_onnx(self) -> i32 {
        // Every dtype has a row in `ONNX_CODES` (checked by a test), so the fallback (0,
        // ONNX's UNDEFINED) is never returned.
        ONNX_CODES
            .iter()
            .find(|(_, d)| *d == self)
            .map(|(c, _)| *c)
            .unwrap_or(0)
    }
}

/// ONNX `TensorProto.DataType` codes, one row per dtype.
const ONNX_CODES: &[(i32, DType)] = &[
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

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype `{0}`")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(d, _)| *d)
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_every_dtype() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert_eq!(NAMES.len(), DType::ALL.len());
    }

    #[test]
    fn onnx_codes_round_trip_for_every_dtype() {
        for d in DType::ALL {
            assert_eq!(DType::from_onnx(d.to_onnx()), Some(d), "{d}");
        }
        assert_eq!(ONNX_CODES.len(), DType::ALL.len());
        assert_eq!(DType::from_onnx(1), Some(DType::F32));
        assert_eq!(DType::from_onnx(16), Some(DType::BF16));
        assert_eq!(DType::from_onnx(14), None); // complex64
        assert_eq!(DType::from_onnx(0), None);
    }

    #[test]
    fn packed_storage_rounds_up() {
        assert_eq!(DType::I4.storage_bytes(3), 2);
        assert_eq!(DType::U2.storage_bytes(5), 2);
        assert_eq!(DType::F32.storage_bytes(3), 12);
    }
}
