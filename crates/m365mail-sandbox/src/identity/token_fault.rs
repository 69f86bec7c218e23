//! [`TokenFault`]: what the token endpoint can be told to answer instead of handling a request.

use serde::{Deserialize, Serialize};

/// A failure the token endpoint answers with instead of handling a request, for testing clients'
/// retry and polling logic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenFault {
    /// HTTP 429, `temporarily_unavailable`, AADSTS90055, with `Retry-After`.
    Throttled {
        /// The `Retry-After` value in seconds.
        retry_after_seconds: u64,
    },
    /// HTTP 503, `temporarily_unavailable`, AADSTS50033.
    TemporarilyUnavailable,
    /// HTTP 500, `server_error`, AADSTS90006.
    ServerError,
    /// HTTP 400, `slow_down` (RFC 8628 §3.5, no AADSTS code), to device-code polls only: other token
    /// requests are handled as usual and do not use it up. Entra answers fast polls with
    /// `authorization_pending`, so the sandbox sends `slow_down` only when told to.
    SlowDown,
    /// Not a failure: the next access token issued (any grant) lives only this many seconds, so a client's
    /// or a mail server's handling of an expired token can be tested without waiting an hour — and
    /// without shortening every token as `--access-token-lifetime` does.
    ShortLived {
        /// The token's lifetime (`expires_in`, `exp - iat`).
        lifetime_seconds: u64,
    },
}

impl TokenFault {
    /// The refusal this fault answers with; `None` for one that changes the token issued instead.
    pub(crate) fn to_entra_error(&self) -> Option<crate::identity::errors::EntraError> {
        use crate::identity::errors::EntraError;
        Some(match self {
            Self::Throttled {
                retry_after_seconds,
            } => EntraError::throttled(*retry_after_seconds),
            Self::TemporarilyUnavailable => EntraError::temporarily_unavailable(),
            Self::ServerError => EntraError::server_error(),
            Self::SlowDown => EntraError::slow_down(),
            Self::ShortLived { .. } => return None,
        })
    }

    /// Whether the fault answers a token request with this `grant_type`.
    pub(crate) fn applies_to(&self, grant_type: Option<&str>) -> bool {
        match self {
            Self::SlowDown => grant_type.is_some_and(crate::identity::is_device_code_grant),
            // Taken where the token's lifetime is drawn (IdentityState::access_token_seconds).
            Self::ShortLived { .. } => false,
            _ => true,
        }
    }
}
