//! PID 1 of a uvm booted under QEMU: serve exactly one qrexec call on a serial port, then power off.
//!
//! A uvm program (pdf-uvm, image-uvm) calls [`run_as_pid1`] from `main` when [`is_pid1`] says it
//! is the init process. That function:
//!
//! 1. mounts devtmpfs on `/dev` and proc on `/proc` ([`system`]);
//! 2. reads the call from the kernel command line ([`cmdline`]): `uvm.service=NAME`,
//!    optionally `uvm.arg=ARG` and `uvm.port=/dev/...`;
//! 3. opens the data port: the virtio-serial port `/dev/vport0p1` that QEMU's
//!    `-device virtserialport` creates, else `/dev/hvc0` (a `virtconsole`), else the 8250
//!    `/dev/ttyS0`; tty ports are put in raw mode;
//! 4. speaks the service side of a qrexec data vchan on it ([`call`]): HELLO both ways, the
//!    caller's DATA_STDIN until the empty chunk, the handler's DATA_STDOUT and DATA_STDERR,
//!    then empty STDOUT, empty STDERR and DATA_EXIT_CODE;
//! 5. powers off: `reboot(RB_AUTOBOOT)`, which with `reboot=t` on the kernel command line and
//!    QEMU's `-no-reboot` ends QEMU (without ACPI a power-off would only halt the CPU); on Xen,
//!    where `/dev/xen/evtchn` exists, `RB_POWER_OFF`.
//!
//! Under Xen (PVH), where `/dev/xen/evtchn` exists after step 1, steps 2 to 4 are replaced by
//! the qrexec agent ([`agent`]): xenfs is mounted if `/dev/xen/xenbus` is missing, the control
//! vchan is offered to dom0, the one call dom0 forwards is served on a data vchan to the
//! caller, and CONNECTION_TERMINATED is sent; then step 5 powers off with `RB_POWER_OFF`.
//!
//! Any failure prints one line on the console and powers off: the host then sees the data port
//! close without an exit code. Nothing is forked and nothing is reaped: the handler runs in this
//! process.
//!
//! Outside a uvm, [`run_as_socket_agent`] serves one call as the same agent over the
//! Unix-socket vchan layout (tests, and driving the program with a qrexec daemon built for
//! sockets).
//!
//! # Limitations
//! - The Xen path has not run on Xen (this project's machines have none); see [`agent`].

#![deny(missing_docs)]

pub mod agent;
pub mod call;
pub mod cmdline;
pub mod echo;
pub mod system;

pub use call::{serve_call, CallError, CallReport};
pub use cmdline::{CallRequest, CmdlineError};
pub use echo::{EchoHandler, ECHO_SERVICE};
pub use qrexec::agent::ServiceHandler;
pub use system::SystemError;

use std::io::Write;

/// Whether this process is the init process of its PID namespace (the uvm's PID 1).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Serves the one call named on the kernel command line with `handler`, then powers off.
///
/// Never returns. Only meaningful as PID 1 of a uvm: elsewhere the mounts and the reboot fail
/// (without privileges) and the process loops in [`system::power_off`]'s fallback.
pub fn run_as_pid1(handler: &mut dyn ServiceHandler) -> ! {
    let mut console = std::io::stderr();
    if let Err(e) = system::mount_pseudo_filesystems() {
        let _ = writeln!(console, "uvm-init: {}", describe(&InitError::System(e)));
        system::power_off()
    }
    if system::is_xen() {
        match agent::serve_over_xen(handler) {
            Ok(outcome) => {
                let _ = writeln!(console, "uvm-init: {}", agent::outcome_line(&outcome));
            }
            Err(e) => {
                let _ = writeln!(console, "uvm-init: {}", describe(&e));
            }
        }
        system::power_off()
    }
    match serve_from_kernel(handler) {
        Ok(report) => {
            // One line with sizes only: never the document's content.
            let _ = writeln!(
                console,
                "uvm-init: {} exit {} stdin chunks {} stdout bytes {}",
                report.service, report.exit_code, report.stdin_chunks, report.stdout_bytes
            );
        }
        Err(e) => {
            let _ = writeln!(console, "uvm-init: {}", describe(&e));
        }
    }
    system::power_off()
}

/// Serves one call as a qrexec agent over the Unix-socket vchan layout, as an ordinary process
/// (see [`agent::serve_over_socket`]), and prints one line on stderr: the outcome's sizes and
/// ids, or the error.
///
/// Returns whether the call was served to its end (whatever the service's exit code).
pub fn run_as_socket_agent(handler: &mut dyn ServiceHandler) -> bool {
    match agent::serve_over_socket(handler) {
        Ok(outcome) => {
            eprintln!("uvm-init: {}", agent::outcome_line(&outcome));
            true
        }
        Err(e) => {
            eprintln!("uvm-init: {}", describe(&e));
            false
        }
    }
}

/// Everything PID 1 does under QEMU between the mounts and power-off.
fn serve_from_kernel(handler: &mut dyn ServiceHandler) -> Result<CallReport, InitError> {
    let cmdline = system::read_kernel_cmdline()?;
    let request = CallRequest::parse(&cmdline)?;
    let mut port = system::open_data_port(request.port.as_deref())?;
    let report = serve_call(&mut port, &request, handler)?;
    // The last bytes must reach the host before the reboot tears the device down.
    system::drain_port(&port, system::HOST_CLOSE_WAIT);

    Ok(report)
}

/// Why PID 1 could not serve its call.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A mount, the command line or the data port failed.
    #[error("system setup failed")]
    System(#[from] SystemError),
    /// The kernel command line does not name a valid call.
    #[error("bad kernel command line")]
    Cmdline(#[from] CmdlineError),
    /// The call itself broke.
    #[error("call failed")]
    Call(#[from] CallError),
    /// The vchan transport could not be set up (Xen's devices or xenstore, or the socket
    /// layout's environment).
    #[error("vchan setup failed")]
    Vchan(#[from] qrexec::vchan::VchanError),
    /// The qrexec agent's call failed.
    #[error("qrexec call failed")]
    Agent(#[from] qrexec::agent::AgentError),
}

/// The error and its causes on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_process_is_not_pid1() {
        assert!(!is_pid1());
    }

    #[test]
    fn describe_joins_the_cause_chain() {
        let e = InitError::Cmdline(CmdlineError::MissingService);
        assert_eq!(
            describe(&e),
            "bad kernel command line: no uvm.service= on the kernel command line"
        );
    }
}
