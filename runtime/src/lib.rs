//! Tessera runtime: artifact loader, plan executor, Device trait, interp device
