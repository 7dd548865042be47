//! Registry lines for selections whose result size depends on the data (run on the host by
//! the plan; see `tessera_kir::HostOp`).

use super::{op, Entry};
use tessera_ir::Op;

pub(crate) const OPS: &[Entry] = &[
    op("NonZero", Op::NonZero),
    op("Compress", Op::Compress),
    op("Unique", Op::Unique),
    op("NonMaxSuppression", Op::NonMaxSuppression),
];
