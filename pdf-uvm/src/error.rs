//! Why a call to the PDF service failed, one variant per broken rule.
//!
//! Messages carry sizes, counts and page numbers only: never text from the document, whose
//! author may be the attacker and whose words may be private.

use std::fmt;
use std::io;

use converter_core::stream::StreamError;

/// Why a document could not be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The service argument is not a resolution from 75 to 4800 dpi.
    #[error("bad resolution {arg:?}: expected a whole number from 75 to 4800 with no sign or leading zero")]
    BadResolution {
        /// The argument as given, shortened.
        arg: String,
    },

    /// Reading the request from the caller failed.
    #[error("cannot read the document: {0}")]
    Read(io::ErrorKind),

    /// The document is over the size cap.
    #[error("the document is larger than the cap of {max} bytes")]
    DocumentTooLarge {
        /// The cap in force, in bytes.
        max: u64,
    },

    /// Memory for the document could not be had.
    #[error("cannot allocate {bytes} bytes for the document")]
    DocumentMemory {
        /// The size asked for.
        bytes: u64,
    },

    /// The password line is longer than allowed.
    #[error("the password line is longer than {max} bytes")]
    PasswordLineTooLong {
        /// The longest password accepted, in bytes.
        max: usize,
    },

    /// The input starts with `--password=` but has no newline to end that line.
    #[error("the password line has no newline")]
    PasswordLineUnterminated,

    /// The password is not valid UTF-8.
    #[error("the password is not valid utf-8")]
    PasswordNotUtf8,

    /// The password contains a NUL byte, which PDFium's C interface cannot carry.
    #[error("the password contains a nul byte")]
    PasswordHasNul,

    /// No document bytes followed the (optional) password line.
    #[error("the document is empty")]
    EmptyDocument,

    /// The process could not lock itself down before rendering (see
    /// [`ServeOptions::after_open`](crate::ServeOptions::after_open)).
    #[error("cannot lock down: {reason}")]
    LockDown {
        /// What failed.
        reason: String,
    },

    /// The PDFium library could not be found or bound.
    #[error("pdfium is unavailable: {reason}")]
    PdfiumUnavailable {
        /// What was tried and what failed (paths and loader messages only).
        reason: String,
    },

    /// PDFium could not open the document.
    #[error("cannot open the document: {0}")]
    Load(LoadFailure),

    /// The document has no pages.
    #[error("the document has no pages")]
    NoPages,

    /// The document has more pages than a caller accepts.
    #[error("the document has {pages} pages, over the limit of {max}")]
    TooManyPages {
        /// The page count PDFium reported.
        pages: u64,
        /// The limit in force.
        max: u32,
    },

    /// A page would render wider or taller than a caller accepts; refused before rendering.
    #[error("page {page} would be {width}x{height} px at {dpi} dpi, over the limit of {max_width}x{max_height} px")]
    PageTooLarge {
        /// The page number, from 1.
        page: u32,
        /// The width it would have, in pixels.
        width: u64,
        /// The height it would have, in pixels.
        height: u64,
        /// The resolution asked for.
        dpi: u32,
        /// The widest page accepted.
        max_width: u32,
        /// The tallest page accepted.
        max_height: u32,
    },

    /// The whole stream would pass the byte cap a caller accepts; refused before rendering.
    #[error("the pages would take {bytes} bytes of pixels, over the cap of {max}")]
    OutputTooLarge {
        /// The pixel bytes all pages would take.
        bytes: u64,
        /// The cap in force.
        max: u64,
    },

    /// Memory for a page bitmap could not be had.
    #[error("cannot allocate {bytes} bytes for page {page}")]
    PageMemory {
        /// The page number, from 1.
        page: u32,
        /// The size asked for.
        bytes: u64,
    },

    /// PDFium failed to load or render a page.
    #[error("pdfium cannot render page {page}")]
    Render {
        /// The page number, from 1.
        page: u32,
    },

    /// Writing the pixel stream failed (the caller went away, or a deadline passed).
    #[error("cannot write the pixel stream: {}", .0.kind())]
    Write(#[source] StreamError),
}

/// Why PDFium refused to open a document, as far as PDFium says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadFailure {
    /// The document is encrypted and the password is missing or wrong.
    Password,
    /// The bytes are not a PDF, or one damaged beyond PDFium's repair.
    Format,
    /// The document uses a security handler PDFium does not support.
    Security,
    /// PDFium could not read the bytes it was given.
    File,
    /// PDFium gave no reason.
    Unknown,
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadFailure::Password => "it is encrypted and the password is missing or wrong",
            LoadFailure::Format => "not a pdf file, or damaged beyond repair",
            LoadFailure::Security => "it uses an unsupported security handler",
            LoadFailure::File => "pdfium could not read it",
            LoadFailure::Unknown => "pdfium gave no reason",
        })
    }
}
