//! Retransmissions sent twice: every packet Janus asks the WebRTC uplink for
//! again (a NACK) is sent once at once and once more [`AGAIN_AFTER`] later.
//!
//! Janus asks for a missing packet twice at most: 12 ms after it sees the
//! gap and 155 ms after that (ice.c, v1.1.2). A retransmission crosses the
//! same lossy link as the packet it replaces, so at 5 % loss one in twenty
//! is lost too, and the frame then waits ~170 ms for the second answer (a
//! freeze, at 30 frames a second); when that is lost as well, the picture
//! stops until the next keyframe. Sent twice, a retransmission is missing
//! only when both copies are (p² instead of p: 0.25 % at 5 % loss); Janus
//! keeps the first that arrives and drops the other as a duplicate. The
//! cost is one more copy of what is sent again: nothing without loss, +p of
//! the video's bitrate with it (measured in `docs/measurements/uplink-loss.md`).
//!
//! ```text
//! webrtcbin: ... ! rtprtxsend ! ...        <── NACK from Janus, as a
//!                      src pad               GstRTPRetransmissionRequest event
//!                       └── probe: counts it, and queues a copy (marked) that a
//!                           thread sends up the same pad AGAIN_AFTER later
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

/// How long after the first answer the second is sent: apart enough that
/// a burst of loss (Wi-Fi's are a few ms) seldom takes both.
pub const AGAIN_AFTER: Duration = Duration::from_millis(10);

/// The event `rtpsession` turns a NACK into, which `rtprtxsend` answers.
const REQUEST: &str = "GstRTPRetransmissionRequest";
/// Marks the copy, so that it is not copied again.
const AGAIN: &str = "broadcast-agent-again";

/// A request to send up a pad again, when due.
struct Again {
    due: Instant,
    pad: gst::glib::WeakRef<gst::Pad>,
    request: gst::Structure,
}

/// Has every `rtprtxsend` that `webrtcbin` makes inside `bin` answer each
/// request twice; `requests` counts the requests (Janus's NACKs, once each).
pub fn answer_twice(bin: &gst::Bin, requests: &Arc<AtomicU64>) {
    let (queue, due) = mpsc::channel::<Again>();
    let spawned = std::thread::Builder::new()
        .name("rtx-again".into())
        .spawn(move || send_when_due(&due));
    if let Err(e) = spawned {
        log::warn!("uplink: retransmissions are sent once only: {e}");
        return;
    }
    let requests = Arc::clone(requests);
    bin.connect_deep_element_added(move |_, _, element| {
        let is_rtx = element.factory().is_some_and(|f| f.name() == "rtprtxsend");
        if let (true, Some(pad)) = (is_rtx, element.static_pad("src")) {
            copy_requests(&pad, queue.clone(), Arc::clone(&requests));
        }
    });
}

/// Counts the requests reaching `pad` and queues a marked copy of each.
fn copy_requests(pad: &gst::Pad, queue: mpsc::Sender<Again>, requests: Arc<AtomicU64>) {
    let weak = pad.downgrade();
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(request) = event.structure().filter(|s| s.name() == REQUEST) else {
            return gst::PadProbeReturn::Ok;
        };
        if !request.has_field(AGAIN) {
            requests.fetch_add(1, Ordering::Relaxed);
            let mut copy = request.to_owned();
            copy.set(AGAIN, true);
            let again = Again {
                due: Instant::now() + AGAIN_AFTER,
                pad: weak.clone(),
                request: copy,
            };
            // The thread is gone only with the pipeline.
            let _ = queue.send(again);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Sends each queued copy when it is due (they come in due order), until
/// every queue's sender is gone with its pipeline.
fn send_when_due(due: &mpsc::Receiver<Again>) {
    while let Ok(again) = due.recv() {
        std::thread::sleep(again.due.saturating_duration_since(Instant::now()));
        if let Some(pad) = again.pad.upgrade() {
            pad.send_event(gst::event::CustomUpstream::new(again.request));
        }
    }
}
