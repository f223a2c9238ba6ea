"""Signals, a level profile and a drifting echo path for benches/echo.sh and
tests/audio.rs (standard library only).

  python3 echo_signals.py gen DIR [--near tone|speech [ALONE]]
                                                          far.wav, near.wav, mic.wav (48 kHz mono S16)
  python3 echo_signals.py profile FILE...                 dBFS per 0.5 s
  python3 echo_signals.py relay PPM [LATENCY_MS [PAD_MS]] echo path: sink `speaker`'s monitor, played
                                                          PPM faster (by clock) at -6 dB into sink `echo`
  python3 echo_signals.py delay REF ECHO T...             ECHO's delay behind REF (raw S16 48 kHz
                                                          mono) around each time T (s), in ms

Timeline as tests/audio.rs once had it: far end 1-12 s (noise, ~-22 dBFS, or
speech from alsa-utils' /usr/share/sounds/alsa), near end 8-12 s (700 Hz at
-21 dBFS, or other speech at -21 dBFS active level); ALONE (default 7) is
how long the far end talks alone.
"""
import array
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import wave

R = 48000
SOUNDS = "/usr/share/sounds/alsa/"


def read(path):
    with wave.open(path) as w:
        return w.getframerate(), array.array("h", w.readframes(w.getnframes()))


def write(path, x):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(R)
        w.writeframes(array.array("h", [max(-32768, min(32767, round(v))) for v in x]).tobytes())


def noise(n):
    """The far end of tests/audio.rs: xorshift noise, low-passed a little."""
    s, smooth, out = 0x9E3779B97F4A7C15, 0.0, []
    for _ in range(n):
        s ^= (s << 13) & 0xFFFFFFFFFFFFFFFF
        s ^= s >> 7
        s ^= (s << 17) & 0xFFFFFFFFFFFFFFFF
        smooth = 0.6 * smooth + 0.4 * ((s >> 11) / float(1 << 53) * 2 - 1)
        out.append(smooth * 9000)
    return out


def speech(names, n, level_db):
    """Words of alsa-utils' samples, scaled to an active level (20 ms frames above -50 dBFS)."""
    out = []
    while len(out) < n:
        for name in names:
            out += list(read(SOUNDS + name + ".wav")[1]) + [0] * int(0.15 * R)
    out = out[:n]
    frames = [sum(v * v for v in out[i:i + 960]) / 960 for i in range(0, n - 960, 960)]
    active = [e for e in frames if e > (32768 * 10 ** -2.5) ** 2]
    gain = 10 ** (level_db / 20) * 32768 / math.sqrt(sum(active) / len(active))
    return [v * gain for v in out]


def gen(out, near_kind, alone=7.0):
    talk = int((1 + alone) * R)
    n = talk + int(4.5 * R)
    far = [0.0] * R + noise(talk + 4 * R - R) + [0.0] * (R // 2)
    near = [0.0] * n
    if near_kind == "speech":
        near[talk:talk + 4 * R] = speech(["Front_Center", "Rear_Center", "Side_Left", "Side_Right"], 4 * R, -21)
    else:
        amp = 32768 * 10 ** (-21 / 20) * math.sqrt(2)
        near[talk:talk + 4 * R] = [amp * math.sin(2 * math.pi * 700 * j / R) for j in range(4 * R)]
    write(out + "/far.wav", far)
    write(out + "/near.wav", near)
    # A digital echo path: the far end 40 ms later at -6 dB, plus the near end.
    d = int(0.040 * R)
    write(out + "/mic.wav", [0.501 * (far[j - d] if j >= d else 0) + near[j] for j in range(n)])


def profile(path):
    rate, d = read(path)
    step = rate // 2
    dbs = [10 * math.log10(max(sum(float(v) * v for v in d[i:i + step]) / step, 1e-3) / 32768 ** 2)
           for i in range(0, len(d) - step + 1, step)]
    return " ".join(f"{x:.0f}" for x in dbs)


def relay(ppm, latency_ms, pad_ms):
    """A true clock drift in the echo path: what the null sink `speaker` plays
    (its monitor, by parec) comes out of the null sink `echo` (by pacat) at
    -6 dB, resampled by 1 + PPM/10^6 (linear interpolation): both sinks run on
    one clock, so with +100 the echo's delay grows by 0.1 ms per second, with
    -100 it shrinks. PAD_MS of silence go first, so that pacat's buffer does
    not run dry when it shrinks (they lengthen the echo path by as much).
    Run it at real-time priority (chrt -r 5, as PulseAudio's own threads): on a loaded machine a
    plain process misses its turn by up to ~140 ms, pacat underruns, and every
    underrun delays the echo by a whole buffer."""
    fmt = ["--raw", "--format=s16le", f"--rate={R}", "--channels=1"]
    log = tempfile.TemporaryFile("w+")
    play = subprocess.Popen(["pacat", "-v", "-d", "echo", *fmt, f"--latency-msec={latency_ms}"],
                            stdin=subprocess.PIPE, stderr=log)
    # Only once pacat's stream is there: what parec delivers before that would
    # wait in the pipe and lengthen the echo path for good.
    while "Stream successfully created" not in (log.seek(0) or log.read()):
        if play.poll() is not None:
            sys.exit("relay: pacat ended")
        time.sleep(0.01)
    rec = subprocess.Popen(["parec", "-d", "speaker.monitor", *fmt, "--latency-msec=10"],
                           stdout=subprocess.PIPE)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    play.stdin.write(bytes(2 * (R * pad_ms // 1000)))
    step = 1 / (1 + ppm / 1e6)  # input samples per output sample
    pos, held = 0.0, array.array("h")
    try:
        while data := os.read(rec.stdout.fileno(), 1920):
            held.frombytes(data)
            out = array.array("h")
            while pos + 1 < len(held):
                i = int(pos)
                out.append(round(0.501 * (held[i] + (pos - i) * (held[i + 1] - held[i]))))
                pos += step
            del held[:int(pos)]
            pos -= int(pos)
            play.stdin.write(out.tobytes())
            play.stdin.flush()
    finally:
        log.seek(0)
        # Each underrun delays the echo by pacat's buffer: the drift is then not true.
        text = log.read()
        at = re.findall(r"Time: ([0-9.]+) sec[^T]*Stream underrun", text)
        print(f"relay: pacat underruns: {text.count('Stream underrun')} (after {', '.join(at) or '-'} s)",
              file=sys.stderr)
        rec.kill()
        play.kill()


def raw(path):
    x = array.array("h")
    with open(path, "rb") as f:
        x.frombytes(f.read())
    return x


def delay(ref, echo, at, span=1.0, max_lag=1.0):
    """ECHO's delay behind REF (samples, from -MAX_LAG to +MAX_LAG s: two
    recordings' starts differ) from the second at AT, and the normalised
    correlation there: 1 ms energies first (coarse), then the samples."""
    blk, i0 = 48, int(at * R)
    n, lags = int(span * R) // blk, min(int(max_lag * R), i0) // blk

    def env(x, start, count):
        return [sum(v * v for v in x[start + k * blk:start + (k + 1) * blk]) for k in range(count)]

    er, ee = env(ref, i0, n), env(echo, i0 - lags * blk, n + 2 * lags)
    mean = sum(er) / n
    er = [v - mean for v in er]
    # Normalised per lag: speech's envelope rises and falls over the span.
    s1, s2 = [0.0], [0.0]
    for v in ee:
        s1.append(s1[-1] + v)
        s2.append(s2[-1] + v * v)

    def ncc(L):
        spread = s2[L + n] - s2[L] - (s1[L + n] - s1[L]) ** 2 / n
        return sum(a * b for a, b in zip(er, ee[L:L + n])) / math.sqrt(max(spread, 1e-9))

    coarse = max(range(2 * lags), key=ncc) - lags
    # The samples around it, from the loudest 0.1 s of the span (speech
    # pauses say nothing), within 10 ms: speech's envelope is broad.
    piece, reach = R // 10 // blk, 10
    start = i0 + blk * max(range(n - piece + 1), key=lambda k: sum(er[k:k + piece]))
    seg = ref[start:start + piece * blk]

    def corr(lag):
        return sum(a * b for a, b in zip(seg, echo[start + lag:start + lag + len(seg)]))

    fine = max(range(max(-start, (coarse - reach) * blk), (coarse + reach + 1) * blk), key=corr)
    other = echo[start + fine:start + fine + len(seg)]
    norm = math.sqrt(sum(v * v for v in seg) * sum(v * v for v in other)) or 1
    return fine, corr(fine) / norm


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[4] if len(sys.argv) > 4 else "tone", *map(float, sys.argv[5:6]))
    elif sys.argv[1] == "relay":
        given = sys.argv[3:5]
        relay(float(sys.argv[2]), *map(int, given + ["30", "20"][len(given):]))
    elif sys.argv[1] == "delay":
        ref, echo = raw(sys.argv[2]), raw(sys.argv[3])
        for t in sys.argv[4:]:
            lag, c = delay(ref, echo, float(t))
            print(f"{t} s: {lag / R * 1000:.2f} ms (correlation {c:.2f})")
    else:
        for p in sys.argv[2:]:
            print(profile(p))
