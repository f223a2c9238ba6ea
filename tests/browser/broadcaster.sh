#!/usr/bin/env bash
# The broadcaster under test, as the browser test drives it:
#   broadcaster.sh start   make the broadcast exist: AudioBridge room + Streaming
#                          mountpoint with id $ROOM, and H.264 + Opus RTP flowing
#                          into the mountpoint (call again after `close` or after
#                          a Janus restart: it re-creates them)
#   broadcaster.sh close   end the broadcast: destroy mountpoint and room
#                          (what `broadcast-agent close` does)
#   broadcaster.sh stop    stop everything this script started
# Environment: WORK (scratch folder), JANUS_URL, ROOM.
#
# For now this is a STAND-IN for broadcast-agent: curl makes the room and the
# mountpoint and gst-launch-1.0 sends test video/audio. To test the real agent,
# replace the bodies of broadcaster_start / broadcaster_close / broadcaster_stop
# (e.g. `target/debug/broadcast-agent run --config X &` with [video]
# source="test", [microphone] device="test", [speaker] device="pulse", and
# `broadcast-agent close --config X`); nothing else in tests/browser changes.
set -euo pipefail
: "${WORK:?}" "${JANUS_URL:?}" "${ROOM:?}"
VIDEO_PORT=${VIDEO_PORT:-5004}
AUDIO_PORT=${AUDIO_PORT:-5006}
GST_PIDFILE="$WORK/broadcaster-gst.pid"

# One request to a Janus plugin through a throwaway session; prints plugindata.data.
janus_plugin_request() { # plugin body-json
  local session handle reply
  session=$(curl -sf -m 5 -X POST -d '{"janus":"create","transaction":"c"}' "$JANUS_URL" | jq -er .data.id)
  handle=$(curl -sf -m 5 -X POST -d "{\"janus\":\"attach\",\"plugin\":\"$1\",\"transaction\":\"a\"}" \
    "$JANUS_URL/$session" | jq -er .data.id)
  reply=$(curl -sf -m 5 -X POST -d "{\"janus\":\"message\",\"transaction\":\"m\",\"body\":$2}" \
    "$JANUS_URL/$session/$handle")
  curl -sf -m 5 -X POST -d '{"janus":"destroy","transaction":"d"}' "$JANUS_URL/$session" >/dev/null || true
  jq -c .plugindata.data <<<"$reply"
}

# Fails unless the reply is a success or carries one of the allowed error codes.
expect_ok() { # reply allowed-error-codes...
  local code; code=$(jq -r '.error_code // empty' <<<"$1")
  [[ -z "$code" ]] && return 0
  for ok in "${@:2}"; do [[ "$code" == "$ok" ]] && return 0; done
  echo "broadcaster.sh: Janus said $1" >&2
  return 1
}

broadcaster_start() {
  local r
  r=$(janus_plugin_request janus.plugin.audiobridge \
    "{\"request\":\"create\",\"room\":$ROOM,\"sampling_rate\":48000,\"allow_rtp_participants\":false}")
  expect_ok "$r" 486   # 486: the room exists already
  r=$(janus_plugin_request janus.plugin.streaming "{\"request\":\"create\",\"type\":\"rtp\",\"id\":$ROOM,
    \"media\":[{\"type\":\"video\",\"mid\":\"v\",\"port\":$VIDEO_PORT,\"pt\":96,\"codec\":\"h264\",
                \"fmtp\":\"profile-level-id=42e01f;packetization-mode=1\"},
               {\"type\":\"audio\",\"mid\":\"a\",\"port\":$AUDIO_PORT,\"pt\":111,\"codec\":\"opus\"}]}")
  expect_ok "$r" 456   # 456: the mountpoint exists already
  if [[ -f "$GST_PIDFILE" ]] && kill -0 "$(cat "$GST_PIDFILE")" 2>/dev/null; then
    return 0           # media still flowing from an earlier start
  fi
  gst-launch-1.0 -q \
    videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=480,framerate=15/1 \
      ! timeoverlay font-desc="Sans 28" \
      ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
      ! video/x-h264,profile=constrained-baseline \
      ! rtph264pay pt=96 config-interval=1 mtu=1200 ! udpsink host=127.0.0.1 port="$VIDEO_PORT" \
    audiotestsrc is-live=true wave=sine freq=440 ! audio/x-raw,rate=48000,channels=1 \
      ! opusenc ! rtpopuspay pt=111 ! udpsink host=127.0.0.1 port="$AUDIO_PORT" \
    >>"$WORK/broadcaster-gst.log" 2>&1 &
  echo $! >"$GST_PIDFILE"
}

broadcaster_close() {
  local r
  r=$(janus_plugin_request janus.plugin.streaming "{\"request\":\"destroy\",\"id\":$ROOM}")
  expect_ok "$r" 455
  r=$(janus_plugin_request janus.plugin.audiobridge "{\"request\":\"destroy\",\"room\":$ROOM}")
  expect_ok "$r" 485
}

broadcaster_stop() {
  broadcaster_close 2>/dev/null || true
  if [[ -f "$GST_PIDFILE" ]]; then
    kill "$(cat "$GST_PIDFILE")" 2>/dev/null || true
    rm -f "$GST_PIDFILE"
  fi
}

case "${1:-}" in
  start) broadcaster_start ;;
  close) broadcaster_close ;;
  stop) broadcaster_stop ;;
  *) echo "usage: $0 start|close|stop" >&2; exit 2 ;;
esac
