//! The kernel-IR text format: [`print_kernel`] and [`parse_kernel`] (and the `_program`
//! variants for several kernels) round-trip exactly: print → parse → print gives the same text,
//! and a parsed kernel equals the printed one. The `interp` target's code blob is this text.
//!
//! ```text
//! kernel @add(%x: global f32[24] read, %y: global f32[24] write) grid [2] {
//!   local %t: shared f32[12] readwrite
//!   %0 = program_id 0 : i64
//!   %1 = const 12 : i64
//!   %2 = mul %0, %1 : i64
//!   %3 = const 0 : i64
//!   %4 = const 1 : i64
//!   %5 = const 0.0 : f32
//!   %8 = for %6 = %3 to %1 step %4 iter(%7 = %5) : (f32) {
//!     %9 = add %2, %6 : i64
//!     %10 = load %x[%9] : f32
//!     %11 = add %7, %10 : f32
//!     store %11, %y[%9]
//!     yield %11
//!   }
//!   mma %a[%o, 4, 1], %b[%o, 16, 1], %c[%o, 16, 1] m=16 n=16 k=16 : f16 x f16 -> f32
//! }
//! ```
//!
//! Values print as `%N`, their index in [`Kernel::vals`]; every instruction that defines
//! values ends with their types. Buffers print by name (`%x`, or `%"a name"` when the name is
//! not a plain identifier), which is why the verifier wants buffer names unique. Integer
//! literals print in decimal; float literals print as Rust's shortest round-tripping form
//! (`1.0`, `1e-7`, `-0.0`, `inf`), and NaN as its exact bits, `nan(0x7ff8000000000000)`.
//! `//` starts a comment. Every `for` body and `if` branch prints its `yield`, even an empty one.

use crate::error::KirError;
use crate::kernel::*;
use std::fmt::Write;
use tessera_ir::DType;

// ================================================================================================
// Printing
// ================================================================================================

/// Prints one kernel (ending in a newline).
pub fn print_kernel(k: &Kernel) -> String {
    let mut p = Printer {
        k,
        out: String::new(),
    };
    p.kernel();
    p.out
}

/// Prints several kernels one after another, separated by a blank line.
pub fn print_program(ks: &[Kernel]) -> String {
    ks.iter().map(print_kernel).collect::<Vec<_>>().join("\n")
}

/// One line describing an instruction, for error messages: the whole instruction, or the
/// header of a `for` or `if` (up to its `{`).
pub fn inst_head(k: &Kernel, inst: &Inst) -> String {
    let mut p = Printer {
        k,
        out: String::new(),
    };
    p.inst_line(inst);
    p.out
}

struct Printer<'k> {
    k: &'k Kernel,
    out: String,
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$'))
}

/// `s` as a name after a sigil: bare when it is a plain identifier, else quoted with escapes.
fn name(s: &str) -> String {
    if is_ident(s) {
        return s.to_string();
    }
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(q, "\\u{{{:x}}}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A float literal that parses back to exactly the same bits.
pub(crate) fn float_lit(x: f64) -> String {
    if x.is_nan() {
        format!("nan(0x{:016x})", x.to_bits())
    } else if x.is_infinite() {
        if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        // `{:?}` is the shortest form that round-trips and always has a `.` or an exponent.
        format!("{x:?}")
    }
}

/// A literal as `const` prints it.
fn lit(c: Scalar) -> String {
    match c {
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(x) => float_lit(x),
    }
}

pub(crate) fn axis_name(a: Axis) -> &'static str {
    match a {
        Axis::Rows => "rows",
        Axis::Cols => "cols",
    }
}

pub(crate) fn unop_name(op: UnOp) -> &'static str {
    match op {
        UnOp::Neg => "neg",
        UnOp::Abs => "abs",
        UnOp::Not => "not",
        UnOp::Sqrt => "sqrt",
        UnOp::Floor => "floor",
        UnOp::Ceil => "ceil",
        UnOp::Round => "round",
        UnOp::Trunc => "trunc",
    }
}

pub(crate) fn binop_name(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "add",
        BinOp::Sub => "sub",
        BinOp::Mul => "mul",
        BinOp::Div => "div",
        BinOp::Rem => "rem",
        BinOp::Min => "min",
        BinOp::Max => "max",
        BinOp::And => "and",
        BinOp::Or => "or",
        BinOp::Xor => "xor",
        BinOp::Shl => "shl",
        BinOp::Shr => "shr",
    }
}

pub(crate) fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
    }
}

pub(crate) fn reduce_name(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Add => "add",
        ReduceOp::Mul => "mul",
        ReduceOp::Min => "min",
        ReduceOp::Max => "max",
    }
}

/// The text name of a math routine (`exp`, `pow`, …).
pub fn math_name(f: MathFn) -> &'static str {
    match f {
        MathFn::Exp => "exp",
        MathFn::Log => "log",
        MathFn::Pow => "pow",
        MathFn::Tanh => "tanh",
        MathFn::Erf => "erf",
        MathFn::Sigmoid => "sigmoid",
        MathFn::Sin => "sin",
        MathFn::Cos => "cos",
        MathFn::Tan => "tan",
        MathFn::Asin => "asin",
        MathFn::Acos => "acos",
        MathFn::Atan => "atan",
        MathFn::Sinh => "sinh",
        MathFn::Cosh => "cosh",
        MathFn::Asinh => "asinh",
        MathFn::Acosh => "acosh",
        MathFn::Atanh => "atanh",
    }
}

impl Printer<'_> {
    fn val(&self, v: Val) -> String {
        format!("%{}", v.0)
    }

    fn vals(&self, vs: &[Val]) -> String {
        vs.iter()
            .map(|&v| self.val(v))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn ty(&self, v: Val) -> String {
        match self.k.vals.get(v.0 as usize) {
            Some(t) => t.to_string(),
            None => "?".into(),
        }
    }

    fn buf(&self, b: Buf) -> String {
        match self.k.bufs.get(b.0 as usize) {
            Some(d) => format!("%{}", name(&d.name)),
            None => format!("%<buffer {}>", b.0),
        }
    }

    fn decl(&self, d: &BufDecl) -> String {
        format!(
            "%{}: {} {}[{}] {}",
            name(&d.name),
            d.space.name(),
            d.dtype,
            d.len,
            d.access.name()
        )
    }

    fn kernel(&mut self) {
        let k = self.k;
        let params: Vec<String> = k
            .bufs
            .iter()
            .take(k.num_params)
            .map(|d| self.decl(d))
            .collect();
        let grid: Vec<String> = k.grid.iter().map(|g| g.to_string()).collect();
        let _ = writeln!(
            self.out,
            "kernel @{}({}) grid [{}] {{",
            name(&k.name),
            params.join(", "),
            grid.join(", ")
        );
        for d in k.bufs.iter().skip(k.num_params) {
            let _ = writeln!(self.out, "  local {}", self.decl(d));
        }
        self.block(&k.body, 1);
        self.out.push_str("}\n");
    }

    fn block(&mut self, b: &Block, depth: usize) {
        for inst in &b.insts {
            self.indent(depth);
            self.inst_line(inst);
            match &inst.kind {
                InstKind::For { body, .. } => {
                    self.out.push('\n');
                    self.block(body, depth + 1);
                    self.indent(depth);
                    self.out.push('}');
                }
                InstKind::If {
                    then_blk, else_blk, ..
                } => {
                    self.out.push('\n');
                    self.block(then_blk, depth + 1);
                    self.indent(depth);
                    self.out.push_str("} else {\n");
                    self.block(else_blk, depth + 1);
                    self.indent(depth);
                    self.out.push('}');
                }
                _ => {}
            }
            self.out.push('\n');
        }
    }

    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
    }

    fn tile(&self, t: &TileRef) -> String {
        format!(
            "{}[{}, {}, {}]",
            self.buf(t.buf),
            self.val(t.offset),
            t.row_stride,
            t.col_stride
        )
    }

    /// `%buf offset %o dims [..] strides [..] at [%i, ..]`.
    fn tile_at(&self, t: &TileAt) -> String {
        let list = |xs: Vec<String>| xs.join(", ");
        format!(
            "{} offset {} dims [{}] strides [{}] at [{}]",
            self.buf(t.view.buf),
            self.val(t.view.offset),
            list(t.view.dims.iter().map(|d| d.to_string()).collect()),
            list(t.view.strides.iter().map(|d| d.to_string()).collect()),
            self.vals(&t.origin)
        )
    }

    /// The instruction on one line; `for` and `if` stop after their `{`.
    fn inst_line(&mut self, inst: &Inst) {
        use InstKind::*;
        if !inst.results.is_empty() {
            let r = self.vals(&inst.results);
            let _ = write!(self.out, "{r} = ");
        }
        let s = match &inst.kind {
            Const(c) => format!("const {}", lit(*c)),
            ProgramId(a) => format!("program_id {a}"),
            Unary(op, x) => format!("{} {}", unop_name(*op), self.val(*x)),
            Binary(op, a, b) => format!("{} {}, {}", binop_name(*op), self.val(*a), self.val(*b)),
            Cmp(op, a, b) => format!("cmp {} {}, {}", cmp_name(*op), self.val(*a), self.val(*b)),
            Select(c, a, b) => format!(
                "select {}, {}, {}",
                self.val(*c),
                self.val(*a),
                self.val(*b)
            ),
            Fma(a, b, c) => format!("fma {}, {}, {}", self.val(*a), self.val(*b), self.val(*c)),
            Dot(a, b, c) => format!("dot {}, {}, {}", self.val(*a), self.val(*b), self.val(*c)),
            Cast(x, m) => format!(
                "cast{} {}",
                if m.saturate { " sat" } else { "" },
                self.val(*x)
            ),
            Bitcast(x) => format!("bitcast {}", self.val(*x)),
            Splat(x) => format!("splat {}", self.val(*x)),
            Extract(x, l) => format!("extract {}, {l}", self.val(*x)),
            ReduceLanes(op, x) => format!("reduce {} {}", reduce_name(*op), self.val(*x)),
            Math(f, args) => format!("math {} {}", math_name(*f), self.vals(args)),
            Load { buf, index } => format!("load {}[{}]", self.buf(*buf), self.val(*index)),
            Store { buf, index, value } => {
                format!(
                    "store {}, {}[{}]",
                    self.val(*value),
                    self.buf(*buf),
                    self.val(*index)
                )
            }
            For {
                lo,
                hi,
                step,
                iv,
                iter,
                init,
                ..
            } => {
                let mut s = format!(
                    "for {} = {} to {} step {}",
                    self.val(*iv),
                    self.val(*lo),
                    self.val(*hi),
                    self.val(*step)
                );
                if !iter.is_empty() {
                    let pairs: Vec<String> = iter
                        .iter()
                        .zip(init.iter())
                        .map(|(&p, &i)| format!("{} = {}", self.val(p), self.val(i)))
                        .collect();
                    let _ = write!(s, " iter({})", pairs.join(", "));
                }
                s
            }
            If { cond, .. } => format!("if {}", self.val(*cond)),
            Yield(vs) => {
                if vs.is_empty() {
                    "yield".to_string()
                } else {
                    format!("yield {}", self.vals(vs))
                }
            }
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
            } => format!(
                "mma {}, {}, {} m={m} n={n} k={k} : {a_ty} x {b_ty} -> {acc}",
                self.tile(a),
                self.tile(b),
                self.tile(c)
            ),
            TileLoad { src, fill } => {
                format!("tile.load {} fill {}", self.tile_at(src), lit(*fill))
            }
            TileStore { dst, value } => {
                format!("tile.store {}, {}", self.val(*value), self.tile_at(dst))
            }
            TileCopy {
                src,
                dst,
                rows,
                cols,
                fill,
            } => {
                format!(
                    "tile.copy {} -> {} size {rows}x{cols} fill {}",
                    self.tile_at(src),
                    self.tile_at(dst),
                    lit(*fill)
                )
            }
            TileMma { a, b, acc } => format!(
                "tile.mma {}, {}, {}",
                self.val(*a),
                self.val(*b),
                self.val(*acc)
            ),
            TileDot { a, b, acc } => format!(
                "tile.dot {}, {}, {}",
                self.val(*a),
                self.val(*b),
                self.val(*acc)
            ),
            TileReduce(op, axis, x) => format!(
                "tile.reduce {} {} {}",
                reduce_name(*op),
                axis_name(*axis),
                self.val(*x)
            ),
            TileBroadcast(x) => format!("tile.broadcast {}", self.val(*x)),
            TileTranspose(x) => format!("tile.transpose {}", self.val(*x)),
            TileIndex(axis) => format!("tile.index {}", axis_name(*axis)),
            Barrier => "barrier".to_string(),
            Trap { cond, code, value } => {
                format!("trap {}, {code}, {}", self.val(*cond), self.val(*value))
            }
        };
        self.out.push_str(&s);
        match &inst.kind {
            For { .. } | If { .. } => {
                if !inst.results.is_empty() {
                    let tys: Vec<String> = inst.results.iter().map(|&r| self.ty(r)).collect();
                    let _ = write!(self.out, " : ({})", tys.join(", "));
                }
                self.out.push_str(" {");
            }
            _ => {
                if !inst.results.is_empty() {
                    let tys: Vec<String> = inst.results.iter().map(|&r| self.ty(r)).collect();
                    let _ = write!(self.out, " : {}", tys.join(", "));
                }
            }
        }
    }
}

// ================================================================================================
// Parsing
// ================================================================================================

/// The deepest nesting of `for`/`if` blocks the parser accepts (it recurses per level).
pub const MAX_NESTING: usize = 200;
/// The largest value number the parser accepts (`%N` sizes the value table).
pub const MAX_VALUES: u32 = 1 << 24;

/// Parses exactly one kernel and verifies it.
pub fn parse_kernel(src: &str) -> Result<Kernel, KirError> {
    let mut ks = parse_program(src)?;
    match ks.len() {
        1 => Ok(ks.remove(0)),
        n => Err(KirError::Parse {
            line: 1,
            col: 1,
            msg: format!("expected one kernel, found {n}"),
        }),
    }
}

/// Parses any number of kernels, one after another, and verifies each.
pub fn parse_program(src: &str) -> Result<Vec<Kernel>, KirError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0 };
    let mut out = Vec::new();
    while !p.at_eof() {
        let k = p.kernel()?;
        crate::verify::verify(&k)?;
        out.push(k);
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Punct(char),
    Arrow,
    Word(String),
    /// `%name` or `%"name"`.
    Pct(String),
    /// `@name` or `@"name"`.
    At(String),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Arrow => "`->`".into(),
            Tok::Word(w) => format!("`{w}`"),
            Tok::Pct(n) => format!("`%{}`", name(n)),
            Tok::At(n) => format!("`@{}`", name(n)),
            Tok::Eof => "end of input".into(),
        }
    }
}

struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, KirError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, msg: String| KirError::Parse { line, col, msg };
    // Advances over chars[i], tracking the position.
    macro_rules! bump {
        () => {{
            if chars[i] == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
            i += 1;
        }};
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-');
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$');
    while i < chars.len() {
        let c = chars[i];
        let (tl, tc) = (line, col);
        if c.is_whitespace() {
            bump!();
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                bump!();
            }
            continue;
        }
        if c == '-' && chars.get(i + 1) == Some(&'>') {
            bump!();
            bump!();
            toks.push(Token {
                tok: Tok::Arrow,
                line: tl,
                col: tc,
            });
            continue;
        }
        if matches!(
            c,
            '(' | ')' | '[' | ']' | '{' | '}' | ',' | ':' | '=' | '<' | '>'
        ) {
            bump!();
            toks.push(Token {
                tok: Tok::Punct(c),
                line: tl,
                col: tc,
            });
            continue;
        }
        if c == '%' || c == '@' {
            bump!();
            let mut s = String::new();
            if i < chars.len() && chars[i] == '"' {
                bump!();
                loop {
                    if i >= chars.len() {
                        return Err(err(tl, tc, "unterminated quoted name".into()));
                    }
                    let q = chars[i];
                    bump!();
                    match q {
                        '"' => break,
                        '\\' => {
                            if i >= chars.len() {
                                return Err(err(tl, tc, "unterminated quoted name".into()));
                            }
                            let e = chars[i];
                            bump!();
                            match e {
                                '"' | '\\' => s.push(e),
                                'u' => {
                                    if i >= chars.len() || chars[i] != '{' {
                                        return Err(err(
                                            line,
                                            col,
                                            "expected `{` after `\\u`".into(),
                                        ));
                                    }
                                    bump!();
                                    let mut hex = String::new();
                                    while i < chars.len() && chars[i] != '}' && hex.len() < 8 {
                                        hex.push(chars[i]);
                                        bump!();
                                    }
                                    if i >= chars.len() || chars[i] != '}' {
                                        return Err(err(
                                            line,
                                            col,
                                            "unterminated `\\u{...}` escape".into(),
                                        ));
                                    }
                                    bump!();
                                    let ch =
                                        u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                                    match ch {
                                        Some(ch) => s.push(ch),
                                        None => {
                                            return Err(err(
                                                line,
                                                col,
                                                format!("bad escape `\\u{{{hex}}}`"),
                                            ))
                                        }
                                    }
                                }
                                _ => return Err(err(line, col, format!("unknown escape `\\{e}`"))),
                            }
                        }
                        q => s.push(q),
                    }
                }
            } else {
                while i < chars.len() && is_name(chars[i]) {
                    s.push(chars[i]);
                    bump!();
                }
                if s.is_empty() {
                    return Err(err(tl, tc, format!("expected a name after `{c}`")));
                }
            }
            toks.push(Token {
                tok: if c == '%' { Tok::Pct(s) } else { Tok::At(s) },
                line: tl,
                col: tc,
            });
            continue;
        }
        if is_word(c) {
            let mut s = String::new();
            while i < chars.len() && is_word(chars[i]) {
                if chars[i] == '-' && chars.get(i + 1) == Some(&'>') && !s.is_empty() {
                    break;
                }
                s.push(chars[i]);
                bump!();
            }
            toks.push(Token {
                tok: Tok::Word(s),
                line: tl,
                col: tc,
            });
            continue;
        }
        return Err(err(
            tl,
            tc,
            format!("unexpected character `{}`", c.escape_default()),
        ));
    }
    toks.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(toks)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

/// The kernel being parsed: its buffers by name and its value table.
struct KCtx {
    bufs: Vec<BufDecl>,
    vals: Vec<Option<Ty>>,
}

impl Parser {
    fn peek(&self) -> &Tok {
        // The token list always ends with Eof and `pos` never passes it.
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }

    fn peek2(&self) -> &Tok {
        &self.toks[(self.pos + 1).min(self.toks.len() - 1)].tok
    }

    /// Steps back one token, to point an error at it.
    fn back(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn at_eof(&self) -> bool {
        *self.peek() == Tok::Eof
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, KirError> {
        let t = &self.toks[self.pos.min(self.toks.len() - 1)];
        Err(KirError::Parse {
            line: t.line,
            col: t.col,
            msg: msg.into(),
        })
    }

    fn unexpected<T>(&self, what: &str) -> Result<T, KirError> {
        self.err(format!("expected {what}, found {}", self.peek().describe()))
    }

    fn punct(&mut self, c: char) -> Result<(), KirError> {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            Ok(())
        } else {
            self.unexpected(&format!("`{c}`"))
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<(), KirError> {
        match self.peek() {
            Tok::Word(w) if w == kw => {
                self.next();
                Ok(())
            }
            _ => self.unexpected(&format!("`{kw}`")),
        }
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        match self.peek() {
            Tok::Word(w) if w == kw => {
                self.next();
                true
            }
            _ => false,
        }
    }

    fn word(&mut self, what: &str) -> Result<String, KirError> {
        match self.peek() {
            Tok::Word(w) => {
                let w = w.clone();
                self.next();
                Ok(w)
            }
            _ => self.unexpected(what),
        }
    }

    fn int<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, KirError> {
        match self.peek() {
            Tok::Word(w) => match w.parse::<T>() {
                Ok(v) => {
                    self.next();
                    Ok(v)
                }
                Err(_) => self.err(format!("expected {what}, found `{w}`")),
            },
            _ => self.unexpected(what),
        }
    }

    fn dtype(&mut self) -> Result<DType, KirError> {
        let w = self.word("a dtype")?;
        match w.parse::<DType>() {
            Ok(d) => Ok(d),
            Err(_) => {
                self.back();
                self.err(format!("unknown dtype `{w}`"))
            }
        }
    }

    fn ty(&mut self) -> Result<Ty, KirError> {
        if self.eat_keyword("vec") {
            self.punct('<')?;
            let w = self.word("`<lanes>x<dtype>`")?;
            let parsed = w
                .split_once('x')
                .and_then(|(n, d)| Some((n.parse::<u16>().ok()?, d.parse::<DType>().ok()?)));
            let Some((lanes, elem)) = parsed else {
                self.back();
                return self.err(format!("expected `<lanes>x<dtype>`, found `{w}`"));
            };
            self.punct('>')?;
            Ok(Ty::vector(elem, lanes))
        } else if self.eat_keyword("tile") {
            self.punct('<')?;
            let w = self.word("`<rows>x<cols>x<dtype>`")?;
            let mut parts = w.splitn(3, 'x');
            let parsed = (|| {
                let r = parts.next()?.parse::<u16>().ok()?;
                let c = parts.next()?.parse::<u16>().ok()?;
                let d = parts.next()?.parse::<DType>().ok()?;
                Some((r, c, d))
            })();
            let Some((rows, cols, elem)) = parsed.filter(|&(r, c, _)| r > 0 && c > 0) else {
                self.back();
                return self.err(format!(
                    "expected `<rows>x<cols>x<dtype>` with positive sizes, found `{w}`"
                ));
            };
            let mut role = Role::Reg;
            if self.eat_punct(',') {
                role = match self.word("a tile role")?.as_str() {
                    "reg" => Role::Reg,
                    "scratch" => Role::Scratch,
                    "acc" => Role::Acc,
                    w => {
                        let w = w.to_string();
                        self.back();
                        return self.err(format!("unknown tile role `{w}` (reg, scratch or acc)"));
                    }
                };
            }
            self.punct('>')?;
            Ok(Ty::tile(elem, rows, cols).with_role(role))
        } else {
            Ok(Ty::scalar(self.dtype()?))
        }
    }

    fn kernel_name(&mut self) -> Result<String, KirError> {
        match self.next() {
            Tok::At(n) => Ok(n),
            _ => {
                self.back();
                self.unexpected("a kernel name `@name`")
            }
        }
    }

    fn decl(&mut self) -> Result<BufDecl, KirError> {
        let name = match self.peek() {
            Tok::Pct(n) => n.clone(),
            _ => return self.unexpected("a buffer `%name`"),
        };
        self.next();
        self.punct(':')?;
        let space = match self.word("a memory space")?.as_str() {
            "global" => Space::Global,
            "shared" => Space::Shared,
            "local" => Space::Local,
            "acc" => Space::Acc,
            w => {
                let w = w.to_string();
                self.back();
                return self.err(format!(
                    "unknown memory space `{w}` (global, shared, local or acc)"
                ));
            }
        };
        let dtype = self.dtype()?;
        self.punct('[')?;
        let len = self.int::<u64>("a buffer length")?;
        self.punct(']')?;
        let access = match self.word("an access mode")?.as_str() {
            "read" => Access::Read,
            "write" => Access::Write,
            "readwrite" => Access::ReadWrite,
            w => {
                let w = w.to_string();
                self.back();
                return self.err(format!("unknown access `{w}` (read, write or readwrite)"));
            }
        };
        Ok(BufDecl {
            name,
            space,
            dtype,
            len,
            access,
        })
    }

    fn kernel(&mut self) -> Result<Kernel, KirError> {
        self.keyword("kernel")?;
        let name = self.kernel_name()?;
        let mut cx = KCtx {
            bufs: Vec::new(),
            vals: Vec::new(),
        };
        self.punct('(')?;
        if !self.eat_punct(')') {
            loop {
                let d = self.decl()?;
                self.add_buf(&mut cx, d)?;
                if self.eat_punct(')') {
                    break;
                }
                self.punct(',')?;
            }
        }
        let num_params = cx.bufs.len();
        self.keyword("grid")?;
        self.punct('[')?;
        let mut grid = Vec::new();
        if !self.eat_punct(']') {
            loop {
                grid.push(self.int::<u64>("a grid extent")?);
                if self.eat_punct(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        self.punct('{')?;
        while self.eat_keyword("local") {
            let d = self.decl()?;
            self.add_buf(&mut cx, d)?;
        }
        let body = self.block(&mut cx, 0)?;
        self.punct('}')?;
        let vals = cx
            .vals
            .into_iter()
            .map(|t| t.unwrap_or(Ty::INDEX))
            .collect();
        Ok(Kernel {
            name,
            bufs: cx.bufs,
            num_params,
            grid,
            body,
            vals,
        })
    }

    fn add_buf(&mut self, cx: &mut KCtx, d: BufDecl) -> Result<(), KirError> {
        if cx.bufs.iter().any(|b| b.name == d.name) {
            self.back();
            return self.err(format!("buffer `%{}` is declared twice", name(&d.name)));
        }
        cx.bufs.push(d);
        Ok(())
    }

    /// A `%N` value reference.
    fn val(&mut self) -> Result<Val, KirError> {
        match self.peek() {
            Tok::Pct(n) => match n.parse::<u32>() {
                Ok(v) if v < MAX_VALUES => {
                    self.next();
                    Ok(Val(v))
                }
                Ok(_) => self.err(format!("value number {n} is too large")),
                Err(_) => self.err(format!("expected a value `%N`, found `%{}`", name(n))),
            },
            _ => self.unexpected("a value `%N`"),
        }
    }

    /// Records the type of a value being defined.
    fn def(&self, cx: &mut KCtx, v: Val, t: Ty) {
        let i = v.0 as usize;
        if cx.vals.len() <= i {
            cx.vals.resize(i + 1, None);
        }
        cx.vals[i] = Some(t);
    }

    fn buf_ref(&mut self, cx: &KCtx) -> Result<Buf, KirError> {
        match self.peek() {
            Tok::Pct(n) => match cx.bufs.iter().position(|b| &b.name == n) {
                Some(i) => {
                    self.next();
                    Ok(Buf(i as u32))
                }
                None => self.err(format!("unknown buffer `%{}`", name(n))),
            },
            _ => self.unexpected("a buffer `%name`"),
        }
    }

    fn val_list(&mut self) -> Result<Vec<Val>, KirError> {
        let mut vs = vec![self.val()?];
        while self.eat_punct(',') {
            vs.push(self.val()?);
        }
        Ok(vs)
    }

    fn paren_tys(&mut self) -> Result<Vec<Ty>, KirError> {
        self.punct('(')?;
        let mut tys = Vec::new();
        if !self.eat_punct(')') {
            loop {
                tys.push(self.ty()?);
                if self.eat_punct(')') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(tys)
    }

    /// Instructions up to (not including) the closing `}`.
    fn block(&mut self, cx: &mut KCtx, depth: usize) -> Result<Block, KirError> {
        if depth > MAX_NESTING {
            return self.err(format!("blocks nest deeper than {MAX_NESTING}"));
        }
        let mut insts = Vec::new();
        while *self.peek() != Tok::Punct('}') {
            if self.at_eof() {
                return self.unexpected("`}`");
            }
            insts.push(self.inst(cx, depth)?);
        }
        Ok(Block { insts })
    }

    fn inst(&mut self, cx: &mut KCtx, depth: usize) -> Result<Inst, KirError> {
        use InstKind::*;
        // Results: `%a, %b =`.
        let mut results = Vec::new();
        if matches!(self.peek(), Tok::Pct(_))
            && matches!(self.peek2(), Tok::Punct(',') | Tok::Punct('='))
        {
            results = self.val_list()?;
            self.punct('=')?;
        }
        let op = self.word("an instruction")?;
        let op_pos = self.pos - 1;
        let kind = match op.as_str() {
            "const" => {
                let lit = self.literal()?;
                Const(lit)
            }
            "program_id" => ProgramId(self.int::<u8>("a grid axis")?),
            "neg" | "abs" | "not" | "sqrt" | "floor" | "ceil" | "round" | "trunc" => {
                let u = match op.as_str() {
                    "neg" => UnOp::Neg,
                    "abs" => UnOp::Abs,
                    "not" => UnOp::Not,
                    "sqrt" => UnOp::Sqrt,
                    "floor" => UnOp::Floor,
                    "ceil" => UnOp::Ceil,
                    "round" => UnOp::Round,
                    _ => UnOp::Trunc,
                };
                Unary(u, self.val()?)
            }
            "cmp" => {
                let w = self.word("a comparison")?;
                let c = match w.as_str() {
                    "eq" => CmpOp::Eq,
                    "ne" => CmpOp::Ne,
                    "lt" => CmpOp::Lt,
                    "le" => CmpOp::Le,
                    "gt" => CmpOp::Gt,
                    "ge" => CmpOp::Ge,
                    _ => {
                        self.back();
                        return self.err(format!("unknown comparison `{w}`"));
                    }
                };
                let a = self.val()?;
                self.punct(',')?;
                Cmp(c, a, self.val()?)
            }
            "select" => {
                let c = self.val()?;
                self.punct(',')?;
                let a = self.val()?;
                self.punct(',')?;
                Select(c, a, self.val()?)
            }
            "fma" => {
                let a = self.val()?;
                self.punct(',')?;
                let b = self.val()?;
                self.punct(',')?;
                Fma(a, b, self.val()?)
            }
            "dot" => {
                let acc = self.val()?;
                self.punct(',')?;
                let a = self.val()?;
                self.punct(',')?;
                Dot(acc, a, self.val()?)
            }
            "cast" => {
                let saturate = self.eat_keyword("sat");
                Cast(self.val()?, CastMode { saturate })
            }
            "bitcast" => Bitcast(self.val()?),
            "splat" => Splat(self.val()?),
            "extract" => {
                let v = self.val()?;
                self.punct(',')?;
                Extract(v, self.int::<u16>("a lane number")?)
            }
            "reduce" => {
                let r = self.reduce_op()?;
                ReduceLanes(r, self.val()?)
            }
            "math" => {
                let w = self.word("a math routine")?;
                let Some(f) = MathFn::ALL.iter().copied().find(|&f| math_name(f) == w) else {
                    self.back();
                    return self.err(format!("unknown math routine `{w}`"));
                };
                Math(f, self.val_list()?)
            }
            "load" => {
                let buf = self.buf_ref(cx)?;
                self.punct('[')?;
                let index = self.val()?;
                self.punct(']')?;
                Load { buf, index }
            }
            "store" => {
                let value = self.val()?;
                self.punct(',')?;
                let buf = self.buf_ref(cx)?;
                self.punct('[')?;
                let index = self.val()?;
                self.punct(']')?;
                Store { buf, index, value }
            }
            "yield" => {
                if matches!(self.peek(), Tok::Pct(_)) {
                    Yield(self.val_list()?)
                } else {
                    Yield(Vec::new())
                }
            }
            "for" => {
                let iv = self.val()?;
                self.punct('=')?;
                let lo = self.val()?;
                self.keyword("to")?;
                let hi = self.val()?;
                self.keyword("step")?;
                let step = self.val()?;
                let (mut iter, mut init) = (Vec::new(), Vec::new());
                if self.eat_keyword("iter") {
                    self.punct('(')?;
                    loop {
                        iter.push(self.val()?);
                        self.punct('=')?;
                        init.push(self.val()?);
                        if self.eat_punct(')') {
                            break;
                        }
                        self.punct(',')?;
                    }
                }
                let tys = if self.eat_punct(':') {
                    self.paren_tys()?
                } else {
                    Vec::new()
                };
                if tys.len() != results.len() || iter.len() != results.len() {
                    return self.err(format!(
                        "`for` has {} results, {} carried parameters and {} types; they must agree",
                        results.len(),
                        iter.len(),
                        tys.len()
                    ));
                }
                self.def(cx, iv, Ty::INDEX);
                for (&p, &t) in iter.iter().zip(tys.iter()) {
                    self.def(cx, p, t);
                }
                for (&r, &t) in results.iter().zip(tys.iter()) {
                    self.def(cx, r, t);
                }
                self.punct('{')?;
                let body = self.block(cx, depth + 1)?;
                self.punct('}')?;
                For {
                    lo,
                    hi,
                    step,
                    iv,
                    iter,
                    init,
                    body,
                }
            }
            "if" => {
                let cond = self.val()?;
                let tys = if self.eat_punct(':') {
                    self.paren_tys()?
                } else {
                    Vec::new()
                };
                if tys.len() != results.len() {
                    return self.err(format!(
                        "`if` has {} results but {} types",
                        results.len(),
                        tys.len()
                    ));
                }
                for (&r, &t) in results.iter().zip(tys.iter()) {
                    self.def(cx, r, t);
                }
                self.punct('{')?;
                let then_blk = self.block(cx, depth + 1)?;
                self.punct('}')?;
                self.keyword("else")?;
                self.punct('{')?;
                let else_blk = self.block(cx, depth + 1)?;
                self.punct('}')?;
                If {
                    cond,
                    then_blk,
                    else_blk,
                }
            }
            "mma" => {
                let a = self.tile(cx)?;
                self.punct(',')?;
                let b = self.tile(cx)?;
                self.punct(',')?;
                let c = self.tile(cx)?;
                let m = self.dim("m")?;
                let n = self.dim("n")?;
                let k = self.dim("k")?;
                self.punct(':')?;
                let a_ty = self.dtype()?;
                self.keyword("x")?;
                let b_ty = self.dtype()?;
                if self.next() != Tok::Arrow {
                    self.back();
                    return self.unexpected("`->`");
                }
                let acc = self.dtype()?;
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
                }
            }
            "trap" => {
                let cond = self.val()?;
                self.punct(',')?;
                let code = self.int::<u32>("a trap code")?;
                self.punct(',')?;
                Trap {
                    cond,
                    code,
                    value: self.val()?,
                }
            }
            "tile.load" => {
                let src = self.tile_at(cx)?;
                self.keyword("fill")?;
                TileLoad {
                    src,
                    fill: self.literal()?,
                }
            }
            "tile.store" => {
                let value = self.val()?;
                self.punct(',')?;
                TileStore {
                    value,
                    dst: self.tile_at(cx)?,
                }
            }
            "tile.copy" => {
                let src = self.tile_at(cx)?;
                if self.next() != Tok::Arrow {
                    self.back();
                    return self.unexpected("`->`");
                }
                let dst = self.tile_at(cx)?;
                self.keyword("size")?;
                let w = self.word("`<rows>x<cols>`")?;
                let Some((rows, cols)) = w
                    .split_once('x')
                    .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)))
                else {
                    self.back();
                    return self.err(format!("expected `<rows>x<cols>`, found `{w}`"));
                };
                self.keyword("fill")?;
                TileCopy {
                    src,
                    dst,
                    rows,
                    cols,
                    fill: self.literal()?,
                }
            }
            "tile.mma" => {
                let a = self.val()?;
                self.punct(',')?;
                let b = self.val()?;
                self.punct(',')?;
                TileMma {
                    a,
                    b,
                    acc: self.val()?,
                }
            }
            "tile.dot" => {
                let a = self.val()?;
                self.punct(',')?;
                let b = self.val()?;
                self.punct(',')?;
                TileDot {
                    a,
                    b,
                    acc: self.val()?,
                }
            }
            "tile.reduce" => {
                let r = self.reduce_op()?;
                let axis = self.axis()?;
                TileReduce(r, axis, self.val()?)
            }
            "tile.broadcast" => TileBroadcast(self.val()?),
            "tile.transpose" => TileTranspose(self.val()?),
            "tile.index" => TileIndex(self.axis()?),
            "barrier" => Barrier,
            _ => {
                if let Some(b) = binop_by_name(&op) {
                    let a = self.val()?;
                    self.punct(',')?;
                    Binary(b, a, self.val()?)
                } else {
                    self.pos = op_pos;
                    return self.err(format!("unknown instruction `{op}`"));
                }
            }
        };
        // Result types of the one-line instructions.
        if !matches!(kind, For { .. } | If { .. }) && !results.is_empty() {
            self.punct(':')?;
            let mut tys = vec![self.ty()?];
            while self.eat_punct(',') {
                tys.push(self.ty()?);
            }
            if tys.len() != results.len() {
                return self.err(format!("{} results but {} types", results.len(), tys.len()));
            }
            for (&r, &t) in results.iter().zip(tys.iter()) {
                self.def(cx, r, t);
            }
        }
        Ok(Inst { results, kind })
    }

    fn dim(&mut self, key: &str) -> Result<u32, KirError> {
        self.keyword(key)?;
        self.punct('=')?;
        self.int::<u32>(&format!("the `{key}` tile size"))
    }

    fn reduce_op(&mut self) -> Result<ReduceOp, KirError> {
        let w = self.word("a reduction")?;
        Ok(match w.as_str() {
            "add" => ReduceOp::Add,
            "mul" => ReduceOp::Mul,
            "min" => ReduceOp::Min,
            "max" => ReduceOp::Max,
            _ => {
                self.back();
                return self.err(format!("unknown reduction `{w}`"));
            }
        })
    }

    fn axis(&mut self) -> Result<Axis, KirError> {
        match self.word("`rows` or `cols`")?.as_str() {
            "rows" => Ok(Axis::Rows),
            "cols" => Ok(Axis::Cols),
            w => {
                let w = w.to_string();
                self.back();
                self.err(format!("expected `rows` or `cols`, found `{w}`"))
            }
        }
    }

    /// A bracketed, comma-separated list of integers (possibly empty).
    fn int_list<T: std::str::FromStr>(&mut self, what: &str) -> Result<Vec<T>, KirError> {
        self.punct('[')?;
        let mut xs = Vec::new();
        if !self.eat_punct(']') {
            loop {
                if xs.len() >= MAX_VIEW_RANK {
                    return self.err(format!("a view has at most {MAX_VIEW_RANK} axes"));
                }
                xs.push(self.int::<T>(what)?);
                if self.eat_punct(']') {
                    break;
                }
                self.punct(',')?;
            }
        }
        Ok(xs)
    }

    /// `%buf offset %o dims [..] strides [..] at [%i, ..]`.
    fn tile_at(&mut self, cx: &KCtx) -> Result<TileAt, KirError> {
        let buf = self.buf_ref(cx)?;
        self.keyword("offset")?;
        let offset = self.val()?;
        self.keyword("dims")?;
        let dims = self.int_list::<u64>("a view extent")?;
        self.keyword("strides")?;
        let strides = self.int_list::<i64>("a view stride")?;
        self.keyword("at")?;
        self.punct('[')?;
        let origin = if self.eat_punct(']') {
            Vec::new()
        } else {
            let vs = self.val_list()?;
            self.punct(']')?;
            vs
        };
        if origin.len() > MAX_VIEW_RANK {
            return self.err(format!("a view has at most {MAX_VIEW_RANK} axes"));
        }
        Ok(TileAt {
            view: View {
                buf,
                offset,
                dims,
                strides,
            },
            origin,
        })
    }

    fn tile(&mut self, cx: &KCtx) -> Result<TileRef, KirError> {
        let buf = self.buf_ref(cx)?;
        self.punct('[')?;
        let offset = self.val()?;
        self.punct(',')?;
        let row_stride = self.int::<i64>("a row stride")?;
        self.punct(',')?;
        let col_stride = self.int::<i64>("a column stride")?;
        self.punct(']')?;
        Ok(TileRef {
            buf,
            offset,
            row_stride,
            col_stride,
        })
    }

    fn literal(&mut self) -> Result<Scalar, KirError> {
        let w = self.word("a literal")?;
        if w == "nan" {
            self.punct('(')?;
            let h = self.word("NaN bits `0x...`")?;
            let bits = h
                .strip_prefix("0x")
                .and_then(|x| u64::from_str_radix(x, 16).ok());
            let Some(bits) = bits.filter(|&b| f64::from_bits(b).is_nan()) else {
                self.back();
                return self.err(format!("expected the bits of a NaN, found `{h}`"));
            };
            self.punct(')')?;
            return Ok(Scalar::Float(f64::from_bits(bits)));
        }
        if let Ok(i) = w.parse::<i64>() {
            return Ok(Scalar::Int(i));
        }
        let is_float_text = w.contains(['.', 'e', 'E']) || w == "inf" || w == "-inf";
        match w.parse::<f64>() {
            Ok(x) if is_float_text && !x.is_nan() => Ok(Scalar::Float(x)),
            _ => {
                self.back();
                self.err(format!("bad literal `{w}`"))
            }
        }
    }
}

fn binop_by_name(s: &str) -> Option<BinOp> {
    use BinOp::*;
    [Add, Sub, Mul, Div, Rem, Min, Max, And, Or, Xor, Shl, Shr]
        .into_iter()
        .find(|&b| binop_name(b) == s)
}

#[cfg(test)]
mod tests;
