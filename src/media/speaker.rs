//! The speaker pipeline: the room's mix, forwarded by Janus as Opus RTP, to
//! the Pi's sound card. It is a pipeline of its own: in one pipeline with the
//! capture branches the audio sink would become the clock, and while no one
//! talks (nothing forwarded) that clock stands still and stalls the camera.
//!
//! ```text
//! udpsrc(port, caps) ! rtpjitterbuffer(latency, do-lost) ! rtpopusdepay ! opusdec(plc, fec)
//!   ! audioconvert ! audioresample ! [caps(32 kHz) ! webrtcechoprobe] ! audioconvert
//!   ! audioresample ! alsasink(device, buffer-time)
//! ```
//!
//! Lost packets are concealed: the jitter buffer tells the decoder which
//! are missing, and the decoder rebuilds them from the next packet's
//! in-band FEC or by packet loss concealment. With echo cancellation the
//! probe hands what is played to the microphone's `webrtcdsp` (`echo.rs`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

use super::devices::{self, Direction};
use super::{assemble, caps_filter, echo, element, Built, MediaError, Recipe};
use crate::config::Settings;
use crate::rtp::SPEAKER_PAYLOAD_TYPE;
use crate::secret::SrtpKey;

/// How often alsasink hands audio to ALSA (`latency-time`).
const ALSA_PERIOD_US: i64 = 10_000;

/// The speaker pipeline.
pub struct Speaker {
    settings: Arc<Settings>,
}

impl Speaker {
    /// The speaker pipeline for `settings`.
    pub fn new(settings: &Arc<Settings>) -> Self {
        Self {
            settings: Arc::clone(settings),
        }
    }

    /// Whether the microphone cancels what this pipeline plays.
    fn feeds_echo_canceller(&self) -> bool {
        let s = &self.settings;
        s.microphone.enabled && s.echo_cancel() && echo::available()
    }

    /// `rtpjitterbuffer` holding packets for `speaker.latency_ms` and
    /// telling the decoder about the lost ones.
    fn jitter_buffer(&self) -> Result<gst::Element, MediaError> {
        let jitter = element("rtpjitterbuffer")?;
        // Validated to at most 5 s, well within a u32 of milliseconds.
        let latency_ms =
            u32::try_from(self.settings.speaker.latency.as_millis()).unwrap_or(u32::MAX);
        jitter.set_property("latency", latency_ms);
        jitter.set_property("do-lost", true);
        Ok(jitter)
    }

    /// `alsasink` on `speaker.device` with a `speaker.buffer_ms` buffer.
    fn sink(&self) -> Result<gst::Element, MediaError> {
        let speaker = &self.settings.speaker;
        let sink = element("alsasink")?;
        sink.set_property("device", &speaker.device);
        // Validated to 20 ms ..= 1 s.
        let buffer_us = i64::try_from(speaker.buffer.as_micros()).unwrap_or(i64::MAX);
        sink.set_property("buffer-time", buffer_us);
        sink.set_property("latency-time", ALSA_PERIOD_US.min(buffer_us / 2));
        Ok(sink)
    }
}

impl Recipe for Speaker {
    fn name(&self) -> &'static str {
        "speaker"
    }

    fn preflight(&self) -> Result<(), MediaError> {
        for factory in [
            "udpsrc",
            "rtpjitterbuffer",
            "rtpopusdepay",
            "opusdec",
            "alsasink",
        ] {
            devices::require_element(factory)?;
        }
        devices::check_alsa(
            "speaker.device",
            &self.settings.speaker.device,
            Direction::Playback,
        )
    }

    fn build(&self, _srtp: Option<&SrtpKey>) -> Result<Built, MediaError> {
        // What Janus's rtp_forward sends: Opus with a 48 kHz RTP clock and the
        // payload type the reconciler asked for.
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "audio")
            .field("encoding-name", "OPUS")
            .field("clock-rate", 48_000i32)
            .field("payload", i32::from(SPEAKER_PAYLOAD_TYPE))
            .build();
        let src = element("udpsrc")?;
        src.set_property("port", i32::from(self.settings.speaker.port));
        src.set_property("caps", caps);
        let jitter = self.jitter_buffer()?;
        let dec = element("opusdec")?;
        dec.set_property("plc", true);
        dec.set_property("use-inband-fec", true);
        let sink = self.sink()?;
        let mut chain = vec![
            src,
            jitter.clone(),
            element("rtpopusdepay")?,
            dec,
            element("audioconvert")?,
            element("audioresample")?,
        ];
        let echo = self.feeds_echo_canceller();
        if echo {
            chain.extend([caps_filter(echo::caps())?, echo::take_probe()?]);
        }
        chain.extend([
            element("audioconvert")?,
            element("audioresample")?,
            sink.clone(),
        ]);
        let pipeline = assemble("speaker", &chain)?;
        if echo {
            echo::share_clock(&pipeline);
        }
        let playout = Playout::watch(jitter, &sink, self.settings.speaker.buffer)?;
        let mut built = Built::plain(pipeline);
        // Silence while no one talks is normal: no stall detection.
        built.playout = Some(playout);
        Ok(built)
    }
}

/// What the speaker played late or made up, counted while it runs.
#[derive(Debug, Clone)]
pub struct Playout {
    jitter: gst::Element,
    underruns: Arc<AtomicU64>,
}

/// The speaker's counters, as `status --json` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlayoutCounts {
    /// Packets that never came (or came too late) and were concealed by the
    /// decoder (in-band FEC or packet loss concealment).
    pub concealed: u64,
    /// Of those, packets that did come, after their time to play.
    pub late: u64,
    /// Times audio reached the sound card later than its buffer lasts
    /// (the card ran dry and played silence).
    pub underruns: u64,
}

impl Playout {
    /// Counts the jitter buffer's lost packets and the sink's underruns: a
    /// buffer arriving more than `buffer` behind the earliest schedule
    /// seen (running time against the clock) found the card's buffer empty;
    /// the schedule then starts again from it.
    fn watch(
        jitter: gst::Element,
        sink: &gst::Element,
        buffer: std::time::Duration,
    ) -> Result<Self, MediaError> {
        let pad = sink
            .static_pad("sink")
            .ok_or_else(|| MediaError::Build("alsasink without a sink pad".into()))?;
        let underruns = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&underruns);
        let slack = i64::try_from(buffer.as_nanos()).unwrap_or(i64::MAX);
        let earliest = AtomicI64::new(i64::MAX);
        let element = sink.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(sink), Some(buffer)) = (element.upgrade(), info.buffer()) else {
                return gst::PadProbeReturn::Ok;
            };
            if let Some(behind) = behind_schedule(pad, &sink, buffer) {
                let first = earliest.fetch_min(behind, Ordering::Relaxed).min(behind);
                if behind - first > slack {
                    count.fetch_add(1, Ordering::Relaxed);
                    earliest.store(behind, Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
        Ok(Self { jitter, underruns })
    }

    /// The counts so far.
    pub fn counts(&self) -> PlayoutCounts {
        let stats = self.jitter.property::<gst::Structure>("stats");
        let stat = |name| stats.get::<u64>(name).unwrap_or(0);
        PlayoutCounts {
            concealed: stat("num-lost"),
            late: stat("num-late"),
            underruns: self.underruns.load(Ordering::Relaxed),
        }
    }
}

/// How far (ns) the clock's running time is past the running time of
/// `buffer` arriving at `pad` of `sink`.
fn behind_schedule(pad: &gst::Pad, sink: &gst::Element, buffer: &gst::BufferRef) -> Option<i64> {
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = segment.segment().downcast_ref::<gst::ClockTime>()?;
    let running = segment.to_running_time(buffer.pts()?)?;
    let now = sink.current_running_time()?;
    Some(now.nseconds() as i64 - running.nseconds() as i64)
}
