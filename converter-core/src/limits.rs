//! Named limits on what a uvm may send back, and on how long a call may take.
//!
//! Every number the trusted side enforces on hostile input lives here, with the reason for its
//! default. All of them can be raised or lowered by the caller (the commands expose them as
//! options); none of them is a hidden constant in a parser.

use std::time::Duration;

/// Most pages a PDF pixel stream may declare; Qubes' own client refuses more than 10000.
pub const PDF_MAX_PAGES: u32 = 10_000;
/// Widest PDF page in pixels; Qubes' own client refuses wider pages. 10000 px is 33 inches at
/// 300 ppi, far beyond any paper size.
pub const PDF_MAX_PAGE_WIDTH: u32 = 10_000;
/// Tallest PDF page in pixels, for the same reason as [`PDF_MAX_PAGE_WIDTH`].
pub const PDF_MAX_PAGE_HEIGHT: u32 = 10_000;
/// Cap on the bytes of one whole PDF pixel stream: 64 GiB. One page at the largest size is
/// 300 MB, so this lets a long document at a high resolution through while stopping a uvm that
/// would stream forever. The per-page cap (width x height x 3) is what bounds memory; this one
/// bounds disk and time.
pub const PDF_MAX_TOTAL_BYTES: u64 = 64 << 30;

/// Widest image in pixels; the limit of Qubes' stock image client.
pub const IMAGE_MAX_WIDTH: u32 = 8192;
/// Tallest image in pixels; the limit of Qubes' stock image client.
pub const IMAGE_MAX_HEIGHT: u32 = 5120;

/// Whole-call deadline before any page has arrived: enough for a uvm to boot, load and parse a
/// large document, and render the first page at a high resolution on a slow machine.
pub const DEFAULT_CALL_BASE: Duration = Duration::from_secs(120);
/// Extra whole-call time granted per declared page. PDFium renders a dense page at 300 ppi in
/// well under a second here; 30 s leaves a wide margin for slow machines and huge pages.
pub const DEFAULT_PER_PAGE: Duration = Duration::from_secs(30);
/// Longest silence allowed between two reads that return bytes. A renderer that stalls this long
/// on one page is treated as hung.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// Limits on the shape and size of one pixel stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Most pages the stream may declare (PDF streams only; an image stream has one).
    pub max_pages: u32,
    /// Widest page or image in pixels.
    pub max_width: u32,
    /// Tallest page or image in pixels.
    pub max_height: u32,
    /// Cap on all bytes of the stream, headers included.
    pub max_total_bytes: u64,
}

impl StreamLimits {
    /// Defaults for the `qubes.PdfConvert` stream (RGB pages).
    pub const PDF: StreamLimits = StreamLimits {
        max_pages: PDF_MAX_PAGES,
        max_width: PDF_MAX_PAGE_WIDTH,
        max_height: PDF_MAX_PAGE_HEIGHT,
        max_total_bytes: PDF_MAX_TOTAL_BYTES,
    };

    /// Defaults for the `qubes.GetImageRGBA` stream (one RGBA image).
    pub const IMAGE: StreamLimits = StreamLimits {
        max_pages: 1,
        max_width: IMAGE_MAX_WIDTH,
        max_height: IMAGE_MAX_HEIGHT,
        // One image at the largest size plus its header line.
        max_total_bytes: IMAGE_MAX_WIDTH as u64 * IMAGE_MAX_HEIGHT as u64 * 4 + 32,
    };
}

/// Time limits on one call to a uvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Whole-call time before the page count is known.
    pub call_base: Duration,
    /// Whole-call time added for each declared page.
    pub per_page: Duration,
    /// Longest silence between bytes from the uvm.
    pub idle: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            call_base: DEFAULT_CALL_BASE,
            per_page: DEFAULT_PER_PAGE,
            idle: DEFAULT_IDLE,
        }
    }
}

impl Deadlines {
    /// The whole-call deadline for a document of `pages` pages, saturating rather than
    /// overflowing for absurd settings.
    pub fn call_deadline(&self, pages: u32) -> Duration {
        self.call_base
            .saturating_add(self.per_page.saturating_mul(pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_limits_match_qubes_client() {
        assert_eq!(StreamLimits::PDF.max_pages, 10_000);
        assert_eq!(StreamLimits::PDF.max_width, 10_000);
        assert_eq!(StreamLimits::PDF.max_height, 10_000);
    }

    #[test]
    fn image_total_covers_largest_image() {
        let l = StreamLimits::IMAGE;
        assert!(l.max_total_bytes >= u64::from(l.max_width) * u64::from(l.max_height) * 4);
    }

    #[test]
    fn call_deadline_grows_with_pages_and_saturates() {
        let d = Deadlines::default();
        assert_eq!(d.call_deadline(0), DEFAULT_CALL_BASE);
        assert_eq!(d.call_deadline(2), DEFAULT_CALL_BASE + 2 * DEFAULT_PER_PAGE);
        let huge = Deadlines {
            call_base: Duration::MAX,
            ..d
        };
        assert_eq!(huge.call_deadline(10), Duration::MAX);
    }
}
