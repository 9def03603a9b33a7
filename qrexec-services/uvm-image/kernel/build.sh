#!/bin/bash
# Builds the uvm kernel (vmlinux for QEMU's PVH entry, bzImage for everything else)
# from Debian's linux-source tarball: tinyconfig + fragment.config, checked so that no
# fragment option is silently dropped. The result is cached under a key made of the
# sha256 of the fragment, the source tarball and this script, so a rerun with the
# same inputs is a no-op.
#
# Environment:
#   UVM_KERNEL_CACHE    cache dir (default /var/cache/trusted-converters/kernel)
#   UVM_KERNEL_TARBALL  source tarball (default /usr/src/linux-source-6.1.tar.xz,
#                       from Debian's linux-source-6.1 package)
#   UVM_KERNEL_JOBS     make -j value (default 2)
#
# Output: $UVM_KERNEL_CACHE/out/<key>/{vmlinux,bzImage,config,key} and the symlink
# $UVM_KERNEL_CACHE/current pointing at it (what `uvm-image build` reads).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment="$here/fragment.config"
script="$here/$(basename "${BASH_SOURCE[0]}")"
cache=${UVM_KERNEL_CACHE:-/var/cache/trusted-converters/kernel}
tarball=${UVM_KERNEL_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
jobs=${UVM_KERNEL_JOBS:-2}

say() { printf 'kernel/build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ -f "$fragment" ] || die "missing $fragment"
[ -f "$tarball" ] || die "missing $tarball (apt-get install linux-source-6.1)"
for tool in make gcc flex bison bc tar xz sha256sum; do
    command -v "$tool" >/dev/null || die "missing tool $tool (apt-get install build-essential flex bison bc libelf-dev libssl-dev xz-utils)"
done

mkdir -p "$cache"
exec 9>"$cache/.lock"
say "waiting for the cache lock $cache/.lock"
flock 9

sum() { sha256sum "$1" | cut -d' ' -f1; }
say "hashing inputs"
tar_sum=$(sum "$tarball")
key=$(printf '%s\n%s\n%s\n' "$(sum "$fragment")" "$tar_sum" "$(sum "$script")" | sha256sum | cut -d' ' -f1)
out="$cache/out/$key"

if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ] && [ -f "$out/key" ]; then
    ln -sfn "out/$key" "$cache/current"
    say "cached: $out"
    echo "$out"
    exit 0
fi

src_root="$cache/src/$tar_sum"
if [ ! -f "$src_root/.extracted" ]; then
    say "extracting $tarball into $src_root"
    rm -rf "$src_root"
    mkdir -p "$src_root"
    tar -xJf "$tarball" -C "$src_root"
    touch "$src_root/.extracted"
fi
src=$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' | head -n 1)
[ -n "$src" ] || die "no linux-source-* directory in $src_root"

build="$cache/build/$key"
mkdir -p "$build"
# Fixed build metadata so two builds of the same inputs are comparable.
export KBUILD_BUILD_TIMESTAMP='1970-01-01 00:00:00 UTC'
export KBUILD_BUILD_USER=uvm KBUILD_BUILD_HOST=uvm KBUILD_BUILD_VERSION=1
mk() { make -C "$src" O="$build" ARCH=x86_64 "$@"; }

say "make tinyconfig (build dir $build)"
mk -s tinyconfig
say "merging $fragment"
(cd "$src" && scripts/kconfig/merge_config.sh -m -O "$build" "$build/.config" "$fragment" >/dev/null)
say "make olddefconfig"
mk -s olddefconfig

say "verifying that every fragment option survived"
dropped=()
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            grep -qxF -- "$line" "$build/.config" || dropped+=("$line")
            ;;
        "# CONFIG_"*" is not set")
            name=${line#"# "}
            name=${name%" is not set"}
            if grep -q -- "^$name=" "$build/.config"; then dropped+=("$line"); fi
            ;;
    esac
done <"$fragment"
if [ "${#dropped[@]}" -ne 0 ]; then
    say "error: olddefconfig dropped ${#dropped[@]} fragment option(s):"
    for line in "${dropped[@]}"; do
        name=${line#"# "}
        name=${name%%=*}
        name=${name%" is not set"}
        say "  wanted: $line    got: $(grep -E -- "^(# )?${name}[= ]" "$build/.config" || echo '(absent)')"
    done
    exit 1
fi

say "building vmlinux and bzImage with -j$jobs (about 10 minutes on 2 cores)"
start=$(date +%s)
mk -j"$jobs" vmlinux bzImage
say "kernel built in $(($(date +%s) - start)) s"

tmp="$cache/out/.tmp-$key"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$build/vmlinux" "$tmp/vmlinux"
cp "$build/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$build/.config" "$tmp/config"
echo "$key" >"$tmp/key"
rm -rf "$out"
mv "$tmp" "$out"
ln -sfn "out/$key" "$cache/current"
rm -rf "$build"
say "done: $out (vmlinux $(stat -c %s "$out/vmlinux") bytes, bzImage $(stat -c %s "$out/bzImage") bytes)"
echo "$out"
