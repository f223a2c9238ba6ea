//! One edge's keeper: a session on the edge Janus and the Streaming
//! mountpoint there, kept as the room wants it (checked every
//! `room.check_interval_ms`, retried on its own with a capped backoff when
//! the edge fails), its state published on the board.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Board, Edge, EdgePhase};
use crate::backoff::{Backoff, Policy};
use crate::config::Settings;
use crate::janus::audiobridge::Created;
use crate::janus::streaming::{self, MountpointSpec, Streaming};
use crate::janus::{Client, Handle, JanusError, Listing, SessionId};
use crate::rtp::Medium;
use crate::state::{RoomState, UplinkKind};

/// Retries of an edge that fails: quick, so an edge that answers again is
/// fed again within a couple of seconds.
const RETRY: Policy = Policy {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(1),
};

/// What the edge should have, from the room's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The broadcast's mountpoint.
    Mountpoint,
    /// Nothing: the room is closed (or in conflict, or the uplink not yet chosen).
    Nothing,
    /// Nothing, because the uplink is plain RTP and nothing can feed it.
    NeedsWebrtc,
}

impl Want {
    fn of(room: &RoomState) -> Self {
        if !room.wants_open() || room.conflict().is_some() {
            return Self::Nothing;
        }
        match room.uplink.map(|u| u.kind) {
            Some(UplinkKind::Webrtc) => Self::Mountpoint,
            Some(UplinkKind::Rtp) => Self::NeedsWebrtc,
            None => Self::Nothing,
        }
    }
}

/// The keeper of edge `index`.
pub(super) struct Keeper {
    index: usize,
    settings: Arc<Settings>,
    board: Arc<Board>,
    /// None when the edge's TLS settings cannot be used (said once).
    client: Option<Arc<Client>>,
    /// The session and its Streaming handle.
    session: Option<(SessionId, Handle)>,
    /// The mountpoint there is known to be the agent's.
    known: bool,
    edge: Edge,
    backoff: Backoff,
}

impl Keeper {
    pub(super) fn new(index: usize, settings: Arc<Settings>, board: Arc<Board>) -> Self {
        let relay = &settings.relays[index];
        let client = match Client::new(&relay.janus()) {
            Ok(client) => Some(Arc::new(client)),
            Err(e) => {
                log::error!("edge {}: {e}", relay.url);
                None
            }
        };
        let edge = Edge::new(&relay.url);
        Self {
            index,
            settings,
            board,
            client,
            session: None,
            known: false,
            edge,
            backoff: Backoff::new(RETRY),
        }
    }

    /// Keeps the edge as `room` wants it until `room` closes; then cleans up.
    pub(super) async fn run(mut self, mut room: watch::Receiver<RoomState>) {
        loop {
            let want = Want::of(&room.borrow_and_update());
            self = self.pass_off_loop(want).await;
            let wait = if self.edge.error.is_some() {
                self.backoff.next_delay()
            } else {
                self.backoff.reset();
                self.settings.room.check_interval
            };
            tokio::select! {
                changed = room.changed() => if changed.is_err() {
                    let mut last = self.pass_off_loop(Want::Nothing).await;
                    last.end_session();
                    return;
                },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs a pass on a blocking thread (each request is bounded by
    /// `relay.request_timeout_ms`).
    async fn pass_off_loop(self, want: Want) -> Self {
        tokio::task::spawn_blocking(move || {
            let mut keeper = self;
            keeper.pass(want);
            keeper
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    fn pass(&mut self, want: Want) {
        let outcome = match want {
            Want::Mountpoint => self.keep(),
            Want::Nothing => self.clear().map(|()| EdgePhase::Idle),
            Want::NeedsWebrtc => self.clear().map(|()| EdgePhase::NeedsWebrtc),
        };
        match outcome {
            Ok(phase) => {
                self.edge.phase = phase;
                self.edge.error = None;
            }
            Err(e) => {
                if e.is_session_gone() {
                    self.session = None;
                }
                if self.edge.error.is_none() {
                    log::warn!("edge {}: {e}; retrying", self.edge.url);
                }
                self.edge.phase = EdgePhase::Unreachable;
                self.edge.media_age_ms = None;
                self.edge.error = Some(e.cause());
            }
        }
        self.board.set(self.index, self.edge.clone());
    }

    /// Makes or proves the mountpoint; its phase.
    fn keep(&mut self) -> Result<EdgePhase, JanusError> {
        let (client, handle) = self.streaming()?;
        let stream = Streaming::new(&client, handle);
        let settings = Arc::clone(&self.settings);
        let spec = spec(&settings, self.index);
        let Some(info) = stream.info(spec.id, spec.secret)? else {
            self.known = false;
            self.edge.media_age_ms = None;
            return Ok(match stream.create(&spec)? {
                Created::New => {
                    log::info!("edge {}: mountpoint {} created", self.edge.url, spec.id);
                    self.adopt();
                    EdgePhase::Live
                }
                Created::Existing => EdgePhase::Opening, // made meanwhile: checked next
            });
        };
        if let Some(why) = stream.stranger(&info, &spec)? {
            self.known = false;
            self.edge.error = None;
            log::debug!(
                "edge {}: mountpoint {} is not ours: {}",
                self.edge.url,
                spec.id,
                why.words()
            );
            return Ok(EdgePhase::Conflict);
        }
        if !self.known {
            // Left from before: the configured listing, and a forward anew.
            let listing = Listing {
                description: spec.description,
                pin: spec.pin,
            };
            stream.edit_listing(spec.id, spec.secret, listing)?;
            self.adopt();
        }
        self.edge.media_age_ms = info
            .age(Medium::Video)
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        Ok(EdgePhase::Live)
    }

    /// A mountpoint of the agent's is there now: the origin forwards into it.
    fn adopt(&mut self) {
        self.known = true;
        self.edge.generation += 1;
    }

    /// Removes the mountpoint (with `destroy_on_close`, when it is the
    /// agent's) and lets the session go.
    fn clear(&mut self) -> Result<(), JanusError> {
        if self.known && self.settings.room.destroy_on_close {
            let (client, handle) = self.streaming()?;
            let room = &self.settings.room;
            Streaming::new(&client, handle).destroy(room.id, room.secret.as_ref())?;
            log::info!("edge {}: mountpoint {} destroyed", self.edge.url, room.id);
            self.known = false;
        }
        self.edge.media_age_ms = None;
        self.end_session();
        Ok(())
    }

    /// The session's Streaming handle, made when there is none.
    fn streaming(&mut self) -> Result<(Arc<Client>, Handle), JanusError> {
        let Some(client) = self.client.clone() else {
            return Err(JanusError::Protocol(
                "the edge's TLS settings cannot be used (see the log at start)".into(),
            ));
        };
        if let Some((_, handle)) = self.session {
            return Ok((client, handle));
        }
        let id = client.create_session()?;
        let handle = match client.attach(id, streaming::PLUGIN) {
            Ok(handle) => handle,
            Err(e) => {
                let _ = client.destroy_session(id);
                return Err(e);
            }
        };
        self.session = Some((id, handle));
        Ok((client, handle))
    }

    fn end_session(&mut self) {
        if let (Some((id, _)), Some(client)) = (self.session.take(), &self.client) {
            let _ = client.destroy_session(id);
        }
    }
}

/// The mountpoint edge `index` gets: the room's, on the edge's ports.
fn spec(settings: &Settings, index: usize) -> MountpointSpec<'_> {
    let relay = &settings.relays[index];
    MountpointSpec::for_room(
        settings,
        [relay.video_port, relay.audio_port, relay.video_rtcp_port],
        relay.admin_key.as_ref(),
    )
}
