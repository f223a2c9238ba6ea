//! The sections that run the agent as a service on the Pi: `[gpio]`
//! (buttons and LED), `[control]` (the local socket) and `[log]`.

use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use serde::{Deserialize, Serialize};

use super::duration;

/// `[gpio]`: buttons that open and close the room, and a status LED. Pins
/// are BCM GPIO numbers (0 is GPIO 0); a pin left out is not wired.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpioSettings {
    /// Use the GPIO header at all.
    pub enabled: bool,
    /// Button that opens the room.
    pub open_pin: Option<u8>,
    /// Button that closes the room.
    pub close_pin: Option<u8>,
    /// One button that opens a closed room and closes an open one.
    pub toggle_pin: Option<u8>,
    /// LED: off = closed, blinking = opening or recovering, on = live.
    pub led_pin: Option<u8>,
    /// Buttons connect the pin to ground (internal pull-up); false: to 3.3 V (pull-down).
    pub active_low: bool,
    /// Edges closer together than this are contact bounce, not presses
    /// (`debounce_ms`).
    #[serde(rename = "debounce_ms", with = "duration::millis")]
    pub debounce: Duration,
    /// Simulate the pins instead of using the header: the path of a Unix
    /// datagram socket that receives `"<pin> <0|1>"` level changes. For tests
    /// and demos on machines without GPIO.
    pub simulate: String,
}

impl Default for GpioSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            open_pin: None,
            close_pin: None,
            toggle_pin: None,
            led_pin: None,
            active_low: true,
            debounce: Duration::from_millis(50),
            simulate: String::new(),
        }
    }
}

/// `[control]`: the local control socket.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSettings {
    /// Unix socket path; empty disables it.
    pub socket: PathBuf,
    /// Where the owner's last open/close is kept across restarts (the
    /// unit's `StateDirectory=`).
    pub state_dir: PathBuf,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/broadcast-agent/control.sock"),
            state_dir: PathBuf::from("/var/lib/broadcast-agent"),
        }
    }
}

/// `[log]`: what is logged.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// The agent's messages at this level and above: `error`, `warn`,
    /// `info`, `debug`, `trace` (or `off`); `RUST_LOG` overrides it.
    #[serde(with = "level_name")]
    pub level: LevelFilter,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: LevelFilter::Info,
        }
    }
}

/// `log.level` as its lowercase name. The `log` crate's own serde impl reads
/// it (any case, and its error lists the names), but it is handed a plain
/// string: the `config` crate matches enum variants by exact name, which
/// would refuse the documented lowercase `info`.
mod level_name {
    use log::LevelFilter;
    use serde::de::IntoDeserializer;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads a level name, e.g. `info`.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<LevelFilter, D::Error> {
        let name = String::deserialize(deserializer)?;
        LevelFilter::deserialize(name.into_deserializer())
    }

    /// Writes the name as the shipped file does, e.g. `info`.
    pub(super) fn serialize<S: Serializer>(
        level: &LevelFilter,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&level.as_str().to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{load, load_env, refused, refused_naming};

    #[test]
    fn log_level_is_a_level_filter_in_any_case() {
        assert_eq!(load("").expect("valid").log.level, LevelFilter::Info);
        let s = load("[log]\nlevel = \"debug\"\n").expect("valid");
        assert_eq!(s.log.level, LevelFilter::Debug);
        let s = load_env("", &[("BROADCAST_AGENT__LOG__LEVEL", "WARN")]).expect("valid");
        assert_eq!(s.log.level, LevelFilter::Warn);
        assert!(s.to_masked_toml().contains("level = \"warn\""));
    }

    #[test]
    fn unknown_log_level_is_named() {
        refused(
            "[log]\nlevel = \"loud\"\n",
            "log.level: unknown variant `loud`, expected one of",
        );
    }

    #[test]
    fn pins_are_optional_and_0_is_a_pin() {
        let s = load("[gpio]\nenabled = true\nopen_pin = 0\nled_pin = 23\n").expect("valid");
        assert_eq!(s.gpio.open_pin, Some(0));
        assert_eq!((s.gpio.close_pin, s.gpio.led_pin), (None, Some(23)));
        assert!(!s.to_masked_toml().contains("close_pin"));
    }

    #[test]
    fn pins_from_the_environment_are_parsed() {
        let s = load_env(
            "[gpio]\nenabled = true\n",
            &[("BROADCAST_AGENT__GPIO__TOGGLE_PIN", "22")],
        )
        .expect("valid");
        assert_eq!(s.gpio.toggle_pin, Some(22));
    }

    #[test]
    fn pin_out_of_range_is_named() {
        refused(
            "[gpio]\nenabled = true\nled_pin = 60\n",
            "gpio.led_pin: 60 is out of range 0..=53",
        );
        refused("[gpio]\nenabled = true\nled_pin = 300\n", "gpio.led_pin: ");
    }

    #[test]
    fn an_old_file_writing_0_for_unwired_pins_is_told_why() {
        refused_naming(
            "[gpio]\nenabled = true\nopen_pin = 0\nclose_pin = 0\ntoggle_pin = 22\n",
            "gpio.close_pin: GPIO 0 is already used by gpio.open_pin (0 is GPIO 0",
        );
    }

    #[test]
    fn debounce_is_a_duration_checked_in_milliseconds() {
        let s = load("[gpio]\ndebounce_ms = 20\n").expect("valid");
        assert_eq!(s.gpio.debounce, Duration::from_millis(20));
        refused(
            "[gpio]\nenabled = true\nled_pin = 23\ndebounce_ms = 2500\n",
            "gpio.debounce_ms: 2500 is out of range 0..=2000",
        );
    }
}
