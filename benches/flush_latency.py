#!/usr/bin/env python3
"""What flushing the camera program's stdout is worth: per-frame latency from the
camera program writing a frame to the agent sending its last RTP packet.

    python3 benches/flush_latency.py [--seconds 20] [--binary PATH]

For each picture size below it runs broadcast-agent with `source = "libcamera"`
on the stand-in rpicam-vid of the tests (tests/standins/camera.py, as a Pi 4:
the hardware encoder's path, where stdout is C stdio, fully buffered on a pipe
unless --flush), twice: as the agent runs it (with --flush) and as if the agent
did not pass --flush (STANDIN_IGNORE_FLUSH=1). The stand-in puts each frame's
number in an SEI NAL and logs when it handed the frame's last byte to stdio
(CLOCK_MONOTONIC); a UDP receiver in place of Janus (`stream.host`) notes when
the packet with the RTP marker (a frame's last) of each numbered frame arrives.
Janus is not started: the agent sends regardless, and the receiver is where
the stream leaves the agent. Prints median, 10th and 90th percentile and
maximum per case. Needs what deploy/install-deps.sh installs.
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN = os.path.join(REPO, "tests", "standins", "camera.py")
FRAME_UUID = bytes(range(0x41, 0x51))  # as the stand-in writes it
PI4 = b"raspberrypi,4-model-b\0brcm,bcm2711\0"

# (name, width, height, fps, kbit/s, picture): the tests' size and the default
# config's; `snow` makes frames as large as the bitrate allows (a busy scene),
# `ball` a still one with frames far smaller.
CASES = [
    ("320x240@15, 300 kbit/s, busy", 320, 240, 15, 300, "snow"),
    ("1280x720@30, 2000 kbit/s, busy", 1280, 720, 30, 2000, "snow"),
    ("1280x720@30, 2000 kbit/s, still", 1280, 720, 30, 2000, "ball"),
]

CONFIG = """
[janus]
url = "http://127.0.0.1:{janus_port}/janus"
[room]
id = 4556
secret = "bench-room-secret"
[stream]
host = "127.0.0.1"
video_port = {port}
audio_port = {audio}
janus_media_timeout_ms = 3600000
[speaker]
enabled = false
[microphone]
enabled = false
[control]
socket = "{work}/agent.sock"
[video]
source = "libcamera"
width = {width}
height = {height}
framerate = {fps}
bitrate_kbps = {kbps}
"""


class Receiver:
    """Notes, per numbered frame, when its last RTP packet arrived."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.arrived = {}
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        frame = None
        while self.running:
            try:
                packet = self.sock.recv(65536)
            except socket.timeout:
                continue
            now = time.monotonic_ns()
            payload = rtp_payload(packet)
            if payload is None:
                continue
            number = frame_number(payload)
            if number is not None:
                frame = number
            if packet[1] & 0x80 and frame is not None and frame not in self.arrived:
                self.arrived[frame] = now

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def rtp_payload(packet):
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    at = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:  # header extension
        if len(packet) < at + 4:
            return None
        at += 4 + 4 * int.from_bytes(packet[at + 2:at + 4], "big")
    return packet[at:]


def frame_number(payload):
    """The frame number in an SEI NAL (alone or in a STAP-A), if any."""
    if not payload:
        return None
    nals = [payload]
    if payload[0] & 0x1F == 24:  # STAP-A
        nals, at = [], 1
        while at + 2 <= len(payload):
            size = int.from_bytes(payload[at:at + 2], "big")
            nals.append(payload[at + 2:at + 2 + size])
            at += 2 + size
    for nal in nals:
        if nal and nal[0] & 0x1F == 6:
            at = nal.find(FRAME_UUID)
            if at >= 0 and len(nal) >= at + 20:
                number = 0
                for byte in nal[at + 16:at + 20]:
                    number = (number << 7) | (byte & 0x7F)
                return number
    return None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(binary, work, case, flush, seconds):
    """Latencies (ms) of one agent run, first second left out."""
    name, width, height, fps, kbps, pattern = case
    receiver = Receiver()
    config = os.path.join(work, "agent.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(janus_port=free_port(), port=receiver.port, audio=receiver.port + 1,
                              work=work, width=width, height=height, fps=fps, kbps=kbps))
    os.chmod(config, 0o600)
    frames = os.path.join(work, "frames.log")
    if os.path.exists(frames):
        os.remove(frames)
    env = dict(os.environ, PATH=f"{work}/bin:{os.environ['PATH']}",
               BROADCAST_AGENT_DEVICE_TREE=f"{work}/compatible", STANDIN_FRAME_LOG=frames,
               STANDIN_PATTERN=pattern)
    if not flush:
        env["STANDIN_IGNORE_FLUSH"] = "1"
    log = open(os.path.join(work, "agent.log"), "a")
    agent = subprocess.Popen([binary, "run", "--config", config], env=env,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        end = time.monotonic() + 15
        while not receiver.arrived and time.monotonic() < end:
            time.sleep(0.05)
        if not receiver.arrived:
            sys.exit(f"bench: no video from the agent; see {work}/agent.log")
        time.sleep(seconds + 2)
        stopped = time.monotonic_ns()
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
        receiver.stop()
    written = {}
    with open(frames) as f:
        for line in f:
            number, ns, size = (int(x) for x in line.split()[:3])
            written[number] = (ns, size)
    # The first second is start-up; the last frames' tails may still wait
    # in the pipe when the agent stops.
    first = min(written)
    counted = {n: v for n, v in written.items() if n - first >= fps and v[0] < stopped - 1e9}
    latencies = [(receiver.arrived[n] - ns) / 1e6 for n, (ns, _) in counted.items() if n in receiver.arrived]
    sizes = [size for _, size in counted.values()]
    lost = sum(1 for n in counted if n not in receiver.arrived)
    return latencies, sizes, lost


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--binary", default=os.path.join(REPO, "target", "release", "broadcast-agent"))
    args = parser.parse_args()
    if args.binary.endswith(os.path.join("release", "broadcast-agent")):
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
    work = tempfile.mkdtemp(prefix="broadcast-flush-")
    try:
        os.makedirs(os.path.join(work, "bin"))
        os.symlink(STANDIN, os.path.join(work, "bin", "rpicam-vid"))
        with open(os.path.join(work, "compatible"), "wb") as f:
            f.write(PI4)
        rows = []
        for case in CASES:
            for flush in (True, False):
                latencies, sizes, lost = run_case(args.binary, work, case, flush, args.seconds)
                rows.append((case[0], "--flush" if flush else "no flush", latencies, sizes, lost))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nFrame written by rpicam-vid (stand-in, Pi 4 path) -> its last RTP packet leaves the agent; "
          f"{args.seconds} s per case ({os.cpu_count()} cores, {os.uname().machine}):\n")
    print("| video | stdout | frames | mean frame | median ms | p10 ms | p90 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, mode, lat, sizes, lost in rows:
        print(f"| {name} | {mode} | {len(lat)}{f' ({lost} lost)' if lost else ''} | "
              f"{statistics.mean(sizes) / 1000:.1f} kB | {statistics.median(lat):.1f} | "
              f"{percentile(lat, 10):.1f} | {percentile(lat, 90):.1f} | {max(lat):.1f} |")


if __name__ == "__main__":
    main()
