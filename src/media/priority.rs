//! A higher scheduling priority for the microphone's streaming threads, for
//! as long as they carry the microphone.
//!
//! On a busy Pi (camera, a browser, other services) the threads that read
//! the sound card and push 20 ms Opus packets out waited up to ~100 ms for a
//! core (`benches/audio_gaps.py`); viewers' jitter buffers then grow, and
//! the picture runs ahead of the sound. The threads of the microphone
//! pipeline's source (the sound card's ring-buffer thread and the thread
//! that carries each buffer through processing, encoding and `udpsink`) get
//! nice [`NICE`] when GStreamer announces them: a `STREAM_STATUS` message of
//! type `Enter`, posted from the thread itself as its task starts.
//!
//! GStreamer's streaming threads come from one thread pool shared by every
//! pipeline (and GLib's idle threads by every pool), so a thread must not
//! keep the priority once its task is over: the nice value it had is kept
//! for it and given back on `Leave`, which GStreamer 1.22 posts from the
//! same thread when the task function returns (the task stopped and about
//! to be joined, not merely paused), before the thread goes back to the
//! pool. A `Leave` can still go unseen (the element already out of its
//! pipeline, or no bus to take it), so any other `Enter` on an agent
//! pipeline's bus gives it back as well, before that thread runs anything
//! else of the agent's.
//!
//! Where the system does not allow it (no `CAP_SYS_NICE`, no `RLIMIT_NICE`,
//! a seccomp filter) the threads keep their priority; that is said once in
//! the log.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

/// The nice value given to the threads (ordinary threads have 0).
pub const NICE: i32 = -10;

/// The pipeline whose source threads get the priority.
const PIPELINE: &str = "microphone";

/// A refusal has been logged.
static REFUSED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The nice value this thread had before [`raise_this_thread`]; `None`
    /// while it runs at its own.
    static GIVEN_BACK_ON_LEAVE: Cell<Option<i32>> = const { Cell::new(None) };
}

/// Raises the calling thread's priority when `message` announces it as a
/// streaming thread of the microphone's source, and gives it back when the
/// thread leaves that task or enters any other. Call it from a bus's sync
/// handler (of every pipeline), where it runs on the thread that posted the
/// message.
pub fn on_message(message: &gst::MessageRef) {
    let gst::MessageView::StreamStatus(status) = message.view() else {
        return;
    };
    let (kind, owner) = status.get();
    match kind {
        gst::StreamStatusType::Enter if is_microphone_source(&owner) => raise_this_thread(&owner),
        gst::StreamStatusType::Enter | gst::StreamStatusType::Leave => restore_this_thread(),
        _ => {}
    }
}

/// Whether `element` is the source of the microphone pipeline.
fn is_microphone_source(element: &gst::Element) -> bool {
    element.element_flags().contains(gst::ElementFlags::SOURCE)
        && element
            .parent()
            .is_some_and(|p| p.is::<gst::Pipeline>() && p.name() == PIPELINE)
}

/// The calling thread's id, as `setpriority` takes it.
fn this_thread() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    libc::id_t::try_from(tid).unwrap_or_default()
}

/// The calling thread's nice value, if it can be read.
fn own_nice() -> Option<i32> {
    // SAFETY: errno is thread-local; getpriority with PRIO_PROCESS and a
    // thread id reads that thread's nice value only (Linux). -1 is a valid
    // value, so errno tells a failure.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, this_thread());
        (*libc::__errno_location() == 0).then_some(nice)
    }
}

/// Sets the calling thread's nice value.
fn set_own_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority with PRIO_PROCESS and a thread id changes that
    // thread only (Linux).
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, this_thread(), nice) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Sets the calling thread's nice value to [`NICE`], keeping the one it had
/// for [`restore_this_thread`]; logs a refusal only once.
fn raise_this_thread(owner: &gst::Element) {
    let Some(before) = GIVEN_BACK_ON_LEAVE.get().or_else(own_nice) else {
        return;
    };
    match set_own_nice(NICE) {
        Ok(()) => {
            GIVEN_BACK_ON_LEAVE.set(Some(before));
            log::debug!(
                "microphone: thread {} of {} at nice {NICE} (was {before})",
                this_thread(),
                owner.name()
            );
        }
        Err(e) if !REFUSED.swap(true, Ordering::Relaxed) => log::info!(
            "microphone: its threads keep their priority (nice {NICE} refused: {e}); \
             the service unit allows it with LimitNICE= and the setpriority system call"
        ),
        Err(_) => {}
    }
}

/// Gives the calling thread back the nice value it had before
/// [`raise_this_thread`]; nothing if it was not raised.
fn restore_this_thread() {
    let Some(before) = GIVEN_BACK_ON_LEAVE.take() else {
        return;
    };
    match set_own_nice(before) {
        Ok(()) => log::debug!("thread {}: back at nice {before}", this_thread()),
        Err(e) => log::warn!(
            "thread {}: cannot give back nice {before} after the microphone: {e}",
            this_thread()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Whether this process may give a thread nice [`NICE`] (root, or
    /// `RLIMIT_NICE`), tried on a thread of its own.
    fn allowed() -> bool {
        std::thread::spawn(|| set_own_nice(NICE).is_ok())
            .join()
            .unwrap_or(false)
    }

    /// A pipeline called `name` (`audiotestsrc ! fakesink`) whose bus calls
    /// [`on_message`]; the receiver gets the nice value of the thread
    /// carrying its first buffer.
    fn pipeline(name: &str) -> (gst::Pipeline, mpsc::Receiver<i32>) {
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
            let _ = tx.try_send(own_nice().expect("own nice value"));
            gst::PadProbeReturn::Remove
        });
        (pipeline, rx)
    }

    /// The nice value of the thread carrying a pipeline called `name`.
    fn streaming_nice(name: &str) -> i32 {
        let (pipeline, rx) = pipeline(name);
        pipeline.set_state(gst::State::Playing).expect("playing");
        let nice = rx.recv_timeout(Duration::from_secs(10)).expect("a buffer");
        let _ = pipeline.set_state(gst::State::Null);
        nice
    }

    #[test]
    fn the_microphones_source_thread_runs_at_nice_minus_10_where_allowed() {
        let expected = if allowed() {
            NICE
        } else {
            own_nice().expect("nice")
        };
        assert_eq!(streaming_nice(PIPELINE), expected);
    }

    #[test]
    fn other_pipelines_keep_their_priority() {
        assert_eq!(streaming_nice("video"), own_nice().expect("nice"));
    }

    /// The source element of `pipeline`.
    fn source_of(pipeline: &gst::Pipeline) -> gst::Element {
        pipeline
            .children()
            .into_iter()
            .find(|e| e.element_flags().contains(gst::ElementFlags::SOURCE))
            .expect("a source")
    }

    #[test]
    fn a_thread_is_given_back_its_nice_value_when_it_leaves_or_enters_elsewhere() {
        gst::init().expect("GStreamer");
        let (mic, _) = pipeline(PIPELINE);
        let src = source_of(&mic);
        let post = |owner: &gst::Element, kind| {
            let message = gst::message::StreamStatus::new(kind, owner);
            on_message(&message);
            own_nice().expect("nice")
        };
        let (video, _) = pipeline("video");
        let other = source_of(&video);
        let after = std::thread::scope(|s| {
            s.spawn(|| {
                let start = own_nice().expect("nice");
                let raised = post(&src, gst::StreamStatusType::Enter);
                let left = post(&src, gst::StreamStatusType::Leave);
                post(&src, gst::StreamStatusType::Enter);
                let elsewhere = post(&other, gst::StreamStatusType::Enter);
                (start, raised, left, elsewhere)
            })
            .join()
            .expect("thread")
        });
        let (start, raised, left, elsewhere) = after;
        let expected = if allowed() { NICE } else { start };
        assert_eq!((raised, left, elsewhere), (expected, start, start));
    }
}
