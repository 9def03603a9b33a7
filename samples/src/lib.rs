//! Hostile documents and images, generated at test time so that nothing large is committed.
//!
//! Each [`Sample`] has a name, the file name it is written under, what it is ([`Kind`]) and
//! what the converter must do with it ([`Expectation`]). The tests in `tests/` put every
//! sample through the real caller and check that it ends in a checked output or a clean error,
//! in bounded time, with nothing partial left behind.
//!
//! | family | samples |
//! |---|---|
//! | page geometry | huge MediaBox (200000 pt and 9000 pt), 20000 pages, page tree 10000 deep, cyclic page tree |
//! | recursion | Form XObject that draws itself, tiling pattern that paints itself, 100000 nested `q` |
//! | bombs | image XObject declaring 60000 x 60000, 1 GB of zeros deflated to about 1 MB |
//! | damage | broken xref table, truncated at every 10 % |
//! | active content | JavaScript /OpenAction, /Launch and /URI actions, embedded file, AcroForm |
//! | disguise | PDF that is also a ZIP, PDF that is also HTML, encrypted without the password |
//! | images | huge declared sizes in PNG, GIF, TIFF, WebP, JPEG, BMP; truncated PNG and JPEG; malformed EXIF |
//!
//! The two encrypted PDFs are small committed files (`data/`), made once with
//! `qpdf --encrypt secret owner 40|128 -- plain.pdf out.pdf`, since RC4 and AES key derivation
//! are not worth writing by hand for a test.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod image;
mod pdf;

use std::io;
use std::path::{Path, PathBuf};

pub use pdf::{valid_document as valid_pdf, PdfBuilder};

/// What kind of file a sample is, which decides the converter it goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A PDF, for `qvm-convert-pdf`.
    Pdf,
    /// An image, for `qvm-convert-img` (or `image-uvm` directly).
    Image,
}

/// What the converter must do with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// Refuse it with a clean error: converting it would break a limit.
    MustFailCleanly,
    /// Either convert it (the output must pass the checker) or refuse it cleanly; both are
    /// safe, and which one happens depends on the renderer's own tolerance.
    MayConvert,
}

/// One hostile file.
#[derive(Debug, Clone)]
pub struct Sample {
    /// A short name, unique among all samples.
    pub name: String,
    /// The file name it is written under (name plus extension).
    pub file_name: String,
    /// What it is.
    pub kind: Kind,
    /// What the converter must do with it.
    pub expectation: Expectation,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Sample {
    fn new(
        name: &str,
        extension: &str,
        kind: Kind,
        expectation: Expectation,
        bytes: Vec<u8>,
    ) -> Self {
        Sample {
            name: name.to_string(),
            file_name: format!("{name}.{extension}"),
            kind,
            expectation,
            bytes,
        }
    }
}

/// Every hostile PDF.
pub fn pdf_samples() -> Vec<Sample> {
    pdf::samples()
}

/// Every hostile image.
pub fn image_samples() -> Vec<Sample> {
    image::samples()
}

/// Every sample, PDFs first.
pub fn all_samples() -> Vec<Sample> {
    let mut all = pdf_samples();
    all.extend(image_samples());
    all
}

/// Writes `samples` into `dir` (created if missing) and returns their paths in order.
///
/// # Errors
/// The first file that cannot be written.
pub fn write_samples(samples: &[Sample], dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    samples
        .iter()
        .map(|s| {
            let path = dir.join(&s.file_name);
            std::fs::write(&path, &s.bytes)?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let all = all_samples();
        let mut names: Vec<_> = all.iter().map(|s| s.file_name.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }

    #[test]
    fn no_sample_is_large() {
        for s in all_samples() {
            assert!(
                s.bytes.len() < 4 << 20,
                "{} has {} bytes",
                s.name,
                s.bytes.len()
            );
        }
    }
}
