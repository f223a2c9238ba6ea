#!/usr/bin/env bash
# Glass to glass, in a real browser: what a viewer of the Pi sees, measured.
#
#   bash benches/glass_to_glass.sh            (as root; about 3 minutes)
#   GLASS_MODES=latency GLASS_FRAMES=600 bash benches/glass_to_glass.sh
#
# The real broadcast-agent (source = "libcamera", 640x480@30, 800 kbit/s) runs
# the stand-in rpicam-vid of the tests (tests/standins/camera.py, as a Pi 4:
# the hardware encoder's path, flushed frame by frame), which draws each
# frame's capture time (wall clock, ms) into its top rows; the agent streams
# it to a real Janus (the shipped conf/janus), and the real viewer page plays
# it in Debian's Chromium. tests/browser/glass.mjs decodes the stamp of every
# presented frame and reports (see its header for GLASS_* settings):
#   latency  stamp to display: median, p95, and the shares of the camera
#            program, the way to the browser, the jitter buffer + decode, display
#   join     `watch` to the first presented frame over 20 fresh viewers
#   reopen   `broadcast-agent open` to the open page's first new frame
#   lipsync  (GLASS_MODES=lipsync, GLASS_LIPSYNC_S=60) a flash and a 1 kHz
#            beep at each whole second, the beep played into the agent's
#            microphone (ALSA `pulse`, a PulseAudio null sink's monitor): beep
#            heard minus flash seen, in Chromium (from the audio track, and from
#            Web Audio) and at the RTP level: the relay (no loss, no jitter)
#            records what the agent sends and tests/browser/rtp_lipsync.py
#            decodes it (RELAY_RECORD=FILE keeps the record)
#   compare  (GLASS_MODES=compare) the page's `delay=` choices side by side
#            in one session, with the lipsync set-up: for each of GLASS_DELAYS
#            (default `default,0,auto`; `default` is the page without delay=),
#            GLASS_ROUNDS (2) fresh viewers of GLASS_COMPARE_S (60) s each:
#            glass to glass, audio minus video (also as heard), Chromium's
#            audio concealed samples per minute, both jitter buffers' mean
#            delay and, for delay=sync, the holds the page chose; then the
#            RTP-level lip sync and the microphone's timestamp jumps of the
#            whole session
#   loss     (GLASS_MODES=loss, RELAY_LOSS=5) Janus in a network namespace of
#            its own behind a relay (tests/browser/relay.py) that drops
#            RELAY_LOSS % of the agent's RTP and delays the rest by 0 to
#            RELAY_JITTER_MS (30) ms; Chromium's freezes, frames decoded, NACKs,
#            PLIs and concealed audio over GLASS_LOSS_S (60) s. Use
#            VIDEO_SOURCE=test (the in-process encoder answers keyframe
#            requests) and VIDEO_RTCP_PORT=0 for "without keyframe requests".
#            LOSS_BY=nft instead: no relay (it would break ICE); Janus and the
#            agent each in a network namespace of their own (Janus 10.77.0.2,
#            the agent 10.78.0.2, routed through the test's namespace, where
#            Chromium stays on 10.77.0.1), and nftables on Janus's input hook
#            drops GLASS_LOSSES % (5,10,20) of the agent's UDP at random (ICE,
#            DTLS, RTP, RTCP, RTX alike); for each loss, each of
#            GLASS_TRANSPORTS (webrtc,rtp) side by side: the agent restarted
#            on it, one fresh viewer, GLASS_LOSS_S s; plus the agent's uplink
#            counters (NACKs received, retransmitted, keyframe requests, round
#            trip). VIDEO_SOURCE defaults to test here. The goal (webrtc at 5 %:
#            >= 90 % of the frames decoded, <= 1 s frozen per minute, audio
#            concealed <= 2 %) fails the run with GLASS_STRICT=1. LOSS_AUDIO=speech
#            puts espeak-ng's speech into the agent's microphone (ALSA `pulse`)
#            instead of the test tone. E.g.
#              GLASS_MODES=loss LOSS_BY=nft bash benches/glass_to_glass.sh
# GLASS_TRANSPORTS=webrtc,rtp with the other modes: each runs once per
# transport (GLASS_TRANSPORT_ROUNDS rounds, interleaved), the agent restarted
# with that stream.transport before each, e.g. glass to glass side by side:
#   GLASS_MODES=latency GLASS_TRANSPORTS=webrtc,rtp GLASS_TRANSPORT_ROUNDS=3 bash benches/glass_to_glass.sh
# A transport may be `transport@label`: the agent binary GLASS_AGENT_<label>
# (default: AGENT, else target/debug) with GLASS_ENV_<label> ("K=V K2=V2")
# added to its environment, so that two builds run side by side, e.g.
#   GLASS_TRANSPORTS=webrtc@main,webrtc@new GLASS_AGENT_new=/tmp/new/broadcast-agent
# GLASS_SPLIT=1 puts Janus and the agent in namespaces of their own as
# LOSS_BY=nft does, without loss (TRANSPORT picks the agent's first transport).
# It runs in the browser test's network namespace (tests/browser/run.sh).
# GLASS_STRICT=1 fails when a goal is missed (p95 <= 80 ms, join median <=
# 500 ms, re-open <= 1 s). The load of the machine is printed with the result:
# figures taken on a busy machine say so.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=$(mktemp -d /tmp/glass.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/bin"
ln -s "$REPO/tests/standins/camera.py" "$SCRATCH/bin/rpicam-vid"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
export PATH="$SCRATCH/bin:$PATH"
export STANDIN_PATTERN=stamp STANDIN_STAMP_LOG="$SCRATCH/stamps.log"
# VIDEO_SOURCE=test: the agent's own x264enc on the test pattern (no stamps:
# for join and reopen only), which makes a keyframe when a viewer asks.
if [[ "${LOSS_BY:-}" == nft && ",${GLASS_MODES:-}," == *,loss,* ]]; then
  # The in-process encoder answers keyframe requests (a camera program cannot).
  export VIDEO_SOURCE=${VIDEO_SOURCE:-test}
fi
export VIDEO_SOURCE=${VIDEO_SOURCE:-libcamera} VIDEO_FRAMERATE=${VIDEO_FRAMERATE:-30} VIDEO_BITRATE_KBPS=${VIDEO_BITRATE_KBPS:-800}
lipsync=
if [[ ",${GLASS_MODES:-}," == *,lipsync,* || ",${GLASS_MODES:-}," == *,compare,* ]]; then
  lipsync=1
  export MIC_DEVICE=pulse STANDIN_BEEP_SINK=speaker STANDIN_BEEP_LOG="$SCRATCH/beeps.log"
  # What the agent sends, recorded on its way to Janus by the relay (no loss,
  # no jitter unless asked): the lip sync at the RTP level, without a browser.
  export RELAY_LOSS=${RELAY_LOSS:-0} RELAY_JITTER_MS=${RELAY_JITTER_MS:-0} RELAY_RECORD=${RELAY_RECORD:-$SCRATCH/rtp.rec}
fi
if [[ "${LOSS_AUDIO:-}" == speech ]]; then
  # Speech into the agent's microphone (its Opus FEC works on speech, barely
  # on the test tone): espeak-ng's voice, looped into PulseAudio's null sink.
  bash "$REPO/deploy/ensure-packages.sh" espeak-ng >/dev/null
  espeak-ng -s 150 -w "$SCRATCH/speech.wav" "The camera on the porch streams to the server over a link \
that loses packets now and then. When a packet is lost, the viewer's browser conceals the gap, and the sound \
gets a small glitch. Opus can carry a coarse copy of each frame inside the next one, so that a single lost \
packet can be rebuilt from the following one. Whether the encoder sends that copy depends on its voice \
activity detector, on the bitrate, and on the loss it was told to expect."
  export MIC_DEVICE=pulse GLASS_LOSS_SPEECH="$SCRATCH/speech.wav"
fi
if [[ "${LOSS_BY:-}" == nft || "${GLASS_SPLIT:-}" == 1 ]]; then
  # Janus and the agent in namespaces of their own; loss by janus.sh loss.
  unset RELAY_LOSS
  export LOSS_BY=${LOSS_BY:-nft} JANUS_ADDR=10.77.0.2 JANUS_PEER=10.77.0.1 AGENT_ADDR=10.78.0.2 AGENT_PEER=10.78.0.1
elif [[ -n "${RELAY_LOSS:-}" ]]; then
  export JANUS_ADDR=10.77.0.2 JANUS_PEER=10.77.0.1
fi
export BROWSER_SCRIPT=glass.mjs BROWSER_TIMEOUT=${BROWSER_TIMEOUT:-1800}
status=0
bash "$REPO/tests/browser/run.sh" || status=$?
if [[ -n "$lipsync" ]]; then
  echo "== lip sync at the RTP level (tests/browser/rtp_lipsync.py)"
  /usr/bin/python3 "$REPO/tests/browser/rtp_lipsync.py" "$RELAY_RECORD" --beep-log "$STANDIN_BEEP_LOG" || status=1
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
exit "$status"
