//! The agent's settings: typed sections, loaded with the `config` crate from
//! a TOML file and then `BROADCAST_AGENT__<SECTION>__<KEY>` environment
//! variables, and validated so that every error names its key.
//!
//! The key names are a public contract (users' files rely on them): extend
//! them, never rename them.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{self, Secret};

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

/// The secrets that may be written inline or read from a `<key>_file`.
const SECRET_KEYS: [(&str, &str); 5] = [
    ("janus", "api_secret"),
    ("janus", "token"),
    ("room", "secret"),
    ("room", "pin"),
    ("room", "admin_key"),
];

/// What `*_file` paths may start with to name systemd's credentials
/// directory (`LoadCredential=`), which the agent finds in this variable.
const CREDENTIALS_VARIABLE: &str = "CREDENTIALS_DIRECTORY";

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
}

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
    /// Longest wait for one Janus request.
    pub request_timeout_ms: u64,
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
            request_timeout_ms: 5000,
        }
    }
}

impl JanusSettings {
    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

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
    /// How often the agent checks that what it made still exists.
    pub check_interval_ms: u64,
    /// Let plain-RTP participants (SIP/RTP gateways, tests) join the room.
    pub allow_rtp_participants: bool,
    /// Where viewers watch, with `{room}` standing for the id, e.g.
    /// `https://janus.example:8080/?r={room}`; logged and shown when live.
    pub viewer_url: String,
    /// Close the room after it has had no participants for this long
    /// (seconds); 0 = never.
    pub idle_timeout_s: u64,
    /// Close the room this long after it was opened (seconds), whoever is
    /// in it; 0 = never.
    pub max_duration_s: u64,
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
            check_interval_ms: 2000,
            allow_rtp_participants: false,
            viewer_url: String::new(),
            idle_timeout_s: 0,
            max_duration_s: 0,
        }
    }
}

impl RoomSettings {
    /// [`Self::check_interval_ms`] as a duration.
    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }

    /// [`Self::idle_timeout_s`] as a duration, if set.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_s > 0).then(|| Duration::from_secs(self.idle_timeout_s))
    }

    /// [`Self::max_duration_s`] as a duration, if set.
    pub fn max_duration(&self) -> Option<Duration> {
        (self.max_duration_s > 0).then(|| Duration::from_secs(self.max_duration_s))
    }
}

/// `[stream]`: where the Pi sends its camera and microphone.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// Where RTP is sent; empty means the host of `janus.url`.
    pub host: String,
    /// The mountpoint's H.264 port.
    pub video_port: u16,
    /// The mountpoint's Opus port.
    pub audio_port: u16,
    /// A capture pipeline that sends nothing for this long has stalled and is restarted.
    pub stall_timeout_ms: u64,
    /// A capture pipeline whose media Janus has not received for this long
    /// (wrong `host`, a firewall) is restarted and reported.
    pub janus_media_timeout_ms: u64,
    /// Encrypt the camera and microphone RTP (SRTP, AES_CM_128_HMAC_SHA1_80)
    /// with a key made fresh for each mountpoint.
    pub srtp: bool,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            video_port: 8004,
            audio_port: 8005,
            stall_timeout_ms: 5000,
            janus_media_timeout_ms: 10_000,
            srtp: false,
        }
    }
}

impl StreamSettings {
    /// [`Self::stall_timeout_ms`] as a duration.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// [`Self::janus_media_timeout_ms`] as a duration.
    pub fn janus_media_timeout(&self) -> Duration {
        Duration::from_millis(self.janus_media_timeout_ms)
    }
}

/// `[speaker]`: the room's audio, forwarded by Janus to the Pi.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeakerSettings {
    /// Play the room's audio at all.
    pub enabled: bool,
    /// ALSA playback device, e.g. `default`, `plughw:0,0`, `pulse`.
    pub device: String,
    /// UDP port Janus forwards the room's audio to.
    pub port: u16,
    /// Address Janus forwards to; empty means the local address that reaches Janus.
    pub host: String,
    /// Jitter buffer, in milliseconds.
    pub latency_ms: u32,
}

impl Default for SpeakerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            device: "default".into(),
            port: 5000,
            host: String::new(),
            latency_ms: 100,
        }
    }
}

/// Where the picture comes from (`[video] source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum VideoSource {
    /// No camera: the stream carries the microphone only.
    None,
    /// `videotestsrc`: a test pattern, no hardware needed.
    Test,
    /// The legacy Pi camera stack's GStreamer element (Buster/Bullseye legacy).
    Rpicamsrc,
    /// `raspivid` piped in (legacy camera stack).
    Raspivid,
    /// `rpicam-vid` (or `libcamera-vid`) piped in: Raspberry Pi OS Bookworm.
    Libcamera,
    /// A USB webcam through V4L2, encoded on the Pi.
    V4l2,
}

impl VideoSource {
    /// Every source, by its config name.
    const ALL: [(&'static str, Self); 6] = [
        ("none", Self::None),
        ("test", Self::Test),
        ("rpicamsrc", Self::Rpicamsrc),
        ("raspivid", Self::Raspivid),
        ("libcamera", Self::Libcamera),
        ("v4l2", Self::V4l2),
    ];
}

impl TryFrom<String> for VideoSource {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, source)| *source)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown source {name:?}, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// `[video]`: the camera and its encoding.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoSettings {
    /// Where the picture comes from.
    pub source: VideoSource,
    /// V4L2 device for `source = "v4l2"`.
    pub device: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub framerate: u32,
    /// H.264 bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Clockwise rotation in degrees: 0, 90, 180 or 270.
    pub rotation: u32,
    /// Mirror left-right.
    pub hflip: bool,
    /// Mirror top-bottom.
    pub vflip: bool,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self {
            source: VideoSource::Libcamera,
            device: "/dev/video0".into(),
            width: 1280,
            height: 720,
            framerate: 30,
            bitrate_kbps: 2000,
            rotation: 0,
            hflip: false,
            vflip: false,
        }
    }
}

/// `[microphone]`: the Pi's voice.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MicrophoneSettings {
    /// Send the microphone at all.
    pub enabled: bool,
    /// ALSA capture device, e.g. `plughw:1,0`; `test` is a 440 Hz tone.
    pub device: String,
    /// Opus bitrate in kbit/s.
    pub bitrate_kbps: u32,
}

impl Default for MicrophoneSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            device: "default".into(),
            bitrate_kbps: 32,
        }
    }
}

/// `[gpio]`: buttons that open and close the room, and a status LED. Pins
/// are BCM GPIO numbers; 0 means "not wired".
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioSettings {
    /// Use the GPIO header at all.
    pub enabled: bool,
    /// Button that opens the room.
    pub open_pin: u8,
    /// Button that closes the room.
    pub close_pin: u8,
    /// One button that opens a closed room and closes an open one.
    pub toggle_pin: u8,
    /// LED: off = closed, blinking = opening or recovering, on = live.
    pub led_pin: u8,
    /// Buttons connect the pin to ground (internal pull-up); false: to 3.3 V (pull-down).
    pub active_low: bool,
    /// Edges closer together than this are contact bounce, not presses.
    pub debounce_ms: u64,
    /// Simulate the pins instead of using the header: the path of a Unix
    /// datagram socket that receives `"<pin> <0|1>"` level changes. For tests
    /// and demos on machines without GPIO.
    pub simulate: String,
}

impl Default for GpioSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            open_pin: 0,
            close_pin: 0,
            toggle_pin: 0,
            led_pin: 0,
            active_low: true,
            debounce_ms: 50,
            simulate: String::new(),
        }
    }
}

impl GpioSettings {
    /// [`Self::debounce_ms`] as a duration.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }
}

/// `[recording]`: camera and microphone written on the Pi as they are
/// sent, into segmented Matroska files within a disk budget.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingSettings {
    /// Record at all (while the room is open).
    pub enabled: bool,
    /// Where the segments go; created when missing.
    pub dir: PathBuf,
    /// Length of one segment file, in seconds (cut at the next keyframe).
    pub segment_s: u64,
    /// Disk budget for all segments, in megabytes (10^6 bytes); the oldest
    /// are deleted to stay within it.
    pub max_total_mb: f64,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/var/lib/broadcast-agent/recordings"),
            segment_s: 300,
            max_total_mb: 1000.0,
        }
    }
}

impl RecordingSettings {
    /// [`Self::max_total_mb`] in bytes.
    pub fn max_total_bytes(&self) -> u64 {
        // Validated finite and positive; the cast saturates.
        (self.max_total_mb * 1e6) as u64
    }
}

/// `[control]`: the local control socket.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSettings {
    /// Unix socket path; empty disables it.
    pub socket: PathBuf,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/broadcast-agent/control.sock"),
        }
    }
}

/// `[log]`: what is logged.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

impl LogSettings {
    /// The level as the `log` crate takes it (validated at load time).
    pub fn filter(&self) -> log::LevelFilter {
        self.level.parse().unwrap_or(log::LevelFilter::Info)
    }
}

impl MicrophoneSettings {
    /// The `device` value that selects a test tone instead of ALSA.
    pub const TEST_DEVICE: &'static str = "test";
}

impl Settings {
    /// Loads the file at `path`, applies environment overrides, and validates.
    /// A file that holds secrets inline and that every user can read is
    /// refused ([`ConfigError::Exposed`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let settings = Self::from_sources(path, &raw, std::env::vars())?;
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
            reason: one_line(&e.to_string()),
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
            .read_secret_files(credentials.as_deref())
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

    /// Reads each secret given as a `*_file` key into its setting. The file
    /// holds the secret alone; trailing line breaks are dropped. A path may
    /// start with `%d/` or `$CREDENTIALS_DIRECTORY/` for systemd's
    /// credentials directory (`LoadCredential=`).
    fn read_secret_files(
        &mut self,
        credentials: Option<&Path>,
    ) -> Result<(), (&'static str, String)> {
        let (janus, room) = (&mut self.janus, &mut self.room);
        let slots: [(
            &'static str,
            &'static str,
            &mut Option<Secret>,
            &Option<PathBuf>,
        ); 5] = [
            (
                "janus.api_secret",
                "janus.api_secret_file",
                &mut janus.api_secret,
                &janus.api_secret_file,
            ),
            (
                "janus.token",
                "janus.token_file",
                &mut janus.token,
                &janus.token_file,
            ),
            (
                "room.secret",
                "room.secret_file",
                &mut room.secret,
                &room.secret_file,
            ),
            ("room.pin", "room.pin_file", &mut room.pin, &room.pin_file),
            (
                "room.admin_key",
                "room.admin_key_file",
                &mut room.admin_key,
                &room.admin_key_file,
            ),
        ];
        for (key, file_key, value, file) in slots {
            let Some(file) = file else { continue };
            if value.is_some() {
                return Err((
                    file_key,
                    format!("set either {key} or {file_key}, not both"),
                ));
            }
            let path = credential_path(file_key, file, credentials)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| (file_key, format!("cannot read {}: {e}", path.display())))?;
            let secret = Secret::new(text.trim_end_matches(['\n', '\r']))
                .ok_or_else(|| (file_key, format!("{} is empty", path.display())))?;
            *value = Some(secret);
        }
        Ok(())
    }

    /// Checks what types alone cannot; the error names the key.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let janus = &self.janus;
        if url_host(&janus.url).is_none() {
            return Err((
                "janus.url",
                format!(
                    "{:?} is not an http:// or https:// URL with a host",
                    janus.url
                ),
            ));
        }
        if let Some(ca) = &janus.ca_file {
            if !ca.as_os_str().is_empty() && !ca.is_file() {
                return Err(("janus.ca_file", format!("{} is not a file", ca.display())));
            }
        }
        check_range(
            "janus.request_timeout_ms",
            janus.request_timeout_ms,
            100,
            120_000,
        )?;
        if self.room.id == 0 {
            return Err((
                "room.id",
                "must not be 0 (Janus would pick a random id)".into(),
            ));
        }
        check_range(
            "room.check_interval_ms",
            self.room.check_interval_ms,
            100,
            600_000,
        )?;
        // A year at most: anything longer is a typo for 0 (never).
        check_range(
            "room.idle_timeout_s",
            self.room.idle_timeout_s,
            0,
            31_536_000,
        )?;
        check_range(
            "room.max_duration_s",
            self.room.max_duration_s,
            0,
            31_536_000,
        )?;
        check_host("stream.host", &self.stream.host)?;
        check_port("stream.video_port", self.stream.video_port)?;
        check_port("stream.audio_port", self.stream.audio_port)?;
        if self.stream.video_port == self.stream.audio_port {
            return Err((
                "stream.audio_port",
                "must differ from stream.video_port".into(),
            ));
        }
        check_range(
            "stream.stall_timeout_ms",
            self.stream.stall_timeout_ms,
            500,
            600_000,
        )?;
        check_range(
            "stream.janus_media_timeout_ms",
            self.stream.janus_media_timeout_ms,
            1000,
            3_600_000,
        )?;
        check_host("speaker.host", &self.speaker.host)?;
        check_port("speaker.port", self.speaker.port)?;
        check_range(
            "speaker.latency_ms",
            self.speaker.latency_ms.into(),
            10,
            5000,
        )?;
        check_device("speaker.device", &self.speaker.device)?;
        check_device("microphone.device", &self.microphone.device)?;
        check_range(
            "microphone.bitrate_kbps",
            self.microphone.bitrate_kbps.into(),
            6,
            510,
        )?;
        self.validate_video()?;
        self.validate_gpio()?;
        self.validate_recording()?;
        if self.log.level.parse::<log::LevelFilter>().is_err() {
            return Err((
                "log.level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    fn validate_recording(&self) -> Result<(), (&'static str, String)> {
        let recording = &self.recording;
        if !recording.enabled {
            return Ok(());
        }
        if !recording.dir.is_absolute() {
            return Err((
                "recording.dir",
                format!("{} is not an absolute path", recording.dir.display()),
            ));
        }
        check_range("recording.segment_s", recording.segment_s, 2, 86_400)?;
        if !(recording.max_total_mb.is_finite() && recording.max_total_mb > 0.0) {
            return Err((
                "recording.max_total_mb",
                format!("{} is not a positive number", recording.max_total_mb),
            ));
        }
        if self.video.source == VideoSource::None && !self.microphone.enabled {
            return Err((
                "recording.enabled",
                "nothing to record: video.source is none and the microphone is disabled".into(),
            ));
        }
        Ok(())
    }

    fn validate_gpio(&self) -> Result<(), (&'static str, String)> {
        let gpio = &self.gpio;
        if !gpio.enabled {
            return Ok(());
        }
        let pins = [
            ("gpio.open_pin", gpio.open_pin),
            ("gpio.close_pin", gpio.close_pin),
            ("gpio.toggle_pin", gpio.toggle_pin),
            ("gpio.led_pin", gpio.led_pin),
        ];
        for (key, pin) in pins {
            check_range(key, pin.into(), 0, 53)?;
        }
        if gpio.open_pin == 0 && gpio.close_pin == 0 && gpio.toggle_pin == 0 && gpio.led_pin == 0 {
            return Err((
                "gpio.enabled",
                "no pin is set (open_pin, close_pin, toggle_pin, led_pin)".into(),
            ));
        }
        let wired: Vec<_> = pins.iter().filter(|(_, p)| *p != 0).collect();
        for (i, (key, pin)) in wired.iter().enumerate() {
            if wired[..i].iter().any(|(_, other)| other == pin) {
                return Err((
                    key,
                    format!("GPIO {pin} is already used by another setting"),
                ));
            }
        }
        check_range("gpio.debounce_ms", gpio.debounce_ms, 0, 2000)
    }

    fn validate_video(&self) -> Result<(), (&'static str, String)> {
        let video = &self.video;
        check_range("video.width", video.width.into(), 16, 4096)?;
        check_range("video.height", video.height.into(), 16, 4096)?;
        check_range("video.framerate", video.framerate.into(), 1, 120)?;
        check_range("video.bitrate_kbps", video.bitrate_kbps.into(), 50, 50_000)?;
        if ![0, 90, 180, 270].contains(&video.rotation) {
            return Err((
                "video.rotation",
                format!("{} is not one of 0, 90, 180, 270", video.rotation),
            ));
        }
        if video.source == VideoSource::Libcamera && video.rotation % 180 != 0 {
            return Err((
                "video.rotation",
                "rpicam-vid rotates by 0 or 180 only; use hflip/vflip or another source".into(),
            ));
        }
        if video.source == VideoSource::V4l2 && !video.device.starts_with("/dev/") {
            return Err((
                "video.device",
                format!("{:?} is not a /dev path", video.device),
            ));
        }
        Ok(())
    }

    /// Where the camera and microphone RTP goes: `stream.host`, or Janus's host.
    pub fn stream_host(&self) -> &str {
        if self.stream.host.is_empty() {
            self.janus.host()
        } else {
            &self.stream.host
        }
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

/// Rewrites the `config` crate's messages so that the key comes first and
/// everything fits on one line:
/// "unknown field `idd`, expected one of `id`, .. for key `room`" becomes
/// "room.idd: unknown key, expected one of `id`, ..", and
/// "invalid type: .. for key `room.id`" becomes "room.id: invalid type: ..".
fn one_line(message: &str) -> String {
    let flat = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_source_excerpt(l))
        .collect::<Vec<_>>()
        .join(": ");
    let (text, key) = match flat.rsplit_once(" for key `") {
        Some((text, key)) => (text, Some(key.trim_end_matches('`'))),
        None => (flat.as_str(), None),
    };
    if let Some((field, expected)) = text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    {
        return match key {
            Some(key) => format!("{key}.{field}: unknown key{expected}"),
            None => format!("{field}: unknown section{expected}"),
        };
    }
    match key {
        Some(key) => format!("{key}: {text}"),
        None => flat,
    }
}

/// The lines of a TOML parse error that quote the file (`1 | key = ..`, `|   ^`).
fn is_source_excerpt(line: &str) -> bool {
    let gutter = line
        .split_once('|')
        .is_some_and(|(n, _)| n.trim().chars().all(|c| c.is_ascii_digit()));
    gutter || line.chars().all(|c| c == '^' || c == ' ')
}

fn check_range(
    key: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), (&'static str, String)> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err((key, format!("{value} is out of range {min}..={max}")))
    }
}

fn check_port(key: &'static str, port: u16) -> Result<(), (&'static str, String)> {
    if port == 0 {
        Err((key, "port 0 is out of range 1..=65535".into()))
    } else {
        Ok(())
    }
}

/// ALSA device names are passed to ALSA as they are; only a shape check here.
fn check_device(key: &'static str, device: &str) -> Result<(), (&'static str, String)> {
    if device.is_empty() || device.chars().any(|c| c.is_control() || c == '!') {
        Err((key, format!("{device:?} is not an ALSA device name")))
    } else {
        Ok(())
    }
}

/// An empty host means "derive it"; anything else must be an IP address or a
/// plausible host name.
fn check_host(key: &'static str, host: &str) -> Result<(), (&'static str, String)> {
    let plausible_name = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if host.is_empty() || host.parse::<IpAddr>().is_ok() || plausible_name {
        Ok(())
    } else {
        Err((key, format!("{host:?} is not an IP address or host name")))
    }
}

/// `path` with a leading `%d/` or `$CREDENTIALS_DIRECTORY/` replaced by
/// systemd's credentials directory.
fn credential_path(
    key: &'static str,
    path: &Path,
    credentials: Option<&Path>,
) -> Result<PathBuf, (&'static str, String)> {
    let text = path.to_string_lossy();
    let rest = text
        .strip_prefix("%d/")
        .or_else(|| text.strip_prefix("$CREDENTIALS_DIRECTORY/"));
    match (rest, credentials) {
        (None, _) => Ok(path.to_owned()),
        (Some(name), Some(dir)) => Ok(dir.join(name)),
        (Some(_), None) => Err((
            key,
            format!(
                "{text} names systemd's credentials directory, but ${CREDENTIALS_VARIABLE} is not set \
                 (add LoadCredential= to the unit)"
            ),
        )),
    }
}

/// Refuses a file that holds secrets and that every user can read (`mode`
/// has the "others may read" bit). Group-readable is fine: the package
/// installs the file `root:broadcast-agent 0640`.
fn check_exposure(path: &Path, raw: &str, mode: u32) -> Result<(), ConfigError> {
    if mode & 0o004 == 0 {
        return Ok(());
    }
    let keys = inline_secrets(raw);
    if keys.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Exposed {
        path: path.to_owned(),
        mode: mode & 0o7777,
        keys: keys.join(", "),
    })
}

/// The secret keys the file itself sets to a non-empty value.
fn inline_secrets(raw: &str) -> Vec<String> {
    let Ok(table) = raw.parse::<toml::Table>() else {
        return Vec::new();
    };
    SECRET_KEYS
        .iter()
        .filter(|(section, key)| {
            table
                .get(*section)
                .and_then(|s| s.get(*key))
                .and_then(toml::Value::as_str)
                .is_some_and(|v| !v.is_empty())
        })
        .map(|(section, key)| format!("{section}.{key}"))
        .collect()
}

/// Deserializes an optional path where `""` (the documented "unset") is `None`.
fn optional_path<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?
        .filter(|p| !p.is_empty())
        .map(PathBuf::from))
}

/// Shows an unset optional value as `""`, as the shipped file writes it.
fn none_as_empty<T: Serialize, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(serializer),
        None => serializer.serialize_str(""),
    }
}

/// The host of an `http(s)://host[:port]/...` URL, without brackets for IPv6.
fn url_host(url: &str) -> Option<&str> {
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

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_masked_toml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        load_env(toml, &[])
    }

    fn load_env(toml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_sources(
            Path::new("agent.toml"),
            toml,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn error(toml: &str) -> String {
        load(toml).expect_err("config must be rejected").to_string()
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
        let shipped = include_str!("../conf/agent.toml");
        load(shipped).expect("conf/agent.toml must load");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = error("[room]\nidd = 3\n");
        assert!(
            e.starts_with("agent.toml: room.idd: unknown key, expected one of `id`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_section_is_named() {
        let e = error("[rooom]\nid = 3\n");
        assert!(e.starts_with("agent.toml: rooom: unknown section"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = error("[room]\nid = \"abc\"\n");
        assert!(e.starts_with("agent.toml: room.id: invalid type"), "{e}");
    }

    #[test]
    fn syntax_error_is_one_line() {
        let e = error("garbage ==\n");
        assert!(!e.contains('\n') && e.contains("line 1"), "{e}");
    }

    #[test]
    fn port_out_of_range_is_named() {
        let e = error("[stream]\nvideo_port = 70000\n");
        assert!(e.starts_with("agent.toml: stream.video_port: "), "{e}");
        let e = error("[speaker]\nport = 0\n");
        assert!(e.contains("speaker.port"), "{e}");
    }

    #[test]
    fn room_zero_is_rejected() {
        assert!(error("[room]\nid = 0\n").contains("room.id: must not be 0"));
    }

    #[test]
    fn video_settings_are_checked() {
        let e = error("[video]\nsource = \"webcam\"\n");
        assert!(e.contains("video.source") && e.contains("v4l2"), "{e}");
        let e = error("[video]\nrotation = 45\n");
        assert!(e.contains("video.rotation"), "{e}");
        let e = error("[video]\nsource = \"libcamera\"\nrotation = 90\n");
        assert!(e.contains("video.rotation: rpicam-vid"), "{e}");
        let ok =
            load("[video]\nsource = \"test\"\n[microphone]\ndevice = \"test\"\n").expect("valid");
        assert_eq!(ok.video.source, VideoSource::Test);
    }

    #[test]
    fn gpio_settings_are_checked() {
        let e = error("[gpio]\nenabled = true\n");
        assert!(e.contains("gpio.enabled: no pin is set"), "{e}");
        let e = error("[gpio]\nenabled = true\nopen_pin = 17\nclose_pin = 17\n");
        assert!(e.contains("gpio.close_pin: GPIO 17 is already used"), "{e}");
        let e = error("[gpio]\nenabled = true\nled_pin = 60\n");
        assert!(e.contains("gpio.led_pin"), "{e}");
        load("[gpio]\nenabled = true\ntoggle_pin = 22\nled_pin = 23\n").expect("valid");
    }

    #[test]
    fn log_level_is_checked() {
        assert!(error("[log]\nlevel = \"loud\"\n").contains("log.level"));
    }

    #[test]
    fn bad_url_is_named() {
        let e = error("[janus]\nurl = \"ftp://x\"\n");
        assert!(e.contains("janus.url"), "{e}");
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
    fn unknown_environment_key_is_named() {
        let e = load_env("", &[("BROADCAST_AGENT__ROOM__BOGUS", "1")])
            .expect_err("rejected")
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write secret");
            path.display().to_string()
        };
        let api = file("api", "api-from-file\n");
        let pin = file("pin", "1234\r\n");
        let s = load(&format!(
            "[janus]\napi_secret_file = \"{api}\"\n[room]\npin_file = \"{pin}\"\n"
        ))
        .expect("valid");
        assert_eq!(
            s.janus.api_secret.as_ref().map(Secret::expose),
            Some("api-from-file")
        );
        assert_eq!(s.room.pin.as_ref().map(Secret::expose), Some("1234"));
        assert!(s.room.secret.is_none());
        // Shown as a path, never as the secret.
        let shown = s.to_masked_toml();
        assert!(!shown.contains("api-from-file") && shown.contains("api_secret_file"));

        let both = error(&format!(
            "[room]\nsecret = \"x\"\nsecret_file = \"{api}\"\n"
        ));
        assert!(
            both.contains("room.secret_file: set either room.secret or room.secret_file"),
            "{both}"
        );
        let missing = error("[room]\nadmin_key_file = \"/nonexistent/key\"\n");
        assert!(
            missing.contains("room.admin_key_file: cannot read /nonexistent/key"),
            "{missing}"
        );
        let empty = file("empty", "\n");
        let e = error(&format!("[janus]\ntoken_file = \"{empty}\"\n"));
        assert!(
            e.contains("janus.token_file") && e.contains("is empty"),
            "{e}"
        );
    }

    #[test]
    fn secret_files_can_live_in_systemd_credentials() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), "tok\n").expect("write");
        let credentials = dir.path().display().to_string();
        for path in ["%d/token", "$CREDENTIALS_DIRECTORY/token"] {
            let s = load_env(
                &format!("[janus]\ntoken_file = \"{path}\"\n"),
                &[("CREDENTIALS_DIRECTORY", &credentials)],
            )
            .expect("valid");
            assert_eq!(s.janus.token.as_ref().map(Secret::expose), Some("tok"));
        }
        let e = error("[janus]\ntoken_file = \"%d/token\"\n");
        assert!(
            e.contains("janus.token_file") && e.contains("$CREDENTIALS_DIRECTORY is not set"),
            "{e}"
        );
        // The unit can name the file through the environment, where systemd expands %d.
        let s = load_env(
            "",
            &[
                ("CREDENTIALS_DIRECTORY", &credentials),
                ("BROADCAST_AGENT__JANUS__TOKEN_FILE", "%d/token"),
            ],
        )
        .expect("valid");
        assert_eq!(s.janus.token.as_ref().map(Secret::expose), Some("tok"));
    }

    #[test]
    fn a_world_readable_file_with_secrets_is_refused() {
        let path = Path::new("/etc/broadcast-agent/agent.toml");
        let raw = "[janus]\ntoken = \"t\"\n[room]\nsecret = \"s\"\npin = \"\"\n";
        let e = check_exposure(path, raw, 0o100_644)
            .expect_err("refused")
            .to_string();
        assert!(
            e.starts_with(
                "/etc/broadcast-agent/agent.toml: holds secrets (janus.token, room.secret)"
            ),
            "{e}"
        );
        assert!(
            e.contains("mode 0644") && e.contains("chmod 640 /etc/broadcast-agent/agent.toml"),
            "{e}"
        );
        check_exposure(path, raw, 0o100_640).expect("group-readable is fine");
        check_exposure(path, "[room]\nid = 3\nsecret_file = \"/x\"\n", 0o100_644)
            .expect("no inline secret");
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
