//! The program's half of the sandbox: after it has read its input and bound its libraries, it
//! gives up its files, its capabilities and every system call it no longer needs.

use std::ffi::CStr;

use crate::{seccomp, sys, SandboxError};

/// Directories over which the empty root may be mounted, tried in order. Any existing directory
/// serves: the mount lands in the program's own mount namespace and the old root is detached
/// right after.
const MOUNT_POINTS: [&CStr; 5] = [c"/tmp", c"/mnt", c"/run", c"/dev", c"/proc"];

/// What [`lock_down_self`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfPolicy {
    /// Replace the root with an empty read-only file system (needs the mount privilege that
    /// [`crate::confine`]'s user namespace gives, or real root).
    pub empty_root: bool,
    /// Install the seccomp allowlist.
    pub seccomp: bool,
}

impl Default for SelfPolicy {
    /// Everything on.
    fn default() -> Self {
        SelfPolicy {
            empty_root: true,
            seccomp: true,
        }
    }
}

/// Locks the calling process down for the rest of its life, in this order: its own mount
/// namespace with an empty read-only root, no capabilities, no new privileges, and the seccomp
/// allowlist (see the crate docs for the table).
///
/// Call it once, from the only thread, after every file the program needs is open or mapped
/// (its input read, PDFium bound and the document loaded). Afterwards opening a file, making a
/// socket or running a program fails with `EPERM`, and any system call outside the allowlist
/// kills the process.
///
/// # Errors
/// The step that failed. The process is then partly locked down; it should exit, not go on.
pub fn lock_down_self(policy: &SelfPolicy) -> Result<(), SandboxError> {
    if policy.empty_root {
        enter_empty_root()?;
    }
    sys::drop_all_capabilities().map_err(SandboxError::CapabilityDropRefused)?;
    sys::set_no_new_privs().map_err(SandboxError::NoNewPrivsRefused)?;
    if policy.seccomp {
        seccomp::install()?;
    }

    Ok(())
}

/// Takes a private mount namespace, mounts an empty read-only tmpfs and makes it the root, then
/// detaches the old root so that no path reaches the host's files.
fn enter_empty_root() -> Result<(), SandboxError> {
    let refused = |step| move |source| SandboxError::EmptyRootRefused { step, source };

    // Our own mount namespace even when confine already gave one: pivot_root changes the root
    // of every process in the namespace, and this must never be the host's.
    sys::unshare(libc::CLONE_NEWNS).map_err(refused("unshare the mount namespace"))?;
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(refused("make mounts private"))?;

    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
    let mut mounted = None;
    let mut last_error = None;
    for dir in MOUNT_POINTS {
        match sys::mount(
            Some(c"none"),
            dir,
            Some(c"tmpfs"),
            flags,
            Some(c"size=4k,mode=0555"),
        ) {
            Ok(()) => {
                mounted = Some(dir);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(dir) = mounted else {
        let source = last_error.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT));
        return Err(refused("mount an empty tmpfs")(source));
    };
    sys::chdir(dir).map_err(refused("enter the empty tmpfs"))?;

    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the
    // empty tmpfs. An initramfs root cannot be pivoted (EINVAL): chroot is the fallback there,
    // and the allowlist forbids chroot and mount afterwards, so it cannot be undone.
    match sys::pivot_root(c".", c".") {
        Ok(()) => sys::umount2(c".", libc::MNT_DETACH).map_err(refused("detach the old root"))?,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sys::chroot(c".").map_err(refused("chroot into the empty tmpfs"))?
        }
        Err(e) => return Err(refused("pivot_root into the empty tmpfs")(e)),
    }
    sys::chdir(c"/").map_err(refused("enter the new root"))?;

    Ok(())
}
