//! Shared by the fuzz targets: the property checks (`checks.rs`, also included by the
//! root crate's `tests/fuzz_regressions.rs`).

pub mod checks;
