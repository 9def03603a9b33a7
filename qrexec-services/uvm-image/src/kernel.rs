//! Where `kernel/build.sh` leaves the uvm kernel, and how to find it.
//!
//! The script caches each build under `$UVM_KERNEL_CACHE/out/<key>/` (key: sha256 of the
//! fragment, the source tarball and the script) and points `$UVM_KERNEL_CACHE/current` at the
//! latest one. This module only reads that folder; it never builds.

use std::fs;
use std::path::{Path, PathBuf};

/// Environment variable overriding [`DEFAULT_CACHE`] (shared with `kernel/build.sh`).
pub const CACHE_ENV: &str = "UVM_KERNEL_CACHE";

/// The kernel cache when [`CACHE_ENV`] is unset.
pub const DEFAULT_CACHE: &str = "/var/cache/trusted-converters/kernel";

/// The build script, relative to this crate's folder.
pub const BUILD_SCRIPT: &str = "kernel/build.sh";

/// A cached kernel that is missing or incomplete.
#[derive(Debug, thiserror::Error)]
#[error("no uvm kernel in {dir}: run qrexec-services/uvm-image/kernel/build.sh (about 10 minutes)")]
pub struct KernelError {
    /// The folder looked at.
    pub dir: PathBuf,
}

/// A built kernel in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedKernel {
    /// The uncompressed ELF kernel, booted by QEMU through its PVH entry.
    pub vmlinux: PathBuf,
    /// The compressed kernel, for Xen (`vmlinuz` in dom0) and bootloaders.
    pub bz_image: PathBuf,
    /// The cache key build.sh computed (sha256 of its inputs).
    pub key: String,
}

/// The cache folder: `cache` if given, else `$UVM_KERNEL_CACHE`, else [`DEFAULT_CACHE`].
pub fn cache_dir(cache: Option<&Path>) -> PathBuf {
    match cache {
        Some(dir) => dir.to_path_buf(),
        None => std::env::var_os(CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE)),
    }
}

/// The kernel `current` points at in `cache`.
///
/// # Errors
/// [`KernelError`] when any of the three files is missing.
pub fn find(cache: &Path) -> Result<CachedKernel, KernelError> {
    let dir = cache.join("current");
    let missing = || KernelError { dir: dir.clone() };
    let vmlinux = dir.join("vmlinux");
    let bz_image = dir.join("bzImage");
    if !vmlinux.is_file() || !bz_image.is_file() {
        return Err(missing());
    }
    let key = fs::read_to_string(dir.join("key")).map_err(|_| missing())?;

    Ok(CachedKernel {
        vmlinux,
        bz_image,
        key: key.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_cache_tells_how_to_build() {
        let dir = tempfile::tempdir().unwrap();
        let err = find(dir.path()).unwrap_err();
        assert!(err.to_string().contains("kernel/build.sh"), "{err}");
    }

    #[test]
    fn complete_cache_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out/abc");
        fs::create_dir_all(&out).unwrap();
        for f in ["vmlinux", "bzImage"] {
            fs::write(out.join(f), b"k").unwrap();
        }
        fs::write(out.join("key"), "abc\n").unwrap();
        std::os::unix::fs::symlink("out/abc", dir.path().join("current")).unwrap();
        let k = find(dir.path()).unwrap();
        assert_eq!(k.key, "abc");
        assert!(k.vmlinux.ends_with("current/vmlinux"));
    }
}
