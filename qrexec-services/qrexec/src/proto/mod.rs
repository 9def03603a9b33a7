//! qrexec messages: the 8-byte header, every message as a typed value, and a strict decoder.
//!
//! Every message on a qrexec vchan is a header followed by `len` payload bytes:
//!
//! | offset | field | type |
//! |---|---|---|
//! | 0 | message type | u32, little-endian |
//! | 4 | payload length | u32, little-endian |
//! | 8 | payload | `len` bytes |
//!
//! | type | message | payload |
//! |---|---|---|
//! | 0x300 | HELLO | u32 version |
//! | 0x200 | EXEC_CMDLINE | u32 domain, u32 port, `user:command` NUL-terminated |
//! | 0x201 | JUST_EXEC | as EXEC_CMDLINE |
//! | 0x202 | SERVICE_CONNECT | u32 domain, u32 port, 32-byte ident |
//! | 0x203 | SERVICE_REFUSED | 32-byte ident |
//! | 0x211 | CONNECTION_TERMINATED | u32 domain, u32 port |
//! | 0x212 | TRIGGER_SERVICE3 | 64-byte target, 32-byte ident, `service+arg` NUL-terminated |
//! | 0x213 | TRIGGER_SERVICE4 | 64-byte source, 64-byte target, 32-byte ident, service NUL-terminated |
//! | 0x190..=0x192 | DATA_STDIN / STDOUT / STDERR | bytes, empty = EOF |
//! | 0x193 | DATA_EXIT_CODE | i32, little-endian |
//!
//! [`Header::validate`] checks the type and length before any payload is read or allocated;
//! [`Message::decode`] then checks the payload's exact shape. Framing over a byte stream is in
//! [`framing`].
//!
//! # Limitations
//! - Protocol 2 (Qubes R3.0 to R4.0, 4096-byte data chunks) is refused by [`negotiate`]: every
//!   supported Qubes release speaks 3 or 4, and one chunk limit keeps the reader simple.
//! - The protocol-2 `TRIGGER_SERVICE` (0x210) is not modelled and decodes as an unknown type.

pub mod framing;

pub use framing::{read_message, write_message, DataStreams, FrameTransport, Unbounded};

/// Size of the message header: u32 type and u32 length.
pub const HEADER_LEN: usize = 8;

/// Largest data chunk (STDIN/STDOUT/STDERR payload) in protocols 3 and 4; a larger `len` is
/// refused before its payload is read.
pub const MAX_DATA_CHUNK: usize = 65536;

/// Largest command line in EXEC_CMDLINE / JUST_EXEC, NUL included (the reference agent's
/// `MAX_QREXEC_CMD_LEN`).
pub const MAX_CMDLINE_LEN: usize = 65535;

/// Largest service name in a trigger message, NUL included (the reference's
/// `MAX_SERVICE_NAME_LEN`, chosen to fit a 64 KiB vchan ring).
pub const MAX_SERVICE_NAME_LEN: usize = 65000;

/// Cap on any control message's payload: the largest fixed part (TRIGGER_SERVICE4's 160 bytes)
/// plus a 64 KiB variable part. Every legitimate control message is below it.
pub const MAX_CONTROL_PAYLOAD: usize = 160 + 65536;

/// Size of a service-request ident field.
pub const IDENT_LEN: usize = 32;

/// Size of a domain-name field in trigger messages.
pub const DOMAIN_NAME_LEN: usize = 64;

/// The protocol version this crate announces in HELLO.
pub const PROTOCOL_VERSION: u32 = 4;

/// The oldest protocol version [`negotiate`] accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 3;

/// Exit code for "qrexec problem" (the call could not be carried out).
pub const EXIT_PROBLEM: i32 = 125;

/// Exit code for "request refused".
pub const EXIT_REFUSED: i32 = 126;

/// Exit code for "service not found".
pub const EXIT_SERVICE_NOT_FOUND: i32 = 127;

/// Exit code read from a DATA_EXIT_CODE payload shorter than 4 bytes, as the reference does.
pub const EXIT_CODE_SHORT_PAYLOAD: i32 = 255;

/// Message type numbers.
pub mod msg_type {
    /// HELLO: protocol version, first message on every vchan.
    pub const HELLO: u32 = 0x300;
    /// EXEC_CMDLINE: run a command and pass its stdio.
    pub const EXEC_CMDLINE: u32 = 0x200;
    /// JUST_EXEC: run a command, return only an exit code.
    pub const JUST_EXEC: u32 = 0x201;
    /// SERVICE_CONNECT: connect a waiting client to a data vchan.
    pub const SERVICE_CONNECT: u32 = 0x202;
    /// SERVICE_REFUSED: a triggered call was refused.
    pub const SERVICE_REFUSED: u32 = 0x203;
    /// CONNECTION_TERMINATED: a data vchan port is released.
    pub const CONNECTION_TERMINATED: u32 = 0x211;
    /// TRIGGER_SERVICE3: ask the daemon to start a call (protocol 3).
    pub const TRIGGER_SERVICE3: u32 = 0x212;
    /// TRIGGER_SERVICE4: ask the daemon to start a call (protocol 4).
    pub const TRIGGER_SERVICE4: u32 = 0x213;
    /// DATA_STDIN: caller to service bytes.
    pub const DATA_STDIN: u32 = 0x190;
    /// DATA_STDOUT: service to caller bytes.
    pub const DATA_STDOUT: u32 = 0x191;
    /// DATA_STDERR: service to caller diagnostic bytes.
    pub const DATA_STDERR: u32 = 0x192;
    /// DATA_EXIT_CODE: the service's exit status.
    pub const DATA_EXIT_CODE: u32 = 0x193;
}

/// A broken rule of the qrexec wire format, or a failure of the stream carrying it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The header names a type this crate does not know.
    #[error("unknown message type {msg_type:#x}")]
    UnknownType {
        /// The type field as received.
        msg_type: u32,
    },
    /// A data chunk is longer than [`MAX_DATA_CHUNK`].
    #[error("data chunk of {len} bytes exceeds the limit of {MAX_DATA_CHUNK}")]
    DataChunkTooLarge {
        /// The declared length.
        len: u32,
    },
    /// A control message is longer than its cap.
    #[error("message {msg_type:#x} of {len} bytes exceeds its limit of {max}")]
    ControlTooLarge {
        /// The message type.
        msg_type: u32,
        /// The declared length.
        len: u32,
        /// The cap for this type.
        max: usize,
    },
    /// A fixed-size message has another length.
    #[error("message {msg_type:#x} has {len} payload bytes, expected {expected}")]
    WrongLength {
        /// The message type.
        msg_type: u32,
        /// The payload length received.
        len: usize,
        /// The only valid length.
        expected: usize,
    },
    /// A message is shorter than its fixed part.
    #[error("message {msg_type:#x} has {len} payload bytes, needs at least {min}")]
    TooShort {
        /// The message type.
        msg_type: u32,
        /// The payload length received.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// A string field does not end with NUL.
    #[error("string in message {msg_type:#x} is not NUL-terminated")]
    MissingNul {
        /// The message type.
        msg_type: u32,
    },
    /// A string field has a NUL before its end.
    #[error("string in message {msg_type:#x} has a NUL before its end")]
    InteriorNul {
        /// The message type.
        msg_type: u32,
    },
    /// A string field is longer than its named limit.
    #[error("string in message {msg_type:#x} is {len} bytes, limit {max}")]
    StringTooLong {
        /// The message type.
        msg_type: u32,
        /// Its length, NUL included.
        len: usize,
        /// The limit, NUL included.
        max: usize,
    },
    /// The peer speaks a protocol version older than [`MIN_PROTOCOL_VERSION`].
    #[error("peer protocol version {theirs} is older than the minimum {MIN_PROTOCOL_VERSION}")]
    UnsupportedVersion {
        /// The peer's announced version.
        theirs: u32,
    },
    /// A message arrived that the protocol does not allow at this point.
    #[error("unexpected message {msg_type:#x} while {context}")]
    UnexpectedMessage {
        /// The message type received.
        msg_type: u32,
        /// What the receiver was waiting for.
        context: &'static str,
    },
    /// The stream ended cleanly between messages.
    #[error("stream ended before the next message")]
    EndOfStream,
    /// The stream ended inside a header or payload.
    #[error("stream ended inside a message ({got} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the header or payload needed.
        want: usize,
    },
    /// Reading from or writing to the underlying stream failed.
    #[error("transport failed")]
    Transport(#[source] std::io::Error),
}

/// A message header: type and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type, see [`msg_type`].
    pub msg_type: u32,
    /// Payload length in bytes.
    pub len: u32,
}

impl Header {
    /// Reads a header from its 8 wire bytes.
    pub fn from_bytes(bytes: [u8; HEADER_LEN]) -> Header {
        let [t0, t1, t2, t3, l0, l1, l2, l3] = bytes;
        Header {
            msg_type: u32::from_le_bytes([t0, t1, t2, t3]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
        }
    }

    /// The 8 wire bytes of this header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&self.msg_type.to_le_bytes());
        out[4..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Checks the type is known and the length is within its cap, so a reader can allocate
    /// `len` bytes safely.
    ///
    /// # Errors
    /// [`ProtoError::UnknownType`], [`ProtoError::DataChunkTooLarge`] or
    /// [`ProtoError::ControlTooLarge`].
    pub fn validate(self) -> Result<(), ProtoError> {
        use msg_type::*;

        let len = self.len as usize;
        match self.msg_type {
            DATA_STDIN | DATA_STDOUT | DATA_STDERR => {
                if len > MAX_DATA_CHUNK {
                    return Err(ProtoError::DataChunkTooLarge { len: self.len });
                }
            }
            HELLO
            | EXEC_CMDLINE
            | JUST_EXEC
            | SERVICE_CONNECT
            | SERVICE_REFUSED
            | CONNECTION_TERMINATED
            | TRIGGER_SERVICE3
            | TRIGGER_SERVICE4
            | DATA_EXIT_CODE => {
                if len > MAX_CONTROL_PAYLOAD {
                    return Err(ProtoError::ControlTooLarge {
                        msg_type: self.msg_type,
                        len: self.len,
                        max: MAX_CONTROL_PAYLOAD,
                    });
                }
            }
            other => return Err(ProtoError::UnknownType { msg_type: other }),
        }

        Ok(())
    }
}

/// One qrexec message.
///
/// String fields hold their bytes without the terminating NUL; fixed-size name and ident fields
/// hold the raw array as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// HELLO: the sender's protocol version.
    Hello {
        /// Protocol version.
        version: u32,
    },
    /// EXEC_CMDLINE: run `cmdline` and connect its stdio to the data vchan {domain, port}.
    ExecCmdline {
        /// Domain to connect the data vchan to.
        domain: u32,
        /// Vchan port of the data vchan.
        port: u32,
        /// `user:command`, without the NUL.
        cmdline: Vec<u8>,
    },
    /// JUST_EXEC: as EXEC_CMDLINE, but only an exit code goes back.
    JustExec {
        /// Domain to connect the data vchan to.
        domain: u32,
        /// Vchan port of the data vchan.
        port: u32,
        /// `user:command`, without the NUL.
        cmdline: Vec<u8>,
    },
    /// SERVICE_CONNECT: become the data-vchan server for a call this VM triggered.
    ServiceConnect {
        /// Peer domain.
        domain: u32,
        /// Vchan port.
        port: u32,
        /// The request ident sent with the trigger.
        ident: [u8; IDENT_LEN],
    },
    /// SERVICE_REFUSED: a triggered call was refused.
    ServiceRefused {
        /// The request ident sent with the trigger.
        ident: [u8; IDENT_LEN],
    },
    /// CONNECTION_TERMINATED: the data vchan {domain, port} is released.
    ConnectionTerminated {
        /// Peer domain of the finished call.
        domain: u32,
        /// Vchan port of the finished call.
        port: u32,
    },
    /// TRIGGER_SERVICE3: ask the daemon to start `service` in `target`.
    TriggerService3 {
        /// Target domain name, NUL-padded.
        target: [u8; DOMAIN_NAME_LEN],
        /// Request ident, NUL-padded.
        ident: [u8; IDENT_LEN],
        /// `service+arg`, without the NUL.
        service: Vec<u8>,
    },
    /// TRIGGER_SERVICE4: as TRIGGER_SERVICE3 with a source domain.
    TriggerService4 {
        /// Source domain name, NUL-padded.
        source: [u8; DOMAIN_NAME_LEN],
        /// Target domain name, NUL-padded.
        target: [u8; DOMAIN_NAME_LEN],
        /// Request ident, NUL-padded.
        ident: [u8; IDENT_LEN],
        /// `service+arg`, without the NUL.
        service: Vec<u8>,
    },
    /// DATA_STDIN: caller to service; empty is EOF.
    DataStdin(Vec<u8>),
    /// DATA_STDOUT: service to caller; empty is EOF.
    DataStdout(Vec<u8>),
    /// DATA_STDERR: service to caller; empty is EOF.
    DataStderr(Vec<u8>),
    /// DATA_EXIT_CODE: the service's exit status.
    DataExitCode(i32),
}

impl Message {
    /// The wire type of this message.
    pub fn msg_type(&self) -> u32 {
        use msg_type::*;

        match self {
            Message::Hello { .. } => HELLO,
            Message::ExecCmdline { .. } => EXEC_CMDLINE,
            Message::JustExec { .. } => JUST_EXEC,
            Message::ServiceConnect { .. } => SERVICE_CONNECT,
            Message::ServiceRefused { .. } => SERVICE_REFUSED,
            Message::ConnectionTerminated { .. } => CONNECTION_TERMINATED,
            Message::TriggerService3 { .. } => TRIGGER_SERVICE3,
            Message::TriggerService4 { .. } => TRIGGER_SERVICE4,
            Message::DataStdin(_) => DATA_STDIN,
            Message::DataStdout(_) => DATA_STDOUT,
            Message::DataStderr(_) => DATA_STDERR,
            Message::DataExitCode(_) => DATA_EXIT_CODE,
        }
    }

    /// Decodes a payload whose header was already read.
    ///
    /// # Errors
    /// Every broken rule is its own [`ProtoError`] variant; this never panics.
    pub fn decode(header: Header, payload: &[u8]) -> Result<Message, ProtoError> {
        use msg_type::*;

        header.validate()?;
        let t = header.msg_type;
        if payload.len() != header.len as usize {
            return Err(ProtoError::WrongLength {
                msg_type: t,
                len: payload.len(),
                expected: header.len as usize,
            });
        }

        let msg = match t {
            HELLO => Message::Hello {
                version: u32_at(exact::<4>(t, payload)?, 0),
            },
            EXEC_CMDLINE | JUST_EXEC => {
                let (fixed, rest) = split_fixed::<8>(t, payload)?;
                let domain = u32_at(fixed, 0);
                let port = u32_at(fixed, 4);
                let cmdline = nul_string(t, rest, MAX_CMDLINE_LEN)?;
                if t == EXEC_CMDLINE {
                    Message::ExecCmdline {
                        domain,
                        port,
                        cmdline,
                    }
                } else {
                    Message::JustExec {
                        domain,
                        port,
                        cmdline,
                    }
                }
            }
            SERVICE_CONNECT => {
                let p = exact::<{ 8 + IDENT_LEN }>(t, payload)?;
                let (fixed, ident) = p.split_at(8);
                Message::ServiceConnect {
                    domain: u32_at_slice(fixed, 0),
                    port: u32_at_slice(fixed, 4),
                    ident: array(ident),
                }
            }
            SERVICE_REFUSED => Message::ServiceRefused {
                ident: *exact::<IDENT_LEN>(t, payload)?,
            },
            CONNECTION_TERMINATED => {
                let p = exact::<8>(t, payload)?;
                Message::ConnectionTerminated {
                    domain: u32_at(p, 0),
                    port: u32_at_slice(p, 4),
                }
            }
            TRIGGER_SERVICE3 => {
                let (fixed, rest) = split_fixed::<{ DOMAIN_NAME_LEN + IDENT_LEN }>(t, payload)?;
                let (target, ident) = fixed.split_at(DOMAIN_NAME_LEN);
                Message::TriggerService3 {
                    target: array(target),
                    ident: array(ident),
                    service: nul_string(t, rest, MAX_SERVICE_NAME_LEN)?,
                }
            }
            TRIGGER_SERVICE4 => {
                let (fixed, rest) = split_fixed::<{ 2 * DOMAIN_NAME_LEN + IDENT_LEN }>(t, payload)?;
                let (source, rest_fixed) = fixed.split_at(DOMAIN_NAME_LEN);
                let (target, ident) = rest_fixed.split_at(DOMAIN_NAME_LEN);
                Message::TriggerService4 {
                    source: array(source),
                    target: array(target),
                    ident: array(ident),
                    service: nul_string(t, rest, MAX_SERVICE_NAME_LEN)?,
                }
            }
            DATA_STDIN => Message::DataStdin(payload.to_vec()),
            DATA_STDOUT => Message::DataStdout(payload.to_vec()),
            DATA_STDERR => Message::DataStderr(payload.to_vec()),
            DATA_EXIT_CODE => {
                // The reference reads a short exit-code payload as 255; a longer one has no
                // sender and is refused.
                if payload.len() < 4 {
                    Message::DataExitCode(EXIT_CODE_SHORT_PAYLOAD)
                } else {
                    let p = exact::<4>(t, payload)?;
                    Message::DataExitCode(i32::from_le_bytes(*p))
                }
            }
            other => return Err(ProtoError::UnknownType { msg_type: other }),
        };

        Ok(msg)
    }

    /// The payload bytes of this message (without header).
    ///
    /// # Errors
    /// [`ProtoError::InteriorNul`] or [`ProtoError::StringTooLong`] for a string field that
    /// cannot be encoded, [`ProtoError::DataChunkTooLarge`] for an oversized data chunk.
    pub fn encode_payload(&self) -> Result<Vec<u8>, ProtoError> {
        let t = self.msg_type();
        let mut out = Vec::new();
        match self {
            Message::Hello { version } => out.extend_from_slice(&version.to_le_bytes()),
            Message::ExecCmdline {
                domain,
                port,
                cmdline,
            }
            | Message::JustExec {
                domain,
                port,
                cmdline,
            } => {
                out.extend_from_slice(&domain.to_le_bytes());
                out.extend_from_slice(&port.to_le_bytes());
                push_nul_string(t, &mut out, cmdline, MAX_CMDLINE_LEN)?;
            }
            Message::ServiceConnect {
                domain,
                port,
                ident,
            } => {
                out.extend_from_slice(&domain.to_le_bytes());
                out.extend_from_slice(&port.to_le_bytes());
                out.extend_from_slice(ident);
            }
            Message::ServiceRefused { ident } => out.extend_from_slice(ident),
            Message::ConnectionTerminated { domain, port } => {
                out.extend_from_slice(&domain.to_le_bytes());
                out.extend_from_slice(&port.to_le_bytes());
            }
            Message::TriggerService3 {
                target,
                ident,
                service,
            } => {
                out.extend_from_slice(target);
                out.extend_from_slice(ident);
                push_nul_string(t, &mut out, service, MAX_SERVICE_NAME_LEN)?;
            }
            Message::TriggerService4 {
                source,
                target,
                ident,
                service,
            } => {
                out.extend_from_slice(source);
                out.extend_from_slice(target);
                out.extend_from_slice(ident);
                push_nul_string(t, &mut out, service, MAX_SERVICE_NAME_LEN)?;
            }
            Message::DataStdin(data) | Message::DataStdout(data) | Message::DataStderr(data) => {
                if data.len() > MAX_DATA_CHUNK {
                    return Err(ProtoError::DataChunkTooLarge {
                        len: u32::try_from(data.len()).unwrap_or(u32::MAX),
                    });
                }
                out.extend_from_slice(data);
            }
            Message::DataExitCode(code) => out.extend_from_slice(&code.to_le_bytes()),
        }

        Ok(out)
    }

    /// Header and payload as one buffer, exactly the bytes a vchan carries.
    ///
    /// # Errors
    /// As [`Message::encode_payload`].
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let payload = self.encode_payload()?;
        // Payloads are capped far below u32::MAX by encode_payload's limits.
        let len = u32::try_from(payload.len())
            .map_err(|_| ProtoError::DataChunkTooLarge { len: u32::MAX })?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(
            &Header {
                msg_type: self.msg_type(),
                len,
            }
            .to_bytes(),
        );
        out.extend_from_slice(&payload);

        Ok(out)
    }
}

/// Negotiates the protocol version: the lower of the two wins.
///
/// # Errors
/// [`ProtoError::UnsupportedVersion`] when the result is below [`MIN_PROTOCOL_VERSION`].
pub fn negotiate(ours: u32, theirs: u32) -> Result<u32, ProtoError> {
    let version = ours.min(theirs);
    if version < MIN_PROTOCOL_VERSION {
        return Err(ProtoError::UnsupportedVersion { theirs });
    }

    Ok(version)
}

/// The payload as a fixed-size array, or [`ProtoError::WrongLength`].
fn exact<const N: usize>(msg_type: u32, payload: &[u8]) -> Result<&[u8; N], ProtoError> {
    payload.try_into().map_err(|_| ProtoError::WrongLength {
        msg_type,
        len: payload.len(),
        expected: N,
    })
}

/// Splits a payload into its fixed part and the rest, or [`ProtoError::TooShort`].
fn split_fixed<const N: usize>(
    msg_type: u32,
    payload: &[u8],
) -> Result<(&[u8; N], &[u8]), ProtoError> {
    let too_short = || ProtoError::TooShort {
        msg_type,
        len: payload.len(),
        min: N + 1,
    };
    let (fixed, rest) = payload.split_at_checked(N).ok_or_else(too_short)?;
    if rest.is_empty() {
        return Err(too_short());
    }
    let fixed: &[u8; N] = fixed.try_into().map_err(|_| too_short())?;

    Ok((fixed, rest))
}

/// A little-endian u32 at `at` in a 4-aligned fixed array (callers pass constant offsets that
/// fit the array, checked by `get`).
fn u32_at<const N: usize>(bytes: &[u8; N], at: usize) -> u32 {
    u32_at_slice(bytes, at)
}

/// A little-endian u32 at `at`, 0 when out of range (callers only pass offsets inside an
/// array whose size was checked).
fn u32_at_slice(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at.saturating_add(4))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// A slice as an array; callers split at the exact size first, so the zero fill never shows.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(dst) = out.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    out
}

/// A NUL-terminated string field without its NUL: the NUL must be last and the only one.
fn nul_string(msg_type: u32, bytes: &[u8], max: usize) -> Result<Vec<u8>, ProtoError> {
    if bytes.len() > max {
        return Err(ProtoError::StringTooLong {
            msg_type,
            len: bytes.len(),
            max,
        });
    }
    let Some((&last, body)) = bytes.split_last() else {
        return Err(ProtoError::MissingNul { msg_type });
    };
    if last != 0 {
        return Err(ProtoError::MissingNul { msg_type });
    }
    if body.contains(&0) {
        return Err(ProtoError::InteriorNul { msg_type });
    }

    Ok(body.to_vec())
}

/// Appends `s` and a NUL, refusing interior NULs and strings over `max` (NUL included).
fn push_nul_string(
    msg_type: u32,
    out: &mut Vec<u8>,
    s: &[u8],
    max: usize,
) -> Result<(), ProtoError> {
    if s.contains(&0) {
        return Err(ProtoError::InteriorNul { msg_type });
    }
    let len = s.len().saturating_add(1);
    if len > max {
        return Err(ProtoError::StringTooLong { msg_type, len, max });
    }
    out.extend_from_slice(s);
    out.push(0);

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: Message) {
        let wire = msg.encode().unwrap();
        let header = Header::from_bytes(wire[..8].try_into().unwrap());
        assert_eq!(header.len as usize, wire.len() - 8);
        assert_eq!(Message::decode(header, &wire[8..]).unwrap(), msg);
    }

    fn hdr(msg_type: u32, payload: &[u8]) -> Header {
        Header {
            msg_type,
            len: payload.len() as u32,
        }
    }

    #[test]
    fn header_is_little_endian_type_then_len() {
        let h = Header {
            msg_type: 0x300,
            len: 4,
        };
        assert_eq!(h.to_bytes(), [0, 3, 0, 0, 4, 0, 0, 0]);
        assert_eq!(Header::from_bytes(h.to_bytes()), h);
    }

    #[test]
    fn hello_encodes_as_reference_bytes() {
        let wire = Message::Hello { version: 3 }.encode().unwrap();
        assert_eq!(wire, [0x00, 0x03, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0]);
    }

    #[test]
    fn every_message_round_trips() {
        let mut target = [0u8; 64];
        target[..4].copy_from_slice(b"dom0");
        let mut ident = [0u8; 32];
        ident[..7].copy_from_slice(b"SOCKET7");
        for msg in [
            Message::Hello { version: 4 },
            Message::ExecCmdline {
                domain: 7,
                port: 513,
                cmdline: b"user:QUBESRPC a+b X".to_vec(),
            },
            Message::JustExec {
                domain: 1,
                port: 600,
                cmdline: b"root:true".to_vec(),
            },
            Message::ServiceConnect {
                domain: 3,
                port: 514,
                ident,
            },
            Message::ServiceRefused { ident },
            Message::ConnectionTerminated {
                domain: 9,
                port: 515,
            },
            Message::TriggerService3 {
                target,
                ident,
                service: b"qubes.Filecopy+".to_vec(),
            },
            Message::TriggerService4 {
                source: target,
                target,
                ident,
                service: b"s".to_vec(),
            },
            Message::DataStdin(b"in".to_vec()),
            Message::DataStdout(Vec::new()),
            Message::DataStderr(vec![1; MAX_DATA_CHUNK]),
            Message::DataExitCode(-3),
        ] {
            roundtrip(msg);
        }
    }

    #[test]
    fn exec_cmdline_layout_is_domain_port_then_nul_string() {
        let msg = Message::ExecCmdline {
            domain: 2,
            port: 513,
            cmdline: b"u:c".to_vec(),
        };
        assert_eq!(
            msg.encode_payload().unwrap(),
            [2, 0, 0, 0, 1, 2, 0, 0, b'u', b':', b'c', 0]
        );
    }

    #[test]
    fn unknown_type_is_refused() {
        let err = Header {
            msg_type: 0x210,
            len: 0,
        }
        .validate()
        .unwrap_err();
        assert!(matches!(err, ProtoError::UnknownType { msg_type: 0x210 }));
    }

    #[test]
    fn data_chunk_over_limit_is_refused_from_header() {
        let h = Header {
            msg_type: msg_type::DATA_STDIN,
            len: MAX_DATA_CHUNK as u32 + 1,
        };
        assert!(matches!(
            h.validate(),
            Err(ProtoError::DataChunkTooLarge { len: 65537 })
        ));
        let ok = Header {
            msg_type: msg_type::DATA_STDIN,
            len: MAX_DATA_CHUNK as u32,
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn control_message_over_cap_is_refused_from_header() {
        let h = Header {
            msg_type: msg_type::EXEC_CMDLINE,
            len: u32::MAX,
        };
        assert!(matches!(
            h.validate(),
            Err(ProtoError::ControlTooLarge { .. })
        ));
    }

    #[test]
    fn hello_of_wrong_size_is_refused() {
        let err = Message::decode(hdr(msg_type::HELLO, &[3, 0, 0]), &[3, 0, 0]).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::WrongLength {
                len: 3,
                expected: 4,
                ..
            }
        ));
    }

    #[test]
    fn payload_not_matching_header_len_is_refused() {
        let h = Header {
            msg_type: msg_type::DATA_STDIN,
            len: 5,
        };
        assert!(matches!(
            Message::decode(h, b"abc"),
            Err(ProtoError::WrongLength { .. })
        ));
    }

    #[test]
    fn cmdline_without_nul_is_refused() {
        let p = [1, 0, 0, 0, 2, 0, 0, 0, b'a', b'b'];
        let err = Message::decode(hdr(msg_type::EXEC_CMDLINE, &p), &p).unwrap_err();
        assert!(matches!(err, ProtoError::MissingNul { .. }));
    }

    #[test]
    fn cmdline_with_interior_nul_is_refused() {
        let p = [1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'b', 0];
        let err = Message::decode(hdr(msg_type::JUST_EXEC, &p), &p).unwrap_err();
        assert!(matches!(err, ProtoError::InteriorNul { .. }));
    }

    #[test]
    fn exec_without_cmdline_is_too_short() {
        let p = [1, 0, 0, 0, 2, 0, 0, 0];
        let err = Message::decode(hdr(msg_type::EXEC_CMDLINE, &p), &p).unwrap_err();
        assert!(matches!(err, ProtoError::TooShort { len: 8, min: 9, .. }));
    }

    #[test]
    fn cmdline_over_limit_is_refused() {
        let mut p = vec![0u8; 8];
        p.extend(std::iter::repeat_n(b'a', MAX_CMDLINE_LEN));
        p.push(0);
        let err = Message::decode(hdr(msg_type::EXEC_CMDLINE, &p), &p).unwrap_err();
        assert!(matches!(err, ProtoError::StringTooLong { .. }));
    }

    #[test]
    fn service_connect_must_be_forty_bytes() {
        let p = [0u8; 39];
        let err = Message::decode(hdr(msg_type::SERVICE_CONNECT, &p), &p).unwrap_err();
        assert!(matches!(err, ProtoError::WrongLength { expected: 40, .. }));
    }

    #[test]
    fn connection_terminated_must_be_eight_bytes() {
        let p = [0u8; 12];
        let err = Message::decode(hdr(msg_type::CONNECTION_TERMINATED, &p), &p).unwrap_err();
        assert!(matches!(err, ProtoError::WrongLength { expected: 8, .. }));
    }

    #[test]
    fn short_exit_code_reads_as_255() {
        let p = [1, 0];
        let msg = Message::decode(hdr(msg_type::DATA_EXIT_CODE, &p), &p).unwrap();
        assert_eq!(msg, Message::DataExitCode(255));
    }

    #[test]
    fn long_exit_code_is_refused() {
        let p = [0u8; 5];
        let err = Message::decode(hdr(msg_type::DATA_EXIT_CODE, &p), &p).unwrap_err();
        assert!(matches!(err, ProtoError::WrongLength { expected: 4, .. }));
    }

    #[test]
    fn encoding_refuses_interior_nul_and_oversized_chunk() {
        let msg = Message::ExecCmdline {
            domain: 0,
            port: 0,
            cmdline: b"a\0b".to_vec(),
        };
        assert!(matches!(msg.encode(), Err(ProtoError::InteriorNul { .. })));
        let big = Message::DataStdout(vec![0; MAX_DATA_CHUNK + 1]);
        assert!(matches!(
            big.encode(),
            Err(ProtoError::DataChunkTooLarge { .. })
        ));
    }

    #[test]
    fn negotiation_takes_the_lower_version() {
        assert_eq!(negotiate(4, 3).unwrap(), 3);
        assert_eq!(negotiate(3, 4).unwrap(), 3);
        assert_eq!(negotiate(4, 99).unwrap(), 4);
    }

    #[test]
    fn negotiation_refuses_protocol_two_and_older() {
        assert!(matches!(
            negotiate(4, 2),
            Err(ProtoError::UnsupportedVersion { theirs: 2 })
        ));
        assert!(matches!(
            negotiate(4, 0),
            Err(ProtoError::UnsupportedVersion { theirs: 0 })
        ));
    }

    #[test]
    fn decode_never_panics_on_short_garbage() {
        // Every type, every length up to 200, all-0xff bytes: only Ok or a typed error.
        let types = [
            0x300, 0x200, 0x201, 0x202, 0x203, 0x211, 0x212, 0x213, 0x190, 0x193, 7,
        ];
        for t in types {
            for n in 0..200usize {
                let p = vec![0xffu8; n];
                let _ = Message::decode(
                    Header {
                        msg_type: t,
                        len: n as u32,
                    },
                    &p,
                );
            }
        }
    }
}
