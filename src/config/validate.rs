//! What types alone cannot check: ranges, ports, hosts, device names and
//! the rules between keys, each error naming its key.

use std::net::IpAddr;
use std::time::Duration;

use super::janus::url_host;
use super::{duration, MicrophoneSettings, Settings, VideoSettings, VideoSource, MAX_RELAYS};
use crate::h264;
use crate::secret::Secret;

/// The admin key in the project's `conf/janus`, which deploy/janus-conf.sh
/// replaces with a fresh one.
const SHIPPED_ADMIN_KEY: &str = "@ADMIN_KEY@";

impl Settings {
    /// Checks what types alone cannot; the error names the key.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        self.validate_janus()?;
        self.validate_room()?;
        self.validate_stream()?;
        self.validate_audio()?;
        self.validate_video()?;
        self.validate_gpio()?;
        self.validate_recording()?;
        self.validate_relays()?;
        self.validate_metrics()
    }

    fn validate_metrics(&self) -> Result<(), (&'static str, String)> {
        let metrics = &self.metrics;
        if !metrics.enabled() {
            return Ok(());
        }
        let file = &metrics.textfile;
        if !file.is_absolute() {
            return Err((
                "metrics.textfile",
                format!("{} is not an absolute path", file.display()),
            ));
        }
        // node exporter's textfile collector reads only *.prom.
        if file.extension().is_none_or(|e| e != "prom") {
            return Err((
                "metrics.textfile",
                format!(
                    "{} does not end in .prom (node exporter reads only *.prom files)",
                    file.display()
                ),
            ));
        }
        check_seconds("metrics.interval_s", metrics.interval, 1, 3600)
    }

    fn validate_janus(&self) -> Result<(), (&'static str, String)> {
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
        if self.stream.srtp && janus.url.starts_with("http://") && !is_loopback(janus.host()) {
            return Err((
                "stream.srtp",
                format!(
                    "needs an https:// janus.url (or Janus on this machine): over {:?} the SRTP keys would cross the network in clear",
                    janus.url
                ),
            ));
        }
        if let Some(ca) = &janus.ca_file {
            if !ca.as_os_str().is_empty() && !ca.is_file() {
                return Err(("janus.ca_file", format!("{} is not a file", ca.display())));
            }
        }
        check_millis(
            "janus.request_timeout_ms",
            janus.request_timeout,
            100,
            120_000,
        )
    }

    fn validate_room(&self) -> Result<(), (&'static str, String)> {
        let room = &self.room;
        if room.id == 0 {
            return Err((
                "room.id",
                "must not be 0 (Janus would pick a random id)".into(),
            ));
        }
        if room.admin_key.as_ref().map(Secret::expose) == Some(SHIPPED_ADMIN_KEY) {
            return Err((
                "room.admin_key",
                format!(
                    "{SHIPPED_ADMIN_KEY} is the placeholder of the project's conf/janus, which anybody \
                     can read: write Janus's configuration with deploy/janus-conf.sh, which makes a fresh key"
                ),
            ));
        }
        check_millis("room.check_interval_ms", room.check_interval, 100, 600_000)?;
        // A year at most: anything longer is a typo for 0 (never).
        let limits = [
            ("room.idle_timeout_s", room.idle_timeout),
            ("room.max_duration_s", room.max_duration),
        ];
        for (key, limit) in limits {
            check_seconds(key, limit.unwrap_or_default(), 0, 31_536_000)?;
        }
        Ok(())
    }

    fn validate_stream(&self) -> Result<(), (&'static str, String)> {
        let stream = &self.stream;
        check_host("stream.host", &stream.host)?;
        check_mountpoint_ports(
            [
                "stream.video_port",
                "stream.audio_port",
                "stream.video_rtcp_port",
            ],
            [stream.video_port, stream.audio_port, stream.video_rtcp_port],
        )?;
        check_millis(
            "stream.stall_timeout_ms",
            stream.stall_timeout,
            500,
            600_000,
        )?;
        check_millis(
            "stream.janus_media_timeout_ms",
            stream.janus_media_timeout,
            1000,
            3_600_000,
        )
    }

    /// `[[relay]]`: at most [`MAX_RELAYS`] edges, each a Janus of its own
    /// with a mountpoint's ports.
    fn validate_relays(&self) -> Result<(), (&'static str, String)> {
        if self.relays.len() > MAX_RELAYS {
            return Err((
                "relay",
                format!("{} edges; at most {MAX_RELAYS}", self.relays.len()),
            ));
        }
        let mut urls = vec![self.janus.url.trim_end_matches('/')];
        for (i, relay) in self.relays.iter().enumerate() {
            let url = relay.url.trim_end_matches('/');
            if url_host(url).is_none() {
                return Err((
                    "relay.url",
                    format!(
                        "relay {}: {url:?} is not an http:// or https:// URL with a host",
                        i + 1
                    ),
                ));
            }
            if urls.contains(&url) {
                return Err((
                    "relay.url",
                    format!("relay {}: {url} is the origin's or another edge's", i + 1),
                ));
            }
            urls.push(url);
            let ca = relay
                .ca_file
                .as_ref()
                .filter(|ca| !ca.as_os_str().is_empty());
            if let Some(ca) = ca.filter(|ca| !ca.is_file()) {
                return Err((
                    "relay.ca_file",
                    format!("relay {}: {} is not a file", i + 1, ca.display()),
                ));
            }
            check_mountpoint_ports(
                [
                    "relay.video_port",
                    "relay.audio_port",
                    "relay.video_rtcp_port",
                ],
                [relay.video_port, relay.audio_port, relay.video_rtcp_port],
            )?;
            check_millis(
                "relay.request_timeout_ms",
                relay.request_timeout,
                100,
                120_000,
            )?;
        }
        Ok(())
    }

    /// `[speaker]` and `[microphone]`.
    fn validate_audio(&self) -> Result<(), (&'static str, String)> {
        check_host("speaker.host", &self.speaker.host)?;
        check_port("speaker.port", self.speaker.port)?;
        check_millis("speaker.latency_ms", self.speaker.latency, 10, 5000)?;
        check_millis("speaker.buffer_ms", self.speaker.buffer, 20, 1000)?;
        // Janus takes at most 50 and silently uses its default beyond; with
        // 0 the room plays nothing at all (tests/talkback.rs).
        check_range(
            "speaker.room_prebuffering",
            self.speaker.room_prebuffering.into(),
            1,
            50,
        )?;
        check_device("speaker.device", &self.speaker.device)?;
        check_device("microphone.device", &self.microphone.device)?;
        check_millis(
            "microphone.echo_delay_ms",
            self.microphone.echo_delay,
            0,
            duration::as_millis(MicrophoneSettings::ECHO_DELAY_MAX),
        )?;
        check_range(
            "microphone.bitrate_kbps",
            self.microphone.bitrate_kbps.into(),
            6,
            510,
        )
    }

    /// `[recording] room`: a folder on the Janus host, so only its form is checked.
    fn validate_room_recording(&self) -> Result<(), (&'static str, String)> {
        let recording = &self.recording;
        if !recording.room {
            return Ok(());
        }
        if recording.room_dir.as_os_str().is_empty() {
            return Err((
                "recording.room_dir",
                "must be set when recording.room = true: a folder on the Janus host that Janus can write".into(),
            ));
        }
        if !recording.room_dir.is_absolute() {
            return Err((
                "recording.room_dir",
                format!("{} is not an absolute path", recording.room_dir.display()),
            ));
        }
        Ok(())
    }

    fn validate_recording(&self) -> Result<(), (&'static str, String)> {
        self.validate_room_recording()?;
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
        check_seconds("recording.segment_s", recording.segment_length, 2, 86_400)?;
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
        let wired: Vec<(&'static str, u8)> = [
            ("gpio.open_pin", gpio.open_pin),
            ("gpio.close_pin", gpio.close_pin),
            ("gpio.toggle_pin", gpio.toggle_pin),
            ("gpio.led_pin", gpio.led_pin),
        ]
        .into_iter()
        .filter_map(|(key, pin)| Some((key, pin?)))
        .collect();
        if wired.is_empty() {
            return Err((
                "gpio.enabled",
                "no pin is set (open_pin, close_pin, toggle_pin, led_pin)".into(),
            ));
        }
        for (i, &(key, pin)) in wired.iter().enumerate() {
            check_range(key, pin.into(), 0, 53)?;
            if let Some((other, _)) = wired[..i].iter().find(|(_, used)| *used == pin) {
                // Files from before pins were optional wrote 0 for "not wired".
                let hint = if pin == 0 {
                    " (0 is GPIO 0: leave out a pin that is not wired)"
                } else {
                    ""
                };
                return Err((key, format!("GPIO {pin} is already used by {other}{hint}")));
            }
        }
        check_millis("gpio.debounce_ms", gpio.debounce, 0, 2000)
    }

    fn validate_video(&self) -> Result<(), (&'static str, String)> {
        let video = &self.video;
        check_range("video.width", video.width.into(), 16, 4096)?;
        check_range("video.height", video.height.into(), 16, 4096)?;
        check_range("video.framerate", video.framerate.into(), 1, 120)?;
        check_range("video.bitrate_kbps", video.bitrate_kbps.into(), 50, 50_000)?;
        match video.min_bitrate_kbps {
            Some(0) => {
                return Err((
                    "video.min_bitrate_kbps",
                    "0: the floor of the adaptive bitrate must be more than 0".into(),
                ))
            }
            Some(min) if min > video.bitrate_kbps => {
                return Err((
                    "video.min_bitrate_kbps",
                    format!(
                        "{min} is more than video.bitrate_kbps ({})",
                        video.bitrate_kbps
                    ),
                ))
            }
            _ => {}
        }
        if video.source == VideoSource::Libcamera && video.rotation.is_quarter_turn() {
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
        check_camera_encoder(video)
    }
}

/// The Pi's hardware H.264 encoder's limits where the source always uses it
/// (`rpicamsrc`, `raspivid`); `rpicam-vid` and `v4l2` depend on the model
/// and are checked when they start.
fn check_camera_encoder(video: &VideoSettings) -> Result<(), (&'static str, String)> {
    let size = format!("{}x{}", video.width, video.height);
    match video.source {
        VideoSource::Rpicamsrc => {
            // Its H.264 caps stop at 1920x1080, its `bitrate` property at
            // 25000000 (a larger value aborts the daemon).
            if let Some(key) = video.larger_than(1920, 1080) {
                return Err((
                    key,
                    format!("{size} is larger than rpicamsrc encodes (1920x1080)"),
                ));
            }
            if video.bitrate_kbps > 25_000 {
                return Err((
                    "video.bitrate_kbps",
                    format!(
                        "{} is more than rpicamsrc takes (25000)",
                        video.bitrate_kbps
                    ),
                ));
            }
        }
        VideoSource::Raspivid => {
            let max = h264::HARDWARE_MAX_SIDE;
            if let Some(key) = video.larger_than(max, max) {
                return Err((
                    key,
                    format!(
                        "{size} is larger than the Pi's hardware H.264 encoder takes (1920x1920)"
                    ),
                ));
            }
            // raspivid refuses more than level 4.2 allows ("Too many macroblocks/s").
            let rate = video.macroblock_rate();
            if rate > 522_240 {
                return Err((
                    "video.framerate",
                    format!(
                        "{size} at {} fps is {rate} macroblocks/s, more than raspivid encodes (522240, level 4.2)",
                        video.framerate
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
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

/// [`check_range`] for a `*_ms` key: the message shows milliseconds, as written.
fn check_millis(
    key: &'static str,
    value: Duration,
    min: u64,
    max: u64,
) -> Result<(), (&'static str, String)> {
    check_range(key, duration::as_millis(value), min, max)
}

/// [`check_range`] for a `*_s` key: the message shows seconds, as written.
fn check_seconds(
    key: &'static str,
    value: Duration,
    min: u64,
    max: u64,
) -> Result<(), (&'static str, String)> {
    check_range(key, value.as_secs(), min, max)
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

/// Whether `host` is this machine: `localhost` or a loopback address.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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

/// A mountpoint's video, audio and video RTCP ports (`keys` in that
/// order): set, video and audio apart, RTCP (0: none) apart from both.
fn check_mountpoint_ports(
    keys: [&'static str; 3],
    [video, audio, rtcp]: [u16; 3],
) -> Result<(), (&'static str, String)> {
    check_port(keys[0], video)?;
    check_port(keys[1], audio)?;
    if video == audio {
        return Err((keys[1], format!("must differ from {}", keys[0])));
    }
    if rtcp != 0 && [video, audio].contains(&rtcp) {
        return Err((
            keys[2],
            format!(
                "must differ from {} and {} (0 turns it off)",
                keys[0], keys[1]
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error, load, refused, refused_naming};

    #[test]
    fn port_out_of_range_is_named() {
        refused("[stream]\nvideo_port = 70000\n", "stream.video_port: ");
        refused_naming("[speaker]\nport = 0\n", "speaker.port");
        refused_naming(
            "[stream]\nvideo_rtcp_port = 8005\n",
            "stream.video_rtcp_port",
        );
        assert!(load("[stream]\nvideo_rtcp_port = 0\n").is_ok());
    }

    #[test]
    fn relays_are_refused_naming_the_key() {
        refused(
            "[[relay]]\nurl = \"ftp://edge\"\n",
            "relay.url: relay 1: \"ftp://edge\" is not",
        );
        refused(
            "[[relay]]\nurl = \"http://127.0.0.1:8088/janus\"\n",
            "relay.url: relay 1: http://127.0.0.1:8088/janus is the origin's",
        );
        refused(
            "[[relay]]\nurl = \"http://edge/janus\"\naudio_port = 8004\n",
            "relay.audio_port: must differ from relay.video_port",
        );
        let nine = "[[relay]]\nurl = \"http://edge/janus\"\n".repeat(9);
        refused(&nine, "relay: 9 edges; at most 8");
        let s = load("[[relay]]\nurl = \"http://edge/janus\"\nca_file = \"\"\n").expect("valid");
        assert_eq!(s.relays[0].host(), "edge");
    }

    #[test]
    fn the_shipped_placeholder_is_no_admin_key() {
        refused(
            "[room]\nadmin_key = \"@ADMIN_KEY@\"\n",
            "room.admin_key: @ADMIN_KEY@ is the placeholder",
        );
    }

    #[test]
    fn room_zero_is_rejected() {
        assert!(error("[room]\nid = 0\n").contains("room.id: must not be 0"));
    }

    #[test]
    fn video_settings_are_checked() {
        let e = error("[video]\nsource = \"webcam\"\n");
        assert!(e.contains("video.source") && e.contains("v4l2"), "{e}");
        refused_naming("[video]\nrotation = 45\n", "video.rotation");
        refused_naming(
            "[video]\nsource = \"libcamera\"\nrotation = 90\n",
            "video.rotation: rpicam-vid",
        );
        let ok =
            load("[video]\nsource = \"test\"\n[microphone]\ndevice = \"test\"\n").expect("valid");
        assert_eq!(ok.video.source, VideoSource::Test);
    }

    #[test]
    fn the_floor_of_the_adaptive_bitrate_is_checked() {
        let e = error("[video]\nbitrate_kbps = 1000\nmin_bitrate_kbps = 1500\n");
        assert!(
            e.ends_with("video.min_bitrate_kbps: 1500 is more than video.bitrate_kbps (1000)"),
            "{e}"
        );
        refused_naming(
            "[video]\nmin_bitrate_kbps = 0\n",
            "video.min_bitrate_kbps: 0",
        );
        let s = load(
            "[video]\nsource = \"test\"\nbitrate_kbps = 200\n[microphone]\ndevice = \"test\"\n",
        )
        .expect("valid");
        assert_eq!(s.video.min_bitrate(), 200, "unset: never above the bitrate");
        assert!(s.video.adaptive_bitrate, "adaptive by default");
        let s = load("[video]\nsource = \"test\"\nmin_bitrate_kbps = 500\nadaptive_bitrate = false\n[microphone]\ndevice = \"test\"\n")
            .expect("valid");
        assert_eq!(
            (s.video.min_bitrate(), s.video.adaptive_bitrate),
            (500, false)
        );
    }

    #[test]
    fn hardware_encoder_limits_are_checked_per_source() {
        let e = error("[video]\nsource = \"rpicamsrc\"\nbitrate_kbps = 30000\n");
        assert!(
            e.ends_with("video.bitrate_kbps: 30000 is more than rpicamsrc takes (25000)"),
            "{e}"
        );
        let e = error("[video]\nsource = \"rpicamsrc\"\nwidth = 1920\nheight = 1440\n");
        assert!(
            e.contains("video.height: 1920x1440 is larger than rpicamsrc"),
            "{e}"
        );
        let e = error("[video]\nsource = \"raspivid\"\nwidth = 2560\nheight = 1440\n");
        assert!(
            e.contains("video.width: 2560x1440 is larger than the Pi's hardware"),
            "{e}"
        );
        let e =
            error("[video]\nsource = \"raspivid\"\nwidth = 1920\nheight = 1080\nframerate = 90\n");
        assert!(
            e.contains("video.framerate: 1920x1080 at 90 fps is 734400 macroblocks/s"),
            "{e}"
        );
        // What the hardware takes passes; the software encoders take more.
        let ok = "[microphone]\ndevice = \"test\"\n[video]\n";
        load(&format!(
            "{ok}source = \"rpicamsrc\"\nwidth = 1920\nheight = 1080\nbitrate_kbps = 25000\n"
        ))
        .expect("rpicamsrc at its limits");
        load(&format!(
            "{ok}source = \"raspivid\"\nwidth = 1920\nheight = 1920\nbitrate_kbps = 50000\n"
        ))
        .expect("raspivid at its limits");
        load(&format!(
            "{ok}source = \"test\"\nwidth = 2560\nheight = 1440\nbitrate_kbps = 50000\n"
        ))
        .expect("x264 has no such limits");
    }

    #[test]
    fn gpio_settings_are_checked() {
        refused_naming("[gpio]\nenabled = true\n", "gpio.enabled: no pin is set");
        refused_naming(
            "[gpio]\nenabled = true\nopen_pin = 17\nclose_pin = 17\n",
            "gpio.close_pin: GPIO 17 is already used",
        );
        refused_naming("[gpio]\nenabled = true\nled_pin = 60\n", "gpio.led_pin");
        load("[gpio]\nenabled = true\ntoggle_pin = 22\nled_pin = 23\n").expect("valid");
    }

    #[test]
    fn durations_are_checked_in_the_unit_of_their_key() {
        let e = error("[speaker]\nlatency_ms = 1\n");
        assert_eq!(
            e,
            "agent.toml: speaker.latency_ms: 1 is out of range 10..=5000"
        );
        refused(
            "[janus]\nrequest_timeout_ms = 120001\n",
            "janus.request_timeout_ms: 120001 is out of range",
        );
        refused_naming(
            "[stream]\nstall_timeout_ms = 499\n",
            "stream.stall_timeout_ms: 499 is out",
        );
        refused_naming(
            "[room]\nidle_timeout_s = 31536001\n",
            "room.idle_timeout_s: 31536001 is out",
        );
        refused_naming(
            "[recording]\nenabled = true\nsegment_s = 1\n",
            "recording.segment_s: 1 is out of range 2..=86400",
        );
        refused_naming(
            "[microphone]\necho_delay_ms = 501\n",
            "microphone.echo_delay_ms: 501 is out of range 0..=500",
        );
    }

    #[test]
    fn the_room_recording_needs_an_absolute_folder_on_the_janus_host() {
        refused_naming(
            "[recording]\nroom = true\n",
            "recording.room_dir: must be set when recording.room = true",
        );
        refused_naming(
            "[recording]\nroom = true\nroom_dir = \"rec\"\n",
            "recording.room_dir: rec is not an absolute path",
        );
        load("[recording]\nroom = true\nroom_dir = \"/var/lib/janus/rooms\"\n").expect("valid");
    }

    #[test]
    fn talk_back_latency_keys_are_checked() {
        refused_naming(
            "[speaker]\nbuffer_ms = 10\n",
            "speaker.buffer_ms: 10 is out of range 20..=1000",
        );
        refused_naming(
            "[speaker]\nroom_prebuffering = 51\n",
            "speaker.room_prebuffering: 51 is out of range 1..=50",
        );
        let s = load("[speaker]\nenabled = false\n").expect("valid");
        assert!(!s.echo_cancel(), "no speaker, nothing to cancel");
        let s = load("[microphone]\necho_cancel = false\n").expect("valid");
        assert!(!s.echo_cancel());
        assert!(
            load("").expect("valid").echo_cancel(),
            "on with the speaker"
        );
    }

    #[test]
    fn a_negative_duration_is_named() {
        refused(
            "[room]\ncheck_interval_ms = -1\n",
            "room.check_interval_ms: ",
        );
    }

    #[test]
    fn srtp_keys_never_cross_the_network_in_clear() {
        let e = error("[janus]\nurl = \"http://192.0.2.1:8088/janus\"\n[stream]\nsrtp = true\n");
        assert!(
            e.starts_with("agent.toml: stream.srtp: needs an https:// janus.url"),
            "{e}"
        );
        for url in [
            "https://192.0.2.1/janus",
            "http://127.0.0.1:8088/janus",
            "http://[::1]:8088/janus",
            "http://localhost:8088/janus",
        ] {
            load(&format!(
                "[janus]\nurl = \"{url}\"\n[stream]\nsrtp = true\n"
            ))
            .expect(url);
        }
    }

    #[test]
    fn bad_url_is_named() {
        refused_naming("[janus]\nurl = \"ftp://x\"\n", "janus.url");
    }
}
