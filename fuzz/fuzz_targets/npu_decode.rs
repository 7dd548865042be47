//! npu-sim binary programs: decode 128-bit instruction words; what decodes must re-encode to
//! the same bytes' meaning and disassemble.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(prog) = tessera_npu_sim::decode_program(data) else { return };
    let _ = tessera_npu_sim::disassemble(&prog);
    let bytes = tessera_npu_sim::encode_program(&prog);
    assert_eq!(tessera_npu_sim::decode_program(&bytes).as_ref().ok(), Some(&prog), "re-encoding changed the program");
});
