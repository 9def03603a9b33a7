//! The strict reader and the writer of the pixel streams a uvm sends back.
//!
//! This is the only parser on the trusted side. It reads Qubes' own formats, byte for byte:
//!
//! | stream | layout |
//! |---|---|
//! | `qubes.PdfConvert` (RGB) | `PAGES\n`, then per page `WIDTH HEIGHT\n` and `WIDTH x HEIGHT x 3` bytes |
//! | `qubes.GetImageRGBA` | `WIDTH HEIGHT\n` and `WIDTH x HEIGHT x 4` bytes |
//!
//! Rules, each with its own [`StreamErrorKind`]:
//! - numbers are ASCII decimal digits only: no sign, no space, no leading zero, at least 1;
//! - a width is followed by exactly one space, a height or page count by exactly one `\n`;
//! - every number is checked against [`StreamLimits`] as soon as it is read, and the byte count
//!   of a page is computed with checked arithmetic and checked against the stream's byte cap
//!   before a single byte of it is allocated;
//! - the page data is exactly the declared size, and after the last page the stream ends: one
//!   more byte is an error.
//!
//! The reader holds one page at a time, in a buffer the caller owns and reuses.
//!
//! # Limitations
//! The reader itself has no clock. Deadlines are enforced by the transport's `Read`
//! implementation, which returns an error of kind `TimedOut`; that error surfaces here as
//! [`StreamErrorKind::Io`].

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

use crate::limits::StreamLimits;

/// Longest number accepted, in digits. Every limit is below 10^9, so ten digits already prove
/// the number too large; reading further would only let a peer stream digits forever.
const MAX_DIGITS: usize = 10;

/// Bytes per pixel of the `qubes.PdfConvert` stream.
pub const RGB_BYTES_PER_PIXEL: u64 = 3;
/// Bytes per pixel of the `qubes.GetImageRGBA` stream.
pub const RGBA_BYTES_PER_PIXEL: u64 = 4;

/// Which number of a header is being read; named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The page count of a PDF stream.
    PageCount,
    /// A page or image width.
    Width,
    /// A page or image height.
    Height,
    /// The pixel bytes of a page or image.
    PixelData,
    /// The end of the stream, after the last page.
    EndOfStream,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::PageCount => "page count",
            Field::Width => "width",
            Field::Height => "height",
            Field::PixelData => "pixel data",
            Field::EndOfStream => "end of stream",
        })
    }
}

/// What rule a pixel stream broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamErrorKind {
    /// The stream ended inside or before a field.
    Truncated(Field),
    /// A byte other than an ASCII digit where a number was expected.
    NotADigit(Field, u8),
    /// A number with no digits at all.
    EmptyNumber(Field),
    /// A number written with a leading zero.
    LeadingZero(Field),
    /// A number with more digits than any limit allows.
    NumberTooLong(Field),
    /// A number that is zero; every field is at least 1.
    Zero(Field),
    /// The wrong byte after a number (a width needs one space, the others one newline).
    BadSeparator(Field, u8),
    /// More pages than the limit.
    TooManyPages {
        /// The count the stream declared.
        pages: u64,
        /// The limit in force.
        max: u32,
    },
    /// A page or image wider than the limit.
    TooWide {
        /// The width the stream declared.
        width: u64,
        /// The limit in force.
        max: u32,
    },
    /// A page or image taller than the limit.
    TooTall {
        /// The height the stream declared.
        height: u64,
        /// The limit in force.
        max: u32,
    },
    /// The stream would pass its byte cap.
    TotalBytesExceeded {
        /// The cap in force.
        max: u64,
    },
    /// The pixel buffer could not be allocated.
    AllocationFailed {
        /// The size asked for.
        bytes: u64,
    },
    /// Bytes after the last page.
    TrailingData,
    /// A writer was given a pixel buffer of the wrong size.
    PixelCountMismatch {
        /// width x height x bytes per pixel.
        expected: u64,
        /// The buffer's length.
        actual: u64,
    },
    /// A writer was asked for a different number of pages than it declared.
    PageCountMismatch {
        /// Pages declared in the header.
        declared: u32,
        /// Pages written, or about to be.
        written: u32,
    },
    /// Reading or writing failed, including a transport deadline (`TimedOut`).
    Io(io::ErrorKind),
}

impl fmt::Display for StreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StreamErrorKind::*;
        match self {
            Truncated(field) => write!(f, "stream ended in the {field}"),
            NotADigit(field, b) => write!(f, "byte {b:#04x} where a digit of the {field} belongs"),
            EmptyNumber(field) => write!(f, "the {field} has no digits"),
            LeadingZero(field) => write!(f, "the {field} has a leading zero"),
            NumberTooLong(field) => write!(f, "the {field} has more than {MAX_DIGITS} digits"),
            Zero(field) => write!(f, "the {field} is zero"),
            BadSeparator(field, b) => write!(f, "byte {b:#04x} after the {field}"),
            TooManyPages { pages, max } => write!(f, "{pages} pages, over the limit of {max}"),
            TooWide { width, max } => write!(f, "width {width} px, over the limit of {max}"),
            TooTall { height, max } => write!(f, "height {height} px, over the limit of {max}"),
            TotalBytesExceeded { max } => write!(f, "stream passes the cap of {max} bytes"),
            AllocationFailed { bytes } => write!(f, "cannot allocate {bytes} bytes for a page"),
            TrailingData => write!(f, "bytes after the last page"),
            PixelCountMismatch { expected, actual } => {
                write!(
                    f,
                    "pixel buffer holds {actual} bytes, the header needs {expected}"
                )
            }
            PageCountMismatch { declared, written } => {
                write!(f, "{declared} pages declared, {written} written")
            }
            Io(kind) => write!(f, "i/o error: {kind}"),
        }
    }
}

/// A pixel stream that broke a rule, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    kind: StreamErrorKind,
    offset: u64,
}

impl StreamError {
    /// The rule that was broken.
    pub fn kind(&self) -> &StreamErrorKind {
        &self.kind
    }

    /// The byte offset in the stream at which it was found.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the error came from a transport deadline rather than from the bytes.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, StreamErrorKind::Io(io::ErrorKind::TimedOut))
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad pixel stream at byte {}: {}", self.offset, self.kind)
    }
}

impl std::error::Error for StreamError {}

/// The header of one page or image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// Width in pixels, at least 1.
    pub width: u32,
    /// Height in pixels, at least 1.
    pub height: u32,
}

impl PageHeader {
    fn byte_len(self, bytes_per_pixel: u64) -> u64 {
        // u32 x u32 x 4 < 2^66 could overflow u64 in principle; checked keeps it honest.
        u64::from(self.width)
            .checked_mul(u64::from(self.height))
            .and_then(|n| n.checked_mul(bytes_per_pixel))
            .unwrap_or(u64::MAX)
    }
}

/// The byte-level parser shared by both stream kinds.
struct Parser<R> {
    input: BufReader<R>,
    limits: StreamLimits,
    offset: u64,
}

impl<R: Read> Parser<R> {
    fn new(input: R, limits: StreamLimits) -> Self {
        Parser {
            input: BufReader::with_capacity(64 * 1024, input),
            limits,
            offset: 0,
        }
    }

    fn err(&self, kind: StreamErrorKind) -> StreamError {
        StreamError {
            kind,
            offset: self.offset,
        }
    }

    fn io_err(&self, e: &io::Error) -> StreamError {
        self.err(StreamErrorKind::Io(e.kind()))
    }

    /// Reads one byte, or `None` at the end of the stream.
    fn byte(&mut self) -> Result<Option<u8>, StreamError> {
        let b = loop {
            match self.input.fill_buf() {
                Ok(buf) => break buf.first().copied(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(&e)),
            }
        };
        if b.is_some() {
            self.input.consume(1);
            self.offset += 1;
        }
        Ok(b)
    }

    fn check_total(&self, more: u64) -> Result<(), StreamError> {
        let max = self.limits.max_total_bytes;
        match self.offset.checked_add(more) {
            Some(end) if end <= max => Ok(()),
            _ => Err(self.err(StreamErrorKind::TotalBytesExceeded { max })),
        }
    }

    /// Reads a decimal number of at least 1 followed by exactly `separator`.
    fn number(&mut self, field: Field, separator: u8) -> Result<u64, StreamError> {
        let mut value: u64 = 0;
        let mut digits = 0usize;
        let mut first_zero = false;
        loop {
            // The header bytes count towards the cap too: a peer must not stream digits forever.
            self.check_total(1)?;
            let b = self
                .byte()?
                .ok_or_else(|| self.err(StreamErrorKind::Truncated(field)))?;
            if b.is_ascii_digit() {
                if digits == 0 && b == b'0' {
                    first_zero = true;
                } else if first_zero {
                    return Err(self.err(StreamErrorKind::LeadingZero(field)));
                }
                digits += 1;
                if digits > MAX_DIGITS {
                    return Err(self.err(StreamErrorKind::NumberTooLong(field)));
                }
                value = value * 10 + u64::from(b - b'0');
            } else if digits == 0 {
                let kind = if b == separator || b == b' ' || b == b'\n' {
                    StreamErrorKind::EmptyNumber(field)
                } else {
                    StreamErrorKind::NotADigit(field, b)
                };
                return Err(self.err(kind));
            } else if b == separator {
                break;
            } else if b == b' ' || b == b'\n' {
                return Err(self.err(StreamErrorKind::BadSeparator(field, b)));
            } else {
                return Err(self.err(StreamErrorKind::NotADigit(field, b)));
            }
        }
        if value == 0 {
            return Err(self.err(StreamErrorKind::Zero(field)));
        }
        Ok(value)
    }

    fn page_count(&mut self) -> Result<u32, StreamError> {
        let pages = self.number(Field::PageCount, b'\n')?;
        let max = self.limits.max_pages;
        if pages > u64::from(max) {
            return Err(self.err(StreamErrorKind::TooManyPages { pages, max }));
        }
        // pages <= max, and max is a u32.
        Ok(pages as u32)
    }

    fn header(&mut self) -> Result<PageHeader, StreamError> {
        let width = self.number(Field::Width, b' ')?;
        let max = self.limits.max_width;
        if width > u64::from(max) {
            return Err(self.err(StreamErrorKind::TooWide { width, max }));
        }
        let height = self.number(Field::Height, b'\n')?;
        let max = self.limits.max_height;
        if height > u64::from(max) {
            return Err(self.err(StreamErrorKind::TooTall { height, max }));
        }
        // Both are bounded by u32 limits above.
        Ok(PageHeader {
            width: width as u32,
            height: height as u32,
        })
    }

    /// Reads exactly the pixel bytes of `header` into `buf`, replacing its contents.
    fn pixels(
        &mut self,
        header: PageHeader,
        bytes_per_pixel: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), StreamError> {
        let len = header.byte_len(bytes_per_pixel);
        self.check_total(len)?;
        let len_usize = usize::try_from(len)
            .map_err(|_| self.err(StreamErrorKind::AllocationFailed { bytes: len }))?;

        buf.clear();
        buf.try_reserve_exact(len_usize)
            .map_err(|_| self.err(StreamErrorKind::AllocationFailed { bytes: len }))?;
        // `take` + `read_to_end` fills the reserved space without zeroing it first and stops at
        // exactly `len` bytes.
        let got = loop {
            match (&mut self.input).take(len).read_to_end(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.offset += buf.len() as u64;
                    return Err(self.io_err(&e));
                }
            }
        };
        self.offset += got as u64;
        if (got as u64) < len {
            return Err(self.err(StreamErrorKind::Truncated(Field::PixelData)));
        }

        Ok(())
    }

    fn end(&mut self) -> Result<(), StreamError> {
        match self.byte()? {
            None => Ok(()),
            Some(_) => {
                self.offset -= 1;
                Err(self.err(StreamErrorKind::TrailingData))
            }
        }
    }
}

/// Reads a `qubes.PdfConvert` stream one page at a time.
///
/// Call [`read_page_count`](Self::read_page_count) once, then
/// [`next_page`](Self::next_page) until it returns `Ok(None)`; that `None` comes only after the
/// end of the stream has been seen where it belongs.
pub struct RgbStreamReader<R> {
    parser: Parser<R>,
    pages: Option<u32>,
    pages_read: u32,
}

impl<R: Read> RgbStreamReader<R> {
    /// A reader over `input` that enforces `limits`.
    pub fn new(input: R, limits: StreamLimits) -> Self {
        RgbStreamReader {
            parser: Parser::new(input, limits),
            pages: None,
            pages_read: 0,
        }
    }

    /// Reads and checks the page count line. Calling it again returns the same count.
    pub fn read_page_count(&mut self) -> Result<u32, StreamError> {
        if let Some(pages) = self.pages {
            return Ok(pages);
        }
        let pages = self.parser.page_count()?;
        self.pages = Some(pages);
        Ok(pages)
    }

    /// Reads the next page into `buf` (cleared first) and returns its header, or `None` once
    /// every declared page was read and the stream has ended.
    pub fn next_page(&mut self, buf: &mut Vec<u8>) -> Result<Option<PageHeader>, StreamError> {
        let pages = self.read_page_count()?;
        if self.pages_read == pages {
            self.parser.end()?;
            return Ok(None);
        }
        let header = self.parser.header()?;
        self.parser.pixels(header, RGB_BYTES_PER_PIXEL, buf)?;
        self.pages_read += 1;
        Ok(Some(header))
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.parser.offset
    }
}

/// One decoded RGBA image from a `qubes.GetImageRGBA` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbaImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Exactly `width x height x 4` bytes, rows top to bottom.
    pub pixels: Vec<u8>,
}

/// Reads a whole `qubes.GetImageRGBA` stream and checks that it ends after the image.
pub fn read_rgba_image<R: Read>(input: R, limits: &StreamLimits) -> Result<RgbaImage, StreamError> {
    let mut parser = Parser::new(input, *limits);
    let header = parser.header()?;
    let mut pixels = Vec::new();
    parser.pixels(header, RGBA_BYTES_PER_PIXEL, &mut pixels)?;
    parser.end()?;

    Ok(RgbaImage {
        width: header.width,
        height: header.height,
        pixels,
    })
}

fn expect_len(width: u32, height: u32, bpp: u64, actual: usize) -> Result<(), StreamError> {
    let expected = PageHeader { width, height }.byte_len(bpp);
    if width == 0 || height == 0 || expected != actual as u64 {
        return Err(StreamError {
            kind: StreamErrorKind::PixelCountMismatch {
                expected,
                actual: actual as u64,
            },
            offset: 0,
        });
    }
    Ok(())
}

fn write_err(e: &io::Error, offset: u64) -> StreamError {
    StreamError {
        kind: StreamErrorKind::Io(e.kind()),
        offset,
    }
}

/// Writes a `qubes.PdfConvert` stream, as the uvm does.
pub struct RgbStreamWriter<W: Write> {
    out: W,
    declared: u32,
    written: u32,
    offset: u64,
}

impl<W: Write> RgbStreamWriter<W> {
    /// Writes the page count line.
    pub fn new(mut out: W, pages: u32) -> Result<Self, StreamError> {
        let line = format!("{pages}\n");
        out.write_all(line.as_bytes())
            .map_err(|e| write_err(&e, 0))?;
        Ok(RgbStreamWriter {
            out,
            declared: pages,
            written: 0,
            offset: line.len() as u64,
        })
    }

    /// Writes one page: its header line and exactly `width x height x 3` bytes.
    pub fn write_page(&mut self, width: u32, height: u32, rgb: &[u8]) -> Result<(), StreamError> {
        if self.written >= self.declared {
            return Err(StreamError {
                kind: StreamErrorKind::PageCountMismatch {
                    declared: self.declared,
                    written: self.written.saturating_add(1),
                },
                offset: self.offset,
            });
        }
        expect_len(width, height, RGB_BYTES_PER_PIXEL, rgb.len())?;
        let line = format!("{width} {height}\n");
        self.out
            .write_all(line.as_bytes())
            .map_err(|e| write_err(&e, self.offset))?;
        self.out
            .write_all(rgb)
            .map_err(|e| write_err(&e, self.offset))?;
        self.offset += (line.len() + rgb.len()) as u64;
        self.written += 1;
        Ok(())
    }

    /// Checks that every declared page was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, StreamError> {
        if self.written != self.declared {
            return Err(StreamError {
                kind: StreamErrorKind::PageCountMismatch {
                    declared: self.declared,
                    written: self.written,
                },
                offset: self.offset,
            });
        }
        self.out.flush().map_err(|e| write_err(&e, self.offset))?;
        Ok(self.out)
    }
}

/// Writes a whole `qubes.GetImageRGBA` stream, as the uvm does, and flushes it.
pub fn write_rgba_image<W: Write>(
    mut out: W,
    width: u32,
    height: u32,
    rgba: &[u8],
) -> Result<(), StreamError> {
    expect_len(width, height, RGBA_BYTES_PER_PIXEL, rgba.len())?;
    out.write_all(format!("{width} {height}\n").as_bytes())
        .map_err(|e| write_err(&e, 0))?;
    out.write_all(rgba).map_err(|e| write_err(&e, 0))?;
    out.flush().map_err(|e| write_err(&e, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use StreamErrorKind as K;

    fn pdf_stream(pages: &[(u32, u32)]) -> Vec<u8> {
        let mut w = RgbStreamWriter::new(Vec::new(), pages.len() as u32).unwrap();
        for (i, &(width, height)) in pages.iter().enumerate() {
            let rgb = vec![i as u8; (width * height * 3) as usize];
            w.write_page(width, height, &rgb).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8], limits: StreamLimits) -> Result<Vec<PageHeader>, StreamError> {
        let mut r = RgbStreamReader::new(bytes, limits);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(h) = r.next_page(&mut buf)? {
            assert_eq!(buf.len() as u64, h.byte_len(3));
            out.push(h);
        }
        Ok(out)
    }

    fn kind_of(bytes: &[u8]) -> StreamErrorKind {
        read_all(bytes, StreamLimits::PDF)
            .unwrap_err()
            .kind()
            .clone()
    }

    #[test]
    fn writer_output_is_the_qubes_format_byte_for_byte() {
        let mut w = RgbStreamWriter::new(Vec::new(), 2).unwrap();
        w.write_page(2, 1, &[1, 2, 3, 4, 5, 6]).unwrap();
        w.write_page(1, 1, &[7, 8, 9]).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out, b"2\n2 1\n\x01\x02\x03\x04\x05\x061 1\n\x07\x08\x09");
    }

    #[test]
    fn exact_stream_passes() {
        let bytes = pdf_stream(&[(3, 2), (1, 1), (10, 4)]);
        let pages = read_all(&bytes, StreamLimits::PDF).unwrap();
        assert_eq!(
            pages,
            vec![
                PageHeader {
                    width: 3,
                    height: 2
                },
                PageHeader {
                    width: 1,
                    height: 1
                },
                PageHeader {
                    width: 10,
                    height: 4
                },
            ]
        );
    }

    #[test]
    fn page_data_is_returned_intact() {
        let bytes = pdf_stream(&[(2, 2), (2, 2)]);
        let mut r = RgbStreamReader::new(&bytes[..], StreamLimits::PDF);
        let mut buf = Vec::new();
        r.next_page(&mut buf).unwrap();
        assert_eq!(buf, vec![0; 12]);
        r.next_page(&mut buf).unwrap();
        assert_eq!(buf, vec![1; 12]);
        assert_eq!(r.next_page(&mut buf).unwrap(), None);
        assert_eq!(r.bytes_read(), bytes.len() as u64);
    }

    #[test]
    fn one_trailing_byte_is_an_error() {
        let mut bytes = pdf_stream(&[(1, 1)]);
        bytes.push(b'\n');
        assert_eq!(kind_of(&bytes), K::TrailingData);
    }

    #[test]
    fn truncation_at_every_byte_fails() {
        let bytes = pdf_stream(&[(2, 1), (1, 2)]);
        for cut in 0..bytes.len() {
            let err = read_all(&bytes[..cut], StreamLimits::PDF).unwrap_err();
            assert!(matches!(err.kind(), K::Truncated(_)), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn truncation_names_the_field() {
        assert_eq!(kind_of(b""), K::Truncated(Field::PageCount));
        assert_eq!(kind_of(b"1\n"), K::Truncated(Field::Width));
        assert_eq!(kind_of(b"1\n1"), K::Truncated(Field::Width));
        assert_eq!(kind_of(b"1\n1 1"), K::Truncated(Field::Height));
        assert_eq!(kind_of(b"1\n1 1\n\x00\x00"), K::Truncated(Field::PixelData));
        assert_eq!(kind_of(b"2\n1 1\n\x00\x00\x00"), K::Truncated(Field::Width));
    }

    #[test]
    fn zero_page_count_is_refused() {
        assert_eq!(kind_of(b"0\n"), K::Zero(Field::PageCount));
    }

    #[test]
    fn page_count_over_limit_is_refused() {
        assert_eq!(
            kind_of(b"10001\n"),
            K::TooManyPages {
                pages: 10001,
                max: 10_000
            }
        );
    }

    #[test]
    fn page_count_at_limit_is_accepted_as_a_count() {
        let mut r = RgbStreamReader::new(&b"10000\n"[..], StreamLimits::PDF);
        assert_eq!(r.read_page_count().unwrap(), 10_000);
    }

    #[test]
    fn width_over_limit_is_refused() {
        assert_eq!(
            kind_of(b"1\n10001 1\n"),
            K::TooWide {
                width: 10001,
                max: 10_000
            }
        );
    }

    #[test]
    fn height_over_limit_is_refused() {
        assert_eq!(
            kind_of(b"1\n1 10001\n"),
            K::TooTall {
                height: 10001,
                max: 10_000
            }
        );
    }

    #[test]
    fn zero_width_and_height_are_refused() {
        assert_eq!(kind_of(b"1\n0 1\n"), K::Zero(Field::Width));
        assert_eq!(kind_of(b"1\n1 0\n"), K::Zero(Field::Height));
    }

    #[test]
    fn leading_zero_is_refused() {
        assert_eq!(kind_of(b"01\n"), K::LeadingZero(Field::PageCount));
        assert_eq!(kind_of(b"1\n05 1\n"), K::LeadingZero(Field::Width));
        assert_eq!(kind_of(b"1\n5 00\n"), K::LeadingZero(Field::Height));
    }

    #[test]
    fn sign_is_refused() {
        assert_eq!(kind_of(b"+1\n"), K::NotADigit(Field::PageCount, b'+'));
        assert_eq!(kind_of(b"1\n-1 1\n"), K::NotADigit(Field::Width, b'-'));
    }

    #[test]
    fn non_digit_is_refused() {
        assert_eq!(kind_of(b"1x\n"), K::NotADigit(Field::PageCount, b'x'));
        assert_eq!(kind_of(b"1\n1 1\r\n"), K::NotADigit(Field::Height, b'\r'));
    }

    #[test]
    fn empty_number_is_refused() {
        assert_eq!(kind_of(b"\n"), K::EmptyNumber(Field::PageCount));
        assert_eq!(kind_of(b"1\n 1\n"), K::EmptyNumber(Field::Width));
        assert_eq!(kind_of(b"1\n1  1\n"), K::EmptyNumber(Field::Height));
    }

    #[test]
    fn wrong_separator_is_refused() {
        // Newline where the width's space belongs, and a space where the height's newline does.
        assert_eq!(kind_of(b"1\n1\n1\n"), K::BadSeparator(Field::Width, b'\n'));
        assert_eq!(kind_of(b"1\n1 1 "), K::BadSeparator(Field::Height, b' '));
        assert_eq!(kind_of(b"1 \n"), K::BadSeparator(Field::PageCount, b' '));
    }

    #[test]
    fn endless_digits_stop_at_the_digit_limit() {
        let mut bytes = b"1".to_vec();
        bytes.extend(std::iter::repeat_n(b'1', 100));
        assert_eq!(kind_of(&bytes), K::NumberTooLong(Field::PageCount));
    }

    #[test]
    fn total_byte_cap_is_checked_before_reading_a_page() {
        let limits = StreamLimits {
            max_total_bytes: 20,
            ..StreamLimits::PDF
        };
        let bytes = pdf_stream(&[(3, 3)]);
        let err = read_all(&bytes, limits).unwrap_err();
        assert_eq!(err.kind(), &K::TotalBytesExceeded { max: 20 });
        // Refused right after the header, before any pixel byte was read.
        assert_eq!(err.offset(), 6);
    }

    #[test]
    fn declared_page_larger_than_data_does_not_allocate_before_the_cap() {
        // 10000 x 10000 x 3 = 300 MB declared in a 14-byte stream under a 1 MB cap.
        let limits = StreamLimits {
            max_total_bytes: 1 << 20,
            ..StreamLimits::PDF
        };
        let err = read_all(b"1\n10000 10000\n", limits).unwrap_err();
        assert_eq!(err.kind(), &K::TotalBytesExceeded { max: 1 << 20 });
    }

    #[test]
    fn timeouts_from_the_transport_are_reported_as_such() {
        struct Stalled;
        impl Read for Stalled {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::TimedOut))
            }
        }
        let err = RgbStreamReader::new(Stalled, StreamLimits::PDF)
            .read_page_count()
            .unwrap_err();
        assert!(err.is_timeout());
    }

    #[test]
    fn rgba_round_trip() {
        let pixels: Vec<u8> = (0..24).collect();
        let mut out = Vec::new();
        write_rgba_image(&mut out, 3, 2, &pixels).unwrap();
        assert!(out.starts_with(b"3 2\n"));
        let img = read_rgba_image(&out[..], &StreamLimits::IMAGE).unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        assert_eq!(img.pixels, pixels);
    }

    #[test]
    fn rgba_trailing_byte_and_truncation_fail() {
        let mut out = Vec::new();
        write_rgba_image(&mut out, 1, 1, &[1, 2, 3, 4]).unwrap();
        for cut in 0..out.len() {
            let err = read_rgba_image(&out[..cut], &StreamLimits::IMAGE).unwrap_err();
            assert!(matches!(err.kind(), K::Truncated(_)), "cut at {cut}");
        }
        out.push(0);
        let err = read_rgba_image(&out[..], &StreamLimits::IMAGE).unwrap_err();
        assert_eq!(err.kind(), &K::TrailingData);
    }

    #[test]
    fn rgba_limits_are_the_image_client_limits() {
        let err = read_rgba_image(&b"8193 1\n"[..], &StreamLimits::IMAGE).unwrap_err();
        assert_eq!(
            err.kind(),
            &K::TooWide {
                width: 8193,
                max: 8192
            }
        );
        let err = read_rgba_image(&b"1 5121\n"[..], &StreamLimits::IMAGE).unwrap_err();
        assert_eq!(
            err.kind(),
            &K::TooTall {
                height: 5121,
                max: 5120
            }
        );
    }

    #[test]
    fn writer_refuses_wrong_buffer_size_and_page_count() {
        let mut w = RgbStreamWriter::new(Vec::new(), 1).unwrap();
        let err = w.write_page(2, 2, &[0; 11]).unwrap_err();
        assert_eq!(
            err.kind(),
            &K::PixelCountMismatch {
                expected: 12,
                actual: 11
            }
        );
        w.write_page(1, 1, &[0; 3]).unwrap();
        assert!(matches!(
            w.write_page(1, 1, &[0; 3]).unwrap_err().kind(),
            K::PageCountMismatch { .. }
        ));
        let w = RgbStreamWriter::new(Vec::new(), 2).unwrap();
        assert!(matches!(
            w.finish().unwrap_err().kind(),
            K::PageCountMismatch { .. }
        ));
    }
}
