//! The host ops of the plan ([`HostOp`], run by `Step::Host`): selections whose result size
//! depends on the data (NonZero, Compress, Unique, NonMaxSuppression), and tree ensembles,
//! whose data-dependent branching has no kernel form yet. The runtime computes
//! them on the host, which also yields the result's actual shape; the plan allocated each
//! result at its largest possible size. Semantics follow the ONNX reference implementation.
//! Start at [`run`].

use std::cmp::Ordering;
use std::ops::RangeInclusive;
use tessera_abi::HostOp;
use tessera_abi::{DType, Tensor};

/// One operand: its dtype, dims and bytes (or strings), and its elements decoded.
pub(crate) struct HostIn<'a> {
    pub dtype: DType,
    pub dims: &'a [u64],
    pub bytes: &'a [u8],
    pub strings: &'a [String],
    vals: Vec<Num>,
}

impl<'a> HostIn<'a> {
    pub fn new(
        dtype: DType,
        dims: &'a [u64],
        bytes: &'a [u8],
        strings: &'a [String],
    ) -> HostIn<'a> {
        let vals = if readable(dtype) {
            decode(dtype, dims, bytes)
        } else {
            Vec::new()
        };
        HostIn {
            dtype,
            dims,
            bytes,
            strings,
            vals,
        }
    }

    /// Element `i` as a float (0 past the end).
    pub fn f(&self, i: usize) -> f64 {
        element(self, i).f()
    }

    /// Element `i` as an integer (floats truncated; 0 past the end).
    pub fn i(&self, i: usize) -> i64 {
        match element(self, i) {
            Num::I(v) => v as i64,
            Num::F(v) => v as i64,
        }
    }
}

/// One result: its bytes (or strings, for a string result) and the dims it actually has.
#[derive(Default)]
pub(crate) struct HostOut {
    pub bytes: Vec<u8>,
    pub strings: Vec<String>,
    pub dims: Vec<u64>,
}

/// The operand and result counts a host op accepts (checked when an artifact is read).
pub(crate) fn arity(op: &HostOp) -> (RangeInclusive<usize>, RangeInclusive<usize>) {
    match op {
        HostOp::NonZero => (1..=1, 1..=1),
        HostOp::Compress { .. } => (2..=2, 1..=1),
        HostOp::Unique { .. } => (1..=1, 1..=4),
        HostOp::NonMaxSuppression { .. } => (2..=5, 1..=1),
        HostOp::StringConcat | HostOp::StringEqual => (2..=2, 1..=1),
        HostOp::RegexFullMatch { .. }
        | HostOp::StringNormalizer { .. }
        | HostOp::LabelEncoder { .. }
        | HostOp::TfIdf { .. }
        | HostOp::TreeEnsemble(_) => (1..=1, 1..=1),
        HostOp::StringSplit { .. } => (1..=1, 1..=2),
    }
}

/// The dtypes host ops read element by element.
pub(crate) fn readable(dtype: DType) -> bool {
    use DType::*;
    matches!(
        dtype,
        F64 | F32 | F16 | BF16 | I64 | I32 | I16 | I8 | U64 | U32 | U16 | U8 | Bool
    )
}

/// Runs `op` on `ins` (one per operand position, `None` where omitted), producing results of
/// dtypes `outs`. An `Err` is bad input at run time (an operand of the wrong kind).
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
    if crate::strings::is_string_op(op) {
        return crate::strings::run(op, ins, outs);
    }
    for a in ins.iter().flatten() {
        if !readable(a.dtype) {
            return Err(format!("dtype {} is not supported by host ops", a.dtype));
        }
    }
    match op {
        HostOp::NonZero => Ok(vec![nonzero(arg(0)?)]),
        HostOp::Compress { axis } => compress(arg(0)?, arg(1)?, *axis).map(|o| vec![o]),
        HostOp::Unique { axis, sorted } => unique(arg(0)?, *axis, *sorted, outs.len()),
        HostOp::NonMaxSuppression { center_point_box } => {
            let opt = |i: usize| ins.get(i).and_then(|a| a.as_ref());
            nms(arg(0)?, arg(1)?, opt(2), opt(3), opt(4), *center_point_box).map(|o| vec![o])
        }
        HostOp::TreeEnsemble(t) => {
            tree_ensemble(arg(0)?, t, outs.first().copied().unwrap_or(DType::F32)).map(|o| vec![o])
        }
        _ => Err(format!("{op:?} is not a selection")),
    }
}

/// A decoded element: integers exactly, floats widened.
#[derive(Clone, Copy, PartialEq)]
enum Num {
    I(i128),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(v) => v as f64,
            Num::F(v) => v,
        }
    }

    fn is_zero(self) -> bool {
        match self {
            Num::I(v) => v == 0,
            Num::F(v) => v == 0.0,
        }
    }

    /// numpy's order for `unique`: numbers ascending, NaN last and equal to NaN.
    fn cmp(self, o: Num) -> Ordering {
        match (self, o) {
            (Num::I(a), Num::I(b)) => a.cmp(&b),
            (a, b) => {
                let (a, b) = (a.f(), b.f());
                a.partial_cmp(&b)
                    .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
            }
        }
    }
}

fn width(dtype: DType) -> usize {
    (dtype.bits() / 8) as usize
}

/// Element `i` of `a` (decoded by [`Tensor`]'s conversions; integers exactly).
fn element(a: &HostIn, i: usize) -> Num {
    a.vals.get(i).copied().unwrap_or(Num::I(0))
}

/// Decodes every element of an operand once.
fn decode(dtype: DType, dims: &[u64], bytes: &[u8]) -> Vec<Num> {
    let t = Tensor::new(dtype, dims.to_vec(), bytes.to_vec());
    if dtype.is_float() {
        t.to_f64_vec()
            .unwrap_or_default()
            .into_iter()
            .map(Num::F)
            .collect()
    } else {
        t.to_i64_vec()
            .unwrap_or_default()
            .into_iter()
            .map(|v| Num::I(v as i128))
            .collect()
    }
}

fn numel(dims: &[u64]) -> usize {
    dims.iter().product::<u64>() as usize
}

pub(crate) fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `axis` normalised against `rank`.
fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

// ==== NonZero ====

fn nonzero(x: &HostIn) -> HostOut {
    // A scalar counts as one element of rank 1, as numpy's `nonzero` of `atleast_1d`.
    let dims: Vec<u64> = if x.dims.is_empty() {
        vec![1]
    } else {
        x.dims.to_vec()
    };
    let hits: Vec<usize> = (0..numel(&dims))
        .filter(|&i| !element(x, i).is_zero())
        .collect();
    let mut out = vec![0i64; dims.len() * hits.len()];
    for (k, &flat) in hits.iter().enumerate() {
        let mut rest = flat as u64;
        for d in (0..dims.len()).rev() {
            out[d * hits.len() + k] = (rest % dims[d]) as i64;
            rest /= dims[d];
        }
    }
    HostOut {
        bytes: i64s(&out),
        dims: vec![dims.len() as u64, hits.len() as u64],
        ..HostOut::default()
    }
}

// ==== Compress ====

/// The bytes of `x` as `outer × d × inner` slices along `axis` (`None`: the flattened input).
fn slicing(x: &HostIn, axis: Option<i64>) -> Result<(usize, usize, usize), String> {
    let w = width(x.dtype);
    Ok(match axis {
        None => (1, numel(x.dims), w),
        Some(a) => {
            let a = norm_axis(a, x.dims.len())?;
            let outer = numel(&x.dims[..a]);
            let inner = numel(&x.dims[a + 1..]) * w;
            (outer, x.dims[a] as usize, inner)
        }
    })
}

/// Gathers slices `picks` (indices along the slicing axis) into new bytes.
fn gather(x: &HostIn, (outer, d, inner): (usize, usize, usize), picks: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(outer * picks.len() * inner);
    for o in 0..outer {
        for &j in picks {
            let at = (o * d + j) * inner;
            out.extend_from_slice(x.bytes.get(at..at + inner).unwrap_or(&[]));
        }
    }
    out
}

fn with_axis_len(dims: &[u64], axis: Option<i64>, n: usize) -> Result<Vec<u64>, String> {
    Ok(match axis {
        None => vec![n as u64],
        Some(a) => {
            let mut d = dims.to_vec();
            d[norm_axis(a, dims.len())?] = n as u64;
            d
        }
    })
}

fn compress(x: &HostIn, cond: &HostIn, axis: Option<i64>) -> Result<HostOut, String> {
    let sl = slicing(x, axis)?;
    let n = numel(cond.dims).min(sl.1);
    let picks: Vec<usize> = (0..n).filter(|&j| !element(cond, j).is_zero()).collect();
    Ok(HostOut {
        bytes: gather(x, sl, &picks),
        dims: with_axis_len(x.dims, axis, picks.len())?,
        ..HostOut::default()
    })
}

// ==== Unique ====

fn unique(
    x: &HostIn,
    axis: Option<i64>,
    sorted: bool,
    n_out: usize,
) -> Result<Vec<HostOut>, String> {
    let (outer, d, inner) = slicing(x, axis)?;
    let w = width(x.dtype);
    let per = inner / w.max(1);
    // Slice j's elements in C order (outer, then inner), as numpy compares them.
    let cmp = |a: usize, b: usize| -> Ordering {
        for o in 0..outer {
            for k in 0..per {
                let ea = element(x, (o * d + a) * per + k);
                let eb = element(x, (o * d + b) * per + k);
                match ea.cmp(eb) {
                    Ordering::Equal => {}
                    ord => return ord,
                }
            }
        }
        Ordering::Equal
    };
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| cmp(a, b).then(a.cmp(&b)));
    // Groups of equal slices in sorted order; each group's first member is its first index.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &j in &order {
        match groups.last_mut() {
            Some(g) if cmp(g[0], j) == Ordering::Equal => g.push(j),
            _ => groups.push(vec![j]),
        }
    }
    if !sorted {
        groups.sort_by_key(|g| g[0]);
    }
    let mut inverse = vec![0i64; d];
    for (gi, g) in groups.iter().enumerate() {
        for &j in g {
            inverse[j] = gi as i64;
        }
    }
    let firsts: Vec<usize> = groups.iter().map(|g| g[0]).collect();
    let mut outs = vec![HostOut {
        bytes: gather(x, (outer, d, inner), &firsts),
        dims: with_axis_len(x.dims, axis, firsts.len())?,
        ..HostOut::default()
    }];
    let list = |v: Vec<i64>| HostOut {
        dims: vec![v.len() as u64],
        bytes: i64s(&v),
        ..HostOut::default()
    };
    outs.push(list(firsts.iter().map(|&j| j as i64).collect()));
    outs.push(list(inverse));
    outs.push(list(groups.iter().map(|g| g.len() as i64).collect()));
    outs.truncate(n_out);
    Ok(outs)
}

// ==== NonMaxSuppression ====

fn nms(
    boxes: &HostIn,
    scores: &HostIn,
    max_out: Option<&HostIn>,
    iou: Option<&HostIn>,
    score_thr: Option<&HostIn>,
    center_point_box: bool,
) -> Result<HostOut, String> {
    let (&[nb, n, four], &[sb, nc, sn]) = (boxes.dims, scores.dims) else {
        return Err(format!(
            "boxes must be [batch, boxes, 4] and scores [batch, classes, boxes], not {:?} and {:?}",
            boxes.dims, scores.dims
        ));
    };
    if four != 4 || sb != nb || sn != n {
        return Err(format!(
            "boxes {:?} and scores {:?} do not fit together",
            boxes.dims, scores.dims
        ));
    }
    let (nb, n, nc) = (nb as usize, n as usize, nc as usize);
    let scalar = |a: Option<&HostIn>| a.filter(|a| numel(a.dims) > 0).map(|a| element(a, 0));
    let max_out = scalar(max_out).map_or(0, |v| match v {
        Num::I(i) => i.max(0) as usize,
        Num::F(f) => f.max(0.0) as usize,
    });
    let iou = scalar(iou).map_or(0.0, Num::f);
    let score_thr = scalar(score_thr).map(Num::f);
    let corners = |b: usize, i: usize| -> [f64; 4] {
        let at = |k: usize| element(boxes, (b * n + i) * 4 + k).f();
        let (v0, v1, v2, v3) = (at(0), at(1), at(2), at(3));
        if center_point_box {
            // [x_center, y_center, width, height] -> [y1, x1, y2, x2].
            [v1 - v3 / 2.0, v0 - v2 / 2.0, v1 + v3 / 2.0, v0 + v2 / 2.0]
        } else {
            [v0.min(v2), v1.min(v3), v0.max(v2), v1.max(v3)]
        }
    };
    let suppress = |b: usize, i: usize, j: usize| -> bool {
        let (p, q) = (corners(b, i), corners(b, j));
        let (ix0, ix1) = (p[1].max(q[1]), p[3].min(q[3]));
        let (iy0, iy1) = (p[0].max(q[0]), p[2].min(q[2]));
        if ix1 <= ix0 || iy1 <= iy0 {
            return false;
        }
        let inter = (ix1 - ix0) * (iy1 - iy0);
        let a1 = (p[3] - p[1]) * (p[2] - p[0]);
        let a2 = (q[3] - q[1]) * (q[2] - q[0]);
        let union = a1 + a2 - inter;
        if inter <= 0.0 || a1 <= 0.0 || a2 <= 0.0 || union <= 0.0 {
            return false;
        }
        inter / union > iou
    };
    let mut selected: Vec<i64> = Vec::new();
    for b in 0..nb {
        for c in 0..nc {
            let score = |i: usize| element(scores, (b * nc + c) * n + i).f();
            let mut cand: Vec<usize> = (0..n)
                .filter(|&i| score_thr.is_none_or(|t| score(i) > t))
                .collect();
            // Highest score first; among equal scores the lower box index.
            cand.sort_by(|&i, &j| {
                score(j)
                    .partial_cmp(&score(i))
                    .unwrap_or(Ordering::Equal)
                    .then(i.cmp(&j))
            });
            let mut kept: Vec<usize> = Vec::new();
            for i in cand {
                if kept.len() >= max_out {
                    break;
                }
                if kept.iter().all(|&k| !suppress(b, i, k)) {
                    kept.push(i);
                    selected.extend([b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    Ok(HostOut {
        dims: vec![selected.len() as u64 / 3, 3],
        bytes: i64s(&selected),
        ..HostOut::default()
    })
}

// ==== TreeEnsemble ====

fn tree_ensemble(x: &HostIn, t: &tessera_abi::TreeEnsemble, out: DType) -> Result<HostOut, String> {
    let (rows, feats) = match x.dims {
        [n, f] => (*n as usize, *f as usize),
        [f] => (1, *f as usize),
        d => return Err(format!("TreeEnsemble takes [N, F], not {d:?}")),
    };
    let nt = t.n_targets.max(0) as usize;
    let nodes = t.modes.len();
    // Each member node's set, in node order.
    let mut sets: Vec<Vec<f64>> = Vec::new();
    let mut member_set = vec![usize::MAX; nodes];
    let mut groups = t.membership.split(|v| v.is_nan());
    for (i, &m) in t.modes.iter().enumerate() {
        if m == 6 {
            member_set[i] = sets.len();
            sets.push(groups.next().unwrap_or(&[]).to_vec());
        }
    }
    let at = |v: &[i64], i: usize| v.get(i).copied().unwrap_or(0);
    let mut y = vec![0f64; rows * nt];
    for r in 0..rows {
        let mut acc: Vec<Option<f64>> = vec![None; nt];
        for &root in &t.tree_roots {
            let mut node = root.max(0) as usize;
            // A bound on the walk: a malformed tree cannot loop forever.
            let mut leaf = None;
            for _ in 0..=nodes {
                if node >= nodes {
                    return Err(format!("node {node} is out of range"));
                }
                let f = at(&t.feature_ids, node).max(0) as usize;
                if f >= feats {
                    return Err(format!("node {node} reads feature {f} of {feats}"));
                }
                let v = x.f(r * feats + f);
                let s = t.splits.get(node).copied().unwrap_or(0.0);
                let go_true = if v.is_nan() && at(&t.missing_tracks_true, node) != 0 {
                    true
                } else {
                    match at(&t.modes, node) {
                        0 => v <= s,
                        1 => v < s,
                        2 => v >= s,
                        3 => v > s,
                        4 => v == s,
                        5 => v != s,
                        6 => sets
                            .get(member_set[node])
                            .is_some_and(|set| set.contains(&v)),
                        m => return Err(format!("unknown node mode {m}")),
                    }
                };
                let (next, is_leaf) = if go_true {
                    (at(&t.true_ids, node), at(&t.true_leafs, node))
                } else {
                    (at(&t.false_ids, node), at(&t.false_leafs, node))
                };
                if is_leaf != 0 {
                    leaf = Some(next.max(0) as usize);
                    break;
                }
                node = next.max(0) as usize;
            }
            let leaf = leaf.ok_or("a tree walk did not reach a leaf")?;
            let target = at(&t.leaf_targets, leaf).max(0) as usize;
            let w = t
                .leaf_weights
                .get(leaf)
                .copied()
                .ok_or_else(|| format!("leaf {leaf} has no weight"))?;
            let Some(slot) = acc.get_mut(target) else {
                return Err(format!("leaf {leaf} targets {target} of {nt}"));
            };
            *slot = Some(match (t.aggregate, *slot) {
                (_, None) => w,
                (2, Some(a)) => a.min(w),
                (3, Some(a)) => a.max(w),
                (_, Some(a)) => a + w,
            });
        }
        for (k, a) in acc.into_iter().enumerate() {
            let v = a.unwrap_or(0.0);
            y[r * nt + k] = if t.aggregate == 0 {
                v / t.tree_roots.len().max(1) as f64
            } else {
                v
            };
        }
    }
    let bytes = match out {
        DType::F64 => y.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F32 => y.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        DType::F16 => y
            .iter()
            .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
            .collect(),
        d => return Err(format!("a {d} result")),
    };
    Ok(HostOut {
        bytes,
        dims: vec![rows as u64, nt as u64],
        ..HostOut::default()
    })
}
