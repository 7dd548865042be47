//! A loaded model: an [`Artifact`] whose kernels are loaded on a [`Device`], ready to run from
//! any number of threads at once (each run owns its scratch memory).

use crate::artifact::Artifact;
use crate::device::{Device, DeviceError, KernelArg, LoadedKernel};
use crate::RuntimeError;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_abi::Tensor;
use tessera_abi::{BufferId, BufferKind, HostOp, LoopSlice, LoopStep, PlanIo, Step, Trip};

/// Byte storage aligned to 16 bytes, so vector loads in compiled kernels are safe.
struct Aligned {
    words: Vec<u128>,
    len: usize,
}

impl Aligned {
    fn zeroed(len: usize) -> Aligned {
        Aligned {
            words: vec![0u128; len.div_ceil(16)],
            len,
        }
    }

    fn from_bytes(b: &[u8]) -> Aligned {
        let mut a = Aligned::zeroed(b.len());
        a.bytes_mut().copy_from_slice(b);
        a
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }
}

pub struct Model {
    artifact: Artifact,
    kernels: Vec<Box<dyn LoadedKernel>>,
    consts: Vec<Aligned>,
    /// The decoded contents of string constants, by constant number.
    const_strings: std::collections::HashMap<u32, Vec<String>>,
    device: Arc<dyn Device>,
    /// Bytes a run allocates (see [`Model::scratch_bytes`]).
    scratch: u64,
    /// The most a run may allocate, if capped (see [`Model::set_max_memory`]).
    max_memory: Option<u64>,
    /// Temp storage of finished runs, kept for the next ones (at most [`SPARE_RUNS`] sets):
    /// reusing it, zeroed again, saves the page faults of fresh allocations on every run.
    spare: std::sync::Mutex<Vec<Vec<Option<Aligned>>>>,
}

/// How many runs' temp storage a model keeps for reuse: one per thread that runs it at once,
/// up to this many.
const SPARE_RUNS: usize = 4;

impl Model {
    /// Loads `artifact` on `device`: checks the target and fingerprint, then loads every kernel.
    pub fn load(artifact: Artifact, device: Arc<dyn Device>) -> Result<Model, RuntimeError> {
        if artifact.target != device.target() {
            return Err(RuntimeError::WrongTarget {
                artifact: artifact.target.clone(),
                device: device.target().to_string(),
            });
        }
        device
            .check_fingerprint(&artifact.fingerprint)
            .map_err(RuntimeError::IncompatibleDevice)?;
        let kernels = artifact
            .kernels
            .iter()
            .map(|k| device.load(&k.name, &k.blob).map_err(RuntimeError::Device))
            .collect::<Result<Vec<_>, _>>()?;
        let consts = artifact
            .plan
            .consts
            .iter()
            .map(|c| Aligned::from_bytes(c))
            .collect();
        let mut const_strings = std::collections::HashMap::new();
        for b in artifact
            .plan
            .buffers
            .iter()
            .filter(|b| b.dtype == tessera_abi::DType::String)
        {
            if let BufferKind::Const(n) = b.kind {
                // Validation checked that these decode.
                let s = artifact
                    .plan
                    .consts
                    .get(n as usize)
                    .and_then(|c| tessera_abi::plan::decode_strings(c, b.num_elements()));
                const_strings.insert(n, s.unwrap_or_default());
            }
        }
        let scratch = scratch_bytes(&artifact.plan);
        Ok(Model {
            artifact,
            kernels,
            consts,
            const_strings,
            device,
            scratch,
            max_memory: None,
            spare: Default::default(),
        })
    }

    /// Reads, validates and loads a `.tsa` file.
    pub fn load_file(path: &Path, device: Arc<dyn Device>) -> Result<Model, RuntimeError> {
        Model::load_file_expecting(path, device, None)
    }

    /// Like [`Model::load_file`], refusing the file unless its SHA-256 digest is `expect`
    /// (when given). The digest is compared before anything else in the file is parsed.
    pub fn load_file_expecting(
        path: &Path,
        device: Arc<dyn Device>,
        expect: Option<&[u8; 32]>,
    ) -> Result<Model, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|e| RuntimeError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let artifact = Artifact::decode_expecting(&bytes, expect).map_err(|e| match e {
            RuntimeError::BadArtifact(m) => {
                RuntimeError::BadArtifact(format!("{}: {m}", path.display()))
            }
            other => other,
        })?;
        Model::load(artifact, device)
    }

    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    pub fn device(&self) -> &dyn Device {
        self.device.as_ref()
    }

    pub fn inputs(&self) -> &[PlanIo] {
        &self.artifact.plan.inputs
    }

    pub fn outputs(&self) -> &[PlanIo] {
        &self.artifact.plan.outputs
    }

    /// The bytes one run allocates: its scratch slots, its private copies of the inputs and
    /// the outputs it returns. The same for every run of the model.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch
    }

    /// Caps the memory of each run at `limit` bytes (`None`: no cap). A run that would need
    /// more ([`Model::scratch_bytes`]) is refused with [`RuntimeError::MemoryLimit`] before
    /// it allocates anything.
    pub fn set_max_memory(&mut self, limit: Option<u64>) {
        self.max_memory = limit;
    }

    /// Runs the plan on `inputs` (one per model input, in order) and returns the outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.run_timed(inputs, None)
    }

    /// Runs the plan as [`Model::run`] does and also measures the wall time of every kernel
    /// launch: one [`KernelTime`] per kernel of the artifact, in artifact order, plus the time
    /// of everything else (copies, host ops, allocation) as [`Profile::other`]. Timing each
    /// launch costs two clock reads, so a profiled run is a little slower than a plain one.
    pub fn run_profiled(&self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, Profile), RuntimeError> {
        let start = Instant::now();
        let mut times = vec![(0u32, Duration::ZERO); self.kernels.len()];
        let outs = self.run_timed(inputs, Some(&mut times))?;
        let total = start.elapsed();
        let in_kernels: Duration = times.iter().map(|t| t.1).sum();
        let kernels = times
            .into_iter()
            .zip(&self.artifact.kernels)
            .map(|((launches, time), k)| KernelTime {
                name: k.name.clone(),
                launches,
                seconds: time.as_secs_f64(),
            })
            .collect();
        let profile = Profile {
            kernels,
            other: total.saturating_sub(in_kernels).as_secs_f64(),
            total: total.as_secs_f64(),
        };
        Ok((outs, profile))
    }

    fn run_timed(
        &self,
        inputs: &[Tensor],
        times: Option<&mut Vec<(u32, Duration)>>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let plan = &self.artifact.plan;
        self.check_count(inputs.len())?;
        for (io, t) in plan.inputs.iter().zip(inputs) {
            check_input(io, t)?;
        }
        let bytes: Vec<&[u8]> = inputs.iter().map(|t| t.bytes.as_slice()).collect();
        let strings: Vec<Arc<Vec<String>>> = inputs.iter().map(|t| t.strings.clone()).collect();
        let mut outs = Vec::with_capacity(plan.outputs.len());
        self.execute(&bytes, strings, times, &mut |k, out| {
            let dtype = plan.outputs[k].dtype;
            outs.push(match out {
                Emitted::Bytes(b, dims) => Tensor::new(dtype, dims, b.to_vec()),
                Emitted::Strings(s, dims) => Tensor::from_strings(dims, s),
            });
            Ok(())
        })?;
        Ok(outs)
    }

    /// Runs the plan on raw bytes and writes the outputs into caller-provided buffers: the
    /// entry point of the C ABI and the Python package. `inputs[k]` holds input `k` laid out as
    /// [`Model::inputs`] says (dtype, dims, row-major, sub-byte types packed as ONNX packs
    /// them), and `outputs[k]` must be exactly as long as output `k`'s bytes. Lengths are
    /// checked and errors name the input or output; nothing is written on an input error.
    pub fn run_into(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
    ) -> Result<(), RuntimeError> {
        let plan = &self.artifact.plan;
        self.check_count(inputs.len())?;
        for (io, b) in plan.inputs.iter().zip(inputs) {
            check_input_bytes(io, b)?;
        }
        if outputs.len() != plan.outputs.len() {
            return Err(RuntimeError::Output {
                output: "(all)".into(),
                message: format!(
                    "the model has {} outputs, {} buffers were given",
                    plan.outputs.len(),
                    outputs.len()
                ),
            });
        }
        for (io, b) in plan.outputs.iter().zip(outputs.iter()) {
            let need = io_bytes(io);
            if b.len() as u64 != need {
                return Err(RuntimeError::Output {
                    output: io.name.clone(),
                    message: format!(
                        "the buffer holds {} bytes, the output ({} {:?}) needs {need}",
                        b.len(),
                        io.dtype,
                        io.dims
                    ),
                });
            }
        }
        let plan_outputs = &plan.outputs;
        self.execute(inputs, Vec::new(), None, &mut |k, out| match out {
            Emitted::Bytes(b, dims) if dims == plan_outputs[k].dims => {
                outputs[k].copy_from_slice(b);
                Ok(())
            }
            _ => Err(RuntimeError::Output {
                output: plan_outputs[k].name.clone(),
                message: "it holds strings or a size known only at run time; use Model::run".into(),
            }),
        })
    }

    fn check_count(&self, given: usize) -> Result<(), RuntimeError> {
        let want = self.artifact.plan.inputs.len();
        if given != want {
            return Err(RuntimeError::Input {
                input: "(all)".into(),
                message: format!("the model takes {want} inputs, {given} were given"),
            });
        }
        Ok(())
    }

    /// Executes the plan on checked input bytes (and the strings of string inputs) and hands
    /// each output to `emit`, in order, with the dims it has.
    fn execute(
        &self,
        inputs: &[&[u8]],
        input_strings: Vec<Arc<Vec<String>>>,
        times: Option<&mut Vec<(u32, Duration)>>,
        emit: &mut dyn FnMut(usize, Emitted<'_>) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let plan = &self.artifact.plan;
        if let Some(limit) = self.max_memory.filter(|&l| self.scratch > l) {
            return Err(RuntimeError::MemoryLimit {
                need: self.scratch,
                limit,
            });
        }
        // Storage for every buffer that owns some: inputs (copied, so kernels may not touch the
        // caller's data), temps (one allocation per slot, zeroed: a finished run's, cleared, or
        // new), constants (shared, read-only).
        let reused = self.spare.lock().ok().and_then(|mut s| s.pop());
        let mut slots: Vec<Option<Aligned>> = reused.unwrap_or_default();
        for a in slots.iter_mut().flatten() {
            a.words.fill(0);
        }
        for b in &plan.buffers {
            if let BufferKind::Temp { slot } = b.kind {
                let s = slot as usize;
                if slots.len() <= s {
                    slots.resize_with(s + 1, || None);
                }
                let need = b.byte_len() as usize;
                if slots[s].as_ref().is_none_or(|a| a.len < need) {
                    slots[s] = Some(Aligned::zeroed(need));
                }
            }
        }
        let inputs: Vec<Aligned> = inputs.iter().map(|b| Aligned::from_bytes(b)).collect();
        let mut run = Run {
            model: self,
            slots,
            inputs,
            input_strings,
            strings: Default::default(),
            dims: Default::default(),
            times,
        };
        run.steps(&plan.steps)?;
        for (k, io) in plan.outputs.iter().enumerate() {
            // A host op's result has the size it produced, within the plan's capacity.
            let dims = run
                .dims
                .get(&io.buffer.0)
                .cloned()
                .unwrap_or_else(|| io.dims.clone());
            if io.dtype == tessera_abi::DType::String {
                emit(k, Emitted::Strings(run.strings_of(io.buffer), dims))?;
                continue;
            }
            let (p, n) = run.ptr(io.buffer);
            if p.is_null() {
                return Err(RuntimeError::BadArtifact(format!(
                    "output `{}` is unbacked",
                    io.name
                )));
            }
            let n = n.min(io.dtype.storage_bytes(dims.iter().product()) as usize);
            // SAFETY: valid for `n` bytes: the storage lives in `run` and validation checked
            // lengths against the plan.
            emit(
                k,
                Emitted::Bytes(unsafe { std::slice::from_raw_parts(p, n) }, dims),
            )?;
        }
        // The outputs were copied out by `emit`: the temps can serve the next run.
        let slots = std::mem::take(&mut run.slots);
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < SPARE_RUNS {
                spare.push(slots);
            }
        }
        Ok(())
    }
}

/// Where one profiled run spent its time ([`Model::run_profiled`]).
#[derive(Clone, Debug)]
pub struct Profile {
    /// One entry per kernel of the artifact, in artifact order.
    pub kernels: Vec<KernelTime>,
    /// Seconds outside kernel launches: buffers, copies, host ops, control flow.
    pub other: f64,
    /// Seconds of the whole run.
    pub total: f64,
}

/// The launches of one kernel in a profiled run and their total wall time.
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub name: String,
    pub launches: u32,
    pub seconds: f64,
}

/// One output as [`Model::execute`] hands it over: bytes or strings, with its dims.
enum Emitted<'a> {
    Bytes(&'a [u8], Vec<u64>),
    Strings(Vec<String>, Vec<u64>),
}

/// The storage of one run and the step interpreter over it.
struct Run<'m> {
    model: &'m Model,
    slots: Vec<Option<Aligned>>,
    inputs: Vec<Aligned>,
    input_strings: Vec<Arc<Vec<String>>>,
    /// Contents of string buffers that host ops wrote, by root buffer.
    strings: std::collections::HashMap<u32, Vec<String>>,
    /// The dims host ops produced, by buffer; other buffers have their plan dims.
    dims: std::collections::HashMap<u32, Vec<u64>>,
    /// When profiling: launches and wall time per kernel.
    times: Option<&'m mut Vec<(u32, Duration)>>,
}

impl Run<'_> {
    /// The storage behind buffer `id` and its byte length; null if unbacked.
    fn ptr(&mut self, id: BufferId) -> (*mut u8, usize) {
        let plan = &self.model.artifact.plan;
        let root = plan.root(id);
        let len = plan.buffer(id).byte_len() as usize;
        let ptr = match plan.buffer(root).kind {
            BufferKind::Input(n) => self.inputs[n as usize].bytes_mut().as_mut_ptr(),
            // Constants are read-only parameters of every kernel that takes them.
            BufferKind::Const(n) => self.model.consts[n as usize].bytes().as_ptr() as *mut u8,
            BufferKind::Temp { slot } => self.slots[slot as usize]
                .as_mut()
                .map(|a| a.bytes_mut().as_mut_ptr())
                .unwrap_or(std::ptr::null_mut()),
            BufferKind::Alias(_) => std::ptr::null_mut(),
        };
        (ptr, len)
    }

    /// The contents of string buffer `id` (empty strings where nothing was written).
    fn strings_of(&self, id: BufferId) -> Vec<String> {
        let plan = &self.model.artifact.plan;
        let root = plan.root(id);
        let n = self
            .dims
            .get(&id.0)
            .map_or(plan.buffer(id).num_elements(), |d| d.iter().product())
            as usize;
        let mut v = match plan.buffer(root).kind {
            BufferKind::Input(i) => self
                .input_strings
                .get(i as usize)
                .map(|s| s.as_ref().clone())
                .unwrap_or_default(),
            BufferKind::Const(c) => self
                .model
                .const_strings
                .get(&c)
                .cloned()
                .unwrap_or_default(),
            _ => self.strings.get(&root.0).cloned().unwrap_or_default(),
        };
        v.resize(n, String::new());
        v
    }

    /// The bytes of buffer `id`, copied out.
    fn read(&mut self, id: BufferId) -> Result<Vec<u8>, RuntimeError> {
        let (p, n) = self.ptr(id);
        if p.is_null() {
            return Err(RuntimeError::BadArtifact(format!(
                "buffer {} is unbacked",
                id.0
            )));
        }
        // SAFETY: valid for `n` bytes, as for kernel arguments.
        Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
    }

    /// Writes `bytes` at byte `offset` of buffer `id`; validation sized every write.
    fn write(&mut self, id: BufferId, offset: usize, bytes: &[u8]) -> Result<(), RuntimeError> {
        let (p, n) = self.ptr(id);
        if p.is_null() || offset + bytes.len() > n {
            return Err(RuntimeError::BadArtifact(format!(
                "write past buffer {}",
                id.0
            )));
        }
        // SAFETY: checked just above to lie inside the buffer; `bytes` is a separate copy.
        unsafe { std::ptr::copy(bytes.as_ptr(), p.add(offset), bytes.len()) };
        Ok(())
    }

    fn truthy(&mut self, id: BufferId) -> Result<bool, RuntimeError> {
        Ok(self.read(id)?.first().is_some_and(|&b| b != 0))
    }

    fn steps(&mut self, steps: &[Step]) -> Result<(), RuntimeError> {
        for step in steps {
            match step {
                Step::Launch { kernel, args } => {
                    let kargs: Vec<KernelArg> = args
                        .iter()
                        .map(|&a| {
                            let (p, l) = self.ptr(a);
                            // SAFETY: the pointer comes from storage that lives until the end of
                            // `run`, and validation checked lengths against the plan.
                            unsafe { KernelArg::new(p, l) }
                        })
                        .collect();
                    if kargs.iter().any(|a| a.ptr().is_null()) {
                        return Err(RuntimeError::BadArtifact(format!(
                            "kernel {kernel} has an unbacked argument"
                        )));
                    }
                    let start = self.times.is_some().then(Instant::now);
                    self.model.kernels[*kernel as usize]
                        .launch(&kargs)
                        .map_err(|e| self.model.launch_error(*kernel, e))?;
                    if let (Some(times), Some(start)) = (self.times.as_deref_mut(), start) {
                        let t = &mut times[*kernel as usize];
                        t.0 += 1;
                        t.1 += start.elapsed();
                    }
                }
                Step::Copy { src, dst } => {
                    let (s, n) = self.ptr(*src);
                    let (d, _) = self.ptr(*dst);
                    if s.is_null() || d.is_null() {
                        return Err(RuntimeError::BadArtifact(
                            "a copy names an unbacked buffer".into(),
                        ));
                    }
                    // SAFETY: both are valid for `n` bytes; `copy` tolerates overlap.
                    unsafe { std::ptr::copy(s, d, n) };
                }
                Step::If {
                    cond,
                    then_steps,
                    else_steps,
                } => {
                    if self.truthy(*cond)? {
                        self.steps(then_steps)?;
                    } else {
                        self.steps(else_steps)?;
                    }
                }
                Step::Loop(l) => self.run_loop(l)?,
                Step::Host {
                    op,
                    inputs,
                    outputs,
                } => self.run_host(op, inputs, outputs)?,
            }
        }
        Ok(())
    }

    fn run_host(
        &mut self,
        op: &HostOp,
        inputs: &[Option<BufferId>],
        outputs: &[BufferId],
    ) -> Result<(), RuntimeError> {
        let plan = &self.model.artifact.plan;
        let mut data = Vec::with_capacity(inputs.len());
        for i in inputs {
            data.push(match i {
                Some(b) => {
                    let dims = self
                        .dims
                        .get(&b.0)
                        .cloned()
                        .unwrap_or_else(|| plan.buffer(*b).dims.clone());
                    let dtype = plan.buffer(*b).dtype;
                    let strings = if dtype == tessera_abi::DType::String {
                        self.strings_of(*b)
                    } else {
                        Vec::new()
                    };
                    Some((dtype, dims, self.read(*b)?, strings))
                }
                None => None,
            });
        }
        let ins: Vec<Option<crate::select::HostIn>> = data
            .iter()
            .map(|d| {
                d.as_ref().map(|(dtype, dims, bytes, strings)| {
                    crate::select::HostIn::new(*dtype, dims, bytes, strings)
                })
            })
            .collect();
        let out_dtypes: Vec<tessera_abi::DType> =
            outputs.iter().map(|&b| plan.buffer(b).dtype).collect();
        let outs = crate::select::run(op, &ins, &out_dtypes)
            .map_err(|m| RuntimeError::Execution(format!("{op:?}: {m}")))?;
        for (&b, out) in outputs.iter().zip(outs) {
            if plan.buffer(b).dtype == tessera_abi::DType::String {
                // String storage is host memory, sized by the result itself.
                self.strings.insert(plan.root(b).0, out.strings);
                self.dims.insert(b.0, out.dims);
                continue;
            }
            let cap = plan.buffer(b).byte_len() as usize;
            if out.bytes.len() > cap {
                return Err(RuntimeError::Execution(format!(
                    "{op:?}: result `{}` needs {} bytes, more than the {cap} the plan allocated",
                    plan.buffer(b).name,
                    out.bytes.len()
                )));
            }
            self.write(b, 0, &out.bytes)?;
            self.dims.insert(b.0, out.dims);
        }
        Ok(())
    }

    fn run_loop(&mut self, l: &LoopStep) -> Result<(), RuntimeError> {
        let plan = &self.model.artifact.plan;
        let trip = match l.trip {
            Trip::Buffer(b) => {
                let v = self.read(b)?;
                let m = i64::from_le_bytes(
                    v.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]),
                );
                Some(m.max(0) as u64)
            }
            Trip::Fixed(n) => Some(n),
            Trip::Unbounded => None,
        };
        let mut cond = match l.cond {
            Some(c) => self.truthy(c)?,
            None => true,
        };
        let parts = |sl: &LoopSlice| {
            let p = plan.buffer(sl.part).byte_len();
            (
                p as usize,
                plan.buffer(sl.whole).byte_len().checked_div(p).unwrap_or(0),
            )
        };
        let mut i: u64 = 0;
        while cond && trip.is_none_or(|m| i < m) {
            for sl in l.scan_out.iter() {
                if i >= parts(sl).1 {
                    return Err(RuntimeError::Execution(format!(
                        "a loop ran more than the {} iterations its scan output `{}` was sized for at compile time",
                        parts(sl).1,
                        plan.buffer(sl.whole).name
                    )));
                }
            }
            if let Some(b) = l.iter {
                self.write(b, 0, &(i as i64).to_le_bytes())?;
            }
            if let Some(b) = l.cond_in {
                self.write(b, 0, &[u8::from(cond)])?;
            }
            for sl in &l.scan_in {
                let (n, count) = parts(sl);
                let k = if sl.reverse {
                    count.saturating_sub(i + 1)
                } else {
                    i
                } as usize;
                let whole = self.read(sl.whole)?;
                let chunk = whole
                    .get(k * n..(k + 1) * n)
                    .ok_or_else(|| RuntimeError::BadArtifact("scan input too short".into()))?
                    .to_vec();
                self.write(sl.part, 0, &chunk)?;
            }
            self.steps(&l.body)?;
            for sl in &l.scan_out {
                let (n, count) = parts(sl);
                let k = if sl.reverse {
                    count.saturating_sub(i + 1)
                } else {
                    i
                } as usize;
                let part = self.read(sl.part)?;
                self.write(sl.whole, k * n, &part)?;
            }
            // Read every carried result before writing any parameter: a body may swap them.
            let results = l
                .carried
                .iter()
                .map(|&(r, _)| self.read(r))
                .collect::<Result<Vec<_>, _>>()?;
            for (&(_, p), bytes) in l.carried.iter().zip(results) {
                self.write(p, 0, &bytes)?;
            }
            cond = match l.cond_out {
                Some(c) => self.truthy(c)?,
                None => true,
            };
            i += 1;
        }
        for sl in &l.scan_out {
            let count = parts(sl).1;
            if i != count {
                return Err(RuntimeError::Execution(format!(
                    "a loop ended after {i} iterations, but its scan output `{}` was sized for {count} at compile time (the plan's shapes are static)",
                    plan.buffer(sl.whole).name
                )));
            }
        }
        Ok(())
    }
}

impl Model {
    /// The error for a failed launch of kernel `kernel`: a failed data check becomes
    /// [`RuntimeError::Data`], named from the plan's trap table.
    fn launch_error(&self, kernel: u32, e: DeviceError) -> RuntimeError {
        let Some(t) = e.trapped else {
            return RuntimeError::Device(e);
        };
        match self.artifact.plan.traps.get(t.code as usize).filter(|s| s.kernel == kernel) {
            Some(site) => RuntimeError::Data {
                node: site.node.clone(),
                op: site.op.clone(),
                input: site.input.clone(),
                value: t.value,
                what: site.what.clone(),
            },
            None => RuntimeError::BadArtifact(format!(
                "kernel `{}` reported data check {} (value {}), which the plan's trap table does not hold for it",
                e.kernel, t.code, t.value
            )),
        }
    }
}

/// What [`Model::run`] allocates for `plan`: one buffer per scratch slot (its largest user),
/// a copy of each input, and each output's bytes.
fn scratch_bytes(plan: &tessera_abi::Plan) -> u64 {
    let slots = plan.slot_bytes();
    let io = plan
        .inputs
        .iter()
        .chain(&plan.outputs)
        .map(|io| io.dtype.storage_bytes(io.dims.iter().product()));
    slots.into_iter().chain(io).fold(0u64, u64::saturating_add)
}

/// The byte length of an input or output.
fn io_bytes(io: &PlanIo) -> u64 {
    io.dtype.storage_bytes(io.dims.iter().product())
}

fn check_input(io: &PlanIo, t: &Tensor) -> Result<(), RuntimeError> {
    let err = |message: String| {
        Err(RuntimeError::Input {
            input: io.name.clone(),
            message,
        })
    };
    if t.dtype != io.dtype {
        return err(format!("expected dtype {}, got {}", io.dtype, t.dtype));
    }
    if t.dims != io.dims {
        return err(format!("expected shape {:?}, got {:?}", io.dims, t.dims));
    }
    check_input_bytes(io, &t.bytes)
}

/// Checks raw input bytes: their length, and the value of a bound input.
fn check_input_bytes(io: &PlanIo, bytes: &[u8]) -> Result<(), RuntimeError> {
    let err = |message: String| {
        Err(RuntimeError::Input {
            input: io.name.clone(),
            message,
        })
    };
    if bytes.len() as u64 != io_bytes(io) {
        return err(format!(
            "holds {} bytes, its shape ({} {:?}) needs {}",
            bytes.len(),
            io.dtype,
            io.dims,
            io_bytes(io)
        ));
    }
    if let Some(b) = &io.bound {
        if b.as_slice() != bytes {
            return err("its value was bound when the model was compiled (it decides a shape); recompile with the new value".into());
        }
    }
    Ok(())
}
