//! Custom ops: kernels written by hand in kernel-IR text and bound to an ONNX
//! `(domain, op_type)`. Start at [`CustomOp::parse`] for the file format, then
//! [`CustomOp::bind`] (input shapes → the signature's dim names), [`CustomOp::output_types`]
//! (the output-shape rule) and [`CustomOp::instantiate`] (the kernel text for those shapes).
//!
//! A custom-op file (`.tk`) holds one signature line and one kernel template:
//!
//! ```text
//! // Comments start with `//`.
//! custom "com.example" FusedRMSNorm (x: f32[N, D], scale: f32[D]) -> (y: f32[N, D])
//!
//! kernel @rmsnorm(%x: global f32[{N*D}] read, %scale: global f32[{D}] read,
//!                 %y: global f32[{N*D}] write) grid [{N}] { ... }
//! ```
//!
//! Input dims are names (bound from the actual input shapes; a name used twice must match) or
//! integers (which must match). Output dims are expressions over the names: integers, `+`,
//! `-`, `*`, `/` (rounding down), `%` and parentheses. In the template every `{expr}` is
//! replaced by its value. The kernel's parameters are the inputs in order, then the outputs.
//! In the graph IR a custom op is an [`Op::Custom`](crate::Op::Custom) node whose `source`
//! attribute holds the whole file, so a graph stays self-contained.

use crate::dtype::DType;
use crate::graph::TensorType;
use crate::shape::{Dim, Shape};
use std::collections::BTreeMap;

/// A parsed custom-op file.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomOp {
    pub domain: String,
    pub op_type: String,
    pub inputs: Vec<Param>,
    pub outputs: Vec<Param>,
    /// The kernel template (everything after the signature line).
    pub template: String,
    /// The whole file, as the graph's `source` attribute carries it.
    pub source: String,
}

/// One input or output of a custom op: a name, a dtype and dims.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Expr>,
}

/// A dim expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Int(i64),
    Name(String),
    Bin(char, Box<Expr>, Box<Expr>),
}

/// The largest value a dim expression may take (a tensor never has more elements).
const MAX_DIM: i64 = 1 << 40;

impl Expr {
    /// The value under `env`; an error names an unbound name, a division by zero or an
    /// overflow.
    pub fn eval(&self, env: &BTreeMap<String, u64>) -> Result<i64, String> {
        Ok(match self {
            Expr::Int(i) => *i,
            Expr::Name(n) => *env
                .get(n)
                .ok_or_else(|| format!("`{n}` is not a dim of any input"))?
                as i64,
            Expr::Bin(op, a, b) => {
                let (x, y) = (a.eval(env)?, b.eval(env)?);
                let r = match op {
                    '+' => x.checked_add(y),
                    '-' => x.checked_sub(y),
                    '*' => x.checked_mul(y),
                    '/' | '%' if y == 0 => return Err(format!("division by zero in `{self}`")),
                    '/' => Some(x.div_euclid(y)),
                    _ => Some(x.rem_euclid(y)),
                };
                match r {
                    Some(v) if v.abs() <= MAX_DIM => v,
                    _ => return Err(format!("`{self}` overflows")),
                }
            }
        })
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Int(i) => write!(f, "{i}"),
            Expr::Name(n) => write!(f, "{n}"),
            Expr::Bin(op, a, b) => write!(f, "({a} {op} {b})"),
        }
    }
}

/// A tokenizer over one line or one `{…}` group: names, integers, punctuation.
struct Toks<'s> {
    s: &'s [u8],
    i: usize,
}

impl<'s> Toks<'s> {
    fn new(s: &'s str) -> Self {
        Toks {
            s: s.as_bytes(),
            i: 0,
        }
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{}` at column {}", c as char, self.i + 1))
        }
    }

    fn word(&mut self) -> Result<String, String> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || self.s[self.i] == b'_'
                || self.s[self.i] == b'.')
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a name at column {}", start + 1));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != b'"' {
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return Err("unterminated string".into());
        }
        let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        Ok(s)
    }

    /// `expr := term (('+'|'-') term)*`, `term := atom (('*'|'/'|'%') atom)*`.
    fn expr(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > 32 {
            return Err("expression nests too deeply".into());
        }
        let mut e = self.term(depth)?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            e = Expr::Bin(c as char, Box::new(e), Box::new(self.term(depth)?));
        }
        Ok(e)
    }

    fn term(&mut self, depth: usize) -> Result<Expr, String> {
        let mut e = self.atom(depth)?;
        while let Some(c @ (b'*' | b'/' | b'%')) = self.peek() {
            self.i += 1;
            e = Expr::Bin(c as char, Box::new(e), Box::new(self.atom(depth)?));
        }
        Ok(e)
    }

    fn atom(&mut self, depth: usize) -> Result<Expr, String> {
        if self.eat(b'(') {
            let e = self.expr(depth + 1)?;
            self.expect(b')')?;
            return Ok(e);
        }
        let w = self.word()?;
        if w.as_bytes()[0].is_ascii_digit() {
            w.parse::<i64>()
                .map(Expr::Int)
                .map_err(|_| format!("bad integer `{w}`"))
        } else {
            Ok(Expr::Name(w))
        }
    }

    /// `(name: dtype[dims], ...)`.
    fn params(&mut self) -> Result<Vec<Param>, String> {
        self.expect(b'(')?;
        let mut ps = Vec::new();
        if self.eat(b')') {
            return Ok(ps);
        }
        loop {
            let name = self.word()?;
            self.expect(b':')?;
            let dt = self.word()?;
            let dtype = dt
                .parse::<DType>()
                .map_err(|_| format!("unknown dtype `{dt}` for `{name}`"))?;
            self.expect(b'[')?;
            let mut dims = Vec::new();
            if !self.eat(b']') {
                loop {
                    dims.push(self.expr(0)?);
                    if self.eat(b']') {
                        break;
                    }
                    self.expect(b',')?;
                }
            }
            if ps.iter().any(|p: &Param| p.name == name) {
                return Err(format!("`{name}` is declared twice"));
            }
            ps.push(Param { name, dtype, dims });
            if self.eat(b')') {
                return Ok(ps);
            }
            self.expect(b',')?;
        }
    }
}

impl CustomOp {
    /// Parses a custom-op file. Errors give the line.
    pub fn parse(source: &str) -> Result<CustomOp, String> {
        let mut lines = source.lines().enumerate();
        let (line_no, sig) = loop {
            match lines.next() {
                Some((_, l)) if l.trim().is_empty() || l.trim_start().starts_with("//") => continue,
                Some((i, l)) => break (i + 1, l),
                None => {
                    return Err("no `custom \"domain\" OpType (inputs) -> (outputs)` line".into())
                }
            }
        };
        let at = |e: String| format!("line {line_no}: {e}");
        let mut t = Toks::new(sig);
        if t.word().map_err(at)? != "custom" {
            return Err(at(
                "expected `custom \"domain\" OpType (inputs) -> (outputs)`".into(),
            ));
        }
        let domain = t.quoted().map_err(at)?;
        let op_type = t.word().map_err(at)?;
        let inputs = t.params().map_err(at)?;
        t.expect(b'-').and_then(|()| t.expect(b'>')).map_err(at)?;
        let outputs = t.params().map_err(at)?;
        if t.peek().is_some() {
            return Err(at(format!(
                "unexpected text after the outputs, at column {}",
                t.i + 1
            )));
        }
        if outputs.is_empty() {
            return Err(at("a custom op has at least one output".into()));
        }
        for p in &inputs {
            for d in &p.dims {
                if !matches!(d, Expr::Int(_) | Expr::Name(_)) {
                    return Err(at(format!(
                        "input `{}` has dim `{d}`; input dims are names or integers",
                        p.name
                    )));
                }
            }
        }
        let template: String = lines.map(|(_, l)| l).collect::<Vec<_>>().join("\n");
        if !template.contains("kernel") {
            return Err(format!(
                "line {}: no kernel follows the signature",
                line_no + 1
            ));
        }
        Ok(CustomOp {
            domain,
            op_type,
            inputs,
            outputs,
            template,
            source: source.to_string(),
        })
    }

    /// Binds the signature's dim names from the actual inputs (dtype and dims each).
    pub fn bind(&self, inputs: &[(DType, Vec<u64>)]) -> Result<BTreeMap<String, u64>, String> {
        if inputs.len() != self.inputs.len() {
            return Err(format!(
                "takes {} inputs, got {}",
                self.inputs.len(),
                inputs.len()
            ));
        }
        let mut env = BTreeMap::new();
        for (p, (dt, dims)) in self.inputs.iter().zip(inputs) {
            if *dt != p.dtype {
                return Err(format!("input `{}` must be {}, got {dt}", p.name, p.dtype));
            }
            if dims.len() != p.dims.len() {
                return Err(format!(
                    "input `{}` must have rank {}, got shape {dims:?}",
                    p.name,
                    p.dims.len()
                ));
            }
            for (e, &d) in p.dims.iter().zip(dims) {
                match e {
                    Expr::Int(i) if *i as u64 != d => {
                        return Err(format!(
                            "input `{}` has dim {d} where the signature says {i}",
                            p.name
                        ))
                    }
                    Expr::Name(n) => match env.get(n) {
                        Some(&v) if v != d => {
                            return Err(format!(
                                "dim `{n}` is {v} in one input and {d} in `{}`",
                                p.name
                            ))
                        }
                        _ => {
                            env.insert(n.clone(), d);
                        }
                    },
                    _ => {}
                }
            }
        }
        Ok(env)
    }

    /// The output types under `env` (the output-shape rule).
    pub fn output_types(&self, env: &BTreeMap<String, u64>) -> Result<Vec<TensorType>, String> {
        self.outputs
            .iter()
            .map(|p| {
                let dims = p
                    .dims
                    .iter()
                    .map(|e| {
                        let v = e.eval(env)?;
                        if v < 0 {
                            return Err(format!(
                                "output `{}` has negative dim `{e}` = {v}",
                                p.name
                            ));
                        }
                        Ok(Dim::Fixed(v as u64))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(TensorType {
                    dtype: p.dtype,
                    shape: Shape(dims),
                })
            })
            .collect()
    }

    /// The kernel text for `env`: every `{expr}` of the template replaced by its value.
    pub fn instantiate(&self, env: &BTreeMap<String, u64>) -> Result<String, String> {
        let mut out = String::with_capacity(self.template.len());
        let mut rest = self.template.as_str();
        while let Some(open) = rest.find('{') {
            let close = match rest[open..].find('}') {
                Some(c) => open + c,
                None => break,
            };
            let inner = &rest[open + 1..close];
            // Only `{expr}` groups are substitutions; the kernel's own braces stay.
            let is_expr = !inner.is_empty()
                && inner
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b" _+-*/%()".contains(&c));
            if !is_expr {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
                continue;
            }
            let mut t = Toks::new(inner);
            let e = t.expr(0).map_err(|e| format!("in `{{{inner}}}`: {e}"))?;
            if t.peek().is_some() {
                return Err(format!("in `{{{inner}}}`: unexpected text"));
            }
            out.push_str(&rest[..open]);
            out.push_str(
                &e.eval(env)
                    .map_err(|e| format!("in `{{{inner}}}`: {e}"))?
                    .to_string(),
            );
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "// doc\ncustom \"com.x\" Twice (x: f32[N, 4]) -> (y: f32[N * 2, (N + 1) / 2])\nkernel @k(%x: global f32[{N*4}] read) grid [{N}] {\n}\n";

    #[test]
    fn parses_binds_and_instantiates() {
        let op = CustomOp::parse(SRC).unwrap();
        assert_eq!(
            (op.domain.as_str(), op.op_type.as_str()),
            ("com.x", "Twice")
        );
        let env = op.bind(&[(DType::F32, vec![3, 4])]).unwrap();
        let out = op.output_types(&env).unwrap();
        assert_eq!(out[0].shape, Shape(vec![Dim::Fixed(6), Dim::Fixed(2)]));
        assert_eq!(
            op.instantiate(&env).unwrap(),
            "kernel @k(%x: global f32[12] read) grid [3] {\n}"
        );
    }

    #[test]
    fn refuses_mismatches_with_clear_messages() {
        let op = CustomOp::parse(SRC).unwrap();
        assert_eq!(
            op.bind(&[(DType::F32, vec![3, 5])]).unwrap_err(),
            "input `x` has dim 5 where the signature says 4"
        );
        assert_eq!(
            op.bind(&[(DType::F16, vec![3, 4])]).unwrap_err(),
            "input `x` must be f32, got f16"
        );
        assert!(
            CustomOp::parse("custom \"a\" B (x: q9[N]) -> (y: f32[N])\nkernel")
                .unwrap_err()
                .contains("unknown dtype `q9`")
        );
        assert!(CustomOp::parse(
            "custom \"a\" B (x: f32[N]) -> (y: f32[M])\nkernel @k() grid [] {}"
        )
        .map(|op| op.output_types(&op.bind(&[(DType::F32, vec![2])]).unwrap()))
        .unwrap()
        .unwrap_err()
        .contains("`M` is not a dim of any input"));
        assert!(CustomOp::parse("nothing here")
            .unwrap_err()
            .starts_with("line 1:"));
    }
}
