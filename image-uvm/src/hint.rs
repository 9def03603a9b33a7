//! The first line of a `qubes.GetImageRGBA` call: `-` or `FORMAT:-`, a format hint.
//!
//! Qubes' server hands this line to ImageMagick as the input name, so `FORMAT` is an
//! ImageMagick format or file extension (`png`, `JPEG`, `tga`). Here it is only a hint: the
//! bytes decide, except for TGA (no magic number) and SVG (text).

use std::io::{ErrorKind, Read};

use crate::ServeError;

/// Longest hint line accepted, newline included.
///
/// ImageMagick's format names and common file extensions are at most about ten characters;
/// 32 leaves room without letting a caller push arbitrary data through this line.
pub const MAX_HINT_LINE_BYTES: usize = 32;

/// What the hint line names, as far as decoding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormatHint {
    /// `tga:-` (also `icb`, `vda`, `vst`, TGA's other extensions).
    Tga,
    /// `svg:-`.
    Svg,
    /// Any other name: ignored, the bytes decide.
    Other,
}

/// Reads the hint line one byte at a time, so that no image byte is consumed with it.
///
/// Returns `None` for a bare `-`.
pub(crate) fn read_hint_line(input: &mut dyn Read) -> Result<Option<FormatHint>, ServeError> {
    let mut line = [0u8; MAX_HINT_LINE_BYTES];
    let mut len = 0;
    loop {
        let Some(slot) = line.get_mut(len) else {
            return Err(ServeError::BadHintLine("longer than the line limit"));
        };
        let mut byte = [0u8; 1];
        match input.read(&mut byte) {
            Ok(0) => return Err(ServeError::BadHintLine("no newline before end of input")),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(ServeError::ReadInput(e)),
        }
        if byte[0] == b'\n' {
            break;
        }
        *slot = byte[0];
        len += 1;
    }

    parse_hint(line.get(..len).unwrap_or_default())
}

fn parse_hint(line: &[u8]) -> Result<Option<FormatHint>, ServeError> {
    if line == b"-" {
        return Ok(None);
    }
    let Some(name) = line.strip_suffix(b":-") else {
        return Err(ServeError::BadHintLine("expected '-' or 'FORMAT:-'"));
    };
    if name.is_empty() || !name.iter().all(u8::is_ascii_alphanumeric) {
        return Err(ServeError::BadHintLine(
            "format name must be ASCII letters and digits",
        ));
    }

    let name = name.to_ascii_lowercase();
    Ok(Some(match name.as_slice() {
        b"tga" | b"icb" | b"vda" | b"vst" => FormatHint::Tga,
        b"svg" => FormatHint::Svg,
        _ => FormatHint::Other,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Option<FormatHint>, ServeError> {
        read_hint_line(&mut &bytes[..])
    }

    #[test]
    fn bare_dash_is_no_hint() {
        assert_eq!(read(b"-\nDATA").unwrap(), None);
    }

    #[test]
    fn format_names_are_case_insensitive() {
        assert_eq!(read(b"TGA:-\n").unwrap(), Some(FormatHint::Tga));
        assert_eq!(read(b"svg:-\n").unwrap(), Some(FormatHint::Svg));
        assert_eq!(read(b"jpeg:-\n").unwrap(), Some(FormatHint::Other));
    }

    #[test]
    fn line_stops_at_newline_and_leaves_the_image() {
        let mut input: &[u8] = b"png:-\n\x89PNG";
        read_hint_line(&mut input).unwrap();
        assert_eq!(input, b"\x89PNG");
    }

    #[test]
    fn over_long_line_is_refused() {
        let mut line = vec![b'a'; MAX_HINT_LINE_BYTES];
        line.extend_from_slice(b":-\n");
        assert!(matches!(read(&line), Err(ServeError::BadHintLine(_))));
    }

    #[test]
    fn longest_allowed_line_is_accepted() {
        let mut line = vec![b'a'; MAX_HINT_LINE_BYTES - 3];
        line.extend_from_slice(b":-\n");
        assert_eq!(read(&line).unwrap(), Some(FormatHint::Other));
    }

    #[test]
    fn missing_newline_is_refused() {
        assert!(matches!(read(b"-"), Err(ServeError::BadHintLine(_))));
    }

    #[test]
    fn file_names_and_odd_forms_are_refused() {
        for bad in [
            &b"/etc/passwd\n"[..],
            b"png:\n",
            b":-\n",
            b"png:-x\n",
            b"p g:-\n",
            b"\n",
        ] {
            assert!(
                matches!(read(bad), Err(ServeError::BadHintLine(_))),
                "{bad:?}"
            );
        }
    }
}
