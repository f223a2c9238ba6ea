//! A higher scheduling priority for the microphone's streaming threads.
//!
//! On a busy Pi (camera, a browser, other services) the threads that read
//! the sound card and push 20 ms Opus packets out waited up to ~100 ms for a
//! core (`benches/audio_gaps.py`); viewers' jitter buffers then grow, and
//! the picture runs ahead of the sound. The threads of the microphone
//! pipeline's source (the sound card's ring-buffer thread and the thread
//! that carries each buffer through processing, encoding and `udpsink`) get
//! nice [`NICE`] when they start, as GStreamer announces them (a
//! `STREAM_STATUS` message of type `Enter`, posted from the new thread
//! itself). Where the system does not allow it (no `CAP_SYS_NICE`, no
//! `RLIMIT_NICE`, a seccomp filter) the threads keep their priority; that
//! is said once in the log.

use std::sync::atomic::{AtomicBool, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

/// The nice value given to the threads (ordinary threads have 0).
pub const NICE: i32 = -10;

/// The pipeline whose source threads get the priority.
const PIPELINE: &str = "microphone";

/// A refusal has been logged.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Raises the calling thread's priority when `message` announces it as a
/// streaming thread of the microphone's source. Call it from a bus's sync
/// handler, where it runs on the thread that posted the message.
pub fn on_message(message: &gst::MessageRef) {
    let gst::MessageView::StreamStatus(status) = message.view() else {
        return;
    };
    let (kind, owner) = status.get();
    if kind == gst::StreamStatusType::Enter && is_microphone_source(&owner) {
        raise_this_thread(&owner);
    }
}

/// Whether `element` is the source of the microphone pipeline.
fn is_microphone_source(element: &gst::Element) -> bool {
    element.element_flags().contains(gst::ElementFlags::SOURCE)
        && element
            .parent()
            .is_some_and(|p| p.is::<gst::Pipeline>() && p.name() == PIPELINE)
}

/// Sets the calling thread's nice value to [`NICE`], logging the outcome
/// (a refusal only once).
fn raise_this_thread(owner: &gst::Element) {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS
    // and a thread id changes that thread only (Linux).
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).unwrap_or_default();
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, NICE) } == 0 {
        log::debug!(
            "microphone: thread {tid} of {} at nice {NICE}",
            owner.name()
        );
    } else if !REFUSED.swap(true, Ordering::Relaxed) {
        log::info!(
            "microphone: its threads keep their priority (nice {NICE} refused: {}); \
             the service unit allows it with LimitNICE= and the setpriority system call",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// The calling thread's nice value.
    fn own_nice() -> i32 {
        // SAFETY: no preconditions; reads this thread's priority only.
        let tid = unsafe { libc::gettid() };
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::id_t::try_from(tid).unwrap_or(0)) }
    }

    /// Whether this process may give a thread nice [`NICE`] (root, or
    /// `RLIMIT_NICE`), tried on a thread of its own.
    fn allowed() -> bool {
        std::thread::spawn(|| {
            // SAFETY: changes the priority of this short-lived thread only.
            let tid = unsafe { libc::gettid() };
            let who = libc::id_t::try_from(tid).unwrap_or(0);
            unsafe { libc::setpriority(libc::PRIO_PROCESS, who, NICE) == 0 }
        })
        .join()
        .unwrap_or(false)
    }

    /// The nice value of the thread carrying the buffers of a pipeline
    /// called `name` (`audiotestsrc ! fakesink`) whose bus calls
    /// [`on_message`].
    fn streaming_nice(name: &str) -> i32 {
        gst::init().expect("GStreamer");
        let pipeline = gst::Pipeline::with_name(name);
        let src = gst::ElementFactory::make("audiotestsrc")
            .property("is-live", true)
            .build()
            .expect("audiotestsrc");
        let sink = gst::ElementFactory::make("fakesink")
            .build()
            .expect("fakesink");
        pipeline.add_many([&src, &sink]).expect("add");
        src.link(&sink).expect("link");
        pipeline.bus().expect("bus").set_sync_handler(|_, message| {
            on_message(message);
            gst::BusSyncReply::Drop
        });
        let (tx, rx) = mpsc::sync_channel(1);
        let pad = sink.static_pad("sink").expect("sink pad");
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let _ = tx.try_send(own_nice());
            gst::PadProbeReturn::Remove
        });
        pipeline.set_state(gst::State::Playing).expect("playing");
        let nice = rx.recv_timeout(Duration::from_secs(10)).expect("a buffer");
        let _ = pipeline.set_state(gst::State::Null);
        nice
    }

    #[test]
    fn the_microphones_source_thread_runs_at_nice_minus_10_where_allowed() {
        let expected = if allowed() { NICE } else { own_nice() };
        assert_eq!(streaming_nice(PIPELINE), expected);
    }

    #[test]
    fn other_pipelines_keep_their_priority() {
        assert_eq!(streaming_nice("video"), own_nice());
    }
}
