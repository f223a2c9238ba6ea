#!/usr/bin/env bash
# Run a command that executes ARM programs (a Debian arm64/armhf root filesystem's
# apt, dpkg, maintainer scripts, mmdebstrap's chroot phase) under qemu-user,
# without registering anything with the machine's binfmt_misc:
#
#   tests/ship/arm-chroot.sh ARCH [--chroot ROOT] -- COMMAND...
#
#   ARCH           arm64 or armhf
#   --chroot ROOT  run COMMAND chrooted into ROOT, with the host's /dev bound and a
#                  /proc of its own mounted there (both gone with the namespace), in
#                  a clean environment: PATH, HOME=/root, LANG=C.UTF-8,
#                  DEBIAN_FRONTEND=noninteractive
#
# COMMAND runs as root of a new user namespace that maps the ids 0-65535 to
# themselves (files keep their real owners, so dpkg, adduser and chown work as on a
# Pi), with mount and PID namespaces of its own. Since Linux 6.7 a user namespace
# can mount a binfmt_misc instance of its own: it is mounted there and given
# qemu-user-static's registration for ARCH (/usr/lib/binfmt.d/qemu-*.conf, flag F:
# the emulator is opened at registration, so it also serves inside a chroot). The
# kernel then runs every ARM program started in the namespace under qemu; the
# machine's own binfmt_misc is untouched, and all of it ends with COMMAND (pid 1 of
# the namespace: its children die with it).
# Needs root and qemu-user-static. Exits with COMMAND's status, 125 if the
# namespace cannot be set up.
set -euo pipefail

die() { printf 'arm-chroot: error: %s\n' "$*" >&2; exit 125; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

arch=${1:-}
case "$arch" in
    arm64) qemu=aarch64 ;;
    armhf) qemu=arm ;;
    -h|--help) usage; exit 0 ;;
    *) die "first argument: arm64 or armhf, not '$arch' (see --help)" ;;
esac
shift
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --chroot) [ $# -ge 2 ] || die "--chroot needs a folder"; root=$(realpath "$2"); shift ;;
        --) shift; break ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ $# -gt 0 ] || die "no command (see --help)"
[ "$(id -u)" = 0 ] || die "needs root (it maps the ids 0-65535 of a user namespace to the machine's)"
registration=/usr/lib/binfmt.d/qemu-$qemu.conf
[ -f "$registration" ] || die "$registration is missing: apt-get install qemu-user-static"
[ -z "$root" ] || [ -x "$root/bin/sh" ] || [ -L "$root/bin" ] || die "$root is not a root filesystem"

# The namespace's side: wait for the id map (id -u says 0 once it is written), then
# binfmt_misc, then the command.
# shellcheck disable=SC2016  # expanded by the namespace's bash
inside='
registration=$1 root=$2; shift 2
for _ in $(seq 100); do [ "$(id -u)" = 0 ] && break; sleep 0.05; done
[ "$(id -u)" = 0 ] || { echo "arm-chroot: error: the user namespace got no id map" >&2; exit 125; }
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || {
    echo "arm-chroot: error: no binfmt_misc of its own in a user namespace (needs Linux 6.7 or later; this is $(uname -r))" >&2
    exit 125; }
cat "$registration" >/proc/sys/fs/binfmt_misc/register || exit 125
[ -n "$root" ] || exec "$@"
mount --rbind /dev "$root/dev" && mount -t proc proc "$root/proc" || exit 125
exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"'

unshare --user --mount --pid --fork --kill-child --mount-proc --propagation private -- \
    bash -c "$inside" arm-chroot "$registration" "$root" "$@" &
ns_pid=$!
# unshare(2) first, then the map: until the namespace exists, wait.
for _ in $(seq 200); do
    [ "$(readlink "/proc/$ns_pid/ns/user" 2>/dev/null)" != "$(readlink /proc/self/ns/user)" ] && break
    sleep 0.01
done
if ! { echo '0 0 65536' >"/proc/$ns_pid/uid_map" && echo '0 0 65536' >"/proc/$ns_pid/gid_map"; } 2>/dev/null; then
    kill -KILL "$ns_pid" 2>/dev/null
    die "cannot map the user namespace's ids"
fi
# On TERM (timeout) end the namespace's pid 1 (unshare's child): the kernel then
# kills everything in it. unshare itself blocks TERM while it waits.
trap 'pkill -KILL -P "$ns_pid"; kill -KILL "$ns_pid" 2>/dev/null; wait "$ns_pid"' TERM INT
wait "$ns_pid"
