//! npu-sim assembly text: assemble, and for programs that assemble, disassemble and assemble
//! again (the two must agree) and round-trip through the binary encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(prog) = tessera_npu_sim::assemble(text) else { return };
    let again = tessera_npu_sim::assemble(&tessera_npu_sim::disassemble(&prog));
    assert_eq!(again.as_ref().ok(), Some(&prog), "disassembly does not reassemble");
    let bytes = tessera_npu_sim::encode_program(&prog);
    assert_eq!(tessera_npu_sim::decode_program(&bytes).as_ref().ok(), Some(&prog), "encoding does not decode");
});
