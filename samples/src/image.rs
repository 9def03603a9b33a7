//! Hostile images: small files that declare enormous sizes, truncated files, malformed EXIF.

use std::io::Write as _;

use flate2::write::ZlibEncoder;

use crate::{Expectation, Kind, Sample};

/// A side far past every image limit (8192 x 5120) and past what memory could hold.
const HUGE_SIDE: u32 = 100_000;

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = flate2::Crc::new();
    for part in parts {
        crc.update(part);
    }
    crc.sum()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// An 8-bit RGB PNG of `width x height` whose IDAT holds `rows` (filter bytes included).
fn png(width: u32, height: u32, rows: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &zlib(rows));
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A valid 64 x 64 PNG with a gradient.
fn valid_png() -> Vec<u8> {
    let mut rows = Vec::new();
    for y in 0..64u8 {
        rows.push(0);
        for x in 0..64u8 {
            rows.extend_from_slice(&[x.wrapping_mul(4), y.wrapping_mul(4), 128]);
        }
    }
    png(64, 64, &rows)
}

/// A valid 64 x 64 baseline JPEG.
fn valid_jpeg() -> Vec<u8> {
    let mut pixels = Vec::with_capacity(64 * 64 * 3);
    for y in 0..64u8 {
        for x in 0..64u8 {
            pixels.extend_from_slice(&[x.wrapping_mul(4), y.wrapping_mul(4), 200]);
        }
    }
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, 90);
    let _ = encoder.encode(&pixels, 64, 64, jpeg_encoder::ColorType::Rgb);
    out
}

/// The valid JPEG with its frame header (SOF0) claiming `side x side`.
fn jpeg_declaring(side: u16) -> Vec<u8> {
    let mut jpeg = valid_jpeg();
    if let Some(sof) = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]) {
        // SOF0: marker, length (2), precision (1), height (2), width (2).
        if let Some(dims) = jpeg.get_mut(sof + 5..sof + 9) {
            dims[..2].copy_from_slice(&side.to_be_bytes());
            dims[2..].copy_from_slice(&side.to_be_bytes());
        }
    }
    jpeg
}

/// The valid JPEG with an APP1 EXIF block whose offsets and counts point far outside it.
fn jpeg_with_malformed_exif() -> Vec<u8> {
    let mut tiff = b"II*\x00".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    // One IFD entry: Orientation, type SHORT, a count of 2^32-1 values at offset 0xFFFFFFF0.
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&u32::MAX.to_le_bytes());
    tiff.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    // The next IFD points back at the first: a loop.
    tiff.extend_from_slice(&8u32.to_le_bytes());
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let len = u16::try_from(app1.len() + 2).unwrap_or(u16::MAX);

    let jpeg = valid_jpeg();
    let mut out = jpeg.get(..2).unwrap_or_default().to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(jpeg.get(2..).unwrap_or_default());
    out
}

/// A GIF whose logical screen is 65535 x 65535 around a single 1 x 1 frame.
fn gif_huge_screen() -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&u16::MAX.to_le_bytes());
    out.extend_from_slice(&u16::MAX.to_le_bytes());
    // Global colour table of 2 entries, background 0, no aspect ratio.
    out.extend_from_slice(&[0x80, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    // Image descriptor: at 0,0, 1 x 1, no local table.
    out.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
    // LZW, minimum code size 2: clear (4), index 0, end (5) in 3-bit codes.
    out.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    out.push(0x3B);
    out
}

/// A little-endian TIFF declaring `side x side` 8-bit gray pixels in one 16-byte strip.
fn tiff_huge(side: u32) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, side), // ImageWidth, LONG
        (257, 4, side), // ImageLength, LONG
        (258, 3, 8),    // BitsPerSample, SHORT
        (259, 3, 1),    // Compression: none
        (262, 3, 1),    // PhotometricInterpretation: black is zero
        (273, 4, 0),    // StripOffsets, patched below
        (277, 3, 1),    // SamplesPerPixel
        (278, 4, side), // RowsPerStrip
        (279, 4, 16),   // StripByteCounts
    ];
    let ifd_len = 2 + entries.len() * 12 + 4;
    let data_offset = u32::try_from(8 + ifd_len).unwrap_or(u32::MAX);
    let mut out = b"II*\x00".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&u16::try_from(entries.len()).unwrap_or(0).to_le_bytes());
    for (tag, kind, value) in entries {
        let value = if tag == 273 { data_offset } else { value };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        if kind == 3 {
            out.extend_from_slice(&u16::try_from(value).unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&[0x80; 16]);
    out
}

/// A WebP whose extended header (VP8X) declares a 16384 x 16384 canvas and nothing else.
fn webp_huge_canvas() -> Vec<u8> {
    let side: u32 = 16_384 - 1;
    let mut vp8x = vec![0u8; 10];
    vp8x[4..7].copy_from_slice(&side.to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&side.to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(b"VP8X");
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&vp8x);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A BMP declaring `side x side` 24-bit pixels with 16 bytes of data.
fn bmp_huge(side: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&(54u32 + 16).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&side.to_le_bytes());
    out.extend_from_slice(&side.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out.extend_from_slice(&[0x40; 16]);
    out
}

/// Every hostile image sample.
pub fn samples() -> Vec<Sample> {
    use Expectation::{MayConvert, MustFailCleanly};
    let image = |name: &str, extension: &str, expectation, bytes| {
        Sample::new(name, extension, Kind::Image, expectation, bytes)
    };
    let huge_png = png(HUGE_SIDE, HUGE_SIDE, &[0; 1024]);
    let valid = valid_png();
    let jpeg = valid_jpeg();
    vec![
        image("png-huge-ihdr", "png", MustFailCleanly, huge_png),
        image(
            "png-65535-square",
            "png",
            MustFailCleanly,
            png(65_535, 65_535, &[0; 64]),
        ),
        image("gif-huge-screen", "gif", MustFailCleanly, gif_huge_screen()),
        image(
            "tiff-huge",
            "tif",
            MustFailCleanly,
            tiff_huge(HUGE_SIDE * 10),
        ),
        image(
            "webp-huge-canvas",
            "webp",
            MustFailCleanly,
            webp_huge_canvas(),
        ),
        image(
            "jpeg-65000-square",
            "jpg",
            MustFailCleanly,
            jpeg_declaring(65_000),
        ),
        image("bmp-huge", "bmp", MustFailCleanly, bmp_huge(100_000)),
        image(
            "png-truncated-half",
            "png",
            MustFailCleanly,
            valid[..valid.len() / 2].to_vec(),
        ),
        image(
            "jpeg-truncated-half",
            "jpg",
            MayConvert,
            jpeg[..jpeg.len() / 2].to_vec(),
        ),
        image(
            "jpeg-malformed-exif",
            "jpg",
            MayConvert,
            jpeg_with_malformed_exif(),
        ),
        image("png-valid-control", "png", MayConvert, valid),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_chunk_crc_matches_the_spec_example() {
        // The CRC of an empty IEND chunk is fixed by the PNG specification.
        assert_eq!(crc32(&[b"IEND"]), 0xAE42_6082);
    }

    #[test]
    fn jpeg_declaring_patches_the_frame_header() {
        let jpeg = jpeg_declaring(65_000);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        assert_eq!(&jpeg[sof + 5..sof + 7], &65_000u16.to_be_bytes());
    }
}
