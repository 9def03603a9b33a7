//! `hostile-samples DIR`: writes every hostile document and image into DIR, one file each, and
//! prints one line per file: expectation, size in bytes, path.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hostile_samples::{all_samples, write_samples, Expectation};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        bail!("usage: hostile-samples DIR");
    };
    let dir = PathBuf::from(dir);
    let samples = all_samples();
    let paths = write_samples(&samples, &dir)
        .with_context(|| format!("cannot write the samples into {}", dir.display()))?;
    for (sample, path) in samples.iter().zip(paths) {
        let expectation = match sample.expectation {
            Expectation::MustFailCleanly => "must-fail",
            Expectation::MayConvert => "may-convert",
        };
        println!("{expectation}\t{}\t{}", sample.bytes.len(), path.display());
    }
    Ok(())
}
