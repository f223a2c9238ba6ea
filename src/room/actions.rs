//! The requests a pass makes: [`Janus`] performs the planner's actions
//! against the AudioBridge and Streaming plugins and records what Janus
//! answered, and creates the session with its long-poll.

use std::net::UdpSocket;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::plan::{next_action, Action, Fit, Goal, MediaAge, Observed, Plan, Presence, Session};
use super::{
    Event, AUDIO_PAYLOAD_TYPE, MAX_ACTIONS_PER_PASS, SPEAKER_PAYLOAD_TYPE, VIDEO_PAYLOAD_TYPE,
};
use crate::config::Settings;
use crate::janus::audiobridge::{self, AudioBridge, Created, ForwardTarget, RoomSpec};
use crate::janus::longpoll::{self, CurrentSession};
use crate::janus::streaming::{self, MountpointSpec, Streaming};
use crate::janus::{Client, JanusError};
use crate::secret::SrtpKey;

/// Everything a pass needs, shared with the blocking threads that run it.
pub(super) struct Janus {
    pub(super) client: Arc<Client>,
    pub(super) settings: Arc<Settings>,
    pub(super) current: CurrentSession,
    pub(super) events: mpsc::Sender<Event>,
}

impl Janus {
    /// Performs actions until `observed` matches `goal`, or one fails.
    pub(super) fn converge(&self, goal: Goal, observed: &mut Observed) -> Result<(), JanusError> {
        let room = &self.settings.room;
        let plan = Plan {
            destroy_on_close: room.destroy_on_close,
            count_participants: room.idle_timeout().is_some(),
        };
        for _ in 0..MAX_ACTIONS_PER_PASS {
            let Some(action) = next_action(goal, plan, observed) else {
                return Ok(());
            };
            log::trace!("room {}: {action:?}", self.settings.room.id);
            match self.apply(action, observed) {
                Ok(()) => {}
                Err(e) if e.is_session_gone() => {
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
        Err(JanusError::Protocol(format!(
            "no steady state after {MAX_ACTIONS_PER_PASS} requests"
        )))
    }

    /// Performs one action and records what Janus answered.
    fn apply(&self, action: Action, observed: &mut Observed) -> Result<(), JanusError> {
        let room = &self.settings.room;
        let id = room.id;
        let secret = room.secret.as_ref();
        if action == Action::CreateSession {
            let session = self.create_session()?;
            *observed = Observed {
                session: Some(session),
                srtp_key: observed.srtp_key,
                ..Observed::default()
            };
            return Ok(());
        }
        let Some(session) = observed.session else {
            return Err(JanusError::Protocol(format!(
                "{action:?} without a session"
            )));
        };
        let bridge = AudioBridge::new(&self.client, session.audiobridge);
        let stream = Streaming::new(&self.client, session.streaming);
        match action {
            Action::CreateSession => {}
            Action::CheckRoom => {
                observed.room = presence(bridge.exists(id)?);
                if observed.room.is_absent() {
                    observed.forwarder = Presence::Absent;
                }
            }
            Action::CreateRoom => {
                let created = bridge.create(&self.room_spec())?;
                log::info!("room {id}: {}", describe(created, "created", "adopted"));
                observed.room = Presence::Present(());
                if created == Created::New {
                    observed.forwarder = Presence::Absent;
                }
            }
            Action::DestroyRoom => {
                bridge.destroy(id, secret)?;
                log::info!("room {id}: destroyed");
                observed.room = Presence::Absent;
                observed.forwarder = Presence::Absent;
            }
            Action::CheckMountpoint => {
                let spec = self.mountpoint_spec();
                let info = stream.info(id, secret)?;
                let age_ms = |kind| {
                    info.as_ref()
                        .and_then(|i| i.age(kind))
                        .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
                };
                observed.media_age = MediaAge {
                    video_ms: age_ms("video"),
                    audio_ms: age_ms("audio"),
                };
                observed.mountpoint = match info {
                    None => Presence::Absent,
                    Some(info) if !info.fits(&spec) => {
                        log::warn!(
                            "mountpoint {id} listens on other ports than stream.video_port/audio_port, or offers another H.264 level than [video] sends: replacing it"
                        );
                        Presence::Present(Fit::WrongPorts)
                    }
                    Some(_) if self.settings.stream.srtp && observed.srtp_key.is_none() => {
                        log::info!(
                            "mountpoint {id} was made before this run and its SRTP key is unknown: replacing it"
                        );
                        Presence::Present(Fit::UnknownKey)
                    }
                    Some(_) => Presence::Present(Fit::Matches),
                };
                if observed.mountpoint.is_absent() {
                    observed.srtp_key = None;
                }
            }
            Action::CreateMountpoint => {
                let key = self.settings.stream.srtp.then(SrtpKey::generate);
                let spec = MountpointSpec {
                    srtp: key.as_ref(),
                    ..self.mountpoint_spec()
                };
                let created = stream.create(&spec)?;
                log::info!(
                    "mountpoint {id}: {} (video port {}, audio port {}{})",
                    describe(created, "created", "adopted"),
                    spec.video.0,
                    spec.audio.0,
                    if key.is_some() { ", SRTP" } else { "" }
                );
                // An adopted one (made by someone else meanwhile) is checked
                // again, and replaced if SRTP needs a key it does not have.
                observed.srtp_key = match created {
                    Created::New => key,
                    Created::Existing => None,
                };
                observed.mountpoint = match created {
                    Created::New => Presence::Present(Fit::Matches),
                    Created::Existing => Presence::Unknown,
                };
            }
            Action::DestroyMountpoint => {
                stream.destroy(id, secret)?;
                log::info!("mountpoint {id}: destroyed");
                observed.mountpoint = Presence::Absent;
                observed.srtp_key = None;
            }
            Action::CheckForwarder => {
                observed.forwarder = match bridge.list_forwarders(id, secret) {
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
                    Err(e) => return Err(e),
                };
            }
            Action::CreateForwarder => {
                let target = self.forward_target()?;
                let stream_id = bridge.rtp_forward(id, &target, secret, room.admin_key.as_ref())?;
                log::info!(
                    "room {id}: forwarding its audio to {}:{} (stream {stream_id})",
                    target.host,
                    target.port
                );
                observed.forwarder = Presence::Present(stream_id);
            }
            Action::StopForwarder(stream_id) => {
                bridge.stop_rtp_forward(id, stream_id, secret, room.admin_key.as_ref())?;
                log::info!("room {id}: stopped forwarding its audio");
                observed.forwarder = Presence::Absent;
            }
            Action::CountParticipants => {
                observed.participants = match bridge.count_participants(id) {
                    Ok(n) => Presence::Present(n),
                    Err(e) if e.code() == Some(audiobridge::code::NO_SUCH_ROOM) => {
                        observed.room = Presence::Absent;
                        observed.forwarder = Presence::Absent;
                        Presence::Unknown
                    }
                    Err(e) => return Err(e),
                };
            }
            Action::DestroySession => {
                self.current.set(None);
                observed.session = None;
                self.client.destroy_session(session.id)?;
                log::debug!("Janus session {} destroyed", session.id.0);
            }
        }
        Ok(())
    }

    /// Creates a session, attaches both plugins and starts its long-poll.
    fn create_session(&self) -> Result<Session, JanusError> {
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
        .map_err(|e| JanusError::Protocol(format!("cannot start the long-poll thread: {e}")))?;
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
            video: (stream.video_port, VIDEO_PAYLOAD_TYPE),
            video_level: self.settings.video.h264_level(),
            audio: (stream.audio_port, AUDIO_PAYLOAD_TYPE),
        }
    }

    /// Where Janus should send the room's audio: `speaker.host`, or the
    /// address of this machine on its route to Janus.
    fn forward_target(&self) -> Result<ForwardTarget, JanusError> {
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

/// The local address the kernel would use to reach `host` (no packet is sent).
fn local_address_towards(host: &str) -> Result<String, JanusError> {
    let unroutable = |e: std::io::Error| {
        JanusError::Protocol(format!(
            "no route to Janus host {host} to pick speaker.host from: {e}"
        ))
    };
    let bind = if host.contains(':') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(bind).map_err(unroutable)?;
    let target = if host.contains(':') {
        format!("[{host}]:9")
    } else {
        format!("{host}:9")
    };
    socket.connect(target).map_err(unroutable)?;
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
