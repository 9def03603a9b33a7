//! Serving the one call under Xen: the qrexec agent over real vchans, with this uvm's handler.
//!
//! Under QEMU the host speaks only the data connection's messages on a serial port; under Xen
//! dom0's qrexec daemon opens the control vchan that [`qrexec::agent::serve_one_call`]
//! offers, forwards one call, and the caller serves the data vchan the agent connects to.
//!
//! # Limitations
//! - Not run on Xen: the connector ([`qrexec::vchan::xen`]) is written from the documented
//!   layout and is tested here only without devices.
//! - The handler's stderr is dropped: the agent's [`ServiceHandler`] carries stdout and the
//!   exit code only.

use std::io::{self, Read, Write};

use qrexec::agent::{serve_one_call, CallOutcome, ServiceHandler};
use qrexec::vchan::xen::XenConnector;

use crate::call::StderrService;
use crate::system;
use crate::InitError;

/// A [`StderrService`] served where no stderr stream exists: what it writes there is dropped.
pub struct DropStderr<'a>(pub &'a mut dyn StderrService);

impl ServiceHandler for DropStderr<'_> {
    fn run(
        &mut self,
        service: &str,
        arg: &str,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
    ) -> i32 {
        self.0.run(service, arg, stdin, stdout, &mut io::sink())
    }

    fn knows(&self, service: &str) -> bool {
        self.0.knows(service)
    }
}

/// Makes xenstore reachable, then serves one qrexec call as the agent of this domain.
///
/// # Errors
/// [`InitError::System`] (xenfs mount), [`InitError::Xen`] (devices, xenstore, own domain id)
/// or [`InitError::Agent`] (the call).
pub fn serve_over_xen(handler: &mut dyn StderrService) -> Result<CallOutcome, InitError> {
    system::mount_xenfs_if_needed()?;
    let mut connector = XenConnector::new()?;
    Ok(serve_one_call(&mut connector, &mut DropStderr(handler))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes its argument to stdout and "noise" to stderr, echoing stdin after it.
    struct Noisy;

    impl StderrService for Noisy {
        fn run(
            &mut self,
            _service: &str,
            arg: &str,
            stdin: &mut dyn Read,
            stdout: &mut dyn Write,
            stderr: &mut dyn Write,
        ) -> i32 {
            stderr.write_all(b"noise").unwrap();
            stdout.write_all(arg.as_bytes()).unwrap();
            io::copy(stdin, stdout).unwrap();
            7
        }

        fn knows(&self, service: &str) -> bool {
            service == "noisy"
        }
    }

    #[test]
    fn adapter_passes_stdout_and_exit_code_and_drops_stderr() {
        let mut inner = Noisy;
        let mut handler = DropStderr(&mut inner);
        let mut out = Vec::new();
        let code = handler.run("noisy", "arg:", &mut &b"in"[..], &mut out);
        assert_eq!(code, 7);
        assert_eq!(out, b"arg:in");
    }

    #[test]
    fn adapter_asks_the_inner_handler_which_services_exist() {
        let mut inner = Noisy;
        let handler = DropStderr(&mut inner);
        assert!(handler.knows("noisy"));
        assert!(!handler.knows("other"));
    }
}
