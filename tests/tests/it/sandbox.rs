//! The local transport starts the uvm program in the sandbox: a stand-in uvm checks, from the
//! inside, that it was asked to lock down and that it sees no network, no environment and its
//! own PID namespace, and only then answers with a valid stream.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

const STAND_IN: &str = r#"#!/bin/sh
[ "$1" = "--sandboxed" ] || { echo "pdf-uvm: not asked to lock down" >&2; exit 3; }
[ "$(grep -c ':' /proc/net/dev)" = 1 ] || { echo "pdf-uvm: network visible" >&2; exit 4; }
[ -z "$HOME$USER$LANG$CARGO" ] || { echo "pdf-uvm: environment inherited" >&2; exit 5; }
[ "$$" = 1 ] || { echo "pdf-uvm: not pid 1 of its namespace" >&2; exit 6; }
cat > /dev/null
printf '1\n1 1\n\377\377\377'
"#;

fn stand_in_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let uvm_dir = dir.join("uvm");
    fs::create_dir(&uvm_dir).unwrap();
    let script = uvm_dir.join("pdf-uvm");
    fs::write(&script, STAND_IN).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    uvm_dir
}

#[test]
fn local_uvm_runs_in_namespaces_without_environment() {
    let dir = tempfile::tempdir().unwrap();
    let uvm_dir = stand_in_dir(dir.path());
    fs::write(dir.path().join("doc.pdf"), blank_pdf(72, 72)).unwrap();
    let out = convert_pdf(
        dir.path(),
        &[
            "--transport",
            "local",
            "--uvm-dir",
            uvm_dir.to_str().unwrap(),
            "-i",
            "--json",
            "doc.pdf",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(listing(dir.path()), ["doc.trusted.pdf", "uvm"]);
}

#[test]
fn sandbox_none_is_loud_and_really_off() {
    let dir = tempfile::tempdir().unwrap();
    let uvm_dir = stand_in_dir(dir.path());
    fs::write(dir.path().join("doc.pdf"), blank_pdf(72, 72)).unwrap();
    let out = convert_pdf(
        dir.path(),
        &[
            "--sandbox",
            "none",
            "--uvm-dir",
            uvm_dir.to_str().unwrap(),
            "--json",
            "doc.pdf",
        ],
    );
    // The stand-in refuses to run unsandboxed, so the document fails, and nothing is written.
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: --sandbox none"));
    let error = reports(&out)[0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("not asked to lock down"), "{error}");
    assert_eq!(listing(dir.path()), ["doc.pdf", "uvm"]);
}
