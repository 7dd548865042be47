//! Registry lines for the random ops (default domain). They are seeded and deterministic:
//! see `tessera-lower`'s `random.rs` for the generator.

use super::{op, Entry};
use tessera_ir::Op;

pub(crate) const OPS: &[Entry] = &[
    op("RandomUniform", Op::RandomUniform),
    op("RandomNormal", Op::RandomNormal),
    op("RandomUniformLike", Op::RandomUniformLike),
    op("RandomNormalLike", Op::RandomNormalLike),
    op("Bernoulli", Op::Bernoulli),
    op("Multinomial", Op::Multinomial),
];
