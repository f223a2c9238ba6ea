//! What types alone cannot check: ranges, ports, hosts, device names and
//! the rules between keys, each error naming its key.

use std::net::IpAddr;

use super::janus::url_host;
use super::{Settings, VideoSettings, VideoSource};
use crate::h264;

impl Settings {
    /// Checks what types alone cannot; the error names the key.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error, load};

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
}
