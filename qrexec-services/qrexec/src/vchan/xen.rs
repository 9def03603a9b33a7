//! The vchan connector of a Xen guest: grant pages, event channels and xenstore keys assembled
//! into [`RingVchan`]s.
//!
//! Server ([`XenConnector::listen`], the control vchan towards dom0), in this order:
//!
//! 1. open `/dev/xen/evtchn` and allocate an unbound port the peer may bind;
//! 2. grant one shared page to the peer with gntalloc (read-write), then each ring of order
//!    12 or more its own read-write grant (`2^(order-12)` pages per ring);
//! 3. lay out the shared page ([`RingVchan::server`]): orders, grant list, `cli_live = 2`,
//!    `srv_live = 1`, `cli_notify = WRITE`;
//! 4. set the gntalloc unmap notify on `srv_live` (clear the byte and signal the port), so the
//!    peer sees this side gone even if the process dies;
//! 5. write `ring-ref` (the shared page's grant) and `event-channel` (the port) under
//!    `/local/domain/<own>/data/vchan/<peer>/<port>/` in one xenstore transaction, starting
//!    over when the commit answers `EAGAIN`, at most [`PUBLISH_ATTEMPTS`] times;
//! 6. wait, at most [`LISTEN_TIMEOUT`], for `cli_live = 1`, re-checking on each event.
//!
//! Client ([`XenConnector::connect`], the data vchan to the calling domain):
//!
//! 1. watch `/local/domain/<server>/data/vchan/<own>/<port>` and read its `ring-ref` and
//!    `event-channel` until both exist, at most [`CONNECT_TIMEOUT`]; each must be a decimal
//!    number;
//! 2. map the shared page with gntdev (read-write) and read its layout ([`read_layout`], which
//!    checks the server's orders and grant count);
//! 3. map the left ring's grants read-write (this side writes it) and the right ring's
//!    read-only;
//! 4. bind the server's interdomain port;
//! 5. set the gntdev unmap notify on `cli_live`;
//! 6. [`RingVchan::client`]: `cli_live = 1`, `srv_notify = WRITE`, signal.
//!
//! Ring sizes chosen as server: order 16 (64 KiB) each way, the size qrexec's own data vchans
//! use. Control messages are small, but an EXEC_CMDLINE can approach 64 KiB and a larger ring
//! means fewer wake-ups; the cost is 32 granted pages for the one control vchan.
//!
//! The own domain id is xenstore's relative key `domid` (the toolstack writes it in every
//! domain's home directory).
//!
//! # Limitations
//! - Not run on Xen: this machine has no Xen, so the device calls and their order are written
//!   from PROTOCOLS.md and Xen's public headers only. The tests cover the xenstore request
//!   sequences (against a scripted xenstore), the ring plan and the checks on values read.
//! - The server sets no xenstore permissions on its keys, so only a privileged peer can read
//!   them; the one vchan served is the control vchan, whose peer is dom0.
//! - Keys and the client's watch are left in xenstore after connecting: the uvm serves one
//!   call and the toolstack removes the domain's xenstore tree when it destroys it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ring::{
    check_orders, read_layout, ring_pages, RingVchan, SharedMem, LIVE_CONNECTED, LIVE_GONE,
};
use super::xen_dev::{
    event_channel_path, gntalloc, gntdev_map, ring_ref_path, set_unmap_notify, vchan_xs_dir,
    BoundPort, Evtchn, MappedMem, XenStore, XenStoreError, XENBUS_DEV, XENFS_XENBUS,
};
use super::{VchanConnector, VchanError};

/// Ring orders (left, right) this side chooses when it is the server.
pub const LISTEN_ORDERS: (u16, u16) = (16, 16);

/// How long the server waits for its client: dom0's qrexec daemon connects as soon as the
/// domain started, so a minute without it means it will not come.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the client waits for the server's keys: the caller offers the data vchan before
/// dom0 forwards the call, so they normally exist at the first read.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts at the publishing transaction before giving up on `EAGAIN`.
pub const PUBLISH_ATTEMPTS: u32 = 16;

/// Offset of `cli_live` in the shared page (see [`super::ring`]'s layout table).
const CLI_LIVE_OFFSET: u64 = 20;
/// Offset of `srv_live` in the shared page.
const SRV_LIVE_OFFSET: u64 = 21;

/// The token of the client's xenstore watch.
const WATCH_TOKEN: &str = "qrexec-vchan";

/// Longest decimal a u32 needs.
const MAX_DECIMAL_LEN: usize = 10;

/// Bytes of a bad xenstore value quoted in an error.
const VALUE_SHOWN: usize = 32;

/// A grant mapping together with the device it came from, kept open as long as the mapping.
#[derive(Debug)]
pub struct XenMem {
    // Field order matters: the mapping is dropped (unmapped) before the device is closed.
    mem: MappedMem,
    dev: File,
}

impl SharedMem for XenMem {
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        self.mem.load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        self.mem.store_u32(offset, value)
    }
    fn load_u8(&self, offset: usize) -> u8 {
        self.mem.load_u8(offset)
    }
    fn store_u8(&self, offset: usize, value: u8) {
        self.mem.store_u8(offset, value)
    }
    fn fetch_or_u8(&self, offset: usize, bits: u8) -> u8 {
        self.mem.fetch_or_u8(offset, bits)
    }
    fn fetch_and_u8(&self, offset: usize, bits: u8) -> u8 {
        self.mem.fetch_and_u8(offset, bits)
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        self.mem.read_bytes(offset, dst)
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        self.mem.write_bytes(offset, src)
    }
}

/// A vchan end on Xen.
pub type XenVchan = RingVchan<XenMem, BoundPort>;

/// How many separately granted pages each ring of a pair of orders takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPlan {
    /// Left (client-to-server) ring order.
    pub left_order: u16,
    /// Right (server-to-client) ring order.
    pub right_order: u16,
    /// Pages of the left ring (0 when it lies in the shared page).
    pub left_pages: usize,
    /// Pages of the right ring (0 when it lies in the shared page).
    pub right_pages: usize,
}

impl RingPlan {
    /// The plan for two orders.
    ///
    /// # Errors
    /// [`VchanError::BadRingOrder`] for an order outside 10..=20, two rings at the same place
    /// in the shared page, or more grant references than fit before the in-page ring (the
    /// same check the ring itself makes).
    pub fn new(left_order: u16, right_order: u16) -> Result<Self, VchanError> {
        check_orders(left_order, right_order)?;
        Ok(RingPlan {
            left_order,
            right_order,
            left_pages: ring_pages(left_order),
            right_pages: ring_pages(right_order),
        })
    }

    /// Grant references the shared page lists.
    pub fn grant_count(&self) -> usize {
        self.left_pages + self.right_pages
    }
}

fn xs_err<'a>(op: &'static str, path: &'a str) -> impl FnOnce(XenStoreError) -> VchanError + 'a {
    move |source| VchanError::XenStore {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A xenstore value that must be a plain decimal u32 (no sign, no spaces, no NUL).
fn parse_number(path: &str, value: &[u8]) -> Result<u32, VchanError> {
    let bad = || VchanError::BadXenStoreValue {
        path: path.to_owned(),
        value: String::from_utf8_lossy(value.get(..VALUE_SHOWN).unwrap_or(value)).into_owned(),
    };
    if value.is_empty() || value.len() > MAX_DECIMAL_LEN || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
}

/// This domain's id, from xenstore's relative key `domid`.
///
/// # Errors
/// [`VchanError::XenStore`] or [`VchanError::BadXenStoreValue`].
pub fn read_domid<T: Read + Write>(xs: &mut XenStore<T>) -> Result<u32, VchanError> {
    let value = xs.read(0, "domid").map_err(xs_err("read", "domid"))?;
    parse_number("domid", &value)
}

/// Writes the server's `ring-ref` and `event-channel` in one transaction, starting over on
/// `EAGAIN`.
///
/// # Errors
/// [`VchanError::XenStore`] or [`VchanError::TransactionRetries`].
pub fn publish<T: Read + Write>(
    xs: &mut XenStore<T>,
    server: u32,
    client: u32,
    port: u32,
    ring_ref: u32,
    event_port: u32,
) -> Result<(), VchanError> {
    let dir = vchan_xs_dir(server, client, port);
    let ref_path = ring_ref_path(server, client, port);
    let evt_path = event_channel_path(server, client, port);
    for _ in 0..PUBLISH_ATTEMPTS {
        let tx = xs
            .transaction_start()
            .map_err(xs_err("transaction start", &dir))?;
        let written = xs
            .write(tx, &ref_path, ring_ref.to_string().as_bytes())
            .map_err(xs_err("write", &ref_path))
            .and_then(|()| {
                xs.write(tx, &evt_path, event_port.to_string().as_bytes())
                    .map_err(xs_err("write", &evt_path))
            });
        if let Err(e) = written {
            // The write's failure is the one to report; an abort that fails too changes
            // nothing, since the transaction is never committed.
            let _ = xs.transaction_end(tx, false);
            return Err(e);
        }
        match xs.transaction_end(tx, true) {
            Ok(()) => return Ok(()),
            Err(XenStoreError::Refused(name)) if name == "EAGAIN" => {}
            Err(source) => return Err(xs_err("transaction end", &dir)(source)),
        }
    }
    Err(VchanError::TransactionRetries {
        path: dir,
        attempts: PUBLISH_ATTEMPTS,
    })
}

/// Reads the server's offer (`ring-ref`, `event-channel`); `None` while a key is missing.
///
/// # Errors
/// [`VchanError::XenStore`] for any refusal but `ENOENT`, or [`VchanError::BadXenStoreValue`].
pub fn read_offer<T: Read + Write>(
    xs: &mut XenStore<T>,
    server: u32,
    client: u32,
    port: u32,
) -> Result<Option<(u32, u32)>, VchanError> {
    let mut values = [0u32; 2];
    let paths = [
        ring_ref_path(server, client, port),
        event_channel_path(server, client, port),
    ];
    for (path, out) in paths.iter().zip(values.iter_mut()) {
        match xs.read(0, path) {
            Ok(value) => *out = parse_number(path, &value)?,
            Err(XenStoreError::Refused(name)) if name == "ENOENT" => return Ok(None),
            Err(source) => return Err(xs_err("read", path)(source)),
        }
    }
    let [ring_ref, event_port] = values;
    Ok(Some((ring_ref, event_port)))
}

/// Opens vchans through the Linux Xen devices, as this domain.
#[derive(Debug)]
pub struct XenConnector {
    xs: XenStore<File>,
    own: u32,
}

impl XenConnector {
    /// Opens xenstore (`/dev/xen/xenbus`, else xenfs's `/proc/xen/xenbus`) and reads this
    /// domain's id.
    ///
    /// # Errors
    /// [`VchanError::XenStore`] when neither opens or `domid` cannot be read, or
    /// [`VchanError::BadXenStoreValue`].
    pub fn new() -> Result<Self, VchanError> {
        let mut xs = XenStore::open_path(XENBUS_DEV)
            .or_else(|_| XenStore::open_path(XENFS_XENBUS))
            .map_err(xs_err("open", XENBUS_DEV))?;
        let own = read_domid(&mut xs)?;
        Ok(XenConnector { xs, own })
    }

    /// This domain's id.
    pub fn domain_id(&self) -> u32 {
        self.own
    }

    /// Waits for the server's keys, watching its directory.
    fn wait_offer(&mut self, server: u32, port: u32) -> Result<(u32, u32), VchanError> {
        let dir = vchan_xs_dir(server, self.own, port);
        let start = Instant::now();
        let deadline = start + CONNECT_TIMEOUT;
        self.xs
            .watch(&dir, WATCH_TOKEN)
            .map_err(xs_err("watch", &dir))?;
        loop {
            if let Some(offer) = read_offer(&mut self.xs, server, self.own, port)? {
                return Ok(offer);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(VchanError::ConnectTimeout {
                    path: dir,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            // Any event (or none, at the deadline) leads to another read of both keys.
            self.xs
                .next_watch_event_timeout(remaining)
                .map_err(xs_err("watch", &dir))?;
        }
    }
}

fn open_evtchn() -> Result<Evtchn, VchanError> {
    Evtchn::open().map_err(|source| VchanError::XenDevice {
        path: "/dev/xen/evtchn",
        source,
    })
}

/// A ring's granted pages and the references that name them.
type GrantedRing = (Arc<XenMem>, Vec<u32>);

/// Grants `pages` pages to `peer` for one ring; `None` for a ring in the shared page.
fn grant_ring(peer: u32, peer16: u16, pages: usize) -> Result<Option<GrantedRing>, VchanError> {
    if pages == 0 {
        return Ok(None);
    }
    let fail = |source| VchanError::GrantAlloc {
        domain: peer,
        pages,
        source,
    };
    let count = u32::try_from(pages).map_err(|_| fail(io::Error::other("too many pages")))?;
    let (dev, granted) = gntalloc(peer16, count, true).map_err(fail)?;
    Ok(Some((
        Arc::new(XenMem {
            mem: granted.mem,
            dev,
        }),
        granted.refs,
    )))
}

/// Maps the peer's grants for one ring; `None` for a ring in the shared page.
fn map_ring(server: u32, refs: &[u32], writable: bool) -> Result<Option<Arc<XenMem>>, VchanError> {
    if refs.is_empty() {
        return Ok(None);
    }
    let (dev, mem, _) =
        gntdev_map(server, refs, writable).map_err(|source| VchanError::GrantMap {
            domain: server,
            pages: refs.len(),
            source,
        })?;
    Ok(Some(Arc::new(XenMem { mem, dev })))
}

/// Waits until the client set `cli_live = 1`.
fn wait_connected(
    vchan: &XenVchan,
    evtchn: &Evtchn,
    dir: &str,
    timeout: Duration,
) -> Result<(), VchanError> {
    let start = Instant::now();
    loop {
        match vchan.peer_live_state() {
            LIVE_CONNECTED => return Ok(()),
            LIVE_GONE => {
                return Err(VchanError::ClientLeft {
                    path: dir.to_owned(),
                })
            }
            // Not yet, or a value the peer has no business writing: wait for a change.
            _ => {}
        }
        let remaining = timeout.saturating_sub(start.elapsed());
        if remaining.is_zero() {
            return Err(VchanError::AcceptTimeout {
                path: dir.to_owned(),
                waited_ms: start.elapsed().as_millis(),
            });
        }
        evtchn
            .wait_pending_timeout(remaining)
            .map_err(VchanError::Event)?;
    }
}

impl VchanConnector for XenConnector {
    type Channel = XenVchan;

    fn listen(&mut self, peer_domain: u32, port: u32) -> Result<XenVchan, VchanError> {
        let dir = vchan_xs_dir(self.own, peer_domain, port);
        let peer16 = u16::try_from(peer_domain).map_err(|_| VchanError::DomainOutOfRange {
            domain: peer_domain,
        })?;
        let plan = RingPlan::new(LISTEN_ORDERS.0, LISTEN_ORDERS.1)?;

        let evtchn = open_evtchn()?;
        let local_port =
            evtchn
                .bind_unbound_port(peer_domain)
                .map_err(|source| VchanError::EventBind {
                    domain: peer_domain,
                    source,
                })?;
        let event = BoundPort::new(evtchn.clone(), local_port);

        let page_fail = |source| VchanError::GrantAlloc {
            domain: peer_domain,
            pages: 1,
            source,
        };
        let (page_dev, granted) = gntalloc(peer16, 1, true).map_err(page_fail)?;
        let page_ref = granted
            .refs
            .first()
            .copied()
            .ok_or_else(|| page_fail(io::Error::other("no grant reference returned")))?;
        let page_index = granted.index;
        let page = Arc::new(XenMem {
            mem: granted.mem,
            dev: page_dev,
        });
        let left = grant_ring(peer_domain, peer16, plan.left_pages)?;
        let right = grant_ring(peer_domain, peer16, plan.right_pages)?;
        let grants: Vec<u32> = left
            .iter()
            .chain(right.iter())
            .flat_map(|(_, refs)| refs.iter().copied())
            .collect();

        let vchan = RingVchan::server(
            page.clone(),
            left.map(|(mem, _)| mem),
            right.map(|(mem, _)| mem),
            plan.left_order,
            plan.right_order,
            &grants,
            event,
        )?;
        let notify_at = page_index
            .checked_add(SRV_LIVE_OFFSET)
            .ok_or_else(|| VchanError::UnmapNotify(io::Error::other("grant offset overflow")))?;
        set_unmap_notify(&page.dev, false, notify_at, local_port)
            .map_err(VchanError::UnmapNotify)?;

        publish(
            &mut self.xs,
            self.own,
            peer_domain,
            port,
            page_ref,
            local_port,
        )?;
        wait_connected(&vchan, &evtchn, &dir, LISTEN_TIMEOUT)?;

        Ok(vchan)
    }

    fn connect(&mut self, server_domain: u32, port: u32) -> Result<XenVchan, VchanError> {
        let (page_ref, remote_port) = self.wait_offer(server_domain, port)?;

        let (page_dev, page_mem, page_index) = gntdev_map(server_domain, &[page_ref], true)
            .map_err(|source| VchanError::GrantMap {
                domain: server_domain,
                pages: 1,
                source,
            })?;
        let page = Arc::new(XenMem {
            mem: page_mem,
            dev: page_dev,
        });
        // The server is the calling domain: everything in its page is checked before use.
        let layout = read_layout(&*page)?;
        let plan = RingPlan::new(layout.left_order, layout.right_order)?;
        let (left_refs, right_refs) =
            layout
                .grants
                .split_at_checked(plan.left_pages)
                .ok_or(VchanError::TooManyGrants {
                    count: layout.grants.len(),
                })?;
        let left = map_ring(server_domain, left_refs, true)?;
        let right = map_ring(server_domain, right_refs, false)?;

        let evtchn = open_evtchn()?;
        let local_port = evtchn
            .bind_interdomain(server_domain, remote_port)
            .map_err(|source| VchanError::EventBind {
                domain: server_domain,
                source,
            })?;
        let event = BoundPort::new(evtchn, local_port);
        let notify_at = page_index
            .checked_add(CLI_LIVE_OFFSET)
            .ok_or_else(|| VchanError::UnmapNotify(io::Error::other("grant offset overflow")))?;
        set_unmap_notify(&page.dev, true, notify_at, local_port)
            .map_err(VchanError::UnmapNotify)?;

        RingVchan::client(page, left, right, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vchan::xen_dev::{xs_type, XsMsg};
    use std::io::Cursor;

    use crate::vchan::xen_dev::script::{reply, Script};

    fn store(replies: &[Vec<u8>]) -> XenStore<Script> {
        XenStore::new(Script {
            input: Cursor::new(replies.concat()),
            output: Vec::new(),
        })
    }

    /// The requests the client sent, as (type, transaction, payload).
    fn sent(xs: XenStore<Script>) -> Vec<(u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut cursor = Cursor::new(xs.into_inner().output);
        while (cursor.position() as usize) < cursor.get_ref().len() {
            let m = XsMsg::read_from(&mut cursor).unwrap();
            out.push((m.msg_type, m.tx_id, m.payload));
        }
        out
    }

    const OK: &[u8] = b"OK\0";

    #[test]
    fn publish_writes_both_keys_in_one_transaction() {
        let mut xs = store(&[
            reply(xs_type::TRANSACTION_START, 1, b"9\0"),
            reply(xs_type::WRITE, 2, OK),
            reply(xs_type::WRITE, 3, OK),
            reply(xs_type::TRANSACTION_END, 4, OK),
        ]);
        publish(&mut xs, 5, 0, 512, 77, 31).unwrap();
        let reqs = sent(xs);
        assert_eq!(
            reqs,
            vec![
                (xs_type::TRANSACTION_START, 0, b"\0".to_vec()),
                (
                    xs_type::WRITE,
                    9,
                    b"/local/domain/5/data/vchan/0/512/ring-ref\x0077".to_vec()
                ),
                (
                    xs_type::WRITE,
                    9,
                    b"/local/domain/5/data/vchan/0/512/event-channel\x0031".to_vec()
                ),
                (xs_type::TRANSACTION_END, 9, b"T\0".to_vec()),
            ]
        );
    }

    #[test]
    fn publish_starts_over_when_the_commit_says_eagain() {
        let mut xs = store(&[
            reply(xs_type::TRANSACTION_START, 1, b"9\0"),
            reply(xs_type::WRITE, 2, OK),
            reply(xs_type::WRITE, 3, OK),
            reply(xs_type::ERROR, 4, b"EAGAIN\0"),
            reply(xs_type::TRANSACTION_START, 5, b"10\0"),
            reply(xs_type::WRITE, 6, OK),
            reply(xs_type::WRITE, 7, OK),
            reply(xs_type::TRANSACTION_END, 8, OK),
        ]);
        publish(&mut xs, 5, 0, 512, 77, 31).unwrap();
        let reqs = sent(xs);
        assert_eq!(reqs.len(), 8);
        assert_eq!(reqs[7], (xs_type::TRANSACTION_END, 10, b"T\0".to_vec()));
    }

    #[test]
    fn publish_gives_up_after_its_attempts() {
        let mut replies = Vec::new();
        for i in 0..PUBLISH_ATTEMPTS {
            let id = 4 * i + 1;
            replies.push(reply(xs_type::TRANSACTION_START, id, b"9\0"));
            replies.push(reply(xs_type::WRITE, id + 1, OK));
            replies.push(reply(xs_type::WRITE, id + 2, OK));
            replies.push(reply(xs_type::ERROR, id + 3, b"EAGAIN\0"));
        }
        let mut xs = store(&replies);
        let err = publish(&mut xs, 5, 0, 512, 77, 31).unwrap_err();
        assert!(matches!(
            err,
            VchanError::TransactionRetries {
                attempts: PUBLISH_ATTEMPTS,
                ..
            }
        ));
    }

    #[test]
    fn publish_aborts_the_transaction_when_a_write_is_refused() {
        let mut xs = store(&[
            reply(xs_type::TRANSACTION_START, 1, b"9\0"),
            reply(xs_type::ERROR, 2, b"EACCES\0"),
            reply(xs_type::TRANSACTION_END, 3, OK),
        ]);
        let err = publish(&mut xs, 5, 0, 512, 77, 31).unwrap_err();
        assert!(matches!(err, VchanError::XenStore { op: "write", .. }));
        let reqs = sent(xs);
        assert_eq!(
            reqs.last().unwrap(),
            &(xs_type::TRANSACTION_END, 9, b"F\0".to_vec())
        );
    }

    #[test]
    fn offer_is_read_from_the_servers_directory() {
        let mut xs = store(&[
            reply(xs_type::READ, 1, b"1234"),
            reply(xs_type::READ, 2, b"56"),
        ]);
        assert_eq!(read_offer(&mut xs, 7, 3, 513).unwrap(), Some((1234, 56)));
        let reqs = sent(xs);
        assert_eq!(
            reqs[0].2,
            b"/local/domain/7/data/vchan/3/513/ring-ref\0".to_vec()
        );
        assert_eq!(
            reqs[1].2,
            b"/local/domain/7/data/vchan/3/513/event-channel\0".to_vec()
        );
    }

    #[test]
    fn missing_key_means_no_offer_yet() {
        let mut xs = store(&[
            reply(xs_type::READ, 1, b"1234"),
            reply(xs_type::ERROR, 2, b"ENOENT\0"),
        ]);
        assert_eq!(read_offer(&mut xs, 7, 3, 513).unwrap(), None);
    }

    #[test]
    fn non_numeric_ring_ref_is_refused() {
        for bad in [&b"12a"[..], b"", b"-1", b" 12", b"12\0", b"99999999999"] {
            let mut xs = store(&[reply(xs_type::READ, 1, bad)]);
            let err = read_offer(&mut xs, 7, 3, 513).unwrap_err();
            assert!(
                matches!(err, VchanError::BadXenStoreValue { ref path, .. } if path.ends_with("/ring-ref")),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn event_channel_above_u32_is_refused() {
        let mut xs = store(&[
            reply(xs_type::READ, 1, b"5"),
            reply(xs_type::READ, 2, b"4294967296"),
        ]);
        let err = read_offer(&mut xs, 7, 3, 513).unwrap_err();
        assert!(matches!(err, VchanError::BadXenStoreValue { .. }));
    }

    #[test]
    fn other_read_refusal_is_an_error_not_a_wait() {
        let mut xs = store(&[reply(xs_type::ERROR, 1, b"EACCES\0")]);
        let err = read_offer(&mut xs, 7, 3, 513).unwrap_err();
        assert!(matches!(err, VchanError::XenStore { op: "read", .. }));
    }

    #[test]
    fn own_domain_id_is_the_relative_domid_key() {
        let mut xs = store(&[reply(xs_type::READ, 1, b"42")]);
        assert_eq!(read_domid(&mut xs).unwrap(), 42);
        assert_eq!(sent(xs)[0], (xs_type::READ, 0, b"domid\0".to_vec()));
    }

    #[test]
    fn listen_orders_take_sixteen_pages_each_way() {
        let plan = RingPlan::new(LISTEN_ORDERS.0, LISTEN_ORDERS.1).unwrap();
        assert_eq!((plan.left_pages, plan.right_pages), (16, 16));
        assert_eq!(plan.grant_count(), 32);
    }

    #[test]
    fn in_page_rings_take_no_pages() {
        let plan = RingPlan::new(10, 11).unwrap();
        assert_eq!(plan.grant_count(), 0);
        let mixed = RingPlan::new(11, 20).unwrap();
        assert_eq!((mixed.left_pages, mixed.right_pages), (0, 256));
    }

    #[test]
    fn plan_refuses_bad_orders() {
        for (l, r) in [(9, 16), (16, 21), (10, 10), (11, 11)] {
            assert!(
                matches!(RingPlan::new(l, r), Err(VchanError::BadRingOrder { .. })),
                "{l} {r}"
            );
        }
    }
}
