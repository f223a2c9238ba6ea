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
