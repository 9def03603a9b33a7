//! `serve` end to end: real images in, the pixel stream out, parsed by the strict reader.

use std::io::{Cursor, Write};

use image::{
    DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgb32FImage, RgbImage, Rgba, RgbaImage,
};
use image_uvm::{serve, DecodeOptions, ServeError, SourceFormat, MAX_HINT_LINE_BYTES};

use crate::util::{call, corpus, encode, huge_png, near, pattern, pixel, serve_err, served};

// ---- every supported format, generated here ----

/// Lossless formats: the served pixels equal the source converted to 8-bit RGBA.
#[test]
fn lossless_formats_round_trip_exactly() {
    let rgba = DynamicImage::ImageRgba8(pattern());
    let rgb = DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(pattern()).to_rgb8());
    let rgba16 = DynamicImage::ImageRgba16(DynamicImage::ImageRgba8(pattern()).to_rgba16());
    let cases: [(&DynamicImage, ImageFormat, SourceFormat, &[u8]); 9] = [
        (&rgba, ImageFormat::Png, SourceFormat::Png, b"-\n"),
        (&rgba, ImageFormat::Tiff, SourceFormat::Tiff, b"tiff:-\n"),
        (&rgba, ImageFormat::WebP, SourceFormat::WebP, b"-\n"),
        (&rgba, ImageFormat::Ico, SourceFormat::Ico, b"ico:-\n"),
        (&rgba, ImageFormat::Tga, SourceFormat::Tga, b"tga:-\n"),
        (&rgba, ImageFormat::Qoi, SourceFormat::Qoi, b"-\n"),
        (&rgba, ImageFormat::Bmp, SourceFormat::Bmp, b"bmp:-\n"),
        (&rgb, ImageFormat::Pnm, SourceFormat::Pnm, b"ppm:-\n"),
        (
            &rgba16,
            ImageFormat::Farbfeld,
            SourceFormat::Farbfeld,
            b"ff:-\n",
        ),
    ];
    for (source, encoding, expected_format, hint) in cases {
        let (summary, image) = served(hint, &encode(source, encoding));
        assert_eq!(summary.format, expected_format);
        assert_eq!((image.width, image.height), (37, 23), "{expected_format}");
        assert_eq!(
            image.pixels,
            source.to_rgba8().into_raw(),
            "{expected_format}"
        );
        assert_eq!(summary.frames_dropped, 0);
    }
}

/// GIF is lossless for an image of at most 256 opaque colours.
#[test]
fn gif_with_few_colours_round_trips_exactly() {
    let source = RgbaImage::from_fn(20, 10, |x, y| {
        Rgba([(x % 4 * 80) as u8, (y % 4 * 80) as u8, 128, 255])
    });
    let (summary, image) = served(
        b"gif:-\n",
        &encode(&DynamicImage::ImageRgba8(source.clone()), ImageFormat::Gif),
    );
    assert_eq!(summary.format, SourceFormat::Gif);
    assert_eq!(image.pixels, source.into_raw());
}

/// JPEG is lossy: the served pixels equal the `image` crate's own decode of the same bytes.
#[test]
fn jpeg_matches_the_image_crates_decode() {
    let bytes = encode(
        &DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(pattern()).to_rgb8()),
        ImageFormat::Jpeg,
    );
    let (summary, image) = served(b"jpeg:-\n", &bytes);
    assert_eq!(summary.format, SourceFormat::Jpeg);
    let reference = image::load_from_memory(&bytes).unwrap().to_rgba8();
    assert_eq!(image.pixels, reference.into_raw());
}

/// The format comes from the bytes, whatever the hint says.
#[test]
fn wrong_hint_is_ignored() {
    let bytes = encode(&DynamicImage::ImageRgba8(pattern()), ImageFormat::Png);
    let (summary, image) = served(b"jpeg:-\n", &bytes);
    assert_eq!(summary.format, SourceFormat::Png);
    assert_eq!(image.pixels, pattern().into_raw());
}

// ---- sample conversion ----

#[test]
fn sixteen_bit_samples_round_to_eight_bits() {
    let values: [u16; 8] = [0, 128, 129, 257, 32767, 32896, 65407, 65535];
    let source = ImageBuffer::<Rgba<u16>, Vec<u16>>::from_fn(values.len() as u32, 1, |x, _| {
        let v = values[x as usize];
        Rgba([v, v, v, 65535])
    });
    let (_, image) = served(
        b"-\n",
        &encode(&DynamicImage::ImageRgba16(source), ImageFormat::Png),
    );
    for (x, &v) in values.iter().enumerate() {
        let expected = ((u32::from(v) * 255 + 32767) / 65535) as u8;
        assert_eq!(
            pixel(&image, x as u32, 0),
            [expected, expected, expected, 255],
            "v={v}"
        );
    }
}

#[test]
fn float_samples_are_clamped_and_rounded() {
    let values: [f32; 6] = [-0.5, 0.0, 0.25, 0.5, 1.0, 7.0];
    let source = Rgb32FImage::from_fn(values.len() as u32, 1, |x, _| {
        let v = values[x as usize];
        Rgb([v, v, v])
    });
    let (_, image) = served(
        b"-\n",
        &encode(&DynamicImage::ImageRgb32F(source), ImageFormat::Tiff),
    );
    let expected = [0u8, 0, 64, 128, 255, 255];
    for (x, &e) in expected.iter().enumerate() {
        assert_eq!(
            pixel(&image, x as u32, 0),
            [e, e, e, 255],
            "value {}",
            values[x]
        );
    }
}

#[test]
fn gray_is_copied_to_all_three_channels() {
    let source =
        ImageBuffer::<Luma<u8>, Vec<u8>>::from_fn(16, 4, |x, y| Luma([(x * 16 + y) as u8]));
    let (_, image) = served(
        b"-\n",
        &encode(&DynamicImage::ImageLuma8(source.clone()), ImageFormat::Png),
    );
    for (x, y, Luma([v])) in source.enumerate_pixels() {
        assert_eq!(pixel(&image, x, y), [*v, *v, *v, 255]);
    }
}

/// Adobe YCCK (what libjpeg writes for CMYK) comes out in the right colours.
#[test]
fn ycck_jpeg_has_the_right_colours() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ycck.jpg")).unwrap();
    let (summary, image) = served(b"-\n", &bytes);
    assert_eq!(summary.format, SourceFormat::Jpeg);
    assert_eq!((image.width, image.height), (40, 8));
    let expected = [
        [255, 0, 0, 255],
        [0, 255, 0, 255],
        [0, 0, 255, 255],
        [255, 255, 255, 255],
        [0, 0, 0, 255],
    ];
    for (block, colour) in expected.into_iter().enumerate() {
        let got = pixel(&image, block as u32 * 8 + 4, 4);
        assert!(
            near(got, colour, 24),
            "block {block}: got {got:?}, want {colour:?}"
        );
    }
}

// ---- EXIF orientation ----

/// Inserts an APP1 Exif segment with the given Orientation right after the SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
    let tiff: [u8; 26] = [
        b'M',
        b'M',
        0,
        42,
        0,
        0,
        0,
        8, // big-endian TIFF header, first IFD at offset 8
        0,
        1, // one entry
        0x01,
        0x12,
        0,
        3,
        0,
        0,
        0,
        1,
        0,
        orientation,
        0,
        0, // Orientation, SHORT, count 1
        0,
        0,
        0,
        0, // no next IFD
    ];
    let length = (2 + 6 + tiff.len()) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A 40 x 20 JPEG, red in the top-left quadrant, blue elsewhere.
fn quadrant_jpeg() -> Vec<u8> {
    let source = RgbImage::from_fn(40, 20, |x, y| {
        if x < 20 && y < 10 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    encode(&DynamicImage::ImageRgb8(source), ImageFormat::Jpeg)
}

#[test]
fn exif_orientation_six_is_turned_upright() {
    let (summary, image) = served(b"-\n", &with_exif_orientation(&quadrant_jpeg(), 6));
    assert!(summary.reoriented);
    // Orientation 6: the stored image is shown turned 90 degrees clockwise, so its top-left
    // quadrant ends up top-right.
    assert_eq!((image.width, image.height), (20, 40));
    assert!(
        near(pixel(&image, 15, 5), [255, 0, 0, 255], 40),
        "{:?}",
        pixel(&image, 15, 5)
    );
    assert!(
        near(pixel(&image, 5, 5), [0, 0, 255, 255], 40),
        "{:?}",
        pixel(&image, 5, 5)
    );
    assert!(near(pixel(&image, 15, 30), [0, 0, 255, 255], 40));
}

#[test]
fn jpeg_without_exif_is_left_as_stored() {
    let (summary, image) = served(b"-\n", &quadrant_jpeg());
    assert!(!summary.reoriented);
    assert_eq!((image.width, image.height), (40, 20));
    assert!(near(pixel(&image, 5, 5), [255, 0, 0, 255], 40));
}

/// The limits apply to the upright size: 60 x 30 fits 64 x 32, but turned it is 30 x 60.
#[test]
fn limits_apply_after_orientation() {
    let source = RgbImage::from_pixel(60, 30, Rgb([9, 9, 9]));
    let bytes = with_exif_orientation(
        &encode(&DynamicImage::ImageRgb8(source), ImageFormat::Jpeg),
        6,
    );
    let options = DecodeOptions {
        max_width: 64,
        max_height: 32,
        ..DecodeOptions::default()
    };
    let err = call(b"-\n", &bytes, &options).unwrap_err();
    assert!(
        matches!(
            err,
            ServeError::DimensionsTooLarge {
                width: 30,
                height: 60,
                ..
            }
        ),
        "{err}"
    );
}

// ---- corpus ----

#[test]
fn corpus_gray_png() {
    let bytes = corpus("camera.png");
    let (summary, image) = served(b"png:-\n", &bytes);
    assert_eq!((summary.width, summary.height), (512, 512));
    let reference = image::load_from_memory(&bytes).unwrap().to_luma8();
    for (x, y, Luma([v])) in reference.enumerate_pixels().step_by(997) {
        assert_eq!(pixel(&image, x, y), [*v, *v, *v, 255]);
    }
}

#[test]
fn corpus_rgb_png() {
    let bytes = corpus("astronaut.png");
    let (_, image) = served(b"-\n", &bytes);
    assert_eq!(
        image.pixels,
        image::load_from_memory(&bytes)
            .unwrap()
            .to_rgba8()
            .into_raw()
    );
}

#[test]
fn corpus_jpeg_with_exif() {
    let (summary, image) = served(b"jpg:-\n", &corpus("hubble_deep_field.jpg"));
    assert_eq!(summary.format, SourceFormat::Jpeg);
    assert_eq!((image.width, image.height), (1000, 872));
}

#[test]
fn corpus_still_gif() {
    let (summary, image) = served(b"gif:-\n", &corpus("python.gif"));
    assert_eq!((image.width, image.height), (673, 230));
    assert_eq!(summary.frames_dropped, 0);
}

#[test]
fn corpus_animated_gif_sends_the_first_frame() {
    let bytes = corpus("no_time_for_that_tiny.gif");
    let (summary, image) = served(b"gif:-\n", &bytes);
    assert_eq!((image.width, image.height), (14, 25));
    assert!(summary.frames_dropped > 0);
    let first = image::load_from_memory(&bytes).unwrap().to_rgba8();
    assert_eq!(image.pixels, first.into_raw());
}

#[test]
fn corpus_sixteen_bit_gray_tiff() {
    let bytes = corpus("chessboard_GRAY_U16.tif");
    let (summary, image) = served(b"tif:-\n", &bytes);
    assert_eq!(summary.format, SourceFormat::Tiff);
    assert_eq!((image.width, image.height), (200, 200));
    let DynamicImage::ImageLuma16(reference) = image::load_from_memory(&bytes).unwrap() else {
        panic!("corpus file is not 16-bit gray");
    };
    for (x, y, Luma([v])) in reference.enumerate_pixels().step_by(101) {
        let e = ((u32::from(*v) * 255 + 32767) / 65535) as u8;
        assert_eq!(pixel(&image, x, y), [e, e, e, 255]);
    }
}

#[test]
fn corpus_webp() {
    let (summary, image) = served(b"webp:-\n", &corpus("wood-d.webp"));
    assert_eq!(summary.format, SourceFormat::WebP);
    assert_eq!((image.width, image.height), (4096, 4096));
}

/// 64-bit float samples: the `image` crate cannot decode them, and says so.
#[test]
fn corpus_float64_tiff_is_refused_clearly() {
    let err = serve_err(b"tif:-\n", &corpus("multipage_rgb.tif"));
    assert!(
        matches!(
            err,
            ServeError::UnsupportedFeature {
                format: SourceFormat::Tiff,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("64"), "{err}");
}

// ---- animation ----

#[test]
fn apng_counts_the_frames_it_drops() {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 4, 3);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_animated(3, 0).unwrap();
        let mut writer = encoder.write_header().unwrap();
        for i in 0..3u8 {
            writer.write_image_data(&[i * 80; 4 * 3 * 4]).unwrap();
        }
        writer.finish().unwrap();
    }
    let (summary, image) = served(b"png:-\n", &bytes);
    assert_eq!(summary.frames_dropped, 2);
    assert_eq!(pixel(&image, 0, 0), [0, 0, 0, 0]);
}

// ---- hostile input ----

/// A 65535 x 65535 PNG header in a tiny file is refused on its declared size.
#[test]
fn huge_declared_png_is_refused() {
    let bytes = huge_png();
    let err = serve_err(b"-\n", &bytes);
    assert!(
        matches!(
            err,
            ServeError::DimensionsTooLarge {
                width: 65535,
                height: 65535,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn truncated_png_is_a_decode_error() {
    let bytes = encode(&DynamicImage::ImageRgba8(pattern()), ImageFormat::Png);
    let err = serve_err(b"-\n", &bytes[..bytes.len() / 2]);
    assert!(
        matches!(
            err,
            ServeError::Decode {
                format: SourceFormat::Png,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn over_long_hint_line_is_refused() {
    let mut hint = vec![b'p'; MAX_HINT_LINE_BYTES];
    hint.extend_from_slice(b":-\n");
    let bytes = encode(&DynamicImage::ImageRgba8(pattern()), ImageFormat::Png);
    assert!(matches!(
        serve_err(&hint, &bytes),
        ServeError::BadHintLine(_)
    ));
}

#[test]
fn file_over_the_byte_cap_is_refused() {
    let bytes = encode(&DynamicImage::ImageRgba8(pattern()), ImageFormat::Png);
    let cap = (bytes.len() - 1) as u64;
    let options = DecodeOptions {
        max_image_bytes: cap,
        ..DecodeOptions::default()
    };
    let err = call(b"-\n", &bytes, &options).unwrap_err();
    assert!(
        matches!(err, ServeError::ImageTooLarge { limit } if limit == cap),
        "{err}"
    );
    // Exactly at the cap is fine.
    let options = DecodeOptions {
        max_image_bytes: cap + 1,
        ..DecodeOptions::default()
    };
    assert!(call(b"-\n", &bytes, &options).is_ok());
}

#[test]
fn empty_and_unknown_input_are_refused() {
    assert!(matches!(serve_err(b"-\n", b""), ServeError::EmptyImage));
    assert!(matches!(
        serve_err(b"-\n", b"just some text"),
        ServeError::UnsupportedFormat
    ));
    // Recognised by magic number, but its codec is not built in.
    assert!(matches!(
        serve_err(b"-\n", b"#?RADIANCE\n"),
        ServeError::UnsupportedFormat
    ));
}

#[test]
fn nothing_is_written_on_failure() {
    let mut out = Vec::new();
    let input = b"-\n\x89PNG\r\n\x1a\ngarbage".to_vec();
    assert!(serve(&mut Cursor::new(input), &mut out, &DecodeOptions::default()).is_err());
    assert!(out.is_empty());
}

/// A writer that fails, as a closed pipe does.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_failure_is_reported() {
    let mut input = b"-\n".to_vec();
    input.extend(encode(
        &DynamicImage::ImageRgba8(pattern()),
        ImageFormat::Png,
    ));
    let err = serve(
        &mut Cursor::new(input),
        &mut ClosedPipe,
        &DecodeOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ServeError::Write(_)), "{err}");
}
