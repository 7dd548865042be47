//! Shared helpers for op lowerings: strides, broadcasting index arithmetic in kernel IR, and
//! the elementwise kernel skeleton most ops reuse.

use tessera_kir::{KernelBuilder, Val};

/// Row-major strides of `dims`, in elements.
pub fn strides(dims: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Strides for reading an input of `in_dims` broadcast (numpy rules, right-aligned) to
/// `out_dims`: broadcast axes get stride 0. The result has `out_dims.len()` entries.
pub fn broadcast_strides(in_dims: &[u64], out_dims: &[u64]) -> Vec<u64> {
    let s = strides(in_dims);
    let off = out_dims.len() - in_dims.len();
    (0..out_dims.len())
        .map(|i| if i < off || in_dims[i - off] == 1 { 0 } else { s[i - off] })
        .collect()
}

/// Emits the flat index `sum(coord[i] * stride[i])`, skipping zero strides.
pub fn linear_index(b: &mut KernelBuilder, coords: &[Val], strides: &[u64]) -> Val {
    let mut acc: Option<Val> = None;
    for (&c, &s) in coords.iter().zip(strides) {
        if s == 0 {
            continue;
        }
        let term = if s == 1 {
            c
        } else {
            let sv = b.index(s as i64);
            b.mul(c, sv)
        };
        acc = Some(match acc {
            Some(a) => b.add(a, term),
            None => term,
        });
    }
    acc.unwrap_or_else(|| b.index(0))
}

/// Emits the coordinates of flat row-major index `flat` in a tensor of `dims`.
pub fn unravel(b: &mut KernelBuilder, flat: Val, dims: &[u64]) -> Vec<Val> {
    let st = strides(dims);
    let mut coords = Vec::with_capacity(dims.len());
    let mut rem = flat;
    for (i, &s) in st.iter().enumerate() {
        if i + 1 == dims.len() {
            coords.push(rem);
        } else {
            let sv = b.index(s as i64);
            let q = b.div(rem, sv);
            coords.push(q);
            let qs = b.mul(q, sv);
            rem = b.sub(rem, qs);
        }
    }
    coords
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_strides_right_align() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(broadcast_strides(&[], &[2]), vec![0]);
    }
}
