#!/usr/bin/env bash
# Installs the pinned PDFium shared library that pdf-uvm renders with.
#
# PDFium has no Debian package, and this workplace cannot download arbitrary release
# binaries, but PyPI is reachable: the pypdfium2 wheel ships a self-contained libpdfium.so
# (PDFium build 8149, needs only glibc). We fetch exactly one pinned wheel, check its
# sha256, take libpdfium.so out of it with python3's zipfile module (no unzip needed), check
# that file's sha256 too, and install it atomically.
#
# Idempotent: when the installed file already has the pinned hash, nothing is downloaded.
#
# Environment:
#   PDFIUM_PREFIX  install prefix; the library goes to $PDFIUM_PREFIX/lib/libpdfium.so
#                  (default /usr/local, so /usr/local/lib/libpdfium.so)
#   PDFIUM_CACHE   folder that keeps the downloaded wheel between runs (default: a
#                  temporary folder removed on exit)
#
# Run as root for the default prefix (it writes /usr/local/lib and runs ldconfig).

set -euo pipefail

readonly PYPDFIUM2_VERSION="5.15.2"
readonly WHEEL_PLATFORM="manylinux_2_17_x86_64"
readonly WHEEL_NAME="pypdfium2-${PYPDFIUM2_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
readonly WHEEL_SHA256="dc31aea5b0fb9fefc9b537a65f4113980b2c40798445736a7e6565bc85161e37"
readonly MEMBER="pypdfium2_raw/libpdfium.so"
readonly LIBRARY_SHA256="c76dc0f7839644bfa7c3e3107a6068df714e339c861bb7d4519907b821d427f9"

prefix="${PDFIUM_PREFIX:-/usr/local}"
lib_dir="${prefix}/lib"
target="${lib_dir}/libpdfium.so"

say() {
    printf 'setup-pdfium: %s\n' "$*"
}

die() {
    printf 'setup-pdfium: error: %s\n' "$*" >&2
    exit 1
}

sha256_of() {
    sha256sum -- "$1" | cut -d ' ' -f 1
}

# ldconfig refreshes the loader cache so that a plain dlopen("libpdfium.so") finds the new
# file; only root may write that cache, and it only matters for system folders.
refresh_loader_cache() {
    if [[ ${EUID} -eq 0 ]] && command -v ldconfig >/dev/null 2>&1; then
        ldconfig
        say "ran ldconfig"
    else
        say "skipped ldconfig (not root or not found)"
    fi
}

if [[ -f ${target} ]] && [[ "$(sha256_of "${target}")" == "${LIBRARY_SHA256}" ]]; then
    say "${target} already holds PDFium from pypdfium2 ${PYPDFIUM2_VERSION} (sha256 ${LIBRARY_SHA256}); nothing to download"
    refresh_loader_cache
    exit 0
fi

mkdir -p -- "${lib_dir}" || die "cannot create ${lib_dir} (run as root for the default prefix)"
[[ -w ${lib_dir} ]] || die "${lib_dir} is not writable (run as root for the default prefix)"

python3 -m pip --version >/dev/null 2>&1 ||
    die "python3 with pip is needed to download the wheel (apt-get install -y python3-pip)"

work_dir="$(mktemp -d)"
staged=""
cleanup() {
    rm -rf -- "${work_dir}"
    if [[ -n ${staged} ]]; then
        rm -f -- "${staged}"
    fi
}
trap cleanup EXIT

if [[ -n ${PDFIUM_CACHE:-} ]]; then
    mkdir -p -- "${PDFIUM_CACHE}"
    wheel_dir="${PDFIUM_CACHE}"
else
    wheel_dir="${work_dir}"
fi
wheel="${wheel_dir}/${WHEEL_NAME}"

if [[ -f ${wheel} ]] && [[ "$(sha256_of "${wheel}")" == "${WHEEL_SHA256}" ]]; then
    say "using cached wheel ${wheel}"
else
    rm -f -- "${wheel}"
    say "downloading pypdfium2==${PYPDFIUM2_VERSION} (${WHEEL_PLATFORM} wheel) into ${wheel_dir}"
    PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip download \
        --quiet \
        --no-deps \
        --only-binary=:all: \
        --platform "${WHEEL_PLATFORM}" \
        --dest "${wheel_dir}" \
        "pypdfium2==${PYPDFIUM2_VERSION}"
    [[ -f ${wheel} ]] || die "pip did not produce ${WHEEL_NAME}"
fi

wheel_hash="$(sha256_of "${wheel}")"
if [[ ${wheel_hash} != "${WHEEL_SHA256}" ]]; then
    rm -f -- "${wheel}"
    die "wheel sha256 is ${wheel_hash}, expected ${WHEEL_SHA256}; removed it"
fi
say "wheel sha256 ${wheel_hash} matches the pin"

# Stage next to the target so the final rename is atomic on the same filesystem: a process
# that loads the library meanwhile sees either the old file or the new one, never half.
staged="$(mktemp "${lib_dir}/.libpdfium.so.XXXXXX")"
python3 - "${wheel}" "${MEMBER}" "${staged}" <<'EOF'
import shutil
import sys
import zipfile

wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
EOF

library_hash="$(sha256_of "${staged}")"
[[ ${library_hash} == "${LIBRARY_SHA256}" ]] ||
    die "extracted library sha256 is ${library_hash}, expected ${LIBRARY_SHA256}"

chmod 0644 -- "${staged}"
mv -f -- "${staged}" "${target}"
staged=""
say "installed ${target} (sha256 ${library_hash}, PDFium from pypdfium2 ${PYPDFIUM2_VERSION})"
refresh_loader_cache
