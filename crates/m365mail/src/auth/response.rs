//! [`TokenResponse`]: the token endpoint's success reply, parsed exactly (microsoft.md §3).

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::error::AuthError;
use crate::secret::Secret;

/// Lifetime assumed when `expires_in` is absent.
pub const DEFAULT_EXPIRES_IN: u64 = 3600;

/// Upper bound applied to `expires_in` and `ext_expires_in` (1 day); larger values are clamped, so a hostile or
/// buggy server cannot make a token live (in the cache) for years or overflow the clock.
pub const MAX_EXPIRES_IN: u64 = 86_400;

/// A token response. Secrets are [`Secret`]s; `Debug` shows none of them.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    /// The access token (opaque; personal-account Outlook tokens are not JWTs).
    pub access_token: Secret,
    /// Always `Bearer` (checked case-insensitively, stored normalised).
    pub token_type: String,
    /// Local receive time + `expires_in` (never taken from the token's claims).
    pub expires_at: SystemTime,
    /// `expires_in` as received (or the 3600 default).
    pub expires_in: Duration,
    /// Local receive time + `ext_expires_in`, when present.
    pub ext_expires_at: Option<SystemTime>,
    /// Granted scopes, space-separated, when present.
    pub scope: Option<String>,
    /// A (rotated) refresh token, when `offline_access` was requested.
    pub refresh_token: Option<Secret>,
    /// The ID token, when `openid` was requested.
    pub id_token: Option<Secret>,
}

#[derive(Deserialize)]
struct Raw {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    ext_expires_in: Option<serde_json::Value>,
    scope: Option<String>,
    refresh_token: Option<String>,
    id_token: Option<String>,
}

/// A seconds field: an integer, or (Entra's v1 endpoint, some servers) a string of digits. `Ok(None)` when absent
/// or null; `Err(())` when present but not a non-negative integer (negative, fractional, text, object, ...).
pub(crate) fn lenient_secs(v: Option<&serde_json::Value>) -> Result<Option<u64>, ()> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or(()),
        Some(serde_json::Value::String(s)) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                // All digits: only an overflow fails, which is "huge", i.e. clamped by the caller.
                Ok(Some(s.parse().unwrap_or(u64::MAX)))
            } else {
                Err(())
            }
        }
        Some(_) => Err(()),
    }
}

impl TokenResponse {
    /// Parses a 2xx body received at `now` from `url`.
    pub fn parse(body: &[u8], now: SystemTime, url: &str) -> Result<Self, AuthError> {
        let malformed = |reason: &str| AuthError::MalformedResponse {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let raw: Raw = serde_json::from_slice(body).map_err(|e| {
            // serde's message can quote input; keep only its category and position.
            malformed(&format!(
                "not a JSON token response ({:?} at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let access_token = raw
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("no access_token"))?;
        let token_type = raw.token_type.ok_or_else(|| malformed("no token_type"))?;
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::UnsupportedTokenType(
                super::error::strip_control(&token_type)
                    .chars()
                    .take(40)
                    .collect(),
            ));
        }
        let expires_in = lenient_secs(raw.expires_in.as_ref())
            .map_err(|()| malformed("expires_in is not a non-negative integer"))?
            .unwrap_or(DEFAULT_EXPIRES_IN);
        let ext_expires_in = lenient_secs(raw.ext_expires_in.as_ref())
            .map_err(|()| malformed("ext_expires_in is not a non-negative integer"))?;
        if expires_in > MAX_EXPIRES_IN {
            tracing::warn!(
                expires_in,
                max = MAX_EXPIRES_IN,
                "expires_in is implausibly large; clamped"
            );
        }
        let expires_in = Duration::from_secs(expires_in.min(MAX_EXPIRES_IN));
        let later = |d: Duration| {
            now.checked_add(d)
                .ok_or_else(|| malformed("expiry time out of range"))
        };
        let expires_at = later(expires_in)?;
        let ext_expires_at = match ext_expires_in {
            Some(s) => Some(later(Duration::from_secs(s.min(MAX_EXPIRES_IN)))?),
            None => None,
        };
        Ok(Self {
            access_token: Secret::new(access_token),
            token_type: "Bearer".to_owned(),
            expires_at,
            expires_in,
            ext_expires_at,
            scope: raw.scope.filter(|s| !s.is_empty()),
            refresh_token: raw.refresh_token.filter(|s| !s.is_empty()).map(Secret::new),
            id_token: raw.id_token.filter(|s| !s.is_empty()).map(Secret::new),
        })
    }

    /// Seconds left at `now` (0 if expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, FakeClock};

    #[test]
    fn parses_full_response() {
        let clock = FakeClock::fixed();
        let body = br#"{"token_type":"bearer","scope":"https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send","expires_in":4249,"ext_expires_in":4250,"access_token":"eyJ0eXAi.x.y","refresh_token":"1.AV-rt","id_token":"eyJid.a.b","extra":true}"#;
        let r = TokenResponse::parse(body, clock.now(), "u").unwrap();
        assert_eq!(r.token_type, "Bearer");
        assert_eq!(r.expires_at, clock.now() + Duration::from_secs(4249));
        assert_eq!(
            r.ext_expires_at,
            Some(clock.now() + Duration::from_secs(4250))
        );
        assert_eq!(r.access_token.expose(), "eyJ0eXAi.x.y");
        assert_eq!(r.refresh_token.as_ref().unwrap().expose(), "1.AV-rt");
        assert!(r.id_token.is_some());
        assert!(r.scope.unwrap().contains("SMTP.Send"));
        let dbg = format!(
            "{:?}",
            TokenResponse::parse(body, clock.now(), "u").unwrap()
        );
        assert!(
            !dbg.contains("eyJ0eXAi") && !dbg.contains("1.AV-rt"),
            "{dbg}"
        );
    }

    #[test]
    fn client_credentials_shape_and_defaults() {
        let now = FakeClock::fixed().now();
        let r = TokenResponse::parse(br#"{"token_type":"Bearer","access_token":"a"}"#, now, "u")
            .unwrap();
        assert_eq!(r.expires_in, Duration::from_secs(3600));
        assert!(r.refresh_token.is_none() && r.scope.is_none() && r.ext_expires_at.is_none());
        let r = TokenResponse::parse(
            br#"{"token_type":"Bearer","access_token":"a","expires_in":"599"}"#,
            now,
            "u",
        )
        .unwrap();
        assert_eq!(r.expires_in, Duration::from_secs(599));
        assert_eq!(r.remaining(now + Duration::from_secs(600)), Duration::ZERO);
    }

    #[test]
    fn huge_expires_in_is_clamped_not_a_panic() {
        let now = FakeClock::fixed().now();
        for huge in [
            "18446744073709551615",
            "\"18446744073709551615\"",
            "\"99999999999999999999999999\"",
            "9223372036854775807",
        ] {
            let body = format!(
                r#"{{"token_type":"Bearer","access_token":"a","expires_in":{huge},"ext_expires_in":{huge}}}"#
            );
            let r = TokenResponse::parse(body.as_bytes(), now, "u").unwrap();
            assert_eq!(r.expires_in, Duration::from_secs(MAX_EXPIRES_IN), "{body}");
            assert_eq!(r.expires_at, now + Duration::from_secs(MAX_EXPIRES_IN));
            assert_eq!(
                r.ext_expires_at,
                Some(now + Duration::from_secs(MAX_EXPIRES_IN))
            );
        }
        // Near the end of time: checked, not a panic.
        let end = std::time::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 - 10);
        let r = TokenResponse::parse(
            br#"{"token_type":"Bearer","access_token":"a","expires_in":3600}"#,
            end,
            "u",
        );
        assert!(
            matches!(r, Err(AuthError::MalformedResponse { .. }) | Ok(_)),
            "{r:?}"
        );
    }

    #[test]
    fn rejects_bad_responses() {
        let now = FakeClock::fixed().now();
        assert!(matches!(
            TokenResponse::parse(br#"{"token_type":"MAC","access_token":"a"}"#, now, "u"),
            Err(AuthError::UnsupportedTokenType(t)) if t == "MAC"
        ));
        assert!(matches!(
            TokenResponse::parse(br#"{"token_type":"Bearer"}"#, now, "u"),
            Err(AuthError::MalformedResponse { .. })
        ));
        assert!(matches!(
            TokenResponse::parse(br#"{"access_token":"a"}"#, now, "u"),
            Err(AuthError::MalformedResponse { .. })
        ));
        for bad in [
            r#"-5"#,
            r#""-5""#,
            r#""soon""#,
            r#"1.5"#,
            r#""""#,
            r#"true"#,
            r#"{}"#,
        ] {
            for field in ["expires_in", "ext_expires_in"] {
                let body =
                    format!(r#"{{"token_type":"Bearer","access_token":"a","{field}":{bad}}}"#);
                assert!(
                    matches!(
                        TokenResponse::parse(body.as_bytes(), now, "u"),
                        Err(AuthError::MalformedResponse { .. })
                    ),
                    "{body}"
                );
            }
        }
        let err = TokenResponse::parse(b"access_token=secretvalue", now, "u").unwrap_err();
        assert!(!err.to_string().contains("secretvalue"));
    }
}
