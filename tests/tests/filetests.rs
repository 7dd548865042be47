//! File tests: `tests/filetests/<pass>/<case>.tir` hold graph-IR text plus expectations, as
//! Cranelift's and LLVM's file tests do. A file starts with `// test <pass>` (`infer`, `lower`
//! or `opt`) and, for `lower` and `opt`, `// target <name>`; an `opt` case may say
//! `// precision <policy>` and `// opt-level <n>` (default 2). Cases are separated by `// -----`.
//! Expectations are `// CHECK: text` (a later output line contains `text`, in order) and
//! `// CHECK-NOT: text` (no output line between the previous match and the next one contains
//! it). With `TESSERA_BLESS=1`, files whose expectations are all plain CHECK lines are
//! rewritten to check every output line exactly.

use std::path::{Path, PathBuf};

/// What a pass prints for one case.
fn run_pass(pass: &str, target: Option<&str>, input: &str) -> Result<String, String> {
    let mut g = tessera_ir::text::parse(input).map_err(|e| format!("parse: {e}"))?;
    match pass {
        "infer" => {
            tessera_ir::infer::infer_shapes(&mut g).map_err(|e| e.to_string())?;
            tessera_ir::verify::verify(&g).map_err(|e| e.to_string())?;
            Ok(tessera_ir::text::print(&g))
        }
        "lower" => {
            tessera_ir::infer::infer_shapes(&mut g).map_err(|e| e.to_string())?;
            let t = tessera_driver::targets::lookup(target.ok_or("`// target NAME` missing")?)
                .map_err(|e| e.to_string())?;
            let p = tessera_lower::lower(&g, t.desc()).map_err(|e| e.to_string())?;
            let mut out = String::new();
            for k in &p.kernels {
                out.push_str(&tessera_kir::text::print_kernel(k));
                out.push('\n');
            }
            for s in &p.plan.steps {
                out.push_str(&format!("step {s:?}\n"));
            }
            Ok(out)
        }
        "opt" => {
            // The optimized graph, then each rule that fired and how often.
            tessera_ir::infer::infer_shapes(&mut g).map_err(|e| e.to_string())?;
            let setting = |key: &str| {
                input
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("// {key} ")).map(str::trim))
            };
            let mut opts = tessera_driver::CompileOptions::for_target(
                target.ok_or("`// target NAME` missing")?,
            );
            opts.opt_level = setting("opt-level")
                .unwrap_or("2")
                .parse()
                .map_err(|e| format!("{e}"))?;
            opts.precision = setting("precision")
                .unwrap_or("exact")
                .parse()
                .map_err(|e| format!("{e}"))?;
            let (out, report) = tessera_driver::optimize(&g, &opts).map_err(|e| e.to_string())?;
            let mut text = tessera_ir::text::print(&out);
            for (rule, n) in &report.fired {
                text.push_str(&format!("fired {rule} {n}\n"));
            }
            Ok(text)
        }
        other => Err(format!("unknown pass `{other}`")),
    }
}

enum Check {
    Contains(String),
    Not(String),
}

fn check(output: &str, checks: &[Check]) -> Result<(), String> {
    let lines: Vec<&str> = output.lines().collect();
    let mut pos = 0;
    let mut nots: Vec<&str> = Vec::new();
    for c in checks {
        match c {
            Check::Not(t) => nots.push(t),
            Check::Contains(t) => {
                let found = lines[pos..].iter().position(|l| l.contains(t.as_str()));
                let Some(i) = found else {
                    return Err(format!("CHECK: `{t}` not found after line {pos}"));
                };
                for n in nots.drain(..) {
                    if let Some(l) = lines[pos..pos + i].iter().find(|l| l.contains(n)) {
                        return Err(format!("CHECK-NOT: `{n}` found in `{l}`"));
                    }
                }
                pos += i + 1;
            }
        }
    }
    for n in nots {
        if let Some(l) = lines[pos..].iter().find(|l| l.contains(n)) {
            return Err(format!("CHECK-NOT: `{n}` found in `{l}`"));
        }
    }
    Ok(())
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "tir") {
            out.push(p);
        }
    }
}

#[test]
fn filetests() {
    let root = tessera_tests::root().join("tests/filetests");
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(!all.is_empty(), "no file tests under {}", root.display());
    let bless = std::env::var_os("TESSERA_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &all {
        let text = std::fs::read_to_string(path).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("// {key} ")).map(str::trim))
        };
        let pass = header("test").unwrap_or("");
        let target = header("target");
        let mut blessed = String::new();
        for (n, case) in text.split("// -----").enumerate() {
            let checks: Vec<Check> = case
                .lines()
                .filter_map(|l| {
                    let l = l.trim();
                    l.strip_prefix("// CHECK-NOT:")
                        .map(|t| Check::Not(t.trim().to_string()))
                        .or_else(|| {
                            l.strip_prefix("// CHECK:")
                                .map(|t| Check::Contains(t.trim().to_string()))
                        })
                })
                .collect();
            let result = run_pass(pass, target, case);
            let label = format!(
                "{} case {n}",
                path.strip_prefix(&root).unwrap_or(path).display()
            );
            if bless && checks.iter().all(|c| matches!(c, Check::Contains(_))) {
                let kept: Vec<&str> = case
                    .lines()
                    .filter(|l| !l.trim().starts_with("// CHECK"))
                    .collect();
                let mut c = kept.join("\n").trim_end().to_string();
                c.push('\n');
                match &result {
                    Ok(out) => out
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .for_each(|l| c.push_str(&format!("// CHECK: {}\n", l.trim()))),
                    Err(e) => c.push_str(&format!("// CHECK: {e}\n")),
                }
                if n > 0 {
                    blessed.push_str("// -----");
                    if !c.starts_with('\n') {
                        blessed.push('\n');
                    }
                }
                blessed.push_str(&c);
                continue;
            }
            // A case may expect an error: its CHECK lines then match the error message.
            let out = result.unwrap_or_else(|e| e);
            if checks.is_empty() {
                failures.push(format!(
                    "{label}: no CHECK lines (a test that checks nothing)"
                ));
            } else if let Err(e) = check(&out, &checks) {
                failures.push(format!("{label}: {e}\n--- output ---\n{out}"));
            }
        }
        if bless && !blessed.is_empty() {
            std::fs::write(path, blessed).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "{} file test case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{} file tests passed", all.len());
}
