//! Prints what `host` makes of a model's kernels: for each kernel (or those whose name contains
//! the filter), its name, then Cranelift's final machine instructions (`--clif`: the Cranelift
//! IR before optimisation instead).
//!
//! ```sh
//! cargo run --release -p tessera-host --features compiler --example host_asm -- MODEL.onnx [KERNEL-NAME-SUBSTRING] [--clif]
//! ```

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let clif = args.iter().any(|a| a == "--clif");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(model) = positional.first() else {
        return Err("usage: host_asm MODEL.onnx [KERNEL] [--clif]".into());
    };
    let filter = positional.get(1).map(|s| s.as_str()).unwrap_or("");
    let target = tessera_host::Host::native()?;
    let opts = tessera_driver::CompileOptions::for_target(tessera_host::NAME);
    let graph = tessera_driver::import(&PathBuf::from(model), &opts)?;
    let program = tessera_lower::lower(&graph, tessera_target::Target::desc(&target))?;
    for k in program.kernels.iter().filter(|k| k.name.contains(filter)) {
        println!("==== kernel `{}`", k.name);
        let text = if clif {
            target.clif(k)?
        } else {
            target.assembly(k)?
        };
        println!("{text}");
    }
    Ok(())
}
