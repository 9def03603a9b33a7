//! Renders a PDF from stdin with the real PDFium *after* `lock_down_self`, to prove that the
//! seccomp allowlist holds what rendering needs. A first call on a built-in one-page PDF binds
//! PDFium while files can still be opened; the document itself is then loaded and rendered
//! locked down, at the resolution given as the first argument.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::AsFd;
use std::process::ExitCode;

use pdf_uvm::{serve, ServeOptions};
use uvm_sandbox::{lock_down_self, SelfPolicy};

/// The smallest page PDFium accepts: an empty 72 x 72 pt page.
const TINY_PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n\
2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n\
3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n\
trailer<</Root 1 0 R>>\n%%EOF\n";

fn main() -> ExitCode {
    let resolution = std::env::args().nth(1).unwrap_or_else(|| "75".to_string());
    let options = ServeOptions::default();
    if let Err(e) = serve(Some("75"), &mut &TINY_PDF[..], &mut io::sink(), &options) {
        eprintln!("locked_render: binding PDFium failed: {e}");
        return ExitCode::from(1);
    }
    let mut document = Vec::new();
    if let Err(e) = io::stdin().lock().read_to_end(&mut document) {
        eprintln!("locked_render: cannot read stdin: {}", e.kind());
        return ExitCode::from(1);
    }
    let stdout = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("locked_render: cannot use stdout: {}", e.kind());
            return ExitCode::from(1);
        }
    };
    let mut output = BufWriter::with_capacity(1 << 20, File::from(stdout));

    if let Err(e) = lock_down_self(&SelfPolicy::default()) {
        eprintln!("locked_render: {e}");
        return ExitCode::from(1);
    }
    match serve(Some(&resolution), &mut &document[..], &mut output, &options) {
        Ok(summary) => {
            eprintln!("locked_render: {} pages", summary.pages);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("locked_render: {e}");
            ExitCode::from(1)
        }
    }
}
