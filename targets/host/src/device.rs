//! [`HostDevice`]: the runtime side of the host target. It validates a code blob, maps its
//! machine code executable, and launches it over the grid, spreading grid points over
//! threads when there is enough work. Start at [`HostDevice::load`].

use std::sync::atomic::{AtomicU64, Ordering};

use tessera_runtime::{Device, DeviceError, KernelArg, LoadedKernel};

use crate::blob::BlobHeader;
use crate::{cpu, NAME};

/// Below this much estimated work (operations, see `codegen::estimate_work`) per thread a
/// launch stays on the calling thread: starting a thread costs about as much.
const WORK_PER_THREAD: u64 = 1 << 16;

/// Runs host code blobs on this CPU.
#[derive(Clone, Debug)]
pub struct HostDevice {
    max_threads: usize,
}

impl Default for HostDevice {
    fn default() -> Self {
        HostDevice::new()
    }
}

impl HostDevice {
    /// Uses as many threads as the machine offers.
    pub fn new() -> HostDevice {
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        HostDevice { max_threads: n }
    }

    /// Uses at most `n` threads per launch (at least 1), for callers that run several
    /// launches at once or want a serial device.
    pub fn with_threads(n: usize) -> HostDevice {
        HostDevice { max_threads: n.max(1) }
    }
}

impl Device for HostDevice {
    fn target(&self) -> &str {
        NAME
    }

    fn check_fingerprint(&self, fingerprint: &str) -> Result<(), String> {
        cpu::check(fingerprint)
    }

    fn load(&self, name: &str, blob: &[u8]) -> Result<Box<dyn LoadedKernel>, DeviceError> {
        let err = |message: String| DeviceError { kernel: name.to_string(), message };
        let (header, code) = BlobHeader::decode(blob).map_err(err)?;
        let code = ExecCode::new(code).map_err(err)?;
        Ok(Box::new(HostKernel { name: name.to_string(), header, code, max_threads: self.max_threads }))
    }
}

/// The entry point every blob's code starts with (see [`crate::blob`]).
type Entry = unsafe extern "C" fn(args: *const *mut u8, scratch: *mut u8, begin: u64, end: u64);

struct HostKernel {
    name: String,
    header: BlobHeader,
    code: ExecCode,
    max_threads: usize,
}

/// The argument pointer array, shared read-only by the launch's threads.
struct ArgPtrs(*const *mut u8);

// The pointers are only read, and `KernelArg`'s contract makes the buffers behind them
// valid for the launch, with writes of different program instances disjoint.
unsafe impl Sync for ArgPtrs {}

impl ArgPtrs {
    /// A method, so that closures capture the whole (Sync) wrapper rather than the field.
    fn get(&self) -> *const *mut u8 {
        self.0
    }
}

/// One thread's scratch area: 16-byte aligned, as the code's vector stores expect.
struct Scratch(Vec<u128>);

impl Scratch {
    fn new(bytes: u64) -> Scratch {
        Scratch(vec![0u128; bytes.div_ceil(16) as usize])
    }

    fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }
}

impl HostKernel {
    fn threads_for(&self, instances: u64) -> usize {
        if instances < 2 || self.max_threads < 2 {
            return 1;
        }
        let work = instances.saturating_mul(self.header.work);
        let by_work = (work / WORK_PER_THREAD).min(usize::MAX as u64) as usize;
        let by_instances = instances.min(usize::MAX as u64) as usize;
        self.max_threads.min(by_work).min(by_instances).max(1)
    }
}

impl LoadedKernel for HostKernel {
    fn launch(&self, args: &[KernelArg]) -> Result<(), DeviceError> {
        let err = |message: String| DeviceError { kernel: self.name.clone(), message };
        let need = &self.header.param_bytes;
        if args.len() != need.len() {
            return Err(err(format!("takes {} buffers, but {} were passed", need.len(), args.len())));
        }
        for (i, (a, &n)) in args.iter().zip(need).enumerate() {
            if (a.len() as u64) < n {
                return Err(err(format!("buffer {i} has {} bytes, but the kernel uses {n}", a.len())));
            }
        }
        let total = self.header.instances();
        if total == 0 {
            return Ok(());
        }
        let ptrs: Vec<*mut u8> = args.iter().map(|a| a.ptr()).collect();
        let args = ArgPtrs(ptrs.as_ptr());
        // SAFETY: `ExecCode` holds code Cranelift generated with this signature, mapped
        // executable for as long as `self` lives.
        let entry: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(self.code.ptr) };
        let threads = self.threads_for(total);
        if threads == 1 {
            let mut scratch = Scratch::new(self.header.scratch_bytes);
            // SAFETY: the argument count and sizes were checked above, `KernelArg` guarantees
            // the buffers, and the scratch area has the size the code was compiled for.
            unsafe { entry(args.get(), scratch.ptr(), 0, total) };
            return Ok(());
        }
        // Threads take chunks of consecutive grid points from a shared counter, so uneven
        // instances still balance; eight chunks per thread keeps the counter cold.
        let chunk = (total / (threads as u64 * 8)).max(1);
        let next = AtomicU64::new(0);
        let work = &|| {
            let mut scratch = Scratch::new(self.header.scratch_bytes);
            loop {
                let begin = next.fetch_add(chunk, Ordering::Relaxed);
                if begin >= total {
                    break;
                }
                let end = begin.saturating_add(chunk).min(total);
                // SAFETY: as above; program instances write disjoint elements, so running
                // disjoint ranges of them on several threads is sound.
                unsafe { entry(args.get(), scratch.ptr(), begin, end) };
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        Ok(())
    }
}

/// Machine code in memory mapped read+execute, unmapped on drop.
struct ExecCode {
    ptr: *const u8,
    len: usize,
}

// The mapping is never written after `new`, so sharing it between threads is sound.
unsafe impl Send for ExecCode {}
unsafe impl Sync for ExecCode {}

impl ExecCode {
    #[cfg(unix)]
    fn new(code: &[u8]) -> Result<ExecCode, String> {
        let len = code.len();
        // SAFETY: a fresh private anonymous mapping is written only here, before it becomes
        // executable, and `len` is the length mapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(format!("cannot map {len} bytes for code: {}", std::io::Error::last_os_error()));
            }
            std::ptr::copy_nonoverlapping(code.as_ptr(), p.cast::<u8>(), len);
            if libc::mprotect(p, len, libc::PROT_READ | libc::PROT_EXEC) != 0 {
                let e = std::io::Error::last_os_error();
                libc::munmap(p, len);
                return Err(format!("cannot make code executable: {e}"));
            }
            Ok(ExecCode { ptr: p.cast::<u8>().cast_const(), len })
        }
    }

    #[cfg(not(unix))]
    fn new(_code: &[u8]) -> Result<ExecCode, String> {
        Err("the host device maps code only on Unix systems".to_string())
    }
}

impl Drop for ExecCode {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and no launch can run
        // once `self` (owned by the loaded kernel) is dropped.
        unsafe {
            libc::munmap(self.ptr.cast_mut().cast(), self.len);
        }
    }
}
