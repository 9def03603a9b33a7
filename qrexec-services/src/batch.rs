//! Many documents in parallel: a bounded pool of workers, progress for people, JSON for scripts,
//! and one exit code for the whole run.
//!
//! Exit codes, shared by every command:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every document was converted |
//! | 1 | at least one document failed |
//! | 2 | usage error: bad option, missing file; nothing was converted |

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use converter_core::report::{Report, Status};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::convert::Progress;

/// Every document was converted.
pub const EXIT_OK: i32 = 0;
/// At least one document failed.
pub const EXIT_FAILED: i32 = 1;
/// Bad usage; nothing was done.
pub const EXIT_USAGE: i32 = 2;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// One bar per document on the terminal (stderr).
    Bars,
    /// One plain line per finished document on stderr.
    Lines,
}

impl ProgressMode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn detect() -> ProgressMode {
        if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Documents converted at once (each in its own uvm).
    pub jobs: usize,
    /// Print one JSON report per document on stdout.
    pub json: bool,
    /// How progress is shown on stderr.
    pub progress: ProgressMode,
}

/// The number of CPUs, the default for `--jobs`.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

struct BarProgress {
    bar: ProgressBar,
}

impl Progress for BarProgress {
    fn started(&mut self, pages: u32) {
        self.bar.set_length(u64::from(pages));
    }

    fn page_done(&mut self, done: u32, _pages: u32) {
        self.bar.set_position(u64::from(done));
    }
}

struct Silent;

impl Progress for Silent {
    fn started(&mut self, _: u32) {}
    fn page_done(&mut self, _: u32, _: u32) {}
}

/// Converts every input with `convert`, `options.jobs` at a time, and returns the exit code.
///
/// `convert` must not panic; a panic in one worker is reported as that document's failure.
pub fn run<F>(inputs: &[PathBuf], options: &BatchOptions, convert: F) -> i32
where
    F: Fn(&Path, &mut dyn Progress) -> Report + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let stdout = Mutex::new(std::io::stdout());
    let multi = match options.progress {
        ProgressMode::Bars => Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        ProgressMode::Lines => None,
    };
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} pages {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");

    std::thread::scope(|scope| {
        for _ in 0..options.jobs.clamp(1, inputs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(input) = inputs.get(i) else { break };
                let name = input.display().to_string();
                let report = match &multi {
                    Some(multi) => {
                        let bar = multi.add(ProgressBar::new(0));
                        bar.set_style(style.clone());
                        bar.set_prefix(name.clone());
                        bar.enable_steady_tick(Duration::from_millis(200));
                        let report = convert(input, &mut BarProgress { bar: bar.clone() });
                        bar.finish_with_message(match report.status {
                            Status::Converted => "done".to_string(),
                            Status::Failed => "failed".to_string(),
                        });
                        report
                    }
                    None => convert(input, &mut Silent),
                };
                let mut report = report;
                report.caller_peak_rss_kb = peak_rss_kb();
                if report.status == Status::Failed {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                print_outcome(&report, options, multi.as_ref(), &stdout);
            });
        }
    });

    let failed = failed.load(Ordering::Relaxed);
    let total = inputs.len();
    let line = format!("converted {} of {total} files", total - failed);
    match &multi {
        Some(m) => {
            let _ = m.println(line);
        }
        None => eprintln!("{line}"),
    }
    if failed == 0 {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

fn print_outcome(
    report: &Report,
    options: &BatchOptions,
    multi: Option<&MultiProgress>,
    stdout: &Mutex<std::io::Stdout>,
) {
    if options.json {
        if let Ok(mut out) = stdout.lock() {
            let _ = writeln!(out, "{}", report.to_json_line());
            let _ = out.flush();
        }
    }
    let line = match (&report.status, &report.output) {
        // A page count says something only for a document; an image is one picture.
        (Status::Converted, Some(out)) if report.service == "pdf" => {
            format!(
                "{}: converted to {} ({})",
                report.input,
                out,
                pages_phrase(report.pages.unwrap_or(0))
            )
        }
        (Status::Converted, Some(out)) => format!("{}: converted to {}", report.input, out),
        _ => format!(
            "{}: failed: {}",
            report.input,
            report.error.as_deref().unwrap_or("unknown error")
        ),
    };
    match multi {
        Some(m) => {
            let _ = m.println(line);
        }
        None => eprintln!("{line}"),
    }
}

/// Records a finished conversion in `report` and then disposes of the original. A failure to
/// move the original leaves it where it was and marks the document failed, though its output
/// exists.
pub fn finish_report(
    report: &mut Report,
    input: &Path,
    output: &Path,
    figures: converter_core::report::ReportFigures,
    disposition: &crate::files::Disposition,
) {
    report.converted(output.display().to_string(), figures);
    match crate::files::dispose_original(input, disposition) {
        Ok(to) => report.archived_to = to.map(|p| p.display().to_string()),
        Err(e) => {
            report.status = Status::Failed;
            report.error = Some(format!("converted, but cannot move the original: {e}"));
        }
    }
}

/// Peak resident memory of this process in KiB, from `/proc/self/status` (`VmHWM`).
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The inputs named on the command line: files as given, folders expanded to the files in them
/// (not recursively, no symbolic links) whose extension `matches`, sorted by name.
///
/// A path that does not exist is a usage error, as in Qubes' own commands.
pub fn expand_inputs(
    paths: &[PathBuf],
    matches: &dyn Fn(&Path) -> bool,
) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("{}: {}", path.display(), short_io(&e)))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {}", path.display(), short_io(&e)))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.path())
                .filter(|p| matches(p))
                .collect();
            found.sort();
            if found.is_empty() {
                eprintln!("warning: no matching files in {}", path.display());
            }
            out.extend(found);
        } else if meta.is_file() {
            out.push(path.clone());
        } else {
            return Err(format!("{}: not a regular file", path.display()));
        }
    }
    Ok(out)
}

fn short_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "not readable".into(),
        _ => e.to_string(),
    }
}

/// Whether `path` has one of `exts` as its extension, ignoring case.
pub fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
        .unwrap_or(false)
}

/// "1 page" or "N pages", for the lines a person reads.
pub fn pages_phrase(pages: impl Into<u64>) -> String {
    match pages.into() {
        1 => "1 page".to_owned(),
        n => format!("{n} pages"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_expand_to_matching_files_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.PDF", "a.pdf", "c.txt"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.pdf")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.pdf"), dir.path().join("link.pdf")).unwrap();
        let found =
            expand_inputs(&[dir.path().to_path_buf()], &|p| has_extension(p, &["pdf"])).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.pdf", "b.PDF"]);
    }

    #[test]
    fn missing_input_is_a_usage_error() {
        let err = expand_inputs(&[PathBuf::from("/nonexistent/x.pdf")], &|_| true).unwrap_err();
        assert!(err.contains("no such file"), "{err}");
    }

    #[test]
    fn one_page_is_singular() {
        assert_eq!(pages_phrase(1u32), "1 page");
        assert_eq!(pages_phrase(0u32), "0 pages");
        assert_eq!(pages_phrase(236u32), "236 pages");
    }
}
