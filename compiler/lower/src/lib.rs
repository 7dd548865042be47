//! Tessera lowering: graph IR ops to kernel IR kernels plus a plan
