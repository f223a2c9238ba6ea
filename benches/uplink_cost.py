#!/usr/bin/env python3
"""The agent's CPU and memory with the WebRTC uplink against plain RTP, same pipelines.

    sudo python3 benches/uplink_cost.py [--seconds 20] [--rounds 3]      # short form (~3 min)
    sudo python3 benches/uplink_cost.py --seconds 60 --rounds 7          # long form (~16 min)
    sudo python3 benches/uplink_cost.py --camera                         # the Pi's shape (see below)

(The times are without waiting for /tmp/broadcast-bench.lock.)

One run of the agent per transport and round, alternately (rtp, webrtc, then
webrtc, rtp, ...: a drift in the machine's load falls on both), each for
--seconds after its media reached Janus and settled:
  - `[stream] transport = "rtp"`: the capture pipelines send RTP straight to
    the Streaming mountpoint;
  - `[stream] transport = "webrtc"`: they hand it through appsink/appsrc to the
    uplink pipeline's webrtcbin (ICE, DTLS, SRTP, RTCP, RTX), a VideoRoom
    publisher that Janus forwards into the mountpoint.
Both on the test sources of benches/overhead.py (640x480@30 H.264 via x264 at
1000 kbit/s, a 440 Hz Opus tone); the speaker is off (its pipeline does not go
through the uplink, and a constant on both sides would only flatter the ratio).
With --camera the video comes from the stand-in rpicam-vid instead
(tests/standins/camera.py as a Pi 4, same size, rate and bitrate): on a Pi the
H.264 encoder is outside the agent, so the agent's own CPU is far smaller and
the uplink's per-packet work weighs more in the ratio.

Janus (conf/janus) and the agent run inside one private network namespace of
this script's own (`unshare -n`) with a veth pair, 10.77.0.1/24 and
10.77.0.2/24, and a default route: WebRTC gathers no loopback candidates.
Needs root, iproute2, util-linux (unshare, flock) and what
deploy/install-deps.sh installs; Janus on 127.0.0.1:8088 inside the
namespace stands in the way of nothing outside it.

For each run: CPU seconds (user + system of all the agent's threads, from
/proc/PID/stat), CPU % of one core, peak RSS (VmHWM), and Janus's CPU % over the
same window (an aside: the VideoRoom publisher's DTLS/SRTP and its forwarders
move work to Janus too); then median and spread per transport, the ratio
webrtc/rtp of the medians and of each round's pair, and the agent's threads
that took the most CPU. With a PMU (`perf stat -e instructions true` counts),
also the agent's instructions per run.

Each agent run (start, warm-up, measurement, stop) and the build hold
/tmp/broadcast-bench.lock (flock(2), as `flock /tmp/broadcast-bench.lock ...`
does), so that no other benchmark on this machine runs at the same time.
"""
import argparse
import collections
import fcntl
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import (JANUS, REPO, ROOM, ROOM_SECRET, TICK, Timeout, _answers, cpu_seconds,  # noqa: E402
                      janus_conf, peak_rss_mib, wait, write_private)

LOCK = "/tmp/broadcast-bench.lock"
RELEASE = os.path.join(REPO, "target", "release", "broadcast-agent")
STANDIN = os.path.join(REPO, "tests", "standins", "camera.py")
PI4 = b"raspberrypi,4-model-b\0brcm,bcm2711\0"
INSIDE = "BROADCAST_UPLINK_BENCH_NETNS"
BUILT = "BROADCAST_UPLINK_BENCH_BUILT"
LAN = ("10.77.0.1", "10.77.0.2")
TRANSPORTS = ("rtp", "webrtc")
AGENT = """[janus]
url = "{janus}"
[room]
id = {room}
admin_key_file = "{work}/janus/broadcast-agent.admin_key"
secret = "{secret}"
check_interval_ms = 2000
[stream]
transport = "{transport}"
[video]
source = "{source}"
width = 640
height = 480
framerate = 30
bitrate_kbps = 1000
[microphone]
device = "test"
[speaker]
enabled = false
[control]
socket = "{work}/agent.sock"
state_dir = "{work}/state"
"""


class Lock:
    """/tmp/broadcast-bench.lock held exclusively, waited for if need be."""

    def __enter__(self):
        self.file = open(LOCK, "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"bench: waiting for {LOCK} (another benchmark runs)", file=sys.stderr, flush=True)
            fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def lan():
    """Loopback up, a veth pair with the two LAN addresses, a default route."""
    for args in (["link", "set", "lo", "up"],
                 ["link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
                 ["addr", "add", f"{LAN[0]}/24", "dev", "lan0"],
                 ["addr", "add", f"{LAN[1]}/24", "dev", "lan1"],
                 ["link", "set", "lan0", "up"],
                 ["link", "set", "lan1", "up"],
                 ["route", "add", "default", "via", LAN[0]]):
        subprocess.run(["ip", *args], check=True)


def thread_cpu(pid):
    """CPU seconds of each of `pid`'s live threads, by thread id: (name, seconds)."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue  # ended meanwhile
        fields = tail.split()
        threads[tid] = (head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / TICK)
    return threads


def by_name(before, after):
    """CPU seconds per thread name between two `thread_cpu` snapshots; the
    digits of numbered elements folded (`queue12:src` counts as `queue:src`)."""
    used = collections.Counter()
    for tid, (name, seconds) in after.items():
        used[re.sub(r"\d+", "", name)] += seconds - before.get(tid, (name, 0.0))[1]
    return used


def perf_counts():
    """Whether `perf stat -e instructions` counts on this machine."""
    if not shutil.which("perf"):
        return False
    out = subprocess.run(["perf", "stat", "-x,", "-e", "instructions", "true"],
                         capture_output=True, text=True)
    return out.returncode == 0 and "not supported" not in out.stderr and "not counted" not in out.stderr


class Bench:
    def __init__(self, work, perf, agent, camera=None):
        self.work = work
        self.perf = perf
        self.agent_bin = agent
        self.janus_process = None
        self.env = dict(os.environ)
        self.source = "test"
        if camera:
            # The Pi's shape: H.264 from the camera program (tests/standins/camera.py
            # as rpicam-vid on a Pi 4, x264 in its own process, as the VideoCore
            # encoder is outside the agent there); the agent parses and sends it.
            os.makedirs(os.path.join(work, "bin"))
            os.symlink(STANDIN, os.path.join(work, "bin", "rpicam-vid"))
            with open(os.path.join(work, "compatible"), "wb") as f:
                f.write(PI4)
            self.env.update(PATH=f"{work}/bin:{os.environ['PATH']}", STANDIN_PATTERN=camera,
                            BROADCAST_AGENT_DEVICE_TREE=f"{work}/compatible")
            self.source = "libcamera"

    def janus(self):
        conf = os.path.join(self.work, "janus")
        janus_conf(conf)
        log = open(os.path.join(self.work, "janus.log"), "w")
        self.janus_process = subprocess.Popen(["janus", "-F", conf, "-o"], stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=log)
        wait("Janus", lambda: _answers(f"{JANUS}/info"))

    def status(self, config):
        out = subprocess.run([self.agent_bin, "status", "--config", config, "--json"],
                             capture_output=True, text=True, timeout=10)
        try:
            return json.loads(out.stdout)
        except ValueError:
            return {}

    def run(self, transport, seconds):
        """One agent run on `transport`: its figures over `seconds` of media at Janus."""
        config = os.path.join(self.work, f"agent-{transport}.toml")
        write_private(config, AGENT.format(janus=JANUS, room=ROOM, transport=transport, work=self.work,
                                           source=self.source, secret=ROOM_SECRET))
        log = open(os.path.join(self.work, f"agent-{transport}.log"), "a")
        with Lock():
            started = time.monotonic()
            agent = subprocess.Popen([self.agent_bin, "run", "--config", config], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, env=self.env)
            try:
                # Live: both media fresh at the mountpoint (through the uplink and
                # the VideoRoom's forwarders with WebRTC), then 3 s to settle.
                wait(f"media at Janus ({transport})", lambda: _fresh(self.status(config)), timeout=30, step=0.2)
                live = time.monotonic() - started
                time.sleep(3)
                perf = None
                if self.perf:
                    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "instructions", "-p", str(agent.pid),
                                             "--", "sleep", str(seconds)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                load = loadavg().split()[0]
                threads0 = thread_cpu(agent.pid)
                start, janus0, t0 = cpu_seconds(agent.pid), cpu_seconds(self.janus_process.pid), time.monotonic()
                time.sleep(seconds)
                used = cpu_seconds(agent.pid) - start
                janus = cpu_seconds(self.janus_process.pid) - janus0
                elapsed = time.monotonic() - t0
                threads = by_name(threads0, thread_cpu(agent.pid))
                rss = peak_rss_mib(agent.pid)
                instructions = None
                if perf:
                    _, err = perf.communicate(timeout=30)
                    value = err.strip().splitlines()[-1].split(",")[0] if err.strip() else ""
                    instructions = int(value) if value.isdigit() else None
                # Still live at the end, and on the transport asked for.
                status = self.status(config)
                if not _fresh(status):
                    raise Timeout(f"media at Janus went stale during the {transport} run")
                kind = ((status.get("room") or {}).get("uplink") or {}).get("kind")
                if kind != transport:
                    raise Timeout(f"the agent runs uplink {kind!r}, not {transport!r}")
                peer = next((p.get("uplink") for p in status.get("pipelines", []) if p["name"] == "uplink"), None)
                # RTP packets the capture pipelines made, per second of the agent's life.
                made = sum((p.get("rtp") or {}).get("packets", 0) for p in status.get("pipelines", [])
                           if p["name"] in ("video", "microphone"))
                packets = made / max(status.get("uptime_s", 0), 1)
            finally:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait()
        return {"transport": transport, "cpu_s": used, "elapsed": elapsed, "cpu": 100 * used / elapsed,
                "rss": rss, "janus": 100 * janus / elapsed, "live_s": live, "threads": threads,
                "instructions": instructions, "peer": peer, "load": load, "packets": packets}

    def stop(self):
        if self.janus_process and self.janus_process.poll() is None:
            self.janus_process.send_signal(signal.SIGTERM)
            try:
                self.janus_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.janus_process.kill()


def _fresh(status):
    """Both media reached the mountpoint within the last half second."""
    age = (status.get("room") or {}).get("media_age") or {}
    return all(isinstance(age.get(k), int) and age[k] < 500 for k in ("video_ms", "audio_ms"))


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def spread(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(args, runs, perf, load_before, when):
    print(f"\n`{' '.join(['python3', 'benches/uplink_cost.py', *sys.argv[1:]])}`  ")
    print(f"{when} to {_date()}; {os.cpu_count()} cores, {os.uname().machine}, {_cpu_model()}; "
          f"load average {load_before} before, {loadavg()} after")
    print(f"agent: {os.environ.get(BUILT, '?')}")
    video = (f"video from the stand-in rpicam-vid (tests/standins/camera.py as a Pi 4, pattern {args.camera}; "
             "its x264 is outside the agent)" if args.camera else "video from videotestsrc ! x264enc in the agent")
    print(f"640x480@30 at 1000 kbit/s, {video}; Opus tone from audiotestsrc; no speaker")
    print(f"\n{args.rounds} rounds of {args.seconds} s per transport, alternating; "
          "median (min–max) over the rounds; CPU % of one core.\n")
    print("| transport | CPU s per run | CPU % | peak RSS MiB | Janus CPU % | live after s | RTP packets/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    per = {t: [r for r in runs if r["transport"] == t] for t in TRANSPORTS}
    for t in TRANSPORTS:
        rs = per[t]
        print(f"| {t} | {spread([r['cpu_s'] for r in rs], '{:.2f}')} | {spread([r['cpu'] for r in rs], '{:.2f}')} "
              f"| {spread([r['rss'] for r in rs], '{:.1f}')} | {spread([r['janus'] for r in rs], '{:.2f}')} "
              f"| {spread([r['live_s'] for r in rs], '{:.1f}')} | {statistics.median(r['packets'] for r in rs):.0f} |")
    rtp, webrtc = (statistics.median(r["cpu"] for r in per[t]) for t in TRANSPORTS)
    pairs = [w["cpu"] / r["cpu"] for r, w in zip(per["rtp"], per["webrtc"])]
    rss_rtp, rss_webrtc = (statistics.median(r["rss"] for r in per[t]) for t in TRANSPORTS)
    print(f"\nwebrtc/rtp, agent CPU: **{webrtc / rtp:.2f}×** (medians; per round {min(pairs):.2f}–{max(pairs):.2f}), "
          f"{webrtc - rtp:+.2f} points; peak RSS {rss_webrtc / rss_rtp:.2f}× ({rss_webrtc - rss_rtp:+.1f} MiB). "
          f"Bound: 1.3× — {'met' if webrtc / rtp <= 1.3 else 'NOT met'}.")
    if perf:
        ins = {t: [r["instructions"] for r in per[t] if r["instructions"]] for t in TRANSPORTS}
        if all(ins.values()):
            rates = {t: statistics.median(i / r["elapsed"] for i, r in zip(ins[t], per[t])) for t in TRANSPORTS}
            print(f"instructions per second: rtp {rates['rtp'] / 1e6:.0f} M, webrtc {rates['webrtc'] / 1e6:.0f} M "
                  f"({rates['webrtc'] / rates['rtp']:.2f}×)")
    else:
        print("instructions: not counted (`perf stat -e instructions` is not supported here: no PMU)")
    peers = [r["peer"] for r in per["webrtc"] if r["peer"]]
    if peers:
        print(f"webrtc runs' PeerConnection at the end: connected {[p.get('connected') for p in peers]}, "
              f"NACKs {[p.get('nacks_received') for p in peers]}, RTX {[p.get('retransmitted') for p in peers]}, "
              f"rtt ms {[p.get('rtt_ms') for p in peers]}")
    print("\nThe agent's busiest threads (CPU % of one core, all rounds; numbers in names folded):\n")
    totals = {t: sum((r["threads"] for r in per[t]), collections.Counter()) for t in TRANSPORTS}
    seconds = {t: sum(r["elapsed"] for r in per[t]) for t in TRANSPORTS}
    names = sorted(set(totals["rtp"]) | set(totals["webrtc"]),
                   key=lambda n: -max(totals[t][n] / seconds[t] for t in TRANSPORTS))
    print("| thread | rtp | webrtc |\n|---|---:|---:|")
    shown = 0.0
    for name in names[:args.threads]:
        print(f"| `{name}` | {100 * totals['rtp'][name] / seconds['rtp']:.2f} "
              f"| {100 * totals['webrtc'][name] / seconds['webrtc']:.2f} |")
    rest = {t: 100 * sum(totals[t][n] for n in names[args.threads:]) / seconds[t] for t in TRANSPORTS}
    print(f"| (the rest) | {rest['rtp']:.2f} | {rest['webrtc']:.2f} |")
    print("\nEach run, in the order run (load: the 1-minute load average as it began):\n\n"
          "| round | transport | CPU s | CPU % | peak RSS MiB | Janus CPU % | load |\n|---:|---|---:|---:|---:|---:|---:|")
    for i, r in enumerate(runs):
        print(f"| {i // 2 + 1} | {r['transport']} | {r['cpu_s']:.2f} | {r['cpu']:.2f} | {r['rss']:.1f} "
              f"| {r['janus']:.2f} | {r['load']} |")


def _commit():
    """The commit the agent was built from, and whether src/ differed from it."""
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    return (head.stdout.strip() or "?") + (" with src/ modified" if dirty else " (src/ as committed)")


def _date():
    return subprocess.run(["date"], capture_output=True, text=True).stdout.strip()


def _cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="measured seconds per run (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per transport, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=12, help="busiest threads to list (default 12)")
    parser.add_argument("--camera", metavar="PATTERN", nargs="?", const="snow",
                        help="video from the stand-in rpicam-vid (as on a Pi, the encoder outside the agent) "
                             "showing videotestsrc's PATTERN (default snow: it fills the bitrate)")
    parser.add_argument("--no-build", action="store_true", help="use target/release/broadcast-agent as it is")
    parser.add_argument("--agent", metavar="BINARY", help="measure this broadcast-agent instead (not built; "
                        "e.g. a build of a change, against the same Janus and pipelines)")
    args = parser.parse_args()
    if os.environ.get(INSIDE) != "1":
        if os.geteuid() != 0:
            sys.exit("bench: needs root (a network namespace of its own: unshare -n, ip link)")
        built = "target/release/broadcast-agent as found (--no-build), HEAD " + _commit()
        if args.agent:
            built = f"{os.path.abspath(args.agent)} as given"
        elif not args.no_build:
            with Lock():
                built = "target/release/broadcast-agent built from " + _commit()
                subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
        # Everything else inside a network namespace of its own.
        os.execvpe("unshare", ["unshare", "-n", "--", sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                   dict(os.environ, **{INSIDE: "1", BUILT: built}))
    lan()
    when = _date()
    load_before = loadavg()
    perf = perf_counts()
    work = tempfile.mkdtemp(prefix="broadcast-uplink-bench-")
    bench = Bench(work, perf, args.agent or RELEASE, args.camera)
    runs = []
    try:
        bench.janus()
        for i in range(args.rounds):
            for transport in (TRANSPORTS if i % 2 == 0 else reversed(TRANSPORTS)):
                run = bench.run(transport, args.seconds)
                runs.append(run)
                print(f"round {i + 1} {transport}: {run['cpu']:.2f} % CPU, {run['rss']:.1f} MiB peak RSS, "
                      f"Janus {run['janus']:.2f} %", file=sys.stderr, flush=True)
    except Timeout as e:
        logs = "".join(f"--- {name} (last lines)\n" + "\n".join(open(os.path.join(work, name)).read().splitlines()[-15:]) + "\n"
                       for name in sorted(os.listdir(work)) if name.endswith(".log"))
        sys.exit(f"bench: {e}\n{logs}")
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(args, runs, perf, load_before, when)


if __name__ == "__main__":
    main()
