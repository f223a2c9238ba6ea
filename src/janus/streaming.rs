//! Typed requests to the Streaming plugin: the RTP mountpoint that receives
//! the Pi's camera and microphone and that viewers watch.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::audiobridge::Created;
use super::{edit_request, ignore_code, insert_secret, Client, Handle, JanusError, Listing};
use crate::config::Settings;
use crate::h264::Level;
use crate::rtp::Medium;
use crate::secret::{Secret, SrtpKey};
use crate::state::Foreign;

/// The plugin's package name, for `attach`.
pub const PLUGIN: &str = "janus.plugin.streaming";

/// Streaming error codes the agent acts on.
pub mod code {
    /// No mountpoint with that id.
    pub const NO_SUCH_MOUNTPOINT: u16 = 455;
    /// A mountpoint with that id already exists (or a port is taken).
    pub const MOUNTPOINT_EXISTS: u16 = 456;
}

/// The fmtp of the mountpoint's Opus.
pub const OPUS_FMTP: &str = "useinbandfec=1";

/// The fmtp of H.264 as the agent sends it: constrained baseline at `level`
/// (what the source writes in its SPS), packetization mode 1.
pub fn h264_fmtp(level: Level) -> String {
    format!(
        "profile-level-id={};packetization-mode=1",
        level.profile_level_id()
    )
}

/// What the agent asks the mountpoint to be.
#[derive(Debug, Clone, Copy)]
pub struct MountpointSpec<'a> {
    /// Mountpoint id (the room's id).
    pub id: u64,
    /// Shown to viewers.
    pub description: &'a str,
    /// Needed to destroy the mountpoint or read its ports.
    pub secret: Option<&'a Secret>,
    /// Viewers must give it to watch.
    pub pin: Option<&'a Secret>,
    /// The plugin's `admin_key`, when Janus requires it to create mountpoints.
    pub admin_key: Option<&'a Secret>,
    /// The SRTP key the media will be encrypted with, if it will be.
    pub srtp: Option<&'a SrtpKey>,
    /// UDP port for H.264 and its payload type.
    pub video: (u16, u8),
    /// UDP port for the video's RTCP (`rtcpport`): Janus sends viewers'
    /// keyframe requests (PLI) back to where the sender reports come from.
    pub video_rtcp: Option<u16>,
    /// The H.264 level the camera sends, advertised to viewers.
    pub video_level: Level,
    /// UDP port for Opus and its payload type.
    pub audio: (u16, u8),
}

impl<'a> MountpointSpec<'a> {
    /// The room's mountpoint (its id, description, secret and PIN, the
    /// camera's H.264 level) on the video, audio and video RTCP `ports`
    /// (RTCP 0: none), made with `admin_key`; without SRTP.
    pub fn for_room(
        settings: &'a Settings,
        ports: [u16; 3],
        admin_key: Option<&'a Secret>,
    ) -> Self {
        let room = &settings.room;
        let [video, audio, rtcp] = ports;
        Self {
            id: room.id,
            description: &room.description,
            secret: room.secret.as_ref(),
            pin: room.pin.as_ref(),
            admin_key,
            srtp: None,
            video: (video, Medium::Video.payload_type()),
            video_rtcp: (rtcp != 0).then_some(rtcp),
            video_level: settings.video.h264_level(),
            audio: (audio, Medium::Audio.payload_type()),
        }
    }

    fn media(&self) -> Value {
        let mut video = json!({ "type": "video", "mid": "v", "port": self.video.0,
            "pt": self.video.1, "codec": "h264", "fmtp": h264_fmtp(self.video_level) });
        if let (Some(port), Some(map)) = (self.video_rtcp, video.as_object_mut()) {
            map.insert("rtcpport".into(), Value::from(port));
        }
        json!([
            video,
            // The microphone's Opus carries in-band FEC: browsers use it
            // to rebuild a lost packet from the next one.
            { "type": "audio", "mid": "a", "port": self.audio.0, "pt": self.audio.1,
              "codec": "opus", "fmtp": OPUS_FMTP },
        ])
    }
}

/// One medium of a mountpoint as `info` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaInfo {
    /// `video` or `audio`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The bound port; reported only to a request that gave the secret (or when there is none).
    #[serde(default)]
    pub port: Option<u16>,
    /// The bound RTCP port, when there is one (shown as `port` is).
    #[serde(default)]
    pub rtcpport: Option<u16>,
    /// Time since the last packet, or since creation when none arrived yet.
    #[serde(default)]
    pub age_ms: Option<u64>,
    /// The format parameters offered to viewers (H.264: profile and level).
    #[serde(default)]
    pub fmtp: Option<String>,
}

/// What `info` says about a mountpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct MountpointInfo {
    /// Its media, in order.
    #[serde(default)]
    pub media: Vec<MediaInfo>,
}

impl MountpointInfo {
    /// The first medium of `kind`.
    pub fn medium(&self, kind: &str) -> Option<&MediaInfo> {
        self.media.iter().find(|m| m.kind == kind)
    }

    /// Whether Janus showed the ports: it does only to a request with the
    /// mountpoint's secret (or to anybody, when it has none).
    pub fn shows_ports(&self) -> bool {
        !self.media.is_empty() && self.media.iter().all(|m| m.port.is_some())
    }

    /// Whether the mountpoint listens where `spec` says (ports Janus did
    /// not show never match).
    pub fn fits(&self, spec: &MountpointSpec<'_>) -> bool {
        [(Medium::Video, spec.video.0), (Medium::Audio, spec.audio.0)]
            .into_iter()
            .all(|(medium, port)| {
                self.medium(medium.name())
                    .is_some_and(|m| m.port == Some(port))
            })
    }

    /// Whether the mountpoint offers viewers the H.264 level `spec` says
    /// (what Janus did not report counts as offered).
    pub fn offers_level(&self, spec: &MountpointSpec<'_>) -> bool {
        let fmtp = h264_fmtp(spec.video_level);
        self.medium(Medium::Video.name())
            .and_then(|m| m.fmtp.as_deref())
            .is_none_or(|offered| offered == fmtp)
    }

    /// Whether the mountpoint's video RTCP port is the one `spec` says (or
    /// none, as `spec`): one made before `stream.video_rtcp_port` has none.
    pub fn feeds_back(&self, spec: &MountpointSpec<'_>) -> bool {
        self.medium(Medium::Video.name())
            .is_some_and(|m| m.rtcpport == spec.video_rtcp)
    }

    /// Time since Janus last received `medium`, if it reports one.
    pub fn age(&self, medium: Medium) -> Option<Duration> {
        self.medium(medium.name())?
            .age_ms
            .map(Duration::from_millis)
    }
}

/// The Streaming plugin, reached through one handle.
pub struct Streaming<'a> {
    client: &'a Client,
    handle: Handle,
}

impl<'a> Streaming<'a> {
    /// Talks to the plugin through `handle`, which must be attached to it.
    pub fn new(client: &'a Client, handle: Handle) -> Self {
        Self { client, handle }
    }

    /// Creates an RTP mountpoint, or says one with that id exists (whose it
    /// is, the caller must check).
    pub fn create(&self, spec: &MountpointSpec<'_>) -> Result<Created, JanusError> {
        let mut body = json!({
            "request": "create",
            "type": "rtp",
            "id": spec.id,
            "description": spec.description,
            "media": spec.media(),
            // Lets a viewer ask for its playout delay (the page asks for
            // none: see deploy/web/viewer.js).
            "playoutdelay_ext": true,
        });
        insert_secret(&mut body, "secret", spec.secret);
        insert_secret(&mut body, "pin", spec.pin);
        insert_secret(&mut body, "admin_key", spec.admin_key);
        if let (Some(key), Some(map)) = (spec.srtp, body.as_object_mut()) {
            map.insert("srtpsuite".into(), Value::from(SrtpKey::SUITE));
            map.insert("srtpcrypto".into(), Value::from(key.to_base64().expose()));
        }
        match self.request(body) {
            Ok(_) => Ok(Created::New),
            // 456 also means "a port is already bound": adopt only a
            // mountpoint that really exists, else say what Janus said.
            Err(e) if e.code() == Some(code::MOUNTPOINT_EXISTS) => {
                match self.info(spec.id, spec.secret)? {
                    Some(_) => Ok(Created::Existing),
                    None => Err(match e {
                        JanusError::Plugin {
                            plugin,
                            code,
                            reason,
                        } => JanusError::Plugin {
                            plugin,
                            code,
                            reason: format!(
                                "{reason} (is port {} or {} taken on the Janus host? \
                                 see stream.video_port, stream.audio_port)",
                                spec.video.0, spec.audio.0
                            ),
                        },
                        other => other,
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The mountpoint's info, or `None` when it does not exist.
    pub fn info(
        &self,
        id: u64,
        secret: Option<&Secret>,
    ) -> Result<Option<MountpointInfo>, JanusError> {
        let mut body = json!({ "request": "info", "id": id });
        insert_secret(&mut body, "secret", secret);
        match self.request(body) {
            Ok(data) => {
                let info = data.get("info").cloned().unwrap_or(Value::Null);
                serde_json::from_value(info)
                    .map(Some)
                    .map_err(|e| JanusError::Protocol(format!("info: {e}")))
            }
            Err(e) if e.code() == Some(code::NO_SUCH_MOUNTPOINT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Destroys the mountpoint; one that is already gone is not an error.
    pub fn destroy(&self, id: u64, secret: Option<&Secret>) -> Result<(), JanusError> {
        let mut body = json!({ "request": "destroy", "id": id });
        insert_secret(&mut body, "secret", secret);
        ignore_code(self.request(body), code::NO_SUCH_MOUNTPOINT)
    }

    /// Why the mountpoint `info` describes (asked with `spec.secret`) is not
    /// the one `spec` wants, if it is not: its ports showed only to the
    /// secret (without it, they must stay hidden) and are `spec`'s.
    pub fn stranger(
        &self,
        info: &MountpointInfo,
        spec: &MountpointSpec<'_>,
    ) -> Result<Option<Foreign>, JanusError> {
        Ok(if !info.shows_ports() {
            Some(Foreign::OtherSecret)
        } else if !info.fits(spec) {
            Some(Foreign::OtherPorts)
        } else if spec.secret.is_some()
            && self.info(spec.id, None)?.is_some_and(|i| i.shows_ports())
        {
            Some(Foreign::NoSecret)
        } else {
            None
        })
    }

    /// Gives the mountpoint (the agent's: `secret` controls it) `listing`;
    /// an empty `new_pin` removes its PIN.
    pub fn edit_listing(
        &self,
        id: u64,
        secret: Option<&Secret>,
        listing: Listing<'_>,
    ) -> Result<(), JanusError> {
        self.request(edit_request("id", id, secret, listing))
            .map(drop)
    }

    fn request(&self, body: Value) -> Result<Value, JanusError> {
        self.client.plugin_request(self.handle, PLUGIN, body)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A mountpoint on the default ports, for tests.
    pub(in crate::janus) fn spec() -> MountpointSpec<'static> {
        MountpointSpec {
            id: 4556,
            description: "x",
            secret: None,
            pin: None,
            admin_key: None,
            srtp: None,
            video: (8004, 96),
            video_rtcp: Some(8006),
            video_level: Level::L4,
            audio: (8005, 111),
        }
    }

    #[test]
    fn info_from_janus_1_1_2() {
        let info: MountpointInfo = serde_json::from_value(json!({
            "id": 4556, "media": [
                {"mindex": 0, "type": "video", "mid": "v", "port": 8004, "rtcpport": 8006,
                 "age_ms": 12},
                {"mindex": 1, "type": "audio", "mid": "a", "port": 8005, "age_ms": 30}
            ]
        }))
        .expect("parses");
        assert!(info.fits(&spec()) && info.shows_ports());
        let hidden: MountpointInfo = serde_json::from_value(json!({
            "id": 4556, "media": [{"type": "video"}, {"type": "audio"}]
        }))
        .expect("parses");
        assert!(!hidden.shows_ports() && !hidden.fits(&spec()));
        assert_eq!(info.age(Medium::Audio), Some(Duration::from_millis(30)));
        let moved = MountpointSpec {
            video: (9004, 96),
            ..spec()
        };
        assert!(!info.fits(&moved));
        // Told apart from one without the RTCP port (an earlier agent's).
        assert!(info.feeds_back(&spec()));
        let no_rtcp = MountpointSpec {
            video_rtcp: None,
            ..spec()
        };
        assert!(info.fits(&no_rtcp) && !info.feeds_back(&no_rtcp));
    }

    #[test]
    fn a_mountpoint_offering_another_level_is_told_apart() {
        // As Janus 1.1.2 reports a mountpoint an earlier version made.
        let info: MountpointInfo = serde_json::from_value(json!({
            "id": 4556, "media": [
                {"mindex": 0, "type": "video", "mid": "v", "port": 8004, "rtcpport": 8006,
                 "codec": "h264",
                 "fmtp": "profile-level-id=42e01f;packetization-mode=1"},
                {"mindex": 1, "type": "audio", "mid": "a", "port": 8005, "codec": "opus"}
            ]
        }))
        .expect("parses");
        assert!(info.fits(&spec()) && !info.offers_level(&spec()));
        let old_level = MountpointSpec {
            video_level: Level::fitting(1280, 720, 30, 2000).expect("a level"),
            ..spec()
        };
        assert!(info.offers_level(&old_level));
    }

    #[test]
    fn media_array_is_janus_1x() {
        let media = spec().media();
        assert_eq!(media[0]["codec"], "h264");
        // Level 4, as the Pi's hardware encoder writes it.
        assert_eq!(
            media[0]["fmtp"],
            "profile-level-id=42e028;packetization-mode=1"
        );
        assert_eq!(media[0]["rtcpport"], 8006);
        assert_eq!(media[1]["port"], 8005);
        assert_eq!(media[1]["pt"], 111);
    }
}
