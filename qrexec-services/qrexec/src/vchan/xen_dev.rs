//! Linux Xen device calls for a vchan: event channels, grant pages, and xenstore.
//!
//! - `/dev/xen/evtchn`: bind an interdomain or unbound port, notify, unbind; `read` returns
//!   pending ports, writing them back unmasks them.
//! - `/dev/xen/gntalloc`: grant this domain's pages to a peer, with an unmap notify that clears
//!   the live byte and signals when the process dies.
//! - `/dev/xen/gntdev`: map a peer's grant references.
//! - `/dev/xen/xenbus`: the xenstore wire protocol (16-byte header: u32 type, request id,
//!   transaction id, payload length; NUL-separated strings).
//!
//! ioctl numbers and struct layouts follow Xen's public headers `xen/sys/evtchn.h`,
//! `xen/sys/gntalloc.h`, `xen/sys/gntdev.h` and `xen/io/xs_wire.h` (Debian `libxen-dev`); the
//! unit tests pin every number and size against the values those headers produce.
//!
//! Crates considered: `xen-sys` is a no_std crate of hypercall wrappers for kernels, with no
//! grant-device or xenstore support; `xenstore-rs` speaks xenstore but is GPL-3.0-only, which
//! would narrow this project's GPL-2.0-or-later licence for the uvm binary, for a protocol
//! subset (read, write, transaction, watch) of about a hundred lines. Neither fits.
//!
//! # Limitations
//! - Untested on Xen: nothing here has run against real devices (this machine has no Xen).
//!   The tests cover only the pure parts: ioctl numbers, struct layouts, xenstore encoding and
//!   decoding, and vchan xenstore paths.
//! - The connector that assembles these into a [`super::VchanConnector`] is [`super::xen`],
//!   equally untested on Xen.
//! - The page size is assumed to be 4096, as on x86 and arm64 Xen guests.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::ring::{EventChannel, SharedMem, PAGE_SIZE};

/// `_IOC(_IOC_NONE, ty, nr, size)` as Linux encodes it on x86 and arm (direction bits 0).
const fn ioc_none(ty: u8, nr: u8, size: usize) -> u64 {
    ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EvtchnBindInterdomain {
    /// Peer domain.
    pub remote_domain: u32,
    /// Peer's event-channel port.
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EvtchnBindUnboundPort {
    /// Domain allowed to bind the port.
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_notify` and `struct ioctl_evtchn_unbind` (both one port).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EvtchnPort {
    /// Local port.
    pub port: u32,
}

/// `struct ioctl_gntalloc_unmap_notify` / `struct ioctl_gntdev_unmap_notify`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UnmapNotify {
    /// mmap offset of the byte to clear (or any byte of the page).
    pub index: u64,
    /// [`UNMAP_NOTIFY_CLEAR_BYTE`] and/or [`UNMAP_NOTIFY_SEND_EVENT`].
    pub action: u32,
    /// Port to signal.
    pub event_channel_port: u32,
}

/// `struct ioctl_gntalloc_dealloc_gref` (its trailing padding made explicit).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntallocDealloc {
    /// mmap offset returned by the allocation.
    pub index: u64,
    /// Number of pages.
    pub count: u32,
    /// Padding to the C struct's size.
    pub pad: u32,
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevUnmap {
    /// mmap offset returned by the map.
    pub index: u64,
    /// Number of pages.
    pub count: u32,
    /// Padding, as in the header.
    pub pad: u32,
}

/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 =
    ioc_none(b'E', 1, size_of::<EvtchnBindInterdomain>());
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u64 =
    ioc_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());
/// `IOCTL_EVTCHN_UNBIND`.
pub const IOCTL_EVTCHN_UNBIND: u64 = ioc_none(b'E', 3, size_of::<EvtchnPort>());
/// `IOCTL_EVTCHN_NOTIFY`.
pub const IOCTL_EVTCHN_NOTIFY: u64 = ioc_none(b'E', 4, size_of::<EvtchnPort>());
/// Size of `struct ioctl_gntalloc_alloc_gref` with its one-element trailing array.
pub const GNTALLOC_ALLOC_SIZE: usize = 24;
/// `IOCTL_GNTALLOC_ALLOC_GREF`.
pub const IOCTL_GNTALLOC_ALLOC_GREF: u64 = ioc_none(b'G', 5, GNTALLOC_ALLOC_SIZE);
/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u64 = ioc_none(b'G', 6, size_of::<GntallocDealloc>());
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: u64 = ioc_none(b'G', 7, size_of::<UnmapNotify>());
/// Size of `struct ioctl_gntdev_map_grant_ref` with its one-element trailing array.
pub const GNTDEV_MAP_SIZE: usize = 24;
/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u64 = ioc_none(b'G', 0, GNTDEV_MAP_SIZE);
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u64 = ioc_none(b'G', 1, size_of::<GntdevUnmap>());
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: u64 = ioc_none(b'G', 7, size_of::<UnmapNotify>());
/// `GNTALLOC_FLAG_WRITABLE`.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// Unmap notify: clear the byte at `index`.
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 1;
/// Unmap notify: signal the event channel.
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 2;

/// Most grant pages one call maps: a 2^20 ring is 256 pages, two of them 512, plus the page.
pub const MAX_GRANT_PAGES: usize = 513;

/// Offset of the variable array in both grant ioctl structs.
const GRANT_ARRAY_OFFSET: usize = 16;

/// Packs bytes into u64 words so the kernel gets an 8-aligned buffer; unused bytes are zero.
fn to_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..c.len()) {
                dst.copy_from_slice(c);
            }
            u64::from_ne_bytes(w)
        })
        .collect()
}

/// The bytes of a word buffer.
fn from_words(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// The native-endian u64 at `at`, 0 when out of range.
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.saturating_add(8))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_ne_bytes)
}

/// The request buffer of `IOCTL_GNTALLOC_ALLOC_GREF` for `count` pages.
pub fn gntalloc_request(domid: u16, writable: bool, count: u32) -> Vec<u64> {
    let n = (count as usize).max(1);
    let flags = if writable { GNTALLOC_FLAG_WRITABLE } else { 0 };
    let mut bytes = Vec::with_capacity(GRANT_ARRAY_OFFSET + 4 * n);
    bytes.extend_from_slice(&domid.to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&count.to_ne_bytes());
    // index (out) and the gref_ids array (out) start zeroed.
    bytes.resize(GRANT_ARRAY_OFFSET + 4 * n, 0);
    to_words(&bytes)
}

/// The request buffer of `IOCTL_GNTDEV_MAP_GRANT_REF` for the peer's `refs`.
pub fn gntdev_request(domid: u32, refs: &[u32]) -> Vec<u64> {
    let mut bytes = Vec::with_capacity(GRANT_ARRAY_OFFSET + 8 * refs.len().max(1));
    bytes.extend_from_slice(&(refs.len() as u32).to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&0u64.to_ne_bytes());
    for r in refs {
        bytes.extend_from_slice(&domid.to_ne_bytes());
        bytes.extend_from_slice(&r.to_ne_bytes());
    }
    if refs.is_empty() {
        bytes.extend_from_slice(&[0u8; 8]);
    }
    to_words(&bytes)
}

/// Calls an ioctl whose argument is `arg`.
fn ioctl<T>(file: &File, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `file` is an open descriptor, and `arg` is a live, exclusively borrowed value
    // laid out as the C struct that `request` names (pinned by the tests), so the kernel reads
    // and writes only inside it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Calls an ioctl whose argument is a variable-size buffer of words.
fn ioctl_words(file: &File, request: u64, words: &mut [u64]) -> io::Result<()> {
    // SAFETY: `words` is a live, exclusively borrowed, 8-aligned buffer built by
    // gntalloc_request/gntdev_request to hold the struct and its whole trailing array for the
    // count it declares, so the kernel's accesses stay inside it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, words.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_dev(path: &str) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Waits up to `timeout` for `file` to become readable; `false` when the time ran out.
///
/// # Errors
/// The poll's failure (an interrupted poll counts as "not yet readable").
pub fn poll_readable(file: &File, timeout: Duration) -> io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is one live, exclusively borrowed pollfd and the count passed is 1, so the
    // kernel writes only its `revents`; the descriptor stays open for the call's duration.
    let rc = unsafe { libc::poll(&mut fd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(rc > 0)
}

/// `/dev/xen/evtchn`.
#[derive(Debug, Clone)]
pub struct Evtchn {
    dev: Arc<File>,
}

impl Evtchn {
    /// Opens the event-channel device.
    ///
    /// # Errors
    /// The open's failure (no Xen, no permission).
    pub fn open() -> io::Result<Self> {
        Ok(Evtchn {
            dev: Arc::new(open_dev("/dev/xen/evtchn")?),
        })
    }

    /// Binds to the peer's port; returns the local port.
    ///
    /// # Errors
    /// The ioctl's failure.
    pub fn bind_interdomain(&self, remote_domain: u32, remote_port: u32) -> io::Result<u32> {
        let mut arg = EvtchnBindInterdomain {
            remote_domain,
            remote_port,
        };
        ioctl_ret(&self.dev, IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut arg)
    }

    /// Allocates a port the peer can bind; returns the local port.
    ///
    /// # Errors
    /// The ioctl's failure.
    pub fn bind_unbound_port(&self, remote_domain: u32) -> io::Result<u32> {
        let mut arg = EvtchnBindUnboundPort { remote_domain };
        ioctl_ret(&self.dev, IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut arg)
    }

    /// Signals the peer on a local port.
    ///
    /// # Errors
    /// The ioctl's failure.
    pub fn notify(&self, port: u32) -> io::Result<()> {
        ioctl(&self.dev, IOCTL_EVTCHN_NOTIFY, &mut EvtchnPort { port })
    }

    /// Releases a local port.
    ///
    /// # Errors
    /// The ioctl's failure.
    pub fn unbind(&self, port: u32) -> io::Result<()> {
        ioctl(&self.dev, IOCTL_EVTCHN_UNBIND, &mut EvtchnPort { port })
    }

    /// Blocks until a port is pending, unmasks it and returns it.
    ///
    /// # Errors
    /// The read's or write's failure.
    pub fn wait_pending(&self) -> io::Result<u32> {
        let mut buf = [0u8; 4];
        (&*self.dev).read_exact(&mut buf)?;
        (&*self.dev).write_all(&buf)?;
        Ok(u32::from_ne_bytes(buf))
    }

    /// As [`Evtchn::wait_pending`], giving up after `timeout` with `None`.
    ///
    /// # Errors
    /// The poll's, read's or write's failure.
    pub fn wait_pending_timeout(&self, timeout: Duration) -> io::Result<Option<u32>> {
        if !poll_readable(&self.dev, timeout)? {
            return Ok(None);
        }
        self.wait_pending().map(Some)
    }
}

/// Calls an ioctl that returns a port number as its result.
fn ioctl_ret<T>(file: &File, request: u64, arg: &mut T) -> io::Result<u32> {
    // SAFETY: as in `ioctl`: `arg` is a live, exclusively borrowed value laid out as the C
    // struct `request` names.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg as *mut T) };
    u32::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// A bound event-channel port, usable as a vchan's [`EventChannel`].
#[derive(Debug)]
pub struct BoundPort {
    evtchn: Evtchn,
    port: u32,
}

impl BoundPort {
    /// Wraps a port bound on `evtchn`.
    pub fn new(evtchn: Evtchn, port: u32) -> Self {
        BoundPort { evtchn, port }
    }

    /// The local port number.
    pub fn port(&self) -> u32 {
        self.port
    }
}

impl EventChannel for BoundPort {
    fn notify(&self) -> io::Result<()> {
        self.evtchn.notify(self.port)
    }

    fn wait(&self) -> io::Result<()> {
        // One device per vchan end, so any pending port is this one.
        self.evtchn.wait_pending().map(|_| ())
    }
}

impl Drop for BoundPort {
    fn drop(&mut self) {
        // Nothing useful can be done about a failed unbind while dropping; the kernel
        // releases the port when the device is closed.
        let _ = self.evtchn.unbind(self.port);
    }
}

/// Pages granted by this domain, from `/dev/xen/gntalloc`.
#[derive(Debug)]
pub struct GrantedPages {
    /// The grant references to publish, one per page.
    pub refs: Vec<u32>,
    /// The mapping of the pages.
    pub mem: MappedMem,
    /// mmap offset of the pages in the device.
    pub index: u64,
}

/// Allocates `count` pages granted to `domid` and maps them.
///
/// # Errors
/// Open, ioctl or mmap failure; `count` above [`MAX_GRANT_PAGES`] or zero is refused.
pub fn gntalloc(domid: u16, count: u32, writable: bool) -> io::Result<(File, GrantedPages)> {
    if count == 0 || count as usize > MAX_GRANT_PAGES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "grant page count out of range",
        ));
    }
    let dev = open_dev("/dev/xen/gntalloc")?;
    let mut words = gntalloc_request(domid, writable, count);
    ioctl_words(&dev, IOCTL_GNTALLOC_ALLOC_GREF, &mut words)?;
    let bytes = from_words(&words);
    let index = u64_at(&bytes, 8);
    let refs = (0..count as usize)
        .map(|i| {
            let at = GRANT_ARRAY_OFFSET + 4 * i;
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, u32::from_ne_bytes)
        })
        .collect();
    let mem = MappedMem::map(&dev, count as usize * PAGE_SIZE, index, true)?;

    Ok((dev, GrantedPages { refs, mem, index }))
}

/// Asks the kernel to clear the byte at `index` and signal `port` when the mapping goes away
/// (the process died): the peer then sees the live byte at 0.
///
/// # Errors
/// The ioctl's failure.
pub fn set_unmap_notify(dev: &File, gntdev: bool, index: u64, port: u32) -> io::Result<()> {
    let mut arg = UnmapNotify {
        index,
        action: UNMAP_NOTIFY_CLEAR_BYTE | UNMAP_NOTIFY_SEND_EVENT,
        event_channel_port: port,
    };
    let request = if gntdev {
        IOCTL_GNTDEV_SET_UNMAP_NOTIFY
    } else {
        IOCTL_GNTALLOC_SET_UNMAP_NOTIFY
    };
    ioctl(dev, request, &mut arg)
}

/// Maps the peer's grant `refs` through `/dev/xen/gntdev`.
///
/// # Errors
/// Open, ioctl or mmap failure; an empty or oversized list is refused.
pub fn gntdev_map(domid: u32, refs: &[u32], writable: bool) -> io::Result<(File, MappedMem, u64)> {
    if refs.is_empty() || refs.len() > MAX_GRANT_PAGES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "grant list length out of range",
        ));
    }
    let dev = open_dev("/dev/xen/gntdev")?;
    let mut words = gntdev_request(domid, refs);
    ioctl_words(&dev, IOCTL_GNTDEV_MAP_GRANT_REF, &mut words)?;
    let index = u64_at(&from_words(&words), 8);
    let mem = MappedMem::map(&dev, refs.len() * PAGE_SIZE, index, writable)?;

    Ok((dev, mem, index))
}

/// A shared mapping of grant pages, accessed only atomically.
#[derive(Debug)]
pub struct MappedMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access goes through
// atomic operations, so using it from several threads is sound.
unsafe impl Send for MappedMem {}
// SAFETY: as above: only atomic accesses, no interior references handed out.
unsafe impl Sync for MappedMem {}

impl MappedMem {
    fn map(dev: &File, len: usize, index: u64, writable: bool) -> io::Result<Self> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let offset = libc::off_t::try_from(index)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "grant offset too large"))?;
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint), of `len` bytes of
        // the device at the offset the grant ioctl returned; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                dev.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(MappedMem { ptr, len })
    }

    /// The byte at `offset` as an atomic, if in range.
    fn byte(&self, offset: usize) -> Option<&AtomicU8> {
        if offset >= self.len {
            return None;
        }
        // SAFETY: `offset < len`, so the pointer is inside the live mapping, which outlives
        // the returned reference (tied to &self); memory shared with another domain is only
        // ever accessed atomically, from both sides.
        Some(unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(offset)) })
    }

    /// The u32 at a 4-aligned `offset` as an atomic, if in range.
    fn word(&self, offset: usize) -> Option<&AtomicU32> {
        if offset % 4 != 0 || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: the range is inside the mapping and 4-aligned (the mapping is page-aligned),
        // and lives as long as &self; all accesses to it are atomic.
        Some(unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast::<u32>()) })
    }
}

impl Drop for MappedMem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no reference into it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

impl SharedMem for MappedMem {
    fn len(&self) -> usize {
        self.len
    }
    fn load_u32(&self, offset: usize) -> u32 {
        self.word(offset).map_or(0, |w| w.load(Ordering::SeqCst))
    }
    fn store_u32(&self, offset: usize, value: u32) {
        if let Some(w) = self.word(offset) {
            w.store(value, Ordering::SeqCst);
        }
    }
    fn load_u8(&self, offset: usize) -> u8 {
        self.byte(offset).map_or(0, |b| b.load(Ordering::SeqCst))
    }
    fn store_u8(&self, offset: usize, value: u8) {
        if let Some(b) = self.byte(offset) {
            b.store(value, Ordering::SeqCst);
        }
    }
    fn fetch_or_u8(&self, offset: usize, bits: u8) -> u8 {
        self.byte(offset)
            .map_or(0, |b| b.fetch_or(bits, Ordering::SeqCst))
    }
    fn fetch_and_u8(&self, offset: usize, bits: u8) -> u8 {
        self.byte(offset)
            .map_or(0, |b| b.fetch_and(bits, Ordering::SeqCst))
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        for (i, out) in dst.iter_mut().enumerate() {
            *out = offset
                .checked_add(i)
                .and_then(|o| self.byte(o))
                .map_or(0, |b| b.load(Ordering::Relaxed));
        }
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        for (i, v) in src.iter().enumerate() {
            if let Some(b) = offset.checked_add(i).and_then(|o| self.byte(o)) {
                b.store(*v, Ordering::Relaxed);
            }
        }
    }
}

/// The xenstore directory of the vchan `server` offers to `client` on `port`.
pub fn vchan_xs_dir(server: u32, client: u32, port: u32) -> String {
    format!("/local/domain/{server}/data/vchan/{client}/{port}")
}

/// The xenstore key holding the shared page's grant reference.
pub fn ring_ref_path(server: u32, client: u32, port: u32) -> String {
    format!("{}/ring-ref", vchan_xs_dir(server, client, port))
}

/// The xenstore key holding the server's event-channel port.
pub fn event_channel_path(server: u32, client: u32, port: u32) -> String {
    format!("{}/event-channel", vchan_xs_dir(server, client, port))
}

/// The xenstore device node.
pub const XENBUS_DEV: &str = "/dev/xen/xenbus";

/// The xenstore file xenfs provides when mounted on `/proc/xen`.
pub const XENFS_XENBUS: &str = "/proc/xen/xenbus";

/// Largest xenstore payload (`XENSTORE_PAYLOAD_MAX`).
pub const XS_PAYLOAD_MAX: usize = 4096;

/// Xenstore message types used here (`enum xsd_sockmsg_type`).
pub mod xs_type {
    /// XS_READ.
    pub const READ: u32 = 2;
    /// XS_WATCH.
    pub const WATCH: u32 = 4;
    /// XS_TRANSACTION_START.
    pub const TRANSACTION_START: u32 = 6;
    /// XS_TRANSACTION_END.
    pub const TRANSACTION_END: u32 = 7;
    /// XS_WRITE.
    pub const WRITE: u32 = 11;
    /// XS_WATCH_EVENT.
    pub const WATCH_EVENT: u32 = 15;
    /// XS_ERROR.
    pub const ERROR: u32 = 16;
}

/// A xenstore failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XenStoreError {
    /// The device failed.
    #[error("xenbus device failed")]
    Io(#[from] io::Error),
    /// A payload is longer than [`XS_PAYLOAD_MAX`].
    #[error("xenstore payload of {len} bytes exceeds {XS_PAYLOAD_MAX}")]
    PayloadTooLarge {
        /// The length.
        len: usize,
    },
    /// xenstored answered with an error name such as `ENOENT`.
    #[error("xenstore refused the request: {0}")]
    Refused(String),
    /// A reply of another type or request id than the request.
    #[error("xenstore reply of type {got} does not answer request type {want}")]
    UnexpectedReply {
        /// Reply type.
        got: u32,
        /// Request type.
        want: u32,
    },
    /// A watch event without its path and token.
    #[error("malformed xenstore watch event")]
    MalformedWatchEvent,
}

/// One xenstore message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsMsg {
    /// Message type, see [`xs_type`].
    pub msg_type: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl XsMsg {
    /// Header and payload as one buffer (the device wants a whole message per write).
    ///
    /// # Errors
    /// [`XenStoreError::PayloadTooLarge`].
    pub fn encode(&self) -> Result<Vec<u8>, XenStoreError> {
        let len = self.payload.len();
        if len > XS_PAYLOAD_MAX {
            return Err(XenStoreError::PayloadTooLarge { len });
        }
        let mut out = Vec::with_capacity(16 + len);
        for v in [self.msg_type, self.req_id, self.tx_id, len as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Reads one message.
    ///
    /// # Errors
    /// I/O failure or [`XenStoreError::PayloadTooLarge`] before reading the payload.
    pub fn read_from(r: &mut impl Read) -> Result<XsMsg, XenStoreError> {
        let mut hdr = [0u8; 16];
        r.read_exact(&mut hdr)?;
        let field = |i: usize| {
            hdr.get(i * 4..i * 4 + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, u32::from_le_bytes)
        };
        let len = field(3) as usize;
        if len > XS_PAYLOAD_MAX {
            return Err(XenStoreError::PayloadTooLarge { len });
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Ok(XsMsg {
            msg_type: field(0),
            req_id: field(1),
            tx_id: field(2),
            payload,
        })
    }
}

/// A xenstore client over the xenbus device (or any stream that carries xenstore messages).
#[derive(Debug)]
pub struct XenStore<T> {
    dev: T,
    next_req: u32,
    /// Watch events that arrived while waiting for a reply: (path, token).
    pending_events: Vec<(String, String)>,
}

impl XenStore<File> {
    /// Opens `/dev/xen/xenbus`.
    ///
    /// # Errors
    /// The open's failure.
    pub fn open() -> Result<Self, XenStoreError> {
        Self::open_path(XENBUS_DEV)
    }

    /// Opens a xenstore device at `path` (the xenfs file `/proc/xen/xenbus` speaks the same
    /// protocol as the device node).
    ///
    /// # Errors
    /// The open's failure.
    pub fn open_path(path: &str) -> Result<Self, XenStoreError> {
        Ok(XenStore::new(open_dev(path)?))
    }

    /// As [`XenStore::next_watch_event`], giving up after `timeout` with `None`.
    ///
    /// # Errors
    /// Transport failure or a malformed event.
    pub fn next_watch_event_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(String, String)>, XenStoreError> {
        if !self.pending_events.is_empty() {
            return Ok(Some(self.pending_events.remove(0)));
        }
        // The device hands out one whole message per read, so readable means a message is
        // there; a reply to nothing cannot arrive because no request is outstanding.
        if !poll_readable(&self.dev, timeout)? {
            return Ok(None);
        }
        self.next_watch_event().map(Some)
    }
}

impl<T: Read + Write> XenStore<T> {
    /// A client over `dev`.
    pub fn new(dev: T) -> Self {
        XenStore {
            dev,
            next_req: 1,
            pending_events: Vec::new(),
        }
    }

    /// The device, given back (the scripted devices of tests hold the requests sent).
    pub fn into_inner(self) -> T {
        self.dev
    }

    fn request(
        &mut self,
        msg_type: u32,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, XenStoreError> {
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let wire = XsMsg {
            msg_type,
            req_id,
            tx_id,
            payload,
        }
        .encode()?;
        self.dev.write_all(&wire)?;
        loop {
            let reply = XsMsg::read_from(&mut self.dev)?;
            if reply.msg_type == xs_type::WATCH_EVENT {
                self.pending_events.push(parse_watch_event(&reply.payload)?);
                continue;
            }
            if reply.msg_type == xs_type::ERROR {
                let name = reply.payload.split(|b| *b == 0).next().unwrap_or_default();
                return Err(XenStoreError::Refused(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            if reply.msg_type != msg_type || reply.req_id != req_id {
                return Err(XenStoreError::UnexpectedReply {
                    got: reply.msg_type,
                    want: msg_type,
                });
            }
            return Ok(reply.payload);
        }
    }

    /// Reads a key.
    ///
    /// # Errors
    /// [`XenStoreError::Refused`] (e.g. `ENOENT`) or transport failure.
    pub fn read(&mut self, tx_id: u32, path: &str) -> Result<Vec<u8>, XenStoreError> {
        self.request(xs_type::READ, tx_id, nul_terminated(path))
    }

    /// Writes a key: the path NUL-terminated, then the value without NUL.
    ///
    /// # Errors
    /// [`XenStoreError::Refused`] or transport failure.
    pub fn write(&mut self, tx_id: u32, path: &str, value: &[u8]) -> Result<(), XenStoreError> {
        let mut payload = nul_terminated(path);
        payload.extend_from_slice(value);
        self.request(xs_type::WRITE, tx_id, payload).map(|_| ())
    }

    /// Starts a transaction; returns its id.
    ///
    /// # Errors
    /// [`XenStoreError::Refused`] or transport failure.
    pub fn transaction_start(&mut self) -> Result<u32, XenStoreError> {
        let reply = self.request(xs_type::TRANSACTION_START, 0, vec![0])?;
        let text = String::from_utf8_lossy(reply.split(|b| *b == 0).next().unwrap_or_default())
            .into_owned();
        text.parse()
            .map_err(|_| XenStoreError::Refused(format!("bad transaction id {text:?}")))
    }

    /// Commits (`commit`) or aborts a transaction. `EAGAIN` means it must be retried.
    ///
    /// # Errors
    /// [`XenStoreError::Refused`] or transport failure.
    pub fn transaction_end(&mut self, tx_id: u32, commit: bool) -> Result<(), XenStoreError> {
        let flag = if commit {
            b"T\0".to_vec()
        } else {
            b"F\0".to_vec()
        };
        self.request(xs_type::TRANSACTION_END, tx_id, flag)
            .map(|_| ())
    }

    /// Watches `path`; events carry `token`.
    ///
    /// # Errors
    /// [`XenStoreError::Refused`] or transport failure.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), XenStoreError> {
        let mut payload = nul_terminated(path);
        payload.extend_from_slice(&nul_terminated(token));
        self.request(xs_type::WATCH, 0, payload).map(|_| ())
    }

    /// Blocks until the next watch event; returns (path, token).
    ///
    /// # Errors
    /// Transport failure or a malformed event.
    pub fn next_watch_event(&mut self) -> Result<(String, String), XenStoreError> {
        if !self.pending_events.is_empty() {
            return Ok(self.pending_events.remove(0));
        }
        loop {
            let msg = XsMsg::read_from(&mut self.dev)?;
            if msg.msg_type == xs_type::WATCH_EVENT {
                return parse_watch_event(&msg.payload);
            }
        }
    }
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A watch event's payload: path NUL token NUL.
fn parse_watch_event(payload: &[u8]) -> Result<(String, String), XenStoreError> {
    let mut parts = payload.split(|b| *b == 0);
    let path = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or(XenStoreError::MalformedWatchEvent)?;
    let token = parts.next().ok_or(XenStoreError::MalformedWatchEvent)?;
    Ok((
        String::from_utf8_lossy(path).into_owned(),
        String::from_utf8_lossy(token).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Values printed by a C program including the Debian libxen-dev headers on x86_64.
    #[test]
    fn ioctl_numbers_match_the_xen_headers() {
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x84501);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x44502);
        assert_eq!(IOCTL_EVTCHN_UNBIND, 0x44503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x44504);
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x184705);
        assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF, 0x104706);
        assert_eq!(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY, 0x104707);
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x184700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x104701);
        assert_eq!(IOCTL_GNTDEV_SET_UNMAP_NOTIFY, 0x104707);
    }

    #[test]
    fn struct_sizes_match_the_xen_headers() {
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 8);
        assert_eq!(size_of::<UnmapNotify>(), 16);
        assert_eq!(size_of::<GntallocDealloc>(), 16);
        assert_eq!(size_of::<GntdevUnmap>(), 16);
    }

    #[test]
    fn gntalloc_request_layout() {
        let bytes = from_words(&gntalloc_request(5, true, 3));
        assert_eq!(bytes.len(), 32, "16-byte head plus 3 refs, padded to words");
        assert_eq!(&bytes[0..2], &5u16.to_ne_bytes());
        assert_eq!(&bytes[2..4], &1u16.to_ne_bytes());
        assert_eq!(&bytes[4..8], &3u32.to_ne_bytes());
        assert!(bytes[8..].iter().all(|b| *b == 0));
    }

    #[test]
    fn gntdev_request_layout() {
        let bytes = from_words(&gntdev_request(9, &[11, 12]));
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[0..4], &2u32.to_ne_bytes());
        assert_eq!(&bytes[16..20], &9u32.to_ne_bytes());
        assert_eq!(&bytes[20..24], &11u32.to_ne_bytes());
        assert_eq!(&bytes[28..32], &12u32.to_ne_bytes());
    }

    #[test]
    fn vchan_paths_follow_the_reference() {
        assert_eq!(
            ring_ref_path(0, 7, 512),
            "/local/domain/0/data/vchan/7/512/ring-ref"
        );
        assert_eq!(
            event_channel_path(3, 7, 513),
            "/local/domain/3/data/vchan/7/513/event-channel"
        );
    }

    #[test]
    fn xs_message_encodes_header_then_payload() {
        let m = XsMsg {
            msg_type: xs_type::WRITE,
            req_id: 2,
            tx_id: 9,
            payload: b"a\0b".to_vec(),
        };
        let wire = m.encode().unwrap();
        assert_eq!(
            &wire[..16],
            &[11, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0]
        );
        assert_eq!(XsMsg::read_from(&mut Cursor::new(wire)).unwrap(), m);
    }

    #[test]
    fn xs_oversized_payload_is_refused_before_reading_it() {
        let mut hdr = vec![2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        hdr.extend_from_slice(&5000u32.to_le_bytes());
        let err = XsMsg::read_from(&mut Cursor::new(hdr)).unwrap_err();
        assert!(matches!(err, XenStoreError::PayloadTooLarge { len: 5000 }));
    }

    use super::script::{reply, Script};

    #[test]
    fn transaction_write_and_commit_requests() {
        let input = [
            reply(xs_type::TRANSACTION_START, 1, b"42\0"),
            reply(xs_type::WRITE, 2, b"OK\0"),
            reply(xs_type::TRANSACTION_END, 3, b"OK\0"),
        ]
        .concat();
        let mut xs = XenStore::new(Script {
            input: Cursor::new(input),
            output: Vec::new(),
        });
        let tx = xs.transaction_start().unwrap();
        assert_eq!(tx, 42);
        xs.write(tx, &ring_ref_path(0, 7, 512), b"123").unwrap();
        xs.transaction_end(tx, true).unwrap();

        let mut sent = Cursor::new(xs.dev.output);
        let start = XsMsg::read_from(&mut sent).unwrap();
        assert_eq!(
            (start.msg_type, start.tx_id),
            (xs_type::TRANSACTION_START, 0)
        );
        let write = XsMsg::read_from(&mut sent).unwrap();
        assert_eq!((write.msg_type, write.tx_id), (xs_type::WRITE, 42));
        assert_eq!(
            write.payload,
            b"/local/domain/0/data/vchan/7/512/ring-ref\x00123"
        );
        let end = XsMsg::read_from(&mut sent).unwrap();
        assert_eq!(
            (end.msg_type, end.tx_id, end.payload),
            (xs_type::TRANSACTION_END, 42, b"T\0".to_vec())
        );
    }

    #[test]
    fn error_reply_is_refused_with_its_name() {
        let input = reply(xs_type::ERROR, 1, b"ENOENT\0");
        let mut xs = XenStore::new(Script {
            input: Cursor::new(input),
            output: Vec::new(),
        });
        match xs.read(0, "/nope") {
            Err(XenStoreError::Refused(name)) => assert_eq!(name, "ENOENT"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn watch_event_during_a_request_is_kept_for_later() {
        let input = [
            reply(xs_type::WATCH_EVENT, 0, b"/p/event-channel\0tok\0"),
            reply(xs_type::READ, 1, b"17"),
        ]
        .concat();
        let mut xs = XenStore::new(Script {
            input: Cursor::new(input),
            output: Vec::new(),
        });
        assert_eq!(xs.read(0, "/p/event-channel").unwrap(), b"17");
        assert_eq!(
            xs.next_watch_event().unwrap(),
            ("/p/event-channel".into(), "tok".into())
        );
    }

    /// A socket standing in for a device: poll and read behave the same on both.
    fn socket_device() -> (File, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (File::from(std::os::fd::OwnedFd::from(a)), b)
    }

    #[test]
    fn poll_readable_times_out_then_sees_data() {
        let (dev, mut peer) = socket_device();
        assert!(!poll_readable(&dev, Duration::from_millis(20)).unwrap());
        peer.write_all(b"x").unwrap();
        assert!(poll_readable(&dev, Duration::from_millis(20)).unwrap());
    }

    #[test]
    fn watch_wait_gives_up_at_its_timeout_then_reads_the_event() {
        let (dev, mut peer) = socket_device();
        let mut xs = XenStore::new(dev);
        let none = xs
            .next_watch_event_timeout(Duration::from_millis(20))
            .unwrap();
        assert_eq!(none, None);
        peer.write_all(&reply(xs_type::WATCH_EVENT, 0, b"/a\0tok\0"))
            .unwrap();
        let event = xs.next_watch_event_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(event, Some(("/a".into(), "tok".into())));
    }
}

/// A scripted xenstore device for the tests of this module and of `vchan::xen`.
#[cfg(test)]
pub(crate) mod script {
    use std::io::{self, Cursor, Read, Write};

    use super::XsMsg;

    /// Replies are read from `input`; requests are collected in `output`.
    pub(crate) struct Script {
        pub(crate) input: Cursor<Vec<u8>>,
        pub(crate) output: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// One encoded reply of `msg_type` to request `req_id`, outside any transaction.
    pub(crate) fn reply(msg_type: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        XsMsg {
            msg_type,
            req_id,
            tx_id: 0,
            payload: payload.to_vec(),
        }
        .encode()
        .expect("test replies are small")
    }
}
