//! `[[relay]]`: edge Janus servers that carry viewers of the broadcast. The
//! origin (`[janus]`) keeps the AudioBridge room, the chat and the WebRTC
//! uplink's publisher; each edge gets a Streaming mountpoint with the room's
//! id, and the origin forwards the broadcast into it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::janus::{none_as_empty, optional_path, url_host, JanusSettings};
use crate::secret::{self, Secret};

/// The most edges one agent feeds: each costs the origin one forward.
pub const MAX_RELAYS: usize = 8;

/// One `[[relay]]` table: an edge Janus and the mountpoint ports there.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Its REST endpoint, as `janus.url`.
    pub url: String,
    /// Its `api_secret`, when it has one.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub api_secret: Option<Secret>,
    /// Its stored token, when it asks for one.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub token: Option<Secret>,
    /// Its Streaming plugin's `admin_key`.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub admin_key: Option<Secret>,
    /// Files holding the three (read at load time).
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub api_secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub token_file: Option<PathBuf>,
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub admin_key_file: Option<PathBuf>,
    /// PEM file of an extra CA to trust for it.
    #[serde(serialize_with = "none_as_empty")]
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one request to it.
    #[serde(rename = "request_timeout_ms", with = "duration::millis")]
    pub request_timeout: Duration,
    /// Its mountpoint's H.264 port: the origin forwards the video there.
    pub video_port: u16,
    /// Its mountpoint's Opus port.
    pub audio_port: u16,
    /// Its mountpoint's video RTCP port: its viewers' keyframe requests go
    /// back to the origin, and from there to the Pi. 0: none.
    pub video_rtcp_port: u16,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            api_secret: None,
            token: None,
            admin_key: None,
            api_secret_file: None,
            token_file: None,
            admin_key_file: None,
            ca_file: None,
            request_timeout: Duration::from_millis(2000),
            video_port: 8004,
            audio_port: 8005,
            video_rtcp_port: 8006,
        }
    }
}

impl RelaySettings {
    /// How to reach it, as a client of `[janus]` would.
    pub fn janus(&self) -> JanusSettings {
        JanusSettings {
            url: self.url.clone(),
            api_secret: self.api_secret.clone(),
            token: self.token.clone(),
            api_secret_file: None,
            token_file: None,
            ca_file: self.ca_file.clone(),
            request_timeout: self.request_timeout,
        }
    }

    /// The host of its URL (validated at load time).
    pub fn host(&self) -> &str {
        url_host(&self.url).unwrap_or_default()
    }
}
