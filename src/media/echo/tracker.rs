//! Keeps the echo canceller's reference on the echo.
//!
//! The probe reckons a sample played at its running time plus the speaker
//! pipeline's latency; the canceller finds an echo from a few to about
//! 45 ms after that. The reference's running time is shifted (pad offsets
//! around the probe, see [`super::attach_speaker`]) by `echo_delay_ms`; with
//! `echo_delay_auto` a thread measures every second where the echo really
//! is ([`delay::find`](super::delay::find) on what the speaker plays and
//! what the microphone hears, both tapped before the echo elements) and
//! moves the shift when the echo has left the middle of the canceller's
//! reach: a different sound card, a Bluetooth speaker, clock drift.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

use super::delay::{self, Timeline};

/// Where in the canceller's reach the echo is put: after the reckoned
/// play time by this much (it reaches from ~3 to ~45 ms).
const TARGET: Duration = Duration::from_millis(20);
/// The echo may wander this far from [`TARGET`] before the shift follows
/// (each move makes the canceller adapt afresh).
const TOLERANCE: Duration = Duration::from_millis(8);
/// Estimates a move is decided on (their median).
const ESTIMATES: usize = 3;
/// How often the echo is looked for.
const PERIOD: Duration = Duration::from_millis(500);

/// What the taps feed and the thread reads.
#[derive(Debug, Default)]
struct Heard {
    /// What the speaker plays, at its running time before the shift.
    reference: Timeline,
    /// What the microphone hears, before the canceller.
    microphone: Timeline,
    /// The speaker pipeline's latency: the probe reckons a sample played
    /// this long after its running time.
    latency: Option<Duration>,
    /// The last delays found (running time to echo).
    found: VecDeque<Duration>,
    /// How long after the speaker's account the echo was last heard.
    beyond: Option<Duration>,
}

/// The echo's delay as `status` shows it, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EchoDelay {
    /// How far the canceller's reference is moved (`echo_delay_ms`, or
    /// what following the echo made of it).
    pub shift_ms: u64,
    /// How long after the speaker's account the echo was last heard; None
    /// until it has been (or when the delay is not followed).
    pub heard_ms: Option<u64>,
}

/// The echo's delay as this process knows it.
#[derive(Debug)]
pub struct Tracker {
    heard: Mutex<Heard>,
    /// The reference's current shift.
    shift: Mutex<Duration>,
    /// The settings it was last given: the shift to start from
    /// (`echo_delay_ms`) and whether it follows the echo (`echo_delay_auto`).
    settings: Mutex<(Duration, bool)>,
    /// Whether the shift follows the echo now.
    follows: AtomicBool,
    /// The thread that follows it, started with the first that does.
    thread: Once,
}

impl Tracker {
    /// The process's tracker, with the shift to start from and whether it
    /// follows the echo as `start` and `follows` say: a reload that changes
    /// either starts it afresh (one that does not keeps what it learned).
    /// The thread that measures starts the first time it follows.
    pub fn get(start: Duration, follows: bool) -> &'static Tracker {
        static TRACKER: OnceLock<Tracker> = OnceLock::new();
        let tracker = TRACKER.get_or_init(|| Tracker {
            heard: Mutex::default(),
            shift: Mutex::new(start),
            settings: Mutex::new((start, follows)),
            follows: AtomicBool::new(follows),
            thread: Once::new(),
        });
        tracker.configure(start, follows);
        if follows {
            tracker.thread.call_once(|| tracker.spawn());
        }
        tracker
    }

    /// Starts afresh from `start` when the settings changed.
    fn configure(&self, start: Duration, follows: bool) {
        let mut settings = lock(&self.settings);
        if *settings == (start, follows) {
            return;
        }
        *settings = (start, follows);
        *lock(&self.heard) = Heard::default();
        *lock(&self.shift) = start;
        self.follows.store(follows, Ordering::Relaxed);
        log::info!(
            "echo: the canceller's reference starts {} ms late{}",
            start.as_millis(),
            if follows { " and follows the echo" } else { "" }
        );
    }

    /// Starts the thread that looks for the echo while the shift follows it.
    fn spawn(&'static self) {
        let spawned = std::thread::Builder::new()
            .name("echo-delay".into())
            .spawn(move || loop {
                std::thread::sleep(PERIOD);
                if self.follows() {
                    self.step();
                }
            });
        if let Err(e) = spawned {
            log::warn!("echo: cannot follow the echo's delay: {e}");
        }
    }

    /// Whether the taps are wanted.
    pub fn follows(&self) -> bool {
        self.follows.load(Ordering::Relaxed)
    }

    /// The reference's shift now.
    pub fn shift(&self) -> Duration {
        *lock(&self.shift)
    }

    /// The echo's delay as known now.
    pub fn status(&self) -> EchoDelay {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        EchoDelay {
            shift_ms: millis(self.shift()),
            heard_ms: lock(&self.heard).beyond.map(millis),
        }
    }

    /// Takes a buffer of what the speaker plays.
    pub fn played(&self, pts: u64, samples: &[i16]) {
        lock(&self.heard).reference.push(pts, samples);
    }

    /// Takes a buffer of what the microphone hears.
    pub fn heard(&self, pts: u64, samples: &[i16]) {
        lock(&self.heard).microphone.push(pts, samples);
    }

    /// Takes the speaker pipeline's latency.
    pub fn latency(&self, latency: Duration) {
        lock(&self.heard).latency = Some(latency);
    }

    /// Adds an estimate; once there are [`ESTIMATES`], their median and
    /// the speaker's latency (if known).
    fn settle(&self, found: Duration) -> Option<(Duration, Duration)> {
        let mut heard = lock(&self.heard);
        heard.found.push_back(found);
        if heard.found.len() > ESTIMATES {
            heard.found.pop_front();
        }
        if heard.found.len() < ESTIMATES {
            return None;
        }
        let mut sorted: Vec<_> = heard.found.iter().copied().collect();
        sorted.sort();
        Some((sorted[ESTIMATES / 2], heard.latency?))
    }

    /// Looks for the echo once, and moves the shift if it has wandered.
    fn step(&self) {
        let (reference, microphone) = {
            let heard = lock(&self.heard);
            (heard.reference.snapshot(), heard.microphone.snapshot())
        };
        let Some(found) = delay::find(&reference, &microphone) else {
            return;
        };
        let Some((median, latency)) = self.settle(found) else {
            return;
        };
        let beyond = median.saturating_sub(latency);
        lock(&self.heard).beyond = Some(beyond);
        let wanted = beyond.saturating_sub(TARGET).min(super::MAX_SHIFT);
        let mut shift = lock(&self.shift);
        if wanted.abs_diff(*shift) <= TOLERANCE {
            return;
        }
        log::info!(
            "echo: heard {} ms after the speaker's account; the canceller's reference moves from {} to {} ms",
            beyond.as_millis(),
            shift.as_millis(),
            wanted.as_millis()
        );
        *shift = wanted;
        if let Err(e) = super::apply_shift(wanted) {
            log::warn!("echo: cannot move the canceller's reference: {e}");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Feeds the running time and samples of each buffer through `pad` (a
/// sink pad of a caps filter for [`super::caps`]) to `take`.
pub fn tap(pad: &gst::Pad, take: fn(&Tracker, u64, &[i16]), tracker: &'static Tracker) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
            if let Some(at) = running_time(pad, buffer) {
                if let Ok(map) = buffer.map_readable() {
                    let samples: Vec<i16> = map
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    take(tracker, at, &samples);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// The running time of `buffer` in the segment `pad` has.
fn running_time(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<u64> {
    let pts = buffer.pts()?;
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = segment.segment().downcast_ref::<gst::ClockTime>()?;
    segment.to_running_time(pts).map(gst::ClockTime::nseconds)
}

/// Feeds the latency the pipeline sets upstream through `pad` (the caps
/// filter's src pad before the probe) to `tracker`.
pub fn tap_latency(pad: &gst::Pad, tracker: &'static Tracker) {
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data {
            if let gst::EventView::Latency(latency) = event.view() {
                tracker.latency(latency.latency().into());
            }
        }
        gst::PadProbeReturn::Ok
    });
}
