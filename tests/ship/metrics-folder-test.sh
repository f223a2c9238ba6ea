#!/usr/bin/env bash
# The metrics textfile in Debian's node exporter folder, written by the agent
# as the service's user, read by the real node exporter (docs/metrics.md).
#
#   tests/ship/metrics-folder-test.sh      # last line: metrics-folder: N passed, M failed
#
# Installs prometheus-node-exporter (apt-get) and builds the agent (cargo build),
# then runs itself again (--inside) in private mount and network namespaces,
# which leave this machine's files and network alone:
#   - /var/lib/prometheus/node-exporter as the package installed it: its owner
#     and mode are checked, then a tmpfs is mounted over /var/lib holding that
#     folder with the same owner and mode, a root-owned apt.prom in it as the
#     collectors write, and the agent's state folder /var/lib/broadcast-agent;
#   - /etc/passwd and /etc/group are mounted over with copies that add the user
#     and group broadcast-agent, as the .deb's postinst makes them;
#   - loopback only: the agent's Janus (a closed port) and node exporter's port.
# Then: `broadcast-agent check` as that user refuses the folder; after the two
# commands docs/metrics.md gives it passes, the agent (as that user, with the
# unit's UMask=0027) writes the file 0644, node exporter (as prometheus) serves
# its samples and root's without a scrape error, and the agent's user cannot
# remove root's file (sticky bit).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
folder=/var/lib/prometheus/node-exporter
die() { printf 'metrics-folder-test: error: %s\n' "$*" >&2; exit 2; }

if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || die "needs root (namespaces, the package, other users)"
    if ! dpkg -s prometheus-node-exporter >/dev/null 2>&1; then
        apt-get install -y --no-install-recommends prometheus-node-exporter >/dev/null ||
            die "apt-get install prometheus-node-exporter failed"
    fi
    (cd "$repo" && cargo build --locked --quiet --bin broadcast-agent) || die "cargo build failed"
    exec unshare --mount --net --propagation private "$0" --inside
fi

agent=${CARGO_TARGET_DIR:-$repo/target}/debug/broadcast-agent
work=$(mktemp -d "${TMPDIR:-/tmp}/metrics-folder.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

pass=0 fail=0
ok()  { pass=$((pass + 1)); printf 'ok   - %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf 'FAIL - %s\n' "$1"; [ $# -lt 2 ] || printf '       %s\n' "${@:2}"; }
eq()  { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected: $3" "got:      $2"; fi; }
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name" "command: $*"; fi; }
# Polls `$@` every 0.2 s for up to $1 seconds.
wait_until() { local n=$(($1 * 5)); shift; until "$@" >/dev/null 2>&1; do n=$((n - 1)); [ $n -gt 0 ] || return 1; sleep 0.2; done; }
as_agent() { setpriv --reuid=broadcast-agent --regid=broadcast-agent --init-groups -- "$@"; }

ip link set lo up || die "no loopback in the namespace"

# --- the folder as Debian ships it, and a copy of it to work in ---------------------
read -r owner group mode < <(stat -c '%U %G %a' "$folder")
eq "Debian's $folder is root:root 0755" "$owner:$group $mode" "root:root 755"
# A /var/lib of the namespace's own: the folder with the shipped owner and mode,
# root's file in it, and the agent's state folder where the unit makes it.
mount -t tmpfs -o mode=0755 tmpfs /var/lib || die "cannot mount over /var/lib"
install -d -m 0755 /var/lib/prometheus
install -d -o "$owner" -g "$group" -m "$mode" "$folder"
printf '# TYPE apt_upgrades_pending gauge\napt_upgrades_pending 0\n' >"$folder/apt.prom"

# --- the service user, as the .deb's postinst makes it --------------------------------
for f in passwd group; do
    cp "/etc/$f" "$work/$f"
    mount --bind "$work/$f" "/etc/$f" || die "cannot mount over /etc/$f"
done
if ! getent passwd broadcast-agent >/dev/null; then
    echo 'broadcast-agent:x:64901:64901:broadcast-agent daemon:/nonexistent:/usr/sbin/nologin' >>"$work/passwd"
    echo 'broadcast-agent:x:64901:' >>"$work/group"
fi

# --- a config the service user reads: no media, Janus absent, metrics on -----------------
install -d -m 0750 -g broadcast-agent "$work/etc"
state=/var/lib/broadcast-agent
install -d -m 0750 -o broadcast-agent -g broadcast-agent "$state"
chmod 0711 "$work"
config=$work/etc/agent.toml
# A room secret (nothing opens by itself without one): the file is the
# group's alone, as the package installs it.
(umask 027; cat >"$config") <<EOF
[janus]
url = "http://127.0.0.1:9/janus"
[room]
id = 4557
secret = "metrics-folder-secret"
check_interval_ms = 500
[speaker]
enabled = false
[video]
source = "none"
[microphone]
enabled = false
[control]
socket = "$state/control.sock"
state_dir = "$state"
[metrics]
textfile = "$folder/broadcast_agent.prom"
interval_s = 1
EOF
chgrp broadcast-agent "$config"
chmod 0640 "$config"

# --- check refuses root's folder, and says why -------------------------------------------
as_agent "$agent" check --config "$config" >"$work/check1.out" 2>"$work/check1.err"
eq "check as broadcast-agent refuses the folder as shipped (exit 78)" "$?" 78
check "the refusal names metrics.textfile, the owner and mode, and the fix" \
    grep -q "metrics.textfile: $folder (owner uid 0, gid 0, mode 0755) is not writable.*chmod 1775" "$work/check1.err" ||
    sed 's/^/       | /' "$work/check1.err"

# --- the two commands docs/metrics.md gives -------------------------------------------------
for cmd in "sudo chgrp broadcast-agent $folder" "sudo chmod 1775 $folder"; do
    check "docs/metrics.md gives: $cmd" grep -qxF "    $cmd" "$repo/docs/metrics.md"
    ${cmd#sudo }
done
as_agent "$agent" check --config "$config" >"$work/check2.out" 2>"$work/check2.err"
eq "check passes once the group may write the folder" "$?" 0
[ -s "$work/check2.err" ] && sed 's/^/       | /' "$work/check2.err"

# --- the agent writes it, node exporter serves it -------------------------------------------
(umask 0027; exec setpriv --reuid=broadcast-agent --regid=broadcast-agent --init-groups -- \
    "$agent" run --config "$config") >"$work/agent.log" 2>&1 &
pids+=($!)
prom=$folder/broadcast_agent.prom
if wait_until 20 grep -q '^broadcast_agent_room_phase{room="4557",phase="opening"} 1$' "$prom"; then
    ok "the agent writes $prom (room opening: Janus is absent)"
else
    bad "the agent writes $prom (room opening: Janus is absent)" "$(tail -n 5 "$work/agent.log")"
fi
eq "the file is the agent's, mode 0644 despite UMask=0027" "$(stat -c '%U %a' "$prom" 2>&1)" "broadcast-agent 644"
check "no temporary file is left (the file is rewritten each second)" \
    bash -c "sleep 2; ! ls -A '$folder' | grep -v -e '^apt.prom\$' -e '^broadcast_agent.prom\$' | grep -q ."
check "the agent's user cannot remove root's apt.prom (sticky bit)" bash -c "! setpriv --reuid=broadcast-agent \
    --regid=broadcast-agent --init-groups -- rm -f '$folder/apt.prom' 2>/dev/null && test -f '$folder/apt.prom'"

setpriv --reuid=prometheus --regid=prometheus --init-groups -- prometheus-node-exporter \
    --web.listen-address=127.0.0.1:9199 --collector.disable-defaults --collector.textfile \
    --collector.textfile.directory="$folder" >"$work/node-exporter.log" 2>&1 &
pids+=($!)
scrape() { curl -fsS --max-time 2 http://127.0.0.1:9199/metrics >"$work/metrics.txt"; }
if wait_until 20 scrape; then ok "node exporter (as prometheus) answers"; else bad "node exporter (as prometheus) answers" "$(tail -n 5 "$work/node-exporter.log")"; fi
check "node exporter serves the agent's samples" grep -q '^broadcast_agent_room_phase{phase="opening",room="4557"} 1$' "$work/metrics.txt"
check "node exporter serves root's file beside it" grep -qx 'apt_upgrades_pending 0' "$work/metrics.txt"
check "node exporter reads the folder without error" grep -qx 'node_textfile_scrape_error 0' "$work/metrics.txt"

echo "metrics-folder: $pass passed, $fail failed"
[ "$fail" = 0 ]
