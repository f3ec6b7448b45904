//! The fuzz targets' checks and the model of the server's read path they use.
//!
//! Both modules depend only on `wsloop`, so `tests/regressions.rs` and `tests/properties.rs` include them with
//! `#[path]` and run the same checks under `cargo test`.

pub mod checks;
pub mod reader;
