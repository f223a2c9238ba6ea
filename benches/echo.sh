#!/usr/bin/env bash
# Echo cancellation of webrtcdsp/webrtcechoprobe as the agent sets them up
# (32 kHz mono S16, noise suppression and gain control off), on the echo path
# of tests/audio.rs (a private PulseAudio: null sink `speaker` → module-loopback
# latency_msec=40 → null sink `echo`), without Janus: pink noise is played
# through the probe and recorded back through webrtcdsp, echo-cancel off then
# on, RMS per second printed by `level`. Two ways to reach the sound server:
#
#   bash benches/echo.sh alsa    # alsasink/alsasrc device=pulse (ALSA's pulse plugin, as the agent's tests)
#   bash benches/echo.sh pulse   # pulsesink/pulsesrc (needs gstreamer1.0-pulseaudio)
#
# SECONDS_PER_RUN (default 12) sets the length of each run.
set -euo pipefail
mode=${1:-alsa}
secs=${SECONDS_PER_RUN:-12}
work=$(mktemp -d)
trap 'kill "$pa" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/default.pa" <<EOP
load-module module-null-sink sink_name=speaker rate=48000 channels=2
load-module module-null-sink sink_name=echo rate=48000 channels=1
load-module module-native-protocol-unix auth-anonymous=1 socket=$work/native
set-default-sink speaker
EOP
HOME=$work XDG_RUNTIME_DIR=$work pulseaudio -n -F "$work/default.pa" --daemonize=no \
  --exit-idle-time=-1 --disable-shm=yes --use-pid-file=no >/dev/null 2>&1 &
pa=$!
export PULSE_SERVER=unix:$work/native
for _ in $(seq 100); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
pactl load-module module-loopback source=speaker.monitor sink=echo latency_msec=40 channels=1 >/dev/null
index=$(pactl list short sink-inputs | awk '/module-loopback/ {print $1; exit}')
pactl set-sink-input-volume "$index" 0.501   # −6 dB
case $mode in
  alsa) sink="alsasink device=pulse buffer-time=40000"; src="alsasrc device=pulse"; export PULSE_SOURCE=echo.monitor ;;
  pulse) sink="pulsesink device=speaker"; src="pulsesrc device=echo.monitor" ;;
  *) echo "usage: $0 alsa|pulse" >&2; exit 2 ;;
esac
raw="audio/x-raw,rate=32000,channels=1,format=S16LE"
for cancel in false true; do
  printf 'echo-cancel=%-5s RMS dBFS per second:' "$cancel"
  # shellcheck disable=SC2086 # the element descriptions are word lists
  timeout "$secs" gst-launch-1.0 -m audiotestsrc is-live=true wave=pink-noise volume=0.3 \
      ! "$raw" ! webrtcechoprobe ! audioconvert ! audioresample ! $sink \
      $src ! audioconvert ! audioresample ! "$raw" \
      ! webrtcdsp echo-cancel=$cancel noise-suppression=false gain-control=false \
      ! level interval=1000000000 ! fakesink 2>&1 \
    | grep -o 'rms=(GValueArray)< [-0-9.]*' | sed 's/.*< //' | xargs printf ' %.0f' || true
  echo
done
