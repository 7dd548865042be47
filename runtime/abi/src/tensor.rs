//! Constant tensor data: initializers, `Constant` values, and inputs bound at compile time.
//! Bytes are stored little-endian and packed as ONNX packs them; strings are kept apart.

use crate::dtype::DType;
use std::sync::Arc;

/// A tensor value held by the compiler.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub dims: Vec<u64>,
    /// Raw little-endian storage for numeric dtypes (sub-byte types packed, low bits first).
    pub bytes: Arc<Vec<u8>>,
    /// Elements of a `string` tensor; empty for every other dtype.
    pub strings: Arc<Vec<String>>,
}

impl Tensor {
    pub fn new(dtype: DType, dims: Vec<u64>, bytes: Vec<u8>) -> Tensor {
        Tensor {
            dtype,
            dims,
            bytes: Arc::new(bytes),
            strings: Arc::new(Vec::new()),
        }
    }

    pub fn from_strings(dims: Vec<u64>, strings: Vec<String>) -> Tensor {
        Tensor {
            dtype: DType::String,
            dims,
            bytes: Arc::new(Vec::new()),
            strings: Arc::new(strings),
        }
    }

    pub fn from_f32(dims: Vec<u64>, data: &[f32]) -> Tensor {
        Tensor::new(
            DType::F32,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn from_i64(dims: Vec<u64>, data: &[i64]) -> Tensor {
        Tensor::new(
            DType::I64,
            dims,
            data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// The element count; saturates at `u64::MAX` for absurd dims rather than overflowing.
    pub fn num_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Element `i` widened to f64. Defined for every numeric dtype (ints convert exactly where
    /// f64 can hold them); `None` for strings or an index past the end.
    pub fn get_f64(&self, i: u64) -> Option<f64> {
        if i >= self.num_elements() {
            return None;
        }
        crate::numeric::load_as_f64(self.dtype, &self.bytes, i)
    }

    /// Element `i` as i64. Floats truncate toward zero.
    pub fn get_i64(&self, i: u64) -> Option<i64> {
        if i >= self.num_elements() {
            return None;
        }
        crate::numeric::load_as_i64(self.dtype, &self.bytes, i)
    }

    /// All elements as i64, for small shape-like tensors (axes, pads, shapes).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        (0..self.num_elements()).map(|i| self.get_i64(i)).collect()
    }

    /// All elements as f64.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        (0..self.num_elements()).map(|i| self.get_f64(i)).collect()
    }
}
