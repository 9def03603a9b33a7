#!/usr/bin/env bash
# Installs what the `vm` transport and its tests need on a fresh Debian machine (run as root):
# the kernel's source and build tools, QEMU, and binutils' `strip` for the initramfs; then
# builds the uvm kernel with qrexec-services/uvm-image/kernel/build.sh.
#
# Idempotent: packages already present are not reinstalled, and build.sh keeps the kernel in
# its cache (keyed by the hash of its inputs), so a rerun takes seconds. The first kernel build
# takes about ten minutes on two cores.
#
# Environment: UVM_KERNEL_CACHE, UVM_KERNEL_TARBALL and UVM_KERNEL_JOBS pass on to build.sh.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# linux-source-6.1: the kernel tarball. flex, bison, bc, libelf-dev, libssl-dev, make, gcc,
# xz-utils: the kernel build. cpio: the kernel's own initramfs tooling. binutils: `strip` for
# /init. qemu-system-x86: boots the uvm.
packages=(linux-source-6.1 flex bison bc libelf-dev libssl-dev cpio qemu-system-x86 binutils
    make gcc xz-utils)

"$here/apt-install.sh" setup-vm "${packages[@]}"

"$here/../qrexec-services/uvm-image/kernel/build.sh"
