#!/usr/bin/python3
"""Stand-ins for the Raspberry Pi camera programs, for machines without a Pi camera.

    camera.py rpicam-vid ARGS...     behaves as rpicam-vid (rpicam-apps)
    camera.py raspivid ARGS...       behaves as raspivid (raspberrypi/userland)

Tests install them on PATH as links named after the program. They follow
the rules read from upstream's sources (rpicam-apps core/options.cpp,
core/video_options.hpp, encoder/encoder.cpp, encoder/h264_encoder.cpp,
encoder/libav_encoder.cpp, output/file_output.cpp, output/output.cpp; userland RaspiVid.c,
RaspiCLI.c; the Pi's bcm2835-v4l2-codec driver), not their code:

- Flags: only upstream's spelling is accepted; anything else stops the program
  with upstream's message (rpicam-vid: boost's "unrecognised option '--x'",
  printed as "ERROR: *** ... ***", exit 255; raspivid: "Invalid command line
  option (-x)", exit 64). Without -t 0 both stop after 5 s.
- The machine: a Pi 5 (BCM2712 in the device tree's compatible list) has no
  H.264 encoder. rpicam-vid then encodes with libx264 through libav, which for
  `-o -` needs `--libav-format` or stops with "libav: cannot allocate output
  context, try setting with --libav-format". `--low-latency` exists from 1.6.
  Elsewhere the VideoCore encoder takes levels 4, 4.1, 4.2 and 25 kbit/s to
  25 Mbit/s. raspivid needs the legacy camera stack: no Pi 5.
- Output: the hardware path fwrite()s each frame to C stdio's stdout, which is
  fully buffered on a pipe (4096 bytes here): without --flush / -fl the tail
  of a frame waits for the next frames. libav writes through its own I/O
  layer, which flushes after every packet. --save-pts FILE: a line per frame
  after the frame is written (a header line first), flushed with --flush,
  and one for an empty buffer too; libav refuses it unless it writes an
  elementary stream to a *.264 file.
- The SPS carries the level the encoder was given: 4 unless told otherwise on
  the hardware (its driver's default); libx264's own choice on a Pi 5.

The picture is GStreamer's videotestsrc encoded by x264enc at the size, rate,
bitrate and keyframe interval asked for.

Environment:
  BROADCAST_AGENT_DEVICE_TREE  the device-tree compatible file (default /proc/device-tree/compatible)
  STANDIN_RPICAM_VERSION       the rpicam-apps release to be, e.g. 1.5.2 (default 1.6.0)
  STANDIN_LOG                  append one JSON line per run: what was asked, what the stand-in did
  STANDIN_FRAME_LOG            append "frame monotonic_ns bytes slice_bytes" per frame written (slice_bytes:
                               its slice NAL units' bytes without start codes), and put the frame's
                               number in an SEI NAL at its start (for benches/flush_latency.py)
  STANDIN_EMPTY_BUFFERS        N: rpicam-vid's encoder hands over an empty buffer after every Nth frame,
                               for which --save-pts gets a line and stdout no bytes (see Timestamps)
  STANDIN_IGNORE_FLUSH         act as if --flush / -fl were not given (what an agent without them gets)
  STANDIN_PATTERN              videotestsrc's pattern (default ball, a still scene; snow fills the bitrate),
                               or `stamp`: frames that carry their capture time in the pixels (see
                               StampedPicture; for benches/glass_to_glass.sh)
  STANDIN_STAMP_LOG            with `stamp`: append "stamp_ms written_ms" per frame written (wall clock)
  STANDIN_BEEP_SINK            with `stamp`: play a 1 kHz beep into this PulseAudio sink (pulsesink, in
                               time with the wall clock) for the 100 ms after each whole second, with
                               the flash (lip sync)
  STANDIN_BEEP_LOG             with STANDIN_BEEP_SINK: append the wall-clock time (ms) each beep is
                               heard at the sink's monitor (parec), what a microphone there records
"""
import ctypes
import json
import os
import signal
import struct
import sys
import time

from machine import is_pi5

# The SEI's UUID (user data unregistered), without zero bytes.
FRAME_UUID = bytes(range(0x41, 0x51))


class Stop(Exception):
    """Upstream's way out: a message on stderr and an exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.message = message
        self.status = status


def version():
    text = os.environ.get("STANDIN_RPICAM_VERSION", "1.6.0")
    return tuple(int(p) for p in text.split("."))


# ---------------------------------------------------------------- rpicam-vid

# name -> (short name or None, kind, since version); kind is "flag" (boost
# implicit bool), "int", "float" or "str".
RPICAM_OPTIONS = {
    "help": ("h", "flag", (1, 0)),
    "version": (None, "flag", (1, 0)),
    "verbose": ("v", "int", (1, 0)),
    "timeout": ("t", "str", (1, 0)),
    "output": ("o", "str", (1, 0)),
    "nopreview": ("n", "flag", (1, 0)),
    "width": (None, "int", (1, 0)),
    "height": (None, "int", (1, 0)),
    "framerate": (None, "float", (1, 0)),
    "rotation": (None, "int", (1, 0)),
    "hflip": (None, "flag", (1, 0)),
    "vflip": (None, "flag", (1, 0)),
    "flush": (None, "flag", (1, 0)),
    "bitrate": ("b", "str", (1, 0)),
    "profile": (None, "str", (1, 0)),
    "level": (None, "str", (1, 0)),
    "intra": ("g", "int", (1, 0)),
    "inline": (None, "flag", (1, 0)),
    "codec": (None, "str", (1, 0)),
    "libav-format": (None, "str", (1, 0)),
    "low-latency": (None, "flag", (1, 6)),
    "save-pts": (None, "str", (1, 0)),
}


def parse_rpicam(args):
    """boost::program_options' command line rules, for the options above."""
    known = {n: spec for n, spec in RPICAM_OPTIONS.items() if version() >= spec[2]}
    shorts = {spec[0]: n for n, spec in known.items() if spec[0]}
    values, i = {}, 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            if name not in known:
                raise Stop(f"unrecognised option '--{name}'", 255)
            shown = f"--{name}"
        elif arg.startswith("-") and len(arg) > 1:
            if arg[1] not in shorts:
                raise Stop(f"unrecognised option '{arg[:2]}'", 255)
            name, inline = shorts[arg[1]], arg[2:]
            eq, shown = bool(inline), f"-{arg[1]}"
        else:
            raise Stop("too many positional options have been specified on the command line", 255)
        kind = known[name][1]
        if kind == "flag":
            values[name] = inline not in ("0", "false") if eq else True
            continue
        if not eq:
            if i >= len(args):
                raise Stop(f"the required argument for option '{shown}' is missing", 255)
            inline, i = args[i], i + 1
        try:
            values[name] = {"int": int, "float": float, "str": str}[kind](inline)
        except ValueError:
            raise Stop(f"the argument ('{inline}') for option '{shown}' is invalid", 255) from None
    return values


def float32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def rpicam_vid(args):
    o = parse_rpicam(args)
    if o.get("version"):
        v = ".".join(map(str, version()))
        print(f"rpicam-apps build: v{v} 0a1b2c3d4e5f 01-01-2025 (12:00:00)")
        print("rpicam-apps capabilites: egl:0 qt:0 drm:0 libav:1")
        print("libcamera build: v0.3.2+99-1230f78d")
        return 0
    codec = o.get("codec", "h264").lower()
    if codec != "h264":
        raise Stop(f"stand-in: codec {codec} is not modelled", 255)
    pi5 = is_pi5()
    level = o.get("level", "")
    profile = o.get("profile", "")
    bitrate = parse_bitrate(o.get("bitrate", "0"))
    if pi5:
        # encoder.cpp: no VideoCore encoder, so libav with libx264, which
        # guesses a format only for no output or a tcp:// or udp:// one.
        output = o.get("output", "")
        if not o.get("libav-format") and output and not output.startswith(("tcp://", "udp://")):
            raise Stop("libav: cannot allocate output context, try setting with --libav-format", 255)
        if profile and profile.lower() not in ("baseline", "main", "high"):
            raise Stop(f"libav: no such profile {profile}", 255)
        level_idc = int(float32(float32(float(level)) * 10)) if level else None
        if o.get("save-pts") and not o.get("output", "").endswith(("264", "h264")):
            # libav_encoder.cpp: only an elementary stream (a file named
            # *.264 / *.h264) goes through the Output class.
            raise Stop("libav: Incompatible options selected.", 255)
    else:
        # h264_encoder.cpp and the V4L2 driver's control ranges.
        if bitrate and not 25_000 <= bitrate <= 25_000_000:
            raise Stop("failed to set bitrate", 255)
        if profile and profile not in ("baseline", "main", "high"):
            raise Stop(f"no such profile {profile}", 255)
        if level and level not in ("4", "4.1", "4.2"):
            raise Stop(f"no such level {level}", 255)
        level_idc = {"": 40, "4": 40, "4.1": 41, "4.2": 42}[level]
    low_latency = bool(o.get("low-latency"))
    flush = bool(o.get("flush")) and not os.environ.get("STANDIN_IGNORE_FLUSH")
    run = {
        "program": "rpicam-vid", "args": args, "pi5": pi5,
        "encoder": "libx264" if pi5 else "hardware", "level": level_idc,
        "low_latency": low_latency, "flush": flush, "save_pts": o.get("save-pts"),
    }
    empty = int(os.environ.get("STANDIN_EMPTY_BUFFERS", "0"))
    pts = Timestamps(o["save-pts"], flush, empty) if o.get("save-pts") else None
    stream(
        run,
        width=o.get("width") or 640, height=o.get("height") or 480,
        fps=o.get("framerate") or 30, kbps=bitrate // 1000 or 2000,
        intra=o.get("intra") or 0, rotation=o.get("rotation", 0),
        hflip=o.get("hflip"), vflip=o.get("vflip"),
        timeout_ms=parse_timeout(o.get("timeout", "5sec")),
        # libav flushes its I/O after every packet; the hardware path only
        # with --flush.
        writer="direct" if pi5 else ("flushed" if flush else "buffered"),
        # libx264 without --low-latency: preset superfast, frame threads
        # (each a frame of delay), no rate-control lookahead.
        x264=("tune=zerolatency speed-preset=ultrafast" if not pi5 or low_latency
              else "speed-preset=superfast threads=4"),
        x264_options="" if not pi5 or low_latency else "rc-lookahead=0",
        inline=pi5 or bool(o.get("inline")),
        pts=pts,
    )
    return 0


def parse_bitrate(text):
    """'1500000', '1.5Mbps', '800kbps': bits/second without units."""
    units = {"mbps": 1_000_000, "kbps": 1000, "bps": 1}
    for unit, scale in units.items():
        if text.lower().endswith(unit):
            return int(float(text[: -len(unit)]) * scale)
    return int(text)


def parse_timeout(text):
    """rpicam-apps durations: plain numbers are milliseconds; 0 is forever."""
    for unit, scale in (("ms", 1), ("sec", 1000), ("s", 1000)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * scale)
    return int(text)


# ---------------------------------------------------------------- raspivid

# RaspiVid.c, RaspiCommonSettings.c, RaspiCamControl.c, RaspiPreview.c:
# (command without its first '-', abbreviation, number of parameters).
RASPIVID_COMMANDS = [
    ("-bitrate", "b", 1), ("-timeout", "t", 1), ("-framerate", "fps", 1),
    ("-intra", "g", 1), ("-profile", "pf", 1), ("-inline", "ih", 0),
    ("-flush", "fl", 0), ("-level", "lev", 1), ("-codec", "cd", 1),
    ("-qp", "qp", 1), ("-help", "?", 0), ("-width", "w", 1), ("-height", "h", 1),
    ("-output", "o", 1), ("-verbose", "v", 0), ("-camselect", "cs", 1),
    ("-mode", "md", 1), ("-rotation", "rot", 1), ("-hflip", "hf", 0),
    ("-vflip", "vf", 0), ("-nopreview", "n", 0), ("-preview", "p", 1),
    ("-fullscreen", "f", 0), ("-sharpness", "sh", 1), ("-awb", "awb", 1),
]


def parse_raspivid(args):
    values, i = {}, 0
    while i < len(args):
        arg = args[i]
        i += 1
        match = [c for c in RASPIVID_COMMANDS if arg.startswith("-") and arg[1:] in c[:2]]
        if not match:
            raise Stop(f"Invalid command line option ({arg})", 64)
        command, _, params = match[0]
        if params:
            if i >= len(args):
                break  # upstream drops out of the loop without a word
            values[command], i = args[i], i + 1
        else:
            values[command] = True
    return values


def raspivid(args):
    o = parse_raspivid(args)
    if is_pi5():
        raise Stop("stand-in: raspivid needs the legacy camera stack, which a Pi 5 does not have", 1)
    width, height = int(o.get("-width", 1920)), int(o.get("-height", 1080))
    fps = int(o.get("-framerate", 30))
    bitrate = int(o.get("-bitrate", 17_000_000))
    level_idc = {"4": 40, "4.1": 41, "4.2": 42}.get(o.get("-level", "4"), 40)
    mbps = ((width + 15) // 16) * ((height + 15) // 16) * fps
    if mbps > 245_760:
        if mbps > 522_240:
            print("Too many macroblocks/s requested", file=sys.stderr)
            raise Stop("main: Failed to create encode component", 70)
        print("Too many macroblocks/s: Increasing H264 Level to 4.2", file=sys.stderr)
        level_idc = 42
    if level_idc == 40 and bitrate > 25_000_000:
        print("Bitrate too high: Reducing to 25MBit/s", file=sys.stderr)
        bitrate = 25_000_000
    flush = bool(o.get("-flush")) and not os.environ.get("STANDIN_IGNORE_FLUSH")
    run = {
        "program": "raspivid", "args": args, "pi5": False, "encoder": "hardware",
        "level": level_idc, "low_latency": False, "flush": flush,
    }
    stream(
        run, width=width, height=height, fps=fps, kbps=bitrate // 1000,
        intra=int(o.get("-intra", 0)), rotation=int(o.get("-rotation", 0)),
        hflip=o.get("-hflip"), vflip=o.get("-vflip"),
        timeout_ms=int(o.get("-timeout", 5000)),
        writer="flushed" if flush else "buffered",
        x264="tune=zerolatency speed-preset=ultrafast", x264_options="",
        inline=bool(o.get("-inline")),
    )
    return 0


# ---------------------------------------------------------------- the picture

def stream(run, width, height, fps, kbps, intra, rotation, hflip, vflip,
           timeout_ms, writer, x264, x264_options, inline, pts=None):
    """Encodes a test picture and writes it to stdout frame by frame."""
    log(run)
    import gi
    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
    flips = []
    if rotation == 180:
        flips.append("videoflip method=rotate-180")
    if hflip:
        flips.append("videoflip method=horizontal-flip")
    if vflip:
        flips.append("videoflip method=vertical-flip")
    level = run["level"]
    options = [o for o in (x264_options, f"level={level / 10}" if level else "") if o]
    options = f"option-string={':'.join(options)}" if options else ""
    key = f"key-int-max={intra}" if intra else ""
    pattern = os.environ.get("STANDIN_PATTERN", "ball")
    stamped = StampedPicture(width, height, fps) if pattern == "stamp" else None
    description = " ! ".join([
        stamped.source() if stamped else f"videotestsrc is-live=true pattern={pattern}",
        f"video/x-raw,width={width},height={height},framerate={round(fps)}/1",
        *flips,
        f"x264enc {x264} aud=false bitrate={max(kbps, 1)} {key} {options}",
        "video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au",
        "appsink name=out sync=false max-buffers=100",
    ])
    pipeline = Gst.parse_launch(description)
    out = pipeline.get_by_name("out")
    pipeline.set_state(Gst.State.PLAYING)
    if stamped:
        stamped.start(Gst, pipeline.get_by_name("src"))
        if os.environ.get("STANDIN_BEEP_SINK"):
            stamped.beep(os.environ["STANDIN_BEEP_SINK"])
            if os.environ.get("STANDIN_BEEP_LOG"):
                hear_beeps(os.environ["STANDIN_BEEP_SINK"], os.environ["STANDIN_BEEP_LOG"])
    write = Writer(writer)
    frames = FrameLog()
    start, seq = time.monotonic(), 0
    while timeout_ms == 0 or (time.monotonic() - start) * 1000 < timeout_ms:
        sample = out.emit("try-pull-sample", Gst.SECOND)
        if sample is None:
            continue
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            continue
        data = bytes(info.data)
        buf.unmap(info)
        if not inline and seq > 0:
            data = strip_parameter_sets(data)
        data = frames.mark(seq, data)
        write(data)
        if pts:
            pts.frame(buf.pts)
        frames.written(seq, data)
        if stamped:
            stamped.written()
        seq += 1
    write.close()
    pipeline.set_state(Gst.State.NULL)


def hear_beeps(sink, path):
    """Logs when each beep reaches PulseAudio `sink`'s monitor, read by
    `parec` in 10 ms blocks: the first loud sample after 0.5 s of quiet,
    at the block's arrival less the samples after it (wall clock, ms)."""
    import array
    import subprocess
    import threading

    rate = 48000
    parec = subprocess.Popen(
        ["parec", "-d", f"{sink}.monitor", "--raw", "--format=s16le", f"--rate={rate}", "--channels=1",
         "--latency-msec=10"], stdout=subprocess.PIPE)
    log = open(path, "a", buffering=1)

    def run():
        quiet = 0
        while True:
            data = os.read(parec.stdout.fileno(), rate // 100 * 2)
            if not data:
                return
            now = time.time()
            samples = array.array("h", data[: len(data) // 2 * 2])
            for i, value in enumerate(samples):
                if abs(value) < 3000:
                    quiet += 1
                    continue
                if quiet > rate // 2:
                    log.write(f"{(now - (len(samples) - i) / rate) * 1000:.1f}\n")
                quiet = 0

    threading.Thread(target=run, daemon=True).start()


class StampedPicture:
    """Frames that carry their capture time (STANDIN_PATTERN=stamp).

    Each I420 frame is made when the "sensor" takes it, paced by the wall
    clock at the frame rate, and carries that moment (CLOCK_REALTIME in ms,
    modulo 2^32) in its top rows: 32 blocks, most significant bit first,
    white for 1 and black for 0, in rows 0-15, and the same bits inverted
    in rows 16-31 (a reader checks that both agree). Below: a band of fresh
    noise in every frame (the encoder spends its whole bitrate, as on a busy
    scene), and mid grey, which turns white for the 100 ms after each
    whole second (the flash of the lip-sync measurement).
    """

    STAMP_ROWS = 16
    NOISE_ROWS = 96

    def __init__(self, width, height, fps):
        self.width, self.height, self.fps = width, height, fps
        self.block = width // 32
        self.chroma = bytes([128]) * ((width // 2) * (height // 2) * 2)
        rest = height - 2 * self.STAMP_ROWS - self.NOISE_ROWS
        self.grey = bytes([128]) * (width * rest)
        self.white = bytes([235]) * (width * rest)
        self.pending = []
        path = os.environ.get("STANDIN_STAMP_LOG")
        self.log = open(path, "a", buffering=1) if path else None

    def source(self):
        caps = f"video/x-raw,format=I420,width={self.width},height={self.height},framerate={round(self.fps)}/1"
        return f"appsrc name=src is-live=true format=time do-timestamp=true caps={caps}"

    def frame(self, ms):
        """The frame taken at wall-clock time `ms` (full, not the stamp's 32 bits)."""
        rows = []
        for inverted in (False, True):
            row = b"".join(
                bytes([235 if ((ms >> (31 - bit)) & 1) != inverted else 16]) * self.block
                for bit in range(32)
            )
            row += bytes([128]) * (self.width - len(row))
            rows.append(row * self.STAMP_ROWS)
        rows.append(os.urandom(self.width * self.NOISE_ROWS))
        rows.append(self.white if ms % 1000 < 100 else self.grey)
        rows.append(self.chroma)
        return b"".join(rows)

    def start(self, gst, appsrc):
        import threading

        def run():
            period = 1.0 / self.fps
            due = time.time()
            while True:
                due += period
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                ms = int(time.time() * 1000)
                self.pending.append(ms & 0xFFFFFFFF)
                if appsrc.emit("push-buffer", gst.Buffer.new_wrapped(self.frame(ms))) != gst.FlowReturn.OK:
                    return

        threading.Thread(target=run, daemon=True).start()

    def beep(self, sink):
        """Plays the beep of each flash into PulseAudio `sink`: 1 kHz for the
        100 ms after each whole second of the wall clock, at that moment.

        The samples are made ahead of time, each carrying its wall-clock
        moment (a realtime clock, running time 0 on a whole second), and
        `pulsesink` plays them when that moment comes: a thread that runs
        late (this program is busy making frames) neither delays the beep
        nor piles up a queue that delays every later one, as writing them
        to `pacat` as they fall due did (the beep then came later and later:
        hundreds of ms within a minute on a loaded machine).
        """
        import math
        import threading

        from gi.repository import Gst

        rate, chunk = 48000, 480
        caps = f"audio/x-raw,format=S16LE,layout=interleaved,rate={rate},channels=1"
        pipeline = Gst.parse_launch(
            f"appsrc name=beep is-live=true format=time caps={caps} ! "
            f"pulsesink device={sink} sync=true processing-deadline=0"
        )
        clock = Gst.SystemClock(clock_type=Gst.ClockType.REALTIME)
        pipeline.use_clock(clock)
        pipeline.set_start_time(Gst.CLOCK_TIME_NONE)
        base = clock.get_time() // Gst.SECOND * Gst.SECOND
        pipeline.set_base_time(base)
        # Each sample at its moment, not after the latency the pipeline
        # would add (110 ms: the sink's own buffer, already ahead of time).
        pipeline.set_latency(0)
        src = pipeline.get_by_name("beep")
        pipeline.set_state(Gst.State.PLAYING)
        period = rate // 1000
        tone = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * i / period))) for i in range(period))
        loud = tone * (rate // 10 // period)
        silence = bytes(2 * (rate - len(loud) // 2))
        second = loud + silence  # sample i of a second: 2 bytes at 2 * i

        def run():
            n = (clock.get_time() - base) * rate // Gst.SECOND + rate // 10
            while True:
                ahead = n / rate - (clock.get_time() - base) / Gst.SECOND
                if ahead > 0.3:
                    time.sleep(ahead - 0.2)
                at = n % rate
                data = (second[2 * at:] + second)[: 2 * chunk]
                buf = Gst.Buffer.new_wrapped(data)
                buf.pts = n * Gst.SECOND // rate
                buf.duration = chunk * Gst.SECOND // rate
                if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    return
                n += chunk

        threading.Thread(target=run, daemon=True).start()
        self.beeper = pipeline

    def written(self):
        """The oldest frame not yet written left the program (x264 keeps the order)."""
        if self.pending:
            ms = self.pending.pop(0)
            if self.log:
                self.log.write(f"{ms} {int(time.time() * 1000) & 0xFFFFFFFF}\n")


class Writer:
    """How the program's bytes reach the pipe."""

    def __init__(self, mode):
        self.mode = mode
        if mode != "direct":
            self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
            self.stdout = ctypes.c_void_p.in_dll(self.libc, "stdout")
            # What glibc gives a C program whose stdout is a pipe: full
            # buffering in st_blksize bytes. Set here with a buffer of our
            # own: Python may have made stdout unbuffered (-u), which a NULL
            # buffer would not undo.
            full_buffering = 0  # _IOFBF
            size = os.fstat(1).st_blksize
            self.buffer = ctypes.create_string_buffer(size)
            self.libc.setvbuf(self.stdout, self.buffer, full_buffering, ctypes.c_size_t(size))

    def __call__(self, data):
        if self.mode == "direct":
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
            return
        # C stdio, as fwrite(buffer->data, ...) upstream; EPIPE ends the program.
        if self.libc.fwrite(data, 1, len(data), self.stdout) != len(data):
            sys.exit(1)
        if self.mode == "flushed" and self.libc.fflush(self.stdout) != 0:
            sys.exit(1)

    def close(self):
        if self.mode != "direct":
            self.libc.fflush(self.stdout)


class Timestamps:
    """--save-pts FILE (output/output.cpp): opened with the Output, before the
    camera starts ("Failed to open timestamp file" if it cannot be), a
    header line, then after each frame is written its time stamp in ms with
    three decimals, counted from the first frame; flushed after each line
    with --flush, otherwise C stdio's full buffering.

    The line is written for every buffer the encoder hands over, empty or
    not: Output::OutputReady calls outputBuffer, which writes bytes only
    `if (fp_ && size)` (output/file_output.cpp, FileOutput::outputBuffer),
    then timestampReady unconditionally. With `empty_every` N, an empty
    buffer (with the frame's time) follows every Nth frame."""

    def __init__(self, path, flush, empty_every):
        try:
            self.file = open(path, "w")
        except OSError:
            raise Stop(f"Failed to open timestamp file {path}", 255) from None
        self.flush = flush
        self.empty_every = empty_every
        self.frames = 0
        self.first = None
        self.file.write("# timecode format v2\n")

    def frame(self, pts_ns):
        """The buffer of a frame just written, then any empty one after it."""
        self.buffer(pts_ns)
        self.frames += 1
        if self.empty_every and self.frames % self.empty_every == 0:
            self.buffer(pts_ns)

    def buffer(self, pts_ns):
        if self.first is None:
            self.first = pts_ns
        us = (pts_ns - self.first) // 1000
        self.file.write(f"{us // 1000}.{us % 1000:03d}\n")
        if self.flush:
            self.file.flush()


def strip_parameter_sets(au):
    """The AU without SPS and PPS (the hardware without inline headers)."""
    nals = au.split(b"\x00\x00\x01")
    kept = [n for n in nals[1:] if n and (n[0] & 0x1F) not in (7, 8)]
    return b"".join(b"\x00\x00\x00\x01" + n.rstrip(b"\x00") for n in kept)


class FrameLog:
    """Per-frame timing for the flush benchmark (STANDIN_FRAME_LOG)."""

    def __init__(self):
        path = os.environ.get("STANDIN_FRAME_LOG")
        self.file = open(path, "a", buffering=1) if path else None

    def mark(self, seq, au):
        """Puts the frame number in an SEI before the first slice."""
        if not self.file:
            return au
        # 28 bits in four bytes with the top bit set: no emulation prevention.
        number = bytes(0x80 | ((seq >> s) & 0x7F) for s in (21, 14, 7, 0))
        sei = b"\x00\x00\x00\x01\x06\x05" + bytes([len(FRAME_UUID) + 4]) + FRAME_UUID + number + b"\x80"
        at = au.find(b"\x00\x00\x01")
        while 0 <= at < len(au) - 3:
            if au[at + 3] & 0x1F in (1, 5):
                start = at - 1 if at > 0 and au[at - 1] == 0 else at
                return au[:start] + sei + au[start:]
            at = au.find(b"\x00\x00\x01", at + 3)
        return au

    def written(self, seq, au):
        if self.file:
            self.file.write(f"{seq} {time.monotonic_ns()} {len(au)} {slice_bytes(au)}\n")


def slice_bytes(au):
    """The bytes of the AU's slice NAL units (types 1 and 5), without start codes."""
    nals = au.split(b"\x00\x00\x01")[1:]
    return sum(len(n.rstrip(b"\x00")) for n in nals if n and (n[0] & 0x1F) in (1, 5))


def log(run):
    path = os.environ.get("STANDIN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(run) + "\n")


def main():
    # Die on a closed pipe as a C program does (Python ignores SIGPIPE).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # Installed as a link named after the program, or run as camera.py PROGRAM.
    program, args = os.path.basename(sys.argv[0]), sys.argv[1:]
    if program not in ("rpicam-vid", "raspivid") and args:
        program, args = args[0], args[1:]
    try:
        if program == "rpicam-vid":
            return rpicam_vid(args)
        if program == "raspivid":
            return raspivid(args)
        raise Stop(f"stand-in: unknown program {program}", 2)
    except Stop as stop:
        if program == "rpicam-vid" and not stop.message.startswith("stand-in"):
            print(f"ERROR: *** {stop.message} ***", file=sys.stderr)
        else:
            print(stop.message, file=sys.stderr)
        return stop.status


if __name__ == "__main__":
    sys.exit(main())
