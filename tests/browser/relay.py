#!/usr/bin/env python3
"""A lossy UDP relay between the agent and Janus (this machine has no netem).

    relay.py --listen 127.0.0.1 --to 10.77.0.2 --via 10.77.0.1 --ports 5004,5006,8006 \
             --lossy 5004,5006 --loss 5 --jitter 30 [--seed 1]

For each port P: packets to LISTEN:P go on to TO:P from a socket of the relay's
own on VIA, and what comes back to that socket (Janus's RTCP: keyframe
requests) goes back to the last sender. Packets to a --lossy port are dropped
with probability --loss % and delayed by 0 to --jitter ms, uniformly (so they
may arrive out of order, as on Wi-Fi); the way back is never touched. Prints
one line of counts per port when stopped (SIGTERM/SIGINT).

--record FILE (or RELAY_RECORD in the environment) also writes every packet that
reaches the relay on its way to Janus, dropped or not, as it arrives: a header
struct "<dHH" (wall-clock arrival time in s, port, length), then the packet.
tests/browser/rtp_lipsync.py reads it (the lip-sync bench's RTP-level figure).
"""
import argparse
import heapq
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--via", required=True)
    ap.add_argument("--ports", required=True)
    ap.add_argument("--lossy", default="")
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--record", default=os.environ.get("RELAY_RECORD"))
    a = ap.parse_args()
    rng = random.Random(a.seed)
    lossy = {int(p) for p in a.lossy.split(",") if p}
    sel = selectors.DefaultSelector()
    counts = {}
    for port in (int(p) for p in a.ports.split(",")):
        inbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inbound.bind((a.listen, port))
        outbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        outbound.bind((a.via, 0))
        state = {"port": port, "in": inbound, "out": outbound, "peer": None}
        sel.register(inbound, selectors.EVENT_READ, ("up", state))
        sel.register(outbound, selectors.EVENT_READ, ("down", state))
        counts[port] = {"up": 0, "dropped": 0, "down": 0}
    record = open(a.record, "wb") if a.record else None
    queue = []  # (due, seq, socket, data, address)
    seq = 0
    running = [True]

    def stop(*_):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running[0]:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.2
        for key, _ in sel.select(timeout):
            way, st = key.data
            data, address = key.fileobj.recvfrom(65536)
            c = counts[st["port"]]
            if way == "down":
                if st["peer"]:
                    st["in"].sendto(data, st["peer"])
                    c["down"] += 1
                continue
            st["peer"] = address
            c["up"] += 1
            if record:
                record.write(struct.pack("<dHH", time.time(), st["port"], len(data)) + data)
            delay = 0.0
            if st["port"] in lossy:
                if rng.random() * 100 < a.loss:
                    c["dropped"] += 1
                    continue
                delay = rng.uniform(0, a.jitter) / 1000
            seq += 1
            heapq.heappush(queue, (time.monotonic() + delay, seq, st["out"], data, (a.to, st["port"])))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, sock, data, address = heapq.heappop(queue)
            sock.sendto(data, address)
    if record:
        record.close()
    for port, c in counts.items():
        print(f"relay port {port}: {c['up']} up, {c['dropped']} dropped, {c['down']} back", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
