//! Graph-IR text: parse, then shape inference and the verifier for graphs that parse, and a
//! print → parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut g) = tessera_ir::text::parse(text) else { return };
    let printed = tessera_ir::text::print(&g);
    assert!(tessera_ir::text::parse(&printed).is_ok(), "printed graph does not parse:\n{printed}");
    if tessera_ir::infer::infer_shapes(&mut g).is_ok() {
        let _ = tessera_ir::verify::verify(&g);
    }
});
