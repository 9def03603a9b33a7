//! `hostile-uvm MODE [ARGS...]`: a stand-in for `pdf-uvm` that reads its stdin to EOF (unless
//! the mode says otherwise) and then answers with a broken pixel stream chosen by MODE. Extra
//! arguments (the resolution the caller passes) are ignored.
//!
//! | mode | what it sends |
//! |---|---|
//! | `pages-0`, `pages-10001` | that page count |
//! | `width-10001` | one page 10001 px wide |
//! | `not-a-digit` | a width starting with `x` |
//! | `leading-zero` | the page count `01` |
//! | `missing-newline` | a page header whose height runs into the pixels |
//! | `truncate-N` | the first N bytes of [`VALID`] |
//! | `trailing-byte` | [`VALID`] and one more byte |
//! | `stall` | the page count, then silence for an hour |
//! | `slow-2gb` | 7 pages of 10000 x 10000 (2.1 GB) at 1 MB/s |
//! | `valid-then-exit-1` | [`VALID`], then exit code 1 |
//! | `ignore-stdin` | nothing: exits 0 at once without reading its input |
//! | `valid` | [`VALID`] (a control: the caller must accept it) |

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

/// A valid two-page stream of 2 x 2 pages.
const VALID: &[u8] = b"2\n2 2\n\xff\x00\x00\x00\xff\x00\x00\x00\xff\xff\xff\xff\
2 2\n\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0";

/// Bytes per write in the slow mode, and the pause after each: about 1 MB/s.
const SLOW_CHUNK: usize = 64 << 10;
const SLOW_PAUSE: Duration = Duration::from_millis(62);

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode != "ignore-stdin" {
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    }
    let mut out = io::stdout().lock();
    let result = match mode.as_str() {
        "pages-0" => out.write_all(b"0\n"),
        "pages-10001" => out.write_all(b"10001\n"),
        "width-10001" => out.write_all(b"1\n10001 10\n"),
        "not-a-digit" => out.write_all(b"1\nx0 10\n"),
        "leading-zero" => out.write_all(b"01\n"),
        "missing-newline" => {
            out.write_all(b"1\n2 2\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
        }
        "trailing-byte" => out.write_all(VALID).and_then(|()| out.write_all(b"\n")),
        "stall" => {
            let _ = out.write_all(b"1\n");
            let _ = out.flush();
            std::thread::sleep(Duration::from_secs(3600));
            Ok(())
        }
        "slow-2gb" => slow(&mut out),
        "valid-then-exit-1" => {
            let _ = out.write_all(VALID);
            let _ = out.flush();
            return ExitCode::from(1);
        }
        "ignore-stdin" => return ExitCode::SUCCESS,
        "valid" => out.write_all(VALID),
        other => match other.strip_prefix("truncate-").map(str::parse::<usize>) {
            Some(Ok(n)) if n <= VALID.len() => out.write_all(&VALID[..n]),
            _ => {
                eprintln!("hostile-uvm: unknown mode {other:?}");
                return ExitCode::from(2);
            }
        },
    };
    match result.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile-uvm: {}", e.kind());
            ExitCode::from(1)
        }
    }
}

/// Seven declared 10000 x 10000 pages, sent at about 1 MB/s until the caller hangs up.
fn slow(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"7\n")?;
    let chunk = vec![0x7f_u8; SLOW_CHUNK];
    for _ in 0..7 {
        out.write_all(b"10000 10000\n")?;
        let mut left: u64 = 10_000 * 10_000 * 3;
        while left > 0 {
            let n = usize::try_from(left.min(SLOW_CHUNK as u64)).unwrap_or(SLOW_CHUNK);
            out.write_all(&chunk[..n])?;
            out.flush()?;
            left -= n as u64;
            std::thread::sleep(SLOW_PAUSE);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_stream_has_the_size_its_headers_declare() {
        assert_eq!(VALID.len(), 2 + 4 + 12 + 4 + 12);
    }
}
