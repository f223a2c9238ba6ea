//! The agent's settings: typed sections, loaded with the `config` crate from
//! a TOML file and then `BROADCAST_AGENT__<SECTION>__<KEY>` environment
//! variables, and validated so that every error names its key.
//!
//! The key names are a public contract (users' files rely on them): extend
//! them, never rename them. A field may be named without the key's unit
//! (`#[serde(rename = "check_interval_ms")] check_interval: Duration`); the
//! key stays.
//!
//! This module owns [`Settings`], loading and its errors; the sections are
//! in `janus` (`[janus]`, `[room]`), `media` (`[stream]`, `[speaker]`,
//! `[video]`, `[microphone]`, `[recording]`) and `service` (`[gpio]`,
//! `[control]`, `[log]`, `[metrics]`), the `*_file` secrets in `secrets`, the adapters
//! that read the integer `*_ms` and `*_s` keys into `Duration`s in
//! `duration`, and what types cannot check in `validate`.

mod duration;
mod janus;
mod media;
mod relay;
mod secrets;
mod service;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use janus::{JanusSettings, RoomSettings};
pub use media::{
    MicrophoneSettings, RecordingSettings, Rotation, SpeakerSettings, StreamSettings, Transport,
    VideoSettings, VideoSource,
};
pub use relay::{RelaySettings, MAX_RELAYS};
use secrets::{check_exposure, CREDENTIALS_VARIABLE};
pub use service::{ControlSettings, GpioSettings, LogSettings, MetricsSettings};

/// Where `run`, `check` and the control commands look for the file.
pub const DEFAULT_PATH: &str = "/etc/broadcast-agent/agent.toml";

/// Prefix of environment overrides, e.g. `BROADCAST_AGENT__JANUS__URL`.
const ENV_PREFIX: &str = "BROADCAST_AGENT";

/// A configuration the agent cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or unreadable, or is not valid TOML.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A key has an unknown name or a value of the wrong type.
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A key has a well-typed value the agent cannot use.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    /// The file holds secrets and every user on the machine can read it.
    #[error(
        "{path}: holds secrets ({keys}) and is readable by every user (mode {mode:04o}); \
         fix: chmod 640 {path} (group: the agent's), or move them to *_file settings"
    )]
    Exposed {
        path: PathBuf,
        mode: u32,
        keys: String,
    },
}

/// Every setting of the agent.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How to reach the Janus server.
    pub janus: JanusSettings,
    /// The AudioBridge room (and the Streaming mountpoint of the same id).
    pub room: RoomSettings,
    /// Where the camera and microphone RTP goes.
    pub stream: StreamSettings,
    /// The room's mixed audio, played on the Pi.
    pub speaker: SpeakerSettings,
    /// The camera.
    pub video: VideoSettings,
    /// The microphone.
    pub microphone: MicrophoneSettings,
    /// Buttons and LED on the Pi's GPIO header.
    pub gpio: GpioSettings,
    /// The local control socket (`broadcast-agent status/open/close`).
    pub control: ControlSettings,
    /// Recording camera and microphone on the Pi.
    pub recording: RecordingSettings,
    /// Logging.
    pub log: LogSettings,
    /// Prometheus metrics for node exporter.
    pub metrics: MetricsSettings,
    /// Edge Janus servers the broadcast is forwarded to (`[[relay]]`).
    #[serde(rename = "relay")]
    pub relays: Vec<RelaySettings>,
    /// The `*_file` keys left for the service to read: they name systemd's
    /// credentials directory, which only exists inside the service
    /// ([`Purpose::Check`] outside it).
    #[serde(skip)]
    pub deferred_secrets: Vec<&'static str>,
}

/// What the settings are loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The service: every secret must be read.
    Run,
    /// `broadcast-agent check`, run by a person or `deploy.sh` outside the
    /// service: a secret in systemd's credentials directory (`%d/`) is
    /// left for the service when `$CREDENTIALS_DIRECTORY` is unset.
    Check,
}

impl Settings {
    /// Loads the file at `path`, applies environment overrides, and validates.
    /// A file that holds secrets inline and that every user can read is
    /// refused ([`ConfigError::Exposed`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_for(path, Purpose::Run)
    }

    /// [`Self::load`], for `purpose`.
    pub fn load_for(path: &Path, purpose: Purpose) -> Result<Self, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let settings = Self::from_sources(path, &raw, std::env::vars(), purpose)?;
        let mode = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
            .unwrap_or(0);
        check_exposure(path, &raw, mode)?;
        Ok(settings)
    }

    /// Builds settings from a file's text and a set of environment variables.
    fn from_sources(
        path: &Path,
        toml: &str,
        env: impl IntoIterator<Item = (String, String)>,
        purpose: Purpose,
    ) -> Result<Self, ConfigError> {
        let mut credentials = None;
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, v)| {
                if k == CREDENTIALS_VARIABLE {
                    credentials = Some(PathBuf::from(v));
                }
                k.starts_with(ENV_PREFIX)
            })
            .collect();
        let parse_error = |e: config::ConfigError| ConfigError::Parse {
            path: path.to_owned(),
            reason: one_line(&e),
        };
        let mut settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .map_err(parse_error)?
            .try_deserialize()
            .map_err(parse_error)?;
        let invalid = |(key, reason)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        settings
            .read_secret_files(credentials.as_deref(), purpose)
            .map_err(invalid)?;
        settings
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: path.to_owned(),
                key,
                reason,
            })?;
        Ok(settings)
    }

    /// Where the camera and microphone RTP goes: `stream.host`, or Janus's host.
    pub fn stream_host(&self) -> &str {
        if self.stream.host.is_empty() {
            self.janus.host()
        } else {
            &self.stream.host
        }
    }

    /// Whether the Pi sends anything: a camera or a microphone (else it
    /// only plays the room, and needs no uplink).
    pub fn sends_media(&self) -> bool {
        self.video.source != VideoSource::None || self.microphone.enabled
    }

    /// The viewer page's address for this room, if `room.viewer_url` is set.
    pub fn viewer_url(&self) -> Option<String> {
        let template = &self.room.viewer_url;
        (!template.is_empty()).then(|| template.replace("{room}", &self.room.id.to_string()))
    }

    /// The settings as TOML, secrets masked, for `broadcast-agent check`.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

/// The `config` crate's error on one line, key first, from its fields:
/// "room.id: invalid type: ..", and for serde's "unknown field `idd`,
/// expected one of `id`, .." in `[room]`, "room.idd: unknown key, expected
/// one of `id`, ..". TOML syntax errors lose the lines quoting the file.
fn one_line(error: &config::ConfigError) -> String {
    use config::ConfigError as E;
    let (text, key, origin) = match error {
        E::Type {
            origin,
            unexpected,
            expected,
            key,
        } => (
            format!("invalid type: {unexpected}, expected {expected}"),
            key,
            origin,
        ),
        E::At { error, origin, key } => (error.to_string(), key, origin),
        E::Message(text) => (text.clone(), &None, &None),
        other => return flatten(&other.to_string()),
    };
    let from = origin
        .as_ref()
        .map(|origin| format!(" (from {origin})"))
        .unwrap_or_default();
    if let Some((field, expected)) = text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        return match key {
            Some(key) => format!("{key}.{field}: unknown key{expected}{from}"),
            None => format!("{field}: unknown section{expected}{from}"),
        };
    }
    match key {
        Some(key) => format!("{key}: {text}{from}"),
        None => format!("{text}{from}"),
    }
}

/// A multi-line message on one line, without the lines quoting the file.
fn flatten(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_source_excerpt(l))
        .collect::<Vec<_>>()
        .join(": ")
}

/// The lines of a TOML parse error that quote the file (`1 | key = ..`, `|   ^`).
fn is_source_excerpt(line: &str) -> bool {
    let gutter = line
        .split_once('|')
        .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
    gutter || line.chars().all(|c| c == '^' || c == ' ')
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_masked_toml())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::Secret;

    // Shared with the tests of the submodules.
    pub(super) fn load(toml: &str) -> Result<Settings, ConfigError> {
        load_env(toml, &[])
    }

    pub(super) fn load_env(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_sources(
            Path::new("agent.toml"),
            toml,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Purpose::Run,
        )
    }

    pub(super) fn error(toml: &str) -> String {
        load(toml).expect_err("config must be rejected").to_string()
    }

    /// Asserts that `toml` is refused with a message starting `agent.toml: <start>`.
    pub(super) fn refused(toml: &str, start: &str) {
        let e = error(toml);
        assert!(e.starts_with(&format!("agent.toml: {start}")), "{e}");
    }

    /// Asserts that `toml` is refused with a message containing `part`.
    pub(super) fn refused_naming(toml: &str, part: &str) {
        let e = error(toml);
        assert!(e.contains(part), "{e}");
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let s = load("").expect("empty file is valid");
        assert_eq!(s.janus.url, "http://127.0.0.1:8088/janus");
        assert_eq!(s.room.id, 4556);
        assert_eq!(s.stream.video_port, 8004);
        assert_eq!(s.stream.audio_port, 8005);
        assert_eq!(s.speaker.port, 5000);
        assert_eq!(s.stream_host(), "127.0.0.1");
        assert!(s.room.open_on_start && s.room.destroy_on_close);
    }

    #[test]
    fn shipped_example_is_valid() {
        let shipped = include_str!("../../conf/agent.toml");
        load(shipped).expect("conf/agent.toml must load");
    }

    #[test]
    fn unknown_key_is_named() {
        refused(
            "[room]\nidd = 3\n",
            "room.idd: unknown key, expected one of `id`",
        );
    }

    #[test]
    fn unknown_section_is_named() {
        refused("[rooom]\nid = 3\n", "rooom: unknown section");
    }

    #[test]
    fn wrong_type_is_named() {
        refused("[room]\nid = \"abc\"\n", "room.id: invalid type");
    }

    #[test]
    fn syntax_error_is_one_line() {
        let e = error("garbage ==\n");
        assert!(!e.contains('\n') && e.contains("line 1"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = load_env(
            "[janus]\nurl = \"http://10.0.0.1:8088/janus\"\n[room]\nid = 7\n",
            &[
                ("BROADCAST_AGENT__JANUS__URL", "https://[::1]:8089/janus"),
                ("BROADCAST_AGENT__ROOM__ID", "99"),
                ("BROADCAST_AGENT__ROOM__SECRET", "1234"),
            ],
        )
        .expect("valid");
        assert_eq!(s.janus.url, "https://[::1]:8089/janus");
        assert_eq!(s.janus.host(), "::1");
        assert_eq!(s.room.id, 99);
        assert_eq!(s.room.secret.as_ref().map(Secret::expose), Some("1234"));
    }

    #[test]
    fn integer_keys_read_from_the_environment_become_durations() {
        let s = load_env(
            "",
            &[
                ("BROADCAST_AGENT__SPEAKER__LATENCY_MS", "60"),
                ("BROADCAST_AGENT__ROOM__IDLE_TIMEOUT_S", "30"),
                ("BROADCAST_AGENT__ROOM__MAX_DURATION_S", "0"),
                ("BROADCAST_AGENT__VIDEO__ROTATION", "180"),
            ],
        )
        .expect("valid");
        assert_eq!(s.speaker.latency, Duration::from_millis(60));
        assert_eq!(s.room.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.room.max_duration, None, "0 is never");
        assert_eq!(s.video.rotation, Rotation::Deg180);
    }

    #[test]
    fn the_adaptive_bitrate_is_set_from_the_environment() {
        let s = load_env(
            "[video]\nsource = \"test\"\n[microphone]\ndevice = \"test\"\n",
            &[
                ("BROADCAST_AGENT__VIDEO__ADAPTIVE_BITRATE", "false"),
                ("BROADCAST_AGENT__VIDEO__MIN_BITRATE_KBPS", "450"),
            ],
        )
        .expect("valid");
        assert!(!s.video.adaptive_bitrate);
        assert_eq!(s.video.min_bitrate(), 450);
    }

    #[test]
    fn wrong_type_from_the_environment_is_named() {
        let e = load_env("", &[("BROADCAST_AGENT__SPEAKER__LATENCY_MS", "soon")])
            .expect_err("rejected")
            .to_string();
        assert_eq!(
            e,
            "agent.toml: speaker.latency_ms: invalid type: string \"soon\", \
             expected an integer (from the environment)"
        );
    }

    #[test]
    fn durations_print_as_the_integers_of_their_keys() {
        let shown = load("[room]\nidle_timeout_s = 90\n")
            .expect("valid")
            .to_masked_toml();
        for line in [
            "request_timeout_ms = 5000",
            "idle_timeout_s = 90",
            "max_duration_s = 0",
            "latency_ms = 40",
            "rotation = 0",
            "segment_s = 300",
        ] {
            assert!(shown.contains(line), "{line} in {shown}");
        }
    }

    #[test]
    fn unknown_environment_key_is_named() {
        let e = load_env("", &[("BROADCAST_AGENT__ROOM__BOGUS", "1")])
            .expect_err("rejected")
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn masked_output_hides_secrets() {
        let s = load(
            "[janus]\napi_secret = \"s3cr3t\"\n[room]\nsecret = \"roomsecret\"\npin = \"4321\"\n",
        )
        .expect("valid");
        let shown = s.to_masked_toml();
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("roomsecret") && !shown.contains("4321")
        );
        assert!(shown.contains("api_secret = \"***\""), "{shown}");
    }
}
