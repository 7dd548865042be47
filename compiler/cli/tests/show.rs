//! `tessera show`: the page for an ONNX model and for a `.tsa` artifact, loaded in headless
//! Chromium (installed by scripts/setup-system.sh), whose rendered DOM must hold every graph
//! node with its op type and kernels; plus the errors for bad inputs (no page left behind) and
//! the progress bars staying quiet when output is not a terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-show-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The DOM of `page` after Chromium loaded and rendered it.
fn browser_dom(page: &Path) -> String {
    // One profile per browser: tests run in parallel, and Chromium locks its profile.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let profile = scratch(&format!(
        "chromium-profile-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("`chromium` runs (scripts/setup-system.sh installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of every `<text>` element inside the SVG group with `id`.
fn node_texts(dom: &str, id: &str) -> Vec<String> {
    let start = dom
        .find(&format!("<g id=\"{id}\" class=\"node\">"))
        .unwrap_or_else(|| panic!("no node `{id}` in the rendered page"));
    let end = start + dom[start..].find("</g>").unwrap();
    let group = &dom[start..end];
    group
        .split("<text")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').unwrap() + 1..];
            body[..body.find("</text>").unwrap()]
                .replace("&quot;", "\"")
                .replace("&gt;", ">")
                .replace("&lt;", "<")
                .replace("&amp;", "&")
        })
        .collect()
}

#[test]
fn model_page_shows_every_node_with_its_kernels_in_a_browser() {
    let dir = scratch("model");
    let page = dir.join("cnn.html");
    let o = tessera(&[
        "show",
        root().join("examples/cnn/model.onnx").to_str().unwrap(),
        "--target",
        "host",
        "-o",
        page.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = browser_dom(&page);
    assert!(
        dom.contains("<svg"),
        "the graph was laid out by dot into an SVG"
    );
    // The CNN's first node is its stem Conv and ReLU, which the optimizer fused into one
    // FusedConv (the unfold and the product); its label names op, shape and kernels.
    let first = node_texts(&dom, "n0");
    assert_eq!(first[0], "FusedConv", "{first:?}");
    assert!(first.iter().any(|t| t.starts_with("f32 [1,")), "{first:?}");
    assert!(
        first.iter().any(|t| t.starts_with("▸ ")),
        "the node lists its kernel: {first:?}"
    );
    // Every graph node, input and output is drawn.
    let artifact = tessera_driver::compile_file(
        &root().join("examples/cnn/model.onnx"),
        &tessera_driver::CompileOptions::for_target("host"),
    )
    .unwrap();
    for n in 0..artifact.plan.nodes.len() {
        let texts = node_texts(&dom, &format!("n{n}"));
        assert_eq!(texts[0], artifact.plan.nodes[n].op, "node {n}");
    }
    assert_eq!(node_texts(&dom, "in0")[0], "input");
    assert_eq!(node_texts(&dom, "out0")[0], "output");
    // The kernel table lists every kernel with its code size.
    assert_eq!(
        dom.matches("<tr><td class=\"num\">").count(),
        artifact.kernels.len()
    );
    for k in &artifact.kernels {
        assert!(
            dom.contains(&format!("<code>{}</code>", k.name)),
            "kernel {} is listed",
            k.name
        );
    }
}

#[test]
fn artifact_page_shows_the_plan_steps() {
    let dir = scratch("artifact");
    let tsa = dir.join("cnn.tsa");
    let page = dir.join("cnn.html");
    let model = root().join("examples/cnn/model.onnx");
    assert!(tessera(&[
        "compile",
        model.to_str().unwrap(),
        "--target",
        "interp",
        "-o",
        tsa.to_str().unwrap()
    ])
    .status
    .success());
    let o = tessera(&["show", tsa.to_str().unwrap(), "-o", page.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = browser_dom(&page);
    let artifact = tessera_runtime::Artifact::read(&tsa).unwrap();
    for (s, _) in artifact.plan.steps.iter().enumerate() {
        assert!(
            !node_texts(&dom, &format!("s{s}")).is_empty(),
            "step {s} is drawn"
        );
    }
    // interp blobs are kernel text, so the page knows each kernel's grid.
    let first = node_texts(&dom, "s0");
    assert_eq!(first[0], artifact.kernels[0].name);
    assert!(
        first[1].starts_with("grid ") && first[1] != "grid —",
        "{first:?}"
    );
}

#[test]
fn show_refuses_bad_inputs_and_leaves_no_page() {
    let dir = scratch("bad");
    let page = dir.join("out.html");
    let bad_model = root().join("tests/data/bad/unknown_op.onnx");
    let o = tessera(&[
        "show",
        bad_model.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("error: unsupported op `FrobnicateTensor`")
    );
    let corrupt = dir.join("corrupt.tsa");
    std::fs::write(&corrupt, b"TSA? not really").unwrap();
    let o = tessera(&[
        "show",
        corrupt.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr)
        .starts_with(&format!("error: invalid artifact: {}: ", corrupt.display())));
    let o = tessera(&[
        "show",
        root().join("examples/cnn/model.onnx").to_str().unwrap(),
        "--target",
        "tpu9000",
        "-o",
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!page.exists(), "no page is written on error");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "only corrupt.tsa is left"
    );
}

#[test]
fn compile_and_conformance_print_no_progress_when_not_a_terminal() {
    let dir = scratch("quiet");
    let tsa = dir.join("cnn.tsa");
    let o = tessera(&[
        "compile",
        root().join("examples/cnn/model.onnx").to_str().unwrap(),
        "-o",
        tsa.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("compiled "), "{stdout}");
    assert!(
        !stdout.contains('\r') && !stdout.contains("codegen"),
        "no progress bar in: {stdout}"
    );
    let data = root().join("tests/data/node-cache");
    let report = dir.join("report.json");
    let o = tessera(&[
        "conformance",
        "--filter",
        "^test_(abs|relu)$",
        "--data",
        data.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("target host: 2 tests: 2 pass"));
}
