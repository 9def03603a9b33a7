#!/usr/bin/env bash
# The project's test command: set up, build every program, check style, run every test.
# This is what the README names and what CI runs.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

# Packages, PDFium, and for the vm transport QEMU and the uvm kernel (cached by its hash).
for step in setup.sh setup-vm.sh; do
    if [ "$(id -u)" -eq 0 ]; then
        "$here/$step"
    else
        sudo --preserve-env=UVM_KERNEL_CACHE "$here/$step"
    fi
done

echo "test: formatting"
cargo fmt --all -- --check

echo "test: clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "test: docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Licences, banned crates and sources of every dependency (deny.toml). The pinned cargo-deny is
# built once with cargo; CI machines keep it in ~/.cargo/bin between runs.
echo "test: dependency policy"
cargo_deny_version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $cargo_deny_version"; then
    cargo install --locked "cargo-deny@$cargo_deny_version"
fi
cargo deny check --hide-inclusion-graph licenses bans sources

echo "test: shell scripts"
git ls-files -z '*.sh' .ci/run | xargs -0 shellcheck

# The integration tests run the workspace's programs, so build them all first.
echo "test: build"
cargo build --workspace --bins

# Every cargo test run's output is kept, so that the last line of this script can add up what
# all of them ran (CI reads a run's closing line; cargo's own last line is a doc-test crate's).
results=$(mktemp)
trap 'rm -f "$results"' EXIT

echo "test: tests"
cargo test --workspace 2>&1 | tee -a "$results"

# The tests that boot uvm images under QEMU (marked ignored: they need the kernel and QEMU that
# setup-vm.sh installs, and take minutes under TCG).
echo "test: uvm images under QEMU"
cargo test --workspace -- --ignored 2>&1 | tee -a "$results"

echo "test: Qubes installation files"
TRUSTED_CONVERTERS_BIN_DIR="${CARGO_TARGET_DIR:-target}/debug" qrexec-services/qubes/check.sh

# Every fuzz target, briefly, on its committed seed corpus; fuzz/run.sh SECONDS runs longer.
echo "test: fuzz"
fuzz/run.sh "${FUZZ_SECONDS:-10}"

# The closing line: every cargo test in this run, added up (the ignored ones ran in the second
# pass, so they are counted there and not as skipped).
awk '/^test result: /{p+=$4; f+=$6} END{printf "tests: %d passed, %d failed\n", p, f}' "$results"
