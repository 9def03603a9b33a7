//! `convert-bench`: measures conversions end to end against the uvm alone, and prints figures.
//!
//! For each PDF and resolution it prints:
//! - end-to-end pages/s of `qvm-convert-pdf --transport local` (process start to output renamed);
//! - pages/s of the uvm alone (`pdf-uvm` rendering the same pages, stream to /dev/null);
//! - end to end as a share of the uvm alone;
//! - output bytes / input bytes;
//! - peak memory of the caller (its own report) and of the uvm (`/usr/bin/time`).
//!
//! For each image it prints megapixels/s end to end through `qvm-convert-img` and the output's
//! size. Each figure is the median of `--runs` runs.
//!
//! Build everything in release mode first: `cargo build --release --workspace --bins`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

/// Measures conversions and prints figures.
#[derive(Debug, Parser)]
#[command(name = "convert-bench")]
struct Cli {
    /// PDFs and images to convert
    #[arg(required = true)]
    files: Vec<PathBuf>,

    /// Resolutions for PDFs, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "150")]
    dpi: Vec<u32>,

    /// Runs per figure; the median is printed
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin = std::env::current_exe()?
        .parent()
        .context("no folder")?
        .to_path_buf();
    for name in ["qvm-convert-pdf", "pdf-uvm"] {
        if !bin.join(name).is_file() {
            bail!("{name} is not built beside convert-bench: cargo build --release --workspace --bins");
        }
    }
    if !Path::new("/usr/bin/time").is_file() {
        bail!("/usr/bin/time is needed for peak memory (Debian package `time`)");
    }

    println!(
        "{:<32} {:>5} {:>6} {:>9} {:>9} {:>6} {:>8} {:>10} {:>8}",
        "document", "dpi", "pages", "e2e p/s", "uvm p/s", "e2e%", "out/in", "caller MB", "uvm MB"
    );
    for file in &cli.files {
        let is_pdf = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("pdf"));
        if is_pdf {
            for &dpi in &cli.dpi {
                bench_pdf(&bin, file, dpi, cli.runs)?;
            }
        } else {
            bench_image(&bin, file, cli.runs)?;
        }
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn name_of(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `command` under `/usr/bin/time -f %M` and returns (wall time, peak RSS in KiB, stdout).
fn timed(command: &mut Command) -> anyhow::Result<(Duration, u64, Vec<u8>)> {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped.arg("-f").arg("%M").arg(&program).args(&args);
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    let start = Instant::now();
    let out = wrapped
        .stdin(Stdio::null())
        .output()
        .context("run /usr/bin/time")?;
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{} failed: {}", program.to_string_lossy(), stderr.trim());
    }
    let rss = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Ok((elapsed, rss, out.stdout))
}

fn bench_pdf(bin: &Path, file: &Path, dpi: u32, runs: usize) -> anyhow::Result<()> {
    let input_bytes = std::fs::metadata(file)?.len();
    let mut e2e = Vec::new();
    let mut uvm = Vec::new();
    let (mut pages, mut out_bytes, mut caller_kb, mut uvm_kb) = (0u64, 0u64, 0u64, 0u64);

    for _ in 0..runs.max(1) {
        // The uvm alone: render every page and stream it to /dev/null.
        let sh = format!(
            "exec {} {dpi} < '{}' > /dev/null",
            bin.join("pdf-uvm").display(),
            file.display()
        );
        let (t, rss, _) = timed(Command::new("sh").arg("-c").arg(sh))?;
        uvm.push(t);
        uvm_kb = uvm_kb.max(rss);

        // End to end, on a copy that --in-place may remove.
        let dir = tempfile::tempdir()?;
        let copy = dir.path().join("doc.pdf");
        std::fs::copy(file, &copy)?;
        let (t, _, stdout) = timed(
            Command::new(bin.join("qvm-convert-pdf"))
                .args([
                    "--transport",
                    "local",
                    "--json",
                    "-i",
                    "-r",
                    &dpi.to_string(),
                    "doc.pdf",
                ])
                .current_dir(dir.path()),
        )?;
        e2e.push(t);
        let report: serde_json::Value = serde_json::from_slice(&stdout)?;
        pages = report["pages"].as_u64().unwrap_or(0);
        out_bytes = report["output_bytes"].as_u64().unwrap_or(0);
        caller_kb = caller_kb.max(report["caller_peak_rss_kb"].as_u64().unwrap_or(0));
    }

    let (e2e, uvm) = (median(e2e), median(uvm));
    let rate = |t: Duration| pages as f64 / t.as_secs_f64().max(1e-9);
    println!(
        "{:<32} {:>5} {:>6} {:>9.1} {:>9.1} {:>5.0}% {:>8.2} {:>10.1} {:>8.1}",
        name_of(file),
        dpi,
        pages,
        rate(e2e),
        rate(uvm),
        100.0 * uvm.as_secs_f64() / e2e.as_secs_f64().max(1e-9),
        out_bytes as f64 / input_bytes.max(1) as f64,
        caller_kb as f64 / 1024.0,
        uvm_kb as f64 / 1024.0,
    );
    Ok(())
}

fn bench_image(bin: &Path, file: &Path, runs: usize) -> anyhow::Result<()> {
    let convert = bin.join("qvm-convert-img");
    if !convert.is_file() {
        bail!("qvm-convert-img is not built beside convert-bench");
    }
    let input_bytes = std::fs::metadata(file)?.len();
    let mut times = Vec::new();
    let (mut pixels, mut out_bytes, mut peak_kb) = (0u64, 0u64, 0u64);
    for _ in 0..runs.max(1) {
        let dir = tempfile::tempdir()?;
        let ext = file
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let copy = dir.path().join(format!("img.{ext}"));
        std::fs::copy(file, &copy)?;
        let (t, rss, stdout) = timed(
            Command::new(&convert)
                .args(["--transport", "local", "--json", "-i"])
                .arg(&copy)
                .current_dir(dir.path()),
        )?;
        times.push(t);
        peak_kb = peak_kb.max(rss);
        let report: serde_json::Value = serde_json::from_slice(&stdout)?;
        pixels = report["stream_bytes"].as_u64().unwrap_or(0) / 4;
        out_bytes = report["output_bytes"].as_u64().unwrap_or(0);
    }
    let t = median(times);
    println!(
        "{:<32} {:>5} {:>6} {:>8.1} MP/s {:>14} {:>8.2} {:>10.1}",
        name_of(file),
        "-",
        1,
        pixels as f64 / 1e6 / t.as_secs_f64().max(1e-9),
        format!("{:.0} ms", t.as_secs_f64() * 1e3),
        out_bytes as f64 / input_bytes.max(1) as f64,
        peak_kb as f64 / 1024.0,
    );
    Ok(())
}
