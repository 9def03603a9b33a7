//! `qvm-convert-pdf`: turn untrusted PDFs into trusted ones, built only from pixels that a uvm
//! rendered. A drop-in for Qubes' command of the same name.

#![forbid(unsafe_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use converter_core::limits::StreamLimits;
use converter_core::rebuild::pdf::Compression;
use converter_core::rebuild::pdf::PdfOptions;
use converter_core::report::Report;
use qrexec_services::batch::{self, finish_report, has_extension, EXIT_USAGE};
use qrexec_services::cli::{home_folder, is_image, BatchArgs, TransportArgs};
use qrexec_services::convert::{
    convert_image_to_pdf, convert_pdf, ImageJob, PdfJob, Progress, MAX_PASSWORD_BYTES,
};
use qrexec_services::files::{trusted_name, Disposition};

const AFTER_HELP: &str = "\
Each FILE.pdf becomes FILE.trusted.pdf beside it; the original moves to the archive folder
(or is removed with --in-place) only once the output is complete. A folder stands for the
PDF files in it (not recursive). An image file named here (PNG, JPEG, ...) is decoded by the
image service and becomes a one-page PDF.

Exit status: 0 every file converted, 1 some file failed, 2 usage error.";

/// Converts untrusted PDFs into trusted ones, rebuilt from rendered pixels.
#[derive(Debug, Parser)]
#[command(name = "qvm-convert-pdf", version, after_help = AFTER_HELP)]
struct Cli {
    /// PDF files, folders of PDF files, or images to turn into one-page PDFs
    #[arg(value_name = "FILES")]
    files: Vec<PathBuf>,

    /// Rendering resolution in pixels per inch
    #[arg(short, long, value_name = "RESOLUTION", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(75..=4800))]
    resolution: u32,

    /// Folder that receives the originals [default: ~/QubesUntrustedPDFs]
    #[arg(short, long, value_name = "PATH")]
    archive: Option<PathBuf>,

    /// Remove the originals instead of archiving them
    #[arg(short, long)]
    in_place: bool,

    /// Accepted for compatibility with Qubes' converter, which uses it to size its page queue;
    /// pages here always stream one at a time
    #[arg(short, long, value_name = "SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,

    /// Ask for the documents' password on the terminal
    #[arg(short, long, conflicts_with = "password_fd")]
    password: bool,

    /// Read the documents' password from this file descriptor (first line)
    #[arg(long, value_name = "FD")]
    password_fd: Option<u32>,

    /// Page compression: lossless, or jpeg or jpeg:QUALITY (1 to 100) for smaller lossy output
    #[arg(long, value_name = "MODE", default_value = "lossless", value_parser = parse_compression)]
    compress: Compression,

    /// Most pages a document may have
    #[arg(long, value_name = "N", default_value_t = StreamLimits::PDF.max_pages)]
    max_pages: u32,

    /// Widest and tallest page accepted, in pixels
    #[arg(long, value_name = "PX", default_value_t = StreamLimits::PDF.max_width)]
    max_page_pixels: u32,

    /// Check that FILE holds nothing but what this converter writes (page images), then exit:
    /// 0 clean, 1 not
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    check: Option<PathBuf>,

    #[command(flatten)]
    transport: TransportArgs,

    #[command(flatten)]
    batch_args: BatchArgs,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match s.split_once(':') {
        None if s == "lossless" => Ok(Compression::Lossless),
        None if s == "jpeg" => Ok(Compression::Jpeg {
            quality: Compression::DEFAULT_JPEG_QUALITY,
        }),
        Some(("jpeg", q)) => match q.parse::<u8>() {
            Ok(quality @ 1..=100) => Ok(Compression::Jpeg { quality }),
            _ => Err(format!("JPEG quality must be 1 to 100, not {q:?}")),
        },
        _ => Err(format!(
            "expected lossless, jpeg or jpeg:QUALITY, not {s:?}"
        )),
    }
}

fn read_password(cli: &Cli) -> anyhow::Result<Option<String>> {
    if cli.password {
        let pw = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        return Ok(Some(pw));
    }
    let Some(fd) = cli.password_fd else {
        return Ok(None);
    };
    // /dev/fd/N opens the caller's descriptor without any unsafe conversion of a raw number.
    let file = std::fs::File::open(format!("/dev/fd/{fd}"))
        .with_context(|| format!("cannot open file descriptor {fd}"))?;
    let mut line = String::new();
    std::io::BufReader::new(file)
        .take_line(&mut line)
        .with_context(|| format!("cannot read the password from descriptor {fd}"))?;
    Ok(Some(line))
}

/// `--check FILE`: runs the output checker.
fn check(path: &Path) -> anyhow::Result<i32> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match converter_core::check::check_pdf(&bytes) {
        Ok(report) => {
            println!(
                "{}: clean, {} of images only",
                path.display(),
                batch::pages_phrase(report.pages.len() as u64)
            );
            Ok(batch::EXIT_OK)
        }
        Err(e) => {
            println!("{}: not clean: {e}", path.display());
            Ok(batch::EXIT_FAILED)
        }
    }
}

/// Reads one line, at most the password cap, without its newline.
trait TakeLine {
    fn take_line(self, line: &mut String) -> std::io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(self, line: &mut String) -> std::io::Result<()> {
        self.take(MAX_PASSWORD_BYTES as u64 + 1).read_line(line)?;
        if line.ends_with('\n') {
            line.pop();
        }
        Ok(())
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("qvm-convert-pdf: {e:#}");
            std::process::exit(EXIT_USAGE);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Some(path) = &cli.check {
        return check(path);
    }
    let inputs = batch::expand_inputs(&cli.files, &|p: &Path| has_extension(p, &["pdf"]))
        .map_err(anyhow::Error::msg)?;
    if inputs.is_empty() {
        eprintln!("No files to sanitize.");
        return Ok(batch::EXIT_OK);
    }
    let disposition = match (&cli.archive, cli.in_place) {
        (Some(a), _) => Disposition::Archive(a.clone()),
        (None, true) => Disposition::Remove,
        (None, false) => Disposition::Archive(
            home_folder("QubesUntrustedPDFs")
                .context("HOME is not set: name the archive folder with --archive")?,
        ),
    };
    if cli.in_place && cli.archive.is_some() {
        bail!("--in-place and --archive exclude each other");
    }
    let password = read_password(&cli)?;
    let transport = cli.transport.config();
    let limits = StreamLimits {
        max_pages: cli.max_pages,
        max_width: cli.max_page_pixels,
        max_height: cli.max_page_pixels,
        ..StreamLimits::PDF
    };
    let job = PdfJob {
        resolution: cli.resolution,
        compression: cli.compress,
        password,
        limits,
    };
    let options = cli.batch_args.options();

    let image_job = ImageJob {
        hint: None,
        limits: StreamLimits::IMAGE,
    };
    let pdf_options = PdfOptions {
        dpi: job.resolution,
        compression: job.compression,
    };

    let convert = |input: &Path, progress: &mut dyn Progress| -> Report {
        let started = Instant::now();
        let mut report = Report::new(
            input.display().to_string(),
            "pdf",
            transport.kind.to_string(),
        );
        report.dpi = Some(job.resolution);
        let output = trusted_name(input, "pdf");
        // An image named on the command line becomes a one-page PDF, decoded by the image
        // service: the PDF renderer never sees it.
        let result = if is_image(input) {
            report.service = "image";
            convert_image_to_pdf(input, &output, pdf_options, &image_job, &transport)
        } else {
            convert_pdf(input, &output, &job, &transport, progress)
        };
        match result {
            Ok(outcome) => finish_report(&mut report, input, &output, outcome, &disposition),
            Err(e) => report.error = Some(e.to_string()),
        }
        report.timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
        report
    };
    Ok(batch::run(&inputs, &options, convert))
}
