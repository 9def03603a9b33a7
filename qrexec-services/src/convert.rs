//! One document through one uvm: send the bytes, read the pixel stream, rebuild, commit.
//!
//! Three threads per document, so that the uvm never waits for the trusted side:
//!
//! ```text
//!  sender: file bytes -> uvm stdin          (hashes the input as it goes)
//!  reader: uvm stdout -> strict reader -> one page at a time over a rendezvous channel
//!  this thread: page -> encode -> PDF writer -> hidden temporary file -> rename
//! ```
//!
//! The channel has no buffer, so at most two pages are in memory at once: the one being encoded
//! and the one being read. Caller memory does not grow with the page count.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use converter_core::limits::StreamLimits;
use converter_core::rebuild::pdf::{encode_page, Compression, EncodedPage, PdfOptions, PdfWriter};
use converter_core::rebuild::png::{on_white, write_image, ImageFormat};
use converter_core::rebuild::RebuildError;
use converter_core::report::{HashingWriter, ReportFigures};
use converter_core::stream::{
    read_rgba_image, PageHeader, RgbStreamReader, RgbaImage, StreamError, StreamErrorKind,
};

use crate::files::PendingOutput;
use crate::transport::{self, Call, Service, TransportConfig, TransportError};

/// Longest password accepted; the service's own cap on its password line is the same.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why one document was not converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The input could not be read.
    #[error("cannot read the input: {0}")]
    Input(io::Error),
    /// The password cannot travel on one line.
    #[error("the password holds a newline or is longer than {MAX_PASSWORD_BYTES} bytes")]
    BadPassword,
    /// The uvm could not be reached, failed, or missed a deadline.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The pixel stream broke a rule.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The rebuild failed.
    #[error("cannot rebuild the output: {0}")]
    Rebuild(#[from] RebuildError),
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
    /// The thread reading the pixel stream died; the output is not trusted to be complete.
    #[error("the pixel-stream reader stopped unexpectedly")]
    ReaderPanicked,
    /// Fewer pages reached the output than the stream declared.
    #[error("{written} of {declared} pages reached the output")]
    PagesMissing {
        /// Pages the stream declared.
        declared: u32,
        /// Pages written.
        written: u32,
    },
}

/// What to ask of the PDF service.
#[derive(Debug, Clone)]
pub struct PdfJob {
    /// Rendering resolution, pixels per inch.
    pub resolution: u32,
    /// How pages are compressed in the output.
    pub compression: Compression,
    /// The document's password, if it has one.
    pub password: Option<String>,
    /// Limits on the pixel stream.
    pub limits: StreamLimits,
}

/// Milliseconds, as reports give times.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Progress of one document, for bars and plain lines.
pub trait Progress {
    /// The page count is known.
    fn started(&mut self, pages: u32);
    /// `done` pages of `pages` are in the output.
    fn page_done(&mut self, done: u32, pages: u32);
}

/// A progress sink that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn started(&mut self, _: u32) {}
    fn page_done(&mut self, _: u32, _: u32) {}
}

/// The input's hash and size, as sent.
struct Sent {
    sha256: String,
    bytes: u64,
}

/// Starts a thread that writes `preamble` and then the file to the uvm's stdin.
fn spawn_sender(call: &mut Call, input: File, preamble: Vec<u8>) -> JoinHandle<io::Result<Sent>> {
    let stdin = call.take_stdin();
    thread::spawn(move || {
        let mut stdin = stdin.ok_or_else(|| io::Error::other("uvm stdin is not a pipe"))?;
        stdin.write_all(&preamble)?;
        let mut hashing = HashingWriter::new(stdin);
        let mut input = input;
        io::copy(&mut input, &mut hashing)?;
        let (stdin, sha256, bytes) = hashing.finish();
        // Dropping stdin is the end of the document.
        drop(stdin);
        Ok(Sent { sha256, bytes })
    })
}

/// Collects the sender's result. A uvm may stop reading once it has what it needs (or refuse
/// the document early), so a broken pipe is not an error by itself: the pixel stream and the
/// exit status decide. The hash is then computed from the file.
fn join_sender(handle: JoinHandle<io::Result<Sent>>, input: &Path) -> Result<Sent, ConvertError> {
    match handle.join() {
        Ok(Ok(sent)) => Ok(sent),
        Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => hash_file(input),
        Ok(Err(e)) => Err(ConvertError::Input(e)),
        Err(_) => Err(ConvertError::Input(io::Error::other(
            "sender thread panicked",
        ))),
    }
}

fn hash_file(path: &Path) -> Result<Sent, ConvertError> {
    let mut f = File::open(path).map_err(ConvertError::Input)?;
    let mut h = HashingWriter::new(io::sink());
    io::copy(&mut f, &mut h).map_err(ConvertError::Input)?;
    let (_, sha256, bytes) = h.finish();
    Ok(Sent { sha256, bytes })
}

enum Msg {
    Pages(u32, Duration),
    Page(PageHeader, Vec<u8>),
}

/// Reads the stream and hands pages over one at a time; returns the bytes read.
///
/// Page buffers come back from the encoders on `recycle` and are filled again: a fresh
/// buffer would cost the kernel a page fault and a zeroed page for every 4 KiB of pixels
/// (6 MB per page at 150 ppi). There are never more buffers than pages in flight plus the one
/// being read.
fn spawn_reader<R: Read + Send + 'static>(
    stdout: R,
    limits: StreamLimits,
    started: Instant,
    tx: SyncSender<Msg>,
    recycle: Receiver<Vec<u8>>,
) -> JoinHandle<Result<u64, StreamError>> {
    thread::spawn(move || {
        let mut reader = RgbStreamReader::new(stdout, limits);
        let pages = reader.read_page_count()?;
        if tx.send(Msg::Pages(pages, started.elapsed())).is_err() {
            return Ok(reader.bytes_read());
        }
        loop {
            let mut buf = recycle.try_recv().unwrap_or_default();
            match reader.next_page(&mut buf)? {
                Some(header) => {
                    if tx.send(Msg::Page(header, buf)).is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        Ok(reader.bytes_read())
    })
}

/// How long to wait for a uvm's exit status after its stream ended early.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Explains a stream error by its cause where the transport knows better: a deadline, or a uvm
/// that failed (and so ended its stream) with a message of its own.
fn stream_failure(call: &mut Call, e: StreamError) -> ConvertError {
    if e.is_timeout() {
        return ConvertError::Transport(call.timeout_error());
    }
    if matches!(e.kind(), StreamErrorKind::Truncated(_)) {
        if let Some(failed) = call.failure_after_eof(EXIT_GRACE) {
            return ConvertError::Transport(failed);
        }
    }
    ConvertError::Stream(e)
}

/// Converts the PDF at `input` into a trusted PDF at `output`.
///
/// On any error nothing is left at `output` (an earlier file there is untouched) and the input
/// is not modified.
pub fn convert_pdf(
    input: &Path,
    output: &Path,
    job: &PdfJob,
    transport: &TransportConfig,
    progress: &mut dyn Progress,
) -> Result<ReportFigures, ConvertError> {
    let mut preamble = Vec::new();
    if let Some(pw) = &job.password {
        if pw.len() > MAX_PASSWORD_BYTES || pw.contains('\n') {
            return Err(ConvertError::BadPassword);
        }
        preamble = format!("--password={pw}\n").into_bytes();
    }
    let file = File::open(input).map_err(ConvertError::Input)?;
    let pending = PendingOutput::create(output).map_err(ConvertError::Output)?;
    let started = Instant::now();

    let mut call = transport::start(
        transport,
        Service::Pdf {
            resolution: job.resolution,
        },
    )?;
    let sender = spawn_sender(&mut call, file, preamble);
    let stdout = call
        .take_stdout()
        .ok_or_else(|| ConvertError::Output(io::Error::other("uvm stdout is not a pipe")))?;
    let (tx, rx) = mpsc::sync_channel(0);
    let (recycle_tx, recycle_rx) = mpsc::channel();
    let reader = spawn_reader(stdout, job.limits, started, tx, recycle_rx);

    let options = PdfOptions {
        dpi: job.resolution,
        compression: job.compression,
    };
    let rebuilt = rebuild_pages(
        &call, rx, recycle_tx, &pending, options, transport, progress,
    );
    if rebuilt.is_err() {
        // Unblocks the reader and the sender at once.
        call.kill();
    }
    let read = match reader.join() {
        Ok(read) => read.map_err(|e| stream_failure(&mut call, e)),
        Err(_) => Err(ConvertError::ReaderPanicked),
    };

    // The first failure in pipeline order is the one to report: the stream's own error explains
    // a rebuild that saw the channel close early. Returning drops `call`, which kills the uvm
    // and so also ends the sender, whatever the uvm was doing with its stdin.
    let read_bytes = read?;
    let (outcome_pages, first_byte, rebuild, writer) = rebuilt?;
    // A valid stream followed by a failure status is still a failure.
    call.finish()?;
    let sent = join_sender(sender, input)?;

    let (output_sha256, output_bytes) = finish_writer(writer)?;
    pending.commit().map_err(ConvertError::Output)?;

    Ok(ReportFigures {
        pages: outcome_pages,
        input_sha256: sent.sha256,
        input_bytes: sent.bytes,
        output_sha256,
        output_bytes,
        stream_bytes: read_bytes,
        frames_dropped: None,
        first_byte_ms: first_byte.map(ms),
        rebuild_ms: ms(rebuild),
    })
}

type OutWriter<'a> = HashingWriter<BufWriter<&'a File>>;

/// Writes the PDF's tail, flushes it, and returns the output's sha256 and size.
fn finish_writer(writer: PdfWriter<OutWriter<'_>>) -> Result<(String, u64), ConvertError> {
    let (out, _) = writer.finish()?;
    let (buffered, sha, bytes) = out.finish();
    buffered
        .into_inner()
        .map_err(|e| ConvertError::Output(e.into_error()))?;
    Ok((sha, bytes))
}

type Rebuilt<'a> = (u32, Option<Duration>, Duration, PdfWriter<OutWriter<'a>>);

/// The reader ends the channel only after the stream's end was checked, so this cannot fail
/// unless the reader itself is broken; it is checked anyway because a short output must never
/// be committed.
fn check_complete(declared: u32, written: u32) -> Result<(), ConvertError> {
    if declared == written {
        Ok(())
    } else {
        Err(ConvertError::PagesMissing { declared, written })
    }
}

/// Most pages encoded at once. Encoding is the caller's whole share of the work, pages are
/// independent, and the uvm renders on a core of its own, so every core left helps; beyond four
/// the renderer is the bottleneck anyway.
const MAX_ENCODERS: usize = 4;

/// Pages taken from the stream but not yet written, per encoder. Two keeps every encoder busy
/// while the writer waits for a slow page, and bounds memory to a few pages whatever the page
/// count.
const PAGES_IN_FLIGHT_PER_ENCODER: usize = 2;

/// How many encoder threads to run.
fn encoder_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_ENCODERS)
}

/// A counting semaphore that bounds the pages in flight, and can be cancelled.
struct Slots {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Slots {
    fn new(free: usize) -> Self {
        Slots {
            state: Mutex::new((free, false)),
            changed: Condvar::new(),
        }
    }

    /// Waits for a free slot; `false` once cancelled.
    fn acquire(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        loop {
            if state.1 {
                return false;
            }
            if state.0 > 0 {
                state.0 -= 1;
                return true;
            }
            state = match self.changed.wait(state) {
                Ok(s) => s,
                Err(_) => return false,
            };
        }
    }

    fn release(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.0 += 1;
        }
        self.changed.notify_one();
    }

    fn cancel(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.1 = true;
        }
        self.changed.notify_all();
    }
}

/// Encodes pages on a few threads and writes them in order.
///
/// Encoders take pages from the reader in stream order (the index is assigned under the same
/// lock as the take), so the writer can put them back in order; `Slots` keeps the number of
/// pages taken but not yet written small.
fn rebuild_pages<'a>(
    call: &Call,
    rx: Receiver<Msg>,
    recycle: Sender<Vec<u8>>,
    pending: &'a PendingOutput,
    options: PdfOptions,
    transport: &TransportConfig,
    progress: &mut dyn Progress,
) -> Result<Rebuilt<'a>, ConvertError> {
    let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, pending.file()));
    let mut writer = PdfWriter::new(out, options)?;

    let (pages, first_byte) = match rx.recv() {
        Ok(Msg::Pages(n, at)) => (n, at),
        // The reader sends the count first; without it the reader failed, and its error (read
        // before this result) says why. No error here: that would kill the uvm before its own
        // exit status could explain the failure.
        Ok(Msg::Page(..)) => {
            return Err(ConvertError::PagesMissing {
                declared: 0,
                written: 0,
            })
        }
        Err(_) => return Ok((0, None, Duration::ZERO, writer)),
    };
    call.deadline()
        .set_limit(transport.deadlines.call_deadline(pages));
    progress.started(pages);

    let encoders = encoder_count();
    let slots = Slots::new(encoders * PAGES_IN_FLIGHT_PER_ENCODER);
    let source = Mutex::new((rx, 0u32));
    let (done_tx, done_rx) = mpsc::channel::<(u32, Result<EncodedPage, RebuildError>, Duration)>();
    let mut done = 0u32;
    let mut rebuild = Duration::ZERO;

    let written = thread::scope(|scope| {
        for _ in 0..encoders {
            let done_tx = done_tx.clone();
            let recycle = recycle.clone();
            let (slots, source) = (&slots, &source);
            scope.spawn(move || {
                while slots.acquire() {
                    let (index, header, rgb) = {
                        let Ok(mut guard) = source.lock() else { break };
                        let (rx, next) = &mut *guard;
                        match rx.recv() {
                            Ok(Msg::Page(header, rgb)) => {
                                let index = *next;
                                *next += 1;
                                (index, header, rgb)
                            }
                            _ => break,
                        }
                    };
                    let t = Instant::now();
                    let page = encode_page(header.width, header.height, &rgb, &options);
                    // The reader may be gone already; then the buffer is simply freed.
                    let _ = recycle.send(rgb);
                    if done_tx.send((index, page, t.elapsed())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);

        // The writer: pages back in stream order, each slot freed once its page is written.
        let mut waiting = BTreeMap::new();
        let result = (|| {
            for (index, page, took) in &done_rx {
                waiting.insert(index, (page, took));
                while let Some((page, took)) = waiting.remove(&done) {
                    let t = Instant::now();
                    writer.write_page(page?)?;
                    rebuild += took + t.elapsed();
                    done += 1;
                    slots.release();
                    progress.page_done(done, pages);
                }
            }
            Ok::<(), ConvertError>(())
        })();
        if result.is_err() {
            slots.cancel();
        }
        result
    });
    written?;

    check_complete(pages, done)?;
    Ok((done, Some(first_byte), rebuild, writer))
}

/// What to ask of the image service, and what to build from its pixels.
#[derive(Debug, Clone)]
pub struct ImageJob {
    /// A format hint for the service (`FORMAT:-`), as Qubes' `png:file` syntax gives it.
    pub hint: Option<String>,
    /// Limits on the RGBA stream.
    pub limits: StreamLimits,
}

/// Asks the image service for the pixels of the image at `input`.
fn fetch_image(
    input: &Path,
    job: &ImageJob,
    transport: &TransportConfig,
) -> Result<(RgbaImage, ReportFigures), ConvertError> {
    let file = File::open(input).map_err(ConvertError::Input)?;
    let started = Instant::now();
    let mut call = transport::start(transport, Service::Image)?;
    let first_line = match &job.hint {
        Some(format) => format!("{format}:-\n").into_bytes(),
        None => b"-\n".to_vec(),
    };
    let sender = spawn_sender(&mut call, file, first_line);
    let stdout = call
        .take_stdout()
        .ok_or_else(|| ConvertError::Output(io::Error::other("uvm stdout is not a pipe")))?;
    let image = read_rgba_image(stdout, &job.limits).map_err(|e| stream_failure(&mut call, e))?;
    let first_byte = started.elapsed();
    let stderr = call.finish()?;
    let sent = join_sender(sender, input)?;

    let outcome = ReportFigures {
        pages: 1,
        input_sha256: sent.sha256,
        input_bytes: sent.bytes,
        stream_bytes: image.pixels.len() as u64,
        first_byte_ms: Some(ms(first_byte)),
        frames_dropped: dropped_frames(&stderr),
        ..ReportFigures::default()
    };
    Ok((image, outcome))
}

/// Reads the image service's note `image-uvm: dropped N frames` (or `at least N`) from its
/// stderr. Untrusted text: only that exact shape is believed.
fn dropped_frames(stderr: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(stderr).ok()?;
    text.lines().find_map(|line| {
        let n = line
            .strip_prefix("image-uvm: dropped ")?
            .strip_suffix(" frames")?;
        let n = n.strip_prefix("at least ").unwrap_or(n);
        if n.is_empty() || n.len() > 10 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()
    })
}

/// Writes `output` through a hidden temporary file, hashing it; commits only on success.
fn write_output(
    output: &Path,
    write: impl FnOnce(&mut OutWriter<'_>) -> Result<(), ConvertError>,
) -> Result<(String, u64), ConvertError> {
    let pending = PendingOutput::create(output).map_err(ConvertError::Output)?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, pending.file()));
    write(&mut out)?;
    let (buffered, sha, bytes) = out.finish();
    buffered
        .into_inner()
        .map_err(|e| ConvertError::Output(e.into_error()))?;
    pending.commit().map_err(ConvertError::Output)?;
    Ok((sha, bytes))
}

/// Converts the image at `input` into a clean image file at `output`.
pub fn convert_image(
    input: &Path,
    output: &Path,
    format: ImageFormat,
    job: &ImageJob,
    transport: &TransportConfig,
) -> Result<ReportFigures, ConvertError> {
    let (image, mut outcome) = fetch_image(input, job, transport)?;
    let t = Instant::now();
    let (sha, bytes) = write_output(output, |out| {
        write_image(out, format, image.width, image.height, &image.pixels)?;
        Ok(())
    })?;
    outcome.rebuild_ms = ms(t.elapsed());
    outcome.output_sha256 = sha;
    outcome.output_bytes = bytes;
    Ok(outcome)
}

/// Converts the image at `input` into a one-page trusted PDF at `output`: the image service
/// decodes it, transparency is composited on white, and the page is `pixels x 72 / dpi` points.
pub fn convert_image_to_pdf(
    input: &Path,
    output: &Path,
    options: PdfOptions,
    job: &ImageJob,
    transport: &TransportConfig,
) -> Result<ReportFigures, ConvertError> {
    let (image, mut outcome) = fetch_image(input, job, transport)?;
    let t = Instant::now();
    let rgb = on_white(&image.pixels);
    drop(image.pixels);
    let (sha, bytes) = write_output(output, |out| {
        let mut writer = PdfWriter::new(out, options)?;
        writer.write_page(encode_page(image.width, image.height, &rgb, &options)?)?;
        writer.finish()?;
        Ok(())
    })?;
    outcome.rebuild_ms = ms(t.elapsed());
    outcome.output_sha256 = sha;
    outcome.output_bytes = bytes;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_frames_are_read_strictly() {
        assert_eq!(dropped_frames(b"image-uvm: dropped 12 frames\n"), Some(12));
        assert_eq!(
            dropped_frames(b"image-uvm: dropped at least 10000 frames\n"),
            Some(10_000)
        );
        assert_eq!(dropped_frames(b"image-uvm: dropped -1 frames\n"), None);
        assert_eq!(
            dropped_frames(b"image-uvm: dropped 99999999999 frames\n"),
            None
        );
        assert_eq!(dropped_frames(b"noise\n"), None);
    }
}
