//! The room reconciler: the agent's spine.
//!
//! It keeps a *goal* (room open, closed, or the agent stopping) and what it
//! last *observed* on Janus (session, room, mountpoint, forwarder). Each pass
//! asks [`next_action`] — a pure function — for the next step that brings the
//! observation closer to the goal, performs it, and records what Janus said,
//! until nothing is left to do. A Janus restart, a button press and a failed
//! request all end up here and are handled by the same code path: whatever is
//! missing is re-created, whatever must go is removed.
//!
//! Between passes it waits for the check interval (then forgets what it saw,
//! so the next pass verifies everything still exists), for a command, or for
//! the long-poll to report the session lost. Failed passes are retried with
//! capped exponential backoff: quickly for an unreachable Janus, slowly for
//! what only the operator can fix (credentials, a refused request).

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::backoff::{Backoff, Policy};
use crate::config::Settings;
use crate::janus::audiobridge::{self, AudioBridge, Created, ForwardTarget, RoomSpec};
use crate::janus::longpoll::{self, CurrentSession, PollEvent};
use crate::janus::streaming::{self, MountpointSpec, Streaming};
use crate::janus::{Client, Handle, JanusError, SessionId};
use crate::secret::SrtpKey;

/// RTP payload type the room's mix is forwarded with (and the speaker expects).
pub const SPEAKER_PAYLOAD_TYPE: u8 = 100;
/// RTP payload type of the camera's H.264.
pub const VIDEO_PAYLOAD_TYPE: u8 = 96;
/// RTP payload type of the microphone's Opus.
pub const AUDIO_PAYLOAD_TYPE: u8 = 111;

/// Retries while Janus cannot be reached: it is back within a second of
/// answering again.
const TRANSIENT_RETRY: Policy = Policy {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(1),
};
/// Retries of what only the operator can fix (a wrong secret, a refused
/// request): slow, so a misconfigured agent does not storm Janus.
const OPERATOR_RETRY: Policy = Policy {
    initial: Duration::from_secs(2),
    max: Duration::from_secs(60),
};
/// A pass stops after this many actions, so a flapping Janus cannot hold it.
const MAX_ACTIONS_PER_PASS: usize = 16;
/// How long the clean-up at shutdown may take, well inside systemd's stop timeout.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(8);

/// What the owner wants: the room open to viewers, or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Room, mountpoint and forwarder exist; media flows.
    Open,
    /// The room is closed (and, with `destroy_on_close`, gone from Janus).
    Closed,
}

/// A command for the reconciler, from a button, the control socket or a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Open the room.
    Open,
    /// Close the room.
    Close,
    /// Clean up (as `destroy_on_close` says) and stop.
    Shutdown,
}

/// Whether something exists on Janus, as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence<T = ()> {
    /// Not checked since the last change or check interval.
    Unknown,
    /// Janus says it does not exist.
    Absent,
    /// Janus says it exists.
    Present(T),
}

impl<T> Presence<T> {
    fn label(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Absent => "absent",
            Self::Present(_) => "present",
        }
    }

    fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl<T> Serialize for Presence<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// Whether an existing mountpoint listens on the configured ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It does: use it.
    Matches,
    /// It listens elsewhere (an earlier run with other ports): replace it.
    WrongPorts,
    /// SRTP is on and the mountpoint was not made by this run, so its key
    /// is unknown: replace it.
    UnknownKey,
}

/// The session and the two plugin handles the agent works through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    id: SessionId,
    audiobridge: Handle,
    streaming: Handle,
}

/// What the agent last saw on Janus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    session: Option<Session>,
    room: Presence,
    mountpoint: Presence<Fit>,
    forwarder: Presence<u64>,
    /// How many are in the room (counted only with `room.idle_timeout_s`).
    participants: Presence<usize>,
    /// The SRTP key of the mountpoint this run created (`stream.srtp`).
    /// Kept while the mountpoint is known to exist: it survives checks and
    /// a new session, and goes with the mountpoint.
    srtp_key: Option<SrtpKey>,
    /// Time since Janus last received video and audio, from the mountpoint's info.
    media_age: MediaAge,
}

/// Time since Janus last received each medium, as its `info` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaAge {
    /// Milliseconds since the last video packet (or since creation).
    pub video_ms: Option<u64>,
    /// Milliseconds since the last audio packet (or since creation).
    pub audio_ms: Option<u64>,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            session: None,
            room: Presence::Unknown,
            mountpoint: Presence::Unknown,
            forwarder: Presence::Unknown,
            participants: Presence::Unknown,
            srtp_key: None,
            media_age: MediaAge::default(),
        }
    }
}

impl Observed {
    /// Forgets what exists (but keeps the session and the SRTP key), so the
    /// next pass checks again.
    fn forget(&mut self) {
        *self = Self {
            session: self.session,
            srtp_key: self.srtp_key,
            ..Self::default()
        };
    }
}

/// Where the reconciler is headed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Open,
    Closed,
    /// Closed, and the session destroyed: the agent is stopping.
    Stopped,
}

/// One step towards the goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    CreateSession,
    CheckRoom,
    CreateRoom,
    DestroyRoom,
    CheckMountpoint,
    CreateMountpoint,
    DestroyMountpoint,
    CheckForwarder,
    CreateForwarder,
    StopForwarder(u64),
    CountParticipants,
    DestroySession,
}

/// What the settings ask of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Remove room and mountpoint on close (else only the forwarder).
    destroy_on_close: bool,
    /// Count the room's participants while it is open (for the idle timeout).
    count_participants: bool,
}

/// The next step from `observed` towards `goal`, or `None` when they match.
fn next_action(goal: Goal, plan: Plan, observed: &Observed) -> Option<Action> {
    use Presence::{Absent, Present, Unknown};
    let Observed {
        session,
        room,
        mountpoint,
        forwarder,
        participants,
        ..
    } = *observed;
    if goal == Goal::Open {
        return if session.is_none() {
            Some(Action::CreateSession)
        } else if room == Unknown {
            Some(Action::CheckRoom)
        } else if room == Absent {
            Some(Action::CreateRoom)
        } else if mountpoint == Unknown {
            Some(Action::CheckMountpoint)
        } else if mountpoint == Absent {
            Some(Action::CreateMountpoint)
        } else if matches!(mountpoint, Present(Fit::WrongPorts | Fit::UnknownKey)) {
            Some(Action::DestroyMountpoint)
        } else if forwarder == Unknown {
            Some(Action::CheckForwarder)
        } else if forwarder == Absent {
            Some(Action::CreateForwarder)
        } else if plan.count_participants && participants == Unknown {
            Some(Action::CountParticipants)
        } else {
            None
        };
    }
    // Closing. Destroying the room takes its forwarder with it; a room that
    // stays loses only the forwarder (no one listens to it any more).
    let teardown = if plan.destroy_on_close {
        [
            (!mountpoint.is_absent()).then_some(Action::DestroyMountpoint),
            (!room.is_absent()).then_some(Action::DestroyRoom),
        ]
    } else {
        let forwarder_step = match forwarder {
            _ if room.is_absent() => None,
            Unknown => Some(Action::CheckForwarder),
            Present(id) => Some(Action::StopForwarder(id)),
            Absent => None,
        };
        [forwarder_step, None]
    };
    match (teardown.into_iter().flatten().next(), session) {
        (Some(_), None) => Some(Action::CreateSession),
        (Some(step), Some(_)) => Some(step),
        (None, Some(_)) if goal == Goal::Stopped => Some(Action::DestroySession),
        (None, _) => None,
    }
}

/// The agent's view of itself, published after every pass: the source for
/// logs, systemd STATUS, the LED and `broadcast-agent status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomState {
    /// The room id.
    pub room_id: u64,
    /// What the owner wants.
    pub desired: Desired,
    /// Whether the agent holds a Janus session.
    pub session: bool,
    /// The AudioBridge room.
    pub room: Presence,
    /// The Streaming mountpoint.
    pub mountpoint: Presence<Fit>,
    /// The forwarder of the room's audio to the Pi.
    pub forwarder: Presence<u64>,
    /// What Janus last said about the media it receives.
    pub media_age: MediaAge,
    /// How many are in the room, when counted (`room.idle_timeout_s`).
    pub participants: Option<usize>,
    /// Why the room was last closed, while it is closed.
    pub closed_by: Option<CloseReason>,
    /// The key the capture pipelines encrypt with (`stream.srtp`): the
    /// mountpoint's, while it exists. Never serialized.
    #[serde(skip)]
    pub srtp_key: Option<SrtpKey>,
    /// The error of the last failed pass, if the last pass failed.
    pub last_error: Option<String>,
}

/// What closed the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// A button, `broadcast-agent close`, or `open_on_start = false`.
    Command,
    /// No one was in it for `room.idle_timeout_s`.
    IdleTimeout,
    /// It was open for `room.max_duration_s`.
    MaxDuration,
}

impl CloseReason {
    /// In words, for the status line.
    pub fn words(self) -> &'static str {
        match self {
            Self::Command => "closed on request",
            Self::IdleTimeout => "idle timeout",
            Self::MaxDuration => "maximum duration reached",
        }
    }
}

/// A one-word summary of [`RoomState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Open, and everything exists on Janus.
    Live,
    /// Open wanted, not (yet, or any more) everything there.
    Opening,
    /// Closed wanted, something still to remove.
    Closing,
    /// Closed.
    Closed,
}

impl RoomState {
    fn new(room_id: u64, desired: Desired) -> Self {
        Self {
            room_id,
            desired,
            session: false,
            room: Presence::Unknown,
            mountpoint: Presence::Unknown,
            forwarder: Presence::Unknown,
            media_age: MediaAge::default(),
            participants: None,
            closed_by: (desired == Desired::Closed).then_some(CloseReason::Command),
            srtp_key: None,
            last_error: None,
        }
    }

    /// Time since Janus last received `kind` (`video` or `audio`), if known.
    pub fn media_age(&self, kind: &str) -> Option<Duration> {
        let ms = match kind {
            "video" => self.media_age.video_ms,
            "audio" => self.media_age.audio_ms,
            _ => None,
        };
        ms.map(Duration::from_millis)
    }

    /// What the room is doing, in one word.
    pub fn phase(&self) -> Phase {
        let live = matches!(self.room, Presence::Present(()))
            && matches!(self.mountpoint, Presence::Present(Fit::Matches))
            && matches!(self.forwarder, Presence::Present(_));
        match (self.desired, live) {
            (Desired::Open, true) => Phase::Live,
            (Desired::Open, false) => Phase::Opening,
            (Desired::Closed, _) if self.last_error.is_some() => Phase::Closing,
            (Desired::Closed, _) => Phase::Closed,
        }
    }
}

/// How to talk to the reconciler once it runs.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    commands: mpsc::Sender<Event>,
    state: watch::Receiver<RoomState>,
}

impl RoomHandle {
    /// Sends a command; returns false when the reconciler has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.commands.send(Event::Command(command)).await.is_ok()
    }

    /// Sends a command without waiting (for callbacks on other threads);
    /// returns false when the queue is full or the reconciler has stopped.
    pub fn try_send(&self, command: Command) -> bool {
        self.commands.try_send(Event::Command(command)).is_ok()
    }

    /// What the owner last wanted, as of the last pass.
    pub fn desired(&self) -> Desired {
        self.state.borrow().desired
    }

    /// The published state, updated after every pass.
    pub fn state(&self) -> watch::Receiver<RoomState> {
        self.state.clone()
    }

    /// Whether the loop answers within `within`: it does between passes, and
    /// not while a pass hangs (the systemd watchdog is fed only if it does).
    pub async fn is_responsive(&self, within: Duration) -> bool {
        let (answer, answered) = oneshot::channel();
        if self.commands.try_send(Event::Ping(answer)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(within, answered).await, Ok(Ok(())))
    }
}

/// What wakes the loop.
#[derive(Debug)]
enum Event {
    Command(Command),
    Poll(PollEvent),
    /// Asks the loop to prove it is not stuck.
    Ping(oneshot::Sender<()>),
}

/// Everything a pass needs, shared with the blocking threads that run it.
struct Janus {
    client: Arc<Client>,
    settings: Arc<Settings>,
    current: CurrentSession,
    events: mpsc::Sender<Event>,
}

impl Janus {
    /// Performs actions until `observed` matches `goal`, or one fails.
    fn converge(&self, goal: Goal, observed: &mut Observed) -> Result<(), JanusError> {
        let room = &self.settings.room;
        let plan = Plan {
            destroy_on_close: room.destroy_on_close,
            count_participants: room.idle_timeout().is_some(),
        };
        for _ in 0..MAX_ACTIONS_PER_PASS {
            let Some(action) = next_action(goal, plan, observed) else {
                return Ok(());
            };
            log::trace!("room {}: {action:?}", self.settings.room.id);
            match self.apply(action, observed) {
                Ok(()) => {}
                Err(e) if e.is_session_gone() => {
                    if let Some(session) = observed.session.take() {
                        log::info!(
                            "Janus session {} is gone (Janus restarted?): starting a new one",
                            session.id.0
                        );
                    }
                    self.current.set(None);
                    observed.forget();
                }
                Err(e) => {
                    observed.forget();
                    return Err(e);
                }
            }
        }
        Err(JanusError::Protocol(format!(
            "no steady state after {MAX_ACTIONS_PER_PASS} requests"
        )))
    }

    /// Performs one action and records what Janus answered.
    fn apply(&self, action: Action, observed: &mut Observed) -> Result<(), JanusError> {
        let room = &self.settings.room;
        let id = room.id;
        let secret = room.secret.as_ref();
        if action == Action::CreateSession {
            let session = self.create_session()?;
            *observed = Observed {
                session: Some(session),
                srtp_key: observed.srtp_key,
                ..Observed::default()
            };
            return Ok(());
        }
        let Some(session) = observed.session else {
            return Err(JanusError::Protocol(format!(
                "{action:?} without a session"
            )));
        };
        let bridge = AudioBridge::new(&self.client, session.audiobridge);
        let stream = Streaming::new(&self.client, session.streaming);
        match action {
            Action::CreateSession => {}
            Action::CheckRoom => {
                observed.room = presence(bridge.exists(id)?);
                if observed.room.is_absent() {
                    observed.forwarder = Presence::Absent;
                }
            }
            Action::CreateRoom => {
                let created = bridge.create(&self.room_spec())?;
                log::info!("room {id}: {}", describe(created, "created", "adopted"));
                observed.room = Presence::Present(());
                if created == Created::New {
                    observed.forwarder = Presence::Absent;
                }
            }
            Action::DestroyRoom => {
                bridge.destroy(id, secret)?;
                log::info!("room {id}: destroyed");
                observed.room = Presence::Absent;
                observed.forwarder = Presence::Absent;
            }
            Action::CheckMountpoint => {
                let spec = self.mountpoint_spec();
                let info = stream.info(id, secret)?;
                let age_ms = |kind| {
                    info.as_ref()
                        .and_then(|i| i.age(kind))
                        .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
                };
                observed.media_age = MediaAge {
                    video_ms: age_ms("video"),
                    audio_ms: age_ms("audio"),
                };
                observed.mountpoint = match info {
                    None => Presence::Absent,
                    Some(info) if !info.fits(&spec) => {
                        log::warn!(
                            "mountpoint {id} listens on other ports than stream.video_port/audio_port: replacing it"
                        );
                        Presence::Present(Fit::WrongPorts)
                    }
                    Some(_) if self.settings.stream.srtp && observed.srtp_key.is_none() => {
                        log::info!(
                            "mountpoint {id} was made before this run and its SRTP key is unknown: replacing it"
                        );
                        Presence::Present(Fit::UnknownKey)
                    }
                    Some(_) => Presence::Present(Fit::Matches),
                };
                if observed.mountpoint.is_absent() {
                    observed.srtp_key = None;
                }
            }
            Action::CreateMountpoint => {
                let key = self.settings.stream.srtp.then(SrtpKey::generate);
                let spec = MountpointSpec {
                    srtp: key.as_ref(),
                    ..self.mountpoint_spec()
                };
                let created = stream.create(&spec)?;
                log::info!(
                    "mountpoint {id}: {} (video port {}, audio port {}{})",
                    describe(created, "created", "adopted"),
                    spec.video.0,
                    spec.audio.0,
                    if key.is_some() { ", SRTP" } else { "" }
                );
                // An adopted one (made by someone else meanwhile) is checked
                // again, and replaced if SRTP needs a key it does not have.
                observed.srtp_key = match created {
                    Created::New => key,
                    Created::Existing => None,
                };
                observed.mountpoint = match created {
                    Created::New => Presence::Present(Fit::Matches),
                    Created::Existing => Presence::Unknown,
                };
            }
            Action::DestroyMountpoint => {
                stream.destroy(id, secret)?;
                log::info!("mountpoint {id}: destroyed");
                observed.mountpoint = Presence::Absent;
                observed.srtp_key = None;
            }
            Action::CheckForwarder => {
                observed.forwarder = match bridge.list_forwarders(id, secret) {
                    Ok(list) => {
                        let target = self.forward_target()?;
                        match list.into_iter().find(|f| f.matches(&target)) {
                            Some(f) => Presence::Present(f.stream_id),
                            None => Presence::Absent,
                        }
                    }
                    Err(e) if e.code() == Some(audiobridge::code::NO_SUCH_ROOM) => {
                        observed.room = Presence::Absent;
                        Presence::Absent
                    }
                    Err(e) => return Err(e),
                };
            }
            Action::CreateForwarder => {
                let target = self.forward_target()?;
                let stream_id = bridge.rtp_forward(id, &target, secret, room.admin_key.as_ref())?;
                log::info!(
                    "room {id}: forwarding its audio to {}:{} (stream {stream_id})",
                    target.host,
                    target.port
                );
                observed.forwarder = Presence::Present(stream_id);
            }
            Action::StopForwarder(stream_id) => {
                bridge.stop_rtp_forward(id, stream_id, secret, room.admin_key.as_ref())?;
                log::info!("room {id}: stopped forwarding its audio");
                observed.forwarder = Presence::Absent;
            }
            Action::CountParticipants => {
                observed.participants = match bridge.count_participants(id) {
                    Ok(n) => Presence::Present(n),
                    Err(e) if e.code() == Some(audiobridge::code::NO_SUCH_ROOM) => {
                        observed.room = Presence::Absent;
                        observed.forwarder = Presence::Absent;
                        Presence::Unknown
                    }
                    Err(e) => return Err(e),
                };
            }
            Action::DestroySession => {
                self.current.set(None);
                observed.session = None;
                self.client.destroy_session(session.id)?;
                log::debug!("Janus session {} destroyed", session.id.0);
            }
        }
        Ok(())
    }

    /// Creates a session, attaches both plugins and starts its long-poll.
    fn create_session(&self) -> Result<Session, JanusError> {
        let id = self.client.create_session()?;
        let session = Session {
            id,
            audiobridge: self.client.attach(id, audiobridge::PLUGIN)?,
            streaming: self.client.attach(id, streaming::PLUGIN)?,
        };
        self.current.set(Some(id));
        let events = self.events.clone();
        longpoll::spawn(
            Arc::clone(&self.client),
            id,
            self.current.clone(),
            move |e| {
                // A full queue already holds a wake-up; dropping this one loses nothing.
                let _ = events.try_send(Event::Poll(e));
            },
        )
        .map_err(|e| JanusError::Protocol(format!("cannot start the long-poll thread: {e}")))?;
        log::info!("Janus session {} created at {}", id.0, self.client.url());
        Ok(session)
    }

    fn room_spec(&self) -> RoomSpec<'_> {
        let room = &self.settings.room;
        RoomSpec {
            id: room.id,
            description: &room.description,
            secret: room.secret.as_ref(),
            pin: room.pin.as_ref(),
            admin_key: room.admin_key.as_ref(),
            allow_rtp_participants: room.allow_rtp_participants,
        }
    }

    fn mountpoint_spec(&self) -> MountpointSpec<'_> {
        let (room, stream) = (&self.settings.room, &self.settings.stream);
        MountpointSpec {
            id: room.id,
            description: &room.description,
            secret: room.secret.as_ref(),
            pin: room.pin.as_ref(),
            admin_key: room.admin_key.as_ref(),
            srtp: None,
            video: (stream.video_port, VIDEO_PAYLOAD_TYPE),
            audio: (stream.audio_port, AUDIO_PAYLOAD_TYPE),
        }
    }

    /// Where Janus should send the room's audio: `speaker.host`, or the
    /// address of this machine on its route to Janus.
    fn forward_target(&self) -> Result<ForwardTarget, JanusError> {
        let speaker = &self.settings.speaker;
        let host = if speaker.host.is_empty() {
            local_address_towards(self.settings.janus.host())?
        } else {
            speaker.host.clone()
        };
        Ok(ForwardTarget {
            host,
            port: speaker.port,
            payload_type: SPEAKER_PAYLOAD_TYPE,
        })
    }
}

/// The local address the kernel would use to reach `host` (no packet is sent).
fn local_address_towards(host: &str) -> Result<String, JanusError> {
    let unroutable = |e: std::io::Error| {
        JanusError::Protocol(format!(
            "no route to Janus host {host} to pick speaker.host from: {e}"
        ))
    };
    let bind = if host.contains(':') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(bind).map_err(unroutable)?;
    let target = if host.contains(':') {
        format!("[{host}]:9")
    } else {
        format!("{host}:9")
    };
    socket.connect(target).map_err(unroutable)?;
    Ok(socket.local_addr().map_err(unroutable)?.ip().to_string())
}

fn presence(exists: bool) -> Presence {
    if exists {
        Presence::Present(())
    } else {
        Presence::Absent
    }
}

fn describe(created: Created, new: &'static str, existing: &'static str) -> &'static str {
    match created {
        Created::New => new,
        Created::Existing => existing,
    }
}

/// Starts the reconciler on the current runtime.
pub fn spawn(
    client: Arc<Client>,
    settings: Arc<Settings>,
) -> (RoomHandle, tokio::task::JoinHandle<()>) {
    let desired = if settings.room.open_on_start {
        Desired::Open
    } else {
        Desired::Closed
    };
    let (events, inbox) = mpsc::channel(32);
    let (state_tx, state) = watch::channel(RoomState::new(settings.room.id, desired));
    let janus = Arc::new(Janus {
        client,
        settings,
        current: CurrentSession::default(),
        events: events.clone(),
    });
    let task = tokio::spawn(run(janus, desired, inbox, state_tx));
    (
        RoomHandle {
            commands: events,
            state,
        },
        task,
    )
}

/// When an open room closes by itself: `room.idle_timeout_s` after the
/// checks last saw it empty-handed, `room.max_duration_s` after it opened.
#[derive(Debug, Clone)]
struct Timers {
    idle_timeout: Option<Duration>,
    max_duration: Option<Duration>,
    opened_at: Instant,
    /// The first check that found no one, since someone was last there.
    idle_since: Option<Instant>,
}

impl Timers {
    fn new(room: &crate::config::RoomSettings, now: Instant) -> Self {
        Self {
            idle_timeout: room.idle_timeout(),
            max_duration: room.max_duration(),
            opened_at: now,
            idle_since: None,
        }
    }

    /// The room was (re)opened: both timers start over.
    fn opened(&mut self, now: Instant) {
        self.opened_at = now;
        self.idle_since = None;
    }

    /// Records what a check saw. An unknown count (Janus not answering)
    /// neither starts nor stops the idle clock.
    fn saw(&mut self, participants: Presence<usize>, now: Instant) {
        match participants {
            Presence::Present(0) => {
                self.idle_since.get_or_insert(now);
            }
            Presence::Present(_) => self.idle_since = None,
            Presence::Unknown | Presence::Absent => {}
        }
    }

    /// Why the room must close at `now`, if it must.
    fn expired(&self, now: Instant) -> Option<CloseReason> {
        let past = |since: Instant, limit: Duration| now.duration_since(since) >= limit;
        if self.max_duration.is_some_and(|d| past(self.opened_at, d)) {
            Some(CloseReason::MaxDuration)
        } else if let (Some(since), Some(limit)) = (self.idle_since, self.idle_timeout) {
            past(since, limit).then_some(CloseReason::IdleTimeout)
        } else {
            None
        }
    }

    /// The next instant a timer may run out.
    fn next_deadline(&self) -> Option<Instant> {
        let max = self.max_duration.map(|d| self.opened_at + d);
        let idle = self.idle_since.zip(self.idle_timeout).map(|(t, d)| t + d);
        match (max, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The loop: a pass, then wait for the next reason to pass again.
async fn run(
    janus: Arc<Janus>,
    mut desired: Desired,
    mut inbox: mpsc::Receiver<Event>,
    state: watch::Sender<RoomState>,
) {
    let room_id = janus.settings.room.id;
    let viewer_url = janus.settings.viewer_url();
    let check_interval = janus.settings.room.check_interval();
    let mut observed = Observed::default();
    let mut transient = Backoff::new(TRANSIENT_RETRY);
    let mut operator = Backoff::new(OPERATOR_RETRY);
    let mut last_error: Option<String> = None;
    let mut timers = Timers::new(&janus.settings.room, Instant::now());
    let mut closed_by = (desired == Desired::Closed).then_some(CloseReason::Command);
    loop {
        let goal = match desired {
            Desired::Open => Goal::Open,
            Desired::Closed => Goal::Closed,
        };
        let (seen, result) = pass(&janus, goal, observed).await;
        observed = seen;
        if desired == Desired::Open {
            let now = Instant::now();
            timers.saw(observed.participants, now);
            if let Some(reason) = timers.expired(now) {
                let (what, key, limit) = match reason {
                    CloseReason::MaxDuration => ("open for", "max_duration_s", timers.max_duration),
                    _ => ("no participants for", "idle_timeout_s", timers.idle_timeout),
                };
                log::info!(
                    "room {room_id}: {what} {} s (room.{key}): closing",
                    limit.unwrap_or_default().as_secs()
                );
                desired = Desired::Closed;
                closed_by = Some(reason);
                transient.reset();
                operator.reset();
                continue;
            }
        }
        let (wait, failed) = match result {
            Ok(()) => {
                if last_error.take().is_some() {
                    log::info!("room {room_id}: Janus answers again");
                }
                transient.reset();
                operator.reset();
                (check_interval, false)
            }
            Err(e) => {
                let backoff = if e.needs_operator() {
                    &mut operator
                } else {
                    &mut transient
                };
                let delay = backoff.next_delay();
                let message = e.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    log::warn!(
                        "room {room_id}: {message}; retrying (attempt {}, next in {} ms)",
                        backoff.attempts(),
                        delay.as_millis()
                    );
                }
                last_error = Some(message);
                (delay, true)
            }
        };
        publish(
            &state,
            viewer_url.as_deref(),
            room_id,
            (desired, closed_by),
            &observed,
            &last_error,
        );

        let mut deadline = Instant::now() + wait;
        if desired == Desired::Open {
            // Wake when a timer may run out: that pass counts again and decides.
            deadline = timers.next_deadline().map_or(deadline, |t| t.min(deadline));
        }
        loop {
            tokio::select! {
                // Time to check again (or to retry after a failure): forget
                // what was seen so the next pass verifies it.
                () = sleep_until(deadline) => {
                    observed.forget();
                    break;
                }
                event = inbox.recv() => match event {
                    Some(Event::Ping(answer)) => {
                        let _ = answer.send(());
                    }
                    None | Some(Event::Command(Command::Shutdown)) => {
                        shut_down(&janus, observed).await;
                        publish(&state, None, room_id, (Desired::Closed, Some(CloseReason::Command)), &Observed::default(), &None);
                        return;
                    }
                    Some(Event::Command(command)) => {
                        desired = if command == Command::Open { Desired::Open } else { Desired::Closed };
                        if desired == Desired::Open {
                            timers.opened(Instant::now());
                            closed_by = None;
                        } else {
                            closed_by = Some(CloseReason::Command);
                        }
                        log::info!("room {room_id}: {} requested", if desired == Desired::Open { "open" } else { "close" });
                        transient.reset();
                        operator.reset();
                        break;
                    }
                    // The session died: start over now, unless backing off.
                    Some(Event::Poll(PollEvent::SessionLost(id))) => {
                        if observed.session.is_some_and(|s| s.id == id) {
                            observed.session = None;
                            observed.forget();
                            log::info!("room {room_id}: Janus session {} expired or Janus restarted", id.0);
                            if !failed { break; }
                        }
                    }
                    // Janus went away: check now, unless already backing off.
                    Some(Event::Poll(PollEvent::Unreachable(_))) => {
                        if !failed {
                            observed.forget();
                            break;
                        }
                    }
                },
            }
        }
    }
}

/// Runs one pass on a blocking thread.
async fn pass(
    janus: &Arc<Janus>,
    goal: Goal,
    observed: Observed,
) -> (Observed, Result<(), JanusError>) {
    let janus = Arc::clone(janus);
    let joined = tokio::task::spawn_blocking(move || {
        let mut observed = observed;
        let result = janus.converge(goal, &mut observed);
        (observed, result)
    })
    .await;
    joined.unwrap_or_else(|e| {
        (
            Observed::default(),
            Err(JanusError::Protocol(format!("pass aborted: {e}"))),
        )
    })
}

/// Cleans up as `destroy_on_close` says and destroys the session, within a budget.
async fn shut_down(janus: &Arc<Janus>, observed: Observed) {
    let room_id = janus.settings.room.id;
    match tokio::time::timeout(SHUTDOWN_BUDGET, pass(janus, Goal::Stopped, observed)).await {
        Ok((_, Ok(()))) => log::info!("room {room_id}: cleaned up on Janus"),
        Ok((_, Err(e))) => log::warn!("room {room_id}: clean-up incomplete: {e}"),
        Err(_) => log::warn!(
            "room {room_id}: clean-up did not finish within {} s",
            SHUTDOWN_BUDGET.as_secs()
        ),
    }
    janus.current.set(None);
}

fn publish(
    state: &watch::Sender<RoomState>,
    viewer_url: Option<&str>,
    room_id: u64,
    (desired, closed_by): (Desired, Option<CloseReason>),
    observed: &Observed,
    last_error: &Option<String>,
) {
    let next = RoomState {
        room_id,
        desired,
        session: observed.session.is_some(),
        room: observed.room,
        mountpoint: observed.mountpoint,
        forwarder: observed.forwarder,
        media_age: observed.media_age,
        participants: match observed.participants {
            Presence::Present(n) => Some(n),
            _ => None,
        },
        closed_by: if desired == Desired::Closed {
            closed_by
        } else {
            None
        },
        srtp_key: observed.srtp_key,
        last_error: last_error.clone(),
    };
    state.send_if_modified(|current| {
        if *current == next {
            return false;
        }
        let (was, is) = (current.phase(), next.phase());
        if was != is {
            log::info!("room {room_id}: {was:?} -> {is:?}");
            if let (Phase::Live, Some(url)) = (is, viewer_url) {
                log::info!("room {room_id} is live: viewers open {url}");
            }
        }
        *current = next;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use Presence::{Absent, Present, Unknown};

    const SESSION: Session = Session {
        id: SessionId(1),
        audiobridge: Handle {
            session: SessionId(1),
            id: crate::janus::HandleId(2),
        },
        streaming: Handle {
            session: SessionId(1),
            id: crate::janus::HandleId(3),
        },
    };

    const DESTROY: Plan = Plan {
        destroy_on_close: true,
        count_participants: false,
    };
    const KEEP: Plan = Plan {
        destroy_on_close: false,
        count_participants: false,
    };

    fn seen(room: Presence, mountpoint: Presence<Fit>, forwarder: Presence<u64>) -> Observed {
        Observed {
            session: Some(SESSION),
            room,
            mountpoint,
            forwarder,
            ..Observed::default()
        }
    }

    /// Runs the planner against a simulated Janus that does what it is asked.
    fn plan_from(goal: Goal, plan: Plan, mut observed: Observed) -> Vec<Action> {
        let mut steps = Vec::new();
        while let Some(action) = next_action(goal, plan, &observed) {
            steps.push(action);
            assert!(steps.len() < 20, "no fixed point: {steps:?}");
            match action {
                Action::CreateSession => observed = seen(Unknown, Unknown, Unknown),
                Action::CheckRoom | Action::CreateRoom => observed.room = Present(()),
                Action::CheckMountpoint | Action::CreateMountpoint => {
                    observed.mountpoint = Present(Fit::Matches)
                }
                Action::CheckForwarder | Action::CreateForwarder => observed.forwarder = Present(9),
                Action::DestroyRoom => {
                    observed.room = Absent;
                    observed.forwarder = Absent;
                }
                Action::DestroyMountpoint => observed.mountpoint = Absent,
                Action::StopForwarder(_) => observed.forwarder = Absent,
                Action::CountParticipants => observed.participants = Present(0),
                Action::DestroySession => observed.session = None,
            }
        }
        steps
    }

    #[test]
    fn opening_from_nothing_checks_then_builds_in_order() {
        let steps = plan_from(Goal::Open, DESTROY, Observed::default());
        assert_eq!(
            steps,
            [
                Action::CreateSession,
                Action::CheckRoom,
                Action::CheckMountpoint,
                Action::CheckForwarder
            ]
        );
    }

    #[test]
    fn missing_parts_are_recreated() {
        let observed = seen(Absent, Absent, Absent);
        assert_eq!(
            plan_from(Goal::Open, DESTROY, observed),
            [
                Action::CreateRoom,
                Action::CreateMountpoint,
                Action::CreateForwarder
            ]
        );
    }

    #[test]
    fn a_mountpoint_on_wrong_ports_is_replaced() {
        let observed = seen(Present(()), Present(Fit::WrongPorts), Present(1));
        assert_eq!(
            next_action(Goal::Open, DESTROY, &observed),
            Some(Action::DestroyMountpoint)
        );
    }

    #[test]
    fn a_mountpoint_with_an_unknown_srtp_key_is_replaced_and_the_key_outlives_checks() {
        let observed = seen(Present(()), Present(Fit::UnknownKey), Present(1));
        assert_eq!(
            next_action(Goal::Open, DESTROY, &observed),
            Some(Action::DestroyMountpoint)
        );
        let key = SrtpKey::generate();
        let mut observed = Observed {
            srtp_key: Some(key),
            ..seen(Present(()), Present(Fit::Matches), Present(1))
        };
        observed.forget();
        assert_eq!(observed.srtp_key, Some(key));
        assert_eq!(observed.mountpoint, Unknown);
    }

    #[test]
    fn live_is_a_fixed_point() {
        let observed = seen(Present(()), Present(Fit::Matches), Present(1));
        assert_eq!(next_action(Goal::Open, DESTROY, &observed), None);
    }

    #[test]
    fn closing_with_destroy_removes_mountpoint_then_room() {
        let observed = seen(Present(()), Present(Fit::Matches), Present(1));
        assert_eq!(
            plan_from(Goal::Closed, DESTROY, observed),
            [Action::DestroyMountpoint, Action::DestroyRoom]
        );
    }

    #[test]
    fn closing_without_destroy_only_stops_the_forwarder() {
        let observed = seen(Present(()), Present(Fit::Matches), Present(7));
        assert_eq!(
            plan_from(Goal::Closed, KEEP, observed),
            [Action::StopForwarder(7)]
        );
        let unknown = seen(Unknown, Unknown, Unknown);
        assert_eq!(
            plan_from(Goal::Closed, KEEP, unknown),
            [Action::CheckForwarder, Action::StopForwarder(9)]
        );
    }

    #[test]
    fn stopping_destroys_the_session_last() {
        let observed = seen(Present(()), Present(Fit::Matches), Present(1));
        assert_eq!(
            plan_from(Goal::Stopped, DESTROY, observed),
            [
                Action::DestroyMountpoint,
                Action::DestroyRoom,
                Action::DestroySession
            ]
        );
    }

    #[test]
    fn closing_with_no_session_needs_one_only_if_something_may_remain() {
        let unknown = Observed::default();
        assert_eq!(
            next_action(Goal::Closed, DESTROY, &unknown),
            Some(Action::CreateSession)
        );
        let gone = Observed {
            session: None,
            room: Absent,
            mountpoint: Absent,
            forwarder: Absent,
            ..Observed::default()
        };
        assert_eq!(next_action(Goal::Closed, DESTROY, &gone), None);
        assert_eq!(next_action(Goal::Stopped, DESTROY, &gone), None);
    }

    #[test]
    fn participants_are_counted_only_for_the_idle_timeout() {
        let plan = Plan {
            count_participants: true,
            ..DESTROY
        };
        assert_eq!(
            plan_from(
                Goal::Open,
                plan,
                seen(Present(()), Present(Fit::Matches), Present(1))
            ),
            [Action::CountParticipants]
        );
        let live = seen(Present(()), Present(Fit::Matches), Present(1));
        assert_eq!(next_action(Goal::Open, DESTROY, &live), None);
        // Closing never counts.
        assert_eq!(
            plan_from(Goal::Closed, plan, live),
            [Action::DestroyMountpoint, Action::DestroyRoom]
        );
    }

    #[test]
    fn timers_close_an_idle_or_overlong_room() {
        let settings = crate::config::RoomSettings {
            idle_timeout_s: 10,
            max_duration_s: 60,
            ..crate::config::RoomSettings::default()
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut timers = Timers::new(&settings, t0);
        timers.saw(Present(2), at(1));
        assert_eq!(timers.next_deadline(), Some(at(60)));
        timers.saw(Present(0), at(5));
        timers.saw(Unknown, at(9));
        timers.saw(Present(0), at(12));
        assert_eq!(timers.expired(at(14)), None);
        assert_eq!(timers.next_deadline(), Some(at(15)));
        assert_eq!(timers.expired(at(15)), Some(CloseReason::IdleTimeout));
        // Someone joined: the idle clock stops; the maximum still applies.
        timers.saw(Present(1), at(16));
        assert_eq!(timers.expired(at(59)), None);
        assert_eq!(timers.expired(at(60)), Some(CloseReason::MaxDuration));
        // Reopened: both start over.
        timers.opened(at(61));
        assert_eq!(timers.expired(at(100)), None);
        assert_eq!(timers.next_deadline(), Some(at(121)));
        let off = Timers::new(&crate::config::RoomSettings::default(), t0);
        assert_eq!(off.next_deadline(), None);
        assert_eq!(off.expired(at(1_000_000)), None);
    }

    #[test]
    fn phase_summarises_the_state() {
        let mut state = RoomState::new(1, Desired::Open);
        assert_eq!(state.phase(), Phase::Opening);
        state.room = Present(());
        state.mountpoint = Present(Fit::Matches);
        state.forwarder = Present(3);
        assert_eq!(state.phase(), Phase::Live);
        state.desired = Desired::Closed;
        assert_eq!(state.phase(), Phase::Closed);
    }
}
