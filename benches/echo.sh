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
# DRIFT_PPM=100 (or -100) replaces the loopback by a relay that plays the echo
# that much faster (`echo_signals.py relay`): a true clock drift, the echo's
# delay grows (shrinks) by 0.1 ms a second; the far end then talks alone for
# 60 s (FAR_SECONDS sets it), and the echo's delay is measured at its start and
# its end (cross-correlation of the two sinks' monitors; the change is exact).
# PulseAudio and the relay run at real-time priority where allowed (root): the
# relay's streams go through PulseAudio's main thread, which on a loaded machine
# otherwise waits up to ~140 ms, and each underrun of the relay lengthens the
# echo path by its buffer (the relay counts them).
# Measured 2026-12-01 (README "Echo cancellation and talk-back"): `alsa` takes
# the echo from −29 to below −90 dBFS within ~3 s; `system` stops near −50.
set -euo pipefail
mode=${1:-alsa}
drift=${DRIFT_PPM:-}
alone=${FAR_SECONDS:-$([ -n "$drift" ] && echo 60 || echo 7)}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill "$pa" 2>/dev/null || true; rm -rf "$work"' EXIT
rt="chrt -r 5"
$rt true 2>/dev/null || rt=""
python3 "$here/echo_signals.py" gen "$work" --near "${NEAR:-tone}" "$alone"
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
# After its start: PulseAudio resets its main thread's priority when it starts.
[ -z "$rt" ] || chrt -a -r -p 5 "$pa"
if [ -z "$drift" ]; then
  pactl load-module module-loopback source=speaker.monitor sink=echo latency_msec=40 channels=1 >/dev/null
  index=$(pactl list short sink-inputs | awk '/module-loopback/ {print $1; exit}')
  pactl set-sink-input-volume "$index" 0.501   # −6 dB
fi
raw="audio/x-raw,rate=32000,channels=1,format=S16LE,layout=interleaved"
case $mode in
  alsa) sink="alsasink device=pulse buffer-time=40000"; src="alsasrc device=pulse"; export PULSE_SOURCE=echo.monitor ;;
  system) sink="alsasink device=pulse buffer-time=40000 provide-clock=false"
    src="alsasrc device=pulse provide-clock=false use-driver-timestamps=false"; export PULSE_SOURCE=echo.monitor ;;
  pulse) sink="pulsesink device=speaker"; src="pulsesrc device=echo.monitor" ;;
  digital) [ -z "$drift" ] || { echo "DRIFT_PPM needs a sound server (alsa, system, pulse)" >&2; exit 2; }
    sink="fakesink sync=true"
    src="filesrc location=$work/mic.wav ! wavparse ! audioconvert ! audioresample ! $raw ! identity sync=true" ;;
  *) echo "usage: $0 alsa|system|pulse|digital" >&2; exit 2 ;;
esac
for cancel in false true; do
  pids=()
  if [ -n "$drift" ]; then
    $rt python3 "$here/echo_signals.py" relay "$drift" 2>"$work/relay.log" &
    relay=$!
    for sink_name in speaker echo; do
      parec -d $sink_name.monitor --raw --format=s16le --rate=48000 --channels=1 --latency-msec=10 \
        >"$work/$sink_name.raw" &
      pids+=($!)
    done
  fi
  [ "$mode" = digital ] || (sleep 0.3; pacat -d echo --latency-msec=20 --file-format=wav "$work/near.wav") &
  near=$!
  # shellcheck disable=SC2086 # the element descriptions are word lists
  gst-launch-1.0 -q -e filesrc location="$work/far.wav" ! wavparse ! audioconvert ! audioresample \
      ! "$raw" ! webrtcechoprobe ! audioconvert ! audioresample ! $sink \
      $src ! audioconvert ! audioresample ! "$raw" \
      ! webrtcdsp echo-cancel=$cancel noise-suppression=false gain-control=false \
      ! wavenc ! filesink location="$work/out.wav" >/dev/null &
  gst=$!
  sleep "$(python3 -c "print(1 + $alone + 4 + 1.5)")"
  kill -INT "$gst" 2>/dev/null || true; wait "$gst" || true; wait "$near" || true
  printf 'echo-cancel=%-5s dBFS per 0.5 s: %s\n' "$cancel" "$(python3 "$here/echo_signals.py" profile "$work/out.wav")"
  if [ -n "$drift" ]; then
    kill "${pids[@]}"; kill -TERM "$relay"; wait "$relay" || true
    echo "  $(cat "$work/relay.log"); echo path delay (ms) 1 s after the far end starts, and 1 s before the near end joins:"
    python3 "$here/echo_signals.py" delay "$work/speaker.raw" "$work/echo.raw" 2 "$alone" | sed 's/^/    /'
  fi
done
