//! `tessera-interp`: the `interp` device, which runs kernel IR with the reference interpreter
//! (`tessera_kir::interp`). Its code blob is the kernel's text form, so an artifact for `interp`
//! is readable with any text viewer. The compiler side of the target is in the driver: the blob
//! is `tessera_kir::print_kernel`'s output, and there is nothing to compile.

use tessera_kir::{InterpError, Kernel};
use tessera_runtime::{Device, DeviceError, KernelArg, LoadedKernel};

pub struct InterpDevice;

struct InterpKernel {
    kernel: Kernel,
}

impl Device for InterpDevice {
    fn target(&self) -> &str {
        "interp"
    }

    fn load(&self, name: &str, blob: &[u8]) -> Result<Box<dyn LoadedKernel>, DeviceError> {
        let err = |message: String| DeviceError::new(name, message);
        let text = std::str::from_utf8(blob)
            .map_err(|_| err("code blob is not UTF-8 kernel IR text".into()))?;
        let kernel = tessera_kir::text::parse_kernel(text).map_err(|e| err(e.to_string()))?;
        tessera_kir::verify::verify(&kernel).map_err(|e| err(e.to_string()))?;
        Ok(Box::new(InterpKernel { kernel }))
    }
}

impl LoadedKernel for InterpKernel {
    fn launch(&self, args: &[KernelArg]) -> Result<(), DeviceError> {
        // The plan may pass one buffer twice (Add(x, x)); Rust forbids two `&mut` to the same
        // bytes, so later duplicates are read from a private copy. A duplicate is never a
        // written parameter: lowering writes only to fresh buffers.
        let mut copies: Vec<Option<Vec<u8>>> = vec![None; args.len()];
        for i in 0..args.len() {
            if args[..i].iter().any(|a| a.ptr() == args[i].ptr()) && !args[i].is_empty() {
                // SAFETY: the runtime guarantees `ptr` is valid for `len` bytes.
                copies[i] = Some(
                    unsafe { std::slice::from_raw_parts(args[i].ptr(), args[i].len()) }.to_vec(),
                );
            }
        }
        let mut slices: Vec<&mut [u8]> = Vec::with_capacity(args.len());
        for (a, c) in args.iter().zip(copies.iter_mut()) {
            match c {
                Some(v) => slices.push(v.as_mut_slice()),
                None if a.is_empty() => slices.push(&mut []),
                // SAFETY: distinct pointers to non-overlapping buffers, valid for the launch.
                None => slices.push(unsafe { std::slice::from_raw_parts_mut(a.ptr(), a.len()) }),
            }
        }
        tessera_kir::interp::run_kernel(&self.kernel, &mut slices).map_err(|e| match e {
            InterpError::Data { code, value, .. } => {
                DeviceError::trapped(self.kernel.name.clone(), code, value)
            }
            e => DeviceError::new(self.kernel.name.clone(), e.to_string()),
        })
    }
}
