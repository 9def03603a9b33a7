//! `serve` and `render_only` against the real PDFium, on corpus files and hand-built PDFs.

use std::fs;
use std::io::{self, Write};

use pdf_uvm::{render_only, serve, LoadFailure, ServeError, ServeOptions, ServeSummary};

use crate::util::{corpus, data, pdf, read_stream, Page};

/// Runs `serve` over in-memory input; returns the result and everything written.
fn run(arg: Option<&str>, input: &[u8]) -> (Result<ServeSummary, ServeError>, Vec<u8>) {
    let mut output = Vec::new();
    let result = serve(arg, &mut &input[..], &mut output, &ServeOptions::default());
    (result, output)
}

/// `--password=PASSWORD\n` followed by the document.
fn with_password(password: &str, document: &[u8]) -> Vec<u8> {
    let mut input = format!("--password={password}\n").into_bytes();
    input.extend_from_slice(document);
    input
}

const RED_SQUARE: &str = "1 0 0 rg 20 20 60 60 re f";

#[test]
fn cfgguide_at_75_dpi_gives_ten_a4_pages() {
    let document = fs::read(corpus("text-short-cfgguide.pdf")).unwrap();
    let (result, output) = run(Some("75"), &document);
    let summary = result.unwrap();

    // A4 is 595.276 x 841.89 pt: 620.08 and 876.97 px at 75 dpi.
    let pages = read_stream(&output);
    assert_eq!(pages.len(), 10);
    for page in &pages {
        assert_eq!((page.width, page.height), (620, 877));
    }
    let expected_bytes = "10\n".len() + 10 * ("620 877\n".len() + 620 * 877 * 3);
    assert_eq!(output.len(), expected_bytes);
    assert_eq!(
        summary,
        ServeSummary {
            pages: 10,
            dpi: 75,
            bytes_in: document.len() as u64,
            bytes_out: expected_bytes as u64,
        }
    );
    assert!(
        !pages[0].is_all_white(),
        "the first page has text, so some pixel is not white"
    );
}

#[test]
fn absent_argument_renders_at_300_dpi() {
    let (result, output) = run(None, &pdf(&[Page::new(72.0, 36.0)]));
    assert_eq!(result.unwrap().dpi, 300);
    let pages = read_stream(&output);
    assert_eq!((pages[0].width, pages[0].height), (300, 150));
}

#[test]
fn empty_page_is_white() {
    let (result, output) = run(Some("75"), &pdf(&[Page::new(100.0, 50.0)]));
    result.unwrap();
    let pages = read_stream(&output);
    assert!(pages[0].is_all_white());
}

#[test]
fn colours_come_out_as_rgb_not_bgr() {
    // A red square from (20,20) to (80,80) pt on a 100 x 100 pt page, at 72 dpi (1 px = 1 pt).
    let (result, output) = run(
        Some("75"),
        &pdf(&[Page::new(96.0, 96.0).content(RED_SQUARE)]),
    );
    result.unwrap();
    let page = &read_stream(&output)[0];
    assert_eq!((page.width, page.height), (100, 100));
    assert_eq!(page.pixel(50, 50), [255, 0, 0]);
    assert_eq!(page.pixel(2, 2), [255, 255, 255]);
}

#[test]
fn odd_width_rows_carry_no_padding() {
    // 5 px wide: PDFium pads each 15-byte row to 16; the stream must not.
    let (result, output) = run(
        Some("75"),
        &pdf(&[Page::new(4.8, 4.8).content("0 0 1 rg 0 0 4.8 4.8 re f")]),
    );
    result.unwrap();
    let page = &read_stream(&output)[0];
    assert_eq!((page.width, page.height), (5, 5));
    assert_eq!(page.rgb.len(), 5 * 5 * 3);
    assert!(
        page.rgb.chunks(3).all(|p| p == [0, 0, 255]),
        "every pixel blue, no padding bytes"
    );
}

#[test]
fn sizes_round_to_the_nearest_pixel_and_pages_keep_their_own_size() {
    // At 150 dpi: 100.7 pt -> 209.79 -> 210; 50.2 pt -> 104.58 -> 105; 0.2 pt -> 0.42 -> 1.
    let document = pdf(&[Page::new(100.7, 50.2), Page::new(0.2, 0.2)]);
    let (result, output) = run(Some("150"), &document);
    assert_eq!(result.unwrap().pages, 2);
    let pages = read_stream(&output);
    assert_eq!((pages[0].width, pages[0].height), (210, 105));
    assert_eq!((pages[1].width, pages[1].height), (1, 1));
}

#[test]
fn rotated_page_swaps_width_and_height() {
    let (result, output) = run(Some("75"), &pdf(&[Page::new(96.0, 48.0).rotate(90)]));
    result.unwrap();
    let pages = read_stream(&output);
    assert_eq!((pages[0].width, pages[0].height), (50, 100));
}

#[test]
fn oversize_page_is_refused_before_anything_is_written() {
    // 9000 pt at 300 dpi is 37500 px; rendering it would need a 4 GB bitmap.
    let (result, output) = run(Some("300"), &pdf(&[Page::new(9000.0, 9000.0)]));
    match result {
        Err(ServeError::PageTooLarge {
            page: 1,
            width: 37500,
            height: 37500,
            dpi: 300,
            ..
        }) => {}
        other => panic!("expected PageTooLarge for page 1, got {other:?}"),
    }
    assert!(
        output.is_empty(),
        "nothing may be written for a refused document"
    );
}

#[test]
fn oversize_later_page_is_named_and_nothing_is_written() {
    let document = pdf(&[
        Page::new(100.0, 100.0),
        Page::new(100.0, 100.0),
        Page::new(50.0, 3000.0),
    ]);
    // 3000 pt at 300 dpi = 12500 px tall.
    let (result, output) = run(Some("300"), &document);
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ServeError::PageTooLarge {
                page: 3,
                height: 12500,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("page 3"), "{err}");
    assert!(output.is_empty());
}

#[test]
fn page_at_exactly_10000_px_is_accepted() {
    // 750 pt at 960 dpi is exactly 10000 px; the other side is small to keep the test fast.
    let (result, output) = run(Some("960"), &pdf(&[Page::new(750.0, 0.3)]));
    result.unwrap();
    let pages = read_stream(&output);
    assert_eq!((pages[0].width, pages[0].height), (10000, 4));
}

#[test]
fn garbage_input_is_a_format_error() {
    let (result, output) = run(Some("75"), b"this is not a pdf at all, just some words\n");
    assert!(
        matches!(result, Err(ServeError::Load(LoadFailure::Format))),
        "{result:?}"
    );
    assert!(output.is_empty());
}

#[test]
fn truncated_pdf_is_refused_or_repaired_without_panic() {
    let document = fs::read(corpus("text-short-cfgguide.pdf")).unwrap();
    let (result, _) = run(Some("75"), &document[..1000]);
    assert!(
        result.is_err(),
        "a 1000-byte head of a 264 KB PDF has no renderable page"
    );
}

#[test]
fn leading_junk_before_the_header_is_tolerated_like_pdfium_does() {
    let mut document = b"junk before the header\n".to_vec();
    document.extend_from_slice(&pdf(&[Page::new(72.0, 72.0)]));
    let (result, output) = run(Some("75"), &document);
    assert_eq!(result.unwrap().pages, 1);
    assert_eq!(read_stream(&output).len(), 1);
}

#[test]
fn empty_input_is_refused() {
    let (result, output) = run(Some("75"), b"");
    assert!(
        matches!(result, Err(ServeError::EmptyDocument)),
        "{result:?}"
    );
    assert!(output.is_empty());
}

#[test]
fn password_line_without_document_is_refused() {
    let (result, _) = run(Some("75"), b"--password=secret\n");
    assert!(
        matches!(result, Err(ServeError::EmptyDocument)),
        "{result:?}"
    );
}

#[test]
fn bad_resolution_is_refused_before_reading() {
    struct Unreadable;
    impl io::Read for Unreadable {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("input must not be read when the argument is bad")
        }
    }
    let result = serve(
        Some("abc"),
        &mut Unreadable,
        &mut Vec::new(),
        &ServeOptions::default(),
    );
    assert!(
        matches!(result, Err(ServeError::BadResolution { .. })),
        "{result:?}"
    );
}

#[test]
fn page_count_over_10000_is_refused() {
    let document = pdf(&vec![Page::new(10.0, 10.0); 10_001]);
    let (result, output) = run(Some("75"), &document);
    assert!(
        matches!(
            result,
            Err(ServeError::TooManyPages {
                pages: 10_001,
                max: 10_000
            })
        ),
        "{result:?}"
    );
    assert!(output.is_empty());
}

#[test]
fn document_without_pages_is_refused() {
    let (result, output) = run(Some("75"), &pdf(&[]));
    assert!(matches!(result, Err(ServeError::NoPages)), "{result:?}");
    assert!(output.is_empty());
}

#[test]
fn right_password_opens_an_encrypted_document() {
    let document = fs::read(data("red-square-aes256.pdf")).unwrap();
    let (result, output) = run(Some("75"), &with_password("user-pw", &document));
    let summary = result.unwrap();
    assert_eq!(summary.pages, 1);
    assert_eq!(
        summary.bytes_in,
        (document.len() + "--password=user-pw\n".len()) as u64
    );
    let page = &read_stream(&output)[0];
    assert_eq!(
        page.pixel(52, 52),
        [255, 0, 0],
        "the red square is visible once decrypted"
    );
}

#[test]
fn wrong_password_is_a_password_error() {
    let document = fs::read(data("red-square-aes256.pdf")).unwrap();
    let (result, output) = run(Some("75"), &with_password("not-it", &document));
    let err = result.unwrap_err();
    assert!(
        matches!(err, ServeError::Load(LoadFailure::Password)),
        "{err:?}"
    );
    assert!(err.to_string().contains("password"), "{err}");
    assert!(output.is_empty());
}

#[test]
fn missing_password_is_a_password_error() {
    let document = fs::read(data("red-square-aes256.pdf")).unwrap();
    let (result, _) = run(Some("75"), &document);
    assert!(
        matches!(result, Err(ServeError::Load(LoadFailure::Password))),
        "{result:?}"
    );
}

#[test]
fn password_is_ignored_for_an_unencrypted_document() {
    let (result, _) = run(
        Some("75"),
        &with_password("whatever", &pdf(&[Page::new(72.0, 72.0)])),
    );
    assert_eq!(result.unwrap().pages, 1);
}

#[test]
fn write_failure_is_reported_as_such() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let document = pdf(&[Page::new(72.0, 72.0)]);
    let result = serve(
        Some("75"),
        &mut &document[..],
        &mut Closed,
        &ServeOptions::default(),
    );
    let err = result.unwrap_err();
    assert!(matches!(err, ServeError::Write(_)), "{err:?}");
    assert!(err.to_string().contains("broken pipe"), "{err}");
}

#[test]
fn error_messages_carry_no_document_text() {
    // The document's only text is a marker string; no error may echo it.
    let document = b"%PDF-1.7\nSECRET-MARKER-TEXT and nothing else".to_vec();
    let (result, _) = run(Some("75"), &document);
    let message = result.unwrap_err().to_string();
    assert!(!message.contains("SECRET"), "{message}");
}

#[test]
fn render_only_counts_every_page() {
    let document = fs::read(corpus("text-short-cfgguide.pdf")).unwrap();
    let (pages, elapsed) = render_only(&document, 75).unwrap();
    assert_eq!(pages, 10);
    assert!(elapsed.as_nanos() > 0);
}

#[test]
fn render_only_refuses_a_resolution_out_of_range() {
    let document = pdf(&[Page::new(72.0, 72.0)]);
    assert!(matches!(
        render_only(&document, 74),
        Err(ServeError::BadResolution { .. })
    ));
    assert!(matches!(
        render_only(&document, 4801),
        Err(ServeError::BadResolution { .. })
    ));
}
