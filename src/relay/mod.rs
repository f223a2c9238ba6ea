//! Edge Janus servers (`[[relay]]`): more viewers than one Janus carries.
//!
//! The origin (`[janus]`) keeps the room, the chat and the WebRTC uplink's
//! publisher. For each edge a [`keeper`] owns a Streaming mountpoint there
//! with the room's id (made, proven and destroyed as the origin's is,
//! never adopting one it cannot prove its own), and publishes what it sees
//! on the [`Board`]. The room reconciler reads the board and has the
//! origin's publisher forward the broadcast into each live edge's
//! mountpoint: the Pi's uplink does not grow with the edges. Each edge is
//! retried on its own; one that is down or slow disturbs nothing else.

mod keeper;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::{Settings, MAX_RELAYS};
use crate::state::RoomState;

/// What one edge is doing, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgePhase {
    /// The room is closed: nothing of it on the edge.
    Idle,
    /// Its mountpoint is being made or checked.
    Opening,
    /// Its mountpoint is the agent's: the origin forwards into it.
    Live,
    /// It does not answer (or refuses the agent's credentials).
    Unreachable,
    /// Someone else holds a mountpoint with the room's id there.
    Conflict,
    /// The uplink is plain RTP: the origin's mountpoint cannot forward, so
    /// no edge is fed (`stream.transport = "webrtc"` or `"auto"`).
    NeedsWebrtc,
}

/// One edge as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// Its REST endpoint (`relay.url`, which holds no secret).
    pub url: String,
    /// What it is doing.
    pub phase: EdgePhase,
    /// Milliseconds since its mountpoint last received video.
    pub media_age_ms: Option<u64>,
    /// Why it is not live, when something failed.
    pub error: Option<String>,
    /// Which of its mountpoints it is: counted up each time the keeper
    /// makes one (a forward into an earlier one is made again: Janus
    /// latches a forwarder's RTCP port).
    #[serde(skip)]
    pub generation: u64,
}

impl Edge {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            phase: EdgePhase::Idle,
            media_age_ms: None,
            error: None,
            generation: 0,
        }
    }
}

/// The edges' states: the keepers write, the reconciler, `status` and the
/// metrics read.
#[derive(Debug, Default)]
pub struct Board {
    edges: Mutex<Vec<Edge>>,
    changed: Notify,
}

impl Board {
    /// A board for the configured edges, each idle.
    pub fn new(settings: &Settings) -> Self {
        let edges = settings.relays.iter().map(|r| Edge::new(&r.url)).collect();
        Self {
            edges: Mutex::new(edges),
            changed: Notify::new(),
        }
    }

    /// Every edge, in the configuration's order.
    pub fn edges(&self) -> Vec<Edge> {
        self.lock().clone()
    }

    /// For each edge (by index), the generation of its mountpoint while it
    /// is live: where the origin must forward.
    pub fn targets(&self) -> [Option<u64>; MAX_RELAYS] {
        let mut targets = [None; MAX_RELAYS];
        for (target, edge) in targets.iter_mut().zip(self.lock().iter()) {
            *target = (edge.phase == EdgePhase::Live).then_some(edge.generation);
        }
        targets
    }

    /// Waits until an edge's state changes (a change while nobody waited
    /// is kept for the next wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn set(&self, index: usize, edge: Edge) {
        let mut edges = self.lock();
        if let Some(slot) = edges.get_mut(index).filter(|slot| **slot != edge) {
            if slot.phase != edge.phase {
                log::info!("edge {}: {:?} -> {:?}", edge.url, slot.phase, edge.phase);
            }
            *slot = edge;
            self.changed.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Edge>> {
        self.edges.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a keeper for each `[[relay]]`; each ends, its mountpoint cleaned
/// up, once `room` closes (the reconciler stopped).
pub fn spawn(
    settings: &Arc<Settings>,
    board: &Arc<Board>,
    room: &watch::Receiver<RoomState>,
) -> Vec<JoinHandle<()>> {
    (0..settings.relays.len())
        .map(|index| {
            let keeper = keeper::Keeper::new(index, Arc::clone(settings), Arc::clone(board));
            tokio::spawn(keeper.run(room.clone()))
        })
        .collect()
}
