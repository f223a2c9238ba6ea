//! The sections that run the agent as a service on the Pi: `[gpio]`
//! (buttons and LED), `[control]` (the local socket) and `[log]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
