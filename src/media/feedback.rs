//! The video's RTCP, both ways, and the keyframes it brings: sender reports
//! go to the mountpoint's `rtcpport` (`stream.video_rtcp_port`); Janus
//! learns the agent's address from them and sends the keyframe requests of
//! viewers (PLI, FIR: one when a viewer starts, more when one loses
//! packets) back to it, onto the same socket. `rtpsession` turns a request
//! for the agent's SSRC into a force-key-unit event upstream, which the
//! encoders the agent runs in-process obey (x264enc, v4l2h264enc,
//! rpicamsrc). A camera program behind a pipe cannot take one: it only
//! makes keyframes at its interval (see `capture.rs`).
//!
//! ```text
//!        ┌───────────────────────── feedback (a bin) ──────────────────────────┐
//! pay ─> │ rtpsession send_rtp_sink ──> send_rtp_src                           │ ─> udpsink (RTP)
//!        │            send_rtcp_src ──> udpsink ─┐ one socket: SR to Janus    │
//!        │            recv_rtcp_sink <── udpsrc <┘ PLI/FIR from Janus         │
//!        └─────────────────────────────────────────────────────────────────────┘
//! ```

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{element, MediaError};

/// Sender reports this often: Janus can pass requests back only once it has
/// had one, so the first comes soon after a (re)start.
const REPORT_INTERVAL: Duration = Duration::from_millis(500);

/// RTCP payload type of payload-specific feedback (RFC 4585).
const PSFB: u8 = 206;
/// Its formats that ask for a keyframe: picture loss (RFC 4585) and full
/// intra request (RFC 5104).
const PLI: u8 = 1;
const FIR: u8 = 4;

/// Keyframes the video pipeline sent and the requests for one it received.
/// Cheap to clone: clones share counts.
#[derive(Debug, Clone, Default)]
pub struct Keyframes {
    sent: Arc<AtomicU64>,
    requested: Arc<AtomicU64>,
}

impl Keyframes {
    /// Keyframes sent (counted where the payloader takes them).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Keyframe requests (PLI, FIR) received from Janus.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }

    /// Counts the keyframes passing `pad` (buffers not marked delta units).
    pub fn count_sent(&self, pad: &gst::Pad) {
        let sent = Arc::clone(&self.sent);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn count_requests(&self, pad: &gst::Pad) {
        let requested = Arc::clone(&self.requested);
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                if let Ok(map) = buffer.map_readable() {
                    requested.fetch_add(keyframe_requests(&map), Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
}

/// The keyframe requests in a compound RTCP packet; a malformed tail ends
/// the count.
fn keyframe_requests(mut rtcp: &[u8]) -> u64 {
    let mut count = 0;
    while let [first, kind, high, low, ..] = *rtcp {
        let length = 4 * (usize::from(u16::from_be_bytes([high, low])) + 1);
        if first >> 6 != 2 || length > rtcp.len() {
            break;
        }
        if kind == PSFB && matches!(first & 0x1F, PLI | FIR) {
            count += 1;
        }
        rtcp = &rtcp[length..];
    }
    count
}

/// The bin drawn above, sending RTCP to `host`:`port`; `keyframes` counts
/// the requests that arrive.
pub fn bin(host: IpAddr, port: u16, keyframes: &Keyframes) -> Result<gst::Element, MediaError> {
    let session = element("rtpsession")?;
    session.set_property(
        "rtcp-min-interval",
        u64::try_from(REPORT_INTERVAL.as_nanos()).unwrap_or(u64::MAX),
    );
    let (src, sink) = shared_socket(host, port)?;
    let bin = gst::Bin::with_name("feedback");
    bin.add_many([&session, &src, &sink])
        .map_err(|e| MediaError::build("feedback: cannot add elements", e))?;
    let link = |from: &gst::Element, pad: &str, to: &gst::Element, to_pad: &str| {
        from.link_pads(Some(pad), to, Some(to_pad))
            .map_err(|e| MediaError::build(&format!("feedback: cannot link {pad}"), e))
    };
    // Keyframe requests only from Janus: anybody else's could force a
    // keyframe on almost every frame.
    super::only_from(
        &src,
        host,
        "video pipeline: not taking RTCP from another sender than Janus",
    )?;
    link(&src, "src", &session, "recv_rtcp_sink")?;
    link(&session, "send_rtcp_src", &sink, "sink")?;
    if let Some(pad) = src.static_pad("src") {
        keyframes.count_requests(&pad);
    }
    // Sender reports of others would come out here; there are none, but an
    // unlinked pad would fail the stream if one came.
    if session.static_pad("sync_src").is_some() {
        let discard = element("fakesink")?;
        discard.set_property("async", false);
        bin.add(&discard)
            .map_err(|e| MediaError::build("feedback: cannot add fakesink", e))?;
        link(&session, "sync_src", &discard, "sink")?;
    }
    let rtp_in = session
        .request_pad_simple("send_rtp_sink")
        .ok_or_else(|| MediaError::Build("rtpsession gave no send_rtp_sink".into()))?;
    let rtp_out = session
        .static_pad("send_rtp_src")
        .ok_or_else(|| MediaError::Build("rtpsession gave no send_rtp_src".into()))?;
    for (name, target) in [("sink", rtp_in), ("src", rtp_out)] {
        let ghost = gst::GhostPad::builder_with_target(&target)
            .map_err(|e| MediaError::build("feedback: ghost pad", e))?
            .name(name)
            .build();
        bin.add_pad(&ghost)
            .map_err(|e| MediaError::build("feedback: cannot add a ghost pad", e))?;
    }
    Ok(bin.upcast())
}

/// A `udpsrc` on a port of its own and a `udpsink` to `host`:`port` that
/// sends from the same socket: Janus answers where the reports come from.
fn shared_socket(host: IpAddr, port: u16) -> Result<(gst::Element, gst::Element), MediaError> {
    let src = element("udpsrc")?;
    let any = if host.is_ipv6() { "::" } else { "0.0.0.0" };
    src.set_property("address", any);
    src.set_property("port", 0i32);
    src.set_property("caps", gst::Caps::new_empty_simple("application/x-rtcp"));
    src.set_state(gst::State::Ready)
        .map_err(|e| MediaError::build("feedback: cannot open a UDP socket", e))?;
    let socket = src.property_value("used-socket");
    let sink = element("udpsink")?;
    sink.set_property("host", host.to_string());
    sink.set_property("port", i32::from(port));
    sink.set_property("socket", socket);
    sink.set_property("close-socket", false);
    sink.set_property("sync", false);
    sink.set_property("async", false);
    Ok((src, sink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_found_in_compound_rtcp() {
        // A receiver report (no blocks), a PLI, a FIR, a generic NACK.
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let fir = [
            0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0,
        ];
        let nack = [0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 0];
        let compound = [&rr[..], &pli, &fir, &nack].concat();
        assert_eq!(keyframe_requests(&compound), 2);
        assert_eq!(keyframe_requests(&nack), 0);
        // A length past the end stops the count instead of reading on.
        assert_eq!(keyframe_requests(&[0x81, 206, 0, 9, 0, 0]), 0);
        assert_eq!(
            keyframe_requests(&[&pli[..], &[0x81, 206, 0, 9]].concat()),
            1
        );
    }
}
