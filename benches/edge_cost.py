#!/usr/bin/env python3
"""What each edge Janus ([[relay]]) costs the origin: its CPU per forward.

    sudo python3 benches/edge_cost.py                           # short form (~3 min)
    sudo python3 benches/edge_cost.py --seconds 60 --rounds 5   # long form (~15 min)

The origin Janus (conf/janus through deploy/janus-conf.sh) takes the agent's
WebRTC uplink (640x480@30, 1000 kbit/s from the agent's x264, an Opus tone);
--edges (default 0,1,2,4) edge Janus instances each get a mountpoint the
agent keeps there, and the origin's VideoRoom publisher forwards the
broadcast into each (one video and one audio forwarder per edge). Per run:
the origin Janus's CPU (user + system from /proc/PID/stat) over --seconds
after every edge receives video, and the agent's. Counts run in a rotating
order per round, so a drift of the machine's load falls on all of them; the
report gives the median (min–max) per count and the least-squares slope of
the origin's CPU over the edge count: the cost of one edge.

Everything runs in a private network namespace of this script's own
(`unshare -n`, a veth pair: WebRTC gathers no loopback candidates); each run
holds /tmp/broadcast-bench.lock. Needs root and what deploy/install-deps.sh
installs.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import (JANUS, REPO, ROOM, ROOM_SECRET, Timeout, _answers, cpu_seconds,  # noqa: E402
                      janus_conf, post, wait, write_private)
from uplink_cost import AGENT, RELEASE, Lock, _commit, _cpu_model, _date, lan, loadavg, spread  # noqa: E402

INSIDE = "BROADCAST_EDGE_BENCH_NETNS"
RELAY = """[[relay]]
url = "http://127.0.0.1:{port}/janus"
admin_key_file = "{work}/edge{n}/broadcast-agent.admin_key"
video_port = {media}
audio_port = {audio}
video_rtcp_port = {rtcp}
"""


def start_janus(work, name, port):
    """A Janus from conf/janus (fresh admin key) with its API on `port`."""
    conf = os.path.join(work, name)
    janus_conf(conf)
    http = os.path.join(conf, "janus.transport.http.jcfg")
    with open(http) as f:
        text = f.read().replace("port = 8088", f"port = {port}").replace("admin_port = 7088", f"admin_port = {port + 1}")
    with open(http, "w") as f:
        f.write(text)
    log = open(os.path.join(work, f"{name}.log"), "w")
    process = subprocess.Popen(["janus", "-F", conf, "-o"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    wait(f"Janus {name}", lambda: _answers(f"http://127.0.0.1:{port}/janus/info"))
    return process


def edge_video_age(port):
    """Milliseconds since the edge's mountpoint last received video."""
    url = f"http://127.0.0.1:{port}/janus"
    try:
        session = post(url, {"janus": "create"})["data"]["id"]
        handle = post(f"{url}/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"})["data"]["id"]
        data = post(f"{url}/{session}/{handle}", {"janus": "message", "body": {
            "request": "info", "id": ROOM, "secret": ROOM_SECRET}})["plugindata"]["data"]
        post(f"{url}/{session}", {"janus": "destroy"})
    except (OSError, KeyError, ValueError):
        return None
    media = data.get("info", {}).get("media", [])
    return next((m.get("age_ms") for m in media if m["type"] == "video"), None)


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(work, origin, edges, seconds):
    """One agent run feeding the first `edges` edges: CPU % of the origin and the agent."""
    ports = [8100 + 10 * n for n in range(edges)]
    relays = "".join(RELAY.format(port=p, work=work, n=n, media=9000 + 10 * n, audio=9001 + 10 * n,
                                  rtcp=9002 + 10 * n) for n, p in enumerate(ports))
    config = os.path.join(work, f"agent-{edges}.toml")
    write_private(config, AGENT.format(janus=JANUS, room=ROOM, work=work, secret=ROOM_SECRET,
                                       transport="webrtc", source="test") + relays)
    log = open(os.path.join(work, f"agent-{edges}.log"), "a")
    with Lock():
        agent = subprocess.Popen([RELEASE, "run", "--config", config], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log)
        try:
            fed = lambda: all((edge_video_age(p) or 10**6) < 500 for p in ports) and _fresh_origin(config)  # noqa: E731
            wait(f"{edges} edges fed", fed, timeout=40, step=0.5)
            time.sleep(3)
            load = loadavg().split()[0]
            o0, a0, t0 = cpu_seconds(origin.pid), cpu_seconds(agent.pid), time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - t0
            result = {"edges": edges, "origin": 100 * (cpu_seconds(origin.pid) - o0) / elapsed,
                      "agent": 100 * (cpu_seconds(agent.pid) - a0) / elapsed, "load": load}
            if not fed():
                raise Timeout(f"an edge went stale during the run with {edges}")
        finally:
            stop(agent)
    return result


def _fresh_origin(config):
    out = subprocess.run([RELEASE, "status", "--config", config, "--json"], capture_output=True, text=True, timeout=10)
    try:
        age = json.loads(out.stdout)["room"]["media_age"]
    except (ValueError, KeyError):
        return False
    return isinstance(age.get("video_ms"), int) and age["video_ms"] < 500


def slope(points):
    """Least-squares slope of y over x."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="measured seconds per run (default 15)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per edge count (default 2)")
    parser.add_argument("--edges", default="0,1,2,4", help="edge counts to run (default 0,1,2,4)")
    parser.add_argument("--no-build", action="store_true", help="use target/release/broadcast-agent as it is")
    args = parser.parse_args()
    counts = [int(n) for n in args.edges.split(",")]
    if os.environ.get(INSIDE) != "1":
        if os.geteuid() != 0:
            sys.exit("bench: needs root (a network namespace of its own: unshare -n, ip link)")
        if not args.no_build:
            with Lock():
                subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
        os.execvpe("unshare", ["unshare", "-n", "--", sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                   dict(os.environ, **{INSIDE: "1"}))
    lan()
    when, load_before = _date(), loadavg()
    work = tempfile.mkdtemp(prefix="broadcast-edge-bench-")
    janus = []
    runs = []
    try:
        janus.append(start_janus(work, "janus", 8088))  # the origin: uplink_cost's AGENT reads its key there
        janus.extend(start_janus(work, f"edge{n}", 8100 + 10 * n) for n in range(max(counts)))
        for i in range(args.rounds):
            order = counts[i % len(counts):] + counts[:i % len(counts)]
            for edges in order:
                r = run(work, janus[0], edges, args.seconds)
                runs.append(r)
                print(f"round {i + 1}, {edges} edges: origin {r['origin']:.2f} %, agent {r['agent']:.2f} %",
                      file=sys.stderr, flush=True)
    except Timeout as e:
        sys.exit(f"bench: {e} (logs in {work})")
    finally:
        for process in janus:
            stop(process)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n`{' '.join(['python3', 'benches/edge_cost.py', *sys.argv[1:]])}`  ")
    print(f"{when} to {_date()}; {os.cpu_count()} cores, {os.uname().machine}, {_cpu_model()}; "
          f"load average {load_before} before, {loadavg()} after; agent built from {_commit()}")
    print(f"\n{args.rounds} rounds of {args.seconds} s per edge count; median (min–max); CPU % of one core.\n")
    print("| edges | origin Janus CPU % | agent CPU % |\n|---:|---:|---:|")
    for n in counts:
        rs = [r for r in runs if r["edges"] == n]
        print(f"| {n} | {spread([r['origin'] for r in rs], '{:.2f}')} | {spread([r['agent'] for r in rs], '{:.2f}')} |")
    per_edge = slope([(r["edges"], r["origin"]) for r in runs])
    agent_per_edge = slope([(r["edges"], r["agent"]) for r in runs])
    print(f"\nper edge (least-squares slope over every run): origin **{per_edge:+.2f}** points of one core, "
          f"agent {agent_per_edge:+.2f} points (the Pi's uplink does not grow with the edges).")


if __name__ == "__main__":
    main()
