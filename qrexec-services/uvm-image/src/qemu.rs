//! The host side of a uvm under QEMU: boot the image for one call and drive that call like a
//! child process.
//!
//! QEMU runs the `microvm` machine, boots `vmlinux` through its PVH entry with the image's
//! initramfs, and carries the call on one virtio-serial port whose host end is a Unix socket in
//! a private temporary folder. The bytes on that socket are those of a qrexec data vchan, with
//! the uvm on the service side (see the `uvm-init` crate):
//!
//! | step | host (this module) | uvm (`uvm_init::run_as_pid1`) |
//! |---|---|---|
//! | 1 | HELLO | HELLO |
//! | 2 | DATA_STDIN chunks, then an empty one | reads them as the handler's stdin |
//! | 3 | reads DATA_STDOUT until the empty one | DATA_STDOUT chunks, then an empty one |
//! | 4 | reads the empty DATA_STDERR and DATA_EXIT_CODE | sends them |
//! | 5 | closes the socket | sees the port hang up (at most 30 s), reboots |
//!
//! The service and its argument travel on the kernel command line (`uvm.service=`,
//! `uvm.arg=`). The guest's reboot (`reboot=t` on the kernel command line) ends QEMU, which
//! runs with `-no-reboot`.
//!
//! [`VmStdout`] reads DATA_STDOUT payloads straight from the socket into the caller's buffer,
//! never buffering a chunk, so polling its fd ([`AsFd`]) tells truly whether stdout bytes can
//! be read. A stalled header or chunk is bounded by [`VmStdout::set_read_timeout`].
//!
//! # Limitations
//! - KVM is used only where a probe boot succeeded once (cached in [`KVM_CACHE_FILE`]); many
//!   hosts boot only under TCG, about ten times slower.
//! - The serial console is kept only as a tail of [`CONSOLE_KEEP_BYTES`] for error messages.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qrexec::proto::{
    msg_type, negotiate, read_message, write_message, Header, Message, ProtoError, HEADER_LEN,
    MAX_DATA_CHUNK, PROTOCOL_VERSION,
};
use uvm_init::cmdline::CallRequest;
use uvm_init::system::{SERIAL_PORT, VIRTIO_PORT};

use crate::image::{INITRAMFS_FILE, VMLINUX_FILE};

/// The QEMU program, found on `PATH`.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";

/// Guest memory in MiB when the caller names none.
///
/// Measured with `vm-bench --find-memory` (8 MiB steps) on the 10-page A4 text PDF of the test
/// corpus: 56 MiB converts it at 150 ppi, 72 MiB at 300 ppi (the commands' default); below
/// 56 MiB the pdf image does not even boot. 256 MiB leaves room for an A3 page at 300 ppi
/// (about 120 MB of bitmaps) and for the kernel's copies of output the host has not yet read.
/// QEMU touches guest memory only as the guest uses it, so the margin costs the host little.
pub const DEFAULT_MEMORY_MB: u32 = 256;

/// Longest wait from QEMU's start to the uvm's HELLO. TCG boots in about a second on an idle
/// machine; the margin covers a loaded 2-core host.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest wait for a KVM probe boot; a working KVM boots in a fraction of a second.
pub const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the KVM probe's answer (`kvm` or `tcg`) is kept; delete it to probe again.
pub const KVM_CACHE_FILE: &str = "/var/cache/trusted-converters/kvm-works";

/// Environment variable forcing the accelerator: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "UVM_ACCEL";

/// Bytes of serial console output kept (the last ones) for error messages.
pub const CONSOLE_KEEP_BYTES: usize = 16 * 1024;

/// Bytes of the uvm's DATA_STDERR kept (the first ones); the rest is read and dropped.
pub const STDERR_KEEP_BYTES: usize = 64 * 1024;

/// Bytes of QEMU's own stderr kept for error messages.
const QEMU_STDERR_KEEP_BYTES: usize = 4096;

/// Kernel command-line words before the call's own: serial console for the kernel log,
/// reboot by triple fault (ends QEMU under `-no-reboot`), reboot at once on a panic (PID 1
/// dying), and the TCG boot-time savers measured on this project's machines.
pub const KERNEL_ARGS: &str = "reboot=t panic=-1 noapictimer lpj=500000 quiet";

/// Pause between attempts to connect to QEMU's socket while it starts.
const CONNECT_POLL: Duration = Duration::from_millis(1);

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// The name QEMU and [`ACCEL_ENV`] use.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn parse(text: &str) -> Option<Accel> {
        match text.trim() {
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

/// The device that carries the call inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPort {
    /// A virtio-serial port on virtio-mmio ([`VIRTIO_PORT`]), the console on the 8250
    /// serial: large buffers, and what the project's kernel is built for.
    #[default]
    Virtio,
    /// The 8250 serial port ([`SERIAL_PORT`]), for kernels whose virtio drivers are modules
    /// (a distribution's kernel in a comparison). `microvm` has only that one serial port, so
    /// the guest runs without a console and a failure leaves no line to report. Slow for bulk
    /// data, since every byte is an emulated port access.
    Serial,
}

/// How to start a uvm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOptions {
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// The guest device that carries the call.
    pub data_port: DataPort,
    /// The accelerator; `None` chooses with [`choose_accel`].
    pub accel: Option<Accel>,
    /// The QEMU program.
    pub qemu: PathBuf,
    /// Longest wait for the uvm's HELLO.
    pub boot_timeout: Duration,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            memory_mb: DEFAULT_MEMORY_MB,
            data_port: DataPort::default(),
            accel: None,
            qemu: PathBuf::from(QEMU_PROGRAM),
            boot_timeout: BOOT_TIMEOUT,
        }
    }
}

/// A uvm that could not be started or whose call failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The image folder lacks a file.
    #[error("image file {path} is missing")]
    MissingImage {
        /// The missing file.
        path: PathBuf,
    },
    /// The service or argument cannot go on a kernel command line.
    #[error("invalid call")]
    InvalidCall(#[from] uvm_init::CmdlineError),
    /// The private socket folder could not be made.
    #[error("cannot create the data socket folder")]
    SocketDir(#[source] io::Error),
    /// QEMU could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// QEMU ended before the uvm said HELLO.
    #[error("qemu ended before the uvm was ready ({status}): {detail}")]
    QemuExited {
        /// Its exit status.
        status: String,
        /// The first line of its stderr, or the console's last line.
        detail: String,
    },
    /// No HELLO within the boot timeout.
    #[error("uvm sent no hello within {} ms; console: {console}", waited.as_millis())]
    BootTimeout {
        /// The timeout.
        waited: Duration,
        /// The console's last line.
        console: String,
    },
    /// The HELLO exchange broke the protocol.
    #[error("hello exchange with the uvm failed")]
    Hello(#[source] ProtoError),
    /// The uvm's messages broke the protocol.
    #[error("uvm broke the data protocol: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The data port closed before DATA_EXIT_CODE.
    #[error("uvm ended without an exit code; console: {console}")]
    NoExitCode {
        /// The console's last line.
        console: String,
    },
    /// The call did not end within its time.
    #[error("uvm call did not end within {} ms", limit.as_millis())]
    Timeout {
        /// The time allowed.
        limit: Duration,
    },
    /// The data socket failed.
    #[error("data socket failed")]
    Io(#[source] io::Error),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// The service's exit code from DATA_EXIT_CODE.
    pub exit_code: i32,
    /// The first [`STDERR_KEEP_BYTES`] of the uvm's DATA_STDERR.
    pub stderr: Vec<u8>,
    /// Whether QEMU ended by itself (the uvm rebooted) rather than being killed.
    pub powered_off: bool,
}

/// The QEMU arguments for one call (everything after the program name).
pub fn qemu_args(
    image_dir: &Path,
    request: &CallRequest,
    accel: Accel,
    data_port: DataPort,
    memory_mb: u32,
    socket: &Path,
) -> Result<Vec<String>, VmError> {
    let cpu = match accel {
        Accel::Kvm => "host",
        Accel::Tcg => "max",
    };
    // Kernel messages on the data port would break the call: no console there.
    let console = match data_port {
        DataPort::Virtio => "console=ttyS0 ",
        DataPort::Serial => "",
    };
    let append = format!("{console}{KERNEL_ARGS} {}", request.to_kernel_words()?);
    let mut args = [
        "-M",
        "microvm,acpi=off",
        "-accel",
        accel.name(),
        "-cpu",
        cpu,
        "-m",
        &memory_mb.to_string(),
        "-smp",
        "1",
        "-no-reboot",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-kernel",
        &image_dir.join(VMLINUX_FILE).display().to_string(),
        "-initrd",
        &image_dir.join(INITRAMFS_FILE).display().to_string(),
        "-append",
        &append,
    ]
    .map(str::to_owned)
    .to_vec();
    let chardev = format!(
        "socket,id=data,path={},server=on,wait=off",
        socket.display()
    );
    match data_port {
        DataPort::Virtio => args.extend(
            [
                "-serial",
                "stdio",
                "-device",
                "virtio-serial-device",
                "-chardev",
                &chardev,
                "-device",
                "virtserialport,chardev=data,nr=1,name=uvm.data",
            ]
            .map(str::to_owned),
        ),
        DataPort::Serial => {
            args.extend(["-chardev", &chardev, "-serial", "chardev:data"].map(str::to_owned))
        }
    }

    Ok(args)
}

/// Boots the image in `image_dir` for `service` (with `arg`) and returns the call once the
/// uvm said HELLO, with default options and `memory_mb` of guest memory.
///
/// # Errors
/// See [`VmError`].
pub fn start_vm(
    image_dir: &Path,
    service: &str,
    arg: Option<&str>,
    memory_mb: u32,
) -> Result<VmCall, VmError> {
    let options = VmOptions {
        memory_mb,
        ..VmOptions::default()
    };
    start_vm_with(image_dir, service, arg, &options)
}

/// As [`start_vm`], with every option.
///
/// # Errors
/// See [`VmError`].
pub fn start_vm_with(
    image_dir: &Path,
    service: &str,
    arg: Option<&str>,
    options: &VmOptions,
) -> Result<VmCall, VmError> {
    let accel = match options.accel {
        Some(a) => a,
        None => choose_accel(image_dir, options),
    };
    boot(image_dir, service, arg, options, accel)
}

/// The accelerator to use: [`ACCEL_ENV`] if set, TCG without a usable `/dev/kvm`, else the
/// answer cached in [`KVM_CACHE_FILE`], else a probe boot of `image_dir` under KVM (cached).
pub fn choose_accel(image_dir: &Path, options: &VmOptions) -> Accel {
    if let Some(forced) = std::env::var(ACCEL_ENV).ok().and_then(|v| Accel::parse(&v)) {
        return forced;
    }
    let kvm_usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm_usable {
        return Accel::Tcg;
    }
    if let Some(cached) = fs::read_to_string(KVM_CACHE_FILE)
        .ok()
        .and_then(|t| Accel::parse(&t))
    {
        return cached;
    }

    let probe = VmOptions {
        boot_timeout: KVM_PROBE_TIMEOUT,
        ..options.clone()
    };
    let answer = match boot(image_dir, uvm_init::ECHO_SERVICE, None, &probe, Accel::Kvm) {
        Ok(mut call) => {
            call.kill();
            Some(Accel::Kvm)
        }
        Err(VmError::BootTimeout { .. } | VmError::QemuExited { .. } | VmError::Hello(_)) => {
            Some(Accel::Tcg)
        }
        // The image or QEMU itself is broken: no answer about KVM to keep.
        Err(_) => None,
    };
    match answer {
        Some(accel) => {
            if let Some(dir) = Path::new(KVM_CACHE_FILE).parent() {
                let _ = fs::create_dir_all(dir);
            }
            let _ = fs::write(KVM_CACHE_FILE, accel.name());
            accel
        }
        None => Accel::Tcg,
    }
}

fn boot(
    image_dir: &Path,
    service: &str,
    arg: Option<&str>,
    options: &VmOptions,
    accel: Accel,
) -> Result<VmCall, VmError> {
    for name in [VMLINUX_FILE, INITRAMFS_FILE] {
        let path = image_dir.join(name);
        if !path.is_file() {
            return Err(VmError::MissingImage { path });
        }
    }
    let request = CallRequest {
        service: service.to_owned(),
        arg: arg.unwrap_or_default().to_owned(),
        port: Some(PathBuf::from(match options.data_port {
            DataPort::Virtio => VIRTIO_PORT,
            DataPort::Serial => SERIAL_PORT,
        })),
    };
    // The socket's folder is private (mode 0700), so no other user can connect first.
    let dir = tempfile::Builder::new()
        .prefix("uvm-")
        .tempdir()
        .map_err(VmError::SocketDir)?;
    let socket_path = dir.path().join("data.sock");
    let args = qemu_args(
        image_dir,
        &request,
        accel,
        options.data_port,
        options.memory_mb,
        &socket_path,
    )?;

    let start = Instant::now();
    let mut child = Command::new(&options.qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| VmError::Spawn {
            program: options.qemu.display().to_string(),
            source,
        })?;
    let console = Arc::new(Mutex::new(Vec::new()));
    let console_thread = child
        .stdout
        .take()
        .map(|out| spawn_console_tail(out, Arc::clone(&console)));
    let qemu_stderr = child.stderr.take().map(spawn_stderr_head);

    let mut call = VmCall {
        child,
        _socket_dir: dir,
        stdin: None,
        stdout: None,
        reader: None,
        console,
        threads: console_thread.into_iter().collect(),
        qemu_stderr,
        boot_time: Duration::ZERO,
        accel,
        version: 0,
    };
    let deadline = start + options.boot_timeout;
    let mut sock = call.connect(&socket_path, deadline)?;

    // On virtio, our HELLO waits in QEMU until the guest opens its port. An 8250 port takes
    // bytes at once and drops those that arrive before the guest opened it, so there ours
    // goes only after theirs. Their HELLO marks the end of the boot.
    let ours = Message::Hello {
        version: PROTOCOL_VERSION,
    };
    if options.data_port == DataPort::Virtio {
        write_message(&mut sock, &ours).map_err(VmError::Hello)?;
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    sock.set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
        .map_err(VmError::Io)?;
    let theirs = match read_message(&mut sock) {
        Ok(Message::Hello { version }) => version,
        Ok(other) => {
            return Err(VmError::Hello(ProtoError::UnexpectedMessage {
                msg_type: other.msg_type(),
                context: "waiting for HELLO",
            }))
        }
        Err(ProtoError::Transport(e)) if is_timeout(&e) => {
            return Err(VmError::BootTimeout {
                waited: options.boot_timeout,
                console: call.console_last_line(),
            })
        }
        // QEMU gone (a kernel panic reboots it, e.g. with too little memory): say why.
        Err(_) if call.qemu_ended() => return Err(call.exited_early()),
        Err(e) => return Err(VmError::Hello(e)),
    };
    call.boot_time = start.elapsed();
    if options.data_port == DataPort::Serial {
        write_message(&mut sock, &ours).map_err(VmError::Hello)?;
    }
    call.version = negotiate(PROTOCOL_VERSION, theirs).map_err(VmError::Hello)?;
    sock.set_read_timeout(None).map_err(VmError::Io)?;

    let writer = sock.try_clone().map_err(VmError::Io)?;
    let poll_fd = sock.try_clone().map_err(VmError::Io)?;
    let reader = Arc::new(Mutex::new(FrameReader::new(sock)));
    call.stdin = Some(VmStdin {
        sock: writer,
        closed: false,
    });
    call.stdout = Some(VmStdout {
        reader: Arc::clone(&reader),
        poll_fd,
    });
    call.reader = Some(reader);

    Ok(call)
}

/// Keeps the last [`CONSOLE_KEEP_BYTES`] of the serial console; reads until QEMU ends.
fn spawn_console_tail(mut out: ChildStdout, tail: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut kept = tail.lock().unwrap_or_else(PoisonError::into_inner);
            kept.extend_from_slice(buf.get(..n).unwrap_or_default());
            let excess = kept.len().saturating_sub(CONSOLE_KEEP_BYTES);
            kept.drain(..excess);
        }
    })
}

/// Keeps the first bytes of QEMU's stderr and drops the rest.
fn spawn_stderr_head(mut err: ChildStderr) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut err)
            .take(QEMU_STDERR_KEEP_BYTES as u64)
            .read_to_end(&mut kept);
        let _ = io::copy(&mut err, &mut io::sink());
        kept
    })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The line of `bytes` that best says why a uvm ended: the last one from uvm-init or a kernel
/// panic, else the last non-empty one; control characters dropped, at most 300 characters.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines = || text.lines().map(str::trim);
    let line = lines()
        .rfind(|l| l.contains("uvm-init:") || l.contains("Kernel panic"))
        .or_else(|| lines().rfind(|l| !l.is_empty()))
        .unwrap_or("(no output)");
    line.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// One uvm call in progress.
///
/// Like a child process: [`VmCall::take_stdin`] for the document (drop it to send EOF),
/// [`VmCall::take_stdout`] for the output, [`VmCall::wait`] for the exit code,
/// [`VmCall::kill`] to stop it. Dropping the call kills QEMU if it still runs.
pub struct VmCall {
    child: Child,
    _socket_dir: tempfile::TempDir,
    stdin: Option<VmStdin>,
    stdout: Option<VmStdout>,
    reader: Option<Arc<Mutex<FrameReader>>>,
    console: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
    qemu_stderr: Option<JoinHandle<Vec<u8>>>,
    boot_time: Duration,
    accel: Accel,
    version: u32,
}

impl std::fmt::Debug for VmCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmCall")
            .field("pid", &self.child.id())
            .field("accel", &self.accel)
            .field("boot_time", &self.boot_time)
            .finish_non_exhaustive()
    }
}

impl VmCall {
    /// The document's way in; dropping it (or [`VmStdin::close`]) sends the empty
    /// DATA_STDIN that is EOF.
    pub fn take_stdin(&mut self) -> Option<VmStdin> {
        self.stdin.take()
    }

    /// The service's stdout, ending at the empty DATA_STDOUT.
    pub fn take_stdout(&mut self) -> Option<VmStdout> {
        self.stdout.take()
    }

    /// Time from QEMU's start to the uvm's HELLO.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The accelerator QEMU runs with.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The protocol version agreed with the uvm.
    pub fn protocol_version(&self) -> u32 {
        self.version
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last line of the serial console (kernel messages and uvm-init's one line).
    pub fn console_last_line(&self) -> String {
        last_line(&self.console.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sends EOF if the stdin was not taken, reads what is left of stdout (dropping it), and
    /// returns the exit code; then waits for QEMU to end by itself. All of it within `limit`.
    ///
    /// # Errors
    /// [`VmError::Timeout`], [`VmError::NoExitCode`] (the uvm died or the data port closed),
    /// [`VmError::Protocol`] or [`VmError::Io`]. QEMU is killed on every error.
    pub fn wait(&mut self, limit: Duration) -> Result<VmExit, VmError> {
        let deadline = Instant::now() + limit;
        self.stdin = None;
        self.stdout = None;
        let Some(reader) = self.reader.clone() else {
            return Err(VmError::Protocol {
                reason: "call already waited for".to_owned(),
            });
        };
        let outcome = reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_to_exit(deadline, limit);
        let (exit_code, stderr) = match outcome {
            Ok(done) => done,
            Err(e) => {
                self.kill();
                return Err(match e {
                    VmError::NoExitCode { .. } => VmError::NoExitCode {
                        console: self.console_last_line(),
                    },
                    other => other,
                });
            }
        };
        // Closing our end tells the guest that everything arrived: it waits for that before
        // it reboots (see `uvm_init::system::drain_port`).
        let _ = reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sock
            .shutdown(std::net::Shutdown::Both);
        self.reader = None;

        let powered_off = loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() >= deadline => {
                    self.kill();
                    break false;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(VmError::Io(e)),
            }
        };

        Ok(VmExit {
            exit_code,
            stderr,
            powered_off,
        })
    }

    /// Whether the uvm's stdout has ended (its empty DATA_STDOUT was read): the uvm is then
    /// sending its exit code. `false` while another thread is inside a read.
    pub fn stdout_ended(&self) -> bool {
        self.reader
            .as_ref()
            .and_then(|r| r.try_lock().ok())
            .is_some_and(|r| r.stdout_done)
    }

    /// Kills QEMU at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Connects to QEMU's socket, retrying while QEMU starts.
    fn connect(&mut self, path: &Path, deadline: Instant) -> Result<UnixStream, VmError> {
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.exited_early());
            }
            match UnixStream::connect(path) {
                Ok(sock) => return Ok(sock),
                Err(_) if Instant::now() < deadline => std::thread::sleep(CONNECT_POLL),
                Err(_) => {
                    return Err(VmError::BootTimeout {
                        waited: deadline.saturating_duration_since(Instant::now()),
                        console: self.console_last_line(),
                    })
                }
            }
        }
    }

    /// Whether QEMU ended, waiting a moment for a QEMU that is closing down.
    fn qemu_ended(&mut self) -> bool {
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The error for a QEMU that ended before HELLO, with its stderr's first line.
    fn exited_early(&mut self) -> VmError {
        let status = match self.child.wait() {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        let stderr = self
            .qemu_stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // QEMU is gone, so the console reader has seen all of its output.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let detail = if stderr.is_empty() {
            self.console_last_line()
        } else {
            last_line(&stderr)
        };
        VmError::QemuExited { status, detail }
    }
}

impl Drop for VmCall {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The write side of a call: each write becomes one DATA_STDIN chunk of at most 64 KiB.
#[derive(Debug)]
pub struct VmStdin {
    sock: UnixStream,
    closed: bool,
}

impl VmStdin {
    /// Sends EOF (the empty DATA_STDIN).
    ///
    /// # Errors
    /// The socket's failure.
    pub fn close(mut self) -> io::Result<()> {
        self.send_eof()
    }

    /// Bounds each write: a uvm that stops reading makes writes fail with `WouldBlock`
    /// after `timeout` instead of blocking forever.
    ///
    /// # Errors
    /// The socket's failure.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }

    fn send_eof(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        write_message(&mut self.sock, &Message::DataStdin(Vec::new())).map_err(proto_to_io)
    }
}

impl Write for VmStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin already closed",
            ));
        }
        // An empty chunk is EOF on the wire: never send one for an empty write.
        if buf.is_empty() {
            return Ok(0);
        }
        let chunk = buf.get(..MAX_DATA_CHUNK).unwrap_or(buf);
        let header = Header {
            msg_type: msg_type::DATA_STDIN,
            // A chunk is at most MAX_DATA_CHUNK (64 KiB) long.
            len: chunk.len() as u32,
        };
        let mut frame = Vec::with_capacity(HEADER_LEN + chunk.len());
        frame.extend_from_slice(&header.to_bytes());
        frame.extend_from_slice(chunk);
        if let Err(e) = self.sock.write_all(&frame) {
            // Part of a frame may have gone out: the stream cannot carry another message.
            self.closed = true;
            return Err(e);
        }
        Ok(chunk.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl Drop for VmStdin {
    fn drop(&mut self) {
        let _ = self.send_eof();
    }
}

fn proto_to_io(e: ProtoError) -> io::Error {
    match e {
        ProtoError::Transport(io) => io,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// The read side of a call: the DATA_STDOUT bytes, EOF at the empty chunk.
///
/// A data port that closes before the empty chunk (the uvm died, QEMU ended) is an
/// `UnexpectedEof` error; any other breach of the protocol is `InvalidData`.
///
/// DATA_STDERR chunks met on the way are kept (the first [`STDERR_KEEP_BYTES`]) for
/// [`VmCall::wait`]. Its fd is the data socket: readable means a stdout byte or a message
/// header is there.
pub struct VmStdout {
    reader: Arc<Mutex<FrameReader>>,
    poll_fd: UnixStream,
}

impl std::fmt::Debug for VmStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmStdout").finish_non_exhaustive()
    }
}

impl VmStdout {
    /// Bounds each read from the socket: a uvm silent for `timeout` (even inside a message)
    /// makes the read fail with `WouldBlock`/`TimedOut`.
    ///
    /// # Errors
    /// The socket's failure.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.poll_fd.set_read_timeout(timeout)
    }
}

impl Read for VmStdout {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_stdout(buf)
    }
}

impl AsFd for VmStdout {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.poll_fd.as_fd()
    }
}

/// Reads the uvm's messages from the data socket, stdout payloads straight into the caller's
/// buffer.
#[derive(Debug)]
struct FrameReader {
    sock: UnixStream,
    /// Bytes of the current DATA_STDOUT chunk not yet read.
    chunk_left: usize,
    stdout_done: bool,
    stderr: Vec<u8>,
    /// The first protocol or stream error; the stream is no longer at a message boundary.
    broken: Option<String>,
}

impl FrameReader {
    fn new(sock: UnixStream) -> Self {
        FrameReader {
            sock,
            chunk_left: 0,
            stdout_done: false,
            stderr: Vec::new(),
            broken: None,
        }
    }

    fn fail(&mut self, reason: String) -> io::Error {
        self.broken.get_or_insert(reason.clone());
        io::Error::new(io::ErrorKind::InvalidData, reason)
    }

    /// As [`FrameReader::fail`] for a data port that closed (the uvm died or QEMU ended):
    /// `UnexpectedEof`, so a caller can tell it from a protocol breach.
    fn closed(&mut self, reason: &str) -> io::Error {
        self.broken.get_or_insert_with(|| reason.to_owned());
        io::Error::new(io::ErrorKind::UnexpectedEof, reason)
    }

    fn check(&self) -> io::Result<()> {
        match &self.broken {
            Some(reason) => Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone())),
            None => Ok(()),
        }
    }

    fn read_stdout(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.stdout_done {
                return Ok(0);
            }
            if self.chunk_left > 0 {
                let want = buf.len().min(self.chunk_left);
                let dst = buf.get_mut(..want).unwrap_or_default();
                let n = match self.sock.read(dst) {
                    Ok(0) => return Err(self.closed("data port closed inside a chunk")),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // A timeout mid-chunk leaves the position known: the read may resume.
                        return Err(e);
                    }
                };
                self.chunk_left -= n;
                return Ok(n);
            }
            let header = self.read_header()?;
            match header.msg_type {
                msg_type::DATA_STDOUT if header.len == 0 => self.stdout_done = true,
                msg_type::DATA_STDOUT => self.chunk_left = header.len as usize,
                msg_type::DATA_STDERR => self.read_stderr(header.len as usize)?,
                other => {
                    return Err(self.fail(format!("message {other:#x} before the end of stdout")))
                }
            }
        }
    }

    /// Reads and checks one header. A timeout inside a header breaks the stream.
    fn read_header(&mut self) -> io::Result<Header> {
        let mut raw = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            let rest = raw.get_mut(got..).unwrap_or_default();
            match self.sock.read(rest) {
                Ok(0) if got == 0 => {
                    return Err(self.closed("data port closed before the end of the call"))
                }
                Ok(0) => return Err(self.closed("data port closed inside a header")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if got == 0 => return Err(e),
                Err(e) => {
                    let _ = self.fail(format!("header cut off: {e}"));
                    return Err(e);
                }
            }
        }
        let header = Header::from_bytes(raw);
        if let Err(e) = header.validate() {
            return Err(self.fail(e.to_string()));
        }
        Ok(header)
    }

    /// Reads one DATA_STDERR payload, keeping the first [`STDERR_KEEP_BYTES`] overall.
    fn read_stderr(&mut self, len: usize) -> io::Result<()> {
        // `validate` capped len at MAX_DATA_CHUNK.
        let mut payload = vec![0u8; len];
        if let Err(e) = self.sock.read_exact(&mut payload) {
            return Err(self.fail(format!("stderr chunk cut off: {e}")));
        }
        let room = STDERR_KEEP_BYTES.saturating_sub(self.stderr.len());
        self.stderr
            .extend_from_slice(payload.get(..room.min(len)).unwrap_or_default());
        Ok(())
    }

    /// Drops the rest of stdout, then reads up to DATA_EXIT_CODE, all before `deadline`.
    fn read_to_exit(
        &mut self,
        deadline: Instant,
        limit: Duration,
    ) -> Result<(i32, Vec<u8>), VmError> {
        let arm = |sock: &UnixStream| -> Result<(), VmError> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VmError::Timeout { limit });
            }
            sock.set_read_timeout(Some(left)).map_err(VmError::Io)
        };
        let classify = |this: &Self, e: io::Error| -> VmError {
            if is_timeout(&e) {
                VmError::Timeout { limit }
            } else if this
                .broken
                .as_deref()
                .is_some_and(|r| r.starts_with("data port closed"))
            {
                VmError::NoExitCode {
                    console: String::new(),
                }
            } else {
                VmError::Protocol {
                    reason: e.to_string(),
                }
            }
        };

        let mut scratch = vec![0u8; MAX_DATA_CHUNK];
        while !self.stdout_done {
            arm(&self.sock)?;
            if let Err(e) = self.read_stdout(&mut scratch) {
                return Err(classify(self, e));
            }
        }
        loop {
            arm(&self.sock)?;
            let header = self.read_header().map_err(|e| classify(self, e))?;
            match header.msg_type {
                msg_type::DATA_STDERR => {
                    self.read_stderr(header.len as usize)
                        .map_err(|e| classify(self, e))?;
                }
                msg_type::DATA_EXIT_CODE => {
                    // `validate` capped len at the control-message limit.
                    let mut payload = vec![0u8; header.len as usize];
                    self.sock
                        .read_exact(&mut payload)
                        .map_err(|e| classify(self, e))?;
                    return match Message::decode(header, &payload) {
                        Ok(Message::DataExitCode(code)) => {
                            Ok((code, std::mem::take(&mut self.stderr)))
                        }
                        Ok(_) | Err(_) => Err(VmError::Protocol {
                            reason: "malformed DATA_EXIT_CODE".to_owned(),
                        }),
                    };
                }
                other => {
                    return Err(VmError::Protocol {
                        reason: format!("message {other:#x} after the end of stdout"),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A FrameReader on one end of a socketpair, the other end playing the uvm.
    fn pair() -> (FrameReader, UnixStream) {
        let (host, guest) = UnixStream::pair().unwrap();
        (FrameReader::new(host), guest)
    }

    fn send(guest: &mut UnixStream, msgs: &[Message]) {
        for m in msgs {
            write_message(guest, m).unwrap();
        }
    }

    #[test]
    fn stdout_chunks_are_read_without_buffering_and_end_at_the_empty_chunk() {
        let (mut r, mut guest) = pair();
        send(
            &mut guest,
            &[
                Message::DataStdout(b"abcdef".to_vec()),
                Message::DataStderr(b"warn".to_vec()),
                Message::DataStdout(b"gh".to_vec()),
                Message::DataStdout(Vec::new()),
            ],
        );
        let mut small = [0u8; 4];
        assert_eq!(r.read_stdout(&mut small).unwrap(), 4);
        assert_eq!(&small, b"abcd");
        // The rest of the chunk is still in the socket, not in a buffer of ours.
        assert_eq!(r.chunk_left, 2);
        let mut rest = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = r.read_stdout(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
        assert_eq!(rest, b"efgh");
        assert_eq!(r.stderr, b"warn");
    }

    #[test]
    fn exit_code_follows_the_eofs() {
        let (mut r, mut guest) = pair();
        send(
            &mut guest,
            &[
                Message::DataStdout(b"dropped".to_vec()),
                Message::DataStdout(Vec::new()),
                Message::DataStderr(Vec::new()),
                Message::DataExitCode(3),
            ],
        );
        let (code, stderr) = r
            .read_to_exit(
                Instant::now() + Duration::from_secs(5),
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!((code, stderr), (3, Vec::new()));
    }

    #[test]
    fn closing_before_the_exit_code_is_no_exit_code() {
        let (mut r, mut guest) = pair();
        send(&mut guest, &[Message::DataStdout(Vec::new())]);
        drop(guest);
        let err = r
            .read_to_exit(
                Instant::now() + Duration::from_secs(5),
                Duration::from_secs(5),
            )
            .unwrap_err();
        assert!(matches!(err, VmError::NoExitCode { .. }), "{err:?}");
    }

    #[test]
    fn silent_uvm_times_out() {
        let (mut r, _guest) = pair();
        let start = Instant::now();
        let err = r
            .read_to_exit(
                Instant::now() + Duration::from_millis(50),
                Duration::from_millis(50),
            )
            .unwrap_err();
        assert!(matches!(err, VmError::Timeout { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn exit_code_before_end_of_stdout_is_a_protocol_error() {
        let (mut r, mut guest) = pair();
        send(&mut guest, &[Message::DataExitCode(0)]);
        let mut buf = [0u8; 8];
        let err = r.read_stdout(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // The stream stays broken.
        assert!(r.read_stdout(&mut buf).is_err());
    }

    #[test]
    fn port_closing_mid_stdout_is_unexpected_eof() {
        let (mut r, mut guest) = pair();
        send(&mut guest, &[Message::DataStdout(b"ab".to_vec())]);
        drop(guest);
        let mut buf = [0u8; 8];
        assert_eq!(r.read_stdout(&mut buf).unwrap(), 2);
        let err = r.read_stdout(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn oversized_chunk_header_is_refused_before_reading_it() {
        let (mut r, mut guest) = pair();
        let header = Header {
            msg_type: msg_type::DATA_STDOUT,
            len: 1 << 30,
        };
        guest.write_all(&header.to_bytes()).unwrap();
        let mut buf = [0u8; 8];
        assert!(r.read_stdout(&mut buf).is_err());
    }

    #[test]
    fn stdin_writes_become_chunks_and_drop_sends_eof() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let reader = thread::spawn(move || {
            let mut msgs = Vec::new();
            loop {
                match read_message(&mut guest) {
                    Ok(Message::DataStdin(c)) if c.is_empty() => {
                        msgs.push(0);
                        return msgs;
                    }
                    Ok(Message::DataStdin(c)) => msgs.push(c.len()),
                    other => panic!("{other:?}"),
                }
            }
        });
        let mut stdin = VmStdin {
            sock: host,
            closed: false,
        };
        stdin.write_all(&vec![1u8; 70_000]).unwrap();
        drop(stdin);
        assert_eq!(reader.join().unwrap(), [65_536, 70_000 - 65_536, 0]);
    }

    #[test]
    fn qemu_arguments_carry_the_call_on_the_kernel_command_line() {
        let req = CallRequest {
            service: "qubes.PdfConvert".into(),
            arg: "150".into(),
            port: Some(PathBuf::from(VIRTIO_PORT)),
        };
        let args = qemu_args(
            Path::new("/img"),
            &req,
            Accel::Tcg,
            DataPort::Virtio,
            256,
            Path::new("/tmp/x/data.sock"),
        )
        .unwrap();
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(append.ends_with("uvm.service=qubes.PdfConvert uvm.arg=150 uvm.port=/dev/vport0p1"));
        assert!(args.contains(&"/img/vmlinux".to_owned()));
        assert!(args.contains(&"-no-reboot".to_owned()));
    }

    #[test]
    fn serial_data_port_has_no_console_on_it() {
        let req = CallRequest {
            service: "uvm.Echo".into(),
            arg: String::new(),
            port: Some(PathBuf::from(SERIAL_PORT)),
        };
        let args = qemu_args(
            Path::new("/img"),
            &req,
            Accel::Tcg,
            DataPort::Serial,
            256,
            Path::new("/tmp/x/data.sock"),
        )
        .unwrap();
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(!append.contains("console="), "{append}");
        assert!(args.contains(&"chardev:data".to_owned()));
        assert!(!args.iter().any(|a| a.starts_with("virt")));
    }

    #[test]
    fn console_summary_prefers_the_panic_line() {
        let console =
            b"[ 0.1] x\nKernel panic - not syncing: Out of memory\nKernel Offset: disabled\n";
        assert_eq!(
            last_line(console),
            "Kernel panic - not syncing: Out of memory"
        );
        assert_eq!(last_line(b"a\nb\n\n"), "b");
    }

    #[test]
    fn missing_image_is_reported_before_starting_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let options = VmOptions {
            accel: Some(Accel::Tcg),
            ..VmOptions::default()
        };
        let err = start_vm_with(dir.path(), "uvm.Echo", None, &options).unwrap_err();
        assert!(matches!(err, VmError::MissingImage { .. }), "{err:?}");
    }
}
