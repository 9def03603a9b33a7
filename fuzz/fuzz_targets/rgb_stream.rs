//! The PDF pixel-stream reader over arbitrary bytes, with small limits so that every path
//! (including the limit checks) is reached quickly.

#![no_main]

use converter_core::limits::StreamLimits;
use converter_core::stream::RgbStreamReader;
use libfuzzer_sys::fuzz_target;

const LIMITS: StreamLimits = StreamLimits {
    max_pages: 4,
    max_width: 64,
    max_height: 64,
    max_total_bytes: 1 << 16,
};

fuzz_target!(|data: &[u8]| {
    let mut reader = RgbStreamReader::new(data, LIMITS);
    let Ok(pages) = reader.read_page_count() else {
        return;
    };
    assert!((1..=LIMITS.max_pages).contains(&pages));
    let mut buf = Vec::new();
    let mut seen = 0u32;
    while let Ok(Some(page)) = reader.next_page(&mut buf) {
        seen += 1;
        assert!(seen <= pages, "more pages than declared");
        assert!(page.width <= LIMITS.max_width && page.height <= LIMITS.max_height);
        assert_eq!(buf.len() as u64, u64::from(page.width) * u64::from(page.height) * 3);
    }
    assert!(reader.bytes_read() <= data.len() as u64);
});
