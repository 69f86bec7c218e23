//! Device authorization grant: the device-code response and a sans-I/O polling state machine
//! (microsoft.md §5.4, RFC 8628). The HTTP driver lives in [`super::client::TokenClient::device_code`].

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::error::{AuthError, EntraError, strip_control};
use super::response::lenient_secs;
use crate::secret::Secret;

/// The device-code endpoint's reply.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    /// Secret: sent when polling.
    pub device_code: Secret,
    /// Shown to the user.
    pub user_code: String,
    /// Shown to the user (always display the returned value).
    pub verification_uri: String,
    /// The server's ready-made text (localised); show it verbatim.
    pub message: String,
    /// Lifetime of the code.
    pub expires_in: Duration,
    /// Seconds between polls.
    pub interval: Duration,
    /// Local time the code was received.
    pub issued_at: SystemTime,
}

#[derive(Deserialize)]
struct Raw {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    message: Option<String>,
    expires_in: Option<serde_json::Value>,
    interval: Option<serde_json::Value>,
}

/// Upper bound of a device code's lifetime (longer values are clamped): Entra issues 900 s.
pub const MAX_DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(3600);
/// Upper bound of the polling interval (longer values are clamped).
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Lower bound of the polling interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

impl DeviceCode {
    /// Parses the reply received at `now`. Defaults: 900 s lifetime, 5 s interval.
    pub fn parse(body: &[u8], now: SystemTime, url: &str) -> Result<Self, AuthError> {
        let malformed = |reason: String| AuthError::MalformedResponse {
            url: url.to_owned(),
            reason,
        };
        let raw: Raw = serde_json::from_slice(body)
            .map_err(|e| malformed(format!("not a device-code response ({:?})", e.classify())))?;
        let expires_in = lenient_secs(raw.expires_in.as_ref())
            .map_err(|()| malformed("expires_in is not a non-negative integer".into()))?
            .unwrap_or(900);
        let interval = lenient_secs(raw.interval.as_ref())
            .map_err(|()| malformed("interval is not a non-negative integer".into()))?
            .unwrap_or(5);
        let expires_in = Duration::from_secs(expires_in).min(MAX_DEVICE_CODE_LIFETIME);
        let interval = Duration::from_secs(interval).clamp(MIN_INTERVAL, MAX_INTERVAL);
        if now.checked_add(expires_in).is_none() {
            return Err(malformed("expiry time out of range".into()));
        }
        // Shown on the user's terminal: no control characters from the server.
        let one_line = |t: &str| strip_control(t).replace('\n', " ");
        let raw = Raw {
            user_code: one_line(&raw.user_code),
            verification_uri: one_line(&raw.verification_uri),
            message: raw.message.map(|m| strip_control(&m)),
            ..raw
        };
        let message = raw.message.unwrap_or_else(|| {
            format!(
                "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
                raw.verification_uri, raw.user_code
            )
        });
        Ok(Self {
            device_code: Secret::new(raw.device_code),
            user_code: raw.user_code,
            verification_uri: raw.verification_uri,
            message,
            expires_in,
            interval,
            issued_at: now,
        })
    }

    /// When the code expires locally (saturating: checked at parse time, and fields are public).
    pub fn deadline(&self) -> SystemTime {
        self.issued_at
            .checked_add(self.expires_in)
            .unwrap_or(self.issued_at)
    }
}

/// The polling state machine: decides waits and reacts to poll outcomes, with no I/O.
#[derive(Debug, Clone)]
pub struct DevicePoller {
    interval: Duration,
    deadline: SystemTime,
    polls: u32,
    /// Consecutive transient failures (network, 429, 5xx): the next wait backs off.
    transient_streak: u32,
    /// The `Retry-After` of the last transient failure.
    retry_after: Option<Duration>,
}

/// Upper bound of the backoff after transient polling failures (a larger `Retry-After` is honoured).
pub const MAX_TRANSIENT_BACKOFF: Duration = Duration::from_secs(60);

/// Extra wait added by `slow_down` (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

impl DevicePoller {
    /// A poller for a code.
    pub fn new(code: &DeviceCode) -> Self {
        Self {
            interval: code.interval,
            deadline: code.deadline(),
            polls: 0,
            transient_streak: 0,
            retry_after: None,
        }
    }

    /// The current interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many polls were made.
    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// Before each poll: wait `interval` (also before the first poll), unless the code has expired by `now`.
    /// After transient failures: `max(interval, Retry-After, interval · 2^(failures-1))`, the backoff part
    /// capped at [`MAX_TRANSIENT_BACKOFF`]; never past the code's deadline.
    pub fn next_wait(&self, now: SystemTime) -> Result<Duration, AuthError> {
        if now >= self.deadline {
            return Err(AuthError::DeviceCodeExpired);
        }
        let mut wait = self.interval;
        if self.transient_streak > 0 {
            let backoff = self
                .interval
                .saturating_mul(1u32 << (self.transient_streak - 1).min(16))
                .min(MAX_TRANSIENT_BACKOFF);
            wait = wait.max(backoff).max(self.retry_after.unwrap_or_default());
        }
        // No poll is possible before the code expires: stop now rather than sleep past the deadline.
        let left = self.deadline.duration_since(now).unwrap_or_default();
        if wait > left {
            return Err(AuthError::DeviceCodeExpired);
        }
        Ok(wait)
    }

    /// After the wait: may we poll at `now`? (Stops locally once `expires_in` has elapsed.)
    pub fn may_poll(&mut self, now: SystemTime) -> Result<(), AuthError> {
        if now > self.deadline {
            return Err(AuthError::DeviceCodeExpired);
        }
        self.polls += 1;
        Ok(())
    }

    /// A poll failed with `err`: `Ok(())` means keep polling, `Err` means stop with that error.
    /// `authorization_pending` continues; `slow_down` adds 5 s; transient errors (network, 5xx) keep polling
    /// while the code is valid; `expired_token`, `authorization_declined`, `bad_verification_code` and anything
    /// else stop.
    pub fn on_error(&mut self, err: AuthError) -> Result<(), AuthError> {
        match &err {
            AuthError::Entra(e) if is_pending(e) => {
                self.transient_streak = 0;
                self.retry_after = None;
                Ok(())
            }
            AuthError::Entra(e) if e.error == "slow_down" => {
                self.transient_streak = 0;
                self.retry_after = None;
                self.interval += SLOW_DOWN_STEP;
                Ok(())
            }
            e if e.is_transient() => {
                self.transient_streak = self.transient_streak.saturating_add(1);
                self.retry_after = e.retry_after();
                tracing::debug!(error = %e, failures = self.transient_streak, "transient error while polling; backing off");
                Ok(())
            }
            _ => Err(err),
        }
    }
}

fn is_pending(e: &EntraError) -> bool {
    e.error == "authorization_pending" || (e.has_code(70016) && e.error != "slow_down")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, FakeClock};

    fn code(clock: &FakeClock, expires: u64, interval: u64) -> DeviceCode {
        let body = format!(
            r#"{{"device_code":"DC-secret","user_code":"ABCD-EFGH","verification_uri":"https://microsoft.com/devicelogin","expires_in":{expires},"interval":{interval},"message":"To sign in, open https://microsoft.com/devicelogin and enter ABCD-EFGH."}}"#
        );
        DeviceCode::parse(body.as_bytes(), clock.now(), "u").unwrap()
    }

    fn entra(json: &str) -> AuthError {
        EntraError::parse(400, json.as_bytes()).unwrap().into()
    }

    #[test]
    fn parse_and_defaults() {
        let clock = FakeClock::fixed();
        let c = code(&clock, 900, 5);
        assert_eq!(c.user_code, "ABCD-EFGH");
        assert!(c.message.contains("ABCD-EFGH"));
        assert!(!format!("{c:?}").contains("DC-secret"));
        let c = DeviceCode::parse(
            br#"{"device_code":"d","user_code":"u","verification_uri":"v"}"#,
            clock.now(),
            "u",
        )
        .unwrap();
        assert_eq!(c.expires_in, Duration::from_secs(900));
        assert_eq!(c.interval, Duration::from_secs(5));
        assert!(c.message.contains('v'));
    }

    #[test]
    fn server_text_loses_control_characters() {
        let c = DeviceCode::parse(
            br#"{"device_code":"d","user_code":"AB\u001b[2JCD","verification_uri":"https://x\r/","message":"Open \u001b]8;;evil\u0007page\u202e\nthen enter AB"}"#,
            FakeClock::fixed().now(),
            "u",
        )
        .unwrap();
        for t in [&c.message, &c.user_code, &c.verification_uri] {
            assert!(
                !t.chars()
                    .any(|ch| (ch.is_control() && ch != '\n') || ch == '\u{202e}'),
                "{t:?}"
            );
        }
        assert!(c.message.contains('\n'));
    }

    #[test]
    fn huge_or_invalid_lifetimes() {
        let clock = FakeClock::fixed();
        let c = code(&clock, u64::MAX, u64::MAX);
        assert_eq!(c.expires_in, MAX_DEVICE_CODE_LIFETIME);
        assert_eq!(c.interval, MAX_INTERVAL);
        assert_eq!(c.deadline(), clock.now() + MAX_DEVICE_CODE_LIFETIME);
        let c = code(&clock, 900, 0);
        assert_eq!(c.interval, MIN_INTERVAL);
        for (e, i) in [("-1", "5"), ("900", "-5"), ("\"x\"", "5"), ("900", "1.5")] {
            let body = format!(
                r#"{{"device_code":"d","user_code":"u","verification_uri":"v","expires_in":{e},"interval":{i}}}"#
            );
            assert!(
                matches!(
                    DeviceCode::parse(body.as_bytes(), clock.now(), "u"),
                    Err(AuthError::MalformedResponse { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn pending_slow_down_and_stop_conditions() {
        let clock = FakeClock::fixed();
        let mut p = DevicePoller::new(&code(&clock, 900, 5));
        assert_eq!(p.next_wait(clock.now()).unwrap(), Duration::from_secs(5));
        p.on_error(entra(
            r#"{"error":"authorization_pending","error_codes":[70016]}"#,
        ))
        .unwrap();
        assert_eq!(p.interval(), Duration::from_secs(5));
        p.on_error(entra(r#"{"error":"slow_down"}"#)).unwrap();
        assert_eq!(p.next_wait(clock.now()).unwrap(), Duration::from_secs(10));
        p.on_error(entra(r#"{"error":"slow_down"}"#)).unwrap();
        assert_eq!(p.interval(), Duration::from_secs(15));
        p.on_error(AuthError::from(crate::transport::TransportError::bare(
            crate::transport::TransportKind::Timeout,
            "u",
        )))
        .unwrap();
        for (stop, error, codes) in [
            (
                r#"{"error":"expired_token","error_codes":[70019]}"#,
                "expired_token",
                vec![70019],
            ),
            (
                r#"{"error":"authorization_declined"}"#,
                "authorization_declined",
                vec![],
            ),
            (
                r#"{"error":"bad_verification_code","error_codes":[70018]}"#,
                "bad_verification_code",
                vec![70018],
            ),
            (
                r#"{"error":"invalid_client","error_codes":[7000218]}"#,
                "invalid_client",
                vec![7000218],
            ),
        ] {
            match p.on_error(entra(stop)) {
                Err(AuthError::Entra(e)) => {
                    assert_eq!(
                        (e.error.as_str(), &e.error_codes),
                        (error, &codes),
                        "{stop}"
                    );
                }
                other => panic!("{stop}: {other:?}"),
            }
        }
    }

    #[test]
    fn transient_errors_back_off_and_honour_retry_after_within_the_deadline() {
        let clock = FakeClock::fixed();
        let mut p = DevicePoller::new(&code(&clock, 900, 5));
        let wait = |p: &DevicePoller| p.next_wait(clock.now()).unwrap().as_secs();
        p.on_error(AuthError::from(crate::transport::TransportError::bare(
            crate::transport::TransportKind::Timeout,
            "u",
        )))
        .unwrap();
        assert_eq!(wait(&p), 5);
        p.on_error(AuthError::from(crate::transport::TransportError::bare(
            crate::transport::TransportKind::Timeout,
            "u",
        )))
        .unwrap();
        assert_eq!(wait(&p), 10);
        p.on_error(AuthError::from(crate::transport::TransportError::bare(
            crate::transport::TransportKind::Timeout,
            "u",
        )))
        .unwrap();
        assert_eq!(wait(&p), 20);
        for _ in 0..10 {
            p.on_error(AuthError::from(crate::transport::TransportError::bare(
                crate::transport::TransportKind::Timeout,
                "u",
            )))
            .unwrap();
        }
        assert_eq!(wait(&p), 60, "backoff is capped");
        let mut throttled = EntraError::parse(
            429,
            br#"{"error":"temporarily_unavailable","error_codes":[90055]}"#,
        )
        .unwrap();
        throttled.retry_after = Some(Duration::from_secs(120));
        p.on_error(throttled.into()).unwrap();
        assert_eq!(wait(&p), 120, "Retry-After beyond the cap is honoured");
        p.on_error(entra(r#"{"error":"authorization_pending"}"#))
            .unwrap();
        assert_eq!(wait(&p), 5, "a normal answer resets the backoff");
        // Never past the deadline: a backoff longer than the code's remaining life ends the flow now.
        clock.advance(Duration::from_secs(870));
        p.on_error(AuthError::from(crate::transport::TransportError::bare(
            crate::transport::TransportKind::Timeout,
            "u",
        )))
        .unwrap();
        assert_eq!(wait(&p), 5);
        for _ in 0..5 {
            p.on_error(AuthError::from(crate::transport::TransportError::bare(
                crate::transport::TransportKind::Timeout,
                "u",
            )))
            .unwrap();
        }
        assert!(matches!(
            p.next_wait(clock.now()),
            Err(AuthError::DeviceCodeExpired)
        ));
    }

    #[test]
    fn stops_locally_when_expires_in_elapses() {
        let clock = FakeClock::fixed();
        let mut p = DevicePoller::new(&code(&clock, 12, 5));
        let mut polls = 0;
        let err = loop {
            let d = match p.next_wait(clock.now()) {
                Ok(s) => s,
                Err(e) => break e,
            };
            clock.advance(d);
            if let Err(e) = p.may_poll(clock.now()) {
                break e;
            }
            polls += 1;
            p.on_error(entra(r#"{"error":"authorization_pending"}"#))
                .unwrap();
        };
        assert!(matches!(err, AuthError::DeviceCodeExpired));
        assert_eq!(polls, 2); // at t=5 and t=10; t=15 is past the 12 s lifetime
        assert_eq!(p.polls(), 2);
    }
}
