//! The planner: what the agent last saw on Janus ([`Observed`]), where it is
//! headed ([`Goal`]), and [`next_action`], the pure function that picks the
//! next step from one towards the other.

use crate::config::MAX_RELAYS;
use crate::janus::{Handle, SessionId};
use crate::secret::SrtpKey;
use crate::signalling::{Latest, OfferId};
use crate::state::{Conflict, Fit, Forward, MediaAge, Owner, Presence, UplinkKind};

/// The session and the plugin handles the agent works through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub(super) id: SessionId,
    pub(super) audiobridge: Handle,
    pub(super) streaming: Handle,
    /// The TextRoom handle, with `room.chat`.
    pub(super) textroom: Option<Handle>,
    /// The VideoRoom handle for the room's requests, with the WebRTC uplink.
    pub(super) videoroom: Option<Handle>,
}

impl Session {
    /// Whether this session can keep a chat: it has a TextRoom handle
    /// (none without `room.chat`, or on a Janus without the plugin).
    pub(super) fn has_chat(&self) -> bool {
        self.textroom.is_some()
    }
}

/// The agent's WebRTC publisher: a handle of its own, joined to the
/// VideoRoom and published with one of the uplink's offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// None.
    Absent,
    /// Publishing.
    Live(LivePublisher),
    /// A handle whose PeerConnection is over (Janus hung up): to detach.
    Over(Handle),
}

/// A publisher Janus answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePublisher {
    pub(super) handle: Handle,
    /// Its id in the room.
    pub(super) id: u64,
    /// The offer it published.
    pub(super) offer: OfferId,
    /// Janus said ICE and DTLS are up (`webrtcup`).
    pub(super) connected: bool,
    /// When Janus answered it.
    pub(super) since: std::time::Instant,
}

impl Publisher {
    /// The offer it publishes, while live.
    pub(super) fn offer(&self) -> Option<OfferId> {
        match self {
            Self::Live(live) => Some(live.offer),
            _ => None,
        }
    }
}

/// The publisher's forwarders into the mountpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwards {
    /// Janus's ids for the video and audio forwarders.
    pub(super) video: Option<u64>,
    pub(super) audio: Option<u64>,
    /// Made before the mountpoint was (re-)created: Janus latches the RTCP
    /// port once, so they are made again.
    pub(super) stale: bool,
}

/// The publisher's forwarders into one edge's mountpoint (`[[relay]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeForward {
    /// The publisher they forward: they end with it.
    pub(super) publisher: u64,
    /// The edge's mountpoint they feed, by its generation on the board.
    pub(super) generation: u64,
    /// Janus's ids for the video and audio forwarders.
    pub(super) video: Option<u64>,
    pub(super) audio: Option<u64>,
}

/// The WebRTC uplink's parts on Janus, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkSeen {
    /// The uplink this session uses, and why not WebRTC if it was asked
    /// for where possible (`auto`); None before the first session.
    pub(super) kind: Option<(UplinkKind, Option<&'static str>)>,
    /// The VideoRoom room with the room's id.
    pub(super) room: Presence<Owner>,
    pub(super) publisher: Publisher,
    pub(super) forwards: Presence<Forwards>,
    /// The uplink pipeline's latest offer, as of this step.
    pub(super) offer: Option<Latest>,
    /// Publishers in a row that ended without ever connecting.
    pub(super) unconnected: u8,
    /// The forwards into each edge (by its index in `[[relay]]`).
    pub(super) edges: [Option<EdgeForward>; MAX_RELAYS],
}

impl Default for UplinkSeen {
    fn default() -> Self {
        Self {
            kind: None,
            room: Presence::Unknown,
            publisher: Publisher::Absent,
            forwards: Presence::Unknown,
            offer: None,
            unconnected: 0,
            edges: [None; MAX_RELAYS],
        }
    }
}

/// A part of the room on Janus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The AudioBridge room.
    Room,
    /// The Streaming mountpoint.
    Mountpoint,
    /// The TextRoom room.
    Chat,
    /// The VideoRoom room (the WebRTC uplink's).
    VideoRoom,
}

/// The parts whose listing (description, PIN) this reconciler set: made
/// by it, or found on Janus (left from before, or by a run with another
/// PIN) and edited once to match the configuration.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Conformed {
    pub(super) room: bool,
    pub(super) mountpoint: bool,
    pub(super) chat: bool,
    pub(super) video_room: bool,
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
    /// The WebRTC uplink's parts.
    pub(super) uplink: UplinkSeen,
    /// The parts that show the configured listing; kept like `srtp_key`.
    pub(super) conformed: Conformed,
    /// The edges whose mountpoint is live, by the generation of that
    /// mountpoint, as of this step (from the board).
    pub(super) edge_targets: [Option<u64>; MAX_RELAYS],
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
            uplink: UplinkSeen::default(),
            conformed: Conformed::default(),
            edge_targets: [None; MAX_RELAYS],
        }
    }
}

impl Observed {
    /// Forgets what exists (but keeps the session, the keys, the uplink
    /// chosen, the publisher and what was conformed, which no check finds
    /// again), so the next pass checks again.
    pub(super) fn forget(&mut self) {
        *self = Self {
            session: self.session,
            srtp_key: self.srtp_key,
            forward: self.forward,
            conformed: self.conformed,
            uplink: UplinkSeen {
                kind: self.uplink.kind,
                publisher: self.uplink.publisher,
                unconnected: self.uplink.unconnected,
                edges: self.uplink.edges,
                ..UplinkSeen::default()
            },
            ..Self::default()
        };
    }

    /// The session is gone (Janus restarted, or it expired), and with it
    /// every handle: the publisher too.
    pub(super) fn lose_session(&mut self) {
        self.session = None;
        self.uplink.publisher = Publisher::Absent;
        self.forget();
    }

    /// Whether the camera and microphone go through a WebRTC publisher.
    pub(super) fn webrtc(&self) -> bool {
        matches!(self.uplink.kind, Some((UplinkKind::Webrtc, _)))
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
    /// Give a part found on Janus the configured listing (description, PIN).
    Conform(Part),
    /// Forward the publisher into edge `n`'s mountpoint.
    ForwardEdge(usize),
    /// Stop the publisher's forwards into edge `n` (gone, or re-made).
    StopEdgeForward(usize),
    CountParticipants,
    DestroySession,
    CheckVideoRoom,
    CreateVideoRoom,
    DestroyVideoRoom,
    /// Publish this offer of the uplink's (a new publisher handle).
    Publish(OfferId),
    /// Detach the publisher's handle: its PeerConnection ends.
    Unpublish,
    CheckUplinkForwarders,
    ForwardUplink,
    StopUplinkForwarders,
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
    // loses only the forwarder (no one listens to it any more). The
    // publisher goes first, its forwarders before it.
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
    let first = closing_uplink(plan, observed).or_else(|| teardown.into_iter().flatten().next());
    Ok(match (first, session) {
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
    // The chat first: a room opens only with all of its parts ours, and a
    // chat someone else made with the broadcast's id (a viewer, while the
    // room was closed) would be theirs to read, post in as the Pi and kick from.
    if plan.chat {
        if let Some(step) = opening_chat(plan, observed.chat)? {
            return Ok(Some(step));
        }
    }
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
/// fit: the forwarder (or none, without a speaker), the uplink, the count.
fn opening_extras(plan: Plan, observed: &Observed) -> Result<Option<Action>, Conflict> {
    use Presence::{Absent, Present, Unknown};
    if let Some(part) = unconformed(plan, observed) {
        return Ok(Some(Action::Conform(part)));
    }
    let forwarder = match (observed.stale_forwarder, observed.forwarder) {
        (Some(id), _) => Some(Action::StopForwarder(id)),
        (None, Unknown) => Some(Action::CheckForwarder),
        (None, Absent) if plan.speaker => Some(Action::CreateForwarder),
        (None, Present(id)) if !plan.speaker => Some(Action::StopForwarder(id)),
        _ => None,
    };
    if let Some(step) = forwarder.or(opening_uplink(plan, observed)?) {
        return Ok(Some(step));
    }
    let count = plan.count_participants && observed.participants == Unknown;
    Ok(count.then_some(Action::CountParticipants))
}

/// A part of the agent's found on Janus (not made by this reconciler) that
/// does not yet show the configured listing. Asked only once room and
/// mountpoint are known to be ours and to fit (and the chat, checked
/// first, ours): nothing is edited of a room another agent shares.
fn unconformed(plan: Plan, observed: &Observed) -> Option<Part> {
    let done = observed.conformed;
    let video_room = observed.webrtc() && observed.uplink.room == Presence::Present(Owner::Us);
    [
        (!done.room, Part::Room),
        (!done.mountpoint, Part::Mountpoint),
        (plan.chat && !done.chat, Part::Chat),
        (video_room && !done.video_room, Part::VideoRoom),
    ]
    .into_iter()
    .find_map(|(due, part)| due.then_some(part))
}

/// The WebRTC uplink's step towards an open room, once room and mountpoint
/// are there: its VideoRoom room, a publisher with the uplink's latest
/// offer (none while the uplink has not offered: the offer wakes the
/// reconciler), and its forwarders into the mountpoint.
fn opening_uplink(plan: Plan, observed: &Observed) -> Result<Option<Action>, Conflict> {
    use Presence::{Absent, Present, Unknown};
    if !observed.webrtc() {
        return Ok(closing_publisher(&observed.uplink));
    }
    let uplink = &observed.uplink;
    let latest = uplink.offer;
    Ok(match (uplink.room, uplink.publisher) {
        (Unknown, _) => Some(Action::CheckVideoRoom),
        (Absent, _) => Some(Action::CreateVideoRoom),
        (Present(Owner::Foreign(why)), _) => {
            return Err(Conflict {
                what: "video room",
                id: plan.id,
                why,
            })
        }
        (_, Publisher::Over(_)) => Some(Action::Unpublish),
        (_, Publisher::Absent) => latest
            .filter(|offer| !offer.taken)
            .map(|offer| Action::Publish(offer.id)),
        // A newer offer (the uplink started over): publish that instead.
        (_, Publisher::Live(live)) if latest.map(|l| l.id) != Some(live.offer) => {
            closing_publisher(uplink)
        }
        (_, Publisher::Live(live)) => match uplink.forwards {
            Unknown => Some(Action::CheckUplinkForwarders),
            Absent => Some(Action::ForwardUplink),
            Present(forwards) if forwards.stale => Some(Action::StopUplinkForwarders),
            Present(_) => edge_step(observed, &live),
        },
    })
}

/// The step that makes the publisher's forwards match the live edges: into
/// each live edge's current mountpoint, none into the others (forwards of
/// an earlier publisher ended with it).
fn edge_step(observed: &Observed, live: &LivePublisher) -> Option<Action> {
    let forwards = observed.uplink.edges.iter();
    (0..MAX_RELAYS)
        .zip(observed.edge_targets.iter().zip(forwards))
        .find_map(|(n, (target, forward))| {
            let current = forward.filter(|f| f.publisher == live.id);
            match (target, current) {
                (Some(_), None) => Some(Action::ForwardEdge(n)),
                (Some(generation), Some(f)) if f.generation != *generation => {
                    Some(Action::StopEdgeForward(n))
                }
                (None, Some(_)) => Some(Action::StopEdgeForward(n)),
                _ => None,
            }
        })
}

/// The steps that end the publisher: its forwarders, then its handle.
fn closing_publisher(uplink: &UplinkSeen) -> Option<Action> {
    match (uplink.publisher, uplink.forwards) {
        (Publisher::Absent, _) => None,
        (Publisher::Live(_), Presence::Present(_)) => Some(Action::StopUplinkForwarders),
        _ => Some(Action::Unpublish),
    }
}

/// The uplink's step towards a closed room: the publisher goes, and with
/// `destroy_on_close` the VideoRoom room (when it is ours).
fn closing_uplink(plan: Plan, observed: &Observed) -> Option<Action> {
    let uplink = &observed.uplink;
    if let Some(step) = closing_publisher(uplink) {
        return Some(step);
    }
    let has_handle = observed.session.is_none_or(|s| s.videoroom.is_some());
    if !plan.destroy_on_close || !observed.webrtc() || !has_handle {
        return None;
    }
    match uplink.room {
        Presence::Unknown => Some(Action::CheckVideoRoom),
        Presence::Present(Owner::Us) => Some(Action::DestroyVideoRoom),
        _ => None,
    }
}

/// The chat's step towards an open room, before the rest.
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
        videoroom: None,
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
            conformed: ALL_CONFORMED,
            ..Observed::default()
        }
    }

    /// Every part shows the configured listing (made by this reconciler).
    const ALL_CONFORMED: Conformed = Conformed {
        room: true,
        mountpoint: true,
        chat: true,
        video_room: true,
    };

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
                Action::Conform(_) => observed.conformed = ALL_CONFORMED,
                Action::DestroyChat => observed.chat = Absent,
                Action::CountParticipants => observed.participants = Present(0),
                Action::DestroySession => observed.session = None,
                action => simulate_uplink(action, &mut observed.uplink),
            }
        }
        steps
    }

    /// What a Janus that does as asked makes of the uplink's actions.
    fn simulate_uplink(action: Action, uplink: &mut UplinkSeen) {
        let forwards = Forwards {
            video: Some(11),
            audio: Some(12),
            stale: false,
        };
        match action {
            Action::CheckVideoRoom | Action::CreateVideoRoom => uplink.room = OURS,
            Action::DestroyVideoRoom => uplink.room = Absent,
            Action::Publish(offer) => {
                uplink.publisher = Publisher::Live(LivePublisher {
                    handle: PUBLISHER,
                    id: 77,
                    offer,
                    connected: false,
                    since: std::time::Instant::now(),
                });
                uplink.offer = Some(Latest {
                    id: offer,
                    taken: true,
                });
                uplink.forwards = Absent;
            }
            Action::Unpublish => {
                uplink.publisher = Publisher::Absent;
                uplink.forwards = Absent;
            }
            Action::CheckUplinkForwarders | Action::ForwardUplink => {
                uplink.forwards = Present(forwards)
            }
            Action::StopUplinkForwarders => uplink.forwards = Absent,
            other => panic!("not an uplink action: {other:?}"),
        }
    }

    const PUBLISHER: Handle = Handle {
        session: SessionId(1),
        id: crate::janus::HandleId(9),
    };

    /// A live room and mountpoint with the WebRTC uplink chosen.
    fn webrtc(offer: Option<Latest>) -> Observed {
        let mut observed = seen(OURS, Present(Fit::Matches), Present(1));
        observed.session = Some(Session {
            videoroom: Some(PUBLISHER),
            ..SESSION
        });
        observed.uplink.kind = Some((UplinkKind::Webrtc, None));
        observed.uplink.offer = offer;
        observed
    }

    const FRESH: Latest = Latest {
        id: OfferId(1),
        taken: false,
    };

    #[test]
    fn the_uplink_publishes_its_offer_then_forwards_it() {
        assert_eq!(
            plan_from(Goal::Open, DESTROY, webrtc(Some(FRESH))),
            [
                Action::CheckVideoRoom,
                Action::Publish(OfferId(1)),
                Action::ForwardUplink
            ]
        );
        // No offer yet: the room is made and the reconciler waits.
        assert_eq!(
            plan_from(Goal::Open, DESTROY, webrtc(None)),
            [Action::CheckVideoRoom]
        );
    }

    #[test]
    fn a_newer_offer_replaces_the_publisher_and_its_forwarders() {
        // Published offer 1, with its forwarders.
        let mut live = webrtc(Some(FRESH));
        live.uplink.room = OURS;
        simulate_uplink(Action::Publish(OfferId(1)), &mut live.uplink);
        simulate_uplink(Action::ForwardUplink, &mut live.uplink);
        assert_eq!(next(Goal::Open, DESTROY, &live), None);
        live.uplink.offer = Some(Latest {
            id: OfferId(2),
            taken: false,
        });
        assert_eq!(
            plan_from(Goal::Open, DESTROY, live),
            [
                Action::StopUplinkForwarders,
                Action::Unpublish,
                Action::Publish(OfferId(2)),
                Action::ForwardUplink
            ]
        );
        // A hung-up publisher is detached; a spent offer is never published again.
        live.uplink.publisher = Publisher::Over(PUBLISHER);
        live.uplink.offer = Some(Latest {
            id: OfferId(2),
            taken: true,
        });
        assert_eq!(plan_from(Goal::Open, DESTROY, live), [Action::Unpublish]);
    }

    #[test]
    fn a_re_created_mountpoint_gets_new_forwarders() {
        let mut live = webrtc(Some(FRESH));
        live.uplink.room = OURS;
        simulate_uplink(Action::Publish(OfferId(1)), &mut live.uplink);
        live.uplink.forwards = Present(Forwards {
            video: Some(1),
            audio: Some(2),
            stale: true,
        });
        assert_eq!(
            plan_from(Goal::Open, DESTROY, live),
            [Action::StopUplinkForwarders, Action::ForwardUplink]
        );
    }

    #[test]
    fn closing_ends_the_publisher_before_the_rooms_and_leaves_a_foreign_video_room() {
        let mut live = webrtc(Some(FRESH));
        live.uplink.room = OURS;
        simulate_uplink(Action::Publish(OfferId(1)), &mut live.uplink);
        simulate_uplink(Action::ForwardUplink, &mut live.uplink);
        assert_eq!(
            plan_from(Goal::Closed, DESTROY, live),
            [
                Action::StopUplinkForwarders,
                Action::Unpublish,
                Action::DestroyVideoRoom,
                Action::DestroyMountpoint,
                Action::DestroyRoom
            ]
        );
        assert_eq!(
            plan_from(Goal::Closed, KEEP, live),
            [
                Action::StopUplinkForwarders,
                Action::Unpublish,
                Action::StopForwarder(1)
            ]
        );
        let mut theirs = webrtc(Some(FRESH));
        theirs.uplink.room = Present(Owner::Foreign(Foreign::OtherSecret));
        assert_eq!(
            next_action(Goal::Open, DESTROY, &theirs),
            Err(Conflict {
                what: "video room",
                id: 4556,
                why: Foreign::OtherSecret
            })
        );
        let steps = plan_from(Goal::Stopped, DESTROY, theirs);
        assert!(!steps.contains(&Action::DestroyVideoRoom), "{steps:?}");
    }

    #[test]
    fn a_chat_room_of_someone_else_stops_the_room_before_it_opens() {
        let squatted = Observed {
            chat: Present(Owner::Foreign(Foreign::NoSecret)),
            ..seen(Absent, Absent, Absent)
        };
        let conflict = next_action(Goal::Open, CHAT, &squatted).expect_err("a conflict");
        assert_eq!(conflict.what, "chat room");
        // Nothing was made before the chat was found theirs.
        let steps = plan_from(Goal::Open, CHAT, seen(Absent, Absent, Absent));
        assert_eq!(steps.first(), Some(&Action::CheckChat), "{steps:?}");
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
                Action::CheckChat,
                Action::CreateRoom,
                Action::CreateMountpoint,
                Action::CreateForwarder
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
    fn parts_found_on_janus_are_conformed_once_all_are_known_ours() {
        let found = Observed {
            chat: OURS,
            conformed: Conformed::default(),
            ..seen(OURS, Present(Fit::Matches), Present(1))
        };
        assert_eq!(
            plan_from(Goal::Open, CHAT, found),
            [Action::Conform(Part::Room)],
            "the simulation conforms every part at once"
        );
        // A mountpoint someone else holds: nothing of the room is edited.
        let shared = Observed {
            mountpoint: Present(Fit::Foreign(Foreign::OtherPorts)),
            ..found
        };
        assert!(next_action(Goal::Open, CHAT, &shared).is_err());
        // Nothing is conformed on the way to a closed room.
        assert!(!plan_from(Goal::Closed, CHAT, found)
            .iter()
            .any(|a| matches!(a, Action::Conform(_))));
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
