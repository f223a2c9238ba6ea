//! The WebRTC uplink: one `webrtcbin` that publishes the camera and the
//! microphone to Janus, so that a lost packet is sent again (NACK → RTX)
//! and a keyframe request reaches the encoder.
//!
//! ```text
//! video pipeline: ... rtph264pay(ssrc) ! appsink ─┐  Feed (ssrc, sequence
//! microphone:     ... rtpopuspay(ssrc) ! appsink ─┤  and timestamps carried
//!                                                 │  over capture restarts)
//! uplink:   appsrc(video RTP) ─┐                  │
//!           appsrc(audio RTP) ─┴─> webrtcbin (max-bundle, sendonly, NACK/RTX)
//!                                  offer ──> Signalling ──> reconciler ──> Janus
//!                                  answer <── Signalling <── reconciler <──┘
//! ```
//!
//! Why a pipeline of its own: the capture pipelines stay as they are (a
//! dead camera must not silence the microphone, the microphone keeps its
//! clock and priority), and the PeerConnection can start over — GStreamer
//! 1.22 has no ICE restart, so every new PeerConnection is a new
//! `webrtcbin` — without touching the camera. The capture pipelines hand
//! their RTP through [`Feed`]; its SSRCs are fixed for the agent's life and
//! each restarted payloader continues the sequence numbers and timestamps,
//! so Janus sees one stream. Keyframe requests from Janus (viewers' PLIs,
//! and Janus's own) leave `webrtcbin` as force-key-unit events and are sent
//! on, upstream, into the video pipeline.
//!
//! The offer is made once both sink pads have caps (earlier, `webrtcbin`
//! makes none), and handed over whole once ICE gathering is complete.
//! ICE or DTLS failing, and Janus hanging up, end the run: the supervisor
//! starts a new one, which offers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_webrtc as gst_webrtc;
use serde::Serialize;

use super::bitrate::Bitrate;
use super::{element, Built, Given, MediaError, Recipe, Supervision};
use crate::config::{Settings, VideoSource};
use crate::rtp::Medium;
use crate::signalling::{OfferId, Replies, Signalling};
use crate::state::UplinkKind;

/// How often `webrtcbin` is asked for its statistics (they walk every
/// RTP session: not four times a second on a Pi Zero).
const STATS_EVERY: Duration = Duration::from_secs(1);

/// The elements WebRTC needs here, with their packages.
const ELEMENTS: [&str; 3] = ["webrtcbin", "nicesrc", "nicesink"];

/// What this machine lacks for the WebRTC uplink, if anything: one line
/// naming the element and the package.
pub fn missing_here() -> Option<&'static str> {
    ELEMENTS
        .into_iter()
        .find(|e| gst::ElementFactory::find(e).is_none())
        .map(|e| match e {
            "webrtcbin" => "webrtcbin is missing here: install gstreamer1.0-plugins-bad",
            _ => "libnice's GStreamer elements (nicesrc, nicesink) are missing here: install gstreamer1.0-nice",
        })
}

/// Where a capture pipeline's RTP meets the uplink, and what carries over
/// from one capture run to the next.
pub struct Feed {
    ssrc: [u32; 2],
    inner: Mutex<FeedInner>,
    /// Keyframes asked for through the uplink.
    requests: AtomicU64,
    /// Video packets handed to the uplink.
    video_packets: AtomicU64,
}

#[derive(Default)]
struct FeedInner {
    /// The running uplink's sources, by medium.
    sources: [Option<gst_app::AppSrc>; 2],
    /// The video pipeline's appsink, to send keyframe requests up from.
    video_sink: Option<gst::glib::WeakRef<gst_app::AppSink>>,
    /// The last packet each medium sent: sequence number, timestamp, when.
    last: [Option<(u16, u32, Instant)>; 2],
}

fn slot(medium: Medium) -> usize {
    match medium {
        Medium::Video => 0,
        Medium::Audio => 1,
    }
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            ssrc: [rand::random(), rand::random()],
            inner: Mutex::default(),
            requests: AtomicU64::new(0),
            video_packets: AtomicU64::new(0),
        }
    }
}

impl Feed {
    fn with<T>(&self, f: impl FnOnce(&mut FeedInner) -> T) -> T {
        f(&mut self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The tail of a capture pipeline with the WebRTC uplink: gives `pay`
    /// the medium's SSRC and carries its sequence numbers and timestamps
    /// on; returns the appsink that hands each packet to the uplink.
    pub fn tail(self: &Arc<Self>, medium: Medium, pay: &gst::Element) -> gst::Element {
        let i = slot(medium);
        pay.set_property("ssrc", self.ssrc[i]);
        if let Some((seq, ts, at)) = self.with(|inner| inner.last[i]) {
            let elapsed = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            let ticks = elapsed.saturating_mul(u64::from(medium.clock_rate())) / 1_000_000;
            pay.set_property("seqnum-offset", i32::from(seq.wrapping_add(1)));
            pay.set_property("timestamp-offset", ts.wrapping_add(ticks as u32));
        }
        let feed = Arc::downgrade(self);
        let sink = super::hand_over(move |sample| {
            if let Some(feed) = feed.upgrade() {
                feed.push(medium, sample);
            }
        });
        if medium == Medium::Video {
            self.with(|inner| inner.video_sink = Some(sink.downgrade()));
        }
        sink.upcast()
    }

    /// Hands a sample's packets to the uplink, if one runs (a payloader
    /// sends a frame's packets as one list); remembers where the stream is.
    fn push(&self, medium: Medium, sample: &gst::Sample) {
        let mut packets: Vec<gst::Buffer> = sample.buffer_owned().into_iter().collect();
        if let Some(list) = sample.buffer_list() {
            packets.extend(list.iter_owned());
        }
        let position = packets.last().and_then(|last| {
            let rtp = gstreamer_rtp::RTPBuffer::from_buffer_readable(last).ok()?;
            Some((rtp.seq(), rtp.timestamp(), Instant::now()))
        });
        let src = self.with(|inner| {
            inner.last[slot(medium)] = position.or(inner.last[slot(medium)]);
            inner.sources[slot(medium)].clone()
        });
        // A full or flushing appsrc drops the packet: RTX may send it again.
        if let Some(src) = src {
            if medium == Medium::Video {
                self.video_packets
                    .fetch_add(packets.len() as u64, Ordering::Relaxed);
            }
            for mut packet in packets {
                // Stamped anew on the uplink's clock by `do-timestamp`: the
                // capture pipeline's times (x264's start 1000 hours in) mean
                // nothing there, and webrtcbin paces by them.
                let packet_mut = packet.make_mut();
                packet_mut.set_pts(gst::ClockTime::NONE);
                packet_mut.set_dts(gst::ClockTime::NONE);
                let _ = src.push_buffer(packet);
            }
        }
    }

    /// Sends a keyframe request on, up the video pipeline to its encoder.
    fn request_keyframe(&self, event: gst::Event) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sink = self.with(|inner| inner.video_sink.as_ref().and_then(|w| w.upgrade()));
        if let Some(sink) = sink {
            sink.send_event(event);
        }
    }

    /// The uplink's sources (or none, once it stops).
    fn attach(&self, sources: [Option<gst_app::AppSrc>; 2]) {
        self.with(|inner| inner.sources = sources);
    }

    /// The caps of the medium's RTP, with its SSRC: `webrtcbin` offers them.
    fn caps(&self, medium: Medium, video_fmtp: &str) -> gst::Caps {
        let builder = gst::Caps::builder("application/x-rtp")
            .field("media", medium.name())
            .field("payload", i32::from(medium.payload_type()))
            .field("clock-rate", medium.clock_rate() as i32)
            .field("ssrc", self.ssrc[slot(medium)]);
        match medium {
            Medium::Video => {
                let mut builder = builder
                    .field("encoding-name", "H264")
                    .field("packetization-mode", "1");
                for (key, value) in video_fmtp.split(';').filter_map(|p| p.split_once('=')) {
                    if key == "profile-level-id" {
                        builder = builder.field(key, value);
                    }
                }
                builder.build()
            }
            Medium::Audio => builder
                .field("encoding-name", "OPUS")
                .field("encoding-params", "2")
                .build(),
        }
    }
}

/// What the uplink reports: the PeerConnection's state and its repairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UplinkCounts {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// RTP packets sent (both media).
    pub packets_sent: u64,
    /// Packets Janus asked for again (NACKs received).
    pub nacks_received: u64,
    /// Packets sent again (RTX; each twice, see `rtx.rs`).
    pub retransmitted: u64,
    /// Keyframes Janus asked for (viewers' and its own).
    pub keyframe_requests: u64,
    /// Round-trip time to Janus in milliseconds, from its receiver reports.
    pub rtt_ms: Option<u32>,
}

/// A running uplink's handle on its `webrtcbin`: withdraws the offer and
/// detaches from the feed when the pipeline goes.
pub struct Peer {
    webrtcbin: gst::Element,
    signalling: Arc<Signalling>,
    feed: Arc<Feed>,
    offer: Arc<Mutex<Option<OfferId>>>,
    connected: Arc<AtomicBool>,
    counts: Arc<Mutex<UplinkCounts>>,
    /// Janus's requests for a packet again (NACKs), counted as they come.
    nacks: Arc<AtomicU64>,
    /// When the statistics were last asked for.
    asked: Mutex<Option<Instant>>,
    /// Where Janus's receiver reports go (the video's bitrate), once
    /// `webrtcbin`'s RTP session is there to listen to.
    bitrate: Option<Arc<Bitrate>>,
    listening: AtomicBool,
}

impl Peer {
    /// What the uplink did so far; asks `webrtcbin` for fresh figures.
    pub fn counts(&self) -> UplinkCounts {
        self.refresh();
        self.listen_for_reports();
        let mut counts = *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.connected = self.connected.load(Ordering::Relaxed);
        counts.keyframe_requests = self.feed.requests.load(Ordering::Relaxed);
        counts.nacks_received = self.nacks.load(Ordering::Relaxed);
        if let Some(bitrate) = &self.bitrate {
            let packets = self.feed.video_packets.load(Ordering::Relaxed);
            bitrate.nacks(Instant::now(), packets, counts.nacks_received);
        }
        if let Some(rtx) = find_by_factory(&self.webrtcbin, "rtprtxsend") {
            counts.retransmitted = u64::from(rtx.property::<u32>("num-rtx-packets"));
        }
        counts
    }

    /// Hands the RTCP Janus sends (receiver reports, REMB) to the video's
    /// bitrate, once `webrtcbin` has made its RTP session (bundled: one).
    fn listen_for_reports(&self) {
        let Some(bitrate) = &self.bitrate else {
            return;
        };
        if self.listening.load(Ordering::Relaxed) {
            return;
        }
        let Some(rtpbin) = find_by_factory(&self.webrtcbin, "rtpbin") else {
            return;
        };
        let session =
            rtpbin.emit_by_name::<Option<gst::glib::Object>>("get-internal-session", &[&0u32]);
        let Some(session) = session else {
            return;
        };
        let bitrate = Arc::downgrade(bitrate);
        session.connect("on-receiving-rtcp", false, move |values| {
            let buffer = values.get(1).and_then(|v| v.get::<gst::Buffer>().ok());
            if let (Some(buffer), Some(bitrate)) = (buffer, bitrate.upgrade()) {
                if let Ok(map) = buffer.map_readable() {
                    bitrate.rtcp(&map);
                }
            }
            None
        });
        self.listening.store(true, Ordering::Relaxed);
    }

    /// Asks for `webrtcbin`'s statistics, at most every [`STATS_EVERY`];
    /// they arrive for a later call.
    fn refresh(&self) {
        {
            let mut asked = self
                .asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if asked.is_some_and(|at| at.elapsed() < STATS_EVERY) {
                return;
            }
            *asked = Some(Instant::now());
        }
        let counts = Arc::clone(&self.counts);
        let promise = gst::Promise::with_change_func(move |reply| {
            if let Ok(Some(stats)) = reply {
                let mut counts = counts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                read_stats(stats, &mut counts);
            }
        });
        self.webrtcbin
            .emit_by_name::<()>("get-stats", &[&None::<gst::Pad>, &promise]);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.feed.attach([None, None]);
        let offer = *self
            .offer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(offer) = offer {
            self.signalling.withdraw(offer);
        }
    }
}

/// Reads the packets sent and the round-trip time from `get-stats`.
fn read_stats(stats: &gst::StructureRef, counts: &mut UplinkCounts) {
    let mut sent = 0;
    for (_, value) in stats.iter() {
        let Ok(entry) = value.get::<gst::Structure>() else {
            continue;
        };
        // Each entry is named for its type.
        match entry.name().as_str() {
            "outbound-rtp" => {
                sent += entry.get::<u64>("packets-sent").unwrap_or(0);
            }
            "remote-inbound-rtp" => {
                if let Ok(rtt) = entry.get::<f64>("round-trip-time") {
                    // Whole milliseconds; a negative or absurd figure is none.
                    counts.rtt_ms = (0.0..60.0)
                        .contains(&rtt)
                        .then(|| (rtt * 1000.0).round() as u32);
                }
            }
            _ => {}
        }
    }
    counts.packets_sent = sent;
}

/// The element made by `factory` somewhere inside `bin`.
fn find_by_factory(bin: &gst::Element, factory: &str) -> Option<gst::Element> {
    let bin = bin.downcast_ref::<gst::Bin>()?;
    bin.iterate_recurse()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == factory))
}

/// The uplink pipeline's recipe.
pub struct Uplink {
    feed: Arc<Feed>,
    signalling: Arc<Signalling>,
    video: bool,
    audio: bool,
    video_fmtp: String,
    /// What Janus's mountpoint should receive through it: starving, it
    /// starts over with a new PeerConnection.
    janus: Option<super::JanusCheck>,
    /// The video's bitrate, which Janus's receiver reports steer.
    bitrate: Option<Arc<Bitrate>>,
}

impl Uplink {
    /// The uplink for the media that run (`video`, `audio`), fed by `feed`,
    /// offering through `signalling`; `video_fmtp` is what the mountpoint
    /// offers viewers (the H.264 profile and level the encoder makes).
    pub fn new(settings: &Settings, feed: Arc<Feed>, signalling: Arc<Signalling>) -> Self {
        let video = settings.video.source != VideoSource::None;
        let medium = if video { Medium::Video } else { Medium::Audio };
        Self {
            feed,
            signalling,
            video,
            audio: settings.microphone.enabled,
            video_fmtp: crate::janus::streaming::h264_fmtp(settings.video.h264_level()),
            janus: Some(super::JanusCheck {
                medium,
                within: settings.stream.janus_media_timeout,
                via: UplinkKind::Webrtc,
                hint: "starting a new PeerConnection".into(),
            }),
            bitrate: None,
        }
    }

    /// The uplink whose receiver reports steer `bitrate` (the video's).
    pub fn with_bitrate(mut self, bitrate: Option<Arc<Bitrate>>) -> Self {
        if let Some(bitrate) = &bitrate {
            bitrate.set_video_ssrc(self.feed.ssrc[slot(Medium::Video)]);
        }
        self.bitrate = bitrate;
        self
    }

    /// A live RTP source for `medium`, linked to a new sink pad of
    /// `webrtcbin` whose transceiver sends only, with NACK for video.
    fn source(
        &self,
        pipeline: &gst::Pipeline,
        webrtcbin: &gst::Element,
        medium: Medium,
    ) -> Result<gst_app::AppSrc, MediaError> {
        let src = gst_app::AppSrc::builder()
            .caps(&self.feed.caps(medium, &self.video_fmtp))
            .is_live(true)
            .do_timestamp(true)
            .format(gst::Format::Time)
            .max_bytes(1 << 20)
            .build();
        src.set_property_from_str("leaky-type", "downstream");
        pipeline
            .add(&src)
            .map_err(|e| MediaError::build("cannot add the uplink's source", e))?;
        let sink = webrtcbin
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Build("webrtcbin gave no sink pad".into()))?;
        let transceiver = sink.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
        transceiver.set_property(
            "direction",
            gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
        );
        transceiver.set_property("do-nack", medium == Medium::Video);
        transceiver.set_property("fec-type", gst_webrtc::WebRTCFECType::None);
        src.static_pad("src")
            .ok_or_else(|| MediaError::Build("appsrc without a src pad".into()))?
            .link(&sink)
            .map_err(|e| MediaError::build("cannot link the uplink's source", e))?;
        if medium == Medium::Video {
            forward_keyframe_requests(&src, &self.feed);
        }
        Ok(src)
    }
}

/// Sends the force-key-unit events that reach `src` from `webrtcbin` on
/// into the video pipeline.
fn forward_keyframe_requests(src: &gst_app::AppSrc, feed: &Arc<Feed>) {
    let Some(pad) = src.static_pad("src") else {
        return;
    };
    let feed = Arc::downgrade(feed);
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data {
            let keyframe = event
                .structure()
                .is_some_and(|s| s.name() == "GstForceKeyUnit");
            if let (true, Some(feed)) = (keyframe, feed.upgrade()) {
                feed.request_keyframe(event.clone());
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// UDP host candidates only: no TCP (Janus offers none by default), and
/// no UPnP — libnice would otherwise look for the home router on the LAN
/// and ask it to open a port for every PeerConnection.
fn quiet_ice(ice: &gst_webrtc::WebRTCICE) {
    ice.set_property("ice-tcp", false);
    if ice.has_property("agent") {
        let agent = ice.property::<gst::glib::Object>("agent");
        if agent.has_property("upnp") {
            agent.set_property("upnp", false);
        }
    }
}

/// Posts an error on `element`'s bus: the supervisor ends the run.
fn fail(element: &gst::Element, what: &str) {
    let message = gst::message::Error::builder(gst::ResourceError::Failed, what)
        .src(element)
        .build();
    let _ = element.post_message(message);
}

impl Recipe for Uplink {
    fn name(&self) -> &'static str {
        "uplink"
    }

    fn preflight(&self) -> Result<(), MediaError> {
        for factory in ["appsrc"].into_iter().chain(ELEMENTS) {
            super::devices::require_element(factory)?;
        }
        Ok(())
    }

    fn build(&self, _: &Given) -> Result<Built, MediaError> {
        let pipeline = gst::Pipeline::with_name("uplink");
        let webrtcbin = element("webrtcbin")?;
        webrtcbin.set_property_from_str("bundle-policy", "max-bundle");
        quiet_ice(&webrtcbin.property::<gst_webrtc::WebRTCICE>("ice-agent"));
        pipeline
            .add(&webrtcbin)
            .map_err(|e| MediaError::build("cannot add webrtcbin", e))?;
        let mut sources = [None, None];
        for (medium, wanted) in [(Medium::Video, self.video), (Medium::Audio, self.audio)] {
            if wanted {
                sources[slot(medium)] = Some(self.source(&pipeline, &webrtcbin, medium)?);
            }
        }
        let peer = Peer {
            webrtcbin: webrtcbin.clone(),
            signalling: Arc::clone(&self.signalling),
            feed: Arc::clone(&self.feed),
            offer: Arc::default(),
            connected: Arc::default(),
            counts: Arc::default(),
            nacks: Arc::default(),
            asked: Mutex::default(),
            bitrate: self.bitrate.clone(),
            listening: AtomicBool::new(false),
        };
        super::rtx::answer_twice(pipeline.upcast_ref(), &peer.nacks);
        offer_when_ready(&webrtcbin, &peer);
        watch_connection(&webrtcbin, &peer.connected);
        self.feed.attach(sources);
        let mut built = Built::plain(pipeline);
        built.peer = Some(peer);
        Ok(built)
    }

    fn supervision(&self) -> Supervision {
        Supervision {
            only_with: Some(UplinkKind::Webrtc),
            janus: self.janus.clone(),
            ..Supervision::default()
        }
    }
}

/// Makes the offer once every sink pad has caps, sets it as the local
/// description, and hands it to the signalling once ICE gathering is done.
fn offer_when_ready(webrtcbin: &gst::Element, peer: &Peer) {
    let asked = Arc::new(AtomicBool::new(false));
    for pad in webrtcbin.sink_pads() {
        let asked = Arc::clone(&asked);
        let bin = webrtcbin.downgrade();
        pad.connect_notify(Some("caps"), move |_, _| {
            let Some(bin) = bin.upgrade() else { return };
            let ready = bin.sink_pads().iter().all(|p| p.current_caps().is_some());
            if ready && !asked.swap(true, Ordering::SeqCst) {
                create_offer(&bin);
            }
        });
    }
    let signalling = Arc::downgrade(&peer.signalling);
    let offer = Arc::clone(&peer.offer);
    webrtcbin.connect_notify(Some("ice-gathering-state"), move |bin, _| {
        let state = bin.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
        if state != gst_webrtc::WebRTCICEGatheringState::Complete {
            return;
        }
        let Some(signalling) = signalling.upgrade() else {
            return;
        };
        let local =
            bin.property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description");
        match local.map(|d| d.sdp().as_text()) {
            Some(Ok(sdp)) => {
                let id = signalling.offer(sdp, replies(bin));
                *offer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id);
            }
            _ => fail(
                bin,
                "webrtcbin gathered its candidates but has no offer to show",
            ),
        }
    });
}

/// Asks `webrtcbin` for an offer and makes it the local description.
fn create_offer(webrtcbin: &gst::Element) {
    let bin = webrtcbin.downgrade();
    let promise = gst::Promise::with_change_func(move |reply| {
        let Some(bin) = bin.upgrade() else { return };
        let offer = match reply {
            Ok(Some(reply)) => reply
                .get::<gst_webrtc::WebRTCSessionDescription>("offer")
                .ok(),
            _ => None,
        };
        match offer {
            Some(offer) => {
                bin.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>])
            }
            None => fail(&bin, "webrtcbin made no offer"),
        }
    });
    webrtcbin.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
}

/// Where Janus's answer and hang-up go: into this `webrtcbin`.
fn replies(webrtcbin: &gst::Element) -> Replies {
    let for_answer = webrtcbin.downgrade();
    let for_hang_up = webrtcbin.downgrade();
    Replies {
        answer: Box::new(move |sdp| {
            let Some(bin) = for_answer.upgrade() else {
                return;
            };
            match gstreamer_sdp::SDPMessage::parse_buffer(sdp.as_bytes()) {
                Ok(sdp) => {
                    let answer = gst_webrtc::WebRTCSessionDescription::new(
                        gst_webrtc::WebRTCSDPType::Answer,
                        sdp,
                    );
                    bin.emit_by_name::<()>(
                        "set-remote-description",
                        &[&answer, &None::<gst::Promise>],
                    );
                }
                Err(e) => fail(&bin, &format!("Janus's answer is not SDP: {e}")),
            }
        }),
        hang_up: Box::new(move |why| {
            if let Some(bin) = for_hang_up.upgrade() {
                fail(&bin, &format!("the PeerConnection is over: {why}"));
            }
        }),
    }
}

/// Ends the run when ICE or DTLS fails; notes when both are up.
fn watch_connection(webrtcbin: &gst::Element, connected: &Arc<AtomicBool>) {
    let up = Arc::clone(connected);
    webrtcbin.connect_notify(Some("ice-connection-state"), move |bin, _| {
        use gst_webrtc::WebRTCICEConnectionState as Ice;
        match bin.property::<Ice>("ice-connection-state") {
            Ice::Failed => fail(bin, "ICE failed: no path to Janus for the WebRTC uplink"),
            Ice::Connected | Ice::Completed => up.store(true, Ordering::Relaxed),
            Ice::Disconnected | Ice::Closed => up.store(false, Ordering::Relaxed),
            _ => {}
        }
    });
    let up = Arc::clone(connected);
    webrtcbin.connect_notify(Some("connection-state"), move |bin, _| {
        use gst_webrtc::WebRTCPeerConnectionState as Pc;
        match bin.property::<Pc>("connection-state") {
            Pc::Failed => fail(bin, "the WebRTC uplink failed (ICE or DTLS)"),
            Pc::Connected => up.store(true, Ordering::Relaxed),
            _ => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restarted capture pipeline's payloader goes on where the last one
    /// stopped: same SSRC, the next sequence number, a later timestamp.
    #[test]
    fn a_restarted_payloader_continues_the_stream() {
        gst::init().expect("GStreamer initialises");
        let feed = Arc::new(Feed::default());
        let pay = element("rtph264pay").expect("rtph264pay");
        let _first = feed.tail(Medium::Video, &pay);
        assert_eq!(pay.property::<u32>("ssrc"), feed.ssrc[0]);
        assert_eq!(
            pay.property::<i32>("seqnum-offset"),
            -1,
            "the first run picks its own"
        );
        let before = Instant::now() - Duration::from_millis(100);
        feed.with(|inner| inner.last[0] = Some((u16::MAX, 1_000, before)));
        let again = element("rtph264pay").expect("rtph264pay");
        let _second = feed.tail(Medium::Video, &again);
        assert_eq!(again.property::<u32>("ssrc"), feed.ssrc[0]);
        assert_eq!(
            again.property::<i32>("seqnum-offset"),
            0,
            "wraps after 65535"
        );
        let offset = again.property::<u32>("timestamp-offset");
        assert!(
            (10_000..12_000).contains(&offset),
            "100 ms on at 90 kHz: {offset}"
        );
    }

    #[test]
    fn the_offered_caps_carry_the_ssrc_and_the_profile() {
        gst::init().expect("GStreamer initialises");
        let feed = Feed::default();
        let caps = feed.caps(
            Medium::Video,
            "profile-level-id=42e01f;packetization-mode=1",
        );
        let s = caps.structure(0).expect("one structure");
        assert_eq!(s.get::<&str>("profile-level-id"), Ok("42e01f"));
        assert_eq!(s.get::<u32>("ssrc"), Ok(feed.ssrc[0]));
        let audio = feed.caps(Medium::Audio, "");
        let a = audio.structure(0).expect("one structure");
        assert_eq!(a.get::<&str>("encoding-name"), Ok("OPUS"));
        assert_eq!(a.get::<i32>("clock-rate"), Ok(48_000));
    }
}
