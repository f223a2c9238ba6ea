//! Two-way audio with real parts: a far-end voice (a plain-RTP participant)
//! goes into a real Janus room, Janus forwards the mix to the agent, the
//! agent plays it on a PulseAudio null sink (`speaker`); an echo path
//! carries it to a second null sink (`echo`) where a near-end voice joins
//! it, and the agent's microphone records that sink's monitor. What the
//! agent sends is read back from its own recording, decoded, and measured.
//!
//! The echo path is PulseAudio's module-loopback (40 ms, −6 dB), or, for
//! clock drift, a relay (`benches/echo_signals.py relay`) that resamples
//! the echo by 1 + 100·10⁻⁶, so that its delay grows by 0.1 ms a second.
//! Both sides' delay is measured from outside, by cross-correlating the two
//! sinks' monitors.
//!
//! The far end is speech (alsa-utils' samples), then noise, then speech
//! again; the near end is speech (other words; noise suppression and gain
//! control are off). Timeline:
//!
//! ```text
//! 0.0–0.3 s    near-end marker (1 kHz), to line up what is sent
//! 1.0–8.0 s    far end alone (speech; `ECHO_FAR=noise`: broadband noise)
//! 8.0–12.0 s   near end (speech) against far-end noise: double talk
//! 12.0–16.0 s  near end (speech) against far-end speech: double talk
//! ```
//!
//! `ECHO_FAR=noise` makes the far end talk alone in a steady broadband
//! noise at the same level, the hardest case for the canceller
//! (docs/measurements/echo-and-talk-back.md); `ECHO_FAR_SECONDS` lengthens that part (the long form in
//! docs/measurements/echo-and-talk-back.md); the drift run's is [`DRIFT_ALONE`] s, its
//! drift `ECHO_DRIFT_PPM` (default 100). Runs: cancellation off, on, the
//! near end alone (no far end: the reference for its level), ~70 s; the
//! drift test (ignored: the long form) off, then on with drift, ~2 minutes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::janus::{Janus, Probe};
use common::pulse::{Pulse, RATE};
use common::{ports, repo, scratch, wait_for, Agent};

const SECRET: &str = "audio-secret";
const MARKER_HZ: f64 = 1000.0;
/// Seconds into the timeline.
const FAR_START: f64 = 1.0;
/// How long the far end talks alone, by default.
const FAR_ALONE: f64 = 7.0;
/// How long the far end talks alone in the drift run: 100 ppm drift moves
/// the echo by 6 ms in that time (the canceller lost a digital echo path
/// after ~1 ms, docs/measurements/echo-and-talk-back.md).
const DRIFT_ALONE: f64 = 60.0;
/// Each of the two double-talk parts (against far-end noise, then speech).
const DOUBLE_TALK: f64 = 4.0;
/// The clock drift of the drift run's echo path; `ECHO_DRIFT_PPM` overrides
/// it (−100: the echo's delay shrinks).
const DRIFT_PPM: i32 = 100;
/// Active speech levels (dBFS): the far end's noise is at about −22 dBFS.
const FAR_SPEECH_DB: f64 = -22.0;
const NEAR_SPEECH_DB: f64 = -21.0;
/// A 20 ms frame of the near end alone above this level (dBFS) is active
/// speech; the near end's level is measured over these frames only.
const ACTIVE_DB: f64 = -50.0;
/// alsa-utils' recordings (one voice saying channel names, 48 kHz mono).
const SOUNDS: &str = "/usr/share/sounds/alsa";
const FAR_WORDS: [&str; 4] = ["Front_Left", "Rear_Right", "Front_Right", "Rear_Left"];
const NEAR_WORDS: [&str; 4] = ["Front_Center", "Rear_Center", "Side_Left", "Side_Right"];
/// `microphone.echo_delay_ms` the agent starts from in this rig, before it
/// follows the echo: PulseAudio's loopback (40 ms) and its null sinks' and
/// monitors' buffers, which the speaker's sound card (ALSA `pulse`) does not
/// report, delay the echo by 51–89 ms more than the speaker pipeline
/// accounts for (what the agent reported in 12 runs with a speech far end;
/// less when another test runs beside it). From 50 the echo starts inside
/// the canceller's reach (a few to ~45 ms after the reference); from 80 it
/// started outside in runs beside another test, and the first 2 s went by
/// before the reference was moved onto it (ERLE 18.9 and 22.6 dB). From a
/// cold start (`echo_delay_ms = 0`) finding the echo is the follower's test.
/// `ECHO_DELAY_MS` overrides it.
const RIG_ECHO_DELAY_MS: &str = "50";
/// The drift relay's buffer (pacat's latency) and the silence it starts
/// with (its reserve when the echo's delay shrinks): about the loopback's
/// 40 ms and more, so the same `echo_delay_ms` is meant to fit both (not
/// measured: the monitors' recordings give the delay's change exactly, but
/// its absolute value only up to their unknown start offset).
const RELAY_ARGS: [&str; 2] = ["30", "20"];

/// A number from the environment variable `name`, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A deterministic noise source (xorshift), low-passed a little: broadband
/// like speech, about −22 dBFS.
fn far_signal(seconds: f64) -> Vec<i16> {
    let n = (seconds * f64::from(RATE)) as usize;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut smooth = 0.0f64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let white = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            smooth = 0.6 * smooth + 0.4 * white;
            (smooth * 9000.0) as i16
        })
        .collect()
}

fn tone(frequency: f64, seconds: f64, amplitude: f64) -> Vec<i16> {
    let n = (seconds * f64::from(RATE)) as usize;
    let w = 2.0 * std::f64::consts::PI * frequency / f64::from(RATE);
    (0..n)
        .map(|i| (amplitude * (w * i as f64).sin()) as i16)
        .collect()
}

/// The samples of one of alsa-utils' recordings (a canonical WAV file:
/// its `data` chunk, S16LE).
fn sound(name: &str) -> Vec<i16> {
    let path = Path::new(SOUNDS).join(format!("{name}.wav"));
    let bytes = fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (apt-get install alsa-utils)", path.display()));
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .unwrap_or_else(|| panic!("{}: no data chunk", path.display()));
    bytes[data + 8..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Energy per 20 ms frame.
fn frame_energies(samples: &[i16]) -> Vec<f64> {
    samples.chunks(RATE as usize / 50).map(energy).collect()
}

/// Whether a frame of this energy is active speech ([`ACTIVE_DB`]).
fn active(frame_energy: f64) -> bool {
    db(frame_energy / 32768f64.powi(2)) > ACTIVE_DB
}

/// `words` one after another (0.15 s apart), `seconds` long, scaled to the
/// active speech level `level_db` (dBFS, over the frames that are active).
fn speech(words: &[&str], seconds: f64, level_db: f64) -> Vec<i16> {
    let n = (seconds * f64::from(RATE)) as usize;
    let gap = vec![0i16; RATE as usize * 15 / 100];
    let raw: Vec<i16> = words
        .iter()
        .flat_map(|w| sound(w).into_iter().chain(gap.iter().copied()))
        .cycle()
        .take(n)
        .collect();
    let frames: Vec<f64> = frame_energies(&raw)
        .into_iter()
        .filter(|&e| active(e))
        .collect();
    let level = frames.iter().sum::<f64>() / frames.len().max(1) as f64;
    let gain = 10f64.powf(level_db / 20.0) * 32768.0 / level.sqrt();
    raw.iter().map(|&x| (f64::from(x) * gain) as i16).collect()
}

/// What the far end says while it talks alone.
#[derive(Debug, Clone, Copy)]
enum Far {
    Speech,
    /// [`far_signal`]: steady, the same in any 0.5 s.
    Noise,
}

impl Far {
    /// `ECHO_FAR=noise` or speech.
    fn from_env() -> Self {
        match std::env::var("ECHO_FAR").as_deref() {
            Ok("noise") => Far::Noise,
            _ => Far::Speech,
        }
    }
}

/// The two signals of the timeline, as (far end, near end), 48 kHz mono,
/// with `alone` seconds of far end alone; without `far`, the far end is
/// silent (the near end alone, the reference for its level).
fn timeline(alone: f64, far: Option<Far>) -> (Vec<i16>, Vec<i16>) {
    let at = |t: f64| (t * f64::from(RATE)) as usize;
    let talk = FAR_START + alone;
    let end = talk + 2.0 * DOUBLE_TALK;
    let mut far_end = vec![0i16; at(end + 0.5)];
    let mut near = far_end.clone();
    if let Some(far) = far {
        let noise = far_signal(talk + DOUBLE_TALK - FAR_START);
        far_end[at(FAR_START)..at(FAR_START) + noise.len()].copy_from_slice(&noise);
        if let Far::Speech = far {
            let words = speech(&FAR_WORDS, alone, FAR_SPEECH_DB);
            far_end[at(FAR_START)..at(FAR_START) + words.len()].copy_from_slice(&words);
        }
        let words = speech(&FAR_WORDS, DOUBLE_TALK, FAR_SPEECH_DB);
        let from = at(talk + DOUBLE_TALK);
        far_end[from..from + words.len()].copy_from_slice(&words);
    }
    let marker = tone(MARKER_HZ, 0.3, 6000.0);
    near[..marker.len()].copy_from_slice(&marker);
    let words = speech(&NEAR_WORDS, 2.0 * DOUBLE_TALK, NEAR_SPEECH_DB);
    near[at(talk)..at(talk) + words.len()].copy_from_slice(&words);
    (far_end, near)
}

fn write_raw(path: &Path, samples: &[i16]) {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    fs::write(path, bytes).expect("write raw audio");
}

fn read_raw(path: &Path) -> Vec<i16> {
    fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn pactl(pulse: &Pulse, args: &[&str]) -> String {
    let out = Command::new("pactl")
        .args(["-s", &pulse.server()])
        .args(args)
        .output()
        .expect("run pactl");
    assert!(out.status.success(), "pactl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives the PulseAudio server real-time priority, as its sinks' threads
/// have already: its main thread carries every client's audio (the agent's,
/// the relay's), and on this loaded 2-core machine it otherwise waits up to
/// ~140 ms for a core, which a relay with a short buffer cannot bridge.
fn realtime(pulse: &Pulse) {
    let server = pulse.server();
    let dir = server
        .trim_start_matches("unix:")
        .trim_end_matches("/native");
    let pid = fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .find(|e| {
            fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("pulseaudio") && c.contains(dir)
            })
        })
        .expect("the test's PulseAudio process")
        .file_name();
    let pid = pid.to_string_lossy();
    let ok = Command::new("chrt")
        .args(["-a", "-r", "-p", "5", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chrt -a -r -p 5 {pid} (needs root or CAP_SYS_NICE)");
}

/// The echo path from `speaker`'s monitor into the null sink `echo` (−6 dB):
/// module-loopback (40 ms), or with `drift_ppm`, the relay of
/// `benches/echo_signals.py` at real-time priority, whose process is
/// returned. (module-loopback's `rate` cannot make drift: it sets both of
/// its streams' rates and both null sinks run from one clock.)
fn echo_path(pulse: &Pulse, drift_ppm: Option<i32>, dir: &Path) -> Option<Child> {
    pactl(
        pulse,
        &[
            "load-module",
            "module-null-sink",
            "sink_name=echo",
            &format!("rate={RATE}"),
            "channels=1",
        ],
    );
    if let Some(ppm) = drift_ppm {
        let script = repo().join("benches/echo_signals.py");
        let log = fs::File::create(dir.join("relay.log")).expect("relay log");
        let relay = Command::new("chrt")
            .args(["-r", "5", "python3"])
            .arg(script)
            .args(["relay", &ppm.to_string()])
            .args(RELAY_ARGS)
            .env("PULSE_SERVER", pulse.server())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the relay (chrt, python3)");
        return Some(relay);
    }
    loopback(pulse, 40);
    None
}

/// A module-loopback `latency_ms` long from `speaker`'s monitor into `echo`,
/// at −6 dB.
fn loopback(pulse: &Pulse, latency_ms: u32) {
    let latency = format!("latency_msec={latency_ms}");
    pactl(
        pulse,
        &[
            "load-module",
            "module-loopback",
            "source=speaker.monitor",
            "sink=echo",
            &latency,
            "channels=1",
        ],
    );
    let index = loopback_index(pulse, "sink-inputs");
    // −6 dB: half the amplitude (a linear factor).
    pactl(pulse, &["set-sink-input-volume", &index, "0.501"]);
}
/// The agent: speaker on `speaker`, microphone on `echo`'s monitor,
/// recording what it sends.
fn agent(
    janus: &Janus,
    pulse: &Pulse,
    room: u64,
    dir: &Path,
    (echo_cancel, echo_delay): (bool, &str),
) -> Agent {
    let base = ports(4);
    let sections = common::Extra {
        room: "allow_rtp_participants = true",
        ..common::Extra::default()
    };
    let config = format!(
        r#"{head}
[speaker]
port = {speaker}
device = "pulse"
[video]
source = "none"
[microphone]
device = "pulse"
echo_cancel = {echo_cancel}
echo_delay_ms = {echo_delay}
noise_suppression = false
gain_control = false
[recording]
enabled = true
dir = "{dir}"
segment_s = 600
"#,
        head = common::config_head(&janus.url(), room, SECRET, base, sections),
        speaker = base + 3,
        dir = dir.display(),
    );
    let server = pulse.server();
    Agent::start_with(
        &config,
        &[
            ("PULSE_SERVER", server.as_str()),
            ("PULSE_SOURCE", "echo.monitor"),
        ],
    )
}

/// Plays the timeline: the far end as a plain-RTP participant of `room`
/// (Opus, 20 ms frames), the near end into the `echo` sink.
struct Talk(Vec<Child>);

impl Talk {
    fn start(
        pulse: &Pulse,
        probe: &Probe,
        room: u64,
        dir: &Path,
        signals: (Vec<i16>, Vec<i16>),
    ) -> Self {
        let (far_path, near_path) = (dir.join("far.raw"), dir.join("near.raw"));
        write_raw(&far_path, &signals.0);
        write_raw(&near_path, &signals.1);
        let local = ports(1);
        let janus_port = probe.join_rtp(room, local);
        let caps = format!("audio/x-raw,format=S16LE,layout=interleaved,rate={RATE},channels=1");
        let sender = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(["filesrc", &format!("location={}", far_path.display())])
            .args(["!", "rawaudioparse", "use-sink-caps=false", "format=pcm"])
            .args([
                "pcm-format=s16le",
                &format!("sample-rate={RATE}"),
                "num-channels=1",
            ])
            .args(["!", &caps, "!", "opusenc", "frame-size=20"])
            .args([
                "!",
                "rtpopuspay",
                "pt=111",
                "!",
                "udpsink",
                "host=127.0.0.1",
            ])
            .arg(format!("port={janus_port}"))
            .arg(format!("bind-port={local}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gst-launch-1.0");
        // At real-time priority with a long buffer: a stall of the player
        // between the marker and the near end's words would move them
        // apart. (They did come apart at load average 8-12, by +1 s and
        // -0.5 s; the latter, at least, is audio the agent's microphone lost.)
        let player = Command::new("chrt")
            .args([
                "-r",
                "5",
                "pacat",
                "-s",
                &pulse.server(),
                "-d",
                "echo",
                "--raw",
                "--format=s16le",
            ])
            .args([
                &format!("--rate={RATE}"),
                "--channels=1",
                "--latency-msec=100",
            ])
            .arg(&near_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pacat (chrt)");
        Self(vec![sender, player])
    }

    /// Waits (bounded) until both have played everything.
    fn finish(mut self, timeout: Duration) {
        for child in &mut self.0 {
            wait_for(timeout, "the timeline to be played", || {
                child.try_wait().ok().flatten()
            });
        }
    }
}

impl Drop for Talk {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Records both ends of the echo path (`speaker.raw`, `echo.raw` in `dir`),
/// to measure its delay; they stop when the result is dropped.
fn record_monitors(pulse: &Pulse, dir: &Path) -> Talk {
    let record = |sink: &str| {
        let file = fs::File::create(dir.join(format!("{sink}.raw"))).expect("monitor file");
        Command::new("parec")
            .args(["-s", &pulse.server(), "-d", &format!("{sink}.monitor")])
            .args(["--raw", "--format=s16le", &format!("--rate={RATE}")])
            .args(["--channels=1", "--latency-msec=10"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("start parec")
    };
    Talk(vec![record("speaker"), record("echo")])
}

/// The echo path's delay (ms) at `times` (s into the recordings of
/// [`record_monitors`]), by cross-correlation (`benches/echo_signals.py
/// delay`). Each recording is sample-exact, so the delay's change is; its
/// value also holds the offset between the two recordings' starts (a few ms
/// to tens of ms: their streams start in different sinks' periods).
fn echo_path_delays(dir: &Path, times: &[f64]) -> Vec<f64> {
    let out = Command::new("python3")
        .arg(repo().join("benches/echo_signals.py"))
        .arg("delay")
        .args([dir.join("speaker.raw"), dir.join("echo.raw")])
        .args(times.iter().map(|t| format!("{t:.2}")))
        .output()
        .expect("run python3");
    assert!(out.status.success(), "echo_signals.py delay: {out:?}");
    // "T s: D ms (correlation C)"
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect()
}
/// The agent's recording, decoded to 48 kHz mono.
fn decode(dir: &Path) -> Vec<i16> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("recording dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "mkv"))
        .collect();
    files.sort();
    let file = files.first().expect("a recorded segment");
    let raw = dir.join("decoded.raw");
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(["filesrc", &format!("location={}", file.display())])
        .args(["!", "matroskademux", "!", "opusdec", "!", "audioconvert"])
        .args(["!", "audioresample", "!"])
        .arg(format!("audio/x-raw,format=S16LE,rate={RATE},channels=1"))
        .args(["!", "filesink", &format!("location={}", raw.display())])
        .status()
        .expect("run gst-launch-1.0");
    assert!(status.success(), "decoding {}", file.display());
    read_raw(&raw)
}

/// Amplitude of the `frequency` component of `samples` (Goertzel).
fn tone_amplitude(samples: &[i16], frequency: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * frequency / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / samples.len().max(1) as f64
}

fn energy(samples: &[i16]) -> f64 {
    samples.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / samples.len().max(1) as f64
}

fn window(samples: &[i16], from: f64, seconds: f64) -> &[i16] {
    let at = |t: f64| ((t.max(0.0) * f64::from(RATE)) as usize).min(samples.len());
    &samples[at(from)..at(from + seconds)]
}

/// Where (s) the 1 kHz marker starts in what was sent (to 1 ms).
fn marker(samples: &[i16]) -> f64 {
    let step = RATE as usize / 1000;
    (0..samples.len() / step)
        .map(|i| i as f64 / 1000.0)
        .find(|&t| tone_amplitude(window(samples, t, 0.02), MARKER_HZ) > 2000.0)
        .expect("the near-end marker in what the agent sent")
}

/// Where (s) the far end (or its echo) starts after `from`: the first 20 ms
/// louder than −40 dBFS.
fn far_onset(samples: &[i16], from: f64) -> f64 {
    let step = RATE as usize / 100;
    (0..samples.len() / step)
        .map(|i| i as f64 / 100.0)
        .filter(|&t| t > from)
        .find(|&t| energy(window(samples, t, 0.02)) > 330.0f64.powi(2))
        .expect("the far end (in what the agent sent: echo cancellation off)")
}

/// Stops the agent: SIGTERM finishes its recording. ALSA's `pulse` plugin
/// can hang a capture stream's shutdown (in `snd_pcm_prepare`, waiting on
/// PulseAudio) after an overrun; then what is recorded so far is read as it is.
fn stop(agent: &mut Agent) {
    agent.signal("TERM");
    for _ in 0..100 {
        if !agent.is_running() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.signal("KILL");
    agent.wait(Duration::from_secs(5));
}

/// One run of the timeline.
#[derive(Debug, Clone, Copy)]
struct Case {
    echo_cancel: bool,
    /// Without the far end, the near end is alone: its level's reference.
    far: bool,
    /// A relay with this clock drift as the echo path, not module-loopback.
    drift_ppm: Option<i32>,
    /// Seconds the far end talks alone.
    alone: f64,
}

/// One run's measurements.
#[derive(Debug, Clone)]
struct Run {
    /// Energy of what was sent while only the far end talked, from 2 s after
    /// its echo began.
    far_energy: f64,
    /// The same in the last [`TAIL`] s of it.
    tail_energy: f64,
    /// What was sent during the two double-talk parts.
    double_talk: Vec<i16>,
    /// When the far end's echo began, relative to the marker (s).
    far_delay: f64,
    /// The echo path's delay (ms) [`PATH_FROM`] s after the far end began,
    /// half-way and 1.5 s before it is joined by the near end.
    path_delays: Vec<f64>,
}

/// When (s after the far end began on the speaker) the echo path's delay
/// is first measured. (At 0.5 s, 2 of 5 drift runs read a false peak,
/// −312 and 600 ms, where 1.5 s and 29 s later gave 0.1 ms/s exactly.)
const PATH_FROM: f64 = 2.0;

/// The last part of the far-end-only time, in seconds, where the echo's
/// residue shows whether the canceller kept up with a drifting echo.
const TAIL: f64 = 5.0;

/// Runs the timeline through an agent; `far_delay` (from a run without
/// cancellation) says where the echo begins when it cannot be seen.
fn run(case: Case, far_delay: Option<f64>) -> Run {
    let janus = Janus::start();
    let pulse = Pulse::start();
    realtime(&pulse);
    let work = scratch();
    let relay = echo_path(&pulse, case.drift_ppm, work.path());
    let recordings = work.path().join("rec");
    let echo_delay = std::env::var("ECHO_DELAY_MS").unwrap_or_else(|_| RIG_ECHO_DELAY_MS.into());
    let mut agent = agent(
        &janus,
        &pulse,
        300,
        &recordings,
        (case.echo_cancel, &echo_delay),
    );
    let probe = janus.probe();
    agent.wait_log(Duration::from_secs(10), "speaker pipeline: running");
    agent.wait_log(Duration::from_secs(10), "microphone pipeline: running");
    wait_for(Duration::from_secs(5), "the forwarder", || {
        (!probe.forwarders(300, SECRET).is_empty()).then_some(())
    });
    let monitors = record_monitors(&pulse, work.path());
    let talk = Talk::start(
        &pulse,
        &probe,
        300,
        work.path(),
        timeline(case.alone, case.far.then(Far::from_env)),
    );
    talk.finish(Duration::from_secs_f64(
        FAR_START + case.alone + 2.0 * DOUBLE_TALK + 20.0,
    ));
    // The echo of the last far-end words is still on its way.
    std::thread::sleep(Duration::from_secs(1));
    for line in agent.log().lines().filter(|l| l.contains("echo:")) {
        println!("  agent: {line}");
    }
    stop(&mut agent);
    drop(monitors);
    if let Some(mut relay) = relay {
        common::signal(relay.id(), "TERM");
        let _ = relay.wait();
        let log = fs::read_to_string(work.path().join("relay.log")).unwrap_or_default();
        println!("{}", log.trim());
    }
    let sent = decode(&recordings);
    let start = marker(&sent);
    println!(
        "{case:?}: dBFS per 0.5 s from the marker: {}",
        profile(window(&sent, start, f64::INFINITY))
    );
    let far_delay = far_delay.unwrap_or_else(|| far_onset(&sent, start + 0.5) - start);
    let measured_from = start + far_delay + 2.0;
    let talk_from = start + FAR_START + case.alone;
    let path_delays = if case.far {
        let onset = far_onset(&read_raw(&work.path().join("speaker.raw")), 0.0);
        let times = [PATH_FROM, case.alone / 2.0, case.alone - 1.5].map(|t| onset + t);
        echo_path_delays(work.path(), &times)
    } else {
        Vec::new()
    };
    Run {
        far_energy: energy(window(&sent, measured_from, talk_from - measured_from)),
        tail_energy: energy(window(&sent, talk_from - TAIL, TAIL)),
        double_talk: window(&sent, talk_from, 2.0 * DOUBLE_TALK).to_vec(),
        far_delay,
        path_delays,
    }
}

/// What was sent, as dBFS per 0.5 s: how the echo fades while the
/// canceller converges.
fn profile(samples: &[i16]) -> String {
    samples
        .chunks(RATE as usize / 2)
        .map(|c| format!("{:.0}", db(energy(c).max(1.0) / 32768f64.powi(2))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// How much louder (dB) the near end is in `sent` than alone (`alone`, a
/// run without the far end) in double-talk part `part` (0: against noise,
/// 1: against speech): energy over the same 20 ms frames, those where the
/// near end alone is active speech (it pauses between words).
fn near_change(alone: &Run, sent: &Run, part: usize) -> f64 {
    let part_of = |run: &Run| {
        let n = (DOUBLE_TALK * f64::from(RATE)) as usize;
        let from = (part * n).min(run.double_talk.len());
        frame_energies(&run.double_talk[from..(from + n).min(run.double_talk.len())])
    };
    let (reference, measured) = (part_of(alone), part_of(sent));
    let (mut near, mut with) = (0.0, 0.0);
    for (r, m) in reference.iter().zip(&measured) {
        if active(*r) {
            near += r;
            with += m;
        }
    }
    db(with / near.max(1.0))
}

/// One echo rig at a time, on a machine kept quiet while it measures: each
/// rig gives its PulseAudio (and the relay) real-time priority, and two side
/// by side on 2 cores moved each other's echo (82, 59, 69 ms within 5 s in
/// one run); three short tests starting their Janus and agent beside one
/// moved it from 89 to 49 ms and left 19.8 dB of ERLE (CI, 2026-12-07).
/// An echo rig holds [`MACHINE`] alone; the short tests share it.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Holds [`MACHINE`] alone for an echo rig (a failed test's poison is no
/// matter: the rig is made afresh).
fn one_rig() -> std::sync::RwLockWriteGuard<'static, ()> {
    MACHINE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Holds [`MACHINE`] beside the other short tests, never beside a rig.
fn no_rig() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A run of the timeline: cancellation on or off, the far end talking or
/// not, through module-loopback or a relay drifting by `drift_ppm`.
fn case(echo_cancel: bool, far: bool, drift_ppm: Option<i32>, alone: f64) -> Case {
    Case {
        echo_cancel,
        far,
        drift_ppm,
        alone,
    }
}

fn erle(off: &Run, on: &Run) -> f64 {
    db(off.far_energy / on.far_energy.max(1.0))
}

fn erle_tail(off: &Run, on: &Run) -> f64 {
    db(off.tail_energy / on.tail_energy.max(1.0))
}

fn dbfs(energy: f64) -> f64 {
    db(energy.max(1.0) / 32768f64.powi(2))
}

/// The speaker's sound comes back through the echo path; with echo
/// cancellation what the agent sends holds ≥ 25 dB less of it (from 2 s
/// on), and the near end (speech) keeps its level within 3 dB of its level
/// alone while both talk (speech). About 70 s.
#[test]
fn echo_is_cancelled_and_the_near_end_kept() {
    let _rig = one_rig();
    let alone = env_or("ECHO_FAR_SECONDS", FAR_ALONE);
    let off = run(case(false, true, None, alone), None);
    let on = run(case(true, true, None, alone), Some(off.far_delay));
    let near_alone = run(case(false, false, None, alone), Some(off.far_delay));
    println!(
        "echo path delay (marker to echo) {:.0} ms; far-end energy in what is sent: off {:.1} dBFS, \
         on {:.1} dBFS; ERLE {:.1} dB (last {TAIL} s {:.1} dB)",
        off.far_delay * 1000.0,
        dbfs(off.far_energy),
        dbfs(on.far_energy),
        erle(&off, &on),
        erle_tail(&off, &on),
    );
    println!(
        "near end in double talk, vs alone: off {:+.1} / {:+.1} dB, on {:+.1} / {:+.1} dB \
         (against far-end noise / speech)",
        near_change(&near_alone, &off, 0),
        near_change(&near_alone, &off, 1),
        near_change(&near_alone, &on, 0),
        near_change(&near_alone, &on, 1),
    );
    println!(
        "echo path delay (ms, from the monitors): off {:.1?}, on {:.1?}",
        off.path_delays, on.path_delays,
    );
    assert!(
        dbfs(off.far_energy) > -40.0,
        "without cancellation the echo is heard"
    );
    // The echo only adds to the near end: less means the runs' near ends
    // are not lined up (a player that stalled, audio the microphone lost).
    let lined_up = near_change(&near_alone, &off, 1);
    assert!(
        lined_up > -0.5,
        "near end without cancellation {lined_up:+.1} dB"
    );
    let (erle, near) = (erle(&off, &on), near_change(&near_alone, &on, 1));
    assert!(erle >= 25.0, "ERLE {erle:.1} dB < 25 dB");
    assert!(near.abs() <= 3.0, "near end changed by {near:+.1} dB");
}

/// With 100 ppm of clock drift in the echo path (a relay, not
/// module-loopback) cancellation still takes ≥ 20 dB off the echo over a
/// minute. The long form: the relay (Python at real-time priority) underran
/// in one run of five on an idle machine, which the rig's own check fails.
#[test]
#[ignore = "long form (2 min): a minute of far end through a drifting relay, docs/measurements/echo-and-talk-back.md"]
fn echo_is_cancelled_under_clock_drift() {
    let _rig = one_rig();
    let off = run(case(false, true, None, FAR_ALONE), None);
    let ppm = env_or("ECHO_DRIFT_PPM", DRIFT_PPM);
    let drift = run(
        case(true, true, Some(ppm), DRIFT_ALONE),
        Some(off.far_delay),
    );
    println!(
        "with {ppm:+} ppm drift over {DRIFT_ALONE} s: ERLE {:.1} dB (last {TAIL} s {:.1} dB); \
         echo path delay (ms, from the monitors) {:.1?}",
        erle(&off, &drift),
        erle_tail(&off, &drift),
        drift.path_delays,
    );
    let drifted = drift.path_delays.last().unwrap_or(&0.0) - drift.path_delays[0];
    let expected = f64::from(ppm) * 1e-6 * (DRIFT_ALONE - 1.5 - PATH_FROM) * 1000.0;
    assert!(
        (drifted - expected).abs() < 2.0,
        "the echo path drifted {drifted:.1} ms, not {expected:.1} ms"
    );
    let erle_drift = erle(&off, &drift);
    assert!(
        erle_drift >= 20.0,
        "ERLE with drift {erle_drift:.1} dB < 20 dB"
    );
}

/// One pipeline's entry in `status --json`, once `ready` says it is there.
fn pipeline_status(
    agent: &Agent,
    name: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(Duration::from_secs(20), name, || {
        let status = agent.status_json();
        status["pipelines"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name && ready(p))
            .cloned()
    })
}

/// A folder of the system's GStreamer plugins without `webrtcdsp`'s, as a
/// machine without gstreamer1.0-plugins-bad's voice processing has them.
fn plugins_without_webrtcdsp(dir: &Path) -> PathBuf {
    let system = Command::new("pkg-config")
        .args(["--variable=pluginsdir", "gstreamer-1.0"])
        .output()
        .expect("run pkg-config");
    let system = PathBuf::from(String::from_utf8_lossy(&system.stdout).trim());
    let plugins = dir.join("plugins");
    fs::create_dir_all(&plugins).expect("plugin folder");
    for entry in fs::read_dir(&system)
        .expect("the system's plugins")
        .flatten()
    {
        if entry.file_name() != "libgstwebrtcdsp.so" {
            std::os::unix::fs::symlink(entry.path(), plugins.join(entry.file_name()))
                .expect("link a plugin");
        }
    }
    plugins
}

/// Without `webrtcdsp` the microphone runs unprocessed and `status --json`
/// says what it runs without and which package brings it.
#[test]
fn without_webrtcdsp_the_microphone_runs_and_says_so() {
    let _machine = no_rig();
    let janus = Janus::start();
    let work = scratch();
    let plugins = plugins_without_webrtcdsp(work.path());
    let registry = work.path().join("registry.bin");
    let config = format!(
        "{}\n[speaker]\nenabled = false\n[video]\nsource = \"none\"\n\
         [microphone]\ndevice = \"test\"\necho_cancel = true\n",
        common::config_head(
            &janus.url(),
            330,
            SECRET,
            ports(3),
            common::Extra::default()
        )
    );
    let plugins = plugins.to_str().expect("utf-8 path");
    let registry = registry.to_str().expect("utf-8 path");
    let agent = Agent::start_with(
        &config,
        &[
            ("GST_PLUGIN_SYSTEM_PATH_1_0", plugins),
            ("GST_PLUGIN_SYSTEM_PATH", plugins),
            ("GST_PLUGIN_PATH_1_0", ""),
            ("GST_PLUGIN_PATH", ""),
            ("GST_REGISTRY_1_0", registry),
            ("GST_REGISTRY", registry),
        ],
    );
    let mic = pipeline_status(&agent, "microphone", |p| p["state"] == "running");
    let without = mic["without"].as_str().unwrap_or_default();
    assert!(
        without.contains("webrtcdsp is missing (install gstreamer1.0-plugins-bad)"),
        "{mic}"
    );
    assert!(
        agent
            .status_text()
            .contains("running without echo cancellation"),
        "{}",
        agent.status_text()
    );
}

/// Talk-back packets lost on the way (sent straight to the speaker's port
/// with every fifth one left out) are concealed and counted in
/// `status --json`.
#[test]
fn lost_talk_back_packets_are_concealed_and_counted() {
    let _machine = no_rig();
    let janus = Janus::start();
    let pulse = Pulse::start();
    let base = ports(4);
    let speaker_port = base + 3;
    let config = format!(
        "{}\n[speaker]\ndevice = \"pulse\"\nhost = \"127.0.0.1\"\nport = {speaker_port}\n\
         [video]\nsource = \"none\"\n[microphone]\nenabled = false\n",
        common::config_head(&janus.url(), 331, SECRET, base, common::Extra::default())
    );
    let agent = Agent::start_with(&config, &[("PULSE_SERVER", &pulse.server())]);
    agent.wait_log(Duration::from_secs(15), "speaker pipeline: running");
    // 20 ms Opus frames from Janus's address; `identity` drops a fifth of
    // the packets at random.
    let sender = Command::new("gst-launch-1.0")
        .arg("-q")
        .args([
            "audiotestsrc",
            "is-live=true",
            "freq=300",
            "samplesperbuffer=960",
        ])
        .args([
            "!",
            "audio/x-raw,rate=48000,channels=1",
            "!",
            "opusenc",
            "frame-size=20",
        ])
        .args([
            "!",
            "rtpopuspay",
            "pt=100",
            "!",
            "identity",
            "drop-probability=0.2",
        ])
        .args(["!", "udpsink", "host=127.0.0.1"])
        .arg(format!("port={speaker_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gst-launch-1.0");
    let _sender = Talk(vec![sender]);
    let speaker = pipeline_status(&agent, "speaker", |p| {
        p["playout"]["concealed"].as_u64().unwrap_or(0) >= 10
    });
    let playout = &speaker["playout"];
    assert!(playout["late"].as_u64().is_some(), "{speaker}");
    assert!(playout["underruns"].as_u64().is_some(), "{speaker}");
}

/// The index of module-loopback's entry in `pactl list short <what>`
/// (`modules`, `sink-inputs`).
fn loopback_index(pulse: &Pulse, what: &str) -> String {
    pactl(pulse, &["list", "short", what])
        .lines()
        .find(|l| l.contains("module-loopback"))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("module-loopback in pactl list short {what}"))
}

/// The module-loopback of [`echo_path`], replaced by one `latency_ms` long.
fn lengthen_echo_path(pulse: &Pulse, latency_ms: u32) {
    let index = loopback_index(pulse, "modules");
    pactl(pulse, &["unload-module", &index]);
    loopback(pulse, latency_ms);
}

/// Where the echo is, as the microphone's `status --json` says, once it
/// has been heard and `ready` holds (within 15 s): (heard_ms, shift_ms).
fn echo_heard(agent: &Agent, ready: impl Fn(u64) -> bool) -> Option<(u64, u64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let status = agent.status_json();
        let mic = status["pipelines"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "microphone"));
        let echo = mic.map(|m| &m["echo"]);
        if let Some((Some(heard), Some(shift))) =
            echo.map(|e| (e["heard_ms"].as_u64(), e["shift_ms"].as_u64()))
        {
            if ready(heard) {
                return Some((heard, shift));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The canceller only reaches echoes a few to ~45 ms after where the
/// speaker pipeline says a sample is played; the agent finds where the echo
/// really is (`echo_delay_auto`) and moves its reference there, and follows
/// when the echo path changes: here it grows by 100 ms.
#[test]
fn the_canceller_finds_the_echo_and_follows_it() {
    let _rig = one_rig();
    let janus = Janus::start();
    let pulse = Pulse::start();
    realtime(&pulse);
    let work = scratch();
    echo_path(&pulse, None, work.path());
    let room = 310;
    let recordings = work.path().join("rec");
    let agent = agent(&janus, &pulse, room, &recordings, (true, "0"));
    let probe = janus.probe();
    agent.wait_log(Duration::from_secs(10), "speaker pipeline: running");
    agent.wait_log(Duration::from_secs(10), "microphone pipeline: running");
    wait_for(Duration::from_secs(5), "the forwarder", || {
        (!probe.forwarders(room, SECRET).is_empty()).then_some(())
    });
    // The far end talks (noise) for 28 s: time for both looks.
    let _talk = Talk::start(
        &pulse,
        &probe,
        room,
        work.path(),
        timeline(2.0 * FAR_ALONE + 10.0, Some(Far::Noise)),
    );
    let found = echo_heard(&agent, |_| true);
    lengthen_echo_path(&pulse, 140);
    let followed = found.and_then(|(before, _)| echo_heard(&agent, |ms| ms >= before + 50));
    for line in agent.log().lines().filter(|l| l.contains("echo:")) {
        println!("  agent: {line}");
    }
    if found.is_none() {
        println!("status: {}", agent.status_json());
    }
    let (before, shift) = found.expect("the echo heard");
    let text = agent.status_text();
    assert!(
        text.contains("echo: heard ") && text.contains("the canceller's reference "),
        "{text}"
    );
    assert!(
        shift.abs_diff(before.saturating_sub(20)) <= 8,
        "the reference ({shift} ms) is not on the echo ({before} ms)"
    );
    let (after, shift) = followed.expect("the longer echo heard");
    assert!(
        (50..=150).contains(&(after - before)),
        "100 ms more echo path, found {} ms more",
        after - before
    );
    assert!(
        shift.abs_diff(after.saturating_sub(20)) <= 8,
        "the reference ({shift} ms) did not follow the echo ({after} ms)"
    );
}

/// The echo canceller's reference shift as the microphone's `status --json`
/// shows it.
fn echo_shift(agent: &Agent) -> Option<u64> {
    let status = agent.status_json();
    let pipelines = status["pipelines"].as_array()?;
    let mic = pipelines.iter().find(|p| p["name"] == "microphone")?;
    mic["echo"]["shift_ms"].as_u64()
}

/// `echo_delay_ms` and `echo_delay_auto` take effect on a reload (SIGHUP),
/// as every other key does: the process does not keep its first values.
#[test]
fn a_reload_applies_new_echo_delay_settings() {
    let _machine = no_rig();
    let janus = Janus::start();
    let base = ports(4);
    let config = format!(
        "{head}\n[speaker]\nport = {speaker}\ndevice = \"null\"\n[video]\nsource = \"none\"\n\
             [microphone]\ndevice = \"test\"\necho_cancel = true\necho_delay_ms = 10\n\
             echo_delay_auto = false\n",
        head = common::config_head(&janus.url(), 320, SECRET, base, common::Extra::default()),
        speaker = base + 3,
    );
    let agent = Agent::start(&config);
    agent.wait_log(Duration::from_secs(10), "microphone pipeline: running");
    wait_for(Duration::from_secs(5), "a shift of 10 ms", || {
        (echo_shift(&agent) == Some(10)).then_some(())
    });
    let path = agent.config_path();
    let written = fs::read_to_string(&path).expect("the agent's config");
    let edited = written.replace("echo_delay_ms = 10", "echo_delay_ms = 60");
    common::write_private(&path, &edited);
    agent.signal("HUP");
    agent.wait_log(Duration::from_secs(5), "SIGHUP: configuration reloaded");
    wait_for(
        Duration::from_secs(10),
        "a shift of 60 ms after the reload",
        || (echo_shift(&agent) == Some(60)).then_some(()),
    );
}
