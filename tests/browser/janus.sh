#!/usr/bin/env bash
# The test Janus for the browser test: the project's conf/janus, run from
# $WORK/janus with its log in $WORK/janus.log.
#   janus.sh start | stop | restart
#   janus.sh start-edge N | stop-edge N
#                           an edge Janus (N = 1..9): the same conf with only
#                           the Streaming plugin, as docs/edges.md runs one,
#                           from $WORK/edgeN (log $WORK/edgeN.log), HTTP on
#                           127.0.0.1:8088+100N, Admin API on 7088+100N, ICE
#                           ports 40000+1000N and up
#   janus.sh loss PERCENT   (with JANUS_ADDR and AGENT_ADDR) drops PERCENT % of
#                           the UDP from AGENT_ADDR at random, by nftables on the
#                           input hook of Janus's namespace (0: none); ICE, DTLS,
#                           RTP, RTCP and RTX alike, without a relay in the path
#   janus.sh loss-count     what that rule saw since: `{"udp":N,"dropped":M}`
#   janus.sh drop-one       drops the agent's next UDP packet over 1000 bytes
#                           (video), and only that one; drop-count as above
#   janus.sh cap KBIT       polices the agent's UDP to KBIT kbit/s (0 lifts it),
#                           a link that carries less than the agent sends;
#                           cap-count as above
# Meant to run inside the test's private network namespace (see run.sh), so
# the shipped ports (HTTP 8088, admin 7088) cannot clash with anything else.
# With JANUS_ADDR (and JANUS_PEER), Janus runs in a network namespace of its
# own, holding JANUS_ADDR/24 on a veth pair whose other end (here) holds
# JANUS_PEER/24, its HTTP and Admin API on all its addresses: a relay here
# can then stand between the agent and Janus on the same ports (relay.py).
# Its default route goes through JANUS_PEER: an agent in a namespace of its
# own (broadcaster.sh, AGENT_ADDR) is reached through this one.
set -euo pipefail
: "${WORK:?WORK must name the scratch folder of the test}"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
NAME=janus
CONF="$WORK/janus"
PIDFILE="$WORK/janus.pid"
LOG="$WORK/janus.log"
JANUS_URL=${JANUS_URL:-http://127.0.0.1:8088/janus}

# Makes this script act on edge N (see above); its conf is written at start.
as_edge() {
  local n=${1:-}
  [[ "$n" =~ ^[1-9]$ ]] || { echo "janus.sh: edge number $n: not 1-9" >&2; exit 2; }
  NAME=edge$n
  CONF="$WORK/$NAME"
  PIDFILE="$WORK/$NAME.pid"
  LOG="$WORK/$NAME.log"
  JANUS_URL="http://127.0.0.1:$((8088 + 100 * n))/janus"
  EDGE=$n
  JANUS_ADDR=""
}

# An edge: other ports, and no plugin but Streaming (docs/edges.md).
edge_conf() {
  local n=$1
  sed -i -E -e "s/^(\s*port) = 8088/\1 = $((8088 + 100 * n))/" \
    -e "s/^(\s*admin_port) = 7088/\1 = $((7088 + 100 * n))/" "$CONF/janus.transport.http.jcfg"
  sed -i -E -e "s/^(\s*rtp_port_range) = .*/\1 = \"$((40000 + 1000 * n))-$((40999 + 1000 * n))\"/" \
    -e 's/^(\s*disable = ")(.*libjanus_voicemail\.so)"/\1\2,libjanus_audiobridge.so,libjanus_textroom.so,libjanus_videoroom.so"/' \
    "$CONF/janus.jcfg"
  grep -q "port = $((8088 + 100 * n))" "$CONF/janus.transport.http.jcfg" &&
    grep -q 'libjanus_videoroom.so"' "$CONF/janus.jcfg" ||
    { echo "janus.sh: the edge conf in $CONF was not written as expected" >&2; return 1; }
}

start() {
  # Already running (run.sh started the edges before the broadcaster): done.
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null &&
     curl -sf -m 1 "$JANUS_URL/info" >/dev/null; then
    return 0
  fi
  if [[ ! -d "$CONF" ]]; then
    mkdir -p "$CONF"
    # As shipped (HTTP on 127.0.0.1:8088), with a fresh admin key on the
    # plugins, which the agent reads from $CONF/broadcast-agent.admin_key.
    bash "$REPO/deploy/janus-conf.sh" "$CONF" >/dev/null
    [[ -z "${EDGE:-}" ]] || edge_conf "$EDGE"
    if [[ -n "${JANUS_ADDR:-}" ]]; then
      sed -i -E 's/^(\s*(admin_)?ip) = "127.0.0.1"/\1 = "0.0.0.0"/' "$CONF/janus.transport.http.jcfg"
    fi
  fi
  if [[ -n "${JANUS_ADDR:-}" ]]; then
    # Waits for its end of the veth pair, then becomes Janus (same PID).
    unshare -n -- bash -c 'ip link set lo up
      for _ in $(seq 200); do ip link show vjanus1 >/dev/null 2>&1 && break; sleep 0.05; done
      ip addr add "$0/24" dev vjanus1 && ip link set vjanus1 up && ip route add default via "$2" &&
        exec /usr/bin/janus -F "$1" -o --log-stdout' \
      "$JANUS_ADDR" "$CONF" "${JANUS_PEER:?}" >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    # Only once it has its own namespace: before, the far end would land here.
    for _ in $(seq 200); do
      [[ "$(readlink "/proc/$(cat "$PIDFILE")/ns/net")" != "$(readlink /proc/self/ns/net)" ]] && break
      sleep 0.01
    done
    ip link add vjanus0 type veth peer name vjanus1 netns "$(cat "$PIDFILE")"
    ip addr add "${JANUS_PEER:?}/24" dev vjanus0
    ip link set vjanus0 up
  else
    /usr/bin/janus -F "$CONF" -o --log-stdout >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 100); do   # up to 10 s
    if curl -sf -m 1 "$JANUS_URL/info" >/dev/null; then return 0; fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
    sleep 0.1
  done
  echo "janus.sh: $NAME did not answer on $JANUS_URL (log: $LOG)" >&2
  tail -20 "$LOG" >&2 || true
  return 1
}

stop() {
  [[ -f "$PIDFILE" ]] || return 0
  local pid; pid=$(cat "$PIDFILE"); rm -f "$PIDFILE"
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# nft in Janus's namespace.
in_janus() { nsenter --net="/proc/$(cat "$PIDFILE")/ns/net" -- "$@"; }

loss() {
  local percent=${1:?loss PERCENT}
  [[ "$percent" =~ ^[0-9]+$ ]] && ((percent <= 100)) || { echo "janus.sh: loss $percent: not 0-100" >&2; return 2; }
  agent_rule uplink_loss "numgen random mod 100 < $percent"
}

# One table of the agent's UDP on Janus's input hook: $1 its name, $2 the
# rule that drops (after a counter of all the agent's UDP).
agent_rule() {
  : "${JANUS_ADDR:?needs Janus in a namespace of its own}" "${AGENT_ADDR:?needs AGENT_ADDR}"
  in_janus nft -f - <<NFT
table inet $1
delete table inet $1
table inet $1 {
  chain input {
    type filter hook input priority 0; policy accept;
    ip saddr $AGENT_ADDR meta l4proto udp counter
    ip saddr $AGENT_ADDR meta l4proto udp $2 counter drop
  }
}
NFT
}

# The next packet of the agent's larger than 1000 bytes (video; audio packets
# are about 100) is dropped, and no other: a token bucket of one.
drop_one() { agent_rule uplink_drop 'udp length > 1000 limit rate 1/hour burst 1 packets'; }

# The agent's UDP policed to KBIT kbit/s (a burst of 10 kB), as a weak link
# that carries less than the agent sends; 0 lifts the cap.
cap() {
  local kbit=${1:?cap KBIT}
  [[ "$kbit" =~ ^[0-9]+$ ]] || { echo "janus.sh: cap $kbit: not a number" >&2; return 2; }
  if ((kbit == 0)); then
    in_janus nft delete table inet uplink_cap 2>/dev/null || true
    return 0
  fi
  agent_rule uplink_cap "limit rate over $((kbit * 125)) bytes/second burst 10000 bytes"
}

# What a table's rules saw: `{"udp":N,"dropped":M}`.
count() {
  in_janus nft -j list table inet "$1" |
    jq -c '[.nftables[] | .rule? | select(.) | (.expr[] | .counter? | select(.) | .packets)] | {udp: .[0], dropped: .[1]}'
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  start-edge) as_edge "${2:-}"; start ;;
  stop-edge) as_edge "${2:-}"; stop ;;
  loss) loss "${2:-}" ;;
  loss-count) count uplink_loss ;;
  drop-one) drop_one ;;
  drop-count) count uplink_drop ;;
  cap) cap "${2:-}" ;;
  cap-count) count uplink_cap ;;
  *) echo "usage: $0 start|stop|restart|start-edge N|stop-edge N|loss PERCENT|loss-count|drop-one|drop-count|cap KBIT|cap-count" >&2; exit 2 ;;
esac
