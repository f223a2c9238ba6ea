//! Talk-back latency benchmark: from a click a participant sends into the
//! room to the click at the Pi's sound card, through the real path — a
//! plain-RTP participant (20 ms Opus frames), Janus's AudioBridge, its
//! `rtp_forward` to the agent, the agent's speaker pipeline, ALSA `pulse`, a
//! PulseAudio null sink.
//!
//! Both ends are timed on one clock in this process: the click's send time is
//! when the RTP packet carrying its first samples reaches the sender's
//! `udpsink`; its arrival is where it starts in what the null sink's monitor
//! recorded (read through ALSA `pulse`, as the agent plays), mapped to the
//! same clock by the buffers' capture times. The settings are compared side
//! by side in one run, alternating, so the machine's load hits both alike.
//!
//! ```sh
//! cargo test --release --test talkback -- --ignored --nocapture   # 20 clicks per setting
//! CLICKS=60 cargo test --release --test talkback -- --ignored --nocapture
//! ```

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use common::janus::Janus;
use common::pulse::Pulse;
use common::{ports, Agent};

const SECRET: &str = "talkback-secret";
/// One click every this long: longer than any plausible delay.
const CLICK_EVERY: Duration = Duration::from_millis(700);
/// A sample at least this loud starts a click (silence around them is 0).
const ONSET: i16 = 2000;

/// Where the clicks go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Into the room as a participant: what a viewer's voice takes.
    Room,
    /// Straight to the agent's speaker port: the agent alone.
    Agent,
    /// Straight to a minimal receiver (jitter buffer 20 ms, ALSA buffer
    /// 40 ms) on the same sound card: the floor of this set-up.
    Minimal,
}

/// The speaker's delay settings under test, and the path.
struct Setting {
    name: &'static str,
    path: Path,
    room_prebuffering: u32,
    latency_ms: u32,
    buffer_ms: u32,
}

const BEFORE: Setting = Setting {
    name: "room, as before: Janus's prebuffering (6), jitter buffer 100 ms, alsasink 200 ms",
    path: Path::Room,
    room_prebuffering: 6,
    latency_ms: 100,
    buffer_ms: 200,
};
const NOW: Setting = Setting {
    name: "room, shipped defaults: prebuffering 2, jitter buffer 40 ms, alsasink 40 ms",
    path: Path::Room,
    room_prebuffering: 2,
    latency_ms: 40,
    buffer_ms: 40,
};
const SETTINGS: [Setting; 4] = [
    BEFORE,
    NOW,
    Setting {
        name: "the agent alone (clicks sent to its speaker port), shipped defaults",
        path: Path::Agent,
        ..NOW
    },
    Setting {
        name: "a minimal receiver on the same sound card",
        path: Path::Minimal,
        ..NOW
    },
];

fn config(janus: &Janus, room: u64, speaker_port: u16, s: &Setting) -> String {
    let sections = common::Extra {
        room: "allow_rtp_participants = true",
        ..common::Extra::default()
    };
    format!(
        r#"{head}
[speaker]
device = "pulse"
port = {speaker_port}
host = "127.0.0.1"
latency_ms = {latency}
buffer_ms = {buffer}
room_prebuffering = {prebuffering}
[video]
source = "none"
[microphone]
enabled = false
"#,
        head = common::config_head(&janus.url(), room, SECRET, ports(3), sections),
        latency = s.latency_ms,
        buffer = s.buffer_ms,
        prebuffering = s.room_prebuffering,
    )
}

/// Clock times (ns) at which buffers passed a pad, with their running times.
type Marks = Arc<Mutex<Vec<(u64, gst::ClockTime)>>>;

fn now(clock: &gst::Clock) -> u64 {
    clock.time().nseconds()
}

/// Sends 20 ms Opus clicks (payload type `pt`) from `local` to `port`;
/// returns the pipeline and the clock time each RTP packet was handed to
/// `udpsink`.
fn sender(local: u16, port: u16, pt: u8) -> (gst::Pipeline, Marks) {
    let pipeline = gst::parse::launch(&format!(
        "audiotestsrc is-live=true wave=ticks tick-interval={} volume=0.8 samplesperbuffer=960 \
         ! audio/x-raw,rate=48000,channels=1 ! opusenc frame-size=20 \
         ! rtpopuspay pt={pt} ! udpsink name=out host=127.0.0.1 port={port} bind-port={local} sync=false",
        CLICK_EVERY.as_nanos()
    ))
    .expect("sender pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let marks = Marks::default();
    let clock = gst::SystemClock::obtain();
    let sink = pipeline.by_name("out").expect("udpsink");
    let pad = sink.static_pad("sink").expect("sink pad");
    let seen = Arc::clone(&marks);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
            let running = pad.sticky_event::<gst::event::Segment>(0).and_then(|s| {
                s.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|seg| seg.to_running_time(buffer.pts()))
            });
            if let Some(running) = running {
                seen.lock().expect("marks").push((now(&clock), running));
            }
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.use_clock(Some(&gst::SystemClock::obtain()));
    (pipeline, marks)
}

/// Records the null sink's monitor through ALSA `pulse`; keeps, per
/// buffer, the clock time it arrived and its samples.
/// What the recorder got: per buffer, the clock time it arrived and its samples.
type Recording = Arc<Mutex<Vec<(u64, Vec<i16>)>>>;

fn recorder() -> (gst::Pipeline, Recording) {
    let pipeline = gst::parse::launch(
        "alsasrc device=pulse buffer-time=20000 latency-time=5000 \
         ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! appsink name=rec sync=false",
    )
    .expect("recorder pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let got = Recording::default();
    let clock = gst::SystemClock::obtain();
    let sink = pipeline
        .by_name("rec")
        .expect("appsink")
        .downcast::<gstreamer_app::AppSink>()
        .expect("an appsink");
    let keep = Arc::clone(&got);
    sink.set_callbacks(
        gstreamer_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let at = now(&clock);
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(map) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                    let samples = map
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    keep.lock().expect("recording").push((at, samples));
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    (pipeline, got)
}

/// The clock times at which clicks start in the recording: a buffer that
/// arrived at `at` holds samples captured up to `at`, the last one then.
fn onsets(recording: &[(u64, Vec<i16>)]) -> Vec<u64> {
    let per_sample = 1_000_000_000 / 48_000;
    let mut found = Vec::new();
    let mut quiet_since: u64 = 0;
    for (at, samples) in recording {
        let n = samples.len() as u64;
        for (i, s) in samples.iter().enumerate() {
            let t = at.saturating_sub((n - i as u64) * per_sample);
            if s.unsigned_abs() >= ONSET.unsigned_abs() {
                if t.saturating_sub(quiet_since) > 200_000_000 {
                    found.push(t);
                }
                quiet_since = t;
            }
        }
    }
    found
}

/// The send time of each click: the packet whose running time is a
/// multiple of the click interval.
fn click_times(marks: &[(u64, gst::ClockTime)]) -> Vec<u64> {
    let every = u64::try_from(CLICK_EVERY.as_nanos()).expect("fits");
    marks
        .iter()
        .filter(|(_, running)| running.nseconds() % every < 20_000_000)
        .map(|(at, _)| *at)
        .collect()
}

/// Pairs each click with the first onset after it (within a second).
fn delays(sent: &[u64], heard: &[u64]) -> Vec<f64> {
    sent.iter()
        .filter_map(|s| {
            heard
                .iter()
                .find(|h| **h > *s && **h - *s < 1_000_000_000)
                .map(|h| (*h - *s) as f64 / 1e6)
        })
        .collect()
}

/// A receiver as small as it gets, playing RTP on `port` on the sound card.
fn minimal_receiver(port: u16) -> gst::Pipeline {
    let pipeline = gst::parse::launch(&format!(
        "udpsrc port={port} caps=\"application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=100\" \
         ! rtpjitterbuffer latency=20 ! rtpopusdepay ! opusdec ! audioconvert ! audioresample \
         ! alsasink device=pulse buffer-time=40000 latency-time=10000"
    ))
    .expect("receiver pipeline")
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    pipeline
        .set_state(gst::State::Playing)
        .expect("receiver plays");
    pipeline
}

fn measure(setting: &Setting, clicks: usize) -> Vec<f64> {
    let janus = Janus::start();
    let pulse = Pulse::start();
    let probe = janus.probe();
    let room = 600;
    let speaker = ports(1);
    // This process plays and records through ALSA `pulse` too.
    std::env::set_var("PULSE_SERVER", pulse.server());
    std::env::set_var("PULSE_SOURCE", "speaker.monitor");
    let mut receiver = None;
    let mut agent = None;
    let local = ports(1);
    let (port, pt) = match setting.path {
        Path::Minimal => {
            receiver = Some(minimal_receiver(speaker));
            (speaker, 100)
        }
        path => {
            let started = Agent::start_with(
                &config(&janus, room, speaker, setting),
                &[("PULSE_SERVER", &pulse.server())],
            );
            started.wait_log(Duration::from_secs(10), "speaker pipeline: running");
            agent = Some(started);
            match path {
                Path::Room => (probe.join_rtp(room, local), 111),
                _ => (speaker, 100),
            }
        }
    };
    let (rec, recording) = recorder();
    rec.set_state(gst::State::Playing).expect("recorder plays");
    let (send, marks) = sender(local, port, pt);
    send.set_state(gst::State::Playing).expect("sender plays");
    std::thread::sleep(CLICK_EVERY * u32::try_from(clicks + 3).expect("fits"));
    let _ = send.set_state(gst::State::Null);
    std::thread::sleep(Duration::from_secs(1));
    let _ = rec.set_state(gst::State::Null);
    if let Some(receiver) = receiver {
        let _ = receiver.set_state(gst::State::Null);
    }
    drop(agent);
    let sent = click_times(&marks.lock().expect("marks"));
    let heard = onsets(&recording.lock().expect("recording"));
    // The first clicks go to buffers still filling.
    delays(&sent, &heard).into_iter().skip(2).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

#[test]
#[ignore = "benchmark: cargo test --release --test talkback -- --ignored --nocapture"]
fn talk_back_latency() {
    gst::init().expect("GStreamer initialises");
    let clicks: usize = std::env::var("CLICKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); SETTINGS.len()];
    // Alternate, in two halves, so load hits every setting alike.
    for _ in 0..2 {
        for (i, setting) in SETTINGS.iter().enumerate() {
            results[i].extend(measure(setting, clicks / 2 + 2));
        }
    }
    for (setting, mut got) in SETTINGS.iter().zip(results) {
        got.sort_by(f64::total_cmp);
        println!(
            "{}: {} clicks, median {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
            setting.name,
            got.len(),
            percentile(&got, 0.5),
            percentile(&got, 0.95),
            got.first().copied().unwrap_or(f64::NAN),
            got.last().copied().unwrap_or(f64::NAN),
        );
        assert!(got.len() >= clicks / 2, "too few clicks heard: {got:?}");
    }
}
