#!/usr/bin/env bash
# The monitoring test: deploy/prometheus's alert rules and deploy/grafana's
# dashboard against the series of a real agent.
#
#   bash tests/monitoring/run.sh     (as root; ends with `monitoring: ok`)
#
# 1. Outside any namespace: installs Debian's prometheus (with promtool) and
#    prometheus-node-exporter, builds the release agent, `promtool check rules`.
# 2. Re-runs itself in a private network namespace (`unshare -n`: the shipped
#    ports cannot clash), with a veth pair for the WebRTC uplink (neither Janus
#    nor webrtcbin gathers loopback candidates). There: Janus (conf/janus), the
#    agent (target/release, test pattern and tone, stream.transport = "webrtc",
#    [metrics] every second into node exporter's textfile directory), node
#    exporter's textfile collector, and a Prometheus scraping it every second.
# 3. With the room live, the series are captured (`live`), and every query of
#    deploy/grafana/broadcast-agent.json is evaluated by that Prometheus at
#    that moment and must return series. Then the agent's UDP to Janus is dropped until Janus
#    has had no media for over 12 s (`no_media`), and Janus is stopped
#    (`janus_down`).
# 4. tests/monitoring/alerts.test.yml becomes a promtool test over those
#    captures (monitoring.py tests), and `promtool test rules` runs it.
# KEEP=1 keeps the scratch folder.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RULES="$REPO/deploy/prometheus/broadcast-agent.rules.yml"
DASHBOARD="$REPO/deploy/grafana/broadcast-agent.json"
AGENT="$REPO/target/release/broadcast-agent"
fail() { echo "monitoring: FAILED: $*" >&2; exit 1; }

if [[ "${1:-}" != "--inside" ]]; then
  [[ $(id -u) == 0 ]] || fail "needs root (apt-get, unshare -n, ip link, nft)"
  bash "$REPO/deploy/install-deps.sh"
  bash "$REPO/deploy/ensure-packages.sh" prometheus prometheus-node-exporter python3-yaml iproute2 util-linux
  echo "== build the release agent"
  (cd "$REPO" && timeout 1200 cargo build --locked --release --quiet) || fail "cargo build --release"
  echo "== promtool check rules"
  promtool check rules "$RULES" || fail "promtool check rules $RULES"
  exec timeout --kill-after=10 240 unshare -n -- bash "$0" --inside
fi

# ============================ inside the namespace ============================
WORK=$(mktemp -d /tmp/monitoring-test.XXXXXX)
PROM=http://127.0.0.1:9090
pids=()
cleanup() {
  # The agent first (it removes its room from Janus), then the others.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ "${KEEP:-}" == 1 ]]; then echo "(kept $WORK)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
logs() {
  for log in agent.log janus.log prometheus.log node-exporter.log; do
    echo "--- last lines of $log"; tail -15 "$WORK/$log" || true
  done
}
check() { # what command...
  local what=$1; shift
  "$@" || { logs; fail "$what"; }
}
# A failed check of the rules or the dashboard: the run goes on to the others.
failed=()
verdict() { # what command...
  local what=$1; shift
  "$@" && return 0
  failed+=("$what")
  return 1
}
# Debian's Python, which python3-yaml installs into.
mon() { /usr/bin/python3 "$HERE/monitoring.py" "$@"; }
# Waits until Prometheus holds a series for a query.
until_series() { # what seconds query
  check "$1" mon wait "$PROM" "$3" "$2"
}

echo "== network namespace: lo + veth pair 10.77.0.1/24 - 10.77.0.2/24"
ip link set lo up
ip link add lan0 type veth peer name lan1
ip addr add 10.77.0.1/24 dev lan0
ip addr add 10.77.0.2/24 dev lan1
ip link set lan0 up
ip link set lan1 up
ip route add default via 10.77.0.1

echo "== Janus, node exporter, Prometheus"
mkdir -p "$WORK/janus" "$WORK/textfile" "$WORK/state" "$WORK/tsdb" "$WORK/captures"
# As shipped (HTTP on 127.0.0.1:8088), with a fresh admin key for the agent.
bash "$REPO/deploy/janus-conf.sh" "$WORK/janus" >/dev/null
janus -F "$WORK/janus" -o --log-stdout >"$WORK/janus.log" 2>&1 &
janus_pid=$!
prometheus-node-exporter --web.listen-address=127.0.0.1:9100 --collector.disable-defaults \
  --collector.textfile --collector.textfile.directory="$WORK/textfile" >"$WORK/node-exporter.log" 2>&1 &
pids+=($!)
cat >"$WORK/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: node
    static_configs: [{targets: ["127.0.0.1:9100"]}]
YAML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address=127.0.0.1:9090 >"$WORK/prometheus.log" 2>&1 &
pids+=($!)
check "Janus answers" timeout 10 sh -c \
  'until curl -sf -m 1 http://127.0.0.1:8088/janus/info >/dev/null; do sleep 0.1; done'

echo "== the agent"
# Holds the room's secret (without one, nothing opens by itself): owner-only.
(umask 077; cat >"$WORK/agent.toml") <<TOML
[janus]
url = "http://127.0.0.1:8088/janus"
[room]
id = 4556
secret = "monitoring-room-secret"
admin_key_file = "$WORK/janus/broadcast-agent.admin_key"
check_interval_ms = 500
[stream]
transport = "webrtc"
janus_media_timeout_ms = 4000
[video]
source = "test"
width = 320
height = 240
framerate = 15
bitrate_kbps = 300
[microphone]
device = "test"
[speaker]
enabled = false
[control]
socket = "$WORK/agent.sock"
state_dir = "$WORK/state"
[metrics]
textfile = "$WORK/textfile/broadcast_agent.prom"
interval_s = 1
TOML
"$AGENT" run --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
pids=($! "${pids[@]}")

echo "== live: the room, the WebRTC uplink, media at Janus"
until_series "the room is live" 30 'broadcast_agent_room_phase{phase="live"} == 1'
until_series "the WebRTC uplink is connected" 30 'broadcast_agent_uplink_connected == 1'
# Enough samples for the dashboard's rates.
until_series "five samples of the uplink" 20 \
  'count_over_time(broadcast_agent_uplink_packets_sent_total[1m]) >= 5'
check "capture live" mon capture "$PROM" live "$WORK/captures" \
  'broadcast_agent_room_phase{phase="live"} == 1 and on() broadcast_agent_uplink_connected == 1
   and on() count(broadcast_agent_media_age_seconds < 2) == 2 and on() broadcast_agent_uplink_rtt_seconds' 20
echo "== the dashboard's queries (deploy/grafana/broadcast-agent.json)"
verdict "dashboard queries" mon dashboard "$PROM" "$DASHBOARD" "$WORK/captures/live.json" || true

echo "== no media at Janus: the agent's UDP to Janus dropped"
nft add table inet cut
nft add chain inet cut input '{ type filter hook input priority 0 ; }'
nft add rule inet cut input ip daddr 10.77.0.0/24 meta l4proto udp drop
check "capture no_media: media age above 12 s" mon capture "$PROM" no_media "$WORK/captures" \
  'count(broadcast_agent_media_age_seconds > 12) == 2' 40
nft delete table inet cut

echo "== Janus stopped"
kill -INT "$janus_pid"
check "Janus stops" timeout 10 sh -c "while kill -0 $janus_pid 2>/dev/null; do sleep 0.1; done"
check "capture janus_down: Janus unreachable" mon capture "$PROM" janus_down "$WORK/captures" \
  'broadcast_agent_janus_error{class="unreachable"} == 1 and on() broadcast_agent_room_phase{phase="opening"} == 1' 20

echo "== promtool test rules (tests/monitoring/alerts.test.yml over the captures)"
if verdict "promtool test file" mon tests "$HERE/alerts.test.yml" "$WORK/captures" "$RULES" "$WORK/alerts.test.json"; then
  verdict "promtool test rules" promtool test rules "$WORK/alerts.test.json" || true
fi
((${#failed[@]} == 0)) || fail "$(IFS=,; echo "${failed[*]}")"
echo "monitoring: ok"
