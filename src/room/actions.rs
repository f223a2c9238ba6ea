//! The requests a pass makes: [`Janus`] performs the planner's actions
//! against the AudioBridge and Streaming plugins and records what Janus
//! answered, and creates the session with its long-poll.

use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::error::PassError;
use super::lockdown::Lockdown;
use super::plan::{next_action, Action, Goal, Observed, Part, Plan, Session};
use super::uplink::Mids;
use super::{Event, MAX_ACTIONS_PER_PASS};
use crate::config::Settings;
use crate::janus::audiobridge::{self, AudioBridge, Created, ForwardTarget, Forwarder, RoomSpec};
use crate::janus::longpoll::{self, CurrentSession};
use crate::janus::rooms::{Holding, RoomPlugin};
use crate::janus::streaming::{self, MountpointInfo, MountpointSpec, Streaming};
use crate::janus::textroom::{self, ChatSpec, TextRoom};
use crate::janus::{Client, Handle, Listing, SessionId};
use crate::relay::Board;
use crate::rtp::{Medium, SPEAKER_PAYLOAD_TYPE};
use crate::secret::SrtpKey;
use crate::signalling::Signalling;
use crate::state::{Fit, Foreign, Forward, MediaAge, Owner, Presence, UplinkKind};

/// Everything a pass needs, shared with the blocking threads that run it.
pub(super) struct Janus {
    pub(super) client: Arc<Client>,
    pub(super) settings: Arc<Settings>,
    pub(super) current: CurrentSession,
    pub(super) events: mpsc::Sender<Event>,
    /// The WebRTC uplink's offers and answers.
    pub(super) signalling: Arc<Signalling>,
    /// What this machine lacks for WebRTC, if anything.
    pub(super) local_webrtc: Option<&'static str>,
    /// The live publisher's mids, for its forwarders.
    pub(super) mids: Mutex<Mids>,
    /// Whether Janus lets anybody create rooms.
    pub(super) lockdown: Lockdown,
    /// The edges (`[[relay]]`), as their keepers see them.
    pub(super) edges: Arc<Board>,
}

impl Janus {
    /// Performs actions until `observed` matches `goal`, or one fails.
    pub(super) fn converge(&self, goal: Goal, observed: &mut Observed) -> Result<(), PassError> {
        let room = &self.settings.room;
        for _ in 0..MAX_ACTIONS_PER_PASS {
            let plan = Plan {
                id: room.id,
                destroy_on_close: room.destroy_on_close,
                // The idle timeout needs the count, and so do the metrics.
                count_participants: room.idle_timeout.is_some() || self.settings.metrics.enabled(),
                // A session without the TextRoom plugin runs the room without chat.
                chat: room.chat && observed.session.is_none_or(|s| s.has_chat()),
                speaker: self.settings.speaker.enabled,
            };
            self.expire_unconnected(observed);
            self.retire_spent_offer(observed);
            observed.edge_targets = self.edges.targets();
            let Some(action) = next_action(goal, plan, observed).map_err(PassError::Conflict)?
            else {
                return Ok(());
            };
            log::trace!("room {}: {action:?}", room.id);
            match self.apply(action, observed) {
                Ok(()) => {}
                Err(PassError::Janus(e)) if e.is_session_gone() => {
                    if let Some(session) = observed.session {
                        log::info!(
                            "Janus session {} is gone (Janus restarted?): starting a new one",
                            session.id.0
                        );
                    }
                    self.current.set(None);
                    observed.lose_session();
                }
                Err(e) => {
                    observed.forget();
                    return Err(e);
                }
            }
        }
        Err(PassError::Unsettled(MAX_ACTIONS_PER_PASS))
    }

    /// Brings the uplink's latest offer into `observed`; an offer that was
    /// published and is no longer the live publisher's (Janus hung up, the
    /// session went, it was unpublished) is retired first: its uplink
    /// starts over and offers anew.
    fn retire_spent_offer(&self, observed: &mut Observed) {
        let latest = self.signalling.latest();
        if let Some(spent) =
            latest.filter(|l| l.taken && observed.uplink.publisher.offer() != Some(l.id))
        {
            self.signalling
                .retire(spent.id, "Janus no longer holds its PeerConnection");
        }
        observed.uplink.offer = self.signalling.latest();
    }

    /// Performs one action and records what Janus answered.
    fn apply(&self, action: Action, observed: &mut Observed) -> Result<(), PassError> {
        let session = match observed.session {
            Some(session) if action != Action::CreateSession => session,
            // The planner asks for a session before anything else.
            _ => {
                let (session, uplink) = self.create_session()?;
                *observed = Observed {
                    session: Some(session),
                    srtp_key: observed.srtp_key,
                    conformed: observed.conformed,
                    ..Observed::default()
                };
                observed.uplink.kind = Some(uplink);
                return Ok(());
            }
        };
        let bridge = AudioBridge::new(&self.client, session.audiobridge);
        let stream = Streaming::new(&self.client, session.streaming);
        match action {
            Action::CreateSession => {} // done above
            Action::CheckRoom => self.check_room(&bridge, observed)?,
            Action::CreateRoom => self.create_room(&bridge, observed)?,
            Action::DestroyRoom => self.destroy_room(&bridge, observed)?,
            Action::CheckMountpoint => self.check_mountpoint(&stream, observed)?,
            Action::CreateMountpoint => self.create_mountpoint(&stream, observed)?,
            Action::DestroyMountpoint => self.destroy_mountpoint(&stream, observed)?,
            Action::CheckForwarder => self.check_forwarder(&bridge, observed)?,
            Action::CreateForwarder => self.create_forwarder(&bridge, observed)?,
            Action::StopForwarder(id) => self.stop_forwarder(&bridge, id, observed)?,
            Action::CheckChat
            | Action::CreateChat
            | Action::DestroyChat
            | Action::Conform(Part::Chat) => self.chat(session, action, observed)?,
            Action::Conform(Part::Room) => {
                // AudioBridge's edit removes a PIN too: never made again.
                self.conform(&bridge, "room")?;
                observed.conformed.room = true;
            }
            Action::Conform(Part::Mountpoint) => {
                let room = &self.settings.room;
                stream.edit_listing(room.id, room.secret.as_ref(), self.listing())?;
                log::info!(
                    "mountpoint {}: made before this run: description and PIN set as configured",
                    room.id
                );
                observed.conformed.mountpoint = true;
            }
            Action::CountParticipants => self.count_participants(&bridge, observed)?,
            Action::CheckVideoRoom
            | Action::CreateVideoRoom
            | Action::DestroyVideoRoom
            | Action::Publish(_)
            | Action::Unpublish
            | Action::CheckUplinkForwarders
            | Action::ForwardUplink
            | Action::StopUplinkForwarders
            | Action::ForwardEdge(_)
            | Action::StopEdgeForward(_)
            | Action::Conform(Part::VideoRoom) => self.uplink(session, action, observed)?,
            Action::DestroySession => {
                self.current.set(None);
                observed.session = None;
                // Without TextRoom there was no chat to check: a session
                // made only to check it would be destroyed again, and so on.
                if !session.has_chat() {
                    observed.chat = Presence::Absent;
                }
                self.client.destroy_session(session.id)?;
                log::debug!("Janus session {} destroyed", session.id.0);
            }
        }
        Ok(())
    }

    /// Whether the room exists and is ours: `room.secret` controls it and
    /// a made-up secret does not. Its forwarders come with the proof.
    fn check_room(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        let list = match bridge.holding(room.id, room.secret.as_ref())? {
            Holding::Ours(list) => list,
            Holding::Absent => {
                self.room_gone(observed);
                return Ok(());
            }
            other => {
                observed.room = presence(&other);
                return Ok(());
            }
        };
        observed.room = Presence::Present(Owner::Us);
        self.record_forwarders(&list, observed)
    }

    /// Gives a room of the agent's that this reconciler did not make
    /// (kept on Janus from before, perhaps with another PIN) the
    /// configured listing; `Remake` where the plugin cannot remove a PIN
    /// and none is configured.
    pub(super) fn conform<P: RoomPlugin>(
        &self,
        plugin: &P,
        what: &str,
    ) -> Result<Conforming, PassError> {
        let room = &self.settings.room;
        if room.pin.is_none() && !P::CLEARS_PIN {
            log::info!(
                "{what} {}: made before this run, perhaps with a PIN: made again without one",
                room.id
            );
            return Ok(Conforming::Remake);
        }
        plugin.edit_listing(room.id, room.secret.as_ref(), self.listing())?;
        log::info!(
            "{what} {}: made before this run: description and PIN set as configured",
            room.id
        );
        Ok(Conforming::Edited)
    }

    /// The description and PIN viewers meet, as configured.
    fn listing(&self) -> Listing<'_> {
        let room = &self.settings.room;
        Listing {
            description: &room.description,
            pin: room.pin.as_ref(),
        }
    }

    /// The room is not there, nor anything in it.
    fn room_gone(&self, observed: &mut Observed) {
        observed.room = Presence::Absent;
        observed.forwarder = Presence::Absent;
        observed.stale_forwarder = None;
        observed.forward = None;
    }

    fn create_room(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        let id = room.id;
        let made = self.lockdown.create(
            audiobridge::PLUGIN,
            id,
            room.admin_key.as_ref(),
            |admin_key| {
                bridge.create(&RoomSpec {
                    admin_key,
                    ..self.room_spec()
                })
            },
        )?;
        match made {
            Created::New => {
                log::info!("room {id}: created");
                self.room_gone(observed);
                observed.room = Presence::Present(Owner::Us);
                observed.conformed.room = true;
            }
            // Made by someone meanwhile: check whose it is.
            Created::Existing => observed.room = Presence::Unknown,
        }
        Ok(())
    }

    fn destroy_room(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        bridge.destroy(room.id, room.secret.as_ref())?;
        log::info!("room {}: destroyed", room.id);
        self.room_gone(observed);
        observed.conformed.room = false;
        Ok(())
    }

    fn check_mountpoint(
        &self,
        stream: &Streaming<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        let info = stream.info(room.id, room.secret.as_ref())?;
        let age_ms = |medium| {
            let age = info.as_ref().and_then(|i| i.age(medium))?;
            Some(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
        };
        observed.media_age = MediaAge {
            video_ms: age_ms(Medium::Video),
            audio_ms: age_ms(Medium::Audio),
        };
        observed.mountpoint = match info {
            None => Presence::Absent,
            Some(info) => {
                Presence::Present(self.fit(stream, &info, observed.srtp_key.is_some())?)
            }
        };
        if observed.mountpoint.is_absent() {
            observed.srtp_key = None;
        }
        Ok(())
    }

    /// Whether an existing mountpoint is the one wanted: ours (its ports
    /// show only with our secret, and match) and with a known key.
    fn fit(
        &self,
        stream: &Streaming<'_>,
        info: &MountpointInfo,
        key_known: bool,
    ) -> Result<Fit, PassError> {
        let room = &self.settings.room;
        Ok(match stream.stranger(info, &self.mountpoint_spec())? {
            Some(why) => Fit::Foreign(why),
            None if self.settings.stream.srtp && !key_known => {
                log::info!(
                    "mountpoint {} was made before this run and its SRTP key is unknown: replacing it",
                    room.id
                );
                Fit::UnknownKey
            }
            None if !info.offers_level(&self.mountpoint_spec()) => {
                log::info!(
                    "mountpoint {} offers another H.264 level than [video] sends: replacing it",
                    room.id
                );
                Fit::WrongLevel
            }
            None if !info.feeds_back(&self.mountpoint_spec()) => {
                log::info!(
                    "mountpoint {} has another video RTCP port than stream.video_rtcp_port: replacing it",
                    room.id
                );
                Fit::NoFeedback
            }
            None => Fit::Matches,
        })
    }

    fn create_mountpoint(
        &self,
        stream: &Streaming<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let key = self.settings.stream.srtp.then(SrtpKey::generate);
        let spec = MountpointSpec {
            srtp: key.as_ref(),
            ..self.mountpoint_spec()
        };
        let made =
            self.lockdown
                .create(streaming::PLUGIN, spec.id, spec.admin_key, |admin_key| {
                    stream.create(&MountpointSpec { admin_key, ..spec })
                })?;
        if made == Created::Existing {
            // Made by someone meanwhile: check whose it is.
            (observed.srtp_key, observed.mountpoint) = (None, Presence::Unknown);
            return Ok(());
        }
        log::info!(
            "mountpoint {}: created (video port {}, audio port {}{})",
            spec.id,
            spec.video.0,
            spec.audio.0,
            if key.is_some() { ", SRTP" } else { "" }
        );
        (observed.srtp_key, observed.mountpoint) = (key, Presence::Present(Fit::Matches));
        observed.conformed.mountpoint = true;
        // Janus latches a forwarder's RTCP port once: the uplink's are made again.
        if let Presence::Present(forwards) = &mut observed.uplink.forwards {
            forwards.stale = true;
        }
        Ok(())
    }

    fn destroy_mountpoint(
        &self,
        stream: &Streaming<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        stream.destroy(room.id, room.secret.as_ref())?;
        log::info!("mountpoint {}: destroyed", room.id);
        observed.mountpoint = Presence::Absent;
        observed.conformed.mountpoint = false;
        observed.srtp_key = None;
        Ok(())
    }

    fn check_forwarder(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        match bridge.list_forwarders(room.id, room.secret.as_ref()) {
            Ok(list) => self.record_forwarders(&list, observed),
            Err(e) if e.code() == Some(audiobridge::code::NO_SUCH_ROOM) => {
                self.room_gone(observed);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Picks the forwarder the speaker plays from the room's `list`, and
    /// one of ours to stop: to the speaker's port, but to another address
    /// (the Pi's changed), with a key this run does not know, or a duplicate.
    /// Forwarders to other ports are someone else's and left alone.
    fn record_forwarders(
        &self,
        list: &[Forwarder],
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let target = self.forward_target()?;
        let known = observed.forward.map(|f| f.stream_id);
        let srtp = self.settings.stream.srtp;
        let usable = list
            .iter()
            .find(|f| f.matches(&target) && (!srtp || Some(f.stream_id) == known));
        observed.forwarder = usable.map_or(Presence::Absent, |f| Presence::Present(f.stream_id));
        observed.forward = match usable {
            Some(f) if Some(f.stream_id) == known => observed.forward,
            Some(f) => Some(self.forward(f.stream_id, None)?),
            None => None,
        };
        observed.stale_forwarder = list
            .iter()
            .find(|f| {
                f.goes_to_port_of(&target) && Some(f.stream_id) != usable.map(|u| u.stream_id)
            })
            .map(|f| f.stream_id);
        Ok(())
    }

    fn create_forwarder(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        let target = self.forward_target()?;
        // A fresh key for each forwarder the agent makes.
        let key = self.settings.stream.srtp.then(SrtpKey::generate);
        let stream_id = bridge.rtp_forward(
            room.id,
            &target,
            key.as_ref(),
            room.secret.as_ref(),
            room.admin_key.as_ref(),
        )?;
        log::info!(
            "room {}: forwarding its audio to {}:{} (stream {stream_id}{})",
            room.id,
            target.host,
            target.port,
            if key.is_some() { ", SRTP" } else { "" }
        );
        observed.forwarder = Presence::Present(stream_id);
        observed.forward = Some(self.forward(stream_id, key)?);
        Ok(())
    }

    fn stop_forwarder(
        &self,
        bridge: &AudioBridge<'_>,
        stream_id: u64,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        bridge.stop_rtp_forward(
            room.id,
            stream_id,
            room.secret.as_ref(),
            room.admin_key.as_ref(),
        )?;
        if observed.stale_forwarder == Some(stream_id) {
            log::info!(
                "room {}: stopped forwarder {stream_id} (an old address, an unknown key or a duplicate)",
                room.id
            );
            // There may be more: list again.
            observed.stale_forwarder = None;
            observed.forwarder = Presence::Unknown;
        } else {
            log::info!("room {}: stopped forwarding its audio", room.id);
            observed.forwarder = Presence::Absent;
            observed.forward = None;
        }
        Ok(())
    }

    fn count_participants(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        observed.participants = match bridge.count_participants(self.settings.room.id) {
            Ok(n) => Presence::Present(n),
            Err(e) if e.code() == Some(audiobridge::code::NO_SUCH_ROOM) => {
                observed.room = Presence::Absent;
                observed.forwarder = Presence::Absent;
                Presence::Unknown
            }
            Err(e) => return Err(e.into()),
        };
        Ok(())
    }

    /// Creates a session, attaches the plugins it needs, chooses its uplink
    /// and starts its long-poll.
    fn create_session(&self) -> Result<(Session, (UplinkKind, Option<&'static str>)), PassError> {
        let id = self.client.create_session()?;
        let (videoroom, kind, fallback) = self.choose_uplink(id)?;
        let session = Session {
            id,
            audiobridge: self.client.attach(id, audiobridge::PLUGIN)?,
            streaming: self.client.attach(id, streaming::PLUGIN)?,
            textroom: match self.settings.room.chat {
                true => self.attach_chat(id)?,
                false => None,
            },
            videoroom,
        };
        self.current.set(Some(id));
        let events = self.events.clone();
        longpoll::spawn(
            Arc::clone(&self.client),
            id,
            self.current.clone(),
            move |e| {
                // A full queue already holds a wake-up; dropping this one loses nothing.
                let _ = events.try_send(Event::Poll(e));
            },
        )
        .map_err(PassError::LongPoll)?;
        log::info!("Janus session {} created at {}", id.0, self.client.url());
        Ok((session, (kind, fallback)))
    }

    /// Attaches the TextRoom plugin; `None` when this Janus offers none
    /// (the published state says so, and the room runs without chat).
    fn attach_chat(&self, id: SessionId) -> Result<Option<Handle>, PassError> {
        match self.client.attach(id, textroom::PLUGIN) {
            Ok(handle) => Ok(Some(handle)),
            Err(e) if e.is_plugin_unavailable() => {
                log::debug!("Janus session {}: no TextRoom: {e}", id.0);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn room_spec(&self) -> RoomSpec<'_> {
        let room = &self.settings.room;
        RoomSpec {
            id: room.id,
            description: &room.description,
            secret: room.secret.as_ref(),
            pin: room.pin.as_ref(),
            admin_key: room.admin_key.as_ref(),
            allow_rtp_participants: room.allow_rtp_participants,
            record_dir: self.room_recording(),
            prebuffering: self.settings.speaker.room_prebuffering,
        }
    }

    /// Performs a chat action through the session's TextRoom handle.
    fn chat(
        &self,
        session: Session,
        action: Action,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        // The planner asks for chat actions only with room.chat, whose
        // sessions have the handle; without it the chat stays unknown.
        let Some(handle) = session.textroom else {
            return Ok(());
        };
        let chat = TextRoom::new(&self.client, handle);
        let room = &self.settings.room;
        match action {
            Action::CheckChat => observed.chat = self.check_chat(&chat)?,
            Action::CreateChat => {
                let spec = self.chat_spec();
                let made = self.lockdown.create(
                    textroom::PLUGIN,
                    room.id,
                    spec.admin_key,
                    |admin_key| chat.create(&ChatSpec { admin_key, ..spec }),
                )?;
                observed.chat = match made {
                    Created::New => {
                        log::info!("chat {} (TextRoom): created", room.id);
                        observed.conformed.chat = true;
                        Presence::Present(Owner::Us)
                    }
                    // Made by someone meanwhile: check whose it is.
                    Created::Existing => Presence::Unknown,
                }
            }
            Action::Conform(_) => {
                if self.conform(&chat, "chat")? == Conforming::Remake {
                    chat.destroy(room.id, room.secret.as_ref())?;
                    observed.chat = Presence::Absent;
                }
                observed.conformed.chat = observed.chat == Presence::Present(Owner::Us);
            }
            _ => {
                chat.destroy(room.id, room.secret.as_ref())?;
                log::info!("chat {} (TextRoom): destroyed", room.id);
                observed.chat = Presence::Absent;
                observed.conformed.chat = false;
            }
        }
        Ok(())
    }

    /// Whether the chat room exists and is ours: `room.secret` controls it
    /// and a made-up secret does not.
    fn check_chat(&self, chat: &TextRoom<'_>) -> Result<Presence<Owner>, PassError> {
        let room = &self.settings.room;
        Ok(presence(&chat.holding(room.id, room.secret.as_ref())?))
    }

    fn chat_spec(&self) -> ChatSpec<'_> {
        let room = &self.settings.room;
        ChatSpec {
            id: room.id,
            description: &room.description,
            secret: room.secret.as_ref(),
            pin: room.pin.as_ref(),
            admin_key: room.admin_key.as_ref(),
        }
    }

    /// Where Janus records the room's mix (`[recording] room`), if it does.
    fn room_recording(&self) -> Option<&std::path::Path> {
        let recording = &self.settings.recording;
        recording.room.then_some(recording.room_dir.as_path())
    }

    fn mountpoint_spec(&self) -> MountpointSpec<'_> {
        let stream = &self.settings.stream;
        MountpointSpec::for_room(
            &self.settings,
            [stream.video_port, stream.audio_port, stream.video_rtcp_port],
            self.settings.room.admin_key.as_ref(),
        )
    }

    /// Where Janus should send the room's audio: `speaker.host` (resolved),
    /// or the address of this machine on its route to Janus.
    fn forward_target(&self) -> Result<ForwardTarget, PassError> {
        let speaker = &self.settings.speaker;
        let host = if speaker.host.is_empty() {
            local_address_towards(self.settings.janus.host())?
        } else {
            resolve("speaker.host", &speaker.host)?
        };
        Ok(ForwardTarget {
            host,
            port: speaker.port,
            payload_type: SPEAKER_PAYLOAD_TYPE,
        })
    }

    /// What the speaker needs of forwarder `stream_id`: where it sends,
    /// where from, and its key.
    fn forward(&self, stream_id: u64, key: Option<SrtpKey>) -> Result<Forward, PassError> {
        // Without SRTP the speaker plays only what comes from Janus's host.
        let janus = match key {
            Some(_) => None,
            None => Some(resolve("janus.url", self.settings.janus.host())?),
        };
        Ok(Forward {
            stream_id,
            target: self.forward_target()?.host,
            janus,
            key,
        })
    }
}

/// The address `host` (an address in any spelling, or a name) stands for;
/// IPv4 first, as Janus's own resolver prefers it. Blocking: runs inside a pass.
fn resolve(key: &'static str, host: &str) -> Result<IpAddr, PassError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_canonical());
    }
    let failed = |source| PassError::Resolve {
        key,
        host: host.to_owned(),
        source,
    };
    let addresses: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(failed)?
        .map(|a| a.ip().to_canonical())
        .collect();
    addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
        .ok_or_else(|| {
            failed(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })
}

/// The local address the kernel would use to reach `host` (no packet is
/// sent); a name is looked up with a time limit.
fn local_address_towards(host: &str) -> Result<IpAddr, PassError> {
    let unroutable = |source| PassError::NoRoute {
        host: host.to_owned(),
        source,
    };
    let target = crate::resolve::address(host, crate::resolve::TIMEOUT)
        .map_err(|e| unroutable(std::io::Error::other(e)))?;
    let bind = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(bind).map_err(unroutable)?;
    socket.connect((target, 9)).map_err(unroutable)?;
    Ok(socket.local_addr().map_err(unroutable)?.ip().to_canonical())
}

/// What making a room found on Janus match the configuration takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conforming {
    /// It was edited.
    Edited,
    /// It must be made again.
    Remake,
}

/// A room check's finding, as the state shows it.
pub(super) fn presence<P>(holding: &Holding<P>) -> Presence<Owner> {
    Presence::Present(match holding {
        Holding::Absent => return Presence::Absent,
        Holding::Ours(_) => Owner::Us,
        Holding::OtherSecret => Owner::Foreign(Foreign::OtherSecret),
        Holding::NoSecret => Owner::Foreign(Foreign::NoSecret),
    })
}
