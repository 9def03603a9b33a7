//! The few kernel calls PID 1 makes: mounts, the kernel command line, the data port, power-off.
//!
//! All of them go through rustix's safe wrappers, so this crate has no `unsafe`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::mount::{mount, MountFlags};
use rustix::system::{reboot, RebootCommand};
use rustix::termios::{isatty, tcdrain, tcgetattr, tcsetattr, OptionalActions};

use crate::cmdline::MAX_CMDLINE_LEN;

/// The virtio-serial port QEMU's `-device virtserialport,nr=1` creates on the first virtio
/// device: a plain character device, no line discipline, large buffers.
pub const VIRTIO_PORT: &str = "/dev/vport0p1";
/// A `-device virtconsole` port: a tty, put in raw mode.
pub const VIRTIO_CONSOLE: &str = "/dev/hvc0";
/// The 8250 serial port, the last resort when no virtio device exists; put in raw mode.
pub const SERIAL_PORT: &str = "/dev/ttyS0";

/// How long PID 1 waits for the data port's device node: the virtio-serial port appears only
/// after the host and guest exchanged the port's control messages, which can come after the
/// kernel started `/init`.
pub const PORT_WAIT: Duration = Duration::from_secs(3);

/// Pause between two looks for the device node.
const PORT_POLL: Duration = Duration::from_millis(2);

/// A device node whose presence means this kernel runs as a Xen guest (the event-channel
/// driver registers it only under Xen).
const XEN_MARKER: &str = "/dev/xen/evtchn";

/// The xenstore device node the kernel's xenbus driver registers under Xen.
const XENBUS_DEV: &str = "/dev/xen/xenbus";

/// Where xenfs goes when the xenstore device node is missing; the kernel creates this
/// directory in proc when it is built with xenfs's compatibility option.
const XENFS_TARGET: &str = "/proc/xen";

/// A kernel call PID 1 needed failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// Mounting a pseudo filesystem failed.
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        /// Filesystem type.
        fstype: &'static str,
        /// Mount point.
        target: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// `/proc/cmdline` could not be read.
    #[error("cannot read /proc/cmdline")]
    Cmdline(#[source] io::Error),
    /// No data port device appeared in time.
    #[error("no data port: {tried} did not appear within {waited_ms} ms")]
    NoPort {
        /// The device paths looked for.
        tried: String,
        /// How long PID 1 waited.
        waited_ms: u128,
    },
    /// The data port exists but cannot be opened or set up.
    #[error("cannot open data port {path}")]
    OpenPort {
        /// The device path.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

/// Mounts devtmpfs on `/dev` and proc on `/proc`; an existing mount is kept.
///
/// # Errors
/// [`SystemError::Mount`].
pub fn mount_pseudo_filesystems() -> Result<(), SystemError> {
    let plain = MountFlags::NOSUID | MountFlags::NOEXEC;
    mount_one("devtmpfs", "/dev", plain)?;
    mount_one("proc", "/proc", plain | MountFlags::NODEV)
}

/// Whether this kernel runs as a Xen guest (the event-channel device exists); meaningful only
/// after [`mount_pseudo_filesystems`].
pub fn is_xen() -> bool {
    Path::new(XEN_MARKER).exists()
}

/// Makes xenstore reachable: devtmpfs normally provides `/dev/xen/xenbus`; without it, xenfs
/// is mounted on `/proc/xen`, whose `xenbus` file speaks the same protocol.
///
/// # Errors
/// [`SystemError::Mount`].
pub fn mount_xenfs_if_needed() -> Result<(), SystemError> {
    if Path::new(XENBUS_DEV).exists() {
        return Ok(());
    }
    mount_one(
        "xenfs",
        XENFS_TARGET,
        MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV,
    )
}

fn mount_one(
    fstype: &'static str,
    target: &'static str,
    flags: MountFlags,
) -> Result<(), SystemError> {
    match mount(fstype, target, fstype, flags, None) {
        Ok(()) => Ok(()),
        // Already mounted (a kernel with DEVTMPFS_MOUNT does it before /init).
        Err(rustix::io::Errno::BUSY) => Ok(()),
        Err(e) => Err(SystemError::Mount {
            fstype,
            target,
            source: e.into(),
        }),
    }
}

/// The kernel command line, read from `/proc/cmdline` (at most [`MAX_CMDLINE_LEN`] bytes are
/// kept; the parser refuses a longer text).
///
/// # Errors
/// [`SystemError::Cmdline`].
pub fn read_kernel_cmdline() -> Result<String, SystemError> {
    let file = File::open("/proc/cmdline").map_err(SystemError::Cmdline)?;
    let mut text = String::new();
    file.take(MAX_CMDLINE_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(SystemError::Cmdline)?;
    Ok(text)
}

/// Opens the data port: `explicit` when the command line named one, else [`VIRTIO_PORT`],
/// falling back to [`VIRTIO_CONSOLE`] and then [`SERIAL_PORT`] once [`PORT_WAIT`] has passed.
/// A tty is switched to raw mode so that no byte is translated or echoed.
///
/// # Errors
/// [`SystemError::NoPort`] or [`SystemError::OpenPort`].
pub fn open_data_port(explicit: Option<&Path>) -> Result<File, SystemError> {
    let path = match explicit {
        Some(p) => wait_for(p, PORT_WAIT).ok_or_else(|| SystemError::NoPort {
            tried: p.display().to_string(),
            waited_ms: PORT_WAIT.as_millis(),
        })?,
        None => wait_for(Path::new(VIRTIO_PORT), PORT_WAIT)
            .or_else(|| {
                [VIRTIO_CONSOLE, SERIAL_PORT]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
            })
            .ok_or_else(|| SystemError::NoPort {
                tried: format!("{VIRTIO_PORT}, {VIRTIO_CONSOLE}, {SERIAL_PORT}"),
                waited_ms: PORT_WAIT.as_millis(),
            })?,
    };
    let open_err = |source: io::Error| SystemError::OpenPort {
        path: path.clone(),
        source,
    };
    let port = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(open_err)?;
    if isatty(&port) {
        let mut termios = tcgetattr(&port).map_err(|e| open_err(e.into()))?;
        termios.make_raw();
        tcsetattr(&port, OptionalActions::Now, &termios).map_err(|e| open_err(e.into()))?;
    }

    Ok(port)
}

/// Waits until `path` exists, polling, for at most `limit`.
fn wait_for(path: &Path, limit: Duration) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        if path.exists() {
            return Some(path.to_path_buf());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(PORT_POLL);
    }
}

/// Longest wait, after the call's last message, for the host to close the data port.
///
/// The host reads the end of the call only as fast as it rebuilds pages, so the last pages
/// may still wait in QEMU's buffers for a few page rebuilds; 30 s covers many.
pub const HOST_CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Waits until the port's last bytes have reached the host.
///
/// A tty is drained with `tcdrain`. A virtio-serial `write` returns once the buffer is in the
/// virtqueue, not once QEMU has passed it on: a reboot then would lose what QEMU still holds
/// (the end of the output, the exit code). So the guest waits for the host to close its end
/// after reading the exit code, which the port reports as hang-up, for at most `limit`.
/// Bytes the host sends meanwhile are read and dropped.
pub fn drain_port(port: &File, limit: Duration) {
    if isatty(port) {
        let _ = tcdrain(port);
        return;
    }
    let deadline = Instant::now() + limit;
    let mut scratch = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let timeout = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(port, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return,
            Ok(_) => {
                let hung_up = fds
                    .first()
                    .is_some_and(|f| f.revents().contains(PollFlags::HUP));
                if hung_up {
                    return;
                }
                match (&*port).read(&mut scratch) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Ends the uvm.
///
/// Under QEMU: `reboot(RB_AUTOBOOT)`, which ends QEMU when the kernel has `reboot=t` and QEMU
/// runs with `-no-reboot` (a kernel without ACPI can only halt on power-off, and a halted
/// QEMU stays up). Under Xen: `RB_POWER_OFF`, which destroys the domain. If the call fails
/// (not PID 1, no privilege), the process exits with status 1; as PID 1 that panics the
/// kernel, which `panic=-1` on the command line turns into the same reboot.
pub fn power_off() -> ! {
    let command = if is_xen() {
        RebootCommand::PowerOff
    } else {
        RebootCommand::Restart
    };
    let result = reboot(command);
    let _ = io::Write::write_fmt(
        &mut io::stderr(),
        format_args!("uvm-init: power-off failed: {result:?}\n"),
    );
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// One end of a socketpair as a `File`, as the data port is one.
    fn port_pair() -> (File, UnixStream) {
        let (ours, host) = UnixStream::pair().unwrap();
        (File::from(std::os::fd::OwnedFd::from(ours)), host)
    }

    #[test]
    fn drain_returns_when_the_host_closes_after_stray_bytes() {
        let (port, mut host) = port_pair();
        host.write_all(b"stray").unwrap();
        drop(host);
        let start = Instant::now();
        drain_port(&port, Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn drain_gives_up_after_its_limit_when_the_host_stays() {
        let (port, _host) = port_pair();
        let start = Instant::now();
        drain_port(&port, Duration::from_millis(100));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(2));
    }

    #[test]
    fn explicit_port_that_never_appears_is_an_error_after_the_wait() {
        let start = Instant::now();
        let missing = Path::new("/dev/uvm-init-test-no-such-port");
        assert!(wait_for(missing, Duration::from_millis(30)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn existing_path_is_found_at_once() {
        assert_eq!(
            wait_for(Path::new("/dev/null"), Duration::ZERO),
            Some(PathBuf::from("/dev/null"))
        );
    }

    #[test]
    fn opening_a_non_tty_port_leaves_it_as_is() {
        let port = open_data_port(Some(Path::new("/dev/null"))).unwrap();
        assert!(!isatty(&port));
    }
}
