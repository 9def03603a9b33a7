//! Output naming, atomic output files, and moving the original to the archive.
//!
//! The rules that keep a user's data safe:
//! - the output is written to a hidden temporary file in the output's own folder and renamed
//!   into place only when it is complete, so a failure never leaves a partial file;
//! - the original is moved (or, with `--in-place`, removed) only after the output is in place;
//! - a file in the archive is never overwritten: a numbered name is chosen instead, and the
//!   move itself refuses to replace a file that appears meanwhile.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{renameat_with, RenameFlags, CWD};

/// Most numbered names tried in the archive before giving up.
const MAX_ARCHIVE_SUFFIX: u32 = 10_000;

/// `NAME.trusted.EXT` beside the input: `report.pdf` gives `report.trusted.pdf`, as Qubes'
/// own converter names its output (the last extension is replaced).
pub fn trusted_name(input: &Path, ext: &str) -> PathBuf {
    input.with_extension(format!("trusted.{ext}"))
}

/// A file being written that becomes `target` only on [`commit`](Self::commit); dropped
/// uncommitted, it is removed.
pub struct PendingOutput {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl PendingOutput {
    /// Creates the hidden temporary file in `target`'s folder.
    pub fn create(target: &Path) -> io::Result<Self> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".part")
            .tempfile_in(dir)?;
        Ok(PendingOutput {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        self.temp.as_file()
    }

    /// Syncs the file and renames it to its target, replacing an earlier output of the same
    /// name as Qubes' converter does.
    pub fn commit(self) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let file = self.temp.as_file();
        // Temporary files are created 0600; an output is an ordinary user file.
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.sync_all()?;
        self.temp.persist(&self.target).map_err(|e| e.error)?;
        Ok(self.target)
    }
}

/// Moves `original` into `archive` (created if needed) without overwriting anything there, and
/// returns its new path. Across filesystems it copies, syncs, then removes the original.
pub fn archive_original(original: &Path, archive: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(archive)?;
    let name = original
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "input has no file name"))?;
    let stem = Path::new(name)
        .file_stem()
        .unwrap_or(name)
        .to_string_lossy()
        .into_owned();
    let ext = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().into_owned());

    for n in 0..=MAX_ARCHIVE_SUFFIX {
        let candidate = if n == 0 {
            archive.join(name)
        } else {
            match &ext {
                Some(ext) => archive.join(format!("{stem}.{n}.{ext}")),
                None => archive.join(format!("{stem}.{n}")),
            }
        };
        match renameat_with(CWD, original, CWD, &candidate, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(candidate),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(rustix::io::Errno::XDEV) => match copy_no_clobber(original, &candidate) {
                Ok(()) => {
                    fs::remove_file(original)?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            },
            // Filesystems without RENAME_NOREPLACE: check, then rename. The window between the
            // two is the only place a racing writer could be overwritten.
            Err(rustix::io::Errno::INVAL) => {
                if candidate.exists() {
                    continue;
                }
                fs::rename(original, &candidate)?;
                return Ok(candidate);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name left in the archive",
    ))
}

/// What happens to an original once its trusted copy is in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Move it into this folder (never overwriting).
    Archive(PathBuf),
    /// Remove it (`--in-place`).
    Remove,
    /// Leave it where it is.
    Keep,
}

/// Applies `disposition` to `original`; returns where it went when it moved.
pub fn dispose_original(original: &Path, disposition: &Disposition) -> io::Result<Option<PathBuf>> {
    match disposition {
        Disposition::Archive(dir) => archive_original(original, dir).map(Some),
        Disposition::Remove => fs::remove_file(original).map(|()| None),
        Disposition::Keep => Ok(None),
    }
}

fn copy_no_clobber(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    let result = io::copy(&mut src, &mut dst).and_then(|_| dst.sync_all());
    if result.is_err() {
        let _ = fs::remove_file(to);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn trusted_name_replaces_the_last_extension() {
        assert_eq!(
            trusted_name(Path::new("a/report.pdf"), "pdf"),
            Path::new("a/report.trusted.pdf")
        );
        assert_eq!(
            trusted_name(Path::new("report.PDF"), "pdf"),
            Path::new("report.trusted.pdf")
        );
        assert_eq!(
            trusted_name(Path::new("noext"), "pdf"),
            Path::new("noext.trusted.pdf")
        );
        assert_eq!(
            trusted_name(Path::new("a.b.jpg"), "png"),
            Path::new("a.b.trusted.png")
        );
    }

    #[test]
    fn uncommitted_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.trusted.pdf");
        {
            let mut p = PendingOutput::create(&target).unwrap();
            p.temp.write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn committed_output_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.trusted.pdf");
        let mut p = PendingOutput::create(&target).unwrap();
        p.temp.write_all(b"whole").unwrap();
        p.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn archive_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        for content in [&b"first"[..], b"second", b"third"] {
            let original = dir.path().join("doc.pdf");
            fs::write(&original, content).unwrap();
            archive_original(&original, &archive).unwrap();
            assert!(!original.exists());
        }
        assert_eq!(fs::read(archive.join("doc.pdf")).unwrap(), b"first");
        assert_eq!(fs::read(archive.join("doc.1.pdf")).unwrap(), b"second");
        assert_eq!(fs::read(archive.join("doc.2.pdf")).unwrap(), b"third");
    }
}
