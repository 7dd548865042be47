//! [`HostDevice`]: the runtime side of the host target. It validates a code blob, maps its
//! machine code executable, and launches it over the grid, spreading grid points over
//! threads when there is enough work. Start at [`HostDevice::load`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError};
use std::thread::JoinHandle;

use tessera_runtime::{Device, DeviceError, KernelArg, LoadedKernel};

use crate::blob::BlobHeader;
use crate::{cpu, NAME};

/// Below this much estimated work (operations, see `codegen::estimate_work`) per thread a
/// launch stays on the calling thread: waking a pool worker and waiting for it costs about
/// as much.
const WORK_PER_THREAD: u64 = 1 << 16;

/// Runs host code blobs on this CPU.
///
/// Launches big enough to spread over threads run on a pool of parked worker threads that
/// the device starts on first need (`max_threads - 1` of them; the launching thread works
/// too). Clones of a device, and the kernels it loaded, share the pool; it stops when the
/// last of them is dropped.
#[derive(Clone)]
pub struct HostDevice {
    /// The target whose artifacts this device runs: `host`, or an `llvm-*` CPU target, whose
    /// blobs have the same format and contract (one CPU runtime for every CPU code generator).
    target: &'static str,
    max_threads: usize,
    pool: Arc<OnceLock<Pool>>,
}

impl std::fmt::Debug for HostDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDevice")
            .field("target", &self.target)
            .field("max_threads", &self.max_threads)
            .field("pool_started", &self.pool.get().is_some())
            .finish()
    }
}

impl Default for HostDevice {
    fn default() -> Self {
        HostDevice::new()
    }
}

impl HostDevice {
    /// Uses as many threads as the machine offers.
    pub fn new() -> HostDevice {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        HostDevice::with_threads(n)
    }

    /// Uses at most `n` threads per launch (at least 1), for callers that run several
    /// launches at once or want a serial device.
    pub fn with_threads(n: usize) -> HostDevice {
        HostDevice {
            target: NAME,
            max_threads: n.max(1),
            pool: Arc::new(OnceLock::new()),
        }
    }

    /// The same device for another CPU target's artifacts (the `llvm-*` targets emit host
    /// blobs); `target` is the name the artifacts carry.
    pub fn for_target(self, target: &'static str) -> HostDevice {
        HostDevice { target, ..self }
    }
}

impl Device for HostDevice {
    fn target(&self) -> &str {
        self.target
    }

    fn check_fingerprint(&self, fingerprint: &str) -> Result<(), String> {
        cpu::check(fingerprint)
    }

    fn load(&self, name: &str, blob: &[u8]) -> Result<Box<dyn LoadedKernel>, DeviceError> {
        let err = |message: String| DeviceError::new(name, message);
        let (header, code) = BlobHeader::decode(blob).map_err(err)?;
        let code = ExecCode::new(code).map_err(err)?;
        Ok(Box::new(HostKernel {
            name: name.to_string(),
            header,
            code,
            max_threads: self.max_threads,
            pool: self.pool.clone(),
        }))
    }
}

/// The entry point every blob's code starts with (see [`crate::blob`]).
type Entry = unsafe extern "C" fn(
    args: *const *mut u8,
    scratch: *mut u8,
    begin: u64,
    end: u64,
    trap: *mut i64,
);

/// Where a call of the entry point records a trap: `[fired, code, value]`, written only by
/// the code of the calling thread (see [`crate::blob`]).
#[derive(Default)]
struct TrapSlot([i64; 3]);

impl TrapSlot {
    fn ptr(&mut self) -> *mut i64 {
        self.0.as_mut_ptr()
    }

    /// The trap recorded, if one fired.
    fn fired(&self) -> Option<(u32, i64)> {
        (self.0[0] != 0).then_some((self.0[1] as u32, self.0[2]))
    }
}

struct HostKernel {
    name: String,
    header: BlobHeader,
    code: ExecCode,
    max_threads: usize,
    pool: Arc<OnceLock<Pool>>,
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
        let err = |message: String| DeviceError::new(self.name.clone(), message);
        let need = &self.header.param_bytes;
        if args.len() != need.len() {
            return Err(err(format!(
                "takes {} buffers, but {} were passed",
                need.len(),
                args.len()
            )));
        }
        for (i, (a, &n)) in args.iter().zip(need).enumerate() {
            if (a.len() as u64) < n {
                return Err(err(format!(
                    "buffer {i} has {} bytes, but the kernel uses {n}",
                    a.len()
                )));
            }
        }
        let total = self.header.instances();
        if total == 0 {
            return Ok(());
        }
        let ptrs: Vec<*mut u8> = args.iter().map(|a| a.ptr()).collect();
        let args = ArgPtrs(ptrs.as_ptr());
        // SAFETY: `ExecCode` holds code a CPU code generator (Cranelift, or LLVM through
        // `tessera-llvm`) generated with this signature, mapped executable for as long as
        // `self` lives.
        let entry: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(self.code.ptr) };
        let threads = self.threads_for(total);
        let trapped =
            |(code, value): (u32, i64)| DeviceError::trapped(self.name.clone(), code, value);
        if threads == 1 {
            let mut scratch = Scratch::new(self.header.scratch_bytes);
            let mut slot = TrapSlot::default();
            // SAFETY: the argument count and sizes were checked above, `KernelArg` guarantees
            // the buffers, and the scratch area has the size the code was compiled for.
            unsafe { entry(args.get(), scratch.ptr(), 0, total, slot.ptr()) };
            return slot.fired().map_or(Ok(()), |t| Err(trapped(t)));
        }
        // Threads take chunks of consecutive grid points from a shared counter, so uneven
        // instances still balance; eight chunks per thread keeps the counter cold.
        //
        // A trap stops its chunk; no thread takes a new chunk after that. Chunks are taken in
        // increasing order, so every chunk before the trapping one has been taken and runs to
        // its end (or its own first trap): the trap with the lowest chunk start is the first
        // in grid order, the one the interpreter reports.
        let chunk = (total / (threads as u64 * 8)).max(1);
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let first: Mutex<Option<(u64, u32, i64)>> = Mutex::new(None);
        let work = &|| {
            let mut scratch = Scratch::new(self.header.scratch_bytes);
            while !stop.load(Ordering::Relaxed) {
                let begin = next.fetch_add(chunk, Ordering::Relaxed);
                if begin >= total {
                    break;
                }
                let end = begin.saturating_add(chunk).min(total);
                let mut slot = TrapSlot::default();
                // SAFETY: as above; program instances write disjoint elements, so running
                // disjoint ranges of them on several threads is sound. Each call has its own
                // trap slot.
                unsafe { entry(args.get(), scratch.ptr(), begin, end, slot.ptr()) };
                if let Some((code, value)) = slot.fired() {
                    stop.store(true, Ordering::Relaxed);
                    let mut f = first.lock().unwrap_or_else(|e| e.into_inner());
                    if f.is_none_or(|(b, _, _)| begin < b) {
                        *f = Some((begin, code, value));
                    }
                }
            }
        };
        let pool = self.pool.get_or_init(|| Pool::new(self.max_threads - 1));
        pool.run(threads - 1, work).map_err(err)?;
        match first.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some((_, code, value)) => Err(trapped((code, value))),
            None => Ok(()),
        }
    }
}

/// A launch's work as the pool's workers see it: the lifetime is erased, and [`Pool::run`]
/// makes sure no worker calls it after `run` returns.
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn() + Sync + 'static));

// The closure behind the pointer is `Sync`, so calling it from other threads is sound for
// as long as it lives, which `Pool::run` guarantees.
unsafe impl Send for JobRef {}

/// What the workers and the launching thread share, under `Shared::state`.
struct State {
    /// The launch in progress, if any.
    job: Option<JobRef>,
    /// How many more workers may join the launch in progress.
    to_start: usize,
    /// How many workers are running the launch's work now.
    active: usize,
    /// Whether a worker's run of the launch in progress panicked.
    panicked: bool,
    /// Set when the pool is dropped: workers exit.
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when there is a job to join, or on shutdown.
    work: Condvar,
    /// Signalled when `active` drops to zero.
    done: Condvar,
    /// Counts the jobs posted, so an idle worker can spin on it before it sleeps.
    posted: AtomicU64,
    /// `State::active`, readable without the lock, so the launching thread can spin on it
    /// before it sleeps.
    running: AtomicUsize,
}

/// How long an idle worker, or a launch waiting for its workers, spins before it sleeps on
/// its condition variable. A model's launches follow each other within microseconds, and
/// waking a sleeping thread takes tens of them (more in a VM); a bounded spin keeps that off
/// every launch, and costs a core for at most this long after the last one.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// Spins until `done()` or [`SPIN`] has passed (the caller looks again under the lock).
fn spin_until(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < SPIN {
        for _ in 0..64 {
            if done() {
                return;
            }
            std::hint::spin_loop();
        }
    }
}

impl Shared {
    /// Locks the state. Nothing panics while holding the lock (work runs unlocked, under
    /// `catch_unwind`), but a poisoned lock is recovered rather than spread regardless.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parked worker threads that launches hand work to, one launch at a time.
struct Pool {
    shared: Arc<Shared>,
    /// Held for the whole of a launch that uses the pool; a launch that finds it taken runs
    /// on its own thread instead of waiting.
    busy: Mutex<()>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts up to `n` workers (fewer if the system refuses threads).
    fn new(n: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                to_start: 0,
                active: 0,
                panicked: false,
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            posted: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        });
        let workers = (0..n)
            .map_while(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("tessera-host-{i}"))
                    .spawn(move || worker(&shared))
                    .ok()
            })
            .collect();
        Pool {
            shared,
            busy: Mutex::new(()),
            workers,
        }
    }

    /// Runs `work` on the calling thread and on up to `helpers` workers at once, returning
    /// once every run of it has finished. `work` must be safe to run any number of times
    /// concurrently, splitting the launch between the runs itself.
    fn run(&self, helpers: usize, work: &(dyn Fn() + Sync)) -> Result<(), String> {
        let helpers = helpers.min(self.workers.len());
        let guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if helpers == 0 || guard.is_none() {
            // Serial: another launch has the pool (its threads are busy anyway).
            return catch_unwind(AssertUnwindSafe(work)).map_err(|p| panic_message(&*p));
        }
        // SAFETY: only the lifetime is erased. Workers call the job only after joining it
        // (under the lock, while `job` is set), and this function clears `job` and then waits
        // for every joined worker to finish before returning, so `work` outlives every call.
        let job = JobRef(unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(
                work,
            )
        });
        {
            let mut st = self.shared.lock();
            st.job = Some(job);
            st.to_start = helpers;
            st.panicked = false;
        }
        self.shared.posted.fetch_add(1, Ordering::Release);
        for _ in 0..helpers {
            self.shared.work.notify_one();
        }
        let mine = catch_unwind(AssertUnwindSafe(work));
        let mut st = self.shared.lock();
        // Workers that have not joined yet are no longer wanted: the work is shared out
        // dynamically, so whoever ran has done it all (or is finishing it).
        st.job = None;
        st.to_start = 0;
        if st.active > 0 {
            drop(st);
            spin_until(|| self.shared.running.load(Ordering::Acquire) == 0);
            st = self.shared.lock();
        }
        while st.active > 0 {
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let worker_panicked = std::mem::take(&mut st.panicked);
        drop(st);
        drop(guard);
        match mine {
            Err(p) => Err(panic_message(&*p)),
            Ok(()) if worker_panicked => {
                Err("a worker thread panicked while running the kernel".to_string())
            }
            Ok(()) => Ok(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A worker's life: wait for a launch to join, run its work, report back; exit on shutdown.
fn worker(shared: &Shared) {
    let mut st = shared.lock();
    let mut seen = shared.posted.load(Ordering::Acquire);
    let mut spun = false;
    loop {
        if st.shutdown {
            return;
        }
        if st.to_start > 0 {
            if let Some(job) = st.job {
                st.to_start -= 1;
                st.active += 1;
                shared.running.fetch_add(1, Ordering::AcqRel);
                drop(st);
                // SAFETY: the launch waits for `active` to drop to zero before its work goes
                // away, and this worker counted itself in `active` while the job was set.
                let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() }));
                st = shared.lock();
                if result.is_err() {
                    st.panicked = true;
                }
                st.active -= 1;
                shared.running.fetch_sub(1, Ordering::AcqRel);
                if st.active == 0 {
                    shared.done.notify_all();
                }
                spun = false;
                continue;
            }
        }
        if !spun {
            // Idle: spin a while for the next launch, then look again under the lock; only a
            // worker that has spun since its last job sleeps. The lock is taken again before
            // the wait, so a job posted meanwhile is seen and no wakeup is lost.
            drop(st);
            spin_until(|| shared.posted.load(Ordering::Acquire) != seen);
            seen = shared.posted.load(Ordering::Acquire);
            spun = true;
            st = shared.lock();
            continue;
        }
        st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
        spun = false;
    }
}

/// The text of a caught panic, for a [`DeviceError`].
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    format!("the kernel's launch panicked: {text}")
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
                return Err(format!(
                    "cannot map {len} bytes for code: {}",
                    std::io::Error::last_os_error()
                ));
            }
            std::ptr::copy_nonoverlapping(code.as_ptr(), p.cast::<u8>(), len);
            if libc::mprotect(p, len, libc::PROT_READ | libc::PROT_EXEC) != 0 {
                let e = std::io::Error::last_os_error();
                libc::munmap(p, len);
                return Err(format!("cannot make code executable: {e}"));
            }
            Ok(ExecCode {
                ptr: p.cast::<u8>().cast_const(),
                len,
            })
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
