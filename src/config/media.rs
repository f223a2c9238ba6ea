//! The media sections: `[stream]` (where the camera and microphone go),
//! `[speaker]`, `[video]`, `[microphone]` and `[recording]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use crate::h264::{self, Level};

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
    /// The mountpoint's port for the video's RTCP, both ways: the agent's
    /// sender reports go there, and from it Janus passes viewers' keyframe
    /// requests back to the Pi. 0: no RTCP (viewers wait for the next
    /// keyframe the camera makes on its own).
    pub video_rtcp_port: u16,
    /// A capture pipeline that sends nothing for this long has stalled and
    /// is restarted (`stall_timeout_ms`).
    #[serde(rename = "stall_timeout_ms", with = "duration::millis")]
    pub stall_timeout: Duration,
    /// A capture pipeline whose media Janus has not received for this long
    /// (wrong `host`, a firewall) is restarted and reported
    /// (`janus_media_timeout_ms`).
    #[serde(rename = "janus_media_timeout_ms", with = "duration::millis")]
    pub janus_media_timeout: Duration,
    /// Encrypt the camera and microphone RTP (SRTP, AES_CM_128_HMAC_SHA1_80)
    /// with a key made fresh for each mountpoint.
    pub srtp: bool,
    /// How the camera and microphone reach Janus.
    pub transport: Transport,
}

/// `stream.transport`: the uplink from the Pi to Janus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebRTC when Janus has the VideoRoom plugin and this machine has
    /// `webrtcbin` and libnice's elements; plain RTP otherwise.
    #[default]
    Auto,
    /// WebRTC only (a VideoRoom publisher, forwarded into the mountpoint):
    /// lost packets are sent again, the picture survives a lossy link.
    Webrtc,
    /// Plain RTP straight to the mountpoint's ports.
    Rtp,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            video_port: 8004,
            audio_port: 8005,
            video_rtcp_port: 8006,
            stall_timeout: Duration::from_millis(5000),
            janus_media_timeout: Duration::from_millis(10_000),
            srtp: false,
            transport: Transport::Auto,
        }
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
    /// Jitter buffer (`latency_ms`): how long a packet may be late and
    /// still be played.
    #[serde(rename = "latency_ms", with = "duration::millis")]
    pub latency: Duration,
    /// The sound card's buffer (`buffer_ms`, alsasink `buffer-time`).
    #[serde(rename = "buffer_ms", with = "duration::millis")]
    pub buffer: Duration,
    /// Packets of 20 ms the room holds per participant before mixing
    /// (AudioBridge `default_prebuffering`, set when the agent creates the
    /// room).
    pub room_prebuffering: u32,
}

impl Default for SpeakerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            device: "default".into(),
            port: 5000,
            host: String::new(),
            latency: Duration::from_millis(SpeakerSettings::LATENCY_MS),
            buffer: Duration::from_millis(SpeakerSettings::BUFFER_MS),
            room_prebuffering: SpeakerSettings::ROOM_PREBUFFERING,
        }
    }
}

impl SpeakerSettings {
    /// Default `latency_ms`: two 20 ms packets of jitter.
    pub const LATENCY_MS: u64 = 40;
    /// Default `buffer_ms`.
    pub const BUFFER_MS: u64 = 40;
    /// Default `room_prebuffering` (Janus's own default is 6).
    pub const ROOM_PREBUFFERING: u32 = 2;
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
    /// GStreamer's `libcamerasrc` into the encoder the agent runs
    /// (Bookworm): keyframes on request, a bitrate that follows the link.
    Libcamerasrc,
    /// A USB webcam through V4L2, encoded on the Pi.
    V4l2,
}

impl VideoSource {
    /// Every source, by its config name.
    const ALL: [(&'static str, Self); 7] = [
        ("none", Self::None),
        ("test", Self::Test),
        ("rpicamsrc", Self::Rpicamsrc),
        ("raspivid", Self::Raspivid),
        ("libcamera", Self::Libcamera),
        ("libcamerasrc", Self::Libcamerasrc),
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

/// Clockwise rotation of the picture (`[video] rotation`): 0, 90, 180 or
/// 270 degrees, an integer in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum Rotation {
    /// Upright.
    Deg0,
    /// A quarter turn clockwise.
    Deg90,
    /// Upside down.
    Deg180,
    /// Three quarter turns clockwise (a quarter turn counter-clockwise).
    Deg270,
}

impl Rotation {
    /// The angle in degrees, as the camera programs and elements take it.
    pub fn degrees(self) -> u32 {
        match self {
            Self::Deg0 => 0,
            Self::Deg90 => 90,
            Self::Deg180 => 180,
            Self::Deg270 => 270,
        }
    }

    /// A quarter turn either way: width and height swap.
    pub fn is_quarter_turn(self) -> bool {
        matches!(self, Self::Deg90 | Self::Deg270)
    }
}

impl TryFrom<u32> for Rotation {
    type Error = String;

    fn try_from(degrees: u32) -> Result<Self, String> {
        [Self::Deg0, Self::Deg90, Self::Deg180, Self::Deg270]
            .into_iter()
            .find(|r| r.degrees() == degrees)
            .ok_or_else(|| format!("{degrees} is not one of 0, 90, 180, 270"))
    }
}

impl From<Rotation> for u32 {
    fn from(rotation: Rotation) -> u32 {
        rotation.degrees()
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
    /// H.264 bitrate in kbit/s: the most, with `adaptive_bitrate`.
    pub bitrate_kbps: u32,
    /// Follow what the link carries (the in-process encoders), between
    /// `min_bitrate_kbps` and `bitrate_kbps`; false keeps `bitrate_kbps`.
    pub adaptive_bitrate: bool,
    /// The least the adaptive bitrate goes to, kbit/s; unset:
    /// [`VideoSettings::DEFAULT_MIN_BITRATE_KBPS`], or `bitrate_kbps` when
    /// that is lower.
    pub min_bitrate_kbps: Option<u32>,
    /// Clockwise rotation.
    pub rotation: Rotation,
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
            adaptive_bitrate: true,
            min_bitrate_kbps: None,
            rotation: Rotation::Deg0,
            hflip: false,
            vflip: false,
        }
    }
}

impl VideoSettings {
    /// The floor of the adaptive bitrate when `min_bitrate_kbps` is unset.
    pub const DEFAULT_MIN_BITRATE_KBPS: u32 = 300;

    /// The floor of the adaptive bitrate, kbit/s.
    pub fn min_bitrate(&self) -> u32 {
        self.min_bitrate_kbps
            .unwrap_or(Self::DEFAULT_MIN_BITRATE_KBPS)
            .min(self.bitrate_kbps)
    }

    /// The H.264 level the source writes in its SPS (and is told to, where
    /// it can be told); the mountpoint advertises it. At least 4, which the
    /// Pi's hardware encoder writes by default, whichever encoder runs.
    ///
    /// - `rpicamsrc` always asks the encoder for level 4.
    /// - `raspivid` and `rpicam-vid` on the hardware encoder accept 4, 4.1
    ///   and 4.2: a frame larger than 4.2 allows is still encoded, labelled
    ///   4.2. `rpicam-vid` on a Pi 5 (software) is told the same, so the SDP
    ///   does not depend on the model; only sizes beyond the hardware (a Pi
    ///   5 alone encodes them) get the level they need.
    /// - `v4l2h264enc` and `x264enc` get it in their output caps.
    pub fn h264_level(&self) -> Level {
        let needed = Level::fitting(self.width, self.height, self.framerate, self.bitrate_kbps)
            .unwrap_or(Level::MAX)
            .max(Level::L4);
        match self.source {
            VideoSource::Rpicamsrc => Level::L4,
            VideoSource::Raspivid => needed.min(Level::L4_2),
            VideoSource::Libcamera if self.hardware_size() => needed.min(Level::L4_2),
            VideoSource::Libcamera
            | VideoSource::Libcamerasrc
            | VideoSource::V4l2
            | VideoSource::Test
            | VideoSource::None => needed,
        }
    }

    /// Macroblocks per second.
    pub fn macroblock_rate(&self) -> u64 {
        h264::macroblock_rate(self.width, self.height, self.framerate)
    }

    /// Whether the Pi's hardware encoder takes frames of this size.
    pub fn hardware_size(&self) -> bool {
        h264::hardware_size(self.width, self.height)
    }

    /// The key (`video.width`, else `video.height`) beyond `max_width` x
    /// `max_height`, if either is.
    pub fn larger_than(&self, max_width: u32, max_height: u32) -> Option<&'static str> {
        if self.width > max_width {
            Some("video.width")
        } else if self.height > max_height {
            Some("video.height")
        } else {
            None
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
    /// Cancel the speaker's sound from the microphone (`echo_cancel`);
    /// unset: on when the speaker is enabled. See [`crate::config::Settings::echo_cancel`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_cancel: Option<bool>,
    /// Suppress steady background noise (fans, hum).
    pub noise_suppression: bool,
    /// Adjust the level automatically (adaptive digital gain).
    pub gain_control: bool,
    /// How much later than the speaker's own account (`echo_delay_ms`) its
    /// sound reaches the microphone: the echo canceller's reference is
    /// shifted by this much. The canceller finds echoes that arrive a few
    /// to about 45 ms after the shifted reference (measured). Default 0.
    #[serde(rename = "echo_delay_ms", with = "duration::millis")]
    pub echo_delay: Duration,
    /// Whether the shift follows the echo as the microphone hears it
    /// (starting from `echo_delay_ms`): measured every second by
    /// correlating what is played with what is heard. Default true.
    pub echo_delay_auto: bool,
}

impl Default for MicrophoneSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            device: "default".into(),
            bitrate_kbps: 32,
            echo_cancel: None,
            noise_suppression: true,
            gain_control: true,
            echo_delay: Duration::ZERO,
            echo_delay_auto: true,
        }
    }
}

impl MicrophoneSettings {
    /// The `device` value that selects a test tone instead of ALSA.
    pub const TEST_DEVICE: &'static str = "test";

    /// The longest `echo_delay_ms`: the speaker pipeline's segment is moved
    /// by it, and nobody's echo path is longer.
    pub const ECHO_DELAY_MAX: Duration = Duration::from_millis(500);

    /// Whether any voice processing (`webrtcdsp`) runs, given whether echo
    /// is cancelled.
    pub fn processes(&self, echo_cancel: bool) -> bool {
        echo_cancel || self.noise_suppression || self.gain_control
    }
}

impl super::Settings {
    /// Whether the microphone cancels what the speaker plays:
    /// `microphone.echo_cancel`, by default whether the speaker is enabled.
    pub fn echo_cancel(&self) -> bool {
        self.microphone.echo_cancel.unwrap_or(self.speaker.enabled)
    }
}

/// `[recording]`: camera and microphone written on the Pi as they are
/// sent, into segmented Matroska files within a disk budget; and, with
/// `room`, the whole room recorded by Janus on its own host.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingSettings {
    /// Record at all (while the room is open).
    pub enabled: bool,
    /// Where the segments go; created when missing.
    pub dir: PathBuf,
    /// Length of one segment file, cut at the next keyframe (`segment_s`).
    #[serde(rename = "segment_s", with = "duration::seconds")]
    pub segment_length: Duration,
    /// Disk budget for all segments, in megabytes (10^6 bytes); the oldest
    /// are deleted to stay within it.
    pub max_total_mb: f64,
    /// Have Janus record the whole room (the AudioBridge's mix of everyone
    /// in it) into `room_dir`, on the Janus host.
    pub room: bool,
    /// The folder on the *Janus host* the room's recording goes to; Janus
    /// must be able to write it. Applies to rooms the agent creates.
    pub room_dir: PathBuf,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/var/lib/broadcast-agent/recordings"),
            segment_length: Duration::from_secs(300),
            max_total_mb: 1000.0,
            room: false,
            room_dir: PathBuf::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::error;

    #[test]
    fn rotation_is_one_of_four_angles() {
        for degrees in [0, 90, 180, 270] {
            let rotation = Rotation::try_from(degrees).expect("valid");
            assert_eq!(u32::from(rotation), degrees);
        }
        let e = error("[video]\nsource = \"test\"\nrotation = 45\n");
        assert_eq!(
            e,
            "agent.toml: video.rotation: 45 is not one of 0, 90, 180, 270"
        );
    }

    fn video(source: VideoSource, width: u32, height: u32) -> VideoSettings {
        VideoSettings {
            source,
            width,
            height,
            framerate: 30,
            bitrate_kbps: 8000,
            ..VideoSettings::default()
        }
    }

    #[test]
    fn every_source_sends_at_least_level_4() {
        for (name, source) in VideoSource::ALL {
            let level = video(source, 320, 240).h264_level();
            assert_eq!(level, Level::L4, "{name}");
        }
    }

    #[test]
    fn hardware_programs_stop_at_level_4_2() {
        let big = |source| video(source, 1920, 1920).h264_level().to_string();
        assert_eq!(big(VideoSource::Raspivid), "4.2");
        assert_eq!(big(VideoSource::Libcamera), "4.2");
        assert_eq!(big(VideoSource::Test), "5");
        assert_eq!(big(VideoSource::V4l2), "5");
        // rpicamsrc says 4 whatever it encodes.
        assert_eq!(big(VideoSource::Rpicamsrc), "4");
        // Beyond the hardware, rpicam-vid (a Pi 5) gets the level it needs.
        let wide = video(VideoSource::Libcamera, 2560, 1440);
        assert_eq!(wide.h264_level().to_string(), "5");
        assert_eq!(wide.macroblock_rate(), 160 * 90 * 30);
    }
}
