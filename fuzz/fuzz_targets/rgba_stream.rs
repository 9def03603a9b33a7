//! The image pixel-stream reader over arbitrary bytes, with small limits.

#![no_main]

use converter_core::limits::StreamLimits;
use converter_core::stream::read_rgba_image;
use libfuzzer_sys::fuzz_target;

const LIMITS: StreamLimits = StreamLimits {
    max_pages: 1,
    max_width: 64,
    max_height: 64,
    max_total_bytes: 1 << 16,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = read_rgba_image(data, &LIMITS) {
        assert!(image.width <= LIMITS.max_width && image.height <= LIMITS.max_height);
        let expected = u64::from(image.width) * u64::from(image.height) * 4;
        assert_eq!(image.pixels.len() as u64, expected);
    }
});
