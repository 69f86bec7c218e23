//! [`AuthError`], the one error type of the auth layer, and [`EntraError`], Entra's error JSON.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::aadsts::{self, AadstsInfo};
use crate::error::Classified;
pub use crate::error::ErrorClass;
use crate::time::{rfc3339, unix_secs};

/// Entra's error reply, parsed leniently: every field optional, unknown fields ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntraError {
    /// HTTP status of the reply.
    pub http_status: u16,
    /// The OAuth `error` string (`invalid_grant`, `authorization_pending`, ...).
    pub error: String,
    /// Every `error_codes` entry, in order.
    pub error_codes: Vec<u32>,
    /// `error_description` without the `\r\nTrace ID: ... Timestamp: ...` suffix.
    pub description: String,
    /// `trace_id`, for support requests.
    pub trace_id: Option<String>,
    /// `correlation_id`, for support requests.
    pub correlation_id: Option<String>,
    /// `suberror` (`user_password_expired`, `consent_required`, `basic_action`, `additional_action`).
    pub suberror: Option<String>,
    /// A Conditional Access claims challenge, kept opaque.
    pub claims: Option<String>,
    /// `error_uri`, when Entra has more detail.
    pub error_uri: Option<String>,
    /// `password_change_url` (with `suberror: user_password_expired`).
    pub password_change_url: Option<String>,
    /// The `Retry-After` header, when present (an HTTP date already turned into a wait from the receive time).
    pub retry_after: Option<Duration>,
    /// When the server said to come back: receive time (injected clock) + `retry_after`.
    pub retry_at: Option<SystemTime>,
    /// The `client-request-id` this client sent (Entra logs it; usually equal to `correlation_id`).
    pub client_request_id: Option<String>,
}

#[derive(Deserialize)]
struct RawEntraError {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default, deserialize_with = "lenient_codes")]
    error_codes: Vec<u32>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
    suberror: Option<String>,
    claims: Option<serde_json::Value>,
    error_uri: Option<String>,
    password_change_url: Option<String>,
}

/// `error_codes` should be an integer array; accept numbers as strings and a bare number too.
fn lenient_codes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let one = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(match &value {
        serde_json::Value::Array(items) => items.iter().filter_map(one).collect(),
        other => one(other).into_iter().collect(),
    })
}

impl EntraError {
    /// Parses an error body. Returns `None` when the body is not JSON or has no `error` field (then it is
    /// not an OAuth error reply, e.g. a proxy's HTML page).
    pub fn parse(http_status: u16, body: &[u8]) -> Option<Self> {
        let raw: RawEntraError = serde_json::from_slice(body).ok()?;
        let error = strip_control(&raw.error?);
        let mut error_codes = raw.error_codes;
        let description = raw
            .error_description
            .map(|d| strip_control(&strip_trace_suffix(&d)))
            .unwrap_or_default();
        let clean = |v: Option<String>| v.map(|v| strip_control(&v));
        // Some replies carry the code only in the description ("AADSTS50126: ..."); recover it so branching
        // on codes still works. (This reads the description for the code only, never to branch on text.)
        if error_codes.is_empty()
            && let Some(code) = leading_aadsts_code(&description)
        {
            error_codes.push(code);
        }
        Some(Self {
            http_status,
            error,
            error_codes,
            description,
            trace_id: clean(raw.trace_id),
            correlation_id: clean(raw.correlation_id),
            suberror: clean(raw.suberror),
            claims: raw.claims.map(|c| match c {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
            error_uri: clean(raw.error_uri),
            password_change_url: clean(raw.password_change_url),
            retry_after: None,
            retry_at: None,
            client_request_id: None,
        })
    }

    /// The catalogue entry of the first known code.
    pub fn known(&self) -> Option<&'static AadstsInfo> {
        aadsts::first_known(&self.error_codes)
    }

    /// Whether any of the codes is `code`.
    pub fn has_code(&self, code: u32) -> bool {
        self.error_codes.contains(&code)
    }

    /// The class: codes first, then `error`, then `suberror`, then the HTTP status.
    pub fn class(&self) -> ErrorClass {
        if let Some(info) = self.known() {
            return info.class;
        }
        match self.error.as_str() {
            "authorization_pending"
            | "slow_down"
            | "authorization_declined"
            | "bad_verification_code"
            | "expired_token" => return ErrorClass::FlowState,
            "temporarily_unavailable" | "server_error" => return ErrorClass::Transient,
            "interaction_required" => return ErrorClass::SwitchFlow,
            "consent_required" => return ErrorClass::Admin,
            "invalid_client"
            | "unauthorized_client"
            | "invalid_scope"
            | "invalid_request"
            | "unsupported_grant_type"
            | "invalid_resource" => return ErrorClass::Config,
            "invalid_grant" => return ErrorClass::User,
            _ => {}
        }
        match self.suberror.as_deref() {
            Some("user_password_expired") => return ErrorClass::User,
            Some("consent_required") => return ErrorClass::Admin,
            Some("basic_action" | "additional_action") => return ErrorClass::SwitchFlow,
            _ => {}
        }
        if self.http_status == 429 || self.http_status >= 500 {
            ErrorClass::Transient
        } else {
            ErrorClass::Config
        }
    }

    /// Named cause.
    pub fn cause(&self) -> String {
        if let Some(info) = self.known() {
            return info.cause.to_owned();
        }
        match self.error.as_str() {
            "authorization_declined" => "device flow: the user declined the sign-in".into(),
            "expired_token" => "device flow: the device code expired".into(),
            "bad_verification_code" => "device flow: the device code was not recognised".into(),
            "interaction_required" => "an interactive sign-in is required (MFA or policy)".into(),
            "consent_required" => "consent is missing for the requested scopes".into(),
            "temporarily_unavailable" | "server_error" => "Entra is temporarily unavailable".into(),
            "invalid_client" => "the client could not be authenticated".into(),
            "invalid_scope" => "the scope is not valid".into(),
            "invalid_grant" => "the grant (password, code or refresh token) is not valid".into(),
            "unauthorized_client" => "the client is not authorised for this grant".into(),
            other => format!("Entra ID refused the request ({other})"),
        }
    }

    /// Remedy (with the time to come back when the server sent `Retry-After`).
    pub fn remedy(&self) -> String {
        format!("{}{}", self.base_remedy(), come_back(self.retry_at))
    }

    fn base_remedy(&self) -> String {
        let expired =
            self.has_code(50055) || self.suberror.as_deref() == Some("user_password_expired");
        if expired && self.known().is_none_or(|i| i.code == 50055) {
            return match &self.password_change_url {
                Some(url) => format!("the user must change the password at {url}, then retry"),
                None => "the user must change the password, then retry".into(),
            };
        }
        if let Some(info) = self.known() {
            return info.remedy.to_owned();
        }
        match (self.error.as_str(), self.suberror.as_deref()) {
            ("authorization_declined" | "expired_token" | "bad_verification_code", _) => {
                "start a new device-code sign-in".into()
            }
            ("interaction_required", _) => "use device code or auth code + PKCE".into(),
            (_, Some("user_password_expired")) => "the user must change the password".into(),
            ("consent_required", _) | (_, Some("consent_required")) => {
                "grant admin consent (App registration → API permissions → Grant admin consent)"
                    .into()
            }
            ("temporarily_unavailable" | "server_error", _) => "retry later with backoff".into(),
            _ => match self.error_codes.first() {
                Some(code) => format!("see https://login.microsoftonline.com/error?code={code}"),
                None => "check the app registration and the request".into(),
            },
        }
    }
}

impl fmt::Display for EntraError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known() {
            Some(info) => write!(f, "AADSTS{} {}: {}", info.code, info.name, info.cause)?,
            None => match self.error_codes.first() {
                Some(code) => write!(f, "AADSTS{code}: {}", self.cause())?,
                None => write!(f, "{}", self.cause())?,
            },
        }
        write!(f, ". Remedy: {}", self.remedy())?;
        write!(f, " [error={}, HTTP {}", self.error, self.http_status)?;
        if self.error_codes.len() > 1 {
            let codes: Vec<String> = self.error_codes.iter().map(u32::to_string).collect();
            write!(f, ", codes={}", codes.join(","))?;
        }
        if let Some(sub) = &self.suberror {
            write!(f, ", suberror={sub}")?;
        }
        if let Some(trace) = &self.trace_id {
            write!(f, ", trace ID {trace}")?;
        }
        if let Some(corr) = &self.correlation_id {
            write!(f, ", correlation ID {corr}")?;
        }
        if let Some(id) = &self.client_request_id
            && self.correlation_id.as_ref() != Some(id)
        {
            write!(f, ", client-request-id {id}")?;
        }
        f.write_str("]")?;
        if !self.description.is_empty() {
            write!(f, " Entra said: {}", self.description)?;
        }
        Ok(())
    }
}

/// `; retry after <UTC time>` when the server named a time to come back, else empty.
fn come_back(at: Option<SystemTime>) -> String {
    at.map(|t| {
        format!(
            "; retry after {} (the server's Retry-After)",
            rfc3339(unix_secs(t))
        )
    })
    .unwrap_or_default()
}

/// Server text made safe to print on a terminal: control characters (ESC, CR, BEL, ... but not `\n`) and the
/// Unicode bidirectional overrides are removed, so a reply cannot move the cursor, rewrite earlier output or
/// reorder what is shown.
pub fn strip_control(text: &str) -> String {
    text.chars()
        .filter(|c| {
            *c == '\n'
                || !(c.is_control()
                    || matches!(*c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        })
        .collect()
}

/// Cuts `\r\nTrace ID: ...` (and everything after) off an `error_description`.
pub fn strip_trace_suffix(description: &str) -> String {
    let cut = ["\r\nTrace ID:", "\nTrace ID:", " Trace ID:"]
        .iter()
        .filter_map(|m| description.find(m))
        .min()
        .unwrap_or(description.len());
    description[..cut].trim_end().to_owned()
}

fn leading_aadsts_code(description: &str) -> Option<u32> {
    let rest = description.strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Which grant a request is for (used in messages and tenant checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// ROPC (`grant_type=password`).
    Password,
    /// Device authorization grant.
    DeviceCode,
    /// Client credentials (secret or certificate).
    ClientCredentials,
    /// Refresh token.
    RefreshToken,
    /// Authorization code + PKCE.
    AuthCode,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Password => "password (ROPC)",
            Self::DeviceCode => "device code",
            Self::ClientCredentials => "client credentials",
            Self::RefreshToken => "refresh token",
            Self::AuthCode => "authorization code",
        })
    }
}

/// Every error of the auth layer. Display shows cause and remedy (and, for Entra errors, code, name, trace and
/// correlation ids) and never a secret.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A user-supplied value is invalid (client id, tenant, username, URL, ...), detected before any request.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The tenant alias cannot be used with this grant (e.g. `common` with ROPC), detected before any request.
    #[error(
        "the {grant} grant cannot use the '{tenant}' tenant endpoint; use the tenant GUID or domain{}",
        if *.grant == Grant::Password { " (or `organizations`)" } else { "" }
    )]
    TenantNotAllowed {
        /// The grant.
        grant: Grant,
        /// The alias that was refused.
        tenant: String,
    },
    /// The grant needs a client credential (secret or certificate) that is not configured.
    #[error("the {grant} grant needs a client secret or certificate; none is configured")]
    MissingCredential {
        /// The grant.
        grant: Grant,
    },
    /// Entra ID answered with its error JSON.
    #[error("{0}")]
    Entra(Box<EntraError>),
    /// The server answered with something that is not JSON (e.g. a proxy page).
    #[error(
        "unexpected reply from {url}: HTTP {status}, not an OAuth JSON body: {excerpt:?}{}",
        come_back(*.retry_at)
    )]
    UnexpectedReply {
        /// Endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The first ~200 characters of the body, with secrets redacted.
        excerpt: String,
        /// The `Retry-After` header, when present.
        retry_after: Option<Duration>,
        /// When the server said to come back (receive time + `retry_after`).
        retry_at: Option<SystemTime>,
    },
    /// The reply body is larger than [`crate::http::MAX_REPLY_BODY`] (no Entra reply is): reading stopped at
    /// the limit and the connection was closed.
    #[error(
        "the reply from {url} (HTTP {status}) is larger than {} KiB and was not read further{}",
        .limit / 1024,
        if .excerpt.is_empty() { String::new() } else { format!(": {:?}", .excerpt) }
    )]
    ReplyTooLarge {
        /// Endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The limit, in bytes.
        limit: usize,
        /// The first ~200 characters of an error body, with secrets redacted (empty for a success reply,
        /// which may hold tokens).
        excerpt: String,
    },
    /// A success reply that is not a valid token response.
    #[error("malformed token response from {url}: {reason}")]
    MalformedResponse {
        /// Endpoint.
        url: String,
        /// What was wrong (never the token itself).
        reason: String,
    },
    /// The token type is not Bearer.
    #[error("unsupported token_type {0:?} (expected Bearer)")]
    UnsupportedTokenType(String),
    /// The connection failed: refused, timed out, TLS (an untrusted issuer, a wrong host name), or broken.
    /// The cause chain (reqwest → hyper → io → rustls) is kept as the source.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The URL's scheme does not match what the server speaks: `http://` to an HTTPS server, or `https://` to
    /// a plain-HTTP one.
    #[error(
        "{url}: {}",
        if *.server_tls {
            "the URL is plain http://, but the server speaks HTTPS (TLS)"
        } else {
            "the URL is https://, but the server answered in plain HTTP"
        }
    )]
    SchemeMismatch {
        /// Endpoint.
        url: String,
        /// The server speaks TLS (the URL was `http://`); `false`: it speaks plain HTTP (the URL was
        /// `https://`).
        server_tls: bool,
    },
    /// A certificate, private key or CA file could not be loaded or used.
    #[error("credential error: {0}")]
    Credential(String),
    /// The TLS trust (an extra CA file) could not be set up; nothing was sent.
    #[error(transparent)]
    Trust(#[from] crate::tls::TlsError),
    /// Device flow: `expires_in` elapsed locally before approval.
    #[error("the device code expired before the sign-in was completed")]
    DeviceCodeExpired,
    /// The flow was cancelled by the caller.
    #[error("the sign-in was cancelled")]
    Cancelled,
    /// Auth code: the `state` on the redirect does not match the one sent.
    #[error("the redirect's state does not match the request (possible CSRF); sign-in aborted")]
    StateMismatch,
    /// Auth code: the authorize endpoint redirected back with an error.
    #[error("the authorization endpoint returned {error}: {description}")]
    AuthorizeRedirect {
        /// `error` query parameter.
        error: String,
        /// `error_description` query parameter, without the trace suffix.
        description: String,
    },
    /// Auth code: the loopback redirect listener failed or timed out.
    #[error("loopback redirect listener: {0}")]
    Redirect(String),
    /// A delegated sign-in returned a token for another account than the one asked for (`--username`, login
    /// hint): whoever completed the browser or device-code sign-in is not that user. Nothing was cached.
    #[error(
        "signed in as {signed_in}, but the account asked for is {expected}; the token was not cached"
    )]
    AccountMismatch {
        /// The account asked for.
        expected: String,
        /// The account in the token.
        signed_in: String,
    },
    /// No refresh token is available for this account.
    #[error(
        "no refresh token is cached for this account; sign in with an interactive or password flow"
    )]
    NoRefreshToken,
    /// The token cache could not be read or written.
    #[error("token cache {path}: {detail}")]
    Cache {
        /// Cache file.
        path: String,
        /// Detail.
        detail: String,
    },
    /// Another process held a token-cache lock (the cache file's, or a key's while it renews a token) longer
    /// than the cache's lock timeout ([`super::TokenCache::with_lock_timeout`]).
    #[error(
        "token cache {path}: {} holds the lock; gave up after waiting {:.1} s",
        .holder.as_deref().unwrap_or("another process"),
        .waited.as_secs_f64()
    )]
    CacheLocked {
        /// Cache file.
        path: String,
        /// Who holds the lock and why (`pid 1234: token request for …`), as the holder wrote it into the lock
        /// file; `None` when it wrote nothing.
        holder: Option<String>,
        /// How long this process waited.
        waited: Duration,
    },
    /// The token cache file has a format version this build does not know: it was written by a newer
    /// m365mail. It is neither read nor overwritten.
    #[error(
        "token cache {path} was written by a newer m365mail (format version {version}; this one reads version {supported}); it is left as it is"
    )]
    CacheVersion {
        /// Cache file.
        path: String,
        /// The file's `version`.
        version: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// The token cache file is readable by group or others; it is not read.
    #[error(
        "refusing to read token cache {path}: mode {mode:o} is group/world-accessible; run `chmod 600 {path}`"
    )]
    InsecureCache {
        /// Cache file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

impl From<EntraError> for AuthError {
    fn from(e: EntraError) -> Self {
        Self::Entra(Box::new(e))
    }
}

impl Classified for AuthError {
    fn class(&self) -> ErrorClass {
        AuthError::class(self)
    }
    fn cause(&self) -> String {
        AuthError::cause(self)
    }
    fn remedy(&self) -> String {
        AuthError::remedy(self)
    }
}

impl AuthError {
    /// Who has to act.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::InvalidInput { .. } => ErrorClass::Input,
            Self::Trust(e) => e.class(),
            Self::TenantNotAllowed { .. }
            | Self::MissingCredential { .. }
            | Self::Credential(_)
            | Self::UnsupportedTokenType(_)
            | Self::Cache { .. }
            | Self::CacheVersion { .. }
            | Self::InsecureCache { .. } => ErrorClass::Config,
            Self::CacheLocked { .. } => ErrorClass::Transient,
            Self::Entra(e) => e.class(),
            Self::UnexpectedReply { status, .. } => {
                if *status == 429 || *status >= 500 {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Config
                }
            }
            Self::MalformedResponse { .. } | Self::ReplyTooLarge { .. } => ErrorClass::Config,
            Self::Transport(e) => e.class(),
            Self::SchemeMismatch { .. } => ErrorClass::Config,
            Self::DeviceCodeExpired
            | Self::Cancelled
            | Self::StateMismatch
            | Self::Redirect(_)
            | Self::AuthorizeRedirect { .. } => ErrorClass::FlowState,
            Self::NoRefreshToken | Self::AccountMismatch { .. } => ErrorClass::User,
        }
    }

    /// Whether retrying later may succeed. Bad credentials (50126) and lockout (50053) are never transient.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The Entra error, if this is one.
    pub fn entra(&self) -> Option<&EntraError> {
        match self {
            Self::Entra(e) => Some(e),
            _ => None,
        }
    }

    /// Whether Entra reported `code` (anywhere in `error_codes`).
    pub fn has_code(&self, code: u32) -> bool {
        self.entra().is_some_and(|e| e.has_code(code))
    }

    /// Named cause, one line.
    pub fn cause(&self) -> String {
        match self {
            Self::Entra(e) => e.cause(),
            Self::TenantNotAllowed { grant, tenant } => {
                format!("the {grant} grant is not supported over /{tenant}")
            }
            Self::Transport(e) => Classified::cause(e),
            Self::SchemeMismatch {
                server_tls: true, ..
            } => "the authority URL is http://, but the server speaks HTTPS".into(),
            Self::SchemeMismatch { .. } => {
                "the authority URL is https://, but the server speaks plain HTTP".into()
            }
            Self::InsecureCache { .. } => "the token cache file is readable by others".into(),
            Self::Trust(e) => e.cause(),
            Self::CacheLocked { .. } => "another process holds the token cache lock".into(),
            Self::CacheVersion { .. } => "the token cache was written by a newer m365mail".into(),
            Self::ReplyTooLarge { limit, .. } => format!(
                "the server sent a reply larger than {} KiB, far more than any Entra ID reply",
                limit / 1024
            ),
            other => other.to_string(),
        }
    }

    /// What to do.
    pub fn remedy(&self) -> String {
        match self {
            Self::Entra(e) => e.remedy(),
            Self::InvalidInput { field, .. } => match *field {
                // A secret never goes into the config file or onto argv (others can read both).
                "password" => "supply the password through M365MAIL_PASSWORD, --password-stdin or the prompt \
                               (never in the config file or on the command line)"
                    .into(),
                "client secret" => "supply the client secret through M365MAIL_CLIENT_SECRET, --secret-file or \
                                    the prompt (never in the config file or on the command line)"
                    .into(),
                "refresh token" => "supply the refresh token through M365MAIL_REFRESH_TOKEN, or sign in again \
                                    (never in the config file or on the command line)"
                    .into(),
                _ => format!("fix the {field} in the profile or arguments"),
            },
            Self::TenantNotAllowed { .. } => {
                "set tenant to the tenant GUID or verified domain".into()
            }
            Self::MissingCredential { .. } => {
                "configure a client secret (M365MAIL_CLIENT_SECRET / --secret-file) or a certificate".into()
            }
            Self::UnexpectedReply { retry_at, .. } => format!(
                "check the authority URL / cloud and any proxy in between{}",
                come_back(*retry_at)
            ),
            Self::ReplyTooLarge { .. } => {
                "check the authority URL / cloud and any proxy in between".into()
            }
            Self::MalformedResponse { .. } | Self::UnsupportedTokenType(_) => {
                "check the authority URL points at Entra ID".into()
            }
            Self::Transport(e) => e.remedy(),
            Self::SchemeMismatch {
                server_tls: true, ..
            } => "use https:// in the authority (with --ca-file if its CA is not publicly trusted)".into(),
            Self::SchemeMismatch {
                server_tls: false,
                ..
            } => "use http:// in the authority (loopback hosts only), or the server's HTTPS port".into(),
            Self::Credential(_) => "check the certificate / private key / CA file paths and formats".into(),
            Self::DeviceCodeExpired => "start a new device-code sign-in and complete it in time".into(),
            Self::Cancelled => "run the command again".into(),
            Self::StateMismatch | Self::Redirect(_) | Self::AuthorizeRedirect { .. } => {
                "start the sign-in again".into()
            }
            Self::NoRefreshToken => "sign in once with device code, auth code or password".into(),
            Self::AccountMismatch { expected, .. } => {
                format!("sign in as {expected}, or pass that account as --username")
            }
            Self::Cache { .. } => "check the cache path and its permissions, or use --no-cache".into(),
            Self::InsecureCache { path, .. } => format!("chmod 600 {path}"),
            Self::Trust(e) => e.remedy(),
            Self::CacheLocked { .. } => {
                "retry when that process has finished (stop it if it hangs); the wait is bounded by the cache's \
                 lock timeout (the CLI's --timeout)"
                    .into()
            }
            Self::CacheVersion { .. } => {
                "use the newer m365mail, pass another cache path, or remove this cache (`m365mail token clear --all`)"
                    .into()
            }
        }
    }

    /// The `Retry-After` the server asked for, if any (as a wait from when the reply was received).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::UnexpectedReply { retry_after, .. } => *retry_after,
            other => other.entra().and_then(|e| e.retry_after),
        }
    }

    /// When the server said to come back (`Retry-After` from the receive time, by the injected clock). A
    /// request that carries a user credential or a one-time code is never sent again before it.
    pub fn retry_at(&self) -> Option<SystemTime> {
        match self {
            Self::UnexpectedReply { retry_at, .. } => *retry_at,
            other => other.entra().and_then(|e| e.retry_at),
        }
    }

    /// Whether a cached refresh token should be dropped after this error on refresh (the grant is dead).
    pub fn refresh_token_is_dead(&self) -> bool {
        let Some(e) = self.entra() else { return false };
        [50173, 70000, 70008, 700082, 70043, 50076, 50079, 65001]
            .iter()
            .any(|c| e.has_code(*c))
            || (e.error == "invalid_grant" && e.error_codes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two codes, and a field this parser does not know (Entra adds fields over time).
    const ROPC_BAD: &str = include_str!("../../../../testdata/entra/multi-code-70002-50126.json");

    #[test]
    fn parses_multi_code_error_and_strips_trace_suffix() {
        let e = EntraError::parse(400, ROPC_BAD.as_bytes()).unwrap();
        assert_eq!(e.error, "invalid_grant");
        assert_eq!(e.error_codes, vec![70002, 50126]);
        assert_eq!(
            e.description,
            "AADSTS50126: Error validating credentials due to invalid username or password."
        );
        assert_eq!(
            e.trace_id.as_deref(),
            Some("0000aaaa-11bb-cccc-dd33-eeeeee333333")
        );
        assert_eq!(
            e.correlation_id.as_deref(),
            Some("aaaa0000-bb11-2222-33cc-444444dddddd")
        );
        assert!(e.has_code(50126));
        // A user-credential code outranks the client code that precedes it.
        assert_eq!(e.known().unwrap().code, 50126);
        assert_eq!(e.class(), ErrorClass::User);
        let mut locked = e.clone();
        locked.error_codes = vec![70002, 50053];
        assert_eq!(locked.known().unwrap().code, 50053);
        let mut client_only = e.clone();
        client_only.error_codes = vec![70002, 7000218];
        assert_eq!(client_only.known().unwrap().code, 70002);
        let err = AuthError::from(e);
        let shown = err.to_string();
        assert!(shown.contains("AADSTS50126"), "{shown}");
        assert!(shown.contains("codes=70002,50126"), "{shown}");
        assert!(shown.contains("trace ID 0000aaaa"), "{shown}");
        assert!(shown.contains("correlation ID aaaa0000"), "{shown}");
        assert!(!shown.contains("Timestamp"), "{shown}");
        assert!(!err.is_transient());
    }

    #[test]
    fn branches_on_codes_then_error_then_suberror() {
        let lockout = br#"{"error":"unauthorized_client","error_codes":[50053]}"#;
        let e = EntraError::parse(400, lockout).unwrap();
        assert_eq!(e.class(), ErrorClass::User);
        let pending = br#"{"error":"authorization_pending","error_codes":[70016]}"#;
        assert_eq!(
            EntraError::parse(400, pending).unwrap().class(),
            ErrorClass::FlowState
        );
        let slow = br#"{"error":"slow_down"}"#;
        assert_eq!(
            EntraError::parse(400, slow).unwrap().class(),
            ErrorClass::FlowState
        );
        let busy = br#"{"error":"temporarily_unavailable"}"#;
        assert!(AuthError::from(EntraError::parse(503, busy).unwrap()).is_transient());
        let sub = br#"{"error":"some_new_error","suberror":"user_password_expired"}"#;
        assert_eq!(
            EntraError::parse(400, sub).unwrap().class(),
            ErrorClass::User
        );
        let unknown = br#"{"error":"weird","error_codes":[999999999]}"#;
        assert_eq!(
            EntraError::parse(500, unknown).unwrap().class(),
            ErrorClass::Transient
        );
        let mfa = br#"{"error":"invalid_grant","error_codes":[50076],"claims":{"access_token":{"capolids":{"essential":true}}}}"#;
        let e = EntraError::parse(400, mfa).unwrap();
        assert_eq!(e.class(), ErrorClass::SwitchFlow);
        assert_eq!(
            e.claims.as_deref(),
            Some(r#"{"access_token":{"capolids":{"essential":true}}}"#)
        );
    }

    /// The 50055 remedy names the `password_change_url` when Entra sent one.
    #[test]
    fn expired_password_remedy_names_the_change_url() {
        let with = br#"{"error":"user_password_expired","error_codes":[50055],"suberror":"user_password_expired","password_change_url":"https://portal.microsoftonline.com/ChangePassword.aspx"}"#;
        let e = EntraError::parse(400, with).unwrap();
        assert_eq!(
            e.remedy(),
            "the user must change the password at https://portal.microsoftonline.com/ChangePassword.aspx, then retry"
        );
        let without = br#"{"error":"user_password_expired","error_codes":[50055]}"#;
        assert_eq!(
            EntraError::parse(400, without).unwrap().remedy(),
            "the user must change the password, then retry"
        );
        // Recognised by the suberror too, when the code is not one of the catalogue's.
        let sub = br#"{"error":"invalid_grant","suberror":"user_password_expired","password_change_url":"https://x.example/pw"}"#;
        assert_eq!(
            EntraError::parse(400, sub).unwrap().remedy(),
            "the user must change the password at https://x.example/pw, then retry"
        );
    }

    #[test]
    fn lenient_parsing() {
        assert!(EntraError::parse(502, b"<html>Bad gateway</html>").is_none());
        assert!(EntraError::parse(400, br#"{"no_error":1}"#).is_none());
        let e = EntraError::parse(
            400,
            br#"{"error":"invalid_client","error_codes":"7000215"}"#,
        )
        .unwrap();
        assert_eq!(e.error_codes, vec![7000215]);
        let e = EntraError::parse(
            401,
            br#"{"error":"invalid_client","error_description":"AADSTS7000218: The request body must contain ...\r\nTrace ID: x"}"#,
        )
        .unwrap();
        assert_eq!(e.error_codes, vec![7000218]);
        assert!(e.remedy().contains("Allow public client flows = Yes"));
    }

    #[test]
    fn server_text_loses_control_characters() {
        let e = EntraError::parse(
            400,
            br#"{"error":"invalid_grant\u001b[2J","error_codes":[50126],"error_description":"AADSTS50126: bad\u001b]0;pwned\u0007 creds\u202e.\nline two","suberror":"x\r\u001b[1A","trace_id":"t\u0008"}"#,
        )
        .unwrap();
        let shown = format!("{}", AuthError::from(e.clone()));
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(!shown.contains('\u{202e}'));
        assert!(e.description.contains("line two") && e.description.contains('\n'));
        assert_eq!(e.error, "invalid_grant[2J");
    }

    #[test]
    fn strip_suffix_variants() {
        assert_eq!(strip_trace_suffix("plain"), "plain");
        assert_eq!(strip_trace_suffix("x\nTrace ID: 1\nCorrelation ID: 2"), "x");
        assert_eq!(strip_trace_suffix("x.\r\nTrace ID: 1"), "x.");
    }

    /// Every parser of untrusted input survives garbage and every truncation of valid input without panicking.
    #[test]
    fn parsers_never_panic_on_garbage_or_truncation() {
        use rand::Rng as _;

        use crate::auth::device_code::DeviceCode;
        use crate::auth::inspect::inspect_at;
        use crate::auth::response::TokenResponse;
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let samples: [&[u8]; 3] = [
            ROPC_BAD.as_bytes(),
            br#"{"token_type":"Bearer","access_token":"eyJ.eyJ.x","expires_in":"3599","refresh_token":"r","id_token":"i","scope":"a b"}"#,
            br#"{"device_code":"d","user_code":"u","verification_uri":"v","expires_in":900,"interval":5,"message":"m"}"#,
        ];
        // Huge and invalid numbers: no overflow panic, no default in place of an invalid value.
        for n in [
            "18446744073709551615",
            "\"18446744073709551616\"",
            "1e308",
            "-1",
            "\"-1\"",
        ] {
            let t = format!(
                r#"{{"token_type":"Bearer","access_token":"a","expires_in":{n},"ext_expires_in":{n}}}"#
            );
            let _ = TokenResponse::parse(t.as_bytes(), now, "u");
            let _ = TokenResponse::parse(
                t.as_bytes(),
                std::time::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64),
                "u",
            );
            let d = format!(
                r#"{{"device_code":"d","user_code":"u","verification_uri":"v","expires_in":{n},"interval":{n}}}"#
            );
            let _ = DeviceCode::parse(d.as_bytes(), now, "u");
            let _ = DeviceCode::parse(
                d.as_bytes(),
                std::time::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64),
                "u",
            );
        }
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for sample in samples {
            for cut in 0..=sample.len() {
                inputs.push(sample[..cut].to_vec());
            }
        }
        let mut rng = rand::rng();
        for _ in 0..3000 {
            let len = rng.random_range(0..120);
            inputs.push((0..len).map(|_| rng.random::<u8>()).collect());
        }
        for input in &inputs {
            let _ = EntraError::parse(400, input);
            let _ = TokenResponse::parse(input, now, "u");
            let _ = DeviceCode::parse(input, now, "u");
            let text = String::from_utf8_lossy(input);
            let _ = inspect_at(&text, now);
            let _ = inspect_at(&format!("{text}.{text}.{text}"), now);
        }
    }

    /// A remedy clause that names a secret and a place in the config file or on the command line tells a
    /// person to put the secret there; secrets belong in the environment, a secret file, stdin or the prompt.
    fn puts_a_secret_in_config_or_argv(remedy: &str) -> Option<String> {
        let lower = remedy.to_ascii_lowercase();
        lower
            .split([';', ',', '(', ')', '.', '—'])
            .find(|clause| {
                let secret = ["password", "secret", "refresh token"]
                    .iter()
                    .any(|w| clause.contains(w));
                let place = ["profile", "config file", "argument", "argv", "command line"]
                    .iter()
                    .any(|w| clause.contains(w));
                secret && place && !clause.contains("never")
            })
            .map(str::to_owned)
    }

    #[test]
    fn no_remedy_puts_a_secret_in_the_config_file_or_on_argv() {
        let mut remedies: Vec<String> = aadsts::CATALOGUE
            .iter()
            .map(|i| i.remedy.to_owned())
            .collect();
        for field in [
            "password",
            "client secret",
            "refresh token",
            "username",
            "tenant",
            "scope",
            "authority",
            "client id",
        ] {
            remedies.push(
                AuthError::InvalidInput {
                    field,
                    reason: "x".into(),
                }
                .remedy(),
            );
        }
        remedies.push(
            AuthError::MissingCredential {
                grant: Grant::ClientCredentials,
            }
            .remedy(),
        );
        remedies.push(AuthError::Credential("x".into()).remedy());
        remedies.push(AuthError::NoRefreshToken.remedy());
        for r in &remedies {
            assert_eq!(puts_a_secret_in_config_or_argv(r), None, "{r}");
        }
        let pw = AuthError::InvalidInput {
            field: "password",
            reason: "empty".into(),
        }
        .remedy();
        assert_eq!(
            pw,
            "supply the password through M365MAIL_PASSWORD, --password-stdin or the prompt (never in the \
             config file or on the command line)"
        );
        let cs = AuthError::InvalidInput {
            field: "client secret",
            reason: "empty".into(),
        }
        .remedy();
        assert_eq!(
            cs,
            "supply the client secret through M365MAIL_CLIENT_SECRET, --secret-file or the prompt (never in \
             the config file or on the command line)"
        );
        assert_eq!(
            AuthError::InvalidInput {
                field: "tenant",
                reason: "x".into()
            }
            .remedy(),
            "fix the tenant in the profile or arguments"
        );
    }

    #[test]
    fn local_errors_are_classified() {
        assert_eq!(AuthError::Cancelled.class(), ErrorClass::FlowState);
        assert!(
            AuthError::from(crate::transport::TransportError::bare(
                crate::transport::TransportKind::Timeout,
                "u"
            ))
            .is_transient()
        );
        assert_eq!(
            AuthError::TenantNotAllowed {
                grant: Grant::Password,
                tenant: "common".into()
            }
            .class(),
            ErrorClass::Config
        );
        let e = AuthError::UnexpectedReply {
            url: "u".into(),
            status: 502,
            excerpt: "x".into(),
            retry_after: None,
            retry_at: None,
        };
        assert!(e.is_transient());
    }
}
