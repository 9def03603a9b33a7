//! The caller's side: the commands `qvm-convert-pdf` and `qvm-convert-img`, the transports that
//! reach a uvm, and the safe handling of input and output files.
//!
//! The trusted side never parses a document. It sends the document's bytes to a uvm and reads
//! back only the pixel stream, through `converter_core::stream`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod batch;
pub mod cli;
pub mod convert;
pub mod files;
pub mod transport;
