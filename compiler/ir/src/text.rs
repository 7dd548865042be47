//! The graph-IR text format: [`print`] and [`parse`], which round-trip exactly
//! (print → parse → print is identical). Op names come from the op table
//! ([`Op::from_name`]), never from a list of their own.
//!
//! ```text
//! graph @name(%x: f32[N,3], %y: i64[2]) -> (%z, %s) {
//!   bind %y = dense<i64[2]: [1, 2]>            // a runtime input bound at compile time
//!   const %w = dense<f32[3]: [1.0, 2.0, 3.0]>  // an initializer; its type is the tensor's
//!   const %big = dense_hex<f32[32]: "0000803f...">
//!   %z: f32[N,3] = Add(%x, %w) @"node0" {alpha = 1.0, perm = [1, 0], to = "f32"}
//!   %a: f32[1], %b: f32[2] = Split(%w, _) {axis = 0}
//!   %s: i64[2] = Shape(%a)
//!   known %s = dense<i64[1]: [1]>              // contents found at compile time
//! }
//! ```
//!
//! Names that are not plain identifiers (`[A-Za-z0-9_.]+`) are quoted with Rust-like
//! escapes. Floats print in Rust's shortest round-trip form (`nan`, `inf`, `-inf` for the
//! specials); a tensor whose elements would not re-encode bit-exactly (NaN payloads, stray
//! bytes), or with more than [`LIST_MAX`] elements, prints as hex of its raw bytes.
//! Attribute lists that are empty print typed: `ints[]`, `floats[]`, `strings[]`.

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Attr, Graph, Node, TensorType, ValueId};
use crate::numeric::MiniFloat;
use crate::op::Op;
use crate::shape::{Dim, Shape};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Tensors with at most this many elements print as element lists; larger ones as hex.
pub const LIST_MAX: u64 = 16;

// ==== printing ====

/// Prints a graph in the text format.
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    let name = |id: ValueId| value_ref(g, id);
    let _ = write!(out, "graph @{}(", bare_or_quoted(&g.name));
    for (k, &id) in g.inputs.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        out.push_str(&name(id));
        if let Some(t) = g.ty(id) {
            let _ = write!(out, ": {}", type_text(t));
        }
    }
    out.push_str(") -> (");
    let outs: Vec<String> = g.outputs.iter().map(|&id| name(id)).collect();
    out.push_str(&outs.join(", "));
    out.push_str(") {\n");
    for &b in &g.bound_inputs {
        let _ = write!(out, "  bind {}", name(b));
        if let Some(t) = g.konst(b) {
            let _ = write!(out, " = {}", tensor_text(t));
        }
        out.push('\n');
    }
    for &i in &g.inputs {
        if let (Some(t), false) = (g.konst(i), g.bound_inputs.contains(&i)) {
            let _ = writeln!(out, "  known {} = {}", name(i), tensor_text(t));
        }
    }
    let produced: HashSet<ValueId> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().copied())
        .collect();
    let inputs: HashSet<ValueId> = g.inputs.iter().copied().collect();
    for (i, v) in g.values.iter().enumerate() {
        let id = ValueId(i as u32);
        let Some(t) = &v.konst else { continue };
        if produced.contains(&id) || inputs.contains(&id) {
            continue;
        }
        let _ = write!(out, "  const {}", name(id));
        match &v.ty {
            Some(ty) if *ty == TensorType::fixed(t.dtype, &t.dims) => {}
            Some(ty) => {
                let _ = write!(out, ": {}", type_text(ty));
            }
            None => out.push_str(": ?"),
        }
        let _ = writeln!(out, " = {}", tensor_text(t));
    }
    for node in &g.nodes {
        out.push_str("  ");
        print_node(g, node, &mut out);
        out.push('\n');
        for &o in &node.outputs {
            if let Some(t) = g.konst(o) {
                let _ = writeln!(out, "  known {} = {}", name(o), tensor_text(t));
            }
        }
    }
    out.push_str("}\n");
    out
}

fn print_node(g: &Graph, node: &Node, out: &mut String) {
    for (k, &o) in node.outputs.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        out.push_str(&value_ref(g, o));
        if let Some(t) = g.ty(o) {
            let _ = write!(out, ": {}", type_text(t));
        }
    }
    if !node.outputs.is_empty() {
        out.push_str(" = ");
    }
    out.push_str(node.op.name());
    out.push('(');
    for (k, inp) in node.inputs.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        match inp {
            Some(id) => out.push_str(&value_ref(g, *id)),
            None => out.push('_'),
        }
    }
    out.push(')');
    if !node.name.is_empty() {
        let _ = write!(out, " @{}", quote(&node.name));
    }
    out.push_str(&attrs_text(&node.attrs));
}

/// A node's attributes as printed after it, ` {alpha = 1.0, perm = [1, 0]}`; empty when there
/// are none. It round-trips exactly, so it also serves as the attributes' identity
/// ([`crate::key::OpKey`]).
pub fn attrs_text(attrs: &crate::graph::Attrs) -> String {
    let mut out = String::new();
    if !attrs.is_empty() {
        out.push_str(" {");
        for (k, (name, a)) in attrs.iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{} = {}", bare_or_quoted(name), attr_text(a));
        }
        out.push('}');
    }
    out
}

fn value_ref(g: &Graph, id: ValueId) -> String {
    match g.values.get(id.0 as usize) {
        Some(v) => format!("%{}", bare_or_quoted(&v.name)),
        // Out of range: print something that names the problem; it will not parse back.
        None => format!("%\"<dangling {id}>\""),
    }
}

fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn bare_or_quoted(s: &str) -> String {
    if is_bare(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

/// Quotes a string with Rust-like escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn type_text(t: &TensorType) -> String {
    let dims: Vec<String> = t
        .shape
        .0
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Sym(s) if is_ident(s) => s.clone(),
            Dim::Sym(s) => quote(s),
        })
        .collect();
    format!("{}[{}]", t.dtype, dims.join(","))
}

fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn float_text(x: f64, single: bool) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if single {
        format!("{:?}", x as f32)
    } else {
        format!("{x:?}")
    }
}

fn attr_text(a: &Attr) -> String {
    let list = |items: Vec<String>, empty: &str| {
        if items.is_empty() {
            format!("{empty}[]")
        } else {
            format!("[{}]", items.join(", "))
        }
    };
    match a {
        Attr::Int(v) => v.to_string(),
        Attr::Float(v) => float_text(*v as f64, true),
        Attr::String(s) => quote(s),
        Attr::Ints(v) => list(v.iter().map(|x| x.to_string()).collect(), "ints"),
        Attr::Floats(v) => list(
            v.iter().map(|x| float_text(*x as f64, true)).collect(),
            "floats",
        ),
        Attr::Strings(v) => list(v.iter().map(|s| quote(s)).collect(), "strings"),
        Attr::Tensor(t) => tensor_text(t),
        // A subgraph prints as a nested graph, indented under its node.
        Attr::Graph(g) => print(g).trim_end().replace('\n', "\n    "),
    }
}

/// The literal of a tensor: `dense<f32[2]: [1.0, 2.0]>`, `dense<string[1]: ["a"]>` or
/// `dense_hex<f32[32]: "…">`.
pub fn tensor_text(t: &Tensor) -> String {
    let ty = type_text(&TensorType::fixed(t.dtype, &t.dims));
    if t.dtype == DType::String {
        let items: Vec<String> = t.strings.iter().map(|s| quote(s)).collect();
        return format!("dense<{ty}: [{}]>", items.join(", "));
    }
    let n = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if let Some(n) = n.filter(|&n| n <= LIST_MAX) {
        if let Some(items) = (0..n)
            .map(|i| element_text(t, i))
            .collect::<Option<Vec<String>>>()
        {
            let toks: Vec<&str> = items.iter().map(|s| s.as_str()).collect();
            // Only if the list encodes back to exactly these bytes.
            if encode_elements(t.dtype, &toks).ok().as_deref() == Some(t.bytes.as_slice()) {
                return format!("dense<{ty}: [{}]>", items.join(", "));
            }
        }
    }
    let mut hex = String::with_capacity(t.bytes.len() * 2);
    for b in t.bytes.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    format!("dense_hex<{ty}: \"{hex}\">")
}

fn element_text(t: &Tensor, i: u64) -> Option<String> {
    let d = t.dtype;
    Some(match d {
        DType::Bool => (t.get_i64(i)? != 0).to_string(),
        DType::U64 => (t.get_i64(i)? as u64).to_string(),
        d if d.is_int() => t.get_i64(i)?.to_string(),
        DType::F64 => float_text(t.get_f64(i)?, false),
        _ => float_text(t.get_f64(i)?, true),
    })
}

/// Encodes element tokens as `dtype`'s packed little-endian storage.
fn encode_elements(dtype: DType, toks: &[&str]) -> Result<Vec<u8>, String> {
    let bits = dtype.bits() as usize;
    let mut codes: Vec<u64> = Vec::with_capacity(toks.len());
    for tok in toks {
        let code = match dtype {
            DType::Bool => match *tok {
                "true" => 1,
                "false" => 0,
                _ => return Err(format!("expected true or false, found `{tok}`")),
            },
            DType::U64 => tok
                .parse::<u64>()
                .map_err(|_| format!("`{tok}` is not a u64"))?,
            d if d.is_int() => {
                let v: i128 = tok
                    .parse()
                    .map_err(|_| format!("`{tok}` is not an integer"))?;
                let b = d.bits();
                let (lo, hi) = if d.is_signed_int() {
                    (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1)
                } else {
                    (0, (1i128 << b) - 1)
                };
                if v < lo || v > hi {
                    return Err(format!("{v} is out of range for {d}"));
                }
                (v as u64) & mask(b)
            }
            DType::F64 => parse_float::<f64>(tok)?.to_bits(),
            DType::F32 => parse_float::<f32>(tok)?.to_bits() as u64,
            DType::F16 => half::f16::from_f32(parse_float::<f32>(tok)?).to_bits() as u64,
            DType::BF16 => half::bf16::from_f32(parse_float::<f32>(tok)?).to_bits() as u64,
            d => match MiniFloat::of(d) {
                Some(mf) => mf.encode(parse_float::<f32>(tok)?, false) as u64,
                None => return Err(format!("dtype {d} has no element syntax")),
            },
        };
        codes.push(code);
    }
    if bits >= 8 {
        let w = bits / 8;
        Ok(codes
            .iter()
            .flat_map(|c| c.to_le_bytes().into_iter().take(w))
            .collect())
    } else {
        let mut out = vec![0u8; (codes.len() * bits).div_ceil(8)];
        for (i, c) in codes.iter().enumerate() {
            let bit = i * bits;
            if let Some(b) = out.get_mut(bit / 8) {
                *b |= ((c & mask(bits as u32)) << (bit % 8)) as u8;
            }
        }
        Ok(out)
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn parse_float<T: std::str::FromStr>(tok: &str) -> Result<T, String> {
    let t = match tok {
        "nan" => "NaN",
        other => other,
    };
    t.parse::<T>()
        .map_err(|_| format!("`{tok}` is not a number"))
}

// ==== parsing ====

/// Parses the text format. Errors carry `line:col`.
pub fn parse(s: &str) -> Result<Graph, IrError> {
    let mut p = Parser {
        s,
        pos: 0,
        line: 1,
        col: 1,
    };
    p.graph()
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
    col: usize,
}

/// A position in the text, for errors reported after the fact.
#[derive(Clone, Copy)]
struct Pos {
    line: usize,
    col: usize,
}

/// A value reference waiting for every definition to be seen.
struct PendingRef {
    name: String,
    at: Pos,
}

struct Builder {
    g: Graph,
    names: HashMap<String, ValueId>,
}

impl Builder {
    fn define(
        &mut self,
        name: String,
        ty: Option<TensorType>,
        at: Pos,
    ) -> Result<ValueId, IrError> {
        if self.names.contains_key(&name) {
            return Err(IrError::Parse {
                line: at.line,
                col: at.col,
                msg: format!("value %{name} is defined twice"),
            });
        }
        let id = self.g.add_value(name.clone(), ty);
        self.names.insert(name, id);
        Ok(id)
    }

    fn resolve(&self, r: &PendingRef) -> Result<ValueId, IrError> {
        self.names
            .get(&r.name)
            .copied()
            .ok_or_else(|| IrError::Parse {
                line: r.at.line,
                col: r.at.col,
                msg: format!("undefined value %{}", r.name),
            })
    }
}

impl<'a> Parser<'a> {
    fn here(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn err(&self, msg: impl Into<String>) -> IrError {
        IrError::Parse {
            line: self.line,
            col: self.col,
            msg: msg.into(),
        }
    }

    fn err_at(at: Pos, msg: impl Into<String>) -> IrError {
        IrError::Parse {
            line: at.line,
            col: at.col,
            msg: msg.into(),
        }
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Skips whitespace and `//` comments.
    fn ws(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.rest().starts_with("//") => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.rest().starts_with(tok) {
            for _ in tok.chars() {
                self.bump();
            }
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &str) -> Result<(), IrError> {
        if self.eat(tok) {
            Ok(())
        } else {
            let found = self
                .peek()
                .map(|c| format!("`{c}`"))
                .unwrap_or_else(|| "end of input".into());
            Err(self.err(format!("expected `{tok}`, found {found}")))
        }
    }

    /// A run of identifier characters (`[A-Za-z0-9_.]`), possibly empty.
    fn word(&mut self) -> String {
        self.ws();
        let mut w = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                w.push(c);
                self.bump();
            } else {
                break;
            }
        }
        w
    }

    /// A bare or quoted name.
    fn name(&mut self) -> Result<String, IrError> {
        self.ws();
        if self.peek() == Some('"') {
            return self.quoted();
        }
        let w = self.word();
        if w.is_empty() {
            return Err(self.err("expected a name"));
        }
        Ok(w)
    }

    fn quoted(&mut self) -> Result<String, IrError> {
        self.ws();
        if self.bump() != Some('"') {
            return Err(self.err("expected `\"`"));
        }
        let mut out = String::new();
        loop {
            let at = self.here();
            match self.bump() {
                None => return Err(self.err("unterminated string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('u') => {
                        if self.bump() != Some('{') {
                            return Err(Self::err_at(at, "expected `{` after \\u"));
                        }
                        let mut hex = String::new();
                        while let Some(c) = self.bump() {
                            if c == '}' {
                                break;
                            }
                            hex.push(c);
                        }
                        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        out.push(
                            c.ok_or_else(|| Self::err_at(at, format!("bad escape \\u{{{hex}}}")))?,
                        );
                    }
                    _ => return Err(Self::err_at(at, "unknown escape")),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// `%name`.
    fn value_name(&mut self) -> Result<(String, Pos), IrError> {
        self.ws();
        let at = self.here();
        self.expect("%")?;
        if matches!(self.peek(), Some(c) if c.is_whitespace()) {
            return Err(self.err("expected a value name after `%`"));
        }
        Ok((self.name()?, at))
    }

    /// A number-like token: `-12`, `1.5e-3`, `nan`, `-inf`.
    fn number(&mut self) -> Result<String, IrError> {
        self.ws();
        let mut t = String::new();
        if self.peek() == Some('-') || self.peek() == Some('+') {
            t.extend(self.bump());
        }
        while let Some(c) = self.peek() {
            let exp_sign = (c == '-' || c == '+')
                && matches!(t.chars().last(), Some('e' | 'E'))
                && !t.contains("inf");
            if c.is_ascii_alphanumeric() || c == '.' || exp_sign {
                t.push(c);
                self.bump();
            } else {
                break;
            }
        }
        if t.is_empty() || t == "-" || t == "+" {
            return Err(self.err("expected a number"));
        }
        Ok(t)
    }

    fn ty(&mut self) -> Result<Option<TensorType>, IrError> {
        if self.eat("?") {
            return Ok(None);
        }
        let at = self.here();
        let d = self.word();
        let dtype: DType = d
            .parse()
            .map_err(|_| Self::err_at(at, format!("unknown dtype `{d}`")))?;
        self.expect("[")?;
        let mut dims = Vec::new();
        if !self.eat("]") {
            loop {
                self.ws();
                let at = self.here();
                let dim = match self.peek() {
                    Some('"') => Dim::Sym(self.quoted()?),
                    Some(c) if c.is_ascii_digit() => {
                        let w = self.word();
                        Dim::Fixed(
                            w.parse()
                                .map_err(|_| Self::err_at(at, format!("bad dimension `{w}`")))?,
                        )
                    }
                    _ => {
                        let w = self.word();
                        if !is_ident(&w) {
                            return Err(Self::err_at(at, "expected a dimension"));
                        }
                        Dim::Sym(w)
                    }
                };
                dims.push(dim);
                if self.eat("]") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(Some(TensorType::new(dtype, Shape(dims))))
    }

    fn tensor(&mut self) -> Result<Tensor, IrError> {
        self.ws();
        let at = self.here();
        let hex = if self.eat("dense_hex<") {
            true
        } else if self.eat("dense<") {
            false
        } else {
            return Err(self.err("expected a tensor literal (`dense<...>` or `dense_hex<...>`)"));
        };
        let ty = self
            .ty()?
            .ok_or_else(|| Self::err_at(at, "a tensor literal needs a type"))?;
        let dims = ty
            .shape
            .as_static()
            .ok_or_else(|| Self::err_at(at, "a tensor literal needs static dims"))?;
        self.expect(":")?;
        let t = if hex {
            let h = self.quoted()?;
            if h.len() % 2 != 0 {
                return Err(Self::err_at(at, "odd number of hex digits"));
            }
            let bytes = (0..h.len() / 2)
                .map(|i| {
                    h.get(2 * i..2 * i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                })
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| Self::err_at(at, "bad hex digits"))?;
            Tensor::new(ty.dtype, dims, bytes)
        } else {
            self.expect("[")?;
            let mut toks = Vec::new();
            if !self.eat("]") {
                loop {
                    self.ws();
                    toks.push(if ty.dtype == DType::String {
                        self.quoted()?
                    } else {
                        self.number()?
                    });
                    if self.eat("]") {
                        break;
                    }
                    self.expect(",")?;
                }
            }
            let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if n != Some(toks.len() as u64) {
                return Err(Self::err_at(
                    at,
                    format!(
                        "the type {} needs {} elements, but the list has {}",
                        type_text(&ty),
                        n.map(|n| n.to_string())
                            .unwrap_or_else(|| "too many".into()),
                        toks.len()
                    ),
                ));
            }
            if ty.dtype == DType::String {
                Tensor::from_strings(dims, toks)
            } else {
                let refs: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
                let bytes = encode_elements(ty.dtype, &refs).map_err(|m| Self::err_at(at, m))?;
                Tensor::new(ty.dtype, dims, bytes)
            }
        };
        self.expect(">")?;
        Ok(t)
    }

    fn attr_value(&mut self) -> Result<Attr, IrError> {
        self.ws();
        let at = self.here();
        match self.peek() {
            Some('"') => return Ok(Attr::String(self.quoted()?)),
            Some('d') => return Ok(Attr::Tensor(self.tensor()?)),
            Some('g') if self.rest().starts_with("graph") => {
                return Ok(Attr::Graph(Box::new(self.graph_inner(false)?)))
            }
            Some('[') => {}
            Some('i') if self.rest().starts_with("ints[]") => {
                self.eat("ints[]");
                return Ok(Attr::Ints(vec![]));
            }
            Some('f') if self.rest().starts_with("floats[]") => {
                self.eat("floats[]");
                return Ok(Attr::Floats(vec![]));
            }
            Some('s') if self.rest().starts_with("strings[]") => {
                self.eat("strings[]");
                return Ok(Attr::Strings(vec![]));
            }
            _ => {
                let t = self.number()?;
                return if is_float_token(&t) {
                    parse_float::<f32>(&t)
                        .map(Attr::Float)
                        .map_err(|m| Self::err_at(at, m))
                } else {
                    t.parse::<i64>()
                        .map(Attr::Int)
                        .map_err(|_| Self::err_at(at, format!("`{t}` is not an integer")))
                };
            }
        }
        self.expect("[")?;
        self.ws();
        if self.peek() == Some('"') {
            let mut v = Vec::new();
            loop {
                v.push(self.quoted()?);
                if self.eat("]") {
                    return Ok(Attr::Strings(v));
                }
                self.expect(",")?;
            }
        }
        let mut toks = Vec::new();
        loop {
            toks.push((self.here(), self.number()?));
            if self.eat("]") {
                break;
            }
            self.expect(",")?;
        }
        if toks.iter().any(|(_, t)| is_float_token(t)) {
            let v = toks
                .iter()
                .map(|(p, t)| parse_float::<f32>(t).map_err(|m| Self::err_at(*p, m)))
                .collect::<Result<_, _>>()?;
            Ok(Attr::Floats(v))
        } else {
            let v = toks
                .iter()
                .map(|(p, t)| {
                    t.parse::<i64>()
                        .map_err(|_| Self::err_at(*p, format!("`{t}` is not an integer")))
                })
                .collect::<Result<_, _>>()?;
            Ok(Attr::Ints(v))
        }
    }

    fn graph(&mut self) -> Result<Graph, IrError> {
        self.graph_inner(true)
    }

    /// A graph; `top` for the whole text (nothing may follow), else a subgraph attribute.
    fn graph_inner(&mut self, top: bool) -> Result<Graph, IrError> {
        let mut b = Builder {
            g: Graph::default(),
            names: HashMap::new(),
        };
        let start = if top {
            Pos { line: 1, col: 1 }
        } else {
            self.here()
        };
        let kw = self.word();
        if kw != "graph" {
            return Err(Parser::err_at(start, "expected `graph`"));
        }
        self.expect("@")?;
        b.g.name = self.name()?;
        self.expect("(")?;
        if !self.eat(")") {
            loop {
                let (name, at) = self.value_name()?;
                let ty = if self.eat(":") { self.ty()? } else { None };
                let id = b.define(name, ty, at)?;
                b.g.inputs.push(id);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        self.expect("->")?;
        self.expect("(")?;
        let mut outputs = Vec::new();
        if !self.eat(")") {
            loop {
                let (name, at) = self.value_name()?;
                outputs.push(PendingRef { name, at });
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        self.expect("{")?;
        // Operands and annotations are resolved once every definition has been seen, so
        // that out-of-order (even cyclic) graphs print and parse; the verifier judges them.
        let mut node_refs: Vec<Vec<Option<PendingRef>>> = Vec::new();
        let mut knowns: Vec<(PendingRef, Tensor)> = Vec::new();
        let mut binds: Vec<(PendingRef, Option<Tensor>)> = Vec::new();
        loop {
            self.ws();
            let at = self.here();
            match self.peek() {
                None => return Err(self.err("expected `}` at the end of the graph")),
                Some('}') => {
                    self.bump();
                    break;
                }
                Some('%') => {
                    let mut outs = Vec::new();
                    loop {
                        let (name, at) = self.value_name()?;
                        let ty = if self.eat(":") { self.ty()? } else { None };
                        outs.push(b.define(name, ty, at)?);
                        if !self.eat(",") {
                            break;
                        }
                    }
                    self.expect("=")?;
                    self.ws();
                    let op_at = self.here();
                    let op = self.word();
                    node_refs.push(self.node_rest(&mut b, op, op_at, outs)?);
                }
                Some(_) => {
                    let w = self.word();
                    match w.as_str() {
                        "bind" => {
                            let (name, at) = self.value_name()?;
                            let t = if self.eat("=") {
                                Some(self.tensor()?)
                            } else {
                                None
                            };
                            binds.push((PendingRef { name, at }, t));
                        }
                        "known" => {
                            let (name, at) = self.value_name()?;
                            self.expect("=")?;
                            knowns.push((PendingRef { name, at }, self.tensor()?));
                        }
                        "const" => {
                            let (name, vat) = self.value_name()?;
                            let ty = if self.eat(":") {
                                Some(self.ty()?)
                            } else {
                                None
                            };
                            self.expect("=")?;
                            let t = self.tensor()?;
                            let ty =
                                ty.unwrap_or_else(|| Some(TensorType::fixed(t.dtype, &t.dims)));
                            let id = b.define(name, ty, vat)?;
                            b.g.values[id.0 as usize].konst = Some(t);
                        }
                        "" => return Err(Parser::err_at(at, "expected a statement")),
                        _ => node_refs.push(self.node_rest(&mut b, w, at, Vec::new())?),
                    }
                }
            }
        }
        self.ws();
        if top && self.peek().is_some() {
            return Err(self.err("unexpected text after the graph"));
        }
        for (node, refs) in b.g.nodes.iter_mut().zip(&node_refs) {
            for (slot, r) in node.inputs.iter_mut().zip(refs) {
                *slot = match r {
                    Some(r) => Some(b.names.get(&r.name).copied().ok_or_else(|| {
                        Parser::err_at(r.at, format!("undefined value %{}", r.name))
                    })?),
                    None => None,
                };
            }
        }
        for r in &outputs {
            let id = b.resolve(r)?;
            b.g.outputs.push(id);
        }
        for (r, t) in binds {
            let id = b.resolve(&r)?;
            if !b.g.inputs.contains(&id) {
                return Err(Parser::err_at(
                    r.at,
                    format!("%{} is bound but is not a graph input", r.name),
                ));
            }
            b.g.bound_inputs.push(id);
            if let Some(t) = t {
                b.g.values[id.0 as usize].konst = Some(t);
            }
        }
        for (r, t) in knowns {
            let id = b.resolve(&r)?;
            b.g.values[id.0 as usize].konst = Some(t);
        }
        Ok(b.g)
    }

    /// The rest of a node statement after its results: `Op(operands) @"name" {attrs}`.
    fn node_rest(
        &mut self,
        b: &mut Builder,
        op: String,
        op_at: Pos,
        outputs: Vec<ValueId>,
    ) -> Result<Vec<Option<PendingRef>>, IrError> {
        let op =
            Op::from_name(&op).ok_or_else(|| Self::err_at(op_at, format!("unknown op `{op}`")))?;
        self.expect("(")?;
        let mut refs = Vec::new();
        if !self.eat(")") {
            loop {
                self.ws();
                if self.eat("_") {
                    refs.push(None);
                } else {
                    let (name, at) = self.value_name()?;
                    refs.push(Some(PendingRef { name, at }));
                }
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        let mut name = String::new();
        if self.eat("@") {
            name = self.quoted()?;
        }
        let mut attrs = crate::graph::Attrs::new();
        if self.eat("{") {
            loop {
                self.ws();
                let at = self.here();
                let key = self.name()?;
                self.expect("=")?;
                let v = self.attr_value()?;
                if attrs.insert(key.clone(), v).is_some() {
                    return Err(Self::err_at(
                        at,
                        format!("attribute `{key}` is given twice"),
                    ));
                }
                if self.eat("}") {
                    break;
                }
                self.expect(",")?;
            }
        }
        b.g.nodes.push(Node {
            name,
            op,
            inputs: vec![None; refs.len()],
            outputs,
            attrs,
        });
        Ok(refs)
    }
}

fn is_float_token(t: &str) -> bool {
    t.contains('.')
        || t.contains("inf")
        || t.contains("nan")
        || (t.contains(['e', 'E']) && !t.starts_with("0x"))
}

#[cfg(test)]
mod tests;
