//! String ops (StringConcat, Equal on strings, RegexFullMatch, StringNormalizer, StringSplit)
//! the `ai.onnx.ml` LabelEncoder and TfIdfVectorizer become host steps of the plan ([`Step::Host`]): no chip
//! computes on strings. Attributes are checked here, at compile time (a bad regex is bad input).

use crate::{LowerCx, Result};
use tessera_ir::{Attr, DType, Node, Op, Tensor};
use tessera_kir::{Execution, HostOp, HostValues, Step};

pub fn lower(cx: &mut LowerCx, node: &Node) -> Result<Execution> {
    let op = match node.op {
        Op::StringConcat => HostOp::StringConcat,
        Op::Equal => HostOp::StringEqual,
        Op::RegexFullMatch => {
            let pattern = node.attr_str("pattern").unwrap_or("").to_string();
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                cx.invalid(format!("attribute `pattern` is not a valid regex: {e}"))
            })?;
            HostOp::RegexFullMatch { pattern }
        }
        Op::StringNormalizer => {
            let case = match node.attr_str("case_change_action").unwrap_or("NONE") {
                "NONE" => 0,
                "LOWER" => 1,
                "UPPER" => 2,
                other => return Err(cx.invalid(format!("unknown case_change_action \"{other}\""))),
            };
            let stopwords = match node.attr("stopwords") {
                Some(Attr::Strings(s)) => s.clone(),
                _ => Vec::new(),
            };
            HostOp::StringNormalizer {
                case,
                case_sensitive: node.attr_int("is_case_sensitive", 0) != 0,
                stopwords,
            }
        }
        Op::StringSplit => HostOp::StringSplit {
            delimiter: node.attr_str("delimiter").unwrap_or("").to_string(),
            maxsplit: node.attr("maxsplit").map(|_| node.attr_int("maxsplit", -1)),
        },
        Op::LabelEncoder => label_encoder(cx, node)?,
        Op::TfIdfVectorizer => {
            let ints = |n: &str| node.attr_ints(n).map(|v| v.to_vec()).unwrap_or_default();
            let pool = match (node.attr("pool_strings"), node.attr("pool_int64s")) {
                (Some(Attr::Strings(s)), _) => HostValues::Strings(s.clone()),
                (_, Some(Attr::Ints(v))) => HostValues::Ints(v.clone()),
                _ => return Err(cx.invalid("needs `pool_strings` or `pool_int64s`")),
            };
            let mode = match node.attr_str("mode").unwrap_or("TF") {
                "TF" => 1,
                "IDF" => 2,
                "TFIDF" => 3,
                other => return Err(cx.invalid(format!("unknown mode \"{other}\""))),
            };
            let weights = match node.attr("weights") {
                Some(Attr::Floats(w)) => w.iter().map(|&f| f as f64).collect(),
                _ => Vec::new(),
            };
            let (min_gram, max_gram) = (
                node.attr_int("min_gram_length", 1),
                node.attr_int("max_gram_length", 1),
            );
            if min_gram < 1 || max_gram < min_gram {
                return Err(cx.invalid(format!(
                    "gram lengths {min_gram}..{max_gram} are not a range of positive sizes"
                )));
            }
            HostOp::TfIdf {
                min_gram,
                max_gram,
                max_skip: node.attr_int("max_skip_count", 0),
                mode,
                ngram_counts: ints("ngram_counts"),
                ngram_indexes: ints("ngram_indexes"),
                pool,
                weights,
            }
        }
        op => return Err(cx.invalid(format!("{op} is not a string op"))),
    };
    let inputs = cx.operand_buffers(node)?;
    let mut outputs = Vec::with_capacity(node.outputs.len());
    for (k, &o) in node.outputs.iter().enumerate() {
        let x = node
            .input(0)
            .ok_or_else(|| cx.invalid("missing operand 0"))?;
        let b = match (node.op, k) {
            // Sized by the data: nominally the input's size (string storage is host memory).
            (Op::StringNormalizer, _) | (Op::StringSplit, 0) => {
                let mut cap = cx.dims(x)?;
                if node.op == Op::StringSplit {
                    cap.push(1);
                }
                cx.dynamic_buffer(o, cap)?
            }
            _ => cx.any_buffer(o)?,
        };
        outputs.push(b);
    }
    cx.program.plan.steps.push(Step::Host {
        op,
        inputs,
        outputs,
    });
    Ok(Execution::Host)
}

/// A LabelEncoder's keys, values and default from its `*_strings`/`*_int64s`/`*_floats`/
/// `*_tensor` attributes.
fn label_encoder(cx: &LowerCx, node: &Node) -> Result<HostOp> {
    let list = |prefix: &str| -> Result<Option<HostValues>> {
        if let Some(Attr::Strings(s)) = node.attr(&format!("{prefix}_strings")) {
            return Ok(Some(HostValues::Strings(s.clone())));
        }
        if let Some(Attr::Ints(v)) = node.attr(&format!("{prefix}_int64s")) {
            return Ok(Some(HostValues::Ints(v.clone())));
        }
        if let Some(Attr::Floats(v)) = node.attr(&format!("{prefix}_floats")) {
            return Ok(Some(HostValues::Floats(
                v.iter().map(|&f| f as f64).collect(),
            )));
        }
        match node.attr(&format!("{prefix}_tensor")) {
            Some(Attr::Tensor(t)) => tensor_values(t)
                .map(Some)
                .ok_or_else(|| cx.unsupported(format!("`{prefix}_tensor` of dtype {}", t.dtype))),
            _ => Ok(None),
        }
    };
    let keys = list("keys")?.ok_or_else(|| cx.invalid("no keys_* attribute"))?;
    let values = list("values")?.ok_or_else(|| cx.invalid("no values_* attribute"))?;
    let n = |v: &HostValues| match v {
        HostValues::Strings(s) => s.len(),
        HostValues::Ints(s) => s.len(),
        HostValues::Floats(s) => s.len(),
    };
    if n(&keys) != n(&values) {
        return Err(cx.invalid(format!("{} keys but {} values", n(&keys), n(&values))));
    }
    let default = match node.attr("default_tensor") {
        Some(Attr::Tensor(t)) => tensor_values(t)
            .ok_or_else(|| cx.unsupported(format!("`default_tensor` of dtype {}", t.dtype)))?,
        _ => match &values {
            HostValues::Strings(_) => HostValues::Strings(vec![node
                .attr_str("default_string")
                .unwrap_or("_Unused")
                .to_string()]),
            HostValues::Ints(_) => HostValues::Ints(vec![node.attr_int("default_int64", -1)]),
            HostValues::Floats(_) => {
                HostValues::Floats(vec![node.attr_float("default_float", -0.0) as f64])
            }
        },
    };
    Ok(HostOp::LabelEncoder {
        keys,
        values,
        default,
    })
}

fn tensor_values(t: &Tensor) -> Option<HostValues> {
    if t.dtype == DType::String {
        Some(HostValues::Strings(t.strings.as_ref().clone()))
    } else if t.dtype.is_float() {
        t.to_f64_vec().map(HostValues::Floats)
    } else {
        t.to_i64_vec().map(HostValues::Ints)
    }
}
