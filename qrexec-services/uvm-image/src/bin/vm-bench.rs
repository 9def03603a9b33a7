//! Boot-to-ready and call timings of a uvm under QEMU.
//!
//! Echo mode (the default): the program is its own uvm; booted as PID 1 it serves `uvm.Echo`.
//! Run on the host it builds an image holding itself as `/init`, boots it `--runs` times and
//! prints, per run and as medians, the time from QEMU's start to the uvm's HELLO and the time
//! of a whole echo call (boot, `--bytes` in and out, exit code, QEMU gone).
//!
//! PDF mode (`--pdf-image DIR --document FILE`): the same figures for a `qubes.PdfConvert`
//! call of the pdf image (built by `uvm-image build pdf`), the document sent as is and the
//! pixel stream counted. `--find-memory` then bisects the smallest guest memory (in steps of
//! [`MEMORY_STEP_MB`]) with which the call still succeeds.
//!
//! `--kernel FILE` boots another kernel (an ELF vmlinux with a PVH entry) with the image's
//! initramfs, for comparing kernels; `--serial-port` carries the call on the 8250 serial port,
//! for kernels whose virtio drivers are modules.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use uvm_image::image::{write_image, ImageSpec, INITRAMFS_FILE, VMLINUX_FILE};
use uvm_image::kernel;
use uvm_image::qemu::{start_vm_with, Accel, DataPort, VmOptions, DEFAULT_MEMORY_MB};

/// Resolution of the PDF mode's call when none is named: the project's comparison figure.
const DEFAULT_RESOLUTION: u32 = 150;

/// Granularity of `--find-memory`'s bisection.
const MEMORY_STEP_MB: u32 = 8;

/// Least guest memory `--find-memory` tries; the bisection assumes it fails.
const MEMORY_FLOOR_MB: u32 = 16;

/// Longest time one benchmarked call may take.
const CALL_LIMIT: Duration = Duration::from_secs(300);

#[derive(Parser)]
#[command(about = "Measure a uvm's boot-to-ready and echo-call times under QEMU")]
struct Args {
    /// Number of boots.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Bytes sent through the echo call.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: usize,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MB)]
    memory_mb: u32,
    /// Force the accelerator (kvm or tcg); default: detect.
    #[arg(long)]
    accel: Option<String>,
    /// Kernel cache (default: $UVM_KERNEL_CACHE or /var/cache/trusted-converters/kernel).
    #[arg(long)]
    kernel_cache: Option<PathBuf>,
    /// PDF mode: the pdf image folder (from `uvm-image build pdf`).
    #[arg(long, requires = "document")]
    pdf_image: Option<PathBuf>,
    /// PDF mode: the document to convert.
    #[arg(long)]
    document: Option<PathBuf>,
    /// PDF mode: the resolution in pixels per inch.
    #[arg(long, default_value_t = DEFAULT_RESOLUTION)]
    resolution: u32,
    /// PDF mode: bisect the smallest guest memory that converts the document.
    #[arg(long, requires = "pdf_image")]
    find_memory: bool,
    /// Boot this kernel instead of the image's `vmlinux`.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Carry the call on the 8250 serial port instead of virtio-serial.
    #[arg(long)]
    serial_port: bool,
}

fn main() -> Result<()> {
    if uvm_init::is_pid1() {
        uvm_init::run_as_pid1(&mut uvm_init::EchoHandler);
    }
    let args = Args::parse();
    let accel = match args.accel.as_deref() {
        None => None,
        Some("kvm") => Some(Accel::Kvm),
        Some("tcg") => Some(Accel::Tcg),
        Some(other) => bail!("unknown accelerator {other:?} (kvm or tcg)"),
    };
    let data_port = if args.serial_port {
        DataPort::Serial
    } else {
        DataPort::Virtio
    };
    let options = VmOptions {
        memory_mb: args.memory_mb,
        accel,
        data_port,
        ..VmOptions::default()
    };
    if let (Some(image), Some(document)) = (&args.pdf_image, &args.document) {
        return pdf_bench(&args, image, document, &options);
    }

    let kernel = kernel::find(&kernel::cache_dir(args.kernel_cache.as_deref()))?;
    let dir = tempfile::tempdir().context("cannot create the image folder")?;
    let me = std::env::current_exe().context("cannot find this program")?;
    let manifest = write_image(&ImageSpec::new(&me), &kernel, dir.path())?;
    if let Some(other) = &args.kernel {
        replace_kernel(dir.path(), other)?;
    }
    let initramfs_bytes = manifest.files.last().map(|f| f.bytes).unwrap_or_default();
    println!(
        "image: initramfs {initramfs_bytes} bytes, {} entries; memory {} MiB",
        manifest.initramfs_entries.len(),
        args.memory_mb
    );

    let payload: Vec<u8> = (0..args.bytes).map(|i| (i % 251) as u8).collect();
    let mut boots = Vec::new();
    let mut totals = Vec::new();
    for run in 1..=args.runs {
        let start = Instant::now();
        let mut call = start_vm_with(dir.path(), uvm_init::ECHO_SERVICE, None, &options)?;
        let mut stdin = call.take_stdin().context("no stdin")?;
        let mut stdout = call.take_stdout().context("no stdout")?;
        let sent = payload.clone();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            stdin.write_all(&sent)?;
            stdin.close()
        });
        let mut echoed = Vec::new();
        stdout
            .read_to_end(&mut echoed)
            .context("reading the echo")?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
        let exit = call.wait(Duration::from_secs(30))?;
        let total = start.elapsed();
        if echoed != payload || exit.exit_code != 0 {
            bail!(
                "run {run}: echo returned {} of {} bytes, exit code {}",
                echoed.len(),
                payload.len(),
                exit.exit_code
            );
        }
        println!(
            "run {run}: accel {} boot-to-ready {:.0} ms, echo call total {:.0} ms, powered off {}",
            call.accel().name(),
            ms(call.boot_time()),
            ms(total),
            exit.powered_off
        );
        boots.push(call.boot_time());
        totals.push(total);
    }
    println!(
        "median of {}: boot-to-ready {:.0} ms, echo call of {} bytes {:.0} ms",
        args.runs,
        ms(median(&mut boots)),
        args.bytes,
        ms(median(&mut totals))
    );
    Ok(())
}

/// Puts a copy of `kernel` in `dir` as its `vmlinux`.
fn replace_kernel(dir: &Path, kernel: &Path) -> Result<()> {
    let target = dir.join(VMLINUX_FILE);
    let _ = std::fs::remove_file(&target);
    std::fs::copy(kernel, &target).with_context(|| format!("cannot copy {}", kernel.display()))?;
    Ok(())
}

/// One pdf call's figures.
struct PdfRun {
    boot: Duration,
    total: Duration,
    stream_bytes: u64,
    accel: Accel,
}

/// Boots the pdf image in `dir` and converts `document`; an error when the call fails.
fn pdf_call(dir: &Path, document: &[u8], resolution: u32, options: &VmOptions) -> Result<PdfRun> {
    let start = Instant::now();
    let arg = resolution.to_string();
    let mut call = start_vm_with(dir, "qubes.PdfConvert", Some(&arg), options)?;
    let mut stdin = call.take_stdin().context("no stdin")?;
    let mut stdout = call.take_stdout().context("no stdout")?;
    let sent = document.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        stdin.write_all(&sent)?;
        stdin.close()
    });
    let stream_bytes = std::io::copy(&mut stdout, &mut std::io::sink());
    // A uvm that died may have stopped reading: its writer's error says nothing more.
    let _ = writer.join();
    let exit = call.wait(CALL_LIMIT)?;
    let total = start.elapsed();
    let stream_bytes = stream_bytes.context("reading the pixel stream")?;
    if exit.exit_code != 0 {
        bail!(
            "exit code {}: {}",
            exit.exit_code,
            String::from_utf8_lossy(&exit.stderr).trim()
        );
    }
    Ok(PdfRun {
        boot: call.boot_time(),
        total,
        stream_bytes,
        accel: call.accel(),
    })
}

/// PDF mode: `--runs` calls, then optionally the memory bisection.
fn pdf_bench(args: &Args, image: &Path, document: &Path, options: &VmOptions) -> Result<()> {
    let bytes =
        std::fs::read(document).with_context(|| format!("cannot read {}", document.display()))?;
    let scratch = tempfile::tempdir().context("cannot create the image folder")?;
    let dir = match &args.kernel {
        Some(kernel) => {
            std::fs::copy(
                image.join(INITRAMFS_FILE),
                scratch.path().join(INITRAMFS_FILE),
            )
            .context("cannot copy the initramfs")?;
            replace_kernel(scratch.path(), kernel)?;
            scratch.path()
        }
        None => image,
    };
    println!(
        "pdf image {}: document {} bytes at {} ppi; memory {} MiB",
        dir.display(),
        bytes.len(),
        args.resolution,
        options.memory_mb
    );

    let mut boots = Vec::new();
    let mut totals = Vec::new();
    for run in 1..=args.runs {
        let r = pdf_call(dir, &bytes, args.resolution, options)
            .with_context(|| format!("run {run}"))?;
        println!(
            "run {run}: accel {} boot-to-ready {:.0} ms, pdf call total {:.0} ms, stream {} bytes",
            r.accel.name(),
            ms(r.boot),
            ms(r.total),
            r.stream_bytes
        );
        boots.push(r.boot);
        totals.push(r.total);
    }
    println!(
        "median of {}: boot-to-ready {:.0} ms, pdf call {:.0} ms",
        args.runs,
        ms(median(&mut boots)),
        ms(median(&mut totals))
    );

    if args.find_memory {
        // Invariant: `good` converts (checked first), `bad` is assumed to fail.
        let mut good = options.memory_mb;
        let mut bad = MEMORY_FLOOR_MB;
        let probe = |mb: u32| {
            let opts = VmOptions {
                memory_mb: mb,
                ..options.clone()
            };
            let outcome = pdf_call(dir, &bytes, args.resolution, &opts);
            match &outcome {
                Ok(_) => println!("memory {mb} MiB: converts"),
                Err(e) => println!("memory {mb} MiB: fails ({e:#})"),
            }
            outcome.is_ok()
        };
        if !probe(good) {
            bail!("the document does not convert with {good} MiB: raise --memory-mb");
        }
        while good - bad > MEMORY_STEP_MB {
            let mid = bad + (good - bad) / 2 / MEMORY_STEP_MB * MEMORY_STEP_MB;
            let mid = mid.max(bad + 1);
            if probe(mid) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        println!("smallest memory that converts: {good} MiB (step {MEMORY_STEP_MB} MiB)");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
