//! The `image-uvm` binary: exit codes, stderr lines, and memory on a hostile header.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use converter_core::limits::StreamLimits;
use converter_core::stream::read_rgba_image;
use image::{DynamicImage, ImageFormat};

use crate::util::{corpus, encode, huge_png, pattern};

struct Run {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
    /// Peak resident memory of the child, in KiB (from `wait4`).
    max_rss_kib: i64,
}

/// Runs the binary on `input` and reaps it with `wait4`, which reports that one child's peak
/// resident memory (std's `wait` does not).
// The child is reaped by `wait4` below, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run(input: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_image-uvm"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn image-uvm");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Write from a thread: the child may answer before it has read everything.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    writer.join().unwrap();

    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child, and both pointers are to live locals that
    // `wait4` only writes through for the duration of the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status),
        "image-uvm did not exit normally: {status:#x}"
    );

    Run {
        status: libc::WEXITSTATUS(status),
        stdout,
        stderr,
        max_rss_kib: usage.ru_maxrss,
    }
}

fn with_hint(hint: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut input = hint.to_vec();
    input.extend_from_slice(bytes);
    input
}

#[test]
fn binary_serves_an_image_and_exits_zero() {
    let run = run(&with_hint(
        b"-\n",
        &encode(&DynamicImage::ImageRgba8(pattern()), ImageFormat::Png),
    ));
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let image = read_rgba_image(&run.stdout[..], &StreamLimits::IMAGE).unwrap();
    assert_eq!(image.pixels, pattern().into_raw());
}

#[test]
fn binary_reports_an_error_in_one_line_and_exits_one() {
    let run = run(b"-\nthis is not an image");
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty());
    assert_eq!(
        run.stderr,
        "image-uvm: image format not recognised or not supported\n"
    );
}

#[test]
fn binary_reports_dropped_frames_on_stderr() {
    let run = run(&with_hint(b"gif:-\n", &corpus("no_time_for_that_tiny.gif")));
    assert_eq!(run.status, 0);
    let line = run
        .stderr
        .strip_prefix("image-uvm: dropped ")
        .expect(&run.stderr);
    let count: u32 = line
        .strip_suffix(" frames\n")
        .expect(&run.stderr)
        .parse()
        .unwrap();
    assert!(count > 0);
    assert_eq!(run.stderr.lines().count(), 1);
}

/// A tiny PNG that declares 65535 x 65535 RGBA (16 GiB of pixels) is refused from its header:
/// the process never grows past a small fraction of that.
#[test]
fn binary_refuses_huge_declared_png_without_allocating() {
    let run = run(&with_hint(b"-\n", &huge_png()));
    assert_eq!(run.status, 1);
    assert_eq!(
        run.stderr,
        "image-uvm: image is 65535x65535, over the 8192x5120 limit\n"
    );
    assert!(
        run.max_rss_kib < 100 * 1024,
        "peak RSS {} KiB",
        run.max_rss_kib
    );
}
