//! Hostile PDFs, written object by object with a correct cross-reference table unless the
//! sample is about a broken one.

use std::fmt::Write as _;
use std::io::Write as _;

use flate2::write::ZlibEncoder;

use crate::{Expectation, Kind, Sample};

/// Bytes of zeros inside the Flate bomb: 1 GiB, which deflates to about 1 MiB.
const FLATE_BOMB_BYTES: u64 = 1 << 30;

/// Pages of the sample that passes the page-count limit (10000).
const MANY_PAGES: usize = 20_000;

/// Depth of the nested page tree.
const DEEP_TREE: usize = 10_000;

/// A minimal PDF writer: objects are numbered from 1 in the order they are added.
#[derive(Debug, Default)]
pub struct PdfBuilder {
    objects: Vec<Vec<u8>>,
}

impl PdfBuilder {
    /// An empty document.
    pub fn new() -> Self {
        PdfBuilder::default()
    }

    /// Adds an object and returns its number.
    pub fn add(&mut self, body: impl Into<Vec<u8>>) -> usize {
        self.objects.push(body.into());
        self.objects.len()
    }

    /// Reserves a number for an object written later with [`PdfBuilder::set`].
    pub fn reserve(&mut self) -> usize {
        self.add(b"null".to_vec())
    }

    /// Replaces object `id`. Ids that were never handed out are ignored.
    pub fn set(&mut self, id: usize, body: impl Into<Vec<u8>>) {
        if let Some(slot) = id.checked_sub(1).and_then(|i| self.objects.get_mut(i)) {
            *slot = body.into();
        }
    }

    /// A stream object body: `dict` (without `<<>>`) plus `/Length`, then `data`.
    pub fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut body = format!("<<{dict}/Length {}>>stream\n", data.len()).into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\nendstream");
        body
    }

    /// The whole file, with `root` as the catalog and `trailer_extra` added to the trailer.
    pub fn finish(&self, root: usize, trailer_extra: &str) -> Vec<u8> {
        let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let mut offsets = Vec::with_capacity(self.objects.len());
        for (i, body) in self.objects.iter().enumerate() {
            offsets.push(out.len());
            let _ = writeln!(out, "{} 0 obj", i + 1);
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", self.objects.len() + 1);
        for offset in offsets {
            let _ = writeln!(table, "{offset:010} 00000 n ");
        }
        out.extend_from_slice(table.as_bytes());
        let _ = write!(
            out,
            "trailer\n<</Size {}/Root {root} 0 R{trailer_extra}>>\nstartxref\n{xref}\n%%EOF\n",
            self.objects.len() + 1
        );
        out
    }
}

/// Deflates `data` in zlib format, as `/FlateDecode` expects.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// A document of one page with `content`, `resources` and `page_extra` in the page dictionary
/// and `catalog_extra` in the catalog. `extra` adds objects first (their numbers start at 1),
/// so the page's references to them are known in advance.
fn one_page(
    extra: &[Vec<u8>],
    content: &[u8],
    resources: &str,
    page_extra: &str,
    catalog_extra: &str,
) -> Vec<u8> {
    let mut b = PdfBuilder::new();
    for object in extra {
        b.add(object.clone());
    }
    let catalog = b.reserve();
    let pages = b.reserve();
    let contents = b.add(PdfBuilder::stream("", content));
    let page = b.add(format!(
        "<</Type/Page/Parent {pages} 0 R/MediaBox[0 0 200 200]/Contents {contents} 0 R\
         /Resources<<{resources}>>{page_extra}>>"
    ));
    b.set(pages, format!("<</Type/Pages/Kids[{page} 0 R]/Count 1>>"));
    b.set(
        catalog,
        format!("<</Type/Catalog/Pages {pages} 0 R{catalog_extra}>>"),
    );
    b.finish(catalog, "")
}

/// A valid three-page document with text in a standard font: the base of the damaged samples.
pub fn valid_document() -> Vec<u8> {
    let mut b = PdfBuilder::new();
    let catalog = b.reserve();
    let pages = b.reserve();
    let font = b.add("<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>".to_string());
    let mut kids = String::new();
    for n in 1..=3 {
        let text = format!("BT /F1 18 Tf 20 150 Td (Page {n} of a valid document) Tj ET\n0 0 1 rg 20 20 100 50 re f");
        let contents = b.add(PdfBuilder::stream("", text.as_bytes()));
        let page = b.add(format!(
            "<</Type/Page/Parent {pages} 0 R/MediaBox[0 0 300 200]/Contents {contents} 0 R\
             /Resources<</Font<</F1 {font} 0 R>>>>>>"
        ));
        let _ = write!(kids, "{page} 0 R ");
    }
    b.set(pages, format!("<</Type/Pages/Kids[{kids}]/Count 3>>"));
    b.set(catalog, format!("<</Type/Catalog/Pages {pages} 0 R>>"));
    b.finish(catalog, "")
}

fn huge_mediabox(side: u32) -> Vec<u8> {
    let mut b = PdfBuilder::new();
    let catalog = b.reserve();
    let pages = b.reserve();
    let contents = b.add(PdfBuilder::stream("", b"0 0 1 rg 10 10 50 50 re f"));
    let page = b.add(format!(
        "<</Type/Page/Parent {pages} 0 R/MediaBox[0 0 {side} {side}]/Contents {contents} 0 R>>"
    ));
    b.set(pages, format!("<</Type/Pages/Kids[{page} 0 R]/Count 1>>"));
    b.set(catalog, format!("<</Type/Catalog/Pages {pages} 0 R>>"));
    b.finish(catalog, "")
}

fn many_pages(count: usize) -> Vec<u8> {
    let mut b = PdfBuilder::new();
    let catalog = b.reserve();
    let pages = b.reserve();
    let mut kids = String::with_capacity(count * 10);
    for _ in 0..count {
        let page = b.add(format!("<</Type/Page/Parent {pages} 0 R>>"));
        let _ = write!(kids, "{page} 0 R ");
    }
    b.set(
        pages,
        format!("<</Type/Pages/Kids[{kids}]/Count {count}/MediaBox[0 0 100 100]>>"),
    );
    b.set(catalog, format!("<</Type/Catalog/Pages {pages} 0 R>>"));
    b.finish(catalog, "")
}

fn deep_page_tree(depth: usize) -> Vec<u8> {
    let mut b = PdfBuilder::new();
    let catalog = b.reserve();
    let nodes: Vec<usize> = (0..depth).map(|_| b.reserve()).collect();
    let page = b.reserve();
    for (i, &node) in nodes.iter().enumerate() {
        let parent = if i == 0 {
            String::new()
        } else {
            format!("/Parent {} 0 R", nodes[i - 1])
        };
        let kid = nodes.get(i + 1).copied().unwrap_or(page);
        b.set(
            node,
            format!("<</Type/Pages{parent}/Kids[{kid} 0 R]/Count 1/MediaBox[0 0 100 100]>>"),
        );
    }
    let last = nodes.last().copied().unwrap_or(catalog);
    b.set(page, format!("<</Type/Page/Parent {last} 0 R>>"));
    let root = nodes.first().copied().unwrap_or(page);
    b.set(catalog, format!("<</Type/Catalog/Pages {root} 0 R>>"));
    b.finish(catalog, "")
}

fn cyclic_page_tree() -> Vec<u8> {
    let mut b = PdfBuilder::new();
    let catalog = b.reserve();
    let root = b.reserve();
    let page = b.add(format!(
        "<</Type/Page/Parent {root} 0 R/MediaBox[0 0 100 100]>>"
    ));
    let looping = b.reserve();
    // The inner node's only kid is the root: a walker without a visited set never ends.
    b.set(
        looping,
        format!("<</Type/Pages/Parent {root} 0 R/Kids[{root} 0 R]/Count 1>>"),
    );
    b.set(
        root,
        format!("<</Type/Pages/Kids[{page} 0 R {looping} 0 R]/Count 2>>"),
    );
    b.set(catalog, format!("<</Type/Catalog/Pages {root} 0 R>>"));
    b.finish(catalog, "")
}

fn self_drawing_xobject() -> Vec<u8> {
    // Object 1 is the form; it names itself as /X in its own resources.
    let form = PdfBuilder::stream(
        "/Type/XObject/Subtype/Form/BBox[0 0 100 100]/Resources<</XObject<</X 1 0 R>>>>",
        b"0 0 1 rg 0 0 10 10 re f /X Do",
    );
    one_page(&[form], b"/X Do", "/XObject<</X 1 0 R>>", "", "")
}

fn self_painting_pattern() -> Vec<u8> {
    // Object 1 is a tiling pattern whose cell fills itself with the same pattern.
    let pattern = PdfBuilder::stream(
        "/Type/Pattern/PatternType 1/PaintType 1/TilingType 1/BBox[0 0 10 10]/XStep 10/YStep 10\
         /Resources<</Pattern<</P 1 0 R>>>>",
        b"/Pattern cs /P scn 0 0 10 10 re f",
    );
    one_page(
        &[pattern],
        b"/Pattern cs /P scn 0 0 200 200 re f",
        "/Pattern<</P 1 0 R>>",
        "",
        "",
    )
}

fn nested_saves(depth: usize) -> Vec<u8> {
    let mut content = b"q ".repeat(depth);
    content.extend_from_slice(b"0 1 0 rg 0 0 100 100 re f ");
    content.extend_from_slice(&b"Q ".repeat(depth));
    let compressed = deflate(&content);
    let mut b = PdfBuilder::new();
    let catalog = b.reserve();
    let pages = b.reserve();
    let contents = b.add(PdfBuilder::stream("/Filter/FlateDecode", &compressed));
    let page = b.add(format!(
        "<</Type/Page/Parent {pages} 0 R/MediaBox[0 0 200 200]/Contents {contents} 0 R>>"
    ));
    b.set(pages, format!("<</Type/Pages/Kids[{page} 0 R]/Count 1>>"));
    b.set(catalog, format!("<</Type/Catalog/Pages {pages} 0 R>>"));
    b.finish(catalog, "")
}

fn image_bomb() -> Vec<u8> {
    // A few compressed bytes for an image that declares 60000 x 60000 RGB (10.8 GB).
    let data = deflate(&[0u8; 4096]);
    let image = PdfBuilder::stream(
        "/Type/XObject/Subtype/Image/Width 60000/Height 60000/ColorSpace/DeviceRGB\
         /BitsPerComponent 8/Filter/FlateDecode",
        &data,
    );
    one_page(
        &[image],
        b"q 200 0 0 200 0 0 cm /Im Do Q",
        "/XObject<</Im 1 0 R>>",
        "",
        "",
    )
}

fn flate_bomb(zeros: u64) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        if encoder.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let compressed = encoder.finish().unwrap_or_default();
    let mut b = PdfBuilder::new();
    let catalog = b.reserve();
    let pages = b.reserve();
    // NUL is white space to a content parser: the page is blank, after 1 GiB of parsing.
    let contents = b.add(PdfBuilder::stream("/Filter/FlateDecode", &compressed));
    let page = b.add(format!(
        "<</Type/Page/Parent {pages} 0 R/MediaBox[0 0 200 200]/Contents {contents} 0 R>>"
    ));
    b.set(pages, format!("<</Type/Pages/Kids[{page} 0 R]/Count 1>>"));
    b.set(catalog, format!("<</Type/Catalog/Pages {pages} 0 R>>"));
    b.finish(catalog, "")
}

fn broken_xref() -> Vec<u8> {
    let mut doc = valid_document();
    let text = String::from_utf8_lossy(&doc).into_owned();
    if let Some(start) = text.find("xref\n") {
        // Point every entry somewhere wrong, keeping the table's length.
        let table = &text[start..];
        let garbled: String = table
            .lines()
            .map(|l| {
                if l.ends_with(" n ") || l.ends_with(" n") {
                    "9999999999 00000 n ".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        doc.truncate(start);
        doc.extend_from_slice(garbled.as_bytes());
        doc.push(b'\n');
    }
    doc
}

fn javascript_open_action() -> Vec<u8> {
    let js = "/OpenAction<</S/JavaScript/JS(app.alert\\('pwned'\\); this.submitForm\\('http://127.0.0.1/'\\);)>>";
    one_page(
        &[],
        b"0 0 1 rg 10 10 80 80 re f",
        "",
        "/AA<</O<</S/JavaScript/JS(app.beep\\(0\\))>>>>",
        js,
    )
}

fn link_annotation(action: &str) -> String {
    format!("<</Type/Annot/Subtype/Link/Rect[0 0 200 200]/Border[0 0 0]/A{action}>>")
}

fn launch_action() -> Vec<u8> {
    let action = "<</S/Launch/F(/bin/sh)/Win<</F(cmd.exe)/P(/c calc)>>/NewWindow true>>";
    let annot = link_annotation(action).into_bytes();
    one_page(
        &[annot],
        b"0 0 1 rg 10 10 80 80 re f",
        "",
        "/Annots[1 0 R]",
        &format!("/OpenAction{action}"),
    )
}

fn uri_action() -> Vec<u8> {
    let annot = link_annotation("<</S/URI/URI(http://127.0.0.1/track?id=1)>>").into_bytes();
    one_page(
        &[annot],
        b"0 0 1 rg 10 10 80 80 re f",
        "",
        "/Annots[1 0 R]",
        "",
    )
}

fn embedded_file() -> Vec<u8> {
    let file = PdfBuilder::stream("/Type/EmbeddedFile", b"#!/bin/sh\necho pwned\n");
    let spec = b"<</Type/Filespec/F(run.sh)/UF(run.sh)/EF<</F 1 0 R>>>>".to_vec();
    let annot = b"<</Type/Annot/Subtype/FileAttachment/Rect[10 10 30 30]/FS 2 0 R>>".to_vec();
    one_page(
        &[file, spec, annot],
        b"0 0 1 rg 10 10 80 80 re f",
        "",
        "/Annots[3 0 R]",
        "/Names<</EmbeddedFiles<</Names[(run.sh) 2 0 R]>>>>",
    )
}

fn acroform() -> Vec<u8> {
    let field = b"<</Type/Annot/Subtype/Widget/FT/Tx/T(name)/V(secret value)/Rect[10 150 190 180]\
/DA(/Helv 12 Tf 0 g)/F 4/AA<</K<</S/JavaScript/JS(event.rc = true)>>>>>>"
        .to_vec();
    let font = b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>".to_vec();
    one_page(
        &[field, font],
        b"0 0 1 rg 10 10 80 80 re f",
        "",
        "/Annots[1 0 R]",
        "/AcroForm<</Fields[1 0 R]/DR<</Font<</Helv 2 0 R>>>>/DA(/Helv 12 Tf 0 g)/NeedAppearances true>>",
    )
}

/// A ZIP archive with one stored file, placed after `prefix`: its offsets count from the start
/// of the whole file, as a ZIP reader expects.
fn append_zip(prefix: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let crc = crc.sum();
    let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let local_offset = u32::try_from(prefix.len()).unwrap_or(u32::MAX);

    let mut out = prefix.to_vec();
    out.extend_from_slice(b"PK\x03\x04");
    out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(data);

    let central_offset = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(b"PK\x01\x02");
    out.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&local_offset.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let central_len = u32::try_from(out.len()).unwrap_or(u32::MAX) - central_offset;

    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend_from_slice(&central_len.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

fn polyglot_html() -> Vec<u8> {
    let mut out =
        b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script><!--\n".to_vec();
    out.extend_from_slice(&valid_document());
    out.extend_from_slice(b"-->\n</body></html>\n");
    out
}

/// Every hostile PDF sample.
pub fn samples() -> Vec<Sample> {
    use Expectation::{MayConvert, MustFailCleanly};
    let pdf =
        |name: &str, expectation, bytes| Sample::new(name, "pdf", Kind::Pdf, expectation, bytes);

    let mut all = vec![
        pdf(
            "huge-mediabox-200000",
            MustFailCleanly,
            huge_mediabox(200_000),
        ),
        // 9000 pt is 37500 px at 300 dpi (refused) but 9375 px at 75 dpi (allowed).
        pdf("huge-mediabox-9000", MayConvert, huge_mediabox(9_000)),
        pdf("many-pages-20000", MustFailCleanly, many_pages(MANY_PAGES)),
        pdf(
            "deep-page-tree-10000",
            MayConvert,
            deep_page_tree(DEEP_TREE),
        ),
        pdf("cyclic-page-tree", MayConvert, cyclic_page_tree()),
        pdf("self-drawing-xobject", MayConvert, self_drawing_xobject()),
        pdf("self-painting-pattern", MayConvert, self_painting_pattern()),
        pdf("nested-saves-100000", MayConvert, nested_saves(100_000)),
        pdf("image-bomb-60000", MayConvert, image_bomb()),
        pdf("flate-bomb-1gib", MayConvert, flate_bomb(FLATE_BOMB_BYTES)),
        pdf("broken-xref", MayConvert, broken_xref()),
        pdf(
            "encrypted-rc4-40",
            MustFailCleanly,
            include_bytes!("../data/encrypted-rc4-40.pdf").to_vec(),
        ),
        pdf(
            "encrypted-aes-256",
            MustFailCleanly,
            include_bytes!("../data/encrypted-aes-256.pdf").to_vec(),
        ),
        pdf(
            "javascript-openaction",
            MayConvert,
            javascript_open_action(),
        ),
        pdf("launch-action", MayConvert, launch_action()),
        pdf("uri-action", MayConvert, uri_action()),
        pdf("embedded-file", MayConvert, embedded_file()),
        pdf("acroform", MayConvert, acroform()),
        pdf(
            "polyglot-zip",
            MayConvert,
            append_zip(&valid_document(), "payload.sh", b"#!/bin/sh\necho pwned\n"),
        ),
        pdf("polyglot-html", MayConvert, polyglot_html()),
    ];
    let valid = valid_document();
    for tenth in 1..10 {
        let cut = valid.len() * tenth / 10;
        let name = format!("truncated-{}0-percent", tenth);
        all.push(pdf(&name, MayConvert, valid[..cut].to_vec()));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_offsets_point_at_objects() {
        let doc = valid_document();
        let xref = doc.windows(5).position(|w| w == b"xref\n").unwrap();
        // The table's fourth line is object 1's entry: a 10-digit offset.
        let entry = doc[xref..].split(|&b| b == b'\n').nth(3).unwrap();
        let offset: usize = std::str::from_utf8(&entry[..10]).unwrap().parse().unwrap();
        assert!(doc[offset..].starts_with(b"1 0 obj"));
    }

    #[test]
    fn flate_bomb_is_small_but_large_inside() {
        let bomb = flate_bomb(64 << 20);
        assert!(bomb.len() < 200_000, "{}", bomb.len());
    }

    #[test]
    fn zip_polyglot_ends_with_end_of_central_directory() {
        let zip = append_zip(b"%PDF", "a", b"x");
        let eocd = zip.len() - 22;
        assert_eq!(&zip[eocd..eocd + 4], b"PK\x05\x06");
    }
}
