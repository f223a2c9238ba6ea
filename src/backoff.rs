//! Capped exponential backoff with jitter, shared by the room reconciler and
//! the pipeline supervisors.

use std::time::Duration;

use rand::Rng;

/// How a failing action is retried: the first delay, and the longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

/// The delays between retries of one action. Each failure doubles the delay
/// up to the policy's cap; each delay is drawn from its upper half, so many
/// agents restarted together do not retry in lockstep.
#[derive(Debug)]
pub struct Backoff {
    policy: Policy,
    attempt: u32,
}

impl Backoff {
    /// A backoff that has seen no failure yet.
    pub fn new(policy: Policy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The delay before the next try, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }

    /// How many failures in a row this backoff has seen.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Forgets the failures: the action succeeded (or ran stably long enough).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.policy
            .initial
            .saturating_mul(factor)
            .min(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    #[test]
    fn grows_to_the_cap_and_stays_within_it() {
        let mut backoff = Backoff::new(POLICY);
        let delays: Vec<_> = (0..40).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400));
        assert!(delays.iter().all(|d| *d <= POLICY.max));
        assert!(delays[39] >= POLICY.max / 2);
        assert_eq!(backoff.attempts(), 40);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(POLICY);
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= POLICY.initial);
    }
}
