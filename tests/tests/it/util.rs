//! Shared helpers: find the workspace's programs and the corpus, run commands, hash files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder holding the workspace's built programs (`target/debug`), found from this test
/// binary's own path (`target/debug/deps/it-HASH`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for program in ["qvm-convert-pdf", "pdf-uvm", "qvm-convert-img", "image-uvm"] {
        assert!(
            dir.join(program).is_file(),
            "{program} is not built in {}: run `cargo build --workspace --bins` first \
             (the README's test command does)",
            dir.display()
        );
    }
    dir
}

/// A program of the workspace.
pub fn program(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The shared corpus of real documents (`../shared/corpus` beside the checkout), or the folder
/// named by `TRUSTED_CONVERTERS_CORPUS`.
pub fn corpus(name: &str) -> PathBuf {
    let dir = std::env::var_os("TRUSTED_CONVERTERS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"));
    let path = dir.join(name);
    assert!(path.is_file(), "corpus file {} is missing", path.display());
    path
}

/// Copies a corpus file into `dir` and returns the copy's path.
pub fn copy_corpus(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(corpus(name), &to).expect("copy corpus file");
    to
}

/// Runs `qvm-convert-pdf` with `args` in `dir`, with HOME pointing at `dir`.
pub fn convert_pdf(dir: &Path, args: &[&str]) -> Output {
    Command::new(program("qvm-convert-pdf"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .expect("run qvm-convert-pdf")
}

/// Runs `qvm-convert-img` with `args` in `dir`, with HOME pointing at `dir`.
pub fn convert_img(dir: &Path, args: &[&str]) -> Output {
    Command::new(program("qvm-convert-img"))
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .expect("run qvm-convert-img")
}

/// The JSON reports printed with `--json`, one per line.
pub fn reports(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad report {l:?}: {e}")))
        .collect()
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    converter_core::report::sha256_hex(&std::fs::read(path).expect("read file"))
}

/// Every file name in `dir`, sorted, hidden ones included.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A one-page PDF with the given MediaBox and no content, written by hand.
pub fn blank_pdf(width_pt: u32, height_pt: u32) -> Vec<u8> {
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width_pt} {height_pt}] >>"),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}
