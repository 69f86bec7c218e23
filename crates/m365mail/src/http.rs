//! Reply bodies read with a bound: [`read_bounded`].
//!
//! Every HTTP client of this crate (the token client, and the Graph client after it) reads JSON and error
//! bodies through [`read_bounded`] with [`MAX_REPLY_BODY`], so a hostile or broken server cannot make it hold
//! more than 1 MiB of one reply: reading stops at the limit and the connection is closed, not drained.
//! Downloads of mail content (MIME) have their own, larger bound (the read command's maximum message size).
//! [`parse_retry_after`] reads `Retry-After` in both of its forms.

use std::time::{Duration, SystemTime};

/// The most a JSON or error reply body may hold: 1 MiB. Entra's replies are a few KiB.
pub const MAX_REPLY_BODY: usize = 1024 * 1024;

/// A reply body read up to a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedBody {
    /// The bytes read: the whole body, or its first `limit` bytes when it is longer.
    pub bytes: Vec<u8>,
    /// Whether the body is longer than the limit (then `bytes` holds its first `limit` bytes and the rest was
    /// never read).
    pub truncated: bool,
}

/// Reads `response`'s body chunk by chunk, keeping at most `limit` bytes. A longer body is not read further:
/// the response (and with it the connection) is dropped and the result says `truncated`. Memory stays at
/// `limit` plus one chunk whatever the server sends or declares in `Content-Length`.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<BoundedBody, reqwest::Error> {
    let declared = response
        .content_length()
        .map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut bytes = Vec::with_capacity(declared.min(limit));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(BoundedBody {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(BoundedBody {
        bytes,
        truncated: false,
    })
}

/// The longest `Retry-After` taken at its word (one day); a longer one is read as one day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Reads a `Retry-After` header value (RFC 9110 §10.2.3) received at `now`: delay-seconds (`45`) or an HTTP
/// date (IMF-fixdate `Thu, 01 Jan 2026 00:00:20 GMT`, and the obsolete RFC 850 and asctime forms a recipient
/// must accept). Returns how long to wait from `now`: zero for a date in the past, at most
/// [`MAX_RETRY_AFTER`]. `None` for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: a number too large for u64 is still "very long".
        Duration::from_secs(
            value
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(MAX_RETRY_AFTER.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock as _, FakeClock};

    #[test]
    fn retry_after_seconds_and_dates() {
        // 2026-01-01T00:00:00Z, a Thursday.
        let now = FakeClock::fixed().now();
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(parse_retry_after("45", now), secs(45));
        assert_eq!(parse_retry_after(" 0 ", now), secs(0));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            secs(86_400)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:20 GMT", now),
            secs(20)
        );
        assert_eq!(
            parse_retry_after("Thursday, 01-Jan-26 00:01:00 GMT", now),
            secs(60)
        );
        assert_eq!(parse_retry_after("Thu Jan  1 00:00:05 2026", now), secs(5));
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:59:59 GMT", now),
            secs(0)
        );
        assert_eq!(
            parse_retry_after("Sat, 01 Jan 2028 00:00:00 GMT", now),
            secs(86_400)
        );
        for bad in ["", "-1", "4.5", "soon", "Thu, 01 Jan 2026 00:00:20", "45 s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
