//! Confines a local uvm program: the caller's half ([`confine`]) and the program's own half
//! ([`lock_down_self`]).
//!
//! The `local` transport runs the uvm program (`pdf-uvm`, `image-uvm`) as a child process. This
//! crate gives that child what a disposable VM would give it: nothing to see and nothing to
//! reach. The work is split in two because the program must load PDFium and read its document
//! before its files disappear:
//!
//! | step | where it runs | what it does |
//! |---|---|---|
//! | 1 | caller, `pre_exec` | inherited descriptors above 2 marked close-on-exec, environment cleared |
//! | 2 | caller, `pre_exec` | new user, mount, network, IPC, UTS and PID namespaces; uid/gid maps |
//! | 3 | caller, `pre_exec` | mounts made private; rlimits (memory, CPU, files, file size, core) |
//! | 4 | caller, `pre_exec` | `PR_SET_NO_NEW_PRIVS`; a fork so the program is PID 1 of its namespace |
//! | 5 | program, after load | its own mount namespace, an empty read-only root (pivot_root) |
//! | 6 | program, after load | every capability dropped, then the seccomp allowlist |
//!
//! Steps 1 to 4 are [`confine`]; steps 5 and 6 are [`lock_down_self`], which the program calls
//! once it has read its input and bound its libraries. A program started by [`confine`] that
//! never calls [`lock_down_self`] still has no network, no other processes, no way to write a
//! file (`RLIMIT_FSIZE` 0) and no privileges, but it can read the host's world-readable files.
//!
//! # Limitations
//! - Linux on x86_64 only: the seccomp allowlist names x86_64 system calls.
//! - `RLIMIT_NPROC` is not set: it counts every process of the user on the whole machine, so a
//!   small value would break the fork of step 4 for a busy user. The seccomp allowlist forbids
//!   `fork`, `clone` and `clone3` instead, after step 6.
//! - Between steps 4 and 6 the program runs with the host's files visible (read-only to it, as
//!   they were to the caller's user). Only the program's own start-up code runs then.

#![deny(missing_docs)]

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("uvm-sandbox supports Linux on x86_64 only (its seccomp allowlist is x86_64)");

mod confine;
mod lockdown;
mod seccomp;
mod sys;

use std::io;

pub use confine::{confine, namespaces_available, Policy};
pub use lockdown::{lock_down_self, SelfPolicy};
pub use seccomp::{compile_allowlist, ALLOWLIST_JSON};

/// Why a program could not be confined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The kernel refused to create user namespaces for this user.
    #[error(
        "the kernel refused to create user namespaces ({0}); the local sandbox needs them \
         (check /proc/sys/user/max_user_namespaces and kernel.unprivileged_userns_clone); \
         `--sandbox none` runs the uvm unconfined, for debugging only"
    )]
    NamespacesRefused(io::Error),
    /// A policy value cannot be applied (zero memory, zero files).
    #[error("the sandbox policy is invalid: {0}")]
    InvalidPolicy(&'static str),
    /// The program could not take its own mount namespace or enter the empty root.
    #[error("cannot enter an empty root ({step}): {source}")]
    EmptyRootRefused {
        /// The step that failed.
        step: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The capabilities could not be dropped.
    #[error("cannot drop capabilities: {0}")]
    CapabilityDropRefused(io::Error),
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivsRefused(io::Error),
    /// The allowlist file does not compile (a bug in the shipped data).
    #[error("the seccomp allowlist does not compile: {0}")]
    AllowlistInvalid(String),
    /// The allowlist compiled but a filter named by this crate is missing from it.
    #[error("the seccomp allowlist has no filter named {0:?}")]
    AllowlistFilterMissing(&'static str),
    /// The kernel refused the compiled filter.
    #[error("cannot install the seccomp filter {name:?}: {reason}")]
    SeccompRefused {
        /// The filter's name in the allowlist.
        name: &'static str,
        /// The kernel's answer.
        reason: String,
    },
}
