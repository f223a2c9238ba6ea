//! Runs one pipeline for as long as the room is wanted open: starts it,
//! watches its bus, its output and what Janus receives, and restarts it with
//! capped exponential backoff when it fails. A run that delivered media for
//! a while (a camera that flaps) or lasted long enough resets the backoff:
//! only failures before anything flowed (no camera, a busy device) escalate.
//! Janus receiving nothing from a pipeline that runs fine (a firewall) gets a
//! few restarts; then the pipeline keeps running and the status says
//! `network: no media reaching Janus` until Janus receives again. Each
//! failure is logged once per change of error, not once per retry. Building
//! and starting a pipeline runs on a blocking thread: it may wait on devices
//! and on name lookups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::echo::{self, EchoDelay};
use super::speaker::PlayoutCounts;
use super::{Built, Given, JanusCheck, MediaError, Recipe, Supervision};
use crate::backoff::{Backoff, Policy};
use crate::secret::SrtpKey;
use crate::state::{Forward, Presence, RoomState, UplinkKind};

/// Restart delays: the first restart is quick (a blip), a failing device is
/// retried every half minute at most.
const RESTART: Policy = Policy {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(30),
};
/// A run this long counts as stable: the next failure restarts quickly again.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// A run that sent media for this long worked: its failure restarts at once
/// (the first step of the backoff), however often it happens.
const DELIVERED_RUN: Duration = Duration::from_secs(1);
/// Restarts for "Janus receives nothing" in a row; after these the pipeline
/// keeps running and the status reports the network.
const NO_MEDIA_RESTARTS: u32 = 3;
/// What the status says while Janus receives nothing from a running pipeline.
pub const NO_MEDIA: &str = "no media reaching Janus";
/// How often a running pipeline's output and Janus's view of it are checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a draining stop waits for end-of-stream to come through.
const DRAIN: Duration = Duration::from_secs(2);

/// What a pipeline is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Not wanted (room closed).
    Stopped,
    /// Being built and started.
    Starting,
    /// Playing.
    Running,
    /// Failed; waiting to restart.
    Failed,
}

/// The published status of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineStatus {
    /// `video`, `microphone`, `recorder` or `speaker`.
    pub name: &'static str,
    /// What it is doing.
    pub state: RunState,
    /// Restarts after failures since the agent started.
    pub restarts: u32,
    /// The last failure, until the pipeline runs again.
    pub last_error: Option<String>,
    /// RTP packets sent by this run, for the pipelines that send RTP.
    pub rtp: Option<RtpCounts>,
    /// What the speaker concealed and played late in this run.
    pub playout: Option<PlayoutCounts>,
    /// What the pipeline runs without (a missing element), e.g. echo
    /// cancellation.
    pub without: Option<String>,
    /// Keyframes sent and asked for in this run, for video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframes: Option<KeyframeCounts>,
    /// The echo's delay, for the microphone when it cancels echo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<EchoDelay>,
    /// A network problem seen while the pipeline runs fine locally
    /// ([`NO_MEDIA`]).
    pub network: Option<&'static str>,
    /// The PeerConnection and what it repaired, for the WebRTC uplink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<super::uplink::UplinkCounts>,
    /// The encoder's bitrate and what it follows, for video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<super::bitrate::BitrateStatus>,
}

/// RTP packets a pipeline sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RtpCounts {
    /// Packets sent.
    pub packets: u64,
    /// Gaps in their sequence numbers (packets the sender skipped).
    pub missing: u64,
}

/// Keyframes the video pipeline sent, and the requests for one it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyframeCounts {
    /// Keyframes sent.
    pub sent: u64,
    /// Keyframe requests (PLI, FIR) received from Janus.
    pub requests: u64,
}

impl RunState {
    /// The state in one lowercase word, as `status` shows it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failed => "failed",
        }
    }
}

impl PipelineStatus {
    /// A pipeline that has not started.
    pub fn stopped(name: &'static str) -> Self {
        Self {
            name,
            state: RunState::Stopped,
            restarts: 0,
            last_error: None,
            rtp: None,
            playout: None,
            without: None,
            keyframes: None,
            echo: None,
            network: None,
            uplink: None,
            bitrate: None,
        }
    }
}

/// Whether the pipeline should run in `state`: the room is wanted open,
/// no part of it is someone else's (nothing is sent into, or played from,
/// a room a stranger holds), and, for a pipeline of one uplink, that uplink
/// is chosen.
fn wanted(supervision: &Supervision, state: &RoomState) -> bool {
    state.wants_open()
        && state.conflict().is_none()
        && supervision
            .only_with
            .is_none_or(|kind| state.uplink.map(|u| u.kind) == Some(kind))
}

/// How a run failed.
struct RunFailure {
    error: MediaError,
    /// It sent media for at least [`DELIVERED_RUN`] first.
    delivered: bool,
}

impl From<MediaError> for RunFailure {
    fn from(error: MediaError) -> Self {
        Self {
            error,
            delivered: false,
        }
    }
}

/// Supervises the pipeline of `recipe` until the room watch closes.
pub async fn supervise(
    recipe: Arc<dyn Recipe>,
    mut room: watch::Receiver<RoomState>,
    status: watch::Sender<PipelineStatus>,
) {
    let name = recipe.name();
    let supervision = recipe.supervision();
    let runs = |s: &RoomState| wanted(&supervision, s);
    let mut backoff = Backoff::new(RESTART);
    let mut no_media = 0;
    let set = |state: RunState, error: Option<String>| {
        status.send_modify(|s| {
            s.state = state;
            s.last_error = error;
            s.network = None;
        });
    };
    loop {
        // The reconciler is gone (the agent is stopping): nothing more to run.
        if room.has_changed().is_err() {
            set(RunState::Stopped, None);
            return;
        }
        if !runs(&room.borrow()) {
            set(RunState::Stopped, None);
            if room.wait_for(runs).await.is_err() {
                return;
            }
        }
        let previous_error = status.borrow().last_error.clone();
        set(RunState::Starting, previous_error);
        let started = Instant::now();
        let failure = match run_once(&recipe, &mut room, &status, &mut no_media).await {
            Ok(()) => {
                backoff.reset();
                continue;
            }
            Err(failure) => RunFailure {
                error: recipe.explain(failure.error),
                ..failure
            },
        };
        no_media = match failure.error {
            MediaError::NotReceived { .. } => no_media + 1,
            _ => 0,
        };
        if failure.delivered || started.elapsed() >= STABLE_RUN {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        // Janus still receives nothing: a retry, not news.
        let repeated = no_media > 1;
        report(name, &failure.error, delay, &status, repeated);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            closed = room.wait_for(|s| !runs(s)) => if closed.is_err() { return },
        }
    }
}

/// Publishes a failure; logs it unless it is `repeated` or the same as the
/// last one.
fn report(
    name: &str,
    failure: &MediaError,
    delay: Duration,
    status: &watch::Sender<PipelineStatus>,
    repeated: bool,
) {
    let message = failure.to_string();
    if !repeated && status.borrow().last_error.as_deref() != Some(message.as_str()) {
        log::warn!(
            "{name} pipeline: {message}; restarting in {} ms",
            delay.as_millis()
        );
    } else {
        log::debug!(
            "{name} pipeline failed again; restarting in {} ms",
            delay.as_millis()
        );
    }
    status.send_modify(|s| {
        s.state = RunState::Failed;
        s.restarts += 1;
        s.last_error = Some(message);
        s.network = None;
    });
}

/// Builds and starts the pipeline on a blocking thread: building may start
/// a camera program, open devices and look up `stream.host`.
async fn build_and_start(
    recipe: &Arc<dyn Recipe>,
    given: Given,
) -> Result<(Built, mpsc::UnboundedReceiver<MediaError>), MediaError> {
    let recipe = Arc::clone(recipe);
    tokio::task::spawn_blocking(move || {
        let built = recipe.build(&given)?;
        let failed = start(&built)?;
        Ok((built, failed))
    })
    .await
    .unwrap_or_else(|e| {
        Err(MediaError::Build(format!(
            "building the pipeline failed: {e}"
        )))
    })
}

/// What a pipeline takes from the published state before it starts.
#[derive(Debug, Clone, Copy)]
struct Inputs {
    /// The mountpoint's SRTP key, for a pipeline that encrypts with it.
    key: Option<SrtpKey>,
    /// The forwarder to play, for the speaker.
    forward: Option<Forward>,
    /// The uplink chosen, for a pipeline whose tail depends on it.
    uplink: Option<UplinkKind>,
}

impl Inputs {
    /// Waits until the reconciler has made what the pipeline needs (the
    /// mountpoint's key, the forwarder); None when the room closes first.
    async fn wait(
        supervision: &Supervision,
        room: &mut watch::Receiver<RoomState>,
    ) -> Option<Self> {
        let ready = |s: &RoomState| {
            (!supervision.srtp || s.srtp_key.is_some())
                && (!supervision.forward || s.forward.is_some())
                && (!supervision.uplink || s.uplink.is_some())
        };
        let runs = |s: &RoomState| wanted(supervision, s);
        let state = room.wait_for(|s| !runs(s) || ready(s)).await.ok()?;
        runs(&state).then(|| Self {
            key: state.srtp_key.filter(|_| supervision.srtp),
            forward: state.forward.filter(|_| supervision.forward),
            uplink: state.uplink.map(|u| u.kind).filter(|_| supervision.uplink),
        })
    }

    /// What the recipe builds with.
    fn given(&self) -> Given {
        Given {
            srtp: self.key,
            uplink: self.uplink,
        }
    }

    /// Why a running pipeline must start over with new inputs, if it must.
    fn stale(&self, supervision: &Supervision, state: &RoomState) -> Option<&'static str> {
        if supervision.srtp && state.srtp_key != self.key {
            Some("the mountpoint's SRTP key changed (mountpoint re-created)")
        } else if supervision.forward && state.forward.is_some_and(|f| Some(f) != self.forward) {
            Some("the room's forwarder changed (new address or key)")
        } else if supervision.uplink && state.uplink.map(|u| u.kind) != self.uplink {
            Some("the uplink changed")
        } else {
            None
        }
    }
}

/// Builds, starts and watches the pipeline once. `Ok` means it was stopped
/// because the room was closed; `Err` says why it failed. After
/// `no_media` restarts in a row for Janus receiving nothing, a restart is
/// news only the first time, and from [`NO_MEDIA_RESTARTS`] on that is
/// reported, not a failure; once Janus receives, the count starts again.
async fn run_once(
    recipe: &Arc<dyn Recipe>,
    room: &mut watch::Receiver<RoomState>,
    status: &watch::Sender<PipelineStatus>,
    no_media: &mut u32,
) -> Result<(), RunFailure> {
    recipe.preflight()?;
    let supervision = recipe.supervision();
    let Some(inputs) = Inputs::wait(&supervision, room).await else {
        return Ok(());
    };
    let (mut built, mut failed) = build_and_start(recipe, inputs.given()).await?;
    announce_running(recipe.name(), &built, status, *no_media > 1);
    let playing_since = Instant::now();
    let delivered = |built: &Built| {
        playing_since.elapsed() >= DELIVERED_RUN
            && built.flow.as_ref().is_some_and(|f| f.rtp().packets() > 0)
    };
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        let error = tokio::select! {
            failure = failed.recv() => {
                failure.unwrap_or_else(|| MediaError::Ended("the pipeline's bus closed".into()))
            }
            _ = check.tick() => {
                publish_counts(&built, status);
                match health(&mut built, &supervision, room, playing_since) {
                    Err(MediaError::NotReceived { .. }) if *no_media >= NO_MEDIA_RESTARTS => {
                        network(recipe.name(), status, Some(NO_MEDIA));
                        continue;
                    }
                    Err(error) => error,
                    Ok(()) => {
                        if received(&supervision, &room.borrow()) {
                            *no_media = 0;
                        }
                        network(recipe.name(), status, None);
                        continue;
                    }
                }
            }
            changed = room.changed() => {
                if changed.is_err() || !wanted(&supervision, &room.borrow()) {
                    if supervision.drain_on_stop {
                        built.pipeline.send_event(gst::event::Eos::new());
                        // The bus reports the EOS (or an error) as a failure.
                        let _ = tokio::time::timeout(DRAIN, failed.recv()).await;
                    }
                    log::info!("{} pipeline: stopped (room closed)", recipe.name());
                    return Ok(());
                }
                if let Some(why) = inputs.stale(&supervision, &room.borrow()) {
                    log::info!("{} pipeline: {why}: restarting", recipe.name());
                    return Ok(());
                }
                continue;
            }
        };
        return Err(RunFailure {
            error,
            delivered: delivered(&built),
        });
    }
}

/// Sets or clears the pipeline's network note; logs each change once.
fn network(name: &str, status: &watch::Sender<PipelineStatus>, note: Option<&'static str>) {
    let changed = status.send_if_modified(|s| {
        let changed = s.network != note;
        s.network = note;
        changed
    });
    match (changed, note) {
        (false, _) => {}
        (true, Some(note)) => log::warn!(
            "{name} pipeline: network: {note} after {NO_MEDIA_RESTARTS} restarts; \
             keeping the pipeline running and checking again"
        ),
        (true, None) => log::info!("{name} pipeline: media reaches Janus again"),
    }
}

/// Sets the pipeline playing; its bus failures arrive on the receiver, and
/// its streaming threads get (and give back) their priority
/// ([`super::priority`]).
fn start(built: &Built) -> Result<mpsc::UnboundedReceiver<MediaError>, MediaError> {
    let (failures, mut failed) = mpsc::unbounded_channel();
    let bus = built
        .pipeline
        .bus()
        .ok_or_else(|| MediaError::Build("pipeline without a bus".into()))?;
    bus.set_sync_handler(move |_, message| {
        super::priority::on_message(message);
        if let Some(failure) = failure_in(message) {
            let _ = failures.send(failure);
        }
        gst::BusSyncReply::Drop
    });
    if built.pipeline.set_state(gst::State::Playing).is_err() {
        return Err(failed
            .try_recv()
            .unwrap_or_else(|_| MediaError::Build("the pipeline refused to start".into())));
    }
    Ok(failed)
}

/// Publishes a started pipeline; logs it, at debug level when `quiet`.
fn announce_running(
    name: &str,
    built: &Built,
    status: &watch::Sender<PipelineStatus>,
    quiet: bool,
) {
    let recovered = status.borrow().last_error.is_some();
    status.send_modify(|s| {
        s.state = RunState::Running;
        s.last_error = None;
        s.rtp = None;
        s.playout = None;
        s.echo = None;
        s.without = built.without.clone();
        s.keyframes = None;
        s.uplink = None;
    });
    if quiet {
        log::debug!("{name} pipeline: running again (Janus to receive it)");
    } else if recovered {
        log::info!("{name} pipeline: running again");
    } else {
        log::info!("{name} pipeline: running");
    }
}

/// The periodic checks of a playing pipeline: its camera program, its
/// output, and what Janus receives of it.
fn health(
    built: &mut Built,
    supervision: &Supervision,
    room: &watch::Receiver<RoomState>,
    playing_since: Instant,
) -> Result<(), MediaError> {
    if let Some(status) = built.helper.as_mut().and_then(|h| h.exited()) {
        return Err(MediaError::Ended(format!(
            "the camera program exited: {status}"
        )));
    }
    if let (Some(flow), Some(limit)) = (&built.flow, supervision.stall_timeout) {
        if flow.idle() > limit {
            return Err(MediaError::Stalled(limit.as_secs()));
        }
    }
    if let Some(check) = &supervision.janus {
        if starved(check, &room.borrow()) && playing_since.elapsed() > check.within {
            return Err(MediaError::NotReceived {
                medium: check.medium,
                secs: check.within.as_secs(),
                hint: check.hint.clone(),
            });
        }
    }
    Ok(())
}

/// Whether Janus, with the mountpoint in place, has not received the
/// medium over the check's uplink for longer than the check allows.
fn starved(check: &JanusCheck, state: &RoomState) -> bool {
    matches!(state.mountpoint, Presence::Present(_))
        && state.uplink.is_none_or(|u| u.kind == check.via)
        && state
            .media_age
            .of(check.medium)
            .is_some_and(|age| age > check.within)
}

/// Whether Janus, by its last report, receives the medium the pipeline
/// sends.
fn received(supervision: &Supervision, state: &RoomState) -> bool {
    supervision.janus.as_ref().is_some_and(|check| {
        state
            .media_age
            .of(check.medium)
            .is_some_and(|age| age <= check.within)
    })
}

fn publish_counts(built: &Built, status: &watch::Sender<PipelineStatus>) {
    let rtp = built.flow.as_ref().map(|flow| RtpCounts {
        packets: flow.rtp().packets(),
        missing: flow.rtp().missing(),
    });
    let playout = built.playout.as_ref().map(|p| p.counts());
    let keyframes = built
        .flow
        .as_ref()
        .and_then(|f| f.keyframes())
        .map(|k| KeyframeCounts {
            sent: k.sent(),
            requests: k.requested(),
        });
    let echo = built.echo.map(echo::Tracker::status);
    let uplink = built.peer.as_ref().map(super::uplink::Peer::counts);
    let bitrate = built.bitrate.as_ref().map(|b| b.update(Instant::now()));
    status.send_if_modified(|s| {
        let changed = s.rtp != rtp
            || s.playout != playout
            || s.keyframes != keyframes
            || s.echo != echo
            || s.uplink != uplink
            || s.bitrate != bitrate;
        s.rtp = rtp;
        s.playout = playout;
        s.keyframes = keyframes;
        s.echo = echo;
        s.uplink = uplink;
        s.bitrate = bitrate;
        changed
    });
}

/// The failure a bus message reports, if it reports one.
fn failure_in(message: &gst::Message) -> Option<MediaError> {
    match message.view() {
        gst::MessageView::Error(err) => Some(MediaError::Bus {
            element: err
                .src()
                .map_or_else(|| "pipeline".into(), |s| s.path_string().to_string()),
            message: err.error().to_string(),
            // One log line per failure: GStreamer's debug texts hold newlines.
            debug: err
                .debug()
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }),
        gst::MessageView::Eos(_) => Some(MediaError::Ended(
            "the source ended the stream (did the camera program exit?)".into(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::Medium;
    use crate::state::{Desired, Fit};

    /// A live test pattern into a `fakesink`, that Janus is said to expect
    /// as video within 300 ms.
    struct Pattern;

    impl Recipe for Pattern {
        fn name(&self) -> &'static str {
            "video"
        }

        fn preflight(&self) -> Result<(), MediaError> {
            Ok(())
        }

        fn build(&self, _: &Given) -> Result<Built, MediaError> {
            let pipeline = gst::parse::launch("videotestsrc is-live=true ! fakesink")
                .map_err(|e| MediaError::Build(e.to_string()))?
                .downcast::<gst::Pipeline>()
                .map_err(|_| MediaError::Build("not a pipeline".into()))?;
            Ok(Built::plain(pipeline))
        }

        fn supervision(&self) -> Supervision {
            Supervision {
                janus: Some(JanusCheck {
                    medium: Medium::Video,
                    within: Duration::from_millis(300),
                    via: UplinkKind::Rtp,
                    hint: "check stream.host (192.0.2.1) and firewalls".into(),
                }),
                ..Supervision::default()
            }
        }
    }

    fn room(video_age_ms: u64) -> RoomState {
        let mut state = RoomState::new(1, Desired::Open);
        state.mountpoint = Presence::Present(Fit::Matches);
        state.media_age.video_ms = Some(video_age_ms);
        state
    }

    /// Janus says it receives nothing while the pipeline plays (a wrong
    /// stream.host, a firewall): the pipeline is restarted, and the status
    /// says what to check. Real GStreamer; Janus's view is given.
    #[tokio::test]
    async fn media_janus_does_not_receive_is_a_failure() {
        gst::init().expect("GStreamer initialises");
        let (room_tx, room_rx) = watch::channel(room(60_000));
        let (status_tx, mut status_rx) = watch::channel(PipelineStatus::stopped("video"));
        let supervisor = tokio::spawn(supervise(Arc::new(Pattern), room_rx, status_tx));
        let failed = tokio::time::timeout(
            Duration::from_secs(5),
            status_rx.wait_for(|s| s.state == RunState::Failed),
        )
        .await
        .expect("the pipeline fails within 5 s")
        .expect("status published")
        .clone();
        let error = failed.last_error.unwrap_or_default();
        assert!(error.contains("Janus has received no video"), "{error}");
        assert!(error.contains("check stream.host (192.0.2.1)"), "{error}");

        // Once Janus receives again, the restarted pipeline stays up.
        room_tx.send_modify(|s| s.media_age.video_ms = Some(20));
        tokio::time::timeout(
            Duration::from_secs(5),
            status_rx.wait_for(|s| s.state == RunState::Running),
        )
        .await
        .expect("running again within 5 s")
        .expect("status published");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(status_rx.borrow().state, RunState::Running);
        drop(room_tx);
        let _ = supervisor.await;
    }

    /// Janus never receives (a firewall): after a few restarts the
    /// pipeline keeps running and reports the network; once Janus receives
    /// again the note goes away. Real GStreamer; Janus's view is given.
    #[tokio::test]
    async fn media_no_media_at_janus_is_reported_after_bounded_restarts() {
        gst::init().expect("GStreamer initialises");
        let (room_tx, room_rx) = watch::channel(room(60_000));
        let (status_tx, mut status_rx) = watch::channel(PipelineStatus::stopped("video"));
        let supervisor = tokio::spawn(supervise(Arc::new(Pattern), room_rx, status_tx));
        let reported = tokio::time::timeout(
            Duration::from_secs(15),
            status_rx.wait_for(|s| s.network == Some(NO_MEDIA)),
        )
        .await
        .expect("the network is reported within 15 s")
        .expect("status published")
        .clone();
        assert_eq!(reported.restarts, NO_MEDIA_RESTARTS);
        assert_eq!(reported.state, RunState::Running);
        // No more restarts while Janus still receives nothing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let still = status_rx.borrow().clone();
        assert_eq!(
            (still.state, still.restarts, still.network),
            (RunState::Running, NO_MEDIA_RESTARTS, Some(NO_MEDIA))
        );
        room_tx.send_modify(|s| s.media_age.video_ms = Some(20));
        tokio::time::timeout(
            Duration::from_secs(2),
            status_rx.wait_for(|s| s.network.is_none()),
        )
        .await
        .expect("the note goes within 2 s")
        .expect("status published");
        // A later outage is a new one: restarted again, within bounds.
        room_tx.send_modify(|s| s.media_age.video_ms = Some(60_000));
        tokio::time::timeout(
            Duration::from_secs(10),
            status_rx.wait_for(|s| s.restarts > NO_MEDIA_RESTARTS),
        )
        .await
        .expect("restarted for the new outage within 10 s")
        .expect("status published");
        drop(room_tx);
        let _ = supervisor.await;
    }
}
