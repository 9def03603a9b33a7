//! Encodes every page of a `qubes.PdfConvert` pixel stream read from stdin and prints the
//! representation, encode time and size per page kind: a measuring tool for the rebuild on
//! real rendered pages (`pdf-uvm 150 < doc.pdf | encode_stream`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use converter_core::limits::StreamLimits;
use converter_core::rebuild::pdf::{encode_page, Compression, PdfOptions};
use converter_core::stream::RgbStreamReader;

fn main() {
    let stdin = std::io::stdin().lock();
    let mut reader = RgbStreamReader::new(stdin, StreamLimits::PDF);
    let options = PdfOptions {
        dpi: 150,
        compression: Compression::Lossless,
    };
    let mut buf = Vec::new();
    let mut kinds: BTreeMap<String, (u32, Duration, usize)> = BTreeMap::new();
    while let Ok(Some(h)) = reader.next_page(&mut buf) {
        let t = Instant::now();
        let Ok(page) = encode_page(h.width, h.height, &buf, &options) else {
            continue;
        };
        let took = t.elapsed();
        let e = kinds
            .entry(format!("{:?}", page.representation()))
            .or_default();
        e.0 += 1;
        e.1 += took;
        e.2 += page.data_len();
    }
    let (mut n, mut t, mut b) = (0, Duration::ZERO, 0);
    for (kind, (count, time, bytes)) in &kinds {
        println!(
            "{kind:<40} {count:>5} pages {:>7.1} ms/page {:>8} bytes/page",
            time.as_secs_f64() * 1e3 / f64::from(*count),
            bytes / *count as usize
        );
        n += count;
        t += *time;
        b += bytes;
    }
    println!(
        "{:<40} {n:>5} pages {:>7.1} ms/page {:>8} bytes/page total {b}",
        "all",
        t.as_secs_f64() * 1e3 / f64::from(n.max(1)),
        b / (n.max(1) as usize)
    );
}
