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
use tessera_ir::DType;
use tessera_kir::{
    BufferId, BufferKind, Execution, NodeRecord, Plan, PlanBuffer, PlanIo, Step, TrapSite,
};

pub const MAGIC: &[u8; 8] = b"TESSERA\0";
/// Bumped whenever the payload layout changes; older files are refused, not misread.
/// Version 2: SHA-256 instead of CRC-32, and the plan's trap table.
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
                .is_none_or(|n| n > tessera_ir::MAX_ELEMENTS)
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
    for (s, step) in plan.steps.iter().enumerate() {
        match step {
            Step::Launch { kernel, args } => {
                let Some(k) = kernels.get(*kernel as usize) else {
                    return bad(format!("step {s} launches missing kernel {kernel}"));
                };
                if k.param_bytes.len() != args.len() || !args.iter().all(|&a| check(a)) {
                    return bad(format!(
                        "step {s}: arguments of kernel `{}` do not match",
                        k.name
                    ));
                }
                for (&a, &want) in args.iter().zip(&k.param_bytes) {
                    if plan.buffers[a.0 as usize].byte_len() != want {
                        return bad(format!(
                            "step {s}: kernel `{}` expects {want} bytes for an argument",
                            k.name
                        ));
                    }
                }
            }
            Step::Copy { src, dst } => {
                if !check(*src)
                    || !check(*dst)
                    || plan.buffers[src.0 as usize].byte_len()
                        != plan.buffers[dst.0 as usize].byte_len()
                {
                    return bad(format!("step {s}: malformed copy"));
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
    w.u64(p.steps.len() as u64);
    for s in &p.steps {
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
        }
    }
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
    let ns = r.count(5)?;
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
            _ => return Err(bad("unknown step kind")),
        };
        p.steps.push(step);
    }
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
