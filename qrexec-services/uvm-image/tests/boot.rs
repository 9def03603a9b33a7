//! Boots a real uvm under QEMU: the kernel from `kernel/build.sh`, an initramfs whose `/init`
//! is `vm-bench` (which serves `uvm.Echo` as PID 1), and the host side in `uvm_image::qemu`.
//!
//! These tests are `#[ignore]`d because they need the cached kernel (about 10 minutes to
//! build) and `qemu-system-x86`; CI runs them with `cargo test -p uvm-image -- --ignored`
//! after `kernel/build.sh`. Without the kernel they fail and say how to build it.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use uvm_image::image::{write_image, ImageSpec};
use uvm_image::kernel;
use uvm_image::qemu::{start_vm_with, VmOptions};

fn echo_image(dir: &Path) {
    let kernel = kernel::find(&kernel::cache_dir(None)).unwrap_or_else(|e| panic!("{e}"));
    write_image(
        &ImageSpec::new(env!("CARGO_BIN_EXE_vm-bench")),
        &kernel,
        dir,
    )
    .unwrap();
}

#[test]
#[ignore = "needs the kernel from kernel/build.sh and qemu-system-x86"]
fn echo_uvm_returns_the_bytes_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    echo_image(dir.path());

    let mut call = start_vm_with(
        dir.path(),
        uvm_init::ECHO_SERVICE,
        None,
        &VmOptions::default(),
    )
    .unwrap();
    eprintln!(
        "boot-to-hello {:?} ({})",
        call.boot_time(),
        call.accel().name()
    );
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut stdin = call.take_stdin().unwrap();
    let mut stdout = call.take_stdout().unwrap();
    let sent = payload.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&sent).unwrap();
        stdin.close().unwrap();
    });
    let mut echoed = Vec::new();
    stdout.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    let exit = call.wait(Duration::from_secs(30)).unwrap();

    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");
    assert_eq!(exit.exit_code, 0);
    assert!(exit.powered_off, "qemu had to be killed");
}

#[test]
#[ignore = "needs the kernel from kernel/build.sh and qemu-system-x86"]
fn unknown_service_gets_127_and_the_uvm_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    echo_image(dir.path());

    let mut call = start_vm_with(
        dir.path(),
        "qubes.NoSuchService",
        None,
        &VmOptions::default(),
    )
    .unwrap();
    let exit = call.wait(Duration::from_secs(30)).unwrap();
    assert_eq!(exit.exit_code, 127);
    assert!(exit.powered_off);
}
