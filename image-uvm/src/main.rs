//! `image-uvm`: serves one `qubes.GetImageRGBA` call on stdin and stdout.
//!
//! With `--sandboxed` (how the local transport starts it, inside the sandbox's namespaces) it
//! locks itself down once the image is read and before decoding.
//!
//! Exit status 0 after a full image was written; 2 for bad arguments; 1 after any error, with one line
//! `image-uvm: <error>` on stderr. Dropped animation frames are reported on stderr as
//! `image-uvm: dropped N frames`; Qubes' client ignores stderr, so that is the only place a
//! caller learns of them.
//!
//! As PID 1 of a uvm (the image's `/init`), it serves the one `qubes.GetImageRGBA` call named
//! on the kernel command line through `uvm-init` instead, with the same exit status and stderr
//! lines, which travel as DATA_STDERR. Any other service gets exit code 127.
//!
//! With `--qrexec-agent` it serves one call in the same way as a qrexec agent over the
//! Unix-socket vchan layout (`VCHAN_DOMAIN`, `VCHAN_SOCKET_DIR`), as an ordinary process
//! without a sandbox: how the agent is tested end to end and driven by a qrexec daemon built
//! for sockets. It exits 0 once the call was served to its end, 1 otherwise, with one line on
//! stderr either way.

use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use image_uvm::{serve, DecodeOptions, DecodeSummary, ServeError, FRAME_COUNT_CAP};

/// Output buffer: large writes keep the pipe or vchan busy with few syscalls.
const OUTPUT_BUFFER_BYTES: usize = 1 << 20;

/// Only argument from the local transport: lock the process down once the image is read (empty
/// root, seccomp allowlist; see `uvm-sandbox`).
const SANDBOXED_FLAG: &str = "--sandboxed";

/// The lock-down of the local sandbox, for [`DecodeOptions::after_read`].
fn lock_down() -> Result<(), String> {
    uvm_sandbox::lock_down_self(&uvm_sandbox::SelfPolicy::default()).map_err(|e| e.to_string())
}

/// Only argument for serving one call as a qrexec agent over the socket vchan layout.
const AGENT_FLAG: &str = "--qrexec-agent";

/// The service this program serves as a uvm's PID 1.
const SERVICE: &str = "qubes.GetImageRGBA";

/// Output buffer as PID 1: one qrexec data chunk (64 KiB), so DATA_STDOUT messages are full.
const CHUNK_BUFFER_BYTES: usize = 1 << 16;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let sandboxed = match (args.next(), args.next()) {
        (None, _) => false,
        (Some(a), None) if a == SANDBOXED_FLAG => true,
        (Some(a), None) if a == AGENT_FLAG => {
            return match uvm_init::run_as_socket_agent(&mut UvmHandler) {
                true => ExitCode::SUCCESS,
                false => ExitCode::FAILURE,
            };
        }
        _ => {
            let _ = writeln!(
                io::stderr().lock(),
                "usage: image-uvm [--sandboxed | --qrexec-agent] < image > pixels"
            );
            return ExitCode::from(2);
        }
    };
    // In the local sandbox the program is PID 1 of its own PID namespace too; only a uvm's
    // real init (no arguments from a caller) serves through uvm-init.
    if !sandboxed && uvm_init::is_pid1() {
        uvm_init::run_as_pid1(&mut UvmHandler);
    }
    match run(sandboxed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Nothing useful can be done if stderr is gone too.
            let _ = writeln!(io::stderr().lock(), "image-uvm: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves [`SERVICE`] as a qrexec service: stdin, stdout and stderr are the call's streams.
struct UvmHandler;

impl uvm_init::ServiceHandler for UvmHandler {
    fn run(
        &mut self,
        _service: &str,
        _arg: &str,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> i32 {
        // `serve` flushes its output after the last row.
        let mut output = BufWriter::with_capacity(CHUNK_BUFFER_BYTES, stdout);
        let result = serve(stdin, &mut output, &DecodeOptions::default());
        // The caller is the only reader of stderr: if it is gone, there is nobody to tell.
        match result {
            Ok(summary) => {
                note_dropped_frames(stderr, &summary);
                0
            }
            Err(e) => {
                let _ = writeln!(stderr, "image-uvm: {e}");
                1
            }
        }
    }

    fn knows(&self, service: &str) -> bool {
        service == SERVICE
    }
}

fn run(sandboxed: bool) -> Result<(), ServeError> {
    let mut input = io::stdin().lock();
    let mut output = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, io::stdout().lock());
    let options = DecodeOptions {
        after_read: if sandboxed { Some(lock_down) } else { None },
        ..DecodeOptions::default()
    };
    let summary = serve(&mut input, &mut output, &options)?;
    note_dropped_frames(&mut io::stderr().lock(), &summary);
    Ok(())
}

/// Tells the caller about animation frames that were not converted.
fn note_dropped_frames(stderr: &mut dyn Write, summary: &DecodeSummary) {
    if summary.frames_dropped > 0 {
        let at_least = if summary.frames_dropped >= FRAME_COUNT_CAP {
            "at least "
        } else {
            ""
        };
        let _ = writeln!(
            stderr,
            "image-uvm: dropped {at_least}{} frames",
            summary.frames_dropped
        );
    }
}
