#!/usr/bin/env bash
# Run what the Pi runs: the arm64 and armhf .deb packages, installed into a
# Debian Bookworm root filesystem that holds exactly what their Depends pull in,
# stream end to end under qemu-user to a real Janus, over both uplinks: plain
# RTP and WebRTC (a VideoRoom publisher forwarded into the mountpoint).
#
#   tests/ship/arm-e2e.sh [arm64|armhf|all] [--runs N] [--without PKG] [--deb FILE]
#                         [--refresh-rootfs]
#
#   all (default)    both targets
#   --runs N         start the agent N times per target and uplink (default 2), in
#                    turn: rtp, webrtc, rtp, webrtc... The first rtp start has a cold
#                    GStreamer registry (a Pi's first start), every later start reuses
#                    it (every later start on a Pi); the summary gives, per uplink, the
#                    cold start (rtp) and the median of the warm ones
#   --without PKG    drop PKG from the .deb's Depends (the package is repacked with the
#                    shorter field) and build the root filesystem from that: shows what
#                    a missing Depends entry does. The step must then FAIL.
#   --deb FILE       test this package (its Architecture picks the target) instead of
#                    the one deploy/build-deb.sh makes
#   --refresh-rootfs rebuild the cached root filesystems
#
# Everything that needs the network (host packages, the .debs, the root
# filesystems) is done first; then the script runs itself again (--inside) in a
# private network namespace (`unshare -n`) holding loopback and a veth pair,
# lan0 10.77.0.1/24 and lan1 10.77.0.2/24, with a default route through it (as
# tests/common/netns.rs `Netns::with_lan`): WebRTC needs an address besides
# loopback (Janus never gathers loopback candidates, and wants a default route),
# and the test must use none of the machine's own interfaces. Janus (its API on
# 127.0.0.1) and the agent both run in there; nothing in there reaches a registry.
#
# Per target:
#   1. The root filesystem: `mmdebstrap --variant=extract --include=<the .deb>` from
#      the Debian mirror in this machine's apt sources (the way deploy/cross-build.sh
#      makes its sysroots). apt resolves the .deb's Depends, versions included, into
#      exactly the packages `apt install --no-install-recommends ./the.deb` brings on
#      a Pi; plus gstreamer1.0-plugins-ugly, a Recommends of the .deb, because the
#      test video source encodes with x264enc (on a Pi with a camera the H.264 comes
#      from the camera). Cached in $ROOTFS_CACHE/bookworm-<arch>, keyed by the
#      Depends field, so a rebuilt .deb with the same Depends reuses it (arm64 ~700 MB,
#      armhf ~570 MB; 1-2 min to build, both targets at once; a --without one is
#      not kept).
#   2. The .deb is UNPACKED into a hard-linked copy of that root filesystem with
#      `dpkg-deb -x`, not installed with dpkg: the extract variant leaves no dpkg
#      database, and dpkg runs maintainer scripts chrooted with the rootfs's ARM
#      /bin/sh, which only runs with a binfmt_misc registration, which this test must
#      not make. So the postinst (system user, groups, systemd enable) is not run
#      here: tests/ship/deb-test.sh checks it. The agent runs as root.
#   3. The installed /etc/broadcast-agent/agent.toml is edited to point at the test
#      Janus (its own ports), video.source = "test" at 160x120@10, microphone.device
#      = "test" (440 Hz tone), speaker and gpio off, the control socket in a scratch
#      folder, and stream.transport = "rtp" or "webrtc" (set before each start);
#      then the installed /usr/bin/broadcast-agent runs under
#      qemu-aarch64-static / qemu-arm-static -L <rootfs>: `check` on that file, then
#      `run`, once per uplink and --runs.
#   4. A start passes when Janus's Streaming `info` shows video and audio arriving
#      and `status --json` (the installed binary under qemu, over the control
#      socket) says phase "live" with both pipelines running and room.uplink.kind
#      the uplink asked for; with webrtc also room.uplink.publisher "connected" and
#      the VideoRoom's `listparticipants` holding exactly one publisher. age_ms
#      counts from the mountpoint's creation until a first packet arrives, so
#      "arriving" means: the moment of the last packet (now - age_ms) is later than
#      that reference seen at the first poll, and age_ms is still under 1 s at least
#      2 s after the mountpoint appeared. Time to media = from starting `run` to the
#      first Janus poll (every ~0.1 s) that shows both arriving; the first start
#      includes GStreamer's plugin scan under emulation. A target passes when every
#      start of both uplinks passed.
# A missing GStreamer element is reported by the agent ("GStreamer element X is
# missing: install PKG", or for webrtc "... missing here: install PKG") and fails
# the target at once, with that line.
#
# Needs root (mmdebstrap --mode=root, apt-get for its host packages, unshare -n and
# ip for the namespace). No binfmt registration is needed or made. Last lines: one
# PASS/FAIL line per target; exit status non-zero if any failed.
#
# Environment:
#   CARGO_TARGET_DIR  where deploy/build-deb.sh finds the cross builds (its default)
#   ROOTFS_CACHE      default /var/cache/broadcast-agent-rootfs
#   ROOTFS_SUITE      default bookworm
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR  default: read from apt's sources
#   MEDIA_TIMEOUT_S   longest wait for media at Janus per start (default 120)
#   KEEP_WORK=1       keep the scratch folder (Janus and agent logs)
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/ship/lib.sh
. "$repo/tests/ship/lib.sh"
ROOTFS_CACHE=${ROOTFS_CACHE:-/var/cache/broadcast-agent-rootfs}
ROOTFS_SUITE=${ROOTFS_SUITE:-bookworm}
MEDIA_TIMEOUT_S=${MEDIA_TIMEOUT_S:-120}
# What the test needs beyond Depends: x264enc for video.source = "test".
TEST_EXTRA_PACKAGES=gstreamer1.0-plugins-ugly
HOST_PACKAGES="qemu-user-static mmdebstrap debian-archive-keyring janus curl jq iproute2 util-linux"
ROOM=4556
# The uplinks each target runs, in this order per round (stream.transport).
UPLINKS=(rtp webrtc)
# The namespace's LAN (tests/common/netns.rs LAN): a veth pair, a /24.
LAN=(10.77.0.1 10.77.0.2)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'arm-e2e: error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }

# --- arguments -------------------------------------------------------------------
arches=() runs=2 without="" debs=() refresh=0 inside=0
while [ $# -gt 0 ]; do
    case "$1" in
        all) arches+=(arm64 armhf) ;;
        arm64|aarch64|aarch64-unknown-linux-gnu) arches+=(arm64) ;;
        armhf|armv7|armv7-unknown-linux-gnueabihf) arches+=(armhf) ;;
        --runs) runs=${2:?--runs N}; shift ;;
        --without) without=${2:?--without PKG}; shift ;;
        --deb) debs+=("${2:?--deb FILE}"); shift ;;
        --refresh-rootfs) refresh=1 ;;
        --inside) inside=1 ;;  # the second half, in the namespace (below)
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, apt-get, unshare -n)"
for deb in "${debs[@]}"; do
    [ -f "$deb" ] || die "no such file: $deb"
    arches+=("$(dpkg-deb --field "$deb" Architecture)")
done
for i in "${!debs[@]}"; do debs[i]=$(realpath "${debs[i]}"); done  # mmdebstrap takes a path as a path
[ ${#arches[@]} -gt 0 ] || arches=(arm64 armhf)

JANUS_PID="" AGENT_PID="" INNER_PID=""
if [ "$inside" = 1 ]; then
    # The scratch folders are the first half's, which removes them.
    work=${ARM_E2E_WORK:?--inside is for the script itself} installs=${ARM_E2E_INSTALLS:?--inside is for the script itself}
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/arm-e2e.XXXXXX")
    mkdir -p "$ROOTFS_CACHE"
    # Per-run copies of the rootfs are hard links into the cache: same file system.
    installs=$(mktemp -d "$ROOTFS_CACHE/run.XXXXXX")
fi
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    [ -n "$AGENT_PID" ] && kill -KILL "$AGENT_PID" 2>/dev/null
    janus_stop
    [ "$inside" = 0 ] || return 0
    # The namespace's half (timeout passes the signal on to its process group).
    if [ -n "$INNER_PID" ]; then kill -TERM "$INNER_PID" 2>/dev/null; wait "$INNER_PID" 2>/dev/null; fi
    # Unfinished root filesystems ($$ is the same in the subshells that build them).
    rm -rf "$installs" "$ROOTFS_CACHE"/*.tmp.$$
    # A --without rootfs is a one-off: not kept in the cache.
    [ -z "$without" ] || rm -rf "$ROOTFS_CACHE/$ROOTFS_SUITE-"*"-without-$without"
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $work (logs of Janus and the agent)"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- host packages -------------------------------------------------------------------
ensure_host_packages() {
    bash "$repo/deploy/ensure-packages.sh" --with-recommends $HOST_PACKAGES
}

# --- per-target facts ---------------------------------------------------------------
set_arch() {  # TRIPLE RUST_TARGET QEMU for $1
    case "$1" in
        arm64) TRIPLE=aarch64-linux-gnu RUST_TARGET=aarch64-unknown-linux-gnu QEMU=qemu-aarch64-static ;;
        armhf) TRIPLE=arm-linux-gnueabihf RUST_TARGET=armv7-unknown-linux-gnueabihf QEMU=qemu-arm-static ;;
        *) die "unsupported architecture $1 (want arm64 or armhf)" ;;
    esac
}

# Repacks $1 with PKG ($2) removed from Depends into $3: a .deb that forgot PKG.
deb_without() {
    local src=$1 pkg=$2 out=$3 d="$work/repack"
    rm -rf "$d"; mkdir -p "$d"
    dpkg-deb -R "$src" "$d/pkg"
    local before after
    before=$(sed -n 's/^Depends: //p' "$d/pkg/DEBIAN/control")
    after=$(printf '%s\n' "$before" | tr ',' '\n' | sed 's/^ *//' |
        awk -v p="$pkg" '{ n = $1; sub(/\(.*/, "", n) } n != p' | paste -sd, - | sed 's/,/, /g')
    [ "$before" != "$after" ] || die "--without $pkg: $pkg is not in the .deb's Depends ($before)"
    sed -i "s/^Depends: .*/Depends: $after/" "$d/pkg/DEBIAN/control"
    dpkg-deb --root-owner-group -Zxz -b "$d/pkg" "$out" >/dev/null
    log "repacked without $pkg in Depends: $out"
}

# --- the root filesystem ----------------------------------------------------------------
rootfs_dir() { echo "$ROOTFS_CACHE/$ROOTFS_SUITE-$1${without:+-without-$without}"; }
# Builds (or reuses) the root filesystem of $ARCH for the .deb $1. Run it in a
# subshell: it exits on failure.
rootfs_want() {  # what the stamp of $ARCH's root filesystem for the .deb $1 says
    echo "suite=$ROOTFS_SUITE arch=$ARCH depends=$(dpkg-deb --field "$1" Depends) extra=$TEST_EXTRA_PACKAGES"
}
# Whether the root filesystem of $ARCH for the .deb $1 is built (and for it).
rootfs_ready() {
    local stamp
    stamp=$(rootfs_dir "$ARCH")/.broadcast-agent-rootfs
    [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$(rootfs_want "$1")" ]
}
ensure_rootfs() {
    local deb=$1 want ROOTFS
    want=$(rootfs_want "$deb")
    ROOTFS=$(rootfs_dir "$ARCH")
    local stamp=$ROOTFS/.broadcast-agent-rootfs
    if [ "$refresh" = 0 ] && rootfs_ready "$deb"; then
        log "rootfs $ROOTFS (cached: $(sed -n 2p "$stamp"))"
        return 0
    fi
    local tmp="$ROOTFS.tmp.$$" t0=$SECONDS
    rm -rf "$tmp"
    # apt in the chroot reads the .deb by its path there: a setup hook copies it in
    # (removed again below).
    local indeb
    indeb=$work/deb/$(basename "$deb")
    mkdir -p "$work/deb"
    cp "$deb" "$indeb"
    # The .deb goes in by path: apt resolves its Depends (versions included) as
    # `apt install ./x.deb` on the Pi does; mmdebstrap installs no Recommends.
    # The extract hook records what was pulled in (no dpkg database is written).
    # shellcheck disable=SC2016  # the hook's $1 is for mmdebstrap's shell
    local mm=(--mode=root --variant=extract --architectures="$ARCH"
              --setup-hook="mkdir -p \"\$1$(dirname "$indeb")\" && cp '$indeb' \"\$1$indeb\""
              --include="$indeb" --include="$TEST_EXTRA_PACKAGES"
              --keyring=/usr/share/keyrings/debian-archive-keyring.gpg
              --extract-hook='for f in "$1"/var/cache/apt/archives/*.deb; do dpkg-deb --show --showformat="\${Package} \${Version} \${Architecture} \${Installed-Size}\n" "$f"; done >"$1/.packages"'
              -q)
    log "building the $ROOTFS_SUITE/$ARCH root filesystem from the .deb's Depends in $ROOTFS"
    ship_mmdebstrap "$ROOTFS_SUITE" "$tmp" "$work/mmdebstrap.$ARCH.log" "${mm[@]}" || {
        cat "$work/mmdebstrap.$ARCH.log" >&2; die "mmdebstrap failed for $ARCH"; }
    rm -rf "${tmp:?}$work" "$work/deb"
    # Keep the cache free of the agent itself: each run unpacks the .deb under test.
    local path
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's#^\./##' | sort -r | while IFS= read -r path; do
        [ -n "$path" ] || continue
        if [ -d "$tmp/$path" ] && [ ! -L "$tmp/$path" ]; then rmdir "$tmp/$path" 2>/dev/null; else rm -f "$tmp/$path"; fi
    done
    sed -i '/^broadcast-agent /d' "$tmp/.packages"
    # The extract variant does not merge /usr and packages ship absolute symlinks;
    # qemu's -L prefix applies to the path a program asks for, not to a symlink's
    # target, which the kernel resolves on the host: make them relative.
    local link dest
    while IFS= read -r -d '' link; do
        dest=$(readlink "$link")
        ln -sfnr "$tmp$dest" "$link"
    done < <(find "$tmp" -type l -lname '/*' -print0)
    printf '%s\n%s packages, %s, built %s\n' "$want" "$(wc -l <"$tmp/.packages")" \
        "$(du -sh "$tmp" | cut -f1)" "$(date -u +%Y-%m-%dT%H:%MZ)" >"$tmp/.broadcast-agent-rootfs"
    rm -rf "$ROOTFS"
    mv "$tmp" "$ROOTFS"
    log "rootfs ready in $((SECONDS - t0)) s: $(sed -n 2p "$stamp")"
}

# --- the agent's config --------------------------------------------------------------------
# set_keys FILE section.key=value...: replaces existing keys in their sections;
# fails if one is not in the file (the shipped file lists every key).
set_keys() {
    local file=$1; shift
    awk -v edits="$(printf '%s\n' "$@")" '
        BEGIN { n = split(edits, e, "\n"); for (i = 1; i <= n; i++) if (e[i] != "") {
                    eq = index(e[i], "="); want[substr(e[i], 1, eq - 1)] = substr(e[i], eq + 1) } }
        /^\[[a-z]+\]/ { section = substr($1, 2, length($1) - 2) }
        {
            key = $1
            if ($2 == "=" && (section "." key) in want) {
                print key " = " want[section "." key]; done[section "." key] = 1; next
            }
            print
        }
        END { for (k in want) if (!(k in done)) { print "missing key " k > "/dev/stderr"; exit 1 } }
    ' "$file" >"$file.new" && chmod --reference="$file" "$file.new" && mv "$file.new" "$file"
}

# --- Janus in the namespace: the project's conf/janus, its API on 127.0.0.1, ports of its own -----
JANUS_BASE=""
janus_start() {
    local attempt base d="$work/janus"
    for attempt in 1 2 3 4 5; do
        base=$((42000 + ($$ * 7 + attempt * 131) % 70 * 100))
        # A listening port answers a connect: take another block.
        if (exec 3<>"/dev/tcp/127.0.0.1/$base") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((base + 1))") 2>/dev/null; then
            continue
        fi
        rm -rf "$d"; mkdir -p "$d"
        bash "$repo/deploy/janus-conf.sh" "$d" >/dev/null  # as shipped, with a fresh admin key
        sed -i "s/rtp_port_range = \"20000-40000\"/rtp_port_range = \"$((base + 10))-$((base + 29))\"/" "$d/janus.jcfg"
        sed -i "s/port = 8088/port = $base/; s/admin_port = 7088/admin_port = $((base + 1))/" "$d/janus.transport.http.jcfg"
        sed -i "s/rtp_port_range = \"10000-10100\"/rtp_port_range = \"$((base + 30))-$((base + 49))\"/" "$d/janus.plugin.audiobridge.jcfg"
        if ! grep -q "port = $base\$" "$d/janus.transport.http.jcfg" || ! grep -q "\"$((base + 10))-" "$d/janus.jcfg" ||
            ! grep -q "\"$((base + 30))-" "$d/janus.plugin.audiobridge.jcfg"; then
            die "conf/janus changed: cannot set the test ports"
        fi
        janus -F "$d" -o >"$work/janus.log" 2>&1 &
        JANUS_PID=$!
        local i
        for i in $(seq 100); do  # up to 10 s
            kill -0 "$JANUS_PID" 2>/dev/null || break
            if curl -sf -m 1 "http://127.0.0.1:$base/janus/info" >/dev/null; then
                JANUS_BASE=$base JANUS_URL="http://127.0.0.1:$base/janus"
                log "Janus on $JANUS_URL (pid $JANUS_PID, log $work/janus.log)"
                return 0
            fi
            sleep 0.1
        done
        janus_stop
    done
    tail -n 20 "$work/janus.log" >&2
    die "Janus did not start"
}
janus_stop() {
    [ -n "$JANUS_PID" ] || return 0
    kill -INT "$JANUS_PID" 2>/dev/null
    local i
    for i in $(seq 50); do kill -0 "$JANUS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$JANUS_PID" 2>/dev/null
    wait "$JANUS_PID" 2>/dev/null
    JANUS_PID=""
}
janus_post() { curl -sf -m 5 -H 'Content-Type: application/json' -d "$2" "$1"; }
# A session with a Streaming handle of our own, as a viewer would have, and a
# VideoRoom handle: sets PROBE and VPROBE.
probe_connect() {
    local sid hid vid
    sid=$(janus_post "$JANUS_URL" '{"janus":"create","transaction":"p"}' | jq -r '.data.id // empty')
    [ -n "$sid" ] || die "Janus: cannot create a session"
    hid=$(janus_post "$JANUS_URL/$sid" '{"janus":"attach","plugin":"janus.plugin.streaming","transaction":"p"}' |
        jq -r '.data.id // empty')
    [ -n "$hid" ] || die "Janus: cannot attach to the Streaming plugin"
    vid=$(janus_post "$JANUS_URL/$sid" '{"janus":"attach","plugin":"janus.plugin.videoroom","transaction":"p"}' |
        jq -r '.data.id // empty')
    [ -n "$vid" ] || die "Janus: cannot attach to the VideoRoom plugin"
    PROBE="$JANUS_URL/$sid/$hid" VPROBE="$JANUS_URL/$sid/$vid"
}
# How many publishers the VideoRoom room lists (`listparticipants`, publisher:
# true); 0 when it does not exist, "?" when Janus does not answer.
video_room_publishers() {
    janus_post "$VPROBE" "{\"janus\":\"message\",\"transaction\":\"p\",\"body\":{\"request\":\"listparticipants\",\"room\":$ROOM}}" |
        jq -r '.plugindata.data | if .videoroom == "participants" then [.participants[] | select(.publisher == true)] | length
               else 0 end' 2>/dev/null || echo "?"
}
# "VIDEO_AGE AUDIO_AGE" of the mountpoint in ms ("- -" while it does not exist).
mountpoint_ages() {
    janus_post "$PROBE" "{\"janus\":\"message\",\"transaction\":\"p\",\"body\":{\"request\":\"info\",\"id\":$ROOM}}" |
        jq -r '.plugindata.data | if .streaming == "info" then
                 [(.info.media[] | select(.type == "video") | .age_ms), (.info.media[] | select(.type == "audio") | .age_ms)]
                 | map(tostring) | join(" ") else "- -" end' 2>/dev/null || echo "- -"
}

# --- the agent under qemu-user ------------------------------------------------------------------
# How GStreamer finds its plugins under qemu-user without binfmt_misc (each
# point seen here, on both targets):
# - GST_REGISTRY_FORK=no: GStreamer normally scans plugins in a child process,
#   gst-plugin-scanner, at its compiled-in path. A child's exec is not emulated:
#   qemu-user neither applies -L to it nor runs it, and the kernel cannot run an
#   ARM executable without binfmt_misc. Without this setting GStreamer logs
#   "Spawning gst-plugin-scanner helper failed: Failed to execute child process
#   .../gst-plugin-scanner (No such file or directory)" and "External plugin
#   loader failed", then falls back to scanning in-process; with it, it scans
#   in-process straight away: the agent loads each plugin itself, inside the
#   same emulated process. (GST_PLUGIN_SCANNER pointing into the rootfs would
#   not help: the kernel still could not exec it.)
# - GST_PLUGIN_SYSTEM_PATH_1_0=<rootfs>/usr/lib/<triple>/gstreamer-1.0: the
#   compiled-in plugin folder is /usr/lib/<triple>/gstreamer-1.0. qemu's -L
#   prefixes the paths of open() and friends, but qemu-arm does not for statx
#   (32-bit glibc 2.36 stats with it): on armhf, with -L alone, not one plugin is
#   found ("GStreamer element videotestsrc is missing"); on arm64 -L alone
#   happens to work. A host path into the rootfs needs no translation, so both
#   targets get it. The plugins' own libraries are then found by the ARM
#   dynamic loader, through -L.
# - GST_REGISTRY_1_0: a registry file of this test, so neither a registry from
#   another rootfs (--without) nor the host's cache is used: run 1 scans every
#   plugin from scratch, as a Pi's first start does; later runs reuse it, as
#   the unit's CacheDirectory= does on a Pi.
# The environment is otherwise empty (env -i): no GST_PLUGIN_PATH or
# LD_LIBRARY_PATH of the host's leaks in.
set_agent_cmd() {  # AGENT_CMD: the installed binary under qemu-user
    AGENT_CMD=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" LANG=C.UTF-8
        GST_REGISTRY_FORK=no
        GST_PLUGIN_SYSTEM_PATH_1_0="$INSTALL/usr/lib/$TRIPLE/gstreamer-1.0"
        GST_REGISTRY_1_0="$work/$ARCH/registry.bin"
        "$QEMU" -L "$INSTALL" "$INSTALL/usr/bin/broadcast-agent")
}
agent() { "${AGENT_CMD[@]}" "$@"; }

# One `run` with stream.transport = $2: sets RUN_MS to the time to media in ms
# on success; on failure says why (FAIL_REASON).
one_run() {
    local n=$1 uplink=$2
    local agent_log="$work/$ARCH/agent.$uplink.$n.log"
    local t0 t_before t_after ages v a first_seen="" v_ref0="" a_ref0="" v_at="" a_at="" media_ms=""
    set_keys "$CONF" "stream.transport=\"$uplink\"" || { FAIL_REASON="cannot set stream.transport"; return 1; }
    # The previous run's agent destroyed the mountpoint and the VideoRoom room on stop; wait for that.
    local i left
    probe_connect  # a fresh Janus session per run: an idle one expires after 60 s
    for i in $(seq 100); do
        left="$(mountpoint_ages) $(video_room_publishers)"
        [ "$left" = "- - 0" ] && break
        sleep 0.1
    done
    [ "$left" = "- - 0" ] || {
        FAIL_REASON="$uplink run $n: left on Janus before it (mountpoint ages, VideoRoom publishers): $left"; return 1; }
    t0=$(now_ms)
    # Not through a function: $! must be the agent's own pid (env execs qemu), for SIGTERM.
    "${AGENT_CMD[@]}" run --config "$CONF" >"$agent_log" 2>&1 &
    AGENT_PID=$!
    local deadline=$((t0 + MEDIA_TIMEOUT_S * 1000)) verdict=""
    while :; do
        t_before=$(now_ms)
        ages=$(mountpoint_ages)
        t_after=$(now_ms)
        v=${ages% *} a=${ages#* }
        if [ "$v" != - ] && [ "$a" != - ]; then
            # age_ms counts from the mountpoint's creation until a packet arrives:
            # a packet arrived once the moment of the last packet (t - age) is
            # surely later than that reference seen at the first poll.
            if [ -z "$first_seen" ]; then
                first_seen=$t_after v_ref0=$((t_after - v)) a_ref0=$((t_after - a))
            else
                [ -z "$v_at" ] && [ $((t_before - v)) -gt $((v_ref0 + 20)) ] && v_at=$((t_after - t0))
                [ -z "$a_at" ] && [ $((t_before - a)) -gt $((a_ref0 + 20)) ] && a_at=$((t_after - t0))
                if [ -n "$v_at" ] && [ -n "$a_at" ] && [ -z "$media_ms" ]; then
                    media_ms=$((v_at > a_at ? v_at : a_at))
                fi
                # Judge the flow itself only 2 s after the mountpoint appeared.
                if [ -n "$media_ms" ] && [ $((t_after - first_seen)) -ge 2000 ] && [ "$v" -lt 1000 ] && [ "$a" -lt 1000 ]; then
                    verdict=ok; break
                fi
            fi
        fi
        if grep -qE 'is missing: install|missing here: install' "$agent_log"; then verdict=missing; break; fi
        kill -0 "$AGENT_PID" 2>/dev/null || { verdict=exited; break; }
        [ "$(now_ms)" -lt "$deadline" ] || { verdict=timeout; break; }
        sleep 0.1
    done
    local status="" ok=0 publishers=""
    # What status --json must say: live, both capture pipelines running (with
    # webrtc the uplink pipeline too), this uplink; with webrtc its publisher
    # connected (and Janus listing exactly one).
    local want="live running running rtp" said="phase live, video and microphone running, uplink rtp"
    [ "$uplink" = webrtc ] && want="live running running running webrtc connected" \
        said="phase live, video, microphone and uplink running, uplink webrtc with its publisher connected"
    case "$verdict" in
        ok)
            echo "    $uplink run $n: video at Janus after $(secs "$v_at") s, audio after $(secs "$a_at") s (age_ms now $v / $a)" >&2
            # status --json over the control socket, polled until it says all that (bounded).
            for i in $(seq 60); do
                status=$(agent status --json --config "$CONF" 2>>"$agent_log") &&
                    [ "$(jq -r '[.phase, (.pipelines[] | select(.name == "video" or .name == "microphone" or .name == "uplink") | .state),
                                 .room.uplink.kind, (if .room.uplink.kind == "webrtc" then .room.uplink.publisher else empty end)]
                                | join(" ")' <<<"$status")" = "$want" ] &&
                    { [ "$uplink" != webrtc ] || { publishers=$(video_room_publishers) && [ "$publishers" = 1 ]; }; } &&
                    { ok=1; break; }
                kill -0 "$AGENT_PID" 2>/dev/null || break
                sleep 0.5
            done
            if [ "$ok" = 1 ]; then
                echo "    $uplink run $n: status --json: $(jq -c '{phase, pipelines: [.pipelines[] | {name, state}],
                        uplink: .room.uplink | {kind, publisher}, media_age: .room.media_age}' <<<"$status")${publishers:+, VideoRoom publishers: $publishers}" >&2
            else
                FAIL_REASON="$uplink run $n: status --json never said $said"
                [ "$uplink" = webrtc ] && FAIL_REASON+=" with 1 VideoRoom publisher (${publishers:-?})"
                echo "    $FAIL_REASON; last: $(jq -c '{phase, pipelines: [.pipelines[] | {name, state}], uplink: .room.uplink}' \
                        <<<"$status" 2>/dev/null || echo "${status:-no reply}")" >&2
            fi ;;
        missing) echo "    $uplink run $n: the agent reports a missing GStreamer element:" >&2
                 grep -E 'is missing: install|missing here: install' "$agent_log" | sort -u | sed 's/^/      /' >&2
                 FAIL_REASON="$uplink: $(grep -oE '(GStreamer element [^ ]+ is missing|[^:]+ missing here): install [a-z0-9.+-]+' "$agent_log" |
                     sed 's/^ *//' | sort -u | paste -sd';' -)" ;;
        exited) FAIL_REASON="$uplink run $n: the agent exited"
                echo "    $uplink run $n: the agent exited:" >&2; tail -n 15 "$agent_log" | sed 's/^/      /' >&2 ;;
        timeout) FAIL_REASON="$uplink run $n: no media at Janus within $MEDIA_TIMEOUT_S s"
                 echo "    $FAIL_REASON (video age_ms $v, audio $a)" >&2
                 grep -E 'WARN|ERROR' "$agent_log" | tail -n 10 | sed 's/^/      /' >&2 ;;
    esac
    # Stop as systemd does (SIGTERM); the agent removes the rooms and the mountpoint.
    kill -TERM "$AGENT_PID" 2>/dev/null
    for i in $(seq 200); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$AGENT_PID" 2>/dev/null
    wait "$AGENT_PID" 2>/dev/null
    AGENT_PID=""
    [ "$ok" = 1 ] || return 1
    RUN_MS=$media_ms
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# "M s (median of K: a b c)" of the times in ms given as arguments.
median_text() {
    local ms text
    text="$(secs "$(printf '%s\n' "$@" | median)") s"
    [ $# -gt 1 ] && text+=" (median of $#:$(for ms in "$@"; do printf ' %s' "$(secs "$ms")"; done))"
    echo "$text"
}

# One target: sets TIMES and ELAPSED; returns non-zero on failure (FAIL_REASON).
test_arch() {
    local deb=$1 t0=$SECONDS ROOTFS
    ARCH=$(dpkg-deb --field "$deb" Architecture)
    set_arch "$ARCH"
    mkdir -p "$work/$ARCH"
    log "$ARCH: $(basename "$deb")"
    # Built before entering the namespace (nothing in here reaches a mirror).
    rootfs_ready "$deb" || { FAIL_REASON="no root filesystem (its build failed, see above)"; return 1; }
    ROOTFS=$(rootfs_dir "$ARCH")
    if [ -n "$without" ] && grep -q "^$without " "$ROOTFS/.packages"; then
        log "note: $without is in the rootfs anyway, pulled in by another package: its absence from Depends" \
            "is harmless and this run cannot fail for it (pick a package nothing else depends on)"
    fi
    # Install: a hard-linked copy of the cached rootfs, the .deb unpacked into it.
    INSTALL=$installs/$ARCH
    cp -al "$ROOTFS" "$INSTALL"
    dpkg-deb -x "$deb" "$INSTALL"
    [ -x "$INSTALL/usr/bin/broadcast-agent" ] || { FAIL_REASON="the .deb has no /usr/bin/broadcast-agent"; return 1; }
    CONF=$INSTALL/etc/broadcast-agent/agent.toml
    set_agent_cmd
    set_keys "$CONF" \
        "janus.url=\"$JANUS_URL\"" "room.admin_key_file=\"$work/janus/broadcast-agent.admin_key\"" \
        "room.secret=\"arm-e2e-room-secret\"" \
        "stream.video_port=$((JANUS_BASE + 2))" "stream.audio_port=$((JANUS_BASE + 3))" \
        "stream.video_rtcp_port=$((JANUS_BASE + 4))" "stream.transport=\"${UPLINKS[0]}\"" \
        "speaker.enabled=false" "gpio.enabled=false" \
        "video.source=\"test\"" "video.width=160" "video.height=120" "video.framerate=10" \
        "microphone.enabled=true" "microphone.device=\"test\"" \
        "control.socket=\"$work/$ARCH/control.sock\"" || { FAIL_REASON="cannot edit agent.toml"; return 1; }
    log "$ARCH: broadcast-agent check --config /etc/broadcast-agent/agent.toml (under $QEMU)"
    if ! agent check --config "$CONF" >"$work/$ARCH/check.out" 2>&1; then
        sed 's/^/      /' "$work/$ARCH/check.out" >&2
        FAIL_REASON="check: $(tail -n1 "$work/$ARCH/check.out")"
        return 1
    fi
    echo "    $(head -n1 "$work/$ARCH/check.out")" >&2
    log "$ARCH: broadcast-agent run, $runs time(s) per uplink (${UPLINKS[*]})"
    rm -f "$work/$ARCH/registry.bin"
    local n uplink cold="" rtp=() webrtc=()
    for n in $(seq "$runs"); do
        for uplink in "${UPLINKS[@]}"; do
            one_run "$n" "$uplink" || return 1
            # The first start scans every plugin into a new registry (a Pi's first
            # start); later ones reuse it (every later start on a Pi, which keeps it
            # in CacheDirectory=).
            if [ -z "$cold" ]; then cold=$RUN_MS
            elif [ "$uplink" = rtp ]; then rtp+=("$RUN_MS")
            else webrtc+=("$RUN_MS")
            fi
        done
    done
    TIMES="rtp cold $(secs "$cold") s"
    [ ${#rtp[@]} -gt 0 ] && TIMES+=", warm $(median_text "${rtp[@]}")"
    TIMES+="; webrtc $(median_text "${webrtc[@]}")"
    ELAPSED=$((SECONDS - t0))
    rm -rf "$INSTALL"
}

# --- main, second half: in the private network namespace ------------------------------------
# Loopback and the LAN (tests/common/netns.rs Netns::with_lan); then Janus and,
# per target, the agent.
lan_up() {
    ip link set lo up &&
        ip link add lan0 type veth peer name lan1 &&
        ip addr add "${LAN[0]}/24" dev lan0 && ip addr add "${LAN[1]}/24" dev lan1 &&
        ip link set lan0 up && ip link set lan1 up &&
        ip route add default via "${LAN[0]}"
}
if [ "$inside" = 1 ]; then
    # Not the machine's network: a namespace of this script's own.
    [ "$(readlink /proc/self/ns/net)" != "$(readlink /proc/1/ns/net)" ] || die "--inside: not in a namespace of its own"
    lan_up || die "cannot set up the namespace's network (ip link/addr/route)"
    log "network namespace: lo, lan0 ${LAN[0]}/24 and lan1 ${LAN[1]}/24 (a veth pair), default route via ${LAN[0]}"
    janus_start
    summary=() failed=0
    for deb in "${debs[@]}"; do
        TIMES="" ELAPSED=0 FAIL_REASON="" t0=$SECONDS
        if test_arch "$deb"; then
            summary+=("$(printf 'arm-e2e: %-5s PASS  time to media: %s  %d s%s' \
                "$ARCH" "$TIMES" "$ELAPSED" "${without:+  [--without $without]}")")
        else
            failed=1
            summary+=("$(printf 'arm-e2e: %-5s FAIL  %s  %d s%s' "${ARCH:-?}" "${FAIL_REASON:-see above}" $((SECONDS - t0)) "${without:+  [--without $without]}")")
        fi
    done
    echo
    printf '%s\n' "${summary[@]}"
    exit $failed
fi

# --- main, first half: everything that needs the network -----------------------------------------
ensure_host_packages
if [ ${#debs[@]} -eq 0 ]; then
    for arch in "${arches[@]}"; do
        set_arch "$arch"
        deb=$(bash "$repo/deploy/build-deb.sh" "$RUST_TARGET" 2>"$work/build-deb.log" | tail -n1)
        [ -f "$deb" ] || { cat "$work/build-deb.log" >&2; die "deploy/build-deb.sh $RUST_TARGET made no package"; }
        debs+=("$deb")
    done
fi
# --without: the same package with PKG left out of Depends.
if [ -n "$without" ]; then
    for i in "${!debs[@]}"; do
        arch=$(dpkg-deb --field "${debs[i]}" Architecture)
        mkdir -p "$work/$arch"
        out="$work/$arch/$(basename "${debs[i]%.deb}")-without-$without.deb"
        deb_without "${debs[i]}" "$without" "$out"
        debs[i]=$out
    done
fi
# The root filesystems of all targets at once: their downloads overlap.
t_rootfs=$SECONDS pids=()
for deb in "${debs[@]}"; do
    ARCH=$(dpkg-deb --field "$deb" Architecture)
    log "$ARCH: Depends: $(dpkg-deb --field "$deb" Depends)"
    ( ensure_rootfs "$deb" ) >"$work/rootfs.$ARCH.log" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[i]}"
    cat "$work/rootfs.$(dpkg-deb --field "${debs[i]}" Architecture).log" >&2
done
log "root filesystems: $((SECONDS - t_rootfs)) s"
# The rest in a private network namespace. Bounded: every start waits at most
# MEDIA_TIMEOUT_S for media and about a minute more (status, stop); timeout
# signals its whole process group (Janus and the agents with it).
inner=(--inside --runs "$runs" ${without:+--without "$without"})
for deb in "${debs[@]}"; do inner+=(--deb "$deb"); done
limit=$(( ${#debs[@]} * runs * ${#UPLINKS[@]} * (MEDIA_TIMEOUT_S + 60) + 120 ))
log "entering a private network namespace (unshare -n; at most $limit s)"
ARM_E2E_WORK=$work ARM_E2E_INSTALLS=$installs timeout --kill-after=10 "$limit" unshare -n -- bash "$0" "${inner[@]}" &
INNER_PID=$!
wait "$INNER_PID"
status=$? INNER_PID=""
[ "$status" = 124 ] && echo "arm-e2e: FAIL  the namespace's part took more than $limit s"
exit $status
