//! Shared helpers of the integration tests: finding the built programs, running them timed and
//! measured, and checking what they left behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// `target/debug` (or the profile folder the tests were built in).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// A program of the workspace, built by `cargo build --workspace --bins`.
pub fn program(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before these tests",
        path.display()
    );
    path
}

/// What one timed run produced.
pub struct Run {
    pub output: Output,
    pub elapsed: Duration,
    /// Peak resident memory of the program in KiB, when /usr/bin/time could measure it.
    pub peak_kib: Option<u64>,
}

/// Runs `cmd` under `/usr/bin/time -f %M` when that exists, to learn its peak memory.
pub fn run_measured(mut cmd: Command, scratch: &Path) -> Run {
    let time = Path::new("/usr/bin/time");
    let report = scratch.join("peak-memory.txt");
    let mut cmd = if time.is_file() {
        let mut wrapped = Command::new(time);
        wrapped
            .arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&report)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    } else {
        std::mem::replace(&mut cmd, Command::new("true"))
    };
    let started = Instant::now();
    let output = cmd.output().expect("run the program");
    let elapsed = started.elapsed();
    let peak_kib = std::fs::read_to_string(&report)
        .ok()
        .and_then(|s| s.lines().last()?.trim().parse().ok());
    Run {
        output,
        elapsed,
        peak_kib,
    }
}

pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file");
    format!("{:x}", Sha256::digest(bytes))
}

/// The file names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The first JSON report on the caller's stdout.
pub fn report(output: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON report in {output:?}"))
}

/// A real PDF: the corpus's short text document when the shared corpus is beside the
/// checkout, else a generated three-page one.
pub fn real_pdf() -> Vec<u8> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for corpus in [
        manifest.join("../../shared/corpus"),
        PathBuf::from("/work/shared/corpus"),
    ] {
        if let Ok(bytes) = std::fs::read(corpus.join("text-short-cfgguide.pdf")) {
            return bytes;
        }
    }
    hostile_samples::valid_pdf()
}
