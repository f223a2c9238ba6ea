#!/usr/bin/env bash
# Installs those of the Debian packages named as arguments that are missing,
# with the machine's own apt configuration: `apt-get install` first, and
# `apt-get update` only when that fails (stale lists on a fresh machine).
# As root, or through sudo. Without recommended packages unless asked.
# Usage: ensure-packages.sh [--with-recommends] PACKAGE...
set -euo pipefail

recommends=(--no-install-recommends)
if [[ ${1:-} == --with-recommends ]]; then
  recommends=()
  shift
fi
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0

as_root=()
[[ $(id -u) == 0 ]] || as_root=(sudo)
install() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    timeout 900 apt-get install -y -q "${recommends[@]}" "${missing[@]}"
}
echo "installing: ${missing[*]}"
install || { "${as_root[@]}" timeout 600 apt-get update -q && install; }
