//! Typed requests to the AudioBridge plugin: the room viewers talk in, and
//! the forwarder that sends the room's mix to the Pi's speaker.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use super::rooms::RoomPlugin;
use super::{created, ignore_code, insert_secret, Client, Handle, JanusError};
use crate::secret::{Secret, SrtpKey};

/// The plugin's package name, for `attach`.
pub const PLUGIN: &str = "janus.plugin.audiobridge";

/// AudioBridge error codes the agent acts on.
pub mod code {
    /// No room with that id.
    pub const NO_SUCH_ROOM: u16 = 485;
    /// A room with that id already exists.
    pub const ROOM_EXISTS: u16 = 486;
    /// A required element is missing (e.g. the secret of a guarded room).
    pub const MISSING_ELEMENT: u16 = 483;
    /// Wrong secret.
    pub const UNAUTHORIZED: u16 = 489;
}

/// Sampling rate of the room: Opus's native 48 kHz.
const SAMPLING_RATE: u32 = 48_000;

/// Who is talking (`audiolevel_event`): Janus averages the level browsers
/// put in each packet (RFC 6464, 0 = loudest .. 127 = silence, in -dBov)
/// over this many packets (20 ms each: half a second) ...
const TALK_WINDOW_PACKETS: u32 = 25;
/// ... and tells everyone in the room `talking` when the average is below
/// this (louder than -40 dBov), `stopped-talking` when it is no longer.
/// Janus's default, 25, misses quiet speakers.
const TALK_LEVEL: u32 = 40;

/// What the agent asks the room to be.
#[derive(Debug, Clone, Copy)]
pub struct RoomSpec<'a> {
    /// Room id.
    pub id: u64,
    /// Shown to viewers.
    pub description: &'a str,
    /// Needed by Janus to destroy the room or forward its audio.
    pub secret: Option<&'a Secret>,
    /// Viewers must give it to join.
    pub pin: Option<&'a Secret>,
    /// The plugin's `admin_key`, when Janus requires it to create rooms.
    pub admin_key: Option<&'a Secret>,
    /// Let plain-RTP participants (gateways, tests) join.
    pub allow_rtp_participants: bool,
    /// Record the room's mix into this folder on the Janus host.
    pub record_dir: Option<&'a Path>,
    /// Packets held per participant before mixing (`default_prebuffering`):
    /// each adds 20 ms to what the speaker hears.
    pub prebuffering: u32,
}

/// Where Janus sends the room's mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTarget {
    /// Address of the Pi as Janus reaches it (resolved, canonical: an
    /// IPv4-mapped IPv6 address is given as IPv4).
    pub host: IpAddr,
    /// UDP port of the speaker pipeline.
    pub port: u16,
    /// RTP payload type the speaker pipeline expects.
    pub payload_type: u8,
}

/// An RTP forwarder of a room.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Forwarder {
    /// Janus's id for it, needed to stop it.
    pub stream_id: u64,
    /// Destination address.
    pub ip: String,
    /// Destination port.
    pub port: u16,
    /// Payload type it sends with.
    #[serde(default)]
    pub ptype: Option<u8>,
}

impl Forwarder {
    /// Whether this forwarder sends where `target` says, as `target` says.
    /// Addresses are compared as addresses, not as text.
    pub fn matches(&self, target: &ForwardTarget) -> bool {
        let ip = self.ip.parse::<IpAddr>().map(|ip| ip.to_canonical());
        ip.is_ok_and(|ip| ip == target.host.to_canonical()) && self.goes_to_port_of(target)
    }

    /// Whether this forwarder sends to `target`'s port with its payload
    /// type, wherever it sends: one of the speaker's, perhaps to an old
    /// address.
    pub fn goes_to_port_of(&self, target: &ForwardTarget) -> bool {
        self.port == target.port && self.ptype == Some(target.payload_type)
    }
}

/// Outcome of asking for a room that may already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The room was made now.
    New,
    /// One with this id was already there: whose it is must be checked.
    Existing,
}

/// The AudioBridge plugin, reached through one handle.
pub struct AudioBridge<'a> {
    client: &'a Client,
    handle: Handle,
}

impl<'a> AudioBridge<'a> {
    /// Talks to the plugin through `handle`, which must be attached to it.
    pub fn new(client: &'a Client, handle: Handle) -> Self {
        Self { client, handle }
    }

    /// Creates the room, or adopts it when the id is taken.
    pub fn create(&self, room: &RoomSpec<'_>) -> Result<Created, JanusError> {
        let mut body = json!({
            "request": "create",
            "room": room.id,
            "description": room.description,
            "sampling_rate": SAMPLING_RATE,
            "is_private": true,
            "allow_rtp_participants": room.allow_rtp_participants,
            "default_prebuffering": room.prebuffering,
            "audiolevel_event": true,
            "audio_active_packets": TALK_WINDOW_PACKETS,
            "audio_level_average": TALK_LEVEL,
        });
        insert_secret(&mut body, "secret", room.secret);
        insert_secret(&mut body, "pin", room.pin);
        insert_secret(&mut body, "admin_key", room.admin_key);
        if let Some(dir) = room.record_dir {
            body["record"] = json!(true);
            body["record_dir"] = json!(dir.to_string_lossy());
        }
        created(self.request(body), code::ROOM_EXISTS)
    }

    /// Starts forwarding the room's mix as Opus RTP to `target` (SRTP with
    /// `srtp`); returns the forwarder's stream id. `admin_key` is needed
    /// with `lock_rtp_forward`.
    pub fn rtp_forward(
        &self,
        room: u64,
        target: &ForwardTarget,
        srtp: Option<&SrtpKey>,
        secret: Option<&Secret>,
        admin_key: Option<&Secret>,
    ) -> Result<u64, JanusError> {
        let mut body = json!({
            "request": "rtp_forward",
            "room": room,
            "host": target.host.to_canonical().to_string(),
            "port": target.port,
            "codec": "opus",
            "ptype": target.payload_type,
        });
        insert_secret(&mut body, "secret", secret);
        insert_secret(&mut body, "admin_key", admin_key);
        if let (Some(key), Some(map)) = (srtp, body.as_object_mut()) {
            map.insert("srtp_suite".into(), Value::from(SrtpKey::SUITE));
            map.insert("srtp_crypto".into(), Value::from(key.to_base64().expose()));
        }
        let data = self.request(body)?;
        data.get("stream_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                JanusError::Protocol(format!("rtp_forward reply without stream_id: {data}"))
            })
    }

    /// Stops a forwarder; one that is already gone (with its room) is not an error.
    pub fn stop_rtp_forward(
        &self,
        room: u64,
        stream_id: u64,
        secret: Option<&Secret>,
        admin_key: Option<&Secret>,
    ) -> Result<(), JanusError> {
        let mut body =
            json!({ "request": "stop_rtp_forward", "room": room, "stream_id": stream_id });
        insert_secret(&mut body, "secret", secret);
        insert_secret(&mut body, "admin_key", admin_key);
        ignore_code(self.request(body), code::NO_SUCH_ROOM)
    }

    /// The room's forwarders.
    pub fn list_forwarders(
        &self,
        room: u64,
        secret: Option<&Secret>,
    ) -> Result<Vec<Forwarder>, JanusError> {
        let mut body = json!({ "request": "listforwarders", "room": room });
        insert_secret(&mut body, "secret", secret);
        let data = self.request(body)?;
        let list = data
            .get("rtp_forwarders")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        serde_json::from_value(list)
            .map_err(|e| JanusError::Protocol(format!("listforwarders: {e}")))
    }

    /// How many participants (browsers and plain-RTP) are in the room.
    pub fn count_participants(&self, room: u64) -> Result<usize, JanusError> {
        let data = self.request(json!({ "request": "listparticipants", "room": room }))?;
        data.get("participants")
            .and_then(Value::as_array)
            .map(Vec::len)
            .ok_or_else(|| {
                JanusError::Protocol(format!(
                    "listparticipants reply without participants: {data}"
                ))
            })
    }
}

impl RoomPlugin for AudioBridge<'_> {
    const NO_SUCH_ROOM: u16 = code::NO_SUCH_ROOM;
    const REFUSED: [u16; 2] = [code::UNAUTHORIZED, code::MISSING_ELEMENT];
    const CLEARS_PIN: bool = true;
    /// The room's forwarders: listing them needs the secret.
    type Proof = Vec<Forwarder>;

    fn request(&self, body: Value) -> Result<Value, JanusError> {
        self.client.plugin_request(self.handle, PLUGIN, body)
    }

    fn control(&self, room: u64, secret: Option<&Secret>) -> Result<Vec<Forwarder>, JanusError> {
        self.list_forwarders(room, secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarder_matches_its_target() {
        let listed: Forwarder = serde_json::from_value(json!({
            "stream_id": 7, "ip": "127.0.0.1", "port": 5000, "ssrc": 7,
            "codec": "opus", "ptype": 100, "always_on": false
        }))
        .expect("Janus 1.1.2 listforwarders entry");
        let target = ForwardTarget {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 5000,
            payload_type: 100,
        };
        assert!(listed.matches(&target));
        assert!(!listed.matches(&ForwardTarget {
            port: 5001,
            ..target.clone()
        }));
        // The same address in other words is the same address.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("an address");
        assert!(listed.matches(&ForwardTarget {
            host: mapped,
            ..target.clone()
        }));
        let elsewhere = Forwarder {
            ip: "127.0.0.2".into(),
            ..listed
        };
        assert!(!elsewhere.matches(&target) && elsewhere.goes_to_port_of(&target));
    }
}
