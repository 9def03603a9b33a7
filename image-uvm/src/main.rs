//! `image-uvm`: serves one `qubes.GetImageRGBA` call on stdin and stdout.
//!
//! Exit status 0 after a full image was written; 1 after any error, with one line
//! `image-uvm: <error>` on stderr. Dropped animation frames are reported on stderr as
//! `image-uvm: dropped N frames`; Qubes' client ignores stderr, so that is the only place a
//! caller learns of them.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use image_uvm::{serve, DecodeOptions, ServeError, FRAME_COUNT_CAP};

/// Output buffer: large writes keep the pipe or vchan busy with few syscalls.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Nothing useful can be done if stderr is gone too.
            let _ = writeln!(io::stderr().lock(), "image-uvm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), ServeError> {
    let mut input = io::stdin().lock();
    let mut output = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, io::stdout().lock());
    let summary = serve(&mut input, &mut output, &DecodeOptions::default())?;
    if summary.frames_dropped > 0 {
        let at_least = if summary.frames_dropped >= FRAME_COUNT_CAP {
            "at least "
        } else {
            ""
        };
        let _ = writeln!(
            io::stderr().lock(),
            "image-uvm: dropped {at_least}{} frames",
            summary.frames_dropped
        );
    }
    Ok(())
}
