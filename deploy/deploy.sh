#!/usr/bin/env bash
# Build broadcast-agent for a Raspberry Pi and install it there as a systemd service.
#
#   deploy/deploy.sh [user@]host [--target T] [--no-build] [--binary PATH]
#
#   --target T    aarch64-unknown-linux-gnu (64-bit Pi OS) or armv7-unknown-linux-gnueabihf
#                 (32-bit Pi OS); aliases arm64/aarch64, armhf/armv7. Default: asks the Pi
#                 (`dpkg --print-architecture`).
#   --no-build    do not build; use --binary / $BINARY, or the last cross build.
#   --binary PATH install this binary (implies --no-build). Same as BINARY=PATH.
#
# Build: `cross build --release` when cross is installed and Docker answers, else
# deploy/cross-build.sh (no Docker). Then, over ssh:
#   /usr/bin/broadcast-agent                          0755 root:root
#   /etc/systemd/system/broadcast-agent.service       0644 root:root   (from systemd/)
#   /etc/broadcast-agent/                             0750 root:broadcast-agent
#   /etc/broadcast-agent/agent.toml                   0640 root:broadcast-agent (from conf/)
#       only when absent: an existing config is never touched; when the shipped one
#       differs, it is put beside it as agent.toml.dist
#   system user broadcast-agent, in the groups audio, video, gpio (created if missing)
# then checks the config with the new binary (as the service user), runs
# `systemctl daemon-reload` and `systemctl enable --now` (first deploy) or
# `systemctl restart` (later ones), and prints how to follow the log.
#
# The same binary and unit paths as the .deb (deploy/build-deb.sh), so one unit file
# serves both; only the unit's location differs (/etc/systemd/system here, overriding
# /lib/systemd/system from the package: remove it if you switch to the .deb).
#
# Nothing is left readable by others on either side: ssh's control socket lives in a
# private folder (mktemp -d, 0700) removed at exit, and the files are staged 0600 in a
# private folder on the Pi, then copied by root into a folder of root's where the
# config is root:broadcast-agent 0640, as it will be installed, before the check (a
# config with inline secrets must not be readable by every user: the agent refuses it).
#
# Environment: SSH, SCP (default ssh, scp), SSH_OPTS (extra options for both),
# BINARY, UNIT, CONFIG (default systemd/broadcast-agent.service, conf/agent.toml).
# Needs passwordless sudo on the Pi (Raspberry Pi OS's default for the first user)
# or a terminal to type the password into.
set -euo pipefail
# Every file this script makes is its user's alone.
umask 077

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

SSH=${SSH:-ssh}
SCP=${SCP:-scp}
UNIT=${UNIT:-$repo/systemd/broadcast-agent.service}
CONFIG=${CONFIG:-$repo/conf/agent.toml}
BINARY=${BINARY:-}
SERVICE=broadcast-agent

die() { printf 'deploy: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

host="" target="" build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --target) [ $# -ge 2 ] || die "--target needs a value"; target=$2; shift ;;
        --target=*) target=${1#*=} ;;
        --no-build) build=0 ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; BINARY=$2; shift ;;
        --binary=*) BINARY=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [ -z "$host" ] || die "one host only"; host=$1 ;;
    esac
    shift
done
[ -n "$host" ] || { usage >&2; exit 2; }
[ -n "$BINARY" ] && build=0
[ -f "$UNIT" ] || die "unit file $UNIT not found"
[ -f "$CONFIG" ] || die "config $CONFIG not found"

# One ssh connection for all steps (one password prompt at most). Its socket is in
# a folder of this user's (a name in the shared /tmp could be taken or planted by
# another user); the connection is closed and the folder removed at exit.
ctl_dir=$(mktemp -d "${TMPDIR:-/tmp}/ba-ssh.XXXXXXXX") || die "mktemp failed"
chmod 0700 "$ctl_dir"
remote_script="" tmpd=""
# shellcheck disable=SC2206
ssh_opts=(-o ControlMaster=auto -o "ControlPath=$ctl_dir/%C" -o ControlPersist=60 ${SSH_OPTS-})
cleanup() {
    "$SSH" "${ssh_opts[@]}" -O exit "$host" >/dev/null 2>&1 || true
    rm -rf "$ctl_dir" ${remote_script:+"$remote_script"} ${tmpd:+"$tmpd"}
}
trap cleanup EXIT
rssh() { "$SSH" "${ssh_opts[@]}" "$@"; }

# --- what is on the other end ------------------------------------------------------
log "probing $host"
probe=$(rssh "$host" 'R="${BA_FAKE_ROOT:-}"; dpkg --print-architecture; uname -m;
    ( . "$R/etc/os-release" 2>/dev/null && echo "${VERSION_CODENAME:-unknown}" ) || echo unknown') ||
    die "cannot reach $host with $SSH"
{ read -r pi_arch; read -r pi_machine; read -r pi_codename; } <<<"$probe" || true
[ -n "${pi_codename:-}" ] || die "unexpected answer from $host: $probe"
log "$host: Debian arch $pi_arch, CPU $pi_machine, OS $pi_codename"

case "$pi_machine" in armv6*) die "$host is an ARMv6 Pi (Pi 1 / Zero / Zero W): not supported by these builds" ;; esac
case "$pi_codename" in
    buster|bullseye) die "$host runs Raspberry Pi OS $pi_codename: the agent needs GStreamer 1.22 and glibc 2.34+ (Bookworm or newer)" ;;
esac
if [ -z "$target" ]; then
    case "$pi_arch" in
        arm64) target=aarch64-unknown-linux-gnu ;;
        armhf) target=armv7-unknown-linux-gnueabihf ;;
        *) die "don't know which target serves Debian arch '$pi_arch': pass --target" ;;
    esac
fi
case "$target" in
    aarch64|arm64|aarch64-unknown-linux-gnu) target=aarch64-unknown-linux-gnu want_deb=arm64 want_file='ARM aarch64' ;;
    armv7|armhf|armv7-unknown-linux-gnueabihf) target=armv7-unknown-linux-gnueabihf want_deb=armhf want_file='32-bit .*ARM' ;;
    *) die "unknown target $target" ;;
esac
[ "$pi_arch" = "$want_deb" ] || log "warning: $host's userland is $pi_arch, deploying a $want_deb binary ($target)"

# --- build -------------------------------------------------------------------------
if [ "$build" = 1 ]; then
    if command -v cross >/dev/null && docker info >/dev/null 2>&1; then
        log "cross build --release --target $target"
        (cd "$repo" && cross build --release --target "$target")
        BINARY=$repo/target/$target/release/broadcast-agent
    else
        log "no cross/Docker here: deploy/cross-build.sh $target"
        "$here/cross-build.sh" "$target" >&2
        BINARY=${CARGO_TARGET_DIR:-$repo/target/cross}/$target/release/broadcast-agent
    fi
elif [ -z "$BINARY" ]; then
    for b in "${CARGO_TARGET_DIR:-$repo/target/cross}/$target/release/broadcast-agent" \
             "$repo/target/$target/release/broadcast-agent"; do
        [ -f "$b" ] && { BINARY=$b; break; }
    done
    [ -n "$BINARY" ] || die "--no-build but no binary for $target: build one or pass --binary"
fi
[ -f "$BINARY" ] || die "binary $BINARY not found"
if command -v file >/dev/null; then
    desc=$(file -b "$BINARY")
    case "$desc" in
        ELF*) printf '%s\n' "$desc" | grep -q "$want_file" || die "$BINARY is not a $target binary: $desc" ;;
        *) log "warning: $BINARY is not an ELF binary ($desc)" ;;
    esac
fi

# --- copy and install ----------------------------------------------------------------
# The remote part runs as root through sudo. BA_FAKE_ROOT is unset on a real Pi; the
# test (tests/ship/deploy-test.sh) sets it to install into a directory instead of /.
remote_script=$(mktemp)
cat >"$remote_script" <<'REMOTE'
set -eu
umask 077
stage=$1 service=broadcast-agent user=broadcast-agent
R="${BA_FAKE_ROOT:-}"
# The stage is the ssh user's; root copies the files into a folder of its own,
# with the owners and modes they are installed with, before checking them.
ready=$(mktemp -d)
trap 'rm -rf "$stage" "$ready"' EXIT
conf_dir="$R/etc/broadcast-agent" conf="$R/etc/broadcast-agent/agent.toml"

if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "broadcast-agent daemon" "$user"
    echo "created system user $user"
fi
# The unit names these in SupplementaryGroups=, and systemd refuses to start a
# service whose group does not exist (216/GROUP): create a missing one (gpio
# exists only on Raspberry Pi OS) as an empty system group.
for g in audio video gpio; do
    if ! getent group "$g" >/dev/null; then
        groupadd --system "$g"
        echo "created group $g (the unit's SupplementaryGroups= needs it)"
    fi
done
usermod -a -G audio,video,gpio "$user"

# Check the config the service will read with the new binary, as the service user,
# before replacing anything: a bad config must not take a running agent down. A
# first config is checked as it will be installed: root:broadcast-agent 0640.
chown "root:$user" "$ready"
chmod 0750 "$ready"
install -m 0755 "$stage/broadcast-agent" "$ready/broadcast-agent"
install -m 0644 "$stage/broadcast-agent.service" "$ready/broadcast-agent.service"
install -m 0640 "$stage/agent.toml" "$ready/agent.toml"
chown "root:$user" "$ready/agent.toml"
if [ -e "$conf" ]; then check_conf=$conf; else check_conf=$ready/agent.toml; fi
if ! runuser -u "$user" -- "$ready/broadcast-agent" check --config "$check_conf" >/dev/null; then
    echo "deploy: $check_conf is not valid for the new binary: nothing installed" >&2
    exit 3
fi

install -d -m 0755 "$R/usr/bin" "$R/etc/systemd/system"
install -m 0755 "$ready/broadcast-agent" "$R/usr/bin/broadcast-agent"
install -m 0644 "$ready/broadcast-agent.service" "$R/etc/systemd/system/broadcast-agent.service"
install -d -m 0750 "$conf_dir"
chown "root:$user" "$conf_dir"
if [ ! -e "$conf" ]; then
    install -m 0640 "$ready/agent.toml" "$conf"
    chown "root:$user" "$conf"
    echo "installed default config $conf: edit it, then: sudo systemctl restart $service"
elif cmp -s "$ready/agent.toml" "$conf"; then
    echo "config $conf unchanged"
else
    install -m 0640 "$ready/agent.toml" "$conf.dist"
    chown "root:$user" "$conf.dist"
    echo "kept your $conf; the shipped default is $conf.dist"
fi

systemctl daemon-reload
if systemctl is-active --quiet "$service"; then
    systemctl is-enabled --quiet "$service" || systemctl enable "$service"
    action=restart
else
    action="enable --now"
fi
# shellcheck disable=SC2086
if ! systemctl $action "$service"; then
    journalctl -u "$service" -n 30 --no-pager || true
    echo "deploy: systemctl $action $service failed" >&2
    exit 4
fi
sleep "${BA_SETTLE_SECONDS:-2}"
if ! systemctl is-active --quiet "$service"; then
    journalctl -u "$service" -n 30 --no-pager || true
    echo "deploy: $service is not running" >&2
    exit 4
fi
echo "$service is running"
REMOTE

stage=$(rssh "$host" 'umask 077; mktemp -d "${TMPDIR:-/tmp}/broadcast-agent-deploy.XXXXXX"') ||
    die "mktemp on $host failed"
log "copying to $host:$stage"
tmpd=$(mktemp -d)
cp "$BINARY" "$tmpd/broadcast-agent"
cp "$UNIT" "$tmpd/broadcast-agent.service"
cp "$CONFIG" "$tmpd/agent.toml"
cp "$remote_script" "$tmpd/install.sh"
# scp gives the copies these modes: the ssh user's alone on the Pi too.
chmod 0700 "$tmpd/broadcast-agent"
chmod 0600 "$tmpd/broadcast-agent.service" "$tmpd/agent.toml" "$tmpd/install.sh"
"$SCP" "${ssh_opts[@]}" -q "$tmpd/broadcast-agent" "$tmpd/broadcast-agent.service" \
    "$tmpd/agent.toml" "$tmpd/install.sh" "$host:$stage/" || die "scp to $host failed"

log "installing on $host"
tty_opt=()
[ -t 0 ] && [ -t 1 ] && tty_opt=(-t)
rssh ${tty_opt[@]+"${tty_opt[@]}"} "$host" "sudo sh $stage/install.sh $stage" || die "install on $host failed (see above)"

cat <<EOF

broadcast-agent is deployed to $host ($target).
  follow the log:   $SSH -t $host journalctl -u $SERVICE -f
  edit the config:  $SSH -t $host sudoedit /etc/broadcast-agent/agent.toml
                    then: $SSH $host sudo systemctl restart $SERVICE
EOF
