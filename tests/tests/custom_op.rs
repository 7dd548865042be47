//! The hand-written custom-op example (`examples/custom-op`: a FusedRMSNorm in kernel-IR
//! tiles) compiles and runs on every built target that can run it, and matches a Rust
//! reference; bad custom-op files and a model without its custom op are refused with
//! messages that name the file, the line or the op.

use std::path::PathBuf;
use tessera_driver::{compile_file, load, targets, CompileOptions, DriverError};
use tessera_ir::Tensor;

fn example() -> PathBuf {
    tessera_tests::root().join("examples/custom-op")
}

fn opts(target: &str, custom: Vec<PathBuf>) -> CompileOptions {
    let mut o = CompileOptions::for_target(target);
    o.custom_ops = custom;
    o
}

/// Relu(FusedRMSNorm(x, scale) * 2), computed in f64.
fn reference(x: &[f32], scale: &[f32], d: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (row, out) in x.chunks(d).zip(y.chunks_mut(d)) {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / d as f64;
        let r = (ms + 1e-6).sqrt();
        for j in 0..d {
            out[j] = ((row[j] as f64 / r * scale[j] as f64 * 2.0).max(0.0)) as f32;
        }
    }
    y
}

fn scale_of_model() -> Vec<f32> {
    // The model's initializer, read back through the importer.
    let g = tessera_onnx::import_file(
        &example().join("model.onnx"),
        &tessera_onnx::ImportOptions {
            custom_ops: tessera_driver::load_custom_ops(&[example()]).unwrap(),
            ..Default::default()
        },
    )
    .unwrap();
    let v = g
        .values
        .iter()
        .find(|v| v.name == "scale")
        .expect("the scale initializer");
    let t = v.konst.as_ref().expect("a constant");
    (0..t.num_elements())
        .map(|i| t.get_f64(i).unwrap() as f32)
        .collect()
}

#[test]
fn custom_rmsnorm_runs_on_every_target() {
    let (n, d) = (6usize, 80usize);
    let x: Vec<f32> = (0..n * d)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
        .collect();
    let want = reference(&x, &scale_of_model(), d);
    let mut ran = Vec::new();
    for t in targets::all().into_iter().filter(|t| t.available) {
        let art = compile_file(
            &example().join("model.onnx"),
            &opts(t.name, vec![example().join("rmsnorm.tk")]),
        );
        let art = match art {
            Ok(a) => a,
            // A target may refuse the kernel (a dtype or construct it lacks), but only as
            // unsupported, never with a wrong answer.
            Err(e) if e.exit_code() == tessera_driver::exit::UNSUPPORTED => continue,
            Err(e) => panic!("{}: {e}", t.name),
        };
        let m = load(art, t.name).unwrap();
        let got = m
            .run(&[Tensor::from_f32(vec![n as u64, d as u64], &x)])
            .unwrap();
        for (i, w) in want.iter().enumerate() {
            let g = got[0].get_f64(i as u64).unwrap() as f32;
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{}: y[{i}] = {g}, want {w}",
                t.name
            );
        }
        ran.push(t.name);
    }
    assert!(
        ran.contains(&"host") && ran.contains(&"interp"),
        "ran on {ran:?}"
    );
}

#[test]
fn a_model_without_its_custom_op_is_unsupported() {
    let e = compile_file(&example().join("model.onnx"), &opts("host", vec![])).unwrap_err();
    assert_eq!(e.exit_code(), tessera_driver::exit::UNSUPPORTED);
    assert!(
        e.to_string()
            .contains("unsupported op `FusedRMSNorm` (domain \"com.tessera.examples\", opset 1)"),
        "{e}"
    );
}

#[test]
fn bad_custom_op_files_name_the_problem() {
    let dir = std::env::temp_dir().join(format!("tessera-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(example().join("rmsnorm.tk")).unwrap();
    let cases = [
        (
            "bad-dtype.tk",
            good.replace("scale: f32[D]", "scale: q7[D]"),
            "unknown dtype `q7` for `scale`",
        ),
        (
            "no-kernel.tk",
            "custom \"com.tessera.examples\" FusedRMSNorm (x: f32[N, D]) -> (y: f32[N, D])\n"
                .to_string(),
            "no kernel follows the signature",
        ),
        (
            "bad-kernel.tk",
            good.replace("tile.reduce add rows", "tile.reduce sideways rows"),
            "unknown reduction `sideways`",
        ),
        (
            "wrong-param.tk",
            good.replace(
                "%scale: global f32[{D}] read",
                "%scale: global f32[{D+1}] read",
            ),
            "parameter `scale` is global f32[81] read, but `scale` needs f32[80]",
        ),
    ];
    for (file, text, want) in cases {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        let e = compile_file(
            &example().join("model.onnx"),
            &opts("host", vec![p.clone()]),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(want), "{file}: {msg}");
        assert_ne!(e.exit_code(), tessera_driver::exit::OK);
        if let DriverError::Usage(m) = &e {
            assert!(m.contains(file), "{file}: the message names the file: {m}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
