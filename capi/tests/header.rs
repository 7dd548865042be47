//! `include/tessera.h` is generated from this crate by cbindgen (settings in `cbindgen.toml`);
//! this test regenerates it and fails if the committed header differs. `TESSERA_BLESS=1`
//! rewrites the header instead.

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("capi/cbindgen.toml parses");
    // cbindgen follows `mod` items from lib.rs to the other files.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen reads capi/src");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = dir.join("../include/tessera.h");
    if std::env::var_os("TESSERA_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("include/tessera.h is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/tessera.h is stale: rerun `TESSERA_BLESS=1 cargo test -p tessera-capi --test header` and commit it"
    );
    for name in [
        "tessera_abi_version",
        "tessera_model_load_file",
        "tessera_model_load_memory",
        "tessera_model_run",
        "TESSERA_ABI_VERSION",
    ] {
        assert!(generated.contains(name), "the header lacks {name}");
    }
}
