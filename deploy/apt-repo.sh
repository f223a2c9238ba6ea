#!/usr/bin/env bash
# Build or update the signed apt repository that owners install broadcast-agent from.
#
#   deploy/apt-repo.sh --key KEY --out DIR [--suite SUITE] DEB...
#
#   --key KEY     the signing key: a key id or fingerprint whose secret key is in
#                 your gpg keyring ($GNUPGHOME, default ~/.gnupg), or a file holding
#                 one exported secret key (`gpg --export-secret-keys --armor ID`),
#                 imported into a temporary keyring that is removed afterwards
#   --out DIR     the repository; created if missing, updated if not
#   --suite SUITE the Debian release the packages are built for (default bookworm,
#                 that of Raspberry Pi OS Bookworm: glibc 2.36, GStreamer 1.22)
#   DEB...        the packages (deploy/build-deb.sh all: the arm64 and armhf ones)
#
# Uses reprepro: DIR/conf/distributions (written here), DIR/db (reprepro's
# bookkeeping: keep both for the next run), and what a web server must publish:
#   DIR/dists/SUITE/{InRelease,Release,Release.gpg}, .../main/binary-{arm64,armhf}/
#   DIR/pool/main/b/broadcast-agent/*.deb
#   DIR/broadcast-agent.gpg   the public key (binary), for /etc/apt/keyrings/
# Run it again with a new version's .debs to publish an upgrade: reprepro keeps one
# version per architecture (the newest), drops the older .deb from the pool and
# re-signs the indexes. Running it again with the same .debs changes nothing; a
# different file with the same version, or an older version, is refused. The
# repository stays signed with the key it was made with: a different key is
# refused (every owner's keyring holds the old one).
# Needs reprepro and gpg (`apt-get install reprepro gnupg`). A key with a
# passphrase asks for it through gpg-agent. Checks the signature it made with gpgv
# before it returns. docs/apt-repository.md tells how to publish and what owners add.
set -euo pipefail

ARCHES="arm64 armhf"
COMPONENT=main
KEY_FILE_NAME=broadcast-agent.gpg

die() { printf 'apt-repo: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

key="" out="" suite=bookworm debs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --key) [ $# -ge 2 ] || die "--key needs a key id or a key file"; key=$2; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a folder"; out=$2; shift ;;
        --suite) [ $# -ge 2 ] || die "--suite needs a name"; suite=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) debs+=("$1") ;;
    esac
    shift
done
[ -n "$key" ] || die "no --key (see --help)"
[ -n "$out" ] || die "no --out (see --help)"
[ ${#debs[@]} -gt 0 ] || die "no .deb given (see --help)"
[[ $suite =~ ^[a-z][a-z0-9-]*$ ]] || die "--suite $suite: want a release name such as bookworm"
for tool in reprepro gpg gpgv dpkg-deb; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install reprepro gnupg"
done

# Each .deb: a readable package of one of the repository's architectures.
for deb in "${debs[@]}"; do
    [ -f "$deb" ] || die "no such file: $deb"
    arch=$(dpkg-deb --field "$deb" Architecture 2>/dev/null) || die "$deb is not a .deb package"
    [[ " $ARCHES all " == *" $arch "* ]] || die "$deb is for $arch; this repository holds $ARCHES"
done

# The signing key: a key file goes into a keyring of this run only.
if [ -f "$key" ]; then
    GNUPGHOME=$(mktemp -d "${TMPDIR:-/tmp}/apt-repo-gnupg.XXXXXX")
    export GNUPGHOME
    trap 'gpgconf --kill all >/dev/null 2>&1; rm -rf "$GNUPGHOME"' EXIT
    gpg --batch --quiet --import "$key" 2>/dev/null || die "cannot import a key from $key"
    key_query=()
else
    key_query=("$key")
fi
# Fingerprints of the secret keys matching $key (of the imported file: all of them).
mapfile -t fprs < <(gpg --batch --with-colons --list-secret-keys "${key_query[@]}" 2>/dev/null |
    awk -F: '$1 == "sec" { want = 1; next } want && $1 == "fpr" { print $10; want = 0 }')
[ ${#fprs[@]} -gt 0 ] || die "no secret key for $key (gpg --list-secret-keys: none)"
[ ${#fprs[@]} -eq 1 ] || die "$key names ${#fprs[@]} secret keys (${fprs[*]}): give one fingerprint"
fpr=${fprs[0]}

# The repository's description: the key it was first signed with stays.
mkdir -p "$out/conf"
conf=$out/conf/distributions
if [ -f "$conf" ]; then
    old=$(sed -n 's/^SignWith: //p' "$conf")
    [ "$old" = "$fpr" ] || die "$out is signed with $old, not $fpr: owners' keyrings hold that key." \
        "Sign with it, or start a new repository (another --out) and tell every owner the new key"
    grep -qx "Codename: $suite" "$conf" || die "$out holds the suite $(sed -n 's/^Codename: //p' "$conf"), not $suite"
fi
cat >"$conf" <<EOF
Origin: broadcast-agent
Label: broadcast-agent
Codename: $suite
Architectures: $ARCHES
Components: $COMPONENT
Description: broadcast-agent for Raspberry Pi OS / Debian $suite (arm64, armhf)
SignWith: $fpr
EOF

repro() { reprepro --basedir "$out" --silent "$@"; }
# shellcheck disable=SC2016  # reprepro's --list-format fields
for deb in "${debs[@]}"; do
    name=$(dpkg-deb --field "$deb" Package) version=$(dpkg-deb --field "$deb" Version)
    arch=$(dpkg-deb --field "$deb" Architecture)
    have=$(repro --architecture "$arch" --list-format '${version}' list "$suite" "$name")
    if [ "$have" = "$version" ]; then
        # The same version again: only the very same file is fine.
        pooled=$(repro --architecture "$arch" --list-format '${$fullfilename}' list "$suite" "$name")
        cmp -s "$deb" "$pooled" || die "$name $version ($arch) is already published with other contents:" \
            "give the new build a new version"
        log "$name $version ($arch) already published"
        continue
    fi
    if [ -n "$have" ] && dpkg --compare-versions "$version" lt "$have"; then
        die "$name $version ($arch) is older than the published $have: apt would never install it"
    fi
    log "publishing $name $version ($arch)${have:+, replacing $have}"
    repro includedeb "$suite" "$deb" || die "reprepro includedeb $suite $deb failed"
done
# Re-sign the indexes (also when nothing changed: a new key signature date).
repro export "$suite" || die "reprepro export $suite failed (signing with $fpr?)"

gpg --batch --export "$fpr" >"$out/$KEY_FILE_NAME.tmp"
mv "$out/$KEY_FILE_NAME.tmp" "$out/$KEY_FILE_NAME"
gpgv --quiet --keyring "$(realpath "$out/$KEY_FILE_NAME")" "$out/dists/$suite/InRelease" 2>/dev/null ||
    die "$out/dists/$suite/InRelease does not verify with $out/$KEY_FILE_NAME"
log "signed with $fpr; publish $out/dists, $out/pool and $out/$KEY_FILE_NAME"
repro list "$suite" >&2
