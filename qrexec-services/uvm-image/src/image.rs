//! A uvm image folder: kernel, initramfs holding the program as `/init`, and a manifest.
//!
//! | file | what |
//! |---|---|
//! | `vmlinux` | the kernel QEMU boots through its PVH entry |
//! | `bzImage` | the same kernel compressed, for Xen (`vmlinuz` in dom0) |
//! | `initramfs.gz` | `/init`, `/dev/console`, `/proc`, and the program's loader and libraries |
//! | `manifest.json` | size and sha256 of each of the three, the kernel's cache key, the entries |

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::elfdeps::{self, Dependencies, ElfError, ImageFile, STANDARD_LIB_DIRS};
use crate::initramfs::{InitramfsBuilder, InitramfsError};
use crate::kernel::CachedKernel;

/// The uncompressed kernel in an image folder.
pub const VMLINUX_FILE: &str = "vmlinux";
/// The compressed kernel in an image folder.
pub const BZIMAGE_FILE: &str = "bzImage";
/// The initramfs in an image folder.
pub const INITRAMFS_FILE: &str = "initramfs.gz";
/// The manifest in an image folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The console device the kernel opens for `/init` before devtmpfs is mounted.
const CONSOLE: (u32, u32) = (5, 1);

/// An image that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The program's dependencies cannot be resolved.
    #[error("cannot resolve the program's libraries")]
    Dependencies(#[from] ElfError),
    /// The initramfs refused an entry.
    #[error("cannot build the initramfs")]
    Initramfs(#[from] InitramfsError),
    /// `strip` failed or is missing.
    #[error("cannot strip {path}: {reason}")]
    Strip {
        /// The program.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file of the image folder could not be read or written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What goes into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The uvm program, stored as `/init`.
    pub program: PathBuf,
    /// Libraries the program `dlopen`s, with their path in the image.
    pub extra_libraries: Vec<ImageFile>,
    /// Folders searched for DT_NEEDED names.
    pub lib_dirs: Vec<PathBuf>,
    /// Store `/init` without debug sections (binutils' `strip --strip-debug` on a copy): the
    /// guest unpacks every byte of the initramfs, and under TCG an 11 MB release binary with
    /// line tables boots about 0.5 s slower than its 1.3 MB stripped copy.
    pub strip_program: bool,
}

impl ImageSpec {
    /// `program` as `/init`, libraries from [`STANDARD_LIB_DIRS`].
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ImageSpec {
            program: program.into(),
            extra_libraries: Vec::new(),
            lib_dirs: STANDARD_LIB_DIRS.iter().map(PathBuf::from).collect(),
            strip_program: true,
        }
    }

    /// Adds a `dlopen`ed library read from `source`, stored at `dest` in the image.
    pub fn with_extra_library(mut self, source: impl Into<PathBuf>, dest: &str) -> Self {
        self.extra_libraries.push(ImageFile {
            source: source.into(),
            dest: dest.to_owned(),
        });
        self
    }
}

/// Builds the initramfs for `spec` and returns it with the resolved dependencies.
///
/// # Errors
/// [`ImageError::Dependencies`], [`ImageError::Initramfs`] or [`ImageError::Write`] (read
/// failures of the program itself).
pub fn build_initramfs(spec: &ImageSpec) -> Result<(InitramfsBuilder, Dependencies), ImageError> {
    let deps = if elfdeps::is_dynamic(&spec.program)? || !spec.extra_libraries.is_empty() {
        elfdeps::resolve(&spec.program, &spec.extra_libraries, &spec.lib_dirs)?
    } else {
        Dependencies::default()
    };

    let mut b = InitramfsBuilder::new();
    let program = if spec.strip_program {
        stripped(&spec.program)?
    } else {
        elfdeps::read_limited(&spec.program)?
    };
    b.add_file("/init", program, 0o755)?;
    b.add_dir("/dev")?;
    b.add_char_device("/dev/console", CONSOLE.0, CONSOLE.1, 0o600)?;
    b.add_dir("/proc")?;
    for file in deps.files() {
        b.add_file(&file.dest, elfdeps::read_limited(&file.source)?, 0o755)?;
    }

    Ok((b, deps))
}

/// The bytes of `program` without debug sections, made by binutils' `strip` on a copy.
fn stripped(program: &Path) -> Result<Vec<u8>, ImageError> {
    let strip_err = |reason: String| ImageError::Strip {
        path: program.to_path_buf(),
        reason,
    };
    let dir = tempfile::tempdir().map_err(|e| strip_err(e.to_string()))?;
    let out = dir.path().join("init");
    let result = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(program)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| strip_err(format!("cannot run strip (install binutils): {e}")))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        return Err(strip_err(
            stderr.lines().next().unwrap_or("failed").to_owned(),
        ));
    }
    Ok(elfdeps::read_limited(&out)?)
}

/// One file of an image folder in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name inside the folder.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Lower-case hex sha256 of its content.
    pub sha256: String,
}

/// `manifest.json` of an image folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The program stored as `/init`, as given on the build host.
    pub program: String,
    /// The kernel's cache key (see `kernel/build.sh`).
    pub kernel_key: String,
    /// vmlinux, bzImage and initramfs.gz.
    pub files: Vec<ManifestFile>,
    /// The initramfs entries, one `uvm-image list` line each.
    pub initramfs_entries: Vec<String>,
}

/// Writes `vmlinux`, `bzImage`, `initramfs.gz` and `manifest.json` into `out_dir`.
///
/// # Errors
/// See [`ImageError`].
pub fn write_image(
    spec: &ImageSpec,
    kernel: &CachedKernel,
    out_dir: &Path,
) -> Result<Manifest, ImageError> {
    let (initramfs, _) = build_initramfs(spec)?;
    let gz = initramfs.to_gzip()?;

    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Write { path, source }
    };
    fs::create_dir_all(out_dir).map_err(write_err(out_dir))?;
    let mut files = Vec::new();
    for (name, source) in [
        (VMLINUX_FILE, &kernel.vmlinux),
        (BZIMAGE_FILE, &kernel.bz_image),
    ] {
        let bytes = fs::read(source).map_err(write_err(source))?;
        let dest = out_dir.join(name);
        fs::write(&dest, &bytes).map_err(write_err(&dest))?;
        files.push(manifest_file(name, &bytes));
    }
    let dest = out_dir.join(INITRAMFS_FILE);
    fs::write(&dest, &gz).map_err(write_err(&dest))?;
    files.push(manifest_file(INITRAMFS_FILE, &gz));

    let manifest = Manifest {
        program: spec.program.display().to_string(),
        kernel_key: kernel.key.clone(),
        files,
        initramfs_entries: initramfs.entries().iter().map(|e| e.line()).collect(),
    };
    let dest = out_dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Write {
        path: dest.clone(),
        source: e.into(),
    })?;
    fs::write(&dest, json).map_err(write_err(&dest))?;

    Ok(manifest)
}

fn manifest_file(name: &str, bytes: &[u8]) -> ManifestFile {
    ManifestFile {
        name: name.to_owned(),
        bytes: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A complete static x86-64 program of 132 bytes: `exit(0)`. It has one PT_LOAD and no
    /// PT_INTERP or PT_DYNAMIC, as a statically linked program.
    pub(crate) fn tiny_static_elf() -> Vec<u8> {
        let mut elf = Vec::new();
        // ELF header (64 bytes).
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes()); // version
        elf.extend_from_slice(&(0x400000u64 + 120).to_le_bytes()); // entry
        elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
        elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
        elf.extend_from_slice(&0u32.to_le_bytes()); // flags
        elf.extend_from_slice(&64u16.to_le_bytes()); // ehsize
        elf.extend_from_slice(&56u16.to_le_bytes()); // phentsize
        elf.extend_from_slice(&1u16.to_le_bytes()); // phnum
        elf.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
                                        // One PT_LOAD, R+X, the whole file at 0x400000 (56 bytes).
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&5u32.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes());
        elf.extend_from_slice(&0x400000u64.to_le_bytes());
        elf.extend_from_slice(&0x400000u64.to_le_bytes());
        elf.extend_from_slice(&132u64.to_le_bytes());
        elf.extend_from_slice(&132u64.to_le_bytes());
        elf.extend_from_slice(&0x1000u64.to_le_bytes());
        // mov eax, 60; xor edi, edi; syscall
        elf.extend_from_slice(&[0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05, 0x90, 0x90, 0x90]);
        elf
    }

    fn static_program(dir: &Path) -> PathBuf {
        let path = dir.join("tiny");
        fs::write(&path, tiny_static_elf()).unwrap();
        path
    }

    #[test]
    fn static_program_image_holds_exactly_init_console_and_proc() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            strip_program: false,
            ..ImageSpec::new(static_program(dir.path()))
        };
        let (b, deps) = build_initramfs(&spec).unwrap();
        assert_eq!(deps, Dependencies::default());
        let lines: Vec<String> = b.entries().iter().map(|e| e.line()).collect();
        assert_eq!(
            lines,
            [
                "d 0755          0 /dev",
                "c 0600        5,1 /dev/console",
                "- 0755        132 /init",
                "d 0755          0 /proc",
            ]
        );
    }

    #[test]
    fn two_image_builds_are_byte_identical() {
        let spec = ImageSpec::new("/bin/true");
        let first = build_initramfs(&spec).unwrap().0.to_gzip().unwrap();
        let second = build_initramfs(&spec).unwrap().0.to_gzip().unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn stripped_program_loses_its_debug_sections() {
        let exe = std::env::current_exe().unwrap();
        let (b, _) = build_initramfs(&ImageSpec::new(&exe)).unwrap();
        let init = b.entries().into_iter().find(|e| e.name == "init").unwrap();
        let original = fs::metadata(&exe).unwrap().len();
        assert!(
            u64::from(init.size) < original / 2,
            "{} of {original}",
            init.size
        );
    }

    #[test]
    fn dynamic_program_brings_loader_and_libc() {
        let (b, _) = build_initramfs(&ImageSpec::new("/bin/true")).unwrap();
        let names: Vec<String> = b.entries().into_iter().map(|e| e.name).collect();
        assert!(
            names.contains(&"lib64/ld-linux-x86-64.so.2".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"lib/x86_64-linux-gnu/libc.so.6".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn image_folder_has_kernel_initramfs_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = dir.path().join("k");
        fs::create_dir(&kdir).unwrap();
        fs::write(kdir.join("vmlinux"), b"vm").unwrap();
        fs::write(kdir.join("bzImage"), b"bz").unwrap();
        let kernel = CachedKernel {
            vmlinux: kdir.join("vmlinux"),
            bz_image: kdir.join("bzImage"),
            key: "k1".into(),
        };
        let out = dir.path().join("img");
        let spec = ImageSpec {
            strip_program: false,
            ..ImageSpec::new(static_program(dir.path()))
        };
        let m = write_image(&spec, &kernel, &out).unwrap();
        let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [VMLINUX_FILE, BZIMAGE_FILE, INITRAMFS_FILE]);
        assert_eq!(m.files[0].sha256, hex(&Sha256::digest(b"vm")));
        assert_eq!(m.files[0].sha256.len(), 64);
        let back: Manifest =
            serde_json::from_slice(&fs::read(out.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(fs::read(out.join(BZIMAGE_FILE)).unwrap(), b"bz");
    }
}
