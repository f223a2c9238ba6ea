#!/usr/bin/env bash
# The demo: a local Janus (the project's conf/janus) and broadcast-agent on
# test sources (a test pattern and a 440 Hz tone), plus the viewer page.
# Installs what it needs on Debian 12, builds the agent, starts everything on
# this machine, prints what the agent opened, and runs until Ctrl-C
# (or for N seconds with --for N).
#
#   bash deploy/demo.sh [--for SECONDS]         (from a root shell)
#   sudo bash deploy/demo.sh [--for SECONDS]    (from a user account)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DURATION=0
[[ "${1:-}" == "--for" ]] && DURATION=${2:?--for needs seconds}

bash deploy/install-deps.sh
bash deploy/ensure-packages.sh libjs-janus-gateway libjs-webrtc-adapter python3
echo "== building broadcast-agent"
cargo build --locked --release --quiet
AGENT="$REPO/target/release/broadcast-agent"

WORK=$(mktemp -d /tmp/broadcast-demo.XXXXXX)
pids=()
cleanup() {
  echo; echo "== stopping"
  # The agent first: it removes its room and mountpoint from Janus.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_until() { # what command...
  local what=$1; shift
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "demo: $what did not come up" >&2; return 1
}

echo "== Janus on 127.0.0.1:8088 (log: $WORK/janus.log)"
bash deploy/janus-conf.sh "$WORK/janus" >/dev/null   # with a fresh admin key
janus -F "$WORK/janus" -o >"$WORK/janus.log" 2>&1 &
pids+=($!)
wait_until "Janus" curl -sf -m 1 http://127.0.0.1:8088/janus/info

# A sound card for the room's audio: the real one if there is one, else a
# PulseAudio null sink (listen with: parec -d speaker.monitor | aplay).
speaker=default
if ! aplay -l 2>/dev/null | grep -q '^card'; then
  mkdir -p "$WORK/pulse"
  printf 'load-module module-null-sink sink_name=speaker\nload-module module-native-protocol-unix auth-anonymous=1 socket=%s\n' \
    "$WORK/pulse/native" >"$WORK/pulse/default.pa"
  HOME="$WORK/pulse" pulseaudio -n -F "$WORK/pulse/default.pa" --daemonize=no \
    --exit-idle-time=-1 --disable-shm=yes --use-pid-file=no >"$WORK/pulse.log" 2>&1 &
  pids=($! "${pids[@]}")
  export PULSE_SERVER="unix:$WORK/pulse/native"
  wait_until "PulseAudio" pactl info
  speaker=pulse
fi

echo "== viewer page on http://127.0.0.1:8000/"
mkdir -p "$WORK/web" "$WORK/state"
cp -r deploy/web/{index.html,viewer.js,people.js,chat.js,config.js,avatars} "$WORK/web/"
# The page talks to the demo's Janus directly (no reverse proxy here); the
# viewer URL's ?janus= must name a server config.js lists.
sed -i 's#^  janus: "/janus",#  janus: "http://127.0.0.1:8088/janus",#' "$WORK/web/config.js"
grep -q '"http://127.0.0.1:8088/janus"' "$WORK/web/config.js" || { echo "demo: cannot point config.js at Janus" >&2; exit 1; }
cp /usr/share/javascript/janus-gateway/janus.js "$WORK/web/janus.js"
cp /usr/share/javascript/webrtc-adapter/adapter.js "$WORK/web/adapter.js"
python3 -m http.server 8000 --bind 127.0.0.1 --directory "$WORK/web" >"$WORK/web.log" 2>&1 &
pids=($! "${pids[@]}")

# The room's secret, fresh: the agent proves the room is its own with it
# (and opens nothing by itself without one). Readable by its owner alone.
(umask 077; od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/room.secret")
cat >"$WORK/agent.toml" <<TOML
[janus]
url = "http://127.0.0.1:8088/janus"
[room]
id = 4556
secret_file = "$WORK/room.secret"
admin_key_file = "$WORK/janus/broadcast-agent.admin_key"
viewer_url = "http://127.0.0.1:8000/?r={room}&janus=http://127.0.0.1:8088/janus"
[video]
source = "test"
width = 640
height = 480
framerate = 25
bitrate_kbps = 1000
[microphone]
device = "test"
[speaker]
device = "$speaker"
[control]
socket = "$WORK/agent.sock"
state_dir = "$WORK/state"
TOML
echo "== broadcast-agent (config: $WORK/agent.toml)"
"$AGENT" run --config "$WORK/agent.toml" &
pids=($! "${pids[@]}")
wait_until "the agent" sh -c "'$AGENT' status --socket '$WORK/agent.sock' | grep -q ': live'"
sleep 2   # let Janus see some media before asking it
echo
"$AGENT" status --socket "$WORK/agent.sock"
echo
echo "The agent opened AudioBridge room 4556 and Streaming mountpoint 4556 on Janus."
echo "Watch and talk:  http://127.0.0.1:8000/?r=4556&janus=http://127.0.0.1:8088/janus"
echo "Control it:      $AGENT close|open|status --socket $WORK/agent.sock"
if ((DURATION > 0)); then sleep "$DURATION"; else echo "Ctrl-C stops the demo."; wait; fi
