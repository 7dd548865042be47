//! Tessera driver: the compile pipeline and target registry (API boundary)
