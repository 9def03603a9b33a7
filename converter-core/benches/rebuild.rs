//! Bench of the rebuild writers: time and size per page for each compression choice.
//!
//! Run with `cargo bench -p converter-core --bench rebuild`. It prints one line per case: the
//! median of several runs in milliseconds and the encoded size in bytes. Pages are 1275 x 1650
//! pixels (US Letter at 150 DPI). The text page is synthetic (white with anti-aliased black
//! strokes laid out in lines, like rendered text); the photo page is a crop of the corpus photo
//! `TwoWings.jpg`, or a synthetic gradient with noise when the corpus is absent.

use std::time::{Duration, Instant};

use converter_core::rebuild::pdf::{encode_page, Compression, PdfOptions, PdfWriter};
use converter_core::rebuild::png::{write_image, ImageFormat};

const WIDTH: u32 = 1275;
const HEIGHT: u32 = 1650;
const RUNS: usize = 7;
const PHOTO: &str = "/work/shared/corpus/TwoWings.jpg";

/// A deterministic pseudo-random sequence (xorshift), so every run benches the same page.
struct Noise(u32);

impl Noise {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// White page with lines of glyph-like strokes whose edges are anti-aliased gray.
fn text_page(anti_aliased: bool) -> Vec<u8> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut gray = vec![255u8; w * h];
    let mut noise = Noise(0x1234_5678);
    let mut y = 120;
    while y + 24 < h - 120 {
        let mut x = 110;
        while x + 12 < w - 110 {
            let glyph = noise.next();
            if glyph % 7 == 0 {
                x += 10; // a space between words
                continue;
            }
            // A glyph: a few vertical and horizontal bars in a 9 x 16 box.
            for bar in 0..4 {
                if glyph >> bar & 1 == 0 {
                    continue;
                }
                let (bx, by, bw, bh) = match bar {
                    0 => (0, 0, 2, 16),
                    1 => (6, 4, 2, 12),
                    2 => (0, 7, 8, 2),
                    _ => (0, 14, 8, 2),
                };
                for yy in by..by + bh {
                    for xx in bx..bx + bw {
                        gray[(y + yy) * w + x + xx] = 0;
                    }
                }
            }
            if anti_aliased {
                // Soften the left and right edge of the box.
                for yy in 0..16 {
                    let row = (y + yy) * w + x;
                    for (dx, level) in [(usize::MAX, 200u8), (9, 160)] {
                        let at = row.wrapping_add(dx);
                        if gray[at] == 255
                            && (gray[at.wrapping_add(1)] == 0 || gray[at.wrapping_sub(1)] == 0)
                        {
                            gray[at] = level - (noise.next() % 40) as u8;
                        }
                    }
                }
            }
            x += 11;
        }
        y += 26;
    }
    gray.iter().flat_map(|&g| [g, g, g]).collect()
}

/// The corpus photo, cropped (and tiled if small) to the page size; synthetic if absent.
fn photo_page() -> (Vec<u8>, &'static str) {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    if let Ok(img) = image::open(PHOTO) {
        let img = img.to_rgb8();
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        let raw = img.into_raw();
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let at = ((y % ih) * iw + (x % iw)) * 3;
                out.extend_from_slice(&raw[at..at + 3]);
            }
        }
        return (out, "TwoWings.jpg crop");
    }
    let mut noise = Noise(0x9e37_79b9);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let n = (noise.next() % 24) as usize;
            out.push(((x * 255 / w + n) % 256) as u8);
            out.push(((y * 255 / h + n) % 256) as u8);
            out.push((((x + y) * 255 / (w + h) + n) % 256) as u8);
        }
    }
    (out, "synthetic gradient + noise")
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

fn bench_pdf(label: &str, rgb: &[u8], compression: Compression) {
    let options = PdfOptions {
        dpi: 150,
        compression,
    };
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let page = encode_page(WIDTH, HEIGHT, rgb, &options).expect("encode");
        times.push(start.elapsed());
        size = page.data_len();
    }
    let page = encode_page(WIDTH, HEIGHT, rgb, &options).expect("encode");
    let page_kind = page.representation();
    let encoded = Instant::now();
    let mut writer = PdfWriter::new(Vec::new(), options).expect("writer");
    writer.write_page(page).expect("write");
    let (file, _) = writer.finish().expect("finish");
    let write_ms = (Instant::now() - encoded).as_secs_f64() * 1000.0;
    println!(
        "pdf  {label:<34} {:<44} encode {:7.1} ms  {:>9} bytes  (write+finish {:.2} ms, file {} bytes)",
        format!("{compression:?} as {page_kind:?}"),
        median(times),
        size,
        write_ms,
        file.len()
    );
}

fn bench_image(label: &str, rgba: &[u8], format: ImageFormat) {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..RUNS {
        let mut out = Vec::new();
        let start = Instant::now();
        let stats = write_image(&mut out, format, WIDTH, HEIGHT, rgba).expect("image");
        times.push(start.elapsed());
        size = stats.bytes;
    }
    println!(
        "img  {label:<34} {:<44} write  {:7.1} ms  {:>9} bytes",
        format!("{format:?}"),
        median(times),
        size
    );
}

fn main() {
    let text = text_page(true);
    let bilevel = text_page(false);
    let (photo, photo_label) = photo_page();
    let jpeg = Compression::Jpeg {
        quality: Compression::DEFAULT_JPEG_QUALITY,
    };

    println!("one {WIDTH} x {HEIGHT} page, median of {RUNS} runs");
    for (label, rgb) in [
        ("text, anti-aliased (gray)", &text),
        ("text, black and white", &bilevel),
        (photo_label, &photo),
    ] {
        bench_pdf(label, rgb, Compression::Lossless);
        bench_pdf(label, rgb, jpeg);
    }
    for (label, rgb) in [("text, anti-aliased (gray)", &text), (photo_label, &photo)] {
        let rgba: Vec<u8> = rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        bench_image(label, &rgba, ImageFormat::Png);
        bench_image(label, &rgba, ImageFormat::Jpeg { quality: 85 });
        bench_image(label, &rgba, ImageFormat::WebpLossless);
    }
}
