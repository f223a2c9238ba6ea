//! The room reconciler: the agent's spine.
//!
//! It keeps a *goal* (room open, closed, or the agent stopping) and what it
//! last *observed* on Janus (session, room, mountpoint, forwarder). Each pass
//! asks [`next_action`](plan::next_action) — a pure function — for the next
//! step that brings the observation closer to the goal, performs it, and
//! records what Janus said, until nothing is left to do. A Janus restart, a
//! button press and a failed request all end up here and are handled by the
//! same code path: whatever is missing is re-created, whatever must go is
//! removed.
//!
//! A pass runs on a blocking thread, off the loop: meanwhile the loop answers
//! the watchdog (a slow Janus is not a hung agent) unless the pass is past a
//! deadline that no pass of bounded requests can reach (then it hangs), and
//! keeps commands and long-poll reports for when the pass is done. A stop
//! waits for the pass in flight only within the shutdown budget.
//!
//! Between passes it waits for the check interval (then forgets what it saw,
//! so the next pass verifies everything still exists), for a command, or for
//! the long-poll to report the session lost. Failed passes are retried with
//! capped exponential backoff: quickly for an unreachable Janus, slowly for
//! what only the operator can fix (credentials, a refused request).
//!
//! This module owns the loop and its interface ([`RoomHandle`], [`spawn`]);
//! the planner is in `plan`, the Janus requests in `actions`, the published
//! state in `state` and the idle and duration limits in `timers`.

mod actions;
mod error;
mod lockdown;
pub mod plan;
mod timers;
mod uplink;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::backoff::{Backoff, Policy};
use crate::config::Settings;
use crate::janus::longpoll::{CurrentSession, PeerNews, PollEvent};
use crate::janus::Client;
use crate::owner::Choice;
use crate::signalling::Signalling;
use crate::state::{
    Chat, CloseReason, Desired, Failure, Phase, Presence, PublisherPhase, RoomState, Uplink,
};

use actions::Janus;
pub use error::PassError;
use plan::{Goal, Observed, Publisher};
use timers::Timers;

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

    /// Whether the loop answers within `within`: it does between passes and
    /// while a pass waits on Janus, but not once that pass is past its
    /// deadline (it hangs), nor when the loop itself is stuck. The systemd
    /// watchdog is fed only if it does.
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

/// What the loop does once an event is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Keep waiting.
    Wait,
    /// Pass again now.
    Pass,
    /// Clean up and stop.
    Stop,
}

/// How the camera and microphone may reach Janus, for the reconciler.
pub struct UplinkParts {
    /// The WebRTC uplink's offers and answers.
    pub signalling: Arc<Signalling>,
    /// What this machine lacks for WebRTC (an element, its package), if anything.
    pub local_webrtc: Option<&'static str>,
    /// The edges the publisher is forwarded to, as their keepers see them.
    pub edges: Arc<crate::relay::Board>,
}

/// Starts the reconciler on the current runtime, with the owner's choice in
/// `owner`: it starts from it and publishes each new one there.
pub fn spawn(
    client: Arc<Client>,
    settings: Arc<Settings>,
    owner: watch::Sender<Choice>,
    uplink: UplinkParts,
) -> (RoomHandle, tokio::task::JoinHandle<()>) {
    let deadline = pass_deadline(settings.janus.request_timeout);
    spawn_with_deadline(client, settings, owner, uplink, deadline)
}

/// [`spawn`] with a pass deadline of the caller's.
fn spawn_with_deadline(
    client: Arc<Client>,
    settings: Arc<Settings>,
    owner: watch::Sender<Choice>,
    uplink: UplinkParts,
    pass_deadline: Duration,
) -> (RoomHandle, tokio::task::JoinHandle<()>) {
    let Choice { desired, closed_by } = *owner.borrow();
    if settings.room.secret.is_none() {
        log::warn!(
            "room {}: room.secret is not set: anybody with access to Janus's API can take the room over, and the agent cannot tell its room from someone else's",
            settings.room.id
        );
    }
    let (events, inbox) = mpsc::channel(32);
    let initial = RoomState {
        closed_by,
        forwarding: settings.speaker.enabled,
        uplink: fixed_uplink(&settings),
        ..RoomState::new(settings.room.id, desired)
    };
    let (state, published) = watch::channel(initial);
    let reconciler = Reconciler {
        timers: Timers::new(&settings.room, Instant::now()),
        viewer_url: settings.viewer_url(),
        pass_deadline,
        janus: Arc::new(Janus {
            client,
            settings,
            current: CurrentSession::default(),
            events: events.clone(),
            signalling: uplink.signalling,
            local_webrtc: uplink.local_webrtc,
            mids: std::sync::Mutex::default(),
            lockdown: lockdown::Lockdown::default(),
            edges: uplink.edges,
        }),
        inbox,
        state,
        desired,
        closed_by,
        owner: Some(owner),
        observed: Observed::default(),
        transient: Backoff::new(TRANSIENT_RETRY),
        operator: Backoff::new(OPERATOR_RETRY),
        last_error: None,
    };
    let task = tokio::spawn(reconciler.run());
    let handle = RoomHandle {
        commands: events,
        state: published,
    };
    (handle, task)
}

/// The loop's state between events.
struct Reconciler {
    janus: Arc<Janus>,
    inbox: mpsc::Receiver<Event>,
    state: watch::Sender<RoomState>,
    desired: Desired,
    /// Why the room was closed, while it is wanted closed.
    closed_by: Option<CloseReason>,
    /// Where the owner's choices go (`owner`), until shutdown.
    owner: Option<watch::Sender<Choice>>,
    /// What the last pass saw on Janus.
    observed: Observed,
    /// Backoff while Janus cannot be reached.
    transient: Backoff,
    /// Backoff while the operator must fix something.
    operator: Backoff,
    /// The last pass's error, while passes fail.
    last_error: Option<Failure>,
    timers: Timers,
    viewer_url: Option<String>,
    /// A pass running longer than this hangs: the watchdog is not answered.
    pass_deadline: Duration,
}

impl Reconciler {
    /// A pass, then wait for the next reason to pass again; until told to stop.
    async fn run(mut self) {
        loop {
            let Some((seen, result, later)) = self.pass_in_flight().await else {
                return; // shut down while the pass ran
            };
            self.observed = seen;
            if self.close_if_expired() {
                continue;
            }
            let wait = self.pass_finished(result);
            self.publish();
            // What came in during the pass, now that its observation is in.
            let mut next = Next::Wait;
            for event in later {
                if self.event(Some(event)) == Next::Pass {
                    next = Next::Pass;
                }
            }
            if next == Next::Wait {
                next = self.wait(wait).await;
            }
            if next == Next::Stop {
                self.shut_down(None).await;
                return;
            }
        }
    }

    fn goal(&self) -> Goal {
        match self.desired {
            Desired::Open => Goal::Open,
            Desired::Closed => Goal::Closed,
        }
    }

    /// Runs a pass off the loop; meanwhile answers the watchdog (as long as
    /// the pass is within its deadline) and keeps other events for after
    /// it. `None`: told to stop meanwhile, and stopped.
    async fn pass_in_flight(&mut self) -> Option<(Observed, Result<(), PassError>, Vec<Event>)> {
        let started = Instant::now();
        let mut task = spawn_pass(&self.janus, self.goal(), self.observed);
        let mut later = Vec::new();
        let mut overdue_logged = false;
        loop {
            tokio::select! {
                joined = &mut task => {
                    let (seen, result) = outcome(joined);
                    return Some((seen, result, later));
                }
                event = self.inbox.recv() => match event {
                    Some(Event::Ping(answer)) => {
                        let late = started.elapsed().saturating_sub(self.pass_deadline);
                        if late.is_zero() {
                            let _ = answer.send(());
                        } else if !overdue_logged {
                            overdue_logged = true;
                            log::error!(
                                "room {}: a pass has run for {} s, past its deadline of {} s: it hangs; not answering the watchdog",
                                self.room_id(),
                                started.elapsed().as_secs(),
                                self.pass_deadline.as_secs()
                            );
                        }
                    }
                    Some(Event::Command(Command::Shutdown)) | None => {
                        self.shut_down(Some(task)).await;
                        return None;
                    }
                    Some(event) => later.push(event),
                },
            }
        }
    }

    fn room_id(&self) -> u64 {
        self.janus.settings.room.id
    }

    /// Closes an open room whose idle or duration limit ran out; says
    /// whether it did.
    fn close_if_expired(&mut self) -> bool {
        if self.desired != Desired::Open {
            return false;
        }
        let now = Instant::now();
        self.timers.saw(self.observed.participants, now);
        let Some(reason) = self.timers.expired(now) else {
            return false;
        };
        let (what, key, limit) = match reason {
            CloseReason::MaxDuration => ("open for", "max_duration_s", self.timers.max_duration),
            _ => (
                "no participants for",
                "idle_timeout_s",
                self.timers.idle_timeout,
            ),
        };
        log::info!(
            "room {}: {what} {} s (room.{key}): closing",
            self.room_id(),
            limit.unwrap_or_default().as_secs()
        );
        self.set_desired(Desired::Closed, Some(reason));
        true
    }

    /// Records how a pass ended; returns how long to wait before the next.
    fn pass_finished(&mut self, result: Result<(), PassError>) -> Duration {
        let room_id = self.room_id();
        let error = match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    log::info!("room {room_id}: Janus answers again");
                }
                self.reset_backoff();
                return self.janus.settings.room.check_interval;
            }
            Err(error) => error,
        };
        let backoff = if error.needs_operator() {
            &mut self.operator
        } else {
            &mut self.transient
        };
        let delay = backoff.next_delay();
        let failure = error.failure();
        if self.last_error.as_ref().map(|f| &f.message) != Some(&failure.message) {
            log::warn!(
                "room {room_id}: {}; retrying (attempt {}, next in {} ms)",
                failure.message,
                backoff.attempts(),
                delay.as_millis()
            );
        }
        self.last_error = Some(failure);
        delay
    }

    /// Waits `wait` (or less, for a room timer) for a reason to pass again.
    async fn wait(&mut self, wait: Duration) -> Next {
        let mut deadline = Instant::now() + wait;
        if self.desired == Desired::Open {
            // Wake when a timer may run out: that pass counts again and decides.
            deadline = self
                .timers
                .next_deadline()
                .map_or(deadline, |t| t.min(deadline));
        }
        let signalling = Arc::clone(&self.janus.signalling);
        let edges = Arc::clone(&self.janus.edges);
        loop {
            let next = tokio::select! {
                () = sleep_until(deadline) => self.tick(),
                event = self.inbox.recv() => self.event(event),
                // The uplink offered (or its offer went): publish it now.
                () = signalling.changed() => self.offered(),
                // An edge's mountpoint came or went: forward accordingly.
                () = edges.changed() => Next::Pass,
            };
            if next != Next::Wait {
                return next;
            }
        }
    }

    /// Handles an event between passes (`None`: every sender is gone).
    fn event(&mut self, event: Option<Event>) -> Next {
        match event {
            Some(Event::Ping(answer)) => Self::ping(answer),
            Some(Event::Command(command)) => self.command(command),
            Some(Event::Poll(event)) => self.poll(event),
            None => Next::Stop,
        }
    }

    /// Time to check again (or to retry after a failure): forget what was
    /// seen so the next pass verifies it.
    fn tick(&mut self) -> Next {
        self.observed.forget();
        Next::Pass
    }

    /// The uplink offered or withdrew: pass again, unless backing off.
    fn offered(&self) -> Next {
        if self.last_error.is_some() || !self.observed.webrtc() {
            Next::Wait
        } else {
            Next::Pass
        }
    }

    /// The watchdog asks whether the loop is alive: it is.
    fn ping(answer: oneshot::Sender<()>) -> Next {
        let _ = answer.send(());
        Next::Wait
    }

    fn command(&mut self, command: Command) -> Next {
        let desired = match command {
            Command::Shutdown => return Next::Stop,
            Command::Open => Desired::Open,
            Command::Close => Desired::Closed,
        };
        if desired == Desired::Open {
            self.timers.opened(Instant::now());
        }
        let word = if desired == Desired::Open {
            "open"
        } else {
            "close"
        };
        log::info!("room {}: {word} requested", self.room_id());
        self.set_desired(desired, Some(CloseReason::Command));
        Next::Pass
    }

    /// The long-poll reports: pass again now, unless backing off.
    fn poll(&mut self, event: PollEvent) -> Next {
        let backing_off = self.last_error.is_some();
        match event {
            PollEvent::SessionLost(id) => {
                if !self.observed.session.is_some_and(|s| s.id == id) {
                    return Next::Wait; // an old session's poller
                }
                self.observed.lose_session();
                log::info!(
                    "room {}: Janus session {} expired or Janus restarted",
                    self.room_id(),
                    id.0
                );
            }
            PollEvent::Unreachable(_) if !backing_off => self.observed.forget(),
            PollEvent::Unreachable(_) => {}
            PollEvent::Peer { handle, news, .. } => return self.peer(handle, news),
        }
        if backing_off {
            Next::Wait
        } else {
            Next::Pass
        }
    }

    /// Janus reports on a PeerConnection: the publisher's is up, or over
    /// (its handle is then detached and a new offer published).
    fn peer(&mut self, handle: crate::janus::HandleId, news: PeerNews) -> Next {
        let uplink = &mut self.observed.uplink;
        let Publisher::Live(live) = &mut uplink.publisher else {
            return Next::Wait;
        };
        if live.handle.id != handle {
            return Next::Wait; // an earlier publisher's
        }
        let room_id = self.janus.settings.room.id;
        match news {
            PeerNews::Up => {
                live.connected = true;
                uplink.unconnected = 0;
                log::info!("video room {room_id}: WebRTC uplink connected (ICE and DTLS up)");
                self.publish();
                Next::Wait
            }
            PeerNews::Down => {
                log::warn!(
                    "video room {room_id}: Janus hung up the WebRTC uplink; publishing again"
                );
                if !live.connected {
                    uplink.unconnected = uplink.unconnected.saturating_add(1);
                }
                uplink.publisher = Publisher::Over(live.handle);
                uplink.forwards = Presence::Absent;
                Next::Pass
            }
        }
    }

    /// Sets what the owner wants; `reason` counts only for closing.
    fn set_desired(&mut self, desired: Desired, reason: Option<CloseReason>) {
        self.desired = desired;
        self.closed_by = (desired == Desired::Closed).then_some(reason).flatten();
        if let Some(owner) = &self.owner {
            let closed_by = self.closed_by;
            owner.send_replace(Choice { desired, closed_by });
        }
        self.reset_backoff();
    }

    fn reset_backoff(&mut self) {
        self.transient.reset();
        self.operator.reset();
    }

    /// Cleans up as `destroy_on_close` says and destroys the session, within
    /// a budget that includes waiting for a pass still in flight (a Janus
    /// that does not answer must not hold the agent past systemd's stop
    /// timeout); then publishes the room closed.
    async fn shut_down(&mut self, in_flight: Option<PassTask>) {
        let room_id = self.room_id();
        let janus = Arc::clone(&self.janus);
        let observed = self.observed;
        let cleanup = async move {
            let observed = match in_flight {
                Some(task) => outcome(task.await).0,
                None => observed,
            };
            outcome(spawn_pass(&janus, Goal::Stopped, observed).await)
        };
        match tokio::time::timeout(SHUTDOWN_BUDGET, cleanup).await {
            Ok((_, Ok(()))) => log::info!("room {room_id}: cleaned up on Janus"),
            Ok((_, Err(e))) => log::warn!("room {room_id}: clean-up incomplete: {e}"),
            Err(_) => log::warn!(
                "room {room_id}: clean-up did not finish within {} s",
                SHUTDOWN_BUDGET.as_secs()
            ),
        }
        self.janus.current.set(None);
        self.viewer_url = None;
        self.observed = Observed::default();
        self.last_error = None;
        self.owner = None; // stopping is not the owner's choice
        self.set_desired(Desired::Closed, Some(CloseReason::Command));
        self.publish();
    }

    /// Publishes what the last pass saw; logs a change of phase.
    fn publish(&self) {
        let observed = &self.observed;
        let next = RoomState {
            room_id: self.room_id(),
            desired: self.desired,
            session: observed.session.is_some(),
            forwarding: self.janus.settings.speaker.enabled,
            room: observed.room,
            mountpoint: observed.mountpoint,
            forwarder: observed.forwarder,
            chat: match observed.session {
                _ if !self.janus.settings.room.chat => Chat::Off,
                Some(session) if !session.has_chat() => Chat::Unavailable,
                _ => Chat::On(observed.chat),
            },
            forward: observed.forward,
            uplink: published_uplink(observed).or(fixed_uplink(&self.janus.settings)),
            media_age: observed.media_age,
            participants: match observed.participants {
                Presence::Present(n) => Some(n),
                _ => None,
            },
            closed_by: self.closed_by,
            srtp_key: observed.srtp_key,
            last_error: self.last_error.clone(),
        };
        let room_id = next.room_id;
        self.state.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            if let (Some((trouble, fix)), true) = (next.chat.trouble(), current.chat != next.chat) {
                log::warn!("room {room_id}: chat: {trouble}; {fix}");
            }
            log_uplink_choice(room_id, current.uplink, next.uplink);
            let (was, is) = (current.phase(), next.phase());
            if was != is {
                log::info!("room {room_id}: {was:?} -> {is:?}");
                if let (Phase::Live, Some(url)) = (is, &self.viewer_url) {
                    log::info!("room {room_id} is live: viewers open {url}");
                }
            }
            *current = next;
            true
        });
    }
}

/// The uplink as published: the one the session chose, with its parts.
fn published_uplink(observed: &Observed) -> Option<Uplink> {
    let (kind, fallback) = observed.uplink.kind?;
    let seen = &observed.uplink;
    Some(Uplink {
        room: seen.room,
        publisher: match seen.publisher {
            Publisher::Live(live) if live.connected => PublisherPhase::Connected,
            Publisher::Live(_) => PublisherPhase::Published,
            _ => PublisherPhase::Absent,
        },
        forwarders: match seen.forwards {
            Presence::Present(_) => Presence::Present(()),
            Presence::Absent => Presence::Absent,
            Presence::Unknown => Presence::Unknown,
        },
        ..Uplink::new(kind, fallback)
    })
}

/// Logs a new choice of uplink: a fallback to plain RTP as a warning that
/// says what is missing.
fn log_uplink_choice(room_id: u64, was: Option<Uplink>, is: Option<Uplink>) {
    let choice = |u: Option<Uplink>| u.map(|u| (u.kind, u.fallback));
    match choice(is) {
        choice_is if choice_is == choice(was) => {}
        Some((_, Some(why))) => {
            log::warn!("room {room_id}: uplink: plain RTP, not WebRTC: {why}");
        }
        Some((kind, None)) => log::info!("room {room_id}: uplink: {kind:?}"),
        None => {}
    }
}

/// The uplink known before any session: plain RTP when the settings say so.
fn fixed_uplink(settings: &Settings) -> Option<Uplink> {
    (settings.stream.transport == crate::config::Transport::Rtp)
        .then(|| Uplink::new(crate::state::UplinkKind::Rtp, None))
}

/// A pass running on a blocking thread.
type PassTask = tokio::task::JoinHandle<(Observed, Result<(), PassError>)>;

/// Starts one pass on a blocking thread.
fn spawn_pass(janus: &Arc<Janus>, goal: Goal, observed: Observed) -> PassTask {
    let janus = Arc::clone(janus);
    tokio::task::spawn_blocking(move || {
        let mut observed = observed;
        let result = janus.converge(goal, &mut observed);
        (observed, result)
    })
}

/// What a finished pass saw and how it ended.
fn outcome(
    joined: Result<(Observed, Result<(), PassError>), tokio::task::JoinError>,
) -> (Observed, Result<(), PassError>) {
    joined.unwrap_or_else(|e| (Observed::default(), Err(PassError::Aborted(e.to_string()))))
}

/// How long a pass may run before it counts as hung rather than slow: each
/// action makes at most three requests (creating a session with both
/// plugins attached) or one request and an address lookup, each bounded.
fn pass_deadline(request_timeout: Duration) -> Duration {
    let per_action = (request_timeout * 3).max(request_timeout + crate::resolve::TIMEOUT);
    per_action * u32::try_from(MAX_ACTIONS_PER_PASS).unwrap_or(u32::MAX) + Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass waiting on a Janus that accepts and never answers is slow,
    /// not hung: the loop answers the watchdog. Once the pass is past its
    /// deadline (here shortened below the request timeout) it does not.
    #[tokio::test]
    async fn the_loop_answers_while_a_pass_waits_and_not_once_it_hangs() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut settings = Settings::default();
        settings.janus.url = format!("http://{}/janus", silent.local_addr().expect("addr"));
        settings.janus.request_timeout = Duration::from_secs(3);
        let client = Arc::new(Client::new(&settings.janus).expect("client"));
        let deadline = Duration::from_millis(1000);
        let (owner, _) = watch::channel(crate::owner::Choice::OPEN);
        let uplink = UplinkParts {
            signalling: Arc::default(),
            local_webrtc: None,
            edges: Arc::default(),
        };
        let (room, _task) =
            spawn_with_deadline(client, Arc::new(settings), owner, uplink, deadline);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(room.is_responsive(Duration::from_millis(200)).await);
        tokio::time::sleep_until(start + deadline + Duration::from_millis(200)).await;
        assert!(!room.is_responsive(Duration::from_millis(200)).await);
    }

    #[test]
    fn no_pass_of_bounded_requests_reaches_the_deadline() {
        let request = Duration::from_secs(5);
        let most = request * 3 * u32::try_from(MAX_ACTIONS_PER_PASS).unwrap_or(u32::MAX);
        assert!(pass_deadline(request) > most);
    }
}
