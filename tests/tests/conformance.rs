//! The conformance ratchets: each target's committed pass list must keep passing.

#[test]
fn host_pass_list_still_passes() {
    tessera_tests::ratchet("host");
}

#[test]
fn interp_pass_list_still_passes() {
    tessera_tests::ratchet("interp");
}

#[test]
fn npu_sim_pass_list_still_passes() {
    tessera_tests::ratchet("npu-sim");
}

#[test]
fn npu_sim_lite_pass_list_still_passes() {
    tessera_tests::ratchet("npu-sim-lite");
}
