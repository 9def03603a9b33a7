//! The ways the caller reaches a uvm: start a service, write the document, read the pixel
//! stream under deadlines, get an exit status.
//!
//! | transport | what runs | default |
//! |---|---|---|
//! | `local` | the uvm program (`pdf-uvm`, `image-uvm`) as a child process | off Qubes |
//! | `qrexec` | `qrexec-client-vm @dispvm[:NAME] SERVICE+ARG` | inside a Qubes VM |
//! | `vm` | the uvm image booted under QEMU for this one call (`uvm_image::qemu`) | never |
//!
//! Every child process runs in its own process group so that a deadline kills the whole call,
//! whatever the child started; a `vm` call kills its QEMU. Reads from the uvm go through
//! [`DeadlineReader`], which enforces an idle deadline between bytes and a whole-call deadline
//! that grows once the page count is known. The whole-call deadline starts before a `vm` boots,
//! so the boot counts against it.
//!
//! The `vm` transport finds its image for a service in [`TransportConfig::image_dir`]
//! (default [`DEFAULT_IMAGE_DIR`]): the subfolder named by [`Service::image_name`] (`pdf`,
//! `image`), as `uvm-image build pdf --out DIR/pdf` makes it, or the folder itself when it
//! holds an image and that subfolder does not.
//!
//! # Limitations
//! The `local` transport here starts the uvm program with an empty environment and no
//! inherited descriptors but without namespaces or seccomp: it is as strong as the uvm
//! program's own code. Prefer `qrexec` (a Xen disposable) for documents from real attackers,
//! or `vm`, where the program is the only process of a QEMU guest with no disk and no network.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
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
use uvm_image::image::VMLINUX_FILE;
use uvm_image::qemu::{self, VmCall, VmError, VmExit, VmOptions, VmStdin, VmStdout};

pub use uvm_image::qemu::DEFAULT_MEMORY_MB as DEFAULT_VM_MEMORY_MB;

/// How much of a uvm's stderr is kept for the error message; the rest is read and dropped so
/// the uvm never blocks on a full pipe.
pub const STDERR_KEEP_BYTES: usize = 4096;

/// The capacity asked for the pipe that carries the pixel stream from a local uvm or from
/// `qrexec-client-vm`: 1 MiB, Linux's default `/proc/sys/fs/pipe-max-size` for unprivileged
/// processes. A 150-ppi page is 6 MB; through the default 64 KiB pipe the writer and the
/// reader take turns about a hundred times per page, each turn two context switches. Measured
/// with `convert-bench` at 150 ppi: 12 to 13 % more pages per second end to end on text
/// documents. Best effort: a smaller system maximum keeps the default size.
const STDOUT_PIPE_BYTES: usize = 1 << 20;

/// Where Qubes puts its marker in every qube; its presence means we run inside Qubes.
const QUBES_VM_MARKER: &str = "/usr/share/qubes/marker-vm";

/// The client program of qrexec inside a qube.
pub const QREXEC_CLIENT_VM: &str = "qrexec-client-vm";

/// Longest wait, when a `vm` call is killed after the uvm's output ended, for the exit code
/// that follows it: the guest sends it at once, so this only covers a loaded host.
const VM_EXIT_AFTER_OUTPUT: Duration = Duration::from_secs(1);

/// Where the `vm` transport looks for uvm images when no folder is named: one subfolder per
/// service ([`Service::image_name`]), each made by `uvm-image build`. Beside the other state of
/// an installed package, and readable by every user who converts.
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/trusted-converters/images";

/// Which transport reaches the uvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The uvm program as a local child process.
    Local,
    /// A Qubes disposable through `qrexec-client-vm`.
    Qrexec,
    /// The uvm image booted under QEMU for one call.
    Vm,
}

impl TransportKind {
    /// The name used in options and reports.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Local => "local",
            TransportKind::Qrexec => "qrexec",
            TransportKind::Vm => "vm",
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

    /// The qrexec service name without its argument.
    pub fn name(self) -> &'static str {
        match self {
            Service::Pdf { .. } => "qubes.PdfConvert",
            Service::Image => "qubes.GetImageRGBA",
        }
    }

    /// The subfolder of the image folder that holds this service's uvm image, and the kind
    /// `uvm-image build` takes.
    pub fn image_name(self) -> &'static str {
        match self {
            Service::Pdf { .. } => "pdf",
            Service::Image => "image",
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
    /// Folder of uvm images for `vm`; `None` for [`DEFAULT_IMAGE_DIR`].
    pub image_dir: Option<PathBuf>,
    /// Guest memory in MiB for `vm`.
    pub vm_memory_mb: u32,
    /// Deadlines for the call.
    pub deadlines: Deadlines,
    /// Whether `local` confines the uvm program (namespaces, rlimits, seccomp). Turning it off
    /// is for debugging only.
    pub sandbox: bool,
}

impl TransportConfig {
    /// A configuration for `kind` with default deadlines.
    pub fn new(kind: TransportKind) -> Self {
        TransportConfig {
            kind,
            dispvm: None,
            program_dir: None,
            image_dir: None,
            vm_memory_mb: DEFAULT_VM_MEMORY_MB,
            deadlines: Deadlines::default(),
            sandbox: true,
        }
    }
}

/// Why a call could not be made or did not end well.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The local sandbox could not be set up; nothing was started.
    #[error("cannot sandbox the uvm: {0}")]
    Sandbox(String),
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
    /// The uvm image could not be booted under QEMU.
    #[error("cannot boot the uvm image in {image_dir}: {reason}")]
    VmBoot {
        /// The image folder.
        image_dir: PathBuf,
        /// Why, with its causes.
        reason: String,
    },
    /// A uvm under QEMU broke off the call: it died (the console's last line says why),
    /// broke the data protocol, or its socket failed.
    #[error("the uvm broke off the call: {0}")]
    VmBroken(String),
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

/// The document's way into a uvm: a pipe, or DATA_STDIN chunks on a QEMU uvm's data socket.
/// Dropping it is the end of the document.
#[derive(Debug)]
pub enum CallStdin {
    /// A child process's stdin.
    Child(ChildStdin),
    /// A QEMU uvm's stdin.
    Vm(VmStdin),
}

impl Write for CallStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CallStdin::Child(c) => c.write(buf),
            CallStdin::Vm(v) => v.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            CallStdin::Child(c) => c.flush(),
            CallStdin::Vm(v) => v.flush(),
        }
    }
}

/// The uvm's output: a pipe, or the DATA_STDOUT payloads of a QEMU uvm's data socket.
#[derive(Debug)]
pub enum CallStdout {
    /// A child process's stdout.
    Child(ChildStdout),
    /// A QEMU uvm's stdout.
    Vm(VmStdout),
}

impl Read for CallStdout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            CallStdout::Child(c) => c.read(buf),
            CallStdout::Vm(v) => match v.read(buf) {
                // The socket's own timeout (the idle deadline) inside a message: the same
                // deadline as the poll in `DeadlineReader`.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle deadline inside a message",
                )),
                // The uvm died or QEMU ended: the stream ends here, as a pipe would, and the
                // missing exit code explains it (`Call::failure_after_eof`, `Call::finish`).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl AsFd for CallStdout {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            CallStdout::Child(c) => c.as_fd(),
            CallStdout::Vm(v) => v.as_fd(),
        }
    }
}

/// A running call to a uvm.
pub struct Call {
    process: Process,
    program: String,
    stdin: Option<CallStdin>,
    stdout: Option<CallStdout>,
    deadline: CallDeadline,
    idle: Duration,
    kind: TransportKind,
    /// Whether we killed the child: its exit status then says nothing about the uvm.
    killed: bool,
}

/// What runs the uvm.
enum Process {
    /// The uvm program or `qrexec-client-vm`, and the thread keeping its stderr.
    Child {
        child: Child,
        stderr: Option<JoinHandle<Vec<u8>>>,
    },
    /// QEMU, and how the call ended once that is known.
    Vm { vm: VmCall, ended: Option<VmEnd> },
}

/// How a QEMU uvm's call ended.
#[derive(Debug, Clone)]
enum VmEnd {
    /// Its exit code (and stderr) arrived.
    Exited(VmExit),
    /// The whole-call deadline passed first; QEMU was killed.
    Deadline,
    /// The uvm broke off the call; QEMU was killed.
    Broken(String),
}

/// Starts `service` over the configured transport.
pub fn start(config: &TransportConfig, service: Service) -> Result<Call, TransportError> {
    let mut command = match config.kind {
        TransportKind::Local => {
            let program = find_program(service.program(), config.program_dir.as_deref())?;
            let mut c = Command::new(program);
            if config.sandbox {
                // The program locks itself down (empty root, seccomp allowlist) once it has
                // read its input; `confine` puts it in fresh namespaces with rlimits first.
                c.arg(SANDBOXED_FLAG);
            }
            if let Some(arg) = service.argument() {
                c.arg(arg);
            }
            // The uvm needs nothing from our environment: no locale, no HOME, no display.
            c.env_clear();
            if config.sandbox {
                uvm_sandbox::confine(&mut c, &sandbox_policy(&config.deadlines))
                    .map_err(|e| TransportError::Sandbox(e.to_string()))?;
            }
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
        TransportKind::Vm => return start_vm(config, service),
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
    if let Some(out) = &stdout {
        let _ = rustix::pipe::fcntl_setpipe_size(out, STDOUT_PIPE_BYTES);
    }
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
        process: Process::Child { child, stderr },
        program,
        stdin: stdin.map(CallStdin::Child),
        stdout: stdout.map(CallStdout::Child),
        deadline: CallDeadline::new(config.deadlines.call_base),
        idle: config.deadlines.idle,
        kind: config.kind,
        killed: false,
    })
}

/// The image folder the `vm` transport boots for `service`: `DIR/NAME` (see
/// [`Service::image_name`]) when it holds a kernel, else `DIR` itself when it does, else
/// `DIR/NAME` (whose missing files the boot then names).
pub fn image_folder(dir: Option<&Path>, service: Service) -> PathBuf {
    let root = dir.unwrap_or(Path::new(DEFAULT_IMAGE_DIR));
    let sub = root.join(service.image_name());
    if !sub.join(VMLINUX_FILE).is_file() && root.join(VMLINUX_FILE).is_file() {
        root.to_path_buf()
    } else {
        sub
    }
}

/// Boots the service's uvm image under QEMU; the call's deadline runs from before the boot.
fn start_vm(config: &TransportConfig, service: Service) -> Result<Call, TransportError> {
    let deadline = CallDeadline::new(config.deadlines.call_base);
    let image_dir = image_folder(config.image_dir.as_deref(), service);
    let options = VmOptions {
        memory_mb: config.vm_memory_mb,
        boot_timeout: qemu::BOOT_TIMEOUT.min(deadline.remaining()),
        ..VmOptions::default()
    };
    let arg = service.argument();
    let mut vm = qemu::start_vm_with(&image_dir, service.name(), arg.as_deref(), &options)
        .map_err(|e| TransportError::VmBoot {
            reason: boot_failure(&e, service),
            image_dir: image_dir.clone(),
        })?;

    let stdin = vm.take_stdin();
    let stdout = vm.take_stdout();
    if let Some(out) = &stdout {
        // Bounds a message cut off inside: `DeadlineReader` only waits for its first byte.
        let idle = Some(config.deadlines.idle).filter(|d| !d.is_zero());
        out.set_read_timeout(idle)
            .map_err(|e| TransportError::VmBroken(format!("data socket failed: {e}")))?;
    }
    Ok(Call {
        process: Process::Vm { vm, ended: None },
        program: format!("{} ({})", qemu::QEMU_PROGRAM, image_dir.display()),
        stdin: stdin.map(CallStdin::Vm),
        stdout: stdout.map(CallStdout::Vm),
        deadline,
        idle: config.deadlines.idle,
        kind: TransportKind::Vm,
        killed: false,
    })
}

/// Why a boot failed, on one line, with a hint where the image is missing.
fn boot_failure(e: &VmError, service: Service) -> String {
    let mut line = error_chain(e);
    if let VmError::MissingImage { .. } = e {
        line.push_str(&format!(
            " (build it with `uvm-image build {} --out DIR/{}` and pass --image-dir DIR)",
            service.image_name(),
            service.image_name()
        ));
    }
    line
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Waits up to `limit` for a QEMU uvm's exit code; QEMU is killed on every failure.
fn wait_vm(vm: &mut VmCall, limit: Duration, deadline: &CallDeadline) -> VmEnd {
    match vm.wait(limit) {
        Ok(exit) => VmEnd::Exited(exit),
        Err(VmError::Timeout { .. }) if deadline.passed() => VmEnd::Deadline,
        Err(VmError::Timeout { limit }) => VmEnd::Broken(format!(
            "no exit code within {} ms after the end of its output",
            limit.as_millis()
        )),
        Err(e) => VmEnd::Broken(error_chain(&e)),
    }
}

impl Call {
    /// The document goes here; drop it to send EOF.
    pub fn take_stdin(&mut self) -> Option<CallStdin> {
        self.stdin.take()
    }

    /// The pixel stream, under the call's deadlines.
    pub fn take_stdout(&mut self) -> Option<DeadlineReader<CallStdout>> {
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
        match &mut self.process {
            Process::Child { child, .. } => {
                // The child leads its own process group (see `start`), so its pid is the
                // group id.
                if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
                    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
                }
                let _ = child.kill();
                self.killed = true;
            }
            Process::Vm { vm, ended } => {
                // A uvm whose output has ended is sending its exit code and the line that
                // says why it failed; a kill now would lose them. Waiting for them is bounded.
                if ended.is_none() && vm.stdout_ended() {
                    let limit = VM_EXIT_AFTER_OUTPUT.min(self.deadline.remaining());
                    *ended = Some(wait_vm(vm, limit, &self.deadline));
                }
                vm.kill();
            }
        }
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
        if let Process::Vm { vm, ended } = &mut self.process {
            let end = match ended.take() {
                Some(end) => end,
                None => wait_vm(vm, self.deadline.remaining(), &self.deadline),
            };
            return match end {
                VmEnd::Exited(exit) if exit.exit_code == 0 => Ok(exit.stderr),
                other => Err(vm_end_error(&other, &self.deadline)),
            };
        }
        match self.wait_until(None)? {
            Some(status) => {
                self.check_status(status)?;
                Ok(self.take_stderr())
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
        if let Process::Vm { vm, ended } = &mut self.process {
            self.stdin = None;
            let end = ended.get_or_insert_with(|| {
                wait_vm(vm, grace.min(self.deadline.remaining()), &self.deadline)
            });
            return match end {
                VmEnd::Exited(exit) if exit.exit_code == 0 => None,
                other => Some(vm_end_error(other, &self.deadline)),
            };
        }
        if self.killed {
            // "Killed by signal 9" would hide the stream's own error behind our kill.
            return None;
        }
        let status = self.wait_until(Some(grace)).ok().flatten()?;
        self.check_status(status).err()
    }

    /// Waits for the child's exit until the call deadline (or `grace`, if shorter); `None` when
    /// time ran out first.
    fn wait_until(
        &mut self,
        grace: Option<Duration>,
    ) -> Result<Option<ExitStatus>, TransportError> {
        let Process::Child { child, .. } = &mut self.process else {
            return Ok(None);
        };
        let started = Instant::now();
        loop {
            match child.try_wait() {
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
        let stderr = self.take_stderr();
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

    /// The kept stderr of a child process (a QEMU uvm's comes with its exit code).
    fn take_stderr(&mut self) -> Vec<u8> {
        match &mut self.process {
            Process::Child { stderr, .. } => stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
            Process::Vm { .. } => Vec::new(),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // A QEMU uvm is killed by `VmCall`'s own drop.
        let Process::Child { child, .. } = &mut self.process else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            self.kill();
        }
        if let Process::Child { child, .. } = &mut self.process {
            let _ = child.wait();
        }
    }
}

/// The error for a QEMU uvm's call that did not end with exit code 0.
fn vm_end_error(end: &VmEnd, deadline: &CallDeadline) -> TransportError {
    match end {
        VmEnd::Exited(exit) => TransportError::Failed {
            status: describe_code(exit.exit_code, TransportKind::Vm),
            detail: first_line(&exit.stderr)
                .map(|l| format!(": {l}"))
                .unwrap_or_default(),
        },
        VmEnd::Deadline => TransportError::CallDeadline(deadline.limit()),
        VmEnd::Broken(reason) => TransportError::VmBroken(reason.clone()),
    }
}

/// What an exit status means, in the words of the transport.
fn describe_status(status: ExitStatus, kind: TransportKind) -> String {
    if let Some(sig) = status.signal() {
        return format!("killed by signal {sig}");
    }
    describe_code(status.code().unwrap_or(-1), kind)
}

/// What an exit code means, in the words of the transport.
fn describe_code(code: i32, kind: TransportKind) -> String {
    match (kind, code) {
        (TransportKind::Qrexec, 125) => "qrexec could not make the call, exit code 125".into(),
        (TransportKind::Qrexec, 126) => "the qrexec policy refused the call, exit code 126".into(),
        (TransportKind::Qrexec, 127) => {
            "the service is not installed in the disposable, exit code 127".into()
        }
        (TransportKind::Vm, 127) => {
            "the uvm image does not serve this service, exit code 127".into()
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

/// The argument that tells a uvm program it runs in the local sandbox and must lock itself down.
const SANDBOXED_FLAG: &str = "--sandboxed";

/// The sandbox's limits for one call: its CPU limit follows the call's deadline (the longest a
/// document of the most pages may take), so the kernel's limit is a backstop that never cuts a
/// call the caller would still wait for.
fn sandbox_policy(deadlines: &Deadlines) -> uvm_sandbox::Policy {
    let longest = deadlines.call_deadline(converter_core::limits::PDF_MAX_PAGES);
    uvm_sandbox::Policy {
        cpu_seconds: longest
            .as_secs()
            .max(uvm_sandbox::Policy::DEFAULT_CPU_SECONDS),
        ..uvm_sandbox::Policy::default()
    }
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
    fn image_folder_prefers_the_service_subfolder_then_the_folder_itself() {
        let dir = tempfile::tempdir().unwrap();
        let pdf = Service::Pdf { resolution: 150 };
        // Neither holds an image: the subfolder, whose missing kernel the boot names.
        assert_eq!(image_folder(Some(dir.path()), pdf), dir.path().join("pdf"));
        std::fs::write(dir.path().join(VMLINUX_FILE), b"").unwrap();
        assert_eq!(image_folder(Some(dir.path()), pdf), dir.path());
        std::fs::create_dir(dir.path().join("pdf")).unwrap();
        std::fs::write(dir.path().join("pdf").join(VMLINUX_FILE), b"").unwrap();
        assert_eq!(image_folder(Some(dir.path()), pdf), dir.path().join("pdf"));
        assert_eq!(
            image_folder(None, Service::Image),
            Path::new(DEFAULT_IMAGE_DIR).join("image")
        );
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
