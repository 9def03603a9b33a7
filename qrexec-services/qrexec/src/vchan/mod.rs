//! vchan: the bidirectional byte stream between two Xen domains that qrexec runs over.
//!
//! A vchan has a server, which offers it on a port towards one peer domain, and a client,
//! which connects to it. Both ends then read and write a plain byte stream; qrexec framing is
//! added by [`crate::proto`], not here.
//!
//! - [`socket`]: each vchan is a Unix stream socket, the layout the reference uses in its own
//!   tests (and how this crate is tested without Xen).
//! - [`ring`]: the Xen shared-memory ring layout, over an abstract memory region and event
//!   channel.
//! - [`xen`]: the connector that serves and connects vchans on a Xen guest.
//! - [`xen_dev`]: the Linux device calls (event channels, grant pages, xenstore) that give the
//!   ring its memory and events on a real Xen guest.

use std::io::{self, Read, Write};

use crate::proto::FrameTransport;

pub mod ring;
pub mod socket;
#[cfg(target_os = "linux")]
pub mod xen;
#[cfg(target_os = "linux")]
pub mod xen_dev;

/// The vchan port of qrexec's control connection between a VM and dom0.
pub const CONTROL_PORT: u32 = 512;

/// The first vchan port used for data connections.
pub const FIRST_DATA_PORT: u32 = 513;

/// A failure to set up or use a vchan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VchanError {
    /// A required environment variable is not a number.
    #[error("environment variable {name} is not a domain id: {value:?}")]
    BadDomainEnv {
        /// The variable's name.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The server socket could not be created.
    #[error("cannot listen on {path}")]
    Listen {
        /// The socket path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No client connected in time.
    #[error("no client connected to {path} within {waited_ms} ms")]
    AcceptTimeout {
        /// The socket path.
        path: String,
        /// How long the server waited.
        waited_ms: u128,
    },
    /// The server did not appear in time.
    #[error("cannot connect to {path} within {waited_ms} ms")]
    ConnectTimeout {
        /// The socket path.
        path: String,
        /// How long the client retried.
        waited_ms: u128,
    },
    /// Connecting failed for a reason retrying cannot fix.
    #[error("cannot connect to {path}")]
    Connect {
        /// The socket path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A ring order outside 10..=20, or two rings in the same part of the shared page.
    #[error("ring orders {left} and {right} are not a valid vchan layout")]
    BadRingOrder {
        /// Left (client-to-server) ring order.
        left: u16,
        /// Right (server-to-client) ring order.
        right: u16,
    },
    /// A memory region is smaller than the layout needs.
    #[error("memory region of {len} bytes is smaller than the {needed} bytes the layout needs")]
    RegionTooSmall {
        /// The region's length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The grant list does not fit the shared page before the rings.
    #[error("{count} grant references do not fit the shared page")]
    TooManyGrants {
        /// Number of grant references.
        count: usize,
    },
    /// The peer's ring indices claim more bytes than the ring holds.
    #[error("ring indices are inconsistent: {used} bytes in use in a ring of {size}")]
    CorruptIndices {
        /// prod - cons as read.
        used: u32,
        /// Ring size.
        size: u32,
    },
    /// The event channel failed.
    #[error("event channel failed")]
    Event(#[source] io::Error),
    /// A Xen device node could not be opened.
    #[error("cannot open xen device {path}")]
    XenDevice {
        /// The device path.
        path: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A xenstore request failed.
    #[cfg(target_os = "linux")]
    #[error("xenstore {op} of {path} failed")]
    XenStore {
        /// The request (read, write, watch, transaction).
        op: &'static str,
        /// The key or directory concerned.
        path: String,
        /// The cause.
        #[source]
        source: xen_dev::XenStoreError,
    },
    /// The publishing transaction kept being refused with EAGAIN.
    #[error("xenstore transaction for {path} still conflicting after {attempts} attempts")]
    TransactionRetries {
        /// The vchan's xenstore directory.
        path: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A xenstore value that must be a decimal number is not one.
    #[error("xenstore value of {path} is not a number: {value:?}")]
    BadXenStoreValue {
        /// The key.
        path: String,
        /// Its value (lossy UTF-8, at most the first 32 bytes).
        value: String,
    },
    /// A domain id above the 16 bits Xen grants carry.
    #[error("domain id {domain} does not fit a grant")]
    DomainOutOfRange {
        /// The domain id.
        domain: u32,
    },
    /// Granting pages to the peer failed.
    #[error("cannot grant {pages} pages to domain {domain}")]
    GrantAlloc {
        /// The peer.
        domain: u32,
        /// Pages asked for.
        pages: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Mapping the peer's grants failed.
    #[error("cannot map {pages} grant pages of domain {domain}")]
    GrantMap {
        /// The peer.
        domain: u32,
        /// Pages asked for.
        pages: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The unmap notify (live byte cleared when this process dies) could not be set.
    #[error("cannot set the unmap notify")]
    UnmapNotify(#[source] io::Error),
    /// Allocating or binding the event channel failed.
    #[error("cannot bind an event channel with domain {domain}")]
    EventBind {
        /// The peer.
        domain: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The client marked itself gone before it connected.
    #[error("the client of {path} left before connecting")]
    ClientLeft {
        /// The vchan's xenstore directory.
        path: String,
    },
}

impl From<VchanError> for io::Error {
    fn from(e: VchanError) -> io::Error {
        let kind = match &e {
            VchanError::CorruptIndices { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// One end of a connected vchan: a blocking byte stream plus the state qrexec needs.
///
/// `read` returns 0 once the peer closed and everything it sent was read; `write` fails with
/// [`io::ErrorKind::BrokenPipe`] once the peer is gone.
pub trait Vchan: Read + Write + FrameTransport {
    /// Bytes that can be written now without blocking.
    fn buffer_space(&self) -> usize;

    /// Bytes that can be read now without blocking.
    fn data_ready(&self) -> usize;

    /// Whether the peer is (still) connected.
    fn is_open(&self) -> bool;

    /// Bytes written to the peer that it has not read yet, where the transport can tell.
    ///
    /// The Xen ring can (the peer's consumer index); the socket layout cannot, since the
    /// peer's library reads the socket into a buffer of its own as soon as bytes arrive.
    fn unread_by_peer(&self) -> Option<usize>;

    /// Closes this end; the peer's reads drain and then see end of stream.
    ///
    /// # Errors
    /// The transport's failure while flushing or signalling.
    fn close(&mut self) -> io::Result<()>;
}

/// Opens vchans as server or client, in the caller's own domain.
pub trait VchanConnector {
    /// The channel type this connector produces.
    type Channel: Vchan;

    /// Offers a vchan to `peer_domain` on `port` and waits for it to connect.
    ///
    /// # Errors
    /// Setup failure or [`VchanError::AcceptTimeout`].
    fn listen(&mut self, peer_domain: u32, port: u32) -> Result<Self::Channel, VchanError>;

    /// Connects to the vchan that `server_domain` offers to us on `port`.
    ///
    /// # Errors
    /// Setup failure or [`VchanError::ConnectTimeout`].
    fn connect(&mut self, server_domain: u32, port: u32) -> Result<Self::Channel, VchanError>;
}
