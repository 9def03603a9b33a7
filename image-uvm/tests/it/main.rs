//! Integration tests of image-uvm, in one harness binary.

mod binary;
mod serve;
mod svg;
mod util;
