//! Typed requests to the VideoRoom plugin, for the WebRTC uplink: a room
//! with the broadcast's id that the agent alone publishes in, its publisher
//! (one handle each, joined and published with the uplink's offer), and the
//! forwarders that copy what it publishes into the Streaming mountpoint.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::audiobridge::Created;
use super::rooms::RoomPlugin;
use super::{created, ignore_code, insert_secret, Client, Handle, JanusError};
use crate::rtp::Medium;
use crate::secret::{Secret, SrtpKey};

/// The plugin's package name, for `attach`.
pub const PLUGIN: &str = "janus.plugin.videoroom";

/// VideoRoom error codes the agent acts on.
pub mod code {
    /// No room with that id.
    pub const NO_SUCH_ROOM: u16 = 426;
    /// A room with that id already exists.
    pub const ROOM_EXISTS: u16 = 427;
    /// A required element is missing (e.g. the secret of a guarded room).
    pub const MISSING_ELEMENT: u16 = 429;
    /// The room has as many publishers as it takes.
    pub const PUBLISHERS_FULL: u16 = 432;
    /// Wrong secret (or pin).
    pub const UNAUTHORIZED: u16 = 433;
}

/// The name the agent's publisher goes by in the room.
const DISPLAY: &str = "broadcast-agent";

/// What the agent asks the room to be.
#[derive(Debug, Clone, Copy)]
pub struct VideoRoomSpec<'a> {
    /// Room id (the AudioBridge room's).
    pub id: u64,
    /// Shown in listings.
    pub description: &'a str,
    /// Needed to destroy the room, list and make its forwarders.
    pub secret: Option<&'a Secret>,
    /// Needed to join it.
    pub pin: Option<&'a Secret>,
    /// The plugin's `admin_key`, when Janus requires it to create rooms.
    pub admin_key: Option<&'a Secret>,
}

/// A publisher's forwarder, as the room lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarder {
    /// Janus's id for it.
    pub stream_id: u64,
    /// The address it sends to (Janus reports it resolved).
    pub host: Option<IpAddr>,
    /// The port it sends to.
    pub port: u16,
}

impl Forwarder {
    /// Whether it sends to `port` on Janus's own machine.
    pub fn is_local_to(&self, port: u16) -> bool {
        self.port == port && self.host.is_some_and(|h| h.is_loopback())
    }
}

/// One publisher's forwarders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarders {
    /// The publisher's id in the room.
    pub publisher: u64,
    /// Its forwarders.
    pub forwarders: Vec<Forwarder>,
}

/// A publisher that Janus answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The answer to the offer (SDP).
    pub answer: String,
    /// The `mid` of each medium, as Janus took them from the offer.
    pub video_mid: Option<String>,
    pub audio_mid: Option<String>,
}

/// Where a publisher's media is forwarded: a mountpoint's ports, on
/// Janus's own machine or an edge Janus.
#[derive(Debug)]
pub struct ForwardSpec<'a> {
    pub room: u64,
    pub publisher: u64,
    /// Where to: `127.0.0.1`, or an edge's host (Janus resolves names).
    pub host: &'a str,
    /// `(mid, port, rtcp port)` for video and `(mid, port)` for audio.
    pub video: Option<(&'a str, u16, Option<u16>)>,
    pub audio: Option<(&'a str, u16)>,
    /// The mountpoint's SRTP key, when it has one.
    pub srtp: Option<&'a SrtpKey>,
    pub secret: Option<&'a Secret>,
    pub admin_key: Option<&'a Secret>,
}

/// The VideoRoom plugin, reached through one handle.
pub struct VideoRoom<'a> {
    client: &'a Client,
    handle: Handle,
}

impl<'a> VideoRoom<'a> {
    /// Talks to the plugin through `handle`, which must be attached to it.
    pub fn new(client: &'a Client, handle: Handle) -> Self {
        Self { client, handle }
    }

    /// Creates the room for one publisher sending H.264 and Opus, or
    /// reports that the id is taken.
    pub fn create(&self, room: &VideoRoomSpec<'_>) -> Result<Created, JanusError> {
        let mut body = json!({
            "request": "create",
            "room": room.id,
            "description": room.description,
            "is_private": true,
            "publishers": 1,
            "videocodec": "h264",
            "audiocodec": "opus",
        });
        insert_secret(&mut body, "secret", room.secret);
        insert_secret(&mut body, "pin", room.pin);
        insert_secret(&mut body, "admin_key", room.admin_key);
        created(self.request(body), code::ROOM_EXISTS)
    }

    /// Joins `room` as its publisher; the publisher's id.
    pub fn join(&self, room: u64, pin: Option<&Secret>) -> Result<u64, JanusError> {
        let mut body = json!({
            "request": "join",
            "ptype": "publisher",
            "room": room,
            "display": DISPLAY,
        });
        insert_secret(&mut body, "pin", pin);
        let joined = self.async_request(body, None)?;
        joined
            .data
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| JanusError::Protocol(format!("join reply without id: {}", joined.data)))
    }

    /// Publishes with `offer` (SDP); Janus's answer and the mids it took.
    pub fn publish(&self, offer: &str) -> Result<Published, JanusError> {
        // The candidates are in the offer: Janus need not wait for trickles.
        let jsep = json!({ "type": "offer", "sdp": offer, "trickle": false });
        let reply = self.async_request(json!({ "request": "publish" }), Some(jsep))?;
        let answer = reply
            .jsep
            .as_ref()
            .filter(|j| j.get("type").and_then(Value::as_str) == Some("answer"))
            .and_then(|j| j.get("sdp"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                JanusError::Protocol(format!("publish reply without an answer: {}", reply.data))
            })?;
        let mid = |kind: &str| {
            let streams = reply.data.get("streams")?.as_array()?;
            let stream = streams
                .iter()
                .find(|s| s.get("type").and_then(Value::as_str) == Some(kind))?;
            Some(stream.get("mid")?.as_str()?.to_owned())
        };
        Ok(Published {
            answer: answer.to_owned(),
            video_mid: mid("video"),
            audio_mid: mid("audio"),
        })
    }

    /// The ids of the room's participants that publish.
    pub fn publishers(&self, room: u64) -> Result<Vec<u64>, JanusError> {
        let data = self.request(json!({ "request": "listparticipants", "room": room }))?;
        Ok(data
            .get("participants")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("publisher").and_then(Value::as_bool) == Some(true))
            .filter_map(|p| p.get("id").and_then(Value::as_u64))
            .collect())
    }

    /// Removes a participant from the room.
    pub fn kick(&self, room: u64, id: u64, secret: Option<&Secret>) -> Result<(), JanusError> {
        let mut body = json!({ "request": "kick", "room": room, "id": id });
        insert_secret(&mut body, "secret", secret);
        self.request(body).map(drop)
    }

    /// Forwards a publisher's media; the forwarders' ids by medium.
    pub fn rtp_forward(&self, spec: &ForwardSpec<'_>) -> Result<Vec<(Medium, u64)>, JanusError> {
        let mut streams = Vec::new();
        if let Some((mid, port, rtcp)) = spec.video {
            let mut stream = json!({ "mid": mid, "port": port });
            if let (Some(rtcp), Some(map)) = (rtcp, stream.as_object_mut()) {
                map.insert("rtcp_port".into(), Value::from(rtcp));
            }
            streams.push(stream);
        }
        if let Some((mid, port)) = spec.audio {
            streams.push(json!({ "mid": mid, "port": port }));
        }
        let mut body = json!({
            "request": "rtp_forward",
            "room": spec.room,
            "publisher_id": spec.publisher,
            "host": spec.host,
            "streams": streams,
        });
        insert_secret(&mut body, "secret", spec.secret);
        insert_secret(&mut body, "admin_key", spec.admin_key);
        if let (Some(key), Some(map)) = (spec.srtp, body.as_object_mut()) {
            map.insert("srtp_suite".into(), Value::from(SrtpKey::SUITE));
            map.insert("srtp_crypto".into(), Value::from(key.to_base64().expose()));
        }
        let data = self.request(body)?;
        let made = data
            .get("forwarders")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(forwarder_medium).collect::<Vec<_>>())
            .unwrap_or_default();
        Ok(made)
    }

    /// Stops a forwarder; one already gone (with its publisher) is not an error.
    pub fn stop_rtp_forward(
        &self,
        room: u64,
        publisher: u64,
        stream_id: u64,
        secret: Option<&Secret>,
        admin_key: Option<&Secret>,
    ) -> Result<(), JanusError> {
        let mut body = json!({
            "request": "stop_rtp_forward",
            "room": room,
            "publisher_id": publisher,
            "stream_id": stream_id,
        });
        insert_secret(&mut body, "secret", secret);
        insert_secret(&mut body, "admin_key", admin_key);
        ignore_code(self.request(body), code::NO_SUCH_ROOM)
    }

    fn async_request(
        &self,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<super::PluginEvent, JanusError> {
        self.client
            .plugin_request_async(self.handle, PLUGIN, body, jsep)
    }
}

/// A forwarder in an `rtp_forward` reply: its medium and id.
fn forwarder_medium(entry: &Value) -> Option<(Medium, u64)> {
    let medium = match entry.get("type")?.as_str()? {
        "video" => Medium::Video,
        "audio" => Medium::Audio,
        _ => return None,
    };
    Some((medium, entry.get("stream_id")?.as_u64()?))
}

/// The publishers of a `listforwarders` reply.
fn publishers(data: &Value) -> Vec<Forwarders> {
    let Some(list) = data.get("publishers").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let forwarders = p
                .get("forwarders")
                .and_then(Value::as_array)
                .map(|f| {
                    f.iter()
                        .filter_map(|f| {
                            Some(Forwarder {
                                stream_id: f.get("stream_id")?.as_u64()?,
                                host: f.get("host")?.as_str()?.parse().ok(),
                                port: u16::try_from(f.get("port")?.as_u64()?).ok()?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Forwarders {
                publisher: p.get("publisher_id")?.as_u64()?,
                forwarders,
            })
        })
        .collect()
}

impl RoomPlugin for VideoRoom<'_> {
    const NO_SUCH_ROOM: u16 = code::NO_SUCH_ROOM;
    const REFUSED: [u16; 2] = [code::UNAUTHORIZED, code::MISSING_ELEMENT];
    const CLEARS_PIN: bool = false;
    type Proof = Vec<Forwarders>;

    fn request(&self, body: Value) -> Result<Value, JanusError> {
        self.client.plugin_request(self.handle, PLUGIN, body)
    }

    /// `listforwarders`, which needs the secret: the publishers' forwarders.
    fn control(&self, room: u64, secret: Option<&Secret>) -> Result<Vec<Forwarders>, JanusError> {
        let mut body = json!({ "request": "listforwarders", "room": room });
        insert_secret(&mut body, "secret", secret);
        Ok(publishers(&self.request(body)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarders_are_read_per_publisher() {
        let reply = json!({
            "videoroom": "forwarders",
            "room": 4556,
            "publishers": [{
                "publisher_id": 77,
                "forwarders": [
                    { "stream_id": 1, "type": "video", "host": "127.0.0.1", "port": 8004 },
                    { "stream_id": 2, "type": "audio", "host": "127.0.0.1", "port": 8005 },
                    { "stream_id": "bad", "port": 1 }
                ]
            }, { "display": "no id" }]
        });
        let list = publishers(&reply);
        assert_eq!(
            list,
            [Forwarders {
                publisher: 77,
                forwarders: vec![
                    Forwarder {
                        stream_id: 1,
                        host: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                        port: 8004
                    },
                    Forwarder {
                        stream_id: 2,
                        host: Some(std::net::Ipv4Addr::LOCALHOST.into()),
                        port: 8005
                    }
                ]
            }]
        );
        let made = json!([{ "stream_id": 5, "type": "video" }, { "stream_id": 6, "type": "data" }]);
        let media: Vec<_> = made
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(forwarder_medium)
            .collect();
        assert_eq!(media, [(Medium::Video, 5)]);
    }
}
