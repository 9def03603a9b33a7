//! Every hostile sample through the real converters: PDFs through `qvm-convert-pdf --transport
//! local`, images through `qvm-convert-img --transport local` and, separately, through
//! `image-uvm` with the caller's reader and rebuild called here directly. Each must end in
//! an output that passes the checker or a clean one-line error, within its deadline, with no
//! partial file and the original intact.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use converter_core::check::{check_pdf, check_png};
use converter_core::limits::StreamLimits;
use converter_core::rebuild::png::write_png;
use converter_core::stream::read_rgba_image;
use hostile_samples::{image_samples, pdf_samples, Expectation};
use util::{listing, program, report, run_measured, sha256};

/// Whole-call deadline given to the caller; the idle one is shorter, so a renderer that loops
/// silently is cut after 5 s.
const CALL_SECONDS: &str = "60";
const IDLE_SECONDS: &str = "5";

/// Bound on one document, deadline plus start-up and rebuild.
const MAX_DOCUMENT_TIME: Duration = Duration::from_secs(90);

/// Bound on one image through `image-uvm`.
const MAX_IMAGE_TIME: Duration = Duration::from_secs(30);

#[test]
fn every_hostile_pdf_ends_checked_or_cleanly_refused() {
    let caller = program("qvm-convert-pdf");
    let uvm_dir = util::target_dir();
    let mut problems = Vec::new();
    for sample in pdf_samples() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        let archive = tmp.path().join("archive");
        std::fs::create_dir_all(&docs).unwrap();
        let doc = docs.join(&sample.file_name);
        std::fs::write(&doc, &sample.bytes).unwrap();
        let before = sha256(&doc);

        let mut cmd = Command::new(&caller);
        cmd.args(["--transport", "local", "--resolution", "75", "--json"])
            .args(["--timeout", CALL_SECONDS, "--idle-timeout", IDLE_SECONDS])
            .arg("--uvm-dir")
            .arg(&uvm_dir)
            .arg("--archive")
            .arg(&archive)
            .arg(&doc);
        let run = run_measured(cmd, tmp.path());
        let json = report(&run.output);
        let name = &sample.name;
        eprintln!(
            "{name}: {} in {:?}, caller peak {:?} KiB",
            json["status"], run.elapsed, run.peak_kib
        );
        if run.elapsed > MAX_DOCUMENT_TIME {
            problems.push(format!("{name}: took {:?}", run.elapsed));
        }
        match run.output.status.code() {
            Some(0) => {
                if sample.expectation == Expectation::MustFailCleanly {
                    problems.push(format!("{name}: converted, but must be refused"));
                }
                let output = json["output"].as_str().unwrap_or_default();
                match std::fs::read(output) {
                    Ok(bytes) => {
                        if let Err(e) = check_pdf(&bytes) {
                            problems.push(format!("{name}: output fails the checker: {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("{name}: no output at {output:?}: {e}")),
                }
                let archived = archive.join(&sample.file_name);
                if !archived.is_file() || sha256(&archived) != before {
                    problems.push(format!("{name}: the original was not archived intact"));
                }
            }
            Some(1) => {
                let error = json["error"].as_str().unwrap_or_default();
                if error.is_empty() || error.contains('\n') {
                    problems.push(format!("{name}: error is not one line: {error:?}"));
                }
                if listing(&docs) != [sample.file_name.clone()] {
                    problems.push(format!("{name}: left {:?}", listing(&docs)));
                }
                if sha256(&doc) != before {
                    problems.push(format!("{name}: the original changed"));
                }
            }
            other => problems.push(format!("{name}: exit status {other:?}: {:?}", run.output)),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_hostile_image_through_the_caller_ends_checked_or_cleanly_refused() {
    let caller = program("qvm-convert-img");
    let uvm_dir = util::target_dir();
    let mut problems = Vec::new();
    for sample in image_samples() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        let doc = docs.join(&sample.file_name);
        std::fs::write(&doc, &sample.bytes).unwrap();
        let before = sha256(&doc);

        let mut cmd = Command::new(&caller);
        cmd.args(["--transport", "local", "--json"])
            .args(["--timeout", CALL_SECONDS, "--idle-timeout", IDLE_SECONDS])
            .arg("--uvm-dir")
            .arg(&uvm_dir)
            .arg("--archive")
            .arg(tmp.path().join("archive"))
            .arg("--output-dir")
            .arg(tmp.path().join("out"))
            .arg(&doc);
        let run = run_measured(cmd, tmp.path());
        let json = report(&run.output);
        let name = &sample.name;
        if run.elapsed > MAX_IMAGE_TIME {
            problems.push(format!("{name}: took {:?}", run.elapsed));
        }
        match run.output.status.code() {
            Some(0) => {
                if sample.expectation == Expectation::MustFailCleanly {
                    problems.push(format!("{name}: converted, but must be refused"));
                }
                let output = json["output"].as_str().unwrap_or_default();
                match std::fs::read(output) {
                    Ok(bytes) => {
                        if let Err(e) = check_png(&bytes) {
                            problems.push(format!("{name}: output fails the checker: {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("{name}: no output at {output:?}: {e}")),
                }
            }
            Some(1) => {
                let error = json["error"].as_str().unwrap_or_default();
                if error.is_empty() || error.contains('\n') {
                    problems.push(format!("{name}: error is not one line: {error:?}"));
                }
                if listing(&docs) != [sample.file_name.clone()] || sha256(&doc) != before {
                    problems.push(format!("{name}: original not intact: {:?}", listing(&docs)));
                }
                if !listing(&tmp.path().join("out")).is_empty() {
                    problems.push(format!("{name}: left an output behind"));
                }
            }
            other => problems.push(format!("{name}: exit status {other:?}: {:?}", run.output)),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_hostile_image_through_image_uvm_ends_checked_or_cleanly_refused() {
    // The uvm alone, with the caller's reader and rebuild called here directly: it pins the
    // uvm's own behaviour independently of the caller's options.
    let uvm = program("image-uvm");
    let mut problems = Vec::new();
    for sample in image_samples() {
        let name = &sample.name;
        let started = Instant::now();
        let mut child = Command::new(&uvm)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let bytes = sample.bytes.clone();
        let writer = std::thread::spawn(move || {
            let _ = stdin
                .write_all(b"-\n")
                .and_then(|()| stdin.write_all(&bytes));
        });
        let output = child.wait_with_output().unwrap();
        let _ = writer.join();
        let elapsed = started.elapsed();
        if elapsed > MAX_IMAGE_TIME {
            problems.push(format!("{name}: took {elapsed:?}"));
        }

        let image = read_rgba_image(&output.stdout[..], &StreamLimits::IMAGE);
        match (output.status.success(), image) {
            (true, Ok(image)) => {
                if sample.expectation == Expectation::MustFailCleanly {
                    problems.push(format!("{name}: decoded, but must be refused"));
                }
                let mut png = Vec::new();
                match write_png(&mut png, image.width, image.height, &image.pixels) {
                    Ok(_) => {
                        if let Err(e) = check_png(&png) {
                            problems.push(format!("{name}: rebuilt PNG fails the checker: {e}"));
                        }
                    }
                    Err(e) => problems.push(format!("{name}: rebuild failed: {e}")),
                }
            }
            (true, Err(e)) => problems.push(format!("{name}: exit 0 with a bad stream: {e}")),
            (false, _) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                if stderr.trim().lines().count() != 1 {
                    problems.push(format!("{name}: error is not one line: {stderr:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
