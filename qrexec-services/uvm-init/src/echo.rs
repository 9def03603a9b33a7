//! A handler that sends its stdin back: the service booted by the uvm boot test and bench.

use std::io::{self, Read, Write};

use qrexec::agent::ServiceHandler;

/// The echo service's name.
pub const ECHO_SERVICE: &str = "uvm.Echo";

/// Serves [`ECHO_SERVICE`]: copies stdin to stdout, exit code 0 (1 when the copy fails).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoHandler;

impl ServiceHandler for EchoHandler {
    fn run(
        &mut self,
        _service: &str,
        _arg: &str,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
        _stderr: &mut dyn Write,
    ) -> i32 {
        match io::copy(stdin, stdout) {
            Ok(_) => 0,
            Err(_) => 1,
        }
    }

    fn knows(&self, service: &str) -> bool {
        service == ECHO_SERVICE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_copies_stdin_to_stdout() {
        let mut out = Vec::new();
        let code = EchoHandler.run(
            ECHO_SERVICE,
            "",
            &mut &b"abc"[..],
            &mut out,
            &mut io::sink(),
        );
        assert_eq!((code, out.as_slice()), (0, &b"abc"[..]));
    }

    #[test]
    fn echo_knows_only_its_service() {
        assert!(EchoHandler.knows(ECHO_SERVICE));
        assert!(!EchoHandler.knows("qubes.PdfConvert"));
    }
}
