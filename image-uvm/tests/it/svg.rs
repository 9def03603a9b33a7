//! SVG through resvg: size rules, and no access to files named by the document.

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use image_uvm::{ServeError, SourceFormat};

use crate::util::{encode, huge_png, pixel, serve_err, served};

const TRANSPARENT: [u8; 4] = [0, 0, 0, 0];

/// `data:` URL with every byte percent-encoded (valid, and needs no base64 code here).
fn data_url(mime: &str, bytes: &[u8]) -> String {
    let mut url = format!("data:{mime},");
    for b in bytes {
        url.push_str(&format!("%{b:02X}"));
    }
    url
}

fn green_png() -> Vec<u8> {
    encode(
        &DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([0, 255, 0, 255]))),
        ImageFormat::Png,
    )
}

fn svg_with_image(href: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="20">
             <image x="0" y="0" width="20" height="20" xlink:href="{href}"/>
             <image x="20" y="0" width="20" height="20" href="{href}"/>
           </svg>"#
    )
}

#[test]
fn svg_draws_at_its_stated_size() {
    let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="50">
        <rect x="0" y="0" width="50" height="50" fill="#ff0000"/></svg>"##;
    let (summary, image) = served(b"svg:-\n", svg);
    assert_eq!(summary.format, SourceFormat::Svg);
    assert_eq!((image.width, image.height), (100, 50));
    assert_eq!(pixel(&image, 25, 25), [255, 0, 0, 255]);
    assert_eq!(pixel(&image, 75, 25), TRANSPARENT);
}

#[test]
fn svg_is_detected_without_a_hint() {
    let with_declaration = b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"3\" height=\"2\"/>";
    let after_bom_and_blanks =
        b"\xEF\xBB\xBF \n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"3\" height=\"2\"/>";
    for svg in [&with_declaration[..], &after_bom_and_blanks[..]] {
        let (summary, image) = served(b"-\n", svg);
        assert_eq!(summary.format, SourceFormat::Svg);
        assert_eq!((image.width, image.height), (3, 2));
    }
}

#[test]
fn unsized_svg_gets_the_default_long_side() {
    let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 10">
        <rect width="10" height="10" fill="#0000ff"/></svg>"##;
    let (_, image) = served(b"svg:-\n", svg);
    assert_eq!((image.width, image.height), (1024, 512));
    assert_eq!(pixel(&image, 256, 256), [0, 0, 255, 255]);
    assert_eq!(pixel(&image, 768, 256), TRANSPARENT);
}

#[test]
fn huge_svg_is_scaled_into_the_limits() {
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="10000"/>"#;
    let (_, image) = served(b"svg:-\n", svg);
    assert_eq!((image.width, image.height), (8192, 819));
}

/// An embedded PNG is drawn; the same PNG named by its path on this machine is not read.
#[test]
fn svg_images_come_only_from_data_urls() {
    let (_, image) = served(
        b"svg:-\n",
        svg_with_image(&data_url("image/png", &green_png())).as_bytes(),
    );
    assert_eq!(pixel(&image, 10, 10), [0, 255, 0, 255]);
    assert_eq!(pixel(&image, 30, 10), [0, 255, 0, 255]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("green.png");
    std::fs::write(&path, green_png()).unwrap();
    for href in [
        path.display().to_string(),
        format!("file://{}", path.display()),
        "green.png".to_owned(),
    ] {
        let (_, image) = served(b"svg:-\n", svg_with_image(&href).as_bytes());
        assert_eq!(pixel(&image, 10, 10), TRANSPARENT, "{href}");
        assert_eq!(pixel(&image, 30, 10), TRANSPARENT, "{href}");
    }
}

#[test]
fn svg_embedded_image_over_the_limits_is_skipped() {
    let (_, image) = served(
        b"svg:-\n",
        svg_with_image(&data_url("image/png", &huge_png())).as_bytes(),
    );
    assert_eq!(pixel(&image, 10, 10), TRANSPARENT);
}

/// No fonts are present: text is left out, and the rest is drawn.
#[test]
fn svg_text_is_left_out() {
    let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" width="60" height="40">
        <rect x="50" y="0" width="10" height="10" fill="#ff0000"/>
        <text x="0" y="35" font-size="40" fill="#000000">Hi</text></svg>"##;
    let (_, image) = served(b"svg:-\n", svg);
    assert_eq!(pixel(&image, 55, 5), [255, 0, 0, 255]);
    assert!(image.pixels.chunks(4).filter(|p| p[3] != 0).count() == 100);
}

#[test]
fn broken_svg_is_a_decode_error() {
    let err = serve_err(
        b"svg:-\n",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"><rect></svg>",
    );
    assert!(
        matches!(
            err,
            ServeError::Decode {
                format: SourceFormat::Svg,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn external_entities_are_not_read() {
    let svg = br#"<?xml version="1.0"?>
        <!DOCTYPE svg [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
        <svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><title>&secret;</title></svg>"#;
    // Either refused or drawn empty; never an error that quotes the file.
    match crate::util::call(b"svg:-\n", svg, &image_uvm::DecodeOptions::default()) {
        Ok((summary, _)) => assert_eq!((summary.width, summary.height), (4, 4)),
        Err(e) => {
            let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            assert!(
                hostname.trim().is_empty() || !e.to_string().contains(hostname.trim()),
                "{e}"
            );
        }
    }
}
