//! The speaker pipeline: the room's mix, forwarded by Janus as Opus RTP, to
//! the Pi's sound card. It is a pipeline of its own: in one pipeline with the
//! capture branches the audio sink would become the clock, and while no one
//! talks (nothing forwarded) that clock stands still and stalls the camera.
//!
//! It plays only the forwarder the reconciler made: it binds to the address
//! the forwarder sends to, and with `stream.srtp` decrypts the mix with the
//! forwarder's own key, so packets that do not authenticate are dropped;
//! without SRTP it drops every packet that does not come from Janus's host.
//!
//! ```text
//! udpsrc(forward target, port) ! [srtpdec(key) | drop unless from Janus]
//!   ! rtpjitterbuffer(latency, do-lost) ! rtpopusdepay ! opusdec(plc)
//!   ! audioconvert ! audioresample ! [caps(32 kHz) ! webrtcechoprobe] ! audioconvert
//!   ! audioresample ! alsasink(device, buffer-time)
//! ```
//!
//! Lost packets are concealed: the jitter buffer tells the decoder which
//! are missing, and the decoder rebuilds them from the next packet's
//! in-band FEC or by packet loss concealment. With echo cancellation the
//! probe hands what is played to the microphone's `webrtcdsp` (`echo.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;
use tokio::sync::watch;

use super::devices::{self, Direction};
use super::{assemble, caps_filter, echo, element, Built, Given, MediaError, Recipe, Supervision};
use crate::config::Settings;
use crate::rtp::SPEAKER_PAYLOAD_TYPE;
use crate::secret::SrtpKey;
use crate::state::RoomState;

/// How often alsasink hands audio to ALSA (`latency-time`).
const ALSA_PERIOD_US: i64 = 10_000;

/// The speaker pipeline.
pub struct Speaker {
    settings: Arc<Settings>,
    /// The published state, for the forwarder to play.
    room: watch::Receiver<RoomState>,
}

impl Speaker {
    /// The speaker pipeline for `settings`, playing the forwarder `room` publishes.
    pub fn new(settings: &Arc<Settings>, room: watch::Receiver<RoomState>) -> Self {
        Self {
            settings: Arc::clone(settings),
            room,
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
        let srtp = self.settings.stream.srtp.then_some("srtpdec");
        for factory in [
            "udpsrc",
            "rtpjitterbuffer",
            "rtpopusdepay",
            "opusdec",
            "alsasink",
        ]
        .into_iter()
        .chain(srtp)
        {
            devices::require_element(factory)?;
        }
        devices::check_alsa(
            "speaker.device",
            &self.settings.speaker.device,
            Direction::Playback,
        )
    }

    fn build(&self, _: &Given) -> Result<Built, MediaError> {
        let forward = self
            .room
            .borrow()
            .forward
            .ok_or_else(|| MediaError::Build("no forwarder to play yet".into()))?;
        let src = element("udpsrc")?;
        src.set_property("address", bind_address(forward.target).to_string());
        src.set_property("port", i32::from(self.settings.speaker.port));
        src.set_property("caps", forwarded_caps(forward.key.is_some()));
        let mut chain = vec![src.clone()];
        match (forward.key, forward.janus) {
            (Some(key), _) => chain.push(srtp_decoder(key)?),
            (None, Some(janus)) => super::only_from(
                &src,
                janus,
                "speaker pipeline: not playing RTP from another sender than Janus \
                 (with Janus behind another address, use stream.srtp)",
            )?,
            (None, None) => {}
        }
        let jitter = self.jitter_buffer()?;
        let dec = element("opusdec")?;
        // Concealment only: opusdec's in-band FEC holds every packet back
        // for the next one (+135 ms talk-back delay, tests/talkback.rs).
        dec.set_property("plc", true);
        let sink = self.sink()?;
        chain.extend([
            jitter.clone(),
            element("rtpopusdepay")?,
            dec,
            element("audioconvert")?,
            element("audioresample")?,
        ]);
        let echo_filter = if self.feeds_echo_canceller() {
            let filter = caps_filter(echo::caps())?;
            chain.extend([filter.clone(), echo::take_probe()?]);
            Some(filter)
        } else {
            None
        };
        chain.extend([
            element("audioconvert")?,
            element("audioresample")?,
            sink.clone(),
        ]);
        let pipeline = assemble("speaker", &chain)?;
        if let Some(filter) = echo_filter {
            echo::attach_speaker(&filter, echo::tracker(&self.settings.microphone))?;
            echo::share_clock(&pipeline);
        }
        let playout = Playout::watch(jitter, &sink, self.settings.speaker.buffer)?;
        let mut built = Built::plain(pipeline);
        // Silence while no one talks is normal: no stall detection.
        built.playout = Some(playout);
        Ok(built)
    }

    fn supervision(&self) -> Supervision {
        Supervision {
            forward: true,
            ..Supervision::default()
        }
    }
}

/// What Janus's rtp_forward sends: Opus with a 48 kHz RTP clock and the
/// payload type the reconciler asked for; SRTP-protected with a key.
fn forwarded_caps(srtp: bool) -> gst::Caps {
    let name = if srtp {
        "application/x-srtp"
    } else {
        "application/x-rtp"
    };
    gst::Caps::builder(name)
        .field("media", "audio")
        .field("encoding-name", "OPUS")
        .field("clock-rate", 48_000i32)
        .field("payload", i32::from(SPEAKER_PAYLOAD_TYPE))
        .build()
}

/// `srtpdec` that knows one key (AES_CM_128_HMAC_SHA1_80, Janus's
/// `srtp_suite = 80`) for every sender: what does not authenticate with it
/// is dropped.
fn srtp_decoder(key: SrtpKey) -> Result<gst::Element, MediaError> {
    let dec = element("srtpdec")?;
    let caps = gst::Caps::builder("application/x-srtp")
        .field("srtp-key", gst::Buffer::from_slice(*key.expose()))
        .field("srtp-cipher", "aes-128-icm")
        .field("srtp-auth", "hmac-sha1-80")
        .field("srtcp-cipher", "aes-128-icm")
        .field("srtcp-auth", "hmac-sha1-80")
        .build();
    dec.connect("request-key", false, move |_| Some(caps.to_value()));
    Ok(dec)
}

/// Where to listen: the forwarder's target when it is an address of this
/// machine; otherwise (the Pi behind NAT, Janus sending to its public
/// address) every address of that family.
fn bind_address(target: IpAddr) -> IpAddr {
    if UdpSocket::bind((target, 0)).is_ok() {
        target
    } else if target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_binds_to_a_local_target_and_to_any_address_otherwise() {
        let local = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(bind_address(local), local);
        // TEST-NET-1 is nobody's address.
        let remote = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(bind_address(remote), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
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
