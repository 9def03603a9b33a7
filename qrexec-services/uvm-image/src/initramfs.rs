//! A reproducible initramfs: newc cpio, gzip, every byte fixed by the content alone.
//!
//! Entries are written in path order (parents before children), with uid and gid 0, mtime 0,
//! inode numbers counted from 1 in that order, nlink 2 for directories and 1 otherwise, and a
//! gzip header without name or time. Two builds from the same files are byte-identical.
//!
//! The `cpio` crate writes each newc header and the trailer; this module adds the ordering, the
//! fixed metadata and the parent directories, which that crate leaves to its caller.
//!
//! # Limitations
//! - Files are held in memory while the archive is built (the largest, PDFium, is about 8 MB).
//! - No symlinks or hard links: every library is stored as a regular file at the path the
//!   loader asks for.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use flate2::read::GzDecoder;
use flate2::{Compression, GzBuilder};

/// File-type bits of a newc mode.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFMT: u32 = 0o170_000;

/// Largest file stored in an initramfs: newc sizes are 32-bit, and a uvm has far less memory.
pub const MAX_FILE_BYTES: usize = 256 << 20;

/// Most entries `list` reads from an archive before refusing it.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// A broken rule while building or reading an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A path is empty, absolute after normalising, or has `.`/`..` components.
    #[error("invalid archive path {path:?}")]
    InvalidPath {
        /// The path as given.
        path: String,
    },
    /// Two different entries at one path, or a file where a directory is needed.
    #[error("conflicting entries at {path:?}")]
    Conflict {
        /// The contested path.
        path: String,
    },
    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error("file {path:?} of {len} bytes exceeds {MAX_FILE_BYTES}")]
    FileTooLarge {
        /// The archive path.
        path: String,
        /// Its size.
        len: usize,
    },
    /// An archive holds more than [`MAX_LIST_ENTRIES`] entries.
    #[error("archive holds more than {MAX_LIST_ENTRIES} entries")]
    TooManyEntries,
    /// Writing or reading the archive failed.
    #[error("archive i/o failed")]
    Io(#[from] io::Error),
}

/// What one archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    CharDevice { major: u32, minor: u32, mode: u32 },
}

/// Collects entries, then writes them as a gzip-compressed newc archive.
#[derive(Debug, Default, Clone)]
pub struct InitramfsBuilder {
    entries: BTreeMap<String, Node>,
}

impl InitramfsBuilder {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (mode 0755) and its parents.
    ///
    /// # Errors
    /// [`InitramfsError::InvalidPath`] or [`InitramfsError::Conflict`].
    pub fn add_dir(&mut self, path: &str) -> Result<&mut Self, InitramfsError> {
        let name = normalise(path)?;
        self.add_parents(&name)?;
        self.insert(name, Node::Dir)
    }

    /// Adds a regular file with permission bits `mode` (e.g. 0o755), and its parents.
    ///
    /// # Errors
    /// [`InitramfsError::InvalidPath`], [`InitramfsError::Conflict`] or
    /// [`InitramfsError::FileTooLarge`].
    pub fn add_file(
        &mut self,
        path: &str,
        data: Vec<u8>,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        let name = normalise(path)?;
        if data.len() > MAX_FILE_BYTES {
            return Err(InitramfsError::FileTooLarge {
                path: name,
                len: data.len(),
            });
        }
        self.add_parents(&name)?;
        self.insert(
            name,
            Node::File {
                data,
                mode: mode & 0o7777,
            },
        )
    }

    /// Adds a character device node, and its parents.
    ///
    /// # Errors
    /// [`InitramfsError::InvalidPath`] or [`InitramfsError::Conflict`].
    pub fn add_char_device(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> Result<&mut Self, InitramfsError> {
        let name = normalise(path)?;
        self.add_parents(&name)?;
        self.insert(
            name,
            Node::CharDevice {
                major,
                minor,
                mode: mode & 0o7777,
            },
        )
    }

    /// The entries as they will be listed, in archive order.
    pub fn entries(&self) -> Vec<ListedEntry> {
        self.entries
            .iter()
            .map(|(name, node)| ListedEntry::of(name, node))
            .collect()
    }

    /// The uncompressed newc archive.
    ///
    /// # Errors
    /// [`InitramfsError::Io`] (only when the `cpio` crate refuses a header).
    pub fn to_cpio(&self) -> Result<Vec<u8>, InitramfsError> {
        let mut out = Vec::new();
        for (index, (name, node)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(index + 1).map_err(|_| InitramfsError::TooManyEntries)?;
            let header = cpio::newc::Builder::new(name)
                .ino(ino)
                .uid(0)
                .gid(0)
                .mtime(0);
            let (header, data): (_, &[u8]) = match node {
                Node::Dir => (header.mode(S_IFDIR | 0o755).nlink(2), &[]),
                Node::File { data, mode } => (header.mode(S_IFREG | mode).nlink(1), data),
                Node::CharDevice { major, minor, mode } => (
                    header
                        .mode(S_IFCHR | mode)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            // MAX_FILE_BYTES keeps every size inside u32.
            let size = u32::try_from(data.len()).map_err(|_| InitramfsError::FileTooLarge {
                path: name.clone(),
                len: data.len(),
            })?;
            let mut writer = header.write(&mut out, size);
            writer.write_all(data)?;
            writer.finish()?;
        }
        cpio::newc::trailer(&mut out)?;

        Ok(out)
    }

    /// The gzip-compressed archive, as the kernel's `-initrd` wants it.
    ///
    /// # Errors
    /// As [`InitramfsBuilder::to_cpio`].
    pub fn to_gzip(&self) -> Result<Vec<u8>, InitramfsError> {
        let cpio = self.to_cpio()?;
        // No file name and mtime 0 in the gzip header: nothing but the content varies.
        let mut gz = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::best());
        gz.write_all(&cpio)?;
        Ok(gz.finish()?)
    }

    fn add_parents(&mut self, name: &str) -> Result<(), InitramfsError> {
        let mut end = 0;
        while let Some(pos) = name.get(end..).and_then(|rest| rest.find('/')) {
            end += pos;
            let parent = name.get(..end).unwrap_or_default().to_owned();
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent, Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => return Err(InitramfsError::Conflict { path: parent }),
            }
            end += 1;
        }
        Ok(())
    }

    fn insert(&mut self, name: String, node: Node) -> Result<&mut Self, InitramfsError> {
        match self.entries.get(&name) {
            Some(existing) if *existing != node => Err(InitramfsError::Conflict { path: name }),
            _ => {
                self.entries.insert(name, node);
                Ok(self)
            }
        }
    }
}

/// Turns `/a/b` or `a/b` into `a/b`, refusing empty, `.` and `..` components.
fn normalise(path: &str) -> Result<String, InitramfsError> {
    let trimmed = path.trim_start_matches('/');
    let bad = trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(InitramfsError::InvalidPath { path: path.into() });
    }
    Ok(trimmed.to_owned())
}

/// One entry of an archive, as `uvm-image list` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// Path inside the archive, without a leading `/`.
    pub name: String,
    /// Full newc mode (type and permission bits).
    pub mode: u32,
    /// Size of the file's content.
    pub size: u32,
    /// Device numbers for a device node, else 0.
    pub rdev: (u32, u32),
}

impl ListedEntry {
    fn of(name: &str, node: &Node) -> ListedEntry {
        let (mode, size, rdev) = match node {
            Node::Dir => (S_IFDIR | 0o755, 0, (0, 0)),
            Node::File { data, mode } => (
                S_IFREG | mode,
                u32::try_from(data.len()).unwrap_or(u32::MAX),
                (0, 0),
            ),
            Node::CharDevice { major, minor, mode } => (S_IFCHR | mode, 0, (*major, *minor)),
        };
        ListedEntry {
            name: name.to_owned(),
            mode,
            size,
            rdev,
        }
    }

    /// `ls -l`-like one-line form: type, octal permissions, size or device, path.
    pub fn line(&self) -> String {
        let kind = match self.mode & S_IFMT {
            S_IFDIR => 'd',
            S_IFREG => '-',
            S_IFCHR => 'c',
            _ => '?',
        };
        let size = if kind == 'c' {
            format!("{},{}", self.rdev.0, self.rdev.1)
        } else {
            self.size.to_string()
        };
        format!(
            "{kind} {:04o} {size:>10} /{}",
            self.mode & 0o7777,
            self.name
        )
    }
}

/// Lists the entries of a gzip-compressed newc archive (the trailer left out).
///
/// # Errors
/// [`InitramfsError::Io`] for a corrupt archive, [`InitramfsError::TooManyEntries`].
pub fn list<R: Read>(gzipped: R) -> Result<Vec<ListedEntry>, InitramfsError> {
    let mut input = GzDecoder::new(gzipped);
    let mut out = Vec::new();
    loop {
        let reader = cpio::NewcReader::new(input)?;
        if reader.entry().is_trailer() {
            return Ok(out);
        }
        if out.len() >= MAX_LIST_ENTRIES {
            return Err(InitramfsError::TooManyEntries);
        }
        let e = reader.entry();
        out.push(ListedEntry {
            name: e.name().to_owned(),
            mode: e.mode(),
            size: e.file_size(),
            rdev: (e.rdev_major(), e.rdev_minor()),
        });
        input = reader.finish()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InitramfsBuilder {
        let mut b = InitramfsBuilder::new();
        b.add_file("/init", b"\x7fELF".to_vec(), 0o755).unwrap();
        b.add_char_device("/dev/console", 5, 1, 0o600).unwrap();
        b.add_dir("/proc").unwrap();
        b.add_file("/lib/x86_64-linux-gnu/libc.so.6", vec![1; 5], 0o644)
            .unwrap();
        b
    }

    #[test]
    fn parents_come_before_children_in_path_order() {
        let names: Vec<String> = sample().entries().into_iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/x86_64-linux-gnu",
                "lib/x86_64-linux-gnu/libc.so.6",
                "proc"
            ]
        );
    }

    #[test]
    fn list_reads_back_what_was_written() {
        let b = sample();
        let listed = list(b.to_gzip().unwrap().as_slice()).unwrap();
        assert_eq!(listed, b.entries());
        let console = listed.iter().find(|e| e.name == "dev/console").unwrap();
        assert_eq!(console.line(), "c 0600        5,1 /dev/console");
    }

    #[test]
    fn two_builds_are_byte_identical() {
        assert_eq!(sample().to_gzip().unwrap(), sample().to_gzip().unwrap());
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let mut b = InitramfsBuilder::new();
        b.add_dir("/proc").unwrap();
        b.add_file("/lib/x86_64-linux-gnu/libc.so.6", vec![1; 5], 0o644)
            .unwrap();
        b.add_char_device("/dev/console", 5, 1, 0o600).unwrap();
        b.add_file("/init", b"\x7fELF".to_vec(), 0o755).unwrap();
        assert_eq!(b.to_cpio().unwrap(), sample().to_cpio().unwrap());
    }

    #[test]
    fn headers_carry_fixed_metadata() {
        let cpio = sample().to_cpio().unwrap();
        let mut input = cpio.as_slice();
        let mut inos = Vec::new();
        loop {
            let r = cpio::NewcReader::new(input).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let e = r.entry();
            assert_eq!((e.uid(), e.gid(), e.mtime()), (0, 0, 0), "{}", e.name());
            let want_nlink = if e.mode() & S_IFMT == S_IFDIR { 2 } else { 1 };
            assert_eq!(e.nlink(), want_nlink, "{}", e.name());
            inos.push(e.ino());
            input = r.finish().unwrap();
        }
        assert_eq!(inos, (1..=7).collect::<Vec<u32>>());
    }

    #[test]
    fn dot_dot_paths_are_refused() {
        let err = InitramfsBuilder::new()
            .add_file("/lib/../init", vec![], 0o755)
            .unwrap_err();
        assert!(matches!(err, InitramfsError::InvalidPath { .. }));
    }

    #[test]
    fn a_file_cannot_become_a_directory() {
        let mut b = InitramfsBuilder::new();
        b.add_file("/init", vec![], 0o755).unwrap();
        let err = b.add_file("/init/x", vec![], 0o644).unwrap_err();
        assert!(matches!(err, InitramfsError::Conflict { .. }));
    }

    #[test]
    fn the_same_file_twice_is_accepted_but_different_content_is_not() {
        let mut b = InitramfsBuilder::new();
        b.add_file("/a", vec![1], 0o644).unwrap();
        b.add_file("/a", vec![1], 0o644).unwrap();
        assert!(b.add_file("/a", vec![2], 0o644).is_err());
    }

    #[test]
    fn corrupt_archive_is_an_error() {
        assert!(list(&b"not gzip"[..]).is_err());
    }
}
