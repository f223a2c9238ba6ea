#!/usr/bin/env bash
# The broadcaster under test — the real broadcast-agent — as the browser test
# drives it:
#   broadcaster.sh start   the broadcast exists: starts the agent (test video,
#                          440 Hz test microphone, speaker on ALSA `pulse` into a
#                          PulseAudio null sink) or, if it runs, `broadcast-agent open`
#   broadcaster.sh close   `broadcast-agent close` (as the Pi's close button)
#   broadcaster.sh heard   listens on the sound card (the null sink's monitor)
#                          for 2 s; succeeds if something was played there
#   broadcaster.sh status  prints `broadcast-agent status --json`
#   broadcaster.sh stop    stops the agent (SIGTERM) and PulseAudio
# Environment: WORK (scratch folder), JANUS_URL, ROOM, ROOM_SECRET, REPO; AGENT (the binary,
# default target/debug/broadcast-agent, built before entering the namespace);
# for the benches: VIDEO_SOURCE (default test; `libcamera` runs rpicam-vid from
# PATH, e.g. the stand-in; `libcamerasrc` the stand-in elements, see
# standin_elements), VIDEO_FRAMERATE (15), VIDEO_BITRATE_KBPS (800),
# MIC_DEVICE (default test; an ALSA device such as `pulse`), VIDEO_RTCP_PORT
# (default 8006; 0: no keyframe requests reach the agent), STREAM_HOST
# (default: Janus's host; the loss bench's relay), TRANSPORT (stream.transport:
# rtp, the default, webrtc or auto). With AGENT_ADDR (and AGENT_PEER) the agent
# runs in a network namespace of its own, holding AGENT_ADDR/24 on a veth pair
# whose other end (here) holds AGENT_PEER/24, with a default route through it
# (this namespace forwards): its packets then reach Janus (JANUS_ADDR, in a
# namespace of its own too) from an address of their own, which the uplink
# loss bench drops (janus.sh loss) without touching Chromium's.
set -euo pipefail
: "${WORK:?}" "${JANUS_URL:?}" "${ROOM:?}" "${ROOM_SECRET:?}"
REPO=${REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
AGENT=${AGENT:-$REPO/target/debug/broadcast-agent}
CONFIG="$WORK/agent.toml"
SOCKET="$WORK/agent.sock"
PIDFILE="$WORK/agent.pid"
PULSE_DIR="$WORK/pulse"
export PULSE_SERVER="unix:$PULSE_DIR/native"

pulse_start() {
  [[ -S "$PULSE_DIR/native" ]] && return 0
  mkdir -p "$PULSE_DIR"
  cat >"$PULSE_DIR/default.pa" <<PA
load-module module-null-sink sink_name=speaker rate=48000 channels=2
load-module module-native-protocol-unix auth-anonymous=1 socket=$PULSE_DIR/native
set-default-sink speaker
PA
  HOME="$PULSE_DIR" XDG_RUNTIME_DIR="$PULSE_DIR" pulseaudio -n -F "$PULSE_DIR/default.pa" \
    --daemonize=no --exit-idle-time=-1 --disable-shm=yes --use-pid-file=no \
    >>"$WORK/pulse.log" 2>&1 &
  echo $! >"$PULSE_DIR/pid"
  for _ in $(seq 100); do pactl info >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "broadcaster.sh: PulseAudio did not start (log: $WORK/pulse.log)" >&2
  return 1
}

# VIDEO_SOURCE=libcamerasrc: the GStreamer stand-ins (tests/standins/gst:
# libcamerasrc, and the Pi 4's v4l2h264enc) with a registry of their own, on
# the Pi of STANDIN_MACHINE (pi4, the default, or pi5), as the stand-in
# camera programs see it too.
standin_elements() {
  [[ "${VIDEO_SOURCE:-test}" == libcamerasrc ]] || return 0
  export GST_PLUGIN_PATH="$REPO/tests/standins/gst" GST_REGISTRY="$WORK/gst-registry.bin"
  export BROADCAST_AGENT_DEVICE_TREE="$WORK/compatible"
  case "${STANDIN_MACHINE:-pi4}" in
    pi5) printf 'raspberrypi,5-model-b\0brcm,bcm2712\0' >"$BROADCAST_AGENT_DEVICE_TREE" ;;
    *) printf 'raspberrypi,4-model-b\0brcm,bcm2711\0' >"$BROADCAST_AGENT_DEVICE_TREE" ;;
  esac
}

agent_running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

broadcaster_start() {
  if agent_running; then
    "$AGENT" open --socket "$SOCKET" >/dev/null
    return
  fi
  pulse_start
  standin_elements
  # Holds the room's secret: readable by its owner alone, as the agent asks.
  (umask 077; cat >"$CONFIG") <<TOML
[janus]
url = "$JANUS_URL"
[room]
id = $ROOM
secret = "$ROOM_SECRET"
admin_key_file = "$WORK/janus/broadcast-agent.admin_key"
check_interval_ms = 500
viewer_url = "http://127.0.0.2:8000/?r={room}"
[stream]
transport = "${TRANSPORT:-rtp}"
host = "${STREAM_HOST:-}"
video_port = 5004
audio_port = 5006
video_rtcp_port = ${VIDEO_RTCP_PORT:-8006}
[video]
source = "${VIDEO_SOURCE:-test}"
width = 640
height = 480
framerate = ${VIDEO_FRAMERATE:-15}
bitrate_kbps = ${VIDEO_BITRATE_KBPS:-800}
[microphone]
device = "${MIC_DEVICE:-test}"
[speaker]
device = "pulse"
port = 5008
latency_ms = 60
[control]
socket = "$SOCKET"
state_dir = "$WORK/state"
TOML
  # EDGE_RELAYS="1 2": the edges janus.sh start-edge N runs, fed by the
  # origin's publisher ([[relay]]; their mountpoint ports as edges.test.mjs's).
  for n in ${EDGE_RELAYS:-}; do
    cat >>"$CONFIG" <<TOML
[[relay]]
url = "http://127.0.0.1:$((8088 + 100 * n))/janus"
admin_key_file = "$WORK/edge$n/broadcast-agent.admin_key"
video_port = $((5004 + 100 * n))
audio_port = $((5006 + 100 * n))
video_rtcp_port = $((5008 + 100 * n))
TOML
  done
  if [[ -n "${AGENT_ADDR:-}" ]]; then
    # As janus.sh: waits for its end of the veth pair, then becomes the agent
    # (same PID). The control socket and PulseAudio's are files: reachable.
    unshare -n -- bash -c 'ip link set lo up
      for _ in $(seq 200); do ip link show vagent1 >/dev/null 2>&1 && break; sleep 0.05; done
      ip addr add "$0/24" dev vagent1 && ip link set vagent1 up && ip route add default via "$1" &&
        exec "$2" run --config "$3"' "$AGENT_ADDR" "${AGENT_PEER:?}" "$AGENT" "$CONFIG" \
      >>"$WORK/agent.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 200); do
      [[ "$(readlink "/proc/$(cat "$PIDFILE")/ns/net")" != "$(readlink /proc/self/ns/net)" ]] && break
      sleep 0.01
    done
    ip link del vagent0 2>/dev/null || true
    ip link add vagent0 type veth peer name vagent1 netns "$(cat "$PIDFILE")"
    ip addr add "$AGENT_PEER/24" dev vagent0
    ip link set vagent0 up
    sysctl -qw net.ipv4.ip_forward=1
  else
    "$AGENT" run --config "$CONFIG" >>"$WORK/agent.log" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 100); do
    "$AGENT" status --socket "$SOCKET" 2>/dev/null | grep -q "^room $ROOM: live" && return 0
    sleep 0.1
  done
  echo "broadcaster.sh: the agent did not go live (log: $WORK/agent.log)" >&2
  tail -20 "$WORK/agent.log" >&2
  return 1
}

broadcaster_close() {
  "$AGENT" close --socket "$SOCKET" >/dev/null
}

# RMS of 2 s recorded from the sink's monitor (16-bit mono); "heard" above 300.
broadcaster_heard() {
  local rms
  rms=$({ timeout 2 parec -d speaker.monitor --raw --format=s16le --rate=48000 --channels=1 \
            --latency-msec=10 2>/dev/null || true; } \
        | python3 -c 'import sys,array,math; a=array.array("h",sys.stdin.buffer.read()); print(int(math.sqrt(sum(x*x for x in a)/max(len(a),1))))')
  echo "sound card RMS over 2 s: $rms"
  ((rms > 300))
}

broadcaster_stop() {
  if agent_running; then
    local pid; pid=$(cat "$PIDFILE")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  [[ -f "$PULSE_DIR/pid" ]] && kill "$(cat "$PULSE_DIR/pid")" 2>/dev/null || true
}

case "${1:-}" in
  start) broadcaster_start ;;
  close) broadcaster_close ;;
  heard) broadcaster_heard ;;
  status) "$AGENT" status --json --socket "$SOCKET" ;;
  stop) broadcaster_stop ;;
  *) echo "usage: $0 start|close|heard|status|stop" >&2; exit 2 ;;
esac
