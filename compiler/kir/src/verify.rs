//! The kernel-IR verifier: [`verify`] checks that a [`Kernel`] obeys every rule of the IR
//! (SSA scoping, operand types, block structure, buffers, grid) so that the interpreter and
//! the backends may rely on them. Every pass's output must pass it. Start at [`verify`]; the
//! per-instruction rules are in `Verifier::inst`, one arm per instruction.

use crate::error::KirError;
use crate::kernel::*;
use crate::text;
use tessera_ir::DType;

/// The most elements one tile value may hold.
pub const MAX_TILE_ELEMS: u32 = 1 << 16;

/// Checks every rule of the IR. Errors name the kernel and the offending instruction.
///
/// The rules: the grid has at most 3 axes; parameters are global buffers and locals are
/// shared or local ones; no buffer or value has dtype `string` or zero lanes; every value is
/// defined exactly once before use, and a value defined inside a block (including a loop's
/// induction variable and carried parameters) is visible only inside it; operand types agree
/// as each instruction's doc says; `yield` appears exactly as the last instruction of every
/// `for` body and `if` branch and nowhere else; buffer ids are in range.
pub fn verify(k: &Kernel) -> Result<(), KirError> {
    let mut v = Verifier {
        k,
        state: vec![State::Undefined; k.vals.len()],
        path: Vec::new(),
    };
    v.kernel()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Undefined,
    /// Defined and in scope.
    Live,
    /// Defined in a block that has ended.
    Dead,
}

struct Verifier<'k> {
    k: &'k Kernel,
    state: Vec<State>,
    /// The path to the current instruction, for messages: (block label, index).
    path: Vec<(&'static str, usize)>,
}

/// Which kind of block is being checked, so `yield` can be checked against its owner.
enum Owner<'a> {
    Top,
    /// A `for` body or `if` branch that must yield these types.
    Yields(&'a [Ty]),
}

impl<'k> Verifier<'k> {
    fn kernel_err(&self, msg: impl Into<String>) -> KirError {
        KirError::InvalidKernel {
            kernel: self.k.name.clone(),
            msg: msg.into(),
        }
    }

    fn err(&self, inst: &Inst, msg: impl Into<String>) -> KirError {
        KirError::Invalid {
            kernel: self.k.name.clone(),
            at: self.location(),
            inst: text::inst_head(self.k, inst),
            msg: msg.into(),
        }
    }

    fn location(&self) -> String {
        let mut s = String::new();
        for (i, (label, n)) in self.path.iter().enumerate() {
            if i > 0 {
                s.push_str(" > ");
            }
            if !label.is_empty() {
                s.push_str(label);
                s.push(' ');
            }
            s.push_str(&format!("#{n}"));
        }
        if s.is_empty() {
            s.push_str("body");
        }
        format!("instruction {s}")
    }

    fn kernel(&mut self) -> Result<(), KirError> {
        let k = self.k;
        if k.grid.len() > 3 {
            return Err(self.kernel_err(format!(
                "grid has {} axes; at most 3 are allowed",
                k.grid.len()
            )));
        }
        if k.num_params > k.bufs.len() {
            return Err(self.kernel_err(format!(
                "num_params {} exceeds the {} buffers",
                k.num_params,
                k.bufs.len()
            )));
        }
        for (i, b) in k.bufs.iter().enumerate() {
            if k.bufs[..i].iter().any(|o| o.name == b.name) {
                return Err(self.kernel_err(format!(
                    "two buffers are named `{}`; buffer names must be unique",
                    b.name
                )));
            }
            if b.len.checked_mul(b.dtype.bits() as u64).is_none() {
                return Err(self.kernel_err(format!(
                    "buffer `{}` has an absurd length {}",
                    b.name, b.len
                )));
            }
            let what = if i < k.num_params {
                "parameter"
            } else {
                "local buffer"
            };
            if b.dtype == DType::String {
                return Err(self.kernel_err(format!(
                    "{what} `{}` has dtype string, which kernels cannot hold",
                    b.name
                )));
            }
            if i < k.num_params && b.space != Space::Global {
                return Err(self.kernel_err(format!(
                    "parameter `{}` is in {} memory; parameters are global (locals follow the parameters)",
                    b.name,
                    b.space.name()
                )));
            }
            if i >= k.num_params && b.space == Space::Global {
                return Err(self.kernel_err(format!(
                    "local buffer `{}` is global; only parameters are global, and they precede locals",
                    b.name
                )));
            }
        }
        for (i, t) in k.vals.iter().enumerate() {
            if t.elem == DType::String {
                return Err(self.kernel_err(format!("value %{i} has dtype string")));
            }
            if t.lanes == 0 {
                return Err(self.kernel_err(format!("value %{i} has zero lanes")));
            }
            if t.is_tile() && t.count() > MAX_TILE_ELEMS {
                return Err(self.kernel_err(format!(
                    "value %{i} is a {t} of {} elements; tiles hold at most {MAX_TILE_ELEMS}",
                    t.count()
                )));
            }
            if !t.is_tile() && t.role != Role::Reg {
                return Err(self.kernel_err(format!(
                    "value %{i} is not a tile but has role {}",
                    t.role.name()
                )));
            }
        }
        self.path.push(("", 0));
        let r = self.block(&k.body, Owner::Top);
        self.path.pop();
        r
    }

    fn ty(&self, v: Val) -> Ty {
        self.k.vals[v.0 as usize]
    }

    /// Checks that `v` exists and is live; returns its type.
    fn use_val(&self, inst: &Inst, v: Val) -> Result<Ty, KirError> {
        match self.state.get(v.0 as usize) {
            None => Err(self.err(
                inst,
                format!("uses %{}, which is not in the value table", v.0),
            )),
            Some(State::Undefined) => {
                Err(self.err(inst, format!("uses %{} before it is defined", v.0)))
            }
            Some(State::Dead) => Err(self.err(
                inst,
                format!("uses %{} outside the block that defines it", v.0),
            )),
            Some(State::Live) => Ok(self.ty(v)),
        }
    }

    /// Defines `v` in the current block, recording it in `scope` so the block's end kills it.
    fn define(&mut self, inst: &Inst, v: Val, scope: &mut Vec<Val>) -> Result<Ty, KirError> {
        match self.state.get(v.0 as usize) {
            None => Err(self.err(
                inst,
                format!("defines %{}, which is not in the value table", v.0),
            )),
            Some(State::Undefined) => {
                self.state[v.0 as usize] = State::Live;
                scope.push(v);
                Ok(self.ty(v))
            }
            Some(_) => Err(self.err(inst, format!("defines %{} a second time", v.0))),
        }
    }

    fn buf(&self, inst: &Inst, b: Buf) -> Result<&'k BufDecl, KirError> {
        self.k.bufs.get(b.0 as usize).ok_or_else(|| {
            self.err(
                inst,
                format!(
                    "names buffer {} but the kernel has {}",
                    b.0,
                    self.k.bufs.len()
                ),
            )
        })
    }

    fn block(&mut self, blk: &Block, owner: Owner<'_>) -> Result<(), KirError> {
        let mut scope = Vec::new();
        let r = self.block_inner(blk, owner, &mut scope);
        for v in scope {
            self.state[v.0 as usize] = State::Dead;
        }
        r
    }

    fn block_inner(
        &mut self,
        blk: &Block,
        owner: Owner<'_>,
        scope: &mut Vec<Val>,
    ) -> Result<(), KirError> {
        let n = blk.insts.len();
        for (i, inst) in blk.insts.iter().enumerate() {
            if let Some(last) = self.path.last_mut() {
                last.1 = i;
            }
            let is_last = i + 1 == n;
            if let InstKind::Yield(vals) = &inst.kind {
                let want = match owner {
                    Owner::Top => {
                        return Err(self.err(inst, "yield outside a `for` body or `if` branch"))
                    }
                    Owner::Yields(t) => t,
                };
                if !is_last {
                    return Err(self.err(inst, "yield must be the last instruction of its block"));
                }
                if !inst.results.is_empty() {
                    return Err(self.err(inst, "yield defines no values"));
                }
                if vals.len() != want.len() {
                    return Err(self.err(
                        inst,
                        format!(
                            "yields {} values but the block must yield {}",
                            vals.len(),
                            want.len()
                        ),
                    ));
                }
                for (j, (&v, &t)) in vals.iter().zip(want.iter()).enumerate() {
                    let vt = self.use_val(inst, v)?;
                    if vt != t {
                        return Err(self.err(
                            inst,
                            format!("yielded value {j} (%{}) is {vt}, expected {t}", v.0),
                        ));
                    }
                }
                return Ok(());
            }
            self.inst(inst, scope)?;
        }
        if let Owner::Yields(_) = owner {
            let at = self.location();
            return Err(KirError::Invalid {
                kernel: self.k.name.clone(),
                at,
                inst: "yield".into(),
                msg: "block does not end with yield".into(),
            });
        }
        Ok(())
    }

    fn expect_results(&self, inst: &Inst, n: usize) -> Result<(), KirError> {
        if inst.results.len() != n {
            return Err(self.err(
                inst,
                format!("defines {} values, expected {n}", inst.results.len()),
            ));
        }
        Ok(())
    }

    fn same(&self, inst: &Inst, what: &str, got: Ty, want: Ty) -> Result<(), KirError> {
        // Roles are placement hints: values of any role agree when their shapes do.
        if !got.same_shape(want) {
            return Err(self.err(inst, format!("{what} is {got}, expected {want}")));
        }
        Ok(())
    }

    /// Checks a tile position and its view for a tile of `rows` rows; returns the buffer.
    fn view(
        &self,
        inst: &Inst,
        what: &str,
        t: &TileAt,
        rows: u32,
    ) -> Result<&'k BufDecl, KirError> {
        let v = &t.view;
        let d = self.buf(inst, v.buf)?;
        let rank = v.dims.len();
        if rank == 0 || rank > MAX_VIEW_RANK {
            return Err(self.err(
                inst,
                format!("{what} view has rank {rank}; views have 1 to {MAX_VIEW_RANK} axes"),
            ));
        }
        if v.strides.len() != rank || t.origin.len() != rank {
            return Err(self.err(
                inst,
                format!(
                    "{what} view has {rank} dims, {} strides and {} origin indices; they must agree",
                    v.strides.len(),
                    t.origin.len()
                ),
            ));
        }
        if rank == 1 && rows != 1 {
            return Err(self.err(
                inst,
                format!("{what} view has rank 1, which holds 1-row tiles, not {rows} rows"),
            ));
        }
        self.index(inst, &format!("{what} offset"), v.offset)?;
        for (i, &o) in t.origin.iter().enumerate() {
            self.index(inst, &format!("{what} origin {i}"), o)?;
        }
        Ok(d)
    }

    /// A literal read as `elem`: float literals only for float types.
    fn literal(&self, inst: &Inst, what: &str, c: Scalar, elem: DType) -> Result<(), KirError> {
        if matches!(c, Scalar::Float(_)) && !elem.is_float() {
            return Err(self.err(
                inst,
                format!("{what} is a float literal for {elem} elements"),
            ));
        }
        Ok(())
    }

    fn index(&self, inst: &Inst, what: &str, v: Val) -> Result<(), KirError> {
        let t = self.use_val(inst, v)?;
        self.same(inst, what, t, Ty::INDEX)
    }

    /// Checks operands, then defines results. Blocks nest through `for` and `if`.
    fn inst(&mut self, inst: &Inst, scope: &mut Vec<Val>) -> Result<(), KirError> {
        use InstKind::*;
        // The single result's type, for the one-result instructions (checked below).
        let rt = |s: &Self| -> Result<Ty, KirError> {
            s.expect_results(inst, 1)?;
            s.state
                .get(inst.results[0].0 as usize)
                .map(|_| s.ty(inst.results[0]))
                .ok_or_else(|| {
                    s.err(
                        inst,
                        format!(
                            "defines %{}, which is not in the value table",
                            inst.results[0].0
                        ),
                    )
                })
        };
        match &inst.kind {
            Const(c) => {
                let t = rt(self)?;
                if let Scalar::Float(_) = c {
                    if !t.elem.is_float() {
                        return Err(self.err(inst, format!("float literal for a {} value", t.elem)));
                    }
                }
            }
            ProgramId(axis) => {
                let t = rt(self)?;
                self.same(inst, "result", t, Ty::INDEX)?;
                if *axis > 2 {
                    return Err(self.err(
                        inst,
                        format!("grid axis {axis} does not exist (at most 3 axes)"),
                    ));
                }
            }
            Unary(op, x) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                self.same(inst, "operand", xt, t)?;
                let e = t.elem;
                let ok = match op {
                    UnOp::Neg | UnOp::Abs => e.is_float() || e.is_int(),
                    UnOp::Not => e.is_int() || e == DType::Bool,
                    UnOp::Sqrt => e.is_float(),
                    UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc => {
                        e.is_float() || e.is_int()
                    }
                };
                if !ok {
                    return Err(self.err(inst, format!("{op:?} is not defined on {e}")));
                }
            }
            Binary(op, a, b) => {
                let t = rt(self)?;
                let at = self.use_val(inst, *a)?;
                let bt = self.use_val(inst, *b)?;
                self.same(inst, "left operand", at, t)?;
                self.same(inst, "right operand", bt, t)?;
                let e = t.elem;
                let ok = match op {
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                        e.is_float() || e.is_int()
                    }
                    BinOp::Min | BinOp::Max => e.is_float() || e.is_int() || e == DType::Bool,
                    BinOp::And | BinOp::Or | BinOp::Xor => e.is_int() || e == DType::Bool,
                    BinOp::Shl | BinOp::Shr => e.is_int(),
                };
                if !ok {
                    return Err(self.err(inst, format!("{op:?} is not defined on {e}")));
                }
            }
            Cmp(_, a, b) => {
                let t = rt(self)?;
                let at = self.use_val(inst, *a)?;
                let bt = self.use_val(inst, *b)?;
                self.same(inst, "right operand", bt, at)?;
                self.same(inst, "result", t, at.with_elem(DType::Bool))?;
            }
            Fma(a, b, c) => {
                let t = rt(self)?;
                let at = self.use_val(inst, *a)?;
                let bt = self.use_val(inst, *b)?;
                let ct = self.use_val(inst, *c)?;
                self.same(inst, "second operand", bt, at)?;
                self.same(inst, "addend", ct, at)?;
                self.same(inst, "result", t, at)?;
                if !matches!(at.elem, DType::F32 | DType::F64) {
                    return Err(self.err(inst, format!("fma on {at}; expected f32 or f64")));
                }
            }
            Dot(acc, a, b) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *acc)?;
                let at = self.use_val(inst, *a)?;
                let bt = self.use_val(inst, *b)?;
                self.same(inst, "result", t, xt)?;
                if xt.elem != DType::I32 || xt.is_tile() {
                    return Err(self.err(
                        inst,
                        format!("dot accumulates into {xt}; expected i32 or a vector of i32"),
                    ));
                }
                let narrow =
                    |e: DType| matches!(e, DType::I8 | DType::U8 | DType::I16 | DType::U16);
                for (what, ot) in [("left", at), ("right", bt)] {
                    if !narrow(ot.elem) || ot.is_tile() {
                        return Err(self.err(
                            inst,
                            format!("dot {what} operand is {ot}; expected a vector of i8, u8, i16 or u16"),
                        ));
                    }
                }
                let lanes = xt.lanes as u32;
                if at.lanes != bt.lanes || !(at.count() == 2 * lanes || at.count() == 4 * lanes) {
                    return Err(self.err(
                        inst,
                        format!(
                            "dot of {at} and {bt} into {xt}: the operands need the same lane count, 2 or 4 times the accumulator's"
                        ),
                    ));
                }
            }
            Select(c, a, b) => {
                let t = rt(self)?;
                let ct = self.use_val(inst, *c)?;
                let at = self.use_val(inst, *a)?;
                let bt = self.use_val(inst, *b)?;
                self.same(inst, "true operand", at, t)?;
                self.same(inst, "false operand", bt, t)?;
                if !(ct.same_shape(Ty::BOOL) || ct.same_shape(t.with_elem(DType::Bool))) {
                    return Err(self.err(
                        inst,
                        format!(
                            "condition is {ct}; expected bool or {}",
                            t.with_elem(DType::Bool)
                        ),
                    ));
                }
            }
            Cast(x, _) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                if !xt.with_elem(t.elem).same_shape(t) {
                    return Err(self.err(inst, format!("casts {xt} to {t}: shapes differ")));
                }
            }
            Bitcast(x) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                if xt.elem == DType::Bool || t.elem == DType::Bool {
                    return Err(self.err(inst, "bitcast to or from bool is not allowed; use cast"));
                }
                if (xt.is_tile() || t.is_tile())
                    && (xt.tile_shape() != t.tile_shape() || xt.elem.bits() != t.elem.bits())
                {
                    return Err(self.err(
                        inst,
                        format!("bitcasts {xt} to {t}: a tile keeps its shape and element width"),
                    ));
                }
                let (xb, tb) = (
                    xt.elem.bits() as u64 * xt.count() as u64,
                    t.elem.bits() as u64 * t.count() as u64,
                );
                if xb != tb {
                    return Err(self.err(
                        inst,
                        format!("bitcasts {xt} ({xb} bits) to {t} ({tb} bits)"),
                    ));
                }
            }
            Splat(x) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                if !xt.is_scalar() {
                    return Err(self.err(inst, format!("splats {xt}, which is not a scalar")));
                }
                self.same(inst, "result element", Ty::scalar(t.elem), xt)?;
            }
            Extract(x, lane) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                if *lane as u32 >= xt.count() {
                    return Err(self.err(inst, format!("extracts lane {lane} of {xt}")));
                }
                self.same(inst, "result", t, Ty::scalar(xt.elem))?;
            }
            ReduceLanes(op, x) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                self.same(inst, "result", t, Ty::scalar(xt.elem))?;
                if xt.is_tile() {
                    return Err(self.err(
                        inst,
                        format!("reduces the lanes of {xt}; tiles reduce with `tile.reduce`"),
                    ));
                }
                let e = xt.elem;
                let ok = match op {
                    ReduceOp::Add | ReduceOp::Mul => e.is_float() || e.is_int(),
                    ReduceOp::Min | ReduceOp::Max => e.is_float() || e.is_int() || e == DType::Bool,
                };
                if !ok {
                    return Err(self.err(inst, format!("reduce {op:?} is not defined on {e}")));
                }
            }
            Math(f, args) => {
                let t = rt(self)?;
                if args.len() != f.arity() {
                    return Err(self.err(
                        inst,
                        format!("{f:?} takes {} operands, got {}", f.arity(), args.len()),
                    ));
                }
                for (i, &a) in args.iter().enumerate() {
                    let at = self.use_val(inst, a)?;
                    self.same(inst, &format!("operand {i}"), at, t)?;
                }
                if !t.elem.is_float() {
                    return Err(self.err(
                        inst,
                        format!("math on {}, which is not a float type", t.elem),
                    ));
                }
            }
            Load { buf, index } => {
                let t = rt(self)?;
                let d = self.buf(inst, *buf)?;
                self.index(inst, "index", *index)?;
                if t.is_tile() {
                    return Err(self.err(
                        inst,
                        format!("loads a {t}; tiles are loaded with `tile.load`"),
                    ));
                }
                if d.view_len(t.elem).is_none() {
                    return Err(self.err(
                        inst,
                        format!("loads {t} from buffer `{}` of {}", d.name, d.dtype),
                    ));
                }
            }
            Store { buf, index, value } => {
                self.expect_results(inst, 0)?;
                let d = self.buf(inst, *buf)?;
                self.index(inst, "index", *index)?;
                let vt = self.use_val(inst, *value)?;
                if vt.is_tile() {
                    return Err(self.err(
                        inst,
                        format!("stores a {vt}; tiles are stored with `tile.store`"),
                    ));
                }
                if d.view_len(vt.elem).is_none() {
                    return Err(self.err(
                        inst,
                        format!("stores {vt} into buffer `{}` of {}", d.name, d.dtype),
                    ));
                }
                if d.access == Access::Read {
                    return Err(self.err(
                        inst,
                        format!("stores into read-only parameter `{}`", d.name),
                    ));
                }
            }
            For {
                lo,
                hi,
                step,
                iv,
                iter,
                init,
                body,
            } => {
                self.index(inst, "lower bound", *lo)?;
                self.index(inst, "upper bound", *hi)?;
                self.index(inst, "step", *step)?;
                if iter.len() != init.len() {
                    return Err(self.err(
                        inst,
                        format!(
                            "{} carried parameters but {} initial values",
                            iter.len(),
                            init.len()
                        ),
                    ));
                }
                self.expect_results(inst, iter.len())?;
                let mut tys = Vec::with_capacity(iter.len());
                for (j, (&p, &i0)) in iter.iter().zip(init.iter()).enumerate() {
                    let it = self.use_val(inst, i0)?;
                    let pt = self
                        .state
                        .get(p.0 as usize)
                        .map(|_| self.ty(p))
                        .ok_or_else(|| {
                            self.err(
                                inst,
                                format!("carried parameter %{} is not in the value table", p.0),
                            )
                        })?;
                    self.same(inst, &format!("initial value {j}"), it, pt)?;
                    let r = inst.results[j];
                    let rty = self
                        .state
                        .get(r.0 as usize)
                        .map(|_| self.ty(r))
                        .ok_or_else(|| {
                            self.err(inst, format!("result %{} is not in the value table", r.0))
                        })?;
                    self.same(inst, &format!("result {j}"), rty, pt)?;
                    tys.push(pt);
                }
                // The induction variable and carried parameters live in the body's scope.
                let mut body_scope = Vec::new();
                let ivt = self.define(inst, *iv, &mut body_scope)?;
                self.same(inst, "induction variable", ivt, Ty::INDEX)?;
                for &p in iter {
                    self.define(inst, p, &mut body_scope)?;
                }
                self.path.push(("body", 0));
                let r = self.block_inner(body, Owner::Yields(&tys), &mut body_scope);
                self.path.pop();
                for v in body_scope {
                    self.state[v.0 as usize] = State::Dead;
                }
                r?;
            }
            If {
                cond,
                then_blk,
                else_blk,
            } => {
                let ct = self.use_val(inst, *cond)?;
                self.same(inst, "condition", ct, Ty::BOOL)?;
                let mut tys = Vec::with_capacity(inst.results.len());
                for r in &inst.results {
                    let t = self
                        .state
                        .get(r.0 as usize)
                        .map(|_| self.ty(*r))
                        .ok_or_else(|| {
                            self.err(inst, format!("result %{} is not in the value table", r.0))
                        })?;
                    tys.push(t);
                }
                self.path.push(("then", 0));
                let r = self.block(then_blk, Owner::Yields(&tys));
                self.path.pop();
                r?;
                self.path.push(("else", 0));
                let r = self.block(else_blk, Owner::Yields(&tys));
                self.path.pop();
                r?;
            }
            Yield(_) => unreachable!("yield is handled by block_inner"),
            Mma {
                a,
                b,
                c,
                m,
                n,
                k,
                a_ty,
                b_ty,
                acc,
            } => {
                self.expect_results(inst, 0)?;
                for (what, t, want) in [("a", a, a_ty), ("b", b, b_ty), ("c", c, acc)] {
                    let d = self.buf(inst, t.buf)?;
                    if d.dtype != *want {
                        return Err(self.err(
                            inst,
                            format!(
                                "{what} is declared {want} but buffer `{}` holds {}",
                                d.name, d.dtype
                            ),
                        ));
                    }
                    self.index(inst, &format!("{what} offset"), t.offset)?;
                }
                let cd = self.buf(inst, c.buf)?;
                if cd.access == Access::Read {
                    return Err(self.err(
                        inst,
                        format!("accumulates into read-only parameter `{}`", cd.name),
                    ));
                }
                if *m == 0 || *n == 0 || *k == 0 {
                    return Err(self.err(inst, "tile sizes must be positive"));
                }
                if !mma_pair_ok(*a_ty, *b_ty, *acc) {
                    return Err(self.err(inst, format!("no mma {a_ty} x {b_ty} -> {acc}")));
                }
            }
            TileLoad { src, fill } => {
                let t = rt(self)?;
                let Some((rows, cols)) = t.tile_shape() else {
                    return Err(self.err(
                        inst,
                        format!("tile.load defines a {t}, which is not a tile"),
                    ));
                };
                let d = self.view(inst, "source", src, rows)?;
                if d.view_len(t.elem).is_none() {
                    return Err(self.err(
                        inst,
                        format!("loads {t} from buffer `{}` of {}", d.name, d.dtype),
                    ));
                }
                let _ = cols;
                self.literal(inst, "fill", *fill, t.elem)?;
            }
            TileStore { dst, value } => {
                self.expect_results(inst, 0)?;
                let vt = self.use_val(inst, *value)?;
                let Some((rows, _)) = vt.tile_shape() else {
                    return Err(
                        self.err(inst, format!("tile.store of a {vt}, which is not a tile"))
                    );
                };
                let d = self.view(inst, "destination", dst, rows)?;
                if d.view_len(vt.elem).is_none() {
                    return Err(self.err(
                        inst,
                        format!("stores {vt} into buffer `{}` of {}", d.name, d.dtype),
                    ));
                }
                if d.access == Access::Read {
                    return Err(self.err(
                        inst,
                        format!("stores into read-only parameter `{}`", d.name),
                    ));
                }
            }
            TileCopy {
                src,
                dst,
                rows,
                cols,
                fill,
            } => {
                self.expect_results(inst, 0)?;
                if *rows == 0 || *cols == 0 || rows.saturating_mul(*cols) > MAX_TILE_ELEMS {
                    return Err(self.err(inst, format!("copies a {rows}x{cols} tile; sizes must be positive and hold at most {MAX_TILE_ELEMS} elements")));
                }
                let s = self.view(inst, "source", src, *rows)?;
                let d = self.view(inst, "destination", dst, *rows)?;
                if s.dtype != d.dtype {
                    return Err(self.err(
                        inst,
                        format!(
                            "copies {} buffer `{}` into {} buffer `{}`",
                            s.dtype, s.name, d.dtype, d.name
                        ),
                    ));
                }
                if d.access == Access::Read {
                    return Err(self.err(
                        inst,
                        format!("copies into read-only parameter `{}`", d.name),
                    ));
                }
                self.literal(inst, "fill", *fill, s.dtype)?;
            }
            TileMma { a, b, acc } => {
                let t = rt(self)?;
                let (at, bt, ct) = (
                    self.use_val(inst, *a)?,
                    self.use_val(inst, *b)?,
                    self.use_val(inst, *acc)?,
                );
                let (Some((m, ka)), Some((kb, n)), Some((cm, cn))) =
                    (at.tile_shape(), bt.tile_shape(), ct.tile_shape())
                else {
                    return Err(self.err(
                        inst,
                        format!("tile.mma of {at}, {bt} and {ct}: all three must be tiles"),
                    ));
                };
                if ka != kb || cm != m || cn != n {
                    return Err(self.err(
                        inst,
                        format!("tile.mma of {at} · {bt} into {ct}: shapes do not chain"),
                    ));
                }
                self.same(inst, "result", t, ct)?;
                if t.role != Role::Acc {
                    return Err(self.err(
                        inst,
                        format!("tile.mma defines a {t}; its result is an acc tile"),
                    ));
                }
                if !mma_pair_ok(at.elem, bt.elem, ct.elem) {
                    return Err(self.err(
                        inst,
                        format!("no mma {} x {} -> {}", at.elem, bt.elem, ct.elem),
                    ));
                }
            }
            TileDot { a, b, acc } => {
                let t = rt(self)?;
                let (at, bt, ct) = (
                    self.use_val(inst, *a)?,
                    self.use_val(inst, *b)?,
                    self.use_val(inst, *acc)?,
                );
                let (Some((m, k)), Some((p, bc)), Some((cm, n))) =
                    (at.tile_shape(), bt.tile_shape(), ct.tile_shape())
                else {
                    return Err(self.err(
                        inst,
                        format!("tile.dot of {at}, {bt} and {ct}: all three must be tiles"),
                    ));
                };
                let narrow =
                    |e: DType| matches!(e, DType::I8 | DType::U8 | DType::I16 | DType::U16);
                if !narrow(at.elem) || !narrow(bt.elem) || ct.elem != DType::I32 {
                    return Err(self.err(
                        inst,
                        format!(
                            "tile.dot of {at} and {bt} into {ct}: the operands are 8- or 16-bit integers and the accumulator i32"
                        ),
                    ));
                }
                let g = if n > 0 && bc % n == 0 { bc / n } else { 0 };
                if cm != m || !(g == 2 || g == 4) || p * g != k {
                    return Err(self.err(
                        inst,
                        format!(
                            "tile.dot of {at} and packed {bt} into {ct}: expected b of (K/G) x (N*G) with G = 2 or 4"
                        ),
                    ));
                }
                self.same(inst, "result", t, ct)?;
                if t.role != Role::Acc {
                    return Err(self.err(
                        inst,
                        format!("tile.dot defines a {t}; its result is an acc tile"),
                    ));
                }
            }
            TileReduce(op, axis, x) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                let Some((r, c)) = xt.tile_shape() else {
                    return Err(
                        self.err(inst, format!("tile.reduce of a {xt}, which is not a tile"))
                    );
                };
                let want = match axis {
                    Axis::Rows => Ty::tile(xt.elem, r as u16, 1),
                    Axis::Cols => Ty::tile(xt.elem, 1, c as u16),
                };
                self.same(inst, "result", t, want)?;
                let e = xt.elem;
                let ok = match op {
                    ReduceOp::Add | ReduceOp::Mul => e.is_float() || e.is_int(),
                    ReduceOp::Min | ReduceOp::Max => e.is_float() || e.is_int() || e == DType::Bool,
                };
                if !ok {
                    return Err(self.err(inst, format!("reduce {op:?} is not defined on {e}")));
                }
            }
            TileBroadcast(x) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                let (Some((r, c)), Some((xr, xc))) = (t.tile_shape(), xt.tile_shape()) else {
                    return Err(self.err(
                        inst,
                        format!("tile.broadcast of {xt} to {t}: both must be tiles"),
                    ));
                };
                if xt.elem != t.elem || !(xr == r || xr == 1) || !(xc == c || xc == 1) {
                    return Err(self.err(
                        inst,
                        format!("tile.broadcast cannot make a {t} from a {xt}"),
                    ));
                }
            }
            TileTranspose(x) => {
                let t = rt(self)?;
                let xt = self.use_val(inst, *x)?;
                let Some((r, c)) = xt.tile_shape() else {
                    return Err(self.err(
                        inst,
                        format!("tile.transpose of a {xt}, which is not a tile"),
                    ));
                };
                self.same(inst, "result", t, Ty::tile(xt.elem, c as u16, r as u16))?;
            }
            TileIndex(_) => {
                let t = rt(self)?;
                if !t.is_tile() || t.elem != DType::I64 {
                    return Err(self.err(
                        inst,
                        format!("tile.index defines a {t}; it defines an i64 tile"),
                    ));
                }
            }
            Barrier => self.expect_results(inst, 0)?,
            Trap { cond, value, .. } => {
                self.expect_results(inst, 0)?;
                let ct = self.use_val(inst, *cond)?;
                if ct != Ty::BOOL {
                    return Err(self.err(
                        inst,
                        format!("trap condition is {ct}; expected a scalar bool"),
                    ));
                }
                self.index(inst, "value", *value)?;
            }
        }
        // Define the results (For's and If's were type-checked above).
        for &r in &inst.results {
            self.define(inst, r, scope)?;
        }
        Ok(())
    }
}

/// Whether `a x b -> acc` is a multiply-accumulate the IR defines (a target may still lack it).
fn mma_pair_ok(a: DType, b: DType, acc: DType) -> bool {
    let num = |d: DType| d.is_float() || d.is_int();
    if acc.is_float() {
        num(a) && num(b)
    } else if acc.is_int() {
        a.is_int() && b.is_int()
    } else {
        false
    }
}

#[cfg(test)]
mod tests;
