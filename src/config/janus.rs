//! The sections about the Janus server: `[janus]` (how to reach it) and
//! `[room]` (the room the agent keeps there), with the serde helpers for
//! their optional secrets and paths.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use crate::secret::{self, Secret};

/// `[janus]`: the REST endpoint and its credentials.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JanusSettings {
    /// REST endpoint, `http://` or `https://`, e.g. `http://127.0.0.1:8088/janus`.
    pub url: String,
    /// Sent as `apisecret` on every request when set.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub api_secret: Option<Secret>,
    /// Sent as `token` on every request when set.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub token: Option<Secret>,
    /// A file holding [`Self::api_secret`] (read at load time).
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub api_secret_file: Option<PathBuf>,
    /// A file holding [`Self::token`] (read at load time).
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub token_file: Option<PathBuf>,
    /// PEM file of an extra CA to trust (a self-signed Janus certificate).
    #[serde(serialize_with = "none_as_empty")]
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one Janus request (`request_timeout_ms`).
    #[serde(rename = "request_timeout_ms", with = "duration::millis")]
    pub request_timeout: Duration,
}

impl Default for JanusSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8088/janus".into(),
            api_secret: None,
            token: None,
            api_secret_file: None,
            token_file: None,
            ca_file: None,
            request_timeout: Duration::from_millis(5000),
        }
    }
}

impl JanusSettings {
    /// The host part of [`Self::url`] (validated at load time).
    pub fn host(&self) -> &str {
        url_host(&self.url).unwrap_or_default()
    }
}

/// `[room]`: the AudioBridge room and what to do with it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomSettings {
    /// AudioBridge room id; the Streaming mountpoint uses the same id.
    pub id: u64,
    /// Shown to viewers.
    pub description: String,
    /// Room (and mountpoint) secret: Janus asks for it to destroy or forward.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub secret: Option<Secret>,
    /// Pin viewers must give to join.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub pin: Option<Secret>,
    /// The plugins' `admin_key` (AudioBridge and Streaming), for a Janus
    /// that requires it to create rooms and mountpoints and, with
    /// `lock_rtp_forward`, to forward.
    #[serde(
        deserialize_with = "secret::optional",
        serialize_with = "none_as_empty"
    )]
    pub admin_key: Option<Secret>,
    /// A file holding [`Self::secret`] (read at load time).
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub secret_file: Option<PathBuf>,
    /// A file holding [`Self::pin`] (read at load time).
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub pin_file: Option<PathBuf>,
    /// A file holding [`Self::admin_key`] (read at load time).
    #[serde(deserialize_with = "optional_path", serialize_with = "none_as_empty")]
    pub admin_key_file: Option<PathBuf>,
    /// Open the room as soon as the agent starts.
    pub open_on_start: bool,
    /// Remove room and mountpoint when the room is closed or the agent stops.
    pub destroy_on_close: bool,
    /// How often the agent checks that what it made still exists
    /// (`check_interval_ms`).
    #[serde(rename = "check_interval_ms", with = "duration::millis")]
    pub check_interval: Duration,
    /// Let plain-RTP participants (SIP/RTP gateways, tests) join the room.
    pub allow_rtp_participants: bool,
    /// Where viewers watch, with `{room}` standing for the id, e.g.
    /// `https://janus.example:8080/?r={room}`; logged and shown when live.
    pub viewer_url: String,
    /// Close the room after it has had no participants for this long
    /// (`idle_timeout_s`; 0 there is `None`, never).
    #[serde(rename = "idle_timeout_s", with = "duration::seconds_or_never")]
    pub idle_timeout: Option<Duration>,
    /// Close the room this long after it was opened, whoever is in it
    /// (`max_duration_s`; 0 there is `None`, never).
    #[serde(rename = "max_duration_s", with = "duration::seconds_or_never")]
    pub max_duration: Option<Duration>,
    /// Give the room a chat: a TextRoom room with the same id, secret and
    /// pin. On by default; on a Janus without the TextRoom plugin the room
    /// runs without chat (status says so).
    pub chat: bool,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            id: 4556,
            description: "Raspberry Pi broadcast".into(),
            secret: None,
            pin: None,
            admin_key: None,
            secret_file: None,
            pin_file: None,
            admin_key_file: None,
            open_on_start: true,
            destroy_on_close: true,
            check_interval: Duration::from_millis(2000),
            allow_rtp_participants: false,
            viewer_url: String::new(),
            idle_timeout: None,
            max_duration: None,
            chat: true,
        }
    }
}

/// Deserializes an optional path where `""` (the documented "unset") is `None`.
pub(super) fn optional_path<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?
        .filter(|p| !p.is_empty())
        .map(PathBuf::from))
}

/// Shows an unset optional value as `""`, as the shipped file writes it.
pub(super) fn none_as_empty<T: Serialize, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(serializer),
        None => serializer.serialize_str(""),
    }
}

/// The host of an `http(s)://host[:port]/...` URL, without brackets for IPv6.
pub(super) fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}
