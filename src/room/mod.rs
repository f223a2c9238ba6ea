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
pub mod plan;
mod state;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, Instant};

use crate::backoff::{Backoff, Policy};
use crate::config::Settings;
use crate::janus::longpoll::{CurrentSession, PollEvent};
use crate::janus::{Client, JanusError};

use actions::Janus;
pub use plan::Presence;
use plan::{Goal, Observed};
pub use state::{CloseReason, Phase, RoomState};
use timers::Timers;

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

/// The loop: a pass, then wait for the next reason to pass again.
async fn run(
    janus: Arc<Janus>,
    mut desired: Desired,
    mut inbox: mpsc::Receiver<Event>,
    state: watch::Sender<RoomState>,
) {
    let room_id = janus.settings.room.id;
    let viewer_url = janus.settings.viewer_url();
    let check_interval = janus.settings.room.check_interval;
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
