//! Streaming PDF writer: one full-page image per page, written as each page arrives.
//!
//! # Layout
//!
//! Every file this module writes has the same shape, which [`crate::check::check_pdf`] relies on:
//!
//! | object | what it is |
//! |---|---|
//! | header | `%PDF-1.7`, then a comment of four high bytes marking the file as binary |
//! | `3k+3 0 obj` | page k's image XObject (Flate with PNG predictors, or DCT) |
//! | `3k+4 0 obj` | page k's content stream, `q W 0 0 H 0 0 cm /Im0 Do Q`, not compressed |
//! | `3k+5 0 obj` | page k's `/Page` dictionary |
//! | `1 0 obj` | the `/Pages` node, written last because it lists every page |
//! | `2 0 obj` | the `/Catalog` |
//! | xref, trailer | one classic cross-reference table; the trailer holds `/Size /Root /ID` |
//!
//! # Why not `lopdf::Document`
//!
//! `lopdf::Document` keeps every object, image data included, in memory until it is saved, so the
//! caller's memory would grow with the page count (a 1000-page document at 150 DPI is gigabytes of
//! images). Here each page is serialised and written as soon as it arrives, and only its three
//! object offsets are kept. lopdf still serialises each object ([`lopdf::Writer::write_object`]),
//! so dictionaries, names and strings are spelled exactly as lopdf writes and reads them; this
//! module writes only the `N 0 obj … endobj` framing, the cross-reference table and the trailer.
//!
//! # Determinism
//!
//! No clock, no `/Info`, no XMP. The trailer's `/ID` is derived from the pages: the first 16
//! bytes of a SHA-256 over the resolution and, for each page in order, a SHA-256 of its size,
//! representation, palette and encoded image data (which the pixels and options determine).
//! Same pixels and options give the same bytes.

use std::io::{BufWriter, Write};

use lopdf::{Dictionary, Object, Stream, StringFormat};
use sha2::{Digest, Sha256};

use super::predict::{FilterStrategy, RowFilter, RowPacker};
use super::{check_pixels, check_quality, encode_jpeg, CountingWriter, RebuildError};

/// The file header: version line, then a comment of bytes above 127 so that transfer tools treat
/// the file as binary.
pub(crate) const HEADER: &[u8] = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n";

/// The object number of the `/Pages` node (written last, referenced by every page).
pub(crate) const PAGES_ID: u32 = 1;
/// The object number of the `/Catalog`.
pub(crate) const CATALOG_ID: u32 = 2;
/// The object number of page 0's image; each page uses three consecutive numbers.
pub(crate) const FIRST_PAGE_ID: u32 = 3;

/// Output buffer size: large enough that lopdf's token-sized writes become few system calls.
const OUTPUT_BUFFER: usize = 64 * 1024;

/// The largest byte offset a cross-reference entry can hold: ten decimal digits.
const MAX_XREF_OFFSET: u64 = 9_999_999_999;

/// How page images are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Exact pixels: the smallest of gray, palette or RGB, Flate-compressed with PNG predictors.
    #[default]
    Lossless,
    /// Baseline JPEG (DCTDecode) at this quality, 1 to 100.
    Jpeg {
        /// JPEG quality, 1 to 100; [`Compression::DEFAULT_JPEG_QUALITY`] is a good default.
        quality: u8,
    },
}

impl Compression {
    /// The JPEG quality to use when the user asks for JPEG without naming one.
    pub const DEFAULT_JPEG_QUALITY: u8 = 85;

    /// Validates the quality of a JPEG choice.
    fn validate(self) -> Result<(), RebuildError> {
        match self {
            Compression::Lossless => Ok(()),
            Compression::Jpeg { quality } => check_quality(quality),
        }
    }
}

/// Options for the PDF rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdfOptions {
    /// Resolution the pages were rendered at, in pixels per inch; sets the page size in points.
    pub dpi: u32,
    /// How page images are compressed.
    pub compression: Compression,
}

/// How one page's pixels are stored in the PDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// `/DeviceGray`, 8 bits, Flate: every pixel was gray and there were more than 16 levels.
    Gray8,
    /// `[/Indexed /DeviceRGB n palette]`, Flate: at most 256 distinct colours.
    Indexed {
        /// Bits per index: 1, 2, 4 or 8, the fewest that hold every colour.
        bits: u8,
        /// Number of palette entries, 1 to 256.
        colours: u16,
    },
    /// `/DeviceRGB`, 8 bits, Flate.
    Rgb8,
    /// `/DeviceGray` JPEG (one component): every pixel was gray.
    JpegGray,
    /// `/DeviceRGB` JPEG with 4:2:0 chroma subsampling.
    JpegRgb,
}

/// One page's image, encoded and ready to be written; produced by [`encode_page`].
///
/// Encoding is the expensive step and needs nothing from the writer, so it can run on another
/// thread while the writer writes the previous page.
#[derive(Debug, Clone)]
pub struct EncodedPage {
    width: u32,
    height: u32,
    representation: Representation,
    /// Palette for [`Representation::Indexed`]: 3 bytes per entry; empty otherwise.
    palette: Vec<u8>,
    data: Vec<u8>,
    /// SHA-256 of size, representation, palette and encoded data, for the document's `/ID`.
    digest: [u8; 32],
}

impl EncodedPage {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// How the pixels are stored.
    pub fn representation(&self) -> Representation {
        self.representation
    }

    /// Size of the compressed image data in bytes.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// What writing one page cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageStats {
    /// How the page's pixels are stored.
    pub representation: Representation,
    /// Bytes of compressed image data.
    pub image_bytes: usize,
    /// Bytes written for the page's three objects, framing included.
    pub written_bytes: u64,
}

/// What the finished file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdfSummary {
    /// Number of pages.
    pub pages: u32,
    /// Size of the whole file in bytes.
    pub bytes: u64,
}

/// Encodes one page of 8-bit RGB pixels (`width x height x 3` bytes, rows top to bottom).
///
/// Pure: it touches nothing but its arguments, so it can run on another thread.
///
/// # Errors
///
/// [`RebuildError::ZeroDimension`] or [`RebuildError::PixelCountMismatch`] for a buffer that does
/// not match the size, [`RebuildError::InvalidQuality`] for a JPEG quality outside 1 to 100, and
/// [`RebuildError::Encode`] when the JPEG encoder refuses the size (a side over 65535).
pub fn encode_page(
    width: u32,
    height: u32,
    rgb: &[u8],
    options: &PdfOptions,
) -> Result<EncodedPage, RebuildError> {
    check_pixels(width, height, 3, rgb.len())?;
    options.compression.validate()?;

    let (representation, palette, data) = match options.compression {
        Compression::Lossless => encode_lossless(width, rgb)?,
        Compression::Jpeg { quality } => {
            if let Some(gray) = gray_plane(rgb)? {
                (
                    Representation::JpegGray,
                    Vec::new(),
                    encode_jpeg(width, height, &gray, true, quality)?,
                )
            } else {
                (
                    Representation::JpegRgb,
                    Vec::new(),
                    encode_jpeg(width, height, rgb, false, quality)?,
                )
            }
        }
    };

    let digest = page_digest(width, height, representation, &palette, &data);
    Ok(EncodedPage {
        width,
        height,
        representation,
        palette,
        data,
        digest,
    })
}

/// SHA-256 of a page's size, representation, palette and encoded data.
///
/// The encoded data stands for the pixels: lossless encoding is one-to-one and JPEG encoding is
/// deterministic, so same pixels and options give the same digest. Hashing the output rather
/// than the pixels costs a few hundred KB per page instead of 6 MB (at 150 ppi, SHA-256 of
/// the pixels was about a third of a text page's encoding time).
fn page_digest(
    width: u32,
    height: u32,
    representation: Representation,
    palette: &[u8],
    data: &[u8],
) -> [u8; 32] {
    let tag: [u8; 2] = match representation {
        Representation::Gray8 => [0, 8],
        Representation::Indexed { bits, .. } => [1, bits],
        Representation::Rgb8 => [2, 8],
        Representation::JpegGray => [3, 8],
        Representation::JpegRgb => [4, 8],
    };
    let mut hasher = Sha256::new();
    hasher.update(width.to_be_bytes());
    hasher.update(height.to_be_bytes());
    hasher.update(tag);
    // A palette has at most 768 bytes, so its length fits and separates it from the data.
    hasher.update((palette.len() as u64).to_be_bytes());
    hasher.update(palette);
    hasher.update(data);
    hasher.finalize().into()
}

fn is_gray(pixel: &[u8]) -> bool {
    matches!(pixel, [r, g, b] if r == g && g == b)
}

fn pack(pixel: &[u8]) -> u32 {
    match pixel {
        [r, g, b] => u32::from(*r) << 16 | u32::from(*g) << 8 | u32::from(*b),
        _ => 0,
    }
}

/// The colours of a page that is not all gray, found in one pass that stops once a palette
/// cannot hold them.
enum Colours {
    /// At most 256 distinct colours, sorted as packed `0xRRGGBB`.
    Palette(Vec<u32>),
    /// More than 256 colours.
    Rgb,
}

/// The most palette entries an `/Indexed` colour space may have.
const MAX_PALETTE: usize = 256;

/// Gray pages with at most this many levels go to a palette at 1, 2 or 4 bits instead of 8-bit
/// gray: a palette of up to 16 entries saves at least half the samples.
const GRAY_PALETTE_MAX: usize = 16;

/// Pixels compared at once by [`analyse`]'s fast path and by [`gray_plane`]: 16 pixels are 48
/// bytes, which the compiler compares with a few vector instructions.
const RUN_PIXELS: usize = 16;

fn analyse(rgb: &[u8]) -> Colours {
    // Gray levels seen, by level: anti-aliased text changes gray level at almost every edge
    // pixel, and a table lookup is much cheaper there than a search.
    let mut grays = [false; 256];
    let mut gray_count = 0usize;
    // Other colours seen, sorted as packed `0xRRGGBB`.
    let mut others: Vec<u32> = Vec::new();
    // Rendered pages are mostly long runs of one colour. A block of pixels that all repeat the
    // last colour seen is skipped with one slice comparison; elsewhere a one-entry cache skips
    // the lookup for repeated pixels.
    let mut last = u32::MAX;
    let mut run = [0u8; 3 * RUN_PIXELS];
    // `run` holds no colour until the first block has been examined pixel by pixel.
    let mut run_is_set = false;
    for block in rgb.chunks(run.len()) {
        if run_is_set && run.get(..block.len()) == Some(block) {
            continue;
        }
        for pixel in block.chunks_exact(3) {
            let colour = pack(pixel);
            if colour == last {
                continue;
            }
            last = colour;
            let fresh = match pixel {
                [r, g, b] if r == g && g == b => {
                    let seen = &mut grays[usize::from(*r)];
                    !std::mem::replace(seen, true)
                }
                _ => match others.binary_search(&colour) {
                    Ok(_) => false,
                    Err(at) => {
                        others.insert(at, colour);
                        true
                    }
                },
            };
            if fresh {
                gray_count += usize::from(is_gray(pixel));
                if gray_count + others.len() > MAX_PALETTE {
                    return Colours::Rgb;
                }
            }
        }
        // The next block is compared with the colour this one ended on.
        if let Some(tail) = block.chunks_exact(3).last() {
            for slot in run.chunks_exact_mut(3) {
                slot.copy_from_slice(tail);
            }
            run_is_set = true;
        }
    }
    let mut palette: Vec<u32> = (0u32..256)
        .filter(|&level| grays[level as usize])
        .map(|level| level << 16 | level << 8 | level)
        .chain(others)
        .collect();
    palette.sort_unstable();
    Colours::Palette(palette)
}

/// Row filter per representation.
///
/// Palette rows are stored unfiltered: a difference between two palette indices means nothing,
/// and PNG's own guidance says the same. For gray and RGB rows, measured with
/// `cargo bench -p converter-core --bench rebuild` (one 1275 x 1650 page, zlib-rs level 1, 2-core
/// machine; time is the whole `encode_page`, colour analysis and SHA-256 included):
///
/// | row filter | anti-aliased text page (gray) | photo page (RGB) |
/// |---|---|---|
/// | None | 15.0 ms, 214 KB | 52.9 ms, 2632 KB |
/// | Sub | 18.1 ms, 216 KB | 41.6 ms, 2305 KB |
/// | **Up** | **15.8 ms, 202 KB** | **37.0 ms, 1946 KB** |
/// | Paeth | 23.6 ms, 204 KB | 58.2 ms, 2087 KB |
/// | per row, least sum of absolute values | 41.0 ms, 187 KB | 116.8 ms, 2049 KB |
///
/// Up is the fastest filter that compresses, and on the photo it beat even the per-row choice,
/// so every row uses it.
fn strategy(representation: Representation) -> FilterStrategy {
    match representation {
        Representation::Indexed { .. } => FilterStrategy::Fixed(RowFilter::None),
        _ => FilterStrategy::Fixed(RowFilter::Up),
    }
}

type Encoded = (Representation, Vec<u8>, Vec<u8>);

/// The error of a failed write into the in-memory Flate stream.
fn flate(e: std::io::Error) -> RebuildError {
    RebuildError::Encode {
        format: "flate",
        reason: e.to_string(),
    }
}

fn encode_lossless(width: u32, rgb: &[u8]) -> Result<Encoded, RebuildError> {
    let w = usize::try_from(width).map_err(|_| RebuildError::ZeroDimension { width, height: 0 })?;
    // `check_pixels` proved w * 3 * height == rgb.len(), so this cannot overflow.
    let rgb_row = w.saturating_mul(3);

    // Most rendered pages are gray (text): one pass proves it and keeps the gray plane, which
    // is then all the encoder reads.
    if let Some(gray) = gray_plane(rgb)? {
        let levels = gray_levels(&gray);
        let count = levels.iter().filter(|&&seen| seen).count();
        if count > GRAY_PALETTE_MAX {
            let representation = Representation::Gray8;
            let mut packer = RowPacker::new(w, 1, strategy(representation));
            for row in gray.chunks_exact(w) {
                packer.push_row(row).map_err(flate)?;
            }
            return Ok((representation, Vec::new(), packer.finish().map_err(flate)?));
        }
        // Few levels: a palette of them, in ascending order as `analyse` sorts it.
        let mut index = [0u8; 256];
        let mut palette = Vec::new();
        for (level, _) in levels.iter().enumerate().filter(|(_, &seen)| seen) {
            // At most 16 levels here, so the index fits a byte.
            index[level] = (palette.len() / 3) as u8;
            palette.extend([level as u8; 3]);
        }
        let rows = gray
            .chunks_exact(w)
            .map(|row| row.iter().map(|&level| index[usize::from(level)]));
        return pack_indexed(w, count, palette, rows);
    }

    match analyse(rgb) {
        Colours::Rgb => {
            let representation = Representation::Rgb8;
            let mut packer = RowPacker::new(rgb_row, 3, strategy(representation));
            for row in rgb.chunks_exact(rgb_row) {
                packer.push_row(row).map_err(flate)?;
            }
            Ok((representation, Vec::new(), packer.finish().map_err(flate)?))
        }
        Colours::Palette(colours) => {
            let palette = colours
                .iter()
                .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, *c as u8])
                .collect();
            let lookup = |colour: u32| {
                // Every colour is in the palette (it was built from these pixels) and the
                // palette has at most 256 entries, so the index fits a byte.
                colours
                    .binary_search(&colour)
                    .ok()
                    .and_then(|i| u8::try_from(i).ok())
                    .unwrap_or(0)
            };
            let rows = rgb.chunks_exact(rgb_row).map(|row| {
                let (mut last, mut last_index) = (u32::MAX, 0u8);
                row.chunks_exact(3).map(move |pixel| {
                    let colour = pack(pixel);
                    if colour != last {
                        last = colour;
                        last_index = lookup(colour);
                    }
                    last_index
                })
            });
            pack_indexed(w, colours.len(), palette, rows)
        }
    }
}

/// Packs rows of palette indices at the fewest bits per index that `colours` allows.
fn pack_indexed<Rows, Row>(
    w: usize,
    colours: usize,
    palette: Vec<u8>,
    rows: Rows,
) -> Result<Encoded, RebuildError>
where
    Rows: Iterator<Item = Row>,
    Row: Iterator<Item = u8>,
{
    let bits: u8 = match colours {
        0..=2 => 1,
        3..=4 => 2,
        5..=16 => 4,
        _ => 8,
    };
    let representation = Representation::Indexed {
        bits,
        colours: u16::try_from(colours).unwrap_or(256),
    };
    let per_byte = usize::from(8 / bits);
    let row_bytes = w.div_ceil(per_byte);
    let mut packer = RowPacker::new(row_bytes, 1, strategy(representation));
    let mut packed = vec![0u8; row_bytes];
    for indices in rows {
        packed.fill(0);
        for (x, index) in indices.enumerate() {
            let shift = 8 - usize::from(bits) * (x % per_byte + 1);
            if let Some(byte) = packed.get_mut(x / per_byte) {
                *byte |= index << shift;
            }
        }
        packer.push_row(&packed).map_err(flate)?;
    }
    Ok((representation, palette, packer.finish().map_err(flate)?))
}

/// Which neighbouring bytes of a block [`gray_plane`] compares: byte k with byte k + 1 where
/// both belong to the same pixel.
const GRAY_CHECK_MASK: [u8; 3 * RUN_PIXELS - 1] = {
    let mut mask = [0u8; 3 * RUN_PIXELS - 1];
    let mut k = 0;
    while k < mask.len() {
        if k % 3 != 2 {
            mask[k] = 0xFF;
        }
        k += 1;
    }
    mask
};

/// The gray plane of a page whose pixels are all gray (R = G = B), or `None` at the first
/// block of pixels that shows a colour.
///
/// Pixels are taken [`RUN_PIXELS`] at a time as fixed-size arrays: the gray check compares
/// neighbouring bytes under [`GRAY_CHECK_MASK`], which compiles to vector code, and only the
/// copy of every third byte stays scalar. A per-pixel loop that pushed each level was the
/// caller's most expensive function on text documents.
fn gray_plane(rgb: &[u8]) -> Result<Option<Vec<u8>>, RebuildError> {
    let pixels = rgb.len() / 3;
    let mut gray = Vec::new();
    gray.try_reserve_exact(pixels)
        .map_err(|_| RebuildError::AllocationFailed {
            bytes: pixels as u64,
        })?;
    gray.resize(pixels, 0);

    let mut blocks = rgb.chunks_exact(3 * RUN_PIXELS);
    let mut outs = gray.chunks_exact_mut(RUN_PIXELS);
    for (block, out) in (&mut blocks).zip(&mut outs) {
        let (Ok(block), Ok(out)) = (
            <&[u8; 3 * RUN_PIXELS]>::try_from(block),
            <&mut [u8; RUN_PIXELS]>::try_from(out),
        ) else {
            return Ok(None);
        };
        // A pixel is gray when its first byte equals the second and the second the third:
        // each byte is compared with the next one, except across pixel boundaries.
        let mut colour = 0u8;
        for (k, pair) in block.windows(2).enumerate() {
            if let [x, y] = *pair {
                colour |= (x ^ y) & GRAY_CHECK_MASK[k];
            }
        }
        for (level, pixel) in out.iter_mut().zip(block.chunks_exact(3)) {
            *level = pixel.first().copied().unwrap_or(0);
        }
        if colour != 0 {
            return Ok(None);
        }
    }
    for (pixel, level) in blocks
        .remainder()
        .chunks_exact(3)
        .zip(outs.into_remainder())
    {
        match *pixel {
            [r, g, b] if r == g && g == b => *level = r,
            _ => return Ok(None),
        }
    }
    Ok(Some(gray))
}

/// Which of the 256 gray levels occur in `gray`.
fn gray_levels(gray: &[u8]) -> [bool; 256] {
    let mut seen = [false; 256];
    for &level in gray {
        seen[usize::from(level)] = true;
    }
    seen
}

/// Writes a PDF page by page; see the module documentation for the layout.
pub struct PdfWriter<W: Write> {
    /// Buffered because lopdf writes a dictionary token by token; image data, larger than the
    /// buffer, goes straight through.
    out: CountingWriter<BufWriter<W>>,
    options: PdfOptions,
    /// Byte offset of each object, indexed by object number - 1. The first two (the `/Pages`
    /// node and the `/Catalog`) are filled in by `finish`.
    offsets: Vec<u64>,
    pages: u32,
    id: Sha256,
}

impl<W: Write> PdfWriter<W> {
    /// Starts a document: checks the options and writes the header.
    ///
    /// # Errors
    ///
    /// [`RebuildError::InvalidDpi`] for a zero resolution, [`RebuildError::InvalidQuality`] for a
    /// JPEG quality outside 1 to 100, [`RebuildError::Write`] if the header cannot be written.
    pub fn new(out: W, options: PdfOptions) -> Result<Self, RebuildError> {
        if options.dpi == 0 {
            return Err(RebuildError::InvalidDpi(options.dpi));
        }
        options.compression.validate()?;

        let mut out = CountingWriter::new(BufWriter::with_capacity(OUTPUT_BUFFER, out));
        out.write_all(HEADER)?;
        let mut id = Sha256::new();
        id.update(options.dpi.to_be_bytes());

        Ok(PdfWriter {
            out,
            options,
            offsets: vec![0, 0],
            pages: 0,
            id,
        })
    }

    /// Writes one page now: its image, its content stream and its page dictionary.
    ///
    /// # Errors
    ///
    /// [`RebuildError::Write`] if the output fails, [`RebuildError::OutputTooLarge`] once the
    /// file passes what a cross-reference table can address.
    pub fn write_page(&mut self, page: EncodedPage) -> Result<PageStats, RebuildError> {
        let start = self.out.written;
        let image_id = page_object_id(self.pages, 0).ok_or(RebuildError::OutputTooLarge {
            limit: MAX_XREF_OFFSET,
        })?;
        let content_id = image_id.saturating_add(1);
        let page_id = image_id.saturating_add(2);
        let width_pt = points(page.width, self.options.dpi);
        let height_pt = points(page.height, self.options.dpi);
        let representation = page.representation;
        let image_bytes = page.data.len();
        self.id.update(page.digest);

        let image = image_object(page);
        self.write_object(image_id, &image)?;
        drop(image);

        let content = Stream::new(Dictionary::new(), content_stream(width_pt, height_pt));
        self.write_object(content_id, &Object::Stream(content))?;

        let page_dict = page_object(image_id, content_id, width_pt, height_pt);
        self.write_object(page_id, &Object::Dictionary(page_dict))?;

        self.pages = self.pages.saturating_add(1);
        Ok(PageStats {
            representation,
            image_bytes,
            written_bytes: self.out.written - start,
        })
    }

    /// Writes the page tree, the catalog, the cross-reference table and the trailer, and hands
    /// back the output.
    ///
    /// # Errors
    ///
    /// [`RebuildError::EmptyDocument`] if no page was written (nothing is written then),
    /// [`RebuildError::Write`] if the output fails.
    pub fn finish(mut self) -> Result<(W, PdfSummary), RebuildError> {
        if self.pages == 0 {
            return Err(RebuildError::EmptyDocument);
        }

        let kids = (0..self.pages)
            .filter_map(|p| page_object_id(p, 2))
            .map(|id| Object::Reference((id, 0)))
            .collect();
        self.write_object(
            PAGES_ID,
            &Object::Dictionary(pages_object(kids, self.pages)),
        )?;
        self.write_object(CATALOG_ID, &Object::Dictionary(catalog_object()))?;

        let digest = self.id.finalize();
        let id = digest.get(..16).unwrap_or_default().to_vec();
        let xref_offset = self.out.written;
        check_offset(xref_offset)?;
        write_tail(
            &mut self.out,
            &self.offsets,
            xref_offset,
            &trailer(&id, self.offsets.len()),
        )?;
        self.out.flush()?;

        let summary = PdfSummary {
            pages: self.pages,
            bytes: self.out.written,
        };
        let out = self
            .out
            .inner
            .into_inner()
            .map_err(|e| RebuildError::Write(e.into_error()))?;
        Ok((out, summary))
    }

    fn write_object(&mut self, id: u32, object: &Object) -> Result<(), RebuildError> {
        let offset = self.out.written;
        check_offset(offset)?;
        // Page objects arrive in number order and are appended; the two reserved slots at the
        // front are filled in place.
        let slot = usize::try_from(id.saturating_sub(1))
            .ok()
            .and_then(|i| self.offsets.get_mut(i));
        match slot {
            Some(slot) => *slot = offset,
            None => self.offsets.push(offset),
        }
        write_indirect(&mut self.out, id, object)?;
        Ok(())
    }
}

fn check_offset(offset: u64) -> Result<(), RebuildError> {
    if offset > MAX_XREF_OFFSET {
        return Err(RebuildError::OutputTooLarge {
            limit: MAX_XREF_OFFSET,
        });
    }
    Ok(())
}

/// Object number of page `page`'s image (`which` 0), content (1) or page dictionary (2).
pub(crate) fn page_object_id(page: u32, which: u32) -> Option<u32> {
    page.checked_mul(3)?
        .checked_add(FIRST_PAGE_ID)?
        .checked_add(which)
}

/// Page side in points for `pixels` at `dpi`, rounded to two decimals.
pub(crate) fn points(pixels: u32, dpi: u32) -> f32 {
    let exact = f64::from(pixels) * 72.0 / f64::from(dpi.max(1));
    ((exact * 100.0).round() / 100.0) as f32
}

/// The content stream that draws `/Im0` over the whole page. `f32`'s `Display` gives the
/// shortest spelling that reads back as the same number, and never an exponent.
pub(crate) fn content_stream(width_pt: f32, height_pt: f32) -> Vec<u8> {
    format!("q {width_pt} 0 0 {height_pt} 0 0 cm /Im0 Do Q").into_bytes()
}

fn name(n: &str) -> Object {
    Object::Name(n.as_bytes().to_vec())
}

fn image_object(page: EncodedPage) -> Object {
    let mut dict = Dictionary::new();
    dict.set("Type", name("XObject"));
    dict.set("Subtype", name("Image"));
    dict.set("Width", i64::from(page.width));
    dict.set("Height", i64::from(page.height));
    let (colour_space, bits, colours) = match page.representation {
        Representation::Gray8 | Representation::JpegGray => (name("DeviceGray"), 8, 1),
        Representation::Rgb8 | Representation::JpegRgb => (name("DeviceRGB"), 8, 3),
        Representation::Indexed { bits, colours } => {
            let space = Object::Array(vec![
                name("Indexed"),
                name("DeviceRGB"),
                Object::Integer(i64::from(colours) - 1),
                Object::String(page.palette, StringFormat::Hexadecimal),
            ]);
            (space, bits, 1)
        }
    };
    dict.set("ColorSpace", colour_space);
    dict.set("BitsPerComponent", i64::from(bits));
    match page.representation {
        Representation::JpegGray | Representation::JpegRgb => dict.set("Filter", name("DCTDecode")),
        _ => {
            dict.set("Filter", name("FlateDecode"));
            let mut parms = Dictionary::new();
            parms.set("Predictor", 15);
            parms.set("Colors", colours);
            parms.set("BitsPerComponent", i64::from(bits));
            parms.set("Columns", i64::from(page.width));
            dict.set("DecodeParms", parms);
        }
    }
    Object::Stream(Stream::new(dict, page.data))
}

fn page_object(image_id: u32, content_id: u32, width_pt: f32, height_pt: f32) -> Dictionary {
    let mut xobjects = Dictionary::new();
    xobjects.set("Im0", Object::Reference((image_id, 0)));
    let mut resources = Dictionary::new();
    resources.set("XObject", xobjects);
    let mut dict = Dictionary::new();
    dict.set("Type", name("Page"));
    dict.set("Parent", Object::Reference((PAGES_ID, 0)));
    dict.set(
        "MediaBox",
        Object::Array(vec![
            Object::Integer(0),
            Object::Integer(0),
            Object::Real(width_pt),
            Object::Real(height_pt),
        ]),
    );
    dict.set("Resources", resources);
    dict.set("Contents", Object::Reference((content_id, 0)));
    dict
}

fn pages_object(kids: Vec<Object>, count: u32) -> Dictionary {
    let mut dict = Dictionary::new();
    dict.set("Type", name("Pages"));
    dict.set("Kids", Object::Array(kids));
    dict.set("Count", i64::from(count));
    dict
}

fn catalog_object() -> Dictionary {
    let mut dict = Dictionary::new();
    dict.set("Type", name("Catalog"));
    dict.set("Pages", Object::Reference((PAGES_ID, 0)));
    dict
}

fn trailer(id: &[u8], objects: usize) -> Dictionary {
    let mut dict = Dictionary::new();
    dict.set(
        "Size",
        i64::try_from(objects).unwrap_or(i64::MAX).saturating_add(1),
    );
    dict.set("Root", Object::Reference((CATALOG_ID, 0)));
    let id = Object::String(id.to_vec(), StringFormat::Hexadecimal);
    dict.set("ID", Object::Array(vec![id.clone(), id]));
    dict
}

/// Writes `N 0 obj`, the object as lopdf spells it, and `endobj`, with the separators lopdf's
/// own saver uses so that its reader parses the result the same way.
pub(crate) fn write_indirect(out: &mut dyn Write, id: u32, object: &Object) -> std::io::Result<()> {
    write!(
        out,
        "{id} 0 obj\n{}",
        if lopdf::Writer::need_separator(object) {
            " "
        } else {
            ""
        }
    )?;
    lopdf::Writer::write_object(out, object)?;
    write!(
        out,
        "{}\nendobj\n",
        if lopdf::Writer::need_end_separator(object) {
            " "
        } else {
            ""
        }
    )
}

/// Writes the cross-reference table (one section from object 0), the trailer, `startxref` and
/// `%%EOF`. `offsets[i]` is the offset of object `i + 1`.
pub(crate) fn write_tail(
    out: &mut dyn Write,
    offsets: &[u64],
    xref_offset: u64,
    trailer: &Dictionary,
) -> std::io::Result<()> {
    write!(
        out,
        "xref\n0 {}\n0000000000 65535 f \n",
        offsets.len().saturating_add(1)
    )?;
    for offset in offsets {
        writeln!(out, "{offset:010} 00000 n ")?;
    }
    out.write_all(b"trailer\n")?;
    lopdf::Writer::write_object(out, &Object::Dictionary(trailer.clone()))?;
    write!(out, "\nstartxref\n{xref_offset}\n%%EOF\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_pdf;
    use crate::rebuild::predict::unfilter;
    use std::io::Read;

    const LOSSLESS: PdfOptions = PdfOptions {
        dpi: 150,
        compression: Compression::Lossless,
    };

    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn gray_gradient(w: u32, h: u32) -> Vec<u8> {
        (0..w * h).flat_map(|i| [(i % 251) as u8; 3]).collect()
    }

    fn two_colours(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                if i % 3 == 0 {
                    [200, 0, 0]
                } else {
                    [255, 255, 255]
                }
            })
            .collect()
    }

    fn n_colours(w: u32, h: u32, n: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| [((i % n) as u8).wrapping_mul(10), 7, (i % n) as u8])
            .collect()
    }

    fn pdf_of(pages: &[(u32, u32, Vec<u8>)], options: PdfOptions) -> Vec<u8> {
        let mut writer = PdfWriter::new(Vec::new(), options).unwrap();
        for (w, h, rgb) in pages {
            writer
                .write_page(encode_page(*w, *h, rgb, &options).unwrap())
                .unwrap();
        }
        writer.finish().unwrap().0
    }

    /// Decodes a lossless page back to RGB, by hand: inflate, undo the row filters, expand the
    /// palette or gray samples.
    fn decode(page: &EncodedPage) -> Vec<u8> {
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(page.data.as_slice())
            .read_to_end(&mut inflated)
            .unwrap();
        let w = page.width as usize;
        let (row_bytes, bpp) = match page.representation {
            Representation::Rgb8 => (w * 3, 3),
            Representation::Gray8 => (w, 1),
            Representation::Indexed { bits, .. } => ((w * usize::from(bits)).div_ceil(8), 1),
            _ => panic!("not lossless"),
        };
        let samples = unfilter(&inflated, row_bytes, bpp).unwrap();
        let mut rgb = Vec::new();
        for row in samples.chunks_exact(row_bytes) {
            for x in 0..w {
                match page.representation {
                    Representation::Rgb8 => rgb.extend_from_slice(&row[x * 3..x * 3 + 3]),
                    Representation::Gray8 => rgb.extend_from_slice(&[row[x]; 3]),
                    Representation::Indexed { bits, .. } => {
                        let per_byte = 8 / usize::from(bits);
                        let shift = 8 - usize::from(bits) * (x % per_byte + 1);
                        let index =
                            usize::from((row[x / per_byte] >> shift) & ((1u16 << bits) - 1) as u8);
                        rgb.extend_from_slice(&page.palette[index * 3..index * 3 + 3]);
                    }
                    _ => unreachable!(),
                }
            }
        }
        rgb
    }

    #[test]
    fn gray_page_is_device_gray() {
        let page = encode_page(40, 30, &gray_gradient(40, 30), &LOSSLESS).unwrap();
        assert_eq!(page.representation(), Representation::Gray8);
    }

    #[test]
    fn one_coloured_byte_anywhere_makes_the_page_not_gray() {
        // 37 x 5 = 185 pixels: eleven full blocks of the gray check and a remainder of nine.
        let (w, h) = (37, 5);
        for pixel in [0usize, 1, 15, 16, 100, 175, 176, 184] {
            for channel in 0..3 {
                let mut rgb = gray_gradient(w, h);
                let byte = &mut rgb[pixel * 3 + channel];
                *byte = byte.wrapping_add(1);
                let page = encode_page(w, h, &rgb, &LOSSLESS).unwrap();
                assert_ne!(
                    page.representation(),
                    Representation::Gray8,
                    "pixel {pixel} channel {channel}"
                );
                assert_eq!(decode(&page), rgb, "pixel {pixel} channel {channel}");
            }
        }
    }

    #[test]
    fn few_gray_levels_round_trip_through_their_palette() {
        // Three levels in a width that leaves a remainder after the gray check's blocks.
        let rgb: Vec<u8> = (0..7 * 3u32)
            .flat_map(|i| [[0, 128, 255][(i % 3) as usize]; 3])
            .collect();
        let page = encode_page(7, 3, &rgb, &LOSSLESS).unwrap();
        assert_eq!(
            page.representation(),
            Representation::Indexed {
                bits: 2,
                colours: 3
            }
        );
        assert_eq!(decode(&page), rgb);
    }

    #[test]
    fn two_colour_page_is_one_bit_indexed() {
        let page = encode_page(37, 5, &two_colours(37, 5), &LOSSLESS).unwrap();
        assert_eq!(
            page.representation(),
            Representation::Indexed {
                bits: 1,
                colours: 2
            }
        );
    }

    #[test]
    fn five_colour_page_is_four_bit_indexed() {
        let page = encode_page(9, 9, &n_colours(9, 9, 5), &LOSSLESS).unwrap();
        assert_eq!(
            page.representation(),
            Representation::Indexed {
                bits: 4,
                colours: 5
            }
        );
    }

    #[test]
    fn few_gray_levels_use_a_small_palette() {
        let rgb: Vec<u8> = (0..64u32).flat_map(|i| [(i % 4) as u8 * 80; 3]).collect();
        let page = encode_page(8, 8, &rgb, &LOSSLESS).unwrap();
        assert_eq!(
            page.representation(),
            Representation::Indexed {
                bits: 2,
                colours: 4
            }
        );
    }

    /// `levels` gray levels and `colours` other colours, each on a run of 20 pixels (longer
    /// than the analysis's fast-path block), after a black run at the start.
    fn runs(levels: u32, colours: u32) -> Vec<u8> {
        let mut rgb = vec![0u8; 3 * 50];
        for level in 0..levels {
            rgb.extend([[255 - level as u8; 3]; 20].concat());
        }
        for c in 0..colours {
            rgb.extend([[c as u8, 1, 2]; 20].concat());
        }
        rgb
    }

    #[test]
    fn black_run_first_is_counted_in_the_palette() {
        let mut rgb = vec![0u8; 3 * 100];
        rgb.extend_from_slice(&[255; 3]);
        let page = encode_page(101, 1, &rgb, &LOSSLESS).unwrap();
        assert_eq!(
            page.representation(),
            Representation::Indexed {
                bits: 1,
                colours: 2
            }
        );
        assert_eq!(decode(&page), rgb);
    }

    #[test]
    fn grays_and_colours_share_the_256_palette_entries() {
        // Black plus 155 more grays plus 100 colours: exactly 256 entries.
        let rgb = runs(155, 100);
        let width = (rgb.len() / 3) as u32;
        let page = encode_page(width, 1, &rgb, &LOSSLESS).unwrap();
        assert_eq!(
            page.representation(),
            Representation::Indexed {
                bits: 8,
                colours: 256
            }
        );
        assert_eq!(decode(&page), rgb);

        let rgb = runs(155, 101);
        let width = (rgb.len() / 3) as u32;
        let page = encode_page(width, 1, &rgb, &LOSSLESS).unwrap();
        assert_eq!(page.representation(), Representation::Rgb8);
        assert_eq!(decode(&page), rgb);
    }

    #[test]
    fn noise_page_is_device_rgb() {
        let page = encode_page(50, 40, &noise(50 * 40 * 3, 7), &LOSSLESS).unwrap();
        assert_eq!(page.representation(), Representation::Rgb8);
    }

    #[test]
    fn lossless_round_trip_is_exact_for_every_representation() {
        let cases = [
            (13, 7, gray_gradient(13, 7)),
            (37, 5, two_colours(37, 5)),
            (11, 6, n_colours(11, 6, 3)),
            (9, 9, n_colours(9, 9, 5)),
            (17, 16, n_colours(17, 16, 200)),
            (21, 8, noise(21 * 8 * 3, 3)),
        ];
        for (w, h, rgb) in cases {
            let page = encode_page(w, h, &rgb, &LOSSLESS).unwrap();
            assert_eq!(decode(&page), rgb, "{:?}", page.representation());
        }
    }

    #[test]
    fn same_pixels_and_options_give_same_bytes() {
        let pages = vec![(20, 10, noise(600, 1)), (10, 10, two_colours(10, 10))];
        assert_eq!(pdf_of(&pages, LOSSLESS), pdf_of(&pages, LOSSLESS));
    }

    #[test]
    fn different_pixels_give_different_ids() {
        let a = pdf_of(&[(10, 10, noise(300, 1))], LOSSLESS);
        let b = pdf_of(&[(10, 10, noise(300, 2))], LOSSLESS);
        let id = |f: &[u8]| {
            lopdf::Document::load_mem(f)
                .unwrap()
                .trailer
                .get(b"ID")
                .unwrap()
                .clone()
        };
        assert_ne!(id(&a), id(&b));
    }

    #[test]
    fn lossless_output_passes_the_checker() {
        let pages = vec![
            (20, 10, noise(600, 1)),
            (10, 10, two_colours(10, 10)),
            (13, 7, gray_gradient(13, 7)),
        ];
        let report = check_pdf(&pdf_of(&pages, LOSSLESS)).unwrap();
        let sizes: Vec<_> = report.pages.iter().map(|p| (p.width, p.height)).collect();
        assert_eq!(sizes, vec![(20, 10), (10, 10), (13, 7)]);
    }

    #[test]
    fn jpeg_output_parses_and_passes_the_checker() {
        let options = PdfOptions {
            dpi: 300,
            compression: Compression::Jpeg { quality: 85 },
        };
        let pdf = pdf_of(
            &[
                (64, 48, noise(64 * 48 * 3, 5)),
                (16, 16, gray_gradient(16, 16)),
            ],
            options,
        );
        let doc = lopdf::Document::load_mem(&pdf).unwrap();
        assert_eq!(doc.get_pages().len(), 2);
        assert_eq!(check_pdf(&pdf).unwrap().pages.len(), 2);
    }

    #[test]
    fn jpeg_gray_page_has_one_component() {
        let options = PdfOptions {
            dpi: 150,
            compression: Compression::Jpeg { quality: 85 },
        };
        let page = encode_page(16, 16, &gray_gradient(16, 16), &options).unwrap();
        assert_eq!(page.representation(), Representation::JpegGray);
    }

    #[test]
    fn page_size_follows_dpi() {
        let pdf = pdf_of(&[(1275, 2, vec![255; 1275 * 2 * 3])], LOSSLESS);
        let doc = lopdf::Document::load_mem(&pdf).unwrap();
        let page = doc
            .get_object((page_object_id(0, 2).unwrap(), 0))
            .unwrap()
            .as_dict()
            .unwrap();
        let media_box = page.get(b"MediaBox").unwrap().as_array().unwrap();
        assert_eq!(media_box[2].as_float().unwrap(), 612.0);
        assert_eq!(media_box[3].as_float().unwrap(), 0.96);
    }

    #[test]
    fn content_stream_draws_image_over_page() {
        assert_eq!(
            content_stream(612.0, 480.48),
            b"q 612 0 0 480.48 0 0 cm /Im0 Do Q".to_vec()
        );
    }

    #[test]
    fn finish_without_pages_is_empty_document() {
        let writer = PdfWriter::new(Vec::new(), LOSSLESS).unwrap();
        assert!(matches!(writer.finish(), Err(RebuildError::EmptyDocument)));
    }

    #[test]
    fn zero_dpi_is_refused() {
        let options = PdfOptions {
            dpi: 0,
            compression: Compression::Lossless,
        };
        assert!(matches!(
            PdfWriter::new(Vec::new(), options),
            Err(RebuildError::InvalidDpi(0))
        ));
    }

    #[test]
    fn jpeg_quality_zero_is_refused() {
        let options = PdfOptions {
            dpi: 150,
            compression: Compression::Jpeg { quality: 0 },
        };
        assert!(matches!(
            encode_page(1, 1, &[0, 0, 0], &options),
            Err(RebuildError::InvalidQuality(0))
        ));
    }

    #[test]
    fn wrong_buffer_length_is_refused() {
        let err = encode_page(2, 2, &[0; 11], &LOSSLESS).unwrap_err();
        assert!(matches!(
            err,
            RebuildError::PixelCountMismatch { got: 11, .. }
        ));
    }

    #[test]
    fn file_starts_with_header_and_ends_with_eof() {
        let pdf = pdf_of(&[(2, 2, vec![0; 12])], LOSSLESS);
        assert!(pdf.starts_with(HEADER));
        assert!(pdf.ends_with(b"%%EOF\n"));
    }
}
