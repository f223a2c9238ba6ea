#!/usr/bin/env bash
# Build the broadcast-agent .deb for a Raspberry Pi from the cross-built binary.
#
#   deploy/build-deb.sh TARGET|all [--rebuild]
#
# TARGET: aarch64-unknown-linux-gnu (arm64 .deb, 64-bit Pi OS) or
#         armv7-unknown-linux-gnueabihf (armhf .deb, 32-bit Pi OS); aliases arm64, armhf.
# Uses $CARGO_TARGET_DIR/<target>/release/broadcast-agent (default target/cross, where
# deploy/cross-build.sh puts it) and the manual pages and completions it made in
# release/share/, running cross-build.sh first if they are missing or with --rebuild.
# Packages them with `cargo deb --no-build` (installs cargo-deb if needed) using
# [package.metadata.deb] in Cargo.toml and the maintainer scripts in deploy/deb/.
# The .deb goes to $CARGO_TARGET_DIR/deb/; its path is the last line printed.
#
# Package layout: /usr/bin/broadcast-agent, /lib/systemd/system/broadcast-agent.service
# (enabled and started on install), /etc/broadcast-agent/agent.toml (conffile,
# 0640 root:broadcast-agent), man pages in /usr/share/man/man1, bash, zsh and fish
# completions in /usr/share/{bash-completion/completions,zsh/vendor-completions,
# fish/vendor_completions.d}; postinst creates the system user broadcast-agent and
# adds it to audio, video and gpio where they exist. Install on the Pi with
#   sudo apt install ./broadcast-agent_<version>_arm64.deb
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/cross}
out_dir=$CARGO_TARGET_DIR/deb

die() { printf 'build-deb: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

targets=() rebuild=0
for a in "$@"; do
    case "$a" in
        --rebuild) rebuild=1 ;;
        all) targets+=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf) ;;
        aarch64|arm64|aarch64-unknown-linux-gnu) targets+=(aarch64-unknown-linux-gnu) ;;
        armv7|armhf|armv7-unknown-linux-gnueabihf) targets+=(armv7-unknown-linux-gnueabihf) ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $a" ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || die "usage: deploy/build-deb.sh TARGET|all [--rebuild]"

grep -q '^\[package\.metadata\.deb\]' "$repo/Cargo.toml" ||
    die "Cargo.toml has no [package.metadata.deb] section (see the packaging notes)"
for f in "$repo/systemd/broadcast-agent.service" "$repo/conf/agent.toml"; do
    [ -f "$f" ] || die "$f is missing"
done

if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install cargo-deb --locked
fi

mkdir -p "$out_dir"
for t in "${targets[@]}"; do
    bin=$CARGO_TARGET_DIR/$t/release/broadcast-agent
    if [ "$rebuild" = 1 ] || [ ! -f "$bin" ] || [ ! -f "${bin%/*}/share/man/broadcast-agent.1.gz" ]; then
        log "no binary, manual or completions for $t yet: deploy/cross-build.sh $t"
        "$here/cross-build.sh" "$t" >&2
    fi
    [ "$bin" -nt "$repo/Cargo.toml" ] || log "warning: $bin is older than Cargo.toml: rebuild with --rebuild?"
    log "cargo deb --target $t --no-build"
    # --no-strip: the release profile already strips (and the host strip can't do ARM).
    deb=$(cd "$repo" && cargo deb --target "$t" --no-build --no-strip --output "$out_dir" | tail -n1)
    [ -f "$deb" ] || die "cargo deb did not produce a package for $t"
    dpkg-deb --field "$deb" Package Version Architecture Installed-Size >&2
    echo "$deb"
done
