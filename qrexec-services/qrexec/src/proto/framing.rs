//! Framing of qrexec messages over any byte stream, and the stdio chunking of a data vchan.
//!
//! The bytes written here are exactly what a vchan carries, with nothing added, so the same code
//! serves a Xen vchan, the Unix-socket layout and a QEMU virtio-serial port.
//!
//! [`DataStreams`] turns a service's stdout writes into DATA_STDOUT chunks and the caller's
//! DATA_STDIN chunks into a [`Read`] that ends at the empty chunk. Chunks are never larger than
//! [`MAX_DATA_CHUNK`] nor than what the transport can take now ([`FrameTransport`]), as the
//! reference sender does; the reference's receiver reads a header with one fixed-size receive
//! that fails when the header does not fit its ring.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};

use super::{msg_type, Header, Message, ProtoError, HEADER_LEN, MAX_DATA_CHUNK};

/// A byte stream that can say how large the next data message's payload may be.
pub trait FrameTransport: Read + Write {
    /// Payload bytes that fit now together with their header; blocks until at least one does.
    ///
    /// # Errors
    /// The transport's failure, e.g. a peer that is gone.
    fn writable_payload(&mut self) -> io::Result<usize>;
}

impl<T: FrameTransport + ?Sized> FrameTransport for &mut T {
    fn writable_payload(&mut self) -> io::Result<usize> {
        (**self).writable_payload()
    }
}

/// Wraps a stream without a notion of free space (a pipe, a serial port): chunks are only
/// capped at [`MAX_DATA_CHUNK`] and writes block in the stream itself.
#[derive(Debug)]
pub struct Unbounded<T>(pub T);

impl<T: Read> Read for Unbounded<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<T: Write> Write for Unbounded<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<T: Read + Write> FrameTransport for Unbounded<T> {
    fn writable_payload(&mut self) -> io::Result<usize> {
        Ok(MAX_DATA_CHUNK)
    }
}

/// Reads exactly `buf.len()` bytes; returns how many arrived before end of stream.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, ProtoError> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtoError::Transport(e)),
        }
    }

    Ok(got)
}

/// Reads one message: the header, its checks, then exactly `len` payload bytes.
///
/// The length is checked against its cap before the payload buffer is allocated.
///
/// # Errors
/// [`ProtoError::EndOfStream`] when the stream ends cleanly before a header,
/// [`ProtoError::Truncated`] when it ends inside a message, any decoding error, or
/// [`ProtoError::Transport`].
pub fn read_message<R: Read + ?Sized>(r: &mut R) -> Result<Message, ProtoError> {
    let mut raw = [0u8; HEADER_LEN];
    let got = read_full(r, &mut raw)?;
    if got == 0 {
        return Err(ProtoError::EndOfStream);
    }
    if got < HEADER_LEN {
        return Err(ProtoError::Truncated {
            got,
            want: HEADER_LEN,
        });
    }
    let header = Header::from_bytes(raw);
    header.validate()?;

    let want = header.len as usize;
    let mut payload = vec![0u8; want];
    let got = read_full(r, &mut payload)?;
    if got < want {
        return Err(ProtoError::Truncated { got, want });
    }

    Message::decode(header, &payload)
}

/// Writes one message, header and payload, in a single buffer.
///
/// # Errors
/// Encoding errors or [`ProtoError::Transport`].
pub fn write_message<W: Write + ?Sized>(w: &mut W, msg: &Message) -> Result<(), ProtoError> {
    let wire = msg.encode()?;
    w.write_all(&wire).map_err(ProtoError::Transport)?;
    w.flush().map_err(ProtoError::Transport)
}

/// Where the stdin side of a data connection stands.
#[derive(Debug, Default)]
struct StdinState {
    /// The current chunk and how much of it was handed out.
    chunk: Vec<u8>,
    pos: usize,
    /// The empty DATA_STDIN arrived.
    eof: bool,
    /// Stdin chunks received, for logs.
    chunks: u64,
}

/// The stdio of one call over a data connection: stdin from DATA_STDIN chunks, stdout and
/// stderr as DATA_STDOUT / DATA_STDERR chunks.
///
/// Reader and writers borrow the transport in turn, so a service can read and write from one
/// thread. The first protocol error is kept and reported by [`DataStreams::take_failure`],
/// since a service only sees an [`io::Error`].
#[derive(Debug)]
pub struct DataStreams<T> {
    inner: RefCell<T>,
    stdin: RefCell<StdinState>,
    failure: RefCell<Option<ProtoError>>,
    /// Set by the first protocol error; reads fail from then on, since the stream position is
    /// no longer at a message boundary.
    poisoned: Cell<bool>,
    stdout_bytes: RefCell<u64>,
}

impl<T: FrameTransport> DataStreams<T> {
    /// Wraps a data connection whose HELLO exchange is done.
    pub fn new(inner: T) -> Self {
        DataStreams {
            inner: RefCell::new(inner),
            stdin: RefCell::new(StdinState::default()),
            failure: RefCell::new(None),
            poisoned: Cell::new(false),
            stdout_bytes: RefCell::new(0),
        }
    }

    /// The service's stdin: the caller's DATA_STDIN bytes, EOF at the empty chunk.
    pub fn stdin(&self) -> StdinReader<'_, T> {
        StdinReader { streams: self }
    }

    /// The service's stdout, sent as DATA_STDOUT chunks.
    pub fn stdout(&self) -> ChunkWriter<'_, T> {
        ChunkWriter {
            streams: self,
            msg_type: msg_type::DATA_STDOUT,
        }
    }

    /// The service's stderr, sent as DATA_STDERR chunks.
    pub fn stderr(&self) -> ChunkWriter<'_, T> {
        ChunkWriter {
            streams: self,
            msg_type: msg_type::DATA_STDERR,
        }
    }

    /// Whether the caller's empty DATA_STDIN arrived.
    pub fn stdin_closed(&self) -> bool {
        self.stdin.borrow().eof
    }

    /// Number of DATA_STDIN chunks received so far (the EOF chunk included).
    pub fn stdin_chunks(&self) -> u64 {
        self.stdin.borrow().chunks
    }

    /// Bytes sent as DATA_STDOUT so far.
    pub fn stdout_bytes(&self) -> u64 {
        *self.stdout_bytes.borrow()
    }

    /// The first protocol error seen by the reader or writers, if any.
    pub fn take_failure(&self) -> Option<ProtoError> {
        self.failure.borrow_mut().take()
    }

    /// Ends the call: empty DATA_STDOUT, empty DATA_STDERR, then DATA_EXIT_CODE.
    ///
    /// # Errors
    /// [`ProtoError::Transport`] when the caller is gone.
    pub fn finish(self, exit_code: i32) -> Result<T, ProtoError> {
        let mut inner = self.inner.into_inner();
        write_message(&mut inner, &Message::DataStdout(Vec::new()))?;
        write_message(&mut inner, &Message::DataStderr(Vec::new()))?;
        write_message(&mut inner, &Message::DataExitCode(exit_code))?;

        Ok(inner)
    }

    /// The transport, without sending anything more.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }

    fn record(&self, err: ProtoError) -> io::Error {
        let io_err = io::Error::new(io::ErrorKind::InvalidData, err.to_string());
        self.poisoned.set(true);
        self.failure.borrow_mut().get_or_insert(err);
        io_err
    }
}

/// The stdin side of [`DataStreams`].
#[derive(Debug)]
pub struct StdinReader<'a, T> {
    streams: &'a DataStreams<T>,
}

impl<T: FrameTransport> Read for StdinReader<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.streams.poisoned.get() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data stream broke the protocol",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.streams.stdin.borrow_mut();
        loop {
            let pending = state.chunk.get(state.pos..).unwrap_or_default();
            if !pending.is_empty() {
                let n = pending.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), pending.get(..n)) {
                    dst.copy_from_slice(src);
                }
                state.pos += n;
                return Ok(n);
            }
            if state.eof {
                return Ok(0);
            }

            let msg = {
                let mut inner = self.streams.inner.borrow_mut();
                read_message(&mut *inner)
            };
            match msg {
                Ok(Message::DataStdin(chunk)) => {
                    state.chunks += 1;
                    state.eof = chunk.is_empty();
                    state.chunk = chunk;
                    state.pos = 0;
                }
                Ok(other) => {
                    return Err(self.streams.record(ProtoError::UnexpectedMessage {
                        msg_type: other.msg_type(),
                        context: "reading DATA_STDIN",
                    }));
                }
                Err(e) => return Err(self.streams.record(e)),
            }
        }
    }
}

/// A stdout or stderr side of [`DataStreams`].
#[derive(Debug)]
pub struct ChunkWriter<'a, T> {
    streams: &'a DataStreams<T>,
    msg_type: u32,
}

impl<T: FrameTransport> Write for ChunkWriter<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // An empty chunk is EOF on the wire: never send one for an empty write.
        if buf.is_empty() {
            return Ok(0);
        }
        let mut inner = self.streams.inner.borrow_mut();
        let room = inner.writable_payload()?;
        let n = buf.len().min(MAX_DATA_CHUNK).min(room).max(1);
        let chunk = buf.get(..n).unwrap_or(buf);
        let header = Header {
            msg_type: self.msg_type,
            len: n as u32,
        };
        inner.write_all(&header.to_bytes())?;
        inner.write_all(chunk)?;
        if self.msg_type == msg_type::DATA_STDOUT {
            *self.streams.stdout_bytes.borrow_mut() += n as u64;
        }

        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.streams.inner.borrow_mut().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An in-memory transport: reads from `input`, collects writes, reports a fixed room.
    struct Mem {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
        room: usize,
    }

    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl FrameTransport for Mem {
        fn writable_payload(&mut self) -> io::Result<usize> {
            Ok(self.room)
        }
    }

    fn wire(msgs: &[Message]) -> Vec<u8> {
        msgs.iter().flat_map(|m| m.encode().unwrap()).collect()
    }

    fn all_messages(mut bytes: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            match read_message(&mut bytes) {
                Ok(m) => out.push(m),
                Err(ProtoError::EndOfStream) => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn read_message_reads_back_write_message() {
        let mut buf = Vec::new();
        write_message(&mut buf, &Message::Hello { version: 3 }).unwrap();
        write_message(&mut buf, &Message::DataStdin(b"abc".to_vec())).unwrap();
        let msgs = all_messages(&buf);
        assert_eq!(
            msgs,
            [
                Message::Hello { version: 3 },
                Message::DataStdin(b"abc".to_vec())
            ]
        );
    }

    #[test]
    fn end_inside_header_is_truncated() {
        let err = read_message(&mut &[0u8, 3, 0][..]).unwrap_err();
        assert!(matches!(err, ProtoError::Truncated { got: 3, want: 8 }));
    }

    #[test]
    fn end_inside_payload_is_truncated() {
        let mut bytes = Header {
            msg_type: msg_type::DATA_STDIN,
            len: 10,
        }
        .to_bytes()
        .to_vec();
        bytes.extend_from_slice(b"abc");
        let err = read_message(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, ProtoError::Truncated { got: 3, want: 10 }));
    }

    #[test]
    fn oversized_chunk_is_refused_before_its_payload() {
        // Only the header is present: a reader that allocated and waited would report
        // Truncated instead.
        let bytes = Header {
            msg_type: msg_type::DATA_STDIN,
            len: 65537,
        }
        .to_bytes();
        let err = read_message(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, ProtoError::DataChunkTooLarge { len: 65537 }));
    }

    #[test]
    fn stdin_reassembles_chunks_until_the_empty_one() {
        let input = wire(&[
            Message::DataStdin(b"hello ".to_vec()),
            Message::DataStdin(b"world".to_vec()),
            Message::DataStdin(Vec::new()),
            Message::DataStdin(b"after eof".to_vec()),
        ]);
        let streams = DataStreams::new(Mem {
            input: Cursor::new(input),
            output: Vec::new(),
            room: 100,
        });
        let mut got = Vec::new();
        streams.stdin().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello world");
        assert!(streams.stdin_closed());
        assert_eq!(streams.stdin_chunks(), 3);
    }

    #[test]
    fn stdin_reports_a_non_stdin_message_as_failure() {
        let input = wire(&[Message::DataStdout(b"x".to_vec())]);
        let streams = DataStreams::new(Mem {
            input: Cursor::new(input),
            output: Vec::new(),
            room: 100,
        });
        assert!(streams.stdin().read(&mut [0u8; 4]).is_err());
        assert!(streams.stdin().read(&mut [0u8; 4]).is_err(), "stays failed");
        let failure = streams.take_failure().unwrap();
        assert!(matches!(
            failure,
            ProtoError::UnexpectedMessage {
                msg_type: 0x191,
                ..
            }
        ));
    }

    #[test]
    fn stdout_chunks_are_capped_by_room_and_limit() {
        let mem = Mem {
            input: Cursor::new(Vec::new()),
            output: Vec::new(),
            room: 1000,
        };
        let streams = DataStreams::new(mem);
        streams.stdout().write_all(&[7u8; 2500]).unwrap();
        let out = streams.finish(0).unwrap().output;
        let msgs = all_messages(&out);
        let lens: Vec<usize> = msgs
            .iter()
            .map(|m| match m {
                Message::DataStdout(d) | Message::DataStderr(d) => d.len(),
                _ => usize::MAX,
            })
            .collect();
        assert_eq!(lens, [1000, 1000, 500, 0, 0, usize::MAX]);
        assert_eq!(msgs.last(), Some(&Message::DataExitCode(0)));
    }

    #[test]
    fn stdout_never_exceeds_max_chunk() {
        let mem = Mem {
            input: Cursor::new(Vec::new()),
            output: Vec::new(),
            room: usize::MAX,
        };
        let streams = DataStreams::new(mem);
        streams
            .stdout()
            .write_all(&vec![1u8; MAX_DATA_CHUNK + 10])
            .unwrap();
        let msgs = all_messages(&streams.into_inner().output);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1], Message::DataStdout(vec![1; 10]));
    }

    #[test]
    fn empty_write_sends_nothing() {
        let mem = Mem {
            input: Cursor::new(Vec::new()),
            output: Vec::new(),
            room: 10,
        };
        let streams = DataStreams::new(mem);
        assert_eq!(streams.stdout().write(&[]).unwrap(), 0);
        assert!(streams.into_inner().output.is_empty());
    }
}
