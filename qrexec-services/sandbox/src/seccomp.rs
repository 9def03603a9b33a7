//! The seccomp allowlist: a JSON data file in seccompiler's format, compiled to BPF at run time.
//!
//! The file holds two filters, both installed:
//!
//! | filter | default | on match |
//! |---|---|---|
//! | `observable_denials` | allow | `EPERM`: opening files, sockets, running programs |
//! | `allowlist` | kill the process | allow: what rendering needs, and the calls above |
//!
//! The kernel runs every installed filter and takes the strictest answer, so a call missing from
//! `allowlist` kills the process, and a call in both fails with `EPERM`. The `EPERM` calls are
//! the ones an attacker tries first; failing them visibly lets tests (and the program's own
//! error message) show the refusal instead of a silent kill.
//!
//! The set was found with `strace -f` on `pdf-uvm` rendering the corpus after PDFium was bound,
//! and is proven by the `locked_render` example, which renders a real PDF under it.

use std::collections::HashMap;

use seccompiler::{BpfProgram, TargetArch};

use crate::SandboxError;

/// The allowlist, as shipped.
pub const ALLOWLIST_JSON: &str = include_str!("../seccomp/x86_64.json");

/// The filters of [`ALLOWLIST_JSON`], in the order they are installed. The one that kills comes
/// last, because it forbids the `seccomp` call needed to install anything after it.
const FILTERS: [&str; 2] = ["observable_denials", "allowlist"];

/// Compiles [`ALLOWLIST_JSON`] for this machine into the BPF programs to install, in order.
///
/// # Errors
/// [`SandboxError::AllowlistInvalid`] if the JSON does not compile,
/// [`SandboxError::AllowlistFilterMissing`] if it lacks a filter this crate installs.
pub fn compile_allowlist() -> Result<Vec<(&'static str, BpfProgram)>, SandboxError> {
    let mut map: HashMap<String, BpfProgram> =
        seccompiler::compile_from_json(ALLOWLIST_JSON.as_bytes(), TargetArch::x86_64)
            .map_err(|e| SandboxError::AllowlistInvalid(e.to_string()))?;
    FILTERS
        .iter()
        .map(|&name| {
            map.remove(name)
                .map(|program| (name, program))
                .ok_or(SandboxError::AllowlistFilterMissing(name))
        })
        .collect()
}

/// Installs the allowlist on the calling thread; it is inherited by nothing, since the
/// allowlist forbids creating threads and processes.
pub(crate) fn install() -> Result<(), SandboxError> {
    for (name, program) in compile_allowlist()? {
        seccompiler::apply_filter(&program).map_err(|e| SandboxError::SeccompRefused {
            name,
            reason: e.to_string(),
        })?;
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_allowlist_compiles_with_both_filters() {
        let filters = compile_allowlist().unwrap();
        let names: Vec<_> = filters.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, FILTERS);
        assert!(filters.iter().all(|(_, p)| !p.is_empty()));
    }
}
