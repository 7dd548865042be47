//! On-chip and global memories: bytes plus a per-byte tag that records whether
//! a byte was ever written and whether it holds real data or DMA padding.

use crate::isa::Mem;

/// Tag bit: the byte has been written.
pub const WRITTEN: u8 = 1;
/// Tag bit: the byte holds real data (not zero padding made by a DMA).
pub const REAL: u8 = 2;

/// One memory space.
#[derive(Debug, Clone)]
pub struct MemBuf {
    pub kind: Mem,
    pub data: Vec<u8>,
    pub tag: Vec<u8>,
}

impl MemBuf {
    /// A zeroed, untagged memory of `len` bytes.
    pub fn new(kind: Mem, len: usize) -> Self {
        MemBuf {
            kind,
            data: vec![0; len],
            tag: vec![0; len],
        }
    }

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Mutable access to two distinct memories at once (DMA reads one, writes the other).
pub fn two_mut(mems: &mut [MemBuf], a: usize, b: usize) -> (&mut MemBuf, &mut MemBuf) {
    assert_ne!(
        a, b,
        "a DMA edge always joins two different memories (checked on load)"
    );
    if a < b {
        let (lo, hi) = mems.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = mems.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}
