//! The host kernel blob: a fixed little-endian header, one byte length per parameter, then
//! position-independent x86_64 machine code. [`BlobHeader::encode`] writes it at compile time,
//! [`BlobHeader::decode`] validates it at load time and never panics on bad bytes.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "TSHK"
//!      4     2  format version (2)
//!      6     2  reserved, 0
//!      8    24  grid extents, 3 x u64 (missing axes are 1)
//!     32     4  parameter count n
//!     36     4  reserved, 0
//!     40     8  scratch bytes per program instance (local/shared buffers)
//!     48     8  estimated work per program instance (used to decide on threads)
//!     56     8  code length c
//!     64    8n  minimum byte length of each parameter buffer
//! 64+8n      c  machine code; the entry point is at offset 0
//! ```
//!
//! The entry point is `extern "C" fn(args: *const *mut u8, scratch: *mut u8, begin: u64,
//! end: u64, trap: *mut i64)`: it runs the program instances whose row-major linear grid index
//! lies in `begin..end`, with `args[i]` the base of parameter `i` and `scratch` a
//! 16-byte-aligned area of `scratch bytes` private to the calling thread. When a kernel-IR
//! `trap` fires it writes `[1, code, value]` to the three `i64`s at `trap` (private to the
//! calling thread too) and returns at once; otherwise it leaves them alone. Version 1 blobs
//! had no `trap` argument and are refused.

pub const MAGIC: [u8; 4] = *b"TSHK";
pub const VERSION: u16 = 2;
pub const FIXED_LEN: usize = 64;

/// Bounds that a well-formed blob never reaches; a blob past them is refused as corrupt
/// before anything is allocated for it.
const MAX_PARAMS: u32 = 1 << 16;
const MAX_SCRATCH: u64 = 1 << 32;

/// Everything in a blob but the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    pub grid: [u64; 3],
    pub scratch_bytes: u64,
    pub work: u64,
    pub param_bytes: Vec<u64>,
}

impl BlobHeader {
    /// The whole blob: header, parameter lengths, code.
    pub fn encode(&self, code: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 8 * self.param_bytes.len() + code.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        for g in self.grid {
            out.extend_from_slice(&g.to_le_bytes());
        }
        out.extend_from_slice(&(self.param_bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.scratch_bytes.to_le_bytes());
        out.extend_from_slice(&self.work.to_le_bytes());
        out.extend_from_slice(&(code.len() as u64).to_le_bytes());
        for b in &self.param_bytes {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out.extend_from_slice(code);
        out
    }

    /// Splits a blob into its header and code, checking every field.
    pub fn decode(blob: &[u8]) -> Result<(BlobHeader, &[u8]), String> {
        if blob.len() < FIXED_LEN {
            return Err(format!(
                "host code blob is truncated: {} bytes, the header alone is {FIXED_LEN}",
                blob.len()
            ));
        }
        if blob[0..4] != MAGIC {
            return Err("not a host code blob (bad magic)".to_string());
        }
        let version = u16::from_le_bytes([blob[4], blob[5]]);
        if version != VERSION {
            return Err(format!(
                "host code blob has format version {version}, this runtime reads version {VERSION}"
            ));
        }
        let u64_at = |off: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&blob[off..off + 8]);
            u64::from_le_bytes(b)
        };
        let grid = [u64_at(8), u64_at(16), u64_at(24)];
        let n = u32::from_le_bytes([blob[32], blob[33], blob[34], blob[35]]);
        let scratch_bytes = u64_at(40);
        let work = u64_at(48);
        let code_len = u64_at(56);
        if n > MAX_PARAMS {
            return Err(format!("host code blob claims {n} parameters (corrupt)"));
        }
        if scratch_bytes > MAX_SCRATCH {
            return Err(format!(
                "host code blob claims {scratch_bytes} scratch bytes per instance (corrupt)"
            ));
        }
        if grid
            .iter()
            .try_fold(1u64, |acc, &g| acc.checked_mul(g))
            .is_none()
        {
            return Err(format!(
                "host code blob has a grid of {grid:?} points, which overflows"
            ));
        }
        let expected = (FIXED_LEN as u64)
            .checked_add(8 * n as u64)
            .and_then(|x| x.checked_add(code_len));
        if expected != Some(blob.len() as u64) {
            return Err(format!(
                "host code blob is truncated or padded: {} bytes, its header describes {}",
                blob.len(),
                expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string())
            ));
        }
        if code_len == 0 {
            return Err("host code blob holds no code".to_string());
        }
        let params_end = FIXED_LEN + 8 * n as usize;
        let param_bytes = (0..n as usize).map(|i| u64_at(FIXED_LEN + 8 * i)).collect();
        Ok((
            BlobHeader {
                grid,
                scratch_bytes,
                work,
                param_bytes,
            },
            &blob[params_end..],
        ))
    }

    /// Program instances in the grid.
    pub fn instances(&self) -> u64 {
        // `decode` checked that the product does not overflow; `encode`'s callers build the
        // grid from a verified kernel. Saturating keeps this total either way.
        self.grid.iter().fold(1u64, |acc, &g| acc.saturating_mul(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (BlobHeader, Vec<u8>) {
        let h = BlobHeader {
            grid: [2, 3, 1],
            scratch_bytes: 32,
            work: 7,
            param_bytes: vec![16, 48],
        };
        let blob = h.encode(&[0xc3, 0x90]);
        (h, blob)
    }

    #[test]
    fn round_trips() {
        let (h, blob) = sample();
        let (d, code) = BlobHeader::decode(&blob).unwrap();
        assert_eq!(d, h);
        assert_eq!(code, &[0xc3, 0x90]);
        assert_eq!(d.instances(), 6);
    }

    #[test]
    fn every_truncation_is_refused() {
        let (_, blob) = sample();
        for len in 0..blob.len() {
            let err = BlobHeader::decode(&blob[..len]).unwrap_err();
            assert!(err.contains("truncated"), "{len}: {err}");
        }
    }

    #[test]
    fn bad_magic_version_and_counts_are_refused() {
        let (_, blob) = sample();
        let mut b = blob.clone();
        b[0] = b'X';
        assert_eq!(
            BlobHeader::decode(&b).unwrap_err(),
            "not a host code blob (bad magic)"
        );
        let mut b = blob.clone();
        b[4] = 9;
        assert!(BlobHeader::decode(&b)
            .unwrap_err()
            .contains("format version 9"));
        let mut b = blob.clone();
        b[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BlobHeader::decode(&b)
            .unwrap_err()
            .contains("parameters (corrupt)"));
        let mut b = blob.clone();
        b[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(BlobHeader::decode(&b)
            .unwrap_err()
            .contains("more than 2^64"));
        let mut b = blob;
        for g in 0..3 {
            b[8 + 8 * g..16 + 8 * g].copy_from_slice(&(1u64 << 30).to_le_bytes());
        }
        assert!(BlobHeader::decode(&b).unwrap_err().contains("overflows"));
    }
}
