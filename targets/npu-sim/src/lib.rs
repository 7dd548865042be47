//! Placeholder; the npu-sim crate is being written.
