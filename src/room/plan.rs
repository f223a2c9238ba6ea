//! The planner: what the agent last saw on Janus ([`Observed`]), where it is
//! headed ([`Goal`]), and [`next_action`], the pure function that picks the
//! next step from one towards the other.

use crate::janus::{Handle, SessionId};
use crate::secret::SrtpKey;
use crate::state::{Conflict, Fit, Forward, MediaAge, Owner, Presence};

/// The session and the plugin handles the agent works through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub(super) id: SessionId,
    pub(super) audiobridge: Handle,
    pub(super) streaming: Handle,
    /// The TextRoom handle, with `room.chat`.
    pub(super) textroom: Option<Handle>,
}

impl Session {
    /// Whether this session can keep a chat: it has a TextRoom handle
    /// (none without `room.chat`, or on a Janus without the plugin).
    pub(super) fn has_chat(&self) -> bool {
        self.textroom.is_some()
    }
}

/// What the agent last saw on Janus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub(super) session: Option<Session>,
    pub(super) room: Presence<Owner>,
    pub(super) mountpoint: Presence<Fit>,
    /// The chat: a TextRoom room with the room's id (with `room.chat`).
    pub(super) chat: Presence<Owner>,
    /// The forwarder to the speaker, as it should be.
    pub(super) forwarder: Presence<u64>,
    /// A forwarder of the agent's that is not as it should be (an old
    /// address, an unknown SRTP key, a duplicate): to stop.
    pub(super) stale_forwarder: Option<u64>,
    /// How many are in the room (counted only with `room.idle_timeout_s`).
    pub(super) participants: Presence<usize>,
    /// The SRTP key of the mountpoint this run created (`stream.srtp`).
    /// Kept while the mountpoint is known to exist: it survives checks and
    /// a new session, and goes with the mountpoint.
    pub(super) srtp_key: Option<SrtpKey>,
    /// The forwarder the speaker plays, with its key; kept like `srtp_key`.
    pub(super) forward: Option<Forward>,
    /// Time since Janus last received video and audio, from the mountpoint's info.
    pub(super) media_age: MediaAge,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            session: None,
            room: Presence::Unknown,
            mountpoint: Presence::Unknown,
            chat: Presence::Unknown,
            forwarder: Presence::Unknown,
            stale_forwarder: None,
            participants: Presence::Unknown,
            srtp_key: None,
            forward: None,
            media_age: MediaAge::default(),
        }
    }
}

impl Observed {
    /// Forgets what exists (but keeps the session and the keys), so the
    /// next pass checks again.
    pub(super) fn forget(&mut self) {
        *self = Self {
            session: self.session,
            srtp_key: self.srtp_key,
            forward: self.forward,
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
    CheckChat,
    CreateChat,
    DestroyChat,
    CountParticipants,
    DestroySession,
}

/// What the settings ask of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// The room's (and the mountpoint's) id.
    pub(super) id: u64,
    /// Remove room and mountpoint on close (else only the forwarder).
    pub(super) destroy_on_close: bool,
    /// Count the room's participants while it is open (for the idle timeout).
    pub(super) count_participants: bool,
    /// Keep a chat (TextRoom room) with the room.
    pub(super) chat: bool,
    /// Forward the room's audio to the speaker (else no forwarder of ours).
    pub(super) speaker: bool,
}

/// The next step from `observed` towards `goal`: `None` when they match,
/// a [`Conflict`] when someone else holds the id (nothing of theirs is
/// used, changed or destroyed).
pub(super) fn next_action(
    goal: Goal,
    plan: Plan,
    observed: &Observed,
) -> Result<Option<Action>, Conflict> {
    let Observed {
        session,
        room,
        mountpoint,
        ..
    } = *observed;
    if goal == Goal::Open {
        return match session {
            None => Ok(Some(Action::CreateSession)),
            Some(_) => opening(plan, observed),
        };
    }
    // Closing: check before destroying, and leave what is not ours.
    // Destroying the room takes its forwarder with it; a room that stays
    // loses only the forwarder (no one listens to it any more).
    let ours_room = room == Presence::Present(Owner::Us);
    let teardown = if plan.destroy_on_close {
        [
            match mountpoint {
                Presence::Unknown => Some(Action::CheckMountpoint),
                Presence::Present(
                    Fit::Matches | Fit::UnknownKey | Fit::WrongLevel | Fit::NoFeedback,
                ) => Some(Action::DestroyMountpoint),
                Presence::Absent | Presence::Present(Fit::Foreign(_)) => None,
            },
            match room {
                Presence::Unknown => Some(Action::CheckRoom),
                _ if ours_room => Some(Action::DestroyRoom),
                _ => None,
            },
            closing_chat(plan, observed.chat),
        ]
    } else {
        let forwarder_step = match (room, observed.forwarder, observed.stale_forwarder) {
            (Presence::Unknown, ..) => Some(Action::CheckRoom),
            _ if !ours_room => None,
            (_, _, Some(id)) | (_, Presence::Present(id), _) => Some(Action::StopForwarder(id)),
            (_, Presence::Unknown, _) => Some(Action::CheckForwarder),
            (_, Presence::Absent, None) => None,
        };
        [forwarder_step, None, None]
    };
    Ok(match (teardown.into_iter().flatten().next(), session) {
        (Some(_), None) => Some(Action::CreateSession),
        (Some(step), Some(_)) => Some(step),
        (None, Some(_)) if goal == Goal::Stopped => Some(Action::DestroySession),
        (None, _) => None,
    })
}

/// The next step towards an open room, with a session.
fn opening(plan: Plan, observed: &Observed) -> Result<Option<Action>, Conflict> {
    use Presence::{Absent, Present, Unknown};
    let conflict = |what, why| Conflict {
        what,
        id: plan.id,
        why,
    };
    Ok(Some(match observed.room {
        Unknown => Action::CheckRoom,
        Absent => Action::CreateRoom,
        Present(Owner::Foreign(why)) => return Err(conflict("room", why)),
        Present(Owner::Us) => match observed.mountpoint {
            Unknown => Action::CheckMountpoint,
            Absent => Action::CreateMountpoint,
            Present(Fit::Foreign(why)) => return Err(conflict("mountpoint", why)),
            Present(Fit::UnknownKey | Fit::WrongLevel | Fit::NoFeedback) => {
                Action::DestroyMountpoint
            }
            Present(Fit::Matches) => return opening_extras(plan, observed),
        },
    }))
}

/// The steps towards an open room once room and mountpoint are ours and
/// fit: the forwarder (or none, without a speaker), the chat, the count.
fn opening_extras(plan: Plan, observed: &Observed) -> Result<Option<Action>, Conflict> {
    use Presence::{Absent, Present, Unknown};
    Ok(Some(match (observed.stale_forwarder, observed.forwarder) {
        (Some(id), _) => Action::StopForwarder(id),
        (None, Unknown) => Action::CheckForwarder,
        (None, Absent) if plan.speaker => Action::CreateForwarder,
        (None, Present(id)) if !plan.speaker => Action::StopForwarder(id),
        // The count first: a chat that cannot be made (someone else's
        // text room) must not stop the idle timeout.
        _ if plan.count_participants && observed.participants == Unknown => {
            Action::CountParticipants
        }
        _ if plan.chat && observed.chat != Present(Owner::Us) => {
            return opening_chat(plan, observed.chat)
        }
        _ => return Ok(None),
    }))
}

/// The chat's step towards an open room, once the rest is there.
fn opening_chat(plan: Plan, chat: Presence<Owner>) -> Result<Option<Action>, Conflict> {
    match chat {
        Presence::Unknown => Ok(Some(Action::CheckChat)),
        Presence::Absent => Ok(Some(Action::CreateChat)),
        Presence::Present(Owner::Foreign(why)) => Err(Conflict {
            what: "chat room",
            id: plan.id,
            why,
        }),
        Presence::Present(Owner::Us) => Ok(None),
    }
}

/// The chat's step towards a closed room (with `destroy_on_close`): it goes
/// with the room, if it is ours.
fn closing_chat(plan: Plan, chat: Presence<Owner>) -> Option<Action> {
    match chat {
        _ if !plan.chat => None,
        Presence::Unknown => Some(Action::CheckChat),
        Presence::Present(Owner::Us) => Some(Action::DestroyChat),
        Presence::Absent | Presence::Present(Owner::Foreign(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Foreign;
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
        textroom: Some(Handle {
            session: SessionId(1),
            id: crate::janus::HandleId(4),
        }),
    };

    const DESTROY: Plan = Plan {
        id: 4556,
        destroy_on_close: true,
        count_participants: false,
        chat: false,
        speaker: true,
    };
    const CHAT: Plan = Plan {
        chat: true,
        ..DESTROY
    };
    const KEEP: Plan = Plan {
        destroy_on_close: false,
        ..DESTROY
    };
    const OURS: Presence<Owner> = Present(Owner::Us);

    fn seen(
        room: Presence<Owner>,
        mountpoint: Presence<Fit>,
        forwarder: Presence<u64>,
    ) -> Observed {
        Observed {
            session: Some(SESSION),
            room,
            mountpoint,
            forwarder,
            ..Observed::default()
        }
    }

    fn next(goal: Goal, plan: Plan, observed: &Observed) -> Option<Action> {
        next_action(goal, plan, observed).expect("no conflict")
    }

    /// Runs the planner against a simulated Janus that does what it is asked
    /// and holds only the agent's own room.
    fn plan_from(goal: Goal, plan: Plan, mut observed: Observed) -> Vec<Action> {
        let mut steps = Vec::new();
        while let Some(action) = next(goal, plan, &observed) {
            steps.push(action);
            assert!(steps.len() < 20, "no fixed point: {steps:?}");
            match action {
                Action::CreateSession => observed = seen(Unknown, Unknown, Unknown),
                Action::CheckRoom | Action::CreateRoom => {
                    observed.room = OURS;
                    if observed.forwarder == Unknown {
                        observed.forwarder = Present(9);
                    }
                }
                Action::CheckMountpoint | Action::CreateMountpoint => {
                    observed.mountpoint = Present(Fit::Matches)
                }
                Action::CheckForwarder | Action::CreateForwarder => observed.forwarder = Present(9),
                Action::DestroyRoom => {
                    observed.room = Absent;
                    observed.forwarder = Absent;
                }
                Action::DestroyMountpoint => observed.mountpoint = Absent,
                Action::StopForwarder(id) if observed.stale_forwarder == Some(id) => {
                    observed.stale_forwarder = None;
                    observed.forwarder = Unknown;
                }
                Action::StopForwarder(_) => observed.forwarder = Absent,
                Action::CheckChat | Action::CreateChat => observed.chat = OURS,
                Action::DestroyChat => observed.chat = Absent,
                Action::CountParticipants => observed.participants = Present(0),
                Action::DestroySession => observed.session = None,
            }
        }
        steps
    }

    #[test]
    fn a_chat_room_of_someone_else_does_not_stop_the_count() {
        let counting = Plan {
            count_participants: true,
            ..CHAT
        };
        let mut live = seen(OURS, Present(Fit::Matches), Present(1));
        live.chat = Present(Owner::Foreign(Foreign::OtherSecret));
        assert_eq!(
            next(Goal::Open, counting, &live),
            Some(Action::CountParticipants)
        );
        live.participants = Present(2);
        assert!(next_action(Goal::Open, counting, &live).is_err());
    }

    #[test]
    fn without_a_speaker_the_room_opens_with_no_forwarder() {
        let quiet = Plan {
            speaker: false,
            ..DESTROY
        };
        let ready = seen(OURS, Present(Fit::Matches), Unknown);
        assert_eq!(
            next(Goal::Open, quiet, &ready),
            Some(Action::CheckForwarder)
        );
        let left_behind = seen(OURS, Present(Fit::Matches), Present(4));
        assert_eq!(
            plan_from(Goal::Open, quiet, left_behind),
            [Action::StopForwarder(4)]
        );
        let done = seen(OURS, Present(Fit::Matches), Absent);
        assert_eq!(next(Goal::Open, quiet, &done), None);
    }

    #[test]
    fn opening_from_nothing_checks_then_builds_in_order() {
        let steps = plan_from(Goal::Open, DESTROY, Observed::default());
        assert_eq!(
            steps,
            [
                Action::CreateSession,
                Action::CheckRoom,
                Action::CheckMountpoint
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
    fn a_mountpoint_with_an_unknown_srtp_key_is_replaced_and_the_key_outlives_checks() {
        let observed = seen(OURS, Present(Fit::UnknownKey), Present(1));
        assert_eq!(
            next(Goal::Open, DESTROY, &observed),
            Some(Action::DestroyMountpoint)
        );
        let key = SrtpKey::generate();
        let mut observed = Observed {
            srtp_key: Some(key),
            ..seen(OURS, Present(Fit::Matches), Present(1))
        };
        observed.forget();
        assert_eq!(observed.srtp_key, Some(key));
        assert_eq!(observed.mountpoint, Unknown);
    }

    #[test]
    fn what_someone_else_holds_is_a_conflict_and_never_touched() {
        // A room made without a secret by anybody; a mountpoint of theirs.
        let room = seen(Present(Owner::Foreign(Foreign::NoSecret)), Unknown, Unknown);
        let mountpoint = seen(OURS, Present(Fit::Foreign(Foreign::OtherPorts)), Unknown);
        for (observed, what, why) in [
            (room, "room", Foreign::NoSecret),
            (mountpoint, "mountpoint", Foreign::OtherPorts),
        ] {
            let conflict = Conflict {
                what,
                id: 4556,
                why,
            };
            assert_eq!(next_action(Goal::Open, DESTROY, &observed), Err(conflict));
            for plan in [DESTROY, KEEP] {
                for step in plan_from(Goal::Stopped, plan, observed) {
                    assert!(
                        !matches!(
                            (what, step),
                            ("room", Action::DestroyRoom | Action::StopForwarder(_))
                                | ("mountpoint", Action::DestroyMountpoint)
                        ),
                        "{what}: {step:?}"
                    );
                }
            }
        }
        // Our own room with their mountpoint: ours goes, theirs stays.
        assert_eq!(
            plan_from(Goal::Closed, DESTROY, mountpoint),
            [Action::DestroyRoom]
        );
    }

    #[test]
    fn a_stale_forwarder_is_stopped_before_the_new_one_is_made() {
        // The Pi's address changed: the forwarder to the old one is stale.
        let observed = Observed {
            stale_forwarder: Some(5),
            ..seen(OURS, Present(Fit::Matches), Absent)
        };
        assert_eq!(
            plan_from(Goal::Open, DESTROY, observed),
            [Action::StopForwarder(5), Action::CheckForwarder]
        );
        let closing = Observed {
            stale_forwarder: Some(5),
            ..seen(OURS, Present(Fit::Matches), Present(7))
        };
        assert_eq!(
            plan_from(Goal::Closed, KEEP, closing),
            [
                Action::StopForwarder(5),
                Action::CheckForwarder,
                Action::StopForwarder(9)
            ]
        );
    }

    #[test]
    fn the_chat_is_made_with_the_room_and_goes_with_it() {
        let nothing = seen(Absent, Absent, Absent);
        assert_eq!(
            plan_from(Goal::Open, CHAT, nothing),
            [
                Action::CreateRoom,
                Action::CreateMountpoint,
                Action::CreateForwarder,
                Action::CheckChat
            ]
        );
        let missing = Observed {
            chat: Absent,
            ..seen(OURS, Present(Fit::Matches), Present(1))
        };
        assert_eq!(plan_from(Goal::Open, CHAT, missing), [Action::CreateChat]);
        let live = Observed {
            chat: OURS,
            ..seen(OURS, Present(Fit::Matches), Present(1))
        };
        assert_eq!(next(Goal::Open, CHAT, &live), None);
        assert_eq!(
            plan_from(Goal::Closed, CHAT, live),
            [
                Action::DestroyMountpoint,
                Action::DestroyRoom,
                Action::DestroyChat
            ]
        );
        // Kept with the room without destroy_on_close; checked before a stop.
        let keep = Plan {
            destroy_on_close: false,
            ..CHAT
        };
        assert_eq!(
            plan_from(Goal::Closed, keep, live),
            [Action::StopForwarder(1)]
        );
        assert_eq!(
            plan_from(Goal::Stopped, CHAT, Observed::default()),
            [
                Action::CreateSession,
                Action::CheckMountpoint,
                Action::DestroyMountpoint,
                Action::CheckRoom,
                Action::DestroyRoom,
                Action::CheckChat,
                Action::DestroyChat,
                Action::DestroySession
            ]
        );
    }

    #[test]
    fn a_chat_room_of_someone_else_is_a_conflict_and_never_destroyed() {
        let theirs = Observed {
            chat: Present(Owner::Foreign(Foreign::OtherSecret)),
            ..seen(OURS, Present(Fit::Matches), Present(1))
        };
        assert_eq!(
            next_action(Goal::Open, CHAT, &theirs),
            Err(Conflict {
                what: "chat room",
                id: 4556,
                why: Foreign::OtherSecret
            })
        );
        let steps = plan_from(Goal::Stopped, CHAT, theirs);
        assert!(!steps.contains(&Action::DestroyChat), "{steps:?}");
    }

    #[test]
    fn live_is_a_fixed_point() {
        let observed = seen(OURS, Present(Fit::Matches), Present(1));
        assert_eq!(next(Goal::Open, DESTROY, &observed), None);
    }

    #[test]
    fn closing_with_destroy_removes_mountpoint_then_room() {
        let observed = seen(OURS, Present(Fit::Matches), Present(1));
        assert_eq!(
            plan_from(Goal::Closed, DESTROY, observed),
            [Action::DestroyMountpoint, Action::DestroyRoom]
        );
    }

    #[test]
    fn closing_without_destroy_only_stops_the_forwarder() {
        let observed = seen(OURS, Present(Fit::Matches), Present(7));
        assert_eq!(
            plan_from(Goal::Closed, KEEP, observed),
            [Action::StopForwarder(7)]
        );
        let unknown = seen(Unknown, Unknown, Unknown);
        assert_eq!(
            plan_from(Goal::Closed, KEEP, unknown),
            [Action::CheckRoom, Action::StopForwarder(9)]
        );
    }

    #[test]
    fn stopping_checks_ownership_then_destroys_and_ends_the_session() {
        let observed = seen(Unknown, Unknown, Unknown);
        assert_eq!(
            plan_from(Goal::Stopped, DESTROY, observed),
            [
                Action::CheckMountpoint,
                Action::DestroyMountpoint,
                Action::CheckRoom,
                Action::DestroyRoom,
                Action::DestroySession
            ]
        );
    }

    #[test]
    fn closing_with_no_session_needs_one_only_if_something_may_remain() {
        let unknown = Observed::default();
        assert_eq!(
            next(Goal::Closed, DESTROY, &unknown),
            Some(Action::CreateSession)
        );
        let gone = Observed {
            session: None,
            room: Absent,
            mountpoint: Absent,
            forwarder: Absent,
            ..Observed::default()
        };
        assert_eq!(next(Goal::Closed, DESTROY, &gone), None);
        assert_eq!(next(Goal::Stopped, DESTROY, &gone), None);
    }

    #[test]
    fn participants_are_counted_only_for_the_idle_timeout() {
        let plan = Plan {
            count_participants: true,
            ..DESTROY
        };
        let live = seen(OURS, Present(Fit::Matches), Present(1));
        assert_eq!(
            plan_from(Goal::Open, plan, live),
            [Action::CountParticipants]
        );
        assert_eq!(next(Goal::Open, DESTROY, &live), None);
        // Closing never counts.
        assert_eq!(
            plan_from(Goal::Closed, plan, live),
            [Action::DestroyMountpoint, Action::DestroyRoom]
        );
    }
}
