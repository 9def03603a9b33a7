//! The qrexec service argument: the rendering resolution in dots per inch.
//!
//! A call to `qubes.PdfConvert+300` reaches the service with the argument `300`. Qubes' own
//! client and server accept 75 to 4800 and default to 300 when the argument is absent, so we do
//! the same; the number is written like every number on the wire: ASCII digits, no sign, no
//! padding, no leading zero.

use crate::ServeError;

/// Resolution used when the call carries no argument (Qubes' default).
pub const DEFAULT_RESOLUTION: u32 = 300;

/// Lowest resolution accepted (Qubes' lower bound).
pub const MIN_RESOLUTION: u32 = 75;

/// Highest resolution accepted (Qubes' upper bound).
pub const MAX_RESOLUTION: u32 = 4800;

/// Longest argument quoted back in an error, so a silly argument cannot flood the log line.
const MAX_QUOTED_CHARS: usize = 32;

/// Parses the service argument into a resolution in dots per inch.
///
/// `None` and the empty string (a qrexec call always carries a `+`, possibly with nothing
/// after it) give [`DEFAULT_RESOLUTION`].
///
/// # Errors
/// [`ServeError::BadResolution`] for anything but a plain decimal number from
/// [`MIN_RESOLUTION`] to [`MAX_RESOLUTION`].
pub fn parse_resolution(arg: Option<&str>) -> Result<u32, ServeError> {
    let arg = match arg {
        None | Some("") => return Ok(DEFAULT_RESOLUTION),
        Some(arg) => arg,
    };

    // Four digits cover the whole range; checking the shape first keeps `parse` from ever
    // seeing a sign, a space or a number that overflows.
    let well_formed =
        arg.len() <= 4 && arg.bytes().all(|b| b.is_ascii_digit()) && !arg.starts_with('0');
    let value = if well_formed {
        arg.parse::<u32>().ok()
    } else {
        None
    };

    match value {
        Some(dpi) if (MIN_RESOLUTION..=MAX_RESOLUTION).contains(&dpi) => Ok(dpi),
        _ => Err(ServeError::BadResolution { arg: quote(arg) }),
    }
}

/// A shortened copy of `arg` for an error message.
fn quote(arg: &str) -> String {
    let mut chars = arg.chars();
    let mut quoted: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        quoted.push_str("...");
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(arg: &str) -> bool {
        matches!(
            parse_resolution(Some(arg)),
            Err(ServeError::BadResolution { .. })
        )
    }

    #[test]
    fn absent_argument_gives_the_default() {
        assert_eq!(parse_resolution(None).unwrap(), DEFAULT_RESOLUTION);
    }

    #[test]
    fn empty_argument_gives_the_default() {
        assert_eq!(parse_resolution(Some("")).unwrap(), DEFAULT_RESOLUTION);
    }

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(parse_resolution(Some("75")).unwrap(), 75);
        assert_eq!(parse_resolution(Some("4800")).unwrap(), 4800);
        assert_eq!(parse_resolution(Some("150")).unwrap(), 150);
    }

    #[test]
    fn values_outside_the_range_are_refused() {
        assert!(bad("74"));
        assert!(bad("4801"));
        assert!(bad("9999"));
    }

    #[test]
    fn sign_is_refused() {
        assert!(bad("+300"));
        assert!(bad("-300"));
    }

    #[test]
    fn leading_zero_is_refused() {
        assert!(bad("0300"));
        assert!(bad("0"));
    }

    #[test]
    fn spaces_and_letters_are_refused() {
        assert!(bad(" 300"));
        assert!(bad("300 "));
        assert!(bad("3e2"));
        assert!(bad("abc"));
        assert!(bad("dpi150"));
    }

    #[test]
    fn overflowing_number_is_refused() {
        assert!(bad("99999999999999999999"));
    }

    #[test]
    fn long_argument_is_shortened_in_the_error() {
        let long = "9".repeat(100);
        let message = parse_resolution(Some(&long)).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("..."), "{message}");
    }
}
