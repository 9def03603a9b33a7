//! The `pdf-uvm` program as qrexec runs it: argument or environment in, stdin to stdout.

use std::fs;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::util::{corpus, pdf, read_stream, Page};

/// Runs the program with `args`, extra environment `env` and `input` on stdin.
fn run(args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pdf-uvm"))
        .args(args)
        .env_remove("QREXEC_SERVICE_ARGUMENT")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pdf-uvm");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Feed stdin from a thread: the program may stop reading (bad argument) or write a lot
    // before it has read everything.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for pdf-uvm");
    feeder.join().unwrap();
    output
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bad_argument_exits_2_with_one_line() {
    let output = run(&["abc"], &[], &pdf(&[Page::new(72.0, 72.0)]));
    assert_eq!(output.status.code(), Some(2));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("pdf-uvm: bad resolution \"abc\""),
        "{lines:?}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn extra_arguments_exit_2() {
    let output = run(&["75", "150"], &[], b"");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr_lines(&output).len(), 1);
}

#[test]
fn real_pdf_gives_a_valid_stream_and_silent_stderr() {
    let document = fs::read(corpus("text-short-cfgguide.pdf")).unwrap();
    let output = run(&["75"], &[], &document);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {:?}",
        stderr_lines(&output)
    );
    assert!(output.stderr.is_empty(), "{:?}", stderr_lines(&output));
    let pages = read_stream(&output.stdout);
    assert_eq!(pages.len(), 10);
    assert!(pages.iter().all(|p| (p.width, p.height) == (620, 877)));
}

#[test]
fn argument_comes_from_qrexec_environment_when_not_given() {
    let output = run(
        &[],
        &[("QREXEC_SERVICE_ARGUMENT", "150")],
        &pdf(&[Page::new(72.0, 36.0)]),
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {:?}",
        stderr_lines(&output)
    );
    let pages = read_stream(&output.stdout);
    assert_eq!((pages[0].width, pages[0].height), (150, 75));
}

#[test]
fn program_argument_wins_over_the_environment() {
    let output = run(
        &["75"],
        &[("QREXEC_SERVICE_ARGUMENT", "150")],
        &pdf(&[Page::new(72.0, 72.0)]),
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(read_stream(&output.stdout)[0].width, 75);
}

#[test]
fn undecodable_document_exits_1_with_one_line() {
    let output = run(&["75"], &[], b"not a pdf");
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(
        lines,
        ["pdf-uvm: cannot open the document: not a pdf file, or damaged beyond repair"]
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn missing_library_named_by_the_environment_exits_1() {
    let output = run(
        &["75"],
        &[("PDFIUM_LIBRARY", "/nonexistent/libpdfium.so")],
        &pdf(&[Page::new(72.0, 72.0)]),
    );
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0]
            .starts_with("pdf-uvm: pdfium is unavailable: cannot load /nonexistent/libpdfium.so"),
        "{lines:?}"
    );
}
