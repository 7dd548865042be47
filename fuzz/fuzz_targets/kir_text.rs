//! Kernel-IR text: parse and verify; kernels that verify are printed and reparsed (the text
//! form must round-trip) and, when their work is bounded by constants, interpreted on zeroed
//! buffers (traps and bounds errors are fine; panics are not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_fuzz::{bounded_work, MAX_PARAM_BYTES, MAX_TRIPS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(k) = tessera_kir::parse_kernel(text) else { return };
    let printed = tessera_kir::print_kernel(&k);
    assert_eq!(tessera_kir::parse_kernel(&printed).as_ref(), Ok(&k), "round trip of:\n{printed}");
    if !bounded_work(&k).is_some_and(|w| w <= MAX_TRIPS) {
        return;
    }
    let sizes: Vec<u64> = k.params().iter().map(|p| p.dtype.storage_bytes(p.len)).collect();
    if sizes.iter().sum::<u64>() > MAX_PARAM_BYTES || k.bufs.iter().map(|b| b.dtype.storage_bytes(b.len)).sum::<u64>() > MAX_PARAM_BYTES {
        return;
    }
    let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n as usize]).collect();
    let mut args: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
    let _ = tessera_kir::run_kernel(&k, &mut args);
});
