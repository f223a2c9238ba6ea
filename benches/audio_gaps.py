#!/usr/bin/env python3
"""When the agent's audio RTP packets leave: gaps between consecutive packets.

    sudo python3 benches/audio_gaps.py [--seconds 60] [--rounds 1] [--busy 3] [--agent LABEL=PATH ...]

Runs the real agent (microphone on, the speaker on ALSA `pulse` as on a Pi,
no camera) against a private Janus and PulseAudio, and records the time each
of its audio RTP packets is sent, from the kernel: a packet socket on the
loopback interface, whose time stamps are taken when the agent's `udpsink`
hands the packet over, however busy the bench itself is. Packets are 10 ms
of Opus (20 ms before 2026-12-02), so gaps should all be close to that. Side by side, for each agent
binary given:
  - microphone.device = "test" (audiotestsrc: no sound server involved) and
    "pulse" (ALSA `pulse` on a PulseAudio null sink's monitor, as the tests
    and the browser rig use);
  - idle, and under load: a stand-in camera program (gst-launch x264,
    640x480@30) and --busy busy loops;
--rounds times each, alternating the agents, pooled.
Prints the median, 99th percentile and largest gap, and how many gaps exceed
60 ms, with the 1-minute load average at the end of each run (other work on the
machine counts). Needs root (the packet socket) and what
`deploy/install-deps.sh` installs; uses its own ports (Janus 18188/17188,
RTP 18204-18207). Default agent: target/debug/broadcast-agent, built first.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JANUS_PORT, ADMIN_PORT = 18188, 17188
JANUS = f"http://127.0.0.1:{JANUS_PORT}/janus"
ROOM = 4557
VIDEO_PORT, AUDIO_PORT, RTCP_PORT, SPEAKER_PORT = 18204, 18205, 18206, 18207
SO_TIMESTAMPNS = 35
ETH_P_ALL = 0x0003  # outgoing packets reach only sockets for every protocol
PACKET_OUTGOING = 4
LATE_MS = 60

AGENT = """[janus]
url = "{janus}"
[room]
id = {room}
secret = "bench-room-secret"
admin_key_file = "{work}/janus/broadcast-agent.admin_key"
[control]
socket = "{work}/agent.sock"
[stream]
video_port = {video}
audio_port = {audio}
video_rtcp_port = {rtcp}
[video]
source = "none"
[microphone]
device = "{mic}"
[speaker]
device = "pulse"
port = {speaker}
"""

# The camera program of the rig: software H.264 on the same cores.
CAMERA = ("videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate=30/1 "
          "! x264enc tune=zerolatency speed-preset=ultrafast ! fakesink").split()


class Timeout(Exception):
    """Something the bench waited for did not happen."""


def wait(what, check, timeout=30.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(step)
    raise Timeout(f"timed out waiting for {what}")


def answers(url):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except OSError:
        return False


class Sender:
    """Kernel send times (monotonic seconds) of UDP packets to
    127.0.0.1:`port`, as the loopback interface sees them go out."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.settimeout(0.2)
        self.lock = threading.Lock()
        self.times = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        space = socket.CMSG_SPACE(16)
        while self.running:
            try:
                data, ancillary, _, address = self.sock.recvmsg(2048, space)
            except socket.timeout:
                continue
            if address[2] != PACKET_OUTGOING or len(data) < 14 + 20 + 8:
                continue
            ip = data[14:]
            if data[12:14] != b"\x08\x00":
                continue
            header = (ip[0] & 0x0F) * 4
            if ip[9] != 17 or struct.unpack("!H", ip[header + 2:header + 4])[0] != self.port:
                continue
            # The kernel stamps in wall-clock time, which this machine's clock
            # sometimes steps by seconds: moved onto the monotonic clock with
            # the offset between the two when the packet is read, just after.
            offset = time.time() - time.monotonic()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    with self.lock:
                        self.times.append(seconds + nanos / 1e9 - offset)

    def take(self):
        """The send times since the last call."""
        with self.lock:
            times, self.times = self.times, []
        return times

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


class Bench:
    def __init__(self, work, busy):
        self.work = work
        self.busy = busy
        self.children = []

    def start(self, args, log=None, **kw):
        out = open(os.path.join(self.work, log), "a") if log else subprocess.DEVNULL
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **kw)
        self.children.append(process)
        return process

    def janus(self):
        conf = os.path.join(self.work, "janus")
        # As shipped, with a fresh admin key (deploy/janus-conf.sh).
        subprocess.run(["bash", os.path.join(REPO, "deploy", "janus-conf.sh"), conf], check=True,
                       stdout=subprocess.DEVNULL)
        http = os.path.join(conf, "janus.transport.http.jcfg")
        with open(http) as f:
            text = f.read().replace("port = 8088", f"port = {JANUS_PORT}")
        with open(http, "w") as f:
            f.write(text.replace("admin_port = 7088", f"admin_port = {ADMIN_PORT}"))
        self.start(["janus", "-F", conf, "-o"], log="janus.log")
        wait("Janus", lambda: answers(f"{JANUS}/info"))

    def pulse(self):
        """PulseAudio: a null sink for the speaker, one whose monitor is the microphone."""
        d = os.path.join(self.work, "pulse")
        os.makedirs(d)
        with open(os.path.join(d, "default.pa"), "w") as f:
            f.write("load-module module-null-sink sink_name=speaker rate=48000\n"
                    "load-module module-null-sink sink_name=mic rate=48000\n"
                    f"load-module module-native-protocol-unix auth-anonymous=1 socket={d}/native\n"
                    "set-default-sink speaker\nset-default-source mic.monitor\n")
        env = dict(os.environ, HOME=d, XDG_RUNTIME_DIR=d)
        self.start(["pulseaudio", "-n", "-F", f"{d}/default.pa", "--daemonize=no",
                    "--exit-idle-time=-1", "--disable-shm=yes", "--use-pid-file=no"],
                   log="pulse.log", env=env)
        os.environ["PULSE_SERVER"] = f"unix:{d}/native"
        wait("PulseAudio", lambda: subprocess.run(["pactl", "info"], capture_output=True).returncode == 0)

    def agent(self, binary, mic):
        config = os.path.join(self.work, "agent.toml")
        with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(AGENT.format(janus=JANUS, room=ROOM, work=self.work, video=VIDEO_PORT,
                                 audio=AUDIO_PORT, rtcp=RTCP_PORT, mic=mic, speaker=SPEAKER_PORT))
        return self.start([binary, "run", "--config", config], log="agent.log",
                          env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")))

    def load(self):
        """The camera stand-in and the busy loops."""
        procs = [self.start(["gst-launch-1.0", "-q", *CAMERA])]
        procs += [self.start(["sh", "-c", "while :; do :; done"]) for _ in range(self.busy)]
        return procs


def stop(processes):
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def run(bench, sender, binary, mic, loaded, seconds):
    """Send times of one agent's audio over `seconds`, after it streams."""
    agent = bench.agent(binary, mic)
    load = []
    try:
        sender.take()
        wait("audio RTP from the agent", lambda: sender.times, timeout=40)
        if loaded:
            load = bench.load()
        time.sleep(3)
        sender.take()
        time.sleep(seconds)
        times = sender.take()
        end_load = loadavg()
    finally:
        stop(load + [agent])
    return times, end_load


def row(label, mic, loaded, runs):
    """A table row for the pooled `runs`, each (send times, load average)."""
    gaps = sorted(g for times, _ in runs for g in ((b - a) * 1000 for a, b in zip(times, times[1:])))
    loads = "/".join(load for _, load in runs)
    packets = sum(len(times) for times, _ in runs)
    head = f"| {label} | {mic} | {'load' if loaded else 'idle'} | {loads} | {packets} "
    if not gaps:
        return head + "| - | - | - | - |"
    p99 = gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))]
    late = sum(g > LATE_MS for g in gaps)
    return head + f"| {statistics.median(gaps):.1f} | {p99:.1f} | {gaps[-1]:.1f} | {late} |"


def agents(args):
    if args.agent:
        return [tuple(a.split("=", 1)) for a in args.agent]
    subprocess.run(["cargo", "build", "--quiet"], cwd=REPO, check=True)
    return [("agent", os.path.join(REPO, "target", "debug", "broadcast-agent"))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--busy", type=int, default=3, help="busy loops under load")
    parser.add_argument("--rounds", type=int, default=1, help="runs per case, alternating the agents; pooled")
    parser.add_argument("--agent", action="append", metavar="LABEL=PATH",
                        help="agent binary to measure (repeat to compare); default: build and use target/debug")
    parser.add_argument("--mics", default="test,pulse", help="microphone.device values to measure")
    args = parser.parse_args()
    binaries = agents(args)
    work = tempfile.mkdtemp(prefix="broadcast-gaps-")
    bench = Bench(work, args.busy)
    sender = Sender(AUDIO_PORT)
    rows = []
    try:
        bench.janus()
        bench.pulse()
        for loaded in (False, True):
            for mic in args.mics.split(","):
                runs = {label: [] for label, _ in binaries}
                for _ in range(args.rounds):
                    for label, binary in binaries:
                        runs[label].append(run(bench, sender, binary, mic, loaded, args.seconds))
                        print(row(label, mic, loaded, runs[label][-1:]), flush=True)
                rows += [row(label, mic, loaded, runs[label]) for label, _ in binaries]
    except Timeout as e:
        log = open(os.path.join(work, "agent.log")).read().splitlines()
        sys.exit(f"bench: {e}\n--- agent log (last lines)\n" + "\n".join(log[-15:]))
    finally:
        sender.close()
        stop(list(reversed(bench.children)))
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nGaps between consecutive audio RTP packets (10 ms Opus frames), {args.rounds} x {args.seconds} s "
          f"per case (pooled), "
          f"{os.cpu_count()} cores; load = camera stand-in (x264 640x480@30) + {args.busy} busy loops:\n")
    print("| agent | microphone | CPU | load avg (1 min) at the end of each run | packets | median ms | p99 ms | max ms "
          f"| gaps > {LATE_MS} ms |\n|---|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
