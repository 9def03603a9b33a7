//! Builds a uvm image folder (`uvm-image build`) and lists an initramfs (`uvm-image list`).
//!
//! `build pdf` compiles pdf-uvm in release mode, dynamically linked (it `dlopen`s PDFium, which
//! a static glibc program cannot do reliably), and packs it with its loader, its libraries and
//! `libpdfium.so` beside `/init`. `build image` compiles image-uvm statically
//! (`-C target-feature=+crt-static` for the gnu target), so its initramfs holds only `/init`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use uvm_image::image::{write_image, ImageSpec};
use uvm_image::{initramfs, kernel};

/// Where pdf-uvm looks for PDFium inside the uvm: beside its own program, `/init`.
const PDFIUM_IMAGE_PATH: &str = "/libpdfium.so";

/// Where the project's setup script installs PDFium on the build host.
const PDFIUM_HOST_PATH: &str = "/usr/local/lib/libpdfium.so";

/// The target a static image-uvm is built for: naming it keeps RUSTFLAGS away from build
/// scripts and proc macros, which must stay dynamic.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Parser)]
#[command(about = "Build and inspect uvm images")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build DIR/{vmlinux,bzImage,initramfs.gz,manifest.json} for one uvm program.
    Build {
        /// Which uvm.
        kind: Kind,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Kernel cache (default: $UVM_KERNEL_CACHE or /var/cache/trusted-converters/kernel).
        #[arg(long)]
        kernel_cache: Option<PathBuf>,
        /// Use this program instead of building it.
        #[arg(long)]
        program: Option<PathBuf>,
        /// PDFium library for `pdf` (default: $PDFIUM_LIBRARY or /usr/local/lib/libpdfium.so).
        #[arg(long)]
        pdfium: Option<PathBuf>,
    },
    /// Print the entries of an initramfs.gz.
    List {
        /// The archive.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// pdf-uvm, serving qubes.PdfConvert.
    Pdf,
    /// image-uvm, serving qubes.GetImageRGBA.
    Image,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Build {
            kind,
            out,
            kernel_cache,
            program,
            pdfium,
        } => build(kind, &out, kernel_cache.as_deref(), program, pdfium),
        Cmd::List { file } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            for entry in initramfs::list(std::io::BufReader::new(f))
                .with_context(|| format!("cannot read {}", file.display()))?
            {
                println!("{}", entry.line());
            }
            Ok(())
        }
    }
}

fn build(
    kind: Kind,
    out: &Path,
    kernel_cache: Option<&Path>,
    program: Option<PathBuf>,
    pdfium: Option<PathBuf>,
) -> Result<()> {
    let cache = kernel::cache_dir(kernel_cache);
    let kernel = kernel::find(&cache)?;
    eprintln!(
        "uvm-image: kernel {} (key {})",
        kernel.vmlinux.display(),
        kernel.key
    );

    let program = match program {
        Some(p) => p,
        None => match kind {
            Kind::Pdf => cargo_build("pdf-uvm", false)?,
            Kind::Image => cargo_build("image-uvm", true)?,
        },
    };
    eprintln!("uvm-image: program {}", program.display());

    let mut spec = ImageSpec::new(&program);
    if let Kind::Pdf = kind {
        let lib = pdfium
            .or_else(|| std::env::var_os("PDFIUM_LIBRARY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(PDFIUM_HOST_PATH));
        if !lib.is_file() {
            bail!(
                "no PDFium at {} (run scripts/setup-pdfium.sh or pass --pdfium)",
                lib.display()
            );
        }
        spec = spec.with_extra_library(lib, PDFIUM_IMAGE_PATH);
    }

    let manifest = write_image(&spec, &kernel, out)
        .with_context(|| format!("cannot build the image in {}", out.display()))?;
    for f in &manifest.files {
        println!(
            "{}  {:>10}  {}",
            f.sha256,
            f.bytes,
            out.join(&f.name).display()
        );
    }
    eprintln!(
        "uvm-image: {} initramfs entries; manifest {}",
        manifest.initramfs_entries.len(),
        out.join(uvm_image::image::MANIFEST_FILE).display()
    );
    Ok(())
}

/// Builds `package` in release mode and returns its executable, as cargo reports it.
fn cargo_build(package: &str, static_glibc: bool) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "-p", package])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if static_glibc {
        cmd.args(["--target", STATIC_TARGET])
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
    }
    eprintln!(
        "uvm-image: cargo build --release -p {package}{}",
        if static_glibc { " (static)" } else { "" }
    );
    let mut child = cmd.spawn().context("cannot run cargo")?;
    let stdout = child.stdout.take().context("no cargo output")?;
    let mut executable = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let is_ours = msg["reason"] == "compiler-artifact" && msg["target"]["name"] == package;
        if let (true, Some(exe)) = (is_ours, msg["executable"].as_str()) {
            executable = Some(PathBuf::from(exe));
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("cargo build of {package} failed ({status})");
    }
    executable.with_context(|| format!("cargo built no executable for {package}"))
}
