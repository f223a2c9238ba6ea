//! Integration with systemd: the logger (journald-aware) and sd-notify.
//!
//! When stderr is connected to journald (`JOURNAL_STREAM` set), each line
//! starts with its syslog priority (`<3>` error .. `<7>` trace) and carries no
//! timestamp, since journald adds its own. Otherwise lines are for a person
//! at a terminal: a timestamp, the level and the message.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The agent's logger.
struct Logger {
    journald: bool,
    level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level && is_ours(metadata.target())
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

/// Installs the logger. The level comes from `RUST_LOG` (a level name) when
/// set, else from `default`.
pub fn init_logging(default: LevelFilter) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    if log::set_boxed_logger(Box::new(Logger { journald, level })).is_ok() {
        log::set_max_level(level);
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
