//! The PDF renderer that runs inside the uvm: PDF bytes in, Qubes' RGB pixel stream out.
//!
//! [`serve`] is one whole `qubes.PdfConvert+RES` call: it reads the caller's request (an
//! optional `--password=` line, then the document, to EOF), opens it with PDFium, checks the
//! page count and every page's pixel size against what Qubes' callers accept, then renders
//! each page and writes it at once:
//!
//! | part | layout |
//! |---|---|
//! | header | `PAGES\n` |
//! | each page | `WIDTH HEIGHT\n`, then exactly `WIDTH x HEIGHT x 3` bytes of 8-bit RGB |
//!
//! PDFium is a shared library found at run time (see [`serve`] for the search order);
//! `scripts/setup-pdfium.sh` installs the pinned build.
//!
//! # Limitations
//! - Calls within one process are serialised: PDFium is bound once per process and is not
//!   thread-safe. Parallel conversions run in separate processes (separate uvms).
//! - Rendering time is not bounded here; the caller's deadline bounds it by ending the uvm.
//! - A page wider or taller than 10000 px at the asked resolution is refused, not tiled or
//!   scaled down.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod input;
mod render;
mod resolution;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use converter_core::stream::RgbStreamWriter;

pub use error::{LoadFailure, ServeError};
pub use input::{MAX_DOCUMENT_BYTES, MAX_PASSWORD_BYTES};
pub use render::LIBRARY_ENV;
pub use resolution::{parse_resolution, DEFAULT_RESOLUTION, MAX_RESOLUTION, MIN_RESOLUTION};

/// Settings for [`serve`] that the wire protocol does not carry.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The folder PDFium searches for fonts a document names but does not embed.
    ///
    /// `None` (the default) gives PDFium no folder at all: such fonts are replaced by PDFium's
    /// built-in ones (the 14 standard fonts still render), exactly as inside the uvm, where
    /// there are no fonts, and PDFium opens no host font file. Applied only by the first call
    /// in a process, which binds the library.
    pub font_folder: Option<PathBuf>,

    /// Called once the request is read and the document is open, before the first page is
    /// rendered: the point where the program needs no more files, so the local sandbox locks
    /// the process down here (empty root, seccomp allowlist). An error ends the call.
    pub after_open: Option<fn() -> Result<(), String>>,
}

/// What one call of [`serve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSummary {
    /// Pages rendered and written.
    pub pages: u32,
    /// Resolution used, in dots per inch.
    pub dpi: u32,
    /// Bytes read from the caller, the password line included.
    pub bytes_in: u64,
    /// Bytes of pixel stream written, headers included.
    pub bytes_out: u64,
}

/// Serves one `qubes.PdfConvert` call: `arg` is the service argument (the resolution), `input`
/// carries the request to EOF, and the pixel stream goes to `output`, one page at a time.
///
/// PDFium is found, on the first call in a process, at the first of: the file named by
/// `$PDFIUM_LIBRARY` (for tests and development), `libpdfium.so` in the folder of the running
/// program, `/usr/local/lib/libpdfium.so`, and then the system loader's search path. A file
/// that exists but fails to load is an error.
///
/// Nothing is written before the document has opened and every page has passed the size
/// checks, so most refusals leave `output` untouched. A failure while rendering or writing a
/// later page leaves a truncated stream, which the caller's strict reader rejects.
///
/// # Errors
/// Every rule the request or the document breaks has its own [`ServeError`] variant.
pub fn serve(
    arg: Option<&str>,
    input: &mut dyn Read,
    output: &mut dyn Write,
    options: &ServeOptions,
) -> Result<ServeSummary, ServeError> {
    let dpi = parse_resolution(arg)?;
    let request = input::Request::read(input)?;
    if request.document().is_empty() {
        return Err(ServeError::EmptyDocument);
    }

    let (pages, bytes_out) = render::with_pdfium(options, |pdfium| {
        let document = render::Document::open(pdfium, request.document(), request.password(), dpi)?;
        if let Some(lock_down) = options.after_open {
            lock_down().map_err(|reason| ServeError::LockDown { reason })?;
        }
        let pages = document.page_count();

        let counted = CountingWriter {
            inner: output,
            bytes: 0,
        };
        let mut writer = RgbStreamWriter::new(counted, pages).map_err(ServeError::Write)?;
        document.render_each(|width, height, rgb| {
            writer
                .write_page(width, height, rgb)
                .map_err(ServeError::Write)
        })?;
        let counted = writer.finish().map_err(ServeError::Write)?;

        Ok((pages, counted.bytes))
    })?;

    Ok(ServeSummary {
        pages,
        dpi,
        bytes_in: request.total_len(),
        bytes_out,
    })
}

/// Renders every page of `document` at `dpi` to packed RGB and throws the pixels away;
/// returns the page count and the time taken.
///
/// For benchmarks: comparing it with [`serve`] on the same file separates PDFium's drawing
/// from writing the stream. The time covers opening the document, the size checks, drawing
/// and removing row padding; it excludes binding the library (done before the clock starts
/// when this is the first call in the process). Uses the default [`ServeOptions`].
///
/// # Errors
/// As [`serve`], except that nothing is read or written; `dpi` outside
/// [`MIN_RESOLUTION`]..=[`MAX_RESOLUTION`] is [`ServeError::BadResolution`].
pub fn render_only(document: &[u8], dpi: u32) -> Result<(u32, Duration), ServeError> {
    if !(MIN_RESOLUTION..=MAX_RESOLUTION).contains(&dpi) {
        return Err(ServeError::BadResolution {
            arg: dpi.to_string(),
        });
    }
    if document.is_empty() {
        return Err(ServeError::EmptyDocument);
    }

    render::with_pdfium(&ServeOptions::default(), |pdfium| {
        let start = Instant::now();
        let document = render::Document::open(pdfium, document, None, dpi)?;
        document.render_each(|_, _, rgb| {
            std::hint::black_box(rgb);
            Ok(())
        })?;

        Ok((document.page_count(), start.elapsed()))
    })
}

/// Counts the bytes that reach the output, for [`ServeSummary::bytes_out`].
struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes = self.bytes.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
