//! [`NpuSimDevice`]: the runtime side of the npu-sim targets. It decodes a code blob
//! ([`crate::blob`]), and each launch copies the parameters into a fresh simulated core's GM at
//! the addresses the blob fixes, runs the program (functional mode by default, cycle mode when
//! asked) and copies the written parameters back. A simulator error raised by a compiled
//! kernel is returned as a device error naming the kernel: it is a compiler bug.

use std::sync::{Arc, Mutex};

use tessera_runtime::{Device, DeviceError, KernelArg, LoadedKernel};

use crate::blob::Blob;
use crate::config::TargetConfig;
use crate::isa::Mem;
use crate::mem::{REAL, WRITTEN};
use crate::report::CycleReport;
use crate::sim::{Machine, Mode};

/// The cycle report of one launch.
#[derive(Clone, Debug)]
pub struct LaunchReport {
    pub kernel: String,
    pub report: CycleReport,
}

/// Runs npu-sim blobs on the simulator, one core per launch.
#[derive(Clone)]
pub struct NpuSimDevice {
    target: String,
    cfg: Arc<TargetConfig>,
    mode: Mode,
    max_steps: u64,
    reports: Arc<Mutex<Vec<LaunchReport>>>,
}

impl NpuSimDevice {
    /// A functional-mode device for the chip `cfg` describes.
    pub fn new(cfg: TargetConfig) -> NpuSimDevice {
        NpuSimDevice {
            target: cfg.name.clone(),
            cfg: Arc::new(cfg),
            mode: Mode::Functional,
            max_steps: crate::sim::DEFAULT_MAX_STEPS,
            reports: Default::default(),
        }
    }

    /// The same device in `mode`; in cycle mode every launch records its report.
    pub fn with_mode(mut self, mode: Mode) -> NpuSimDevice {
        self.mode = mode;
        self
    }

    /// The same device with a step limit of `max_steps` instructions per launch (default
    /// [`crate::sim::DEFAULT_MAX_STEPS`]); a launch that issues more stops with
    /// `SimError::StepLimit`. The driver sets it from `TESSERA_NPU_SIM_MAX_STEPS`.
    pub fn with_max_steps(mut self, max_steps: u64) -> NpuSimDevice {
        self.max_steps = max_steps;
        self
    }

    /// The reports recorded so far, oldest first, and clears them.
    pub fn take_reports(&self) -> Vec<LaunchReport> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl std::fmt::Debug for NpuSimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpuSimDevice")
            .field("target", &self.target)
            .field("mode", &self.mode)
            .finish()
    }
}

struct NpuKernel {
    name: String,
    blob: Blob,
    device: NpuSimDevice,
}

impl Device for NpuSimDevice {
    fn target(&self) -> &str {
        &self.target
    }

    fn load(&self, name: &str, blob: &[u8]) -> Result<Box<dyn LoadedKernel>, DeviceError> {
        let blob = Blob::decode(blob).map_err(|e| DeviceError::new(name, e.to_string()))?;
        let gm = self.cfg.mem(Mem::Gm).size;
        if blob.gm_bytes > gm {
            return Err(DeviceError::new(
                name,
                format!(
                    "needs {} bytes of GM, target `{}` has {gm}",
                    blob.gm_bytes, self.target
                ),
            ));
        }
        Ok(Box::new(NpuKernel {
            name: name.to_string(),
            blob,
            device: self.clone(),
        }))
    }
}

impl LoadedKernel for NpuKernel {
    fn launch(&self, args: &[KernelArg]) -> Result<(), DeviceError> {
        let err = |message: String| DeviceError::new(self.name.clone(), message);
        let params = &self.blob.params;
        if args.len() != params.len() {
            return Err(err(format!(
                "takes {} buffers, but {} were passed",
                params.len(),
                args.len()
            )));
        }
        for (i, (a, p)) in args.iter().zip(params).enumerate() {
            if (a.len() as u64) < p.bytes {
                return Err(err(format!(
                    "buffer {i} has {} bytes, but the kernel uses {}",
                    a.len(),
                    p.bytes
                )));
            }
        }
        let dev = &self.device;
        let mut m =
            Machine::new(&dev.cfg, self.blob.gm_bytes, dev.mode).map_err(|e| err(e.to_string()))?;
        m.max_steps = dev.max_steps;
        for (a, p) in args.iter().zip(params) {
            let (s, e) = (p.addr as usize, (p.addr + p.bytes) as usize);
            // SAFETY: `KernelArg` guarantees `len` readable bytes, and `p.bytes <= len` was checked.
            let src = unsafe { std::slice::from_raw_parts(a.ptr(), p.bytes as usize) };
            let gm = &mut m.mems[Mem::Gm as usize];
            gm.data[s..e].copy_from_slice(src);
            gm.tag[s..e].fill(WRITTEN | REAL);
        }
        let report = m.run(&self.blob.program).map_err(|e| {
            err(format!(
                "simulator error (a compiler bug in the npu-sim code generator): {e}"
            ))
        })?;
        // A kernel-IR `trap` that fired halted the program with its code and value in the trap
        // registers (`crate::blob::TRAP_REGS`); the outputs are not handed back.
        let [value_reg, code_reg, fired_reg] = crate::blob::TRAP_REGS;
        if m.regs[fired_reg as usize] != 0 {
            return Err(DeviceError::trapped(
                self.name.clone(),
                m.regs[code_reg as usize] as u32,
                m.regs[value_reg as usize] as i64,
            ));
        }
        for (a, p) in args.iter().zip(params) {
            if p.written {
                let gm = &m.mems[Mem::Gm as usize];
                // SAFETY: as above; a written buffer overlaps no other argument.
                let dst = unsafe { std::slice::from_raw_parts_mut(a.ptr(), p.bytes as usize) };
                dst.copy_from_slice(&gm.data[p.addr as usize..(p.addr + p.bytes) as usize]);
            }
        }
        if dev.mode != Mode::Functional {
            let r = LaunchReport {
                kernel: self.name.clone(),
                report,
            };
            dev.reports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(r);
        }
        Ok(())
    }
}
