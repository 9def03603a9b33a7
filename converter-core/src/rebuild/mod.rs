//! Rebuild of clean output files (PDF for documents, PNG/JPEG/WebP for images) from pixels alone.
//!
//! Nothing from the original document reaches these writers: they get a width, a height and a
//! buffer of 8-bit samples, and write a file that holds exactly one image per page and the few
//! dictionaries a reader needs to show it. [`crate::check`] proves that property for each output.
//! Every writer is deterministic: no clock, no random id, no metadata, so the same pixels and
//! options give the same bytes.

pub mod pdf;
pub mod png;
pub(crate) mod predict;

use std::io::{self, Write};

use thiserror::Error;

/// Why a page or image could not be rebuilt.
#[derive(Debug, Error)]
pub enum RebuildError {
    /// Width or height is zero: there is nothing to draw.
    #[error("image size {width} x {height} has a zero side")]
    ZeroDimension {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
    },
    /// The pixel buffer does not hold width x height x channels bytes.
    #[error("pixel buffer holds {got} bytes, not {width} x {height} x {channels}")]
    PixelCountMismatch {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
        /// Bytes per pixel the caller promised (3 for RGB, 4 for RGBA).
        channels: u8,
        /// Length of the buffer received.
        got: usize,
    },
    /// `finish` was called before any page was written; a PDF needs at least one page.
    #[error("document has no page")]
    EmptyDocument,
    /// JPEG quality outside 1 to 100.
    #[error("jpeg quality {0} is outside 1 to 100")]
    InvalidQuality(u8),
    /// A resolution of zero dots per inch gives no page size.
    #[error("resolution {0} dpi is not a positive number")]
    InvalidDpi(u32),
    /// The output passed the largest size a PDF cross-reference table can address (10 digits).
    #[error("output passed {limit} bytes, the most a pdf cross-reference table can address")]
    OutputTooLarge {
        /// The largest byte offset the format allows.
        limit: u64,
    },
    /// An encoder refused the image (for example a side longer than the format allows).
    #[error("{format} encoder refused the image: {reason}")]
    Encode {
        /// The output format: "jpeg", "png", "webp" or "flate".
        format: &'static str,
        /// The encoder's own message; it describes sizes, never pixel values.
        reason: String,
    },
    /// A working buffer for the page could not be allocated.
    #[error("cannot allocate {bytes} bytes for a page")]
    AllocationFailed {
        /// Bytes asked for.
        bytes: u64,
    },
    /// Writing to the output failed.
    #[error("cannot write output")]
    Write(#[from] io::Error),
}

/// Checks `width x height x channels == len` with checked arithmetic.
fn check_pixels(width: u32, height: u32, channels: u8, len: usize) -> Result<(), RebuildError> {
    if width == 0 || height == 0 {
        return Err(RebuildError::ZeroDimension { width, height });
    }
    let expected = usize::try_from(width)
        .ok()
        .and_then(|w| w.checked_mul(usize::try_from(height).ok()?))
        .and_then(|n| n.checked_mul(usize::from(channels)));
    if expected != Some(len) {
        return Err(RebuildError::PixelCountMismatch {
            width,
            height,
            channels,
            got: len,
        });
    }
    Ok(())
}

/// Checks a JPEG quality value.
fn check_quality(quality: u8) -> Result<(), RebuildError> {
    if (1..=100).contains(&quality) {
        Ok(())
    } else {
        Err(RebuildError::InvalidQuality(quality))
    }
}

/// Encodes 8-bit samples as a baseline JPEG with `jpeg-encoder`.
///
/// Colour images use 4:2:0 chroma subsampling: it halves the size against 4:4:4 at a loss a
/// reader of a rendered page does not see. Gray images are stored as one-component JPEG.
fn encode_jpeg(
    width: u32,
    height: u32,
    samples: &[u8],
    gray: bool,
    quality: u8,
) -> Result<Vec<u8>, RebuildError> {
    let refused = |reason: String| RebuildError::Encode {
        format: "jpeg",
        reason,
    };
    let w = u16::try_from(width).map_err(|_| refused(format!("width {width} exceeds 65535")))?;
    let h = u16::try_from(height).map_err(|_| refused(format!("height {height} exceeds 65535")))?;

    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    let colour = if gray {
        jpeg_encoder::ColorType::Luma
    } else {
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
        jpeg_encoder::ColorType::Rgb
    };
    encoder
        .encode(samples, w, h, colour)
        .map_err(|e| refused(e.to_string()))?;

    Ok(out)
}

/// A writer that counts the bytes passed through it, to know each object's offset.
struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter { inner, written: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written = self.written.saturating_add(n as u64);
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
    fn zero_width_is_refused() {
        assert!(matches!(
            check_pixels(0, 5, 3, 0),
            Err(RebuildError::ZeroDimension { .. })
        ));
    }

    #[test]
    fn short_buffer_is_refused() {
        let err = check_pixels(2, 2, 3, 11).unwrap_err();
        assert!(matches!(
            err,
            RebuildError::PixelCountMismatch { got: 11, .. }
        ));
    }

    #[test]
    fn overflowing_size_is_refused_not_wrapped() {
        let err = check_pixels(u32::MAX, u32::MAX, 4, 0).unwrap_err();
        assert!(matches!(err, RebuildError::PixelCountMismatch { .. }));
    }

    #[test]
    fn quality_zero_is_refused() {
        assert!(matches!(
            check_quality(0),
            Err(RebuildError::InvalidQuality(0))
        ));
        assert!(matches!(
            check_quality(101),
            Err(RebuildError::InvalidQuality(101))
        ));
        assert!(check_quality(85).is_ok());
    }

    #[test]
    fn counting_writer_counts() {
        let mut w = CountingWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        assert_eq!(w.written, 5);
    }
}
