//! vchan's Xen shared-memory ring layout, in safe Rust over abstract shared memory and events.
//!
//! The shared page (the interface) holds:
//!
//! | offset | field |
//! |---|---|
//! | 0 | left ring: u32 cons, u32 prod (client writes, server reads) |
//! | 8 | right ring: u32 cons, u32 prod (server writes, client reads) |
//! | 16 | u16 left_order, u16 right_order |
//! | 20 | u8 cli_live, u8 srv_live (0 gone, 1 connected, 2 client not yet connected) |
//! | 22 | u8 cli_notify, u8 srv_notify (WRITE = 1, READ = 2) |
//! | 24 | u32 grant references: the left ring's pages, then the right ring's |
//!
//! A ring of order 10 lies in the shared page at offset 1024, order 11 at offset 2048; order 12
//! to 20 uses 2^(order-12) separately granted pages, given here as their own [`SharedMem`]
//! region. Indices run freely as u32; a position is `index & (size - 1)`, the bytes readable
//! are `prod - cons` and the free space is `size - (prod - cons)`.
//!
//! Wake-ups: a side that is about to wait ORs the bit it waits for into the *peer's* notify
//! byte, then re-checks the indices, then waits for an event. After producing or consuming, a
//! side clears that bit in its *own* byte and sends an event only if it was set. The server
//! starts with `cli_notify = WRITE`; a connecting client sets `cli_live = 1` and
//! `srv_notify = WRITE`, then signals. A side that leaves sets its live byte to 0 and signals.
//!
//! The peer is hostile: its indices are checked (`prod - cons` never above the ring size) and
//! every position is masked, so no value it writes can make this side read or write outside
//! the ring.
//!
//! # Limitations
//! - Memory and events are abstract ([`SharedMem`], [`EventChannel`]); the grant-page and
//!   event-channel implementations for a real Xen guest are in [`super::xen_dev`] and are not
//!   tested on Xen.
//! - Xenstore advertisement and grant mapping are the connector's job, not this module's.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Vchan, VchanError};
use crate::proto::{FrameTransport, HEADER_LEN};

/// Size of the shared page and of each separately granted ring page.
pub const PAGE_SIZE: usize = 4096;
/// Smallest ring order (1 KiB, inside the shared page).
pub const MIN_ORDER: u16 = 10;
/// Largest ring order (1 MiB).
pub const MAX_ORDER: u16 = 20;
/// Notify bit: data was written.
pub const NOTIFY_WRITE: u8 = 1;
/// Notify bit: data was read (space was freed).
pub const NOTIFY_READ: u8 = 2;
/// Live byte: that side has gone.
pub const LIVE_GONE: u8 = 0;
/// Live byte: that side is connected.
pub const LIVE_CONNECTED: u8 = 1;
/// Live byte: the client has not connected yet.
pub const LIVE_NOT_YET: u8 = 2;

const OFF_LEFT_CONS: usize = 0;
const OFF_LEFT_PROD: usize = 4;
const OFF_RIGHT_CONS: usize = 8;
const OFF_RIGHT_PROD: usize = 12;
const OFF_ORDERS: usize = 16;
const OFF_CLI_LIVE: usize = 20;
const OFF_SRV_LIVE: usize = 21;
const OFF_CLI_NOTIFY: usize = 22;
const OFF_SRV_NOTIFY: usize = 23;
const OFF_GRANTS: usize = 24;

/// Memory shared with the peer domain, accessed only through atomic operations.
///
/// Offsets are in bytes from the start of the region. An implementation must never panic: an
/// out-of-range access loads 0 and stores nothing (this module only makes in-range accesses,
/// having checked each region's length when the vchan was set up). u32 accesses are at
/// 4-aligned offsets; multi-byte values are little-endian, as on every Xen architecture.
pub trait SharedMem: Send + Sync {
    /// Length of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Atomically loads the u32 at a 4-aligned offset.
    fn load_u32(&self, offset: usize) -> u32;
    /// Atomically stores the u32 at a 4-aligned offset.
    fn store_u32(&self, offset: usize, value: u32);
    /// Atomically loads a byte.
    fn load_u8(&self, offset: usize) -> u8;
    /// Atomically stores a byte.
    fn store_u8(&self, offset: usize, value: u8);
    /// Atomically ORs `bits` into a byte; returns the previous value.
    fn fetch_or_u8(&self, offset: usize, bits: u8) -> u8;
    /// Atomically ANDs `bits` into a byte; returns the previous value.
    fn fetch_and_u8(&self, offset: usize, bits: u8) -> u8;
    /// Copies bytes out of the region.
    fn read_bytes(&self, offset: usize, dst: &mut [u8]);
    /// Copies bytes into the region.
    fn write_bytes(&self, offset: usize, src: &[u8]);
}

/// Shared memory on the ordinary heap, for two endpoints in one process (and tests).
#[derive(Debug, Clone)]
pub struct HeapMem {
    words: Arc<[AtomicU32]>,
}

impl HeapMem {
    /// A zeroed region of `len` bytes, rounded up to whole u32 words.
    pub fn new(len: usize) -> Self {
        let words = len.div_ceil(4);
        HeapMem {
            words: (0..words).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn word(&self, offset: usize) -> Option<(&AtomicU32, u32)> {
        let shift = u32::try_from(offset % 4).ok()? * 8;
        Some((self.words.get(offset / 4)?, shift))
    }

    /// Replaces the bytes selected by `mask` in one word.
    fn merge(word: &AtomicU32, mask: u32, value: u32) {
        // fetch_update only fails when the closure returns None, which this one never does.
        let _ = word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
            Some((old & !mask) | (value & mask))
        });
    }
}

impl SharedMem for HeapMem {
    fn len(&self) -> usize {
        self.words.len() * 4
    }

    fn load_u32(&self, offset: usize) -> u32 {
        match self.word(offset) {
            Some((w, 0)) => w.load(Ordering::SeqCst),
            _ => 0,
        }
    }

    fn store_u32(&self, offset: usize, value: u32) {
        if let Some((w, 0)) = self.word(offset) {
            w.store(value, Ordering::SeqCst);
        }
    }

    fn load_u8(&self, offset: usize) -> u8 {
        self.word(offset)
            .map_or(0, |(w, shift)| (w.load(Ordering::SeqCst) >> shift) as u8)
    }

    fn store_u8(&self, offset: usize, value: u8) {
        if let Some((w, shift)) = self.word(offset) {
            Self::merge(w, 0xff << shift, u32::from(value) << shift);
        }
    }

    fn fetch_or_u8(&self, offset: usize, bits: u8) -> u8 {
        self.word(offset).map_or(0, |(w, shift)| {
            (w.fetch_or(u32::from(bits) << shift, Ordering::SeqCst) >> shift) as u8
        })
    }

    fn fetch_and_u8(&self, offset: usize, bits: u8) -> u8 {
        self.word(offset).map_or(0, |(w, shift)| {
            let mask = !((u32::from(!bits)) << shift);
            (w.fetch_and(mask, Ordering::SeqCst) >> shift) as u8
        })
    }

    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        for (i, out) in dst.iter_mut().enumerate() {
            *out = offset.checked_add(i).map_or(0, |o| self.load_u8(o));
        }
    }

    fn write_bytes(&self, offset: usize, src: &[u8]) {
        let mut i = 0;
        while let Some(rest) = src.get(i..) {
            if rest.is_empty() {
                break;
            }
            let Some(off) = offset.checked_add(i) else {
                return;
            };
            let Some((word, shift)) = self.word(off) else {
                return;
            };
            let lane = (shift / 8) as usize;
            let n = (4 - lane).min(rest.len());
            if let (0, Some(full)) = (
                lane,
                rest.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()),
            ) {
                word.store(u32::from_le_bytes(full), Ordering::SeqCst);
                i += 4;
                continue;
            }
            let (mut mask, mut value) = (0u32, 0u32);
            for (k, &b) in rest.iter().take(n).enumerate() {
                let s = (lane + k) * 8;
                mask |= 0xff << s;
                value |= u32::from(b) << s;
            }
            Self::merge(word, mask, value);
            i += n;
        }
    }
}

/// An event channel to the peer: level of "something happened", not a count.
pub trait EventChannel: Send {
    /// Signals the peer.
    ///
    /// # Errors
    /// The channel's failure.
    fn notify(&self) -> io::Result<()>;

    /// Blocks until the peer signalled since the last wait.
    ///
    /// # Errors
    /// The channel's failure, or a time-out of the implementation.
    fn wait(&self) -> io::Result<()>;
}

/// A pending flag with its condition variable.
#[derive(Debug, Default)]
struct Pending {
    flag: Mutex<bool>,
    cond: Condvar,
}

/// One end of an in-process event channel pair (for two endpoints in one process and tests).
#[derive(Debug, Clone)]
pub struct InProcessEvent {
    mine: Arc<Pending>,
    peer: Arc<Pending>,
    timeout: Duration,
}

/// Two connected [`InProcessEvent`] ends; a wait longer than `timeout` fails with
/// [`io::ErrorKind::TimedOut`], so a protocol bug fails a test instead of hanging it.
pub fn in_process_event_pair(timeout: Duration) -> (InProcessEvent, InProcessEvent) {
    let a = Arc::new(Pending::default());
    let b = Arc::new(Pending::default());
    (
        InProcessEvent {
            mine: a.clone(),
            peer: b.clone(),
            timeout,
        },
        InProcessEvent {
            mine: b,
            peer: a,
            timeout,
        },
    )
}

impl EventChannel for InProcessEvent {
    fn notify(&self) -> io::Result<()> {
        let mut flag = self
            .peer
            .flag
            .lock()
            .map_err(|_| io::Error::other("event lock poisoned"))?;
        *flag = true;
        self.peer.cond.notify_all();
        Ok(())
    }

    fn wait(&self) -> io::Result<()> {
        let flag = self
            .mine
            .flag
            .lock()
            .map_err(|_| io::Error::other("event lock poisoned"))?;
        let (mut flag, result) = self
            .mine
            .cond
            .wait_timeout_while(flag, self.timeout, |pending| !*pending)
            .map_err(|_| io::Error::other("event lock poisoned"))?;
        if result.timed_out() && !*flag {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no event from the vchan peer",
            ));
        }
        *flag = false;
        Ok(())
    }
}

/// Where a ring of a given order lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Inside the shared page at this offset (orders 10 and 11).
    InPage(usize),
    /// In this many separately granted pages (orders 12 to 20).
    Pages(usize),
}

/// The placement of a ring of `order`, or `None` outside 10..=20.
pub fn placement(order: u16) -> Option<Placement> {
    match order {
        10 => Some(Placement::InPage(1024)),
        11 => Some(Placement::InPage(2048)),
        12..=MAX_ORDER => Some(Placement::Pages(1usize << (order - 12))),
        _ => None,
    }
}

/// The orders and grant references a server published in the shared page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingLayout {
    /// Order of the left (client-to-server) ring.
    pub left_order: u16,
    /// Order of the right (server-to-client) ring.
    pub right_order: u16,
    /// Grant references: the left ring's pages, then the right ring's.
    pub grants: Vec<u32>,
}

/// Separately granted pages of a ring of `order`: 0 when it lies in the shared page (or the
/// order is invalid, which [`check_orders`] refuses).
pub(crate) fn ring_pages(order: u16) -> usize {
    match placement(order) {
        Some(Placement::Pages(n)) => n,
        _ => 0,
    }
}

/// Checks a pair of orders and returns the number of grant references they need.
pub(crate) fn check_orders(left: u16, right: u16) -> Result<usize, VchanError> {
    let bad = || VchanError::BadRingOrder { left, right };
    let (l, r) = (
        placement(left).ok_or_else(bad)?,
        placement(right).ok_or_else(bad)?,
    );
    if let (Placement::InPage(a), Placement::InPage(b)) = (l, r) {
        if a == b {
            return Err(bad());
        }
    }
    let count = ring_pages(left) + ring_pages(right);
    // The grant list must end before the first in-page ring (or the page end).
    let limit = [l, r]
        .iter()
        .filter_map(|p| match p {
            Placement::InPage(off) => Some(*off),
            Placement::Pages(_) => None,
        })
        .min()
        .unwrap_or(PAGE_SIZE);
    if OFF_GRANTS + 4 * count > limit {
        return Err(VchanError::TooManyGrants { count });
    }

    Ok(count)
}

/// Reads the orders and grant references from a shared page, checking them.
///
/// # Errors
/// [`VchanError::RegionTooSmall`], [`VchanError::BadRingOrder`] or [`VchanError::TooManyGrants`].
pub fn read_layout<M: SharedMem>(page: &M) -> Result<RingLayout, VchanError> {
    if page.len() < PAGE_SIZE {
        return Err(VchanError::RegionTooSmall {
            len: page.len(),
            needed: PAGE_SIZE,
        });
    }
    let orders = page.load_u32(OFF_ORDERS);
    let (left_order, right_order) = ((orders & 0xffff) as u16, (orders >> 16) as u16);
    let count = check_orders(left_order, right_order)?;
    let grants = (0..count)
        .map(|i| page.load_u32(OFF_GRANTS + 4 * i))
        .collect();

    Ok(RingLayout {
        left_order,
        right_order,
        grants,
    })
}

/// One direction of the vchan.
#[derive(Debug)]
struct Ring<M> {
    mem: Arc<M>,
    base: usize,
    size: u32,
    cons_off: usize,
    prod_off: usize,
}

impl<M: SharedMem> Ring<M> {
    /// The ring of `order`, in the page or in its own region.
    fn new(
        page: &Arc<M>,
        own: Option<Arc<M>>,
        order: u16,
        cons_off: usize,
        prod_off: usize,
    ) -> Result<Self, VchanError> {
        let size = 1u32 << order;
        let (mem, base) = match placement(order) {
            Some(Placement::InPage(off)) => (page.clone(), off),
            Some(Placement::Pages(_)) => {
                let mem = own.ok_or(VchanError::RegionTooSmall {
                    len: 0,
                    needed: size as usize,
                })?;
                (mem, 0)
            }
            None => {
                return Err(VchanError::BadRingOrder {
                    left: order,
                    right: order,
                })
            }
        };
        let needed = base + size as usize;
        if mem.len() < needed {
            return Err(VchanError::RegionTooSmall {
                len: mem.len(),
                needed,
            });
        }

        Ok(Ring {
            mem,
            base,
            size,
            cons_off,
            prod_off,
        })
    }

    /// Bytes in use, checked against the ring size.
    fn used(&self, page: &M) -> Result<u32, VchanError> {
        let used = page
            .load_u32(self.prod_off)
            .wrapping_sub(page.load_u32(self.cons_off));
        if used > self.size {
            return Err(VchanError::CorruptIndices {
                used,
                size: self.size,
            });
        }
        Ok(used)
    }

    /// Copies `dst.len()` bytes starting at index `from`, across the wrap.
    fn copy_out(&self, from: u32, dst: &mut [u8]) {
        let pos = (from & (self.size - 1)) as usize;
        let first = dst.len().min(self.size as usize - pos);
        let (a, b) = dst.split_at_mut(first);
        self.mem.read_bytes(self.base + pos, a);
        self.mem.read_bytes(self.base, b);
    }

    /// Copies `src` in starting at index `from`, across the wrap.
    fn copy_in(&self, from: u32, src: &[u8]) {
        let pos = (from & (self.size - 1)) as usize;
        let first = src.len().min(self.size as usize - pos);
        let (a, b) = src.split_at(first);
        self.mem.write_bytes(self.base + pos, a);
        self.mem.write_bytes(self.base, b);
    }
}

/// One end of a vchan over the shared-ring layout.
#[derive(Debug)]
pub struct RingVchan<M: SharedMem, E: EventChannel> {
    page: Arc<M>,
    rx: Ring<M>,
    tx: Ring<M>,
    server: bool,
    event: E,
    closed: bool,
}

impl<M: SharedMem, E: EventChannel> RingVchan<M, E> {
    /// Sets up the shared page as the server: rings of the given orders (each order ≥ 12 needs
    /// its region), grant references to publish, `cli_live = 2`, `srv_live = 1`,
    /// `cli_notify = WRITE`.
    ///
    /// # Errors
    /// Bad orders, too many grants, or a region too small for its ring.
    pub fn server(
        page: Arc<M>,
        left: Option<Arc<M>>,
        right: Option<Arc<M>>,
        left_order: u16,
        right_order: u16,
        grants: &[u32],
        event: E,
    ) -> Result<Self, VchanError> {
        let count = check_orders(left_order, right_order)?;
        if grants.len() != count {
            return Err(VchanError::TooManyGrants {
                count: grants.len(),
            });
        }
        if page.len() < PAGE_SIZE {
            return Err(VchanError::RegionTooSmall {
                len: page.len(),
                needed: PAGE_SIZE,
            });
        }
        let rx = Ring::new(&page, left, left_order, OFF_LEFT_CONS, OFF_LEFT_PROD)?;
        let tx = Ring::new(&page, right, right_order, OFF_RIGHT_CONS, OFF_RIGHT_PROD)?;

        for off in [OFF_LEFT_CONS, OFF_LEFT_PROD, OFF_RIGHT_CONS, OFF_RIGHT_PROD] {
            page.store_u32(off, 0);
        }
        page.store_u32(
            OFF_ORDERS,
            u32::from(left_order) | (u32::from(right_order) << 16),
        );
        for (i, g) in grants.iter().enumerate() {
            page.store_u32(OFF_GRANTS + 4 * i, *g);
        }
        page.store_u8(OFF_CLI_LIVE, LIVE_NOT_YET);
        page.store_u8(OFF_SRV_LIVE, LIVE_CONNECTED);
        page.store_u8(OFF_CLI_NOTIFY, NOTIFY_WRITE);
        page.store_u8(OFF_SRV_NOTIFY, 0);

        Ok(RingVchan {
            page,
            rx,
            tx,
            server: true,
            event,
            closed: false,
        })
    }

    /// Connects as the client to a page a server set up: reads and checks the layout, then
    /// sets `cli_live = 1` and `srv_notify = WRITE` and signals the server.
    ///
    /// # Errors
    /// A bad layout, a region too small, or the event channel's failure.
    pub fn client(
        page: Arc<M>,
        left: Option<Arc<M>>,
        right: Option<Arc<M>>,
        event: E,
    ) -> Result<Self, VchanError> {
        let layout = read_layout(&*page)?;
        let tx = Ring::new(&page, left, layout.left_order, OFF_LEFT_CONS, OFF_LEFT_PROD)?;
        let rx = Ring::new(
            &page,
            right,
            layout.right_order,
            OFF_RIGHT_CONS,
            OFF_RIGHT_PROD,
        )?;
        page.store_u8(OFF_CLI_LIVE, LIVE_CONNECTED);
        page.store_u8(OFF_SRV_NOTIFY, NOTIFY_WRITE);
        event.notify().map_err(VchanError::Event)?;

        Ok(RingVchan {
            page,
            rx,
            tx,
            server: false,
            event,
            closed: false,
        })
    }

    /// The peer's live byte as it stands: [`LIVE_GONE`], [`LIVE_CONNECTED`], [`LIVE_NOT_YET`]
    /// (the peer writes it, so any other value is possible and means nothing).
    pub fn peer_live_state(&self) -> u8 {
        self.page.load_u8(self.peer_live())
    }

    fn own_notify(&self) -> usize {
        if self.server {
            OFF_SRV_NOTIFY
        } else {
            OFF_CLI_NOTIFY
        }
    }

    fn peer_notify(&self) -> usize {
        if self.server {
            OFF_CLI_NOTIFY
        } else {
            OFF_SRV_NOTIFY
        }
    }

    fn own_live(&self) -> usize {
        if self.server {
            OFF_SRV_LIVE
        } else {
            OFF_CLI_LIVE
        }
    }

    fn peer_live(&self) -> usize {
        if self.server {
            OFF_CLI_LIVE
        } else {
            OFF_SRV_LIVE
        }
    }

    /// The peer has not left (a client that has not connected yet counts as present).
    fn peer_present(&self) -> bool {
        self.page.load_u8(self.peer_live()) != LIVE_GONE
    }

    /// Asks the peer for an event when it does `bit`.
    fn request_notify(&self, bit: u8) {
        self.page.fetch_or_u8(self.peer_notify(), bit);
    }

    /// After doing `bit`, signals the peer if it asked for it.
    fn send_notify(&self, bit: u8) -> io::Result<()> {
        let prev = self.page.fetch_and_u8(self.own_notify(), !bit);
        if prev & bit != 0 {
            self.event.notify()?;
        }
        Ok(())
    }

    fn rx_ready(&self) -> io::Result<u32> {
        Ok(self.rx.used(&self.page)?)
    }

    fn tx_free(&self) -> io::Result<u32> {
        Ok(self.tx.size - self.tx.used(&self.page)?)
    }

    /// Waits until `ready` holds, asking the peer for `bit`; `ready` is re-checked after the
    /// request so an event sent in between is not missed.
    fn wait_for(
        &self,
        bit: u8,
        mut ready: impl FnMut(&Self) -> io::Result<bool>,
    ) -> io::Result<()> {
        loop {
            if ready(self)? {
                return Ok(());
            }
            self.request_notify(bit);
            if ready(self)? {
                return Ok(());
            }
            self.event.wait()?;
        }
    }

    fn broken_pipe(&self) -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "vchan peer is gone")
    }
}

impl<M: SharedMem, E: EventChannel> Read for RingVchan<M, E> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Data the peer wrote before leaving is still delivered; then end of stream.
        self.wait_for(NOTIFY_WRITE, |v| Ok(v.rx_ready()? > 0 || !v.peer_present()))?;
        let ready = self.rx_ready()?;
        if ready == 0 {
            return Ok(0);
        }

        let n = buf.len().min(ready as usize);
        let cons = self.page.load_u32(self.rx.cons_off);
        if let Some(dst) = buf.get_mut(..n) {
            self.rx.copy_out(cons, dst);
        }
        self.page
            .store_u32(self.rx.cons_off, cons.wrapping_add(n as u32));
        self.send_notify(NOTIFY_READ)?;

        Ok(n)
    }
}

impl<M: SharedMem, E: EventChannel> Write for RingVchan<M, E> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.closed {
            return Err(self.broken_pipe());
        }
        self.wait_for(NOTIFY_READ, |v| Ok(v.tx_free()? > 0 || !v.peer_present()))?;
        if !self.peer_present() {
            return Err(self.broken_pipe());
        }

        let n = buf.len().min(self.tx_free()? as usize);
        let prod = self.page.load_u32(self.tx.prod_off);
        if let Some(src) = buf.get(..n) {
            self.tx.copy_in(prod, src);
        }
        self.page
            .store_u32(self.tx.prod_off, prod.wrapping_add(n as u32));
        self.send_notify(NOTIFY_WRITE)?;

        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<M: SharedMem, E: EventChannel> FrameTransport for RingVchan<M, E> {
    fn writable_payload(&mut self) -> io::Result<usize> {
        let header = HEADER_LEN as u32;
        self.wait_for(NOTIFY_READ, |v| {
            Ok(v.tx_free()? > header || !v.peer_present())
        })?;
        if !self.peer_present() {
            return Err(self.broken_pipe());
        }
        Ok((self.tx_free()? - header) as usize)
    }
}

impl<M: SharedMem, E: EventChannel> Vchan for RingVchan<M, E> {
    fn buffer_space(&self) -> usize {
        self.tx_free().unwrap_or(0) as usize
    }

    fn data_ready(&self) -> usize {
        self.rx_ready().unwrap_or(0) as usize
    }

    fn is_open(&self) -> bool {
        !self.closed && self.peer_present()
    }

    fn unread_by_peer(&self) -> Option<usize> {
        self.tx.used(&self.page).ok().map(|used| used as usize)
    }

    fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.page.store_u8(self.own_live(), LIVE_GONE);
        self.event.notify()
    }
}

impl<M: SharedMem, E: EventChannel> Drop for RingVchan<M, E> {
    fn drop(&mut self) {
        // The peer learns of the end from the live byte; a failed signal leaves it to find out
        // on its next check, which is all that can be done while dropping.
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::thread;
    use std::time::Instant;

    type End = RingVchan<HeapMem, InProcessEvent>;

    const WAIT: Duration = Duration::from_secs(20);

    /// A server and a client on heap memory; orders ≥ 12 get their own regions.
    fn pair(left: u16, right: u16) -> (End, End, HeapMem) {
        let page = Arc::new(HeapMem::new(PAGE_SIZE));
        let region = |o: u16| (o >= 12).then(|| Arc::new(HeapMem::new(1 << o)));
        let (l, r) = (region(left), region(right));
        let count = check_orders(left, right).unwrap();
        let grants: Vec<u32> = (0..count as u32).map(|i| 100 + i).collect();
        let (se, ce) = in_process_event_pair(WAIT);
        let server =
            RingVchan::server(page.clone(), l.clone(), r.clone(), left, right, &grants, se)
                .unwrap();
        let client = RingVchan::client(page.clone(), l, r, ce).unwrap();
        let raw = (*page).clone();
        (server, client, raw)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    #[test]
    fn server_initialises_the_documented_layout() {
        let page = Arc::new(HeapMem::new(PAGE_SIZE));
        let (l, r) = (Arc::new(HeapMem::new(1 << 13)), None);
        let (se, _ce) = in_process_event_pair(WAIT);
        let _s = RingVchan::server(page.clone(), Some(l), r, 13, 10, &[7, 8], se).unwrap();
        assert_eq!(page.load_u32(16), 13 | (10 << 16));
        assert_eq!(page.load_u8(20), LIVE_NOT_YET, "cli_live");
        assert_eq!(page.load_u8(21), LIVE_CONNECTED, "srv_live");
        assert_eq!(page.load_u8(22), NOTIFY_WRITE, "cli_notify");
        assert_eq!(page.load_u8(23), 0, "srv_notify");
        assert_eq!((page.load_u32(24), page.load_u32(28)), (7, 8));
        let layout = read_layout(&*page).unwrap();
        assert_eq!(
            layout,
            RingLayout {
                left_order: 13,
                right_order: 10,
                grants: vec![7, 8]
            }
        );
    }

    #[test]
    fn client_connect_sets_live_and_asks_for_writes() {
        let (server, _client, page) = pair(10, 11);
        assert_eq!(page.load_u8(20), LIVE_CONNECTED);
        assert!(server.is_open());
    }

    #[test]
    fn peer_live_state_shows_the_client_connecting_and_leaving() {
        let page = Arc::new(HeapMem::new(PAGE_SIZE));
        let (se, ce) = in_process_event_pair(WAIT);
        let server = RingVchan::server(page.clone(), None, None, 10, 11, &[], se).unwrap();
        assert_eq!(server.peer_live_state(), LIVE_NOT_YET);
        let client = RingVchan::client(page, None, None, ce).unwrap();
        assert_eq!(server.peer_live_state(), LIVE_CONNECTED);
        drop(client);
        assert_eq!(server.peer_live_state(), LIVE_GONE);
    }

    #[test]
    fn unread_by_peer_falls_to_zero_once_the_peer_reads() {
        let (mut server, mut client, _page) = pair(10, 11);
        assert_eq!(server.unread_by_peer(), Some(0));
        server.write_all(b"terminated").unwrap();
        assert_eq!(server.unread_by_peer(), Some(10));
        let mut got = [0u8; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(server.unread_by_peer(), Some(6));
        let mut rest = [0u8; 6];
        client.read_exact(&mut rest).unwrap();
        assert_eq!(server.unread_by_peer(), Some(0));
    }

    #[test]
    fn invalid_orders_are_refused() {
        for (l, r) in [(10, 10), (11, 11), (9, 12), (12, 21), (0, 0)] {
            assert!(
                matches!(check_orders(l, r), Err(VchanError::BadRingOrder { .. })),
                "{l} {r}"
            );
        }
        // 2 x 256 grant pages do not fit before an in-page ring at 1024.
        assert!(matches!(
            check_orders(20, 10),
            Err(VchanError::TooManyGrants { .. })
        ));
    }

    #[test]
    fn small_transfer_both_ways_in_page() {
        let (mut server, mut client, _) = pair(10, 11);
        client.write_all(b"from client").unwrap();
        server.write_all(b"from server").unwrap();
        let mut buf = [0u8; 11];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"from client");
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"from server");
    }

    #[test]
    fn empty_ring_has_nothing_ready_and_all_space_free() {
        let (server, client, _) = pair(12, 16);
        assert_eq!(server.data_ready(), 0);
        assert_eq!(client.data_ready(), 0);
        assert_eq!(client.buffer_space(), 1 << 12);
        assert_eq!(server.buffer_space(), 1 << 16);
    }

    #[test]
    fn reader_of_empty_ring_blocks_until_data_arrives() {
        let (mut server, mut client, _) = pair(10, 11);
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 5];
            server.read_exact(&mut buf).unwrap();
            buf
        });
        thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "read returned without data");
        client.write_all(b"hello").unwrap();
        assert_eq!(&reader.join().unwrap(), b"hello");
    }

    #[test]
    fn large_transfer_through_multi_page_rings() {
        let (mut server, mut client, _) = pair(16, 12);
        let data = pattern(3 << 20);
        let expected = data.clone();
        let writer = thread::spawn(move || client.write_all(&data).unwrap());
        let mut got = vec![0u8; 3 << 20];
        server.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == expected);
    }

    #[test]
    fn indices_wrap_around_u32() {
        let (mut server, mut client, page) = pair(10, 11);
        let start = u32::MAX - 300;
        for off in [0, 4, 8, 12] {
            page.store_u32(off, start);
        }
        let data = pattern(10_000);
        let expected = data.clone();
        let writer = thread::spawn(move || {
            client.write_all(&data).unwrap();
            client
        });
        let mut got = vec![0u8; 10_000];
        server.read_exact(&mut got).unwrap();
        let _client = writer.join().unwrap();
        assert!(got == expected);
        let prod = page.load_u32(4);
        assert_eq!(prod, start.wrapping_add(10_000));
        assert!(prod < start, "the index wrapped past u32::MAX");
    }

    #[test]
    fn full_ring_blocks_the_writer_until_the_reader_consumes() {
        let (mut server, mut client, _) = pair(10, 11);
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let writer = thread::spawn(move || {
            client.write_all(&pattern(3000)).unwrap();
            flag.store(true, Ordering::SeqCst);
            client
        });
        let deadline = Instant::now() + WAIT;
        while server.data_ready() < 1024 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(50));
        assert_eq!(server.data_ready(), 1024, "the ring is exactly full");
        assert!(!done.load(Ordering::SeqCst), "the writer is blocked");
        let mut got = vec![0u8; 3000];
        server.read_exact(&mut got).unwrap();
        let _client = writer.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(got, pattern(3000));
    }

    #[test]
    fn dead_peer_gives_eof_after_draining_and_write_error() {
        let (mut server, mut client, page) = pair(10, 11);
        client.write_all(b"last words").unwrap();
        drop(client);
        assert_eq!(page.load_u8(20), LIVE_GONE);
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
        assert!(!server.is_open());
        let err = server.write(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn peer_death_wakes_a_blocked_reader() {
        let (mut server, client, _) = pair(10, 11);
        let reader = thread::spawn(move || server.read(&mut [0u8; 8]).unwrap());
        thread::sleep(Duration::from_millis(50));
        drop(client);
        assert_eq!(reader.join().unwrap(), 0);
    }

    #[test]
    fn corrupt_peer_indices_are_an_error_not_an_overread() {
        let (mut server, _client, page) = pair(10, 11);
        page.store_u32(4, 1024 + 1); // left prod: more than the ring holds
        let err = server.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn writable_payload_leaves_room_for_the_header() {
        let (mut server, _client, _) = pair(10, 11);
        assert_eq!(server.writable_payload().unwrap(), 2048 - HEADER_LEN);
    }

    #[test]
    fn qrexec_stdout_chunks_fit_the_ring_with_their_header() {
        use crate::proto::{read_message, DataStreams, Message};

        // Server writes into the 1 KiB right ring: every DATA_STDOUT chunk plus its 8-byte
        // header must fit in the free space, so no chunk exceeds 1016 bytes.
        let (server, mut client, _) = pair(11, 10);
        let reader = thread::spawn(move || {
            let mut chunks = Vec::new();
            // Read to the exit code: dropping the client earlier would make the server's last
            // writes (the stderr EOF and the exit code) fail on a ring whose peer is gone.
            loop {
                match read_message(&mut client).unwrap() {
                    Message::DataStdout(d) if !d.is_empty() => chunks.push(d),
                    Message::DataStdout(_) | Message::DataStderr(_) => {}
                    Message::DataExitCode(_) => break,
                    other => panic!("{other:?}"),
                }
            }
            chunks
        });
        let streams = DataStreams::new(server);
        streams.stdout().write_all(&pattern(20_000)).unwrap();
        let _server = streams.finish(0).unwrap();
        let chunks = reader.join().unwrap();
        assert!(chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= 1024 - HEADER_LEN));
        assert_eq!(chunks.concat(), pattern(20_000));
    }

    #[test]
    fn heap_mem_byte_and_word_views_agree() {
        let m = HeapMem::new(16);
        m.write_bytes(1, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(m.load_u32(0), u32::from_le_bytes([0, 1, 2, 3]));
        assert_eq!(m.load_u32(4), u32::from_le_bytes([4, 5, 6, 0]));
        assert_eq!(m.fetch_or_u8(5, 0x80), 5);
        assert_eq!(m.fetch_and_u8(5, 0x0f), 0x85);
        assert_eq!(m.load_u8(5), 5);
        let mut out = [0u8; 6];
        m.read_bytes(1, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
        assert_eq!(m.load_u32(64), 0, "out of range reads 0");
        m.store_u32(64, 1);
    }
}
