//! The llvm-riscv64 node-test ratchet at VLEN 256 (`qemu-riscv64 -cpu rv64,v=true,vlen=256`):
//! the same library code must pass on a wider vector unit. Its own test binary, because the
//! VLEN reaches the conformance runner through `TESSERA_RISCV_VLEN`, set here for the whole
//! process. Every 48th listed test; `TESSERA_FULL_RATCHET=1` runs the whole list.
#![cfg(feature = "llvm")]

use tessera_driver::aot::{tools_present, Isa};

#[test]
fn llvm_riscv64_pass_list_still_passes_at_vlen_256() {
    if let Err(e) = tools_present(Isa::Riscv64) {
        eprintln!(
            "SKIPPED: {e}; scripts/setup-system.sh installs qemu-user and gcc-riscv64-linux-gnu"
        );
        return;
    }
    // The only test of this binary: no other thread reads the environment.
    std::env::set_var("TESSERA_RISCV_VLEN", "256");
    tessera_tests::ratchet_sampled("llvm-riscv64", 48);
}
