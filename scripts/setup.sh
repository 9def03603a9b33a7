#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine (run as root):
# Debian packages for the tests and tools, then the pinned PDFium library.
#
# Idempotent: packages already present are not reinstalled, PDFium is not downloaded again.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# qpdf: builds encrypted test PDFs. time: peak-memory figures in tests and benchmarks.
# The shellcheck package checks the shell scripts. poppler-utils: pdftoppm for looking at outputs.
# desktop-file-utils, libxml2-utils, help2man, groff-base, man-db, python3: check the Qubes
# desktop actions and policy, and generate the man pages (qrexec-services/qubes/check.sh).
packages=(qpdf time shellcheck poppler-utils desktop-file-utils libxml2-utils help2man
    groff-base man-db python3)

"$here/apt-install.sh" setup "${packages[@]}"

"$here/setup-pdfium.sh"
