//! Reads the caller's request: an optional `--password=` line, then the document, then EOF.
//!
//! | part | layout |
//! |---|---|
//! | password line (optional) | `--password=`, at most [`MAX_PASSWORD_BYTES`] of UTF-8 without NUL, `\n` |
//! | document | every remaining byte up to EOF, at most [`MAX_DOCUMENT_BYTES`] |
//!
//! The whole request is held in memory: PDFium needs random access to the document, and a
//! uvm has no disk to spill it to.

use std::io::{self, Read};

use crate::ServeError;

/// Largest document accepted, in bytes.
///
/// PDFium parses from memory and the uvm has no disk, so the document must fit in the VM's RAM
/// next to the largest page bitmap (10000 x 10000 px x 3 = 300 MB). 256 MiB is more than the
/// largest PDF a person mails or downloads in practice while keeping the VM well under 1 GiB.
pub const MAX_DOCUMENT_BYTES: u64 = 256 << 20;

/// Longest password accepted, in bytes. Real passwords are typed by a person; PDF's own
/// password algorithms use at most 127 bytes, so 1024 leaves room for any encoding.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// What opens the optional password line.
const PASSWORD_PREFIX: &[u8] = b"--password=";

/// Size of one read from the caller.
const READ_CHUNK: usize = 64 << 10;

/// The longest password line, prefix and newline included.
const MAX_PASSWORD_LINE: u64 = (PASSWORD_PREFIX.len() + MAX_PASSWORD_BYTES + 1) as u64;

/// A request as received: the raw bytes and where the document starts in them.
#[derive(Debug)]
pub(crate) struct Request {
    bytes: Vec<u8>,
    document_start: usize,
    password: Option<String>,
}

impl Request {
    /// Reads a whole request and splits off the password line.
    pub(crate) fn read(input: &mut dyn Read) -> Result<Self, ServeError> {
        Self::read_with_cap(input, MAX_DOCUMENT_BYTES)
    }

    /// [`Request::read`] with a document cap chosen by the caller, so tests need not feed
    /// hundreds of megabytes.
    fn read_with_cap(input: &mut dyn Read, max_document: u64) -> Result<Self, ServeError> {
        let bytes = read_capped(
            input,
            max_document.saturating_add(MAX_PASSWORD_LINE),
            max_document,
        )?;
        let (password, document_start) = split_password(&bytes)?;
        let password = password.map(str::to_owned);
        let document_len = bytes.len().saturating_sub(document_start) as u64;
        if document_len > max_document {
            return Err(ServeError::DocumentTooLarge { max: max_document });
        }

        Ok(Request {
            bytes,
            document_start,
            password,
        })
    }

    /// The password, if the request had a password line.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The document bytes.
    pub(crate) fn document(&self) -> &[u8] {
        self.bytes.get(self.document_start..).unwrap_or_default()
    }

    /// Every byte received, the password line included.
    pub(crate) fn total_len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// Reads `input` to EOF, refusing more than `cap` bytes; reading one byte past the cap is how
/// oversize input is detected. Growth is explicit and fallible so a large upload cannot abort
/// the process with an allocation failure, and capacity never passes the cap.
fn read_capped(input: &mut dyn Read, cap: u64, max_document: u64) -> Result<Vec<u8>, ServeError> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];

    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ServeError::Read(e.kind())),
        };
        let received = chunk.get(..n).unwrap_or_default();
        let new_len = bytes.len().saturating_add(received.len());
        if new_len > cap {
            return Err(ServeError::DocumentTooLarge { max: max_document });
        }
        if new_len > bytes.capacity() {
            // Double like `Vec` would, but never past the cap.
            let target = bytes
                .capacity()
                .saturating_mul(2)
                .max(new_len)
                .max(READ_CHUNK)
                .min(cap);
            bytes.try_reserve_exact(target - bytes.len()).map_err(|_| {
                ServeError::DocumentMemory {
                    bytes: target as u64,
                }
            })?;
        }
        bytes.extend_from_slice(received);
    }

    Ok(bytes)
}

/// Splits the optional password line off a request: returns the password and the offset at
/// which the document starts.
pub(crate) fn split_password(request: &[u8]) -> Result<(Option<&str>, usize), ServeError> {
    let Some(rest) = request.strip_prefix(PASSWORD_PREFIX) else {
        return Ok((None, 0));
    };

    // Look for the newline only as far as the longest allowed password, so a huge first
    // "line" costs nothing.
    let window = rest
        .get(..MAX_PASSWORD_BYTES.saturating_add(1))
        .unwrap_or(rest);
    let Some(len) = window.iter().position(|&b| b == b'\n') else {
        return Err(if rest.len() > MAX_PASSWORD_BYTES {
            ServeError::PasswordLineTooLong {
                max: MAX_PASSWORD_BYTES,
            }
        } else {
            ServeError::PasswordLineUnterminated
        });
    };

    let raw = rest.get(..len).unwrap_or_default();
    let password = std::str::from_utf8(raw).map_err(|_| ServeError::PasswordNotUtf8)?;
    // PDFium takes the password as a C string: a NUL would cut it short (and pdfium-render
    // panics on one), so it is refused here.
    if password.contains('\0') {
        return Err(ServeError::PasswordHasNul);
    }

    Ok((Some(password), PASSWORD_PREFIX.len() + len + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_no_password_and_an_empty_document() {
        assert_eq!(split_password(b"").unwrap(), (None, 0));
    }

    #[test]
    fn input_without_the_prefix_is_all_document() {
        assert_eq!(split_password(b"%PDF-1.4\n").unwrap(), (None, 0));
    }

    #[test]
    fn only_a_password_line_leaves_an_empty_document() {
        let input = b"--password=secret\n";
        assert_eq!(
            split_password(input).unwrap(),
            (Some("secret"), input.len())
        );
    }

    #[test]
    fn document_follows_the_password_line() {
        let input = b"--password=s\n%PDF-1.7";
        let (password, start) = split_password(input).unwrap();
        assert_eq!(password, Some("s"));
        assert_eq!(&input[start..], b"%PDF-1.7");
    }

    #[test]
    fn empty_password_is_a_password() {
        assert_eq!(split_password(b"--password=\n").unwrap(), (Some(""), 12));
    }

    #[test]
    fn line_without_newline_is_unterminated() {
        assert!(matches!(
            split_password(b"--password=secret"),
            Err(ServeError::PasswordLineUnterminated)
        ));
    }

    #[test]
    fn password_of_the_maximum_length_is_accepted() {
        let mut input = b"--password=".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_PASSWORD_BYTES));
        input.push(b'\n');
        let (password, _) = split_password(&input).unwrap();
        assert_eq!(password.map(str::len), Some(MAX_PASSWORD_BYTES));
    }

    #[test]
    fn password_one_byte_too_long_is_refused() {
        let mut input = b"--password=".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_PASSWORD_BYTES + 1));
        input.extend_from_slice(b"\n%PDF");
        assert!(matches!(
            split_password(&input),
            Err(ServeError::PasswordLineTooLong {
                max: MAX_PASSWORD_BYTES
            })
        ));
    }

    #[test]
    fn non_utf8_password_is_refused() {
        assert!(matches!(
            split_password(b"--password=\xff\xfe\n%PDF"),
            Err(ServeError::PasswordNotUtf8)
        ));
    }

    #[test]
    fn password_with_nul_is_refused() {
        assert!(matches!(
            split_password(b"--password=a\0b\n"),
            Err(ServeError::PasswordHasNul)
        ));
    }

    #[test]
    fn document_at_the_cap_is_accepted() {
        let data = vec![b'x'; 1000];
        let request = Request::read_with_cap(&mut &data[..], 1000).unwrap();
        assert_eq!(request.document().len(), 1000);
        assert_eq!(request.password(), None);
    }

    #[test]
    fn document_one_byte_over_the_cap_is_refused() {
        let data = vec![b'x'; 1001];
        assert!(matches!(
            Request::read_with_cap(&mut &data[..], 1000),
            Err(ServeError::DocumentTooLarge { max: 1000 })
        ));
    }

    #[test]
    fn password_line_does_not_count_against_the_document_cap() {
        let mut data = b"--password=pw\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 1000));
        let request = Request::read_with_cap(&mut &data[..], 1000).unwrap();
        assert_eq!(request.password(), Some("pw"));
        assert_eq!(request.document().len(), 1000);
        assert_eq!(request.total_len(), data.len() as u64);
    }

    #[test]
    fn endless_input_stops_at_the_cap() {
        let mut endless = io::repeat(b'x');
        assert!(matches!(
            Request::read_with_cap(&mut endless, 100_000),
            Err(ServeError::DocumentTooLarge { .. })
        ));
    }

    #[test]
    fn read_error_is_reported_by_kind() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
        }
        assert!(matches!(
            Request::read(&mut Broken),
            Err(ServeError::Read(io::ErrorKind::ConnectionReset))
        ));
    }
}
