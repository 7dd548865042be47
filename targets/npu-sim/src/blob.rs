//! The npu-sim code blob stored in artifacts: a small header that fixes where each kernel
//! parameter lives in GM (the code generator lays GM out statically, so the program addresses
//! buffers with immediates), then the 16-byte instruction words. Every field is checked on
//! decode; a blob that does not decode is refused with a message naming the field.

use crate::error::{Result, SimError};
use crate::isa::{decode_program, encode_program, Instr};

const MAGIC: &[u8; 4] = b"TNPU";

/// The registers a fired kernel-IR `trap` leaves at `HALT`: the offending value, the trap code,
/// and 1 (0 when no trap fired: registers start at 0).
pub const TRAP_REGS: [u8; 3] = [21, 22, 23];
const VERSION: u32 = 1;

/// One kernel parameter's place in GM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSlot {
    /// GM byte address of the buffer.
    pub addr: u64,
    /// Bytes the kernel may touch.
    pub bytes: u64,
    /// Whether the kernel writes it (it is copied back after the run).
    pub written: bool,
}

/// A decoded blob.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    pub params: Vec<ParamSlot>,
    /// GM bytes the launch needs: parameters and the kernel's GM scratch.
    pub gm_bytes: u64,
    pub program: Vec<Instr>,
}

impl Blob {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.params.len() as u32).to_le_bytes());
        for p in &self.params {
            out.extend_from_slice(&p.addr.to_le_bytes());
            out.extend_from_slice(&p.bytes.to_le_bytes());
            out.push(p.written as u8);
        }
        out.extend_from_slice(&self.gm_bytes.to_le_bytes());
        out.extend_from_slice(&encode_program(&self.program));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Blob> {
        let bad = |m: String| SimError::Args(format!("npu-sim blob: {m}"));
        let mut at = 0usize;
        let mut take = |n: usize, what: &str| -> Result<&[u8]> {
            let s = bytes
                .get(at..at + n)
                .ok_or_else(|| bad(format!("truncated in the {what}")))?;
            at += n;
            Ok(s)
        };
        if take(4, "magic")? != MAGIC {
            return Err(bad("bad magic (not an npu-sim kernel)".into()));
        }
        let u32_of = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let version = u32_of(take(4, "version")?);
        if version != VERSION {
            return Err(bad(format!(
                "version {version}, this simulator reads {VERSION}"
            )));
        }
        let n = u32_of(take(4, "parameter count")?) as usize;
        if n > 1 << 16 {
            return Err(bad(format!("{n} parameters")));
        }
        let mut params = Vec::with_capacity(n);
        for i in 0..n {
            let addr = u64_of(take(8, "parameter table")?);
            let pbytes = u64_of(take(8, "parameter table")?);
            let written = match take(1, "parameter table")?[0] {
                0 => false,
                1 => true,
                f => return Err(bad(format!("parameter {i}: written flag {f}"))),
            };
            params.push(ParamSlot {
                addr,
                bytes: pbytes,
                written,
            });
        }
        let gm_bytes = u64_of(take(8, "GM size")?);
        for (i, p) in params.iter().enumerate() {
            if p.addr.checked_add(p.bytes).is_none_or(|e| e > gm_bytes) {
                return Err(bad(format!(
                    "parameter {i} at {:#x}+{} lies outside the {gm_bytes}-byte GM",
                    p.addr, p.bytes
                )));
            }
        }
        let program = decode_program(&bytes[at..])?;
        Ok(Blob {
            params,
            gm_bytes,
            program,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let b = Blob {
            params: vec![
                ParamSlot {
                    addr: 0x1000,
                    bytes: 16,
                    written: false,
                },
                ParamSlot {
                    addr: 0x1200,
                    bytes: 4,
                    written: true,
                },
            ],
            gm_bytes: 0x1204,
            program: vec![Instr::Li { rd: 1, imm: 3 }, Instr::Halt],
        };
        let bytes = b.encode();
        assert_eq!(Blob::decode(&bytes).unwrap(), b);
        let e = Blob::decode(&bytes[..10]).unwrap_err().to_string();
        assert!(e.contains("truncated in the parameter"), "{e}");
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(Blob::decode(&bad)
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
        let mut bad = b.clone();
        bad.gm_bytes = 0x1100;
        assert!(Blob::decode(&bad.encode())
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }
}
