# Shared by the tests in tests/ship/ that build Debian root filesystems (source it).
# shellcheck shell=bash

SHIP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# ship_mmdebstrap SUITE DIR LOG OPTION...
# Runs `mmdebstrap OPTION... SUITE DIR` with this machine's Debian mirrors
# (deploy/cross-build.sh mirrors reads them from apt's sources, unless
# DEBIAN_MIRROR is set): SUITE and SUITE-updates, plus SUITE-security when there is
# a security mirror; if that fails, once more without it. mmdebstrap's output goes
# to LOG. The command is "${SHIP_MMDEBSTRAP[@]}" when set (e.g. mmdebstrap under
# tests/ship/arm-chroot.sh), else mmdebstrap. Returns mmdebstrap's status.
ship_mmdebstrap() {
    local suite=$1 dir=$2 log=$3
    shift 3
    if [ -z "${DEBIAN_MIRROR:-}" ]; then
        eval "$(bash "$SHIP_REPO/deploy/cross-build.sh" mirrors)" || return 1
    fi
    local mm=("${SHIP_MMDEBSTRAP[@]:-mmdebstrap}" "$@" "$suite" "$dir"
              "deb $DEBIAN_MIRROR $suite main" "deb $DEBIAN_MIRROR $suite-updates main")
    if [ -n "${DEBIAN_SECURITY_MIRROR:-}" ]; then
        "${mm[@]}" "deb $DEBIAN_SECURITY_MIRROR $suite-security main" >"$log" 2>&1 && return 0
        printf '==> retrying without the security suite\n' >&2
        rm -rf "$dir"
    fi
    "${mm[@]}" >"$log" 2>&1
}

# ship_depends_names DEB: the packages DEB's Depends names, one a line (the first
# of each alternative, without versions).
ship_depends_names() {
    dpkg-deb --field "$1" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*//; s/^ *//; s/ *$//' | grep -v '^$'
}

# ship_repack DEB OUT SED_SCRIPT: DEB with its DEBIAN/control edited by SED_SCRIPT,
# packed again as OUT (root-owned files, as dpkg-deb --root-owner-group packs them).
ship_repack() {
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/repack.XXXXXX") || return 1
    dpkg-deb -R "$1" "$dir/pkg" && sed -i "$3" "$dir/pkg/DEBIAN/control" &&
        dpkg-deb --root-owner-group -Zxz -b "$dir/pkg" "$2" >/dev/null
    local status=$?
    rm -rf "$dir"
    return $status
}

# Test results, counted in $pass and $fail: ok NAME; bad NAME [DETAIL...];
# check NAME COMMAND... (ok when COMMAND succeeds); eq NAME GOT WANT.
pass=0 fail=0
ok()  { pass=$((pass + 1)); printf 'ok   - %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf 'FAIL - %s\n' "$1"; [ $# -lt 2 ] || printf '       %s\n' "${@:2}"; }
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name" "command: $*"; fi; }
eq() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected: $3" "got:      $2"; fi; }
