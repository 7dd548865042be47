//! String host ops of the plan (no chip computes on strings): StringConcat, Equal on strings,
//! RegexFullMatch (the `regex` crate; RE2-like syntax without look-around or
//! backreferences, as RE2 itself), StringNormalizer, StringSplit and the `ai.onnx.ml`
//! LabelEncoder and TfIdfVectorizer (text featurizers, on strings or token ids). Semantics follow the ONNX reference implementation, except that
//! StringNormalizer does not strip accents (ASCII text is unaffected). Start at [`run`].

use crate::select::{i64s, HostIn, HostOut};
use tessera_abi::DType;
use tessera_abi::{HostOp, HostValues};

pub(crate) fn is_string_op(op: &HostOp) -> bool {
    matches!(
        op,
        HostOp::StringConcat
            | HostOp::StringEqual
            | HostOp::RegexFullMatch { .. }
            | HostOp::StringNormalizer { .. }
            | HostOp::StringSplit { .. }
            | HostOp::LabelEncoder { .. }
            | HostOp::TfIdf { .. }
    )
}

/// Runs a string host op; `outs` are the result dtypes.
pub(crate) fn run(
    op: &HostOp,
    ins: &[Option<HostIn>],
    outs: &[DType],
) -> Result<Vec<HostOut>, String> {
    let arg = |i: usize| {
        ins.get(i)
            .and_then(|a| a.as_ref())
            .ok_or_else(|| format!("operand {i} is missing"))
    };
    match op {
        HostOp::StringConcat => {
            let (dims, pairs) = broadcast(arg(0)?, arg(1)?)?;
            let strings = pairs
                .iter()
                .map(|&(i, j)| {
                    format!(
                        "{}{}",
                        arg(0).map(|a| a.strings[i].as_str()).unwrap_or(""),
                        arg(1).map(|b| b.strings[j].as_str()).unwrap_or("")
                    )
                })
                .collect();
            Ok(vec![HostOut {
                strings,
                dims,
                ..HostOut::default()
            }])
        }
        HostOp::StringEqual => {
            let (a, b) = (arg(0)?, arg(1)?);
            let (dims, pairs) = broadcast(a, b)?;
            let bytes = pairs
                .iter()
                .map(|&(i, j)| u8::from(a.strings[i] == b.strings[j]))
                .collect();
            Ok(vec![HostOut {
                bytes,
                dims,
                ..HostOut::default()
            }])
        }
        HostOp::RegexFullMatch { pattern } => {
            let x = arg(0)?;
            let re = full_match(pattern)?;
            let bytes = x.strings.iter().map(|s| u8::from(re.is_match(s))).collect();
            Ok(vec![HostOut {
                bytes,
                dims: x.dims.to_vec(),
                ..HostOut::default()
            }])
        }
        HostOp::StringNormalizer {
            case,
            case_sensitive,
            stopwords,
        } => normalize(arg(0)?, *case, *case_sensitive, stopwords).map(|o| vec![o]),
        HostOp::StringSplit {
            delimiter,
            maxsplit,
        } => Ok(split(arg(0)?, delimiter, *maxsplit)),
        HostOp::LabelEncoder {
            keys,
            values,
            default,
        } => {
            let out = outs.first().copied().ok_or("no result")?;
            label_encode(arg(0)?, keys, values, default, out).map(|o| vec![o])
        }
        HostOp::TfIdf { .. } => tfidf(arg(0)?, op).map(|o| vec![o]),
        _ => Err(format!("{op:?} is not a string op")),
    }
}

/// `pattern` anchored at both ends.
pub fn full_match(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("invalid pattern `{pattern}`: {e}"))
}

/// Numpy broadcasting of two operands: the result dims and, per result element, the element
/// index in each operand.
fn broadcast(a: &HostIn, b: &HostIn) -> Result<(Vec<u64>, Vec<(usize, usize)>), String> {
    let r = a.dims.len().max(b.dims.len());
    let pad = |d: &[u64]| -> Vec<u64> {
        std::iter::repeat_n(1, r - d.len())
            .chain(d.iter().copied())
            .collect()
    };
    let (da, db) = (pad(a.dims), pad(b.dims));
    let mut dims = Vec::with_capacity(r);
    for (&x, &y) in da.iter().zip(&db) {
        dims.push(match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("cannot broadcast {:?} with {:?}", a.dims, b.dims)),
        });
    }
    let n: u64 = dims.iter().product();
    let mut pairs = Vec::with_capacity(n as usize);
    for flat in 0..n {
        let (mut rest, mut ia, mut ib, mut sa, mut sb) = (flat, 0u64, 0u64, 1u64, 1u64);
        for k in (0..r).rev() {
            let c = rest % dims[k];
            rest /= dims[k];
            if da[k] != 1 {
                ia += c * sa;
            }
            if db[k] != 1 {
                ib += c * sb;
            }
            sa *= da[k];
            sb *= db[k];
        }
        pairs.push((ia as usize, ib as usize));
    }
    Ok((dims, pairs))
}

// ==== StringNormalizer ====

fn normalize(
    x: &HostIn,
    case: u8,
    case_sensitive: bool,
    stopwords: &[String],
) -> Result<HostOut, String> {
    let two_d = match x.dims {
        [_] => false,
        [1, _] => true,
        d => return Err(format!("StringNormalizer takes [C] or [1, C], not {d:?}")),
    };
    let change = |s: &str| match case {
        1 => s.to_lowercase(),
        2 => s.to_uppercase(),
        _ => s.to_string(),
    };
    let stops: Vec<String> = if case_sensitive {
        stopwords.to_vec()
    } else {
        stopwords.iter().map(|w| change(w)).collect()
    };
    let drop_stops = |s: &str| {
        s.split(' ')
            .filter(|w| !stops.iter().any(|st| st == w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out: Vec<String> = Vec::with_capacity(x.strings.len());
    for s in x.strings {
        let s = if case_sensitive && !stops.is_empty() {
            drop_stops(s)
        } else {
            s.clone()
        };
        let s = change(&s);
        let s = if !case_sensitive && !stops.is_empty() {
            drop_stops(&s)
        } else {
            s
        };
        if !s.is_empty() {
            out.push(s);
        }
    }
    if out.is_empty() {
        out.push(String::new());
    }
    let n = out.len() as u64;
    Ok(HostOut {
        strings: out,
        dims: if two_d { vec![1, n] } else { vec![n] },
        ..HostOut::default()
    })
}

// ==== StringSplit ====

/// Python's `str.split(None, maxsplit)`: runs of whitespace separate, ends are trimmed.
fn split_whitespace(s: &str, maxsplit: Option<usize>) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if maxsplit.is_some_and(|m| parts.len() >= m) {
            parts.push(rest.to_string());
            break;
        }
        match rest.find(char::is_whitespace) {
            Some(end) => {
                parts.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
            None => {
                parts.push(rest.to_string());
                break;
            }
        }
    }
    parts
}

fn split(x: &HostIn, delimiter: &str, maxsplit: Option<i64>) -> Vec<HostOut> {
    let maxsplit = maxsplit.filter(|&m| m >= 0).map(|m| m as usize);
    let parts: Vec<Vec<String>> = x
        .strings
        .iter()
        .map(|s| {
            if delimiter.is_empty() {
                split_whitespace(s, maxsplit)
            } else {
                match maxsplit {
                    Some(m) => s.splitn(m + 1, delimiter).map(str::to_string).collect(),
                    None => s.split(delimiter).map(str::to_string).collect(),
                }
            }
        })
        .collect();
    let width = parts.iter().map(Vec::len).max().unwrap_or(0);
    let mut strings = Vec::with_capacity(parts.len() * width);
    for p in &parts {
        strings.extend(p.iter().cloned());
        strings.extend(std::iter::repeat_n(String::new(), width - p.len()));
    }
    let counts: Vec<i64> = parts.iter().map(|p| p.len() as i64).collect();
    let mut dims = x.dims.to_vec();
    dims.push(width as u64);
    vec![
        HostOut {
            strings,
            dims,
            ..HostOut::default()
        },
        HostOut {
            bytes: i64s(&counts),
            dims: x.dims.to_vec(),
            ..HostOut::default()
        },
    ]
}

// ==== LabelEncoder ====

fn label_encode(
    x: &HostIn,
    keys: &HostValues,
    values: &HostValues,
    default: &HostValues,
    out: DType,
) -> Result<HostOut, String> {
    let n: usize = x.dims.iter().product::<u64>() as usize;
    let find = |i: usize| -> Option<usize> {
        match keys {
            HostValues::Strings(k) => x
                .strings
                .get(i)
                .and_then(|s| k.iter().position(|key| key == s)),
            HostValues::Ints(k) => {
                let v = x.i(i);
                k.iter().position(|&key| key == v)
            }
            HostValues::Floats(k) => {
                let v = x.f(i);
                k.iter()
                    .position(|&key| key == v || (key.is_nan() && v.is_nan()))
            }
        }
    };
    let picks: Vec<Option<usize>> = (0..n).map(find).collect();
    let dims = x.dims.to_vec();
    match (values, default) {
        (HostValues::Strings(v), d) => {
            let d = match d {
                HostValues::Strings(d) => d.first().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            let strings = picks
                .iter()
                .map(|p| {
                    p.and_then(|k| v.get(k).cloned())
                        .unwrap_or_else(|| d.clone())
                })
                .collect();
            Ok(HostOut {
                strings,
                dims,
                ..HostOut::default()
            })
        }
        (HostValues::Ints(v), d) => {
            let d = match d {
                HostValues::Ints(d) => d.first().copied().unwrap_or(-1),
                HostValues::Floats(d) => d.first().map_or(-1, |&f| f as i64),
                HostValues::Strings(_) => -1,
            };
            let ints: Vec<i64> = picks
                .iter()
                .map(|p| p.and_then(|k| v.get(k).copied()).unwrap_or(d))
                .collect();
            if !(out.is_int() || out == DType::Bool) {
                return Err(format!("integer values for a {out} result"));
            }
            Ok(HostOut {
                bytes: tessera_abi::numeric::encode_ints(out, &ints),
                dims,
                ..HostOut::default()
            })
        }
        (HostValues::Floats(v), d) => {
            let d = match d {
                HostValues::Floats(d) => d.first().copied().unwrap_or(-0.0),
                HostValues::Ints(d) => d.first().map_or(-0.0, |&i| i as f64),
                HostValues::Strings(_) => -0.0,
            };
            let fs = picks
                .iter()
                .map(|p| p.and_then(|k| v.get(k).copied()).unwrap_or(d));
            let bytes = match out {
                DType::F32 => fs.flat_map(|f| (f as f32).to_le_bytes()).collect(),
                DType::F64 => fs.flat_map(f64::to_le_bytes).collect(),
                DType::F16 => fs
                    .flat_map(|f| half::f16::from_f64(f).to_le_bytes())
                    .collect(),
                _ => return Err(format!("float values for a {out} result")),
            };
            Ok(HostOut {
                bytes,
                dims,
                ..HostOut::default()
            })
        }
    }
}

// ==== TfIdfVectorizer ====

/// A token: an integer id or a string.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Token {
    I(i64),
    S(String),
}

fn tfidf(x: &HostIn, op: &HostOp) -> Result<HostOut, String> {
    let HostOp::TfIdf {
        min_gram,
        max_gram,
        max_skip,
        mode,
        ngram_counts,
        ngram_indexes,
        pool,
        weights,
    } = op
    else {
        return Err("not TfIdf".into());
    };
    let pool: Vec<Token> = match pool {
        HostValues::Ints(v) => v.iter().map(|&i| Token::I(i)).collect(),
        HostValues::Strings(v) => v.iter().map(|s| Token::S(s.clone())).collect(),
        HostValues::Floats(_) => return Err("a float pool".into()),
    };
    let out_size = ngram_indexes
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m.max(-1) + 1) as usize;
    // Grams of each size in [min_gram, max_gram] with their ids (1-based, in pool order, ids
    // of other sizes skipped), and every prefix of them.
    let mut grams: std::collections::HashMap<Vec<Token>, usize> = std::collections::HashMap::new();
    let mut prefixes: std::collections::HashSet<Vec<Token>> = std::collections::HashSet::new();
    let mut id = 1usize;
    for (i, &start) in ngram_counts.iter().enumerate() {
        let size = i + 1;
        let end = ngram_counts
            .get(i + 1)
            .map_or(pool.len(), |&e| e as usize)
            .min(pool.len());
        let start = (start.max(0) as usize).min(end);
        let n = (end - start) / size;
        for g in 0..n {
            if (size as i64) >= *min_gram && (size as i64) <= *max_gram {
                let gram = pool[start + g * size..start + (g + 1) * size].to_vec();
                for k in 1..=size {
                    prefixes.insert(gram[..k].to_vec());
                }
                grams.insert(gram, id);
            }
            id += 1;
        }
    }
    let (rows, c, dims) = match x.dims {
        [] => (1, 1, vec![out_size as u64]),
        [c] => (1, *c as usize, vec![out_size as u64]),
        [b, c] => (*b as usize, *c as usize, vec![*b, out_size as u64]),
        d => return Err(format!("TfIdfVectorizer takes [C] or [B, C], not {d:?}")),
    };
    let token = |i: usize| {
        if x.dtype == DType::String {
            Token::S(x.strings.get(i).cloned().unwrap_or_default())
        } else {
            Token::I(x.i(i))
        }
    };
    let mut freq = vec![0u64; rows * out_size];
    for row in 0..rows {
        let mut start_size = (*min_gram).max(1) as usize;
        for skip in 1..=(*max_skip).max(0) as usize + 1 {
            for s in 0..c {
                if s + skip * (start_size - 1) >= c {
                    break;
                }
                let mut gram = Vec::new();
                let mut item = s;
                while gram.len() < *max_gram as usize && item < c {
                    gram.push(token(row * c + item));
                    if !prefixes.contains(&gram) {
                        break;
                    }
                    if gram.len() >= start_size {
                        if let Some(&g) = grams.get(&gram) {
                            if let Some(o) = ngram_indexes
                                .get(g - 1)
                                .and_then(|&o| usize::try_from(o).ok())
                                .filter(|&o| o < out_size)
                            {
                                freq[row * out_size + o] += 1;
                            }
                        }
                    }
                    item += skip;
                }
            }
            // Unigrams count once, not once per skip distance.
            if start_size == 1 {
                start_size = 2;
                if start_size as i64 > *max_gram {
                    break;
                }
            }
        }
    }
    let y: Vec<f32> = freq
        .iter()
        .enumerate()
        .map(|(p, &f)| {
            let w = weights.get(p % out_size.max(1)).copied();
            match (mode, w) {
                (2, Some(w)) => {
                    if f > 0 {
                        w as f32
                    } else {
                        0.0
                    }
                }
                (2, None) => {
                    if f > 0 {
                        1.0
                    } else {
                        0.0
                    }
                }
                (3, Some(w)) => (w * f as f64) as f32,
                _ => f as f32,
            }
        })
        .collect();
    Ok(HostOut {
        bytes: y.iter().flat_map(|v| v.to_le_bytes()).collect(),
        dims,
        ..HostOut::default()
    })
}
