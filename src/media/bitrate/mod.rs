//! A video bitrate that fits the link: the in-process encoders (x264enc,
//! v4l2h264enc, rpicamsrc) follow what Janus reports about the stream,
//! between `video.min_bitrate_kbps` and `video.bitrate_kbps`, changed while
//! they run.
//!
//! What Janus sends the agent (read in Janus 1.1.2's source, and seen on the
//! wire by `tests/bitrate.rs`):
//!
//! - **WebRTC uplink**: the Janus core sends a receiver report for each
//!   medium it receives every second (`janus_ice_outgoing_rtcp_handle`: one
//!   report block about the publisher's SSRC, with the fraction lost since
//!   the last one and LSR/DLSR for the round trip). Packets repaired by RTX
//!   count as received, so the loss is what retransmission did not mend.
//!   The VideoRoom sends REMB only for a room created with a `bitrate`,
//!   which the agent's room is not, and it drops its forwarders' REMB:
//!   so loss and round trip it is.
//! - **Plain RTP**: the Streaming plugin sends no receiver report to an RTP
//!   source at all; it relays keyframe requests and, once a second, the
//!   lowest REMB its viewers sent since the last (`lowest_bitrate`, 24 bytes:
//!   sender SSRC 1, media SSRC 0, one SSRC: the source's). That estimates
//!   Janus → viewer, not the Pi → Janus leg, whose loss Janus never tells:
//!   on plain RTP the agent can only honour the viewers' REMB.
//!
//! The reports go through [`Bitrate`] into a [`Controller`], which sets the
//! encoder's property when its target moves; `status` shows both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

use super::encoder;
use crate::config::VideoSettings;

mod controller;
mod rtcp;

use controller::NACK_CUT;
pub use controller::{Controller, Report};
use rtcp::{ntp_middle_now, parse};

/// `bytes` over `elapsed` in kbit/s; None over too short a time to say.
fn kbps(bytes: u64, elapsed: Duration) -> Option<u32> {
    let seconds = elapsed.as_secs_f64();
    (seconds > 0.2).then(|| (bytes as f64 * 8.0 / 1000.0 / seconds) as u32)
}

/// Whether and why the bitrate does not follow the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fixed {
    /// `video.adaptive_bitrate = false`.
    Configured,
    /// The camera program encodes behind a pipe: it cannot be told a new
    /// rate while it runs.
    CameraProgram,
}

impl Fixed {
    /// The reason in words, for `status`.
    pub fn words(self) -> &'static str {
        match self {
            Self::Configured => "video.adaptive_bitrate = false",
            Self::CameraProgram => {
                "the camera program encodes behind a pipe and cannot change its bitrate while it runs"
            }
        }
    }
}

/// The video bitrate as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BitrateStatus {
    /// What the encoder is set to now, kbit/s.
    pub kbps: u32,
    /// `video.bitrate_kbps`: the most it goes to.
    pub configured_kbps: u32,
    /// The floor: `video.min_bitrate_kbps`.
    pub min_kbps: u32,
    /// Why it does not follow the link (None: it does).
    pub fixed: Option<Fixed>,
    /// Loss in the last receiver report from Janus, in percent.
    pub loss_percent: Option<f64>,
    /// Round trip by the last receiver report that had one, ms.
    pub rtt_ms: Option<u32>,
    /// The last REMB Janus sent, kbit/s.
    pub remb_kbps: Option<u32>,
    /// Receiver reports (about the video) received so far.
    pub reports: u64,
    /// REMB messages received so far.
    pub rembs: u64,
}

// Its one float, `loss_percent`, is never NaN (a count over 256).
impl Eq for BitrateStatus {}

/// How long after a cut the encoder makes a keyframe: the link's queue
/// (or a policer's bucket) drains first (the updates come every 250 ms).
const KEYFRAME_AFTER_CUT: Duration = Duration::from_millis(400);

/// How a running encoder's rate is set.
#[derive(Debug, Clone)]
enum Encoder {
    /// `x264enc`'s `bitrate`, kbit/s.
    X264(gst::glib::WeakRef<gst::Element>),
    /// `v4l2h264enc`'s `extra-controls` `video_bitrate`, bit/s (see
    /// [`encoder::set_controls`]).
    V4l2(gst::glib::WeakRef<gst::Element>),
    /// `rpicamsrc`'s `bitrate`, bit/s (MMAL takes it while running).
    Rpicamsrc(gst::glib::WeakRef<gst::Element>),
}

impl Encoder {
    /// The pipeline's encoder whose rate can change while it runs (one of
    /// its own elements: not one inside another, such as a stand-in's).
    fn find(pipeline: &gst::Pipeline) -> Option<(Self, gst::Element)> {
        pipeline
            .iterate_elements()
            .into_iter()
            .flatten()
            .find_map(|e| {
                let name = e.factory()?.name();
                let weak = e.downgrade();
                let kind = match name.as_str() {
                    "x264enc" => Self::X264(weak),
                    "v4l2h264enc" => Self::V4l2(weak),
                    "rpicamsrc" => Self::Rpicamsrc(weak),
                    _ => return None,
                };
                Some((kind, e))
            })
    }

    /// Asks the encoder for a keyframe, as `rtpsession` does for a viewer
    /// (a force-key-unit event at its output; see `encoder.rs` for the
    /// hardware encoder's).
    fn keyframe(&self) {
        let (Self::X264(e) | Self::V4l2(e) | Self::Rpicamsrc(e)) = self;
        let pad = e.upgrade().and_then(|e| e.static_pad("src"));
        if let Some(pad) = pad {
            let request = gst::Structure::builder(encoder::FORCE_KEY_UNIT)
                .field("all-headers", true)
                .build();
            pad.send_event(gst::event::CustomUpstream::new(request));
        }
    }

    /// Tells the encoder `kbps`; false when it is gone.
    fn set(&self, kbps: u32) -> bool {
        let bits = i32::try_from(u64::from(kbps) * 1000).unwrap_or(i32::MAX);
        match self {
            Self::X264(e) => e.upgrade().map(|e| e.set_property("bitrate", kbps)),
            Self::Rpicamsrc(e) => e.upgrade().map(|e| e.set_property("bitrate", bits)),
            Self::V4l2(e) => e
                .upgrade()
                .map(|e| encoder::set_controls(&e, |c| c.set("video_bitrate", bits))),
        }
        .is_some()
    }
}

/// What [`Bitrate`] keeps between reports.
#[derive(Debug)]
struct Inner {
    controller: Controller,
    encoder: Option<Encoder>,
    /// Bytes the encoder produced, where the last report left them.
    sent_at: Option<(u64, Instant)>,
    /// The same for NACKs: bytes, video packets and NACKs so far.
    nacks_at: Option<(u64, u64, u64, Instant)>,
    status: BitrateStatus,
    /// When to make the keyframe that mends what a cut's loss broke.
    keyframe_at: Option<Instant>,
}

/// The video bitrate of the agent's life: the controller, the running
/// encoder it sets, and the reports both uplinks feed it. Shared by the
/// video pipeline (encoder, plain RTP's RTCP) and the WebRTC uplink.
#[derive(Debug)]
pub struct Bitrate {
    adaptive: bool,
    inner: Mutex<Inner>,
    /// Bytes leaving the running encoder.
    bytes: Arc<AtomicU64>,
    /// The video's SSRC on the WebRTC uplink: report blocks about others
    /// (the audio) are not the video's.
    video_ssrc: Mutex<Option<u32>>,
}

impl Bitrate {
    /// The bitrate for `video`'s settings.
    pub fn new(video: &VideoSettings) -> Self {
        let (floor, ceiling) = (video.min_bitrate(), video.bitrate_kbps);
        let adaptive = video.adaptive_bitrate;
        Self {
            adaptive,
            inner: Mutex::new(Inner {
                controller: Controller::new(floor, ceiling),
                encoder: None,
                sent_at: None,
                nacks_at: None,
                keyframe_at: None,
                status: BitrateStatus {
                    kbps: ceiling,
                    configured_kbps: ceiling,
                    min_kbps: floor,
                    fixed: (!adaptive).then_some(Fixed::Configured),
                    loss_percent: None,
                    rtt_ms: None,
                    remb_kbps: None,
                    reports: 0,
                    rembs: 0,
                },
            }),
            bytes: Arc::default(),
            video_ssrc: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Takes the encoder of a newly built video pipeline: sets it to the
    /// current target and counts what it sends; listens to the plain-RTP
    /// RTCP of its `feedback` bin. Without an encoder that can change its
    /// rate (a camera program), the status says the rate is fixed.
    pub fn attach(self: &Arc<Self>, pipeline: &gst::Pipeline) {
        let found = Encoder::find(pipeline);
        if let Some(pad) = found.as_ref().and_then(|(_, e)| e.static_pad("src")) {
            let bytes = Arc::clone(&self.bytes);
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                    bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
        }
        self.with(|inner| {
            inner.encoder = found.map(|(encoder, _)| encoder);
            inner.controller.reset_applied();
            inner.sent_at = None;
            inner.nacks_at = None;
            if inner.encoder.is_none() {
                inner.status.fixed = Some(Fixed::CameraProgram);
            }
        });
        self.listen_plain_rtp(pipeline);
        self.update(Instant::now());
    }

    /// Parses the RTCP Janus sends to the plain-RTP `feedback` bin's socket.
    fn listen_plain_rtp(self: &Arc<Self>, pipeline: &gst::Pipeline) {
        let src = pipeline
            .by_name("feedback")
            .and_then(|bin| bin.downcast::<gst::Bin>().ok())
            .and_then(|bin| {
                bin.iterate_elements()
                    .into_iter()
                    .flatten()
                    .find(|e| e.factory().is_some_and(|f| f.name() == "udpsrc"))
            });
        if let Some(pad) = src.and_then(|src| src.static_pad("src")) {
            let bitrate = Arc::downgrade(self);
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let (Some(gst::PadProbeData::Buffer(buffer)), Some(bitrate)) =
                    (&info.data, bitrate.upgrade())
                {
                    if let Ok(map) = buffer.map_readable() {
                        bitrate.rtcp(&map);
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
    }

    /// The SSRC of the video on the WebRTC uplink.
    pub fn set_video_ssrc(&self, ssrc: u32) {
        *self
            .video_ssrc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ssrc);
    }

    /// Takes a compound RTCP packet from Janus.
    pub fn rtcp(&self, packet: &[u8]) {
        let feedback = parse(packet);
        let ssrc = *self
            .video_ssrc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let block = feedback
            .blocks
            .iter()
            .find(|b| ssrc.is_none_or(|s| s == b.ssrc));
        if block.is_none() && feedback.remb.is_none() {
            return;
        }
        let now = Instant::now();
        let sent_kbps = block.and_then(|_| self.sent_kbps(now));
        let report = Report {
            fraction_lost: block.map(|b| f64::from(b.fraction_lost) / 256.0),
            rtt: block.and_then(|b| b.rtt(ntp_middle_now())),
            remb_kbps: feedback
                .remb
                .map(|bits| u32::try_from(bits / 1000).unwrap_or(u32::MAX)),
            sent_kbps,
        };
        log::debug!("video bitrate: Janus reports {report:?}");
        self.with(|inner| {
            let status = &mut inner.status;
            if let Some(lost) = report.fraction_lost {
                status.reports += 1;
                status.loss_percent = Some((lost * 1000.0).round() / 10.0);
            }
            if let Some(rtt) = report.rtt {
                status.rtt_ms = u32::try_from(rtt.as_millis()).ok();
            }
            if let Some(kbps) = report.remb_kbps {
                status.rembs += 1;
                status.remb_kbps = Some(kbps);
            }
            inner.controller.report(now, &report);
        });
        self.update(now);
    }

    /// What the encoder sent since the last call, kbit/s.
    fn sent_kbps(&self, now: Instant) -> Option<u32> {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let before = self.with(|inner| inner.sent_at.replace((bytes, now)))?;
        kbps(bytes.saturating_sub(before.0), now - before.1)
    }

    /// Takes the WebRTC uplink's counts so far: video `packets` sent and
    /// `nacks` received (requests for a packet again). Called 4 times a
    /// second; the share NACKed since the last call is an early sign of loss.
    pub fn nacks(&self, now: Instant, packets: u64, nacks: u64) {
        if !self.adaptive {
            return;
        }
        let bytes = self.bytes.load(Ordering::Relaxed);
        self.with(|inner| {
            let Some((b, p, n, at)) = inner.nacks_at.replace((bytes, packets, nacks, now)) else {
                return;
            };
            let sent = packets.saturating_sub(p);
            // Too few packets to say (a still picture, a stalled encoder).
            if sent < 10 {
                return;
            }
            let share = nacks.saturating_sub(n) as f64 / sent as f64;
            if share >= NACK_CUT {
                log::debug!(
                    "video bitrate: NACKs for {:.0} % of {sent} packets",
                    share * 100.0
                );
            }
            let sent_kbps = kbps(bytes.saturating_sub(b), now - at);
            inner.controller.nacked(now, share, sent_kbps);
        });
        self.update(now);
    }

    /// Advances the controller's clock to `now`, tells the encoder a new
    /// rate when one is due, and returns the status. The supervisor calls
    /// it with each check of the pipeline (4 times a second), and each
    /// report does.
    pub fn update(&self, now: Instant) -> BitrateStatus {
        let adaptive = self.adaptive;
        self.with(|inner| {
            if !adaptive || inner.encoder.is_none() {
                return inner.status;
            }
            inner.controller.tick(now);
            if let Some(kbps) = inner.controller.due(now) {
                let set = inner.encoder.as_ref().is_some_and(|e| e.set(kbps));
                if set && kbps != inner.status.kbps {
                    log::info!("video bitrate: {kbps} kbit/s");
                }
                if set && kbps < inner.status.kbps {
                    // A cut: the link lost what it could not carry, for
                    // good (retransmissions crossed the same full link),
                    // and viewers wait for a keyframe they do not ask for.
                    // Made once the link had a moment to drain, or it is
                    // lost in turn; a deeper cut meanwhile does not delay it.
                    inner.keyframe_at.get_or_insert(now + KEYFRAME_AFTER_CUT);
                }
                if set {
                    inner.status.kbps = kbps;
                }
            }
            if inner.keyframe_at.is_some_and(|at| at <= now) {
                inner.keyframe_at = None;
                inner.encoder.as_ref().map(Encoder::keyframe);
            }
            inner.status
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A REMB from Janus (as the Streaming plugin sends it) reaches a real
    /// x264enc's `bitrate`; a pipeline without an encoder that can change
    /// (a camera program's) and `adaptive_bitrate = false` keep the rate
    /// and say why.
    #[test]
    fn the_running_encoder_is_told_and_the_fixed_cases_say_why() {
        gst::init().expect("GStreamer initialises");
        if gst::ElementFactory::find("x264enc").is_none() {
            eprintln!("skipped: no x264enc here (gstreamer1.0-plugins-ugly)");
            return;
        }
        let remb = [
            0x8F, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x07, 0x0D, 0x40,
            0, 0, 0, 7,
        ];
        // `pipeline` steered by `video`, after the REMB: the pipeline, and
        // the bitrate's status.
        let told = |video: &VideoSettings, pipeline: &str| {
            let pipeline = gst::parse::launch(pipeline)
                .expect("a pipeline")
                .downcast::<gst::Pipeline>()
                .expect("a pipeline");
            let bitrate = Arc::new(Bitrate::new(video));
            bitrate.attach(&pipeline);
            bitrate.rtcp(&remb);
            let status = bitrate.update(Instant::now());
            (pipeline, status)
        };
        let encoder_rate = |pipeline: &gst::Pipeline| {
            let enc = pipeline.by_name("enc").expect("x264enc");
            enc.property::<u32>("bitrate")
        };
        let video = VideoSettings {
            bitrate_kbps: 1500,
            ..VideoSettings::default()
        };
        let x264 = "videotestsrc is-live=true ! x264enc name=enc bitrate=1500 ! fakesink";
        let (pipeline, status) = told(&video, x264);
        assert_eq!(encoder_rate(&pipeline), 400);
        assert_eq!(
            (status.kbps, status.remb_kbps, status.fixed),
            (400, Some(400), None)
        );

        let fixed = VideoSettings {
            adaptive_bitrate: false,
            ..video
        };
        let (pipeline, status) = told(&fixed, x264);
        assert_eq!(encoder_rate(&pipeline), 1500);
        assert_eq!((status.kbps, status.fixed), (1500, Some(Fixed::Configured)));

        let (_, status) = told(&VideoSettings::default(), "appsrc ! h264parse ! fakesink");
        assert_eq!(
            (status.kbps, status.fixed),
            (2000, Some(Fixed::CameraProgram))
        );
    }
}
