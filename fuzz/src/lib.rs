//! Shared helpers of the fuzz targets (`fuzz_targets/*.rs`, one per parser of untrusted bytes;
//! see docs/security.md). The targets only check that nothing panics, overflows or runs away:
//! every input must give `Ok` or an `Err`.

use std::collections::HashMap;
use tessera_kir::{Block, InstKind, Kernel, Val};

/// The most program-instance loop trips a fuzzed kernel may take to be interpreted. Kernel IR
/// has no step limit (a loop bound may be any value), so only kernels whose work is bounded
/// by constants are run; the rest are parsed and verified only.
pub const MAX_TRIPS: u128 = 1 << 16;

/// The most parameter bytes a fuzzed kernel may ask for to be interpreted.
pub const MAX_PARAM_BYTES: u64 = 1 << 20;

/// Grid points times the loop trips of one instance, if every loop has constant bounds (an
/// upper bound on the instructions the interpreter executes, up to the body length).
pub fn bounded_work(k: &Kernel) -> Option<u128> {
    fn trips(b: &Block, c: &HashMap<Val, i64>) -> Option<u128> {
        let mut total: u128 = 1;
        for i in &b.insts {
            let t = match &i.kind {
                InstKind::For { lo, hi, step, body, .. } => {
                    let (l, h, s) = (*c.get(lo)?, *c.get(hi)?, *c.get(step)?);
                    let n = if h <= l { 0 } else { (h as i128 - l as i128) as u128 / s.max(1) as u128 + 1 };
                    n.checked_mul(trips(body, c)?)?
                }
                InstKind::If { then_blk, else_blk, .. } => trips(then_blk, c)?.max(trips(else_blk, c)?),
                _ => 1,
            };
            total = total.checked_add(t)?;
        }
        Some(total)
    }
    let c = tessera_kir::constants::int_constants(&k.body);
    let grid = k.grid.iter().try_fold(1u128, |a, &g| a.checked_mul(g as u128))?;
    grid.checked_mul(trips(&k.body, &c)?)
}
