//! The raw system calls of the sandbox, each wrapped once with its safety argument.
//!
//! Every function here is async-signal-safe: no allocation, no lock, only system calls on
//! memory the caller owns. That is what lets [`crate::confine`] call them in a `pre_exec` hook,
//! between `fork` and `exec` of a possibly multi-threaded caller.

use std::ffi::CStr;
use std::io;

/// `close_range`'s flag that marks descriptors close-on-exec instead of closing them.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;

/// Turns a `-1` return into the current `errno`.
fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Marks every descriptor from `first` up close-on-exec.
///
/// Marking rather than closing keeps the standard library's own close-on-exec error pipe
/// working, so a failure in the hook still reaches the parent as a spawn error.
pub fn cloexec_from(first: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes plain integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    check(rc).map(drop)
}

/// Closes every descriptor from `first` up.
pub fn close_from(first: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes plain integers; the descriptors it closes are owned by nothing
    // in this process that will run again (see the waiter in `confine`).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    check(rc).map(drop)
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    let rc = unsafe { libc::unshare(flags) };
    check(rc.into()).map(drop)
}

/// Writes `data` to the file at `path` in one `write`, as /proc's id-map files require.
pub fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd.into())?;
    // SAFETY: `data` is a valid slice of `data.len()` bytes; `fd` was just opened by us.
    let written = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let result = match usize::try_from(written) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err(io::Error::from(io::ErrorKind::WriteZero)),
        Err(_) => Err(io::Error::last_os_error()),
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

/// `mount(2)` with optional source, file system type and data.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a valid NUL-terminated string for the call's duration.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    check(rc.into()).map(drop)
}

/// `pivot_root(2)`, which libc does not wrap.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(rc).map(drop)
}

/// `umount2(2)`.
pub fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is a valid NUL-terminated string for the call's duration.
    let rc = unsafe { libc::umount2(target.as_ptr(), flags) };
    check(rc.into()).map(drop)
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
    let rc = unsafe { libc::chdir(path.as_ptr()) };
    check(rc.into()).map(drop)
}

/// `chroot(2)`.
pub fn chroot(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
    let rc = unsafe { libc::chroot(path.as_ptr()) };
    check(rc.into()).map(drop)
}

/// Sets both the soft and the hard value of one resource limit.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit that lives for the call's duration.
    let rc = unsafe { libc::setrlimit(resource, &limit) };
    check(rc.into()).map(drop)
}

/// Sets only the soft value of one resource limit, keeping the hard value above it (for
/// `RLIMIT_CPU`, whose soft limit sends `SIGXCPU` before the hard one kills).
pub fn set_rlimit_pair(
    resource: libc::__rlimit_resource_t,
    soft: u64,
    hard: u64,
) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit that lives for the call's duration.
    let rc = unsafe { libc::setrlimit(resource, &limit) };
    check(rc.into()).map(drop)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: this prctl option takes integers only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc.into()).map(drop)
}

/// `prctl(PR_SET_PDEATHSIG, signal)`: the kernel sends `signal` when the parent dies.
pub fn set_parent_death_signal(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: this prctl option takes integers only.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) };
    check(rc.into()).map(drop)
}

/// The outcome of [`fork`].
pub enum Forked {
    /// In the parent, with the child's pid.
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// `fork(2)`.
///
/// # Safety
/// In a multi-threaded process the child may only call async-signal-safe functions until it
/// execs or exits.
pub unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller keeps the child async-signal-safe, as this function's contract says.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Waits for `pid` to end, retrying on `EINTR`, and returns its raw wait status.
pub fn wait_for(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid int that outlives the call.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Ends the process with the same outcome as a child's raw wait `status`: the same exit code,
/// or death by the same signal.
pub fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restoring the default action and sending a signal to ourselves touch no
        // memory; if the signal does not end us, _exit below does.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
        }
        exit_now(128_i32.saturating_add(signal));
    }
    exit_now(libc::WEXITSTATUS(status))
}

/// `_exit(2)`: ends the process without running destructors or atexit handlers, which a forked
/// child of a multi-threaded process must not run.
pub fn exit_now(code: libc::c_int) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// The effective user and group ids.
pub fn effective_ids() -> (libc::uid_t, libc::gid_t) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Header of `capset(2)`, version 3 (64-bit capability sets).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One 32-bit half of the capability sets of `capset(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties the effective, permitted and inheritable capability sets of this thread.
pub fn drop_all_capabilities() -> io::Result<()> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data match the kernel's version-3 layout (one header, two data
    // records) and live for the call's duration.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(rc).map(drop)
}
