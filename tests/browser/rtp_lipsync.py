#!/usr/bin/python3
"""Lip sync and clock rates of what the agent sends, read from its RTP.

    rtp_lipsync.py RECORD [--beep-log FILE] [--video-port 5004] [--audio-port 5006] [--json]

RECORD is what tests/browser/relay.py --record wrote: every RTP packet the agent
sent towards Janus, with its wall-clock arrival time at the relay. The stand-in
camera program (STANDIN_PATTERN=stamp) flashes its picture for the 100 ms after
each whole second and plays a 1 kHz beep into the agent's microphone at the
same instants (STANDIN_BEEP_SINK). This decodes both streams with GStreamer
(rtph264depay ! openh264dec, rtpopusdepay ! opusdec) and reports, without any
browser in the way:

- each stream's RTP clock against the wall clock (a least-squares fit of RTP
  timestamp on arrival time: 90000 and 48000 per second when right), and for
  the audio, whether the timestamps step by the samples each packet holds;
- per flash: the flash frame's last packet's arrival, the beep's onset
  packet's arrival, and the beep minus the flash (positive: the sound comes
  later) — the lip sync of a receiver that plays each stream as it arrives,
  which is what the viewers of a Janus mountpoint get (Janus does not pass
  the sender reports on, so a browser cannot align the streams itself);
- each stream's own delay from its event (flash frame: from the stamp in its
  pixels; beep: from the whole second), so that a drift shows in which one;
  with --beep-log (the stand-in's STANDIN_BEEP_LOG: when each beep reached the
  PulseAudio monitor the agent's microphone reads), when the beep reached the
  microphone and the agent's own share (microphone to packet);
- what a receiver's audio jitter buffer sees: each packet's arrival minus its
  RTP time, relative to the earliest such packet in the 2 s before it
  (Chromium's NetEq looks at the same "relative delay"): p50/p95/max, and the
  gaps between packets. A burst of packets, or a timestamp jump, shows here
  as delay the receiver must buffer.
"""
import argparse
import json
import statistics
import struct
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

HEADER = struct.Struct("<dHH")
QUIET_S = 0.5  # silence before a beep onset
LOUD = 3000  # |sample| of a beep (the stand-in plays +-12000)


def read_record(path):
    """Packets per port: [(arrival_s, rtp_bytes)] in arrival order."""
    ports = {}
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at + HEADER.size <= len(data):
        arrival, port, length = HEADER.unpack_from(data, at)
        at += HEADER.size
        ports.setdefault(port, []).append((arrival, data[at:at + length]))
        at += length
    return ports


class Rtp:
    """The fields of one RTP packet this needs."""

    def __init__(self, arrival, raw):
        if len(raw) < 12 or raw[0] >> 6 != 2:
            raise ValueError("not RTP")
        self.arrival, self.raw = arrival, raw
        self.marker = bool(raw[1] & 0x80)
        self.pt = raw[1] & 0x7F
        self.seq, self.ts = struct.unpack_from("!HI", raw, 2)
        start = 12 + 4 * (raw[0] & 0x0F)
        if raw[0] & 0x10:
            (words,) = struct.unpack_from("!H", raw, start + 2)
            start += 4 + 4 * words
        end = len(raw) - (raw[-1] if raw[0] & 0x20 else 0)
        self.payload = raw[start:end]


def fit_rate(xs, ys):
    """Slope of the least-squares line of ys on xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


def opus_samples(payload):
    """Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 3.1)."""
    if not payload:
        return 0
    config, code = payload[0] >> 3, payload[0] & 3
    if config < 12:
        frame = (480, 960, 1920, 2880)[config % 4]
    elif config < 16:
        frame = (480, 960)[config % 2]
    else:
        frame = (120, 240, 480, 960)[config % 4]
    frames = {0: 1, 1: 2, 2: 2}.get(code)
    if frames is None:
        frames = payload[1] & 0x3F if len(payload) > 1 else 0
    return frame * frames


def decode(packets, caps, tail, on_buffer):
    """Pushes RTP `packets` through `appsrc caps ! tail ! appsink`; calls
    on_buffer(Gst.Buffer, Gst.Caps) for each decoded buffer, in order."""
    pipeline = Gst.parse_launch(
        f"appsrc name=src format=time caps={caps} ! {tail} ! appsink name=sink sync=false emit-signals=true"
    )
    sink = pipeline.get_by_name("sink")

    def new_sample(appsink):
        sample = appsink.emit("pull-sample")
        on_buffer(sample.get_buffer(), sample.get_caps())
        return Gst.FlowReturn.OK

    sink.connect("new-sample", new_sample)
    src = pipeline.get_by_name("src")
    pipeline.set_state(Gst.State.PLAYING)
    for p in packets:
        buf = Gst.Buffer.new_wrapped(p.raw)
        buf.pts = buf.dts = p.ext_ns
        if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            break
    src.emit("end-of-stream")
    msg = pipeline.get_bus().timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        raise RuntimeError(f"decoding {caps}: {msg.parse_error() if msg else 'timed out'}")


def unwrap(packets, rate):
    """Gives each packet `ext` (unwrapped RTP timestamp) and `ext_ns`."""
    ext, last = 0, None
    for p in sorted(packets, key=lambda p: p.seq_ext):
        if last is not None:
            ext += (p.ts - last + 2**31) % 2**32 - 2**31
        last, p.ext = p.ts, ext
        p.ext_ns = max(0, ext) * Gst.SECOND // rate


def unwrap_seq(packets):
    """Gives each packet `seq_ext`, its sequence number unwrapped (arrival order)."""
    ext, last = 0, None
    for p in packets:
        if last is not None:
            ext += (p.seq - last + 2**15) % 2**16 - 2**15
        last, p.seq_ext = p.seq, ext


def parse_stream(packets, rate):
    out = []
    for arrival, raw in packets:
        try:
            p = Rtp(arrival, raw)
        except ValueError:
            continue
        if 72 <= p.pt <= 76:
            continue
        out.append(p)
    unwrap_seq(out)
    unwrap(out, rate)
    return sorted(out, key=lambda p: p.seq_ext)


def video_frames(packets):
    """[(rtp_ext, arrival of last packet, stamp_ms or None, flash)] per decoded frame."""
    last_arrival = {}
    for p in packets:
        last_arrival[p.ext] = max(last_arrival.get(p.ext, 0.0), p.arrival)
    pt = packets[0].pt
    frames = []

    def on_buffer(buf, caps):
        s = caps.get_structure(0)
        w, h = s.get_value("width"), s.get_value("height")
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            return
        y = info.data
        ms, readable = 0, True
        block = w // 32
        for bit in range(32):
            x = bit * block + block // 2
            one, inverted = y[8 * w + x] > 128, y[24 * w + x] > 128
            if one == inverted:
                readable = False
                break
            ms = ms * 2 + one
        flash = y[(h - 8) * w + w // 2] > 200
        buf.unmap(info)
        ext = round(buf.pts * 90000 / Gst.SECOND)
        frames.append((ext, last_arrival.get(ext), ms if readable else None, flash))

    decode(packets, f"application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload={pt}",
           "rtph264depay ! h264parse ! openh264dec ! videoconvert ! video/x-raw,format=I420", on_buffer)
    return frames


def audio_onsets(packets):
    """Beep onsets: [(packet, sample index in it)], and the decoded sample count."""
    pt = packets[0].pt
    pcm = bytearray()

    def on_buffer(buf, _caps):
        ok, info = buf.map(Gst.MapFlags.READ)
        if ok:
            pcm.extend(info.data)
            buf.unmap(info)

    decode(packets, f"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={pt}",
           "rtpopusdepay ! opusdec plc=false ! audioconvert ! audio/x-raw,format=S16LE,channels=1,rate=48000",
           on_buffer)
    samples = struct.unpack(f"<{len(pcm) // 2}h", bytes(pcm[: len(pcm) // 2 * 2]))
    starts, at = [], 0
    for p in packets:
        starts.append(at)
        at += opus_samples(p.payload)
    onsets, quiet, k = [], 0, 0
    for i, v in enumerate(samples):
        if abs(v) < LOUD:
            quiet += 1
            continue
        if quiet > QUIET_S * 48000:
            while k + 1 < len(starts) and starts[k + 1] <= i:
                k += 1
            onsets.append((packets[k], i - starts[k]))
        quiet = 0
    return onsets, len(samples), at


def stats(values):
    v = sorted(values)
    if not v:
        return None
    at = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"n": len(v), "median": at(0.5), "p95": at(0.95), "min": v[0], "max": v[-1],
            "max_abs": max(abs(x) for x in v)}


def relative_delay(packets, window_s=2.0):
    """Arrival minus RTP time (ms), above the least of the window before."""
    out, recent = [], []
    for p in packets:
        d = p.arrival * 1000 - p.ext / 48
        recent = [(t, x) for t, x in recent if p.arrival - t <= window_s] + [(p.arrival, d)]
        out.append(d - min(x for _, x in recent))
    return stats(out)


def heard_at(path):
    """The stand-in's beep log: wall-clock seconds of each beep at the monitor."""
    with open(path) as f:
        return [float(line) / 1000 for line in f if line.strip()]


def analyse(record, video_port, audio_port, beep_log=None):
    ports = read_record(record)
    video = parse_stream(ports.get(video_port, []), 90000)
    audio = parse_stream(ports.get(audio_port, []), 48000)
    if not video or not audio:
        raise SystemExit(f"rtp_lipsync: no RTP on {video_port} or {audio_port} in {record}")
    r = {"video_packets": len(video), "audio_packets": len(audio)}
    t0 = min(video[0].arrival, audio[0].arrival)
    r["video_rtp_per_s"] = fit_rate([p.arrival - t0 for p in video], [p.ext for p in video])
    r["audio_rtp_per_s"] = fit_rate([p.arrival - t0 for p in audio], [p.ext for p in audio])
    held = [opus_samples(p.payload) for p in audio]
    steps = [b.ext - a.ext for a, b in zip(audio, audio[1:])]
    r["audio_ts_step_vs_samples"] = {
        "steps": dict(sorted({s: steps.count(s) for s in set(steps)}.items())),
        "samples_per_packet": dict(sorted({s: held.count(s) for s in set(held)}.items())),
    }
    # Steps that differ from the samples the packet before held (the first
    # step left out: the stream's start).
    r["audio_ts_jumps"] = sum(1 for step, n in list(zip(steps, held))[1:] if step != n)
    r["audio_relative_delay"] = relative_delay(audio)
    gaps = [(b.arrival - a.arrival) * 1000 for a, b in zip(audio, audio[1:])]
    r["audio_gap_ms"] = stats(gaps)
    span = audio[-1].arrival - audio[0].arrival
    r["audio_samples_per_s_sent"] = sum(held[:-1]) / span if span else None
    frames = video_frames(video)
    onsets, decoded, expected = audio_onsets(audio)
    r["audio_samples_decoded"], r["audio_samples_in_packets"] = decoded, expected
    # The first frame of each flash, by the whole second it shows.
    flashes = {}
    for (ext, arrival, ms, flash), prev in zip(frames, [None] + frames[:-1]):
        if flash and ms is not None and arrival is not None and not (prev and prev[3]):
            full = ms + round((arrival * 1000 - ms) / 2**32) * 2**32
            flashes.setdefault(full // 1000, (full, arrival))
    # Each beep by the whole second it started on: its onset sample was
    # taken (n - i) samples before its packet's last, which left last. A
    # beep may reach the microphone a little before its second (seen: up to
    # 30 ms): counted from 0.2 s before it.
    beeps = {}
    for p, i in onsets:
        taken = p.arrival - (opus_samples(p.payload) - i) / 48000
        beeps.setdefault(int(taken + 0.2), p)
    heard = heard_at(beep_log) if beep_log else []
    rows = []
    for second, (full, v_arrival) in sorted(flashes.items()):
        p = beeps.get(second)
        if p is None:
            continue
        row = {
            "second": second,
            "audio_minus_video_ms": (p.arrival - v_arrival) * 1000,
            "video_delay_ms": v_arrival * 1000 - full,
            "audio_delay_ms": (p.arrival - second) * 1000,
        }
        mic = [t for t in heard if second - 0.2 <= t < second + 0.9]
        if mic:
            row["at_microphone_ms"] = (mic[0] - second) * 1000
            row["microphone_to_packet_ms"] = (p.arrival - mic[0]) * 1000
        rows.append(row)
    r["flashes"], r["beeps"], r["pairs"] = len(flashes), len(onsets), len(rows)
    r["audio_minus_video"] = stats([x["audio_minus_video_ms"] for x in rows])
    r["video_delay"] = stats([x["video_delay_ms"] for x in rows])
    r["audio_delay"] = stats([x["audio_delay_ms"] for x in rows])
    if beep_log:
        r["beep_at_microphone"] = stats([x["at_microphone_ms"] for x in rows if "at_microphone_ms" in x])
        r["microphone_to_packet"] = stats([x["microphone_to_packet_ms"] for x in rows if "microphone_to_packet_ms" in x])
    r["rows"] = [{k: round(v, 1) for k, v in x.items()} for x in rows]
    return r


def summary(r):
    """One line for people."""
    def ms(x):
        return f"median {x['median']:.0f} ms, p95 {x['p95']:.0f} ms" if x else "n/a"

    avm = r["audio_minus_video"]
    line = (f"RTP lip sync over {r['pairs']} flashes: audio minus video {ms(avm)}, min {avm['min']:.0f} ms, "
            f"max {avm['max']:.0f} ms, max |offset| {avm['max_abs']:.0f} ms (positive: sound after picture); "
            f"video {ms(r['video_delay'])} after its stamp, audio {ms(r['audio_delay'])} after the second")
    if "beep_at_microphone" in r:
        line += (f" (beep at the microphone {ms(r['beep_at_microphone'])}, "
                 f"microphone to packet {ms(r['microphone_to_packet'])})")
    return line + (f"; RTP clocks: video {r['video_rtp_per_s']:.1f}/s, audio {r['audio_rtp_per_s']:.1f}/s; "
                   f"audio timestamp jumps (steps other than the packet's samples): {r['audio_ts_jumps']}; "
                   f"audio relative delay (what a jitter buffer must hold) {ms(r['audio_relative_delay'])}, "
                   f"max {r['audio_relative_delay']['max']:.0f} ms; gaps between audio packets "
                   f"{ms(r['audio_gap_ms'])}, max {r['audio_gap_ms']['max']:.0f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("record")
    ap.add_argument("--video-port", type=int, default=5004)
    ap.add_argument("--audio-port", type=int, default=5006)
    ap.add_argument("--beep-log")
    ap.add_argument("--json", action="store_true", help="everything, per flash too, as JSON only")
    a = ap.parse_args()
    Gst.init(None)
    r = analyse(a.record, a.video_port, a.audio_port, a.beep_log)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(summary(r))
    r.pop("rows")
    print("RTP_RESULT " + json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
