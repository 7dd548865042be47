//! [`KernelBuilder`]: the one way lowering, math routines and tests construct kernels. It
//! assigns value types as it goes, so a built kernel is well-typed by construction (the
//! verifier still checks).

use crate::kernel::*;
use tessera_ir::DType;

/// Builds a [`Kernel`] instruction by instruction. Nested blocks are built through closures.
pub struct KernelBuilder {
    kernel: Kernel,
    /// Blocks under construction; the last is the innermost.
    stack: Vec<Block>,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>) -> KernelBuilder {
        KernelBuilder {
            kernel: Kernel {
                name: name.into(),
                bufs: Vec::new(),
                num_params: 0,
                grid: Vec::new(),
                body: Block::default(),
                vals: Vec::new(),
            },
            stack: vec![Block::default()],
        }
    }

    /// Declares a global buffer parameter. Parameters must be declared before any local.
    pub fn param(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        len: u64,
        access: Access,
    ) -> Buf {
        assert_eq!(
            self.kernel.num_params,
            self.kernel.bufs.len(),
            "params must precede locals"
        );
        self.kernel.num_params += 1;
        self.push_buf(BufDecl {
            name: name.into(),
            space: Space::Global,
            dtype,
            len,
            access,
        })
    }

    /// Declares a scratch buffer in `space` (shared or local).
    pub fn local(&mut self, name: impl Into<String>, space: Space, dtype: DType, len: u64) -> Buf {
        self.push_buf(BufDecl {
            name: name.into(),
            space,
            dtype,
            len,
            access: Access::ReadWrite,
        })
    }

    fn push_buf(&mut self, d: BufDecl) -> Buf {
        self.kernel.bufs.push(d);
        Buf(self.kernel.bufs.len() as u32 - 1)
    }

    pub fn set_grid(&mut self, grid: &[u64]) {
        self.kernel.grid = grid.to_vec();
    }

    pub fn ty(&self, v: Val) -> Ty {
        self.kernel.vals[v.0 as usize]
    }

    pub fn buf_decl(&self, b: Buf) -> &BufDecl {
        &self.kernel.bufs[b.0 as usize]
    }

    /// A fresh value of type `ty`, defined by nobody yet (used for block parameters).
    fn fresh(&mut self, ty: Ty) -> Val {
        self.kernel.vals.push(ty);
        Val(self.kernel.vals.len() as u32 - 1)
    }

    fn emit(&mut self, kind: InstKind, result_tys: &[Ty]) -> Vec<Val> {
        let results: Vec<Val> = result_tys.iter().map(|&t| self.fresh(t)).collect();
        self.stack
            .last_mut()
            .expect("block stack")
            .insts
            .push(Inst {
                results: results.clone(),
                kind,
            });
        results
    }

    fn emit1(&mut self, kind: InstKind, ty: Ty) -> Val {
        self.emit(kind, &[ty])[0]
    }

    // ---- constants ----

    pub fn constant(&mut self, ty: Ty, value: Scalar) -> Val {
        self.emit1(InstKind::Const(value), ty)
    }

    /// An `i64` index constant.
    pub fn index(&mut self, v: i64) -> Val {
        self.constant(Ty::INDEX, Scalar::Int(v))
    }

    pub fn const_int(&mut self, ty: Ty, v: i64) -> Val {
        self.constant(ty, Scalar::Int(v))
    }

    pub fn const_float(&mut self, ty: Ty, v: f64) -> Val {
        self.constant(ty, Scalar::Float(v))
    }

    /// A constant of `ty` holding `v`, as an int or a float depending on the dtype.
    pub fn const_num(&mut self, ty: Ty, v: f64) -> Val {
        if ty.elem.is_float() {
            self.const_float(ty, v)
        } else {
            self.const_int(ty, v as i64)
        }
    }

    pub fn program_id(&mut self, axis: u8) -> Val {
        self.emit1(InstKind::ProgramId(axis), Ty::INDEX)
    }

    // ---- arithmetic ----

    pub fn unary(&mut self, op: UnOp, x: Val) -> Val {
        let t = self.ty(x);
        self.emit1(InstKind::Unary(op, x), t)
    }

    pub fn binary(&mut self, op: BinOp, a: Val, b: Val) -> Val {
        let t = self.ty(a);
        self.emit1(InstKind::Binary(op, a, b), t)
    }

    pub fn add(&mut self, a: Val, b: Val) -> Val {
        self.binary(BinOp::Add, a, b)
    }

    pub fn sub(&mut self, a: Val, b: Val) -> Val {
        self.binary(BinOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: Val, b: Val) -> Val {
        self.binary(BinOp::Mul, a, b)
    }

    pub fn div(&mut self, a: Val, b: Val) -> Val {
        self.binary(BinOp::Div, a, b)
    }

    pub fn min(&mut self, a: Val, b: Val) -> Val {
        self.binary(BinOp::Min, a, b)
    }

    pub fn max(&mut self, a: Val, b: Val) -> Val {
        self.binary(BinOp::Max, a, b)
    }

    pub fn cmp(&mut self, op: CmpOp, a: Val, b: Val) -> Val {
        let t = self.ty(a).with_elem(DType::Bool);
        self.emit1(InstKind::Cmp(op, a, b), t)
    }

    pub fn select(&mut self, cond: Val, a: Val, b: Val) -> Val {
        let t = self.ty(a);
        self.emit1(InstKind::Select(cond, a, b), t)
    }

    /// `a * b + c` with one rounding (f32/f64).
    pub fn fma(&mut self, a: Val, b: Val, c: Val) -> Val {
        let t = self.ty(a);
        self.emit1(InstKind::Fma(a, b, c), t)
    }

    /// `acc + Σ_g a[G·l+g] · b[G·l+g]` per lane `l` of the i32 `acc` (see [`InstKind::Dot`]).
    pub fn dot(&mut self, acc: Val, a: Val, b: Val) -> Val {
        let t = self.ty(acc);
        self.emit1(InstKind::Dot(acc, a, b), t)
    }

    /// Casts `x` to element type `to` (keeping its lane count).
    pub fn cast(&mut self, x: Val, to: DType, mode: CastMode) -> Val {
        let t = self.ty(x).with_elem(to);
        if t == self.ty(x) {
            return x;
        }
        self.emit1(InstKind::Cast(x, mode), t)
    }

    pub fn bitcast(&mut self, x: Val, to: Ty) -> Val {
        self.emit1(InstKind::Bitcast(x), to)
    }

    pub fn splat(&mut self, x: Val, lanes: u16) -> Val {
        let t = Ty::vector(self.ty(x).elem, lanes);
        self.emit1(InstKind::Splat(x), t)
    }

    pub fn extract(&mut self, x: Val, lane: u16) -> Val {
        let t = Ty::scalar(self.ty(x).elem);
        self.emit1(InstKind::Extract(x, lane), t)
    }

    pub fn reduce_lanes(&mut self, op: ReduceOp, x: Val) -> Val {
        let t = Ty::scalar(self.ty(x).elem);
        self.emit1(InstKind::ReduceLanes(op, x), t)
    }

    pub fn math(&mut self, f: MathFn, args: &[Val]) -> Val {
        let t = self.ty(args[0]);
        self.emit1(InstKind::Math(f, args.to_vec()), t)
    }

    // ---- memory ----

    /// Loads `lanes` consecutive elements (1 = scalar) of `buf` starting at `index`.
    pub fn load(&mut self, buf: Buf, index: Val, lanes: u16) -> Val {
        let t = Ty::vector(self.buf_decl(buf).dtype, lanes);
        self.emit1(InstKind::Load { buf, index }, t)
    }

    pub fn store(&mut self, buf: Buf, index: Val, value: Val) {
        self.emit(InstKind::Store { buf, index, value }, &[]);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn mma(&mut self, a: TileRef, b: TileRef, c: TileRef, m: u32, n: u32, k: u32) {
        let a_ty = self.buf_decl(a.buf).dtype;
        let b_ty = self.buf_decl(b.buf).dtype;
        let acc = self.buf_decl(c.buf).dtype;
        self.emit(
            InstKind::Mma {
                a,
                b,
                c,
                m,
                n,
                k,
                a_ty,
                b_ty,
                acc,
            },
            &[],
        );
    }

    // ---- tiles ----

    /// A `rows × cols` tile splatted from scalar `x`.
    pub fn splat_tile(&mut self, x: Val, rows: u16, cols: u16) -> Val {
        let t = Ty::tile(self.ty(x).elem, rows, cols);
        self.emit1(InstKind::Splat(x), t)
    }

    /// A constant `rows × cols` tile of element type `elem`.
    pub fn const_tile(&mut self, elem: DType, rows: u16, cols: u16, v: f64) -> Val {
        let s = self.const_num(Ty::scalar(elem), v);
        self.splat_tile(s, rows, cols)
    }

    /// An accumulator tile (role `acc`) of `rows × cols` elements of `elem`, all `v`.
    pub fn acc_tile(&mut self, elem: DType, rows: u16, cols: u16, v: f64) -> Val {
        let s = self.const_num(Ty::scalar(elem), v);
        let t = Ty::tile(elem, rows, cols).with_role(Role::Acc);
        self.emit1(InstKind::Splat(s), t)
    }

    /// A masked load of a `rows × cols` tile whose elements have the buffer's dtype (or
    /// `elem`, a storage view of it); out-of-range lanes read `fill`.
    pub fn tile_load(&mut self, src: TileAt, rows: u16, cols: u16, fill: Scalar) -> Val {
        let elem = self.buf_decl(src.view.buf).dtype;
        self.emit1(InstKind::TileLoad { src, fill }, Ty::tile(elem, rows, cols))
    }

    /// A masked store of tile `value`.
    pub fn tile_store(&mut self, dst: TileAt, value: Val) {
        self.emit(InstKind::TileStore { dst, value }, &[]);
    }

    /// Copies a `rows × cols` tile between buffers, padding with `fill`.
    pub fn tile_copy(&mut self, src: TileAt, dst: TileAt, rows: u32, cols: u32, fill: Scalar) {
        self.emit(
            InstKind::TileCopy {
                src,
                dst,
                rows,
                cols,
                fill,
            },
            &[],
        );
    }

    /// `acc + a · b` on tiles; the result is an acc tile shaped like `acc`.
    pub fn tile_mma(&mut self, a: Val, b: Val, acc: Val) -> Val {
        let t = self.ty(acc).with_role(Role::Acc);
        self.emit1(InstKind::TileMma { a, b, acc }, t)
    }

    /// `acc + a · unpack(b)` for a packed `b` (see [`InstKind::TileDot`]); an acc tile shaped
    /// like `acc`.
    pub fn tile_dot(&mut self, a: Val, b: Val, acc: Val) -> Val {
        let t = self.ty(acc).with_role(Role::Acc);
        self.emit1(InstKind::TileDot { a, b, acc }, t)
    }

    pub fn tile_reduce(&mut self, op: ReduceOp, axis: Axis, x: Val) -> Val {
        let t = self.ty(x);
        let (r, c) = (t.rows, t.lanes);
        let rt = match axis {
            Axis::Rows => Ty::tile(t.elem, r, 1),
            Axis::Cols => Ty::tile(t.elem, 1, c),
        };
        self.emit1(InstKind::TileReduce(op, axis, x), rt)
    }

    /// Broadcasts a `1 × C`, `R × 1` or `1 × 1` tile to `rows × cols`.
    pub fn tile_broadcast(&mut self, x: Val, rows: u16, cols: u16) -> Val {
        let t = Ty::tile(self.ty(x).elem, rows, cols);
        if t.same_shape(self.ty(x)) {
            return x;
        }
        self.emit1(InstKind::TileBroadcast(x), t)
    }

    pub fn tile_transpose(&mut self, x: Val) -> Val {
        let t = self.ty(x);
        self.emit1(
            InstKind::TileTranspose(x),
            Ty::tile(t.elem, t.lanes, t.rows),
        )
    }

    pub fn tile_index(&mut self, axis: Axis, rows: u16, cols: u16) -> Val {
        self.emit1(InstKind::TileIndex(axis), Ty::tile(DType::I64, rows, cols))
    }

    pub fn barrier(&mut self) {
        self.emit(InstKind::Barrier, &[]);
    }

    // ---- structured control flow ----

    /// `for iv in lo..hi step step` carrying `init` values. The closure receives the builder,
    /// the induction variable and the carried parameters, and returns their next values.
    /// Returns the final carried values.
    pub fn for_loop(
        &mut self,
        lo: Val,
        hi: Val,
        step: Val,
        init: &[Val],
        body: impl FnOnce(&mut KernelBuilder, Val, &[Val]) -> Vec<Val>,
    ) -> Vec<Val> {
        let iv = self.fresh(Ty::INDEX);
        let tys: Vec<Ty> = init.iter().map(|&v| self.ty(v)).collect();
        let iter: Vec<Val> = tys.iter().map(|&t| self.fresh(t)).collect();
        self.stack.push(Block::default());
        let next = body(self, iv, &iter);
        self.emit(InstKind::Yield(next), &[]);
        let blk = self.stack.pop().expect("block stack");
        self.emit(
            InstKind::For {
                lo,
                hi,
                step,
                iv,
                iter,
                init: init.to_vec(),
                body: blk,
            },
            &tys,
        )
    }

    /// A loop over the constant range `lo..hi` with step 1 and nothing carried.
    pub fn range(&mut self, lo: i64, hi: i64, body: impl FnOnce(&mut KernelBuilder, Val)) {
        let (l, h, s) = (self.index(lo), self.index(hi), self.index(1));
        self.for_loop(l, h, s, &[], |b, iv, _| {
            body(b, iv);
            Vec::new()
        });
    }

    /// A loop over `lo..hi` with step 1 carrying values, for reductions.
    pub fn range_fold(
        &mut self,
        lo: i64,
        hi: i64,
        init: &[Val],
        body: impl FnOnce(&mut KernelBuilder, Val, &[Val]) -> Vec<Val>,
    ) -> Vec<Val> {
        let (l, h, s) = (self.index(lo), self.index(hi), self.index(1));
        self.for_loop(l, h, s, init, body)
    }

    /// `if cond { then } else { else }`; each branch returns one value per result type.
    pub fn if_else(
        &mut self,
        cond: Val,
        result_tys: &[Ty],
        then_f: impl FnOnce(&mut KernelBuilder) -> Vec<Val>,
        else_f: impl FnOnce(&mut KernelBuilder) -> Vec<Val>,
    ) -> Vec<Val> {
        self.stack.push(Block::default());
        let t = then_f(self);
        self.emit(InstKind::Yield(t), &[]);
        let then_blk = self.stack.pop().expect("block stack");
        self.stack.push(Block::default());
        let e = else_f(self);
        self.emit(InstKind::Yield(e), &[]);
        let else_blk = self.stack.pop().expect("block stack");
        self.emit(
            InstKind::If {
                cond,
                then_blk,
                else_blk,
            },
            result_tys,
        )
    }

    /// `if cond { then }` with no results.
    pub fn if_then(&mut self, cond: Val, then_f: impl FnOnce(&mut KernelBuilder)) {
        self.if_else(
            cond,
            &[],
            |b| {
                then_f(b);
                Vec::new()
            },
            |_| Vec::new(),
        );
    }

    // ---- for passes: emitting into an existing kernel ----

    /// A builder over an existing kernel's buffers and values with an empty body, for passes
    /// that rebuild the body; returns it with the kernel's old body. Emission allocates new
    /// values after the existing ones, so old values keep their numbers.
    pub fn resume(mut k: Kernel) -> (KernelBuilder, Block) {
        let body = std::mem::take(&mut k.body);
        (
            KernelBuilder {
                kernel: k,
                stack: vec![Block::default()],
            },
            body,
        )
    }

    /// Appends an existing instruction unchanged.
    pub fn push_inst(&mut self, inst: Inst) {
        self.stack.last_mut().expect("block stack").insts.push(inst);
    }

    /// Opens a nested block: emission goes into it until [`KernelBuilder::close_block`].
    pub fn open_block(&mut self) {
        self.stack.push(Block::default());
    }

    /// Closes the block opened last and returns it. (The outermost block, the body, is never
    /// closed this way; `finish` takes it.)
    pub fn close_block(&mut self) -> Block {
        if self.stack.len() > 1 {
            self.stack.pop().unwrap_or_default()
        } else {
            Block::default()
        }
    }

    /// A fresh value of type `ty`, to be defined by an instruction the caller builds.
    pub fn new_val(&mut self, ty: Ty) -> Val {
        self.fresh(ty)
    }

    /// Emits any instruction with fresh results of the given types.
    pub fn emit_inst(&mut self, kind: InstKind, result_tys: &[Ty]) -> Vec<Val> {
        self.emit(kind, result_tys)
    }

    /// Changes the type of an existing value (passes that retype values in place).
    pub fn set_ty(&mut self, v: Val, ty: Ty) {
        if let Some(t) = self.kernel.vals.get_mut(v.0 as usize) {
            *t = ty;
        }
    }

    /// The kernel under construction (its body is incomplete until `finish`).
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub fn finish(mut self) -> Kernel {
        self.kernel.body = self.stack.pop().expect("block stack");
        self.kernel
    }
}

/// Data checks: `trap` (see [`InstKind::Trap`]) and the index check built on it.
impl KernelBuilder {
    /// Stops this program instance with data error `code` and `value` when `cond` holds.
    pub fn trap_if(&mut self, cond: Val, code: u32, value: Val) {
        self.emit(InstKind::Trap { cond, code, value }, &[]);
    }

    /// Normalises a runtime index `idx` (an `i64`) into an axis of `n` elements as ONNX
    /// specifies (a negative index counts from the end, once) and traps with `code` and the
    /// index as read when it is still outside `0..n`. The result is in `0..n` whenever the
    /// instance goes on, so it is safe to load with.
    pub fn checked_index(&mut self, idx: Val, n: u64, code: u32) -> Val {
        let zero = self.index(0);
        let nv = self.index(n as i64);
        let neg = self.cmp(CmpOp::Lt, idx, zero);
        let plus = self.add(idx, nv);
        let w = self.select(neg, plus, idx);
        let lo = self.cmp(CmpOp::Lt, w, zero);
        let hi = self.cmp(CmpOp::Ge, w, nv);
        let bad = self.binary(BinOp::Or, lo, hi);
        self.trap_if(bad, code, idx);
        w
    }

    /// Traps with `code` and `idx` unless `0 <= idx < n`: for indices that ONNX does not let
    /// count from the end (batch indices, position ids).
    pub fn checked_below(&mut self, idx: Val, n: u64, code: u32) -> Val {
        let zero = self.index(0);
        let nv = self.index(n as i64);
        let lo = self.cmp(CmpOp::Lt, idx, zero);
        let hi = self.cmp(CmpOp::Ge, idx, nv);
        let bad = self.binary(BinOp::Or, lo, hi);
        self.trap_if(bad, code, idx);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_loop_with_carried_sum() {
        let mut b = KernelBuilder::new("sum");
        let x = b.param("x", DType::F32, 8, Access::Read);
        let y = b.param("y", DType::F32, 1, Access::Write);
        let zero = b.const_float(Ty::F32, 0.0);
        let r = b.range_fold(0, 8, &[zero], |b, i, acc| {
            let v = b.load(x, i, 1);
            vec![b.add(acc[0], v)]
        });
        let at = b.index(0);
        b.store(y, at, r[0]);
        let k = b.finish();
        assert_eq!(k.num_params, 2);
        assert_eq!(k.body.insts.len(), 7);
        assert!(matches!(k.body.insts[4].kind, InstKind::For { .. }));
    }
}
