#!/bin/bash
# generate.sh: writes the man pages of qvm-convert-pdf and qvm-convert-img from their --help.
#
# Usage: man/generate.sh OUT_DIR [BIN_DIR]
#
# BIN_DIR holds the built programs (default: the workspace's target/debug). help2man turns
# each program's --help and --version into OUT_DIR/NAME.1, so the pages never drift from the
# programs' own help text. Check a page with: man -l OUT_DIR/qvm-convert-pdf.1
# Known shortcoming: help2man folds clap's "Possible values:" lists into one paragraph, so
# the values of --format and --transport read run together in the page.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: generate.sh OUT_DIR [BIN_DIR]}
BIN_DIR=${2:-$HERE/../../../target/debug}

command -v help2man >/dev/null || {
    echo "generate.sh: help2man is not installed (apt-get install help2man)" >&2
    exit 1
}
mkdir -p -- "$OUT"
# The page's date: the last commit's, so that a rebuild of the same sources gives the same
# pages (help2man honours SOURCE_DATE_EPOCH).
if [[ -z ${SOURCE_DATE_EPOCH-} ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$HERE" log -1 --format=%ct 2>/dev/null || date +%s)
    export SOURCE_DATE_EPOCH
fi

page() {
    local name=$1 summary=$2
    local program=$BIN_DIR/$name
    [[ -x $program ]] || {
        echo "generate.sh: no program $program (cargo build -p qrexec-services)" >&2
        exit 1
    }
    # --no-info: there is no Texinfo manual to point at.
    help2man --no-info --section=1 --name="$summary" \
        --source="trusted converters" --output="$OUT/$name.1" "$program"
}

page qvm-convert-pdf "convert untrusted PDFs into trusted ones in a disposable"
page qvm-convert-img "convert untrusted images into clean ones in a disposable"
