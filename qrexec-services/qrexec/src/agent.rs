//! The service side of qrexec for a uvm's PID 1: serve exactly one call, in process.
//!
//! The flow of [`serve_one_call`], following a VM-to-VM call into a disposable:
//!
//! 1. Offer the control vchan to dom0 on port 512 as its server, send HELLO first, read the
//!    daemon's HELLO and negotiate the version.
//! 2. Wait for EXEC_CMDLINE or JUST_EXEC. SERVICE_CONNECT and SERVICE_REFUSED answer calls this
//!    VM triggered, which a uvm never does: each is logged in one line and ignored.
//! 3. Parse `user:[nogui:]QUBESRPC service+arg SOURCE`.
//! 4. Connect the data vchan to {domain, port} as its client; send HELLO, read the caller's.
//! 5. EXEC_CMDLINE: run the service with stdin from DATA_STDIN, stdout as DATA_STDOUT and
//!    stderr as DATA_STDERR, then send empty DATA_STDOUT, empty DATA_STDERR and DATA_EXIT_CODE. An unknown service gets the
//!    two EOFs and exit code 127; a command line that is not a service call gets 125.
//!    JUST_EXEC: run the service without stdio and send only DATA_EXIT_CODE, the service's
//!    real exit code (Qubes' own agent answers 0 as soon as the process has started; a uvm
//!    runs the service in process, so it has no such moment).
//! 6. Close the data vchan, then send CONNECTION_TERMINATED {domain, port} on the control vchan,
//!    so dom0 can destroy the disposable, and keep the control vchan open until dom0 has read
//!    that message (at most [`TERMINATION_LINGER`]).
//!
//! # Limitations
//! - One call per boot: after CONNECTION_TERMINATED the function returns and PID 1 powers off.
//! - The service runs in the agent's thread. It must read its stdin before writing large
//!   output only if the caller cannot read and write at once; the reference client can.
//! - Protocol 2 peers are refused (see [`crate::proto::negotiate`]).

use std::io::{self, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::proto::{
    negotiate, read_message, write_message, DataStreams, Message, ProtoError, EXIT_PROBLEM,
    EXIT_SERVICE_NOT_FOUND, PROTOCOL_VERSION,
};
use crate::vchan::{Vchan, VchanConnector, VchanError, CONTROL_PORT};

/// dom0's domain id, the peer of the control vchan.
pub const DOM0: u32 = 0;

/// Longest time the control vchan stays open after CONNECTION_TERMINATED, waiting for dom0 to
/// read it.
///
/// qrexec-daemon checks whether the agent's vchan is still open before it reads what is
/// waiting there, and treats a closed one as an agent restart: a CONNECTION_TERMINATED sent
/// just before the close is then dropped and the call's data port never released (seen with
/// the reference daemon over the socket layout in about half of the calls). The Xen ring shows
/// when dom0 has consumed the message, so there the wait ends as soon as it has; the socket
/// layout cannot show it, so there the agent waits this long unless dom0 closes first.
pub const TERMINATION_LINGER: Duration = Duration::from_millis(200);

/// How often the linger after CONNECTION_TERMINATED looks at the control vchan.
const LINGER_POLL: Duration = Duration::from_millis(1);

/// Longest user name accepted in a command line.
pub const MAX_USER_LEN: usize = 32;

/// Longest service name accepted (the reference refuses names over `NAME_MAX`).
pub const MAX_SERVICE_LEN: usize = 255;

/// Longest source domain name accepted (Qubes domain names have at most 31 characters).
pub const MAX_DOMAIN_NAME_LEN: usize = 31;

/// What a service provides to the agent.
pub trait ServiceHandler {
    /// Runs `service` with argument `arg` (empty when none) and returns its exit code.
    /// Bytes written to `stderr` reach the caller as DATA_STDERR chunks (a JUST_EXEC call has
    /// no streams: there they are dropped).
    fn run(
        &mut self,
        service: &str,
        arg: &str,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> i32;

    /// Whether `service` exists here.
    fn knows(&self, service: &str) -> bool;
}

/// A failure of the one call; the agent never panics on what its peers send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The control vchan could not be offered or was not connected.
    #[error("cannot open the control vchan")]
    ControlVchan(#[source] VchanError),
    /// The control connection broke the protocol or closed early.
    #[error("control connection failed")]
    Control(#[source] ProtoError),
    /// dom0 sent a control message the agent does not accept at this point.
    #[error("unexpected control message {msg_type:#x} while {context}")]
    UnexpectedControlMessage {
        /// The message type.
        msg_type: u32,
        /// What the agent was waiting for.
        context: &'static str,
    },
    /// The data vchan to the caller could not be connected.
    #[error("cannot connect the data vchan to domain {domain} port {port}")]
    DataVchan {
        /// Caller's domain.
        domain: u32,
        /// Data vchan port.
        port: u32,
        /// The cause.
        #[source]
        source: VchanError,
    },
    /// The caller broke the protocol on the data vchan (e.g. an oversized chunk); the call was
    /// stopped without an exit code.
    #[error("data connection with domain {domain} port {port} failed")]
    Data {
        /// Caller's domain.
        domain: u32,
        /// Data vchan port.
        port: u32,
        /// The broken rule.
        #[source]
        source: ProtoError,
    },
    /// The command line is not `user:[nogui:]QUBESRPC service+arg SOURCE`; the caller got exit
    /// code 125.
    #[error("refused command line of {len} bytes: {rule}")]
    BadCommandLine {
        /// Command-line length, for the log (its content stays out of logs).
        len: usize,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// A parsed `user:[nogui:]QUBESRPC service+arg SOURCE` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall {
    /// The user to run as (ignored by a uvm, which has no users).
    pub user: String,
    /// Whether `nogui:` was given.
    pub nogui: bool,
    /// Service name, e.g. `qubes.PdfConvert`.
    pub service: String,
    /// Service argument, empty when none.
    pub arg: String,
    /// Calling domain's name.
    pub source: String,
}

/// How one call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The call as parsed from the command line.
    pub call: ServiceCall,
    /// Whether it came as JUST_EXEC (no stdio).
    pub just_exec: bool,
    /// Caller's domain id and data vchan port.
    pub domain: u32,
    /// Data vchan port.
    pub port: u32,
    /// Exit code sent to the caller.
    pub exit_code: i32,
    /// Versions negotiated on the control and data vchans.
    pub control_version: u32,
    /// Version negotiated on the data vchan.
    pub data_version: u32,
    /// DATA_STDIN chunks received, the EOF chunk included.
    pub stdin_chunks: u64,
    /// Bytes sent as DATA_STDOUT.
    pub stdout_bytes: u64,
    /// SERVICE_CONNECT / SERVICE_REFUSED messages ignored before the call.
    pub ignored_requests: u32,
}

/// Parses a command line from EXEC_CMDLINE or JUST_EXEC (without its NUL).
///
/// # Errors
/// [`AgentError::BadCommandLine`] naming the broken rule.
pub fn parse_command_line(cmdline: &[u8]) -> Result<ServiceCall, AgentError> {
    let bad = |rule| AgentError::BadCommandLine {
        len: cmdline.len(),
        rule,
    };
    let text = std::str::from_utf8(cmdline).map_err(|_| bad("not UTF-8"))?;

    let (user, rest) = text
        .split_once(':')
        .ok_or_else(|| bad("no user before ':'"))?;
    if user.is_empty() || user.len() > MAX_USER_LEN || !user.bytes().all(is_name_byte) {
        return Err(bad("bad user name"));
    }
    let (nogui, rest) = match rest.strip_prefix("nogui:") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest
        .strip_prefix("QUBESRPC ")
        .ok_or_else(|| bad("not a QUBESRPC service call"))?;

    let (descriptor, source) = rest
        .split_once(' ')
        .ok_or_else(|| bad("no source domain after the service"))?;
    // The reference accepts a descriptor without '+' as an empty argument.
    let (service, arg) = descriptor.split_once('+').unwrap_or((descriptor, ""));
    if service.is_empty() || service.len() > MAX_SERVICE_LEN || !service.bytes().all(is_name_byte) {
        return Err(bad("bad service name"));
    }
    if !arg.bytes().all(is_name_byte) {
        return Err(bad("bad service argument"));
    }
    if source.is_empty() || source.len() > MAX_DOMAIN_NAME_LEN || !source.bytes().all(is_name_byte)
    {
        return Err(bad("bad source domain name"));
    }

    Ok(ServiceCall {
        user: user.to_owned(),
        nogui,
        service: service.to_owned(),
        arg: arg.to_owned(),
        source: source.to_owned(),
    })
}

/// Characters qrexec allows in names and arguments.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Sends HELLO, reads the peer's HELLO and negotiates.
fn handshake<T: Read + Write>(stream: &mut T) -> Result<u32, ProtoError> {
    write_message(
        stream,
        &Message::Hello {
            version: PROTOCOL_VERSION,
        },
    )?;
    match read_message(stream)? {
        Message::Hello { version } => negotiate(PROTOCOL_VERSION, version),
        other => Err(ProtoError::UnexpectedMessage {
            msg_type: other.msg_type(),
            context: "waiting for HELLO",
        }),
    }
}

/// The request from dom0 that starts the call.
struct Request {
    just_exec: bool,
    domain: u32,
    port: u32,
    cmdline: Vec<u8>,
}

/// Reads control messages until EXEC_CMDLINE or JUST_EXEC; ignores the replies to triggered
/// calls, which this VM never makes.
fn wait_for_request<T: Read + Write>(ctrl: &mut T) -> Result<(Request, u32), AgentError> {
    let mut ignored = 0u32;
    loop {
        match read_message(ctrl).map_err(AgentError::Control)? {
            Message::ExecCmdline {
                domain,
                port,
                cmdline,
            } => {
                return Ok((
                    Request {
                        just_exec: false,
                        domain,
                        port,
                        cmdline,
                    },
                    ignored,
                ));
            }
            Message::JustExec {
                domain,
                port,
                cmdline,
            } => {
                return Ok((
                    Request {
                        just_exec: true,
                        domain,
                        port,
                        cmdline,
                    },
                    ignored,
                ));
            }
            Message::ServiceConnect { domain, port, .. } => {
                ignored = ignored.saturating_add(1);
                eprintln!(
                    "qrexec agent: ignoring SERVICE_CONNECT for domain {domain} port {port}: \
                     this VM triggers no calls"
                );
            }
            Message::ServiceRefused { .. } => {
                ignored = ignored.saturating_add(1);
                eprintln!("qrexec agent: ignoring SERVICE_REFUSED: this VM triggers no calls");
            }
            other => {
                return Err(AgentError::UnexpectedControlMessage {
                    msg_type: other.msg_type(),
                    context: "waiting for a call",
                });
            }
        }
    }
}

/// Serves exactly one qrexec call and returns how it went.
///
/// Once the data vchan was connected, CONNECTION_TERMINATED is sent on every path, errors
/// included, so dom0 releases the port and can destroy the disposable.
///
/// # Errors
/// See [`AgentError`]; none of them panics.
pub fn serve_one_call<C: VchanConnector, H: ServiceHandler + ?Sized>(
    connector: &mut C,
    handler: &mut H,
) -> Result<CallOutcome, AgentError> {
    let mut ctrl = connector
        .listen(DOM0, CONTROL_PORT)
        .map_err(AgentError::ControlVchan)?;
    let control_version = handshake(&mut ctrl).map_err(AgentError::Control)?;
    let (request, ignored_requests) = wait_for_request(&mut ctrl)?;
    let Request {
        just_exec,
        domain,
        port,
        cmdline,
    } = request;

    let mut data = connector
        .connect(domain, port)
        .map_err(|source| AgentError::DataVchan {
            domain,
            port,
            source,
        })?;
    let result = run_call(&mut data, handler, just_exec, domain, port, &cmdline);
    // The caller sees the end of the data stream before dom0 hears that the call is over.
    let _ = data.close();
    drop(data);

    write_message(&mut ctrl, &Message::ConnectionTerminated { domain, port })
        .map_err(AgentError::Control)?;
    linger_until_read(&ctrl, TERMINATION_LINGER);
    let _ = ctrl.close();

    let done = result?;
    Ok(CallOutcome {
        call: done.call,
        just_exec,
        domain,
        port,
        exit_code: done.exit_code,
        control_version,
        data_version: done.data_version,
        stdin_chunks: done.stdin_chunks,
        stdout_bytes: done.stdout_bytes,
        ignored_requests,
    })
}

/// Waits until the peer has read everything sent on `vchan` or has left, or `limit` passed.
fn linger_until_read<V: Vchan>(vchan: &V, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        // `data_ready` also notices a peer that closed its end.
        let _ = vchan.data_ready();
        if !vchan.is_open() || vchan.unread_by_peer() == Some(0) || Instant::now() >= deadline {
            return;
        }
        thread::sleep(LINGER_POLL);
    }
}

/// What [`run_call`] reports on success.
struct CallDone {
    call: ServiceCall,
    exit_code: i32,
    data_version: u32,
    stdin_chunks: u64,
    stdout_bytes: u64,
}

/// Everything on the data vchan: HELLO, the service's stdio, the EOFs and the exit code.
fn run_call<V: Vchan, H: ServiceHandler + ?Sized>(
    data: &mut V,
    handler: &mut H,
    just_exec: bool,
    domain: u32,
    port: u32,
    cmdline: &[u8],
) -> Result<CallDone, AgentError> {
    let data_err = |source| AgentError::Data {
        domain,
        port,
        source,
    };
    let data_version = handshake(data).map_err(data_err)?;

    let call = match parse_command_line(cmdline) {
        Ok(call) => call,
        Err(e) => {
            // The caller still gets a well-formed end of call, as the reference sends for a
            // command it cannot start.
            if !just_exec {
                send_eofs(data).map_err(data_err)?;
            }
            write_message(data, &Message::DataExitCode(EXIT_PROBLEM)).map_err(data_err)?;
            return Err(e);
        }
    };

    if !handler.knows(&call.service) {
        if !just_exec {
            send_eofs(data).map_err(data_err)?;
        }
        write_message(data, &Message::DataExitCode(EXIT_SERVICE_NOT_FOUND)).map_err(data_err)?;
        return Ok(CallDone {
            call,
            exit_code: EXIT_SERVICE_NOT_FOUND,
            data_version,
            stdin_chunks: 0,
            stdout_bytes: 0,
        });
    }

    if just_exec {
        let exit_code = handler.run(
            &call.service,
            &call.arg,
            &mut io::empty(),
            &mut io::sink(),
            &mut io::sink(),
        );
        write_message(data, &Message::DataExitCode(exit_code)).map_err(data_err)?;
        return Ok(CallDone {
            call,
            exit_code,
            data_version,
            stdin_chunks: 0,
            stdout_bytes: 0,
        });
    }

    let streams = DataStreams::new(&mut *data);
    let exit_code = {
        let mut stdin = streams.stdin();
        let mut stdout = streams.stdout();
        let mut stderr = streams.stderr();
        let code = handler.run(
            &call.service,
            &call.arg,
            &mut stdin,
            &mut stdout,
            &mut stderr,
        );
        // A service that leaves bytes in a buffered writer has flushed them by dropping it;
        // these flushes reach the transport.
        let _ = stdout.flush();
        let _ = stderr.flush();
        code
    };
    if let Some(failure) = streams.take_failure() {
        return Err(data_err(failure));
    }
    let stdin_chunks = streams.stdin_chunks();
    let stdout_bytes = streams.stdout_bytes();
    streams.finish(exit_code).map_err(data_err)?;

    Ok(CallDone {
        call,
        exit_code,
        data_version,
        stdin_chunks,
        stdout_bytes,
    })
}

/// Empty DATA_STDOUT then empty DATA_STDERR: the end of the service's output.
fn send_eofs<T: Write>(data: &mut T) -> Result<(), ProtoError> {
    write_message(data, &Message::DataStdout(Vec::new()))?;
    write_message(data, &Message::DataStderr(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ServiceCall, AgentError> {
        parse_command_line(s.as_bytes())
    }

    fn rule(s: &str) -> &'static str {
        match parse(s) {
            Err(AgentError::BadCommandLine { rule, .. }) => rule,
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_a_vm_to_vm_call() {
        let call = parse("DEFAULT:QUBESRPC qubes.PdfConvert+dpi150 work").unwrap();
        assert_eq!(
            call,
            ServiceCall {
                user: "DEFAULT".into(),
                nogui: false,
                service: "qubes.PdfConvert".into(),
                arg: "dpi150".into(),
                source: "work".into(),
            }
        );
    }

    #[test]
    fn parses_nogui_and_empty_argument() {
        let call = parse("user:nogui:QUBESRPC qubes.GetImageRGBA+ disp12").unwrap();
        assert!(call.nogui);
        assert_eq!(call.arg, "");
    }

    #[test]
    fn descriptor_without_plus_is_an_empty_argument() {
        assert_eq!(parse("user:QUBESRPC qubes.X dom0").unwrap().arg, "");
    }

    #[test]
    fn refuses_a_plain_command() {
        assert_eq!(rule("user:ls -l"), "not a QUBESRPC service call");
    }

    #[test]
    fn refuses_missing_user() {
        assert_eq!(rule("QUBESRPC qubes.X+ dom0"), "no user before ':'");
        assert_eq!(rule(":QUBESRPC qubes.X+ dom0"), "bad user name");
    }

    #[test]
    fn refuses_missing_or_extra_source() {
        assert_eq!(
            rule("u:QUBESRPC qubes.X+"),
            "no source domain after the service"
        );
        assert_eq!(rule("u:QUBESRPC qubes.X+ a b"), "bad source domain name");
        assert_eq!(rule("u:QUBESRPC qubes.X+ "), "bad source domain name");
    }

    #[test]
    fn refuses_bad_argument_characters() {
        assert_eq!(rule("u:QUBESRPC qubes.X+a/b dom0"), "bad service argument");
        assert_eq!(rule("u:QUBESRPC qubes.X+a+b dom0"), "bad service argument");
    }

    #[test]
    fn refuses_empty_or_odd_service_name() {
        assert_eq!(rule("u:QUBESRPC +arg dom0"), "bad service name");
        assert_eq!(rule("u:QUBESRPC  dom0"), "bad service name");
        assert_eq!(rule("u:QUBESRPC ../x+ dom0"), "bad service name");
    }

    #[test]
    fn refuses_non_utf8() {
        assert_eq!(
            match parse_command_line(b"u:QUBESRPC q\xff+ d") {
                Err(AgentError::BadCommandLine { rule, .. }) => rule,
                _ => "",
            },
            "not UTF-8"
        );
    }
}
