#!/usr/bin/env bash
# Test deploy/deploy.sh against a fake Raspberry Pi: a temp directory.
#
# Fake `ssh`/`scp` on PATH run the "remote" side locally with BA_FAKE_ROOT pointing at
# the fake Pi's root, and with fake sudo, systemctl, journalctl, useradd, usermod,
# getent, id, chown, runuser, dpkg and uname in front of PATH that keep their state
# (users, groups, owners, unit states, the systemctl calls) inside that directory.
# The "binary" is a shell script that answers `check --config FILE`.
#
#   tests/ship/deploy-test.sh        # last line: deploy: N passed, M failed
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
deploy=$repo/deploy/deploy.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/deploy-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

pass=0 fail=0
ok()   { pass=$((pass + 1)); printf 'ok   - %s\n' "$1"; }
bad()  { fail=$((fail + 1)); printf 'FAIL - %s\n' "$1"; [ $# -lt 2 ] || printf '       %s\n' "${@:2}"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name" "command: $*"; fi; }
eq() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "expected: $(printf %q "$3")" "got:      $(printf %q "$2")"; fi; }
mode_of() { stat -c %a "$1" 2>/dev/null || echo missing; }
owner_of() { awk -v p="$1" '$2 == p { o = $1 } END { print (o == "" ? "unset" : o) }' "$work/owners.log" 2>/dev/null; }
contains() { grep -qF -- "$2" "$1"; }

# --- the fake Pi ----------------------------------------------------------------------
new_pi() {  # new_pi DIR: an empty Pi OS-like root
    mkdir -p "$1/etc" "$1/tmp"
    printf 'root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n' >"$1/etc/passwd"
    printf 'root:x:0:\naudio:x:29:pi\nvideo:x:44:pi\npi:x:1000:\n' >"$1/etc/group"   # no gpio group yet
    printf 'ID=debian\nVERSION_CODENAME=bookworm\n' >"$1/etc/os-release"
}
root=$work/pi
new_pi "$root"

bin=$work/bin remote=$work/remote-bin
mkdir -p "$bin" "$remote"
# Both record where ssh's control socket would be, and that folder's mode and
# owner at the time: "<mode> <owner> <folder>" in control-path.log.
cat >"$work/control-path.sh" <<'EOF'
case "$1" in ControlPath=*)
    d=$(dirname "${1#ControlPath=}")
    echo "$(stat -c '%a %U' "$d" 2>/dev/null || echo missing -) $d" >>"$FAKE_LOGS/control-path.log" ;;
esac
EOF
cat >"$bin/ssh" <<'EOF'
#!/usr/bin/env bash
while [ $# -gt 0 ]; do
    case "$1" in
        -O) echo "$2" >>"$FAKE_LOGS/ssh-control.log"; shift 2 ;;
        -o) sh "$FAKE_LOGS/control-path.sh" "$2"; shift 2 ;;
        -p|-i|-l|-F|-J) shift 2 ;;
        --) shift; break ;;
        -*) shift ;;
        *) break ;;
    esac
done
host=$1; shift
# `ssh -O exit HOST` ends the control master: nothing runs on the Pi.
[ $# -gt 0 ] || exit 0
printf '%s\n' "$*" >>"$FAKE_LOGS/ssh.log"
[ "$host" = "$FAKE_HOST" ] || { echo "ssh: Could not resolve hostname $host" >&2; exit 255; }
export BA_FAKE_ROOT=$FAKE_ROOT TMPDIR=$FAKE_ROOT/tmp BA_SETTLE_SECONDS=0 PATH=$FAKE_REMOTE_BIN:$PATH
cd "$FAKE_ROOT" && exec bash -c "$*"
EOF
cat >"$bin/scp" <<'EOF'
#!/usr/bin/env bash
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -o) sh "$FAKE_LOGS/control-path.sh" "$2"; shift 2 ;;
        -P|-i|-F|-J) shift 2 ;;
        -*) shift ;;
        *) args+=("$1"); shift ;;
    esac
done
dest=${args[${#args[@]}-1]}
unset 'args[${#args[@]}-1]'
case "$dest" in "$FAKE_HOST":*) ;; *) echo "scp: unexpected destination $dest" >&2; exit 1 ;; esac
printf 'scp %s -> %s\n' "${args[*]}" "$dest" >>"$FAKE_LOGS/ssh.log"
cp "${args[@]}" "${dest#*:}"
# What others could read on the Pi: "<mode> <path>" of the stage and each copy.
d=${dest#*:}
stat -c '%a %n' "$d" >>"$FAKE_LOGS/staged-modes.log"
for a in "${args[@]}"; do stat -c '%a %n' "$d/${a##*/}" >>"$FAKE_LOGS/staged-modes.log"; done
EOF
cat >"$remote/sudo" <<'EOF'
#!/usr/bin/env bash
while [ $# -gt 0 ]; do case "$1" in -u) shift 2 ;; --) shift; break ;; -*) shift ;; *) break ;; esac; done
echo "sudo $*" >>"$FAKE_LOGS/sudo.log"
exec "$@"
EOF
cat >"$remote/systemctl" <<'EOF'
#!/usr/bin/env bash
st=$BA_FAKE_ROOT/.systemd; mkdir -p "$st"
q=0 now=0 args=()
for a in "$@"; do case "$a" in --quiet|-q) q=1 ;; --now) now=1; args+=("$a") ;; *) args+=("$a") ;; esac; done
set -- "${args[@]}"
unit_present() { [ -f "$BA_FAKE_ROOT/etc/systemd/system/$1.service" ] || { echo "Failed: Unit $1.service not found." >&2; exit 5; }; }
case "$1" in
    is-active)  [ -e "$st/$2.active" ] ;;
    is-enabled) [ -e "$st/$2.enabled" ] ;;
    daemon-reload) echo "daemon-reload" >>"$FAKE_LOGS/systemctl.log" ;;
    enable) svc=${*: -1}; unit_present "$svc"; echo "$*" >>"$FAKE_LOGS/systemctl.log"
            touch "$st/$svc.enabled"; [ $now = 0 ] || touch "$st/$svc.active" ;;
    start|restart) unit_present "$2"; echo "$*" >>"$FAKE_LOGS/systemctl.log"; touch "$st/$2.active" ;;
    *) echo "$*" >>"$FAKE_LOGS/systemctl.log" ;;
esac
EOF
cat >"$remote/journalctl" <<'EOF'
#!/bin/sh
echo "(fake journal: $*)"
EOF
cat >"$remote/id" <<'EOF'
#!/bin/sh
[ "$1" = -u ] && [ $# = 2 ] || exec /usr/bin/id "$@"
awk -F: -v u="$2" '$1 == u { print $3; f = 1 } END { exit !f }' "$BA_FAKE_ROOT/etc/passwd" || { echo "id: '$2': no such user" >&2; exit 1; }
EOF
cat >"$remote/getent" <<'EOF'
#!/bin/sh
case "$1" in group|passwd) grep "^$2:" "$BA_FAKE_ROOT/etc/$1" ;; *) exit 2 ;; esac
EOF
cat >"$remote/useradd" <<'EOF'
#!/bin/sh
echo "useradd $*" >>"$FAKE_LOGS/useradd.log"
for a; do name=$a; done
shell=/bin/sh home=/home/$name system=0 ug=0
while [ $# -gt 1 ]; do
    case "$1" in --shell|-s) shell=$2; shift ;; --home-dir|-d) home=$2; shift ;; --comment|-c) shift ;;
                 --system|-r) system=1 ;; --user-group|-U) ug=1 ;; esac
    shift
done
grep -q "^$name:" "$BA_FAKE_ROOT/etc/passwd" && { echo "useradd: user '$name' already exists" >&2; exit 9; }
uid=$([ $system = 1 ] && echo 998 || echo 1001)
echo "$name:x:$uid:$uid::$home:$shell" >>"$BA_FAKE_ROOT/etc/passwd"
[ $ug = 0 ] || echo "$name:x:$uid:" >>"$BA_FAKE_ROOT/etc/group"
EOF
cat >"$remote/groupadd" <<'EOF'
#!/bin/sh
echo "groupadd $*" >>"$FAKE_LOGS/groupadd.log"
for a; do name=$a; done
grep -q "^$name:" "$BA_FAKE_ROOT/etc/group" && { echo "groupadd: group '$name' already exists" >&2; exit 9; }
echo "$name:x:997:" >>"$BA_FAKE_ROOT/etc/group"
EOF
cat >"$remote/usermod" <<'EOF'
#!/usr/bin/env bash
echo "usermod $*" >>"$FAKE_LOGS/usermod.log"
[ "$1" = -a ] && [ "$2" = -G ] || { echo "fake usermod: only -a -G" >&2; exit 2; }
g=$3 u=$4 f=$BA_FAKE_ROOT/etc/group
IFS=, read -ra gs <<<"$g"
for x in "${gs[@]}"; do
    grep -q "^$x:" "$f" || { echo "usermod: group '$x' does not exist" >&2; exit 6; }
    awk -F: -v OFS=: -v g="$x" -v u="$u" '$1 == g && ("," $4 ",") !~ ("," u ",") { $4 = ($4 == "" ? u : $4 "," u) } { print }' "$f" >"$f.new" && mv "$f.new" "$f"
done
EOF
cat >"$remote/chown" <<'EOF'
#!/bin/sh
# records "owner:group path"; fails like chown when the user or group is unknown
u=${1%%:*} g=${1#*:}
grep -q "^$u:" "$BA_FAKE_ROOT/etc/passwd" || { echo "chown: invalid user: '$1'" >&2; exit 1; }
grep -q "^$g:" "$BA_FAKE_ROOT/etc/group" || { echo "chown: invalid group: '$1'" >&2; exit 1; }
echo "$1 $2" >>"$FAKE_LOGS/owners.log"
EOF
cat >"$remote/runuser" <<'EOF'
#!/bin/sh
[ "$1" = -u ] || exit 2
grep -q "^$2:" "$BA_FAKE_ROOT/etc/passwd" || { echo "runuser: user $2 does not exist" >&2; exit 1; }
echo "$2" >"$FAKE_LOGS/runuser.last"
shift 2; [ "$1" = -- ] && shift
exec "$@"
EOF
cat >"$remote/dpkg" <<'EOF'
#!/bin/sh
[ "$1" = --print-architecture ] && { echo "$FAKE_DEB_ARCH"; exit 0; }
exit 2
EOF
cat >"$remote/uname" <<'EOF'
#!/bin/sh
[ "$1" = -m ] && { echo "$FAKE_MACHINE"; exit 0; }
exec /bin/uname "$@"
EOF
chmod +x "$bin"/* "$remote"/*

# A stand-in binary: `check --config F` fails for a file containing INVALID. It
# records the modes of F and of its folder ("<mode> <mode>") in checked-modes.log.
# With a third argument the check is the real agent's, built for this machine.
make_binary() {  # make_binary PATH VERSION [real]
    cat >"$1" <<EOF
#!/bin/sh
# fake broadcast-agent $2
echo "\$*" >>"\$FAKE_LOGS/agent.log"
[ "\$1" = check ] && [ "\$2" = --config ] || exit 64
echo "\$(stat -c %a "\$3") \$(stat -c %a "\$(dirname "\$3")")" >>"\$FAKE_LOGS/checked-modes.log"
${3:+exec "$host_agent" check --config "\$3"}
[ -r "\$3" ] || { echo "cannot read \$3" >&2; exit 78; }
! grep -q INVALID "\$3" || { echo "config error in \$3" >&2; exit 78; }
EOF
    chmod 0755 "$1"
}
(cd "$repo" && cargo build --locked --quiet --bin broadcast-agent) || bad "cargo build (the real check)"
host_agent=${CARGO_TARGET_DIR:-$repo/target}/debug/broadcast-agent

# The unit file shipped in systemd/ (a stand-in if it is not written yet).
unit=$repo/systemd/broadcast-agent.service
if [ ! -f "$unit" ]; then
    echo "note: $unit missing, using a stand-in unit"
    unit=$work/broadcast-agent.service
    printf '[Service]\nExecStart=/usr/bin/broadcast-agent run --config /etc/broadcast-agent/agent.toml\n' >"$unit"
else
    check "unit ExecStart runs /usr/bin/broadcast-agent (where deploy.sh and the .deb install it)" \
        grep -Eq '^ExecStart=/usr/bin/broadcast-agent( |$)' "$unit"
    check "unit passes --config /etc/broadcast-agent/agent.toml" grep -q -- '--config /etc/broadcast-agent/agent.toml' "$unit"
fi
config=$repo/conf/agent.toml

export PATH="$bin:$PATH" FAKE_HOST=pi@raspberrypi.local FAKE_ROOT=$root FAKE_REMOTE_BIN=$remote \
       FAKE_LOGS=$work FAKE_DEB_ARCH=arm64 FAKE_MACHINE=aarch64 UNIT=$unit CONFIG=$config
unset SSH SCP SSH_OPTS BINARY
run_deploy() {  # run_deploy OUTFILE ARGS...: exit status in $rc
    local out=$1; shift
    : >"$work/systemctl.log"
    "$deploy" "$@" >"$out" 2>&1
    rc=$?
    return 0
}
systemctl_calls() { paste -sd '|' "$work/systemctl.log"; }

# --- 1: first deploy (target from the Pi) -------------------------------------------
make_binary "$work/agent-v1" v1
run_deploy "$work/out1" pi@raspberrypi.local --no-build --binary "$work/agent-v1"
eq "first deploy exits 0" "$rc" 0
[ "$rc" = 0 ] || sed 's/^/       | /' "$work/out1"
check "target detected from the Pi's dpkg architecture" contains "$work/out1" "aarch64-unknown-linux-gnu"
check "binary installed as /usr/bin/broadcast-agent" cmp -s "$work/agent-v1" "$root/usr/bin/broadcast-agent"
eq "binary mode 0755" "$(mode_of "$root/usr/bin/broadcast-agent")" 755
check "unit installed in /etc/systemd/system" cmp -s "$unit" "$root/etc/systemd/system/broadcast-agent.service"
eq "unit mode 0644" "$(mode_of "$root/etc/systemd/system/broadcast-agent.service")" 644
check "config installed as /etc/broadcast-agent/agent.toml" cmp -s "$config" "$root/etc/broadcast-agent/agent.toml"
eq "config mode 0640" "$(mode_of "$root/etc/broadcast-agent/agent.toml")" 640
eq "config owned by root:broadcast-agent" "$(owner_of "$root/etc/broadcast-agent/agent.toml")" root:broadcast-agent
eq "config directory mode 0750" "$(mode_of "$root/etc/broadcast-agent")" 750
eq "config directory owned by root:broadcast-agent" "$(owner_of "$root/etc/broadcast-agent")" root:broadcast-agent
check "service user created as a system user without login" \
    grep -Eq '^broadcast-agent:x:998:998::/nonexistent:/usr/sbin/nologin$' "$root/etc/passwd"
eq "service user in audio and video" "$(grep -c '^\(audio\|video\):.*broadcast-agent' "$root/etc/group")" 2
check "absent gpio group created, with a message" contains "$work/out1" "created group gpio"
check "service user in gpio" grep -q '^gpio:.*broadcast-agent' "$root/etc/group"
check "config checked by the new binary as the service user" \
    grep -q 'broadcast-agent' "$work/runuser.last"
check "check ran on the shipped config (none installed yet)" grep -Eq '^check --config .*/agent.toml$' "$work/agent.log"
eq "systemctl: daemon-reload, then enable --now" "$(systemctl_calls)" "daemon-reload|enable --now broadcast-agent"
check "prints how to follow the journal" contains "$work/out1" "journalctl -u broadcast-agent -f"
eq "remote staging directory removed" "$(find "$root/tmp" -mindepth 1 -maxdepth 1 | wc -l)" 0
# Nothing readable by others on the way: ssh's control socket, the stage, the check.
eq "one ControlPath folder for every ssh and scp" "$(sort -u "$work/control-path.log" | wc -l)" 1
read -r ctl_mode ctl_owner ctl_dir < <(head -n1 "$work/control-path.log")
check "ControlPath is not in the shared ${TMPDIR:-/tmp} itself" \
    test "$ctl_dir" != "${TMPDIR:-/tmp}" -a "$ctl_dir" != /tmp
eq "ControlPath's folder is private (0700, this user's)" "$ctl_mode $ctl_owner" "700 $(id -un)"
check "ControlPath's folder removed at exit" test ! -e "$ctl_dir"
check "the control master is told to exit" grep -qx exit "$work/ssh-control.log"
eq "staged files and their folder are not readable by others" "$(awk '$1 !~ /00$/' "$work/staged-modes.log")" ""
eq "the first config is checked 0640 in a folder others cannot enter (0750)" \
    "$(tail -n1 "$work/checked-modes.log")" "640 750"
check "remote install ran through sudo" grep -q '^sudo sh .*/install.sh' "$work/sudo.log"

# --- 2: edited config, new binary ---------------------------------------------------------
printf '# edited on the Pi\n[room]\nid = 1234\n' >"$root/etc/broadcast-agent/agent.toml"
cp "$root/etc/broadcast-agent/agent.toml" "$work/edited.toml"
make_binary "$work/agent-v2" v2
: >"$work/agent.log"
run_deploy "$work/out2" pi@raspberrypi.local --target aarch64-unknown-linux-gnu --no-build --binary "$work/agent-v2"
eq "second deploy exits 0" "$rc" 0
[ "$rc" = 0 ] || sed 's/^/       | /' "$work/out2"
check "edited config not overwritten" cmp -s "$work/edited.toml" "$root/etc/broadcast-agent/agent.toml"
eq "edited config keeps mode 0640" "$(mode_of "$root/etc/broadcast-agent/agent.toml")" 640
check "shipped config put beside it as agent.toml.dist" cmp -s "$config" "$root/etc/broadcast-agent/agent.toml.dist"
check "says the config was kept" contains "$work/out2" "kept your"
check "binary replaced by the new one" cmp -s "$work/agent-v2" "$root/usr/bin/broadcast-agent"
check "check ran on the installed (edited) config" grep -qx "check --config $root/etc/broadcast-agent/agent.toml" "$work/agent.log"
eq "systemctl: daemon-reload, then restart" "$(systemctl_calls)" "daemon-reload|restart broadcast-agent"
eq "useradd not run again" "$(wc -l <"$work/useradd.log")" 1
eq "gpio group not created again" "$(wc -l <"$work/groupadd.log")" 1
eq "one gpio group" "$(grep -c '^gpio:' "$root/etc/group")" 1

# --- 3: unchanged config on a third run: no .dist churn, still no overwrite -------------------
rm -f "$root/etc/broadcast-agent/agent.toml.dist"
cp "$config" "$root/etc/broadcast-agent/agent.toml"
run_deploy "$work/out3" pi@raspberrypi.local --no-build --binary "$work/agent-v2"
eq "third deploy exits 0" "$rc" 0
check "unchanged config: no agent.toml.dist written" test ! -e "$root/etc/broadcast-agent/agent.toml.dist"

# --- 4: a config the new binary rejects: nothing replaced, nothing restarted --------------------
printf 'INVALID\n' >"$root/etc/broadcast-agent/agent.toml"
make_binary "$work/agent-v3" v3
run_deploy "$work/out4" pi@raspberrypi.local --no-build --binary "$work/agent-v3"
check "rejected config: deploy exits non-zero" test "$rc" != 0
check "rejected config: old binary left in place" cmp -s "$work/agent-v2" "$root/usr/bin/broadcast-agent"
eq "rejected config: no systemctl calls" "$(systemctl_calls)" ""
check "rejected config: config untouched" grep -qx INVALID "$root/etc/broadcast-agent/agent.toml"

# --- 5: Pis these builds cannot serve are refused before anything is copied ---------------------
root2=$work/pi2
new_pi "$root2"
FAKE_ROOT=$root2 FAKE_DEB_ARCH=armhf FAKE_MACHINE=armv6l run_deploy "$work/out5" pi@raspberrypi.local --no-build --binary "$work/agent-v1"
check "ARMv6 Pi (Zero / Pi 1) refused" test "$rc" != 0
check "ARMv6 refusal names the reason" contains "$work/out5" "ARMv6"
sed -i 's/bookworm/bullseye/' "$root2/etc/os-release"
FAKE_ROOT=$root2 FAKE_DEB_ARCH=armhf FAKE_MACHINE=armv7l run_deploy "$work/out6" pi@raspberrypi.local --no-build --binary "$work/agent-v1"
check "Bullseye refused" test "$rc" != 0
check "nothing installed on refused Pis" test ! -e "$root2/usr/bin/broadcast-agent"
run_deploy "$work/out7" pi@nowhere.local --no-build --binary "$work/agent-v1"
check "unreachable host: non-zero exit" test "$rc" != 0

# --- 6: a first deploy whose config holds a secret, checked by the real agent -------------------
root3=$work/pi3
new_pi "$root3"
secret_config=$work/secret.toml
sed 's/^secret = ""$/secret = "the-room-secret"/' "$config" >"$secret_config"
chmod 0644 "$secret_config"  # as an editor saves it
check "the test config holds room.secret inline" grep -qx 'secret = "the-room-secret"' "$secret_config"
make_binary "$work/agent-real" real real
FAKE_ROOT=$root3 CONFIG=$secret_config run_deploy "$work/out8" pi@raspberrypi.local --no-build --binary "$work/agent-real"
eq "first deploy with an inline secret exits 0 (the real check accepts it as installed)" "$rc" 0
[ "$rc" = 0 ] || sed 's/^/       | /' "$work/out8"
eq "the config with the secret is installed 0640" "$(mode_of "$root3/etc/broadcast-agent/agent.toml")" 640

echo "deploy: $pass passed, $fail failed"
[ "$fail" = 0 ]
