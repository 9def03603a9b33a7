//! The sandbox, tested from outside: programs started through `confine` that lock themselves
//! down with `lock_down_self`, and what they can and cannot do.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use converter_core::limits::StreamLimits;
use converter_core::stream::RgbStreamReader;
use uvm_sandbox::{confine, Policy};

/// A binary or example of this crate, built by `cargo test` beside the test binary.
fn built(relative: &str) -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let debug = test_exe.parent().unwrap().parent().unwrap();
    debug.join(relative)
}

fn run_confined(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(built(program));
    cmd.args(args)
        .env("SANDBOX_PROBE_SECRET", "leak")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    confine(&mut cmd, &Policy::default()).unwrap();
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn probe_lines() -> (Output, String) {
    let output = run_confined("sandbox-probe", &[], b"");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, text)
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {key} line in {text:?}"))
}

#[test]
fn files_sockets_and_programs_are_denied_after_lock_down() {
    let (output, text) = probe_lines();
    for what in ["open", "tcp", "unix", "exec"] {
        assert!(line(&text, what).starts_with("denied"), "{what}: {text}");
    }
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn only_loopback_is_visible() {
    let (_, text) = probe_lines();
    assert_eq!(line(&text, "interfaces"), "lo");
}

#[test]
fn environment_is_empty() {
    let (_, text) = probe_lines();
    assert_eq!(line(&text, "env"), "0");
}

#[test]
fn files_cannot_grow() {
    let (_, text) = probe_lines();
    assert_eq!(line(&text, "fsize"), "0");
}

#[test]
fn program_is_pid_one_of_its_namespace() {
    let (_, text) = probe_lines();
    assert_eq!(line(&text, "pid"), "1");
}

#[test]
fn inherited_descriptors_are_closed() {
    // A descriptor without close-on-exec, as a careless library in the caller might leave one.
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC touches no memory.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let (_, text) = probe_lines();
    drop(file);
    assert_eq!(line(&text, "fds"), "0 1 2");
}

#[test]
fn exit_code_reaches_the_caller() {
    let output = run_confined("sandbox-probe", &["exit", "7"], b"");
    assert_eq!(output.status.code(), Some(7), "{output:?}");
}

#[test]
fn call_outside_the_allowlist_kills_the_program() {
    let output = run_confined("sandbox-probe", &["fork"], b"");
    assert_eq!(output.status.signal(), Some(libc::SIGSYS), "{output:?}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ALLOWED"));
}

#[test]
fn pdfium_renders_a_real_pdf_under_the_allowlist() {
    let pdf = std::fs::read("/work/shared/corpus/text-short-cfgguide.pdf")
        .or_else(|_| std::fs::read("../../../shared/corpus/text-short-cfgguide.pdf"))
        .expect("the shared corpus is needed for this test");
    let output = run_confined("examples/locked_render", &["75"], &pdf);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut reader = RgbStreamReader::new(&output.stdout[..], StreamLimits::PDF);
    let pages = reader.read_page_count().unwrap();
    assert_eq!(pages, 10);
    let mut buf = Vec::new();
    let mut seen = 0;
    while let Some(page) = reader.next_page(&mut buf).unwrap() {
        assert!(page.width > 500 && page.height > 800, "{page:?}");
        seen += 1;
    }
    assert_eq!(seen, 10);
}
