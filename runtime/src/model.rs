//! A loaded model: an [`Artifact`] whose kernels are loaded on a [`Device`], ready to run from
//! any number of threads at once (each run owns its scratch memory).

use crate::artifact::Artifact;
use crate::device::{Device, DeviceError, KernelArg, LoadedKernel};
use crate::RuntimeError;
use std::path::Path;
use std::sync::Arc;
use tessera_ir::Tensor;
use tessera_kir::{BufferKind, PlanIo, Step};

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
    device: Arc<dyn Device>,
    /// Bytes a run allocates (see [`Model::scratch_bytes`]).
    scratch: u64,
    /// The most a run may allocate, if capped (see [`Model::set_max_memory`]).
    max_memory: Option<u64>,
}

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
        let scratch = scratch_bytes(&artifact.plan);
        Ok(Model {
            artifact,
            kernels,
            consts,
            device,
            scratch,
            max_memory: None,
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
        let plan = &self.artifact.plan;
        self.check_count(inputs.len())?;
        for (io, t) in plan.inputs.iter().zip(inputs) {
            check_input(io, t)?;
        }
        let bytes: Vec<&[u8]> = inputs.iter().map(|t| t.bytes.as_slice()).collect();
        let mut outs = Vec::with_capacity(plan.outputs.len());
        self.execute(&bytes, &mut |k, b| {
            outs.push(Tensor::new(
                plan.outputs[k].dtype,
                plan.outputs[k].dims.clone(),
                b.to_vec(),
            ))
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
        self.execute(inputs, &mut |k, b| outputs[k].copy_from_slice(b))
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

    /// Executes the plan on checked input bytes and hands each output's bytes to `emit`, in order.
    fn execute(
        &self,
        inputs: &[&[u8]],
        emit: &mut dyn FnMut(usize, &[u8]),
    ) -> Result<(), RuntimeError> {
        let plan = &self.artifact.plan;
        if let Some(limit) = self.max_memory.filter(|&l| self.scratch > l) {
            return Err(RuntimeError::MemoryLimit {
                need: self.scratch,
                limit,
            });
        }
        // Storage for every buffer that owns some: inputs (copied, so kernels may not touch the
        // caller's data), temps (one allocation per slot), constants (shared, read-only).
        let mut slots: Vec<Option<Aligned>> = Vec::new();
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
        let mut owned_inputs: Vec<Aligned> =
            inputs.iter().map(|b| Aligned::from_bytes(b)).collect();
        let mut ptr_of =
            |id: tessera_kir::BufferId, slots: &mut Vec<Option<Aligned>>| -> (*mut u8, usize) {
                let root = plan.root(id);
                let len = plan.buffer(id).byte_len() as usize;
                let ptr = match plan.buffer(root).kind {
                    BufferKind::Input(n) => owned_inputs[n as usize].bytes_mut().as_mut_ptr(),
                    // Constants are read-only parameters of every kernel that takes them.
                    BufferKind::Const(n) => self.consts[n as usize].bytes().as_ptr() as *mut u8,
                    BufferKind::Temp { slot } => slots[slot as usize]
                        .as_mut()
                        .map(|a| a.bytes_mut().as_mut_ptr())
                        .unwrap_or(std::ptr::null_mut()),
                    BufferKind::Alias(_) => std::ptr::null_mut(),
                };
                (ptr, len)
            };
        for step in &plan.steps {
            match step {
                Step::Launch { kernel, args } => {
                    let kargs: Vec<KernelArg> = args
                        .iter()
                        .map(|&a| {
                            let (p, l) = ptr_of(a, &mut slots);
                            // SAFETY: the pointer comes from storage that lives until the end of
                            // `execute`, and validation checked lengths against the plan.
                            unsafe { KernelArg::new(p, l) }
                        })
                        .collect();
                    if kargs.iter().any(|a| a.ptr().is_null()) {
                        return Err(RuntimeError::BadArtifact(format!(
                            "kernel {kernel} has an unbacked argument"
                        )));
                    }
                    self.kernels[*kernel as usize]
                        .launch(&kargs)
                        .map_err(|e| self.launch_error(*kernel, e))?;
                }
                Step::Copy { src, dst } => {
                    let (s, n) = ptr_of(*src, &mut slots);
                    let (d, _) = ptr_of(*dst, &mut slots);
                    // SAFETY: both are valid for `n` bytes; `copy` tolerates overlap.
                    unsafe { std::ptr::copy(s, d, n) };
                }
            }
        }
        for (k, io) in plan.outputs.iter().enumerate() {
            let (p, n) = ptr_of(io.buffer, &mut slots);
            // SAFETY: valid for `n` bytes as above.
            emit(k, unsafe { std::slice::from_raw_parts(p, n) });
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
fn scratch_bytes(plan: &tessera_kir::Plan) -> u64 {
    let mut slots: Vec<u64> = Vec::new();
    for b in &plan.buffers {
        if let BufferKind::Temp { slot } = b.kind {
            let s = slot as usize;
            if slots.len() <= s {
                slots.resize(s + 1, 0);
            }
            slots[s] = slots[s].max(b.byte_len());
        }
    }
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
