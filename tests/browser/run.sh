#!/usr/bin/env bash
# Browser end-to-end test of the viewer page (deploy/web) against a real Janus.
#
#   bash tests/browser/run.sh          (as root; prints `browser: N passed, M failed`)
#
# 1. Outside any namespace: installs what it needs (Debian chromium, janus,
#    janus.js and adapter.js, GStreamer, curl, jq) and `npm ci`s playwright-core.
# 2. Re-runs itself in a private network namespace (`unshare -n`): Janus never
#    offers loopback ICE candidates, so the namespace gets `lo` plus a veth pair
#    holding 127.0.0.2/32, which Janus offers and Chromium reaches. Nothing in
#    there can reach a registry, hence step 1 first.
# 3. Inside: starts Janus (tests/browser/janus.sh), the broadcaster
#    (tests/browser/broadcaster.sh: the real broadcast-agent on test sources) and
#    viewer.test.mjs, which serves the page, drives Chromium and records results.
# 4. Then, in a second private namespace, the WebRTC uplink under loss (about
#    45 s): Janus (10.77.0.2) and the agent (10.78.0.2) each in a namespace of
#    their own, nftables on Janus's input hook dropping 5 % of the agent's UDP
#    at random, the agent on stream.transport = "webrtc" (x264enc in-process,
#    30 fps, 800 kbit/s; espeak-ng's speech into its microphone, ALSA `pulse`:
#    Opus FEC covers speech, not a steady tone), one viewer for 20 s (glass.mjs
#    GLASS_MODES=loss, LOSS_BY=nft): issue 24's goal with a margin for the short
#    window: the uplink's NACKs answered, >= 90 % of the frames decoded, audio
#    concealed <= 2 %, and <= 2 s frozen per minute (the goal's 1 s would fail on
#    two 200 ms freezes in 20 s). BROWSER_LOSS_GOAL=full asks for <= 1 s.
#    Measured: docs/measurements/uplink-loss.md. BROWSER_LOSS_CHECK=0 leaves this
#    part out, BROWSER_LOSS_CHECK=only runs it alone.
# 5. Then, in a third private namespace, the broadcast fanned out to two edge
#    Janus servers (edges.test.mjs, about 60 s; issue 25): a viewer on each edge
#    sees video, talks and chats through the origin; an edge that hangs, then
#    one that stops, moves its viewer to the other within 5 s while the other's
#    viewer decodes >= 99 % of its frames. BROWSER_EDGE_CHECK=0 leaves it out
#    (so does BROWSER_LOSS_CHECK=0, which runs the viewer part alone).
# 6. Then, in a fourth private namespace, a weak link (about 2.5 min; issue 27):
#    the agent on the libcamerasrc stand-in over the WebRTC uplink; one video
#    packet dropped on Janus's input: the viewer shows a new frame within 300 ms;
#    the uplink capped at 700 kbit/s (1500 configured) for 30 s: >= 80 % of the
#    frames decoded with the adaptive bitrate (reported without it), and the
#    bitrate back at 1500 within 20 s of the cap going (link.mjs).
#    BROWSER_LINK_CHECK=0 leaves it out.
# Exits non-zero on any failure. Set KEEP=1 to keep the scratch folder.
# The benches reuse all of this: BROWSER_SCRIPT names another driver than
# viewer.test.mjs (in this folder), BROWSER_TIMEOUT its time limit in s.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

die_setup() {
  echo "" >&2
  echo "!!! browser test CANNOT RUN: $*" >&2
  echo "browser: 0 passed, 1 failed"
  exit 1
}

if [[ "${1:-}" != "--inside" ]]; then
  [[ $(id -u) == 0 ]] || die_setup "needs root (apt-get, unshare -n, ip link)"

  # ---- dependencies (network needed: before the namespace) ----
  packages=(chromium libjs-janus-gateway libjs-webrtc-adapter janus curl jq iproute2 util-linux
            gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
            gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-alsa fonts-dejavu-core
            pulseaudio pulseaudio-utils libasound2-plugins python3 nftables espeak-ng)
  command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
  bash "$REPO/deploy/ensure-packages.sh" "${packages[@]}" || die_setup "installing ${packages[*]} failed"
  for f in /usr/bin/chromium /usr/bin/janus /usr/share/javascript/janus-gateway/janus.js \
           /usr/share/javascript/webrtc-adapter/adapter.js; do
    [[ -e "$f" ]] || die_setup "$f is missing after install"
  done
  echo "== build broadcast-agent"
  (cd "$REPO" && timeout 900 cargo build --locked --quiet) || die_setup "cargo build failed"
  [[ -x "$REPO/target/debug/broadcast-agent" ]] || die_setup "target/debug/broadcast-agent missing"
  for tool in pulseaudio parec pactl; do
    command -v "$tool" >/dev/null || die_setup "$tool missing (bash deploy/install-deps.sh)"
  done
  echo "== npm ci (playwright-core)"
  (cd "$HERE" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) || die_setup "npm ci failed in $HERE"

  # ---- the rest runs in a private network namespace ----
  if [[ -n "${BROWSER_SCRIPT:-}" || "${BROWSER_LOSS_CHECK:-1}" == 0 ]]; then
    exec timeout --kill-after=10 $((${BROWSER_TIMEOUT:-300} + 120)) unshare -n -- bash "$0" --inside
  fi
  OUT=$(mktemp -d /tmp/browser-out.XXXXXX)
  trap 'rm -rf "$OUT"' EXIT
  status=0
  if [[ "${BROWSER_LOSS_CHECK:-1}" == only ]]; then
    echo "browser: 0 passed, 0 failed" >"$OUT/viewer"   # the viewer tests left out
  else
    timeout --kill-after=10 $((${BROWSER_TIMEOUT:-300} + 120)) unshare -n -- bash "$0" --inside \
      | tee "$OUT/viewer" || status=1
  fi
  echo ""
  echo "== the WebRTC uplink under 5 % loss (glass.mjs GLASS_MODES=loss LOSS_BY=nft, 20 s)"
  # The goal's 1 s frozen per minute is two 200 ms freezes in 20 s: 2 s here.
  goal=(GLASS_GOAL_FROZEN_S=2)
  [[ "${BROWSER_LOSS_GOAL:-}" == full ]] && goal=()
  espeak-ng -s 150 -w "$OUT/speech.wav" "The camera on the porch streams to the server over a link \
that loses packets now and then. When a packet is lost, the viewer's browser conceals the gap, and the \
sound gets a small glitch. Opus can carry a coarse copy of each frame inside the next one, so that a \
single lost packet can be rebuilt from the following one." || status=1
  env JANUS_ADDR=10.77.0.2 JANUS_PEER=10.77.0.1 AGENT_ADDR=10.78.0.2 AGENT_PEER=10.78.0.1 \
    LOSS_BY=nft TRANSPORT=webrtc VIDEO_SOURCE=test VIDEO_FRAMERATE=30 VIDEO_BITRATE_KBPS=800 \
    MIC_DEVICE=pulse GLASS_LOSS_SPEECH="$OUT/speech.wav" \
    BROWSER_SCRIPT=glass.mjs BROWSER_TIMEOUT=100 GLASS_MODES=loss GLASS_LOSSES=5 GLASS_TRANSPORTS=webrtc \
    GLASS_LOSS_S=20 GLASS_STRICT=1 GLASS_LOSS_REPAIRED=1 "${goal[@]}" \
    timeout --kill-after=10 220 unshare -n -- bash "$0" --inside | tee "$OUT/loss" || status=1
  if [[ "${BROWSER_EDGE_CHECK:-1}" == 0 || "${BROWSER_LOSS_CHECK:-1}" == only ]]; then
    echo "browser: 0 passed, 0 failed" >"$OUT/edges"   # the edge tests left out
  else
    echo ""
    echo "== the broadcast fanned out to two edge Janus servers (edges.test.mjs)"
    # The agent publishes over WebRTC (a LAN in the namespace: no loopback
    # candidates) and the origin forwards into the two edges it keeps ([[relay]]).
    BROWSER_SCRIPT=edges.test.mjs BROWSER_TIMEOUT=150 EDGE_RELAYS="1 2" EDGE_LAN=1 TRANSPORT=webrtc \
      timeout --kill-after=10 270 unshare -n -- bash "$0" --inside | tee "$OUT/edges" || status=1
  fi
  if [[ "${BROWSER_LINK_CHECK:-1}" == 0 || "${BROWSER_LOSS_CHECK:-1}" == only ]]; then
    echo "browser: 0 passed, 0 failed" >"$OUT/link"   # the weak-link tests left out
  else
    echo ""
    echo "== a weak link: one lost packet, then a rate cap (glass.mjs GLASS_MODES=dropone,cap)"
    # The Pi camera in-process (the stand-ins; snow fills the bitrate as a
    # sensor's noise does) over the WebRTC uplink, Janus and the agent in
    # namespaces of their own (janus.sh drop-one, cap).
    env JANUS_ADDR=10.77.0.2 JANUS_PEER=10.77.0.1 AGENT_ADDR=10.78.0.2 AGENT_PEER=10.78.0.1 \
      LOSS_BY=nft TRANSPORT=webrtc VIDEO_SOURCE=libcamerasrc STANDIN_PATTERN=snow \
      VIDEO_FRAMERATE=25 VIDEO_BITRATE_KBPS=1500 GLASS_CAP_KBIT=700 \
      BROWSER_SCRIPT=glass.mjs BROWSER_TIMEOUT=240 GLASS_MODES=dropone,cap GLASS_STRICT=1 \
      GLASS_DROPONE_VARIANTS=webrtc GLASS_CAP_VARIANTS=webrtc@adapt,webrtc@fixed \
      GLASS_ENV_fixed="BROADCAST_AGENT__VIDEO__ADAPTIVE_BITRATE=false" \
      timeout --kill-after=10 360 unshare -n -- bash "$0" --inside | tee "$OUT/link" || status=1
  fi
  # Each part ends with its own summary line; one without (killed, timed out) is a failure.
  read -r passed failed < <(awk '/^browser: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; n++ }
    END { if (n < 4) f++; print p + 0, f + 0 }' "$OUT/viewer" "$OUT/loss" "$OUT/edges" "$OUT/link")
  echo "browser: $passed passed, $failed failed (all parts)"
  ((status == 0 && failed == 0)) && exit 0
  exit 1
fi

# ============================ inside the namespace ============================
WORK=$(mktemp -d /tmp/browser-e2e.XXXXXX)
export WORK REPO
# JANUS_ADDR (the loss bench): Janus in a namespace of its own (janus.sh).
JANUS_HOST=${JANUS_ADDR:-127.0.0.1}
export JANUS_URL="http://$JANUS_HOST:8088/janus"
# Admin API and secret of the shipped conf/janus (janus.transport.http.jcfg, janus.jcfg).
export ADMIN_URL="http://$JANUS_HOST:7088/admin"
export ADMIN_SECRET=$(sed -n 's/^\s*admin_secret\s*=\s*"\(.*\)".*/\1/p' "$REPO/conf/janus/janus.jcfg")
export ROOM=4556
# The room's secret, which the agent holds: the chat's announcements need it.
export ROOM_SECRET=e2e-room-secret
RESULTS="$WORK/results"
: >"$RESULTS"
export RESULTS
fail_step() { echo "FAIL $1" | tee -a "$RESULTS"; echo "!!! $1" >&2; }

cleanup() {
  bash "$HERE/broadcaster.sh" stop >/dev/null 2>&1 || true
  if [[ -f "$WORK/relay.pid" ]]; then
    kill "$(cat "$WORK/relay.pid")" 2>/dev/null && sleep 0.5
    cat "$WORK/relay.log" 2>/dev/null || true
  fi
  bash "$HERE/janus.sh" stop >/dev/null 2>&1 || true
  for n in 1 2; do bash "$HERE/janus.sh" stop-edge "$n" >/dev/null 2>&1 || true; done   # edges.test.mjs's
  if [[ "${KEEP:-}" == 1 ]]; then echo "(kept $WORK)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

finish() {
  local passed failed
  passed=$(grep -c '^PASS ' "$RESULTS")
  failed=$(grep -c '^FAIL ' "$RESULTS")
  if ((failed > 0)); then
    for log in janus.log agent.log pulse.log; do
      [[ -s "$WORK/$log" ]] && { echo "--- last lines of $log"; tail -15 "$WORK/$log"; }
    done
  fi
  echo "browser: $passed passed, $failed failed"
  ((failed == 0 && passed > 0))
  exit $?
}

echo "== network namespace: lo + veth pair with 127.0.0.2/32"
if ! { ip link set lo up &&
       ip link add veth-e2e0 type veth peer name veth-e2e1 &&
       ip addr add 127.0.0.2/32 dev veth-e2e0 &&
       ip link set veth-e2e0 up && ip link set veth-e2e1 up; }; then
  fail_step "network namespace setup (ip link/addr failed)"
  finish
fi

if [[ -n "${EDGE_LAN:-}" ]]; then
  echo "== a LAN in the namespace (10.77.0.1/24, 10.77.0.2/24): WebRTC gathers no loopback candidates"
  if ! { ip link add lan0 type veth peer name lan1 && ip addr add 10.77.0.1/24 dev lan0 &&
         ip addr add 10.77.0.2/24 dev lan1 && ip link set lan0 up && ip link set lan1 up &&
         ip route add default via 10.77.0.1; }; then
    fail_step "LAN setup (ip link/addr/route failed)"
    finish
  fi
fi

echo "== Janus"
if ! bash "$HERE/janus.sh" start; then fail_step "Janus starts"; finish; fi
for n in ${EDGE_RELAYS:-}; do
  # Before the broadcaster: its [[relay]] tables name the edges' admin key files.
  bash "$HERE/janus.sh" start-edge "$n" || { fail_step "edge $n starts"; finish; }
done

echo "== web root (page + janus.js + adapter.js)"
WEB="$WORK/web"
mkdir -p "$WEB"
cp -r "$REPO"/deploy/web/{index.html,viewer.js,people.js,chat.js,config.js,avatars} "$WEB/"
cp /usr/share/javascript/janus-gateway/janus.js "$WEB/janus.js"
cp /usr/share/javascript/webrtc-adapter/adapter.js "$WEB/adapter.js"
export WEB_ROOT="$WEB"

if [[ -n "${RELAY_LOSS:-}" ]]; then
  # The loss bench: the agent sends to a lossy relay here, which sends on to
  # Janus (its own namespace); keyframe requests come back through it untouched.
  echo "== relay: ${RELAY_LOSS} % loss, 0-${RELAY_JITTER_MS:-30} ms jitter on RTP to Janus"
  python3 "$HERE/relay.py" --listen 127.0.0.1 --to "${JANUS_ADDR:?}" --via "${JANUS_PEER:?}" \
    --ports 5004,5006,8006 --lossy 5004,5006 --loss "$RELAY_LOSS" --jitter "${RELAY_JITTER_MS:-30}" \
    --seed "${RELAY_SEED:-1}" >"$WORK/relay.log" 2>&1 &
  echo $! >"$WORK/relay.pid"
  export STREAM_HOST=127.0.0.1
fi

echo "== broadcaster start"
if ! bash "$HERE/broadcaster.sh" start; then fail_step "broadcaster starts"; finish; fi

SCRIPT=${BROWSER_SCRIPT:-viewer.test.mjs}
echo "== $SCRIPT"
export BROADCASTER="$HERE/broadcaster.sh" JANUS_CTL="$HERE/janus.sh"
export SCREENSHOT="$REPO/deploy/web/screenshot.png"
timeout --kill-after=5 "${BROWSER_TIMEOUT:-300}" node "$HERE/$SCRIPT"
rc=$?
if ((rc != 0)) && ! grep -q '^FAIL ' "$RESULTS"; then
  fail_step "$SCRIPT exited with $rc without recording a failure (crash or timeout)"
fi
finish
