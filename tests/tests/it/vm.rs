//! The commands end to end through `--transport vm`: the real uvm images (kernel from
//! `kernel/build.sh`, pdf-uvm or image-uvm as `/init`) booted under QEMU for each document.
//!
//! The tests that boot are `#[ignore]`d: they need the cached kernel (`scripts/setup-vm.sh`) and
//! `qemu-system-x86`, and take seconds each under TCG. CI runs them with `--ignored`. They build
//! both images once per run with `uvm-image build` into `target/debug/uvm-images`, or use the
//! prebuilt folder named by `TRUSTED_CONVERTERS_IMAGES` (holding `pdf/` and `image/`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use converter_core::check::{check_pdf, check_png};

use crate::util::*;

/// The image folder (`pdf/`, `image/`), built once for all tests of this run.
fn images() -> &'static Path {
    static IMAGES: OnceLock<PathBuf> = OnceLock::new();
    IMAGES.get_or_init(|| {
        if let Some(dir) = std::env::var_os("TRUSTED_CONVERTERS_IMAGES") {
            return PathBuf::from(dir);
        }
        let dir = bin_dir().join("uvm-images");
        for kind in ["pdf", "image"] {
            let out = Command::new(program("uvm-image"))
                .args(["build", kind, "--out"])
                .arg(dir.join(kind))
                .output()
                .expect("run uvm-image");
            assert!(
                out.status.success(),
                "uvm-image build {kind} failed (is the kernel built? run scripts/setup-vm.sh): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
}

fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--transport vm --image-dir IMAGES` and then `args`.
fn vm_args<'a>(images: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--transport",
        "vm",
        "--image-dir",
        images.to_str().expect("utf-8 image path"),
    ];
    all.extend_from_slice(args);
    all
}

#[test]
#[ignore = "needs the kernel from scripts/setup-vm.sh and qemu-system-x86"]
fn pdf_through_a_vm_is_byte_identical_to_local() {
    let name = "text-short-cfgguide.pdf";
    let local = tempfile::tempdir().unwrap();
    copy_corpus(name, local.path());
    ok(&convert_pdf(
        local.path(),
        &["-r", "75", "--transport", "local", name],
    ));

    let vm = tempfile::tempdir().unwrap();
    copy_corpus(name, vm.path());
    ok(&convert_pdf(
        vm.path(),
        &vm_args(images(), &["-r", "75", name]),
    ));

    let output = "text-short-cfgguide.trusted.pdf";
    let from_vm = fs::read(vm.path().join(output)).unwrap();
    assert_eq!(check_pdf(&from_vm).expect("checked").pages.len(), 10);
    assert!(
        from_vm == fs::read(local.path().join(output)).unwrap(),
        "the vm's output differs from the local one"
    );
}

#[test]
#[ignore = "needs the kernel from scripts/setup-vm.sh and qemu-system-x86"]
fn image_through_a_vm_is_byte_identical_to_local() {
    let local = tempfile::tempdir().unwrap();
    copy_corpus("camera.png", local.path());
    ok(&convert_img(
        local.path(),
        &["--transport", "local", "camera.png", "clean.png"],
    ));

    let vm = tempfile::tempdir().unwrap();
    copy_corpus("camera.png", vm.path());
    ok(&convert_img(
        vm.path(),
        &vm_args(images(), &["camera.png", "clean.png"]),
    ));

    let from_vm = fs::read(vm.path().join("clean.png")).unwrap();
    check_png(&from_vm).expect("only IHDR, IDAT, IEND");
    assert!(
        from_vm == fs::read(local.path().join("clean.png")).unwrap(),
        "the vm's output differs from the local one"
    );
}

/// pdf-uvm's one-line error crosses the data port as DATA_STDERR and reaches the report.
#[test]
#[ignore = "needs the kernel from scripts/setup-vm.sh and qemu-system-x86"]
fn uvm_failure_line_reaches_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("broken.pdf"),
        b"%PDF-1.7\nthis is not a pdf at all\n",
    )
    .unwrap();

    let out = convert_pdf(dir.path(), &vm_args(images(), &["--json", "broken.pdf"]));
    assert_eq!(out.status.code(), Some(1));
    let error = reports(&out)[0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("the uvm failed (exit code 1): pdf-uvm: "),
        "{error}"
    );
    assert_eq!(listing(dir.path()), ["broken.pdf"]);
}

/// A call that outlives its deadline: QEMU is killed, no output is left, the error names the
/// deadline, and the command ends soon after the deadline.
#[test]
#[ignore = "needs the kernel from scripts/setup-vm.sh and qemu-system-x86"]
fn uvm_killed_at_the_deadline_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let name = "text-long-R-exts.pdf";
    copy_corpus(name, dir.path());

    // Boot takes about a second under TCG; 236 pages at 300 ppi take minutes.
    let started = Instant::now();
    let out = convert_pdf(
        dir.path(),
        &vm_args(
            images(),
            &[
                "--json",
                "-r",
                "300",
                "--timeout",
                "6",
                "--page-timeout",
                "0",
                name,
            ],
        ),
    );
    let took = started.elapsed();

    assert_eq!(out.status.code(), Some(1));
    let error = reports(&out)[0]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("deadline of 6s"), "{error}");
    assert_eq!(listing(dir.path()), [name], "no output, no archive");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// Without an image the vm transport says which file is missing and how to build it,
/// before starting QEMU.
#[test]
fn missing_image_names_the_file_and_the_build_command() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.pdf"), blank_pdf(72, 72)).unwrap();
    let nowhere = dir.path().join("no-images");

    let out = convert_pdf(dir.path(), &vm_args(&nowhere, &["--json", "a.pdf"]));
    assert_eq!(out.status.code(), Some(1));
    let error = reports(&out)[0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("no-images/pdf/vmlinux is missing"),
        "{error}"
    );
    assert!(error.contains("uvm-image build pdf"), "{error}");
    assert_eq!(listing(dir.path()), ["a.pdf"]);
}
