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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

use crate::config::VideoSettings;

/// Loss (a fraction) at or above which the link is taken as full. Janus's
/// receiver reports count a packet RTX mended as lost all the same (5 %
/// random loss showed as 3–8 %): below this, loss may be Wi-Fi's, which a
/// lower rate does not mend (GCC's threshold too).
const LOSS_CUT: f64 = 0.10;
/// Loss below which the rate may grow. In between it holds, unless it is
/// above where the link was last found full.
const LOSS_GROW: f64 = 0.02;
/// A cut leaves this share of what got through: room below the link's
/// rate for its buffer to fill again, so that the keyframe a viewer asks
/// for after the loss gets through whole.
const CUT_MARGIN: f64 = 0.8;
/// Growth per second far from the last congestion: a link that is back is
/// used again quickly.
const GROW_FAST: f64 = 0.25;
/// Growth per second up to the rate where the link was last full; from
/// there it rises to [`GROW_FAST`] at [`FAR`] times that rate.
const GROW_NEAR: f64 = 0.05;
/// Growth per second well below it (a cut that went too deep).
const GROW_BELOW: f64 = 0.12;
/// "Around" the last congestion: within this share of its rate.
const NEAR: f64 = 0.1;
/// Far from the last congestion: this many times its rate. Passed
/// without loss, the congestion is forgotten.
const FAR: f64 = 1.6;
/// Cuts this close together are one congestion.
const EPISODE: Duration = Duration::from_secs(5);
/// A round trip this much above the lowest one seen holds growth: a queue
/// is filling somewhere before loss shows it.
const RTT_HOLD: Duration = Duration::from_millis(100);
/// ... and this much above it cuts, as loss would.
const RTT_CUT: Duration = Duration::from_millis(300);
/// No second cut sooner than this: the next receiver report still covers
/// much of what was sent before the first.
const CUT_GAP: Duration = Duration::from_millis(1200);
/// Janus's NACKs for this share of the video's packets, over the last
/// quarter second, are loss seen early (a receiver report comes a second
/// later): the link is full (a full one showed 30–100 %). Random loss that
/// RTX mends stays below it: at 10 %, a quarter second of 40 packets
/// reaches it about once in 300.
const NACK_CUT: f64 = 0.25;
/// A cut within [`CUT_GAP`] of the last must go below this share of the
/// target.
const DEEPER: f64 = 0.8;
/// The most loss a NACK share is taken for.
const NACK_MOST: f64 = 0.5;
/// After a cut, no growth for this long.
const HOLD_AFTER_CUT: Duration = Duration::from_millis(2000);
/// After a cut, no growth past where the link was full for this long: each
/// probe past it that finds the link still full costs the viewers a
/// freeze, so not more often than about every 10 s.
const PROBE_AFTER: Duration = Duration::from_secs(8);
/// A REMB caps the rate for this long (the VideoRoom repeats its REMB
/// every 5 s, the Streaming plugin every second while viewers send one).
const REMB_VALID: Duration = Duration::from_secs(10);
/// The encoder is told a higher rate at most this often ...
const RAISE_EVERY: Duration = Duration::from_millis(500);
/// ... and only a change of at least this share (or one to a bound).
const MIN_STEP: f64 = 0.03;

/// What one report from Janus says; each part is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Report {
    /// Fraction of packets lost since the previous report (0.0..=1.0).
    pub fraction_lost: Option<f64>,
    /// Round-trip time to Janus.
    pub rtt: Option<Duration>,
    /// The receiver's estimate of what it can take, in kbit/s (REMB).
    pub remb_kbps: Option<u32>,
    /// What the encoder really sent since the previous report, kbit/s.
    pub sent_kbps: Option<u32>,
}

/// The target bitrate, from the reports.
///
/// Loss-based, as GCC's loss controller, but quicker on both sides, since
/// the Pi's link is usually either fine or capped (weak Wi-Fi). Tuned
/// against a real Janus behind an nftables policer (`tests/bitrate.rs`): a
/// cap shows no rising round trip, and its burst allowance (a second's
/// worth) hides it for a while, then loses a lot at once.
///
/// - **NACKs for 25 % or more of the video's packets** over a quarter
///   second (WebRTC): the link is full, seen a second before the receiver
///   report says so; a cut as below, with that share (at most half) as the
///   loss. It says when, not how much: Janus asks again for lost
///   retransmissions too, so the rate where the link was full comes from
///   the receiver reports only.
/// - **Loss ≥ 10 %**: the link is full. What got through,
///   `(1 - loss) × sent` (`sent`: what the encoder really sent meanwhile),
///   is the link's rate; the target goes to 80 % of it at once (at `sent`
///   2000 into a 1000 cap: 50 % loss, 800) — not GCC's `× (1 - loss/2)`,
///   which takes several reports, each a second of loss, and of
///   retransmissions that add to the load. The 20 % left lets the link's
///   buffer fill again, so that the keyframe viewers then ask for gets
///   through. That rate is remembered as where the link was full (in a run
///   of cuts, from the report with the most loss).
/// - **2–10 %**: hold (random loss, which RTX mends: Janus's reports count
///   mended packets as lost too, 3–8 % at 5 % random loss); cut as above
///   only when above where the link was last full (probing past a cap), so
///   that it never settles on a loss.
/// - **Below 2 %**: grow; 12 % a second up to 90 % of where the link was
///   last full, 5 % a second around it (±10 %), past it only 8 s after the
///   last cut (each probe that finds the link still full costs viewers a
///   freeze of a second or two), then faster, up to 25 % a second at 1.6
///   times it, where it is forgotten (the cap is gone). From a cap at 600 to
///   1500: under 20 s even when the last cut came just before the cap went.
/// - **Round trip** 100 ms above the lowest seen holds growth (a queue is
///   filling); 300 ms above cuts by 10 %. An early sign where loss comes
///   late (deep Wi-Fi queues); a policer shows none.
/// - **REMB** caps the target while fresh (10 s).
///
/// Never below the floor nor above the configured rate; a cut at most
/// every 1.2 s unless a much deeper one (below 80 %), growth paused 2 s
/// after one; the encoder is told a higher rate at most twice a second
/// and only steps of 3 % or more.
#[derive(Debug, Clone)]
pub struct Controller {
    floor: f64,
    ceiling: f64,
    target: f64,
    /// The rate where the link was last found full.
    congested_at: Option<f64>,
    last_cut: Option<Instant>,
    /// The most loss reported in the current run of cuts.
    worst_loss: f64,
    /// Growth is allowed (the last loss report was low).
    may_grow: bool,
    grown_at: Option<Instant>,
    min_rtt: Option<Duration>,
    remb: Option<(f64, Instant)>,
    /// What the encoder was last told, and when.
    applied: Option<(u32, Instant)>,
}

impl Controller {
    /// A controller between `floor_kbps` and `ceiling_kbps`, starting at the
    /// ceiling.
    pub fn new(floor_kbps: u32, ceiling_kbps: u32) -> Self {
        let ceiling = f64::from(ceiling_kbps.max(1));
        Self {
            floor: f64::from(floor_kbps.clamp(1, ceiling_kbps.max(1))),
            ceiling,
            target: ceiling,
            congested_at: None,
            last_cut: None,
            worst_loss: 0.0,
            may_grow: true,
            grown_at: None,
            min_rtt: None,
            remb: None,
            applied: None,
        }
    }

    /// The target, in kbit/s.
    pub fn target(&self) -> u32 {
        self.target.round() as u32
    }

    /// Takes a report received at `now`.
    pub fn report(&mut self, now: Instant, report: &Report) {
        if let Some(kbps) = report.remb_kbps {
            let kbps = f64::from(kbps);
            self.remb = Some((kbps, now));
            if self.target > kbps {
                self.target = kbps.max(self.floor);
            }
        }
        // What the loss is a share of: what was really sent while it was
        // measured (the encoder lags its target, and undershoots on a still
        // picture), else the target.
        let base = match report.sent_kbps {
            Some(sent) if sent > 0 => f64::from(sent),
            _ => self.target,
        };
        if let Some(lost) = report.fraction_lost {
            let lost = lost.clamp(0.0, 1.0);
            self.may_grow = lost < LOSS_GROW;
            let above_last = self.congested_at.is_some_and(|c| self.target > c);
            if lost >= LOSS_CUT || (lost >= LOSS_GROW && above_last) {
                // What got through is what the link carries, whether or
                // not the target moves now; in a run of cuts, as the report
                // with the most loss says: the link was surely full then (a
                // report that still covers the time before a cut shows a
                // little loss of a lowered rate, and the first of a cap may
                // show a burst that a buffer let through).
                let through = (1.0 - lost) * base;
                let episode = self.last_cut.is_some_and(|at| now - at < EPISODE);
                if !episode || lost >= self.worst_loss {
                    self.congested_at = Some(through);
                    self.worst_loss = lost;
                }
                self.cut(now, CUT_MARGIN * through);
            }
        }
        if let Some(rtt) = report.rtt {
            let min = self.min_rtt.map_or(rtt, |m| m.min(rtt));
            self.min_rtt = Some(min);
            if rtt > min + RTT_CUT {
                self.cut(now, 0.9 * base.min(self.target));
            }
            if rtt > min + RTT_HOLD {
                self.may_grow = false;
            }
        }
    }

    /// Takes the share of the video's packets Janus asked for again (NACK)
    /// over a short window, and what the encoder sent meanwhile: at
    /// [`NACK_CUT`] or more the link is full, as a receiver report of that
    /// loss would say a second later. Below it, nothing: the receiver
    /// reports decide growth.
    pub fn nacked(&mut self, now: Instant, share: f64, sent_kbps: Option<u32>) {
        if share < NACK_CUT {
            return;
        }
        // Under heavy loss Janus asks again for retransmissions lost too:
        // more NACKs than packets. A share tells the onset, not how much:
        // at most half is taken as lost; the next cut, if NACKs go on,
        // takes more.
        let lost = share.min(NACK_MOST);
        let base = sent_kbps.filter(|s| *s > 0).map_or(self.target, f64::from);
        self.may_grow = false;
        // NACKs go on for a while after a cut (the encoder lags, lost
        // retransmissions are asked for again): one cut per gap.
        if self.last_cut.is_some_and(|at| now - at < CUT_GAP) {
            return;
        }
        self.cut(now, CUT_MARGIN * (1.0 - lost) * base);
    }

    /// Lowers the target to `to` (not below the floor), unless it was cut
    /// less than [`CUT_GAP`] ago and `to` is not much lower (a report still
    /// covering the time before that cut; much heavier loss than it
    /// assumed cuts again).
    fn cut(&mut self, now: Instant, to: f64) {
        let recent = self.last_cut.is_some_and(|at| now - at < CUT_GAP);
        // At the floor already: nothing is cut (and growth is not held).
        if to.max(self.floor) >= self.target || (recent && to > DEEPER * self.target) {
            return;
        }
        self.target = to.max(self.floor);
        self.last_cut = Some(now);
        self.grown_at = None;
    }

    /// The highest the target may be now: the ceiling, or a fresh REMB.
    fn cap(&self, now: Instant) -> f64 {
        match self.remb {
            Some((kbps, at)) if now - at < REMB_VALID => kbps.clamp(self.floor, self.ceiling),
            _ => self.ceiling,
        }
    }

    /// Lets time pass: grows the target when allowed.
    pub fn tick(&mut self, now: Instant) {
        let cap = self.cap(now);
        let held = self.last_cut.is_some_and(|at| now - at < HOLD_AFTER_CUT);
        if !self.may_grow || held || self.target >= cap {
            self.grown_at = None;
            self.target = self.target.min(cap);
            return;
        }
        let Some(since) = self.grown_at.replace(now) else {
            return;
        };
        let rate = self
            .congested_at
            .map_or(GROW_FAST, |c| growth(self.target / c));
        let seconds = (now - since).as_secs_f64().min(1.0);
        let mut most = cap;
        if let (Some(c), Some(at)) = (self.congested_at, self.last_cut) {
            if now - at < PROBE_AFTER {
                most = most.min(c.max(self.target));
            }
        }
        self.target = (self.target * (1.0 + rate).powf(seconds)).min(most);
        if self.congested_at.is_some_and(|c| self.target >= FAR * c) {
            self.congested_at = None;
        }
    }

    /// The rate to give the encoder now, if it should change: any lower
    /// rate at once, a higher one at most every [`RAISE_EVERY`]; steps
    /// under [`MIN_STEP`] wait, unless they reach a bound.
    pub fn due(&mut self, now: Instant) -> Option<u32> {
        let target = self.target();
        let (applied, at) = match self.applied {
            None => {
                self.applied = Some((target, now));
                return Some(target);
            }
            Some(applied) => applied,
        };
        if target == applied {
            return None;
        }
        let step = (f64::from(target) - f64::from(applied)).abs() / f64::from(applied.max(1));
        let bound = target == self.floor.round() as u32 || target == self.ceiling.round() as u32;
        let small = step < MIN_STEP && !bound;
        if small || (target > applied && now - at < RAISE_EVERY) {
            return None;
        }
        self.applied = Some((target, now));
        Some(target)
    }

    /// Forgets what the encoder was told: a new one starts at the target.
    pub fn reset_applied(&mut self) {
        self.applied = None;
    }
}

/// Growth per second at `x` times the rate where the link was last full:
/// [`GROW_BELOW`] well below it, [`GROW_NEAR`] around it, then rising to
/// [`GROW_FAST`] at [`FAR`] times it.
fn growth(x: f64) -> f64 {
    if x < 1.0 - NEAR {
        GROW_BELOW
    } else if x < 1.0 + NEAR {
        GROW_NEAR
    } else {
        let far = ((x - 1.0 - NEAR) / (FAR - 1.0 - NEAR)).clamp(0.0, 1.0);
        GROW_NEAR + (GROW_FAST - GROW_NEAR) * far
    }
}

/// RTCP payload types (RFC 3550, 4585).
const SR: u8 = 200;
const RR: u8 = 201;
const PSFB: u8 = 206;
/// PSFB format of application-layer feedback, where REMB lives.
const AFB: u8 = 15;

/// One report block of a sender or receiver report (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The SSRC the block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 256ths.
    pub fraction_lost: u8,
    /// The middle 32 bits of the NTP time of the last sender report
    /// received from that source (0: none yet).
    pub lsr: u32,
    /// Delay since that sender report, in 65536ths of a second.
    pub dlsr: u32,
}

impl ReportBlock {
    /// The round trip this block shows, if it refers to a sender report:
    /// `now - LSR - DLSR` (RFC 3550 6.4.1), `now` as the NTP time's middle
    /// 32 bits. None for an absurd one (over 10 s, or negative).
    pub fn rtt(&self, now_ntp_middle: u32) -> Option<Duration> {
        if self.lsr == 0 {
            return None;
        }
        let ticks = now_ntp_middle
            .wrapping_sub(self.lsr)
            .wrapping_sub(self.dlsr);
        let rtt = Duration::from_secs_f64(f64::from(ticks) / 65536.0);
        (rtt < Duration::from_secs(10)).then_some(rtt)
    }
}

/// What a compound RTCP packet says about the stream's path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    /// Report blocks of sender and receiver reports.
    pub blocks: Vec<ReportBlock>,
    /// The bitrate of a REMB, in bit/s.
    pub remb: Option<u64>,
}

/// The report blocks and REMB in a compound RTCP packet; a malformed
/// part ends the reading.
pub fn parse(mut rtcp: &[u8]) -> Feedback {
    let mut out = Feedback::default();
    while let [first, kind, high, low, ..] = *rtcp {
        let length = 4 * (usize::from(u16::from_be_bytes([high, low])) + 1);
        if first >> 6 != 2 || length > rtcp.len() {
            break;
        }
        let packet = &rtcp[..length];
        let count = usize::from(first & 0x1F);
        match kind {
            SR => out.blocks.extend(blocks(packet.get(28..), count)),
            RR => out.blocks.extend(blocks(packet.get(8..), count)),
            PSFB if count == usize::from(AFB) => out.remb = remb(packet).or(out.remb),
            _ => {}
        }
        rtcp = &rtcp[length..];
    }
    out
}

/// Up to `count` report blocks of 24 bytes from `data`.
fn blocks(data: Option<&[u8]>, count: usize) -> Vec<ReportBlock> {
    let word = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    data.unwrap_or_default()
        .chunks_exact(24)
        .take(count)
        .map(|b| ReportBlock {
            ssrc: word(b, 0),
            fraction_lost: b[4],
            lsr: word(b, 16),
            dlsr: word(b, 20),
        })
        .collect()
}

/// The bitrate of a REMB (draft-alvestrand-rmcat-remb): after the sender
/// and media SSRCs, `REMB`, the SSRC count, a 6-bit exponent and an
/// 18-bit mantissa.
fn remb(packet: &[u8]) -> Option<u64> {
    let fci = packet.get(12..20)?;
    if &fci[..4] != b"REMB" {
        return None;
    }
    let exponent = u32::from(fci[5] >> 2);
    let mantissa = (u64::from(fci[5] & 0x03) << 16) | (u64::from(fci[6]) << 8) | u64::from(fci[7]);
    mantissa.checked_shl(exponent)
}

/// The middle 32 bits of the NTP time now (the wall clock), as LSR holds
/// a sender report's.
fn ntp_middle_now() -> u32 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs() + 2_208_988_800;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    ((seconds << 16) as u32) | ((fraction >> 16) as u32)
}

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

/// How a running encoder's rate is set.
#[derive(Debug, Clone)]
enum Encoder {
    /// `x264enc`'s `bitrate`, kbit/s.
    X264(gst::glib::WeakRef<gst::Element>),
    /// `v4l2h264enc`'s `extra-controls` `video_bitrate`, bit/s: set again
    /// while the device is open, GStreamer's v4l2object applies the
    /// controls again (`gst_v4l2_set_controls`).
    V4l2(gst::glib::WeakRef<gst::Element>),
    /// `rpicamsrc`'s `bitrate`, bit/s (MMAL takes it while running).
    Rpicamsrc(gst::glib::WeakRef<gst::Element>),
}

impl Encoder {
    /// The encoder among `elements` whose rate can change while it runs.
    fn find(pipeline: &gst::Pipeline) -> Option<(Self, gst::Element)> {
        pipeline
            .iterate_recurse()
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

    /// Tells the encoder `kbps`; false when it is gone.
    fn set(&self, kbps: u32) -> bool {
        let bits = i32::try_from(u64::from(kbps) * 1000).unwrap_or(i32::MAX);
        match self {
            Self::X264(e) => e.upgrade().map(|e| e.set_property("bitrate", kbps)),
            Self::Rpicamsrc(e) => e.upgrade().map(|e| e.set_property("bitrate", bits)),
            Self::V4l2(e) => e.upgrade().map(|e| {
                let mut controls = e
                    .property::<Option<gst::Structure>>("extra-controls")
                    .unwrap_or_else(|| gst::Structure::new_empty("controls"));
                controls.set("video_bitrate", bits);
                e.set_property("extra-controls", controls);
            }),
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
                if set {
                    inner.status.kbps = kbps;
                }
            }
            inner.status
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(fraction: f64) -> Report {
        Report {
            fraction_lost: Some(fraction),
            ..Report::default()
        }
    }

    /// Runs `c` for `seconds`, ticking every 250 ms, with a report every
    /// second: `report` of what was sent over that second (the encoder at
    /// the target each tick); the time at the end.
    fn run(
        c: &mut Controller,
        start: Instant,
        seconds: u64,
        report: impl Fn(f64) -> Report,
    ) -> Instant {
        let mut now = start;
        for _ in 0..seconds {
            let mut sent = 0.0;
            for _ in 0..4 {
                sent += c.target / 4.0;
                now += Duration::from_millis(250);
                c.tick(now);
            }
            c.report(now, &report(sent));
        }
        now
    }

    /// A link capped at `cap` kbit/s: what is sent above it is lost.
    fn capped(cap: f64) -> impl Fn(f64) -> Report {
        move |sent: f64| Report {
            fraction_lost: Some(((sent - cap) / sent).max(0.0)),
            sent_kbps: Some(sent as u32),
            ..Report::default()
        }
    }

    #[test]
    fn a_capped_link_brings_the_rate_under_the_cap_at_once_and_keeps_it_near() {
        let mut c = Controller::new(300, 2000);
        let start = Instant::now();
        c.report(start, &loss(0.5));
        assert_eq!(c.target(), 800, "80 % of what got through");
        let mut now = start;
        let (mut above, mut sum, mut trace) = (0, 0, Vec::new());
        for _ in 0..30 {
            now = run(&mut c, now, 1, capped(1000.0));
            assert!(c.target() >= 300);
            above += usize::from(c.target() > 1000);
            sum += c.target();
            trace.push(c.target());
        }
        assert!(sum / 30 > 900, "kept near the cap: {trace:?}");
        let most = trace.iter().max().copied().unwrap_or_default();
        assert!(
            above <= 10 && most < 1020,
            "above the cap {above} of 30 s, at most {most}: {trace:?}"
        );
    }

    #[test]
    fn from_the_floor_back_to_the_configured_rate_within_20_seconds() {
        let mut c = Controller::new(300, 2000);
        let start = Instant::now();
        // A cap at the floor for 30 s.
        let now = run(&mut c, start, 30, capped(250.0));
        assert_eq!(c.target(), 300, "never below the floor");
        // The cap goes.
        let mut now = now;
        let mut took = None;
        for second in 1..=20 {
            now = run(&mut c, now, 1, |_| loss(0.0));
            if c.target() == 2000 {
                took = Some(second);
                break;
            }
        }
        let took = took.expect("back at 2000 within 20 s");
        assert!(took <= 17, "took {took} s");
    }

    #[test]
    fn a_cut_just_before_the_cap_goes_still_recovers_within_20_seconds() {
        let mut c = Controller::new(150, 1500);
        let now = run(&mut c, Instant::now(), 30, capped(600.0));
        // The cap's last loss, just before it goes.
        let heavy = Report {
            fraction_lost: Some(0.3),
            sent_kbps: Some(c.target()),
            ..Report::default()
        };
        let mut now = now + Duration::from_secs(2);
        c.report(now, &heavy);
        let mut took = None;
        for second in 1..=20 {
            now = run(&mut c, now, 1, |_| loss(0.0));
            if c.target() == 1500 {
                took = Some(second);
                break;
            }
        }
        assert!(
            took.is_some_and(|t| t <= 19),
            "took {took:?}: at {}",
            c.target()
        );
    }

    #[test]
    fn small_loss_holds_and_never_goes_above_the_ceiling() {
        let mut c = Controller::new(300, 2000);
        let now = run(&mut c, Instant::now(), 10, |_| loss(0.0));
        assert_eq!(c.target(), 2000, "the ceiling is the most");
        c.report(now, &loss(0.3));
        let cut = c.target();
        assert_eq!(cut, 1120);
        // 3 % loss, no congestion known above: hold.
        let mut c2 = Controller::new(300, 2000);
        c2.target = 1000.0;
        c2.report(now, &loss(0.03));
        let _ = run(&mut c2, now, 10, |_| loss(0.03));
        assert_eq!(c2.target(), 1000, "holds at 3 %");
    }

    #[test]
    fn cuts_are_spaced_and_what_was_sent_is_the_base() {
        let mut c = Controller::new(100, 2000);
        let t = Instant::now();
        let heavy = Report {
            fraction_lost: Some(0.5),
            sent_kbps: Some(600),
            ..Report::default()
        };
        c.report(t, &heavy);
        assert_eq!(c.target(), 240, "80 % of half of the 600 really sent");
        // The next report still covers what was sent before the cut.
        c.report(t + Duration::from_millis(500), &heavy);
        assert_eq!(c.target(), 240, "no second cut within 1.2 s");
        c.report(t + Duration::from_millis(1300), &loss(0.5));
        assert_eq!(c.target(), 100, "not below the floor");
    }

    #[test]
    fn remb_caps_while_fresh_and_a_rising_round_trip_holds_growth() {
        let mut c = Controller::new(300, 2000);
        let t = Instant::now();
        c.report(
            t,
            &Report {
                remb_kbps: Some(800),
                ..Report::default()
            },
        );
        assert_eq!(c.target(), 800);
        let now = run(&mut c, t, 5, |_| loss(0.0));
        assert_eq!(c.target(), 800, "capped by the fresh REMB");
        let now = run(&mut c, now, 15, |_| loss(0.0));
        assert_eq!(c.target(), 2000, "the REMB went stale: grows again");
        // A REMB below the floor leaves the floor.
        c.report(
            now,
            &Report {
                remb_kbps: Some(100),
                ..Report::default()
            },
        );
        assert_eq!(c.target(), 300);

        let mut c = Controller::new(300, 2000);
        c.target = 1000.0;
        let rtt = |ms| Report {
            fraction_lost: Some(0.0),
            rtt: Some(Duration::from_millis(ms)),
            ..Report::default()
        };
        c.report(t, &rtt(20));
        c.report(t, &rtt(150));
        let now = run(&mut c, t, 3, |_| rtt(150));
        assert_eq!(c.target(), 1000, "a queue filling: no growth");
        c.report(now + Duration::from_secs(1), &rtt(400));
        assert_eq!(c.target(), 900, "a long queue: cut by 10 %");
    }

    #[test]
    fn many_nacks_cut_early_and_a_few_do_not() {
        let mut c = Controller::new(300, 2000);
        let t = Instant::now();
        c.nacked(t, 0.1, Some(2000));
        assert_eq!(c.target(), 2000, "random loss that RTX mends");
        c.nacked(t, 0.25, Some(1600));
        assert_eq!(c.target(), 960, "80 % of the 75 % of 1600 that got through");
        // The receiver report of that same loss, a second later: no second cut.
        let same = Report {
            fraction_lost: Some(0.25),
            sent_kbps: Some(1600),
            ..Report::default()
        };
        c.report(t + Duration::from_secs(1), &same);
        assert_eq!(c.target(), 960);
        c.tick(t + Duration::from_secs(2));
        c.tick(t + Duration::from_secs(3));
        assert_eq!(c.target(), 960, "no growth until a clean report");
    }

    #[test]
    fn the_encoder_is_told_seldom() {
        let mut c = Controller::new(300, 2000);
        let t = Instant::now();
        assert_eq!(c.due(t), Some(2000), "the first time, at once");
        assert_eq!(c.due(t), None);
        c.report(t, &loss(0.5));
        assert_eq!(c.due(t), Some(800), "a cut at once");
        let mut changes = 0;
        let mut now = t;
        for tick in 1..=60 {
            now += Duration::from_millis(250);
            if tick % 4 == 0 {
                c.report(now, &loss(0.0));
            }
            c.tick(now);
            changes += usize::from(c.due(now).is_some());
        }
        assert_eq!(c.target(), 2000);
        assert!(changes <= 30, "at most twice a second: {changes}");
        assert!(changes >= 4, "{changes}");
    }

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
        let launch = |text: &str| {
            gst::parse::launch(text)
                .expect("a pipeline")
                .downcast::<gst::Pipeline>()
                .expect("a pipeline")
        };
        let video = VideoSettings {
            bitrate_kbps: 1500,
            ..VideoSettings::default()
        };
        let x264 = "videotestsrc is-live=true ! x264enc name=enc bitrate=1500 ! fakesink";
        let pipeline = launch(x264);
        let bitrate = Arc::new(Bitrate::new(&video));
        bitrate.attach(&pipeline);
        bitrate.rtcp(&remb);
        let enc = pipeline.by_name("enc").expect("x264enc");
        assert_eq!(enc.property::<u32>("bitrate"), 400);
        let status = bitrate.update(Instant::now());
        assert_eq!(
            (status.kbps, status.remb_kbps, status.fixed),
            (400, Some(400), None)
        );

        let fixed = VideoSettings {
            adaptive_bitrate: false,
            ..video
        };
        let pipeline = launch(x264);
        let bitrate = Arc::new(Bitrate::new(&fixed));
        bitrate.attach(&pipeline);
        bitrate.rtcp(&remb);
        let enc = pipeline.by_name("enc").expect("x264enc");
        assert_eq!(enc.property::<u32>("bitrate"), 1500);
        let status = bitrate.update(Instant::now());
        assert_eq!((status.kbps, status.fixed), (1500, Some(Fixed::Configured)));

        let piped = launch("appsrc ! h264parse ! fakesink");
        let bitrate = Arc::new(Bitrate::new(&VideoSettings::default()));
        bitrate.attach(&piped);
        bitrate.rtcp(&remb);
        let status = bitrate.update(Instant::now());
        assert_eq!(
            (status.kbps, status.fixed),
            (2000, Some(Fixed::CameraProgram))
        );
    }

    #[test]
    fn report_blocks_and_remb_are_read_from_compound_rtcp() {
        // Janus's receiver report (janus_ice_outgoing_rtcp_handle): sender
        // SSRC, one block about 0x11223344, 25 % lost (64/256), cumulative
        // 7, highest 1000, jitter 5, LSR 0x12345678, DLSR 0x8000 (0.5 s).
        let rr = [
            0x81, 201, 0, 7, 0xAA, 0xBB, 0xCC, 0xDD, 0x11, 0x22, 0x33, 0x44, 64, 0, 0, 7, 0, 0,
            0x03, 0xE8, 0, 0, 0, 5, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0,
        ];
        // The Streaming plugin's REMB (janus_rtcp_remb, then fix_ssrc with
        // sender 1, media 0 and the source's SSRC): 1 SSRC, 400000 bit/s =
        // mantissa 200000 (0x30D40) << exponent 1.
        let remb = [
            0x8F, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x07, 0x0D, 0x40,
            0x11, 0x22, 0x33, 0x44,
        ];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let f = parse(&[&rr[..], &pli, &remb].concat());
        assert_eq!(
            f.blocks,
            vec![ReportBlock {
                ssrc: 0x1122_3344,
                fraction_lost: 64,
                lsr: 0x1234_5678,
                dlsr: 0x8000,
            }]
        );
        assert_eq!(f.remb, Some(400_000));
        // The round trip: now = LSR + DLSR + 0.25 s.
        let now = 0x1234_5678u32 + 0x8000 + 0x4000;
        assert_eq!(f.blocks[0].rtt(now), Some(Duration::from_millis(250)));
        assert_eq!(f.blocks[0].rtt(0x1234_5678), None, "negative: none");
        // A sender report's blocks follow its 20 bytes of sender info.
        let mut sr = vec![0x81, 200, 0, 12, 0, 0, 0, 9];
        sr.extend([0u8; 20]);
        sr.extend(&rr[8..]);
        assert_eq!(parse(&sr).blocks.len(), 1);
        // Not a REMB; a length past the end stops the reading.
        let afb = [&remb[..12], b"ABCD", &remb[16..]].concat();
        assert_eq!(parse(&afb).remb, None);
        assert_eq!(parse(&rr[..20]), Feedback::default());
    }

    #[test]
    fn janus_builds_its_remb_as_this_parser_reads_it() {
        // janus_rtcp_remb_ssrcs: the smallest exponent whose mantissa
        // fits 18 bits; 2 000 000 bit/s = 0x3D090 << 3 is 0x7A12 << 6.
        let bitrate: u32 = 2_000_000;
        let exp = (0..32).find(|b| bitrate <= (0x3FFFFu32 << b)).unwrap_or(31);
        let mantissa = bitrate >> exp;
        let mut remb = vec![0x8F, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0];
        remb.extend(b"REMB");
        remb.extend([
            1,
            ((exp << 2) as u8) + ((mantissa >> 16) & 0x03) as u8,
            (mantissa >> 8) as u8,
            mantissa as u8,
        ]);
        remb.extend([0, 0, 0, 7]);
        assert_eq!(parse(&remb).remb, Some(u64::from(mantissa << exp)));
        assert!(2_000_000 - parse(&remb).remb.unwrap_or(0) < 8);
    }
}
