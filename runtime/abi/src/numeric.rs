//! Reference scalar conversions for every dtype: decoding stored elements to f64/i64 and
//! encoding f32 to the narrow float formats with ONNX's rounding and saturation rules.
//! The kernel-IR interpreter and the constant folder both use these, so there is one
//! definition of what each format means.

use crate::dtype::DType;

/// How a narrow float format spends its special encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// IEEE-like: an all-ones exponent holds inf and NaN (f8e5m2).
    Ieee,
    /// "fn": no infinities; only all-ones exponent with all-ones mantissa is NaN (f8e4m3fn).
    FiniteNanOnes,
    /// "fnuz": no infinities, no negative zero; 0x80 is the only NaN.
    FiniteNanNegZero,
    /// No NaN or infinity at all (f4e2m1).
    FiniteOnly,
}

/// Layout of a narrow float format.
#[derive(Clone, Copy, Debug)]
pub struct MiniFloat {
    pub exp_bits: u32,
    pub man_bits: u32,
    pub bias: i32,
    pub special: Special,
}

impl MiniFloat {
    pub fn of(dtype: DType) -> Option<MiniFloat> {
        let (exp_bits, man_bits, bias, special) = match dtype {
            DType::F8E4M3FN => (4, 3, 7, Special::FiniteNanOnes),
            DType::F8E4M3FNUZ => (4, 3, 8, Special::FiniteNanNegZero),
            DType::F8E5M2 => (5, 2, 15, Special::Ieee),
            DType::F8E5M2FNUZ => (5, 2, 16, Special::FiniteNanNegZero),
            DType::F4E2M1 => (2, 1, 1, Special::FiniteOnly),
            _ => return None,
        };
        Some(MiniFloat {
            exp_bits,
            man_bits,
            bias,
            special,
        })
    }

    fn total_bits(&self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    /// Decodes a stored bit pattern.
    pub fn decode(&self, bits: u32) -> f32 {
        let sign_bit = 1u32 << (self.exp_bits + self.man_bits);
        let neg = bits & sign_bit != 0;
        let exp = (bits >> self.man_bits) & ((1 << self.exp_bits) - 1);
        let man = bits & ((1 << self.man_bits) - 1);
        let exp_max = (1u32 << self.exp_bits) - 1;
        match self.special {
            Special::FiniteNanNegZero if bits == sign_bit => return f32::NAN,
            Special::FiniteNanOnes if exp == exp_max && man == (1 << self.man_bits) - 1 => {
                return f32::NAN
            }
            Special::Ieee if exp == exp_max => {
                let v = if man == 0 { f32::INFINITY } else { f32::NAN };
                return if neg { -v } else { v };
            }
            _ => {}
        }
        let mag = if exp == 0 {
            man as f32 * 2f32.powi(1 - self.bias - self.man_bits as i32)
        } else {
            (1.0 + man as f32 / (1u32 << self.man_bits) as f32) * 2f32.powi(exp as i32 - self.bias)
        };
        if neg {
            -mag
        } else {
            mag
        }
    }

    /// The largest finite value.
    pub fn max_finite(&self) -> f32 {
        let all = (1u32 << (self.exp_bits + self.man_bits)) - 1;
        // Walk down from the top encoding to the first finite one.
        (0..=all)
            .rev()
            .map(|b| self.decode(b))
            .find(|v| v.is_finite())
            .unwrap_or(0.0)
    }

    /// Encodes with round-to-nearest-even. With `saturate`, out-of-range values (and
    /// infinities) clamp to the largest finite value, as ONNX's Cast(saturate=1) specifies;
    /// without it they become infinity where the format has one, else NaN.
    pub fn encode(&self, x: f32, saturate: bool) -> u32 {
        let sign_bit = 1u32 << (self.exp_bits + self.man_bits);
        let nan = match self.special {
            Special::Ieee => ((1 << self.exp_bits) - 1) << self.man_bits | 1,
            Special::FiniteNanOnes => sign_bit - 1,
            Special::FiniteNanNegZero => sign_bit,
            Special::FiniteOnly => 0,
        };
        if x.is_nan() {
            return nan;
        }
        let neg = x.is_sign_negative();
        let sign = if neg { sign_bit } else { 0 };
        let a = x.abs();
        let max = self.max_finite();
        let max_code = self.encode_finite_magnitude(max);
        if a.is_infinite() {
            return match (saturate, self.special) {
                (true, _) | (_, Special::FiniteOnly) => sign | max_code,
                (false, Special::Ieee) => sign | (((1 << self.exp_bits) - 1) << self.man_bits),
                (false, _) => nan,
            };
        }
        let code = self.encode_finite_magnitude(a);
        if code > max_code {
            return match (saturate, self.special) {
                (true, _) | (_, Special::FiniteOnly) => sign | max_code,
                (false, Special::Ieee) => sign | (((1 << self.exp_bits) - 1) << self.man_bits),
                (false, _) => nan,
            };
        }
        if code == 0 && self.special == Special::FiniteNanNegZero {
            return 0; // no negative zero in fnuz formats
        }
        sign | code
    }

    /// Rounds a finite non-negative magnitude to the nearest code (ties to even), allowing
    /// codes past the largest finite one so the caller can detect overflow.
    fn encode_finite_magnitude(&self, a: f32) -> u32 {
        if a == 0.0 {
            return 0;
        }
        let min_exp = 1 - self.bias; // exponent of the smallest normal
        let e = (a.log2().floor() as i32).max(min_exp);
        // Quantum at this binade; subnormals share the smallest normal's quantum.
        let quantum = 2f64.powi(e - self.man_bits as i32);
        let q = a as f64 / quantum;
        let mut m = q.floor();
        let frac = q - m;
        if frac > 0.5 || (frac == 0.5 && (m as u64) % 2 == 1) {
            m += 1.0;
        }
        let mut m = m as u64;
        let mut e = e;
        let man_one = 1u64 << self.man_bits;
        if m >= 2 * man_one {
            m /= 2;
            e += 1;
        }
        if m < man_one {
            // Subnormal (or rounded to zero).
            return m as u32;
        }
        let biased = (e + self.bias) as u64;
        let limit = (1u64 << (self.total_bits() + 1)) - 1;
        ((biased << self.man_bits) | (m - man_one)).min(limit) as u32
    }
}

fn read_bits(bytes: &[u8], bits: u32, i: u64) -> Option<u64> {
    if bits >= 8 {
        let w = (bits / 8) as usize;
        let start = (i as usize).checked_mul(w)?;
        let chunk = bytes.get(start..start + w)?;
        let mut buf = [0u8; 8];
        buf[..w].copy_from_slice(chunk);
        Some(u64::from_le_bytes(buf))
    } else {
        let bit = i * bits as u64;
        let byte = *bytes.get((bit / 8) as usize)?;
        Some(((byte >> (bit % 8)) & ((1u8 << bits) - 1)) as u64)
    }
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Element `i` of packed storage `bytes` as f64.
pub fn load_as_f64(dtype: DType, bytes: &[u8], i: u64) -> Option<f64> {
    let raw = read_bits(bytes, dtype.bits(), i)?;
    Some(match dtype {
        DType::F64 => f64::from_bits(raw),
        DType::F32 => f32::from_bits(raw as u32) as f64,
        DType::F16 => half::f16::from_bits(raw as u16).to_f64(),
        DType::BF16 => half::bf16::from_bits(raw as u16).to_f64(),
        DType::Bool => (raw != 0) as u8 as f64,
        DType::String => return None,
        d if d.is_signed_int() => sign_extend(raw, d.bits()) as f64,
        d if d.is_unsigned_int() => raw as f64,
        d => MiniFloat::of(d)?.decode(raw as u32) as f64,
    })
}

/// Element `i` of packed storage `bytes` as i64 (floats truncate toward zero).
pub fn load_as_i64(dtype: DType, bytes: &[u8], i: u64) -> Option<i64> {
    if dtype.is_int() || dtype == DType::Bool {
        let raw = read_bits(bytes, dtype.bits(), i)?;
        return Some(if dtype.is_signed_int() {
            sign_extend(raw, dtype.bits())
        } else {
            raw as i64
        });
    }
    load_as_f64(dtype, bytes, i).map(|v| v as i64)
}

/// Packs integers into `dtype`'s storage, truncating to its width (as a C cast does).
pub fn encode_ints(dtype: DType, vals: &[i64]) -> Vec<u8> {
    let bits = dtype.bits() as usize;
    if dtype == DType::Bool {
        return vals.iter().map(|&v| (v != 0) as u8).collect();
    }
    if bits >= 8 {
        let w = bits / 8;
        return vals
            .iter()
            .flat_map(|v| v.to_le_bytes().into_iter().take(w))
            .collect();
    }
    let mut out = vec![0u8; (vals.len() * bits).div_ceil(8)];
    let mask = (1u16 << bits) - 1;
    for (i, &v) in vals.iter().enumerate() {
        let bit = i * bits;
        if let Some(b) = out.get_mut(bit / 8) {
            *b |= (((v as u16) & mask) << (bit % 8)) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8e4m3fn_extremes() {
        let f = MiniFloat::of(DType::F8E4M3FN).unwrap();
        assert_eq!(f.max_finite(), 448.0);
        assert_eq!(f.encode(1000.0, true), 0x7e);
        assert!(f.decode(f.encode(1000.0, false)).is_nan());
        assert_eq!(f.decode(f.encode(0.3, true)), 0.3125);
    }

    #[test]
    fn f8e5m2_overflow_is_inf_without_saturation() {
        let f = MiniFloat::of(DType::F8E5M2).unwrap();
        assert_eq!(f.max_finite(), 57344.0);
        assert_eq!(f.decode(f.encode(1e6, false)), f32::INFINITY);
        assert_eq!(f.decode(f.encode(-1e6, true)), -57344.0);
    }

    #[test]
    fn f4e2m1_values() {
        let f = MiniFloat::of(DType::F4E2M1).unwrap();
        let vals: Vec<f32> = (0..8).map(|b| f.decode(b)).collect();
        assert_eq!(vals, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert_eq!(f.decode(f.encode(2.5, false)), 2.0); // tie to even
    }

    #[test]
    fn packed_int4_sign_extends() {
        let bytes = [0xF7u8];
        assert_eq!(load_as_i64(DType::I4, &bytes, 0), Some(7));
        assert_eq!(load_as_i64(DType::I4, &bytes, 1), Some(-1));
        assert_eq!(load_as_i64(DType::U4, &bytes, 1), Some(15));
    }
}
