//! One injectable clock (and sleeper) for token expiry, device-code polling and backoff.
//!
//! `clippy.toml` bans `SystemTime::now` everywhere except [`SystemClock`], so tests can drive time with
//! [`FakeClock`] and never wait real seconds.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A boxed, sendable future (what [`Sleeper::sleep`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The source of "now".
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The current time as whole seconds since the Unix epoch (0 before 1970).
    fn unix_now(&self) -> u64 {
        unix_secs(self.now())
    }
}

/// Something that can wait. Polling and backoff sleep through this so tests can skip the waiting.
pub trait Sleeper: Send + Sync + fmt::Debug {
    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()>;
}

/// Seconds since the Unix epoch for a `SystemTime` (0 before 1970).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place allowed to read the system clock
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real sleeper (`tokio::time::sleep`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: starts at a fixed time, moves only when told to. As a [`Sleeper`] it advances itself
/// instantly by the requested duration (and records the total), so a 15-minute device-code wait takes no time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    inner: Arc<Mutex<FakeInner>>,
}

#[derive(Debug)]
struct FakeInner {
    now: SystemTime,
    slept: Vec<Duration>,
}

impl FakeClock {
    /// A clock at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FakeInner {
                now: start,
                slept: Vec::new(),
            })),
        }
    }

    /// A clock at a fixed, arbitrary instant (2026-01-01T00:00:00Z).
    pub fn fixed() -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: SystemTime) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).now = to;
    }

    /// Every duration passed to [`Sleeper::sleep`] so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slept
            .clone()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).now
    }
}

impl Sleeper for FakeClock {
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.now += duration;
            inner.slept.push(duration);
        }
        // Yield once so a sleeping task still lets others (e.g. a canceller) run.
        Box::pin(tokio::task::yield_now())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    use super::*;

    #[tokio::test]
    async fn fake_clock_advances_and_sleeps_instantly() {
        let clock = FakeClock::fixed();
        let t0 = clock.now();
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.now(), t0 + Duration::from_secs(10));
        clock.sleep(Duration::from_secs(900)).await;
        assert_eq!(clock.now(), t0 + Duration::from_secs(910));
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(900)]);
        assert_eq!(clock.unix_now(), 1_767_225_600 + 910);
    }

    #[test]
    fn system_clock_is_after_2025() {
        assert!(SystemClock.unix_now() > 1_735_689_600);
    }
}
