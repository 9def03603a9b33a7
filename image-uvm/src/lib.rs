//! The uvm's image decoder: serves `qubes.GetImageRGBA`, image bytes in, one RGBA image out.
//!
//! The caller writes a hint line, the image bytes and EOF; [`serve`] answers with the pixel
//! stream that Qubes' own server sends:
//!
//! | direction | bytes |
//! |---|---|
//! | caller to uvm | `-\n` or `FORMAT:-\n` (a format hint, at most [`MAX_HINT_LINE_BYTES`]) |
//! | caller to uvm | the image bytes, at most [`MAX_IMAGE_BYTES`], then EOF |
//! | uvm to caller | `WIDTH HEIGHT\n`, then exactly WIDTH x HEIGHT x 4 bytes of 8-bit RGBA |
//!
//! The format is always taken from the bytes; the hint only names TGA (which has no magic
//! number) and SVG (which is text).
//!
//! # Conversion rules
//! - 16-bit samples become 8-bit by rounding, `(v * 255 + 32767) / 65535`; floats are clamped
//!   to 0..1 and rounded; gray is copied to red, green and blue; missing alpha is 255. These are
//!   the `image` crate's own conversions, checked by this crate's tests.
//! - The EXIF orientation (JPEG, PNG, TIFF, WebP) is applied, so a phone photo comes out upright.
//!   The size limits apply to the upright image.
//! - An animation (GIF, APNG, animated WebP) gives its first frame. The other frames are counted
//!   in [`DecodeSummary::frames_dropped`], up to [`FRAME_COUNT_CAP`].
//! - SVG is drawn with resvg at its intrinsic size (see [`svg`]).
//!
//! # Limitations
//! - Embedded ICC profiles are not applied: pixels are passed on as if they were sRGB.
//! - The stock Qubes client reads no stderr and no summary: a caller learns about dropped frames
//!   only from the binary's stderr line.
//! - Decoding time is not bounded here. The caller's deadline bounds it, and the uvm's memory
//!   size bounds what the decoders may allocate beyond [`MAX_DECODER_ALLOC`].

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod frames;
mod hint;
mod raster;
pub mod svg;

use std::fmt;
use std::io::{self, Read, Write};

use converter_core::limits::StreamLimits;
use converter_core::stream::{write_rgba_image, StreamError};

use hint::FormatHint;
pub use hint::MAX_HINT_LINE_BYTES;

/// Largest image file accepted, in bytes.
///
/// Big enough for any camera JPEG or a lossless PNG at the output limit (8192 x 5120 RGBA is
/// 160 MiB raw, and real files compress it well below this); small enough that the input
/// buffer, plus the JPEG decoder's private copy of it, fits beside the decoded pixels in a
/// small uvm.
pub const MAX_IMAGE_BYTES: u64 = 128 << 20;

/// Cap on what the `image` crate's decoders may allocate for one image (`image::Limits`).
///
/// Covers a 16-bit RGBA image at the output limit (8192 x 5120 x 8 bytes = 320 MiB) with room
/// for decoder scratch buffers; a 32-bit float RGBA image that large (640 MiB) is refused.
/// It matches the `image` crate's own default.
pub const MAX_DECODER_ALLOC: u64 = 512 << 20;

/// Counting of dropped animation frames stops here, so a file with millions of tiny frames
/// costs no more than this many frame headers.
pub const FRAME_COUNT_CAP: u32 = 10_000;

/// Long side in pixels of an SVG drawing that states no width and height.
pub const SVG_DEFAULT_LONG_SIDE: u32 = 1024;

/// Settings for one [`serve`] call; [`DecodeOptions::default`] holds the named limits.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Widest output image in pixels.
    pub max_width: u32,
    /// Tallest output image in pixels.
    pub max_height: u32,
    /// Largest image file in bytes.
    pub max_image_bytes: u64,
    /// Allocation cap handed to the decoders.
    pub max_decoder_alloc: u64,
    /// Long side of an SVG that states no size.
    pub svg_default_long_side: u32,
    /// Called once the whole input is read, before decoding starts: the program needs no more
    /// files, so the local sandbox locks the process down here. An error ends the call.
    pub after_read: Option<fn() -> Result<(), String>>,
}

impl Default for DecodeOptions {
    /// The output size matches Qubes' stock image client ([`StreamLimits::IMAGE`]).
    fn default() -> Self {
        DecodeOptions {
            max_width: StreamLimits::IMAGE.max_width,
            max_height: StreamLimits::IMAGE.max_height,
            max_image_bytes: MAX_IMAGE_BYTES,
            max_decoder_alloc: MAX_DECODER_ALLOC,
            svg_default_long_side: SVG_DEFAULT_LONG_SIDE,
            after_read: None,
        }
    }
}

/// The formats this decoder serves, as detected from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceFormat {
    /// PNG, including APNG (first frame).
    Png,
    /// JPEG (baseline and progressive, gray, RGB, CMYK).
    Jpeg,
    /// GIF (first frame).
    Gif,
    /// Windows bitmap.
    Bmp,
    /// TIFF (first page).
    Tiff,
    /// WebP, lossy or lossless (first frame).
    WebP,
    /// Windows icon (largest entry).
    Ico,
    /// Netpbm: PBM, PGM, PPM, PAM.
    Pnm,
    /// Truevision TGA (named by the hint: it has no magic number).
    Tga,
    /// Quite OK Image format.
    Qoi,
    /// farbfeld.
    Farbfeld,
    /// SVG, drawn by resvg.
    Svg,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SourceFormat::Png => "png",
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Gif => "gif",
            SourceFormat::Bmp => "bmp",
            SourceFormat::Tiff => "tiff",
            SourceFormat::WebP => "webp",
            SourceFormat::Ico => "ico",
            SourceFormat::Pnm => "pnm",
            SourceFormat::Tga => "tga",
            SourceFormat::Qoi => "qoi",
            SourceFormat::Farbfeld => "farbfeld",
            SourceFormat::Svg => "svg",
        };
        f.write_str(name)
    }
}

/// What one [`serve`] call did, for logs (sizes and counts only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Width of the image sent, in pixels.
    pub width: u32,
    /// Height of the image sent, in pixels.
    pub height: u32,
    /// Format detected from the bytes.
    pub format: SourceFormat,
    /// Size of the image file read, in bytes.
    pub input_bytes: u64,
    /// Animation frames after the first that were not sent; saturates at [`FRAME_COUNT_CAP`].
    pub frames_dropped: u32,
    /// Whether an EXIF orientation other than "as stored" was applied.
    pub reoriented: bool,
}

/// Why an image could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The first line is not `-` or `FORMAT:-`.
    #[error("bad hint line: {0}")]
    BadHintLine(&'static str),
    /// Reading the caller's bytes failed.
    #[error("cannot read input: {0}")]
    ReadInput(#[source] io::Error),
    /// The caller sent no image bytes after the hint line.
    #[error("no image bytes after the hint line")]
    EmptyImage,
    /// The process could not lock itself down before decoding.
    #[error("cannot lock down: {reason}")]
    LockDown {
        /// What failed.
        reason: String,
    },
    /// The image file is bigger than the byte cap.
    #[error("image file is larger than {limit} bytes")]
    ImageTooLarge {
        /// The cap that was exceeded.
        limit: u64,
    },
    /// The bytes are in no format this decoder serves.
    #[error("image format not recognised or not supported")]
    UnsupportedFormat,
    /// The image (upright, after EXIF orientation) is larger than the output limits.
    #[error("image is {width}x{height}, over the {max_width}x{max_height} limit")]
    DimensionsTooLarge {
        /// Declared width, upright.
        width: u32,
        /// Declared height, upright.
        height: u32,
        /// Widest image allowed.
        max_width: u32,
        /// Tallest image allowed.
        max_height: u32,
    },
    /// The image declares a zero width or height.
    #[error("image has zero width or height")]
    ZeroDimensions,
    /// Decoding would allocate more than the decoder allocation cap.
    #[error("{format} image needs more than {limit} bytes of decoder memory")]
    DecoderMemoryExceeded {
        /// Format being decoded.
        format: SourceFormat,
        /// The cap that was exceeded.
        limit: u64,
    },
    /// The image uses a feature the decoder lacks (such as 64-bit float TIFF samples).
    #[error("{format} image uses an unsupported feature: {message}")]
    UnsupportedFeature {
        /// Format being decoded.
        format: SourceFormat,
        /// The decoder's own message.
        message: String,
    },
    /// The decoder rejected the bytes (the message names the broken rule, not image content).
    #[error("cannot decode {format} image: {message}")]
    Decode {
        /// Format being decoded.
        format: SourceFormat,
        /// The decoder's own message.
        message: String,
    },
    /// Writing the pixel stream failed.
    #[error("cannot write pixel stream: {0}")]
    Write(#[source] StreamError),
}

/// A decoded image ready to send: `pixels` is exactly `width x height x 4` bytes of RGBA.
pub(crate) struct Decoded {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) pixels: Vec<u8>,
    pub(crate) frames_dropped: u32,
    pub(crate) reoriented: bool,
}

/// Serves one `qubes.GetImageRGBA` call: reads the hint line and the image from `input`,
/// decodes it, and writes `WIDTH HEIGHT\n` plus the RGBA pixels to `output`.
///
/// Nothing is written to `output` unless the whole image decoded, so a failed call leaves an
/// empty stream, which every client rejects.
///
/// # Errors
/// Any [`ServeError`]; each names the rule the input broke.
pub fn serve(
    input: &mut dyn Read,
    output: &mut dyn Write,
    options: &DecodeOptions,
) -> Result<DecodeSummary, ServeError> {
    let hint = hint::read_hint_line(input)?;
    let bytes = read_capped(input, options.max_image_bytes)?;
    if let Some(lock_down) = options.after_read {
        lock_down().map_err(|reason| ServeError::LockDown { reason })?;
    }

    let input_bytes = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let (format, decoded) = decode(&bytes, hint, options)?;
    // The file is no longer needed: free it before the output is written.
    drop(bytes);

    write_rgba_image(output, decoded.width, decoded.height, &decoded.pixels)
        .map_err(ServeError::Write)?;

    Ok(DecodeSummary {
        width: decoded.width,
        height: decoded.height,
        format,
        input_bytes,
        frames_dropped: decoded.frames_dropped,
        reoriented: decoded.reoriented,
    })
}

fn decode(
    bytes: &[u8],
    hint: Option<FormatHint>,
    options: &DecodeOptions,
) -> Result<(SourceFormat, Decoded), ServeError> {
    if bytes.is_empty() {
        return Err(ServeError::EmptyImage);
    }
    if let Some(image_format) = raster::detect(bytes, hint) {
        let format = raster::source_format(image_format).ok_or(ServeError::UnsupportedFormat)?;
        return Ok((
            format,
            raster::decode(bytes, image_format, format, options)?,
        ));
    }
    if svg::looks_like_svg(bytes, hint) {
        return Ok((SourceFormat::Svg, svg::render(bytes, options)?));
    }
    Err(ServeError::UnsupportedFormat)
}

/// Reads to EOF, refusing more than `limit` bytes: one byte past the cap is read to tell a
/// file of exactly `limit` bytes from a longer one.
fn read_capped(input: &mut dyn Read, limit: u64) -> Result<Vec<u8>, ServeError> {
    let mut bytes = Vec::new();
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ServeError::ReadInput)?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > limit) {
        return Err(ServeError::ImageTooLarge { limit });
    }

    Ok(bytes)
}
