//! The ways the caller reaches a uvm: start a service, write the document, read the pixel
//! stream under deadlines, get an exit status.
//!
//! | transport | what runs | default |
//! |---|---|---|
//! | `local` | the uvm program (`pdf-uvm`, `image-uvm`) as a child process | off Qubes |
//! | `qrexec` | `qrexec-client-vm @dispvm[:NAME] SERVICE+ARG` | inside a Qubes VM |
//!
//! Every call runs in its own process group so that a deadline kills the whole call, whatever
//! the child started. Reads from the uvm go through [`DeadlineReader`], which enforces an idle
//! deadline between bytes and a whole-call deadline that grows once the page count is known.
//!
//! # Limitations
//! The `local` transport here starts the uvm program with an empty environment and no
//! inherited descriptors but without namespaces or seccomp: it is as strong as the uvm
//! program's own code. Prefer `qrexec` (a Xen disposable) for documents from real attackers.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use converter_core::limits::Deadlines;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal};

/// How much of a uvm's stderr is kept for the error message; the rest is read and dropped so
/// the uvm never blocks on a full pipe.
pub const STDERR_KEEP_BYTES: usize = 4096;

/// Where Qubes puts its marker in every qube; its presence means we run inside Qubes.
const QUBES_VM_MARKER: &str = "/usr/share/qubes/marker-vm";

/// The client program of qrexec inside a qube.
pub const QREXEC_CLIENT_VM: &str = "qrexec-client-vm";

/// Which transport reaches the uvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The uvm program as a local child process.
    Local,
    /// A Qubes disposable through `qrexec-client-vm`.
    Qrexec,
}

impl TransportKind {
    /// The name used in options and reports.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Local => "local",
            TransportKind::Qrexec => "qrexec",
        }
    }

    /// `qrexec` inside a Qubes VM that has `qrexec-client-vm`, `local` everywhere else.
    pub fn detect() -> TransportKind {
        if Path::new(QUBES_VM_MARKER).exists() && find_on_path(QREXEC_CLIENT_VM).is_some() {
            TransportKind::Qrexec
        } else {
            TransportKind::Local
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A service of the uvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `qubes.PdfConvert+RES`.
    Pdf {
        /// Pixels per inch.
        resolution: u32,
    },
    /// `qubes.GetImageRGBA`.
    Image,
}

impl Service {
    /// The qrexec service name with its argument, as `qrexec-client-vm` takes it.
    pub fn qrexec_call(self) -> String {
        match self {
            Service::Pdf { resolution } => format!("qubes.PdfConvert+{resolution}"),
            Service::Image => "qubes.GetImageRGBA".to_string(),
        }
    }

    /// The local uvm program that serves it.
    pub fn program(self) -> &'static str {
        match self {
            Service::Pdf { .. } => "pdf-uvm",
            Service::Image => "image-uvm",
        }
    }

    /// The service argument (what follows `+`), if any.
    pub fn argument(self) -> Option<String> {
        match self {
            Service::Pdf { resolution } => Some(resolution.to_string()),
            Service::Image => None,
        }
    }
}

/// How to reach the uvm.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Which transport.
    pub kind: TransportKind,
    /// The disposable template for `qrexec` (`@dispvm:NAME`); `None` for the default `@dispvm`.
    pub dispvm: Option<String>,
    /// Folder holding the uvm programs for `local`; `None` looks beside the running program,
    /// then on `PATH`.
    pub program_dir: Option<PathBuf>,
    /// Deadlines for the call.
    pub deadlines: Deadlines,
}

impl TransportConfig {
    /// A configuration for `kind` with default deadlines.
    pub fn new(kind: TransportKind) -> Self {
        TransportConfig {
            kind,
            dispvm: None,
            program_dir: None,
            deadlines: Deadlines::default(),
        }
    }
}

/// Why a call could not be made or did not end well.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The uvm program or `qrexec-client-vm` was not found.
    #[error("cannot find the program {0:?} (looked beside this program and on PATH)")]
    ProgramNotFound(String),
    /// The child process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: io::Error,
    },
    /// The whole-call deadline passed.
    #[error("the call took longer than its deadline of {0:?}")]
    CallDeadline(Duration),
    /// The uvm went silent for longer than the idle deadline.
    #[error("the uvm sent nothing for {0:?}")]
    IdleDeadline(Duration),
    /// The uvm (or qrexec) ended with a failure status.
    #[error("the uvm failed ({status}){detail}")]
    Failed {
        /// What the exit status means.
        status: String,
        /// `: ` and the first line of its stderr, made printable, or empty.
        detail: String,
    },
    /// Waiting for the child failed.
    #[error("cannot wait for the uvm: {0}")]
    Wait(io::Error),
}

/// The whole-call deadline, shared between the reader and whoever learns the page count.
#[derive(Debug, Clone)]
pub struct CallDeadline {
    start: Instant,
    limit_ms: Arc<AtomicU64>,
}

impl CallDeadline {
    fn new(limit: Duration) -> Self {
        CallDeadline {
            start: Instant::now(),
            limit_ms: Arc::new(AtomicU64::new(millis(limit))),
        }
    }

    /// Sets the whole-call limit, counted from the start of the call.
    pub fn set_limit(&self, limit: Duration) {
        self.limit_ms.store(millis(limit), Ordering::Relaxed);
    }

    /// The whole-call limit.
    pub fn limit(&self) -> Duration {
        Duration::from_millis(self.limit_ms.load(Ordering::Relaxed))
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.limit().saturating_sub(self.start.elapsed())
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// Time since the start of the call.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A reader that fails with `TimedOut` when its source is silent for longer than the idle
/// deadline, or when the whole-call deadline passes.
pub struct DeadlineReader<R> {
    inner: R,
    idle: Duration,
    deadline: CallDeadline,
}

impl<R: Read + AsFd> DeadlineReader<R> {
    /// Wraps `inner`, a pipe or socket.
    pub fn new(inner: R, idle: Duration, deadline: CallDeadline) -> Self {
        DeadlineReader {
            inner,
            idle,
            deadline,
        }
    }
}

impl<R: Read + AsFd> Read for DeadlineReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let remaining = self.deadline.remaining();
            if remaining.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "call deadline passed",
                ));
            }
            let wait = remaining.min(self.idle);
            let timeout = Timespec {
                tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(wait.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&self.inner, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) if wait == remaining => continue,
                Ok(0) => return Err(io::Error::new(io::ErrorKind::TimedOut, "idle deadline")),
                Ok(_) => return self.inner.read(buf),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A running call to a uvm.
pub struct Call {
    child: Child,
    program: String,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    deadline: CallDeadline,
    idle: Duration,
    kind: TransportKind,
}

/// Starts `service` over the configured transport.
pub fn start(config: &TransportConfig, service: Service) -> Result<Call, TransportError> {
    let mut command = match config.kind {
        TransportKind::Local => {
            let program = find_program(service.program(), config.program_dir.as_deref())?;
            let mut c = Command::new(program);
            if let Some(arg) = service.argument() {
                c.arg(arg);
            }
            // The uvm needs nothing from our environment: no locale, no HOME, no display.
            c.env_clear();
            c
        }
        TransportKind::Qrexec => {
            let program = find_on_path(QREXEC_CLIENT_VM)
                .ok_or_else(|| TransportError::ProgramNotFound(QREXEC_CLIENT_VM.into()))?;
            let target = match &config.dispvm {
                Some(name) => format!("@dispvm:{name}"),
                None => "@dispvm".to_string(),
            };
            let mut c = Command::new(program);
            c.arg(target).arg(service.qrexec_call());
            c
        }
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a deadline can kill everything the call started.
        .process_group(0);

    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().map_err(|source| TransportError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut err)
                .take(STDERR_KEEP_BYTES as u64)
                .read_to_end(&mut kept);
            let _ = io::copy(&mut err, &mut io::sink());
            kept
        })
    });

    Ok(Call {
        child,
        program,
        stdin,
        stdout,
        stderr,
        deadline: CallDeadline::new(config.deadlines.call_base),
        idle: config.deadlines.idle,
        kind: config.kind,
    })
}

impl Call {
    /// The document goes here; drop it to send EOF.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The pixel stream, under the call's deadlines.
    pub fn take_stdout(&mut self) -> Option<DeadlineReader<ChildStdout>> {
        let idle = self.idle;
        let deadline = self.deadline.clone();
        self.stdout
            .take()
            .map(|out| DeadlineReader::new(out, idle, deadline))
    }

    /// The whole-call deadline, to extend once the page count is known.
    pub fn deadline(&self) -> &CallDeadline {
        &self.deadline
    }

    /// The transport this call went over.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// Kills the whole call at once.
    pub fn kill(&mut self) {
        // The child leads its own process group (see `start`), so its pid is the group id.
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
        let _ = self.child.kill();
    }

    /// The deadline behind a `TimedOut` read from the pixel stream.
    pub fn timeout_error(&self) -> TransportError {
        if self.deadline.passed() {
            TransportError::CallDeadline(self.deadline.limit())
        } else {
            TransportError::IdleDeadline(self.idle)
        }
    }

    /// Waits for the call to end within its deadline and checks its exit status. Returns the
    /// first [`STDERR_KEEP_BYTES`] of the uvm's stderr: untrusted bytes, for the caller to read
    /// strictly (the image service notes dropped frames there).
    pub fn finish(mut self) -> Result<Vec<u8>, TransportError> {
        self.stdin = None;
        match self.wait_until(None)? {
            Some(status) => {
                self.check_status(status)?;
                Ok(self
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default())
            }
            None => {
                self.kill();
                Err(TransportError::CallDeadline(self.deadline.limit()))
            }
        }
    }

    /// After the pixel stream ended early: the uvm's own failure, if it exits with one within
    /// `grace`. Its message says more than "stream ended" (a wrong password, a broken file).
    pub fn failure_after_eof(&mut self, grace: Duration) -> Option<TransportError> {
        let status = self.wait_until(Some(grace)).ok().flatten()?;
        self.check_status(status).err()
    }

    /// Waits for the child's exit until the call deadline (or `grace`, if shorter); `None` when
    /// time ran out first.
    fn wait_until(
        &mut self,
        grace: Option<Duration>,
    ) -> Result<Option<ExitStatus>, TransportError> {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) => {
                    let grace_over = grace.is_some_and(|g| started.elapsed() >= g);
                    if self.deadline.passed() || grace_over {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(TransportError::Wait(e)),
            }
        }
    }

    fn check_status(&mut self, status: ExitStatus) -> Result<(), TransportError> {
        if status.success() {
            return Ok(());
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Err(TransportError::Failed {
            status: describe_status(status, self.kind),
            detail: first_line(&stderr)
                .map(|l| format!(": {l}"))
                .unwrap_or_default(),
        })
    }

    /// The program that was started, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        let _ = self.child.wait();
    }
}

/// What an exit status means, in the words of the transport.
fn describe_status(status: ExitStatus, kind: TransportKind) -> String {
    if let Some(sig) = status.signal() {
        return format!("killed by signal {sig}");
    }
    let code = status.code().unwrap_or(-1);
    match (kind, code) {
        (TransportKind::Qrexec, 125) => "qrexec could not make the call, exit code 125".into(),
        (TransportKind::Qrexec, 126) => "the qrexec policy refused the call, exit code 126".into(),
        (TransportKind::Qrexec, 127) => {
            "the service is not installed in the disposable, exit code 127".into()
        }
        _ => format!("exit code {code}"),
    }
}

/// The first line of untrusted text, cut short and stripped of everything but printable ASCII,
/// so a hostile uvm cannot send escape sequences to the user's terminal.
pub fn first_line(bytes: &[u8]) -> Option<String> {
    let line = bytes.split(|&b| b == b'\n').find(|l| !l.is_empty())?;
    let clean: String = line
        .iter()
        .take(200)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    Some(clean)
}

/// Finds a uvm program: in `dir` when given, else beside the running program, else on PATH.
pub fn find_program(name: &str, dir: Option<&Path>) -> Result<PathBuf, TransportError> {
    let beside = || std::env::current_exe().ok()?.parent().map(|d| d.join(name));
    let found = match dir {
        Some(dir) => Some(dir.join(name)).filter(|p| p.is_file()),
        None => beside()
            .filter(|p| p.is_file())
            .or_else(|| find_on_path(name)),
    };
    found.ok_or_else(|| TransportError::ProgramNotFound(name.to_string()))
}

/// Finds an executable file on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_qubes() {
        assert_eq!(
            Service::Pdf { resolution: 300 }.qrexec_call(),
            "qubes.PdfConvert+300"
        );
        assert_eq!(Service::Image.qrexec_call(), "qubes.GetImageRGBA");
    }

    #[test]
    fn first_line_strips_control_bytes() {
        assert_eq!(
            first_line(b"\n\x1b[31mbad\x07 news\nmore").as_deref(),
            Some("?[31mbad? news")
        );
        assert_eq!(first_line(b""), None);
    }

    #[test]
    fn idle_deadline_fires_on_a_silent_pipe() {
        let (reader, _writer) = rustix::pipe::pipe().unwrap();
        let file = std::fs::File::from(reader);
        let deadline = CallDeadline::new(Duration::from_secs(60));
        let mut r = DeadlineReader::new(file, Duration::from_millis(50), deadline);
        let err = r.read(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn call_deadline_fires_before_idle() {
        let (reader, _writer) = rustix::pipe::pipe().unwrap();
        let file = std::fs::File::from(reader);
        let deadline = CallDeadline::new(Duration::from_millis(30));
        let mut r = DeadlineReader::new(file, Duration::from_secs(60), deadline.clone());
        let err = r.read(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(deadline.passed());
    }

    #[test]
    fn data_passes_through() {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        let mut w = std::fs::File::from(writer);
        io::Write::write_all(&mut w, b"12\n").unwrap();
        drop(w);
        let deadline = CallDeadline::new(Duration::from_secs(5));
        let mut r = DeadlineReader::new(
            std::fs::File::from(reader),
            Duration::from_secs(5),
            deadline,
        );
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "12\n");
    }
}
