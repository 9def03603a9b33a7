//! Integration tests for pdf-uvm, in one harness binary. They use the real PDFium, found the
//! way the program finds it (`scripts/setup-pdfium.sh` installs it); without it they fail.

mod binary;
mod serve;
mod util;
