//! Serving the one call as a qrexec agent: over Xen's vchans in a uvm, or over the Unix-socket
//! vchan layout as an ordinary process.
//!
//! Under QEMU the host speaks only the data connection's messages on a serial port; as an
//! agent the program offers the control vchan to dom0's qrexec daemon, takes the one call the
//! daemon forwards, and serves it on a data vchan to the caller
//! ([`qrexec::agent::serve_one_call`]).
//!
//! [`serve_over_socket`] is the same agent on the Unix-socket vchan layout that qrexec uses for
//! its own tests (`VCHAN_DOMAIN`, `VCHAN_SOCKET_DIR`): how the uvm programs' agent mode is
//! tested end to end without Xen, and how a qrexec daemon and client built with the socket
//! vchan can drive it. It is a test and interoperability harness, not a way to deploy: the
//! process runs outside any sandbox.
//!
//! # Limitations
//! - [`serve_over_xen`] has not run on Xen: the connector ([`qrexec::vchan::xen`]) is written
//!   from the documented layout and is tested here only without devices.

use qrexec::agent::{serve_one_call, CallOutcome, ServiceHandler};
use qrexec::vchan::socket::SocketConnector;
use qrexec::vchan::xen::XenConnector;

use crate::system;
use crate::InitError;

/// Makes xenstore reachable, then serves one qrexec call as the agent of this domain.
///
/// # Errors
/// [`InitError::System`] (xenfs mount), [`InitError::Vchan`] (devices, xenstore, own domain id)
/// or [`InitError::Agent`] (the call).
pub fn serve_over_xen(handler: &mut dyn ServiceHandler) -> Result<CallOutcome, InitError> {
    system::mount_xenfs_if_needed()?;
    let mut connector = XenConnector::new()?;
    Ok(serve_one_call(&mut connector, handler)?)
}

/// Serves one qrexec call as the agent of domain `VCHAN_DOMAIN`, with its vchans as Unix
/// sockets in `VCHAN_SOCKET_DIR`.
///
/// # Errors
/// [`InitError::Vchan`] when `VCHAN_DOMAIN` is not a number, or [`InitError::Agent`] (the
/// call). The agent waits for the daemon as long as it takes, as a uvm's agent does.
pub fn serve_over_socket(handler: &mut dyn ServiceHandler) -> Result<CallOutcome, InitError> {
    let mut connector = SocketConnector::from_env()?;
    Ok(serve_one_call(&mut connector, handler)?)
}

/// One console line for a served call: sizes and ids only, never the document's content.
pub fn outcome_line(outcome: &CallOutcome) -> String {
    format!(
        "{} exit {} stdin chunks {} stdout bytes {} caller domain {} port {}",
        outcome.call.service,
        outcome.exit_code,
        outcome.stdin_chunks,
        outcome.stdout_bytes,
        outcome.domain,
        outcome.port
    )
}
