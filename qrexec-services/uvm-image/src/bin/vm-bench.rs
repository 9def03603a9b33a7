//! Boot-to-ready and echo-call timings of a uvm under QEMU.
//!
//! The program is its own uvm: booted as PID 1 it serves `uvm.Echo`. Run on the host it
//! builds an image holding itself as `/init`, boots it `--runs` times and prints, per run and
//! as medians, the time from QEMU's start to the uvm's HELLO and the time of a whole echo
//! call (boot, `--bytes` in and out, exit code, QEMU gone).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use uvm_image::image::{write_image, ImageSpec};
use uvm_image::kernel;
use uvm_image::qemu::{start_vm_with, Accel, VmOptions, DEFAULT_MEMORY_MB};

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

    let kernel = kernel::find(&kernel::cache_dir(args.kernel_cache.as_deref()))?;
    let dir = tempfile::tempdir().context("cannot create the image folder")?;
    let me = std::env::current_exe().context("cannot find this program")?;
    let manifest = write_image(&ImageSpec::new(&me), &kernel, dir.path())?;
    let initramfs_bytes = manifest.files.last().map(|f| f.bytes).unwrap_or_default();
    println!(
        "image: initramfs {initramfs_bytes} bytes, {} entries; memory {} MiB",
        manifest.initramfs_entries.len(),
        args.memory_mb
    );

    let options = VmOptions {
        memory_mb: args.memory_mb,
        accel,
        ..VmOptions::default()
    };
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
