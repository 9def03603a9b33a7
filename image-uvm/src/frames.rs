//! Counts the animation frames that are not sent, without decoding them.
//!
//! Called only after the first frame decoded, so the headers read here were already accepted
//! by the `image` crate's decoders under our limits.

use std::io::Cursor;

use crate::{SourceFormat, FRAME_COUNT_CAP};

/// Frames after the first, saturating at [`FRAME_COUNT_CAP`]; 0 for still images.
///
/// A file that breaks off after its first frame counts the frames seen until the break: the
/// count is a note for the log, not a verdict on the file.
pub(crate) fn dropped(bytes: &[u8], format: SourceFormat) -> u32 {
    match format {
        SourceFormat::Gif => gif_dropped(bytes),
        SourceFormat::Png => apng_dropped(bytes),
        SourceFormat::WebP => webp_dropped(bytes),
        _ => 0,
    }
}

/// Walks the GIF's frame headers with LZW decoding switched off, so each frame costs only
/// the skipping of its data blocks.
fn gif_dropped(bytes: &[u8]) -> u32 {
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let Ok(mut decoder) = options.read_info(Cursor::new(bytes)) else {
        return 0;
    };
    let mut frames: u32 = 0;
    while frames <= FRAME_COUNT_CAP {
        match decoder.next_frame_info() {
            Ok(Some(_)) => frames += 1,
            Ok(None) | Err(_) => break,
        }
    }
    frames.saturating_sub(1).min(FRAME_COUNT_CAP)
}

/// Takes the frame count that the APNG's `acTL` chunk declares. When the default image has no
/// `fcTL` it is not one of those frames, and all of them are dropped.
fn apng_dropped(bytes: &[u8]) -> u32 {
    let Ok(reader) = png::Decoder::new(Cursor::new(bytes)).read_info() else {
        return 0;
    };
    let info = reader.info();
    let Some(animation) = info.animation_control else {
        return 0;
    };
    let sent_is_a_frame = info.frame_control.is_some();
    let dropped = animation
        .num_frames
        .saturating_sub(u32::from(sent_is_a_frame));
    dropped.min(FRAME_COUNT_CAP)
}

/// Takes the count of `ANMF` chunks that the WebP decoder found while reading the headers.
fn webp_dropped(bytes: &[u8]) -> u32 {
    match image_webp::WebPDecoder::new(Cursor::new(bytes)) {
        Ok(decoder) if decoder.is_animated() => {
            decoder.num_frames().saturating_sub(1).min(FRAME_COUNT_CAP)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame, RgbaImage};

    fn gif_with_frames(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut out);
            let frames = (0..n).map(|i| {
                let image = RgbaImage::from_pixel(2, 2, image::Rgba([i as u8, 0, 0, 255]));
                Frame::from_parts(image, 0, 0, Delay::from_numer_denom_ms(10, 1))
            });
            encoder.encode_frames(frames).unwrap();
        }
        out
    }

    #[test]
    fn still_gif_drops_nothing() {
        assert_eq!(dropped(&gif_with_frames(1), SourceFormat::Gif), 0);
    }

    #[test]
    fn gif_counts_every_frame_after_the_first() {
        assert_eq!(dropped(&gif_with_frames(5), SourceFormat::Gif), 4);
    }

    #[test]
    fn gif_count_stops_at_the_cap() {
        let frames = usize::try_from(FRAME_COUNT_CAP).unwrap() + 50;
        assert_eq!(
            dropped(&gif_with_frames(frames), SourceFormat::Gif),
            FRAME_COUNT_CAP
        );
    }

    #[test]
    fn still_formats_drop_nothing() {
        assert_eq!(dropped(b"not even an image", SourceFormat::Bmp), 0);
    }
}
