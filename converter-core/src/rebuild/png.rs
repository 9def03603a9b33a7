//! Rebuild of a clean image file (PNG, JPEG or lossless WebP) from 8-bit RGBA pixels.
//!
//! Each writer first looks at the pixels once: an image whose alpha is 255 everywhere loses its
//! alpha channel, and one whose pixels all have r == g == b is stored as gray. Both are exact.
//! No text, time, gamma, colour-profile or EXIF data is ever written.

use std::io::Write;

use super::{check_pixels, check_quality, encode_jpeg, CountingWriter, RebuildError};

/// The output formats for images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG, 8 bits per sample, lossless.
    Png,
    /// Baseline JPEG at this quality (1 to 100). JPEG has no alpha: pixels are composited on white.
    Jpeg {
        /// JPEG quality, 1 to 100.
        quality: u8,
    },
    /// Lossless WebP (VP8L) from the `image-webp` crate.
    WebpLossless,
}

impl ImageFormat {
    /// The JPEG quality used when a format is chosen by file extension.
    pub const DEFAULT_JPEG_QUALITY: u8 = 85;

    /// The format for a file extension (`png`, `jpg`, `jpeg`, `webp`; any case, no dot).
    pub fn from_extension(extension: &str) -> Option<ImageFormat> {
        match extension.to_ascii_lowercase().as_str() {
            "png" => Some(ImageFormat::Png),
            "jpg" | "jpeg" => Some(ImageFormat::Jpeg {
                quality: Self::DEFAULT_JPEG_QUALITY,
            }),
            "webp" => Some(ImageFormat::WebpLossless),
            _ => None,
        }
    }
}

/// The channels an image was stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageColour {
    /// One gray sample per pixel.
    Gray,
    /// Gray and alpha.
    GrayAlpha,
    /// Red, green, blue.
    Rgb,
    /// Red, green, blue, alpha.
    Rgba,
}

impl ImageColour {
    fn channels(self) -> usize {
        match self {
            ImageColour::Gray => 1,
            ImageColour::GrayAlpha => 2,
            ImageColour::Rgb => 3,
            ImageColour::Rgba => 4,
        }
    }
}

/// What writing an image produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageStats {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The channels stored.
    pub colour: ImageColour,
    /// Bytes written.
    pub bytes: u64,
}

/// The fewest channels that hold `rgba` exactly.
fn smallest_colour(rgba: &[u8]) -> ImageColour {
    let (mut opaque, mut gray) = (true, true);
    for pixel in rgba.chunks_exact(4) {
        if let [r, g, b, a] = pixel {
            opaque &= *a == 255;
            gray &= r == g && g == b;
        }
        if !opaque && !gray {
            break;
        }
    }
    match (gray, opaque) {
        (true, true) => ImageColour::Gray,
        (true, false) => ImageColour::GrayAlpha,
        (false, true) => ImageColour::Rgb,
        (false, false) => ImageColour::Rgba,
    }
}

/// The samples of `rgba` with only the channels of `colour`; `None` when that is `rgba` itself.
fn reduce(rgba: &[u8], colour: ImageColour) -> Option<Vec<u8>> {
    let pick: fn(&[u8]) -> &[u8] = match colour {
        ImageColour::Rgba => return None,
        ImageColour::Gray => |p| p.get(..1).unwrap_or_default(),
        ImageColour::Rgb => |p| p.get(..3).unwrap_or_default(),
        ImageColour::GrayAlpha => |p| p.get(3..4).unwrap_or_default(),
    };
    let pixels = rgba.len() / 4;
    let mut out = Vec::with_capacity(pixels.saturating_mul(colour.channels()));
    for pixel in rgba.chunks_exact(4) {
        if colour == ImageColour::GrayAlpha {
            out.extend_from_slice(pixel.get(..1).unwrap_or_default());
        }
        out.extend_from_slice(pick(pixel));
    }
    Some(out)
}

/// Writes `rgba` (`width x height x 4` bytes) as an 8-bit PNG with the fewest exact channels.
///
/// Compression is the png crate's `Fast` setting (the `fdeflate` encoder) with adaptive row
/// filters; see the bench `rebuild` for its figures.
///
/// # Errors
///
/// [`RebuildError::ZeroDimension`] or [`RebuildError::PixelCountMismatch`] for a buffer that does
/// not match the size, [`RebuildError::Write`] when the output fails.
pub fn write_png<W: Write>(
    out: W,
    width: u32,
    height: u32,
    rgba: &[u8],
) -> Result<ImageStats, RebuildError> {
    check_pixels(width, height, 4, rgba.len())?;
    let colour = smallest_colour(rgba);
    let reduced = reduce(rgba, colour);
    let samples = reduced.as_deref().unwrap_or(rgba);

    let mut out = CountingWriter::new(out);
    let mut encoder = ::png::Encoder::new(&mut out, width, height);
    encoder.set_color(match colour {
        ImageColour::Gray => ::png::ColorType::Grayscale,
        ImageColour::GrayAlpha => ::png::ColorType::GrayscaleAlpha,
        ImageColour::Rgb => ::png::ColorType::Rgb,
        ImageColour::Rgba => ::png::ColorType::Rgba,
    });
    encoder.set_depth(::png::BitDepth::Eight);
    encoder.set_compression(::png::Compression::Fast);
    encoder.set_filter(::png::Filter::Adaptive);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(samples).map_err(png_error)?;
    writer.finish().map_err(png_error)?;

    Ok(ImageStats {
        width,
        height,
        colour,
        bytes: out.written,
    })
}

fn png_error(error: ::png::EncodingError) -> RebuildError {
    match error {
        ::png::EncodingError::IoError(e) => RebuildError::Write(e),
        other => RebuildError::Encode {
            format: "png",
            reason: other.to_string(),
        },
    }
}

/// Writes `rgba` (`width x height x 4` bytes) in `format`.
///
/// JPEG has no alpha channel, so each pixel is composited on white first
/// (`c' = (c * a + 255 * (255 - a)) / 255`, rounded): a transparent area shows as the blank paper
/// a viewer would most likely show behind it. Gray images become one-component JPEG; colour uses
/// 4:2:0 subsampling. WebP keeps alpha and is lossless.
///
/// # Errors
///
/// As [`write_png`], plus [`RebuildError::InvalidQuality`] for a JPEG quality outside 1 to 100
/// and [`RebuildError::Encode`] when a format cannot hold the size (JPEG: 65535 per side, WebP:
/// 16384 per side).
pub fn write_image<W: Write>(
    out: W,
    format: ImageFormat,
    width: u32,
    height: u32,
    rgba: &[u8],
) -> Result<ImageStats, RebuildError> {
    match format {
        ImageFormat::Png => write_png(out, width, height, rgba),
        ImageFormat::Jpeg { quality } => {
            check_quality(quality)?;
            check_pixels(width, height, 4, rgba.len())?;
            let flat = on_white(rgba);
            let gray = flat
                .chunks_exact(3)
                .all(|p| matches!(p, [r, g, b] if r == g && g == b));
            let (samples, colour) = if gray {
                (
                    flat.chunks_exact(3)
                        .map(|p| p.first().copied().unwrap_or(0))
                        .collect(),
                    ImageColour::Gray,
                )
            } else {
                (flat, ImageColour::Rgb)
            };
            let jpeg = encode_jpeg(width, height, &samples, gray, quality)?;
            let mut out = out;
            out.write_all(&jpeg)?;
            out.flush()?;
            Ok(ImageStats {
                width,
                height,
                colour,
                bytes: jpeg.len() as u64,
            })
        }
        ImageFormat::WebpLossless => {
            check_pixels(width, height, 4, rgba.len())?;
            let colour = smallest_colour(rgba);
            let reduced = reduce(rgba, colour);
            let samples = reduced.as_deref().unwrap_or(rgba);
            let webp_colour = match colour {
                ImageColour::Gray => image_webp::ColorType::L8,
                ImageColour::GrayAlpha => image_webp::ColorType::La8,
                ImageColour::Rgb => image_webp::ColorType::Rgb8,
                ImageColour::Rgba => image_webp::ColorType::Rgba8,
            };
            let mut out = CountingWriter::new(out);
            image_webp::WebPEncoder::new(&mut out)
                .encode(samples, width, height, webp_colour)
                .map_err(|e| match e {
                    image_webp::EncodingError::IoError(e) => RebuildError::Write(e),
                    other => RebuildError::Encode {
                        format: "webp",
                        reason: other.to_string(),
                    },
                })?;
            out.flush()?;
            Ok(ImageStats {
                width,
                height,
                colour,
                bytes: out.written,
            })
        }
    }
}

/// RGB of `rgba` composited on white: how a transparent image looks on paper, and what JPEG
/// output and a one-page PDF of an image hold.
pub fn on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((rgba.len() / 4).saturating_mul(3));
    for pixel in rgba.chunks_exact(4) {
        let alpha = u32::from(pixel.get(3).copied().unwrap_or(255));
        for &c in pixel.get(..3).unwrap_or_default() {
            let blended = (u32::from(c) * alpha + 255 * (255 - alpha) + 127) / 255;
            out.push(blended.min(255) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_png;

    fn decode(png: &[u8]) -> (::png::ColorType, Vec<u8>) {
        let mut reader = ::png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.color_type, buf)
    }

    fn rgba(pixels: &[[u8; 4]]) -> Vec<u8> {
        pixels.concat()
    }

    #[test]
    fn opaque_gray_image_is_stored_gray() {
        let input = rgba(&[[7, 7, 7, 255], [200, 200, 200, 255]]);
        let mut out = Vec::new();
        let stats = write_png(&mut out, 2, 1, &input).unwrap();
        assert_eq!(stats.colour, ImageColour::Gray);
        assert_eq!(decode(&out), (::png::ColorType::Grayscale, vec![7, 200]));
    }

    #[test]
    fn transparent_gray_image_keeps_alpha() {
        let input = rgba(&[[7, 7, 7, 0], [200, 200, 200, 255]]);
        let mut out = Vec::new();
        write_png(&mut out, 2, 1, &input).unwrap();
        assert_eq!(
            decode(&out),
            (::png::ColorType::GrayscaleAlpha, vec![7, 0, 200, 255])
        );
    }

    #[test]
    fn opaque_colour_image_drops_alpha() {
        let input = rgba(&[[1, 2, 3, 255], [4, 5, 6, 255]]);
        let mut out = Vec::new();
        write_png(&mut out, 1, 2, &input).unwrap();
        assert_eq!(
            decode(&out),
            (::png::ColorType::Rgb, vec![1, 2, 3, 4, 5, 6])
        );
    }

    #[test]
    fn colour_with_alpha_is_kept_exactly() {
        let input = rgba(&[[1, 2, 3, 4], [5, 6, 7, 8]]);
        let mut out = Vec::new();
        write_png(&mut out, 2, 1, &input).unwrap();
        assert_eq!(decode(&out), (::png::ColorType::Rgba, input));
    }

    #[test]
    fn png_is_deterministic_and_passes_the_checker() {
        let input: Vec<u8> = (0..50 * 30 * 4).map(|i| (i * 7 % 251) as u8).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_png(&mut a, 50, 30, &input).unwrap();
        write_png(&mut b, 50, 30, &input).unwrap();
        assert_eq!(a, b);
        assert_eq!(check_png(&a).unwrap(), (50, 30));
    }

    #[test]
    fn png_refuses_wrong_buffer_length() {
        assert!(matches!(
            write_png(Vec::new(), 2, 2, &[0; 15]),
            Err(RebuildError::PixelCountMismatch { .. })
        ));
    }

    #[test]
    fn jpeg_composites_transparency_on_white() {
        assert_eq!(
            on_white(&[0, 0, 0, 0, 10, 20, 30, 255, 0, 0, 0, 128]),
            vec![255, 255, 255, 10, 20, 30, 127, 127, 127]
        );
    }

    #[test]
    fn jpeg_output_starts_with_soi() {
        let input: Vec<u8> = (0..16 * 16 * 4).map(|i| (i % 256) as u8).collect();
        let mut out = Vec::new();
        let stats =
            write_image(&mut out, ImageFormat::Jpeg { quality: 80 }, 16, 16, &input).unwrap();
        assert!(out.starts_with(&[0xFF, 0xD8]));
        assert_eq!(stats.bytes, out.len() as u64);
    }

    #[test]
    fn jpeg_refuses_quality_above_100() {
        let result = write_image(
            Vec::new(),
            ImageFormat::Jpeg { quality: 101 },
            1,
            1,
            &[0; 4],
        );
        assert!(matches!(result, Err(RebuildError::InvalidQuality(101))));
    }

    #[test]
    fn webp_round_trip_is_exact() {
        let input: Vec<u8> = (0..9 * 7)
            .flat_map(|i| [i as u8, (i * 3) as u8, 9, (i * 5) as u8])
            .collect();
        let mut out = Vec::new();
        write_image(&mut out, ImageFormat::WebpLossless, 9, 7, &input).unwrap();
        let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(&out)).unwrap();
        let mut decoded = vec![0; decoder.output_buffer_size().unwrap()];
        decoder.read_image(&mut decoded).unwrap();
        assert_eq!(decoded, input);
    }

    #[test]
    fn extensions_map_to_formats() {
        assert_eq!(ImageFormat::from_extension("PNG"), Some(ImageFormat::Png));
        assert_eq!(
            ImageFormat::from_extension("jpeg"),
            Some(ImageFormat::Jpeg { quality: 85 })
        );
        assert_eq!(
            ImageFormat::from_extension("Jpg"),
            Some(ImageFormat::Jpeg { quality: 85 })
        );
        assert_eq!(
            ImageFormat::from_extension("webp"),
            Some(ImageFormat::WebpLossless)
        );
        assert_eq!(ImageFormat::from_extension("gif"), None);
    }
}
