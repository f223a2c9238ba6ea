//! The planner: what the agent last saw on Janus ([`Observed`]), where it is
//! headed ([`Goal`]), and [`next_action`], the pure function that picks the
//! next step from one towards the other.

use serde::{Serialize, Serializer};

use crate::janus::{Handle, SessionId};
use crate::secret::SrtpKey;

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

    pub(super) fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl<T> Serialize for Presence<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// Whether an existing mountpoint listens on the configured ports (and
/// offers the configured video's H.264 level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It does: use it.
    Matches,
    /// It listens elsewhere or offers another level (an earlier run with
    /// other settings): replace it.
    WrongPorts,
    /// SRTP is on and the mountpoint was not made by this run, so its key
    /// is unknown: replace it.
    UnknownKey,
}

/// The session and the two plugin handles the agent works through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub(super) id: SessionId,
    pub(super) audiobridge: Handle,
    pub(super) streaming: Handle,
}

/// What the agent last saw on Janus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub(super) session: Option<Session>,
    pub(super) room: Presence,
    pub(super) mountpoint: Presence<Fit>,
    pub(super) forwarder: Presence<u64>,
    /// How many are in the room (counted only with `room.idle_timeout_s`).
    pub(super) participants: Presence<usize>,
    /// The SRTP key of the mountpoint this run created (`stream.srtp`).
    /// Kept while the mountpoint is known to exist: it survives checks and
    /// a new session, and goes with the mountpoint.
    pub(super) srtp_key: Option<SrtpKey>,
    /// Time since Janus last received video and audio, from the mountpoint's info.
    pub(super) media_age: MediaAge,
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
    pub(super) fn forget(&mut self) {
        *self = Self {
            session: self.session,
            srtp_key: self.srtp_key,
            ..Self::default()
        };
    }
}

/// Where the reconciler is headed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Goal {
    Open,
    Closed,
    /// Closed, and the session destroyed: the agent is stopping.
    Stopped,
}

/// One step towards the goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
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
pub(super) struct Plan {
    /// Remove room and mountpoint on close (else only the forwarder).
    pub(super) destroy_on_close: bool,
    /// Count the room's participants while it is open (for the idle timeout).
    pub(super) count_participants: bool,
}

/// The next step from `observed` towards `goal`, or `None` when they match.
pub(super) fn next_action(goal: Goal, plan: Plan, observed: &Observed) -> Option<Action> {
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
}
