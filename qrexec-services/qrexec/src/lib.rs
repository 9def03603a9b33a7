//! The qrexec protocol (service side) and the vchan transports it runs over.
//!
//! A uvm has no Linux userland: its PID 1 links this crate to answer exactly one qrexec call.
//!
//! - [`proto`]: the 8-byte-header messages, a strict decoder, framing over any byte stream, and
//!   the stdin/stdout chunking of a data connection.
//! - [`vchan`]: the byte-stream channel between two domains, over Unix sockets (the reference's
//!   test layout), over a Xen shared-memory ring, and the Linux Xen device calls behind it.
//! - [`agent`]: the flow of one call, from the HELLO on the control vchan to
//!   CONNECTION_TERMINATED.

#![deny(missing_docs)]

pub mod agent;
pub mod proto;
pub mod vchan;
