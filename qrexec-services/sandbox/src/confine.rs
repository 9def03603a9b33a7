//! The caller's half of the sandbox: a `pre_exec` hook that puts the uvm program into fresh
//! namespaces under rlimits before it runs a single instruction of its own.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

use crate::sys::{self, Forked};
use crate::SandboxError;

/// Every namespace the program gets fresh: its own user (so the rest needs no privilege),
/// mounts, network (only a down loopback), System V IPC, host name and process ids.
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWPID;

/// Resource limits for a confined program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `RLIMIT_AS`: the most virtual memory, in bytes. PDFium needs about 300 MB per bitmap for
    /// a 10000 px page; the default leaves room for that bitmap, its RGB copy and the document.
    pub address_space_bytes: u64,
    /// `RLIMIT_CPU`: CPU seconds before `SIGXCPU`; the kernel kills one second later.
    pub cpu_seconds: u64,
    /// `RLIMIT_NOFILE`: the most open descriptors; the program needs its three standard ones,
    /// the files its loader opens and the libraries it binds.
    pub open_files: u64,
}

impl Policy {
    /// 2 GiB of address space.
    pub const DEFAULT_ADDRESS_SPACE_BYTES: u64 = 2 << 30;
    /// Ten minutes of CPU: more than the caller's default deadline, which normally ends a slow
    /// call first; this limit is the backstop if the caller itself is stuck.
    pub const DEFAULT_CPU_SECONDS: u64 = 600;
    /// 64 descriptors.
    pub const DEFAULT_OPEN_FILES: u64 = 64;
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            address_space_bytes: Policy::DEFAULT_ADDRESS_SPACE_BYTES,
            cpu_seconds: Policy::DEFAULT_CPU_SECONDS,
            open_files: Policy::DEFAULT_OPEN_FILES,
        }
    }
}

/// Everything the hook needs, computed before `fork`, because the hook must not allocate.
struct Prepared {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    policy: Policy,
}

/// Makes `cmd` start its program confined: environment cleared, inherited descriptors above 2
/// closed at exec, fresh user/mount/network/IPC/UTS/PID namespaces (the program is PID 1 of its
/// own), private mounts, the rlimits of `policy` plus `RLIMIT_FSIZE` 0 and `RLIMIT_CORE` 0, and
/// no new privileges.
///
/// The program still sees the host's files until it calls [`crate::lock_down_self`].
///
/// Inside its user namespace the program is root (uid and gid 0 map to the caller's own ids),
/// which it needs to enter its empty root later; outside, it has no more rights than the
/// caller. Between the caller and the program sits a small waiter process outside the new PID
/// namespace: it only waits and hands on the program's exit status (or its fatal signal). Both
/// stay in the process group the command is given, so killing that group ends both.
///
/// # Errors
/// [`SandboxError::NamespacesRefused`] when the kernel refuses user namespaces (tested once per
/// process, before `cmd` is touched), [`SandboxError::InvalidPolicy`] for a zero limit. A
/// failure inside the hook itself surfaces as the spawn error of `cmd`.
pub fn confine(cmd: &mut Command, policy: &Policy) -> Result<(), SandboxError> {
    if policy.address_space_bytes == 0 || policy.cpu_seconds == 0 || policy.open_files < 3 {
        return Err(SandboxError::InvalidPolicy(
            "memory and CPU limits must be positive and at least 3 files allowed",
        ));
    }
    namespaces_available()?;

    let (uid, gid) = sys::effective_ids();
    let prepared = Prepared {
        uid_map: format!("0 {uid} 1\n").into_bytes(),
        gid_map: format!("0 {gid} 1\n").into_bytes(),
        policy: *policy,
    };
    cmd.env_clear();
    // SAFETY: `enter` runs between fork and exec and calls only the async-signal-safe system
    // call wrappers of `sys`, on data prepared above; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || enter(&prepared));
    }

    Ok(())
}

/// The hook, in the order the steps must happen. Runs in the forked child.
fn enter(prepared: &Prepared) -> io::Result<()> {
    // Descriptors: nothing of the caller's beyond stdin, stdout and stderr survives exec.
    sys::cloexec_from(3)?;

    // Namespaces: the user namespace first in the same call, so the others need no privilege.
    sys::unshare(NAMESPACES)?;

    // Id maps: setgroups must be denied before an unprivileged gid_map is accepted.
    sys::write_file(c"/proc/self/setgroups", b"deny")?;
    sys::write_file(c"/proc/self/uid_map", &prepared.uid_map)?;
    sys::write_file(c"/proc/self/gid_map", &prepared.gid_map)?;

    // Mounts: nothing the program mounts later may propagate back to the host.
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;

    // Limits: set before the fork below, so the waiter is bound by them too.
    let policy = &prepared.policy;
    sys::set_rlimit(libc::RLIMIT_AS, policy.address_space_bytes)?;
    sys::set_rlimit_pair(
        libc::RLIMIT_CPU,
        policy.cpu_seconds,
        policy.cpu_seconds.saturating_add(1),
    )?;
    sys::set_rlimit(libc::RLIMIT_NOFILE, policy.open_files)?;
    sys::set_rlimit(libc::RLIMIT_FSIZE, 0)?;
    sys::set_rlimit(libc::RLIMIT_CORE, 0)?;
    sys::set_rlimit(libc::RLIMIT_MEMLOCK, 0)?;

    sys::set_no_new_privs()?;

    // PID namespace: unshare put only our *children* into it, so fork once; the child returns
    // to exec as PID 1, this process stays behind as the waiter and never returns.
    become_pid_one()
}

/// Forks; the child returns `Ok` (and goes on to exec), the parent waits and exits like it.
fn become_pid_one() -> io::Result<()> {
    // SAFETY: both sides below call only async-signal-safe functions before exec or _exit.
    match unsafe { sys::fork()? } {
        Forked::Child => {
            // If the waiter is killed alone, the program goes with it.
            sys::set_parent_death_signal(libc::SIGKILL)?;
            Ok(())
        }
        Forked::Parent(pid) => {
            // The waiter keeps no pipe open: the caller must see EOF on the program's stdout
            // and the end of the spawn error pipe exactly when the program lets go of them.
            let _ = sys::close_from(0);
            match sys::wait_for(pid) {
                Ok(status) => sys::exit_like(status),
                Err(_) => sys::exit_now(125),
            }
        }
    }
}

/// Whether this process may create the namespaces [`confine`] needs; tested once, by a forked
/// child that tries, and remembered.
///
/// # Errors
/// [`SandboxError::NamespacesRefused`] with the kernel's answer.
pub fn namespaces_available() -> Result<(), SandboxError> {
    static ANSWER: OnceLock<Result<(), i32>> = OnceLock::new();
    let answer = ANSWER.get_or_init(try_namespaces_in_child);
    answer.map_err(|errno| SandboxError::NamespacesRefused(io::Error::from_raw_os_error(errno)))
}

/// The exit code through which the probe child reports a failed fork-side step it cannot name.
const PROBE_UNKNOWN: i32 = 255;

fn try_namespaces_in_child() -> Result<(), i32> {
    // SAFETY: the child calls only unshare and _exit, both async-signal-safe.
    match unsafe { sys::fork() } {
        Ok(Forked::Child) => {
            let code = match sys::unshare(NAMESPACES) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(PROBE_UNKNOWN),
            };
            sys::exit_now(code)
        }
        Ok(Forked::Parent(pid)) => match sys::wait_for(pid) {
            Ok(status) if libc::WIFEXITED(status) => match libc::WEXITSTATUS(status) {
                0 => Ok(()),
                errno => Err(errno),
            },
            Ok(_) => Err(libc::ECHILD),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::ECHILD)),
        },
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EAGAIN)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_memory_is_refused() {
        let policy = Policy {
            address_space_bytes: 0,
            ..Policy::default()
        };
        let err = confine(&mut Command::new("/bin/true"), &policy).unwrap_err();
        assert!(matches!(err, SandboxError::InvalidPolicy(_)));
    }

    #[test]
    fn refusal_names_the_escape_hatch() {
        let err = SandboxError::NamespacesRefused(io::Error::from_raw_os_error(libc::EPERM));
        assert!(err.to_string().contains("--sandbox none"));
    }
}
