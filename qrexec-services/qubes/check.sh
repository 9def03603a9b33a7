#!/bin/bash
# check.sh: checks the Qubes installation and desktop files of qrexec-services/qubes.
#
# Usage: qrexec-services/qubes/check.sh   (from anywhere; CI runs it after cargo build)
#
# Runs shellcheck on every shell script here, compiles every Python file, validates the
# Dolphin menus (desktop-file-validate) and the Thunar snippet (xmllint), runs the unit tests
# of tests/ (policy format, dom0 scripts against stand-in qvm-* tools, the launcher, the
# file-manager actions), and generates the man pages and renders them without warnings.
# Needs: shellcheck, desktop-file-utils, libxml2-utils, help2man, groff/man-db, python3.
# Tests that need the built converters (target/debug, or $TRUSTED_CONVERTERS_BIN_DIR) are
# skipped when those are missing, and reported as skipped.
# Ends with one line "N passed, N failed"; the exit status is 1 when anything failed.
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
BIN_DIR=${TRUSTED_CONVERTERS_BIN_DIR:-$HERE/../../target/debug}
export PYTHONDONTWRITEBYTECODE=1
cd -- "$HERE" || exit 1

passed=0
failed=0
skipped=0

pass() {
    passed=$((passed + 1))
    echo "ok      $*"
}

fail() {
    failed=$((failed + 1))
    echo "FAILED  $*"
}

skip() {
    skipped=$((skipped + 1))
    echo "skipped $*"
}

need() {
    command -v "$1" >/dev/null || {
        fail "$1 is not installed"
        return 1
    }
}

# Files by their first line, so scripts without an extension are found too.
scripts_with() {
    local pattern=$1 f
    while IFS= read -r -d '' f; do
        if head -n 1 -- "$f" | grep -Eq "$pattern"; then
            printf '%s\n' "$f"
        fi
    done < <(find . -type f ! -path '*/__pycache__/*' -print0 | sort -z)
}

# Shell scripts.
if need shellcheck; then
    while IFS= read -r f; do
        if shellcheck --external-sources -- "$f"; then pass "shellcheck $f"; else fail "shellcheck $f"; fi
    done < <(scripts_with '^#!.*(/bash|/sh)( |$)')
fi

# Python: every file compiles (without writing byte code next to it).
while IFS= read -r f; do
    if python3 -c 'import sys; compile(open(sys.argv[1], "rb").read(), sys.argv[1], "exec")' "$f"; then
        pass "python compiles $f"
    else
        fail "python compiles $f"
    fi
done < <({ scripts_with '^#!.*python3'; find . -name '*.py' ! -path '*/__pycache__/*'; } | sort -u)

# Dolphin menus. desktop-file-validate knows only the freedesktop types, and KDE service menus
# (Type=Service) need MimeType and Actions, which it reports as valid only for Application;
# those two messages are expected, anything else fails.
if need desktop-file-validate; then
    for f in dolphin/*.desktop; do
        out=$(desktop-file-validate "$f" 2>&1 |
            grep -Ev 'key "(MimeType|Actions)" is present in group "Desktop Entry", but the type is "Service" while this key is only valid for type "Application"')
        if [[ -z $out ]]; then pass "desktop-file-validate $f"; else
            echo "$out"
            fail "desktop-file-validate $f"
        fi
    done
fi

# Thunar snippet.
if need xmllint; then
    if xmllint --noout thunar/uca-snippet.xml; then pass "xmllint thunar/uca-snippet.xml"; else fail "xmllint thunar/uca-snippet.xml"; fi
fi

# Unit tests: each test counts once, from unittest's own summary.
log=$(mktemp)
trap 'rm -f -- "$log"; [[ -n ${mandir-} ]] && rm -rf -- "$mandir"' EXIT
TRUSTED_CONVERTERS_BIN_DIR=$BIN_DIR python3 -m unittest discover -s tests -v >"$log" 2>&1
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$log")
if [[ -z $ran ]]; then
    cat -- "$log"
    fail "python3 -m unittest did not run"
else
    # The last line is "OK", "OK (skipped=S)" or "FAILED (failures=F, errors=E, skipped=S)".
    result=$(tail -n 1 "$log")
    count() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$result"; }
    bad=$(($(count failures || true) + $(count errors || true) + 0))
    unit_skipped=$(($(count skipped || true) + 0))
    grep -E '^(FAIL|ERROR): ' "$log" | while IFS= read -r line; do echo "FAILED  $line"; done
    grep -E ' \.\.\. skipped' "$log" | while IFS= read -r line; do echo "skipped ${line%% ... *}"; done
    ((bad)) && grep -E -A25 '^(FAIL|ERROR): ' "$log" | head -n 150
    echo "unit tests: $ran run, $bad failed, $unit_skipped skipped"
    passed=$((passed + ran - bad - unit_skipped))
    failed=$((failed + bad))
    skipped=$((skipped + unit_skipped))
fi

# Man pages from the built programs' --help.
if [[ -x $BIN_DIR/qvm-convert-pdf && -x $BIN_DIR/qvm-convert-img ]]; then
    if need help2man && need groff; then
        mandir=$(mktemp -d)
        if man/generate.sh "$mandir" "$BIN_DIR"; then
            for page in qvm-convert-pdf qvm-convert-img; do
                warnings=$(groff -man -Tutf8 -ww -z "$mandir/$page.1" 2>&1)
                if [[ -z $warnings ]] && MANWIDTH=80 man -l "$mandir/$page.1" 2>/dev/null |
                    grep -q "^NAME"; then
                    pass "man page $page.1 renders"
                else
                    echo "$warnings"
                    fail "man page $page.1 renders"
                fi
            done
        else
            fail "man/generate.sh"
        fi
    fi
else
    skip "man pages (no built programs in $BIN_DIR)"
fi

if ((skipped)); then
    echo "$skipped skipped"
fi
echo "$passed passed, $failed failed"
((failed == 0))
