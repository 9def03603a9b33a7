#!/usr/bin/env bash
# Sets up a fresh Debian machine and converts the demo PDF: the README's first command.
# Installs packages and PDFium (with sudo when not root), builds the release programs, and
# converts samples/demo.pdf into out/demo.trusted.pdf.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

if [ "$(id -u)" -eq 0 ]; then
    "$here/setup.sh"
else
    sudo "$here/setup.sh"
fi

cargo build --release --bins -p qrexec-services -p pdf-uvm -p image-uvm

mkdir -p out
cp samples/demo.pdf out/demo.pdf
# --in-place: the copy in out/ is the original here; samples/demo.pdf stays as it is.
target/release/qvm-convert-pdf --transport local --in-place --json out/demo.pdf
target/release/qvm-convert-pdf --check out/demo.trusted.pdf
echo "quickstart: out/demo.trusted.pdf holds only page images"
