#!/usr/bin/env bash
# The apt repository end to end: deploy/apt-repo.sh signs a repository of the
# arm64 and armhf .debs, served on loopback HTTP; inside a Debian Bookworm arm64
# root filesystem (ARM programs under qemu-user) the owner's two lines from
# docs/apt-repository.md and apt-get install it, a second version published with
# deploy/apt-repo.sh comes with apt-get upgrade (the owner's config kept, a restart
# of the service asked of systemd), and an unsigned repository and one signed with
# another key are refused. docs/apt-repository.md ("The test") has the details.
#
#   tests/ship/apt-repo-test.sh [--deb FILE]... [--refresh-rootfs]
#
#   --deb FILE        publish these packages (one arm64 among them) instead of those
#                     deploy/build-deb.sh all makes
#   --refresh-rootfs  rebuild the cached root filesystem
#
# Needs root (mmdebstrap, the user namespace of tests/ship/arm-chroot.sh) and
# Linux 6.7 or later. Installs its host packages with apt-get. Environment:
# ROOTFS_CACHE (default /var/cache/broadcast-agent-rootfs), DEBIAN_MIRROR (default:
# read from apt's sources), KEEP_WORK=1 keeps the scratch folder.
# Last line: apt-repo: N passed, M failed (exit status non-zero if any failed).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/ship/lib.sh
. "$repo/tests/ship/lib.sh"
ROOTFS_CACHE=${ROOTFS_CACHE:-/var/cache/broadcast-agent-rootfs}
SUITE=bookworm ARCH=arm64
HOST_PACKAGES=(qemu-user-static mmdebstrap debian-archive-keyring reprepro gnupg python3)
# Beyond Depends: curl for the owner's key line and the Recommends Debian has
# (both on a Pi once it is installed), so installing the package adds only itself.
BASE_EXTRA=curl,gstreamer1.0-plugins-ugly,gstreamer1.0-libcamera
KEYRING=/etc/apt/keyrings/broadcast-agent.gpg
SOURCE_FILE=/etc/apt/sources.list.d/broadcast-agent.list
CONF=/etc/broadcast-agent/agent.toml
UNIT=broadcast-agent.service
V2_SUFFIX=+test2
# apt-get update of the broadcast-agent source alone (see docs/apt-repository.md):
# its file as the source list, an empty folder (made in the chroot) as the parts.
NO_SOURCES_DIR=/run/no-apt-sources.d
UPDATE_OURS=(-o "Dir::Etc::SourceList=$SOURCE_FILE" -o "Dir::Etc::SourceParts=$NO_SOURCES_DIR" -o APT::Get::List-Cleanup=0)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'apt-repo-test: error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

debs=() refresh=0
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) [ $# -ge 2 ] || die "--deb needs a file"; debs+=("$(realpath "$2")"); shift ;;
        --refresh-rootfs) refresh=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, a user namespace mapping the machine's ids)"

work=$(mktemp -d "${TMPDIR:-/tmp}/apt-repo-test.XXXXXX")
mkdir -p "$ROOTFS_CACHE"
run_root=$(mktemp -d "$ROOTFS_CACHE/apt-run.XXXXXX")
SERVER_PID=""
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    [ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; }
    [ -z "${GNUPGHOME:-}" ] || gpgconf --kill all >/dev/null 2>&1
    rm -rf "$run_root" "$ROOTFS_CACHE"/*.tmp.$$
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the packages ---------------------------------------------------------------------
bash "$repo/deploy/ensure-packages.sh" --with-recommends "${HOST_PACKAGES[@]}" >&2 || die "cannot install ${HOST_PACKAGES[*]}"
if [ ${#debs[@]} -eq 0 ]; then
    mapfile -t debs < <(bash "$repo/deploy/build-deb.sh" all 2>"$work/build-deb.log")
    [ ${#debs[@]} -gt 0 ] || { cat "$work/build-deb.log" >&2; die "deploy/build-deb.sh all made no package"; }
fi
deb=""
for f in "${debs[@]}"; do
    [ -f "$f" ] || die "no such file: $f"
    [ "$(dpkg-deb --field "$f" Architecture)" = "$ARCH" ] && deb=$f
done
[ -n "$deb" ] || die "no $ARCH package among: ${debs[*]}"
v1=$(dpkg-deb --field "$deb" Version) v2=$(dpkg-deb --field "$deb" Version)$V2_SUFFIX
# The second version: the same packages, repacked with a higher version.
debs2=()
mkdir -p "$work/v2"
for f in "${debs[@]}"; do
    out=$work/v2/$(basename "${f%.deb}")$V2_SUFFIX.deb
    ship_repack "$f" "$out" "s/^Version: .*/&$V2_SUFFIX/" || die "cannot repack $f"
    debs2+=("$out")
done

# --- the root filesystem: Bookworm arm64 with the Depends installed, cached ------------------
ROOTFS=$ROOTFS_CACHE/$SUITE-$ARCH-installed
rootfs_want="suite=$SUITE arch=$ARCH variant=apt depends=$(dpkg-deb --field "$deb" Depends) extra=$BASE_EXTRA"
build_rootfs() {
    local tmp=$ROOTFS.tmp.$$ t0=$SECONDS include
    include=$( { ship_depends_names "$deb"; tr ',' '\n' <<<"$BASE_EXTRA"; } | paste -sd, -)
    log "building the $SUITE/$ARCH root filesystem (apt, dpkg, $include) in $ROOTFS: minutes, under emulation"
    rm -rf "$tmp"
    # Its ARM maintainer scripts run through arm-chroot.sh's binfmt_misc; the Debian
    # indexes are kept (the test's apt-get reads them, no mirror needed later).
    # shellcheck disable=SC2034  # read by ship_mmdebstrap
    local SHIP_MMDEBSTRAP=(timeout 1800 bash "$repo/tests/ship/arm-chroot.sh" "$ARCH" -- mmdebstrap)
    ship_mmdebstrap "$SUITE" "$tmp" "$work/mmdebstrap.log" --mode=root --variant=apt \
        --architectures="$ARCH" --include="$include" --skip=cleanup/apt/lists \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg -q || {
        tail -n 30 "$work/mmdebstrap.log" >&2; rm -rf "$tmp"; return 1; }
    printf '%s\nbuilt %s in %d s, %s\n' "$rootfs_want" "$(date -u +%Y-%m-%dT%H:%MZ)" $((SECONDS - t0)) \
        "$(du -sh "$tmp" | cut -f1)" >"$tmp/.broadcast-agent-rootfs"
    rm -rf "$ROOTFS"
    mv "$tmp" "$ROOTFS"
}
if [ "$refresh" = 1 ] || [ "$(head -n1 "$ROOTFS/.broadcast-agent-rootfs" 2>/dev/null)" != "$rootfs_want" ]; then
    build_rootfs || die "mmdebstrap failed"
fi
log "rootfs $ROOTFS ($(sed -n 2p "$ROOTFS/.broadcast-agent-rootfs"))"

# --- keys and repositories -------------------------------------------------------------------
export GNUPGHOME=$work/gnupg
mkdir -m 0700 "$GNUPGHOME"
new_key() {  # prints the fingerprint of a new signing key without passphrase for $1
    gpg --batch --quiet --passphrase '' --quick-gen-key "$1" ed25519 sign 1d 2>/dev/null &&
        gpg --batch --with-colons --list-secret-keys "$1" 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }'
}
key_fpr=$(new_key 'broadcast-agent test <maintainer@localhost>') || die "gpg cannot make a key"
other_fpr=$(new_key 'impostor <impostor@localhost>') || die "gpg cannot make a key"
gpg --batch --export-secret-keys --armor "$key_fpr" >"$work/signing-key.asc"

www=$work/www
publish() {  # publish DIR KEY DEB...: deploy/apt-repo.sh, its output in $work/publish.log
    local dir=$1 key=$2; shift 2
    bash "$repo/deploy/apt-repo.sh" --key "$key" --out "$www/$dir" "$@" >"$work/publish.log" 2>&1
}
published() {  # published DIR ARCH: the version of broadcast-agent in DIR's index for ARCH
    sed -n 's/^Version: //p' "$www/$1/dists/$SUITE/main/binary-$2/Packages" 2>/dev/null
}
index_sums() { sha256sum "$www/good/dists/$SUITE"/main/*/Packages "$www/good/pool"/*/*/*/*.deb 2>/dev/null; }

if publish good "$work/signing-key.asc" "${debs[@]}"; then
    ok "deploy/apt-repo.sh --key <key file> --out DIR: arm64 and armhf $v1 published"
else
    bad "deploy/apt-repo.sh --key <key file> --out DIR: arm64 and armhf $v1 published" "$(tail -n 5 "$work/publish.log")"
fi
eq "arm64 index lists $v1" "$(published good arm64)" "$v1"
eq "armhf index lists $v1" "$(published good armhf)" "$v1"
check "InRelease verifies with the published broadcast-agent.gpg (gpgv)" \
    gpgv --keyring "$www/good/broadcast-agent.gpg" "$www/good/dists/$SUITE/InRelease"
eq "broadcast-agent.gpg is the signing key" \
    "$(gpg --batch --with-colons --show-keys "$www/good/broadcast-agent.gpg" 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')" "$key_fpr"
before=$(index_sums)
if publish good "$work/signing-key.asc" "${debs[@]}"; then ok "publishing the same files again succeeds"
else bad "publishing the same files again succeeds" "$(tail -n 3 "$work/publish.log")"; fi
eq "... and changes neither index nor pool" "$(index_sums)" "$before"
publish wrong-key "$other_fpr" "${debs[@]}" || bad "the impostor's repository (--key <fingerprint>)" "$(tail -n 3 "$work/publish.log")"
cp -a "$www/good" "$www/unsigned"
rm -f "$www/unsigned/dists/$SUITE/InRelease" "$www/unsigned/dists/$SUITE/Release.gpg"

# Loopback HTTP, a free port; requests logged (stderr).
python3 - "$www" "$work/port" 2>"$work/http.log" <<'EOF' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
__import__("os").rename(sys.argv[2] + ".tmp", sys.argv[2])
server.serve_forever()
EOF
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
[ -s "$work/port" ] || die "the HTTP server did not start: $(cat "$work/http.log")"
base_url=http://127.0.0.1:$(cat "$work/port")

# --- the owner's system --------------------------------------------------------------------
root=$run_root/root
cp -a "$ROOTFS" "$root"
# systemd "runs" (the postinst asks it then), and a stand-in systemctl records what
# it is asked. It takes the place of the real one (systemd came with the Depends):
# apt runs dpkg with PATH=/usr/sbin:/usr/bin:/sbin:/bin (DPkg::Path).
mkdir -p "$root/run/systemd/system" "$root$NO_SOURCES_DIR"
mv "$root/usr/bin/systemctl" "$root/usr/bin/systemctl.real"
cat >"$root/usr/bin/systemctl" <<'EOF'
#!/bin/sh
# Stand-in for systemctl in a chroot, where no systemd runs: records each call with
# the broadcast-agent version installed at that moment. The service manager's verbs
# are played: start and restart mark the unit active, stop clears that, is-active
# reads it, daemon-reload does nothing. The unit-file verbs (preset, enable,
# is-enabled...) go to the real systemctl, offline (--root=/).
echo "$* [$(dpkg-query -W -f '${Version}' broadcast-agent 2>/dev/null)]" >>/var/log/systemctl-calls
for unit; do :; done
state=/run/systemctl-standin
case " $* " in
    *" is-active "*) [ -e "$state/$unit" ]; exit ;;
    *" start "*|*" restart "*) mkdir -p "$state" && : >"$state/$unit"; exit ;;
    *" stop "*) rm -f "$state/$unit"; exit ;;
    *" daemon-reload "*) exit 0 ;;
    *" --root="*) ;;
    *) set -- --root=/ "$@" ;;
esac
exec /usr/bin/systemctl.real "$@"
EOF
chmod 0755 "$root/usr/bin/systemctl"
: >"$root/var/log/systemctl-calls"

# in_root COMMAND...: COMMAND in the owner's system, output in $work/out (bounded).
in_root() {
    timeout 900 bash "$repo/tests/ship/arm-chroot.sh" "$ARCH" --chroot "$root" -- "$@" </dev/null >"$work/out" 2>&1
}
owner_line() {  # owner_line PATTERN URL: the line of docs/apt-repository.md, for URL, as root
    grep -m1 -- "$1" "$repo/docs/apt-repository.md" | sed "s#REPO_URL#$2#g; s/sudo //g"
}
key_line=$(owner_line '^sudo curl .*/etc/apt/keyrings/broadcast-agent.gpg' "$base_url/good")
[ -n "$key_line" ] || bad "docs/apt-repository.md has the owner's key line (sudo curl ... $KEYRING)"
source_line() { owner_line "^echo \"deb \[signed-by=$KEYRING\] " "$base_url/$1"; }
[ -n "$(source_line good)" ] || bad "docs/apt-repository.md has the owner's source line (echo \"deb [signed-by=$KEYRING] ...)"
no_warning() {  # the last in_root's output holds no apt warning
    if grep -q '^W:' "$work/out"; then bad "... without a warning" "$(grep '^W:' "$work/out")"
    else ok "... without a warning"; fi
}
# shellcheck disable=SC2016  # dpkg-query's format
installed_version() { in_root dpkg-query -W -f '${Status} ${Version}' broadcast-agent; sed -n 's/^install ok installed //p' "$work/out"; }

t0=$SECONDS
if in_root sh -c "$key_line"; then ok "owner's key line: $KEYRING fetched"
else bad "owner's key line: $KEYRING fetched" "$key_line" "$(tail -n 3 "$work/out")"; fi
check "... it is the published key" cmp "$root$KEYRING" "$www/good/broadcast-agent.gpg"

# Refused: the impostor's repository, and the unsigned one.
refused() {  # refused DIR MESSAGE
    local dir=$1 message=$2
    in_root sh -c "$(source_line "$dir")" || bad "$dir: owner's source line" "$(tail -n 3 "$work/out")"
    if in_root apt-get "${UPDATE_OURS[@]}" update; then
        bad "$dir: apt-get update refuses it" "$(tail -n 5 "$work/out")"
    elif grep -q "$base_url/$dir" "$work/out" && grep -q -- "$message" "$work/out"; then
        ok "$dir: apt-get update refuses it ($(grep -m1 -o -- "$message.*" "$work/out" | cut -c1-90))"
    else
        bad "$dir: apt-get update refuses it with '$message'" "$(tail -n 5 "$work/out")"
    fi
    check "$dir: ... after fetching its InRelease or Release from the server" \
        grep -Eq "GET /$dir/dists/$SUITE/(InRelease|Release) " "$work/http.log"
    if in_root apt-get install -y broadcast-agent; then bad "$dir: apt-get install broadcast-agent fails"
    else ok "$dir: apt-get install broadcast-agent fails ($(grep -m1 '^E:' "$work/out"))"; fi
    eq "$dir: broadcast-agent is not installed" "$(installed_version)" ""
}
refused wrong-key "NO_PUBKEY"
refused unsigned "is not signed"

# The real one.
in_root sh -c "$(source_line good)" || bad "good: owner's source line" "$(tail -n 3 "$work/out")"
if in_root apt-get "${UPDATE_OURS[@]}" update; then ok "apt-get update takes the signed repository"
else bad "apt-get update takes the signed repository" "$(tail -n 5 "$work/out")"; fi
no_warning
if in_root apt-get install -y broadcast-agent; then ok "apt-get install -y broadcast-agent"
else bad "apt-get install -y broadcast-agent" "$(tail -n 8 "$work/out")"; fi
check "... fetched from the repository" grep -q "^Get:.* $base_url/good $SUITE/main $ARCH broadcast-agent $ARCH $v1" "$work/out"
eq "broadcast-agent $v1 installed" "$(installed_version)" "$v1"
in_root getent passwd broadcast-agent
check "postinst made the system user broadcast-agent" grep -q '^broadcast-agent:' "$work/out"
in_root stat -c '%U:%G %a' "$CONF"
eq "$CONF is root:broadcast-agent 0640" "$(cat "$work/out")" "root:broadcast-agent 640"
check "postinst enabled $UNIT" test -L "$root/etc/systemd/system/multi-user.target.wants/$UNIT"
check "postinst started $UNIT" grep -qx -- "--quiet --system start $UNIT \[$v1\]" "$root/var/log/systemctl-calls"
in_root broadcast-agent --version
check "the installed binary runs ($(head -n1 "$work/out"))" grep -q '^broadcast-agent ' "$work/out"
log "first install: $((SECONDS - t0)) s"

# The owner's edit, then the second version.
in_root sed -i 's|^url = "http://127.0.0.1:8088/janus"|url = "https://janus.home.arpa/janus"  # edited by the owner|' "$CONF"
check "the owner edits $CONF (janus.url)" grep -q '^url = "https://janus.home.arpa/janus"' "$root$CONF"
conf_before=$(sha256sum <"$root$CONF") mode_before=$(stat -c '%u:%g %a' "$root$CONF")
calls_before=$(wc -l <"$root/var/log/systemctl-calls")

t0=$SECONDS
if publish good "$work/signing-key.asc" "${debs2[@]}"; then ok "deploy/apt-repo.sh into the same folder: $v2 published"
else bad "deploy/apt-repo.sh into the same folder: $v2 published" "$(tail -n 5 "$work/publish.log")"; fi
eq "arm64 index lists $v2 only" "$(published good arm64)" "$v2"
eq "armhf index lists $v2 only" "$(published good armhf)" "$v2"
check "$v1 left the pool" bash -c "! ls '$www/good/pool'/*/*/*/*_${v1}_*.deb"
if publish good "$work/signing-key.asc" "$deb"; then bad "publishing $v1 again (older) is refused"
else ok "publishing $v1 again (older) is refused: $(grep -o 'error: .*' "$work/publish.log" | cut -c8-90)"; fi
if in_root apt-get "${UPDATE_OURS[@]}" update; then ok "apt-get update sees $v2"
else bad "apt-get update sees $v2" "$(tail -n 5 "$work/out")"; fi
no_warning
if in_root apt-get upgrade -y; then ok "apt-get upgrade -y"
else bad "apt-get upgrade -y" "$(tail -n 8 "$work/out")"; fi
check "... upgrades broadcast-agent and nothing else" grep -q '^1 upgraded, 0 newly installed, 0 to remove' "$work/out"
eq "broadcast-agent $v2 installed" "$(installed_version)" "$v2"
eq "$CONF is the owner's, byte for byte" "$(sha256sum <"$root$CONF")" "$conf_before"
eq "$CONF keeps its owner and mode" "$(stat -c '%u:%g %a' "$root$CONF")" "$mode_before"
check "no .dpkg-* file beside it" bash -c "! ls '$root/etc/broadcast-agent/'*.dpkg-*"
upgrade_calls=$(tail -n +$((calls_before + 1)) "$root/var/log/systemctl-calls")
check "postinst asked systemd to restart $UNIT with $v2 in place" grep -qx -- "--quiet --system restart $UNIT \[$v2\]" <<<"$upgrade_calls"
if grep -q ' stop ' <<<"$upgrade_calls"; then bad "... and to stop it nowhere" "$upgrade_calls"
else ok "... and to stop it nowhere"; fi
log "upgrade: $((SECONDS - t0)) s"

echo "apt-repo: $pass passed, $fail failed"
[ "$fail" = 0 ]
