//! The requests a pass makes: [`Janus`] performs the planner's actions
//! against the AudioBridge and Streaming plugins and records what Janus
//! answered, and creates the session with its long-poll.

use std::net::UdpSocket;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::error::PassError;
use super::plan::{next_action, Action, Goal, Observed, Plan, Session};
use super::{Event, MAX_ACTIONS_PER_PASS};
use crate::config::Settings;
use crate::janus::audiobridge::{self, AudioBridge, Created, ForwardTarget, RoomSpec};
use crate::janus::longpoll::{self, CurrentSession};
use crate::janus::streaming::{self, MountpointInfo, MountpointSpec, Streaming};
use crate::janus::Client;
use crate::rtp::{Medium, SPEAKER_PAYLOAD_TYPE};
use crate::secret::SrtpKey;
use crate::state::{Fit, MediaAge, Presence};

/// Everything a pass needs, shared with the blocking threads that run it.
pub(super) struct Janus {
    pub(super) client: Arc<Client>,
    pub(super) settings: Arc<Settings>,
    pub(super) current: CurrentSession,
    pub(super) events: mpsc::Sender<Event>,
}

impl Janus {
    /// Performs actions until `observed` matches `goal`, or one fails.
    pub(super) fn converge(&self, goal: Goal, observed: &mut Observed) -> Result<(), PassError> {
        let room = &self.settings.room;
        let plan = Plan {
            destroy_on_close: room.destroy_on_close,
            count_participants: room.idle_timeout.is_some(),
        };
        for _ in 0..MAX_ACTIONS_PER_PASS {
            let Some(action) = next_action(goal, plan, observed) else {
                return Ok(());
            };
            log::trace!("room {}: {action:?}", room.id);
            match self.apply(action, observed) {
                Ok(()) => {}
                Err(PassError::Janus(e)) if e.is_session_gone() => {
                    if let Some(session) = observed.session.take() {
                        log::info!(
                            "Janus session {} is gone (Janus restarted?): starting a new one",
                            session.id.0
                        );
                    }
                    self.current.set(None);
                    observed.forget();
                }
                Err(e) => {
                    observed.forget();
                    return Err(e);
                }
            }
        }
        Err(PassError::Unsettled(MAX_ACTIONS_PER_PASS))
    }

    /// Performs one action and records what Janus answered.
    fn apply(&self, action: Action, observed: &mut Observed) -> Result<(), PassError> {
        let session = match observed.session {
            Some(session) if action != Action::CreateSession => session,
            // The planner asks for a session before anything else.
            _ => {
                let session = self.create_session()?;
                *observed = Observed {
                    session: Some(session),
                    srtp_key: observed.srtp_key,
                    ..Observed::default()
                };
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
            Action::CountParticipants => self.count_participants(&bridge, observed)?,
            Action::DestroySession => {
                self.current.set(None);
                observed.session = None;
                self.client.destroy_session(session.id)?;
                log::debug!("Janus session {} destroyed", session.id.0);
            }
        }
        Ok(())
    }

    fn check_room(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        observed.room = presence(bridge.exists(self.settings.room.id)?);
        if observed.room.is_absent() {
            observed.forwarder = Presence::Absent;
        }
        Ok(())
    }

    fn create_room(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let created = bridge.create(&self.room_spec())?;
        let id = self.settings.room.id;
        log::info!("room {id}: {}", describe(created, "created", "adopted"));
        observed.room = Presence::Present(());
        if created == Created::New {
            observed.forwarder = Presence::Absent;
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
        observed.room = Presence::Absent;
        observed.forwarder = Presence::Absent;
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
            Some(info) => Presence::Present(self.fit(&info, observed.srtp_key.is_some())),
        };
        if observed.mountpoint.is_absent() {
            observed.srtp_key = None;
        }
        Ok(())
    }

    /// Whether an existing mountpoint is the one wanted; says why not.
    fn fit(&self, info: &MountpointInfo, key_known: bool) -> Fit {
        let id = self.settings.room.id;
        if !info.fits(&self.mountpoint_spec()) {
            log::warn!(
                "mountpoint {id} listens on other ports than stream.video_port/audio_port, or offers another H.264 level than [video] sends: replacing it"
            );
            Fit::WrongPorts
        } else if self.settings.stream.srtp && !key_known {
            log::info!(
                "mountpoint {id} was made before this run and its SRTP key is unknown: replacing it"
            );
            Fit::UnknownKey
        } else {
            Fit::Matches
        }
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
        let created = stream.create(&spec)?;
        log::info!(
            "mountpoint {}: {} (video port {}, audio port {}{})",
            spec.id,
            describe(created, "created", "adopted"),
            spec.video.0,
            spec.audio.0,
            if key.is_some() { ", SRTP" } else { "" }
        );
        // An adopted one (made by someone else meanwhile) is checked again,
        // and replaced if SRTP needs a key it does not have.
        (observed.srtp_key, observed.mountpoint) = match created {
            Created::New => (key, Presence::Present(Fit::Matches)),
            Created::Existing => (None, Presence::Unknown),
        };
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
        observed.srtp_key = None;
        Ok(())
    }

    fn check_forwarder(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        observed.forwarder = match bridge.list_forwarders(room.id, room.secret.as_ref()) {
            Ok(list) => {
                let target = self.forward_target()?;
                match list.into_iter().find(|f| f.matches(&target)) {
                    Some(f) => Presence::Present(f.stream_id),
                    None => Presence::Absent,
                }
            }
            Err(e) if e.code() == Some(audiobridge::code::NO_SUCH_ROOM) => {
                observed.room = Presence::Absent;
                Presence::Absent
            }
            Err(e) => return Err(e.into()),
        };
        Ok(())
    }

    fn create_forwarder(
        &self,
        bridge: &AudioBridge<'_>,
        observed: &mut Observed,
    ) -> Result<(), PassError> {
        let room = &self.settings.room;
        let target = self.forward_target()?;
        let stream_id = bridge.rtp_forward(
            room.id,
            &target,
            room.secret.as_ref(),
            room.admin_key.as_ref(),
        )?;
        log::info!(
            "room {}: forwarding its audio to {}:{} (stream {stream_id})",
            room.id,
            target.host,
            target.port
        );
        observed.forwarder = Presence::Present(stream_id);
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
        log::info!("room {}: stopped forwarding its audio", room.id);
        observed.forwarder = Presence::Absent;
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

    /// Creates a session, attaches both plugins and starts its long-poll.
    fn create_session(&self) -> Result<Session, PassError> {
        let id = self.client.create_session()?;
        let session = Session {
            id,
            audiobridge: self.client.attach(id, audiobridge::PLUGIN)?,
            streaming: self.client.attach(id, streaming::PLUGIN)?,
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
        Ok(session)
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
        }
    }

    fn mountpoint_spec(&self) -> MountpointSpec<'_> {
        let (room, stream) = (&self.settings.room, &self.settings.stream);
        MountpointSpec {
            id: room.id,
            description: &room.description,
            secret: room.secret.as_ref(),
            pin: room.pin.as_ref(),
            admin_key: room.admin_key.as_ref(),
            srtp: None,
            video: (stream.video_port, Medium::Video.payload_type()),
            video_level: self.settings.video.h264_level(),
            audio: (stream.audio_port, Medium::Audio.payload_type()),
        }
    }

    /// Where Janus should send the room's audio: `speaker.host`, or the
    /// address of this machine on its route to Janus.
    fn forward_target(&self) -> Result<ForwardTarget, PassError> {
        let speaker = &self.settings.speaker;
        let host = if speaker.host.is_empty() {
            local_address_towards(self.settings.janus.host())?
        } else {
            speaker.host.clone()
        };
        Ok(ForwardTarget {
            host,
            port: speaker.port,
            payload_type: SPEAKER_PAYLOAD_TYPE,
        })
    }
}

/// The local address the kernel would use to reach `host` (no packet is
/// sent); a name is looked up with a time limit.
fn local_address_towards(host: &str) -> Result<String, PassError> {
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
    Ok(socket.local_addr().map_err(unroutable)?.ip().to_string())
}

fn presence(exists: bool) -> Presence {
    if exists {
        Presence::Present(())
    } else {
        Presence::Absent
    }
}

fn describe(created: Created, new: &'static str, existing: &'static str) -> &'static str {
    match created {
        Created::New => new,
        Created::Existing => existing,
    }
}
