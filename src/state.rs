//! The published state: what the reconciler last made of the room on Janus
//! ([`RoomState`]), and the words it is described in. The reconciler writes
//! it after every pass; everything else (status, the LED, the pipeline
//! supervisors, systemd) only reads it, through a `watch` channel.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::rtp::Medium;
use crate::secret::SrtpKey;

/// What the owner wants: the room open to viewers, or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Room, mountpoint and forwarder exist; media flows.
    Open,
    /// The room is closed (and, with `destroy_on_close`, gone from Janus).
    Closed,
}

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
    /// The presence in one lowercase word, as `status` shows it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Absent => "absent",
            Self::Present(_) => "present",
        }
    }

    /// Whether Janus said it does not exist.
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl<T> Serialize for Presence<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// Why a room or mountpoint with the agent's id is not the agent's: it
/// cannot prove it made it, so it neither uses, changes nor destroys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// Janus refuses `room.secret` for it: someone else's secret guards it.
    OtherSecret,
    /// It has no secret (any secret is accepted), so it proves nothing.
    NoSecret,
    /// It listens on other ports than `stream.video_port`/`audio_port`.
    OtherPorts,
}

impl Foreign {
    /// Why, in words, for the error.
    pub fn words(self) -> &'static str {
        match self {
            Self::OtherSecret => "Janus refuses room.secret for it",
            Self::NoSecret => "it has no secret, so anybody may control it",
            Self::OtherPorts => "it listens on other ports than stream.video_port/audio_port",
        }
    }
}

/// Whose an existing room is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The agent's: `room.secret` controls it (or no secret is configured).
    Us,
    /// Not provably the agent's.
    Foreign(Foreign),
}

/// Whether an existing mountpoint is the one the agent wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It is: use it.
    Matches,
    /// It is the agent's, but offers viewers another H.264 level than
    /// `[video]` sends (an earlier run with other settings): replace it.
    WrongLevel,
    /// It is the agent's, but SRTP is on and it was not made by this run,
    /// so its key is unknown: replace it.
    UnknownKey,
    /// It is the agent's, but its video RTCP port is not
    /// `stream.video_rtcp_port` (made before there was one): replace it.
    NoFeedback,
    /// It is not provably the agent's: leave it alone.
    Foreign(Foreign),
}

/// Part of the room on Janus that another holder of the id has: the agent
/// stops there and says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// `room` or `mountpoint`.
    pub what: &'static str,
    /// The id they share.
    pub id: u64,
    /// Why it is not the agent's.
    pub why: Foreign,
}

impl Conflict {
    /// What to do about a conflict.
    pub const FIX: &'static str = "pick another room.id, or remove it on Janus if it is a leftover";

    /// What is wrong, without the fix.
    pub fn problem(&self) -> String {
        format!(
            "{} {} on Janus is not this agent's ({})",
            self.what,
            self.id,
            self.why.words()
        )
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: another agent or user holds this id; {}",
            self.problem(),
            Self::FIX
        )
    }
}

/// How the room's mix reaches the speaker: the forwarder the agent made
/// (or, without SRTP, found) in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Forward {
    /// Janus's id for the forwarder.
    #[serde(skip)]
    pub stream_id: u64,
    /// The address Janus sends to: the speaker binds to it.
    pub target: IpAddr,
    /// Janus's address: without SRTP the speaker plays only what comes
    /// from it.
    pub janus: Option<IpAddr>,
    /// The key the mix is encrypted with (`stream.srtp`), fresh for each
    /// forwarder. Never serialized.
    #[serde(skip)]
    pub key: Option<SrtpKey>,
}

/// The room's chat (`room.chat`): a TextRoom room with the room's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chat {
    /// Not wanted (`room.chat = false`).
    Off,
    /// Wanted, but Janus refuses to attach its TextRoom plugin (not
    /// loaded, or the token may not use it): the room runs without chat.
    Unavailable,
    /// Wanted: whether the TextRoom room exists, and whose it is.
    On(Presence<Owner>),
}

impl Chat {
    /// The chat in one lowercase word, as `status` shows it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Unavailable => "unavailable",
            Self::On(presence) => presence.label(),
        }
    }

    /// Why the room has no chat though one is wanted, and the fix.
    pub fn trouble(&self) -> Option<(&'static str, &'static str)> {
        (*self == Self::Unavailable).then_some((
            "Janus refuses to attach janus.plugin.textroom (not loaded, or the token may not use it): \
             the room runs without chat",
            "load libjanus_textroom.so on Janus (conf/janus does) or set room.chat = false",
        ))
    }
}

impl Serialize for Chat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// Time since Janus last received each medium, as its `info` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaAge {
    /// Milliseconds since the last video packet (or since creation).
    pub video_ms: Option<u64>,
    /// Milliseconds since the last audio packet (or since creation).
    pub audio_ms: Option<u64>,
}

impl MediaAge {
    /// Time since Janus last received `medium`, if known.
    pub fn of(&self, medium: Medium) -> Option<Duration> {
        let ms = match medium {
            Medium::Video => self.video_ms,
            Medium::Audio => self.audio_ms,
        };
        ms.map(Duration::from_millis)
    }
}

/// Which way camera and microphone reach Janus (`stream.transport`, as
/// decided for the current Janus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkKind {
    /// Plain RTP to the mountpoint's ports.
    Rtp,
    /// A WebRTC publisher in a VideoRoom, forwarded into the mountpoint.
    Webrtc,
}

/// The agent's WebRTC publisher, as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublisherPhase {
    /// None: waiting for the uplink's offer, or closed.
    Absent,
    /// Janus answered the offer; ICE and DTLS are not up yet.
    Published,
    /// Janus says ICE and DTLS are up (`webrtcup`).
    Connected,
}

impl PublisherPhase {
    /// The phase in one lowercase word, as `status` shows it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Published => "published",
            Self::Connected => "connected",
        }
    }
}

/// The uplink in use and, with WebRTC, its parts on Janus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Uplink {
    /// Which one.
    pub kind: UplinkKind,
    /// Why plain RTP runs although `stream.transport = "auto"` asked for
    /// WebRTC where possible: what is missing, and where.
    pub fallback: Option<&'static str>,
    /// The VideoRoom room with the room's id (WebRTC).
    pub room: Presence<Owner>,
    /// The agent's publisher in it (WebRTC).
    pub publisher: PublisherPhase,
    /// Its forwarders into the mountpoint (WebRTC).
    pub forwarders: Presence,
}

impl Uplink {
    /// An uplink of `kind`, nothing of it seen yet.
    pub fn new(kind: UplinkKind, fallback: Option<&'static str>) -> Self {
        Self {
            kind,
            fallback,
            room: Presence::Unknown,
            publisher: PublisherPhase::Absent,
            forwarders: Presence::Unknown,
        }
    }

    /// Whether media can reach the mountpoint this way now.
    fn is_live(&self) -> bool {
        self.kind == UplinkKind::Rtp
            || (self.room == Presence::Present(Owner::Us)
                && self.publisher != PublisherPhase::Absent
                && self.forwarders == Presence::Present(()))
    }
}

/// What closed the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A button, `broadcast-agent close`, or `open_on_start = false`.
    Command,
    /// No one was in it for `room.idle_timeout_s`.
    IdleTimeout,
    /// It was open for `room.max_duration_s`.
    MaxDuration,
    /// It was closed before the agent (re)started, and `control.state_dir`
    /// kept that, and why.
    Restored(Earlier),
    /// The saved choice cannot be read (or is not one): the room stays
    /// closed until the owner chooses again, rather than guess.
    Unreadable,
    /// `control.state_dir` cannot be written: no choice would survive a
    /// restart, so nothing opens by itself.
    Unwritable,
    /// No `room.secret` and no choice yet: a fresh install broadcasts
    /// nothing by itself (`open_on_start` waits for the secret).
    Unconfigured,
}

/// Why the room was closed before the agent restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earlier {
    /// By the owner (a button, `broadcast-agent close`).
    Owner,
    /// By `room.idle_timeout_s`.
    IdleTimeout,
    /// By `room.max_duration_s`.
    MaxDuration,
}

impl CloseReason {
    /// In one word, as `status --json` shows it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::IdleTimeout => "idle_timeout",
            Self::MaxDuration => "max_duration",
            Self::Restored(_) => "restored",
            Self::Unreadable => "unreadable",
            Self::Unwritable => "unwritable",
            Self::Unconfigured => "unconfigured",
        }
    }

    /// In words, for the status line.
    pub fn words(self) -> &'static str {
        match self {
            Self::Command => "closed on request",
            Self::IdleTimeout => "idle timeout",
            Self::MaxDuration => "maximum duration reached",
            Self::Restored(Earlier::Owner) => "closed by the owner before the agent restarted",
            Self::Restored(Earlier::IdleTimeout) => {
                "closed by its idle timeout (room.idle_timeout_s) before the agent restarted"
            }
            Self::Restored(Earlier::MaxDuration) => {
                "closed at its maximum duration (room.max_duration_s) before the agent restarted"
            }
            Self::Unreadable => {
                "the owner's last choice (room.json in control.state_dir) cannot be read: closed until opened"
            }
            Self::Unwritable => {
                "control.state_dir cannot be written, so no choice would survive a restart: closed until opened"
            }
            Self::Unconfigured => {
                "room.secret is not set: nothing opens by itself until it is (or the room is opened)"
            }
        }
    }
}

impl CloseReason {
    /// What the owner must do when this reason keeps the room closed
    /// though nobody closed it; `None` for a room closed on purpose.
    pub fn fix(self) -> Option<&'static str> {
        match self {
            Self::Unconfigured => Some(
                "set room.secret (or room.secret_file) in the configuration, then \
                 `sudo systemctl reload broadcast-agent`; or open the room now: `broadcast-agent open`",
            ),
            Self::Unwritable => Some(
                "let the service's user write control.state_dir (`sudo -u broadcast-agent broadcast-agent check` \
                 says why not), then `sudo systemctl reload broadcast-agent`",
            ),
            Self::Unreadable => Some(
                "choose again with `broadcast-agent open` or `broadcast-agent close`: the choice is written anew",
            ),
            Self::Command | Self::IdleTimeout | Self::MaxDuration | Self::Restored(_) => None,
        }
    }
}

impl Serialize for CloseReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

/// The error of a failed pass, as it is shown: in full for the log and
/// `status`, by its cause alone for one-line summaries. Serialized as the
/// full text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The whole message, with its context.
    pub message: String,
    /// The cause, short enough for systemd's STATUS line.
    pub cause: String,
    /// What kind of failure, for counting.
    pub class: ErrorClass,
}

/// What kind of failure a pass met, as metrics count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Janus could not be reached (connection refused, timed out, no route).
    Unreachable,
    /// The TLS handshake failed.
    Tls,
    /// HTTP failed (a proxy in front of Janus).
    Http,
    /// Janus's core refused the request (e.g. 403, a wrong `api_secret`).
    Core,
    /// A plugin refused the request.
    Plugin,
    /// Janus's reply was not what its API documents.
    Protocol,
    /// Someone else holds the room's id.
    Conflict,
    /// Something on this side: a name that does not resolve, no route, no thread.
    Local,
}

impl ErrorClass {
    /// Every class, in order.
    pub const ALL: [Self; 8] = [
        Self::Unreachable,
        Self::Tls,
        Self::Http,
        Self::Core,
        Self::Plugin,
        Self::Protocol,
        Self::Conflict,
        Self::Local,
    ];

    /// The class in one lowercase word, as metrics label it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Tls => "tls",
            Self::Http => "http",
            Self::Core => "core",
            Self::Plugin => "plugin",
            Self::Protocol => "protocol",
            Self::Conflict => "conflict",
            Self::Local => "local",
        }
    }
}

impl ErrorClass {
    /// What failed, in words, before the cause.
    pub fn words(self) -> &'static str {
        match self {
            Self::Unreachable => "Janus cannot be reached",
            Self::Tls => "the TLS handshake with Janus fails",
            Self::Http => "HTTP to Janus fails",
            Self::Core => "Janus refuses the agent's request",
            Self::Plugin => "a Janus plugin refuses the agent's request",
            Self::Protocol => "Janus answers what its API does not document",
            Self::Conflict => "someone else holds the room's id on Janus",
            Self::Local => "this machine cannot talk to Janus",
        }
    }

    /// What to do about a failure of this class.
    pub fn fix(self) -> &'static str {
        match self {
            Self::Unreachable => {
                "start Janus, or set janus.url to where it listens; the agent retries by itself"
            }
            Self::Tls => {
                "fix Janus's certificate, or set janus.ca_file to the CA that signed it (docs/security.md)"
            }
            Self::Http => {
                "check the web server in front of Janus and janus.url's path (Janus's HTTP API is at /janus)"
            }
            Self::Core | Self::Plugin => {
                "change what the error names in the configuration (the last error below), \
                 then `sudo systemctl reload broadcast-agent`"
            }
            Self::Protocol => {
                "check that janus.url is Janus's HTTP API; `journalctl -u broadcast-agent` shows the exchange"
            }
            Self::Conflict => Conflict::FIX,
            Self::Local => {
                "check that janus.url's host resolves and routes from here (`journalctl -u broadcast-agent` has the details)"
            }
        }
    }
}

impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.message)
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
    /// Open wanted, but the id is held by someone else on Janus.
    Conflict,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Self; 5] = [
        Self::Live,
        Self::Opening,
        Self::Closing,
        Self::Closed,
        Self::Conflict,
    ];

    /// The phase in one lowercase word, as `status` shows it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Opening => "opening",
            Self::Closing => "closing",
            Self::Closed => "closed",
            Self::Conflict => "conflict",
        }
    }
}

/// The agent's view of the room, published after every pass: the source for
/// logs, systemd STATUS, the LED, the pipelines and `broadcast-agent status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomState {
    /// The room id.
    pub room_id: u64,
    /// What the owner wants.
    pub desired: Desired,
    /// Whether the agent holds a Janus session.
    pub session: bool,
    /// The AudioBridge room.
    pub room: Presence<Owner>,
    /// The Streaming mountpoint.
    pub mountpoint: Presence<Fit>,
    /// Whether the room's audio is forwarded to the Pi (`speaker.enabled`).
    pub forwarding: bool,
    /// The forwarder of the room's audio to the Pi.
    pub forwarder: Presence<u64>,
    /// The room's chat.
    pub chat: Chat,
    /// Where and how that forwarder sends, while the agent has one.
    pub forward: Option<Forward>,
    /// How camera and microphone reach Janus; None until decided (with
    /// `stream.transport = "auto"` or `"webrtc"`, by the first session:
    /// whether Janus has the VideoRoom plugin).
    pub uplink: Option<Uplink>,
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
    /// The error of the last pass, if the last pass failed.
    pub last_error: Option<Failure>,
}

impl RoomState {
    /// The state before the first pass.
    pub fn new(room_id: u64, desired: Desired) -> Self {
        Self {
            room_id,
            desired,
            session: false,
            room: Presence::Unknown,
            mountpoint: Presence::Unknown,
            forwarding: true,
            forwarder: Presence::Unknown,
            chat: Chat::Off,
            forward: None,
            uplink: None,
            media_age: MediaAge::default(),
            participants: None,
            closed_by: (desired == Desired::Closed).then_some(CloseReason::Command),
            srtp_key: None,
            last_error: None,
        }
    }

    /// Whether the room is wanted open (and the pipelines with it).
    pub fn wants_open(&self) -> bool {
        self.desired == Desired::Open
    }

    /// What of the room's id someone else holds on Janus, if anything.
    pub fn conflict(&self) -> Option<Conflict> {
        let video_room = self.uplink.map_or(Presence::Unknown, |u| u.room);
        let chat = match self.chat {
            Chat::On(presence) => presence,
            Chat::Off | Chat::Unavailable => Presence::Unknown,
        };
        let (what, why) = match (self.room, self.mountpoint, video_room, chat) {
            (Presence::Present(Owner::Foreign(why)), ..) => ("room", why),
            (_, Presence::Present(Fit::Foreign(why)), ..) => ("mountpoint", why),
            (_, _, Presence::Present(Owner::Foreign(why)), _) => ("video room", why),
            (.., Presence::Present(Owner::Foreign(why))) => ("chat room", why),
            _ => return None,
        };
        Some(Conflict {
            what,
            id: self.room_id,
            why,
        })
    }

    /// What the room is doing, in one word.
    pub fn phase(&self) -> Phase {
        if self.desired == Desired::Open && self.conflict().is_some() {
            return Phase::Conflict;
        }
        let live = matches!(self.room, Presence::Present(Owner::Us))
            && matches!(self.mountpoint, Presence::Present(Fit::Matches))
            && (!self.forwarding || matches!(self.forwarder, Presence::Present(_)))
            && self.uplink.is_some_and(|u| u.is_live());
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
        state.uplink = Some(Uplink::new(UplinkKind::Rtp, None));
        state.room = Present(Owner::Us);
        state.mountpoint = Present(Fit::Matches);
        state.forwarder = Present(3);
        assert_eq!(state.phase(), Phase::Live);
        state.forwarder = Presence::Absent;
        assert_eq!(state.phase(), Phase::Opening);
        state.forwarding = false;
        assert_eq!(state.phase(), Phase::Live, "without a speaker");
        state.mountpoint = Present(Fit::Foreign(Foreign::OtherPorts));
        assert_eq!(state.phase(), Phase::Conflict);
        let conflict = state.conflict().expect("a conflict");
        assert!(conflict
            .to_string()
            .starts_with("mountpoint 1 on Janus is not this agent's"));
        state.mountpoint = Present(Fit::Matches);
        state.desired = Desired::Closed;
        assert_eq!(state.phase(), Phase::Closed);
        state.last_error = Some(Failure {
            message: "cannot reach Janus".into(),
            cause: "refused".into(),
            class: ErrorClass::Unreachable,
        });
        assert_eq!(state.phase(), Phase::Closing);
    }

    #[test]
    fn media_age_is_read_per_medium() {
        let age = MediaAge {
            video_ms: Some(20),
            audio_ms: None,
        };
        assert_eq!(age.of(Medium::Video), Some(Duration::from_millis(20)));
        assert_eq!(age.of(Medium::Audio), None);
    }
}
