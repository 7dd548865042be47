//! Kernel IR (backend subset) → LLVM IR text. Start at [`module`], which wraps the kernel body
//! in a loop over grid points, exactly as the host target's Cranelift code does (the entry
//! point's contract is [`tessera_host::blob`]'s); then every kernel-IR construct has one
//! section below, headed ``// ==== `name` ====``, in the order of `InstKind`.
//!
//! Why text: LLVM IR text is one uniform notation for scalars and vectors of any lane count
//! (`<16 x float>` is as easy to write as `float`), and LLVM legalises any vector width to the
//! machine's registers, so this file needs no layouts of its own. `crate::compile` parses the
//! text with LLVM's own parser, verifies it, optimises it and emits an object file.
//!
//! Values. A kernel-IR value becomes one LLVM value: a scalar, or a `<N x T>` vector; bools
//! are `i1` in registers and one byte (0/1) in memory. Semantics follow `tessera_kir::kernel`
//! exactly; where LLVM differs (integer division by zero is undefined, shift amounts past the
//! width are poison, `fptosi` of an out-of-range value is poison) the code says how it is
//! bridged.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use tessera_host::codegen::float_literal_to_int;
use tessera_ir::DType;
use tessera_kir::{
    BinOp, Block, Buf, CmpOp, Inst, InstKind, Kernel, ReduceOp, Scalar, Ty, UnOp, Val,
};

/// The entry point's symbol.
pub const ENTRY: &str = "tessera_kernel";

pub use tessera_host::codegen::CgError;
use tessera_host::codegen::{internal, unsupported, R};

/// A translated kernel: the module text plus what the launcher needs to know.
#[derive(Debug, Clone)]
pub struct Module {
    pub text: String,
    /// Grid extents, missing axes as 1.
    pub grid: [u64; 3],
    /// Bytes of the per-instance scratch area that holds the local and shared buffers.
    pub scratch_bytes: u64,
    /// Minimum byte length of each parameter buffer.
    pub param_bytes: Vec<u64>,
    /// Whether the code has a float remainder, which needs the module's `fmod` helpers.
    pub uses_frem: bool,
}

/// The LLVM type of one element of `d`.
fn elem_type(d: DType) -> R<&'static str> {
    Ok(match d {
        DType::Bool => "i1",
        DType::I8 | DType::U8 => "i8",
        DType::I16 | DType::U16 => "i16",
        DType::I32 | DType::U32 => "i32",
        DType::I64 | DType::U64 => "i64",
        DType::F32 => "float",
        DType::F64 => "double",
        other => return unsupported(format!("dtype {other} (outside the backend subset)")),
    })
}

/// The LLVM type of one element of `d` in memory (bools are bytes).
fn mem_elem_type(d: DType) -> R<&'static str> {
    if d == DType::Bool {
        Ok("i8")
    } else {
        elem_type(d)
    }
}

/// The alignment of one element of `d` in memory (bools are bytes).
fn elem_align(d: DType) -> u32 {
    (d.bits() / 8).max(1)
}

/// `T` or `<N x T>`.
fn vec_of(lanes: u16, e: &str) -> String {
    if lanes == 1 {
        e.to_string()
    } else {
        format!("<{lanes} x {e}>")
    }
}

/// The LLVM type of a kernel-IR value type.
fn llty(t: Ty) -> R<String> {
    if t.is_tile() {
        return unsupported(format!("a {t} value (run scalarize-tiles)"));
    }
    if t.lanes == 0 {
        return internal("a vector of 0 lanes");
    }
    Ok(vec_of(t.lanes, elem_type(t.elem)?))
}

/// The suffix LLVM's overloaded intrinsics take for a type: `f32`, `v8i32`.
fn mangle(t: Ty) -> R<String> {
    let e = match elem_type(t.elem)? {
        "float" => "f32",
        "double" => "f64",
        other => other,
    };
    Ok(if t.lanes == 1 {
        e.to_string()
    } else {
        format!("v{}{e}", t.lanes)
    })
}

/// A float literal as LLVM text: the hexadecimal bits of the value as a double (LLVM's form
/// for `float` too, whose value must then be exactly representable: it is rounded first).
fn float_lit(elem: DType, x: f64) -> String {
    let x = if elem == DType::F32 {
        x as f32 as f64
    } else {
        x
    };
    format!("0x{:016X}", x.to_bits())
}

/// The scalar literal `s` read as `elem`, as LLVM operand text.
fn scalar_lit(elem: DType, s: Scalar) -> R<String> {
    Ok(match (elem, s) {
        (DType::Bool, Scalar::Int(i)) => (i != 0).to_string(),
        (DType::Bool, Scalar::Float(f)) => (f != 0.0).to_string(),
        (DType::F32 | DType::F64, Scalar::Float(f)) => float_lit(elem, f),
        (DType::F32 | DType::F64, Scalar::Int(i)) => float_lit(elem, i as f64),
        (d, Scalar::Int(i)) => wrap_int(d, i).to_string(),
        (d, Scalar::Float(f)) => wrap_int(d, float_literal_to_int(d, f)).to_string(),
    })
}

/// An integer wrapped to the width of `d`, sign-extended back (LLVM reads `i8 255` and
/// `i8 -1` alike, but prints and checks the signed form).
fn wrap_int(d: DType, v: i64) -> i64 {
    let bits = d.bits();
    if bits >= 64 {
        v
    } else {
        let sh = 64 - bits;
        (v << sh) >> sh
    }
}

/// A constant of type `t` with every lane `lit` (scalar text).
fn splat_lit(t: Ty, lit: &str) -> R<String> {
    let e = elem_type(t.elem)?;
    Ok(if t.lanes == 1 {
        lit.to_string()
    } else {
        format!("splat ({e} {lit})")
    })
}

/// Translates `k` (in the backend subset) into one LLVM module whose function [`ENTRY`] is the
/// blob entry point, followed by the `memset`/`memcpy`/`memmove` that LLVM's code generator
/// may call (blob code has nothing to link against, so the module brings its own).
pub fn module(k: &Kernel, triple: &str, data_layout: &str, has_fma: bool) -> R<Module> {
    module_as(k, triple, data_layout, has_fma, ENTRY, true)
}

/// [`module`] with the entry point named `entry`, and with the module's own `memset`,
/// `memcpy` and `memmove` only when `helpers` is set: code linked into a static library calls
/// the C library's instead (and libm's `fmodf`/`fmod`, see [`finish_as`]).
pub fn module_as(
    k: &Kernel,
    triple: &str,
    data_layout: &str,
    has_fma: bool,
    entry: &str,
    helpers: bool,
) -> R<Module> {
    let tessera_host::codegen::Frame {
        grid,
        param_bytes,
        offsets,
        scratch_bytes: scratch,
    } = tessera_host::codegen::frame(k)?;
    // Tiles, `mma` and math routines are the shared passes' to remove (`LlvmCpu::prepare`).
    tessera_kir::passes::check_backend_subset(k)
        .map_err(|e| CgError::Unsupported(e.to_string()))?;

    let mut cg = Cg {
        k,
        out: String::new(),
        vals: vec![None; k.vals.len()],
        next: 0,
        cur: "entry".to_string(),
        decls: BTreeSet::new(),
        uses_frem: false,
        has_fma,
    };
    // ---- entry: buffer bases and the first grid point ----
    cg.line("entry:");
    for (i, &off) in offsets.iter().enumerate() {
        if i < k.num_params {
            cg.line(&format!(
                "  %pa{i} = getelementptr inbounds i8, ptr %args, i64 {}",
                8 * i
            ));
            cg.line(&format!(
                "  %base{i} = load ptr, ptr %pa{i}, align 8, !invariant.load !0"
            ));
        } else {
            cg.line(&format!(
                "  %base{i} = getelementptr inbounds i8, ptr %scratch, i64 {off}"
            ));
        }
    }
    let [_, g1, g2] = grid.map(|g| g.max(1));
    let g12 = g1.saturating_mul(g2);
    cg.line("  %any = icmp ult i64 %begin, %end");
    cg.line("  br i1 %any, label %pre, label %done");
    cg.line("pre:");
    cg.line(&format!("  %q0 = udiv i64 %begin, {g12}"));
    cg.line(&format!("  %rest = urem i64 %begin, {g12}"));
    cg.line(&format!("  %q1 = udiv i64 %rest, {g2}"));
    cg.line(&format!("  %q2 = urem i64 %rest, {g2}"));
    cg.line("  br label %point");
    // ---- one grid point ----
    cg.line("point:");
    cg.line("  %lin = phi i64 [ %begin, %pre ], [ %lin1, %latch ]");
    cg.line("  %p0 = phi i64 [ %q0, %pre ], [ %n0, %latch ]");
    cg.line("  %p1 = phi i64 [ %q1, %pre ], [ %n1, %latch ]");
    cg.line("  %p2 = phi i64 [ %q2, %pre ], [ %n2, %latch ]");
    cg.cur = "point".into();
    if scratch > 0 {
        // Every program instance starts with zeroed local buffers.
        cg.decls
            .insert("declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)".into());
        cg.line(&format!(
            "  call void @llvm.memset.p0.i64(ptr align 16 %scratch, i8 0, i64 {scratch}, i1 false)"
        ));
    }
    if let Some(y) = cg.block(&k.body)? {
        if !y.is_empty() {
            return internal("the kernel body ends with a `yield`");
        }
    }
    // Next grid point: bump the last axis and carry into the others.
    let cur = cg.cur.clone();
    cg.line(&format!("  br label %latch\nlatch: ; from {cur}"));
    cg.line("  %lin1 = add i64 %lin, 1");
    if g1 == 1 && g2 == 1 {
        cg.line("  %n0 = add i64 %lin1, 0\n  %n1 = add i64 0, 0\n  %n2 = add i64 0, 0");
    } else {
        cg.line(&format!(
            "  %i2 = add i64 %p2, 1\n  %w2 = icmp eq i64 %i2, {g2}"
        ));
        cg.line("  %n2 = select i1 %w2, i64 0, i64 %i2\n  %c2 = zext i1 %w2 to i64");
        cg.line(&format!(
            "  %i1 = add i64 %p1, %c2\n  %w1 = icmp eq i64 %i1, {g1}"
        ));
        cg.line("  %n1 = select i1 %w1, i64 0, i64 %i1\n  %c1 = zext i1 %w1 to i64");
        cg.line("  %n0 = add i64 %p0, %c1");
    }
    cg.line("  %more = icmp ult i64 %lin1, %end");
    cg.line("  br i1 %more, label %point, label %done");
    cg.line("done:\n  ret void\n}");

    let mut text = String::new();
    let _ = writeln!(text, "; kernel `{}`", k.name.replace('\n', " "));
    let _ = writeln!(text, "target datalayout = \"{data_layout}\"");
    let _ = writeln!(text, "target triple = \"{triple}\"");
    let _ = writeln!(
        text,
        "define void @{entry}(ptr noalias readonly %args, ptr noalias %scratch, i64 %begin, i64 %end, ptr noalias %trap) #0 {{"
    );
    text.push_str(&cg.out);
    for d in &cg.decls {
        text.push_str(d);
        text.push('\n');
    }
    if helpers {
        text.push_str(RUNTIME_HELPERS);
    }
    text.push_str("!0 = !{}\n");
    Ok(Module {
        text,
        grid,
        scratch_bytes: scratch,
        param_bytes,
        uses_frem: cg.uses_frem,
    })
}

/// `memset`, `memcpy` and `memmove` for the code LLVM generates: a blob links against nothing,
/// so what LLVM's code generator would call lives in the module. `"no-builtins"` keeps the
/// optimiser from turning their own loops back into calls of themselves. `memset` zeroes the
/// scratch area of every program instance and `memcpy` copies whole tiles in and out of it
/// (softmax's 16 KB row tiles): both are optimised (vectorised; a byte-at-a-time `memcpy` was
/// most of softmax's time). `memmove`, for the rare overlapping copy, is compiled without
/// optimisation (`optnone`), which keeps compile time down. `fmod`
/// ([`FMOD_HELPERS`]) is C's, exactly: the integer long division of the significands, one
/// quotient bit per exponent step (as musl computes it).
const RUNTIME_HELPERS: &str = r#"
define dso_local ptr @memset(ptr %d, i32 %c, i64 %n) #1 {
entry:
  %b = trunc i32 %c to i8
  %z = icmp eq i64 %n, 0
  br i1 %z, label %done, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %p = getelementptr i8, ptr %d, i64 %i
  store i8 %b, ptr %p, align 1
  %i1 = add i64 %i, 1
  %m = icmp ult i64 %i1, %n
  br i1 %m, label %loop, label %done
done:
  ret ptr %d
}

define dso_local ptr @memcpy(ptr noalias %d, ptr noalias %s, i64 %n) #1 {
entry:
  %z = icmp eq i64 %n, 0
  br i1 %z, label %done, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %sp = getelementptr i8, ptr %s, i64 %i
  %v = load i8, ptr %sp, align 1
  %dp = getelementptr i8, ptr %d, i64 %i
  store i8 %v, ptr %dp, align 1
  %i1 = add i64 %i, 1
  %m = icmp ult i64 %i1, %n
  br i1 %m, label %loop, label %done
done:
  ret ptr %d
}

define dso_local ptr @memmove(ptr %d, ptr %s, i64 %n) #2 {
entry:
  %z = icmp eq i64 %n, 0
  br i1 %z, label %done, label %pick
pick:
  %back = icmp ugt ptr %d, %s
  br i1 %back, label %bloop, label %floop
floop:
  %i = phi i64 [ 0, %pick ], [ %i1, %floop ]
  %sp = getelementptr i8, ptr %s, i64 %i
  %v = load i8, ptr %sp, align 1
  %dp = getelementptr i8, ptr %d, i64 %i
  store i8 %v, ptr %dp, align 1
  %i1 = add i64 %i, 1
  %m = icmp ult i64 %i1, %n
  br i1 %m, label %floop, label %done
bloop:
  %j = phi i64 [ %n, %pick ], [ %j1, %bloop ]
  %j1 = sub i64 %j, 1
  %sq = getelementptr i8, ptr %s, i64 %j1
  %w = load i8, ptr %sq, align 1
  %dq = getelementptr i8, ptr %d, i64 %j1
  store i8 %w, ptr %dq, align 1
  %more = icmp ne i64 %j1, 0
  br i1 %more, label %bloop, label %done
done:
  ret ptr %d
}

"#;

/// `fmodf` and `fmod`, for modules whose code has a float remainder (`frem` lowers to calls).
const FMOD_HELPERS: &str = r#"
define dso_local float @fmodf(float %x, float %y) #1 {
entry:
  %ux = bitcast float %x to i32
  %uy = bitcast float %y to i32
  %r = call i32 @tessera_fmod_bits32(i32 %ux, i32 %uy)
  %f = bitcast i32 %r to float
  ret float %f
}

define dso_local double @fmod(double %x, double %y) #1 {
entry:
  %ux = bitcast double %x to i64
  %uy = bitcast double %y to i64
  %r = call i64 @tessera_fmod_bits64(i64 %ux, i64 %uy)
  %f = bitcast i64 %r to double
  ret double %f
}
"#;

/// The body of `fmod` on bit patterns, for one width: `W` bits, `MB` mantissa bits.
fn fmod_bits(w: u32, mb: u32) -> String {
    let it = format!("i{w}");
    let sign: i128 = 1i128 << (w - 1);
    let abs = sign - 1;
    let inf: i128 = ((1i128 << (w - 1 - mb)) - 1) << mb;
    let nan = inf | (1i128 << (mb - 1));
    let implicit = 1i128 << mb;
    let shift = w - 1 - mb;
    let wrap = |v: i128| -> i128 {
        // The literal as LLVM reads an `iW`: the signed value of its low W bits.
        let m = v & ((1i128 << w) - 1);
        if m & sign != 0 {
            m - (1i128 << w)
        } else {
            m
        }
    };
    let (sign, abs, inf, nan) = (wrap(sign), wrap(abs), wrap(inf), wrap(nan));
    format!(
        r#"
define internal {it} @tessera_fmod_bits{w}({it} %ux, {it} %uy) #1 {{
entry:
  %sx = and {it} %ux, {sign}
  %ax = and {it} %ux, {abs}
  %ay = and {it} %uy, {abs}
  %y0 = icmp eq {it} %ay, 0
  %ynan = icmp ugt {it} %ay, {inf}
  %xbad = icmp uge {it} %ax, {inf}
  %bad0 = or i1 %y0, %ynan
  %bad = or i1 %bad0, %xbad
  br i1 %bad, label %retnan, label %cmp
retnan:
  ret {it} {nan}
cmp:
  %small = icmp ult {it} %ax, %ay
  br i1 %small, label %retx, label %cmpeq
retx:
  ret {it} %ux
cmpeq:
  %eq = icmp eq {it} %ax, %ay
  br i1 %eq, label %retsign, label %main
retsign:
  ret {it} %sx
main:
  %ex0 = lshr {it} %ax, {mb}
  %lzx = call {it} @llvm.ctlz.{it}({it} %ax, i1 false)
  %ssx = sub {it} %lzx, {shift}
  %msx = shl {it} %ax, %ssx
  %esx = sub {it} 1, %ssx
  %fx = and {it} %ax, {fmask}
  %mnx = or {it} %fx, {implicit}
  %subx = icmp eq {it} %ex0, 0
  %mx = select i1 %subx, {it} %msx, {it} %mnx
  %ex = select i1 %subx, {it} %esx, {it} %ex0
  %ey0 = lshr {it} %ay, {mb}
  %lzy = call {it} @llvm.ctlz.{it}({it} %ay, i1 false)
  %ssy = sub {it} %lzy, {shift}
  %msy = shl {it} %ay, %ssy
  %esy = sub {it} 1, %ssy
  %fy = and {it} %ay, {fmask}
  %mny = or {it} %fy, {implicit}
  %suby = icmp eq {it} %ey0, 0
  %my = select i1 %suby, {it} %msy, {it} %mny
  %ey = select i1 %suby, {it} %esy, {it} %ey0
  br label %hdr
hdr:
  %hm = phi {it} [ %mx, %main ], [ %m3, %body ]
  %he = phi {it} [ %ex, %main ], [ %e2, %body ]
  %go = icmp sgt {it} %he, %ey
  br i1 %go, label %body, label %after
body:
  %i = sub {it} %hm, %my
  %keep = icmp sge {it} %i, 0
  %m2 = select i1 %keep, {it} %i, {it} %hm
  %m3 = shl {it} %m2, 1
  %e2 = sub {it} %he, 1
  br label %hdr
after:
  %ia = sub {it} %hm, %my
  %keepa = icmp sge {it} %ia, 0
  %m = select i1 %keepa, {it} %ia, {it} %hm
  %mz = icmp eq {it} %m, 0
  br i1 %mz, label %retsign, label %norm
norm:
  %lz = call {it} @llvm.ctlz.{it}({it} %m, i1 false)
  %s = sub {it} %lz, {shift}
  %mm = shl {it} %m, %s
  %e = sub {it} %he, %s
  %frac = sub {it} %mm, {implicit}
  %expo = shl {it} %e, {mb}
  %normal = or {it} %frac, %expo
  %sh = sub {it} 1, %e
  %subn = lshr {it} %mm, %sh
  %pos = icmp sgt {it} %e, 0
  %rr = select i1 %pos, {it} %normal, {it} %subn
  %res = or {it} %rr, %sx
  ret {it} %res
}}
declare {it} @llvm.ctlz.{it}({it}, i1)
"#,
        fmask = implicit - 1,
    )
}

/// Attribute groups: the kernel (no unwinding, no libcalls of the optimiser's invention
/// beyond the helpers above) and the helpers.
fn attributes(cpu_attrs: &str) -> String {
    format!(
        "attributes #0 = {{ nounwind {cpu_attrs} }}\nattributes #1 = {{ nounwind \"no-builtins\" {cpu_attrs} }}\nattributes #2 = {{ nounwind noinline optnone \"no-builtins\" {cpu_attrs} }}\n"
    )
}

/// The module text with the helpers' fmod bodies and the attribute groups appended; the CPU
/// attributes (`"target-cpu"`, `"target-features"`) are the target machine's.
pub fn finish(m: &Module, cpu_attrs: &str) -> String {
    finish_as(m, cpu_attrs, true)
}

/// [`finish`]; without `helpers` a float remainder calls libm's `fmodf`/`fmod` (declared by
/// LLVM when it lowers `frem`), resolved when the static library is linked.
pub fn finish_as(m: &Module, cpu_attrs: &str, helpers: bool) -> String {
    let mut t = m.text.clone();
    if m.uses_frem && helpers {
        t.push_str(FMOD_HELPERS);
        t.push_str(&fmod_bits(32, 23));
        t.push_str(&fmod_bits(64, 52));
    }
    t.push_str(&attributes(cpu_attrs));
    t
}

struct Cg<'k> {
    k: &'k Kernel,
    out: String,
    /// The LLVM operand text of every defined value.
    vals: Vec<Option<String>>,
    next: u32,
    /// The label of the block being filled (phis name their predecessors).
    cur: String,
    /// Intrinsic declarations the body uses.
    decls: BTreeSet<String>,
    uses_frem: bool,
    /// Whether the CPU fuses multiply-adds; without it `fma` is refused (LLVM would call a
    /// libm `fma`, which blob code cannot link).
    has_fma: bool,
}

impl Cg<'_> {
    // ---- bookkeeping ----

    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn fresh(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}{}", self.next)
    }

    /// Starts block `label`.
    fn label(&mut self, label: &str) {
        self.line(&format!("{label}:"));
        self.cur = label.to_string();
    }

    fn ty(&self, v: Val) -> R<Ty> {
        match self.k.vals.get(v.0 as usize) {
            Some(&t) => Ok(t),
            None => internal(format!("value %{} is not declared", v.0)),
        }
    }

    fn op(&self, v: Val) -> R<String> {
        match self.vals.get(v.0 as usize) {
            Some(Some(r)) => Ok(r.clone()),
            _ => internal(format!("value %{} is used before it is defined", v.0)),
        }
    }

    /// `type operand`.
    fn typed(&self, v: Val) -> R<String> {
        Ok(format!("{} {}", llty(self.ty(v)?)?, self.op(v)?))
    }

    fn def(&mut self, v: Val, r: String) -> R<()> {
        match self.vals.get_mut(v.0 as usize) {
            Some(slot) => {
                *slot = Some(r);
                Ok(())
            }
            None => internal(format!("value %{} is not declared", v.0)),
        }
    }

    fn result(inst: &Inst, n: usize) -> R<Val> {
        match inst.results.get(n) {
            Some(&v) => Ok(v),
            None => internal(format!("instruction {:?} lacks result {n}", inst.kind)),
        }
    }

    /// Emits `%name = rhs` and returns `%name`.
    fn emit(&mut self, rhs: &str) -> String {
        let n = format!("%t{}", self.fresh(""));
        self.line(&format!("  {n} = {rhs}"));
        n
    }

    /// Emits a call of intrinsic `name` (declared once) returning `ret`.
    fn intrinsic(&mut self, name: &str, ret: &str, args: &[String]) -> String {
        // Each argument is `TYPE OPERAND`; a type is one word or a `<N x T>` vector.
        let tys: Vec<&str> = args
            .iter()
            .map(|a| match a.strip_prefix('<') {
                Some(rest) => &a[..rest.find('>').map_or(a.len(), |i| i + 2)],
                None => a.split_once(' ').map_or(a.as_str(), |(t, _)| t),
            })
            .collect();
        self.decls
            .insert(format!("declare {ret} @{name}({})", tys.join(", ")));
        self.emit(&format!("call {ret} @{name}({})", args.join(", ")))
    }

    fn block(&mut self, blk: &Block) -> R<Option<Vec<Val>>> {
        for (n, inst) in blk.insts.iter().enumerate() {
            if let InstKind::Yield(vals) = &inst.kind {
                if n + 1 != blk.insts.len() {
                    return internal("a `yield` that does not end its block");
                }
                return Ok(Some(vals.clone()));
            }
            self.inst(inst)?;
        }
        Ok(None)
    }

    fn same_types(&self, what: &str, a: &[Val], b: &[Val]) -> R<()> {
        let ta: Vec<Ty> = a.iter().map(|&v| self.ty(v)).collect::<R<_>>()?;
        let tb: Vec<Ty> = b.iter().map(|&v| self.ty(v)).collect::<R<_>>()?;
        if ta != tb {
            return internal(format!("{what}: types {ta:?} do not match {tb:?}"));
        }
        Ok(())
    }

    fn inst(&mut self, inst: &Inst) -> R<()> {
        match &inst.kind {
            InstKind::Const(s) => self.const_(inst, *s),
            InstKind::ProgramId(axis) => self.program_id(inst, *axis),
            InstKind::Unary(op, x) => self.unary(inst, *op, *x),
            InstKind::Binary(op, a, b) => self.binary(inst, *op, *a, *b),
            InstKind::Cmp(op, a, b) => self.cmp(inst, *op, *a, *b),
            InstKind::Select(c, a, b) => self.select(inst, *c, *a, *b),
            InstKind::Fma(a, b, c) => self.fma(inst, *a, *b, *c),
            InstKind::Dot(acc, a, b) => self.dot(inst, *acc, *a, *b),
            InstKind::Cast(x, _mode) => self.cast(inst, *x),
            InstKind::Bitcast(x) => self.bitcast(inst, *x),
            InstKind::Splat(x) => self.splat(inst, *x),
            InstKind::Extract(x, lane) => self.extract(inst, *x, *lane),
            InstKind::ReduceLanes(op, x) => self.reduce_lanes(inst, *op, *x),
            InstKind::Load { buf, index } => self.load(inst, *buf, *index),
            InstKind::Store { buf, index, value } => self.store(*buf, *index, *value),
            InstKind::For {
                lo,
                hi,
                step,
                iv,
                iter,
                init,
                body,
            } => self.for_(inst, [*lo, *hi, *step], *iv, iter, init, body),
            InstKind::If {
                cond,
                then_blk,
                else_blk,
            } => self.if_(inst, *cond, then_blk, else_blk),
            InstKind::Trap { cond, code, value } => self.trap(*cond, *code, *value),
            // `module` checked the kernel is in the backend subset; a closing `yield` is taken
            // by `block`.
            _ => internal(format!(
                "`{}` outside the backend subset",
                tessera_kir::text::inst_head(self.k, inst)
            )),
        }
    }

    // ==== `const` ====
    // Constants are operands, not instructions: LLVM folds them where they are used.

    fn const_(&mut self, inst: &Inst, s: Scalar) -> R<()> {
        let r = Self::result(inst, 0)?;
        let ty = self.ty(r)?;
        let lit = scalar_lit(ty.elem, s)?;
        let c = splat_lit(ty, &lit)?;
        self.def(r, c)
    }

    // ==== `program_id` ====

    fn program_id(&mut self, inst: &Inst, axis: u8) -> R<()> {
        let r = Self::result(inst, 0)?;
        if axis > 2 {
            return internal(format!("program_id {axis}: the grid has at most 3 axes"));
        }
        self.def(r, format!("%p{axis}"))
    }

    // ==== `unary` ====

    fn unary(&mut self, inst: &Inst, op: UnOp, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let t = self.ty(x)?;
        let (elem, ts, xo) = (t.elem, llty(t)?, self.op(x)?);
        let tx = format!("{ts} {xo}");
        let m = mangle(t)?;
        let float = elem.is_float();
        let v = match op {
            UnOp::Neg if float => self.emit(&format!("fneg {tx}")),
            UnOp::Neg if elem.is_int() => self.emit(&format!("sub {ts} zeroinitializer, {xo}")),
            UnOp::Abs if float => self.intrinsic(&format!("llvm.fabs.{m}"), &ts, &[tx]),
            UnOp::Abs if elem.is_signed_int() => {
                // `false`: |MIN| is MIN, not poison, as kernel IR says.
                self.intrinsic(&format!("llvm.abs.{m}"), &ts, &[tx, "i1 false".to_string()])
            }
            UnOp::Abs if elem.is_unsigned_int() || elem == DType::Bool => xo,
            UnOp::Not if elem == DType::Bool => {
                let ones = splat_lit(t, "true")?;
                self.emit(&format!("xor {tx}, {ones}"))
            }
            UnOp::Not if elem.is_int() => {
                let ones = splat_lit(t, "-1")?;
                self.emit(&format!("xor {tx}, {ones}"))
            }
            UnOp::Sqrt if float => self.intrinsic(&format!("llvm.sqrt.{m}"), &ts, &[tx]),
            UnOp::Floor if float => self.intrinsic(&format!("llvm.floor.{m}"), &ts, &[tx]),
            UnOp::Ceil if float => self.intrinsic(&format!("llvm.ceil.{m}"), &ts, &[tx]),
            UnOp::Round if float => self.intrinsic(&format!("llvm.roundeven.{m}"), &ts, &[tx]),
            UnOp::Trunc if float => self.intrinsic(&format!("llvm.trunc.{m}"), &ts, &[tx]),
            // Rounding an integer or bool is the identity.
            UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc if !float => xo,
            _ => return unsupported(format!("unary `{op:?}` on {elem}")),
        };
        self.def(r, v)
    }

    // ==== `fma` ====

    fn fma(&mut self, inst: &Inst, a: Val, b: Val, c: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        self.same_types("fma operands", &[a, a], &[b, c])?;
        if !self.has_fma {
            return unsupported("`fma` on a CPU level without FMA");
        }
        let t = self.ty(a)?;
        let (ts, m) = (llty(t)?, mangle(t)?);
        let args = [self.typed(a)?, self.typed(b)?, self.typed(c)?];
        let v = self.intrinsic(&format!("llvm.fma.{m}"), &ts, &args);
        self.def(r, v)
    }

    // ==== `dot` ====

    /// The operands widened to i32 (sign- or zero-extended by their dtype), multiplied, and
    /// each group of `G` lanes summed through `G` strided shuffles: the form LLVM's x86
    /// backend selects as `vpmaddwd` for i16 pairs. Exact, as the instruction is.
    fn dot(&mut self, inst: &Inst, acc: Val, a: Val, b: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let (xt, at, bt) = (self.ty(acc)?, self.ty(a)?, self.ty(b)?);
        let (l, n) = (xt.lanes as u32, at.lanes as u32);
        if l == 0 || n % l != 0 || bt.lanes != at.lanes {
            return internal(format!("`dot` of {at} and {bt} into {xt}"));
        }
        let g = n / l;
        let wide = format!("<{n} x i32>");
        let ext = |cg: &mut Self, v: Val, t: Ty| -> R<String> {
            let how = if t.elem.is_signed_int() {
                "sext"
            } else {
                "zext"
            };
            let tv = cg.typed(v)?;
            Ok(cg.emit(&format!("{how} {tv} to {wide}")))
        };
        let (x, y) = (ext(self, a, at)?, ext(self, b, bt)?);
        let p = self.emit(&format!("mul {wide} {x}, {y}"));
        let mut sum: Option<String> = None;
        for q in 0..g {
            let idx: Vec<String> = (0..l).map(|i| format!("i32 {}", i * g + q)).collect();
            let part = if l == 1 {
                self.emit(&format!("extractelement {wide} {p}, i32 {q}"))
            } else {
                self.emit(&format!(
                    "shufflevector {wide} {p}, {wide} poison, <{l} x i32> <{}>",
                    idx.join(", ")
                ))
            };
            let lt = vec_of(l as u16, "i32");
            sum = Some(match sum {
                None => part,
                Some(s) => self.emit(&format!("add {lt} {s}, {part}")),
            });
        }
        let lt = vec_of(l as u16, "i32");
        let s = sum.unwrap_or_default();
        let ao = self.op(acc)?;
        let v = self.emit(&format!("add {lt} {ao}, {s}"));
        self.def(r, v)
    }

    // ==== `binary` ====

    fn binary(&mut self, inst: &Inst, op: BinOp, a: Val, b: Val) -> R<()> {
        use BinOp::*;
        let r = Self::result(inst, 0)?;
        self.same_types("binary operands", &[a], &[b])?;
        let t = self.ty(a)?;
        let elem = t.elem;
        let ts = llty(t)?;
        let (ao, bo) = (self.op(a)?, self.op(b)?);
        let (ta, tb) = (format!("{ts} {ao}"), format!("{ts} {bo}"));
        let m = mangle(t)?;
        if elem == DType::Bool {
            let v = match op {
                And | Min => self.emit(&format!("and {ta}, {bo}")),
                Or | Max => self.emit(&format!("or {ta}, {bo}")),
                Xor => self.emit(&format!("xor {ta}, {bo}")),
                _ => return unsupported(format!("binary `{op:?}` on bool")),
            };
            return self.def(r, v);
        }
        if elem.is_float() {
            let v = match op {
                // `contract` lets LLVM fuse a multiply and an add into one FMA (one rounding
                // fewer): within the f32/f64 tolerance of target.toml, and what makes matrix
                // products run at the FMA units' rate.
                Add => self.emit(&format!("fadd contract {ta}, {bo}")),
                Sub => self.emit(&format!("fsub contract {ta}, {bo}")),
                Mul => self.emit(&format!("fmul contract {ta}, {bo}")),
                Div => self.emit(&format!("fdiv {ta}, {bo}")),
                // `minimum`/`maximum` return NaN when either operand is NaN, as kernel IR's do.
                Min => self.intrinsic(&format!("llvm.minimum.{m}"), &ts, &[ta, tb]),
                Max => self.intrinsic(&format!("llvm.maximum.{m}"), &ts, &[ta, tb]),
                // `frem` becomes calls of the module's own exact `fmodf`/`fmod`.
                Rem => {
                    self.uses_frem = true;
                    self.emit(&format!("frem {ta}, {bo}"))
                }
                _ => return unsupported(format!("binary `{op:?}` on {elem}")),
            };
            return self.def(r, v);
        }
        let signed = elem.is_signed_int();
        let v = match op {
            Add => self.emit(&format!("add {ta}, {bo}")),
            Sub => self.emit(&format!("sub {ta}, {bo}")),
            Mul => self.emit(&format!("mul {ta}, {bo}")),
            Div | Rem => self.int_divrem(t, op == Div, signed, &ao, &bo)?,
            Min | Max => {
                let n = match (op, signed) {
                    (Min, true) => "smin",
                    (Min, false) => "umin",
                    (_, true) => "smax",
                    (_, false) => "umax",
                };
                self.intrinsic(&format!("llvm.{n}.{m}"), &ts, &[ta, tb])
            }
            And => self.emit(&format!("and {ta}, {bo}")),
            Or => self.emit(&format!("or {ta}, {bo}")),
            Xor => self.emit(&format!("xor {ta}, {bo}")),
            // LLVM's shift past the width is poison; kernel IR takes the amount modulo it.
            Shl | Shr => {
                let mask = splat_lit(t, &(elem.bits() - 1).to_string())?;
                let amt = self.emit(&format!("and {tb}, {mask}"));
                let ins = match (op, signed) {
                    (Shl, _) => "shl",
                    (_, true) => "ashr",
                    (_, false) => "lshr",
                };
                self.emit(&format!("{ins} {ta}, {amt}"))
            }
        };
        self.def(r, v)
    }

    /// Integer division or remainder with kernel IR's total semantics: x / 0 = 0, x % 0 = 0,
    /// MIN / -1 = MIN, MIN % -1 = 0. LLVM's `sdiv`/`udiv` are undefined on those, so the
    /// divisor is replaced by 1 wherever they would be and the result patched.
    fn int_divrem(&mut self, t: Ty, div: bool, signed: bool, a: &str, b: &str) -> R<String> {
        let ts = llty(t)?;
        let bt = llty(t.with_elem(DType::Bool))?;
        let zero = "zeroinitializer";
        let one = splat_lit(t, "1")?;
        let is_zero = self.emit(&format!("icmp eq {ts} {b}, {zero}"));
        if !signed {
            let d = self.emit(&format!("select {bt} {is_zero}, {ts} {one}, {ts} {b}"));
            return Ok(if div {
                let q = self.emit(&format!("udiv {ts} {a}, {d}"));
                self.emit(&format!("select {bt} {is_zero}, {ts} {zero}, {ts} {q}"))
            } else {
                // x % 1 = 0, which is also the answer for x % 0.
                self.emit(&format!("urem {ts} {a}, {d}"))
            });
        }
        let m1 = splat_lit(t, "-1")?;
        let is_m1 = self.emit(&format!("icmp eq {ts} {b}, {m1}"));
        let bad = self.emit(&format!("or {bt} {is_zero}, {is_m1}"));
        let d = self.emit(&format!("select {bt} {bad}, {ts} {one}, {ts} {b}"));
        Ok(if div {
            // x / -1 = -x, wrapping MIN to MIN.
            let q = self.emit(&format!("sdiv {ts} {a}, {d}"));
            let neg = self.emit(&format!("sub {ts} {zero}, {a}"));
            let q = self.emit(&format!("select {bt} {is_m1}, {ts} {neg}, {ts} {q}"));
            self.emit(&format!("select {bt} {is_zero}, {ts} {zero}, {ts} {q}"))
        } else {
            // x % 1 = 0, the answer for both x % 0 and x % -1.
            self.emit(&format!("srem {ts} {a}, {d}"))
        })
    }

    // ==== `cmp` ====

    fn cmp(&mut self, inst: &Inst, op: CmpOp, a: Val, b: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        self.same_types("cmp operands", &[a], &[b])?;
        let t = self.ty(a)?;
        let ta = self.typed(a)?;
        let bo = self.op(b)?;
        let v = if t.elem.is_float() {
            // Ordered comparisons, except `ne`, which is true for NaN.
            let p = match op {
                CmpOp::Eq => "oeq",
                CmpOp::Ne => "une",
                CmpOp::Lt => "olt",
                CmpOp::Le => "ole",
                CmpOp::Gt => "ogt",
                CmpOp::Ge => "oge",
            };
            self.emit(&format!("fcmp {p} {ta}, {bo}"))
        } else {
            let s = t.elem.is_signed_int();
            let p = match (op, s) {
                (CmpOp::Eq, _) => "eq",
                (CmpOp::Ne, _) => "ne",
                (CmpOp::Lt, true) => "slt",
                (CmpOp::Lt, false) => "ult",
                (CmpOp::Le, true) => "sle",
                (CmpOp::Le, false) => "ule",
                (CmpOp::Gt, true) => "sgt",
                (CmpOp::Gt, false) => "ugt",
                (CmpOp::Ge, true) => "sge",
                (CmpOp::Ge, false) => "uge",
            };
            self.emit(&format!("icmp {p} {ta}, {bo}"))
        };
        self.def(r, v)
    }

    // ==== `select` ====

    fn select(&mut self, inst: &Inst, c: Val, a: Val, b: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        self.same_types("select operands", &[a], &[b])?;
        let (tc, ta, tb) = (self.typed(c)?, self.typed(a)?, self.typed(b)?);
        // A scalar condition with vector operands is LLVM's too.
        let v = self.emit(&format!("select {tc}, {ta}, {tb}"));
        self.def(r, v)
    }

    // ==== `cast` ====

    fn cast(&mut self, inst: &Inst, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let (from, to) = (self.ty(x)?, self.ty(r)?);
        if from.lanes != to.lanes {
            return internal(format!("a cast from {from} to {to}"));
        }
        let (fe, te) = (from.elem, to.elem);
        let tx = self.typed(x)?;
        let tt = llty(to)?;
        let xo = self.op(x)?;
        let v = if llty(from)? == tt && !(fe.is_float() && !te.is_float()) {
            // Same LLVM type: ints of one width (signedness is in the ops), or equal types.
            xo
        } else if fe == DType::Bool {
            if te.is_float() {
                self.emit(&format!("uitofp {tx} to {tt}"))
            } else {
                self.emit(&format!("zext {tx} to {tt}"))
            }
        } else if te == DType::Bool {
            // Anything to bool is `x != 0` (true for NaN).
            if fe.is_float() {
                self.emit(&format!("fcmp une {tx}, zeroinitializer"))
            } else {
                self.emit(&format!("icmp ne {tx}, zeroinitializer"))
            }
        } else if fe.is_float() && te.is_float() {
            let ins = if te.bits() > fe.bits() {
                "fpext"
            } else {
                "fptrunc"
            };
            self.emit(&format!("{ins} {tx} to {tt}"))
        } else if fe.is_float() && from.lanes > 1 && matches!(fe, DType::F32 | DType::F64) {
            self.vector_float_to_int(from, to, &tx)?
        } else if fe.is_float() {
            // Truncating, saturating, NaN → 0: exactly the `.sat` intrinsics.
            let n = if te.is_signed_int() {
                "fptosi"
            } else {
                "fptoui"
            };
            let name = format!("llvm.{n}.sat.{}.{}", mangle(to)?, mangle(from)?);
            self.intrinsic(&name, &tt, &[tx])
        } else if te.is_float() {
            let ins = if fe.is_signed_int() {
                "sitofp"
            } else {
                "uitofp"
            };
            self.emit(&format!("{ins} {tx} to {tt}"))
        } else if te.bits() < fe.bits() {
            self.emit(&format!("trunc {tx} to {tt}"))
        } else {
            let ins = if fe.is_signed_int() { "sext" } else { "zext" };
            self.emit(&format!("{ins} {tx} to {tt}"))
        };
        self.def(r, v)
    }

    /// A saturating, truncating float-to-int conversion of a vector (NaN → 0), as the `.sat`
    /// intrinsics define it, written as compares, selects and a plain `fptosi`/`fptoui` of
    /// in-range lanes: LLVM's x86 backend turns a vector `.sat` into one scalar conversion and
    /// two fix-ups per lane (softmax's `exp` spent most of its time there), where this form is
    /// one `vcvttps2dq` and a few masked moves. A lane in `[lo, hi)` (the int type's range,
    /// both ends powers of two the float holds exactly) converts as it is; a lane at or above
    /// `hi` is the largest int, below `lo` the smallest, NaN (no compare holds) 0.
    fn vector_float_to_int(&mut self, from: Ty, to: Ty, tx: &str) -> R<String> {
        let (fe, te) = (from.elem, to.elem);
        let (ft, tt) = (llty(from)?, llty(to)?);
        let bits = te.bits();
        let signed = te.is_signed_int();
        let (lo, hi) = if signed {
            (-(2f64.powi(bits as i32 - 1)), 2f64.powi(bits as i32 - 1))
        } else {
            (0.0, 2f64.powi(bits as i32))
        };
        let (min, max): (i128, i128) = if signed {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        };
        let lo_v = splat_lit(from, &float_lit(fe, lo))?;
        let hi_v = splat_lit(from, &float_lit(fe, hi))?;
        let below = self.emit(&format!("fcmp olt {tx}, {lo_v}"));
        let above = self.emit(&format!("fcmp oge {tx}, {hi_v}"));
        let ge_lo = self.emit(&format!("fcmp oge {tx}, {lo_v}"));
        let lt_hi = self.emit(&format!("fcmp olt {tx}, {hi_v}"));
        let mask = vec_of(from.lanes, "i1");
        let inside = self.emit(&format!("and {mask} {ge_lo}, {lt_hi}"));
        let zero = splat_lit(from, &float_lit(fe, 0.0))?;
        let safe = self.emit(&format!("select {mask} {inside}, {tx}, {ft} {zero}"));
        let ins = if signed { "fptosi" } else { "fptoui" };
        let conv = self.emit(&format!("{ins} {ft} {safe} to {tt}"));
        let max_v = splat_lit(to, &wrap_int(te, max as i64).to_string())?;
        let min_v = splat_lit(to, &wrap_int(te, min as i64).to_string())?;
        let top = self.emit(&format!("select {mask} {above}, {tt} {max_v}, {tt} {conv}"));
        Ok(self.emit(&format!("select {mask} {below}, {tt} {min_v}, {tt} {top}")))
    }

    // ==== `bitcast` ====

    fn bitcast(&mut self, inst: &Inst, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let (from, to) = (self.ty(x)?, self.ty(r)?);
        // Bools are bytes when reinterpreted, as in memory.
        let mut src = self.typed(x)?;
        if from.elem == DType::Bool {
            let bt = vec_of(from.lanes, "i8");
            let z = self.emit(&format!("zext {src} to {bt}"));
            src = format!("{bt} {z}");
        }
        let v = if to.elem == DType::Bool {
            let bt = vec_of(to.lanes, "i8");
            let c = self.emit(&format!("bitcast {src} to {bt}"));
            self.emit(&format!("icmp ne {bt} {c}, zeroinitializer"))
        } else {
            let tt = llty(to)?;
            self.emit(&format!("bitcast {src} to {tt}"))
        };
        self.def(r, v)
    }

    // ==== `splat` ====

    fn splat(&mut self, inst: &Inst, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let to = self.ty(r)?;
        let tx = self.typed(x)?;
        if to.lanes == 1 {
            let xo = self.op(x)?;
            return self.def(r, xo);
        }
        let tt = llty(to)?;
        let one = self.emit(&format!("insertelement {tt} poison, {tx}, i64 0"));
        let v = self.emit(&format!(
            "shufflevector {tt} {one}, {tt} poison, <{} x i32> zeroinitializer",
            to.lanes
        ));
        self.def(r, v)
    }

    // ==== `extract` ====

    fn extract(&mut self, inst: &Inst, x: Val, lane: u16) -> R<()> {
        let r = Self::result(inst, 0)?;
        let t = self.ty(x)?;
        if lane >= t.lanes {
            return internal(format!("lane {lane} of a {t}"));
        }
        let v = if t.lanes == 1 {
            self.op(x)?
        } else {
            let tx = self.typed(x)?;
            self.emit(&format!("extractelement {tx}, i64 {lane}"))
        };
        self.def(r, v)
    }

    // ==== `reduce_lanes` ====
    // Float sums and products are LLVM's ordered reductions (no reassociation flags): lane 0
    // first, then each lane in order, as the interpreter rounds.

    fn reduce_lanes(&mut self, inst: &Inst, op: ReduceOp, x: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let t = self.ty(x)?;
        if t.lanes == 1 {
            let xo = self.op(x)?;
            return self.def(r, xo);
        }
        let tx = self.typed(x)?;
        let es = elem_type(t.elem)?;
        let m = mangle(t)?;
        let v = if t.elem == DType::Bool {
            let n = match op {
                ReduceOp::Min | ReduceOp::Mul => "and",
                ReduceOp::Max => "or",
                ReduceOp::Add => return unsupported("a sum of bool lanes"),
            };
            self.intrinsic(&format!("llvm.vector.reduce.{n}.{m}"), es, &[tx])
        } else if t.elem.is_float() {
            match op {
                ReduceOp::Add => self.intrinsic(
                    &format!("llvm.vector.reduce.fadd.{m}"),
                    es,
                    &[format!("{es} {}", float_lit(t.elem, -0.0)), tx],
                ),
                ReduceOp::Mul => self.intrinsic(
                    &format!("llvm.vector.reduce.fmul.{m}"),
                    es,
                    &[format!("{es} {}", float_lit(t.elem, 1.0)), tx],
                ),
                ReduceOp::Min => {
                    self.intrinsic(&format!("llvm.vector.reduce.fminimum.{m}"), es, &[tx])
                }
                ReduceOp::Max => {
                    self.intrinsic(&format!("llvm.vector.reduce.fmaximum.{m}"), es, &[tx])
                }
            }
        } else {
            let s = t.elem.is_signed_int();
            let n = match (op, s) {
                (ReduceOp::Add, _) => "add",
                (ReduceOp::Mul, _) => "mul",
                (ReduceOp::Min, true) => "smin",
                (ReduceOp::Min, false) => "umin",
                (ReduceOp::Max, true) => "smax",
                (ReduceOp::Max, false) => "umax",
            };
            self.intrinsic(&format!("llvm.vector.reduce.{n}.{m}"), es, &[tx])
        };
        self.def(r, v)
    }

    // ==== `load` ====

    /// The address of element `index` of `buf` read as `elem`. `elem` is the buffer's dtype
    /// or its storage view (`u16` for f16/bf16, `u8` for the float8s and the bytes of sub-byte
    /// dtypes); the index counts elements of `elem`.
    fn address(&mut self, buf: Buf, index: Val, elem: DType) -> R<String> {
        let Some(decl) = self.k.bufs.get(buf.0 as usize) else {
            return internal(format!("buffer #{} is not declared", buf.0));
        };
        if decl.view_len(elem).is_none() {
            return unsupported(format!(
                "access to buffer `{}` of dtype {} as {elem} (run `to_backend_subset` first)",
                decl.name, decl.dtype
            ));
        }
        if elem.bits() < 8 && elem != DType::Bool {
            return unsupported(format!(
                "an access to buffer `{}` as sub-byte {elem}",
                decl.name
            ));
        }
        let it = self.ty(index)?;
        if it != Ty::INDEX {
            return internal(format!("an index of type {it} (indices are i64)"));
        }
        let idx = self.op(index)?;
        let et = mem_elem_type(elem)?;
        Ok(self.emit(&format!(
            "getelementptr {et}, ptr %base{}, i64 {idx}",
            buf.0
        )))
    }

    fn load(&mut self, inst: &Inst, buf: Buf, index: Val) -> R<()> {
        let r = Self::result(inst, 0)?;
        let ty = self.ty(r)?;
        let addr = self.address(buf, index, ty.elem)?;
        let mt = vec_of(ty.lanes, mem_elem_type(ty.elem)?);
        // Element-aligned: every buffer base is 16-byte aligned (runtime storage, the scratch
        // frame, a static library's workspace and constants) and indices count elements. (A
        // byte alignment would make RVV load vectors byte by byte, `vle8.v`.)
        let align = elem_align(ty.elem);
        let v = self.emit(&format!("load {mt}, ptr {addr}, align {align}"));
        let v = if ty.elem == DType::Bool {
            // A stored bool byte is true when nonzero.
            self.emit(&format!("icmp ne {mt} {v}, zeroinitializer"))
        } else {
            v
        };
        self.def(r, v)
    }

    // ==== `store` ====

    fn store(&mut self, buf: Buf, index: Val, value: Val) -> R<()> {
        let vt = self.ty(value)?;
        let addr = self.address(buf, index, vt.elem)?;
        let mut tv = self.typed(value)?;
        if vt.elem == DType::Bool {
            let bt = vec_of(vt.lanes, "i8");
            let z = self.emit(&format!("zext {tv} to {bt}"));
            tv = format!("{bt} {z}");
        }
        self.line(&format!(
            "  store {tv}, ptr {addr}, align {}",
            elem_align(vt.elem)
        ));
        Ok(())
    }

    // ==== `for` ====
    // A guarded loop counting its trips: `(hi - lo - 1) / step + 1` trips when `lo < hi` and
    // `step > 0`, exactly as many as the interpreter makes (a loop stepping past `i64::MAX`
    // stops there; one whose step is not positive runs none). A known trip count is what
    // LLVM's vectoriser and unroller want.

    fn for_(
        &mut self,
        inst: &Inst,
        [lo, hi, step]: [Val; 3],
        iv: Val,
        iter: &[Val],
        init: &[Val],
        body: &Block,
    ) -> R<()> {
        self.same_types("for init and carried values", iter, init)?;
        self.same_types("for carried values and results", iter, &inst.results)?;
        let (lo, hi, step) = (self.op(lo)?, self.op(hi)?, self.op(step)?);
        let n = self.fresh("");
        let (hdr, bodyl, exit) = (format!("for{n}"), format!("body{n}"), format!("exit{n}"));
        let ne = self.emit(&format!("icmp slt i64 {lo}, {hi}"));
        let fwd = self.emit(&format!("icmp sgt i64 {step}, 0"));
        let enter = self.emit(&format!("and i1 {ne}, {fwd}"));
        let div = self.emit(&format!("select i1 {fwd}, i64 {step}, i64 1"));
        let span = self.emit(&format!("sub i64 {hi}, {lo}"));
        let span1 = self.emit(&format!("sub i64 {span}, 1"));
        let q = self.emit(&format!("udiv i64 {span1}, {div}"));
        let trips = self.emit(&format!("add i64 {q}, 1"));
        let inits: Vec<String> = init.iter().map(|&v| self.op(v)).collect::<R<_>>()?;
        let pre = self.cur.clone();
        self.line(&format!("  br i1 {enter}, label %{hdr}, label %{exit}"));
        // The header's phis name the latch's values, which are written after the body.
        let ivp = format!("%iv{n}");
        let cnt = format!("%cnt{n}");
        let (ivn, left) = (format!("%ivn{n}"), format!("%left{n}"));
        let latch = format!("latch{n}");
        self.label(&hdr);
        self.line(&format!(
            "  {ivp} = phi i64 [ {lo}, %{pre} ], [ {ivn}, %{latch} ]"
        ));
        self.line(&format!(
            "  {cnt} = phi i64 [ {trips}, %{pre} ], [ {left}, %{latch} ]"
        ));
        let mut carried = Vec::new();
        for (j, (&v, init)) in iter.iter().zip(&inits).enumerate() {
            let t = llty(self.ty(v)?)?;
            let p = format!("%c{n}_{j}");
            carried.push((p.clone(), t.clone(), init.clone()));
            self.def(v, p)?;
        }
        // Phi text for carried values waits for the yields; remember where it goes.
        let phi_at = self.out.len();
        self.line(&format!("  br label %{bodyl}"));
        self.label(&bodyl);
        self.def(iv, ivp.clone())?;
        let Some(yields) = self.block(body)? else {
            return internal("a `for` body that does not end with `yield`");
        };
        self.same_types("for yield and carried values", &yields, iter)?;
        let next: Vec<String> = yields.iter().map(|&v| self.op(v)).collect::<R<_>>()?;
        self.line(&format!("  br label %{latch}"));
        self.label(&latch);
        self.line(&format!("  {ivn} = add i64 {ivp}, {step}"));
        self.line(&format!("  {left} = sub i64 {cnt}, 1"));
        let again = self.emit(&format!("icmp ne i64 {left}, 0"));
        self.line(&format!("  br i1 {again}, label %{hdr}, label %{exit}"));
        let mut phis = String::new();
        for ((p, t, init), nx) in carried.iter().zip(&next) {
            let _ = writeln!(
                phis,
                "  {p} = phi {t} [ {init}, %{pre} ], [ {nx}, %{latch} ]"
            );
        }
        self.out.insert_str(phi_at, &phis);
        // The exit is reached from the guard (initial values) or the latch (last yields).
        self.label(&exit);
        for (j, (&res, ((_, t, init), nx))) in inst
            .results
            .iter()
            .zip(carried.iter().zip(&next))
            .enumerate()
        {
            let o = format!("%o{n}_{j}");
            self.line(&format!(
                "  {o} = phi {t} [ {init}, %{pre} ], [ {nx}, %{latch} ]"
            ));
            self.def(res, o)?;
        }
        Ok(())
    }

    // ==== `if` ====

    fn if_(&mut self, inst: &Inst, cond: Val, then_blk: &Block, else_blk: &Block) -> R<()> {
        let c = self.op(cond)?;
        let n = self.fresh("");
        let (tl, el, ml) = (format!("then{n}"), format!("else{n}"), format!("merge{n}"));
        self.line(&format!("  br i1 {c}, label %{tl}, label %{el}"));
        let mut arms = Vec::new();
        for (label, body) in [(&tl, then_blk), (&el, else_blk)] {
            self.label(label);
            let yields = self.block(body)?.unwrap_or_default();
            self.same_types("if yield and results", &yields, &inst.results)?;
            let vals: Vec<String> = yields.iter().map(|&v| self.op(v)).collect::<R<_>>()?;
            arms.push((self.cur.clone(), vals));
            self.line(&format!("  br label %{ml}"));
        }
        self.label(&ml);
        for (j, &res) in inst.results.iter().enumerate() {
            let t = llty(self.ty(res)?)?;
            let o = format!("%if{n}_{j}");
            let (a, b) = (&arms[0], &arms[1]);
            let (av, bv) = match (a.1.get(j), b.1.get(j)) {
                (Some(x), Some(y)) => (x.clone(), y.clone()),
                _ => return internal("an `if` arm yields too few values"),
            };
            self.line(&format!(
                "  {o} = phi {t} [ {av}, %{} ], [ {bv}, %{} ]",
                a.0, b.0
            ));
            self.def(res, o)?;
        }
        Ok(())
    }

    // ==== `yield` ====
    // Handled by `block`, which hands a closing `yield`'s values to the enclosing `for` or
    // `if`; a `yield` anywhere else is refused in `inst`.

    // ==== `mma` and `math` ====
    // Not in the backend subset: `to_backend_subset` expands both before code generation,
    // and `inst` refuses them with `Unsupported` if they arrive here.

    // ==== `trap` ====
    // A branch to a cold block that records `[1, code, value]` in the caller's trap slot and
    // returns from the entry point, abandoning the rest of the chunk of grid points.

    fn trap(&mut self, cond: Val, code: u32, value: Val) -> R<()> {
        let c = self.op(cond)?;
        let v = self.op(value)?;
        let n = self.fresh("");
        let (fire, cont) = (format!("trap{n}"), format!("cont{n}"));
        self.line(&format!("  br i1 {c}, label %{fire}, label %{cont}"));
        self.label(&fire);
        self.line("  store i64 1, ptr %trap, align 8");
        let a1 = self.emit("getelementptr inbounds i8, ptr %trap, i64 8");
        self.line(&format!("  store i64 {code}, ptr {a1}, align 8"));
        let a2 = self.emit("getelementptr inbounds i8, ptr %trap, i64 16");
        self.line(&format!("  store i64 {v}, ptr {a2}, align 8"));
        self.line("  ret void");
        self.label(&cont);
        Ok(())
    }
}
