//! Raster formats through the `image` crate: size check before allocation, then decode,
//! 8-bit RGBA, EXIF orientation.

use std::io::Cursor;

use image::error::{LimitErrorKind, UnsupportedErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::hint::FormatHint;
use crate::{frames, DecodeOptions, Decoded, ServeError, SourceFormat};

/// The format named by the bytes' magic number; TGA, which has none, only when the hint says so.
pub(crate) fn detect(bytes: &[u8], hint: Option<FormatHint>) -> Option<ImageFormat> {
    match image::guess_format(bytes) {
        Ok(format) => Some(format),
        Err(_) if hint == Some(FormatHint::Tga) => Some(ImageFormat::Tga),
        Err(_) => None,
    }
}

/// Our name for a detected format, or `None` for one we recognise but do not serve (the
/// `image` crate's magic table also knows AVIF, DDS, HDR and OpenEXR, whose codecs are off).
pub(crate) fn source_format(format: ImageFormat) -> Option<SourceFormat> {
    Some(match format {
        ImageFormat::Png => SourceFormat::Png,
        ImageFormat::Jpeg => SourceFormat::Jpeg,
        ImageFormat::Gif => SourceFormat::Gif,
        ImageFormat::Bmp => SourceFormat::Bmp,
        ImageFormat::Tiff => SourceFormat::Tiff,
        ImageFormat::WebP => SourceFormat::WebP,
        ImageFormat::Ico => SourceFormat::Ico,
        ImageFormat::Pnm => SourceFormat::Pnm,
        ImageFormat::Tga => SourceFormat::Tga,
        ImageFormat::Qoi => SourceFormat::Qoi,
        ImageFormat::Farbfeld => SourceFormat::Farbfeld,
        _ => return None,
    })
}

/// Decodes the first frame of `bytes` into upright 8-bit RGBA.
pub(crate) fn decode(
    bytes: &[u8],
    image_format: ImageFormat,
    format: SourceFormat,
    options: &DecodeOptions,
) -> Result<Decoded, ServeError> {
    let map = |e| map_error(e, format, options);

    // Phase 1: the header. Only the allocation cap applies here, so that the declared size can
    // be read and checked below against the upright size; no pixel buffer exists yet.
    let mut header_limits = Limits::default();
    header_limits.max_alloc = Some(options.max_decoder_alloc);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(map)?;
    let (stored_width, stored_height) = decoder.dimensions();

    // A broken EXIF block is not worth refusing the image for: it is shown as stored.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let swaps = swaps_axes(orientation);
    let (width, height) = if swaps {
        (stored_height, stored_width)
    } else {
        (stored_width, stored_height)
    };
    check_dimensions(width, height, options)?;

    // Phase 2: the pixels, with the size limits on the stored image and the allocation cap
    // reduced by the output buffer, as `ImageReader::decode` does.
    let mut limits = Limits::default();
    limits.max_image_width = Some(if swaps {
        options.max_height
    } else {
        options.max_width
    });
    limits.max_image_height = Some(if swaps {
        options.max_width
    } else {
        options.max_height
    });
    limits.max_alloc = Some(options.max_decoder_alloc);
    limits.reserve(decoder.total_bytes()).map_err(map)?;
    decoder.set_limits(limits).map_err(map)?;
    let image = DynamicImage::from_decoder(decoder).map_err(map)?;

    // Phase 3: 8-bit RGBA first (a no-op move for RGBA8 sources), then turn upright, so that
    // at most two 8-bit buffers are alive at once.
    let mut rgba = DynamicImage::ImageRgba8(image.into_rgba8());
    rgba.apply_orientation(orientation);
    let rgba = rgba.into_rgba8();
    let (width, height) = rgba.dimensions();
    check_dimensions(width, height, options)?;

    Ok(Decoded {
        width,
        height,
        pixels: rgba.into_raw(),
        frames_dropped: frames::dropped(bytes, format),
        reoriented: orientation != Orientation::NoTransforms,
    })
}

fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Checks an upright size against the output limits.
pub(crate) fn check_dimensions(
    width: u32,
    height: u32,
    options: &DecodeOptions,
) -> Result<(), ServeError> {
    if width == 0 || height == 0 {
        return Err(ServeError::ZeroDimensions);
    }
    if width > options.max_width || height > options.max_height {
        return Err(ServeError::DimensionsTooLarge {
            width,
            height,
            max_width: options.max_width,
            max_height: options.max_height,
        });
    }
    Ok(())
}

fn map_error(error: ImageError, format: SourceFormat, options: &DecodeOptions) -> ServeError {
    match error {
        ImageError::Limits(limit) => match limit.kind() {
            LimitErrorKind::InsufficientMemory => ServeError::DecoderMemoryExceeded {
                format,
                limit: options.max_decoder_alloc,
            },
            // The declared size was checked before; a decoder that finds a larger one inside
            // (an icon entry, a TIFF page) reports it here without the numbers.
            LimitErrorKind::DimensionError => ServeError::Decode {
                format,
                message: "an inner image is over the size limit".to_owned(),
            },
            _ => ServeError::Decode {
                format,
                message: limit.to_string(),
            },
        },
        ImageError::Unsupported(unsupported) => match unsupported.kind() {
            UnsupportedErrorKind::Format(_) => ServeError::UnsupportedFormat,
            _ => ServeError::UnsupportedFeature {
                format,
                message: unsupported.to_string(),
            },
        },
        other => ServeError::Decode {
            format,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tga_needs_the_hint() {
        let not_magic = [0u8, 0, 2, 0, 0, 0, 0, 0];
        assert_eq!(detect(&not_magic, None), None);
        assert_eq!(
            detect(&not_magic, Some(FormatHint::Tga)),
            Some(ImageFormat::Tga)
        );
    }

    #[test]
    fn bytes_win_over_the_hint() {
        assert_eq!(
            detect(b"\x89PNG\r\n\x1a\n", Some(FormatHint::Tga)),
            Some(ImageFormat::Png)
        );
    }

    #[test]
    fn formats_whose_codec_is_off_are_not_served() {
        assert_eq!(source_format(ImageFormat::Hdr), None);
        assert_eq!(source_format(ImageFormat::Avif), None);
    }

    #[test]
    fn quarter_turns_swap_axes() {
        assert!(swaps_axes(Orientation::Rotate90));
        assert!(swaps_axes(Orientation::Rotate270FlipH));
        assert!(!swaps_axes(Orientation::Rotate180));
        assert!(!swaps_axes(Orientation::FlipVertical));
    }

    #[test]
    fn zero_size_is_its_own_error() {
        let o = DecodeOptions::default();
        assert!(matches!(
            check_dimensions(0, 5, &o),
            Err(ServeError::ZeroDimensions)
        ));
    }

    #[test]
    fn limits_are_inclusive() {
        let o = DecodeOptions::default();
        assert!(check_dimensions(o.max_width, o.max_height, &o).is_ok());
        assert!(matches!(
            check_dimensions(o.max_width + 1, 1, &o),
            Err(ServeError::DimensionsTooLarge { .. })
        ));
    }
}
