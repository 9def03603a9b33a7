//! Helpers shared by the integration tests.

use std::io::Cursor;
use std::path::PathBuf;

use converter_core::limits::StreamLimits;
use converter_core::stream::{read_rgba_image, RgbaImage as StreamImage};
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use image_uvm::{serve, DecodeOptions, DecodeSummary, ServeError};

pub fn corpus(name: &str) -> Vec<u8> {
    let path = PathBuf::from("/work/shared/corpus").join(name);
    let alt = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(name);
    std::fs::read(&path)
        .or_else(|_| std::fs::read(&alt))
        .unwrap_or_else(|e| {
            panic!(
                "corpus file {name} not found at {} or {}: {e}",
                path.display(),
                alt.display()
            )
        })
}

pub fn call(
    hint: &[u8],
    bytes: &[u8],
    options: &DecodeOptions,
) -> Result<(DecodeSummary, Vec<u8>), ServeError> {
    let mut input = hint.to_vec();
    input.extend_from_slice(bytes);
    let mut out = Vec::new();
    let summary = serve(&mut Cursor::new(input), &mut out, options)?;
    Ok((summary, out))
}

/// Serves `bytes` with the default options and parses the answer with the caller's strict
/// reader.
pub fn served(hint: &[u8], bytes: &[u8]) -> (DecodeSummary, StreamImage) {
    let (summary, out) = call(hint, bytes, &DecodeOptions::default()).expect("serve");
    let image = read_rgba_image(Cursor::new(out), &StreamLimits::IMAGE).expect("strict reader");
    assert_eq!((image.width, image.height), (summary.width, summary.height));
    (summary, image)
}

pub fn serve_err(hint: &[u8], bytes: &[u8]) -> ServeError {
    call(hint, bytes, &DecodeOptions::default()).expect_err("serve must fail")
}

pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A 37 x 23 pattern with many colours and varied alpha.
pub fn pattern() -> RgbaImage {
    RgbaImage::from_fn(37, 23, |x, y| {
        Rgba([
            (x * 7) as u8,
            (y * 11) as u8,
            ((x * y) % 256) as u8,
            (255 - x * 3) as u8,
        ])
    })
}

pub fn pixel(image: &StreamImage, x: u32, y: u32) -> [u8; 4] {
    let i = ((y * image.width + x) * 4) as usize;
    image.pixels[i..i + 4].try_into().unwrap()
}

pub fn near(a: [u8; 4], b: [u8; 4], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(&p, q)| p.abs_diff(q) <= tolerance)
}

/// A valid PNG signature and IHDR declaring 65535 x 65535 RGBA, one tiny IDAT, IEND.
pub fn huge_png() -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&65535u32.to_be_bytes());
    ihdr.extend_from_slice(&65535u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}
