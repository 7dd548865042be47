//! The rewriting driver the passes share: it walks a kernel's blocks in order, substitutes
//! replaced values in every later operand, and lets a per-instruction callback either keep an
//! instruction or emit a replacement through a [`KernelBuilder`].

use crate::builder::KernelBuilder;
use crate::error::KirError;
use crate::kernel::*;

/// What the callback decided for one instruction.
pub(crate) enum Action {
    /// Keep the instruction (its operands already substituted).
    Keep,
    /// The callback emitted a replacement; these values stand for the old results.
    Replace(Vec<Val>),
}

/// Calls `f` on every instruction but `for`, `if` and `yield` (whose blocks it walks), in
/// program order, with operands already substituted. Nested blocks are rebuilt in place.
pub(crate) fn rewrite(
    k: &mut Kernel,
    f: &mut dyn FnMut(&mut KernelBuilder, &Inst) -> Result<Action, KirError>,
) -> Result<(), KirError> {
    let taken = std::mem::replace(
        k,
        Kernel {
            name: String::new(),
            bufs: Vec::new(),
            num_params: 0,
            grid: Vec::new(),
            body: Block::default(),
            vals: Vec::new(),
        },
    );
    let mut map: Vec<Val> = (0..taken.vals.len() as u32).map(Val).collect();
    let (mut b, body) = KernelBuilder::resume(taken);
    let r = block(&mut b, body, &mut map, f);
    *k = b.finish();
    r
}

fn block(
    b: &mut KernelBuilder,
    blk: Block,
    map: &mut Vec<Val>,
    f: &mut dyn FnMut(&mut KernelBuilder, &Inst) -> Result<Action, KirError>,
) -> Result<(), KirError> {
    for mut inst in blk.insts {
        map_operands(&mut inst.kind, |v| {
            map.get(v.0 as usize).copied().unwrap_or(v)
        });
        match inst.kind {
            InstKind::For {
                lo,
                hi,
                step,
                iv,
                iter,
                init,
                body,
            } => {
                b.open_block();
                block(b, body, map, f)?;
                let body = b.close_block();
                b.push_inst(Inst {
                    results: inst.results,
                    kind: InstKind::For {
                        lo,
                        hi,
                        step,
                        iv,
                        iter,
                        init,
                        body,
                    },
                });
            }
            InstKind::If {
                cond,
                then_blk,
                else_blk,
            } => {
                b.open_block();
                block(b, then_blk, map, f)?;
                let then_blk = b.close_block();
                b.open_block();
                block(b, else_blk, map, f)?;
                let else_blk = b.close_block();
                b.push_inst(Inst {
                    results: inst.results,
                    kind: InstKind::If {
                        cond,
                        then_blk,
                        else_blk,
                    },
                });
            }
            InstKind::Yield(_) => b.push_inst(inst),
            _ => match f(b, &inst)? {
                Action::Keep => b.push_inst(inst),
                Action::Replace(new) => {
                    for (&old, &n) in inst.results.iter().zip(new.iter()) {
                        let i = old.0 as usize;
                        if map.len() <= i {
                            map.resize(i + 1, old);
                        }
                        map[i] = n;
                    }
                }
            },
        }
    }
    Ok(())
}

/// Applies `f` to every value an instruction uses (not the values it defines, and not those
/// of nested blocks).
pub(crate) fn map_operands(kind: &mut InstKind, f: impl Fn(Val) -> Val) {
    use InstKind::*;
    match kind {
        Const(_) | ProgramId(_) => {}
        Unary(_, x) | Cast(x, _) | Bitcast(x) | Splat(x) | Extract(x, _) | ReduceLanes(_, x) => {
            *x = f(*x)
        }
        Binary(_, a, b) | Cmp(_, a, b) => {
            *a = f(*a);
            *b = f(*b);
        }
        Select(c, a, b) | Fma(c, a, b) | Dot(c, a, b) => {
            *c = f(*c);
            *a = f(*a);
            *b = f(*b);
        }
        Math(_, args) | Yield(args) => {
            for a in args.iter_mut() {
                *a = f(*a);
            }
        }
        Load { index, .. } => *index = f(*index),
        Store { index, value, .. } => {
            *index = f(*index);
            *value = f(*value);
        }
        For {
            lo, hi, step, init, ..
        } => {
            *lo = f(*lo);
            *hi = f(*hi);
            *step = f(*step);
            for a in init.iter_mut() {
                *a = f(*a);
            }
        }
        If { cond, .. } => *cond = f(*cond),
        Mma { a, b, c, .. } => {
            a.offset = f(a.offset);
            b.offset = f(b.offset);
            c.offset = f(c.offset);
        }
        Trap { cond, value, .. } => {
            *cond = f(*cond);
            *value = f(*value);
        }
        TileLoad { src: t, .. } => map_tile_at(t, &f),
        TileStore { dst, value } => {
            map_tile_at(dst, &f);
            *value = f(*value);
        }
        TileCopy { src, dst, .. } => {
            map_tile_at(src, &f);
            map_tile_at(dst, &f);
        }
        TileMma { a, b, acc } | TileDot { a, b, acc } => {
            *a = f(*a);
            *b = f(*b);
            *acc = f(*acc);
        }
        TileReduce(_, _, x) | TileBroadcast(x) | TileTranspose(x) => *x = f(*x),
        TileIndex(_) | Barrier => {}
    }
}

fn map_tile_at(t: &mut TileAt, f: &impl Fn(Val) -> Val) {
    t.view.offset = f(t.view.offset);
    for o in t.origin.iter_mut() {
        *o = f(*o);
    }
}
