#!/usr/bin/env bash
# Cross-build broadcast-agent for a Raspberry Pi without Docker.
#
#   deploy/cross-build.sh TARGET [--test] [--no-release] [--refresh-sysroot]
#   deploy/cross-build.sh all --test          # what CI runs
#   deploy/cross-build.sh env TARGET          # print the exports, to run cargo by hand
#   deploy/cross-build.sh mirrors             # print the Debian mirrors read from apt's sources
#
# TARGET is one of
#   aarch64-unknown-linux-gnu     (aliases: aarch64, arm64)  64-bit Raspberry Pi OS:
#                                 Pi 3, Pi 4, Pi 400, Pi 5, Zero 2 W, CM3/CM4/CM5
#   armv7-unknown-linux-gnueabihf (aliases: armv7, armhf)    32-bit Raspberry Pi OS on an
#                                 ARMv7+ CPU: Pi 2, Pi 3, Pi 4, Pi 400, Zero 2 W
#   all                           both of the above
# Not covered: Pi 1, Zero and Zero W (ARMv6), which need arm-unknown-linux-gnueabihf
# and a Raspbian (not Debian) armhf sysroot; an armv7 binary dies there with SIGILL.
#
# What it does, per target:
#   1. installs the host packages it needs (cross gcc, qemu-user-static, mmdebstrap, ...)
#      with apt-get, and `rustup target add`s the target;
#   2. extracts a Debian bookworm sysroot (glibc 2.36, GStreamer 1.22, the same as
#      Raspberry Pi OS Bookworm) with `mmdebstrap --variant=extract`, from the Debian
#      mirror named in this machine's apt sources, cached in $SYSROOT_CACHE (a cached
#      one is rebuilt when the package lists in this script change or it lacks a pkg-config
#      module the build needs; --refresh-sysroot rebuilds it anyway);
#   3. `cargo build --release --target T` with the cross linker, --sysroot and
#      pkg-config pointed into the sysroot, and prints `file` output and size; then
#      runs the binary under qemu-user for its manual pages and shell completions
#      (share/ beside it, which deploy/build-deb.sh packages);
#   4. with --test: `cargo test --target T --bins` (unit tests only: tests/ needs a
#      Janus server) run under qemu-user with the sysroot's GStreamer plugins.
# Exits non-zero if any build or unit test run fails.
#
# Environment:
#   CARGO_TARGET_DIR  default <repo>/target/cross (keeps off the native build's lock)
#   SYSROOT_CACHE     default /var/cache/broadcast-agent-sysroots
#   DEBIAN_MIRROR     Debian mirror URI; default: read from /etc/apt/sources.list(.d)
#   DEBIAN_SECURITY_MIRROR  security mirror URI; default: read the same way
#   SYSROOT_SUITE     default bookworm
#   SYSROOT_EXTRA_PACKAGES  comma-separated extra target packages for the sysroot
#   CARGO_BUILD_ARGS  extra arguments for both cargo commands (e.g. "--locked")
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

SYSROOT_CACHE=${SYSROOT_CACHE:-/var/cache/broadcast-agent-sysroots}
SYSROOT_SUITE=${SYSROOT_SUITE:-bookworm}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/cross}
# gstreamer1.0-plugins-good is only for unit tests that build pipelines with
# its elements (rtp, vpx, ...); the build itself needs only the -dev packages.
# libgstreamer-plugins-bad1.0-0 holds libgstwebrtc-1.0.so.0, which the binary links
# (gstreamer-webrtc); it comes with its own Depends, as on the Pi: libnice10, libva2,
# libvulkan1, libgupnp-igd-1.0-4, ... (13 packages, +17 MB). The unit tests use no
# element of gstreamer1.0-plugins-bad or gstreamer1.0-nice (webrtcbin, nicesrc): tests
# skip when an element is missing; add those two with SYSROOT_EXTRA_PACKAGES if a test
# must run them under qemu.
SYSROOT_PACKAGES="libc6-dev,libgstreamer1.0-dev,libgstreamer-plugins-base1.0-dev,libgstreamer-plugins-bad1.0-0,libasound2-dev,gstreamer1.0-plugins-base,gstreamer1.0-plugins-good${SYSROOT_EXTRA_PACKAGES:+,$SYSROOT_EXTRA_PACKAGES}"
# Unpacked into the sysroot WITHOUT their Depends (an extract hook `apt-get download`s
# them for the target architecture from the same sources and `dpkg-deb -x`s them):
# libgstreamer-plugins-bad1.0-dev ships gstreamer-webrtc-1.0.pc, the gst/webrtc headers
# and the libgstwebrtc-1.0.so link that gstreamer-webrtc-sys needs, but Depends on
# libopencv-dev, libgstreamer-opencv1.0-0 and gir1.2-gst-plugins-bad-1.0: with them the
# arm64 sysroot grows from 0.6 to 1.3 GB (+250 packages: OpenCV, GDAL, HDF5, BLAS, ...),
# none of which the build uses. Its `(= version)` Depends on packages in the sysroot
# (libgstreamer-plugins-bad1.0-0) are checked; the others are skipped and logged.
SYSROOT_NODEPS_PACKAGES="libgstreamer-plugins-bad1.0-dev"
# The pkg-config modules the -sys crates ask for: a sysroot without one of them is rebuilt.
SYSROOT_PC_MODULES="gstreamer-1.0 gstreamer-base-1.0 gstreamer-app-1.0 gstreamer-rtp-1.0 gstreamer-net-1.0 gstreamer-sdp-1.0 gstreamer-webrtc-1.0 alsa"
HOST_PACKAGES="gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user-static mmdebstrap pkg-config debian-archive-keyring file"
ALL_TARGETS="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'cross-build: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: cannot install packages / extract sysroots"
    SUDO=sudo
fi

# --- per-target facts --------------------------------------------------------
canon_target() {
    case "$1" in
        aarch64|arm64|aarch64-unknown-linux-gnu) echo aarch64-unknown-linux-gnu ;;
        armv7|armhf|armv7-unknown-linux-gnueabihf) echo armv7-unknown-linux-gnueabihf ;;
        arm|armv6|arm-unknown-linux-gnueabihf)
            die "arm-unknown-linux-gnueabihf (Pi 1 / Zero / Zero W, ARMv6) is not supported: Debian's armhf is ARMv7-only" ;;
        *) die "unknown target '$1' (want aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf or all)" ;;
    esac
}
set_target_vars() {  # sets DEB_ARCH GNU_TYPE QEMU for $1
    case "$1" in
        aarch64-unknown-linux-gnu) DEB_ARCH=arm64 GNU_TYPE=aarch64-linux-gnu QEMU=qemu-aarch64-static ;;
        armv7-unknown-linux-gnueabihf) DEB_ARCH=armhf GNU_TYPE=arm-linux-gnueabihf QEMU=qemu-arm-static ;;
    esac
    SYSROOT=$SYSROOT_CACHE/$SYSROOT_SUITE-$DEB_ARCH
}

# --- host packages / rust targets --------------------------------------------
ensure_host_packages() {
    bash "$here/ensure-packages.sh" --with-recommends $HOST_PACKAGES
}
ensure_rust_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$1" && return 0
    log "rustup target add $1"
    rustup target add "$1"
}

# --- mirror discovery (never hard-code a mirror: read the machine's apt sources) ---
# Prints "URI SUITE" for every enabled binary source.
apt_sources() {
    local f
    for f in ${APT_ETC:-/etc/apt}/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no")
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                types = ""; enabled = ""; nu = 0; ns = 0
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                if (key == "types")   { types = $0; sub(/^[^:]*:/, "", types) }
                if (key == "enabled") { enabled = tolower($2) }
                if (key == "uris")    { for (k = 2; k <= NF; k++) u[++nu] = $k }
                if (key == "suites")  { for (k = 2; k <= NF; k++) s[++ns] = $k }
            }
            END { flush() }' "$f"
    done
    for f in "${APT_ETC:-/etc/apt}"/sources.list "${APT_ETC:-/etc/apt}"/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        # deb [opt=val ...] URI SUITE COMPONENT...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
}
debian_suite_re='^(buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)'
find_mirrors() {
    local sources
    sources=$(apt_sources | sed 's#/*[[:space:]]# #')
    if [ -z "${DEBIAN_MIRROR:-}" ]; then
        DEBIAN_MIRROR=$(printf '%s\n' "$sources" |
            awk -v re="$debian_suite_re" '$2 ~ re && $2 !~ /-security$|\/updates$/ { print $1; exit }')
    fi
    if [ -z "${DEBIAN_SECURITY_MIRROR:-}" ]; then
        DEBIAN_SECURITY_MIRROR=$(printf '%s\n' "$sources" |
            awk -v re="$debian_suite_re" '$2 ~ re && $2 ~ /-security$/ { print $1; exit }')
    fi
    [ -n "$DEBIAN_MIRROR" ] || die "no Debian mirror in /etc/apt/sources.list(.d) (not a Debian host?): set DEBIAN_MIRROR to a Debian mirror URI (the one ending in /debian)"
}

# --- sysroot ------------------------------------------------------------------
# mmdebstrap extract hook ($1: the sysroot being built): fetches the
# SYSROOT_NODEPS_PACKAGES with mmdebstrap's own apt configuration (target
# architecture, same sources and index, so the version that matches the library package
# just extracted) and unpacks them without their Depends. Run by sh (mmdebstrap passes
# no APT_CONFIG, only MMDEBSTRAP_APT_CONFIG); the download folder is in the sysroot's
# apt cache, which mmdebstrap empties at the end.
# shellcheck disable=SC2016  # expanded by the hook's sh
NODEPS_HOOK='set -eu
archives="$1/var/cache/apt/archives" dl="$1/var/cache/apt/archives/nodeps"
mkdir -p "$dl" && cd "$dl"
chown _apt "$dl" 2>/dev/null || true  # else apt downloads unsandboxed, with a warning
APT_CONFIG=$MMDEBSTRAP_APT_CONFIG apt-get download -q=2 @PACKAGES@
for deb in "$dl"/*.deb; do
    name=$(dpkg-deb --field "$deb" Package) ver=$(dpkg-deb --field "$deb" Version)
    skipped=""
    for dep in $(dpkg-deb --field "$deb" Depends | tr -d " " | tr "," " "); do
        dep=${dep%%|*} dname=${dep%%(*}
        have=""
        for f in "$archives"/"$dname"_*.deb; do
            [ -f "$f" ] && have=$(dpkg-deb --field "$f" Version)
        done
        case "$dep" in
            *"(="*) want=${dep#*(=} want=${want%)} ;;
            *) want="" ;;
        esac
        if [ -z "$have" ]; then
            skipped="$skipped $dname"
        elif [ -n "$want" ] && [ "$have" != "$want" ]; then
            echo "sysroot: $name $ver wants $dname $want, the sysroot has $have" >&2
            exit 1
        fi
    done
    dpkg-deb -x "$deb" "$1"
    echo "sysroot: unpacked $name $ver without its Depends (not in the sysroot:$skipped)" >&2
done
cd / && rm -rf "$dl"'

# Whether the sysroot $1 has every pkg-config module the build asks for.
sysroot_has_modules() {
    PKG_CONFIG_LIBDIR="$1/usr/lib/$GNU_TYPE/pkgconfig:$1/usr/share/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$1" \
        pkg-config --exists $SYSROOT_PC_MODULES
}

ensure_sysroot() {
    local stamp="$SYSROOT/.broadcast-agent-sysroot" want
    # The first line of the stamp: any change to what goes in rebuilds a cached sysroot.
    want="suite=$SYSROOT_SUITE arch=$DEB_ARCH packages=$SYSROOT_PACKAGES nodeps=$SYSROOT_NODEPS_PACKAGES"
    if [ "${REFRESH_SYSROOT:-0}" = 0 ] && [ -f "$stamp" ]; then
        if [ "$(head -n1 "$stamp")" != "$want" ]; then
            log "sysroot $SYSROOT was made for other packages ($(head -n1 "$stamp")): rebuilding"
        elif ! sysroot_has_modules "$SYSROOT"; then
            log "sysroot $SYSROOT lacks a pkg-config module of: $SYSROOT_PC_MODULES: rebuilding"
        else
            log "sysroot $SYSROOT (cached, $(sed -n 2p "$stamp"))"
            return 0
        fi
    fi
    find_mirrors
    local tmp="$SYSROOT.tmp.$$" t0=$SECONDS
    $SUDO mkdir -p "$SYSROOT_CACHE"
    $SUDO rm -rf "$tmp"
    local main="deb $DEBIAN_MIRROR $SYSROOT_SUITE main"
    local updates="deb $DEBIAN_MIRROR $SYSROOT_SUITE-updates main"
    local security=""
    [ -n "$DEBIAN_SECURITY_MIRROR" ] && security="deb $DEBIAN_SECURITY_MIRROR $SYSROOT_SUITE-security main"
    local mm=(mmdebstrap --mode=root --variant=extract --architectures="$DEB_ARCH"
              --include="$SYSROOT_PACKAGES" --keyring=/usr/share/keyrings/debian-archive-keyring.gpg
              --extract-hook="${NODEPS_HOOK//@PACKAGES@/$SYSROOT_NODEPS_PACKAGES}"
              -q)
    log "extracting $SYSROOT_SUITE/$DEB_ARCH sysroot into $SYSROOT"
    if [ -n "$security" ] && $SUDO "${mm[@]}" "$SYSROOT_SUITE" "$tmp" "$main" "$updates" "$security"; then
        :
    else
        [ -n "$security" ] && log "retrying without the security suite"
        $SUDO rm -rf "$tmp"
        $SUDO "${mm[@]}" "$SYSROOT_SUITE" "$tmp" "$main" "$updates" || die "mmdebstrap failed for $DEB_ARCH"
    fi
    # The extract variant does not merge /usr, and -dev packages ship absolute
    # symlinks (usr/lib/<triple>/libz.so -> /lib/<triple>/libz.so.1...) that would
    # resolve on the host: make every absolute symlink relative inside the sysroot.
    local link dest n=0
    while IFS= read -r -d '' link; do
        dest=$(readlink "$link")
        $SUDO ln -sfnr "$tmp$dest" "$link"
        n=$((n + 1))
    done < <($SUDO find "$tmp" -type l -lname '/*' -print0)
    log "made $n absolute symlinks relative"
    sysroot_has_modules "$tmp" ||
        die "the $DEB_ARCH sysroot lacks a pkg-config module of: $SYSROOT_PC_MODULES"
    # Record what we extracted.
    local gstver glibcver
    gstver=$(sed -n 's/^Version: //p' "$tmp/usr/lib/$GNU_TYPE/pkgconfig/gstreamer-1.0.pc" 2>/dev/null || true)
    glibcver=$(cat "$tmp"/lib/"$GNU_TYPE"/libc.so.6 "$tmp"/usr/lib/"$GNU_TYPE"/libc.so.6 2>/dev/null | grep -a -o -m1 'release version [0-9.]*'  | awk '{sub(/\.$/, "", $3); print $3}' || true)
    printf '%s\nGStreamer %s, glibc %s, extracted %s\n' "$want" "${gstver:-?}" "${glibcver:-?}" \
        "$(date -u +%Y-%m-%dT%H:%MZ)" | $SUDO tee "$tmp/.broadcast-agent-sysroot" >/dev/null
    $SUDO rm -rf "$SYSROOT"
    $SUDO mv "$tmp" "$SYSROOT"
    log "sysroot ready in $((SECONDS - t0)) s: $(sed -n 2p "$stamp"), $(du -sh "$SYSROOT" | cut -f1)"
}

# --- cargo configuration for one target -------------------------------------
# Linker, sysroot link arg and qemu runner go in a generated --config file; the
# committed .cargo/config.toml only names the linker, so it stays valid in cross's
# containers, where the libraries are in the container's own multiarch paths.
write_cargo_config() {
    CARGO_CONFIG="$CARGO_TARGET_DIR/$1.cross-build.toml"
    mkdir -p "$CARGO_TARGET_DIR"
    cat >"$CARGO_CONFIG" <<EOF
# generated by deploy/cross-build.sh, do not edit
[target.$1]
linker = "$GNU_TYPE-gcc"
rustflags = ["-C", "link-arg=--sysroot=$SYSROOT"]
runner = ["$QEMU", "-L", "$SYSROOT"]
EOF
}
target_env() {  # exports for build scripts (pkg-config) and the test runner
    local t_=${1//-/_}
    export PKG_CONFIG_ALLOW_CROSS=1
    export "PKG_CONFIG_SYSROOT_DIR_$t_=$SYSROOT"
    export "PKG_CONFIG_LIBDIR_$t_=$SYSROOT/usr/lib/$GNU_TYPE/pkgconfig:$SYSROOT/usr/share/pkgconfig"
    # Under qemu-user the plugin scanner cannot be forked and qemu-arm ignores -L for
    # statx, so point GStreamer at the sysroot's plugins explicitly.
    export GST_REGISTRY_FORK=no
    export GST_PLUGIN_SYSTEM_PATH_1_0="$SYSROOT/usr/lib/$GNU_TYPE/gstreamer-1.0"
    export GST_REGISTRY="$CARGO_TARGET_DIR/$1/gst-registry.bin"
    unset GST_PLUGIN_PATH GST_PLUGIN_PATH_1_0
}

# The manual pages (gzipped) and the bash, zsh and fish completions, made by the
# binary $1 itself (under qemu-user) from its command-line definitions, into share/
# beside it: the files Cargo.toml's [package.metadata.deb] assets name.
write_share() {
    local bin=$1 share=${1%/*}/share
    rm -rf "$share"
    mkdir -p "$share/man" "$share/completions"
    "$QEMU" -L "$SYSROOT" "$bin" man "$share/man" >/dev/null
    gzip -9n "$share"/man/*.1
    "$QEMU" -L "$SYSROOT" "$bin" completions bash >"$share/completions/broadcast-agent.bash"
    "$QEMU" -L "$SYSROOT" "$bin" completions zsh >"$share/completions/_broadcast-agent"
    "$QEMU" -L "$SYSROOT" "$bin" completions fish >"$share/completions/broadcast-agent.fish"
    echo "manual pages and completions: $(cd "$share" && find . -type f | sort | paste -sd ' ')"
}

fmt_size() { awk -v b="$1" 'BEGIN { printf "%d bytes (%.2f MiB)", b, b / 1048576 }'; }

# --- one target ----------------------------------------------------------------
RESULTS=()
build_target() {
    local t=$1 t0=$SECONDS tb tt status=ok
    set_target_vars "$t"
    ensure_rust_target "$t"
    ensure_sysroot
    write_cargo_config "$t"
    (
        target_env "$t"
        cd "$repo"
        # shellcheck disable=SC2086
        if [ "$RELEASE" = 1 ]; then
            log "cargo build --release --target $t"
            tb=$SECONDS
            cargo build --release --target "$t" --config "$CARGO_CONFIG" ${CARGO_BUILD_ARGS:-} || exit 11
            echo "    release build: $((SECONDS - tb)) s" >&2
            local bin="$CARGO_TARGET_DIR/$t/release/broadcast-agent" stripped
            file "$bin"
            if file "$bin" | grep -q 'not stripped'; then
                stripped="$bin.stripped"
                "$GNU_TYPE-strip" -o "$stripped" "$bin"
            else
                stripped="$bin"
            fi
            echo "stripped size: $(fmt_size "$(stat -c %s "$stripped")")  $stripped"
            echo "needs: $("$GNU_TYPE-objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1)," \
                 "$("$GNU_TYPE-objdump" -p "$bin" | awk '/NEEDED/ { printf "%s%s", s, $2; s = " " }')"
            write_share "$bin" || exit 11
        fi
        if [ "$TEST" = 1 ]; then
            log "cargo test --target $t --bins (under $QEMU)"
            tt=$SECONDS
            cargo test --target "$t" --bins --config "$CARGO_CONFIG" ${CARGO_BUILD_ARGS:-} || exit 12
            echo "    unit tests: $((SECONDS - tt)) s" >&2
        fi
    ) || { case $? in 11) status="BUILD FAILED" ;; 12) status="TESTS FAILED" ;; *) status="FAILED" ;; esac; }
    RESULTS+=("$(printf '%-32s %-13s %4d s' "$t" "$status" $((SECONDS - t0)))")
    [ "$status" = ok ]
}

# --- main ----------------------------------------------------------------------
TEST=0 RELEASE=1 REFRESH_SYSROOT=0 targets=() mode=build
while [ $# -gt 0 ]; do
    case "$1" in
        --test) TEST=1 ;;
        --no-release) RELEASE=0 ;;
        --refresh-sysroot) REFRESH_SYSROOT=1 ;;
        -h|--help) usage; exit 0 ;;
        env) mode=env ;;
        mirrors) mode=mirrors ;;
        all) targets+=($ALL_TARGETS) ;;
        -*) die "unknown option $1" ;;
        *) targets+=("$(canon_target "$1")") ;;
    esac
    shift
done
if [ "$mode" = mirrors ]; then  # for other scripts (tests/ship/arm-e2e.sh): one place reads apt's sources
    find_mirrors
    printf 'DEBIAN_MIRROR=%s\nDEBIAN_SECURITY_MIRROR=%s\n' "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR"
    exit 0
fi
[ ${#targets[@]} -gt 0 ] || { usage >&2; exit 2; }

if [ "$mode" = env ]; then
    [ ${#targets[@]} -eq 1 ] || die "env takes one target"
    set_target_vars "${targets[0]}"
    [ -f "$SYSROOT/.broadcast-agent-sysroot" ] || die "no sysroot yet: run deploy/cross-build.sh ${targets[0]} first"
    write_cargo_config "${targets[0]}"
    target_env "${targets[0]}"
    t_=${targets[0]//-/_}
    for v in CARGO_TARGET_DIR PKG_CONFIG_ALLOW_CROSS "PKG_CONFIG_SYSROOT_DIR_$t_" "PKG_CONFIG_LIBDIR_$t_" \
             GST_REGISTRY_FORK GST_PLUGIN_SYSTEM_PATH_1_0 GST_REGISTRY; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    echo "# then: cargo build --target ${targets[0]} --config $CARGO_CONFIG"
    exit 0
fi

[ -n "${RUSTFLAGS:-}" ] && log "warning: RUSTFLAGS is set and overrides the per-target --sysroot rustflags"
T0=$SECONDS
ensure_host_packages
failed=0
for t in "${targets[@]}"; do
    build_target "$t" || failed=1
done
echo
echo "cross-build summary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR, test=$TEST):"
printf '  %s\n' "${RESULTS[@]}"
echo "  total: $((SECONDS - T0)) s"
exit $failed
