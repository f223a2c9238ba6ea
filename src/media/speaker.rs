//! The speaker pipeline: the room's mix, forwarded by Janus as Opus RTP, to
//! the Pi's sound card. It is a pipeline of its own: in one pipeline with the
//! capture branches the audio sink would become the clock, and while no one
//! talks (nothing forwarded) that clock stands still and stalls the camera.
//!
//! ```text
//! udpsrc(port, caps) ! rtpjitterbuffer(latency) ! rtpopusdepay ! opusdec ! audioconvert ! audioresample ! alsasink(device)
//! ```

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::devices::{self, Direction};
use super::{assemble, element, Built, MediaError, Recipe};
use crate::config::Settings;
use crate::rtp::SPEAKER_PAYLOAD_TYPE;
use crate::secret::SrtpKey;

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
        let speaker = &self.settings.speaker;
        // What Janus's rtp_forward sends: Opus with a 48 kHz RTP clock and the
        // payload type the reconciler asked for.
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "audio")
            .field("encoding-name", "OPUS")
            .field("clock-rate", 48_000i32)
            .field("payload", i32::from(SPEAKER_PAYLOAD_TYPE))
            .build();
        let src = element("udpsrc")?;
        src.set_property("port", i32::from(speaker.port));
        src.set_property("caps", caps);
        let jitter = element("rtpjitterbuffer")?;
        // Validated to at most 5 s, well within a u32 of milliseconds.
        let latency_ms = u32::try_from(speaker.latency.as_millis()).unwrap_or(u32::MAX);
        jitter.set_property("latency", latency_ms);
        let dec = element("opusdec")?;
        dec.set_property("plc", true);
        let sink = element("alsasink")?;
        sink.set_property("device", &speaker.device);
        let chain = [
            src,
            jitter,
            element("rtpopusdepay")?,
            dec,
            element("audioconvert")?,
            element("audioresample")?,
            sink,
        ];
        Ok(Built {
            pipeline: assemble("speaker", &chain)?,
            // Silence while no one talks is normal: no stall detection.
            flow: None,
            helper: None,
        })
    }
}
