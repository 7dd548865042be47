//! The `.tsa` artifact: one file holding the plan, the constants and each kernel's code blob,
//! versioned and digested. [`Artifact::encode`] writes it; [`Artifact::decode`] refuses a
//! file that is truncated, corrupt, of another format version, or malformed, naming why.
//!
//! Layout (all integers little-endian):
//! ```text
//! magic "TESSERA\0" | u32 format version (2) | u64 payload length | payload | SHA-256 of payload (32 bytes)
//! ```
//! The payload is a sequence of length-prefixed fields written by [`Writer`] and read back by
//! [`Reader`] in the same order; see `encode` for the order.
//!
//! The SHA-256 digest is the artifact's identity: [`Artifact::digest`] and `tessera compile`
//! report it, and [`Artifact::decode_expecting`] (`tessera run --expect-digest`) refuses a
//! file whose digest is not the one the caller expects, before any of its payload is parsed.
//! A digest checks integrity and identity, not trust: an artifact holds native code, and the
//! digest only proves it is the artifact the caller meant (see docs/security.md).

use crate::RuntimeError;
use tessera_abi::DType;
use tessera_abi::{
    BufferId, BufferKind, Execution, HostOp, HostValues, LoopSlice, LoopStep, NodeRecord, Plan,
    PlanBuffer, PlanIo, Step, TrapSite, Trip,
};

pub const MAGIC: &[u8; 8] = b"TESSERA\0";
/// Bumped whenever the payload layout changes; older files are refused, not misread.
/// Version 2: SHA-256 instead of CRC-32, and the plan's trap table. Step kinds 2-4 (If, Loop,
/// host ops) were added without a bump: they only add tags, and older files read the same.
pub const FORMAT_VERSION: u32 = 2;

/// Bytes of the fixed header: magic, version, payload length.
const HEADER: usize = 20;
/// Bytes of the trailing digest.
const DIGEST: usize = 32;

/// The SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// A digest as 64 lowercase hex digits.
pub fn digest_hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (either case) into a digest.
pub fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("`{hex}` is not a SHA-256 digest (64 hex digits)"));
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(d)
}

/// One compiled kernel as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredKernel {
    pub name: String,
    /// Byte length of each parameter buffer, checked against the plan at load time.
    pub param_bytes: Vec<u64>,
    pub blob: Vec<u8>,
}

/// The decoded contents of a `.tsa` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub target: String,
    /// What the code needs of the device beyond the target name (CPU features …).
    pub fingerprint: String,
    /// The model it was compiled from, for messages.
    pub source: String,
    pub plan: Plan,
    pub kernels: Vec<StoredKernel>,
}

impl Artifact {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.str(&self.target);
        w.str(&self.fingerprint);
        w.str(&self.source);
        encode_plan(&mut w, &self.plan);
        w.u64(self.kernels.len() as u64);
        for k in &self.kernels {
            w.str(&k.name);
            w.u64(k.param_bytes.len() as u64);
            for &b in &k.param_bytes {
                w.u64(b);
            }
            w.bytes(&k.blob);
        }
        let payload = w.out;
        let mut out = Vec::with_capacity(payload.len() + HEADER + DIGEST);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&sha256(&payload));
        out
    }

    /// Reads and decodes a `.tsa` file; errors name the path.
    pub fn read(path: &std::path::Path) -> Result<Artifact, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Artifact::decode(&bytes).map_err(|e| match e {
            RuntimeError::BadArtifact(m) => {
                RuntimeError::BadArtifact(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// The SHA-256 digest of the encoded artifact's payload, as stored in its file; the same
    /// artifact always gives the same digest (encoding is deterministic).
    pub fn digest(&self) -> [u8; 32] {
        let bytes = self.encode();
        let mut d = [0u8; 32];
        d.copy_from_slice(&bytes[bytes.len() - DIGEST..]);
        d
    }

    /// The digest stored in an encoded artifact, read without decoding anything else (`None`
    /// if `bytes` is too short to hold one).
    pub fn stored_digest(bytes: &[u8]) -> Option<[u8; 32]> {
        let at = bytes.len().checked_sub(DIGEST).filter(|&a| a >= HEADER)?;
        bytes[at..].try_into().ok()
    }

    /// Decodes an artifact, checking every field (see the module doc).
    pub fn decode(bytes: &[u8]) -> Result<Artifact, RuntimeError> {
        Artifact::decode_expecting(bytes, None)
    }

    /// Decodes an artifact whose digest must be `expect` (when given): a mismatch is refused
    /// before the payload is parsed, so a substituted artifact is never even partly read.
    pub fn decode_expecting(
        bytes: &[u8],
        expect: Option<&[u8; 32]>,
    ) -> Result<Artifact, RuntimeError> {
        let bad = |m: &str| RuntimeError::BadArtifact(m.to_string());
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad("not a Tessera artifact (bad magic)"));
        }
        let version = u32::from_le_bytes(
            bytes[8..12]
                .try_into()
                .map_err(|_| bad("truncated header"))?,
        );
        if version != FORMAT_VERSION {
            return Err(RuntimeError::BadArtifact(format!(
                "artifact format version {version}, this runtime reads version {FORMAT_VERSION}; recompile the model"
            )));
        }
        let len = u64::from_le_bytes(
            bytes[12..HEADER]
                .try_into()
                .map_err(|_| bad("truncated header"))?,
        );
        let rest = &bytes[HEADER..];
        if (rest.len() as u64) < len.saturating_add(DIGEST as u64) {
            return Err(RuntimeError::BadArtifact(format!(
                "artifact truncated: payload says {len} bytes, file holds {}",
                rest.len().saturating_sub(DIGEST)
            )));
        }
        if rest.len() as u64 != len + DIGEST as u64 {
            return Err(bad("trailing bytes after the digest"));
        }
        let payload = &rest[..len as usize];
        let stored: [u8; 32] = rest[len as usize..]
            .try_into()
            .map_err(|_| bad("truncated digest"))?;
        if let Some(want) = expect {
            if &stored != want {
                return Err(RuntimeError::DigestMismatch {
                    expected: digest_hex(want),
                    found: digest_hex(&stored),
                });
            }
        }
        if sha256(payload) != stored {
            return Err(bad("SHA-256 digest mismatch: the file is corrupt"));
        }
        let mut r = Reader {
            data: payload,
            pos: 0,
        };
        let target = r.str()?;
        let fingerprint = r.str()?;
        let source = r.str()?;
        let plan = decode_plan(&mut r)?;
        let n = r.count(16)?;
        let mut kernels = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?;
            let np = r.count(8)?;
            let param_bytes = (0..np).map(|_| r.u64()).collect::<Result<_, _>>()?;
            let blob = r.bytes()?.to_vec();
            kernels.push(StoredKernel {
                name,
                param_bytes,
                blob,
            });
        }
        if r.pos != payload.len() {
            return Err(bad("unexpected bytes at the end of the payload"));
        }
        validate(&plan, &kernels)?;
        Ok(Artifact {
            target,
            fingerprint,
            source,
            plan,
            kernels,
        })
    }
}

/// Cross-checks a decoded plan so execution can index without panicking.
fn validate(plan: &Plan, kernels: &[StoredKernel]) -> Result<(), RuntimeError> {
    let nb = plan.buffers.len() as u32;
    let bad = |m: String| Err(RuntimeError::BadArtifact(m));
    let check = |b: BufferId| b.0 < nb;
    for (i, b) in plan.buffers.iter().enumerate() {
        let ok = match &b.kind {
            BufferKind::Input(n) => (*n as usize) < plan.inputs.len(),
            BufferKind::Const(n) if b.dtype == DType::String => plan
                .consts
                .get(*n as usize)
                .is_some_and(|c| tessera_abi::plan::decode_strings(c, b.num_elements()).is_some()),
            BufferKind::Const(n) => plan
                .consts
                .get(*n as usize)
                .is_some_and(|c| c.len() as u64 == b.byte_len()),
            BufferKind::Temp { .. } => true,
            BufferKind::Alias(of) => of.0 < i as u32,
        };
        if !ok
            || b.dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_none_or(|n| n > tessera_abi::MAX_ELEMENTS)
        {
            return bad(format!("buffer {i} (`{}`) is malformed", b.name));
        }
    }
    for io in plan.inputs.iter().chain(&plan.outputs) {
        if !check(io.buffer) {
            return bad(format!("input/output `{}` names a missing buffer", io.name));
        }
    }
    for (i, t) in plan.traps.iter().enumerate() {
        if t.kernel as usize >= kernels.len() {
            return bad(format!("trap {i} names missing kernel {}", t.kernel));
        }
    }
    validate_steps(plan, kernels, &plan.steps, "step")?;
    Ok(())
}

/// Checks a step list (nested ones recursively); `at` names where it sits for messages.
fn validate_steps(
    plan: &Plan,
    kernels: &[StoredKernel],
    steps: &[Step],
    at: &str,
) -> Result<(), RuntimeError> {
    let bad = |m: String| Err(RuntimeError::BadArtifact(m));
    let check = |b: BufferId| b.0 < plan.buffers.len() as u32;
    let bytes = |b: BufferId| plan.buffers[b.0 as usize].byte_len();
    let scalar = |b: BufferId, dtype: DType| {
        check(b)
            && plan.buffers[b.0 as usize].dtype == dtype
            && plan.buffers[b.0 as usize].num_elements() == 1
    };
    for (s, step) in steps.iter().enumerate() {
        match step {
            Step::Launch { kernel, args } => {
                let Some(k) = kernels.get(*kernel as usize) else {
                    return bad(format!("{at} {s} launches missing kernel {kernel}"));
                };
                if k.param_bytes.len() != args.len() || !args.iter().all(|&a| check(a)) {
                    return bad(format!(
                        "{at} {s}: arguments of kernel `{}` do not match",
                        k.name
                    ));
                }
                for (&a, &want) in args.iter().zip(&k.param_bytes) {
                    if bytes(a) != want {
                        return bad(format!(
                            "{at} {s}: kernel `{}` expects {want} bytes for an argument",
                            k.name
                        ));
                    }
                }
            }
            Step::Copy { src, dst } => {
                if !check(*src) || !check(*dst) || bytes(*src) != bytes(*dst) {
                    return bad(format!("{at} {s}: malformed copy"));
                }
            }
            Step::If {
                cond,
                then_steps,
                else_steps,
            } => {
                if !scalar(*cond, DType::Bool) {
                    return bad(format!(
                        "{at} {s}: the condition of an If is not a bool scalar"
                    ));
                }
                validate_steps(plan, kernels, then_steps, &format!("{at} {s} (then) step"))?;
                validate_steps(plan, kernels, else_steps, &format!("{at} {s} (else) step"))?;
            }
            Step::Loop(l) => {
                let ok_trip = match l.trip {
                    Trip::Buffer(b) => scalar(b, DType::I64),
                    Trip::Fixed(_) | Trip::Unbounded => true,
                };
                let ok_flags = l
                    .cond
                    .iter()
                    .chain(&l.cond_in)
                    .chain(&l.cond_out)
                    .all(|&b| scalar(b, DType::Bool))
                    && l.iter.is_none_or(|b| scalar(b, DType::I64));
                let ok_carried = l
                    .carried
                    .iter()
                    .all(|&(r, p)| check(r) && check(p) && bytes(r) == bytes(p));
                let ok_slices = l.scan_in.iter().chain(&l.scan_out).all(|sl| {
                    check(sl.whole) && check(sl.part) && {
                        let (w, p) = (bytes(sl.whole), bytes(sl.part));
                        if p == 0 {
                            w == 0
                        } else {
                            w % p == 0
                        }
                    }
                });
                if !(ok_trip && ok_flags && ok_carried && ok_slices) {
                    return bad(format!("{at} {s}: malformed loop"));
                }
                validate_steps(
                    plan,
                    kernels,
                    &l.body,
                    &format!("{at} {s} (loop body) step"),
                )?;
            }
            Step::Host {
                op,
                inputs,
                outputs,
            } => {
                let (ins, outs) = crate::select::arity(op);
                if !ins.contains(&inputs.len())
                    || !outs.contains(&outputs.len())
                    || !inputs.iter().flatten().chain(outputs).all(|&b| check(b))
                {
                    return bad(format!("{at} {s}: malformed host step"));
                }
            }
        }
    }
    Ok(())
}

/// Appends fields to a payload.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.out.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Reads fields back, failing (never panicking) on truncation or nonsense lengths.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], RuntimeError> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.data.len() as u64);
        let end =
            end.ok_or_else(|| RuntimeError::BadArtifact("payload truncated".into()))? as usize;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, RuntimeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, RuntimeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, RuntimeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], RuntimeError> {
        let n = self.u64()?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<String, RuntimeError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| RuntimeError::BadArtifact("invalid UTF-8 string".into()))
    }
    /// A count of items each at least `min_item` bytes long, refused if the rest cannot hold it.
    fn count(&mut self, min_item: u64) -> Result<usize, RuntimeError> {
        let n = self.u64()?;
        if n.saturating_mul(min_item.max(1)) > (self.data.len() - self.pos) as u64 {
            return Err(RuntimeError::BadArtifact(format!(
                "implausible item count {n}"
            )));
        }
        Ok(n as usize)
    }
    fn dtype(&mut self) -> Result<DType, RuntimeError> {
        let s = self.str()?;
        s.parse()
            .map_err(|_| RuntimeError::BadArtifact(format!("unknown dtype `{s}`")))
    }
}

fn encode_plan(w: &mut Writer, p: &Plan) {
    w.u64(p.buffers.len() as u64);
    for b in &p.buffers {
        w.str(&b.name);
        w.str(b.dtype.name());
        w.u64(b.dims.len() as u64);
        for &d in &b.dims {
            w.u64(d);
        }
        match &b.kind {
            BufferKind::Input(n) => {
                w.u8(0);
                w.u32(*n)
            }
            BufferKind::Const(n) => {
                w.u8(1);
                w.u32(*n)
            }
            BufferKind::Temp { slot } => {
                w.u8(2);
                w.u32(*slot)
            }
            BufferKind::Alias(of) => {
                w.u8(3);
                w.u32(of.0)
            }
        }
    }
    for ios in [&p.inputs, &p.outputs] {
        w.u64(ios.len() as u64);
        for io in ios {
            w.str(&io.name);
            w.u32(io.buffer.0);
            w.str(io.dtype.name());
            w.u64(io.dims.len() as u64);
            for &d in &io.dims {
                w.u64(d);
            }
            match &io.bound {
                Some(b) => {
                    w.u8(1);
                    w.bytes(b)
                }
                None => w.u8(0),
            }
        }
    }
    encode_steps(w, &p.steps);
    w.u64(p.consts.len() as u64);
    for c in &p.consts {
        w.bytes(c);
    }
    w.u64(p.nodes.len() as u64);
    for n in &p.nodes {
        w.str(&n.node);
        w.str(&n.op);
        w.u8(n.dense as u8);
        w.str(n.how.name());
    }
    w.u64(p.traps.len() as u64);
    for t in &p.traps {
        w.u32(t.kernel);
        w.str(&t.node);
        w.str(&t.op);
        w.str(&t.input);
        w.str(&t.what);
    }
}

fn encode_steps(w: &mut Writer, steps: &[Step]) {
    w.u64(steps.len() as u64);
    for s in steps {
        match s {
            Step::Launch { kernel, args } => {
                w.u8(0);
                w.u32(*kernel);
                w.u64(args.len() as u64);
                for a in args {
                    w.u32(a.0);
                }
            }
            Step::Copy { src, dst } => {
                w.u8(1);
                w.u32(src.0);
                w.u32(dst.0);
            }
            Step::If {
                cond,
                then_steps,
                else_steps,
            } => {
                w.u8(2);
                w.u32(cond.0);
                encode_steps(w, then_steps);
                encode_steps(w, else_steps);
            }
            Step::Loop(l) => {
                w.u8(3);
                match l.trip {
                    Trip::Buffer(b) => {
                        w.u8(0);
                        w.u32(b.0);
                    }
                    Trip::Fixed(n) => {
                        w.u8(1);
                        w.u64(n);
                    }
                    Trip::Unbounded => w.u8(2),
                }
                for b in [l.cond, l.iter, l.cond_in, l.cond_out] {
                    match b {
                        Some(b) => {
                            w.u8(1);
                            w.u32(b.0);
                        }
                        None => w.u8(0),
                    }
                }
                encode_steps(w, &l.body);
                w.u64(l.carried.len() as u64);
                for (r, p) in &l.carried {
                    w.u32(r.0);
                    w.u32(p.0);
                }
                for list in [&l.scan_in, &l.scan_out] {
                    w.u64(list.len() as u64);
                    for sl in list {
                        w.u32(sl.whole.0);
                        w.u32(sl.part.0);
                        w.u8(sl.reverse as u8);
                    }
                }
            }
            Step::Host {
                op,
                inputs,
                outputs,
            } => {
                w.u8(4);
                let axis = |w: &mut Writer, a: &Option<i64>| match a {
                    Some(a) => {
                        w.u8(1);
                        w.u64(*a as u64);
                    }
                    None => w.u8(0),
                };
                match op {
                    HostOp::NonZero => w.u8(0),
                    HostOp::Compress { axis: a } => {
                        w.u8(1);
                        axis(w, a);
                    }
                    HostOp::Unique { axis: a, sorted } => {
                        w.u8(2);
                        axis(w, a);
                        w.u8(*sorted as u8);
                    }
                    HostOp::NonMaxSuppression { center_point_box } => {
                        w.u8(3);
                        w.u8(*center_point_box as u8);
                    }
                    HostOp::StringConcat => w.u8(4),
                    HostOp::StringEqual => w.u8(5),
                    HostOp::RegexFullMatch { pattern } => {
                        w.u8(6);
                        w.str(pattern);
                    }
                    HostOp::StringNormalizer {
                        case,
                        case_sensitive,
                        stopwords,
                    } => {
                        w.u8(7);
                        w.u8(*case);
                        w.u8(*case_sensitive as u8);
                        encode_values(w, &HostValues::Strings(stopwords.clone()));
                    }
                    HostOp::StringSplit {
                        delimiter,
                        maxsplit,
                    } => {
                        w.u8(8);
                        w.str(delimiter);
                        axis(w, maxsplit);
                    }
                    HostOp::LabelEncoder {
                        keys,
                        values,
                        default,
                    } => {
                        w.u8(9);
                        for v in [keys, values, default] {
                            encode_values(w, v);
                        }
                    }
                    HostOp::TfIdf {
                        min_gram,
                        max_gram,
                        max_skip,
                        mode,
                        ngram_counts,
                        ngram_indexes,
                        pool,
                        weights,
                    } => {
                        w.u8(10);
                        for v in [min_gram, max_gram, max_skip] {
                            w.u64(*v as u64);
                        }
                        w.u8(*mode);
                        encode_values(w, &HostValues::Ints(ngram_counts.clone()));
                        encode_values(w, &HostValues::Ints(ngram_indexes.clone()));
                        encode_values(w, pool);
                        encode_values(w, &HostValues::Floats(weights.clone()));
                    }
                    HostOp::TreeEnsemble(t) => {
                        w.u8(11);
                        w.u8(t.aggregate);
                        w.u64(t.n_targets as u64);
                        for v in [
                            &t.tree_roots,
                            &t.feature_ids,
                            &t.modes,
                            &t.true_ids,
                            &t.true_leafs,
                            &t.false_ids,
                            &t.false_leafs,
                            &t.missing_tracks_true,
                            &t.leaf_targets,
                        ] {
                            encode_values(w, &HostValues::Ints(v.clone()));
                        }
                        for v in [&t.splits, &t.leaf_weights, &t.membership] {
                            encode_values(w, &HostValues::Floats(v.clone()));
                        }
                    }
                }
                w.u64(inputs.len() as u64);
                for i in inputs {
                    match i {
                        Some(b) => {
                            w.u8(1);
                            w.u32(b.0);
                        }
                        None => w.u8(0),
                    }
                }
                w.u64(outputs.len() as u64);
                for o in outputs {
                    w.u32(o.0);
                }
            }
        }
    }
}

fn encode_values(w: &mut Writer, v: &HostValues) {
    match v {
        HostValues::Strings(s) => {
            w.u8(0);
            w.u64(s.len() as u64);
            for x in s {
                w.str(x);
            }
        }
        HostValues::Ints(s) => {
            w.u8(1);
            w.u64(s.len() as u64);
            for x in s {
                w.u64(*x as u64);
            }
        }
        HostValues::Floats(s) => {
            w.u8(2);
            w.u64(s.len() as u64);
            for x in s {
                w.u64(x.to_bits());
            }
        }
    }
}

fn decode_values(r: &mut Reader) -> Result<HostValues, RuntimeError> {
    Ok(match r.u8()? {
        0 => {
            let n = r.count(8)?;
            HostValues::Strings((0..n).map(|_| r.str()).collect::<Result<_, _>>()?)
        }
        1 => {
            let n = r.count(8)?;
            HostValues::Ints(
                (0..n)
                    .map(|_| r.u64().map(|v| v as i64))
                    .collect::<Result<_, _>>()?,
            )
        }
        2 => {
            let n = r.count(8)?;
            HostValues::Floats(
                (0..n)
                    .map(|_| r.u64().map(f64::from_bits))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            return Err(RuntimeError::BadArtifact(
                "unknown host-op value list".into(),
            ))
        }
    })
}

/// How deeply control-flow steps may nest in a file; deeper is refused, not recursed into.
const MAX_NESTING: usize = 64;

fn decode_steps(r: &mut Reader, depth: usize) -> Result<Vec<Step>, RuntimeError> {
    let bad = |m: &str| RuntimeError::BadArtifact(m.to_string());
    if depth > MAX_NESTING {
        return Err(bad("control flow nested too deeply"));
    }
    let ns = r.count(5)?;
    let mut steps = Vec::with_capacity(ns);
    for _ in 0..ns {
        let step = match r.u8()? {
            0 => {
                let kernel = r.u32()?;
                let na = r.count(4)?;
                let args = (0..na)
                    .map(|_| r.u32().map(BufferId))
                    .collect::<Result<_, _>>()?;
                Step::Launch { kernel, args }
            }
            1 => Step::Copy {
                src: BufferId(r.u32()?),
                dst: BufferId(r.u32()?),
            },
            2 => {
                let cond = BufferId(r.u32()?);
                let then_steps = decode_steps(r, depth + 1)?;
                let else_steps = decode_steps(r, depth + 1)?;
                Step::If {
                    cond,
                    then_steps,
                    else_steps,
                }
            }
            3 => {
                let trip = match r.u8()? {
                    0 => Trip::Buffer(BufferId(r.u32()?)),
                    1 => Trip::Fixed(r.u64()?),
                    2 => Trip::Unbounded,
                    _ => return Err(bad("unknown loop trip kind")),
                };
                let mut flags = [None; 4];
                for f in &mut flags {
                    *f = match r.u8()? {
                        0 => None,
                        1 => Some(BufferId(r.u32()?)),
                        _ => return Err(bad("bad loop flag")),
                    };
                }
                let [cond, iter, cond_in, cond_out] = flags;
                let body = decode_steps(r, depth + 1)?;
                let nc = r.count(8)?;
                let carried = (0..nc)
                    .map(|_| Ok((BufferId(r.u32()?), BufferId(r.u32()?))))
                    .collect::<Result<_, RuntimeError>>()?;
                let mut lists = [Vec::new(), Vec::new()];
                for list in &mut lists {
                    let n = r.count(9)?;
                    for _ in 0..n {
                        let whole = BufferId(r.u32()?);
                        let part = BufferId(r.u32()?);
                        let reverse = match r.u8()? {
                            0 => false,
                            1 => true,
                            _ => return Err(bad("bad loop slice flag")),
                        };
                        list.push(LoopSlice {
                            whole,
                            part,
                            reverse,
                        });
                    }
                }
                let [scan_in, scan_out] = lists;
                Step::Loop(Box::new(LoopStep {
                    trip,
                    cond,
                    iter,
                    cond_in,
                    cond_out,
                    body,
                    carried,
                    scan_in,
                    scan_out,
                }))
            }
            4 => {
                let flag = |r: &mut Reader| -> Result<bool, RuntimeError> {
                    match r.u8()? {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(bad("bad host-op flag")),
                    }
                };
                let axis = |r: &mut Reader| -> Result<Option<i64>, RuntimeError> {
                    Ok(if flag(r)? {
                        Some(r.u64()? as i64)
                    } else {
                        None
                    })
                };
                let op = match r.u8()? {
                    0 => HostOp::NonZero,
                    1 => HostOp::Compress { axis: axis(r)? },
                    2 => {
                        let a = axis(r)?;
                        HostOp::Unique {
                            axis: a,
                            sorted: flag(r)?,
                        }
                    }
                    3 => HostOp::NonMaxSuppression {
                        center_point_box: flag(r)?,
                    },
                    4 => HostOp::StringConcat,
                    5 => HostOp::StringEqual,
                    6 => HostOp::RegexFullMatch { pattern: r.str()? },
                    7 => {
                        let case = r.u8()?;
                        let case_sensitive = flag(r)?;
                        let HostValues::Strings(stopwords) = decode_values(r)? else {
                            return Err(bad("bad stopwords"));
                        };
                        HostOp::StringNormalizer {
                            case,
                            case_sensitive,
                            stopwords,
                        }
                    }
                    8 => {
                        let delimiter = r.str()?;
                        HostOp::StringSplit {
                            delimiter,
                            maxsplit: axis(r)?,
                        }
                    }
                    9 => HostOp::LabelEncoder {
                        keys: decode_values(r)?,
                        values: decode_values(r)?,
                        default: decode_values(r)?,
                    },
                    10 => {
                        let (min_gram, max_gram, max_skip) =
                            (r.u64()? as i64, r.u64()? as i64, r.u64()? as i64);
                        let mode = r.u8()?;
                        let ints = |r: &mut Reader| match decode_values(r)? {
                            HostValues::Ints(v) => Ok(v),
                            _ => Err(bad("bad TfIdf list")),
                        };
                        let ngram_counts = ints(r)?;
                        let ngram_indexes = ints(r)?;
                        let pool = decode_values(r)?;
                        let HostValues::Floats(weights) = decode_values(r)? else {
                            return Err(bad("bad TfIdf weights"));
                        };
                        HostOp::TfIdf {
                            min_gram,
                            max_gram,
                            max_skip,
                            mode,
                            ngram_counts,
                            ngram_indexes,
                            pool,
                            weights,
                        }
                    }
                    11 => {
                        let aggregate = r.u8()?;
                        let n_targets = r.u64()? as i64;
                        let mut ints: Vec<Vec<i64>> = Vec::with_capacity(9);
                        for _ in 0..9 {
                            let HostValues::Ints(v) = decode_values(r)? else {
                                return Err(bad("bad tree list"));
                            };
                            ints.push(v);
                        }
                        let mut floats: Vec<Vec<f64>> = Vec::with_capacity(3);
                        for _ in 0..3 {
                            let HostValues::Floats(v) = decode_values(r)? else {
                                return Err(bad("bad tree list"));
                            };
                            floats.push(v);
                        }
                        let mut i = ints.into_iter();
                        let mut f = floats.into_iter();
                        let mut next_i = || i.next().unwrap_or_default();
                        let (
                            tree_roots,
                            feature_ids,
                            modes,
                            true_ids,
                            true_leafs,
                            false_ids,
                            false_leafs,
                            missing_tracks_true,
                            leaf_targets,
                        ) = (
                            next_i(),
                            next_i(),
                            next_i(),
                            next_i(),
                            next_i(),
                            next_i(),
                            next_i(),
                            next_i(),
                            next_i(),
                        );
                        let mut next_f = || f.next().unwrap_or_default();
                        let (splits, leaf_weights, membership) = (next_f(), next_f(), next_f());
                        HostOp::TreeEnsemble(Box::new(tessera_abi::TreeEnsemble {
                            aggregate,
                            n_targets,
                            tree_roots,
                            feature_ids,
                            splits,
                            modes,
                            true_ids,
                            true_leafs,
                            false_ids,
                            false_leafs,
                            missing_tracks_true,
                            leaf_targets,
                            leaf_weights,
                            membership,
                        }))
                    }
                    _ => return Err(bad("unknown host op")),
                };
                let ni = r.count(1)?;
                let mut inputs = Vec::with_capacity(ni);
                for _ in 0..ni {
                    inputs.push(if flag(r)? {
                        Some(BufferId(r.u32()?))
                    } else {
                        None
                    });
                }
                let no = r.count(4)?;
                let outputs = (0..no)
                    .map(|_| r.u32().map(BufferId))
                    .collect::<Result<_, _>>()?;
                Step::Host {
                    op,
                    inputs,
                    outputs,
                }
            }
            _ => return Err(bad("unknown step kind")),
        };
        steps.push(step);
    }
    Ok(steps)
}

fn decode_plan(r: &mut Reader) -> Result<Plan, RuntimeError> {
    let bad = |m: &str| RuntimeError::BadArtifact(m.to_string());
    let mut p = Plan::default();
    let nb = r.count(16)?;
    for _ in 0..nb {
        let name = r.str()?;
        let dtype = r.dtype()?;
        let nd = r.count(8)?;
        let dims = (0..nd).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        let tag = r.u8()?;
        let v = r.u32()?;
        let kind = match tag {
            0 => BufferKind::Input(v),
            1 => BufferKind::Const(v),
            2 => BufferKind::Temp { slot: v },
            3 => BufferKind::Alias(BufferId(v)),
            _ => return Err(bad("unknown buffer kind")),
        };
        p.buffers.push(PlanBuffer {
            name,
            dtype,
            dims,
            kind,
        });
    }
    for which in 0..2 {
        let n = r.count(16)?;
        for _ in 0..n {
            let name = r.str()?;
            let buffer = BufferId(r.u32()?);
            let dtype = r.dtype()?;
            let nd = r.count(8)?;
            let dims = (0..nd).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            let bound = match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?.to_vec()),
                _ => return Err(bad("bad bound flag")),
            };
            let io = PlanIo {
                name,
                buffer,
                dtype,
                dims,
                bound,
            };
            if which == 0 {
                p.inputs.push(io)
            } else {
                p.outputs.push(io)
            }
        }
    }
    p.steps = decode_steps(r, 0)?;
    let nc = r.count(8)?;
    for _ in 0..nc {
        p.consts.push(r.bytes()?.to_vec());
    }
    let nn = r.count(8)?;
    for _ in 0..nn {
        let node = r.str()?;
        let op = r.str()?;
        let dense = r.u8()? != 0;
        let how = Execution::from_name(&r.str()?).ok_or_else(|| bad("unknown execution kind"))?;
        p.nodes.push(NodeRecord {
            node,
            op,
            dense,
            how,
        });
    }
    let nt = r.count(36)?;
    for _ in 0..nt {
        let kernel = r.u32()?;
        let (node, op, input, what) = (r.str()?, r.str()?, r.str()?, r.str()?);
        p.traps.push(TrapSite {
            kernel,
            node,
            op,
            input,
            what,
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Artifact {
        let plan = Plan {
            buffers: vec![
                PlanBuffer {
                    name: "x".into(),
                    dtype: DType::F32,
                    dims: vec![2],
                    kind: BufferKind::Input(0),
                },
                PlanBuffer {
                    name: "y".into(),
                    dtype: DType::F32,
                    dims: vec![2],
                    kind: BufferKind::Temp { slot: 0 },
                },
            ],
            inputs: vec![PlanIo {
                name: "x".into(),
                buffer: BufferId(0),
                dtype: DType::F32,
                dims: vec![2],
                bound: None,
            }],
            outputs: vec![PlanIo {
                name: "y".into(),
                buffer: BufferId(1),
                dtype: DType::F32,
                dims: vec![2],
                bound: None,
            }],
            steps: vec![Step::Launch {
                kernel: 0,
                args: vec![BufferId(0), BufferId(1)],
            }],
            consts: vec![],
            nodes: vec![NodeRecord {
                node: "Relu node \"r\"".into(),
                op: "Relu".into(),
                dense: false,
                how: Execution::Kernel,
            }],
            traps: vec![TrapSite {
                kernel: 0,
                node: "Gather node \"g\"".into(),
                op: "Gather".into(),
                input: "indices".into(),
                what: "out of range".into(),
            }],
        };
        Artifact {
            target: "interp".into(),
            fingerprint: String::new(),
            source: "m.onnx".into(),
            plan,
            kernels: vec![StoredKernel {
                name: "relu".into(),
                param_bytes: vec![8, 8],
                blob: b"code".to_vec(),
            }],
        }
    }

    #[test]
    fn round_trips() {
        let a = sample();
        assert_eq!(Artifact::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn refuses_every_truncation_and_any_flipped_byte() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Artifact::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Artifact::decode(&b).is_err(), "flipped byte {i}");
        }
    }

    #[test]
    fn refuses_other_versions() {
        let mut bytes = sample().encode();
        bytes[8] = 99;
        let e = Artifact::decode(&bytes).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
    }

    #[test]
    fn digest_is_stored_reported_and_checked() {
        let a = sample();
        let bytes = a.encode();
        let d = a.digest();
        assert_eq!(Artifact::stored_digest(&bytes), Some(d));
        assert_eq!(parse_digest(&digest_hex(&d)).unwrap(), d);
        assert_eq!(parse_digest(&digest_hex(&d).to_uppercase()).unwrap(), d);
        assert!(Artifact::decode_expecting(&bytes, Some(&d)).is_ok());
        let mut other = d;
        other[0] ^= 1;
        let e = Artifact::decode_expecting(&bytes, Some(&other)).unwrap_err();
        assert!(matches!(e, RuntimeError::DigestMismatch { .. }), "{e}");
        assert!(
            e.to_string().contains(&digest_hex(&d)) && e.to_string().contains(&digest_hex(&other)),
            "{e}"
        );
        let e = parse_digest("abc").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
    }

    #[test]
    fn refuses_a_trap_naming_a_missing_kernel() {
        let mut a = sample();
        a.plan.traps[0].kernel = 5;
        let e = Artifact::decode(&a.encode()).unwrap_err().to_string();
        assert!(e.contains("trap 0 names missing kernel 5"), "{e}");
    }
}
