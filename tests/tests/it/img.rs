//! `qvm-convert-img` end to end through the local transport with the real image-uvm.

use std::fs;
use std::path::Path;

use converter_core::check::{check_pdf, check_png};

use crate::util::*;

/// The RGBA pixels of an image file, decoded by the `image` crate (the reference decode).
fn rgba(path: &Path) -> (u32, u32, Vec<u8>) {
    let reader = image::ImageReader::open(path)
        .expect("open")
        .with_guessed_format()
        .expect("read");
    let img = reader.decode().expect("decode").to_rgba8();
    (img.width(), img.height(), img.into_raw())
}

fn ok(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qubes_form_writes_dst_and_keeps_src() {
    let dir = tempfile::tempdir().unwrap();
    let src = copy_corpus("astronaut.png", dir.path());
    let before = sha256_file(&src);
    let out = convert_img(dir.path(), &["astronaut.png", "clean.png"]);
    ok(&out);
    assert_eq!(sha256_file(&src), before, "SRC is left in place, unchanged");
    let clean = dir.path().join("clean.png");
    check_png(&fs::read(&clean).unwrap()).expect("only IHDR, IDAT, IEND");
    assert_eq!(
        rgba(&clean),
        rgba(&src),
        "pixels equal the reference decode"
    );
    assert_eq!(listing(dir.path()), ["astronaut.png", "clean.png"]);
}

#[test]
fn jpeg_metadata_is_gone_and_pixels_match() {
    // hubble_deep_field.jpg carries an Exif block; the output carries nothing but pixels.
    let dir = tempfile::tempdir().unwrap();
    let src = copy_corpus("hubble_deep_field.jpg", dir.path());
    let out = convert_img(dir.path(), &["hubble_deep_field.jpg", "png:out.img"]);
    ok(&out);
    let bytes = fs::read(dir.path().join("out.img")).unwrap();
    check_png(&bytes).expect("a bare PNG despite the .img name");
    assert_eq!(rgba(&dir.path().join("out.img")), rgba(&src));
}

#[test]
fn text_chunk_and_trailing_payload_do_not_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, 4, 3);
        enc.set_color(png::ColorType::Rgb);
        enc.add_text_chunk("Comment".into(), "<script>alert(1)</script>".into())
            .unwrap();
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[200u8; 36]).unwrap();
    }
    png.extend_from_slice(b"PK\x03\x04 appended zip payload");
    fs::write(dir.path().join("dirty.png"), &png).unwrap();

    let out = convert_img(dir.path(), &["--json", "-i", "dirty.png"]);
    ok(&out);
    let clean = fs::read(dir.path().join("dirty.trusted.png")).unwrap();
    check_png(&clean).expect("no text chunk, nothing after IEND");
    assert!(!clean.windows(6).any(|w| w == b"script"));
    assert!(!clean.windows(4).any(|w| w == b"PK\x03\x04"));
    assert_eq!(
        listing(dir.path()),
        ["dirty.trusted.png"],
        "--in-place removed the original"
    );
}

#[test]
fn animated_gif_gives_the_first_frame_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    copy_corpus("no_time_for_that_tiny.gif", dir.path());
    let out = convert_img(
        dir.path(),
        &["--json", "-a", "orig", "no_time_for_that_tiny.gif"],
    );
    ok(&out);
    let report = &reports(&out)[0];
    assert!(report["frames_dropped"].as_u64().unwrap() > 0, "{report}");
    let clean = dir.path().join("no_time_for_that_tiny.trusted.png");
    let first = image::open(dir.path().join("orig/no_time_for_that_tiny.gif"))
        .unwrap()
        .to_rgba8();
    assert_eq!(
        rgba(&clean),
        (first.width(), first.height(), first.into_raw())
    );
}

#[test]
fn huge_declared_png_is_refused_without_output() {
    // A valid PNG header declaring 65535 x 65535 pixels, in a file of a few dozen bytes.
    let dir = tempfile::tempdir().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&65535u32.to_be_bytes());
    ihdr.extend_from_slice(&65535u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // A few bytes of image data and the end: a complete, tiny file.
    for (kind, data) in [
        (&b"IDAT"[..], &b"\x78\x9c\x03\x00\x00\x00\x00\x01"[..]),
        (b"IEND", b""),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    fs::write(dir.path().join("bomb.png"), &png).unwrap();

    let out = convert_img(dir.path(), &["--json", "bomb.png"]);
    assert_eq!(out.status.code(), Some(1));
    let error = reports(&out)[0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("65535"), "{error}");
    assert_eq!(listing(dir.path()), ["bomb.png"]);
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn batch_with_output_dir_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    fs::create_dir(&imgs).unwrap();
    fs::copy(corpus("camera.png"), imgs.join("camera.png")).unwrap();
    fs::copy(corpus("python.gif"), imgs.join("python.gif")).unwrap();
    fs::write(imgs.join("readme.txt"), b"not an image").unwrap();

    let out = convert_img(
        dir.path(),
        &[
            "-j", "2", "--json", "--format", "webp", "-o", "clean", "imgs",
        ],
    );
    ok(&out);
    assert_eq!(reports(&out).len(), 2);
    assert_eq!(
        listing(&dir.path().join("clean")),
        ["camera.trusted.webp", "python.trusted.webp"]
    );
    assert_eq!(listing(&imgs), ["readme.txt"]);
    assert_eq!(
        listing(&dir.path().join("QubesUntrustedImages")),
        ["camera.png", "python.gif"]
    );
    // Lossless WebP: exact pixels.
    assert_eq!(
        rgba(&dir.path().join("clean/camera.trusted.webp")).2,
        rgba(&dir.path().join("QubesUntrustedImages/camera.png")).2
    );
}

#[test]
fn image_becomes_a_one_page_pdf() {
    let dir = tempfile::tempdir().unwrap();
    copy_corpus("camera.png", dir.path());
    let out = convert_pdf(dir.path(), &["--json", "-r", "75", "-i", "camera.png"]);
    ok(&out);
    assert_eq!(reports(&out)[0]["service"], "image");
    let report = check_pdf(&fs::read(dir.path().join("camera.trusted.pdf")).unwrap()).unwrap();
    assert_eq!(report.pages.len(), 1);
    assert_eq!((report.pages[0].width, report.pages[0].height), (512, 512));
}

#[test]
fn unknown_output_extension_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_corpus("camera.png", dir.path());
    let out = convert_img(dir.path(), &["camera.png", "out.bmp"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(listing(dir.path()), ["camera.png"]);
}
