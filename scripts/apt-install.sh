#!/usr/bin/env bash
# Installs the named Debian packages that are not installed yet (run as root); prints what it
# does. Used by setup.sh and setup-vm.sh.
#
#   scripts/apt-install.sh WHO PACKAGE...     (WHO prefixes the messages)

set -euo pipefail

who="$1"
shift
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "$who: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "$who: Debian packages present"
fi
