#!/usr/bin/env bash
# How many viewers one Janus carries at 2 Mbit/s before frames drop (issue 25):
# one edge Janus (tests/browser/janus.sh start-edge 1: the project's conf, only
# Streaming), its mountpoint fed H.264 at BITRATE_KBPS (x264enc, videotestsrc
# pattern=snow: every frame busy, so the encoder spends the whole bitrate) and
# Opus, and N WebRTC subscribers (benches/edge_viewers.py: GStreamer webrtcbin,
# depayload and count, no decoding) added stepwise. Per step: the frames the
# subscribers received against those sent, RTP packets lost, and the CPU of
# Janus, of the subscribers and of the feed (/proc/PID/stat).
#
#   bash benches/edge_viewers.sh            (as root; prints a table, JSON in $OUT)
#
# Environment: BITRATE_KBPS (2000), FPS (30), WIDTH x HEIGHT (640x480),
# STEPS (1,2,4,8,16,32,64), WINDOW (10 s per step), SETTLE (4 s), OUT (the
# JSON lines; default a temporary file, printed), KEEP=1 (keep the scratch
# folder: Janus's log). Holds
# /tmp/broadcast-bench.lock while it measures, so other benches wait.
# Runs inside a private network namespace: lo plus a veth pair holding
# 10.99.0.1/24, the one address Janus and the subscribers meet on (Janus offers
# no loopback candidate, and webrtcbin's libnice gathers none on 127.0.0.0/8,
# nor on an interface whose name starts with `veth`).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
JANUS_CTL="$REPO/tests/browser/janus.sh"

if [[ "${1:-}" != --inside ]]; then
  [[ $(id -u) == 0 ]] || { echo "edge_viewers: needs root (apt-get, unshare -n)" >&2; exit 1; }
  bash "$REPO/deploy/ensure-packages.sh" janus curl jq iproute2 util-linux python3-gi python3-gst-1.0 \
    gir1.2-gst-plugins-bad-1.0 \
    gstreamer1.0-nice gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  export OUT=${OUT:-$(mktemp /tmp/edge-viewers.XXXXXX.jsonl)}
  exec flock /tmp/broadcast-bench.lock timeout --kill-after=10 1500 unshare -n -- bash "$0" --inside
fi

BITRATE_KBPS=${BITRATE_KBPS:-2000}
FPS=${FPS:-30}
WIDTH=${WIDTH:-640}
HEIGHT=${HEIGHT:-480}
ROOM=4556
VIDEO_PORT=5004
AUDIO_PORT=5006
export WORK
WORK=$(mktemp -d /tmp/edge-viewers.XXXXXX)
JANUS_URL="http://127.0.0.1:8188/janus"   # janus.sh start-edge 1

FEED_PID=
cleanup() {
  [[ -n "$FEED_PID" ]] && kill "$FEED_PID" 2>/dev/null
  bash "$JANUS_CTL" stop-edge 1 || true
  if [[ "${KEEP:-}" == 1 ]]; then echo "(kept $WORK)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

ip link set lo up
ip link add ev-bench0 type veth peer name ev-bench1
ip addr add 10.99.0.1/24 dev ev-bench0
ip link set ev-bench0 up && ip link set ev-bench1 up

bash "$JANUS_CTL" start-edge 1
JANUS_PID=$(cat "$WORK/edge1.pid")
key=$(cat "$WORK/edge1/broadcast-agent.admin_key")

# A plugin request through a throwaway session: prints plugindata.data.
plugin_request() {
  local session handle
  session=$(curl -sf -m 5 -d '{"janus":"create","transaction":"c"}' "$JANUS_URL" | jq -r .data.id)
  handle=$(curl -sf -m 5 -d "{\"janus\":\"attach\",\"plugin\":\"$1\",\"transaction\":\"a\"}" \
    "$JANUS_URL/$session" | jq -r .data.id)
  curl -sf -m 5 -d "{\"janus\":\"message\",\"transaction\":\"m\",\"body\":$2}" "$JANUS_URL/$session/$handle" |
    jq -c .plugindata.data
  curl -sf -m 5 -d '{"janus":"destroy","transaction":"d"}' "$JANUS_URL/$session" >/dev/null
}

created=$(plugin_request janus.plugin.streaming "{\"request\":\"create\",\"type\":\"rtp\",\"id\":$ROOM,
  \"admin_key\":\"$key\",\"media\":[
  {\"type\":\"video\",\"mid\":\"v\",\"port\":$VIDEO_PORT,\"pt\":96,\"codec\":\"h264\",
   \"fmtp\":\"profile-level-id=42e01f;packetization-mode=1\"},
  {\"type\":\"audio\",\"mid\":\"a\",\"port\":$AUDIO_PORT,\"pt\":111,\"codec\":\"opus\"}]}")
[[ $(jq -r .streaming <<<"$created") == created ]] || { echo "edge_viewers: create: $created" >&2; exit 1; }

# The feed: busy H.264 at BITRATE_KBPS (CBR), a keyframe every 2 s, and Opus.
gst-launch-1.0 -q \
  videotestsrc is-live=true pattern=snow ! "video/x-raw,width=$WIDTH,height=$HEIGHT,framerate=$FPS/1" ! \
  x264enc tune=zerolatency speed-preset=ultrafast bitrate="$BITRATE_KBPS" key-int-max=$((2 * FPS)) ! \
  video/x-h264,profile=constrained-baseline ! rtph264pay pt=96 config-interval=-1 ! \
  udpsink host=127.0.0.1 port=$VIDEO_PORT \
  audiotestsrc is-live=true ! audio/x-raw,rate=48000,channels=2 ! opusenc ! rtpopuspay pt=111 ! \
  udpsink host=127.0.0.1 port=$AUDIO_PORT &
FEED_PID=$!
sleep 2

/usr/bin/python3 "$HERE/edge_viewers.py" --janus "$JANUS_URL" --mountpoint $ROOM \
  --janus-pid "$JANUS_PID" --feed-pid "$FEED_PID" --fps "$FPS" --steps "${STEPS:-1,2,4,8,16,32,64}" \
  --window "${WINDOW:-10}" --settle "${SETTLE:-4}" | tee "$OUT"

echo ""
echo "viewers  frames(median/min %)  lost pkts  kbit/s per viewer  Janus cores  per viewer  subscribers  feed  load"
jq -r 'select(.viewers > 0) | [.viewers, "\(.frames_median_pct)/\(.frames_min_pct)", .packets_lost,
  (.kbps_per_viewer // "-"), .cpu_cores.janus, .janus_per_viewer, .cpu_cores.subscribers, .cpu_cores.feed, .loadavg]
  | @tsv' "$OUT"
echo "(JSON lines: $OUT)"
