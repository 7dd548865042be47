//! What is known about a kernel's values without running it: the integer constants, for
//! passes and launchers that estimate work from loop bounds (the host's thread heuristic, the
//! fuzz targets' work bound), and indices that are another value plus a constant, which code
//! generators fold into an address's displacement.

use crate::kernel::{BinOp, Block, InstKind, Scalar, Ty, Val};
use std::collections::HashMap;

/// Every value of `b` (and the blocks nested in it) defined by an integer `const`.
pub fn int_constants(b: &Block) -> HashMap<Val, i64> {
    fn walk(b: &Block, out: &mut HashMap<Val, i64>) {
        for i in &b.insts {
            match &i.kind {
                InstKind::Const(Scalar::Int(v)) => {
                    if let Some(&r) = i.results.first() {
                        out.insert(r, *v);
                    }
                }
                InstKind::For { body, .. } => walk(body, out),
                InstKind::If {
                    then_blk, else_blk, ..
                } => {
                    walk(then_blk, out);
                    walk(else_blk, out);
                }
                _ => {}
            }
        }
    }
    let mut out = HashMap::new();
    walk(b, &mut out);
    out
}

/// Every `i64` value of `b` (and the blocks nested in it) that is `x + c` (or `x - c`) for a
/// constant `c`, through chains of such adds, as `(x, c)` with `x` not itself of that form.
/// Code generators address `x + c` as `x` plus a displacement, so loads that differ by a
/// constant share one address computation. `types` gives each value's type.
pub fn index_offsets(b: &Block, types: &dyn Fn(Val) -> Option<Ty>) -> HashMap<Val, (Val, i64)> {
    fn walk(
        b: &Block,
        consts: &HashMap<Val, i64>,
        types: &dyn Fn(Val) -> Option<Ty>,
        out: &mut HashMap<Val, (Val, i64)>,
    ) {
        for i in &b.insts {
            match &i.kind {
                InstKind::Binary(op @ (BinOp::Add | BinOp::Sub), x, y) => {
                    let Some(&r) = i.results.first() else {
                        continue;
                    };
                    if types(r) != Some(Ty::INDEX) {
                        continue;
                    }
                    let (base, c) = match (consts.get(x), consts.get(y), op) {
                        (_, Some(&c), BinOp::Add) => (*x, c),
                        (Some(&c), _, BinOp::Add) => (*y, c),
                        (_, Some(&c), BinOp::Sub) => match c.checked_neg() {
                            Some(n) => (*x, n),
                            None => continue,
                        },
                        _ => continue,
                    };
                    if consts.contains_key(&base) {
                        continue;
                    }
                    let (root, c0) = out.get(&base).copied().unwrap_or((base, 0));
                    if let Some(sum) = c0.checked_add(c) {
                        out.insert(r, (root, sum));
                    }
                }
                InstKind::For { body, .. } => walk(body, consts, types, out),
                InstKind::If {
                    then_blk, else_blk, ..
                } => {
                    walk(then_blk, consts, types, out);
                    walk(else_blk, consts, types, out);
                }
                _ => {}
            }
        }
    }
    let consts = int_constants(b);
    let mut out = HashMap::new();
    walk(b, &consts, types, &mut out);
    out
}

/// The `load`s of `b` (by result value) that a code generator may treat as free of side
/// effects, so that its optimizer can move them next to their use (where x86 folds a load
/// into the instruction that consumes it, such as a broadcast). A load qualifies when:
///
/// - nothing in the kernel writes its buffer (`store`, `tile.store`, `tile.copy` into it,
///   `mma` accumulating in it), so it reads the same value wherever it runs; and
/// - it sits inside a `for`, and its address (through `offsets`, the displacements of
///   [`index_offsets`]) depends on that innermost loop's induction variable or carried
///   values, through pure arithmetic.
///
/// The second condition is what makes moving it safe: an optimizer hoists a pure value only
/// as far as its operands allow, and these operands are defined in the loop trip, so the load
/// never runs where the kernel would not have run it (ahead of the `if` that guards an
/// access, or in a loop that makes no trip).
pub fn movable_loads(
    b: &Block,
    offsets: &HashMap<Val, (Val, i64)>,
) -> std::collections::HashSet<Val> {
    use std::collections::HashSet;
    fn written(b: &Block, out: &mut HashSet<u32>) {
        for i in &b.insts {
            match &i.kind {
                InstKind::Store { buf, .. } => {
                    out.insert(buf.0);
                }
                InstKind::TileStore { dst, .. } | InstKind::TileCopy { dst, .. } => {
                    out.insert(dst.view.buf.0);
                }
                InstKind::Mma { c, .. } => {
                    out.insert(c.buf.0);
                }
                InstKind::For { body, .. } => written(body, out),
                InstKind::If {
                    then_blk, else_blk, ..
                } => {
                    written(then_blk, out);
                    written(else_blk, out);
                }
                _ => {}
            }
        }
    }
    struct Walk<'a> {
        written: HashSet<u32>,
        offsets: &'a HashMap<Val, (Val, i64)>,
        /// The loop depth each value varies with (0: the same in every trip of every loop).
        depth: HashMap<Val, u32>,
        out: HashSet<Val>,
    }
    impl Walk<'_> {
        fn of(&self, v: Val) -> u32 {
            self.depth.get(&v).copied().unwrap_or(0)
        }
        fn block(&mut self, b: &Block, d: u32) {
            for i in &b.insts {
                let result = match &i.kind {
                    InstKind::For { iv, iter, body, .. } => {
                        for &v in std::iter::once(iv).chain(iter) {
                            self.depth.insert(v, d + 1);
                        }
                        self.block(body, d + 1);
                        // Its results are defined where the loop ends, at this depth.
                        d
                    }
                    InstKind::If {
                        then_blk, else_blk, ..
                    } => {
                        self.block(then_blk, d);
                        self.block(else_blk, d);
                        d
                    }
                    InstKind::Load { buf, index, .. } => {
                        let addr = self.offsets.get(index).map_or(*index, |&(x, _)| x);
                        if d > 0 && !self.written.contains(&buf.0) && self.of(addr) == d {
                            if let Some(&r) = i.results.first() {
                                self.out.insert(r);
                            }
                        }
                        // Either way its value is this trip's.
                        d
                    }
                    // Pure arithmetic varies with its deepest operand. (A `for` or `if`
                    // is handled above, so this clone never copies a nested block.)
                    kind => {
                        let deepest = std::cell::Cell::new(0);
                        crate::passes::rewrite::map_operands(&mut kind.clone(), |v| {
                            deepest.set(deepest.get().max(self.of(v)));
                            v
                        });
                        deepest.get()
                    }
                };
                for &r in &i.results {
                    self.depth.insert(r, result);
                }
            }
        }
    }
    let mut w = Walk {
        written: HashSet::new(),
        offsets,
        depth: HashMap::new(),
        out: HashSet::new(),
    };
    written(b, &mut w.written);
    w.block(b, 0);
    w.out
}
