//! Integration with systemd: the logger (journald-aware) and sd-notify
//! (READY, STATUS, WATCHDOG, RELOADING, STOPPING). Without `NOTIFY_SOCKET`
//! the notifications are no-ops.
//!
//! When stderr is connected to journald (`JOURNAL_STREAM` set), each line
//! starts with its syslog priority (`<3>` error .. `<7>` trace) and carries no
//! timestamp, since journald adds its own. Otherwise lines are for a person
//! at a terminal: a timestamp, the level and the message.
//!
//! Only the agent's own messages are logged, at `log.level`, unless
//! `RUST_LOG` says otherwise in env_logger's syntax (parsed by `env_filter`):
//! a bare level replaces `log.level`, `target=level` sets a module of the
//! agent or names a library to hear from, and `/text` keeps only messages
//! containing the text.

use std::io::Write;
use std::sync::{Once, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use env_filter::{Builder, Filter, ParseError};
use log::{Level, LevelFilter, Log, Metadata, Record};
use sd_notify::NotifyState;

use crate::room::RoomHandle;
use crate::status::StatusSource;

/// How often STATUS is recomputed (and sent when it changed).
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// The agent's logger.
struct Logger {
    journald: bool,
    filter: RwLock<LogFilter>,
}

/// The logger, once [`init_logging`] has installed it.
static LOGGER: OnceLock<Logger> = OnceLock::new();

impl Logger {
    fn filter(&self) -> RwLockReadGuard<'_, LogFilter> {
        // panic = "abort": nothing can poison the lock; and a filter is always whole.
        self.filter.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter().enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter().matches(record) {
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

/// What is logged: the agent's targets through one filter, libraries'
/// through another that lets through only the targets `RUST_LOG` names.
struct LogFilter {
    ours: Filter,
    others: Filter,
}

impl LogFilter {
    /// The agent's messages at `level`, nothing from libraries.
    fn level(level: LevelFilter) -> Self {
        Self {
            ours: Builder::new().filter_level(level).build(),
            others: Builder::new().filter_level(LevelFilter::Off).build(),
        }
    }

    /// `level`, then `rust_log`'s directives on top: its bare level (if any)
    /// replaces `level` for the agent and does not reach libraries.
    fn parse(level: LevelFilter, rust_log: &str) -> Result<Self, ParseError> {
        let mut ours = Builder::new();
        ours.filter_level(level).try_parse(rust_log)?;
        let mut others = Builder::new();
        others.try_parse(rust_log)?.filter_level(LevelFilter::Off);
        Ok(Self {
            ours: ours.build(),
            others: others.build(),
        })
    }

    /// [`Self::parse`] of `RUST_LOG` when set; a directive it cannot parse
    /// leaves `level` alone in force, with the reason to warn about.
    fn from_env(level: LevelFilter, rust_log: Option<&str>) -> (Self, Option<String>) {
        match rust_log.map(|spec| Self::parse(level, spec)) {
            None => (Self::level(level), None),
            Some(Ok(filter)) => (filter, None),
            Some(Err(e)) => (
                Self::level(level),
                Some(format!("RUST_LOG: {e}; ignored, log.level applies")),
            ),
        }
    }

    fn for_target(&self, target: &str) -> &Filter {
        if is_ours(target) {
            &self.ours
        } else {
            &self.others
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.for_target(metadata.target()).enabled(metadata)
    }

    fn matches(&self, record: &Record<'_>) -> bool {
        self.for_target(record.target()).matches(record)
    }

    /// The most verbose level any target gets, for [`log::set_max_level`].
    fn max_level(&self) -> LevelFilter {
        self.ours.filter().max(self.others.filter())
    }
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

/// Installs the logger: the agent's messages at `default` level, with
/// `RUST_LOG` on top when set.
pub fn init_logging(default: LevelFilter) {
    let logger = LOGGER.get_or_init(|| Logger {
        journald: std::env::var_os("JOURNAL_STREAM").is_some(),
        filter: RwLock::new(LogFilter::level(default)),
    });
    if log::set_logger(logger).is_ok() {
        set_log_level(default);
    }
}

/// Changes the agent's level (once the config is loaded, and on reload);
/// `RUST_LOG` still applies on top. A `RUST_LOG` that cannot be parsed is
/// warned about once and otherwise ignored.
pub fn set_log_level(level: LevelFilter) {
    static WARN_ONCE: Once = Once::new();
    let Some(logger) = LOGGER.get() else {
        return;
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, warning) = LogFilter::from_env(level, rust_log.as_deref());
    log::set_max_level(filter.max_level());
    *logger
        .filter
        .write()
        .unwrap_or_else(PoisonError::into_inner) = filter;
    if let Some(warning) = warning {
        WARN_ONCE.call_once(|| log::warn!("{warning}"));
    }
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

    /// Whether `filter` lets a message of `level` from `target` through.
    fn passes(filter: &LogFilter, target: &str, level: Level) -> bool {
        filter.enabled(&Metadata::builder().target(target).level(level).build())
    }

    fn from_env(level: LevelFilter, rust_log: &str) -> LogFilter {
        let (filter, warning) = LogFilter::from_env(level, Some(rust_log));
        assert_eq!(warning, None, "{rust_log} parses");
        filter
    }

    #[test]
    fn without_rust_log_only_our_messages_at_the_configured_level() {
        let (filter, warning) = LogFilter::from_env(LevelFilter::Info, None);
        assert_eq!(warning, None);
        assert!(passes(&filter, "broadcast_agent::room", Level::Info));
        assert!(!passes(&filter, "broadcast_agent::room", Level::Debug));
        assert!(!passes(&filter, "ureq::pool", Level::Error));
        assert_eq!(filter.max_level(), LevelFilter::Info);
    }

    #[test]
    fn a_bare_rust_log_level_is_ours_alone() {
        let filter = from_env(LevelFilter::Info, "debug");
        assert!(passes(&filter, "broadcast_agent::janus", Level::Debug));
        assert!(!passes(&filter, "broadcast_agent::janus", Level::Trace));
        assert!(!passes(&filter, "rustls::client", Level::Debug));
        let filter = from_env(LevelFilter::Debug, "warn");
        assert!(!passes(&filter, "broadcast_agent::room", Level::Info));
    }

    #[test]
    fn rust_log_targets_set_modules_and_name_libraries() {
        let filter = from_env(LevelFilter::Info, "broadcast_agent::janus=trace,ureq=debug");
        assert!(passes(
            &filter,
            "broadcast_agent::janus::streaming",
            Level::Trace
        ));
        assert!(passes(&filter, "broadcast_agent::room", Level::Info));
        assert!(!passes(&filter, "broadcast_agent::room", Level::Debug));
        assert!(passes(&filter, "ureq::pool", Level::Debug));
        assert!(!passes(&filter, "rustls::client", Level::Error));
        assert_eq!(filter.max_level(), LevelFilter::Trace);
    }

    #[test]
    fn rust_log_text_filter_keeps_matching_messages() {
        let filter = from_env(LevelFilter::Info, "info/timed out");
        let record = |text| {
            filter.matches(
                &Record::builder()
                    .args(format_args!("{text}"))
                    .target("broadcast_agent::janus")
                    .level(Level::Warn)
                    .build(),
            )
        };
        assert!(record("request timed out"));
        assert!(!record("room 4556: live"));
    }

    #[test]
    fn a_bad_rust_log_directive_is_named_and_leaves_the_configured_level() {
        let (filter, warning) = LogFilter::from_env(LevelFilter::Warn, Some("debug,ureq=loud"));
        let warning = warning.expect("a warning");
        assert_eq!(
            warning,
            "RUST_LOG: error parsing logger filter: invalid logging spec 'loud'; \
             ignored, log.level applies"
        );
        assert!(passes(&filter, "broadcast_agent::room", Level::Warn));
        assert!(!passes(&filter, "broadcast_agent::room", Level::Info));
        assert!(!passes(&filter, "ureq::pool", Level::Error));
    }
}
