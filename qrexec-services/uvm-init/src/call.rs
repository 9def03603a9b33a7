//! The service side of one qrexec data connection over a plain byte stream (a serial port).
//!
//! The bytes are exactly those of a qrexec data vchan (see the `qrexec` crate's `proto`): this
//! side sends HELLO and reads the caller's HELLO, reads DATA_STDIN until the empty chunk while
//! the handler runs, sends its output as DATA_STDOUT, then an empty DATA_STDOUT, an empty
//! DATA_STDERR and DATA_EXIT_CODE. A serial port has no notion of free space, so chunks are
//! capped only at 64 KiB ([`qrexec::proto::Unbounded`]).
//!
//! What the handler writes to its stderr goes out as DATA_STDERR chunks before the end of the
//! call, so a uvm can say why it failed (the host has no other way to read it: the serial
//! console carries kernel messages only).

use std::io::{Read, Write};

use qrexec::agent::ServiceHandler;
use qrexec::proto::{
    negotiate, read_message, write_message, DataStreams, Message, ProtoError, Unbounded,
    EXIT_SERVICE_NOT_FOUND, PROTOCOL_VERSION,
};

use crate::cmdline::CallRequest;

/// How one call went, for the one console line PID 1 prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallReport {
    /// The service that ran.
    pub service: String,
    /// The exit code sent to the caller.
    pub exit_code: i32,
    /// The protocol version agreed with the caller.
    pub version: u32,
    /// DATA_STDIN chunks received, the empty one included.
    pub stdin_chunks: u64,
    /// Bytes sent as DATA_STDOUT.
    pub stdout_bytes: u64,
}

/// A call that broke off.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The HELLO exchange failed.
    #[error("hello exchange failed")]
    Hello(#[source] ProtoError),
    /// The caller's data broke the protocol while the handler read it.
    #[error("caller's data stream broke the protocol")]
    Stdin(#[source] ProtoError),
    /// The end of the call (EOFs and exit code) could not be sent.
    #[error("cannot send the end of the call")]
    Finish(#[source] ProtoError),
}

/// Serves `request` with `handler` over `port` and returns how it went.
///
/// An unknown service gets the qrexec answer for it: empty STDOUT, empty STDERR and exit code
/// 127, without reading stdin.
///
/// # Errors
/// See [`CallError`]; a hostile caller cannot make this panic.
pub fn serve_call<T: Read + Write>(
    port: T,
    request: &CallRequest,
    handler: &mut dyn ServiceHandler,
) -> Result<CallReport, CallError> {
    let mut port = Unbounded(port);
    let version = hello(&mut port).map_err(CallError::Hello)?;

    if !handler.knows(&request.service) {
        write_message(&mut port, &Message::DataStdout(Vec::new())).map_err(CallError::Finish)?;
        write_message(&mut port, &Message::DataStderr(Vec::new())).map_err(CallError::Finish)?;
        write_message(&mut port, &Message::DataExitCode(EXIT_SERVICE_NOT_FOUND))
            .map_err(CallError::Finish)?;
        return Ok(CallReport {
            service: request.service.clone(),
            exit_code: EXIT_SERVICE_NOT_FOUND,
            version,
            stdin_chunks: 0,
            stdout_bytes: 0,
        });
    }

    let streams = DataStreams::new(port);
    let exit_code = {
        let mut stdin = streams.stdin();
        let mut stdout = streams.stdout();
        let mut stderr = streams.stderr();
        let code = handler.run(
            &request.service,
            &request.arg,
            &mut stdin,
            &mut stdout,
            &mut stderr,
        );
        // A write error here is the caller going away; `finish` reports it.
        let _ = stdout.flush();
        let _ = stderr.flush();
        code
    };
    if let Some(failure) = streams.take_failure() {
        return Err(CallError::Stdin(failure));
    }
    let stdin_chunks = streams.stdin_chunks();
    let stdout_bytes = streams.stdout_bytes();
    let mut port = streams.finish(exit_code).map_err(CallError::Finish)?;
    port.flush()
        .map_err(|e| CallError::Finish(ProtoError::Transport(e)))?;

    Ok(CallReport {
        service: request.service.clone(),
        exit_code,
        version,
        stdin_chunks,
        stdout_bytes,
    })
}

/// Sends our HELLO first (as a qrexec service end does), then reads and checks the caller's.
fn hello<T: Read + Write>(port: &mut T) -> Result<u32, ProtoError> {
    write_message(
        port,
        &Message::Hello {
            version: PROTOCOL_VERSION,
        },
    )?;
    match read_message(port)? {
        Message::Hello { version } => negotiate(PROTOCOL_VERSION, version),
        other => Err(ProtoError::UnexpectedMessage {
            msg_type: other.msg_type(),
            context: "waiting for HELLO",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::{EchoHandler, ECHO_SERVICE};
    use std::io;
    use std::os::unix::net::UnixStream;
    use std::thread;

    fn request(service: &str) -> CallRequest {
        CallRequest {
            service: service.into(),
            arg: String::new(),
            port: None,
        }
    }

    /// Runs `serve_call` with the echo handler on one end of a socketpair, in a thread.
    fn serve(
        service: &str,
    ) -> (
        UnixStream,
        thread::JoinHandle<Result<CallReport, CallError>>,
    ) {
        let (host, guest) = UnixStream::pair().unwrap();
        let req = request(service);
        let handle = thread::spawn(move || serve_call(guest, &req, &mut EchoHandler));
        (host, handle)
    }

    fn read_all(host: &mut UnixStream) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            match read_message(host) {
                Ok(m) => out.push(m),
                Err(ProtoError::EndOfStream) => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn echo_call_round_trips_over_a_socketpair() {
        let (mut host, handle) = serve(ECHO_SERVICE);
        assert_eq!(
            read_message(&mut host).unwrap(),
            Message::Hello { version: 4 }
        );
        write_message(&mut host, &Message::Hello { version: 3 }).unwrap();
        let big = vec![7u8; 70_000];
        write_message(&mut host, &Message::DataStdin(b"hello ".to_vec())).unwrap();
        write_message(&mut host, &Message::DataStdin(big.clone())).unwrap_err();
        // 70000 bytes exceed one chunk: the encoder refuses, so send it in two.
        let (a, b) = big.split_at(65_536);
        write_message(&mut host, &Message::DataStdin(a.to_vec())).unwrap();
        write_message(&mut host, &Message::DataStdin(b.to_vec())).unwrap();
        write_message(&mut host, &Message::DataStdin(Vec::new())).unwrap();

        let report = handle.join().unwrap().unwrap();
        let msgs = read_all(&mut host);
        let mut echoed = Vec::new();
        for m in &msgs {
            if let Message::DataStdout(chunk) = m {
                echoed.extend_from_slice(chunk);
            }
        }
        let mut want = b"hello ".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(echoed, want);
        assert_eq!(
            &msgs[msgs.len() - 3..],
            &[
                Message::DataStdout(Vec::new()),
                Message::DataStderr(Vec::new()),
                Message::DataExitCode(0)
            ]
        );
        assert_eq!((report.version, report.exit_code), (3, 0));
        assert_eq!(report.stdout_bytes, want.len() as u64);
        assert_eq!(report.stdin_chunks, 4);
    }

    #[test]
    fn unknown_service_gets_127_without_reading_stdin() {
        let (mut host, handle) = serve("qubes.Nothing");
        read_message(&mut host).unwrap();
        write_message(&mut host, &Message::Hello { version: 4 }).unwrap();
        let report = handle.join().unwrap().unwrap();
        assert_eq!(report.exit_code, 127);
        assert_eq!(
            read_all(&mut host),
            [
                Message::DataStdout(Vec::new()),
                Message::DataStderr(Vec::new()),
                Message::DataExitCode(127)
            ]
        );
    }

    /// Fails with one line on stderr, as the uvm programs do.
    struct Failing;

    impl ServiceHandler for Failing {
        fn run(
            &mut self,
            _service: &str,
            _arg: &str,
            stdin: &mut dyn Read,
            _stdout: &mut dyn Write,
            stderr: &mut dyn Write,
        ) -> i32 {
            let _ = io::copy(stdin, &mut io::sink());
            let _ = stderr.write_all(b"broken document\n");
            1
        }

        fn knows(&self, _service: &str) -> bool {
            true
        }
    }

    #[test]
    fn stderr_lines_reach_the_caller_before_the_exit_code() {
        let (mut host, guest) = UnixStream::pair().unwrap();
        let handle =
            thread::spawn(move || serve_call(guest, &request("qubes.PdfConvert"), &mut Failing));
        read_message(&mut host).unwrap();
        write_message(&mut host, &Message::Hello { version: 4 }).unwrap();
        write_message(&mut host, &Message::DataStdin(Vec::new())).unwrap();
        let report = handle.join().unwrap().unwrap();
        assert_eq!(report.exit_code, 1);
        assert_eq!(
            read_all(&mut host),
            [
                Message::DataStderr(b"broken document\n".to_vec()),
                Message::DataStdout(Vec::new()),
                Message::DataStderr(Vec::new()),
                Message::DataExitCode(1)
            ]
        );
    }

    #[test]
    fn old_protocol_hello_is_refused() {
        let (mut host, handle) = serve(ECHO_SERVICE);
        read_message(&mut host).unwrap();
        write_message(&mut host, &Message::Hello { version: 2 }).unwrap();
        let err = handle.join().unwrap().unwrap_err();
        assert!(matches!(
            err,
            CallError::Hello(ProtoError::UnsupportedVersion { theirs: 2 })
        ));
    }

    #[test]
    fn stdout_message_from_caller_breaks_the_call() {
        let (mut host, handle) = serve(ECHO_SERVICE);
        read_message(&mut host).unwrap();
        write_message(&mut host, &Message::Hello { version: 4 }).unwrap();
        write_message(&mut host, &Message::DataStdout(b"x".to_vec())).unwrap();
        let err = handle.join().unwrap().unwrap_err();
        assert!(matches!(
            err,
            CallError::Stdin(ProtoError::UnexpectedMessage { .. })
        ));
    }

    #[test]
    fn caller_vanishing_mid_stdin_breaks_the_call() {
        let (mut host, handle) = serve(ECHO_SERVICE);
        read_message(&mut host).unwrap();
        write_message(&mut host, &Message::Hello { version: 4 }).unwrap();
        write_message(&mut host, &Message::DataStdin(b"abc".to_vec())).unwrap();
        drop(host);
        assert!(handle.join().unwrap().is_err());
    }
}
