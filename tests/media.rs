//! Media with real parts: GStreamer pipelines on test sources sending to a
//! real Janus, the room's audio played into a real ALSA device (PulseAudio's
//! null sink through ALSA's `pulse` plugin), and pipelines that fail and come
//! back while the others keep running.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::janus::{Janus, Probe};
use common::pulse::{tone_share, Pulse};
use common::{ports, scratch, wait_for, Agent};

const SECRET: &str = "media-secret";

/// Media settings for the agent: test sources, speaker on `pulse`.
fn config(janus: &Janus, room: u64, video: &str, extra: &str) -> String {
    let base = ports(3);
    format!(
        r#"
[janus]
url = "{url}"
[room]
id = {room}
secret = "{SECRET}"
check_interval_ms = 500
allow_rtp_participants = true
[stream]
video_port = {v}
audio_port = {a}
stall_timeout_ms = 1000
[speaker]
port = {s}
device = "pulse"
latency_ms = 50
[video]
source = "{video}"
width = 320
height = 240
framerate = 15
bitrate_kbps = 300
[microphone]
device = "test"
{extra}
"#,
        url = janus.url(),
        v = base,
        a = base + 1,
        s = base + 2,
    )
}

/// Waits until Janus has received `kind` within the last 500 ms.
fn wait_media(probe: &Probe, room: u64, kind: &str, timeout: Duration) {
    wait_for(timeout, &format!("Janus to receive {kind}"), || {
        probe.media_age(room, SECRET, kind).filter(|age| *age < 500)
    });
}

#[test]
fn camera_and_microphone_reach_janus() {
    let janus = Janus::start();
    let pulse = Pulse::start();
    let probe = janus.probe();
    let started = Instant::now();
    let _agent = Agent::start_with(
        &config(&janus, 100, "test", ""),
        &[("PULSE_SERVER", &pulse.server())],
    );
    wait_for(Duration::from_secs(3), "the mountpoint", || {
        probe.mountpoint(100, SECRET)
    });
    // age_ms counts from creation while nothing arrived: judge after 2 s.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(started.elapsed()));
    wait_media(&probe, 100, "video", Duration::from_secs(1));
    wait_media(&probe, 100, "audio", Duration::from_secs(1));
    println!(
        "media at Janus {} ms after start",
        started.elapsed().as_millis()
    );
}

#[test]
fn a_voice_in_the_room_is_heard_on_the_sound_card() {
    let janus = Janus::start();
    let pulse = Pulse::start();
    let probe = janus.probe();
    let agent = Agent::start_with(
        &config(&janus, 200, "none", ""),
        &[("PULSE_SERVER", &pulse.server())],
    );
    agent.wait_log(Duration::from_secs(5), "speaker pipeline: running");
    wait_for(Duration::from_secs(3), "the forwarder", || {
        (!probe.forwarders(200, SECRET).is_empty()).then_some(())
    });

    // A plain-RTP participant (a stand-in for a browser) says 1 kHz.
    let local = ports(1);
    let janus_port = probe.join_rtp(200, local);
    let _voice = Sender::tone(1000, janus_port, local);

    // The agent plays the room's mix into ALSA `pulse`; listen on the monitor.
    let heard = wait_for(
        Duration::from_secs(8),
        "a 1 kHz tone on the sound card",
        || {
            let samples = pulse.record(Duration::from_millis(700));
            let share = tone_share(&samples, 1000.0);
            (share > 0.5).then_some(share)
        },
    );
    println!(
        "1 kHz tone is {:.0}% of what the sound card played",
        heard * 100.0
    );
    // And nothing of the sort when listening for another frequency.
    let samples = pulse.record(Duration::from_millis(500));
    assert!(tone_share(&samples, 1500.0) < 0.1);
}

#[test]
fn a_killed_camera_program_is_back_within_two_seconds() {
    let janus = Janus::start();
    let pulse = Pulse::start();
    let probe = janus.probe();
    let bin = FakeCamera::install();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let agent = Agent::start_with(
        &config(&janus, 300, "libcamera", ""),
        &[("PATH", &path), ("PULSE_SERVER", &pulse.server())],
    );
    std::thread::sleep(Duration::from_secs(2));
    wait_media(&probe, 300, "video", Duration::from_secs(5));
    let first = camera_pid(&agent);

    let killed = Instant::now();
    kill(first, "KILL");
    // The agent notices, restarts the camera, and Janus receives video again.
    let second = wait_for(Duration::from_secs(2), "a new camera process", || {
        Some(camera_pid_or_none(&agent)?).filter(|p| *p != first)
    });
    // Video from the new camera: newer than its start (what the killed one
    // left in the pipe may reach Janus just after the kill).
    let restarted = Instant::now();
    wait_for(Duration::from_secs(2), "video at Janus again", || {
        probe
            .media_age(300, SECRET, "video")
            .filter(|age| u128::from(*age) < restarted.elapsed().as_millis())
    });
    let recovered = killed.elapsed();
    println!(
        "video flowing again {} ms after the camera was killed",
        recovered.as_millis()
    );
    assert!(recovered < Duration::from_secs(2), "took {recovered:?}");
    assert_ne!(first, second);
    // The microphone never stopped.
    wait_media(&probe, 300, "audio", Duration::from_millis(100));
    assert!(
        agent.log().contains("camera program exited"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_stalled_camera_is_restarted() {
    let janus = Janus::start();
    let pulse = Pulse::start();
    let probe = janus.probe();
    let bin = FakeCamera::install();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let agent = Agent::start_with(
        &config(&janus, 400, "libcamera", ""),
        &[("PATH", &path), ("PULSE_SERVER", &pulse.server())],
    );
    std::thread::sleep(Duration::from_secs(2));
    wait_media(&probe, 400, "video", Duration::from_secs(5));
    let frozen = camera_pid(&agent);
    // The camera hangs: alive, but writes nothing.
    kill(frozen, "STOP");
    agent.wait_log(Duration::from_secs(4), "stalled");
    wait_for(Duration::from_secs(3), "a new camera process", || {
        Some(camera_pid_or_none(&agent)?).filter(|p| *p != frozen)
    });
    wait_media(&probe, 400, "video", Duration::from_secs(3));
}

#[test]
fn a_bad_speaker_device_is_explained_and_the_rest_keeps_running() {
    let janus = Janus::start();
    let probe = janus.probe();
    let config = config(&janus, 500, "test", "")
        .replace("device = \"pulse\"", "device = \"hw:CARD=NoSuchCard\"");
    let agent = Agent::start(&config);
    let log = agent.wait_log(
        Duration::from_secs(5),
        "speaker.device = \"hw:CARD=NoSuchCard\"",
    );
    assert!(log.contains("ALSA cards here:"), "{log}");
    std::thread::sleep(Duration::from_secs(2));
    wait_media(&probe, 500, "video", Duration::from_secs(2));
    wait_media(&probe, 500, "audio", Duration::from_secs(2));
    // Logged once, although it is retried.
    let warnings = agent
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("NoSuchCard"))
        .count();
    assert_eq!(warnings, 1, "{}", agent.log());
}

/// A stand-in for `rpicam-vid`: writes H.264 to stdout like the real one.
struct FakeCamera;

impl FakeCamera {
    fn install() -> tempfile::TempDir {
        let dir = scratch();
        let script = dir.path().join("rpicam-vid");
        fs::write(
            &script,
            "#!/bin/sh\n\
             # Test stand-in for rpicam-vid: H.264 byte-stream on stdout.\n\
             exec gst-launch-1.0 -q videotestsrc is-live=true \
             ! video/x-raw,width=320,height=240,framerate=15/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 \
             ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream \
             ! fdsink fd=1\n",
        )
        .expect("write fake camera");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }
}

/// The agent's camera program, if one runs.
fn camera_pid_or_none(agent: &Agent) -> Option<u32> {
    let out = Command::new("pgrep")
        .args([
            "-P",
            &agent.pid().to_string(),
            "-f",
            "rpicam-vid|gst-launch",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn camera_pid(agent: &Agent) -> u32 {
    wait_for(Duration::from_secs(3), "the camera process", || {
        camera_pid_or_none(agent)
    })
}

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -s {signal} {pid}");
}

/// A GStreamer process sending an Opus tone from `local` to Janus's port.
struct Sender(Child);

impl Sender {
    fn tone(frequency: u32, janus_port: u16, local: u16) -> Self {
        let child = Command::new("gst-launch-1.0")
            .arg("-q")
            .args([
                "audiotestsrc",
                "is-live=true",
                &format!("freq={frequency}"),
                "volume=0.5",
            ])
            .args(["!", "audioconvert", "!", "audioresample"])
            .args(["!", "audio/x-raw,rate=48000,channels=1", "!", "opusenc"])
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
        Self(child)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
