//! Lowering of NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.
//!
//! Inputs are viewed as `(N, C, D)` with `D` the product of the trailing dims, targets as
//! `(N, D)`. SoftmaxCrossEntropyLoss first writes the log-softmax over `C` (to its optional
//! `log_prob` result or a scratch buffer) and then runs the NLL kernel on it. The NLL kernel
//! reads each target at run time: targets outside `0..C` (other than `ignore_index`) read
//! nothing and give NaN.

use crate::util::compute_dtype;
use crate::{LowerCx, Result};
use tessera_ir::{DType, Node, Op};
use tessera_kir::{
    Access, BinOp, BufferId, CastMode, CmpOp, Execution, KernelBuilder, MathFn, Ty, Val,
};

const NO_SAT: CastMode = CastMode { saturate: false };

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let x = node.input(0).ok_or_else(|| cx.invalid("missing input"))?;
    let t = node.input(1).ok_or_else(|| cx.invalid("missing target"))?;
    let w = node.input(2);
    let out = *node
        .outputs
        .first()
        .ok_or_else(|| cx.invalid("missing loss"))?;
    let dt = cx.dtype(x)?;
    if !dt.is_float() {
        return Err(cx.unsupported(format!("{} on {dt}", node.op)));
    }
    let tdt = cx.dtype(t)?;
    if !tdt.is_int() {
        return Err(cx.invalid(format!("targets of dtype {tdt}")));
    }
    let xd = cx.dims(x)?;
    let td = cx.dims(t)?;
    if xd.len() < 2 {
        return Err(cx.invalid("input must be (N, C, d...)"));
    }
    let (n, c) = (xd[0], xd[1]);
    let d: u64 = xd[2..].iter().product();
    let mut want_t = xd.clone();
    want_t.remove(1);
    if td != want_t {
        return Err(cx.invalid(format!(
            "target shape {td:?} does not match input shape {xd:?}"
        )));
    }
    if let Some(w) = w {
        if cx.dims(w)? != [c] || cx.dtype(w)? != dt {
            return Err(cx.invalid(format!(
                "weight must be a [{c}] tensor of the input's dtype"
            )));
        }
    }
    let reduction = node.attr_str("reduction").unwrap_or("mean").to_string();
    let reduce = match reduction.as_str() {
        "none" => false,
        "sum" | "mean" => true,
        r => return Err(cx.invalid(format!("reduction \"{r}\""))),
    };
    let want_out: Vec<u64> = if reduce { vec![] } else { td.clone() };
    if cx.dims(out)? != want_out || cx.dtype(out)? != dt {
        return Err(cx.invalid("loss has the wrong type"));
    }
    let ignore = node
        .attr("ignore_index")
        .map(|_| node.attr_int("ignore_index", 0));
    let total = n * c * d;
    let xb = cx.buffer(x)?;
    // The log-probabilities the NLL kernel reads.
    let lp = if node.op == Op::SoftmaxCrossEntropyLoss {
        let lpb = match node.outputs.get(1) {
            Some(&o) => {
                if cx.dims(o)? != xd || cx.dtype(o)? != dt {
                    return Err(cx.invalid("log_prob has the wrong type"));
                }
                cx.buffer(o)?
            }
            None => cx.scratch("log_prob", dt, xd.clone()),
        };
        if total > 0 {
            log_softmax(cx, dt, (n, c, d), xb, lpb);
        }
        lpb
    } else {
        xb
    };
    let tb = cx.buffer(t)?;
    let wb = match w {
        Some(w) => Some(cx.buffer(w)?),
        None => None,
    };
    let ob = cx.buffer(out)?;
    if n * d == 0 && !reduce {
        return Ok(Execution::Kernel);
    }
    nll(cx, dt, tdt, (n, c, d), (lp, tb, wb, ob), ignore, &reduction);
    Ok(Execution::Kernel)
}

/// `lp[n, :, d] = log_softmax(x[n, :, d])`, one program instance per `(n, d)`.
fn log_softmax(
    cx: &mut LowerCx,
    dt: DType,
    (n, c, d): (u64, u64, u64),
    xb: BufferId,
    lpb: BufferId,
) {
    let acc = compute_dtype(dt);
    let at = Ty::scalar(acc);
    let name = cx.kernel_name("log_softmax_classes");
    let mut b = KernelBuilder::new(name);
    let total = n * c * d;
    let xp = b.param("x", dt, total, Access::Read);
    let lpp = b.param("log_prob", dt, total, Access::Write);
    b.set_grid(&[n, d]);
    let ni = b.program_id(0);
    let di = b.program_id(1);
    let cd = b.index((c * d) as i64);
    let base = b.mul(ni, cd);
    let base = b.add(base, di);
    let dv = b.index(d as i64);
    let at_c = |b: &mut KernelBuilder, k: Val| {
        let o = b.mul(k, dv);
        b.add(base, o)
    };
    let ninf = b.const_float(at, f64::NEG_INFINITY);
    let m = b.range_fold(0, c as i64, &[ninf], |b, k, a| {
        let i = at_c(b, k);
        let v = b.load(xp, i, 1);
        let v = b.cast(v, acc, NO_SAT);
        vec![b.max(a[0], v)]
    })[0];
    let zero = b.const_float(at, 0.0);
    let s = b.range_fold(0, c as i64, &[zero], |b, k, a| {
        let i = at_c(b, k);
        let v = b.load(xp, i, 1);
        let v = b.cast(v, acc, NO_SAT);
        let e = b.sub(v, m);
        let e = b.math(MathFn::Exp, &[e]);
        vec![b.add(a[0], e)]
    })[0];
    let ls = b.math(MathFn::Log, &[s]);
    b.range(0, c as i64, |b, k| {
        let i = at_c(b, k);
        let v = b.load(xp, i, 1);
        let v = b.cast(v, acc, NO_SAT);
        let r = b.sub(v, m);
        let r = b.sub(r, ls);
        let r = b.cast(r, dt, NO_SAT);
        b.store(lpp, i, r);
    });
    cx.launch(b.finish(), vec![xb, lpb]);
}

/// The NLL kernel. `none`: one program instance per `(n, d)`; `sum`/`mean`: one instance
/// that walks every element, accumulating loss and weight.
fn nll(
    cx: &mut LowerCx,
    dt: DType,
    tdt: DType,
    (n, c, d): (u64, u64, u64),
    (lp, tb, wb, ob): (BufferId, BufferId, Option<BufferId>, BufferId),
    ignore: Option<i64>,
    reduction: &str,
) {
    let acc = compute_dtype(dt);
    let at = Ty::scalar(acc);
    let name = cx.kernel_name("nll_loss");
    let mut b = KernelBuilder::new(name);
    let lpp = b.param("log_prob", dt, n * c * d, Access::Read);
    let tp = b.param("target", tdt, n * d, Access::Read);
    let mut args = vec![lp, tb];
    let wp = wb.map(|w| {
        args.push(w);
        b.param("weight", dt, c, Access::Read)
    });
    let reduce = reduction != "none";
    let op = b.param("loss", dt, if reduce { 1 } else { n * d }, Access::Write);
    args.push(ob);
    // (loss, weight) of element `e` (flat over (n, d)).
    let elem = move |b: &mut KernelBuilder, e: Val| -> (Val, Val) {
        let tv = b.load(tp, e, 1);
        let tv = b.cast(tv, DType::I64, NO_SAT);
        let zi = b.index(0);
        let ci = b.index(c as i64);
        let ge = b.cmp(CmpOp::Ge, tv, zi);
        let lt = b.cmp(CmpOp::Lt, tv, ci);
        let valid = b.binary(BinOp::And, ge, lt);
        let cm1 = b.index(c.saturating_sub(1) as i64);
        let tc = b.max(tv, zi);
        let tc = b.min(tc, cm1);
        // element (ni, tc, di) with ni = e / d, di = e % d.
        let dv = b.index(d as i64);
        let ni = b.div(e, dv);
        let nd = b.mul(ni, dv);
        let di = b.sub(e, nd);
        let cdv = b.index((c * d) as i64);
        let base = b.mul(ni, cdv);
        let off = b.mul(tc, dv);
        let at_x = b.add(base, off);
        let at_x = b.add(at_x, di);
        let zero = b.const_float(at, 0.0);
        let one = b.const_float(at, 1.0);
        let nan = b.const_float(at, f64::NAN);
        let (xv, wv) = if c == 0 {
            (nan, one)
        } else {
            let xv = b.load(lpp, at_x, 1);
            let xv = b.cast(xv, acc, NO_SAT);
            let wv = match wp {
                Some(wp) => {
                    let wv = b.load(wp, tc, 1);
                    b.cast(wv, acc, NO_SAT)
                }
                None => one,
            };
            (xv, wv)
        };
        let xv = b.select(valid, xv, nan);
        let loss = b.mul(xv, wv);
        let loss = b.sub(zero, loss);
        match ignore {
            Some(ig) => {
                let igv = b.index(ig);
                let is_ig = b.cmp(CmpOp::Eq, tv, igv);
                let l = b.select(is_ig, zero, loss);
                let w = b.select(is_ig, zero, wv);
                (l, w)
            }
            None => (loss, wv),
        }
    };
    if reduce {
        let zero = b.const_float(at, 0.0);
        let r = b.range_fold(0, (n * d) as i64, &[zero, zero], |b, e, a| {
            let (l, w) = elem(b, e);
            vec![b.add(a[0], l), b.add(a[1], w)]
        });
        let v = if reduction == "mean" {
            b.div(r[0], r[1])
        } else {
            r[0]
        };
        let v = b.cast(v, dt, NO_SAT);
        let z = b.index(0);
        b.store(op, z, v);
    } else {
        b.set_grid(&[n * d]);
        let e = b.program_id(0);
        let (l, _) = elem(&mut b, e);
        let l = b.cast(l, dt, NO_SAT);
        b.store(op, e, l);
    }
    cx.launch(b.finish(), args);
}
