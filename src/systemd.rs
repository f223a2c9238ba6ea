//! Integration with systemd: the logger (journald-aware) and sd-notify
//! (READY, STATUS, WATCHDOG, RELOADING, STOPPING). Without `NOTIFY_SOCKET`
//! the notifications are no-ops.
//!
//! When stderr is connected to journald (`JOURNAL_STREAM` set), each line
//! starts with its syslog priority (`<3>` error .. `<7>` trace) and carries no
//! timestamp, since journald adds its own. Otherwise lines are for a person
//! at a terminal: a timestamp, the level and the message.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use sd_notify::NotifyState;

use crate::room::RoomHandle;
use crate::status::StatusSource;

/// How often STATUS is recomputed (and sent when it changed).
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// The agent's logger.
struct Logger {
    journald: bool,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level() && is_ours(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if self.journald {
            format!("<{}>{}\n", syslog_priority(record.level()), record.args())
        } else {
            format!("{} {:<5} {}\n", timestamp(), record.level(), record.args())
        };
        // A closed stderr must not take the agent down.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Only the agent's own messages: dependencies log at debug about their internals.
fn is_ours(target: &str) -> bool {
    target.starts_with(env!("CARGO_CRATE_NAME"))
}

fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// UTC time of day with milliseconds: enough to read a log at a terminal.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

/// Installs the logger at `default` level (or `RUST_LOG`'s, when set).
pub fn init_logging(default: LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_boxed_logger(Box::new(Logger { journald })).is_ok() {
        set_log_level(default);
    }
}

/// Changes the level (after the config is loaded); `RUST_LOG` still wins.
pub fn set_log_level(level: LevelFilter) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(level);
    log::set_max_level(level);
}

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log::debug!("sd_notify: {e}");
    }
}

/// Tells systemd the agent is up: config loaded, every task started.
/// (Not waiting for Janus, which may well be down at boot.)
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// Tells systemd the agent is re-reading its configuration (SIGHUP).
pub fn reloading() {
    let now = sd_notify::NotifyState::monotonic_usec_now();
    match now {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the agent is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// The watchdog period systemd set (`WatchdogSec`), if it watches the agent.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Keeps systemd informed while the agent runs: `STATUS=` whenever the status
/// line changes, and `WATCHDOG=1` at half of `WATCHDOG_USEC`, but only when
/// the reconciler's loop answers — a hung loop (or a pass past its
/// deadline) stops the pings, and systemd restarts the agent. A pass waiting
/// on a slow Janus does not: the loop answers while requests are in flight.
pub async fn keep_informed(status: StatusSource, room: RoomHandle) {
    let watchdog = watchdog_period().map(|period| period / 2);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut last_line = String::new();
    loop {
        tokio::select! {
            _ = status_tick.tick() => {
                let line = status.snapshot().line();
                if line != last_line {
                    notify(&[NotifyState::Status(&line)]);
                    last_line = line;
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let within = watchdog.unwrap_or_default() / 2;
                if room.is_responsive(within).await {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    log::warn!("the room reconciler does not answer: not feeding the watchdog");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(Level::Error), 3);
        assert_eq!(syslog_priority(Level::Warn), 4);
        assert_eq!(syslog_priority(Level::Info), 6);
        assert_eq!(syslog_priority(Level::Debug), 7);
    }

    #[test]
    fn only_our_targets() {
        assert!(is_ours("broadcast_agent::room"));
        assert!(!is_ours("ureq::unversioned"));
    }
}
