//! The agent's published view of itself: [`RoomState`], why the room was
//! closed ([`CloseReason`]) and its one-word summary ([`Phase`]).

use std::time::Duration;

use serde::Serialize;

use super::plan::{Fit, MediaAge, Presence};
use super::Desired;
use crate::secret::SrtpKey;

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
    pub(crate) fn new(room_id: u64, desired: Desired) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use Presence::Present;

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
