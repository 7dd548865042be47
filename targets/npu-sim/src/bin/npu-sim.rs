//! `npu-sim`: the simulated NPU's own command line (see `tessera_npu_sim::cli`). The same
//! commands are available as `tessera npu-sim …`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match tessera_npu_sim::cli::main_with_args(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
