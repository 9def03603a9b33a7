//! The uvm image: build it (kernel from the cache, reproducible initramfs) and boot it under
//! QEMU for one call.
//!
//! - [`kernel`]: where `kernel/build.sh` caches the kernel.
//! - [`elfdeps`]: the loader and libraries a program needs (PT_INTERP and DT_NEEDED).
//! - [`initramfs`]: a byte-reproducible gzip newc archive, and its listing.
//! - [`image`]: an image folder: `vmlinux`, `bzImage`, `initramfs.gz`, `manifest.json`.
//! - [`qemu`]: boot an image for one call and drive the call like a child process.

#![deny(missing_docs)]

pub mod elfdeps;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod qemu;
