//! Workspace integration tests, in one binary: the commands end to end with the real uvm
//! programs, real PDFium and the real pixel-stream format.

mod agent;
mod img;
mod pdf;
mod sandbox;
mod util;
mod vm;
