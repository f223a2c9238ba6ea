"""Signals and a level profile for benches/echo.sh (standard library only).

  python3 echo_signals.py gen DIR [--near tone|speech]   far.wav, near.wav, mic.wav (48 kHz mono S16)
  python3 echo_signals.py profile FILE...                 dBFS per 0.5 s

Timeline as tests/audio.rs: far end 1-12 s (noise, ~-22 dBFS, or speech from
alsa-utils' /usr/share/sounds/alsa), near end 8-12 s (700 Hz at -21 dBFS, or
other speech at -21 dBFS active level).
"""
import array
import math
import sys
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


def gen(out, near_kind):
    n = int(12.5 * R)
    far = [0.0] * R + noise(11 * R) + [0.0] * (n - 12 * R)
    near = [0.0] * n
    if near_kind == "speech":
        near[8 * R:12 * R] = speech(["Front_Center", "Rear_Center", "Side_Left", "Side_Right"], 4 * R, -21)
    else:
        amp = 32768 * 10 ** (-21 / 20) * math.sqrt(2)
        near[8 * R:12 * R] = [amp * math.sin(2 * math.pi * 700 * j / R) for j in range(4 * R)]
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


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[4] if len(sys.argv) > 4 else "tone")
    else:
        for p in sys.argv[2:]:
            print(profile(p))
