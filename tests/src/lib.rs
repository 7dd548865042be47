//! Tessera conformance harness.
