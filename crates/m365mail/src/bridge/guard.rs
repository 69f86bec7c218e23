//! Bounds on guessing and on sending: failed sign-ins back off per source address and per account, and the
//! upstream mailbox's sending rate is kept under Exchange Online's 30 messages a minute. Both are plain
//! state with the time passed in, so tests drive them without a clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Failed sign-ins allowed before a key backs off.
const FREE_FAILURES: u32 = 3;
/// The first back-off; each further failure doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Keys remembered at most (an address scan must not grow the map without bound).
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

/// Failed sign-ins per key (`ip:<address>`, `ip-account:<address>/<name>`).
#[derive(Debug, Default)]
pub struct LoginGuard {
    strikes: HashMap<String, Strikes>,
}

impl LoginGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// How much longer any of `keys` is backed off, if one is.
    pub fn blocked(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        keys.iter()
            .filter_map(|key| self.strikes.get(*key)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Records a failure for each of `keys`; past [`FREE_FAILURES`] each blocks for a doubling time.
    pub fn failed(&mut self, keys: &[&str], now: Instant) {
        if self.strikes.len() >= MAX_KEYS {
            self.strikes
                .retain(|_, s| now.saturating_duration_since(s.last) < MAX_BACKOFF);
        }
        for key in keys {
            if self.strikes.len() >= MAX_KEYS && !self.strikes.contains_key(*key) {
                continue;
            }
            let strikes = self.strikes.entry((*key).to_owned()).or_insert(Strikes {
                failures: 0,
                blocked_until: None,
                last: now,
            });
            // A key quiet for the longest back-off starts over.
            if now.saturating_duration_since(strikes.last) >= MAX_BACKOFF {
                strikes.failures = 0;
            }
            strikes.failures += 1;
            strikes.last = now;
            if strikes.failures > FREE_FAILURES {
                let doublings = (strikes.failures - FREE_FAILURES - 1).min(16);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << doublings)
                    .min(MAX_BACKOFF);
                strikes.blocked_until = Some(now + backoff);
            }
        }
    }

    /// A successful sign-in clears `keys`.
    pub fn succeeded(&mut self, keys: &[&str]) {
        for key in keys {
            self.strikes.remove(*key);
        }
    }
}

/// Messages relayed for one upstream mailbox in the last minute.
#[derive(Debug)]
pub struct RateWindow {
    per_minute: Option<u32>,
    sent: VecDeque<Instant>,
}

impl RateWindow {
    /// A window allowing `per_minute` messages (`None`: no limit).
    pub fn new(per_minute: Option<u32>) -> Self {
        Self {
            per_minute,
            sent: VecDeque::new(),
        }
    }

    /// `Ok` when one more message fits now, else how long until one does.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        let Some(limit) = self.per_minute else {
            return Ok(());
        };
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        if self.sent.len() < limit as usize {
            return Ok(());
        }
        let oldest = self.sent.front().copied().unwrap_or(now);
        Err((oldest + Duration::from_secs(60)).saturating_duration_since(now))
    }

    /// Counts a relayed message.
    pub fn record(&mut self, now: Instant) {
        if self.per_minute.is_some() {
            self.sent.push_back(now);
        }
    }

    /// Takes a place for a message about to be relayed (as [`RateWindow::admit`], then counted), so that
    /// sessions relaying at once cannot all pass; [`RateWindow::release`] gives it back if it did not go.
    pub fn reserve(&mut self, now: Instant) -> Result<Instant, Duration> {
        self.admit(now)?;
        self.record(now);
        Ok(now)
    }

    /// Gives back a place taken at `at` by [`RateWindow::reserve`].
    pub fn release(&mut self, at: Instant) {
        if let Some(position) = self.sent.iter().rposition(|t| *t == at) {
            self.sent.remove(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_are_free_then_the_backoff_doubles_and_success_clears() {
        let mut guard = LoginGuard::new();
        let t0 = Instant::now();
        let keys = ["ip:192.0.2.1", "ip-account:192.0.2.1/printer"];
        for _ in 0..3 {
            guard.failed(&keys, t0);
        }
        assert_eq!(guard.blocked(&keys, t0), None);
        guard.failed(&keys, t0);
        assert_eq!(guard.blocked(&keys, t0), Some(Duration::from_secs(2)));
        guard.failed(&keys, t0);
        assert_eq!(guard.blocked(&keys, t0), Some(Duration::from_secs(4)));
        assert_eq!(guard.blocked(&keys, t0 + Duration::from_secs(5)), None);
        // Another address for the same account is not: a stranger's guesses do not lock a device out.
        assert!(
            guard
                .blocked(&["ip:192.0.2.2", "ip-account:192.0.2.2/printer"], t0)
                .is_none()
        );
        guard.succeeded(&keys);
        assert_eq!(guard.blocked(&keys, t0), None);
    }

    #[test]
    fn the_backoff_is_capped_and_forgotten_after_a_quiet_spell() {
        let mut guard = LoginGuard::new();
        let t0 = Instant::now();
        for _ in 0..40 {
            guard.failed(&["ip:x"], t0);
        }
        assert_eq!(guard.blocked(&["ip:x"], t0), Some(MAX_BACKOFF));
        let later = t0 + MAX_BACKOFF * 2;
        guard.failed(&["ip:x"], later);
        assert_eq!(guard.blocked(&["ip:x"], later), None);
    }

    #[test]
    fn the_rate_window_admits_the_limit_per_minute_and_says_when_the_next_fits() {
        let mut window = RateWindow::new(Some(2));
        let t0 = Instant::now();
        window.admit(t0).unwrap();
        window.record(t0);
        window.admit(t0 + Duration::from_secs(10)).unwrap();
        window.record(t0 + Duration::from_secs(10));
        assert_eq!(
            window.admit(t0 + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        window.admit(t0 + Duration::from_secs(60)).unwrap();
        let mut unlimited = RateWindow::new(None);
        for _ in 0..1000 {
            unlimited.record(t0);
        }
        unlimited.admit(t0).unwrap();
        // A reservation counts at once and can be given back.
        let mut window = RateWindow::new(Some(1));
        let at = window.reserve(t0).unwrap();
        assert!(window.reserve(t0).is_err());
        window.release(at);
        window.reserve(t0).unwrap();
    }
}
