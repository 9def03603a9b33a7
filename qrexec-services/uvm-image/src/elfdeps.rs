//! The shared libraries a program needs: its ELF interpreter and the closure of DT_NEEDED.
//!
//! A dynamically linked program names its loader in PT_INTERP and its libraries in DT_NEEDED
//! entries; each library names its own. This module follows those names through the standard
//! x86-64 library folders (and each object's DT_RUNPATH/DT_RPATH, `$ORIGIN` expanded), the way
//! the loader would, and reports every file with the path it must have inside the uvm.
//!
//! Libraries are placed at `/lib/x86_64-linux-gnu/NAME` in the image, a folder Debian's loader
//! always searches, whichever host folder they came from; the interpreter goes to the exact
//! path PT_INTERP names.
//!
//! # Limitations
//! - `dlopen`ed libraries are invisible to ELF headers: name them as extra roots
//!   (PDFium for pdf-uvm).
//! - DT_NEEDED names with a `/` and `$LIB`/`$PLATFORM` in run paths are refused or ignored.
//! - Only x86-64 ELF objects are accepted.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use goblin::elf::header::EM_X86_64;
use goblin::elf::Elf;

/// Folders searched for DT_NEEDED names, in order, after an object's own run paths.
pub const STANDARD_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/local/lib",
    "/lib",
    "/usr/lib",
];

/// Where every library goes inside the image.
pub const IMAGE_LIB_DIR: &str = "/lib/x86_64-linux-gnu";

/// Largest ELF file read (PDFium is about 8 MB).
pub const MAX_ELF_BYTES: u64 = 256 << 20;

/// Most libraries in one closure; a real program needs a handful.
pub const MAX_LIBRARIES: usize = 256;

/// A program or library whose dependencies cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_ELF_BYTES`].
    #[error("{path} exceeds {MAX_ELF_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file is not a well-formed ELF object.
    #[error("{path} is not a valid ELF object: {reason}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// goblin's complaint.
        reason: String,
    },
    /// An ELF object for another machine than x86-64.
    #[error("{path} is not an x86-64 object (machine {machine})")]
    WrongMachine {
        /// The file.
        path: PathBuf,
        /// Its e_machine.
        machine: u16,
    },
    /// A DT_NEEDED name was found in none of the searched folders.
    #[error("{name}, needed by {needed_by}, is in none of {searched}")]
    NotFound {
        /// The library name.
        name: String,
        /// The object that needs it.
        needed_by: PathBuf,
        /// The folders searched.
        searched: String,
    },
    /// A DT_NEEDED name holds a `/` or is empty.
    #[error("{needed_by} needs {name:?}, which is not a plain file name")]
    UnsupportedName {
        /// The name.
        name: String,
        /// The object that needs it.
        needed_by: PathBuf,
    },
    /// The closure grew past [`MAX_LIBRARIES`].
    #[error("more than {MAX_LIBRARIES} libraries needed")]
    TooManyLibraries,
}

/// A file to place in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Where it is read from on the build host.
    pub source: PathBuf,
    /// Its absolute path inside the image.
    pub dest: String,
}

/// The files a program needs besides itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dependencies {
    /// The ELF interpreter (`/lib64/ld-linux-x86-64.so.2`), `None` for a static program.
    pub interpreter: Option<ImageFile>,
    /// Every library in the closure, sorted by name, extras included.
    pub libraries: Vec<ImageFile>,
}

impl Dependencies {
    /// Interpreter then libraries.
    pub fn files(&self) -> impl Iterator<Item = &ImageFile> {
        self.interpreter.iter().chain(self.libraries.iter())
    }
}

/// An ELF object's dependency fields.
struct Needs {
    interpreter: Option<String>,
    needed: Vec<String>,
    run_paths: Vec<PathBuf>,
}

/// Resolves `program`'s interpreter and library closure.
///
/// `extra` are libraries loaded with `dlopen`, given as (host path, image path); their own
/// DT_NEEDED entries are followed too. `lib_dirs` are the folders searched after each object's
/// run paths, normally [`STANDARD_LIB_DIRS`].
///
/// # Errors
/// See [`ElfError`].
pub fn resolve(
    program: &Path,
    extra: &[ImageFile],
    lib_dirs: &[PathBuf],
) -> Result<Dependencies, ElfError> {
    let root = read_needs(program)?;
    let interpreter = root.interpreter.as_ref().map(|interp| ImageFile {
        source: PathBuf::from(interp),
        dest: interp.clone(),
    });

    // Keyed by library name: the loader loads one object per soname.
    let mut found: BTreeMap<String, ImageFile> = BTreeMap::new();
    let mut queue: VecDeque<(PathBuf, Needs)> = VecDeque::new();
    queue.push_back((program.to_path_buf(), root));
    for file in extra {
        let name = file_name(&file.source);
        found.insert(name, file.clone());
        queue.push_back((file.source.clone(), read_needs(&file.source)?));
    }

    while let Some((path, needs)) = queue.pop_front() {
        for name in needs.needed {
            if found.contains_key(&name) || is_interpreter(&name, &interpreter) {
                continue;
            }
            if name.is_empty() || name.contains('/') {
                return Err(ElfError::UnsupportedName {
                    name,
                    needed_by: path,
                });
            }
            let dirs: Vec<PathBuf> = needs
                .run_paths
                .iter()
                .cloned()
                .chain(lib_dirs.iter().cloned())
                .collect();
            let Some(source) = dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file()) else {
                return Err(ElfError::NotFound {
                    name,
                    needed_by: path,
                    searched: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":"),
                });
            };
            if found.len() >= MAX_LIBRARIES {
                return Err(ElfError::TooManyLibraries);
            }
            let lib_needs = read_needs(&source)?;
            found.insert(
                name.clone(),
                ImageFile {
                    source: source.clone(),
                    dest: format!("{IMAGE_LIB_DIR}/{name}"),
                },
            );
            queue.push_back((source, lib_needs));
        }
    }

    Ok(Dependencies {
        interpreter,
        libraries: found.into_values().collect(),
    })
}

/// Whether a DT_NEEDED name is the interpreter itself (glibc's libc needs `ld-linux`).
fn is_interpreter(name: &str, interpreter: &Option<ImageFile>) -> bool {
    interpreter
        .as_ref()
        .is_some_and(|i| Path::new(&i.dest).file_name() == Some(std::ffi::OsStr::new(name)))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads a whole ELF file under [`MAX_ELF_BYTES`].
pub fn read_limited(path: &Path) -> Result<Vec<u8>, ElfError> {
    let read_err = |source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_ELF_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_ELF_BYTES {
        return Err(ElfError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// Reads PT_INTERP, DT_NEEDED and the run paths of one object.
fn read_needs(path: &Path) -> Result<Needs, ElfError> {
    let bytes = read_limited(path)?;
    let elf = Elf::parse(&bytes).map_err(|e| ElfError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if elf.header.e_machine != EM_X86_64 {
        return Err(ElfError::WrongMachine {
            path: path.to_path_buf(),
            machine: elf.header.e_machine,
        });
    }

    let origin = path.parent().unwrap_or(Path::new("/"));
    let run_paths = elf
        .runpaths
        .iter()
        .chain(elf.rpaths.iter())
        .flat_map(|list| list.split(':'))
        .filter(|p| !p.is_empty() && !p.contains("$LIB") && !p.contains("$PLATFORM"))
        .map(|p| {
            let expanded = p
                .replace("${ORIGIN}", &origin.to_string_lossy())
                .replace("$ORIGIN", &origin.to_string_lossy());
            PathBuf::from(expanded)
        })
        .collect();

    Ok(Needs {
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        run_paths,
    })
}

/// Whether `path` is a dynamically linked program (it has PT_INTERP).
///
/// # Errors
/// As [`resolve`] for an unreadable or non-ELF file.
pub fn is_dynamic(path: &Path) -> Result<bool, ElfError> {
    Ok(read_needs(path)?.interpreter.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard() -> Vec<PathBuf> {
        STANDARD_LIB_DIRS.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn ls_needs_the_loader_and_libc() {
        let deps = resolve(Path::new("/bin/ls"), &[], &standard()).unwrap();
        let interp = deps.interpreter.clone().unwrap();
        assert_eq!(interp.dest, "/lib64/ld-linux-x86-64.so.2");
        let dests: Vec<&str> = deps.libraries.iter().map(|f| f.dest.as_str()).collect();
        assert!(
            dests.contains(&"/lib/x86_64-linux-gnu/libc.so.6"),
            "{dests:?}"
        );
        // libselinux is ls's own DT_NEEDED; libpcre2 comes only through libselinux.
        assert!(
            dests.contains(&"/lib/x86_64-linux-gnu/libselinux.so.1"),
            "{dests:?}"
        );
        assert!(
            dests.contains(&"/lib/x86_64-linux-gnu/libpcre2-8.so.0"),
            "{dests:?}"
        );
        // libc needs ld-linux-x86-64.so.2 by name: that is the interpreter, not a second copy.
        assert!(!dests.iter().any(|d| d.ends_with("ld-linux-x86-64.so.2")));
        assert!(deps.libraries.iter().all(|f| f.source.is_file()));
    }

    #[test]
    fn extra_library_brings_its_own_needs() {
        // libz is needed by nothing in this call except the extra root's closure.
        let extra = ImageFile {
            source: PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
            dest: "/libz.so.1".into(),
        };
        let deps = resolve(
            Path::new("/bin/true"),
            std::slice::from_ref(&extra),
            &standard(),
        )
        .unwrap();
        assert!(deps.libraries.contains(&extra));
        assert!(deps
            .libraries
            .iter()
            .any(|f| f.dest == "/lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn missing_library_names_the_searched_folders() {
        let err = resolve(Path::new("/bin/ls"), &[], &[PathBuf::from("/nonexistent")]);
        match err {
            Err(ElfError::NotFound {
                searched,
                needed_by,
                ..
            }) => {
                assert_eq!(searched, "/nonexistent");
                assert_eq!(needed_by, Path::new("/bin/ls"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_text_file_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        fs::write(&path, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            resolve(&path, &[], &standard()),
            Err(ElfError::NotElf { .. })
        ));
    }
}
