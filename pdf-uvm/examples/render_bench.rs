//! Measures PDFium rendering speed: render-only against the whole `serve` path.
//!
//! `cargo run --release -p pdf-uvm --example render_bench -- [DPI] [FILE...]`
//!
//! Defaults: 150 dpi over the corpus files `text-short-cfgguide.pdf` (text) and
//! `vector-fiziko.pdf` (dense vector drawings). For each file it prints the page count and
//! pages per second for rendering alone (`render_only`) and for `serve` writing the stream to
//! a sink, each the median of a few runs.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pdf_uvm::{render_only, serve, ServeOptions};

const RUNS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dpi: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(150);
    let mut files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if files.is_empty() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
        files = ["text-short-cfgguide.pdf", "vector-fiziko.pdf"]
            .iter()
            .map(|name| corpus.join(name))
            .collect();
    }

    println!(
        "{:<28} {:>5} {:>5} {:>14} {:>14}",
        "file", "dpi", "pages", "render pages/s", "serve pages/s"
    );
    for file in files {
        let document = std::fs::read(&file)?;
        let mut render_times = Vec::new();
        let mut serve_times = Vec::new();
        let mut pages = 0;
        for _ in 0..RUNS {
            let (count, elapsed) = render_only(&document, dpi)?;
            pages = count;
            render_times.push(elapsed);

            let arg = dpi.to_string();
            let start = Instant::now();
            serve(
                Some(&arg),
                &mut &document[..],
                &mut io::sink(),
                &ServeOptions::default(),
            )?;
            serve_times.push(start.elapsed());
        }
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!(
            "{name:<28} {dpi:>5} {pages:>5} {:>14.1} {:>14.1}",
            rate(pages, &mut render_times),
            rate(pages, &mut serve_times)
        );
    }
    Ok(())
}

/// Pages per second at the median time.
fn rate(pages: u32, times: &mut [Duration]) -> f64 {
    times.sort();
    f64::from(pages) / times[times.len() / 2].as_secs_f64()
}
