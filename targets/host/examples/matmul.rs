//! Times f32 matmul kernels on the host target against the interpreter: the straightforward
//! one (i, j, k loops, scalar loads, a carried accumulator), a 4-lane variant, and register
//! tiles of the shape lowering would emit.
//! `cargo run --release -p tessera-host --example matmul -- 512 [out.bin]`: the optional
//! second argument is a path prefix for the kernels' machine code (`PREFIX.matmul1`, …),
//! for `objdump -D -b binary -mi386:x86-64`.

use std::time::Instant;

use tessera_host::{Host, HostDevice};
use tessera_ir::DType;
use tessera_kir::{Access, Kernel, KernelBuilder, Ty};
use tessera_runtime::{Device, KernelArg};
use tessera_target::Target;

/// C[i, j] = sum_k A[i, k] * B[k, j]; one program instance per row, `lanes` columns at a time.
fn matmul(n: u64, lanes: u16) -> Kernel {
    let mut b = KernelBuilder::new(format!("matmul{lanes}"));
    let a = b.param("a", DType::F32, n * n, Access::Read);
    let bm = b.param("b", DType::F32, n * n, Access::Read);
    let c = b.param("c", DType::F32, n * n, Access::Write);
    b.set_grid(&[n]);
    let i = b.program_id(0);
    let nn = b.index(n as i64);
    let row = b.mul(i, nn);
    let (lo, hi, step) = (b.index(0), b.index(n as i64), b.index(lanes as i64));
    b.for_loop(lo, hi, step, &[], |b, j, _| {
        let zero = b.const_float(Ty::vector(DType::F32, lanes), 0.0);
        let acc = b.range_fold(0, n as i64, &[zero], |b, k, acc| {
            let ai = b.add(row, k);
            let x = b.load(a, ai, 1);
            let x = if lanes > 1 { b.splat(x, lanes) } else { x };
            let kn = b.mul(k, nn);
            let bi = b.add(kn, j);
            let y = b.load(bm, bi, lanes);
            let p = b.mul(x, y);
            vec![b.add(acc[0], p)]
        });
        let ci = b.add(row, j);
        b.store(c, ci, acc[0]);
        Vec::new()
    });
    b.finish()
}

/// The same product tiled as lowering would write it: each program instance keeps a
/// `tm x tn` block of C in `tm` vector accumulators and walks k once, reading a row segment of
/// B and `tm` elements of A per step. Every C element still sums in increasing k order, so
/// the result is bit-identical to [`matmul`].
fn tiled(n: u64, tm: u64, tn: u16) -> Kernel {
    let mut b = KernelBuilder::new(format!("matmul{tm}x{tn}"));
    let a = b.param("a", DType::F32, n * n, Access::Read);
    let bm = b.param("b", DType::F32, n * n, Access::Read);
    let c = b.param("c", DType::F32, n * n, Access::Write);
    b.set_grid(&[n / tm, n / tn as u64]);
    let (pi, pj) = (b.program_id(0), b.program_id(1));
    let (tmv, tnv, nn) = (b.index(tm as i64), b.index(tn as i64), b.index(n as i64));
    let i0 = b.mul(pi, tmv);
    let j0 = b.mul(pj, tnv);
    let zero = b.const_float(Ty::vector(DType::F32, tn), 0.0);
    let init = vec![zero; tm as usize];
    let acc = b.range_fold(0, n as i64, &init, |b, k, acc| {
        let kn = b.mul(k, nn);
        let bi = b.add(kn, j0);
        let y = b.load(bm, bi, tn);
        let mut next = Vec::new();
        for (r, &acc_r) in acc.iter().enumerate() {
            let rv = b.index(r as i64);
            let row = b.add(i0, rv);
            let ai = b.mul(row, nn);
            let ai = b.add(ai, k);
            let x = b.load(a, ai, 1);
            let x = b.splat(x, tn);
            let p = b.mul(x, y);
            next.push(b.add(acc_r, p));
        }
        next
    });
    for (r, &acc_r) in acc.iter().enumerate() {
        let rv = b.index(r as i64);
        let row = b.add(i0, rv);
        let ci = b.mul(row, nn);
        let ci = b.add(ci, j0);
        b.store(c, ci, acc_r);
    }
    b.finish()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(256);
    let dump = args.next();
    let host = Host::native().expect("host target");
    let device = HostDevice::new();
    let bytes = (n * n * 4) as usize;
    let av: Vec<u8> = (0..n * n)
        .flat_map(|i| ((i % 7) as f32 * 0.5).to_le_bytes())
        .collect();
    let bv: Vec<u8> = (0..n * n)
        .flat_map(|i| ((i % 5) as f32 - 2.0).to_le_bytes())
        .collect();
    let mut reference = None;
    let kernels = [
        matmul(n, 1),
        matmul(n, 4),
        tiled(n, 4, 8),
        tiled(n, 4, 16),
        tiled(n, 2, 16),
    ];
    for k in kernels {
        let lanes = &k.name;
        let t = Instant::now();
        let blob = host.compile(&k).expect("compiles");
        let compile = t.elapsed();
        if let Some(path) = &dump {
            // The code follows the 64-byte header and the three parameter lengths.
            let code = &blob.code[64 + 8 * 3..];
            std::fs::write(format!("{path}.{lanes}"), code).expect("writes the dump");
        }
        let loaded = device.load(&blob.name, &blob.code).expect("loads");
        let (mut a, mut b, mut c) = (av.clone(), bv.clone(), vec![0u8; bytes]);
        // SAFETY: the vectors outlive the launch and do not overlap.
        let kargs = unsafe {
            [
                KernelArg::new(a.as_mut_ptr(), bytes),
                KernelArg::new(b.as_mut_ptr(), bytes),
                KernelArg::new(c.as_mut_ptr(), bytes),
            ]
        };
        let t = Instant::now();
        loaded.launch(&kargs).expect("runs");
        let run = t.elapsed();
        let single = HostDevice::with_threads(1)
            .load(&blob.name, &blob.code)
            .expect("loads");
        let t = Instant::now();
        single.launch(&kargs).expect("runs");
        let run1 = t.elapsed();
        let gflops = 2.0 * (n * n * n) as f64 / run1.as_secs_f64() / 1e9;
        println!(
            "host  {lanes}: compile {compile:?}, run {run:?} ({} threads), 1 thread {run1:?} = {gflops:.2} GFLOP/s",
            std::thread::available_parallelism().map(|x| x.get()).unwrap_or(1)
        );
        match &reference {
            None => reference = Some(c),
            Some(r) => assert!(r == &c, "{lanes} disagrees with the scalar kernel"),
        }
    }
    if n <= 256 {
        let k = matmul(n, 1);
        let (mut a, mut b, mut c) = (av.clone(), bv.clone(), vec![0u8; bytes]);
        let t = Instant::now();
        tessera_kir::run_kernel(&k, &mut [&mut a, &mut b, &mut c]).expect("interprets");
        let run = t.elapsed();
        println!("interp matmul1: run {run:?}");
        assert!(
            reference.as_ref() == Some(&c),
            "host and interpreter disagree"
        );
    }
}
