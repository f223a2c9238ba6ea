//! Keeps a Janus session alive and notices when it dies.
//!
//! One thread per session holds a long-poll open at all times: each poll is a
//! request, so the session never reaches Janus's timeout while the agent runs.
//! When Janus says the session is gone, or cannot be reached, the thread
//! tells its owner through a callback; the owner decides what to do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{Client, Polled, SessionId};

/// Pause after a failed poll before the next, so a dead Janus is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What the poller reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollEvent {
    /// Janus no longer knows the session (it restarted, or the session expired).
    SessionLost(SessionId),
    /// The poll failed for another reason (Janus down, network gone).
    Unreachable(SessionId),
}

/// Which session the owner currently uses; a poller whose session is no
/// longer current stops after its poll returns.
#[derive(Debug, Clone, Default)]
pub struct CurrentSession(Arc<AtomicU64>);

impl CurrentSession {
    /// Makes `session` current (or none), retiring the poller of any other.
    pub fn set(&self, session: Option<SessionId>) {
        self.0.store(session.map_or(0, |s| s.0), Ordering::Release);
    }

    fn is(&self, session: SessionId) -> bool {
        self.0.load(Ordering::Acquire) == session.0
    }
}

/// Starts polling `session` on its own thread until it is no longer current
/// or Janus says it is gone.
pub fn spawn(
    client: Arc<Client>,
    session: SessionId,
    current: CurrentSession,
    report: impl Fn(PollEvent) + Send + 'static,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name(format!("janus-poll-{}", session.0))
        .spawn(move || {
            while current.is(session) {
                match client.poll(session) {
                    Ok(Polled::Keepalive) => {}
                    Ok(Polled::Events(events)) => {
                        for event in events {
                            log::debug!("Janus event on session {}: {event}", session.0);
                        }
                    }
                    Err(e) if e.is_session_gone() => {
                        if current.is(session) {
                            report(PollEvent::SessionLost(session));
                        }
                        return;
                    }
                    Err(e) => {
                        log::debug!("long-poll of session {}: {e}", session.0);
                        if current.is(session) {
                            report(PollEvent::Unreachable(session));
                        }
                        thread::sleep(RETRY_PAUSE);
                    }
                }
            }
        })
        .map(drop)
}
