//! The room's own limits: [`Timers`] closes an open room after
//! `room.idle_timeout_s` without participants or `room.max_duration_s`.

use std::time::Duration;

use tokio::time::Instant;

use crate::state::{CloseReason, Presence};

/// When an open room closes by itself: `room.idle_timeout_s` after the
/// checks last saw it empty-handed, `room.max_duration_s` after it opened.
#[derive(Debug, Clone)]
pub(super) struct Timers {
    pub(super) idle_timeout: Option<Duration>,
    pub(super) max_duration: Option<Duration>,
    opened_at: Instant,
    /// The first check that found no one, since someone was last there.
    idle_since: Option<Instant>,
}

impl Timers {
    pub(super) fn new(room: &crate::config::RoomSettings, now: Instant) -> Self {
        Self {
            idle_timeout: room.idle_timeout,
            max_duration: room.max_duration,
            opened_at: now,
            idle_since: None,
        }
    }

    /// The room was (re)opened: both timers start over.
    pub(super) fn opened(&mut self, now: Instant) {
        self.opened_at = now;
        self.idle_since = None;
    }

    /// Records what a check saw. An unknown count (Janus not answering)
    /// neither starts nor stops the idle clock.
    pub(super) fn saw(&mut self, participants: Presence<usize>, now: Instant) {
        match participants {
            Presence::Present(0) => {
                self.idle_since.get_or_insert(now);
            }
            Presence::Present(_) => self.idle_since = None,
            Presence::Unknown | Presence::Absent => {}
        }
    }

    /// Why the room must close at `now`, if it must.
    pub(super) fn expired(&self, now: Instant) -> Option<CloseReason> {
        let past = |since: Instant, limit: Duration| now.duration_since(since) >= limit;
        if self.max_duration.is_some_and(|d| past(self.opened_at, d)) {
            Some(CloseReason::MaxDuration)
        } else if let (Some(since), Some(limit)) = (self.idle_since, self.idle_timeout) {
            past(since, limit).then_some(CloseReason::IdleTimeout)
        } else {
            None
        }
    }

    /// The next instant a timer may run out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let max = self.max_duration.map(|d| self.opened_at + d);
        let idle = self.idle_since.zip(self.idle_timeout).map(|(t, d)| t + d);
        match (max, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Presence::{Present, Unknown};

    #[test]
    fn timers_close_an_idle_or_overlong_room() {
        let settings = crate::config::RoomSettings {
            idle_timeout: Some(Duration::from_secs(10)),
            max_duration: Some(Duration::from_secs(60)),
            ..crate::config::RoomSettings::default()
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut timers = Timers::new(&settings, t0);
        timers.saw(Present(2), at(1));
        assert_eq!(timers.next_deadline(), Some(at(60)));
        timers.saw(Present(0), at(5));
        timers.saw(Unknown, at(9));
        timers.saw(Present(0), at(12));
        assert_eq!(timers.expired(at(14)), None);
        assert_eq!(timers.next_deadline(), Some(at(15)));
        assert_eq!(timers.expired(at(15)), Some(CloseReason::IdleTimeout));
        // Someone joined: the idle clock stops; the maximum still applies.
        timers.saw(Present(1), at(16));
        assert_eq!(timers.expired(at(59)), None);
        assert_eq!(timers.expired(at(60)), Some(CloseReason::MaxDuration));
        // Reopened: both start over.
        timers.opened(at(61));
        assert_eq!(timers.expired(at(100)), None);
        assert_eq!(timers.next_deadline(), Some(at(121)));
        let off = Timers::new(&crate::config::RoomSettings::default(), t0);
        assert_eq!(off.next_deadline(), None);
        assert_eq!(off.expired(at(1_000_000)), None);
    }
}
