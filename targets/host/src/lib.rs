//! Tessera host target: kernel IR to native code with Cranelift, and its runtime device
