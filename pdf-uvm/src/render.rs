//! PDFium: binding the library once per process, and rendering pages to packed 8-bit RGB.
//!
//! # Rendering choices
//! - Each page is drawn as a PDF viewer shows it: white background, annotations with their
//!   appearance streams, and form fields with their current values (`FPDF_ANNOT` plus
//!   `FPDF_FFLDraw`). The user converts a document to keep how it looks; the rebuilt file
//!   holds those pixels and nothing else, so drawing them adds no risk on the trusted side.
//! - Pixel sizes are `round(points x dpi / 72)`, at least 1, computed here in `f64` and checked
//!   against [`StreamLimits::PDF`] for every page before the stream header is written.
//!   PDFium's own maximum-size settings shrink a page silently, so they are not used.
//! - PDFium draws 24-bit BGR; with `FPDF_REVERSE_BYTE_ORDER` the bytes come out as RGB. Rows
//!   are padded to a multiple of 4 bytes, and the padding is removed in place.
//! - PDFium is told to search no font folder (see [`ServeOptions::font_folder`]): fonts a
//!   document does not embed are replaced by PDFium's built-in ones, as they would be in the
//!   uvm, and no host font is opened.
//!
//! # Limitations
//! PDFium is not thread-safe and pdfium-render binds it once per process, so every call takes
//! a process-wide lock: concurrent calls in one process run one after another. Parallel
//! rendering means several processes (several uvms). A page that PDFium takes a long time to
//! draw is bounded only by the caller's deadline, which ends the uvm.

use std::env;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use converter_core::limits::StreamLimits;
use pdfium_render::prelude::{
    PdfBitmap, PdfBitmapFormat, PdfColor, PdfDocument, PdfRenderConfig, Pdfium, PdfiumError,
    PdfiumInternalError, PdfiumLibraryConfig,
};

use crate::{LoadFailure, ServeError, ServeOptions};

/// Environment variable naming the PDFium library file to use, for tests and development.
pub const LIBRARY_ENV: &str = "PDFIUM_LIBRARY";

/// Where `scripts/setup-pdfium.sh` installs PDFium.
const INSTALL_DIR: &str = "/usr/local/lib";

/// A path that can never be a folder: given to PDFium as its only font folder, it makes PDFium
/// scan nothing. With no folder at all PDFium falls back to `/usr/share/fonts` and friends and
/// opens every file there at start.
const NO_FONT_FOLDER: &str = "/dev/null";

/// Bytes per RGB pixel in the stream.
const RGB_BYTES: u64 = 3;

/// Guards every use of PDFium in this process; holds whether the library is bound.
static PDFIUM: Mutex<bool> = Mutex::new(false);

/// Runs `f` with PDFium bound, holding the process-wide PDFium lock.
///
/// The first call binds the library (and applies `options`); later calls reuse that binding
/// and ignore `options`, because PDFium can be initialised only once per process.
pub(crate) fn with_pdfium<T>(
    options: &ServeOptions,
    f: impl FnOnce(&Pdfium) -> Result<T, ServeError>,
) -> Result<T, ServeError> {
    // A panic while the lock was held cannot leave PDFium half-bound: the flag is set only
    // after binding succeeded, so a poisoned lock is safe to take over.
    let mut bound = PDFIUM.lock().unwrap_or_else(PoisonError::into_inner);
    let pdfium = if *bound { reuse() } else { bind(options)? };
    *bound = true;

    f(&pdfium)
}

/// A handle on the library bound earlier in this process.
fn reuse() -> Pdfium {
    // pdfium-render keeps the bindings in a global; `default()` first asks to bind again,
    // which returns "already initialised" before touching the file system, and then hands
    // back a handle on the existing bindings. It cannot reach its panicking fallbacks here
    // because the bindings exist.
    Pdfium::default()
}

/// Finds, loads and initialises PDFium.
fn bind(options: &ServeOptions) -> Result<Pdfium, ServeError> {
    let path = library_path();
    let bindings = match &path {
        Some(path) => Pdfium::bind_to_library(path),
        None => Pdfium::bind_to_system_library(),
    };
    let bindings = match (bindings, path) {
        (Ok(bindings), _) => bindings,
        // Something else in this process bound PDFium first; use that.
        (Err(PdfiumError::PdfiumLibraryBindingsAlreadyInitialized), _) => return Ok(reuse()),
        (Err(e), Some(path)) => {
            return Err(ServeError::PdfiumUnavailable {
                reason: format!("cannot load {}: {}", path.display(), describe(&e)),
            });
        }
        (Err(e), None) => {
            return Err(ServeError::PdfiumUnavailable {
                reason: format!(
                    "no {} named by ${LIBRARY_ENV}, beside the program or in {INSTALL_DIR}, and \
                     the system loader found none ({}); run scripts/setup-pdfium.sh",
                    Pdfium::pdfium_platform_library_name().to_string_lossy(),
                    describe(&e)
                ),
            });
        }
    };

    let font_folder = match &options.font_folder {
        Some(folder) => folder
            .to_str()
            .ok_or_else(|| ServeError::PdfiumUnavailable {
                reason: "the font folder path is not utf-8".to_owned(),
            })?,
        None => NO_FONT_FOLDER,
    };
    let config = PdfiumLibraryConfig::new()
        .set_user_font_paths(&[font_folder])
        .map_err(|e| ServeError::PdfiumUnavailable {
            reason: format!("bad font folder: {}", describe(&e)),
        })?;

    Ok(Pdfium::new_with_config(bindings, config))
}

/// The PDFium file to load, or `None` for the system loader's search path.
///
/// Order: `$PDFIUM_LIBRARY` (tests and development), the program's own folder (the uvm image
/// puts the library beside `/init`), then `/usr/local/lib` (where the setup script installs
/// it, which the loader does not search when `ldconfig` was not run). The first file that
/// exists is used, and a file that exists but fails to load is an error rather than a reason
/// to try the next: a broken install should be loud, not shadowed.
fn library_path() -> Option<PathBuf> {
    if let Some(path) = env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let name = Pdfium::pdfium_platform_library_name();
    let beside_program = env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)));
    let installed = Some(Path::new(INSTALL_DIR).join(&name));
    [beside_program, installed]
        .into_iter()
        .flatten()
        .find(|path| path.is_file())
}

/// One line about a pdfium-render error (its `Display` is a multi-line debug dump).
fn describe(e: &PdfiumError) -> String {
    match e {
        PdfiumError::LoadLibraryError(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

/// Pixels for a page side of `points` at `dpi`: `round(points x dpi / 72)`, at least 1.
///
/// Total for any input: the `as` conversion saturates, so NaN and negative sizes give 1 and
/// an infinite or absurd size gives `u64::MAX`, which every limit refuses.
pub(crate) fn page_pixels(points: f32, dpi: u32) -> u64 {
    let pixels = (f64::from(points) * f64::from(dpi) / 72.0).round();
    (pixels as u64).max(1)
}

/// An open document whose page count and page sizes passed the limits.
pub(crate) struct Document<'p> {
    document: PdfDocument<'p>,
    pages: u32,
    dpi: u32,
    limits: StreamLimits,
}

impl<'p> Document<'p> {
    /// Opens `bytes` and checks the page count and every page's pixel size, before any page
    /// is drawn and before anything is written.
    pub(crate) fn open(
        pdfium: &'p Pdfium,
        bytes: &'p [u8],
        password: Option<&str>,
        dpi: u32,
    ) -> Result<Self, ServeError> {
        let limits = StreamLimits::PDF;
        let document = pdfium
            .load_pdf_from_byte_slice(bytes, password)
            .map_err(|e| ServeError::Load(load_failure(&e)))?;

        let count = document.pages().len();
        let pages = u32::try_from(count).unwrap_or(0);
        if pages == 0 {
            return Err(ServeError::NoPages);
        }
        if pages > limits.max_pages {
            return Err(ServeError::TooManyPages {
                pages: u64::from(pages),
                max: limits.max_pages,
            });
        }

        // The page size is read from the page tree without parsing any content, so checking
        // every page first is cheap and keeps an oversize page from costing any rendering.
        let mut total = 0u64;
        for index in 0..count {
            let page = page_number(index);
            let size = document
                .pages()
                .page_size(index)
                .map_err(|_| ServeError::Render { page })?;
            let (width, height) = (
                page_pixels(size.width().value, dpi),
                page_pixels(size.height().value, dpi),
            );
            check_size(page, width, height, dpi, &limits)?;
            total = total.saturating_add(page_bytes(width, height));
        }
        if total > limits.max_total_bytes {
            return Err(ServeError::OutputTooLarge {
                bytes: total,
                max: limits.max_total_bytes,
            });
        }

        Ok(Document {
            document,
            pages,
            dpi,
            limits,
        })
    }

    /// The number of pages, 1 to the page limit.
    pub(crate) fn page_count(&self) -> u32 {
        self.pages
    }

    /// Renders every page in order and hands each one, packed RGB, to `sink`. One page buffer
    /// is reused, so memory stays at one page whatever the page count.
    pub(crate) fn render_each(
        &self,
        mut sink: impl FnMut(u32, u32, &[u8]) -> Result<(), ServeError>,
    ) -> Result<(), ServeError> {
        let mut buffer = Vec::new();
        for index in 0..self.document.pages().len() {
            let page_no = page_number(index);
            let page = self
                .document
                .pages()
                .get(index)
                .map_err(|_| ServeError::Render { page: page_no })?;

            // Checked again on the loaded page: this is the size PDFium will draw.
            let width = page_pixels(page.width().value, self.dpi);
            let height = page_pixels(page.height().value, self.dpi);
            check_size(page_no, width, height, self.dpi, &self.limits)?;
            // Both are at most the 10000 px limit here, so these conversions cannot fail.
            let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
                return Err(ServeError::Render { page: page_no });
            };
            let (Ok(bitmap_width), Ok(bitmap_height)) =
                (i32::try_from(width), i32::try_from(height))
            else {
                return Err(ServeError::Render { page: page_no });
            };

            let stride = padded_stride(width);
            let bitmap_bytes = stride.saturating_mul(u64::from(height));
            let bitmap_len = usize::try_from(bitmap_bytes).map_err(|_| ServeError::PageMemory {
                page: page_no,
                bytes: bitmap_bytes,
            })?;
            if bitmap_len > buffer.capacity() {
                buffer.clear();
                buffer
                    .try_reserve_exact(bitmap_len)
                    .map_err(|_| ServeError::PageMemory {
                        page: page_no,
                        bytes: bitmap_bytes,
                    })?;
            }
            buffer.resize(bitmap_len, 0);

            let config = PdfRenderConfig::new()
                .set_fixed_size(bitmap_width, bitmap_height)
                .set_format(PdfBitmapFormat::BGR)
                .set_reverse_byte_order(true)
                .clear_before_rendering(true)
                .set_clear_color(PdfColor::WHITE)
                .render_annotations(true)
                .render_form_data(true);
            {
                let mut bitmap = PdfBitmap::from_bytes(
                    bitmap_width,
                    bitmap_height,
                    PdfBitmapFormat::BGR,
                    &mut buffer,
                )
                .map_err(|_| ServeError::Render { page: page_no })?;
                page.render_into_bitmap_with_config(&mut bitmap, &config)
                    .map_err(|_| ServeError::Render { page: page_no })?;
            }
            drop(page);

            strip_row_padding(&mut buffer, width, height, stride)
                .ok_or(ServeError::Render { page: page_no })?;
            sink(width, height, &buffer)?;
        }

        Ok(())
    }
}

/// Page numbers count from 1; PDFium's indexes from 0.
fn page_number(index: i32) -> u32 {
    u32::try_from(index).unwrap_or(0).saturating_add(1)
}

fn check_size(
    page: u32,
    width: u64,
    height: u64,
    dpi: u32,
    limits: &StreamLimits,
) -> Result<(), ServeError> {
    if width > u64::from(limits.max_width) || height > u64::from(limits.max_height) {
        return Err(ServeError::PageTooLarge {
            page,
            width,
            height,
            dpi,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    Ok(())
}

/// Bytes one page takes in the stream: its header line is ignored, as the caller's cap is on
/// pixel data.
fn page_bytes(width: u64, height: u64) -> u64 {
    width.saturating_mul(height).saturating_mul(RGB_BYTES)
}

/// PDFium's row length for a 24-bit bitmap: 3 bytes a pixel, rounded up to a multiple of 4.
fn padded_stride(width: u32) -> u64 {
    (u64::from(width) * RGB_BYTES).div_ceil(4) * 4
}

/// Moves each row down over the previous row's padding so the buffer holds exactly
/// `width x height x 3` bytes. Returns `None` if the buffer is not `stride x height` long.
fn strip_row_padding(buffer: &mut Vec<u8>, width: u32, height: u32, stride: u64) -> Option<()> {
    let row = usize::try_from(u64::from(width) * RGB_BYTES).ok()?;
    let stride = usize::try_from(stride).ok()?;
    let height = usize::try_from(height).ok()?;
    if buffer.len() != stride.checked_mul(height)? || row > stride {
        return None;
    }
    if row != stride {
        // Row 0 is already in place; row r moves from r x stride to r x row, which is never
        // later in the buffer, so each copy reads bytes not yet overwritten.
        for r in 1..height {
            let from = r * stride;
            buffer.copy_within(from..from + row, r * row);
        }
    }
    buffer.truncate(row * height);
    Some(())
}

/// Sorts a pdfium-render load error into what PDFium said.
fn load_failure(e: &PdfiumError) -> LoadFailure {
    match e {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            LoadFailure::Password
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FormatError) => {
            LoadFailure::Format
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            LoadFailure::Security
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FileError) => {
            LoadFailure::File
        }
        _ => LoadFailure::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a4_width_at_75_dpi_rounds_to_620() {
        assert_eq!(page_pixels(595.276, 75), 620);
        assert_eq!(page_pixels(841.89, 75), 877);
    }

    #[test]
    fn tiny_page_is_at_least_one_pixel() {
        assert_eq!(page_pixels(0.1, 75), 1);
        assert_eq!(page_pixels(0.0, 75), 1);
    }

    #[test]
    fn nan_and_negative_sizes_give_one_pixel() {
        assert_eq!(page_pixels(f32::NAN, 300), 1);
        assert_eq!(page_pixels(-500.0, 300), 1);
    }

    #[test]
    fn infinite_size_saturates() {
        assert_eq!(page_pixels(f32::INFINITY, 300), u64::MAX);
        assert_eq!(page_pixels(f32::MAX, 4800), u64::MAX);
    }

    #[test]
    fn stride_is_rounded_up_to_four_bytes() {
        assert_eq!(padded_stride(1), 4);
        assert_eq!(padded_stride(4), 12);
        assert_eq!(padded_stride(5), 16);
    }

    #[test]
    fn row_padding_is_removed() {
        // 1 pixel wide, 3 rows: each row is 3 bytes of pixel and 1 of padding.
        let mut buffer = vec![1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0];
        strip_row_padding(&mut buffer, 1, 3, 4).unwrap();
        assert_eq!(buffer, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn unpadded_rows_are_left_alone() {
        let mut buffer: Vec<u8> = (0..24).collect();
        strip_row_padding(&mut buffer, 4, 2, 12).unwrap();
        assert_eq!(buffer, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn wrong_buffer_length_is_refused() {
        let mut buffer = vec![0; 11];
        assert!(strip_row_padding(&mut buffer, 1, 3, 4).is_none());
    }

    #[test]
    fn page_over_the_width_limit_is_refused() {
        let err = check_size(2, 10_001, 10, 300, &StreamLimits::PDF).unwrap_err();
        assert!(matches!(
            err,
            ServeError::PageTooLarge {
                page: 2,
                width: 10_001,
                ..
            }
        ));
    }

    #[test]
    fn page_at_the_limit_is_accepted() {
        assert!(check_size(1, 10_000, 10_000, 300, &StreamLimits::PDF).is_ok());
    }
}
