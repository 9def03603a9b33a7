//! The trusted side's core: the strict pixel-stream reader and writer, the named limits, the
//! rebuild of clean PDF and PNG files from pixels, and the conversion report.
//!
//! Nothing here starts processes or talks to a transport: it works on `Read` and `Write`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod check;
pub mod limits;
pub mod rebuild;
pub mod report;
pub mod stream;
