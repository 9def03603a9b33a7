//! vchan over Unix stream sockets, in the layout of the reference's socket emulation.
//!
//! Each vchan is the socket `$VCHAN_SOCKET_DIR/vchan.<server_domid>.<client_domid>.<port>.sock`
//! carrying exactly the bytes a Xen vchan would carry, with no framing of its own. A process
//! states its own domain id in `VCHAN_DOMAIN`. The server removes a stale socket, listens and
//! accepts one client; the client retries until the server appears or a deadline passes.
//!
//! # Limitations
//! - A Unix socket has no observable ring, so [`Vchan::buffer_space`] reports the fixed
//!   [`SOCKET_WINDOW`]; writes beyond what the kernel buffers simply block.
//! - The server accepts a single client and removes the socket file once it has connected.

use std::cell::{Cell, RefCell};
use std::env;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::{Vchan, VchanConnector, VchanError};
use crate::proto::{FrameTransport, HEADER_LEN, MAX_DATA_CHUNK};

/// Socket directory when `VCHAN_SOCKET_DIR` is unset (the reference's default).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/vchan";

/// How long a client keeps retrying by default. The reference agent waits 120 s for a data
/// vchan because a freshly started disposable can be slow to offer it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// Pause between connection attempts, and between accept polls when a deadline is set.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// What [`Vchan::buffer_space`] reports for a socket: a data vchan's usual 64 KiB ring.
pub const SOCKET_WINDOW: usize = MAX_DATA_CHUNK + HEADER_LEN;

/// Opens socket-layout vchans for one domain.
#[derive(Debug, Clone)]
pub struct SocketConnector {
    dir: PathBuf,
    own_domain: u32,
    connect_timeout: Duration,
    accept_timeout: Option<Duration>,
}

impl SocketConnector {
    /// A connector in `dir` for domain `own_domain`; clients retry for
    /// [`DEFAULT_CONNECT_TIMEOUT`], servers wait without a deadline.
    pub fn new(dir: impl Into<PathBuf>, own_domain: u32) -> Self {
        SocketConnector {
            dir: dir.into(),
            own_domain,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            accept_timeout: None,
        }
    }

    /// A connector from `VCHAN_SOCKET_DIR` (default [`DEFAULT_SOCKET_DIR`]) and `VCHAN_DOMAIN`
    /// (default 0, dom0, as in the reference).
    ///
    /// # Errors
    /// [`VchanError::BadDomainEnv`] when `VCHAN_DOMAIN` is not a decimal number.
    pub fn from_env() -> Result<Self, VchanError> {
        let dir = env::var_os("VCHAN_SOCKET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR));
        let own_domain = match env::var("VCHAN_DOMAIN") {
            Ok(value) => parse_domain(value)?,
            Err(_) => 0,
        };

        Ok(SocketConnector::new(dir, own_domain))
    }

    /// Sets how long [`VchanConnector::connect`] retries.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long [`VchanConnector::listen`] waits for a client (default: forever).
    pub fn with_accept_timeout(mut self, timeout: Duration) -> Self {
        self.accept_timeout = Some(timeout);
        self
    }

    /// This connector's own domain id.
    pub fn own_domain(&self) -> u32 {
        self.own_domain
    }

    /// The socket path of the vchan `server` offers to `client` on `port`.
    pub fn socket_path(dir: &Path, server: u32, client: u32, port: u32) -> PathBuf {
        dir.join(format!("vchan.{server}.{client}.{port}.sock"))
    }
}

impl VchanConnector for SocketConnector {
    type Channel = SocketVchan;

    fn listen(&mut self, peer_domain: u32, port: u32) -> Result<SocketVchan, VchanError> {
        let path = Self::socket_path(&self.dir, self.own_domain, peer_domain, port);
        let shown = path.display().to_string();
        let listen_err = |source| VchanError::Listen {
            path: shown.clone(),
            source,
        };

        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(listen_err(e)),
        }
        let listener = UnixListener::bind(&path).map_err(listen_err)?;

        let stream = match self.accept_timeout {
            None => listener.accept().map_err(listen_err)?.0,
            Some(timeout) => accept_until(&listener, timeout, &shown)?,
        };
        // One client per vchan: nobody else may connect to this path any more.
        let _ = std::fs::remove_file(&path);
        stream.set_nonblocking(false).map_err(listen_err)?;

        Ok(SocketVchan::new(stream))
    }

    fn connect(&mut self, server_domain: u32, port: u32) -> Result<SocketVchan, VchanError> {
        let path = Self::socket_path(&self.dir, server_domain, self.own_domain, port);
        let start = Instant::now();
        loop {
            match UnixStream::connect(&path) {
                Ok(stream) => return Ok(SocketVchan::new(stream)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) => {}
                Err(source) => {
                    return Err(VchanError::Connect {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
            if start.elapsed() >= self.connect_timeout {
                return Err(VchanError::ConnectTimeout {
                    path: path.display().to_string(),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            thread::sleep(RETRY_INTERVAL);
        }
    }
}

/// A domain id from `VCHAN_DOMAIN`: plain decimal, nothing else.
fn parse_domain(value: String) -> Result<u32, VchanError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VchanError::BadDomainEnv {
            name: "VCHAN_DOMAIN",
            value,
        });
    }
    value.parse::<u32>().map_err(|_| VchanError::BadDomainEnv {
        name: "VCHAN_DOMAIN",
        value,
    })
}

/// Accepts one client, polling a non-blocking listener until `timeout`.
fn accept_until(
    listener: &UnixListener,
    timeout: Duration,
    shown: &str,
) -> Result<UnixStream, VchanError> {
    let listen_err = |source| VchanError::Listen {
        path: shown.to_owned(),
        source,
    };
    listener.set_nonblocking(true).map_err(listen_err)?;
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(listen_err(e)),
        }
        if start.elapsed() >= timeout {
            return Err(VchanError::AcceptTimeout {
                path: shown.to_owned(),
                waited_ms: start.elapsed().as_millis(),
            });
        }
        thread::sleep(RETRY_INTERVAL);
    }
}

/// A connected socket-layout vchan.
#[derive(Debug)]
pub struct SocketVchan {
    stream: UnixStream,
    /// Bytes read ahead by [`Vchan::data_ready`], handed out first by `read`.
    staged: RefCell<Vec<u8>>,
    peer_gone: Cell<bool>,
    closed: bool,
}

impl SocketVchan {
    fn new(stream: UnixStream) -> Self {
        SocketVchan {
            stream,
            staged: RefCell::new(Vec::new()),
            peer_gone: Cell::new(false),
            closed: false,
        }
    }

    /// Moves whatever the socket holds now into `staged`, without blocking.
    fn stage_available(&self) -> io::Result<()> {
        let mut staged = self.staged.borrow_mut();
        if staged.len() >= MAX_DATA_CHUNK {
            return Ok(());
        }
        self.stream.set_nonblocking(true)?;
        let mut buf = [0u8; 4096];
        let result = loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => {
                    self.peer_gone.set(true);
                    break Ok(());
                }
                Ok(n) => {
                    staged.extend_from_slice(buf.get(..n).unwrap_or_default());
                    if staged.len() >= MAX_DATA_CHUNK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.stream.set_nonblocking(false)?;
        result
    }
}

impl Read for SocketVchan {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        {
            let mut staged = self.staged.borrow_mut();
            if !staged.is_empty() {
                let n = staged.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), staged.get(..n)) {
                    dst.copy_from_slice(src);
                }
                staged.drain(..n);
                return Ok(n);
            }
        }
        match self.stream.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.peer_gone.set(true);
                Ok(0)
            }
            // A peer that died with unread data resets the connection: that is its end.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.peer_gone.set(true);
                Ok(0)
            }
            other => other,
        }
    }
}

impl Write for SocketVchan {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.stream.write(buf);
        if let Err(e) = &result {
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                self.peer_gone.set(true);
            }
        }
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl FrameTransport for SocketVchan {
    fn writable_payload(&mut self) -> io::Result<usize> {
        Ok(SOCKET_WINDOW - HEADER_LEN)
    }
}

impl Vchan for SocketVchan {
    fn buffer_space(&self) -> usize {
        SOCKET_WINDOW
    }

    fn data_ready(&self) -> usize {
        // A failure here shows up again on the next read, where it can be reported.
        let _ = self.stage_available();
        self.staged.borrow().len()
    }

    fn is_open(&self) -> bool {
        !self.closed && !self.peer_gone.get()
    }

    fn unread_by_peer(&self) -> Option<usize> {
        None
    }

    fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        match self.stream.shutdown(Shutdown::Both) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, port: u32) -> (SocketVchan, SocketVchan) {
        let d = dir.to_path_buf();
        let server = thread::spawn(move || {
            SocketConnector::new(d, 0)
                .with_accept_timeout(Duration::from_secs(10))
                .listen(5, port)
                .unwrap()
        });
        let client = SocketConnector::new(dir, 5)
            .with_connect_timeout(Duration::from_secs(10))
            .connect(0, port)
            .unwrap();
        (server.join().unwrap(), client)
    }

    #[test]
    fn socket_path_follows_reference_layout() {
        let p = SocketConnector::socket_path(Path::new("/run/v"), 0, 12, 512);
        assert_eq!(p, Path::new("/run/v/vchan.0.12.512.sock"));
    }

    #[test]
    fn server_and_client_exchange_bytes_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, mut client) = pair(dir.path(), 512);
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[test]
    fn stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let stale = SocketConnector::socket_path(dir.path(), 0, 5, 600);
        std::fs::write(&stale, b"old").unwrap();
        let (mut server, mut client) = pair(dir.path(), 600);
        server.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        client.read_exact(&mut b).unwrap();
        assert!(
            !stale.exists(),
            "socket file is removed once the client connected"
        );
    }

    #[test]
    fn client_gives_up_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let err = SocketConnector::new(dir.path(), 5)
            .with_connect_timeout(Duration::from_millis(50))
            .connect(0, 700)
            .unwrap_err();
        assert!(matches!(err, VchanError::ConnectTimeout { .. }));
    }

    #[test]
    fn server_gives_up_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let err = SocketConnector::new(dir.path(), 0)
            .with_accept_timeout(Duration::from_millis(50))
            .listen(5, 701)
            .unwrap_err();
        assert!(matches!(err, VchanError::AcceptTimeout { .. }));
    }

    #[test]
    fn client_retries_until_the_server_appears() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let client = thread::spawn(move || {
            SocketConnector::new(d, 5)
                .with_connect_timeout(Duration::from_secs(10))
                .connect(0, 702)
        });
        thread::sleep(Duration::from_millis(100));
        let mut server = SocketConnector::new(dir.path(), 0).listen(5, 702).unwrap();
        let mut client = client.join().unwrap().unwrap();
        client.write_all(b"late").unwrap();
        let mut b = [0u8; 4];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"late");
    }

    #[test]
    fn close_gives_peer_end_of_stream_after_data() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, mut client) = pair(dir.path(), 703);
        server.write_all(b"last").unwrap();
        server.close().unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last");
        assert!(!client.is_open());
    }

    #[test]
    fn data_ready_counts_unread_bytes_without_losing_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, mut client) = pair(dir.path(), 704);
        assert_eq!(client.data_ready(), 0);
        server.write_all(b"abcdef").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.data_ready() < 6 && Instant::now() < deadline {
            thread::sleep(RETRY_INTERVAL);
        }
        assert_eq!(client.data_ready(), 6);
        let mut b = [0u8; 6];
        client.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"abcdef");
    }

    #[test]
    fn domain_env_must_be_plain_decimal() {
        assert_eq!(parse_domain("17".to_owned()).unwrap(), 17);
        for bad in ["", "dom7", "+7", "-1", " 7", "99999999999"] {
            let err = parse_domain(bad.to_owned()).unwrap_err();
            assert!(matches!(err, VchanError::BadDomainEnv { .. }), "{bad:?}");
        }
    }
}
