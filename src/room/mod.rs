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
pub mod plan;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::backoff::{Backoff, Policy};
use crate::config::Settings;
use crate::janus::longpoll::{CurrentSession, PollEvent};
use crate::janus::Client;
use crate::state::{CloseReason, Desired, Failure, Phase, Presence, RoomState};

use actions::Janus;
pub use error::PassError;
use plan::{Goal, Observed};
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
    if settings.room.secret.is_none() {
        log::warn!(
            "room {}: room.secret is not set: anybody with access to Janus's API can take the room over, and the agent cannot tell its room from someone else's",
            settings.room.id
        );
    }
    let (events, inbox) = mpsc::channel(32);
    let (state, published) = watch::channel(RoomState::new(settings.room.id, desired));
    let reconciler = Reconciler {
        timers: Timers::new(&settings.room, Instant::now()),
        viewer_url: settings.viewer_url(),
        janus: Arc::new(Janus {
            client,
            settings,
            current: CurrentSession::default(),
            events: events.clone(),
        }),
        inbox,
        state,
        desired,
        closed_by: (desired == Desired::Closed).then_some(CloseReason::Command),
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
}

impl Reconciler {
    /// A pass, then wait for the next reason to pass again; until told to stop.
    async fn run(mut self) {
        loop {
            let goal = match self.desired {
                Desired::Open => Goal::Open,
                Desired::Closed => Goal::Closed,
            };
            let (seen, result) = pass(&self.janus, goal, self.observed).await;
            self.observed = seen;
            if self.close_if_expired() {
                continue;
            }
            let wait = self.pass_finished(result);
            self.publish();
            if self.wait(wait).await == Next::Stop {
                self.shut_down().await;
                return;
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
        loop {
            let next = tokio::select! {
                () = sleep_until(deadline) => self.tick(),
                event = self.inbox.recv() => match event {
                    Some(Event::Ping(answer)) => Self::ping(answer),
                    Some(Event::Command(command)) => self.command(command),
                    Some(Event::Poll(event)) => self.poll(event),
                    None => Next::Stop,
                },
            };
            if next != Next::Wait {
                return next;
            }
        }
    }

    /// Time to check again (or to retry after a failure): forget what was
    /// seen so the next pass verifies it.
    fn tick(&mut self) -> Next {
        self.observed.forget();
        Next::Pass
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
                self.observed.session = None;
                self.observed.forget();
                log::info!(
                    "room {}: Janus session {} expired or Janus restarted",
                    self.room_id(),
                    id.0
                );
            }
            PollEvent::Unreachable(_) if !backing_off => self.observed.forget(),
            PollEvent::Unreachable(_) => {}
        }
        if backing_off {
            Next::Wait
        } else {
            Next::Pass
        }
    }

    /// Sets what the owner wants; `reason` counts only for closing.
    fn set_desired(&mut self, desired: Desired, reason: Option<CloseReason>) {
        self.desired = desired;
        self.closed_by = (desired == Desired::Closed).then_some(reason).flatten();
        self.reset_backoff();
    }

    fn reset_backoff(&mut self) {
        self.transient.reset();
        self.operator.reset();
    }

    /// Cleans up as `destroy_on_close` says and destroys the session, within
    /// a budget; then publishes the room closed.
    async fn shut_down(mut self) {
        let room_id = self.room_id();
        let cleanup = pass(&self.janus, Goal::Stopped, self.observed);
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
            room: observed.room,
            mountpoint: observed.mountpoint,
            forwarder: observed.forwarder,
            forward: observed.forward,
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

/// Runs one pass on a blocking thread.
async fn pass(
    janus: &Arc<Janus>,
    goal: Goal,
    observed: Observed,
) -> (Observed, Result<(), PassError>) {
    let janus = Arc::clone(janus);
    let joined = tokio::task::spawn_blocking(move || {
        let mut observed = observed;
        let result = janus.converge(goal, &mut observed);
        (observed, result)
    })
    .await;
    joined.unwrap_or_else(|e| (Observed::default(), Err(PassError::Aborted(e.to_string()))))
}
