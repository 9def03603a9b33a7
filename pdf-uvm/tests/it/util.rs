//! Shared helpers: hand-built PDFs, paths to the corpus, and a strict reading of the stream.

use std::path::{Path, PathBuf};

use converter_core::limits::StreamLimits;
use converter_core::stream::RgbStreamReader;

/// A file of the shared benchmark corpus (read in place, never copied into the repo).
pub fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(name)
}

/// A file under `tests/data/`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// One page for [`pdf`].
#[derive(Clone)]
pub struct Page {
    width: f64,
    height: f64,
    rotate: Option<i32>,
    content: Option<String>,
}

impl Page {
    /// A page with a MediaBox of `width x height` points and no content.
    pub fn new(width: f64, height: f64) -> Self {
        Page {
            width,
            height,
            rotate: None,
            content: None,
        }
    }

    /// Sets the page's /Rotate.
    pub fn rotate(mut self, degrees: i32) -> Self {
        self.rotate = Some(degrees);
        self
    }

    /// Sets the page's content stream.
    pub fn content(mut self, ops: &str) -> Self {
        self.content = Some(ops.to_owned());
        self
    }
}

/// A well-formed PDF 1.7 file with the given pages and a correct cross-reference table.
pub fn pdf(pages: &[Page]) -> Vec<u8> {
    // Object 1: catalog, 2: page tree, then each page and (if any) its content stream.
    let mut objects: Vec<Vec<u8>> = vec![Vec::new(), Vec::new()];
    let mut kids = Vec::new();
    for page in pages {
        let page_id = objects.len() + 1;
        kids.push(format!("{page_id} 0 R"));
        let mut dict = format!(
            "<</Type/Page/Parent 2 0 R/MediaBox[0 0 {} {}]",
            page.width, page.height
        );
        if let Some(rotate) = page.rotate {
            dict.push_str(&format!("/Rotate {rotate}"));
        }
        match &page.content {
            Some(ops) => {
                dict.push_str(&format!("/Contents {} 0 R>>", page_id + 1));
                objects.push(dict.into_bytes());
                objects.push(
                    format!("<</Length {}>>stream\n{ops}\nendstream", ops.len() + 1).into_bytes(),
                );
            }
            None => {
                dict.push_str(">>");
                objects.push(dict.into_bytes());
            }
        }
    }
    objects[0] = b"<</Type/Catalog/Pages 2 0 R>>".to_vec();
    objects[1] = format!(
        "<</Type/Pages/Kids[{}]/Count {}>>",
        kids.join(" "),
        pages.len()
    )
    .into_bytes();

    let mut out = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<</Size {}/Root 1 0 R>>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// One decoded page of a stream.
pub struct RenderedPage {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl RenderedPage {
    /// The RGB triple at (x, y), from the top-left corner.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Whether every byte is 255.
    pub fn is_all_white(&self) -> bool {
        self.rgb.iter().all(|&b| b == 255)
    }
}

/// Reads a whole `qubes.PdfConvert` stream with the trusted side's strict reader, which also
/// rejects a single trailing byte.
pub fn read_stream(bytes: &[u8]) -> Vec<RenderedPage> {
    let mut reader = RgbStreamReader::new(bytes, StreamLimits::PDF);
    let count = reader.read_page_count().expect("page count line");
    let mut pages = Vec::new();
    let mut buf = Vec::new();
    while let Some(header) = reader.next_page(&mut buf).expect("a valid page") {
        pages.push(RenderedPage {
            width: header.width,
            height: header.height,
            rgb: buf.clone(),
        });
    }
    assert_eq!(
        pages.len(),
        count as usize,
        "page count line disagrees with the pages sent"
    );
    pages
}
