//! The rebuild from pixels to PDF, then the output checker: every PDF the rebuild writes from
//! any pixels must pass `check_pdf`; a refusal is a bug in one or the other.
//!
//! Input layout: width byte, height byte (each taken modulo 32, plus 1), a mode byte (even:
//! lossless; odd: JPEG at quality 1 + mode / 2 % 100), then pixel bytes repeated to fill the
//! page.

#![no_main]

use converter_core::check::check_pdf;
use converter_core::rebuild::pdf::{encode_page, Compression, PdfOptions, PdfWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [w, h, mode, pixels @ ..] = data else {
        return;
    };
    let width = u32::from(*w % 32) + 1;
    let height = u32::from(*h % 32) + 1;
    let compression = if mode % 2 == 0 {
        Compression::Lossless
    } else {
        Compression::Jpeg {
            quality: 1 + (mode / 2) % 100,
        }
    };
    let len = (width * height * 3) as usize;
    let rgb: Vec<u8> = if pixels.is_empty() {
        vec![0; len]
    } else {
        pixels.iter().copied().cycle().take(len).collect()
    };
    let options = PdfOptions {
        dpi: 72,
        compression,
    };

    let page = encode_page(width, height, &rgb, &options).expect("encode a valid page");
    let mut writer = PdfWriter::new(Vec::new(), options).expect("start a document");
    writer.write_page(page).expect("write the page");
    let (pdf, summary) = writer.finish().expect("finish the document");
    assert_eq!(summary.pages, 1);

    let report = check_pdf(&pdf).expect("the checker accepts what the rebuild wrote");
    assert_eq!(report.pages.len(), 1);
    assert_eq!((report.pages[0].width, report.pages[0].height), (width, height));
});
