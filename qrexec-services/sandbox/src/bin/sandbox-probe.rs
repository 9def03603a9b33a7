//! `sandbox-probe`: a test program for the sandbox. Started through `confine`, it reports what
//! it can see, locks itself down with `lock_down_self`, then tries what a hostile document would
//! try, printing one line per attempt. Exit 0 only if every attempt was denied.
//!
//! Modes (first argument): none runs the probe; `exit N` locks down and exits with N; `fork`
//! locks down and forks, which the allowlist answers by killing the process.

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use uvm_sandbox::{lock_down_self, SelfPolicy};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode: Vec<&str> = args.iter().map(String::as_str).collect();
    match mode.as_slice() {
        [] => probe(),
        ["exit", code] => {
            lock_down_or_exit();
            ExitCode::from(code.parse::<u8>().unwrap_or(2))
        }
        ["fork"] => {
            lock_down_or_exit();
            // SAFETY: fork is called from the only thread; the child would only exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: _exit in the child of a fork is always sound.
                unsafe { libc::_exit(0) };
            }
            println!("fork: ALLOWED");
            ExitCode::from(1)
        }
        _ => {
            eprintln!("usage: sandbox-probe [exit N | fork]");
            ExitCode::from(2)
        }
    }
}

fn lock_down_or_exit() {
    if let Err(e) = lock_down_self(&SelfPolicy::default()) {
        eprintln!("sandbox-probe: {e}");
        std::process::exit(3);
    }
}

fn probe() -> ExitCode {
    let mut out = io::stdout().lock();
    // What the confined program sees before it locks itself down.
    let _ = writeln!(out, "pid: {}", std::process::id());
    let _ = writeln!(out, "env: {}", std::env::vars_os().count());
    let _ = writeln!(out, "fsize: {}", file_size_limit());
    let _ = writeln!(out, "interfaces: {}", interfaces().join(" "));
    let _ = writeln!(out, "fds: {}", open_descriptors().join(" "));
    let _ = out.flush();

    lock_down_or_exit();

    let attempts: [(&str, io::Result<()>); 4] = [
        ("open", std::fs::File::open("/etc/passwd").map(drop)),
        ("tcp", TcpStream::connect("127.0.0.1:9").map(drop)),
        (
            "unix",
            UnixStream::connect("/run/sandbox-probe.sock").map(drop),
        ),
        ("exec", exec_true()),
    ];
    let mut all_denied = true;
    for (what, result) in attempts {
        match result {
            Ok(()) => {
                all_denied = false;
                let _ = writeln!(out, "{what}: ALLOWED");
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                let _ = writeln!(out, "{what}: denied (errno {errno})");
            }
        }
    }
    let _ = out.flush();
    if all_denied {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Tries to replace this process with `/bin/true`; returns only if the kernel refused.
fn exec_true() -> io::Result<()> {
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: path, argv and envp are NUL-terminated and null-terminated arrays that live for
    // the call; on success the process image is replaced and nothing of ours runs again.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(io::Error::last_os_error())
}

/// `RLIMIT_FSIZE` from /proc/self/limits, "unreadable" if that fails.
fn file_size_limit() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("unreadable")
        .to_string()
}

/// The network interfaces of this process's network namespace.
fn interfaces() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| name.trim().to_string())
        .collect()
}

/// The descriptors open in this process, the one used to list them excluded.
fn open_descriptors() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return vec!["unreadable".to_string()];
    };
    let mut fds: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    // The highest one is the directory being read.
    fds.pop();
    fds.iter().map(u32::to_string).collect()
}
