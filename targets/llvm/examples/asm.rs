//! Prints what `llvm-x86_64` makes of a model's kernels: for each kernel (or the one named),
//! its name, then the LLVM IR text (`--ir`) or the optimised assembly.
//!
//! ```sh
//! cargo run -p tessera-llvm --example asm -- MODEL.onnx [KERNEL-NAME-SUBSTRING] [--ir] [--cpu x86-64-v3]
//! ```

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ir = args.iter().any(|a| a == "--ir");
    let cpu = args
        .iter()
        .position(|a| a == "--cpu")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--cpu"))
        .map(|(_, a)| a)
        .collect();
    let Some(model) = positional.first() else {
        return Err("usage: asm MODEL.onnx [KERNEL] [--ir] [--cpu LEVEL]".into());
    };
    let filter = positional.get(1).map(|s| s.as_str()).unwrap_or("");
    let target = tessera_llvm::LlvmCpu::with_cpu(cpu)?;
    let opts = tessera_driver::CompileOptions::for_target(tessera_llvm::X86_64);
    let graph = tessera_driver::import(&PathBuf::from(model), &opts)?;
    let program = tessera_lower::lower(&graph, tessera_target::Target::desc(&target))?;
    for k in program.kernels.iter().filter(|k| k.name.contains(filter)) {
        println!("==== kernel `{}`", k.name);
        let text = if ir {
            target.llvm_ir(k)?
        } else {
            target.assembly(k)?
        };
        println!("{text}");
    }
    Ok(())
}
