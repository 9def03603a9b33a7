//! Decode+serve speed on corpus images: prints megapixels per second (median of runs).
//!
//! `cargo run --release -p image-uvm --example bench [CORPUS_DIR] [RUNS]`; the corpus
//! defaults to `../shared/corpus` beside the repository.

use std::io::{self, Cursor};
use std::path::PathBuf;
use std::time::Instant;

use image_uvm::{serve, DecodeOptions};

const FILES: [&str; 3] = ["TwoWings.jpg", "wizard.png", "adwaita-l.webp"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"));
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);

    println!(
        "{:<16} {:>11} {:>10} {:>9} {:>8}",
        "file", "size", "bytes", "ms", "MP/s"
    );
    for name in FILES {
        let bytes = std::fs::read(dir.join(name))?;
        let mut input = b"-\n".to_vec();
        input.extend_from_slice(&bytes);
        let mut times = Vec::with_capacity(runs);
        let mut size = (0, 0);
        for _ in 0..runs {
            let start = Instant::now();
            let summary = serve(
                &mut Cursor::new(&input),
                &mut io::sink(),
                &DecodeOptions::default(),
            )?;
            times.push(start.elapsed().as_secs_f64());
            size = (summary.width, summary.height);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let megapixels = f64::from(size.0) * f64::from(size.1) / 1e6;
        println!(
            "{:<16} {:>11} {:>10} {:>9.1} {:>8.1}",
            name,
            format!("{}x{}", size.0, size.1),
            bytes.len(),
            median * 1e3,
            megapixels / median
        );
    }
    Ok(())
}
