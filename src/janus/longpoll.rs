//! Keeps a Janus session alive and notices when it dies.
//!
//! One thread per session holds a long-poll open at all times: each poll is a
//! request, so the session never reaches Janus's timeout while the agent runs.
//! When Janus says the session is gone, or cannot be reached, the thread
//! tells its owner through a callback; the owner decides what to do. The
//! events it brings are handed to the request waiting for them (a plugin's
//! asynchronous reply, by transaction) or, for what happens to a handle's
//! PeerConnection (`webrtcup`, `hangup`), reported to the owner too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::{Client, HandleId, Polled, SessionId};

/// Pause after a failed poll before the next, so a dead Janus is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What the poller reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollEvent {
    /// Janus no longer knows the session (it restarted, or the session expired).
    SessionLost(SessionId),
    /// The poll failed for another reason (Janus down, network gone).
    Unreachable(SessionId),
    /// Something happened to a handle's PeerConnection.
    Peer {
        session: SessionId,
        handle: HandleId,
        news: PeerNews,
    },
}

/// What Janus says of a handle's PeerConnection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerNews {
    /// ICE and DTLS are up (`webrtcup`).
    Up,
    /// It is over (`hangup`, or the handle was `detached`).
    Down,
}

impl PeerNews {
    /// The news a core event brings, if it is about a PeerConnection.
    fn of(event: &Value) -> Option<(HandleId, Self)> {
        let news = match event.get("janus")?.as_str()? {
            "webrtcup" => Self::Up,
            "hangup" | "detached" => Self::Down,
            _ => return None,
        };
        Some((HandleId(event.get("sender")?.as_u64()?), news))
    }
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
                            let Some(event) = client.deliver(event) else {
                                continue;
                            };
                            if let Some((handle, news)) = PeerNews::of(&event) {
                                report(PollEvent::Peer {
                                    session,
                                    handle,
                                    news,
                                });
                            }
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
