//! A sound card for machines without one: PulseAudio with a null sink, which
//! ALSA's `pulse` device (package `libasound2-plugins`) plays into at real
//! pace, and whose monitor the test records with `parec`.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{scratch, wait_for, Drain};

/// Sample rate the test records at.
pub const RATE: u32 = 48_000;

/// A private PulseAudio server with a null sink called `speaker`.
pub struct Pulse {
    child: Child,
    dir: tempfile::TempDir,
}

impl Pulse {
    /// Starts the server; returns once it answers.
    pub fn start() -> Self {
        let dir = scratch();
        let socket = dir.path().join("native");
        let script = format!(
            "load-module module-null-sink sink_name=speaker rate={RATE} channels=2\n\
             load-module module-native-protocol-unix auth-anonymous=1 socket={}\n\
             set-default-sink speaker\n",
            socket.display()
        );
        let config = dir.path().join("default.pa");
        fs::write(&config, script).expect("write PulseAudio script");
        let log = fs::File::create(dir.path().join("pulse.log")).expect("PulseAudio log");
        let child = Command::new("pulseaudio")
            .args(["-n", "-F"])
            .arg(&config)
            .args([
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disable-shm=yes",
                "--use-pid-file=no",
                "--system=false",
            ])
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pulseaudio (apt-get install pulseaudio)");
        let pulse = Self { child, dir };
        wait_for(Duration::from_secs(10), "PulseAudio to answer", || {
            Command::new("pactl")
                .args(["-s", &pulse.server(), "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
        });
        pulse
    }

    /// The `PULSE_SERVER` value that reaches this server.
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("native")
    }

    /// Records what is played on the sink for `duration`, as mono samples.
    pub fn record(&self, duration: Duration) -> Vec<i16> {
        let mut child = Command::new("parec")
            .args(["-s", &self.server(), "-d", "speaker.monitor", "--raw"])
            .args(["--format=s16le", &format!("--rate={RATE}"), "--channels=1"])
            .arg("--latency-msec=10")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start parec");
        // Read while it records: 0.7 s of it already fill a pipe.
        let out = Drain::start(child.stdout.take().expect("stdout piped"));
        std::thread::sleep(duration);
        let _ = child.kill();
        let _ = child.wait();
        out.bytes(Duration::from_secs(5))
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Share of the signal's energy at `frequency` (Goertzel), 0.0 ..= 1.0.
/// A clean tone gives close to 1, silence or noise close to 0.
pub fn tone_share(samples: &[i16], frequency: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * frequency / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut total = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        total += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if total == 0.0 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A pure tone of N samples has power N² A²/4 and energy N A²/2.
    (2.0 * power / (n * total)).min(1.0)
}
