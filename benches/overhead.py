#!/usr/bin/env python3
"""The agent's own overhead, measured against gst-launch-1.0 running the same pipelines.

    python3 benches/overhead.py [--seconds 30] [--rounds 3] [--restarts 5]

Runs, one after the other on this machine, for the same time each (the first
two alternately, --rounds times, since one run varies by a few tenths of a
point of CPU):
  1. broadcast-agent streaming test sources (640x480@30 H.264 + Opus tone, and
     the speaker pipeline on ALSA `pulse`) to a local Janus;
  2. gst-launch-1.0 running the same three pipelines (same elements, same
     properties) to the same mountpoint;
  3. broadcast-agent with no media at all (its bare cost: reconciler, long-poll,
     control socket, status);
and prints CPU time (user+system, from /proc/PID/stat) and peak RSS (VmHWM)
for each. Then it kills the camera program of an agent on a piped source
(a stand-in rpicam-vid) --restarts times and reports the time until Janus
receives video again. Needs what `deploy/install-deps.sh` installs; binds
Janus to 127.0.0.1:8088 (stop any other Janus first).
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
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JANUS = "http://127.0.0.1:8088/janus"
ROOM = 4556
TICK = os.sysconf("SC_CLK_TCK")

VIDEO = ("videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate=30/1 "
         "! x264enc tune=zerolatency speed-preset=ultrafast bitrate=1000 key-int-max=60 "
         "! video/x-h264,profile=constrained-baseline "
         "! rtph264pay pt=96 config-interval=1 mtu=1200 "
         "! udpsink host=127.0.0.1 port=8004 sync=false async=false")
MIC = ("audiotestsrc is-live=true freq=440 volume=0.3 ! audioconvert ! audioresample "
       "! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 ! rtpopuspay pt=111 "
       "! udpsink host=127.0.0.1 port=8005 sync=false async=false")
SPEAKER = ('udpsrc port=5000 caps="application/x-rtp,media=audio,encoding-name=OPUS,'
           'clock-rate=48000,payload=100" ! rtpjitterbuffer latency=100 ! rtpopusdepay '
           '! opusdec plc=true ! audioconvert ! audioresample ! alsasink device=pulse')

AGENT_MEDIA = """
[video]
source = "{source}"
width = 640
height = 480
framerate = 30
bitrate_kbps = 1000
[microphone]
device = "test"
[speaker]
device = "pulse"
"""
AGENT_NO_MEDIA = """
[video]
source = "none"
[microphone]
enabled = false
[speaker]
enabled = false
"""


def post(url, body):
    body["transaction"] = "bench"
    request = urllib.request.Request(url, data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.load(reply)


def video_age_ms():
    """Janus's age_ms of the mountpoint's video, through a throwaway session."""
    session = post(JANUS, {"janus": "create"})["data"]["id"]
    try:
        handle = post(f"{JANUS}/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"})["data"]["id"]
        data = post(f"{JANUS}/{session}/{handle}",
                    {"janus": "message", "body": {"request": "info", "id": ROOM}})["plugindata"]["data"]
        media = data.get("info", {}).get("media", [])
        return next((m.get("age_ms") for m in media if m["type"] == "video"), None)
    finally:
        post(f"{JANUS}/{session}", {"janus": "destroy"})


# The room's secret in the benches' agent configurations: without one, a
# room opens only when asked (a fresh install broadcasts nothing by itself).
ROOM_SECRET = "bench-room-secret"


def janus_conf(dest):
    """conf/janus into `dest`, with a fresh admin key (deploy/janus-conf.sh)."""
    subprocess.run(["bash", os.path.join(REPO, "deploy", "janus-conf.sh"), dest], check=True,
                   stdout=subprocess.DEVNULL)


def write_private(path, text):
    """Writes `text` to `path`, readable by its owner alone (it holds a secret)."""
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)


class Timeout(Exception):
    """Something the bench waited for did not happen."""


def wait(what, check, timeout=20.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise Timeout(f"timed out waiting for {what}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(name, process, seconds):
    """CPU share and peak RSS of `process` over `seconds`, after a 3 s warm-up."""
    time.sleep(3)
    start, t0 = cpu_seconds(process.pid), time.monotonic()
    time.sleep(seconds)
    used, elapsed = cpu_seconds(process.pid) - start, time.monotonic() - t0
    row = (name, 100 * used / elapsed, peak_rss_mib(process.pid))
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
    return row


class Bench:
    def __init__(self, work):
        self.work = work
        self.agent_bin = os.path.join(REPO, "target", "release", "broadcast-agent")
        self.children = []

    def start(self, args, **kw):
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)
        self.children.append(process)
        return process

    def janus(self):
        conf = os.path.join(self.work, "janus")
        janus_conf(conf)
        log = open(os.path.join(self.work, "janus.log"), "w")
        self.start(["janus", "-F", conf, "-o"], stdout=log, stderr=log)
        wait("Janus", lambda: _answers(f"{JANUS}/info"))

    def pulse(self):
        d = os.path.join(self.work, "pulse")
        os.makedirs(d)
        with open(os.path.join(d, "default.pa"), "w") as f:
            f.write("load-module module-null-sink sink_name=speaker\n"
                    f"load-module module-native-protocol-unix auth-anonymous=1 socket={d}/native\n")
        env = dict(os.environ, HOME=d, XDG_RUNTIME_DIR=d)
        self.start(["pulseaudio", "-n", "-F", f"{d}/default.pa", "--daemonize=no", "--exit-idle-time=-1",
                    "--disable-shm=yes", "--use-pid-file=no"], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.environ["PULSE_SERVER"] = f"unix:{d}/native"
        wait("PulseAudio", lambda: subprocess.run(["pactl", "info"], capture_output=True).returncode == 0)

    def agent(self, media, env=None):
        config = os.path.join(self.work, "agent.toml")
        write_private(config, f'[janus]\nurl = "{JANUS}"\n[room]\nid = {ROOM}\ndestroy_on_close = false\n'
                      f'secret = "{ROOM_SECRET}"\nadmin_key_file = "{self.work}/janus/broadcast-agent.admin_key"\n'
                      f'[control]\nsocket = "{self.work}/agent.sock"\n' + media)
        log = open(os.path.join(self.work, "agent.log"), "a")
        return self.start([self.agent_bin, "run", "--config", config], stdout=log, stderr=log,
                          env=dict(os.environ, **(env or {})))

    def stop_all(self):
        for p in reversed(self.children):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def _answers(url):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except OSError:
        return False


def fake_camera(directory):
    """A stand-in rpicam-vid writing H.264 to stdout, as the real one does."""
    path = os.path.join(directory, "rpicam-vid")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec gst-launch-1.0 -q videotestsrc is-live=true "
                "! video/x-raw,width=640,height=480,framerate=30/1 "
                "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 "
                "! video/x-h264,profile=constrained-baseline,stream-format=byte-stream ! fdsink fd=1\n")
    os.chmod(path, 0o755)


def recovery(bench, restarts):
    """Kills the camera program `restarts` times; returns the times to video at Janus."""
    bindir = os.path.join(bench.work, "bin")
    os.makedirs(bindir)
    fake_camera(bindir)
    agent = bench.agent(AGENT_MEDIA.format(source="libcamera"),
                        env={"PATH": bindir + ":" + os.environ["PATH"]})
    times = []
    for _ in range(restarts):
        # A run of 10 s counts as stable: each kill is then a first failure,
        # restarted after the shortest backoff (a camera failing again and
        # again is restarted ever more slowly, up to 30 s).
        time.sleep(10.5)
        wait("video at Janus", lambda: (video_age_ms() or 10**9) < 300)
        camera = wait("the camera program", lambda: _child_of(agent.pid))
        killed = time.monotonic()
        os.kill(camera, signal.SIGKILL)
        # Video from the new camera program: newer than its start (what the
        # old one left in the pipe may reach Janus just after the kill).
        wait("a new camera program", lambda: _child_of(agent.pid) not in (None, camera), step=0.005)
        restarted = time.monotonic()
        wait("video again", lambda: (video_age_ms() or 10**9) < (time.monotonic() - restarted) * 1000, step=0.01)
        times.append((time.monotonic() - killed) * 1000)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=15)
    return times


def _child_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=5)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
    work = tempfile.mkdtemp(prefix="broadcast-bench-")
    bench = Bench(work)
    try:
        bench.janus()
        bench.pulse()
        agent_runs, gst_runs = [], []
        for _ in range(args.rounds):
            agent_runs.append(measure("agent", bench.agent(AGENT_MEDIA.format(source="test")), args.seconds))
            # destroy_on_close = false: the mountpoint stays for gst-launch to send to.
            gst = bench.start(["gst-launch-1.0", "-q", *_split(VIDEO), *_split(MIC), *_split(SPEAKER)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            gst_runs.append(measure("gst-launch", gst, args.seconds))
        rows = [summary("broadcast-agent (video + mic + speaker)", agent_runs),
                summary("gst-launch-1.0 (same pipelines)", gst_runs),
                summary("broadcast-agent, no media (own cost)",
                        [measure("bare", bench.agent(AGENT_NO_MEDIA), args.seconds)])]
        times = recovery(bench, args.restarts)
    except Timeout as e:
        log = open(os.path.join(work, "agent.log")).read().splitlines()
        sys.exit(f"bench: {e}\n--- agent log (last lines)\n" + "\n".join(log[-15:]))
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nCPU and peak RSS, {args.rounds} alternating runs of {args.seconds} s "
          f"({os.cpu_count()} cores, {os.uname().machine}); CPU % of one core, mean (min-max):\n")
    print("| process | CPU % | peak RSS MiB |\n|---|---:|---:|")
    for name, cpu, rss, spread in rows:
        print(f"| {name} | {cpu:.2f} ({spread}) | {rss:.1f} |")
    agent, gst = rows[0], rows[1]
    print(f"\nagent vs gst-launch: CPU {agent[1] - gst[1]:+.2f} points "
          f"({100 * (agent[1] - gst[1]) / gst[1]:+.1f} %), RSS {agent[2] - gst[2]:+.1f} MiB")
    print(f"camera killed -> video at Janus again, {len(times)} times: "
          f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms")


def summary(name, runs):
    """(name, mean CPU %, max peak RSS, "min-max" CPU) of several runs."""
    cpus = [cpu for _, cpu, _ in runs]
    return (name, statistics.mean(cpus), max(rss for _, _, rss in runs),
            f"{min(cpus):.2f}-{max(cpus):.2f}")


def _split(description):
    import shlex
    return shlex.split(description)


if __name__ == "__main__":
    main()
