//! The conversion report: what went in, what came out, and how long it took.
//!
//! One report per document, printed as one JSON line by `--json`. It carries hashes, sizes,
//! counts and timings, never document content, so it is safe to log.

use std::io::{self, Write};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The outcome of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The output file was written.
    Converted,
    /// Nothing was written; `error` says why.
    Failed,
}

/// Wall-clock timings of one conversion, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// From the start of the call until the first pixel-stream header arrived.
    pub first_byte_ms: Option<f64>,
    /// The whole conversion, from starting the uvm to renaming the output into place.
    pub total_ms: f64,
    /// Time spent encoding pages on the trusted side.
    pub rebuild_ms: f64,
}

/// One line of `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The input file as given on the command line.
    pub input: String,
    /// The output file, when one was written.
    pub output: Option<String>,
    /// Where the original went (the archive path), when it was moved.
    pub archived_to: Option<String>,
    /// Converted or failed.
    pub status: Status,
    /// The one-line error, when failed.
    pub error: Option<String>,
    /// Which service converted it: `pdf` or `image`.
    pub service: &'static str,
    /// The transport that reached the uvm: `local`, `qrexec` or `vm`.
    pub transport: String,
    /// sha256 of the input file, hex.
    pub input_sha256: Option<String>,
    /// sha256 of the output file, hex.
    pub output_sha256: Option<String>,
    /// Input size in bytes.
    pub input_bytes: Option<u64>,
    /// Output size in bytes.
    pub output_bytes: Option<u64>,
    /// Pages (1 for an image).
    pub pages: Option<u32>,
    /// Rendering resolution in pixels per inch (PDF only).
    pub dpi: Option<u32>,
    /// Pixel bytes received from the uvm.
    pub stream_bytes: Option<u64>,
    /// Frames of an animated image that were not converted (only the first frame is).
    pub frames_dropped: Option<u64>,
    /// Peak resident memory of the calling process so far, in KiB (with `--jobs` above 1 it
    /// covers every document of the process).
    pub caller_peak_rss_kb: Option<u64>,
    /// Timings.
    pub timings: Timings,
}

impl Report {
    /// Fills the fields of a successful conversion from its figures.
    pub fn converted(&mut self, output: String, figures: ReportFigures) {
        self.status = Status::Converted;
        self.output = Some(output);
        self.pages = Some(figures.pages);
        self.input_sha256 = Some(figures.input_sha256);
        self.input_bytes = Some(figures.input_bytes);
        self.output_sha256 = Some(figures.output_sha256);
        self.output_bytes = Some(figures.output_bytes);
        self.stream_bytes = Some(figures.stream_bytes);
        self.frames_dropped = figures.frames_dropped;
        self.timings.first_byte_ms = figures.first_byte_ms;
        self.timings.rebuild_ms = figures.rebuild_ms;
    }

    /// A report for `input` with nothing known yet.
    pub fn new(input: String, service: &'static str, transport: String) -> Self {
        Report {
            input,
            output: None,
            archived_to: None,
            status: Status::Failed,
            error: None,
            service,
            transport,
            input_sha256: None,
            output_sha256: None,
            input_bytes: None,
            output_bytes: None,
            pages: None,
            dpi: None,
            stream_bytes: None,
            frames_dropped: None,
            caller_peak_rss_kb: None,
            timings: Timings::default(),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        // Serialising plain strings and numbers cannot fail; keep a fallback all the same so a
        // report can never panic the caller.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"report: {e}\"}}"))
    }
}

/// The figures of one successful conversion, as [`Report::converted`] takes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFigures {
    /// Pages (1 for an image).
    pub pages: u32,
    /// sha256 of the input, hex.
    pub input_sha256: String,
    /// Input bytes.
    pub input_bytes: u64,
    /// sha256 of the output, hex.
    pub output_sha256: String,
    /// Output bytes.
    pub output_bytes: u64,
    /// Pixel-stream bytes received.
    pub stream_bytes: u64,
    /// Frames not converted.
    pub frames_dropped: Option<u64>,
    /// Time to the first pixel-stream header, ms.
    pub first_byte_ms: Option<f64>,
    /// Time spent encoding, ms.
    pub rebuild_ms: f64,
}

/// The sha256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A writer that hashes and counts what passes through it, so the output's sha256 and size are
/// known without reading the file back.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Returns the inner writer, the sha256 (hex) and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // `n <= buf.len()` by the contract of `Write`; `get` keeps a broken writer from
        // panicking us.
        self.hasher.update(buf.get(..n).unwrap_or(buf));
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input_is_the_known_value() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_matches_one_shot_hash() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, hash, n) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(hash, sha256_hex(b"hello world"));
    }

    #[test]
    fn report_serialises_status_in_lower_case() {
        let mut r = Report::new("a.pdf".into(), "pdf", "local".into());
        r.status = Status::Converted;
        let line = r.to_json_line();
        assert!(line.contains("\"status\":\"converted\""), "{line}");
        assert!(!line.contains('\n'));
    }
}
