//! Output checker: proves that a file holds only what the rebuild writers write.
//!
//! [`check_pdf`] accepts a PDF only if it is, byte for byte, a file [`crate::rebuild::pdf`] could
//! have written: a catalog, one page tree, and per page exactly one image drawn over the whole
//! page. It first walks every object and names the first thing that does not belong (a key such
//! as `/OpenAction`, an object nothing refers to, a second cross-reference section); then it
//! writes the parsed objects again with the rebuild writer's own framing and compares the result
//! with the input, so that comments, padding or bytes between objects cannot hide anywhere.
//! [`check_png`] accepts a PNG only if its chunks are `IHDR`, `IDAT`… and `IEND`.
//!
//! Errors name what was found (an object number, a key name), never document content.
//!
//! # Limitations
//!
//! The checker decodes each page image's Flate data to prove its size, but does not decode JPEG
//! data beyond its frame header, nor PNG image data: a well-formed container around corrupt
//! compressed data passes.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId, Stream};

use crate::limits::{PDF_MAX_PAGES, PDF_MAX_PAGE_HEIGHT, PDF_MAX_PAGE_WIDTH};
use crate::rebuild::pdf::{
    content_stream, write_indirect, write_tail, CATALOG_ID, HEADER, PAGES_ID,
};
use crate::rebuild::predict::unfilter;

/// Why a file was refused by the checker.
///
/// The cause is in [`CheckError::kind`]; the message names the object and key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    kind: CheckErrorKind,
}

impl CheckError {
    /// What was wrong.
    pub fn kind(&self) -> &CheckErrorKind {
        &self.kind
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for CheckError {}

impl From<CheckErrorKind> for CheckError {
    fn from(kind: CheckErrorKind) -> Self {
        CheckError { kind }
    }
}

/// The place in a PDF where a key or value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// The trailer dictionary.
    Trailer,
    /// The document catalog.
    Catalog,
    /// The page tree root.
    Pages,
    /// A page dictionary.
    Page,
    /// A page's `/Resources`.
    Resources,
    /// A page's `/XObject` dictionary.
    XObjects,
    /// A page's content stream.
    Content,
    /// A page's image.
    Image,
    /// An image's `/DecodeParms`.
    DecodeParms,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Place::Trailer => "trailer",
            Place::Catalog => "catalog",
            Place::Pages => "page tree",
            Place::Page => "page",
            Place::Resources => "page resources",
            Place::XObjects => "page xobjects",
            Place::Content => "content stream",
            Place::Image => "image",
            Place::DecodeParms => "image decode parameters",
        })
    }
}

/// The rule a checked file broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckErrorKind {
    /// The file does not end with `%%EOF` and one end of line.
    #[error("file does not end with %%EOF")]
    MissingEof,
    /// Bytes follow the final `%%EOF`.
    #[error("{count} bytes follow the final %%EOF")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// lopdf cannot read the file as PDF (strict mode).
    #[error("file does not parse as pdf")]
    Parse,
    /// The file is encrypted.
    #[error("file is encrypted")]
    Encrypted,
    /// The cross-reference data had to be repaired to read the file.
    #[error("cross-reference data does not match the objects")]
    XrefRepaired,
    /// More than one cross-reference section: an incremental update.
    #[error("file has {sections} cross-reference sections (an incremental update)")]
    IncrementalUpdate {
        /// Sections found.
        sections: usize,
    },
    /// A cross-reference stream instead of a table.
    #[error("file uses a cross-reference stream")]
    XrefStream,
    /// An object stored inside an object stream.
    #[error("object {id} is stored in an object stream")]
    ObjectStream {
        /// Object number.
        id: u32,
    },
    /// The file is linearized.
    #[error("file is linearized")]
    Linearized,
    /// A dictionary holds a key the rebuild never writes.
    #[error("{place} has forbidden key /{key}")]
    ForbiddenKey {
        /// Where.
        place: Place,
        /// The key's name, printable ASCII only, at most 40 characters.
        key: String,
    },
    /// A dictionary lacks a key the rebuild always writes.
    #[error("{place} lacks key /{key}")]
    MissingKey {
        /// Where.
        place: Place,
        /// The key.
        key: &'static str,
    },
    /// A key has a value of the wrong type or an unexpected value.
    #[error("{place} has an unexpected value for /{key}")]
    BadValue {
        /// Where.
        place: Place,
        /// The key.
        key: &'static str,
    },
    /// A reference points to an object that does not exist or has the wrong kind.
    #[error("reference to object {id} from {place} does not lead to the expected object")]
    BadReference {
        /// Where the reference was.
        place: Place,
        /// Object number referred to.
        id: u32,
    },
    /// Two references lead to one object.
    #[error("object {id} is referenced twice")]
    SharedObject {
        /// Object number.
        id: u32,
    },
    /// An object nothing refers to.
    #[error("object {id} is not part of the page tree")]
    UnreferencedObject {
        /// Object number.
        id: u32,
    },
    /// A page's content stream is not exactly the one that draws its image over the page.
    #[error("content stream of page {page} is not the image-drawing form")]
    ContentMismatch {
        /// Page index, from 0.
        page: usize,
    },
    /// A page's image data does not match its dictionary.
    #[error("image data of page {page} is malformed: {reason}")]
    ImageData {
        /// Page index, from 0.
        page: usize,
        /// Which check failed.
        reason: &'static str,
    },
    /// More pages than the rebuild accepts.
    #[error("page tree lists {count} pages, more than {limit}")]
    TooManyPages {
        /// Pages listed.
        count: usize,
        /// The limit.
        limit: u32,
    },
    /// The file's bytes differ from what the rebuild writer writes for the same objects.
    #[error("file layout differs from the rebuild writer's at byte {offset}")]
    NotCanonical {
        /// First differing byte.
        offset: u64,
    },
    /// The file does not start with the PNG signature.
    #[error("file does not start with the png signature")]
    PngSignature,
    /// A PNG chunk is cut short.
    #[error("png chunk at byte {offset} is truncated")]
    PngTruncated {
        /// Offset of the chunk.
        offset: usize,
    },
    /// A PNG chunk's CRC is wrong.
    #[error("png chunk {name} has a wrong crc")]
    PngCrc {
        /// Chunk type.
        name: String,
    },
    /// A PNG chunk other than IHDR, IDAT, IEND, or one out of order.
    #[error("png chunk {name} is not allowed here")]
    PngChunk {
        /// Chunk type, printable ASCII only.
        name: String,
    },
    /// A PNG header with values the rebuild never writes.
    #[error("png header has an unexpected {field}")]
    PngHeader {
        /// The field.
        field: &'static str,
    },
    /// Bytes follow the PNG `IEND` chunk.
    #[error("{count} bytes follow the png IEND chunk")]
    PngTrailingBytes {
        /// How many.
        count: usize,
    },
}

/// A page the checker accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedPage {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
}

/// What an accepted PDF holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The pages in order.
    pub pages: Vec<CheckedPage>,
}

/// Decompressed-size bound for lopdf while loading. Our files have no object or cross-reference
/// streams, the only streams lopdf decodes while loading, so a small bound costs nothing and
/// stops a bomb hidden in one.
const LOAD_MAX_DECOMPRESSED: usize = 1 << 20;

/// Longest key name quoted in an error.
const MAX_QUOTED_NAME: usize = 40;

fn fail<T>(kind: CheckErrorKind) -> Result<T, CheckError> {
    Err(CheckError { kind })
}

/// A key name as printable ASCII, cut to [`MAX_QUOTED_NAME`] characters.
fn quote(name: &[u8]) -> String {
    name.iter()
        .take(MAX_QUOTED_NAME)
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// Checks that `bytes` is a PDF as [`crate::rebuild::pdf::PdfWriter`] writes it.
///
/// # Errors
///
/// A [`CheckError`] naming the first thing found that the rebuild does not write.
pub fn check_pdf(bytes: &[u8]) -> Result<CheckReport, CheckError> {
    check_end(bytes)?;

    let options = LoadOptions {
        strict: true,
        max_decompressed_size: Some(LOAD_MAX_DECOMPRESSED),
        ..LoadOptions::default()
    };
    let doc = Document::load_mem_with_options(bytes, options).map_err(|_| CheckErrorKind::Parse)?;
    check_structure(&doc)?;

    let mut seen = BTreeSet::new();
    let root = check_trailer(&doc.trailer)?;
    let pages = check_catalog(&doc, root, &mut seen)?;
    for &(id, _) in doc.objects.keys() {
        if !seen.contains(&id) {
            return fail(CheckErrorKind::UnreferencedObject { id });
        }
    }

    check_canonical(&doc, bytes)?;
    Ok(CheckReport { pages })
}

/// The file must end with exactly `%%EOF\n` (or `\r\n`), and nothing after it.
fn check_end(bytes: &[u8]) -> Result<(), CheckError> {
    const EOF: &[u8] = b"%%EOF";
    let Some(at) = bytes.windows(EOF.len()).rposition(|w| w == EOF) else {
        return fail(CheckErrorKind::MissingEof);
    };
    let rest = bytes.get(at + EOF.len()..).unwrap_or_default();
    match rest {
        b"\n" | b"\r\n" => Ok(()),
        b"" => fail(CheckErrorKind::MissingEof),
        _ => fail(CheckErrorKind::TrailingBytes { count: rest.len() }),
    }
}

fn check_structure(doc: &Document) -> Result<(), CheckError> {
    if doc.encryption_state.is_some() || doc.trailer.has(b"Encrypt") {
        return fail(CheckErrorKind::Encrypted);
    }
    if doc.xref_recovery.is_some() {
        return fail(CheckErrorKind::XrefRepaired);
    }
    if doc.xref_section_count != 1 {
        return fail(CheckErrorKind::IncrementalUpdate {
            sections: doc.xref_section_count,
        });
    }
    if !matches!(
        doc.reference_table.cross_reference_type,
        lopdf::xref::XrefType::CrossReferenceTable
    ) {
        return fail(CheckErrorKind::XrefStream);
    }
    if doc.linearization.is_some() {
        return fail(CheckErrorKind::Linearized);
    }
    for (&id, entry) in &doc.reference_table.entries {
        if let lopdf::xref::XrefEntry::Compressed { .. } = entry {
            return fail(CheckErrorKind::ObjectStream { id });
        }
    }
    Ok(())
}

/// Every key of `dict` must be in `allowed`, and every one of `required` present.
fn check_keys(
    dict: &Dictionary,
    place: Place,
    allowed: &[&'static str],
    required: &[&'static str],
) -> Result<(), CheckError> {
    for (key, _) in dict.iter() {
        if !allowed.iter().any(|a| a.as_bytes() == key.as_slice()) {
            return fail(CheckErrorKind::ForbiddenKey {
                place,
                key: quote(key),
            });
        }
    }
    for key in required {
        if !dict.has(key.as_bytes()) {
            return fail(CheckErrorKind::MissingKey { place, key });
        }
    }
    Ok(())
}

fn bad(place: Place, key: &'static str) -> CheckError {
    CheckError {
        kind: CheckErrorKind::BadValue { place, key },
    }
}

fn get<'a>(
    dict: &'a Dictionary,
    place: Place,
    key: &'static str,
) -> Result<&'a Object, CheckError> {
    dict.get(key.as_bytes()).map_err(|_| CheckError {
        kind: CheckErrorKind::MissingKey { place, key },
    })
}

fn expect_name(
    dict: &Dictionary,
    place: Place,
    key: &'static str,
    value: &str,
) -> Result<(), CheckError> {
    match get(dict, place, key)? {
        Object::Name(n) if n.as_slice() == value.as_bytes() => Ok(()),
        _ => Err(bad(place, key)),
    }
}

fn get_int(dict: &Dictionary, place: Place, key: &'static str) -> Result<i64, CheckError> {
    match get(dict, place, key)? {
        Object::Integer(i) => Ok(*i),
        _ => Err(bad(place, key)),
    }
}

fn get_ref(dict: &Dictionary, place: Place, key: &'static str) -> Result<ObjectId, CheckError> {
    match get(dict, place, key)? {
        Object::Reference(id) => Ok(*id),
        _ => Err(bad(place, key)),
    }
}

/// Follows a reference that the walk has not used before.
fn take<'a>(
    doc: &'a Document,
    id: ObjectId,
    place: Place,
    seen: &mut BTreeSet<u32>,
) -> Result<&'a Object, CheckError> {
    if id.1 != 0 {
        return fail(CheckErrorKind::BadReference { place, id: id.0 });
    }
    if !seen.insert(id.0) {
        return fail(CheckErrorKind::SharedObject { id: id.0 });
    }
    doc.objects.get(&id).ok_or(CheckError {
        kind: CheckErrorKind::BadReference { place, id: id.0 },
    })
}

fn take_dict<'a>(
    doc: &'a Document,
    id: ObjectId,
    place: Place,
    seen: &mut BTreeSet<u32>,
) -> Result<&'a Dictionary, CheckError> {
    match take(doc, id, place, seen)? {
        Object::Dictionary(d) => Ok(d),
        _ => fail(CheckErrorKind::BadReference { place, id: id.0 }),
    }
}

fn take_stream<'a>(
    doc: &'a Document,
    id: ObjectId,
    place: Place,
    seen: &mut BTreeSet<u32>,
) -> Result<&'a Stream, CheckError> {
    match take(doc, id, place, seen)? {
        Object::Stream(s) => Ok(s),
        _ => fail(CheckErrorKind::BadReference { place, id: id.0 }),
    }
}

/// The trailer may hold only `/Size`, `/Root` and `/ID`; returns the root reference.
fn check_trailer(trailer: &Dictionary) -> Result<ObjectId, CheckError> {
    let place = Place::Trailer;
    check_keys(
        trailer,
        place,
        &["Size", "Root", "ID"],
        &["Size", "Root", "ID"],
    )?;
    get_int(trailer, place, "Size")?;
    match get(trailer, place, "ID")? {
        Object::Array(ids)
            if ids.len() == 2
                && ids
                    .iter()
                    .all(|i| matches!(i, Object::String(s, _) if s.len() == 16)) => {}
        _ => return Err(bad(place, "ID")),
    }
    let root = get_ref(trailer, place, "Root")?;
    if root != (CATALOG_ID, 0) {
        return Err(bad(place, "Root"));
    }
    Ok(root)
}

fn check_catalog(
    doc: &Document,
    root: ObjectId,
    seen: &mut BTreeSet<u32>,
) -> Result<Vec<CheckedPage>, CheckError> {
    let catalog = take_dict(doc, root, Place::Trailer, seen)?;
    check_keys(
        catalog,
        Place::Catalog,
        &["Type", "Pages"],
        &["Type", "Pages"],
    )?;
    expect_name(catalog, Place::Catalog, "Type", "Catalog")?;
    let pages_id = get_ref(catalog, Place::Catalog, "Pages")?;
    if pages_id != (PAGES_ID, 0) {
        return Err(bad(Place::Catalog, "Pages"));
    }

    let place = Place::Pages;
    let pages = take_dict(doc, pages_id, Place::Catalog, seen)?;
    check_keys(
        pages,
        place,
        &["Type", "Kids", "Count"],
        &["Type", "Kids", "Count"],
    )?;
    expect_name(pages, place, "Type", "Pages")?;
    let Object::Array(kids) = get(pages, place, "Kids")? else {
        return Err(bad(place, "Kids"));
    };
    if kids.is_empty() {
        return Err(bad(place, "Kids"));
    }
    if kids.len() > PDF_MAX_PAGES as usize {
        return fail(CheckErrorKind::TooManyPages {
            count: kids.len(),
            limit: PDF_MAX_PAGES,
        });
    }
    if usize::try_from(get_int(pages, place, "Count")?).ok() != Some(kids.len()) {
        return Err(bad(place, "Count"));
    }

    let mut checked = Vec::with_capacity(kids.len());
    for (index, kid) in kids.iter().enumerate() {
        let Object::Reference(id) = kid else {
            return Err(bad(place, "Kids"));
        };
        let page = take_dict(doc, *id, place, seen)?;
        checked.push(check_page(doc, index, page, pages_id, seen)?);
    }
    Ok(checked)
}

fn check_page(
    doc: &Document,
    index: usize,
    page: &Dictionary,
    pages_id: ObjectId,
    seen: &mut BTreeSet<u32>,
) -> Result<CheckedPage, CheckError> {
    let place = Place::Page;
    const KEYS: &[&str] = &["Type", "Parent", "MediaBox", "Resources", "Contents"];
    check_keys(page, place, KEYS, KEYS)?;
    expect_name(page, place, "Type", "Page")?;
    if get_ref(page, place, "Parent")? != pages_id {
        return Err(bad(place, "Parent"));
    }
    let (width_pt, height_pt) = match get(page, place, "MediaBox")? {
        Object::Array(b) => match b.as_slice() {
            [Object::Integer(0), Object::Integer(0), Object::Real(w), Object::Real(h)]
                if w.is_finite() && h.is_finite() && *w > 0.0 && *h > 0.0 =>
            {
                (*w, *h)
            }
            _ => return Err(bad(place, "MediaBox")),
        },
        _ => return Err(bad(place, "MediaBox")),
    };

    let Object::Dictionary(resources) = get(page, place, "Resources")? else {
        return Err(bad(place, "Resources"));
    };
    check_keys(resources, Place::Resources, &["XObject"], &["XObject"])?;
    let Object::Dictionary(xobjects) = get(resources, Place::Resources, "XObject")? else {
        return Err(bad(Place::Resources, "XObject"));
    };
    check_keys(xobjects, Place::XObjects, &["Im0"], &["Im0"])?;
    let image_id = get_ref(xobjects, Place::XObjects, "Im0")?;
    let image = take_stream(doc, image_id, Place::XObjects, seen)?;
    let size = check_image(index, image)?;

    let content_id = get_ref(page, place, "Contents")?;
    let content = take_stream(doc, content_id, place, seen)?;
    check_keys(&content.dict, Place::Content, &["Length"], &["Length"])?;
    if content.content != content_stream(width_pt, height_pt) {
        return fail(CheckErrorKind::ContentMismatch { page: index });
    }

    Ok(size)
}

fn check_image(page: usize, image: &Stream) -> Result<CheckedPage, CheckError> {
    let place = Place::Image;
    let dict = &image.dict;
    const ALLOWED: &[&str] = &[
        "Type",
        "Subtype",
        "Width",
        "Height",
        "ColorSpace",
        "BitsPerComponent",
        "Filter",
        "DecodeParms",
        "Length",
    ];
    const REQUIRED: &[&str] = &[
        "Type",
        "Subtype",
        "Width",
        "Height",
        "ColorSpace",
        "BitsPerComponent",
        "Filter",
        "Length",
    ];
    check_keys(dict, place, ALLOWED, REQUIRED)?;
    expect_name(dict, place, "Type", "XObject")?;
    expect_name(dict, place, "Subtype", "Image")?;
    let width = u32::try_from(get_int(dict, place, "Width")?)
        .ok()
        .filter(|w| (1..=PDF_MAX_PAGE_WIDTH).contains(w))
        .ok_or_else(|| bad(place, "Width"))?;
    let height = u32::try_from(get_int(dict, place, "Height")?)
        .ok()
        .filter(|h| (1..=PDF_MAX_PAGE_HEIGHT).contains(h))
        .ok_or_else(|| bad(place, "Height"))?;
    let bits = get_int(dict, place, "BitsPerComponent")?;

    // (components per pixel, largest index for a palette)
    let (colours, max_index) = match get(dict, place, "ColorSpace")? {
        Object::Name(n) if n.as_slice() == b"DeviceRGB" => (3, None),
        Object::Name(n) if n.as_slice() == b"DeviceGray" => (1, None),
        Object::Array(a) => match a.as_slice() {
            [Object::Name(i), Object::Name(base), Object::Integer(hival), Object::String(palette, _)]
                if i.as_slice() == b"Indexed"
                    && base.as_slice() == b"DeviceRGB"
                    && (0..=255).contains(hival)
                    && usize::try_from(*hival).ok().map(|h| (h + 1) * 3) == Some(palette.len()) =>
            {
                (1, Some(*hival))
            }
            _ => return Err(bad(place, "ColorSpace")),
        },
        _ => return Err(bad(place, "ColorSpace")),
    };
    let bits_ok = match max_index {
        Some(hival) => matches!(bits, 1 | 2 | 4 | 8) && hival < (1 << bits),
        None => bits == 8,
    };
    if !bits_ok {
        return Err(bad(place, "BitsPerComponent"));
    }

    match get(dict, place, "Filter")? {
        Object::Name(n) if n.as_slice() == b"FlateDecode" => {
            let Object::Dictionary(parms) = get(dict, place, "DecodeParms")? else {
                return Err(bad(place, "DecodeParms"));
            };
            check_flate_image(page, image, parms, width, height, colours, bits, max_index)?;
        }
        Object::Name(n) if n.as_slice() == b"DCTDecode" && max_index.is_none() => {
            if dict.has(b"DecodeParms") {
                return fail(CheckErrorKind::ForbiddenKey {
                    place,
                    key: "DecodeParms".into(),
                });
            }
            check_jpeg_frame(page, &image.content, width, height, colours)?;
        }
        _ => return Err(bad(place, "Filter")),
    }

    Ok(CheckedPage { width, height })
}

#[allow(clippy::too_many_arguments)]
fn check_flate_image(
    page: usize,
    image: &Stream,
    parms: &Dictionary,
    width: u32,
    height: u32,
    colours: i64,
    bits: i64,
    max_index: Option<i64>,
) -> Result<(), CheckError> {
    let place = Place::DecodeParms;
    const KEYS: &[&str] = &["Predictor", "Colors", "BitsPerComponent", "Columns"];
    check_keys(parms, place, KEYS, KEYS)?;
    if get_int(parms, place, "Predictor")? != 15 {
        return Err(bad(place, "Predictor"));
    }
    if get_int(parms, place, "Colors")? != colours {
        return Err(bad(place, "Colors"));
    }
    if get_int(parms, place, "BitsPerComponent")? != bits {
        return Err(bad(place, "BitsPerComponent"));
    }
    if get_int(parms, place, "Columns")? != i64::from(width) {
        return Err(bad(place, "Columns"));
    }

    // Width, height, colours and bits are all bounded above, so none of this can overflow.
    let malformed = |reason| CheckError {
        kind: CheckErrorKind::ImageData { page, reason },
    };
    let bits_per_row = u64::from(width) * (colours as u64) * (bits as u64);
    let row_bytes =
        usize::try_from(bits_per_row.div_ceil(8)).map_err(|_| malformed("row too long"))?;
    let stored = (row_bytes + 1)
        .checked_mul(usize::try_from(height).map_err(|_| malformed("too many rows"))?)
        .ok_or_else(|| malformed("too many rows"))?;

    // Read one byte past the expected size to tell "exact" from "longer".
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(image.content.as_slice())
        .take(stored as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|_| malformed("flate data does not decode"))?;
    if inflated.len() != stored {
        return Err(malformed("decoded size differs from width x height"));
    }
    let bpp = usize::try_from((colours * bits + 7) / 8).unwrap_or(1);
    let pixels =
        unfilter(&inflated, row_bytes, bpp).ok_or_else(|| malformed("unknown row filter"))?;

    if let Some(hival) = max_index {
        if !palette_indices_in_range(&pixels, row_bytes, width, bits, hival) {
            return Err(malformed("palette index out of range"));
        }
    }
    Ok(())
}

fn palette_indices_in_range(
    pixels: &[u8],
    row_bytes: usize,
    width: u32,
    bits: i64,
    hival: i64,
) -> bool {
    let Ok(bits) = u32::try_from(bits) else {
        return false;
    };
    let per_byte = 8 / bits as usize;
    let mask = (1u16 << bits) - 1;
    pixels.chunks_exact(row_bytes).all(|row| {
        (0..width as usize).all(|x| {
            let byte = row.get(x / per_byte).copied().unwrap_or(0);
            let shift = 8 - bits as usize * (x % per_byte + 1);
            i64::from((u16::from(byte) >> shift) & mask) <= hival
        })
    })
}

/// The JPEG must start with SOI, have a baseline or progressive frame header of the image's size
/// and component count, and end with EOI.
fn check_jpeg_frame(
    page: usize,
    data: &[u8],
    width: u32,
    height: u32,
    colours: i64,
) -> Result<(), CheckError> {
    let malformed = |reason| CheckError {
        kind: CheckErrorKind::ImageData { page, reason },
    };
    if !data.starts_with(&[0xFF, 0xD8]) || !data.ends_with(&[0xFF, 0xD9]) {
        return Err(malformed("jpeg lacks start or end marker"));
    }
    let mut at = 2usize;
    loop {
        let (Some(&0xFF), Some(&marker)) = (data.get(at), data.get(at.saturating_add(1))) else {
            return Err(malformed("jpeg segment is malformed"));
        };
        let length = match (
            data.get(at.saturating_add(2)),
            data.get(at.saturating_add(3)),
        ) {
            (Some(&hi), Some(&lo)) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(malformed("jpeg segment is truncated")),
        };
        if matches!(marker, 0xC0..=0xC2) {
            let field = |i: usize| data.get(at.saturating_add(4).saturating_add(i)).copied();
            let frame = (field(1), field(2), field(3), field(4), field(5));
            let (Some(h1), Some(h0), Some(w1), Some(w0), Some(n)) = frame else {
                return Err(malformed("jpeg frame header is truncated"));
            };
            let ok = u32::from(u16::from_be_bytes([h1, h0])) == height
                && u32::from(u16::from_be_bytes([w1, w0])) == width
                && i64::from(n) == colours;
            return if ok {
                Ok(())
            } else {
                Err(malformed("jpeg frame size differs from the image"))
            };
        }
        if marker == 0xDA || length < 2 {
            return Err(malformed("jpeg has no frame header before its data"));
        }
        at = at.saturating_add(2).saturating_add(length);
    }
}

/// A writer that compares what is written with the file, instead of storing it.
struct Compare<'a> {
    expected: &'a [u8],
    at: usize,
    mismatch: Option<u64>,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.mismatch.is_none() {
            let end = self.at.saturating_add(buf.len());
            match self.expected.get(self.at..end) {
                Some(slice) if slice == buf => {}
                other => {
                    let same =
                        other.map_or(0, |s| s.iter().zip(buf).take_while(|(a, b)| a == b).count());
                    self.mismatch = Some(self.at.saturating_add(same) as u64);
                    return Err(io::Error::other("mismatch"));
                }
            }
            self.at = end;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the parsed objects again, in file order, with the rebuild writer's framing, and
/// requires the result to be the input byte for byte.
fn check_canonical(doc: &Document, bytes: &[u8]) -> Result<(), CheckError> {
    let mut compare = Compare {
        expected: bytes,
        at: 0,
        mismatch: None,
    };
    let not_canonical = |c: &Compare| CheckError {
        kind: CheckErrorKind::NotCanonical {
            offset: c.mismatch.unwrap_or(c.at as u64),
        },
    };

    // Object numbers run 1..=n with no gap (the walk saw every object and every number is in
    // the table), so offsets[i] is object i + 1's.
    let mut by_offset = Vec::with_capacity(doc.objects.len());
    let mut offsets = Vec::with_capacity(doc.objects.len());
    for (expected_id, (&id, entry)) in (1u32..).zip(doc.reference_table.entries.range(1..)) {
        let lopdf::xref::XrefEntry::Normal {
            offset,
            generation: 0,
        } = entry
        else {
            return fail(CheckErrorKind::NotCanonical { offset: 0 });
        };
        if id != expected_id {
            return fail(CheckErrorKind::NotCanonical { offset: 0 });
        }
        by_offset.push((*offset, id));
        offsets.push(u64::from(*offset));
    }
    if offsets.len() != doc.objects.len() {
        return fail(CheckErrorKind::NotCanonical { offset: 0 });
    }
    by_offset.sort_unstable();

    if compare.write_all(HEADER).is_err() {
        return Err(not_canonical(&compare));
    }
    for (offset, id) in by_offset {
        if compare.at as u64 != u64::from(offset) {
            return fail(CheckErrorKind::NotCanonical {
                offset: compare.at as u64,
            });
        }
        let object = doc.objects.get(&(id, 0)).ok_or(CheckError {
            kind: CheckErrorKind::NotCanonical {
                offset: u64::from(offset),
            },
        })?;
        if write_indirect(&mut compare, id, object).is_err() {
            return Err(not_canonical(&compare));
        }
    }
    let xref_offset = compare.at as u64;
    if write_tail(&mut compare, &offsets, xref_offset, &doc.trailer).is_err() {
        return Err(not_canonical(&compare));
    }
    if compare.at != bytes.len() {
        return fail(CheckErrorKind::NotCanonical {
            offset: compare.at as u64,
        });
    }
    Ok(())
}

/// The PNG file signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Checks that `bytes` is a PNG holding only `IHDR`, `IDAT` chunks and `IEND`, with correct
/// CRCs, 8-bit samples, no interlacing and nothing after `IEND`. Returns (width, height).
///
/// # Errors
///
/// A [`CheckError`] naming the first chunk or field that the rebuild does not write.
pub fn check_png(bytes: &[u8]) -> Result<(u32, u32), CheckError> {
    let Some(mut rest) = bytes.strip_prefix(PNG_SIGNATURE) else {
        return fail(CheckErrorKind::PngSignature);
    };
    let mut size = None;
    let mut idat_seen = false;
    loop {
        let offset = bytes.len() - rest.len();
        let truncated = CheckError {
            kind: CheckErrorKind::PngTruncated { offset },
        };
        let (Some(len), Some(name)) = (rest.get(..4), rest.get(4..8)) else {
            return Err(truncated);
        };
        let len = <[u8; 4]>::try_from(len)
            .map(u32::from_be_bytes)
            .map_err(|_| truncated.clone())?;
        let len = usize::try_from(len).map_err(|_| truncated.clone())?;
        let end = len.checked_add(12).ok_or(truncated.clone())?;
        let Some(chunk) = rest.get(..end) else {
            return Err(truncated);
        };
        let (body, crc) = chunk.split_at(end - 4);
        let shown = quote(name);
        if crc32fast::hash(body.get(4..).unwrap_or_default()).to_be_bytes() != crc {
            return fail(CheckErrorKind::PngCrc { name: shown });
        }
        let data = body.get(8..).unwrap_or_default();
        rest = rest.get(end..).unwrap_or_default();

        match (name, size.is_some(), idat_seen) {
            (b"IHDR", false, _) => size = Some(check_ihdr(data)?),
            (b"IDAT", true, _) => idat_seen = true,
            (b"IEND", true, true) if data.is_empty() => {
                if !rest.is_empty() {
                    return fail(CheckErrorKind::PngTrailingBytes { count: rest.len() });
                }
                return size.ok_or(CheckError {
                    kind: CheckErrorKind::PngChunk { name: shown },
                });
            }
            _ => return fail(CheckErrorKind::PngChunk { name: shown }),
        }
    }
}

fn check_ihdr(data: &[u8]) -> Result<(u32, u32), CheckError> {
    let header = |field| CheckError {
        kind: CheckErrorKind::PngHeader { field },
    };
    let [w0, w1, w2, w3, h0, h1, h2, h3, depth, colour, compression, filter, interlace] = data
    else {
        return Err(header("length"));
    };
    let width = u32::from_be_bytes([*w0, *w1, *w2, *w3]);
    let height = u32::from_be_bytes([*h0, *h1, *h2, *h3]);
    if width == 0 {
        return Err(header("width"));
    }
    if height == 0 {
        return Err(header("height"));
    }
    if *depth != 8 {
        return Err(header("bit depth"));
    }
    if !matches!(colour, 0 | 2 | 4 | 6) {
        return Err(header("colour type"));
    }
    if *compression != 0 || *filter != 0 {
        return Err(header("method"));
    }
    if *interlace != 0 {
        return Err(header("interlace method"));
    }
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebuild::pdf::{encode_page, Compression, PdfOptions, PdfWriter};
    use lopdf::dictionary;

    fn ours() -> Vec<u8> {
        let options = PdfOptions {
            dpi: 150,
            compression: Compression::Lossless,
        };
        let mut writer = PdfWriter::new(Vec::new(), options).unwrap();
        for shade in [0u8, 90] {
            let rgb: Vec<u8> = (0..12 * 10)
                .flat_map(|i| [shade, (i % 256) as u8, 3])
                .collect();
            writer
                .write_page(encode_page(12, 10, &rgb, &options).unwrap())
                .unwrap();
        }
        writer.finish().unwrap().0
    }

    /// Our output after `edit`, saved by lopdf (whose layout differs from ours: the semantic
    /// checks must fire before the layout comparison).
    fn edited(edit: impl FnOnce(&mut Document)) -> Vec<u8> {
        let mut doc = Document::load_mem(&ours()).unwrap();
        edit(&mut doc);
        let mut out = Vec::new();
        doc.save_to(&mut out).unwrap();
        // lopdf ends its files with `%%EOF` and no end of line; add ours so that the end check
        // passes and the checks under test are reached.
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out
    }

    fn kind(bytes: &[u8]) -> CheckErrorKind {
        check_pdf(bytes).unwrap_err().kind().clone()
    }

    fn first_page_id(doc: &Document) -> ObjectId {
        *doc.get_pages().values().next().unwrap()
    }

    #[test]
    fn accepts_our_output() {
        assert_eq!(
            check_pdf(&ours()).unwrap().pages,
            vec![
                CheckedPage {
                    width: 12,
                    height: 10
                };
                2
            ]
        );
    }

    #[test]
    fn rejects_info_in_trailer() {
        let pdf = edited(|doc| {
            let info = doc.add_object(dictionary! { "Producer" => Object::string_literal("x") });
            doc.trailer.set("Info", info);
        });
        assert_eq!(
            kind(&pdf),
            CheckErrorKind::ForbiddenKey {
                place: Place::Trailer,
                key: "Info".into()
            }
        );
    }

    #[test]
    fn rejects_annots_on_page() {
        let pdf = edited(|doc| {
            let page = first_page_id(doc);
            doc.get_dictionary_mut(page)
                .unwrap()
                .set("Annots", Object::Array(vec![]));
        });
        assert_eq!(
            kind(&pdf),
            CheckErrorKind::ForbiddenKey {
                place: Place::Page,
                key: "Annots".into()
            }
        );
    }

    #[test]
    fn rejects_unreferenced_font_object() {
        let mut font_id = 0;
        let pdf = edited(|doc| {
            font_id = doc
                .add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1" })
                .0;
        });
        assert_eq!(
            kind(&pdf),
            CheckErrorKind::UnreferencedObject { id: font_id }
        );
    }

    #[test]
    fn rejects_font_in_resources() {
        let pdf = edited(|doc| {
            let font = doc.add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1" });
            let page = first_page_id(doc);
            let page = doc.get_dictionary_mut(page).unwrap();
            let resources = page.get_mut(b"Resources").unwrap().as_dict_mut().unwrap();
            resources.set("Font", dictionary! { "F1" => font });
        });
        assert_eq!(
            kind(&pdf),
            CheckErrorKind::ForbiddenKey {
                place: Place::Resources,
                key: "Font".into()
            }
        );
    }

    #[test]
    fn rejects_javascript_open_action() {
        let pdf = edited(|doc| {
            let action =
                dictionary! { "S" => "JavaScript", "JS" => Object::string_literal("app.alert(1)") };
            doc.catalog_mut().unwrap().set("OpenAction", action);
        });
        assert_eq!(
            kind(&pdf),
            CheckErrorKind::ForbiddenKey {
                place: Place::Catalog,
                key: "OpenAction".into()
            }
        );
    }

    #[test]
    fn rejects_bytes_after_eof() {
        let mut pdf = ours();
        pdf.extend_from_slice(b"% hidden\n");
        assert_eq!(kind(&pdf), CheckErrorKind::TrailingBytes { count: 10 });
    }

    #[test]
    fn rejects_missing_eof() {
        let mut pdf = ours();
        pdf.truncate(pdf.len() - 6);
        assert_eq!(kind(&pdf), CheckErrorKind::MissingEof);
    }

    #[test]
    fn rejects_incremental_update() {
        let mut pdf = ours();
        let doc = Document::load_mem(&pdf).unwrap();
        let size = doc.trailer.get(b"Size").unwrap().as_i64().unwrap();
        let prev = doc.xref_start;
        let object_at = pdf.len();
        pdf.extend_from_slice(b"2 0 obj\n<</Type/Catalog/Pages 1 0 R>>\nendobj\n");
        let xref_at = pdf.len();
        let tail = format!(
            "xref\n2 1\n{object_at:010} 00000 n \ntrailer\n<</Size {size}/Root 2 0 R/Prev {prev}>>\nstartxref\n{xref_at}\n%%EOF\n"
        );
        pdf.extend_from_slice(tail.as_bytes());
        assert_eq!(
            kind(&pdf),
            CheckErrorKind::IncrementalUpdate { sections: 2 }
        );
    }

    #[test]
    fn rejects_changed_byte_in_header_comment() {
        let mut pdf = ours();
        pdf[12] ^= 1;
        assert_eq!(kind(&pdf), CheckErrorKind::NotCanonical { offset: 12 });
    }

    /// Our framing is lopdf's own, so a load and save through lopdf differs from our file only
    /// in object order (lopdf writes them by number); the layout check follows the file's order,
    /// so the edited files in these tests are refused for their edit, not for their layout.
    #[test]
    fn accepts_our_output_resaved_by_lopdf() {
        let resaved = edited(|_| {});
        assert_ne!(resaved, ours());
        assert!(check_pdf(&resaved).is_ok());
    }

    #[test]
    fn rejects_wrong_content_stream() {
        let pdf = edited(|doc| {
            let page = doc.get_dictionary(first_page_id(doc)).unwrap();
            let content = page.get(b"Contents").unwrap().as_reference().unwrap();
            let stream = doc
                .get_object_mut(content)
                .unwrap()
                .as_stream_mut()
                .unwrap();
            stream.set_content(b"q 1 0 0 1 0 0 cm /Im0 Do Q".to_vec());
        });
        assert_eq!(kind(&pdf), CheckErrorKind::ContentMismatch { page: 0 });
    }

    #[test]
    fn rejects_corpus_pdf() {
        let path = "/work/shared/corpus/text-short-cfgguide.pdf";
        let bytes = std::fs::read(path).expect("corpus file");
        assert!(check_pdf(&bytes).is_err());
    }

    #[test]
    fn rejects_non_pdf() {
        assert_eq!(kind(b"hello\n%%EOF\n"), CheckErrorKind::Parse);
    }

    fn chunk(name: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(name);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[4..]);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn our_png() -> Vec<u8> {
        let mut out = Vec::new();
        let rgba: Vec<u8> = (0..6 * 4).flat_map(|i| [i as u8, 2, 3, 255]).collect();
        crate::rebuild::png::write_png(&mut out, 6, 4, &rgba).unwrap();
        out
    }

    #[test]
    fn png_accepts_our_output() {
        assert_eq!(check_png(&our_png()).unwrap(), (6, 4));
    }

    #[test]
    fn png_rejects_text_chunk() {
        let png = our_png();
        let ihdr_end = 8 + 25;
        let mut edited = png[..ihdr_end].to_vec();
        edited.extend(chunk(b"tEXt", b"Comment\0hello"));
        edited.extend_from_slice(&png[ihdr_end..]);
        assert_eq!(
            check_png(&edited).unwrap_err().kind(),
            &CheckErrorKind::PngChunk {
                name: "tEXt".into()
            }
        );
    }

    #[test]
    fn png_rejects_bytes_after_iend() {
        let mut png = our_png();
        png.extend_from_slice(b"PK");
        assert_eq!(
            check_png(&png).unwrap_err().kind(),
            &CheckErrorKind::PngTrailingBytes { count: 2 }
        );
    }

    #[test]
    fn png_rejects_bad_crc() {
        let mut png = our_png();
        let last = png.len() - 1;
        png[last] ^= 1;
        assert_eq!(
            check_png(&png).unwrap_err().kind(),
            &CheckErrorKind::PngCrc {
                name: "IEND".into()
            }
        );
    }

    #[test]
    fn png_rejects_truncated_file() {
        let png = our_png();
        assert!(matches!(
            check_png(&png[..png.len() - 3]).unwrap_err().kind(),
            CheckErrorKind::PngTruncated { .. }
        ));
    }

    #[test]
    fn error_names_key_without_content() {
        let pdf = edited(|doc| {
            doc.catalog_mut()
                .unwrap()
                .set("Names", Object::string_literal("secret document words"));
        });
        let message = check_pdf(&pdf).unwrap_err().to_string();
        assert_eq!(message, "catalog has forbidden key /Names");
    }
}
