//! `pdf-uvm`: the `qubes.PdfConvert` service program; PDF on stdin, RGB pixel stream on stdout.
//!
//! The resolution comes from the first program argument, else from `QREXEC_SERVICE_ARGUMENT`
//! (how qrexec passes `qubes.PdfConvert+300` to a service script).
//!
//! With `--sandboxed` as its first argument (how the local transport starts it, inside the
//! sandbox's namespaces), it locks itself down once the document is open and before rendering.
//!
//! Exit codes: 0 success; 1 the document could not be converted (or the stream could not be
//! written); 2 usage error (a bad resolution argument, or extra arguments). On failure, one line
//! `pdf-uvm: <reason>` goes to stderr; in normal operation stderr stays empty.
//!
//! As PID 1 of a uvm (the image's `/init`), it serves the one `qubes.PdfConvert` call named
//! on the kernel command line through `uvm-init` instead: the argument is the resolution, the
//! exit code and the one failure line are the same, and the line travels as DATA_STDERR.
//! Any other service gets exit code 127.
//!
//! With `--qrexec-agent` as its only argument it serves one call in the same way as a qrexec
//! agent over the Unix-socket vchan layout (`VCHAN_DOMAIN`, `VCHAN_SOCKET_DIR`), as an ordinary
//! process without a sandbox: how the agent is tested end to end and driven by a qrexec daemon
//! built for sockets. It exits 0 once the call was served to its end, 1 otherwise, with one
//! line on stderr either way.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use pdf_uvm::{serve, ServeError, ServeOptions};

/// Output buffer: large writes go straight to the pipe, and page headers ride along with
/// pixel data instead of costing a write each.
const OUTPUT_BUFFER: usize = 1 << 20;

/// Environment variable through which qrexec hands a service its argument.
const ARGUMENT_ENV: &str = "QREXEC_SERVICE_ARGUMENT";

/// First argument from the local transport: lock the process down once the document is open
/// (empty root, seccomp allowlist; see `uvm-sandbox`).
const SANDBOXED_FLAG: &str = "--sandboxed";

/// The lock-down of the local sandbox, for [`ServeOptions::after_open`].
fn lock_down() -> Result<(), String> {
    uvm_sandbox::lock_down_self(&uvm_sandbox::SelfPolicy::default()).map_err(|e| e.to_string())
}

/// First argument for serving one call as a qrexec agent over the socket vchan layout.
const AGENT_FLAG: &str = "--qrexec-agent";

/// The service this program serves as a uvm's PID 1.
const SERVICE: &str = "qubes.PdfConvert";

/// Output buffer as PID 1: one qrexec data chunk (64 KiB), so every DATA_STDOUT message is
/// full rather than one per page header.
const CHUNK_BUFFER: usize = 1 << 16;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.next_if(|a| a == AGENT_FLAG).is_some() {
        if args.next().is_some() {
            eprintln!("pdf-uvm: usage: pdf-uvm --qrexec-agent takes no other argument");
            return ExitCode::from(2);
        }
        return match uvm_init::run_as_socket_agent(&mut UvmHandler) {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        };
    }
    let sandboxed = args.next_if(|a| a == SANDBOXED_FLAG).is_some();
    // In the local sandbox the program is PID 1 of its own PID namespace too; only a uvm's
    // real init (no arguments from a caller) serves through uvm-init.
    if !sandboxed && uvm_init::is_pid1() {
        uvm_init::run_as_pid1(&mut UvmHandler);
    }
    let arg = args.next().or_else(|| std::env::var_os(ARGUMENT_ENV));
    let result = if args.next().is_some() {
        Err(Failure::Usage(
            "usage: pdf-uvm [--sandboxed] [RESOLUTION] < document.pdf > pixels, or pdf-uvm --qrexec-agent".to_owned(),
        ))
    } else {
        run(arg, sandboxed)
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("pdf-uvm: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Why the program failed, sorted by exit code.
enum Failure {
    /// Wrong arguments (exit 2).
    Usage(String),
    /// Standard output could not be set up (exit 1).
    Setup(io::Error),
    /// The call itself failed (exit 2 for a bad resolution, 1 otherwise).
    Serve(ServeError),
}

impl Failure {
    /// A bad argument is the caller's mistake (2); everything else is about the document or
    /// the pipe (1).
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) | Failure::Serve(ServeError::BadResolution { .. }) => 2,
            Failure::Setup(_) | Failure::Serve(_) => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(message) => f.write_str(message),
            Failure::Setup(e) => write!(f, "cannot use standard output: {}", e.kind()),
            Failure::Serve(e) => write!(f, "{e}"),
        }
    }
}

/// Serves [`SERVICE`] as a qrexec service: stdin, stdout and stderr are the call's streams.
struct UvmHandler;

impl uvm_init::ServiceHandler for UvmHandler {
    fn run(
        &mut self,
        _service: &str,
        arg: &str,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> i32 {
        // qrexec passes an empty argument when the caller gave none: the default resolution.
        let arg = Some(arg).filter(|a| !a.is_empty());
        let mut output = BufWriter::with_capacity(CHUNK_BUFFER, stdout);
        let result = serve(arg, stdin, &mut output, &ServeOptions::default())
            .map_err(Failure::Serve)
            .and_then(|_| output.flush().map_err(Failure::Setup));
        match result {
            Ok(()) => 0,
            Err(failure) => {
                // The caller is the only reader: if it is gone, there is nobody to tell.
                let _ = writeln!(stderr, "pdf-uvm: {failure}");
                i32::from(failure.exit_code())
            }
        }
    }

    fn knows(&self, service: &str) -> bool {
        service == SERVICE
    }
}

fn run(arg: Option<OsString>, sandboxed: bool) -> Result<(), Failure> {
    let arg = match arg {
        Some(arg) => Some(
            arg.into_string()
                .map_err(|_| Failure::Usage("the resolution argument is not utf-8".to_owned()))?,
        ),
        None => None,
    };

    // Stdout through a plain file on fd 1: std's Stdout is line-buffered and would split
    // binary pixel data at every newline byte.
    let stdout = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(Failure::Setup)?;
    let mut output = BufWriter::with_capacity(OUTPUT_BUFFER, File::from(stdout));
    let mut input = io::stdin().lock();

    let options = ServeOptions {
        after_open: if sandboxed { Some(lock_down) } else { None },
        ..ServeOptions::default()
    };
    serve(arg.as_deref(), &mut input, &mut output, &options)
        .map(drop)
        .map_err(Failure::Serve)
}
