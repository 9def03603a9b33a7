//! `qvm-convert-img`: turn untrusted images into clean ones, built only from pixels that a uvm
//! decoded. A drop-in for Qubes' command of the same name, plus a batch form.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use converter_core::limits::StreamLimits;
use converter_core::rebuild::png::ImageFormat;
use converter_core::report::Report;
use qrexec_services::batch::{self, finish_report, EXIT_USAGE};
use qrexec_services::cli::{home_folder, is_image, BatchArgs, TransportArgs};
use qrexec_services::convert::{convert_image, ImageJob, Progress};
use qrexec_services::files::{trusted_name, Disposition};

const AFTER_HELP: &str = "\
Two forms:
  qvm-convert-img SRC DST        as Qubes' command: DST's extension picks PNG, JPEG or WebP;
                                 SRC and DST may carry a format prefix (png:out.img); SRC is
                                 left in place.
  qvm-convert-img [OPTIONS] FILES...
                                 batch: each FILE becomes FILE.trusted.png (see --format,
                                 --output-dir); originals move to the archive folder, or are
                                 removed with --in-place, once their output is complete. A folder
                                 stands for the images in it (not recursive).
Two arguments are read as SRC DST unless --output-dir, --archive, --in-place or --format is
given.

Exit status: 0 every file converted, 1 some file failed, 2 usage error.";

/// Output formats a user can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatChoice {
    /// Lossless PNG (the default)
    Png,
    /// JPEG at quality 85; transparency is composited on white
    Jpeg,
    /// Lossless WebP
    Webp,
}

impl FormatChoice {
    fn format(self) -> ImageFormat {
        match self {
            FormatChoice::Png => ImageFormat::Png,
            FormatChoice::Jpeg => ImageFormat::Jpeg {
                quality: ImageFormat::DEFAULT_JPEG_QUALITY,
            },
            FormatChoice::Webp => ImageFormat::WebpLossless,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            FormatChoice::Png => "png",
            FormatChoice::Jpeg => "jpg",
            FormatChoice::Webp => "webp",
        }
    }
}

/// Converts untrusted images into clean ones, rebuilt from decoded pixels.
#[derive(Debug, Parser)]
#[command(name = "qvm-convert-img", version, after_help = AFTER_HELP)]
struct Cli {
    /// SRC DST, or the images (and folders of images) of a batch
    #[arg(value_name = "FILES", required_unless_present = "check")]
    files: Vec<PathBuf>,

    /// Check that the PNG FILE holds nothing but pixels (IHDR, IDAT, IEND), then exit:
    /// 0 clean, 1 not
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    check: Option<PathBuf>,

    /// Batch: output format
    #[arg(long, value_enum)]
    format: Option<FormatChoice>,

    /// Batch: write outputs into this folder instead of beside each input
    #[arg(short, long, value_name = "DIR")]
    output_dir: Option<PathBuf>,

    /// Batch: folder that receives the originals [default: ~/QubesUntrustedImages]
    #[arg(short, long, value_name = "PATH")]
    archive: Option<PathBuf>,

    /// Batch: remove the originals instead of archiving them
    #[arg(short, long, conflicts_with = "archive")]
    in_place: bool,

    /// Accepted for compatibility with Qubes' command (it printed percentages for zenity)
    #[arg(long, hide = true)]
    progress: bool,

    /// Widest image accepted, in pixels
    #[arg(long, value_name = "PX", default_value_t = StreamLimits::IMAGE.max_width)]
    max_width: u32,

    /// Tallest image accepted, in pixels
    #[arg(long, value_name = "PX", default_value_t = StreamLimits::IMAGE.max_height)]
    max_height: u32,

    #[command(flatten)]
    transport: TransportArgs,

    #[command(flatten)]
    batch_args: BatchArgs,
}

impl Cli {
    fn is_batch(&self) -> bool {
        self.files.len() != 2
            || self.output_dir.is_some()
            || self.archive.is_some()
            || self.in_place
            || self.format.is_some()
    }
}

/// Formats a `FORMAT:` prefix may name, as in Qubes' `png:out.gif`.
const PREFIX_FORMATS: &[&str] = &[
    "png", "jpg", "jpeg", "webp", "gif", "bmp", "tiff", "tif", "ico", "svg", "tga",
];

/// Splits an ImageMagick-style `FORMAT:path` into its parts; other paths have no format.
fn split_prefix(arg: &Path) -> (Option<String>, PathBuf) {
    let text = arg.to_string_lossy();
    if let Some((prefix, rest)) = text.split_once(':') {
        if !rest.is_empty()
            && PREFIX_FORMATS
                .iter()
                .any(|f| f.eq_ignore_ascii_case(prefix))
        {
            return (Some(prefix.to_ascii_lowercase()), PathBuf::from(rest));
        }
    }
    (None, arg.to_path_buf())
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("qvm-convert-img: {e:#}");
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// One conversion to do: input, hint for the service, output, output format.
struct Task {
    input: PathBuf,
    hint: Option<String>,
    output: PathBuf,
    format: ImageFormat,
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Some(path) = &cli.check {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(match converter_core::check::check_png(&bytes) {
            Ok((w, h)) => {
                println!("{}: clean, {w}x{h} pixels only", path.display());
                batch::EXIT_OK
            }
            Err(e) => {
                println!("{}: not clean: {e}", path.display());
                batch::EXIT_FAILED
            }
        });
    }
    let limits = StreamLimits {
        max_width: cli.max_width,
        max_height: cli.max_height,
        ..StreamLimits::IMAGE
    };
    let (tasks, disposition) = if cli.is_batch() {
        batch_tasks(&cli)?
    } else {
        pair_task(&cli)?
    };
    if tasks.is_empty() {
        eprintln!("No files to convert.");
        return Ok(batch::EXIT_OK);
    }
    let transport = cli.transport.config();
    let options = cli.batch_args.options();
    let inputs: Vec<PathBuf> = tasks.iter().map(|t| t.input.clone()).collect();

    let convert = |input: &Path, _progress: &mut dyn Progress| -> Report {
        let started = Instant::now();
        let mut report = Report::new(
            input.display().to_string(),
            "image",
            transport.kind.to_string(),
        );
        // `inputs` was built from `tasks`, so the lookup always finds it.
        let Some(task) = tasks.iter().find(|t| t.input == input) else {
            report.error = Some("internal error: unknown input".into());
            return report;
        };
        let job = ImageJob {
            hint: task.hint.clone(),
            limits,
        };
        match convert_image(&task.input, &task.output, task.format, &job, &transport) {
            Ok(outcome) => finish_report(&mut report, input, &task.output, outcome, &disposition),
            Err(e) => report.error = Some(e.to_string()),
        }
        report.timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
        report
    };
    Ok(batch::run(&inputs, &options, convert))
}

/// The Qubes form: `SRC DST`, output format from DST's prefix or extension, SRC kept.
fn pair_task(cli: &Cli) -> anyhow::Result<(Vec<Task>, Disposition)> {
    let (hint, input) = split_prefix(&cli.files[0]);
    let (out_prefix, output) = split_prefix(&cli.files[1]);
    if !input.is_file() {
        bail!("{}: no such file", input.display());
    }
    let ext = out_prefix
        .or_else(|| output.extension().map(|e| e.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let format = ImageFormat::from_extension(&ext).with_context(|| {
        format!(
            "cannot write {:?}: the output must be .png, .jpg, .jpeg or .webp",
            output.display()
        )
    })?;
    if same_file(&input, &output) {
        bail!("SRC and DST are the same file");
    }
    Ok((
        vec![Task {
            input,
            hint,
            output,
            format,
        }],
        Disposition::Keep,
    ))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The batch form: every image named or found in a named folder.
fn batch_tasks(cli: &Cli) -> anyhow::Result<(Vec<Task>, Disposition)> {
    let inputs = batch::expand_inputs(&cli.files, &is_image).map_err(anyhow::Error::msg)?;
    let choice = cli.format.unwrap_or(FormatChoice::Png);
    if let Some(dir) = &cli.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tasks = inputs
        .into_iter()
        .map(|input| {
            let beside = trusted_name(&input, choice.extension());
            let output = match (&cli.output_dir, beside.file_name()) {
                (Some(dir), Some(name)) => dir.join(name),
                _ => beside,
            };
            Task {
                input,
                hint: None,
                output,
                format: choice.format(),
            }
        })
        .collect();
    let disposition = match (&cli.archive, cli.in_place) {
        (Some(a), _) => Disposition::Archive(a.clone()),
        (None, true) => Disposition::Remove,
        (None, false) => Disposition::Archive(
            home_folder("QubesUntrustedImages")
                .context("HOME is not set: name the archive folder with --archive")?,
        ),
    };
    Ok((tasks, disposition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_prefix_is_split_only_for_known_formats() {
        assert_eq!(
            split_prefix(Path::new("png:out.gif")),
            (Some("png".into()), "out.gif".into())
        );
        assert_eq!(
            split_prefix(Path::new("notes:2024.png")),
            (None, "notes:2024.png".into())
        );
        assert_eq!(
            split_prefix(Path::new("plain.jpg")),
            (None, "plain.jpg".into())
        );
    }
}
