//! [`TokenClient`]: one async method per grant against an [`Authority`], hand-rolled on reqwest + rustls.
//!
//! Every request is a form POST encoded once by the form encoder (secrets contain `~ . _ -`); TLS is verified
//! (platform verifier, plus an optional extra CA for the sandbox); redirects are not followed; transient
//! failures are retried a bounded number of times honouring `Retry-After`. Bad credentials are never transient,
//! so they are never retried (smart lockout).

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use url::Url;

use super::assertion::{ASSERTION_TYPE, AssertionAlg, CertificateCredential};
use super::authority::{Authority, validate_client_id, validate_identifier};
use super::device_code::{DeviceCode, DevicePoller};
use super::error::{AuthError, EntraError, Grant, strip_control, strip_trace_suffix};
use super::pkce::{Pkce, random_b64url};
use super::response::TokenResponse;
use super::scopes::Scopes;
use crate::http::{MAX_REPLY_BODY, parse_retry_after, read_bounded};
use crate::secret::Secret;
use crate::time::{Clock, Sleeper, SystemClock, TokioSleeper};
use crate::tls::TlsTrust;
use crate::transport::{TransportError, TransportKind, find_rustls_error};

/// How the client authenticates itself.
#[derive(Debug, Clone, Default)]
pub enum ClientCredential {
    /// A public client: sends no secret or assertion (device code, ROPC without secret, native auth code).
    #[default]
    Public,
    /// A client secret (the secret's *value*).
    Secret {
        /// The value.
        secret: Secret,
        /// `client_secret_basic` (HTTP Basic) instead of the default `client_secret_post`.
        basic: bool,
    },
    /// A certificate: a signed JWT assertion per request (`private_key_jwt`).
    Certificate {
        /// Certificate and key.
        cert: Arc<CertificateCredential>,
        /// Signature algorithm and thumbprint header.
        alg: AssertionAlg,
    },
}

impl ClientCredential {
    /// A `client_secret_post` credential.
    pub fn secret(secret: Secret) -> Self {
        Self::Secret {
            secret,
            basic: false,
        }
    }

    /// Whether this is a public client.
    pub fn is_public(&self) -> bool {
        matches!(self, Self::Public)
    }
}

/// Bounded retry of transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub base_delay: Duration,
    /// Longest wait before a retry. A `Retry-After` is never cut short: a longer one ends the retries (the
    /// error says when to come back).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Options for [`TokenClient::new`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Extra CA certificates (PEM) to trust besides the platform roots, e.g. the sandbox CA.
    pub extra_ca_pem: Option<String>,
    /// A PEM file with extra CA certificates (read at construction).
    pub ca_file: Option<PathBuf>,
    /// Trust only the extra CAs, not the platform roots.
    pub ca_only: bool,
    /// The trust setup shared with the other clients (platform roots when `None`); `extra_ca_pem` and
    /// `ca_file` are added to it.
    pub trust: Option<TlsTrust>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The clock (expiry, assertions, polling deadlines).
    pub clock: Arc<dyn Clock>,
    /// The sleeper (polling interval, backoff).
    pub sleeper: Arc<dyn Sleeper>,
    /// Transient-failure retries.
    pub retry: RetryPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            extra_ca_pem: None,
            ca_file: None,
            ca_only: false,
            trust: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
            sleeper: Arc::new(TokioSleeper),
            retry: RetryPolicy::default(),
        }
    }
}

/// Options for [`TokenClient::auth_code`].
#[derive(Debug, Clone)]
pub struct AuthCodeOptions {
    /// Host in the redirect URI (`localhost` matches the `http://localhost` registration; any port is allowed
    /// for loopback).
    pub redirect_host: String,
    /// Port to listen on (0 = any free port).
    pub port: u16,
    /// `prompt` (`login`, `none`, `consent`, `select_account`).
    pub prompt: Option<String>,
    /// `login_hint`.
    pub login_hint: Option<String>,
    /// How long to wait for the browser to come back.
    pub timeout: Duration,
    /// The account the sign-in must be (UPN, case-insensitive): a token for anyone else is refused, and the
    /// browser page says the sign-in failed instead of "complete".
    pub expected_account: Option<String>,
}

impl Default for AuthCodeOptions {
    fn default() -> Self {
        Self {
            redirect_host: "localhost".to_owned(),
            port: 0,
            prompt: None,
            login_hint: None,
            timeout: Duration::from_secs(300),
            expected_account: None,
        }
    }
}

/// The token client. Cheap to clone.
#[derive(Clone)]
pub struct TokenClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    authority: Authority,
    client_id: String,
    credential: ClientCredential,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("authority", &self.inner.authority.to_string())
            .field("client_id", &self.inner.client_id)
            .field("credential", &self.inner.credential)
            .finish()
    }
}

impl TokenClient {
    /// Builds a client. Validates the client id and loads the extra CA before any request.
    pub fn new(
        authority: Authority,
        client_id: impl Into<String>,
        credential: ClientCredential,
        options: ClientOptions,
    ) -> Result<Self, AuthError> {
        let client_id = client_id.into();
        validate_client_id(&client_id)?;
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("m365mail/", env!("CARGO_PKG_VERSION")));
        // One trust setup for every client (crate::tls): the given trust, plus the extra CA PEM / file.
        let mut trust = options.trust.unwrap_or_default();
        if let Some(pem) = options.extra_ca_pem.as_deref() {
            trust = trust.with_ca_pem(pem, "CA PEM")?;
        }
        if let Some(path) = &options.ca_file {
            trust = trust.with_ca_file(path)?;
        }
        if options.ca_only {
            trust = trust.extra_only();
        }
        builder = builder.tls_backend_preconfigured(trust.http_client_config()?);
        let http = builder
            .build()
            .map_err(|e| AuthError::Credential(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                authority,
                client_id,
                credential,
                clock: options.clock,
                sleeper: options.sleeper,
                retry: options.retry,
            }),
        })
    }

    /// The authority.
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The client credential kind.
    pub fn credential(&self) -> &ClientCredential {
        &self.inner.credential
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// ROPC (`grant_type=password`): public without a secret, confidential with one. Refused over `common` and
    /// `consumers` before any request.
    pub async fn password(
        &self,
        username: &str,
        password: &Secret,
        scopes: &Scopes,
    ) -> Result<TokenResponse, AuthError> {
        self.inner.authority.check_grant(Grant::Password)?;
        validate_identifier("username", username)?;
        scopes.validate()?;
        if password.is_empty() {
            return Err(AuthError::InvalidInput {
                field: "password",
                reason: "empty".into(),
            });
        }
        if password.expose().trim() != password.expose() {
            // ROPC fails for passwords with leading/trailing whitespace (microsoft.md §11); warn, still send.
            tracing::warn!(
                "the password has leading or trailing whitespace; ROPC is known to fail for such passwords"
            );
        }
        let scope = scopes.to_param();
        let params = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose()),
            ("scope", scope.as_str()),
        ];
        self.token_request(Grant::Password, &params).await
    }

    /// Client credentials with the configured secret or certificate. Needs `/.default` scopes and a tenant GUID
    /// or domain (refused before any request otherwise).
    pub async fn client_credentials(&self, scopes: &Scopes) -> Result<TokenResponse, AuthError> {
        self.inner.authority.check_grant(Grant::ClientCredentials)?;
        scopes.validate()?;
        if self.inner.credential.is_public() {
            return Err(AuthError::MissingCredential {
                grant: Grant::ClientCredentials,
            });
        }
        if !scopes.is_default_only() {
            tracing::warn!(scope = %scopes, "client credentials need `{{resource}}/.default` scopes; Entra will answer AADSTS1002012");
        }
        let scope = scopes.to_param();
        let params = [
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
        ];
        self.token_request(Grant::ClientCredentials, &params).await
    }

    /// Redeems a refresh token. A public client sends no secret (as required for device-code/native tokens).
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        scopes: &Scopes,
    ) -> Result<TokenResponse, AuthError> {
        self.inner.authority.check_grant(Grant::RefreshToken)?;
        scopes.validate()?;
        let scope = scopes.to_param();
        let params = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("scope", scope.as_str()),
        ];
        self.token_request(Grant::RefreshToken, &params).await
    }

    /// Step 1 of the device flow: request a code.
    pub async fn start_device_code(&self, scopes: &Scopes) -> Result<DeviceCode, AuthError> {
        self.inner.authority.check_grant(Grant::DeviceCode)?;
        scopes.validate()?;
        let url = self.inner.authority.devicecode_endpoint();
        let scope = scopes.to_param();
        let mut form: Vec<(&str, &str)> =
            vec![("client_id", &self.inner.client_id), ("scope", &scope)];
        // Confidential clients may use the device flow too; a public client must not send a secret.
        if let ClientCredential::Secret { secret, .. } = &self.inner.credential {
            form.push(("client_secret", secret.expose()));
        }
        tracing::debug!(url = %url, "device code request");
        let reply = self.send(&url, &form, None).await?;
        if !reply.is_success() {
            return Err(reply.into_error(&url, &form, None));
        }
        let code = DeviceCode::parse(&reply.body, self.inner.clock.now(), url.as_str())?;
        tracing::debug!(
            expires_in = code.expires_in.as_secs(),
            interval = code.interval.as_secs(),
            "device code issued"
        );
        Ok(code)
    }

    /// One poll of the token endpoint with a device code.
    pub async fn poll_device_code_once(
        &self,
        code: &DeviceCode,
    ) -> Result<TokenResponse, AuthError> {
        let params = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", code.device_code.expose()),
        ];
        self.token_request_once(Grant::DeviceCode, &params).await
    }

    /// Step 2 of the device flow: polls until approved, declined, expired (server or local) or cancelled. Waits
    /// `interval` before every poll (through the injected sleeper); `slow_down` adds 5 s.
    pub async fn poll_device_code(
        &self,
        code: &DeviceCode,
        cancel: impl Future<Output = ()>,
    ) -> Result<TokenResponse, AuthError> {
        let mut cancel = pin!(cancel);
        let mut poller = DevicePoller::new(code);
        loop {
            let wait = poller.next_wait(self.inner.clock.now())?;
            tokio::select! {
                biased;
                () = &mut cancel => return Err(AuthError::Cancelled),
                () = self.inner.sleeper.sleep(wait) => {}
            }
            poller.may_poll(self.inner.clock.now())?;
            let result = tokio::select! {
                biased;
                () = &mut cancel => return Err(AuthError::Cancelled),
                r = self.poll_device_code_once(code) => r,
            };
            match result {
                Ok(token) => {
                    tracing::debug!(polls = poller.polls(), "device code approved");
                    return Ok(token);
                }
                Err(e) => poller.on_error(e)?,
            }
        }
    }

    /// The whole device flow: request a code, hand it to `on_code` (show `code.message` to the user), poll.
    pub async fn device_code(
        &self,
        scopes: &Scopes,
        on_code: impl FnOnce(&DeviceCode),
        cancel: impl Future<Output = ()>,
    ) -> Result<TokenResponse, AuthError> {
        let code = self.start_device_code(scopes).await?;
        on_code(&code);
        self.poll_device_code(&code, cancel).await
    }

    /// The authorize URL for the auth-code flow.
    pub fn authorize_url(
        &self,
        scopes: &Scopes,
        redirect_uri: &str,
        state: &str,
        pkce: &Pkce,
        options: &AuthCodeOptions,
    ) -> Url {
        let mut url = self.inner.authority.authorize_endpoint();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.inner.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("response_mode", "query")
                .append_pair("scope", &scopes.to_param())
                .append_pair("state", state)
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", pkce.method());
            if let Some(p) = &options.prompt {
                q.append_pair("prompt", p);
            }
            if let Some(h) = &options.login_hint {
                q.append_pair("login_hint", h);
            }
        }
        url
    }

    /// Redeems an authorization code with its PKCE verifier.
    pub async fn redeem_code(
        &self,
        code: &Secret,
        redirect_uri: &str,
        verifier: &Secret,
        scopes: &Scopes,
    ) -> Result<TokenResponse, AuthError> {
        scopes.validate()?;
        let scope = scopes.to_param();
        let params = [
            ("grant_type", "authorization_code"),
            ("code", code.expose()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier.expose()),
            ("scope", scope.as_str()),
        ];
        self.token_request(Grant::AuthCode, &params).await
    }

    /// Auth code + PKCE with a loopback redirect listener on 127.0.0.1 (and ::1 on the same port if available). `open_browser` receives the authorize
    /// URL (open it in a browser, print it, or drive it from a test); the listener answers the redirect with a
    /// small HTML page, checks `state`, and the code is redeemed.
    pub async fn auth_code(
        &self,
        scopes: &Scopes,
        options: &AuthCodeOptions,
        open_browser: impl FnOnce(&Url),
        cancel: impl Future<Output = ()>,
    ) -> Result<TokenResponse, AuthError> {
        self.inner.authority.check_grant(Grant::AuthCode)?;
        scopes.validate()?;
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|e| AuthError::Redirect(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| AuthError::Redirect(e.to_string()))?
            .port();
        // `localhost` may resolve to ::1 first in the browser: listen there too on the same port when possible.
        let listener6 = TcpListener::bind(("::1", port)).await.ok();
        let redirect_uri = format!("http://{}:{port}", options.redirect_host);
        let state = random_b64url(24);
        let pkce = Pkce::generate();
        let url = self.authorize_url(scopes, &redirect_uri, &state, &pkce, options);
        tracing::debug!(port, "waiting for the authorization redirect");
        open_browser(&url);
        let mut cancel = pin!(cancel);
        let code = tokio::select! {
            biased;
            () = &mut cancel => return Err(AuthError::Cancelled),
            r = tokio::time::timeout(options.timeout, wait_for_redirect(&listener, listener6.as_ref(), &state)) => match r {
                Ok(r) => r?,
                Err(_) => return Err(AuthError::Redirect(format!(
                    "no redirect within {} s", options.timeout.as_secs()))),
            },
        };
        drop((listener, listener6));
        let (code, mut browser) = code;
        // The browser waits for the verdict: its page says "complete" only once the code is redeemed and
        // the account is the one asked for.
        let result = self
            .redeem_code(&code, &redirect_uri, &pkce.verifier, scopes)
            .await
            .and_then(|response| {
                let Some(expected) = &options.expected_account else {
                    return Ok(response);
                };
                let expected = expected.trim().to_ascii_lowercase();
                let accounts = super::provider::token_accounts(
                    response.access_token.expose(),
                    response.id_token.as_ref().map(Secret::expose),
                );
                if accounts.is_empty() || accounts.contains(&expected) {
                    Ok(response)
                } else {
                    Err(AuthError::AccountMismatch {
                        expected,
                        signed_in: accounts[0].clone(),
                    })
                }
            });
        let (status, text) = match &result {
            Ok(_) => (
                "200 OK",
                "Sign-in complete. You can close this window and return to m365mail.".to_owned(),
            ),
            Err(e) => (
                "400 Bad Request",
                format!(
                    "Sign-in failed: {}. Return to m365mail for what to do.",
                    html_escape(&e.to_string())
                ),
            ),
        };
        reply_page(&mut browser, status, &text).await;
        result
    }

    /// A token request with retries of transient failures. A `Retry-After` is waited in full, never cut
    /// short: when it is longer than [`RetryPolicy::max_delay`], or the retry budget is spent, the error is
    /// returned as it is — transient, with [`AuthError::retry_at`] saying when to come back.
    async fn token_request(
        &self,
        grant: Grant,
        params: &[(&str, &str)],
    ) -> Result<TokenResponse, AuthError> {
        let policy = self.inner.retry;
        let mut attempt = 0u32;
        loop {
            match self.token_request_once(grant, params).await {
                Ok(t) => return Ok(t),
                Err(e) if may_retry(grant, &e) => {
                    let wait = e.retry_after().unwrap_or_else(|| {
                        policy
                            .base_delay
                            .saturating_mul(1 << attempt.min(16))
                            .min(policy.max_delay)
                    });
                    if attempt >= policy.max_retries || wait > policy.max_delay {
                        tracing::info!(
                            %grant,
                            attempts = attempt + 1,
                            retry_after_s = e.retry_after().map(|d| d.as_secs()),
                            "transient failure; not retrying (retry budget spent or the server asks for a longer wait than the retry policy allows)"
                        );
                        return Err(e);
                    }
                    attempt += 1;
                    tracing::info!(%grant, attempt, wait_ms = wait.as_millis() as u64, error = %e, "transient failure; retrying");
                    self.inner.sleeper.sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One token request: adds client id and client authentication (a fresh assertion each time).
    async fn token_request_once(
        &self,
        grant: Grant,
        params: &[(&str, &str)],
    ) -> Result<TokenResponse, AuthError> {
        let url = self.inner.authority.token_endpoint();
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 3);
        form.push(("client_id", &self.inner.client_id));
        form.extend_from_slice(params);
        let assertion;
        let mut basic = None;
        match &self.inner.credential {
            ClientCredential::Public => {}
            ClientCredential::Secret {
                secret,
                basic: false,
            } => form.push(("client_secret", secret.expose())),
            ClientCredential::Secret {
                secret,
                basic: true,
            } => basic = Some(secret),
            ClientCredential::Certificate { cert, alg } => {
                assertion = cert.assertion(
                    *alg,
                    &self.inner.client_id,
                    url.as_str(),
                    self.inner.clock.as_ref(),
                )?;
                form.push(("client_assertion_type", ASSERTION_TYPE));
                form.push(("client_assertion", assertion.expose()));
            }
        }
        tracing::debug!(%grant, url = %url, "token request");
        let reply = self.send(&url, &form, basic).await?;
        let status = reply.status;
        if reply.is_success() {
            let token = TokenResponse::parse(&reply.body, self.inner.clock.now(), url.as_str())?;
            tracing::debug!(%grant, status, expires_in = token.expires_in.as_secs(), refresh_token = token.refresh_token.is_some(), "token issued");
            return Ok(token);
        }
        let err = reply.into_error(&url, &form, basic);
        tracing::debug!(%grant, status, class = %err.class(), codes = ?err.entra().map(|e| &e.error_codes), "token request refused");
        Err(err)
    }

    async fn send(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<&Secret>,
    ) -> Result<Reply, AuthError> {
        let mut req = self
            .inner
            .http
            .post(url.clone())
            .form(form)
            .header("Accept", "application/json");
        // Like MSAL: a per-request id Entra records (and returns as the correlation id), so a failed sign-in
        // can be found in the tenant's sign-in logs from our debug log alone.
        let request_id = uuid::Uuid::new_v4().to_string();
        tracing::debug!(client_request_id = %request_id, url = %url, "sending");
        req = req
            .header("client-request-id", &request_id)
            .header("return-client-request-id", "true");
        if let Some(secret) = basic {
            // RFC 6749 §2.3.1: form-encode id and secret before Basic encoding.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&self.inner.client_id), Some(enc(secret.expose())));
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Err(scheme_mismatch_or(url, transport_error(url, e)).await),
        };
        let status = resp.status().as_u16();
        // Seconds or an HTTP date, both against the injected clock.
        let received = self.inner.clock.now();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, received));
        let retry_at = retry_after.and_then(|d| received.checked_add(d));
        // Bounded: a hostile or broken server cannot make us hold more than 1 MiB of a reply.
        let body = read_bounded(resp, MAX_REPLY_BODY)
            .await
            .map_err(|e| transport_error(url, e))?;
        let reply = Reply {
            status,
            retry_after,
            retry_at,
            body: body.bytes,
            request_id,
        };
        if body.truncated {
            return Err(reply.too_large(url, form, basic));
        }
        Ok(reply)
    }
}

/// A reply as received by [`TokenClient::send`].
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    /// When the server said to come back (receive time + `retry_after`).
    retry_at: Option<std::time::SystemTime>,
    body: Vec<u8>,
    /// The `client-request-id` sent with the request.
    request_id: String,
}

/// Whether a failed request of `grant` may be sent again. Client credentials are idempotent: any transient
/// failure is retried. The other grants are not: a password attempt counts towards smart lockout, and codes and
/// refresh tokens are single-use (refresh tokens rotate), so a request the server may have processed (a timeout,
/// a dropped connection, a 5xx) is not repeated. They are retried only when the request was never sent (connect
/// error) or the server explicitly asked for a retry (429/503 with `Retry-After`).
fn may_retry(grant: Grant, e: &AuthError) -> bool {
    if !e.is_transient() {
        return false;
    }
    if grant == Grant::ClientCredentials {
        return true;
    }
    let status = match e {
        AuthError::Transport(t) if t.kind() == TransportKind::Connect => return true,
        AuthError::Entra(entra) => entra.http_status,
        AuthError::UnexpectedReply { status, .. } => *status,
        _ => return false,
    };
    matches!(status, 429 | 503) && e.retry_after().is_some()
}

/// Form fields whose values are secrets (removed from any excerpt of a reply).
const SECRET_FIELDS: [&str; 9] = [
    "password",
    "client_secret",
    "client_assertion",
    "refresh_token",
    "code",
    "code_verifier",
    "device_code",
    "access_token",
    "id_token",
];

/// Characters of a non-JSON reply kept in an error ([`AuthError::UnexpectedReply`] and
/// [`AuthError::ReplyTooLarge`]).
const EXCERPT_CHARS: usize = 200;

/// Characters of Entra's `error_description` kept in an error (real descriptions are a few hundred).
const DESCRIPTION_CHARS: usize = 2000;

/// The forms in which a sent secret may come back: raw, form-encoded and percent-encoded.
fn secret_variants(secret: &str) -> [String; 3] {
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let pct = form.replace('+', "%20");
    [secret.to_owned(), form, pct]
}

/// Redacts secrets from server text before it is kept in an error: every value sent in this request under a
/// secret field name (raw, form-encoded and percent-encoded), and the value after any `name=` / `"name":` of a
/// secret field, whatever its origin (a reply may echo a request from someone else's proxy).
fn redact_reply_text(text: &str, sent_secrets: &[&str]) -> String {
    const MASK: &str = "[REDACTED]";
    let mut out = text.to_owned();
    for secret in sent_secrets.iter().filter(|s| !s.is_empty()) {
        for variant in secret_variants(secret) {
            if !variant.is_empty() {
                out = out.replace(&variant, MASK);
            }
        }
    }
    for field in SECRET_FIELDS {
        out = redact_field(&out, field, MASK);
    }
    out
}

/// The first `max_chars` characters of `text` with every secret redacted, working on a bounded window of
/// `text` only (each redaction pass copies its input: over a whole 1 MiB body that is tens of MiB). A secret
/// cut by the window's end leaves a partial copy at the end of the redacted window; the last
/// longest-secret-length bytes are dropped, so no part of a secret survives. Returns the excerpt and whether
/// `text` was cut.
fn redacted_excerpt(text: &str, sent_secrets: &[&str], max_chars: usize) -> (String, bool) {
    let longest = sent_secrets
        .iter()
        .flat_map(|s| secret_variants(s))
        .map(|v| v.len())
        .max()
        .unwrap_or(0);
    let window = prefix_at_char_boundary(text, max_chars * 4 + 4 * longest + 4096);
    let cut = window.len() < text.len();
    let mut redacted = redact_reply_text(window, sent_secrets);
    if cut {
        let keep = prefix_at_char_boundary(&redacted, redacted.len().saturating_sub(longest)).len();
        redacted.truncate(keep);
    }
    let mut chars = redacted.chars();
    let excerpt: String = chars.by_ref().take(max_chars).collect();
    let more = cut || chars.next().is_some();
    (excerpt, more)
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
fn prefix_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Replaces the value following `field` + (`=` | `":` | `:`) (case-insensitive field name; optional quotes and
/// spaces) up to a delimiter.
fn redact_field(text: &str, field: &str, mask: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(pos) = lower[from..].find(field) {
        let start = from + pos;
        let mut i = start + field.len();
        from = i;
        // Must be a whole name: not preceded by a name character.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        if bytes.get(i) == Some(&b'"') {
            i += 1;
        }
        while bytes.get(i).is_some_and(|b| *b == b' ') {
            i += 1;
        }
        if !matches!(bytes.get(i), Some(b'=' | b':')) {
            continue;
        }
        i += 1;
        while bytes.get(i).is_some_and(|b| *b == b' ' || *b == b'"') {
            i += 1;
        }
        let value_start = i;
        while bytes.get(i).is_some_and(|b| {
            !matches!(
                b,
                b'&' | b'"' | b',' | b'}' | b'<' | b';' | b' ' | b'\t' | b'\r' | b'\n'
            )
        }) {
            i += 1;
        }
        if i > value_start {
            out.push_str(&text[copied..value_start]);
            out.push_str(mask);
            copied = i;
        }
        from = i;
    }
    out.push_str(&text[copied..]);
    out
}

impl Reply {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Turns a non-2xx reply to a request of `form` (and the HTTP Basic secret, if any) into an error: Entra
    /// JSON if it parses, else `UnexpectedReply` with an excerpt. The server's free text (the excerpt, or
    /// Entra's description) is stripped of every secret of the request: an echoed password or code must not
    /// reach an error message or a log line.
    fn into_error(self, url: &Url, form: &[(&str, &str)], basic: Option<&Secret>) -> AuthError {
        let sent = sent_secrets(form, basic);
        if let Some(mut e) = EntraError::parse(self.status, &self.body) {
            let (mut description, cut) = redacted_excerpt(&e.description, &sent, DESCRIPTION_CHARS);
            if cut {
                description.push('…');
            }
            e.description = description;
            e.retry_after = self.retry_after;
            e.retry_at = self.retry_at;
            e.client_request_id = Some(self.request_id);
            return e.into();
        }
        AuthError::UnexpectedReply {
            url: url.to_string(),
            status: self.status,
            excerpt: self.excerpt(&sent),
            retry_after: self.retry_after,
            retry_at: self.retry_at,
        }
    }

    /// The error for a reply whose body passed [`MAX_REPLY_BODY`] (`self.body` holds its first bytes).
    fn too_large(self, url: &Url, form: &[(&str, &str)], basic: Option<&Secret>) -> AuthError {
        let excerpt = if self.is_success() {
            String::new()
        } else {
            self.excerpt(&sent_secrets(form, basic))
        };
        AuthError::ReplyTooLarge {
            url: url.to_string(),
            status: self.status,
            limit: MAX_REPLY_BODY,
            excerpt,
        }
    }

    /// The first [`EXCERPT_CHARS`] characters of the body, secrets redacted, control characters blanked.
    fn excerpt(&self, sent: &[&str]) -> String {
        let text = String::from_utf8_lossy(&self.body);
        redacted_excerpt(&text, sent, EXCERPT_CHARS)
            .0
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}

/// The secret values of a request: form fields named in [`SECRET_FIELDS`] and the HTTP Basic secret.
fn sent_secrets<'a>(form: &[(&str, &'a str)], basic: Option<&'a Secret>) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| SECRET_FIELDS.contains(k))
        .map(|(_, v)| *v)
        .chain(basic.map(Secret::expose))
        .collect()
}

/// `err`, or [`AuthError::SchemeMismatch`] when a plain-`http` request failed because the server speaks
/// TLS: a reply that is not HTTP (a [`TransportKind::Io`] failure) from an `http://` URL is checked with [`speaks_tls`].
/// (`http://` authorities are loopback-only, so the check never leaves the machine.)
async fn scheme_mismatch_or(url: &Url, err: AuthError) -> AuthError {
    let not_http = matches!(&err, AuthError::Transport(t) if t.kind() == TransportKind::Io);
    if url.scheme() == "http" && not_http && speaks_tls(url).await {
        return AuthError::SchemeMismatch {
            url: url.to_string(),
            server_tls: true,
        };
    }
    err
}

/// Whether the server behind `url` speaks TLS: sends it an HTTP request line and looks at the first bytes
/// of the answer — a TLS record header (alert `0x15` or handshake `0x16`, version `0x03 ..`) instead of
/// `HTTP/`. At most 2 s.
async fn speaks_tls(url: &Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(format!("{host}:{port}"))
            .await
            .ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.ok()?;
        Some(matches!(head, [0x15 | 0x16, 0x03]))
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Classifies a transport error — timeout, TLS (a plain-HTTP answer to the TLS hello is a scheme mismatch),
/// connect, other — and keeps reqwest's error, with its whole chain, as the source.
fn transport_error(url: &Url, err: reqwest::Error) -> AuthError {
    let mut tls = false;
    let mut plain_http = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(r) = find_rustls_error(e) {
            tls = true;
            // A TLS record cannot start with `H`: the server answered the hello with `HTTP/1.1 …`.
            if matches!(
                r,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            ) {
                plain_http = true;
            }
        } else if !std::ptr::addr_eq(
            e as *const dyn std::error::Error,
            &err as *const reqwest::Error,
        ) {
            // Text is a fallback for wrapped errors that cannot be downcast; the top-level reqwest error is
            // skipped because its text holds the URL, where "tls" could be part of a host name.
            let lower = e.to_string().to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
            {
                tls = true;
            }
        }
        source = e.source();
    }
    if plain_http && !err.is_timeout() {
        return AuthError::SchemeMismatch {
            url: url.to_string(),
            server_tls: false,
        };
    }
    let kind = if err.is_timeout() {
        TransportKind::Timeout
    } else if tls {
        TransportKind::Tls
    } else if err.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Io
    };
    TransportError::new(kind, url.as_str(), err).into()
}

/// How long one loopback connection may take to send its request head.
const REDIRECT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts loopback connections until one carries the right `state` with `code` or `error`. Each connection
/// is served in its own task with a read timeout, so an idle or slow connection (a browser's speculative
/// preconnect, a port scanner) cannot stall the sign-in. A request with a missing or wrong `state` — including
/// an `error` redirect — is answered 400 and ignored: only the genuine redirect ends the flow.
async fn wait_for_redirect(
    listener: &TcpListener,
    listener6: Option<&TcpListener>,
    state: &str,
) -> Result<(Secret, tokio::net::TcpStream), AuthError> {
    let state: Arc<str> = Arc::from(state);
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<(Secret, tokio::net::TcpStream), AuthError>>(1);
    // Dropped on return: aborts every connection task still running.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            Some(outcome) = rx.recv() => return outcome,
            r = listener.accept() => r,
            r = async {
                match listener6 {
                    Some(l6) => l6.accept().await,
                    None => std::future::pending().await,
                }
            } => r,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // E.g. too many open files: transient for the listener, not fatal for the flow.
                tracing::debug!(error = %e, "accept failed on the redirect listener");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let tx = tx.clone();
        tasks.spawn(async move {
            if let Some(outcome) = serve_redirect(stream, &state).await {
                let _ = tx.send(outcome).await;
            }
        });
    }
}

/// Serves one connection: `Some` only for a request carrying the expected `state`. A code comes back with
/// its connection, unanswered: the page is written once the code is redeemed ([`reply_page`]).
async fn serve_redirect(
    mut stream: tokio::net::TcpStream,
    state: &str,
) -> Option<Result<(Secret, tokio::net::TcpStream), AuthError>> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    // Read the request head only (bounded to 16 KiB and REDIRECT_READ_TIMEOUT).
    let read_head = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(REDIRECT_READ_TIMEOUT, read_head)
        .await
        .is_err()
    {
        tracing::debug!("redirect listener: connection sent no request in time; closed");
        return None;
    }
    let head = String::from_utf8_lossy(&buf);
    let target = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("");
    let query = Url::parse(&format!("http://127.0.0.1{target}")).ok();
    let pairs: Vec<(String, String)> = query
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let state_ok = get("state").is_some_and(|s| constant_time_eq(s.as_bytes(), state.as_bytes()));
    let (outcome, status, text) = match (get("code"), get("error")) {
        (None, None) => (None, "404 Not Found", "Not found.".to_owned()),
        _ if !state_ok => {
            tracing::warn!(
                "redirect listener: refused a redirect whose state does not match (possible CSRF); still waiting"
            );
            (
                None,
                "400 Bad Request",
                html_escape(&AuthError::StateMismatch.to_string()),
            )
        }
        (_, Some(error)) => {
            let e = AuthError::AuthorizeRedirect {
                error: strip_control(&error).replace('\n', " "),
                description: strip_control(&strip_trace_suffix(
                    &get("error_description").unwrap_or_default(),
                )),
            };
            let text = format!("Sign-in failed: {}", html_escape(&e.to_string()));
            (Some(Err(e)), "400 Bad Request", text)
        }
        (Some(code), None) => return Some(Ok((Secret::new(code), stream))),
    };
    reply_page(&mut stream, status, &text).await;
    outcome.map(|o| o.map(|secret: Secret| (secret, stream)))
}

/// Answers the browser with a small page (`text` is already HTML-escaped) and closes the connection.
async fn reply_page(stream: &mut tokio::net::TcpStream, status: &str, text: &str) {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>m365mail</title></head><body><p>{text}</p></body></html>"
    );
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{page}",
        page.len()
    );
    let _ = tokio::time::timeout(REDIRECT_READ_TIMEOUT, async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_secrets_never_reach_the_error() {
        let url = Url::parse("https://login.example/t/oauth2/v2.0/token").unwrap();
        let form = [
            ("client_id", "c0ffee"),
            ("password", "hunter2~x"),
            ("scope", "openid"),
        ];
        let basic = Secret::new("s3cr3t-basic");
        let reply = |body: &str| Reply {
            status: 400,
            retry_after: None,
            retry_at: None,
            body: body.as_bytes().to_vec(),
            request_id: "rid".into(),
        };
        let entra = reply(
            r#"{"error":"invalid_grant","error_description":"bad hunter2~x and s3cr3t-basic","error_codes":[50126]}"#,
        )
        .into_error(&url, &form, Some(&basic));
        let other = reply("<html>password=hunter2%7Ex s3cr3t-basic</html>").into_error(
            &url,
            &form,
            Some(&basic),
        );
        for e in [entra, other] {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("s3cr3t-basic"), "{shown}");
            assert!(shown.contains("[REDACTED]"), "{shown}");
        }
    }

    /// The excerpt is redacted on a bounded window; a secret cut by the window's end leaves no partial copy,
    /// even when redaction shrinks the window below the excerpt length.
    #[test]
    fn a_secret_cut_by_the_window_is_not_shown_in_part() {
        let secret = "S".repeat(50) + &"t".repeat(50);
        let text = format!("{secret} ").repeat(10_000);
        let (excerpt, cut) = redacted_excerpt(&text, &[&secret], DESCRIPTION_CHARS);
        assert!(cut);
        assert!(!excerpt.contains("SSSS"), "{excerpt}");
        assert!(!excerpt.contains("tttt"), "{excerpt}");
        assert!(excerpt.starts_with("[REDACTED] [REDACTED] "), "{excerpt}");
        let (short, cut) = redacted_excerpt("short reply", &[&secret], EXCERPT_CHARS);
        assert_eq!((short.as_str(), cut), ("short reply", false));
        let (exact, cut) = redacted_excerpt(&"é".repeat(200), &[], EXCERPT_CHARS);
        assert_eq!((exact.chars().count(), cut), (200, false));
        let (cut_chars, cut) = redacted_excerpt(&"é".repeat(201), &[], EXCERPT_CHARS);
        assert_eq!((cut_chars.chars().count(), cut), (200, true));
    }
}
