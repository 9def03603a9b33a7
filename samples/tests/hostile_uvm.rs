//! The real caller (`qvm-convert-pdf`) against `hostile-uvm`, a uvm that answers with broken
//! pixel streams: every one must end in exit code 1 with the broken rule named, nothing left
//! behind, the original untouched, in bounded time and memory.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use util::{listing, program, report, run_measured, sha256, Run};

/// Caller memory allowed whatever the uvm sends.
const MAX_CALLER_KIB: u64 = 200 * 1024;

/// Generous bound on one call: the deadlines below are 2 s idle and 10 s whole-call.
const MAX_CALL_TIME: Duration = Duration::from_secs(40);

struct Outcome {
    code: Option<i32>,
    error: String,
    run: Run,
}

/// Runs the caller on a copy of a real PDF with `hostile-uvm MODE` standing in for `pdf-uvm`,
/// and checks what every mode must leave: no output, no partial file, the original intact.
fn call(mode: &str, extra: &[&str]) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let uvm_dir = tmp.path().join("uvm");
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&uvm_dir).unwrap();
    std::fs::create_dir_all(&docs).unwrap();

    // The caller clears the environment, so the mode is baked into the wrapper.
    let wrapper = uvm_dir.join("pdf-uvm");
    let hostile = program("hostile-uvm");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{}' {mode} \"$@\"\n", hostile.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let doc = docs.join("doc.pdf");
    std::fs::write(&doc, util::real_pdf()).unwrap();
    let before = sha256(&doc);

    let mut cmd = Command::new(program("qvm-convert-pdf"));
    cmd.args(["--transport", "local", "--uvm-dir"])
        .arg(&uvm_dir)
        .args([
            "--idle-timeout",
            "2",
            "--timeout",
            "10",
            "--json",
            "--archive",
        ])
        .arg(tmp.path().join("archive"))
        .args(extra)
        .arg(&doc);
    let run = run_measured(cmd, tmp.path());
    let code = run.output.status.code();
    let error = report(&run.output)["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    if code != Some(0) {
        assert_eq!(
            listing(&docs),
            ["doc.pdf"],
            "{mode}: something was left behind"
        );
        assert_eq!(sha256(&doc), before, "{mode}: the original changed");
    }
    assert!(
        run.elapsed < MAX_CALL_TIME,
        "{mode}: took {:?}",
        run.elapsed
    );
    if let Some(kib) = run.peak_kib {
        assert!(kib < MAX_CALLER_KIB, "{mode}: caller peaked at {kib} KiB");
    }
    Outcome { code, error, run }
}

fn assert_refused(mode: &str, rule: &str) {
    let outcome = call(mode, &[]);
    assert_eq!(outcome.code, Some(1), "{mode}: {:?}", outcome.run.output);
    assert!(
        outcome.error.contains(rule),
        "{mode}: error {:?} does not name {rule:?}",
        outcome.error
    );
}

#[test]
fn valid_stream_is_accepted() {
    // The control: the harness itself lets a good stream through, so refusals below are real.
    let outcome = call("valid", &[]);
    assert_eq!(outcome.code, Some(0), "{:?}", outcome.run.output);
}

#[test]
fn zero_pages_are_refused() {
    assert_refused("pages-0", "page count is zero");
}

#[test]
fn too_many_pages_are_refused() {
    assert_refused("pages-10001", "over the limit");
}

#[test]
fn too_wide_a_page_is_refused() {
    assert_refused("width-10001", "over the limit");
}

#[test]
fn a_non_digit_is_refused() {
    assert_refused("not-a-digit", "where a digit of the width belongs");
}

#[test]
fn a_leading_zero_is_refused() {
    assert_refused("leading-zero", "leading zero");
}

#[test]
fn a_missing_newline_is_refused() {
    // Without its newline the height runs into the pixel bytes, which are not digits.
    assert_refused("missing-newline", "digit of the height");
}

#[test]
fn one_trailing_byte_is_refused() {
    assert_refused("trailing-byte", "after the last page");
}

#[test]
fn truncation_at_every_byte_is_refused() {
    // The valid stand-in stream has 34 bytes; every shorter prefix must fail as truncated.
    for n in 0..34 {
        assert_refused(&format!("truncate-{n}"), "ended in the");
    }
}

#[test]
fn a_stalled_uvm_hits_the_idle_deadline() {
    assert_refused("stall", "sent nothing for");
}

#[test]
fn a_slow_two_gigabyte_stream_hits_the_call_deadline_in_bounded_memory() {
    // One second per page on top of the 10 s base: the 7 declared pages would need 2100 s.
    let outcome = call("slow-2gb", &["--page-timeout", "1"]);
    assert_eq!(outcome.code, Some(1), "{:?}", outcome.run.output);
    assert!(outcome.error.contains("deadline"), "{}", outcome.error);
    eprintln!(
        "slow-2gb: {:?}, caller peak {:?} KiB",
        outcome.run.elapsed, outcome.run.peak_kib
    );
}

#[test]
fn a_failing_exit_code_after_a_valid_stream_is_refused() {
    assert_refused("valid-then-exit-1", "exit code 1");
}

#[test]
fn a_uvm_that_ignores_its_input_is_refused() {
    let outcome = call("ignore-stdin", &[]);
    assert_eq!(outcome.code, Some(1), "{:?}", outcome.run.output);
    assert!(!outcome.error.is_empty());
    assert!(!Path::new(&outcome.error).exists());
}
