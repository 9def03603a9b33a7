//! The call a uvm serves, as the host wrote it on the kernel command line.
//!
//! The host (the `qemu` module of the `uvm-image` crate) appends these words to `-append`:
//!
//! | word | meaning |
//! |---|---|
//! | `uvm.service=NAME` | the qrexec service to run, e.g. `qubes.PdfConvert` (required) |
//! | `uvm.arg=ARG` | its argument, e.g. `150` (optional; empty when absent) |
//! | `uvm.port=/dev/NAME` | the data port (optional; see [`crate::system::open_data_port`]) |
//!
//! Service and argument follow qrexec's rules: only `A-Za-z0-9_.-`, so a word never needs
//! quoting and never reaches a shell.

use std::path::PathBuf;

/// Kernel command-line key naming the service.
pub const SERVICE_KEY: &str = "uvm.service";
/// Kernel command-line key carrying the service argument.
pub const ARG_KEY: &str = "uvm.arg";
/// Kernel command-line key naming the data port device.
pub const PORT_KEY: &str = "uvm.port";

/// Longest service name (qrexec's agent refuses longer ones).
pub const MAX_SERVICE_LEN: usize = 255;
/// Longest argument; qrexec joins `service+arg` under 255 bytes as well.
pub const MAX_ARG_LEN: usize = 255;
/// Longest kernel command line read (the x86 kernel's `COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE_LEN: usize = 2048;

/// The one call this uvm serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    /// Service name, e.g. `qubes.PdfConvert`.
    pub service: String,
    /// Service argument, empty when none.
    pub arg: String,
    /// The data port, when the command line names one.
    pub port: Option<PathBuf>,
}

/// A kernel command line that does not name a valid call.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// No `uvm.service=` word.
    #[error("no uvm.service= on the kernel command line")]
    MissingService,
    /// A key appears twice.
    #[error("{key} appears more than once")]
    DuplicateKey {
        /// The repeated key.
        key: &'static str,
    },
    /// Service or argument holds a byte outside `A-Za-z0-9_.-`, or is too long.
    #[error("{key} value of {len} bytes is not a valid qrexec name")]
    InvalidName {
        /// The key whose value is bad.
        key: &'static str,
        /// The value's length (the value itself is not echoed).
        len: usize,
    },
    /// The port is not a device path under `/dev/`.
    #[error("uvm.port must name a device under /dev/")]
    PortOutsideDev,
    /// The command line is longer than the kernel allows.
    #[error("kernel command line of {len} bytes exceeds {MAX_CMDLINE_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
}

impl CallRequest {
    /// Reads the call from the text of `/proc/cmdline`.
    ///
    /// # Errors
    /// See [`CmdlineError`].
    pub fn parse(cmdline: &str) -> Result<CallRequest, CmdlineError> {
        if cmdline.len() > MAX_CMDLINE_LEN {
            return Err(CmdlineError::TooLong { len: cmdline.len() });
        }

        let mut service = None;
        let mut arg = None;
        let mut port = None;
        for word in cmdline.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let (slot, key): (&mut Option<&str>, &'static str) = match key {
                SERVICE_KEY => (&mut service, SERVICE_KEY),
                ARG_KEY => (&mut arg, ARG_KEY),
                PORT_KEY => (&mut port, PORT_KEY),
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(CmdlineError::DuplicateKey { key });
            }
        }

        let service = service.ok_or(CmdlineError::MissingService)?;
        check_name(SERVICE_KEY, service, MAX_SERVICE_LEN, false)?;
        let arg = arg.unwrap_or("");
        check_name(ARG_KEY, arg, MAX_ARG_LEN, true)?;
        let port = match port {
            Some(p) if p.starts_with("/dev/") && !p.contains("..") => Some(PathBuf::from(p)),
            Some(_) => return Err(CmdlineError::PortOutsideDev),
            None => None,
        };

        Ok(CallRequest {
            service: service.to_owned(),
            arg: arg.to_owned(),
            port,
        })
    }

    /// The words to append to a kernel command line for this call (the host's side of
    /// [`CallRequest::parse`]).
    ///
    /// # Errors
    /// [`CmdlineError::InvalidName`] or [`CmdlineError::PortOutsideDev`], as `parse` would.
    pub fn to_kernel_words(&self) -> Result<String, CmdlineError> {
        check_name(SERVICE_KEY, &self.service, MAX_SERVICE_LEN, false)?;
        check_name(ARG_KEY, &self.arg, MAX_ARG_LEN, true)?;
        let mut words = format!("{SERVICE_KEY}={}", self.service);
        if !self.arg.is_empty() {
            words.push_str(&format!(" {ARG_KEY}={}", self.arg));
        }
        if let Some(port) = &self.port {
            let p = port.to_str().ok_or(CmdlineError::PortOutsideDev)?;
            if !p.starts_with("/dev/") || p.contains("..") || p.contains(char::is_whitespace) {
                return Err(CmdlineError::PortOutsideDev);
            }
            words.push_str(&format!(" {PORT_KEY}={p}"));
        }

        Ok(words)
    }
}

/// Checks qrexec's character set and a length limit.
fn check_name(
    key: &'static str,
    value: &str,
    max: usize,
    empty_ok: bool,
) -> Result<(), CmdlineError> {
    let valid_bytes = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid_bytes || value.len() > max || (value.is_empty() && !empty_ok) {
        return Err(CmdlineError::InvalidName {
            key,
            len: value.len(),
        });
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_service_and_argument_among_kernel_words() {
        let req = CallRequest::parse(
            "console=ttyS0 reboot=t quiet uvm.service=qubes.PdfConvert uvm.arg=150\n",
        )
        .unwrap();
        assert_eq!(
            req,
            CallRequest {
                service: "qubes.PdfConvert".into(),
                arg: "150".into(),
                port: None,
            }
        );
    }

    #[test]
    fn argument_defaults_to_empty() {
        let req = CallRequest::parse("uvm.service=qubes.GetImageRGBA").unwrap();
        assert_eq!(req.arg, "");
    }

    #[test]
    fn missing_service_is_refused() {
        assert_eq!(
            CallRequest::parse("console=ttyS0 uvm.arg=1"),
            Err(CmdlineError::MissingService)
        );
    }

    #[test]
    fn repeated_key_is_refused() {
        assert_eq!(
            CallRequest::parse("uvm.service=a uvm.service=b"),
            Err(CmdlineError::DuplicateKey { key: SERVICE_KEY })
        );
    }

    #[test]
    fn shell_characters_are_refused() {
        assert_eq!(
            CallRequest::parse("uvm.service=a uvm.arg=1;reboot"),
            Err(CmdlineError::InvalidName {
                key: ARG_KEY,
                len: 8
            })
        );
    }

    #[test]
    fn port_must_be_under_dev() {
        assert_eq!(
            CallRequest::parse("uvm.service=a uvm.port=/proc/self/mem"),
            Err(CmdlineError::PortOutsideDev)
        );
        assert_eq!(
            CallRequest::parse("uvm.service=a uvm.port=/dev/../init"),
            Err(CmdlineError::PortOutsideDev)
        );
    }

    #[test]
    fn kernel_words_parse_back() {
        let req = CallRequest {
            service: "uvm.Echo".into(),
            arg: "x-1".into(),
            port: Some(PathBuf::from("/dev/hvc0")),
        };
        let words = req.to_kernel_words().unwrap();
        assert_eq!(words, "uvm.service=uvm.Echo uvm.arg=x-1 uvm.port=/dev/hvc0");
        assert_eq!(CallRequest::parse(&words).unwrap(), req);
    }
}
