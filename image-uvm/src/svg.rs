//! SVG drawn with resvg, with no file, font or network access.
//!
//! # Size
//! The drawing gets its intrinsic size: the root's `width` and `height` in CSS pixels (96 per
//! inch). When the root states neither (or only percentages), the long side is
//! [`SVG_DEFAULT_LONG_SIDE`](crate::SVG_DEFAULT_LONG_SIDE) pixels and the `viewBox` gives the
//! aspect ratio (a square without one). A size over the output limits is scaled down to fit,
//! keeping the aspect ratio; unlike a raster image, a drawing is not refused for its size.
//!
//! # What is not drawn
//! - Text: resvg is built without its text feature, so no font code or font file is present,
//!   and `<text>` elements are left out.
//! - `<image>` elements that name a file or URL: only `data:` URLs are used, and only PNG,
//!   JPEG, GIF and WebP within the output size limits. usvg's default resolver would read any
//!   path on the file system; ours never looks at one.
//! - Nested SVG documents in `<image>` elements.
//! - External XML entities (the XML parser is given no resolver, so it discards them).
//!
//! # Limitations
//! Drawing time is bounded only by the caller's deadline: a small file of nested `<use>`
//! references or large blurs can take long to draw.

use std::io::Cursor;
use std::sync::Arc;

use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg::{self, roxmltree, ImageHrefResolver, ImageKind};

use crate::hint::FormatHint;
use crate::{raster, DecodeOptions, Decoded, ServeError, SourceFormat};

/// Most XML nodes parsed. usvg itself stops at a million elements; this also counts text and
/// attribute-free nodes, and keeps the parser's memory to tens of megabytes.
pub const MAX_SVG_NODES: u32 = 2_000_000;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether `bytes` should be tried as SVG: the hint says so, or the first non-blank character
/// (after an optional UTF-8 byte order mark) opens an XML tag.
pub(crate) fn looks_like_svg(bytes: &[u8], hint: Option<FormatHint>) -> bool {
    if hint == Some(FormatHint::Svg) {
        return true;
    }
    let text = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

/// Parses and draws an SVG document into RGBA.
pub(crate) fn render(bytes: &[u8], options: &DecodeOptions) -> Result<Decoded, ServeError> {
    let decode_error = |message: String| ServeError::Decode {
        format: SourceFormat::Svg,
        message,
    };

    let text = std::str::from_utf8(bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes))
        .map_err(|_| decode_error("not UTF-8 text".to_owned()))?;
    let xml_options = roxmltree::ParsingOptions {
        // SVG files from editors often carry a DOCTYPE; roxmltree guards entity expansion.
        allow_dtd: true,
        nodes_limit: MAX_SVG_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(text, xml_options)
        .map_err(|e| decode_error(e.to_string()))?;
    let root = document.root_element();
    let states_size = has_absolute_length(root.attribute("width"))
        || has_absolute_length(root.attribute("height"));

    let long_side = options.svg_default_long_side.max(1) as f32;
    let usvg_options = usvg::Options {
        resources_dir: None,
        // Used by usvg only when neither a size nor a viewBox is given.
        default_size: usvg::Size::from_wh(long_side, long_side)
            .ok_or_else(|| decode_error("bad default size".to_owned()))?,
        image_href_resolver: checked_resolver(*options),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_xmltree(&document, &usvg_options)
        .map_err(|e| decode_error(e.to_string()))?;
    drop(document);

    let size = tree.size();
    let (width, height) = output_size(size.width(), size.height(), states_size, options);
    raster::check_dimensions(width, height, options)?;
    let mut pixmap = Pixmap::new(width, height)
        .ok_or_else(|| decode_error("cannot allocate the canvas".to_owned()))?;
    let transform = Transform::from_scale(
        width as f32 / size.width().max(f32::MIN_POSITIVE),
        height as f32 / size.height().max(f32::MIN_POSITIVE),
    );
    resvg::render(&tree, transform, &mut pixmap.as_mut());

    Ok(Decoded {
        width,
        height,
        // tiny-skia keeps premultiplied alpha; the stream carries straight alpha.
        pixels: pixmap.take_demultiplied(),
        frames_dropped: 0,
        reoriented: false,
    })
}

/// A `width`/`height` value that fixes a size (a number with or without a unit, not a
/// percentage of an unknown viewport).
fn has_absolute_length(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.trim().is_empty() && !v.trim_end().ends_with('%'))
}

/// The pixel size to draw at: intrinsic, or the default long side when the file states no
/// size, then scaled down into the limits; never below one pixel.
fn output_size(width: f32, height: f32, states_size: bool, options: &DecodeOptions) -> (u32, u32) {
    let (width, height) = (f64::from(width), f64::from(height));
    let mut scale = 1.0_f64;
    if !states_size {
        scale = f64::from(options.svg_default_long_side) / width.max(height);
    }
    let fit = (f64::from(options.max_width) / (width * scale))
        .min(f64::from(options.max_height) / (height * scale));
    if fit < 1.0 {
        scale *= fit;
    }
    // `as` saturates on out-of-range and NaN floats, and the clamp keeps both sides in 1..=max.
    let w = ((width * scale).round() as u32).clamp(1, options.max_width.max(1));
    let h = ((height * scale).round() as u32).clamp(1, options.max_height.max(1));
    (w, h)
}

/// An `<image>` resolver that ignores file names and URLs and accepts only embedded raster
/// images whose declared size is within the output limits, checked by the `image` crate before
/// resvg decodes them.
fn checked_resolver(options: DecodeOptions) -> ImageHrefResolver<'static> {
    ImageHrefResolver {
        resolve_data: Box::new(move |_mime, data: Arc<Vec<u8>>, _opts| {
            let format = image::guess_format(&data).ok()?;
            let mut reader = image::ImageReader::with_format(Cursor::new(data.as_slice()), format);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(options.max_width);
            limits.max_image_height = Some(options.max_height);
            limits.max_alloc = Some(options.max_decoder_alloc);
            reader.limits(limits);
            let (width, height) = reader.into_dimensions().ok()?;
            if width == 0 || height == 0 {
                return None;
            }
            match format {
                image::ImageFormat::Png => Some(ImageKind::PNG(data)),
                image::ImageFormat::Jpeg => Some(ImageKind::JPEG(data)),
                image::ImageFormat::Gif => Some(ImageKind::GIF(data)),
                image::ImageFormat::WebP => Some(ImageKind::WEBP(data)),
                _ => None,
            }
        }),
        resolve_string: Box::new(|_href, _opts| None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_after_blanks_and_bom_looks_like_svg() {
        assert!(looks_like_svg(
            b"\xEF\xBB\xBF \n<?xml version='1.0'?>",
            None
        ));
        assert!(!looks_like_svg(b"GIF89a", None));
    }

    #[test]
    fn hint_alone_makes_svg_a_candidate() {
        assert!(looks_like_svg(b"x", Some(FormatHint::Svg)));
    }

    #[test]
    fn percentages_do_not_fix_a_size() {
        assert!(!has_absolute_length(Some("100%")));
        assert!(!has_absolute_length(None));
        assert!(has_absolute_length(Some("10mm")));
    }

    #[test]
    fn unsized_drawing_gets_the_default_long_side() {
        let o = DecodeOptions::default();
        assert_eq!(output_size(24.0, 12.0, false, &o), (1024, 512));
    }

    #[test]
    fn sized_drawing_keeps_its_size() {
        let o = DecodeOptions::default();
        assert_eq!(output_size(300.0, 200.0, true, &o), (300, 200));
    }

    #[test]
    fn huge_drawing_is_scaled_into_the_limits() {
        let o = DecodeOptions::default();
        assert_eq!(output_size(100_000.0, 10_000.0, true, &o), (8192, 819));
        assert_eq!(output_size(1000.0, 100_000.0, true, &o), (51, 5120));
    }

    #[test]
    fn tiny_drawing_is_at_least_one_pixel() {
        let o = DecodeOptions::default();
        assert_eq!(output_size(0.01, 0.01, true, &o), (1, 1));
    }
}
