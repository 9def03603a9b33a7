//! A test-only stand-in for dom0's qrexec-daemon and for the calling VM, over the socket layout.
//!
//! The reference qrexec-daemon and qrexec-client can themselves be built against the socket
//! vchan, but they are not shipped here, so this peer is written from the documented wire
//! format (PROTOCOLS.md: the 8-byte header, HELLO, EXEC_CMDLINE, the DATA_* messages and
//! CONNECTION_TERMINATED). It deliberately does not use the crate's own encoder, so a mistake
//! in `qrexec::proto` cannot hide in both ends. It uses plain Unix sockets at the reference
//! paths `vchan.<server>.<client>.<port>.sock`, with nothing but qrexec bytes on them.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

pub const HELLO: u32 = 0x300;
pub const EXEC_CMDLINE: u32 = 0x200;
pub const JUST_EXEC: u32 = 0x201;
pub const SERVICE_CONNECT: u32 = 0x202;
pub const SERVICE_REFUSED: u32 = 0x203;
pub const CONNECTION_TERMINATED: u32 = 0x211;
pub const DATA_STDIN: u32 = 0x190;
pub const DATA_STDOUT: u32 = 0x191;
pub const DATA_STDERR: u32 = 0x192;
pub const DATA_EXIT_CODE: u32 = 0x193;

/// How long any step of the peer waits before the test fails instead of hanging.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

pub fn sock(dir: &Path, server: u32, client: u32, port: u32) -> PathBuf {
    dir.join(format!("vchan.{server}.{client}.{port}.sock"))
}

/// Writes one message: u32 LE type, u32 LE length, payload.
pub fn send(w: &mut impl Write, msg_type: u32, payload: &[u8]) {
    let mut buf = Vec::with_capacity(8 + payload.len());
    buf.extend_from_slice(&msg_type.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).unwrap();
}

/// Reads one message, or None when the stream ends cleanly before a header.
pub fn recv(r: &mut impl Read) -> Option<(u32, Vec<u8>)> {
    let mut hdr = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut hdr[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("peer read failed: {e}"),
        }
    }
    if got == 0 {
        return None;
    }
    assert_eq!(got, 8, "stream ended inside a header");
    let msg_type = u32::from_le_bytes(hdr[..4].try_into().unwrap());
    let len = u32::from_le_bytes(hdr[4..].try_into().unwrap()) as usize;
    assert!(
        len <= 65536 + 160,
        "peer received an oversized message: {len}"
    );
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).unwrap();
    Some((msg_type, payload))
}

pub fn hello(version: u32) -> Vec<u8> {
    version.to_le_bytes().to_vec()
}

pub fn exec_params(domain: u32, port: u32, cmdline: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&domain.to_le_bytes());
    p.extend_from_slice(&port.to_le_bytes());
    p.extend_from_slice(cmdline.as_bytes());
    p.push(0);
    p
}

fn connect_retry(path: &Path) -> UnixStream {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
                return s;
            }
            Err(_) if start.elapsed() < STEP_TIMEOUT => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("agent never offered {}: {e}", path.display()),
        }
    }
}

/// qrexec-daemon's side of the control vchan: its client, towards the VM.
pub struct Daemon {
    pub ctrl: UnixStream,
    /// The version the agent announced in its HELLO.
    pub agent_version: u32,
}

impl Daemon {
    /// Connects to the VM's control vchan (port 512), reads the agent's HELLO (it speaks first)
    /// and answers with `our_version`.
    pub fn connect(dir: &Path, vm_domain: u32, our_version: u32) -> Daemon {
        let mut ctrl = connect_retry(&sock(dir, vm_domain, 0, 512));
        let (t, p) = recv(&mut ctrl).expect("agent sent nothing on the control vchan");
        assert_eq!(t, HELLO, "first control message must be HELLO");
        assert_eq!(p.len(), 4);
        let agent_version = u32::from_le_bytes(p[..].try_into().unwrap());
        send(&mut ctrl, HELLO, &hello(our_version));
        Daemon {
            ctrl,
            agent_version,
        }
    }

    pub fn send(&mut self, msg_type: u32, payload: &[u8]) {
        send(&mut self.ctrl, msg_type, payload);
    }

    pub fn recv(&mut self) -> Option<(u32, Vec<u8>)> {
        recv(&mut self.ctrl)
    }
}

/// The calling VM's side of the data vchan: its server.
pub struct Caller {
    listener: UnixListener,
}

impl Caller {
    /// Offers the data vchan from `own_domain` to `agent_domain` on `port`.
    pub fn offer(dir: &Path, own_domain: u32, agent_domain: u32, port: u32) -> Caller {
        let path = sock(dir, own_domain, agent_domain, port);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        Caller { listener }
    }

    /// Waits for the agent, then both send HELLO at once; returns the stream and the agent's
    /// version.
    pub fn accept(&self, our_version: u32) -> (UnixStream, u32) {
        let start = Instant::now();
        let mut data = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock && start.elapsed() < STEP_TIMEOUT =>
                {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("agent never connected the data vchan: {e}"),
            }
        };
        data.set_nonblocking(false).unwrap();
        data.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        send(&mut data, HELLO, &hello(our_version));
        let (t, p) = recv(&mut data).expect("agent sent nothing on the data vchan");
        assert_eq!(t, HELLO, "first data message must be HELLO");
        (data, u32::from_le_bytes(p[..].try_into().unwrap()))
    }
}

/// Everything the service sent on the data vchan until it closed.
#[derive(Debug, Default)]
pub struct Received {
    /// (type, length) of every message in order.
    pub order: Vec<(u32, usize)>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: Option<i32>,
}

/// Reads the data vchan to its end.
pub fn collect(data: &mut UnixStream) -> Received {
    let mut out = Received::default();
    while let Some((t, p)) = recv(data) {
        out.order.push((t, p.len()));
        match t {
            DATA_STDOUT => out.stdout.extend_from_slice(&p),
            DATA_STDERR => out.stderr.extend_from_slice(&p),
            DATA_EXIT_CODE => out.exit_code = Some(i32::from_le_bytes(p[..4].try_into().unwrap())),
            other => panic!("service sent unexpected message {other:#x}"),
        }
    }
    out
}

/// Sends `input` as DATA_STDIN chunks of the given sizes (cycled), then the empty chunk.
pub fn send_stdin(data: &mut impl Write, input: &[u8], sizes: &[usize]) -> usize {
    let mut chunks = 0;
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() {
        let n = sizes[i % sizes.len()].min(input.len() - pos);
        send(data, DATA_STDIN, &input[pos..pos + n]);
        pos += n;
        i += 1;
        chunks += 1;
    }
    send(data, DATA_STDIN, &[]);
    chunks + 1
}
