//! Echo cancellation across the speaker and microphone pipelines.
//!
//! `webrtcdsp` (microphone) takes what the speaker plays from a
//! `webrtcechoprobe` it finds by name, and lines both up by their buffers'
//! running times. Two things make that work across two pipelines that
//! restart independently:
//!
//! - one probe for the whole process, moved into each speaker pipeline that
//!   is built: a `webrtcdsp` keeps the probe it found when it started, so a
//!   probe made afresh for a restarted speaker would never be heard;
//! - the same clock (the system clock) and the same base time in both
//!   pipelines, so that a running time means the same instant in each.
//!
//! Both run at [`RATE`]: the library (webrtc-audio-processing 0.3, Debian 12)
//! converges within 2 s at 32 kHz and not within 10 s at 48 kHz.

use std::sync::OnceLock;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{element, MediaError};
use crate::config::MicrophoneSettings;

mod delay;
mod tracker;

pub use tracker::{EchoDelay, Tracker};

/// The longest shift of the reference (`microphone.echo_delay_ms`'s range).
pub const MAX_SHIFT: Duration = MicrophoneSettings::ECHO_DELAY_MAX;

/// The probe's name, which `webrtcdsp` looks it up by.
pub const PROBE: &str = "broadcast-agent-echo-probe";
/// The rate both elements process at.
pub const RATE: i32 = 32_000;
/// Debian's package with `webrtcdsp` and `webrtcechoprobe`.
pub const PACKAGE: &str = "gstreamer1.0-plugins-bad";

/// Whether this GStreamer has the voice processing elements.
pub fn available() -> bool {
    ["webrtcdsp", "webrtcechoprobe"]
        .iter()
        .all(|f| gst::ElementFactory::find(f).is_some())
}

/// Raw mono S16 caps at [`RATE`], what both elements get.
pub fn caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("layout", "interleaved")
        .field("rate", RATE)
        .field("channels", 1i32)
        .build()
}

/// The process's probe, made on first use.
pub fn probe() -> Result<gst::Element, MediaError> {
    static PROBE_ELEMENT: OnceLock<gst::Element> = OnceLock::new();
    if let Some(probe) = PROBE_ELEMENT.get() {
        return Ok(probe.clone());
    }
    let made = element("webrtcechoprobe")?;
    made.set_property("name", PROBE);
    Ok(PROBE_ELEMENT.get_or_init(|| made).clone())
}

/// The process's probe, taken out of the pipeline it was in (which must be
/// stopped: its supervisor drops a pipeline before building the next), to
/// go into a new speaker pipeline after `filter` ([`caps`]).
pub fn take_probe() -> Result<gst::Element, MediaError> {
    let probe = probe()?;
    if let Some(bin) = probe.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) {
        let _ = probe.set_state(gst::State::Null);
        bin.remove(&probe)
            .map_err(|e| MediaError::build("cannot take the echo probe back", e))?;
    }
    Ok(probe)
}

/// The process's echo delay, as `microphone` starts it.
pub fn tracker(microphone: &MicrophoneSettings) -> &'static Tracker {
    Tracker::get(microphone.echo_delay, microphone.echo_delay_auto)
}

/// Sets up the speaker's side once `filter` is linked to the probe: the
/// reference shifted as the tracker says, and (when it follows the echo)
/// what is played and the pipeline's latency tapped for it.
pub fn attach_speaker(filter: &gst::Element, tracker: &'static Tracker) -> Result<(), MediaError> {
    apply_shift(tracker.shift())?;
    if tracker.follows() {
        tracker::tap(&pad(filter, "sink")?, Tracker::played, tracker);
        tracker::tap_latency(&pad(filter, "src")?, tracker);
    }
    Ok(())
}

/// Sets up the microphone's side: what `filter` (before `webrtcdsp`) passes
/// is tapped when the tracker follows the echo.
pub fn attach_microphone(
    filter: &gst::Element,
    tracker: &'static Tracker,
) -> Result<(), MediaError> {
    if tracker.follows() {
        tracker::tap(&pad(filter, "sink")?, Tracker::heard, tracker);
    }
    Ok(())
}

/// Moves the running time the probe sees `shift` later, and back by as
/// much on its way out: the reference moves, what the speaker plays does
/// not. Both offsets are on source pads, which send their segment again
/// with the next buffer, so a move also takes effect while playing. A
/// probe in no pipeline yet gets it when attached.
fn apply_shift(shift: Duration) -> Result<(), MediaError> {
    let probe = probe()?;
    let Some(upstream) = pad(&probe, "sink")?.peer() else {
        return Ok(());
    };
    // Validated and clamped to at most 500 ms.
    let ns = i64::try_from(shift.as_nanos()).unwrap_or(i64::MAX);
    upstream.set_offset(ns);
    pad(&probe, "src")?.set_offset(-ns);
    Ok(())
}

fn pad(element: &gst::Element, name: &str) -> Result<gst::Pad, MediaError> {
    element
        .static_pad(name)
        .ok_or_else(|| MediaError::Build(format!("{} has no {name} pad", element.name())))
}

/// Puts `pipeline` on the clock and base time every echo-cancelling
/// pipeline of this process shares.
pub fn share_clock(pipeline: &gst::Pipeline) {
    static EPOCH: OnceLock<gst::ClockTime> = OnceLock::new();
    let clock = gst::SystemClock::obtain();
    let epoch = *EPOCH.get_or_init(|| clock.time());
    pipeline.use_clock(Some(&clock));
    // No new base time on each start: the shared one stays.
    pipeline.set_start_time(gst::ClockTime::NONE);
    pipeline.set_base_time(epoch);
}
