//! One loaded model run from 8 threads at once, 1,000 runs each: every run gives outputs
//! bit-identical to a single-threaded reference run. A `Model` is `Sync` and each run owns
//! its scratch memory, so runs share nothing but the read-only constants and code. This is a
//! plain stress test (Miri and ThreadSanitizer cannot run JIT-compiled host code); the model
//! is tiny so the test stays fast, but it has several kernels and a runtime-index Gather with
//! a data check. Every tenth run passes an out-of-range index: it must fail with the same
//! error every time, and leave the other runs' outputs untouched.

use std::sync::Arc;
use tessera_ir::Tensor;

const THREADS: usize = 8;
const RUNS: usize = 1000;

const MODEL: &str = r#"
graph @stress(%x: f32[32,32], %w: f32[32,32], %i: i64[16]) -> (%r, %g) {
  %m = MatMul(%x, %w) @"mm"
  %a = Add(%m, %x) @"add"
  %r = Relu(%a) @"relu"
  %g = Gather(%r, %i) @"gather"
}
"#;

fn inputs() -> Vec<Tensor> {
    let x: Vec<f32> = (0..32 * 32)
        .map(|k| ((k * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let w: Vec<f32> = (0..32 * 32)
        .map(|k| ((k * 13 % 97) as f32 - 48.0) / 40.0)
        .collect();
    let i: Vec<i64> = (0..16).map(|k| (k * 7 % 32) - 16).collect();
    vec![
        Tensor::from_f32(vec![32, 32], &x),
        Tensor::from_f32(vec![32, 32], &w),
        Tensor::from_i64(vec![16], &i),
    ]
}

fn stress(target: &str, runs: usize) {
    let mut g = tessera_ir::text::parse(MODEL).unwrap();
    tessera_ir::infer::infer_shapes(&mut g).unwrap();
    let artifact = tessera_driver::compile_graph(&g, "stress", target).unwrap();
    let model = Arc::new(tessera_driver::load(artifact, target).unwrap());
    let inputs = Arc::new(inputs());
    let want = model.run(&inputs).unwrap();
    let mut bad = (*inputs).clone();
    bad[2] = Tensor::from_i64(
        vec![16],
        &[3; 16]
            .iter()
            .enumerate()
            .map(|(k, &v)| if k == 5 { 40 } else { v })
            .collect::<Vec<_>>(),
    );
    let bad = Arc::new(bad);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (model, inputs, want, bad) = (model.clone(), inputs.clone(), want.clone(), bad.clone());
            std::thread::spawn(move || {
                for r in 0..runs {
                    if r % 10 == 9 {
                        let e = model.run(&bad).unwrap_err().to_string();
                        assert_eq!(e, "Gather node \"gather\": input `indices` holds 40, which is out of range for axis 0 of `data` of size 32 (valid: -32 to 31)");
                        continue;
                    }
                    let got = model.run(&inputs).unwrap();
                    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(g.dims == w.dims && g.bytes == w.bytes, "thread {t}, run {r}: output {k} differs");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a stress thread failed");
    }
}

#[test]
fn host_model_is_bit_identical_from_8_threads() {
    stress("host", RUNS);
}

#[test]
fn interp_model_is_bit_identical_from_8_threads() {
    // The interpreter is ~100x slower; a tenth of the runs keeps the test within seconds.
    stress("interp", RUNS / 10);
}
