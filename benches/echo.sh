#!/usr/bin/env bash
# Echo cancellation of webrtcdsp/webrtcechoprobe as the agent sets them up
# (32 kHz mono S16, noise suppression and gain control off), on the echo path
# of tests/audio.rs (a private PulseAudio: null sink `speaker` → module-loopback
# latency_msec=40, −6 dB → null sink `echo`, where the near end joins by pacat),
# without Janus. The far end (tests/audio.rs's noise, from 1 s) is played
# through the probe, the microphone recorded through webrtcdsp, echo-cancel off
# then on; printed: the canceller's output in dBFS per 0.5 s (far end alone
# 1–8 s, the near end joins at 8 s). Signals from benches/echo_signals.py.
#
#   bash benches/echo.sh alsa     # ALSA pulse plugin; the pipeline runs on alsasink's audio clock
#   bash benches/echo.sh system   # the agent's set-up: both on the system clock (neither ALSA
#                                 # element provides it; the microphone stamps from the clock)
#   bash benches/echo.sh pulse    # pulsesink/pulsesrc (needs gstreamer1.0-pulseaudio)
#   bash benches/echo.sh digital  # no sound server: the microphone is a file of the far end
#                                 # 40 ms later at −6 dB plus the near end (the canceller alone)
#
# NEAR=speech replaces the 700 Hz near end by speech (alsa-utils' samples).
# Measured 2026-12-01 (README "Echo cancellation and talk-back"): `alsa` takes
# the echo from −29 to below −90 dBFS within ~3 s; `system` stops near −50.
set -euo pipefail
mode=${1:-alsa}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill "$pa" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 "$here/echo_signals.py" gen "$work" --near "${NEAR:-tone}"
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
raw="audio/x-raw,rate=32000,channels=1,format=S16LE,layout=interleaved"
case $mode in
  alsa) sink="alsasink device=pulse buffer-time=40000"; src="alsasrc device=pulse"; export PULSE_SOURCE=echo.monitor ;;
  system) sink="alsasink device=pulse buffer-time=40000 provide-clock=false"
    src="alsasrc device=pulse provide-clock=false use-driver-timestamps=false"; export PULSE_SOURCE=echo.monitor ;;
  pulse) sink="pulsesink device=speaker"; src="pulsesrc device=echo.monitor" ;;
  digital) sink="fakesink sync=true"
    src="filesrc location=$work/mic.wav ! wavparse ! audioconvert ! audioresample ! $raw ! identity sync=true" ;;
  *) echo "usage: $0 alsa|system|pulse" >&2; exit 2 ;;
esac
for cancel in false true; do
  [ "$mode" = digital ] || (sleep 0.3; pacat -d echo --latency-msec=20 --file-format=wav "$work/near.wav") &
  near=$!
  # shellcheck disable=SC2086 # the element descriptions are word lists
  gst-launch-1.0 -q -e filesrc location="$work/far.wav" ! wavparse ! audioconvert ! audioresample \
      ! "$raw" ! webrtcechoprobe ! audioconvert ! audioresample ! $sink \
      $src ! audioconvert ! audioresample ! "$raw" \
      ! webrtcdsp echo-cancel=$cancel noise-suppression=false gain-control=false \
      ! wavenc ! filesink location="$work/out.wav" >/dev/null &
  gst=$!
  sleep 13.5
  kill -INT "$gst" 2>/dev/null || true; wait "$gst" || true; wait "$near" || true
  printf 'echo-cancel=%-5s dBFS per 0.5 s: %s\n' "$cancel" "$(python3 "$here/echo_signals.py" profile "$work/out.wav")"
done
