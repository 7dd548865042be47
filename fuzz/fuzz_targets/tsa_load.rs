//! `.tsa` artifact bytes: header, digest and payload decoding with every cross-check, then
//! loading on the `interp` device (which parses and verifies each kernel's text). Host
//! artifacts are not loaded: their blobs are native code, which no loader can check (see
//! docs/security.md), so only their decoding is fuzzed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let _ = tessera_runtime::Artifact::stored_digest(data);
    let Ok(a) = tessera_runtime::Artifact::decode(data) else { return };
    assert_eq!(tessera_runtime::Artifact::decode(&a.encode()).as_ref().ok(), Some(&a), "re-encoding changed the artifact");
    if a.target == "interp" {
        let _ = tessera_runtime::Model::load(a, Arc::new(tessera_interp::InterpDevice));
    }
});
