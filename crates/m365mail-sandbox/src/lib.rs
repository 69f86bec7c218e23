//! An offline Microsoft 365 tenant for tests and demos: Entra ID's token endpoints (every grant a mail
//! connector uses, with Entra's exact error answers), served over HTTPS with a generated CA.
//!
//! ```no_run
//! # async fn example() -> Result<(), m365mail_sandbox::SandboxError> {
//! use m365mail_sandbox::{Sandbox, SandboxConfig, demo};
//! let sandbox = Sandbox::start(SandboxConfig::default()).await?;
//! let token_endpoint = sandbox.base_url().join(&format!("{}/oauth2/v2.0/token", demo::TENANT_ID));
//! sandbox.write_ca("/tmp/sandbox-ca.pem")?;
//! sandbox.admin().set_mfa_required(demo::USER_UPN, true)?;
//! sandbox.shutdown().await;
//! # let _ = token_endpoint;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! Paths are Entra's; `{tenant}` is the tenant GUID, a verified domain, `organizations`, `common` or
//! `consumers` (anything else: AADSTS90002).
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`, `GET /{tenant}/discovery/v2.0/keys`
//! - `GET /common/discovery/instance`, `GET /common/userrealm/{username}?api-version=1.0`
//! - `POST /{tenant}/oauth2/v2.0/token`: `password`, `client_credentials` (secret post/basic,
//!   `private_key_jwt` RS256+`x5t` or PS256+`x5t#S256`), `refresh_token` (rotating),
//!   `urn:ietf:params:oauth:grant-type:device_code` (or the short `device_code`), `authorization_code`
//!   (PKCE S256/plain)
//! - `POST /{tenant}/oauth2/v2.0/devicecode`, `GET/POST /devicelogin` (see `identity::devicecode`)
//! - `GET/POST /{tenant}/oauth2/v2.0/authorize` (a plain HTML form: fields `username`, `password`)
//! - `GET/POST /{tenant}/v2.0/adminconsent` and `/{tenant}/adminconsent` (a global admin grants the app's
//!   requested permissions; redirect `?tenant=…&state=…&admin_consent=True`)
//! - Microsoft Graph, on the same listener: `GET /v1.0/users` (`$select`, `$top`, `$filter`, paging by
//!   `@odata.nextLink`), `GET /v1.0/users/{id | userPrincipalName}`, `GET /v1.0/me`, and
//!   `POST /v1.0/users/{id | userPrincipalName}/sendMail`, `POST /v1.0/me/sendMail` (MIME and JSON forms,
//!   delivered as the SMTP service delivers), with Graph's error JSON (see `graph`; Graph's request bodies
//!   have their own 4 MiB limit)
//! - `/_sandbox/admin/...`: see [`admin`]
//!
//! # Errors the sandbox answers with
//!
//! Entra's JSON (`error`, `error_description` with trace suffix, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id`, `error_uri`, and `suberror`/`claims`/`password_change_url` where Entra adds them),
//! HTTP 400, or 401 for `invalid_client` (413 for a request body over [`MAX_REQUEST_BODY_BYTES`], outside Graph):
//!
//! | Code | `error` | When |
//! |---|---|---|
//! | 50126 | invalid_grant | wrong password; federated user on ROPC |
//! | 50034 | invalid_grant | unknown user |
//! | 50057 / 50053 | invalid_grant | user disabled / locked (the admin flag, or smart lockout: [`SandboxConfig::smart_lockout`], 10 failed passwords in a row lock for 60 s) |
//! | 50055 | invalid_grant (`suberror` user_password_expired) | password expired |
//! | 50076 | invalid_grant (`suberror` basic_action, `claims`) | MFA user on ROPC, or refresh of a password-only grant after MFA became required |
//! | 65001 | invalid_grant (`suberror` consent_required) | scope not consented (admin or user) |
//! | 7000218 | invalid_client | no credential and public client flows off (or client credentials without one) |
//! | 700025 | invalid_client | credential sent by an app that has none |
//! | 7000215 / 7000222 | invalid_client | wrong secret (also: the secret ID) / expired secret |
//! | 700016 / 7000112 | unauthorized_client | unknown app in this tenant / disabled app |
//! | 700027 | invalid_client | assertion signed by an unregistered key, or bad signature; every thumbprint header sent (`x5t`, `x5t#S256`) must match the same registered certificate |
//! | 700024 | invalid_client | assertion outside its `nbf`/`exp` (5 minutes skew) |
//! | 50012 | invalid_client | malformed assertion, wrong `aud`, no `jti`/`exp`, unsupported `alg`, no thumbprint (or one that is not a string); a reused `jti` when [`SandboxConfig::reject_replayed_assertions`] is on (Entra documents no code for a replayed assertion, and accepts the reuse MSAL Python does, so this is the generic invalid-assertion code and off by default) |
//! | 700021 | invalid_client | assertion `iss`/`sub` is not the client id |
//! | 90002 | invalid_request | unknown tenant |
//! | 9001023 | invalid_request | ROPC over common/consumers; client credentials over organizations/common/consumers |
//! | 1002012 | invalid_scope | client credentials without `/.default` (also double-encoded scopes) |
//! | 70011 / 700022 | invalid_scope | scope unknown to the resource, `.default` mixed with names / several resources |
//! | 500011 | invalid_resource | resource not in the tenant |
//! | 70000 / 700082 / 50173 | invalid_grant | refresh token unknown or of another client / expired / revoked (also by a password change) |
//! | 70016 / 70018 / 70019 / 90120 | authorization_pending / bad_verification_code / expired_token / invalid_grant | device flow states |
//! | – | slow_down / authorization_declined | device flow (no AADSTS code, as in Entra); polling faster than `interval` still gets 70016, `slow_down` only when injected ([`admin::TokenFault::SlowDown`]) |
//! | 50011 / 501481 / 54005 / 70008 | invalid_request / invalid_grant | redirect URI mismatch / PKCE mismatch / code reused / code expired |
//! | 900971 / 50058 | (authorize page / redirect) | no redirect URI registered / `prompt=none` |
//! | 90094 / 650057 | permission_denied / invalid_request (admin-consent redirect) | not an admin / resource not among the app's requested permissions |
//! | 90055 / 50033 / 90006 | temporarily_unavailable (429 + Retry-After, 503) / server_error (500) | only when injected through the admin API |
//! | 900144 / 900561 / 70003 / 9002313 | invalid_request / unsupported_grant_type | missing parameter / GET on the token endpoint / unknown grant / malformed request |
//! | 9000411 | invalid_request | a parameter sent twice to the token or device-code endpoint (never first-wins) |
//! | 9002313 (HTTP 413) | invalid_request | a request body over [`MAX_REQUEST_BODY_BYTES`] (any endpoint, the admin API too) |
//!
//! The crate does not depend on the `m365mail` connector: each is tested against the other and both
//! against clients nobody here wrote (MSAL Python, curl).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod clock;
pub mod demo;
mod error;
mod exchange;
mod faults;
mod graph;
mod identity;
#[cfg(test)]
mod net_tests;
pub mod permissions;
mod request_body;
mod server;
mod sync;
pub mod tenant;
mod tls;

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use url::Url;

pub use admin::{
    AdminHandle, CasMailbox, ExchangeServicePrincipalInfo, FolderStatus, MailboxPermission,
    RecipientPermission, ServicePrincipalAuthorization, TransportConfig,
};
pub use clock::{Clock, FakeClock, SystemClock};
pub use error::SandboxError;
pub use exchange::seed::MailSeed;
pub use graph::GraphFault;
pub use identity::TokenFault;
pub use identity::bearer::{BearerRefusal, Principal, Requirement};
pub use identity::state::RequestStats;
use m365mail_server as net;
/// The bounds of the mail services (from m365mail-server, the accept loop they run on).
pub use m365mail_server::MailLimits;
pub use tenant::TenantModel;

/// The largest request body the sandbox reads, in bytes (1 MiB; Entra's token requests are a few
/// KiB). A larger body, announced by `Content-Length` or streamed, is answered with HTTP 413 and
/// Entra's error JSON (`invalid_request`, AADSTS9002313), over HTTP/2 without resetting the stream.
/// Microsoft Graph's routes (`/v1.0/…`) take up to 4 MiB and refuse more in Graph's shape (413
/// `ErrorRequestEntityTooLarge`).
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// How long access tokens (and the ID tokens issued with them) live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTokenLifetime {
    /// A lifetime drawn for each token, in whole seconds between `min` and `max` (inclusive):
    /// Entra's default is 60 to 90 minutes (average 75), so an `expires_in` such as 4249 is normal.
    Random {
        /// The shortest lifetime.
        min: Duration,
        /// The longest lifetime.
        max: Duration,
    },
    /// The same lifetime for every token (short values make expiry testable).
    Fixed(Duration),
}

impl Default for AccessTokenLifetime {
    fn default() -> Self {
        Self::Random {
            min: Duration::from_secs(60 * 60),
            max: Duration::from_secs(90 * 60),
        }
    }
}

impl From<Duration> for AccessTokenLifetime {
    fn from(lifetime: Duration) -> Self {
        Self::Fixed(lifetime)
    }
}

impl AccessTokenLifetime {
    /// The lifetime of one new token, in seconds.
    pub(crate) fn draw_seconds(&self) -> u64 {
        match self {
            Self::Fixed(lifetime) => lifetime.as_secs(),
            Self::Random { min, max } => {
                let (low, high) = (min.as_secs(), max.as_secs());
                rand::Rng::random_range(&mut rand::rng(), low.min(high)..=high.max(low))
            }
        }
    }
}

/// Token and code lifetimes. Short values make expiry testable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetimes {
    /// Access and ID tokens (`expires_in`): by default random between 60 and 90 minutes for each
    /// token, as Entra's; [`AccessTokenLifetime::Fixed`] for one value.
    pub access_token: AccessTokenLifetime,
    /// Refresh tokens, counted from issue (Entra: 90 days of inactivity).
    pub refresh_token: Duration,
    /// Device codes (`expires_in` of the device code response; Entra: 15 minutes).
    pub device_code: Duration,
    /// The device-code `interval` clients are told to wait between polls. Faster polls still get
    /// `authorization_pending`, as from Entra; `slow_down` only as an injected fault
    /// ([`admin::TokenFault::SlowDown`]).
    pub device_poll_interval: Duration,
    /// Authorization codes (Entra: about 10 minutes).
    pub authorization_code: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access_token: AccessTokenLifetime::default(),
            refresh_token: Duration::from_secs(90 * 24 * 3600),
            device_code: Duration::from_secs(900),
            device_poll_interval: Duration::from_secs(5),
            authorization_code: Duration::from_secs(600),
        }
    }
}

/// Entra's smart lockout: after `threshold` failed password sign-ins in a row (ROPC or a sign-in
/// page), the account is locked for `duration` (AADSTS50053, even with the right password). A
/// successful password resets the count; after the lock ends the count starts from zero (Entra
/// lengthens repeated lockouts; the sandbox does not). The lock ends on the injected [`Clock`];
/// an admin unlock (`locked: false`) ends it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartLockout {
    /// Failed password sign-ins in a row that lock the account (Entra: 10). 0 turns lockout off.
    pub threshold: u32,
    /// How long the account stays locked (Entra: 60 seconds).
    pub duration: Duration,
}

impl Default for SmartLockout {
    fn default() -> Self {
        Self {
            threshold: 10,
            duration: Duration::from_secs(60),
        }
    }
}

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The identity listener's address (Entra ID endpoints, the admin API and Graph under `/v1.0/`);
    /// loopback only. Default `127.0.0.1:0` (a free port). Its URL is
    /// [`Sandbox::base_url`], the authority clients use.
    pub bind: SocketAddr,
    /// More identity listeners serving the same endpoints with the same TLS setting, e.g. `[::1]:0` next
    /// to `127.0.0.1`, or port 443 for MSAL Python's user-realm lookup (which drops the authority's port).
    /// Loopback only. Default none.
    pub also_bind: Vec<SocketAddr>,
    /// Serve the identity listeners over HTTPS with the generated CA (default) or plain HTTP.
    pub tls: bool,
    /// POP3 listeners with implicit TLS (Exchange's port 995), loopback only. Default none.
    pub pop3s: Vec<SocketAddr>,
    /// IMAP listeners with implicit TLS (Exchange's port 993), loopback only. Default none.
    pub imaps: Vec<SocketAddr>,
    /// Plain IMAP listeners offering STARTTLS (our addition: Exchange has none), loopback only. Default none.
    pub imap: Vec<SocketAddr>,
    /// SMTP submission listeners with STARTTLS (Exchange's 587), loopback only. Default none.
    pub smtp: Vec<SocketAddr>,
    /// SMTP submission listeners with implicit TLS (465), loopback only. Default none.
    pub smtps: Vec<SocketAddr>,
    /// What the mailboxes hold at start. Default: one welcome message each.
    pub mail: MailSeed,
    /// The directory. Default: [`TenantModel::demo`].
    pub tenant: TenantModel,
    /// Token and code lifetimes.
    pub lifetimes: Lifetimes,
    /// The clock every expiry decision reads.
    pub clock: Arc<dyn Clock>,
    /// A TLS handshake that has not finished in this time is dropped (its connection closed). Each
    /// connection handshakes in its own task, so a stalled one never delays other clients; this only
    /// bounds how long it holds a socket. Default 30 seconds.
    pub tls_handshake_timeout: Duration,
    /// A connection that has not sent complete request headers this long after it was accepted (or,
    /// for HTTP/1.1 keep-alive, after its previous request) is closed, so a client that stops
    /// halfway through its headers cannot hold a connection. Default 10 seconds.
    pub header_read_timeout: Duration,
    /// Smart lockout of accounts after failed password sign-ins. Default: Entra's, 10 and 60 s.
    pub smart_lockout: SmartLockout,
    /// Refuse a certificate assertion whose `jti` this client already used (AADSTS50012) until that
    /// assertion expires. Default **off**, as Entra: MSAL Python reuses one assertion (same `jti`) for
    /// up to 9 minutes across token requests (`AutoRefresher` in `msal/oauth2cli/assertion.py`), which
    /// Entra accepts. Turn it on to check that a client mints a fresh assertion per request.
    pub reject_replayed_assertions: bool,
    /// Bounds of the mail services (POP3, IMAP, SMTP).
    pub mail_limits: MailLimits,
    /// An IMAP IDLE lasting longer is ended with `* BYE IDLE timed out.` (default 29 minutes, RFC 2177's
    /// advice to clients; our choice).
    pub imap_idle_limit: std::time::Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            also_bind: Vec::new(),
            tls: true,
            pop3s: Vec::new(),
            imaps: Vec::new(),
            imap: Vec::new(),
            smtp: Vec::new(),
            smtps: Vec::new(),
            mail: MailSeed::default(),
            tenant: TenantModel::demo(),
            lifetimes: Lifetimes::default(),
            clock: Arc::new(SystemClock),
            tls_handshake_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            smart_lockout: SmartLockout::default(),
            reject_replayed_assertions: false,
            mail_limits: MailLimits::default(),
            imap_idle_limit: exchange::imap::IDLE_LIMIT,
        }
    }
}

/// One bound listener of a running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The service: `identity` (later `imap`, `imaps`, `pop3`, `pop3s`, `smtp`, `smtps`).
    pub service: &'static str,
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Whether TLS starts with the first byte.
    pub implicit_tls: bool,
}

/// A running sandbox tenant.
pub struct Sandbox {
    base_url: Url,
    ca_pem: String,
    admin: AdminHandle,
    listeners: Vec<Listener>,
    shutdown: watch::Sender<bool>,
    servers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Generates keys and certificates, binds the listener and starts serving in the background.
    /// Must be called inside a tokio runtime.
    pub async fn start(mut config: SandboxConfig) -> Result<Self, SandboxError> {
        // Microsoft's first-party apps (the Graph Command Line Tools) are in every tenant.
        config.tenant = std::mem::take(&mut config.tenant).with_first_party_apps();
        for addr in std::iter::once(&config.bind)
            .chain(&config.also_bind)
            .chain(&config.pop3s)
            .chain(&config.imaps)
            .chain(&config.imap)
            .chain(&config.smtp)
            .chain(&config.smtps)
        {
            if !addr.ip().is_loopback() {
                return Err(SandboxError::InvalidRequest(format!(
                    "the sandbox listens on loopback only, not {addr}"
                )));
            }
        }
        config.tenant.validate()?;
        // The mail is loaded before anything listens: a bad --mail-dir fails the start cleanly.
        let mail_store = seed_mail(&config.tenant, &config.mail, config.clock.as_ref())?;
        // Key generation is CPU-bound (RSA); keep it off the async worker.
        let (tls, signing_key) = tokio::task::spawn_blocking(|| {
            Ok::<_, SandboxError>((tls::generate()?, identity::crypto::SigningKey::generate()?))
        })
        .await
        .map_err(|error| SandboxError::crypto("keys", error))??;

        let mut bound = Vec::new();
        for addr in std::iter::once(config.bind).chain(config.also_bind.iter().copied()) {
            bound.push(bind(addr).await?);
        }
        let local = bound[0].1;
        let mut imaps_bound = Vec::new();
        for addr in &config.imaps {
            imaps_bound.push(bind(*addr).await?);
        }
        let mut imap_bound = Vec::new();
        for addr in &config.imap {
            imap_bound.push(bind(*addr).await?);
        }
        let mut smtp_bound = Vec::new();
        for addr in &config.smtp {
            smtp_bound.push(bind(*addr).await?);
        }
        let mut smtps_bound = Vec::new();
        for addr in &config.smtps {
            smtps_bound.push(bind(*addr).await?);
        }
        let mut pop3s_bound = Vec::new();
        for addr in &config.pop3s {
            pop3s_bound.push(bind(*addr).await?);
        }
        let scheme = if config.tls { "https" } else { "http" };
        let base_url = Url::parse(&format!("{scheme}://{local}/"))
            .map_err(|error| SandboxError::InvalidRequest(error.to_string()))?;

        let state = Arc::new(identity::state::IdentityState {
            directory: Arc::new(Mutex::new(config.tenant)),
            grants: Mutex::new(identity::state::Grants::default()),
            stats: Mutex::new(RequestStats::default()),
            signing_key,
            lifetimes: config.lifetimes,
            clock: config.clock,
            base_url: base_url.clone(),
            token_faults: faults::FaultQueue::default(),
            graph_faults: faults::FaultQueue::default(),
            reject_replayed_assertions: config.reject_replayed_assertions,
            seen_assertions: Mutex::default(),
            smart_lockout: config.smart_lockout,
            sign_in_failures: Mutex::default(),
        });
        let exchange = Arc::new(exchange::ExchangeState {
            directory: Arc::clone(&state.directory),
            identity: Arc::clone(&state),
            store: Mutex::new(mail_store),
            connection_faults: ["imap", "pop3", "smtp"]
                .into_iter()
                .map(|service| (service, Arc::new(net::Faults::default())))
                .collect(),
            session_faults: ["imap", "pop3", "smtp"]
                .into_iter()
                .map(|service| (service, faults::FaultQueue::default()))
                .collect(),
        });
        let router = identity::router()
            .merge(admin::router())
            .merge(graph::router(Arc::clone(&state)))
            .layer(axum::Extension(Arc::clone(&exchange)))
            .layer(axum::Extension(Arc::new(graph::GraphMail::new())))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                request_body::read_whole_body,
            ))
            .with_state(Arc::clone(&state));
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let http: Arc<dyn net::Protocol> = Arc::new(server::HttpProtocol {
            router,
            header_read_timeout: config.header_read_timeout,
        });
        let identity_tls = if config.tls {
            net::ListenerTls::Implicit(tokio_rustls::TlsAcceptor::from(Arc::clone(
                &tls.server_config,
            )))
        } else {
            net::ListenerTls::Plain
        };
        let pop3: Arc<dyn net::Protocol> = Arc::new(exchange::pop3::Pop3Service {
            exchange: Arc::clone(&exchange),
            limits: config.mail_limits,
        });
        let imap: Arc<dyn net::Protocol> = Arc::new(exchange::imap::ImapService {
            idle_limit: config.imap_idle_limit,
            exchange: Arc::clone(&exchange),
            limits: config.mail_limits,
        });
        let smtp: Arc<dyn net::Protocol> = Arc::new(exchange::smtp::SmtpService {
            exchange: Arc::clone(&exchange),
            limits: config.mail_limits,
        });
        let acceptor = || tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server_config));
        let services: [(&'static str, _, net::ListenerTls, &Arc<dyn net::Protocol>); 6] = [
            ("identity", bound, identity_tls, &http),
            (
                "pop3s",
                pop3s_bound,
                net::ListenerTls::Implicit(acceptor()),
                &pop3,
            ),
            (
                "imaps",
                imaps_bound,
                net::ListenerTls::Implicit(acceptor()),
                &imap,
            ),
            (
                "imap",
                imap_bound,
                net::ListenerTls::Starttls(acceptor()),
                &imap,
            ),
            (
                "smtp",
                smtp_bound,
                net::ListenerTls::Starttls(acceptor()),
                &smtp,
            ),
            (
                "smtps",
                smtps_bound,
                net::ListenerTls::Implicit(acceptor()),
                &smtp,
            ),
        ];
        let mut listeners = Vec::new();
        let mut servers = Vec::new();
        for (service, bound, listener_tls, protocol) in services {
            for (listener, addr) in bound {
                listeners.push(Listener {
                    service,
                    addr,
                    implicit_tls: matches!(listener_tls, net::ListenerTls::Implicit(_)),
                });
                let faults = exchange::service_family(service)
                    .and_then(|family| exchange.connection_faults.get(family))
                    .map_or_else(|| Arc::new(net::Faults::default()), Arc::clone);
                servers.push(net::spawn_listener_with_faults(
                    listener,
                    listener_tls.clone(),
                    config.tls_handshake_timeout,
                    config.mail_limits.max_connections,
                    Arc::clone(protocol),
                    shutdown_receiver.clone(),
                    faults,
                ));
            }
        }
        tracing::info!(base_url = %base_url, "sandbox tenant listening");
        Ok(Self {
            base_url,
            ca_pem: tls.ca_pem,
            admin: AdminHandle::new(state).with_exchange(exchange),
            listeners,
            shutdown,
            servers: Mutex::new(servers),
        })
    }

    /// The authority host, e.g. `https://127.0.0.1:40123/`; clients append the tenant segment.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The authority for a tenant segment, e.g. `https://127.0.0.1:40123/{tenant}` (no trailing slash,
    /// as MSAL wants it).
    pub fn authority(&self, tenant: &str) -> String {
        format!("{}{tenant}", self.base_url)
    }

    /// PEM of the generated CA that clients must trust (generated even when serving plain HTTP).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA PEM to a file.
    pub fn write_ca(&self, path: impl AsRef<Path>) -> Result<(), SandboxError> {
        let path = path.as_ref();
        std::fs::write(path, &self.ca_pem).map_err(|source| SandboxError::File {
            action: "writing",
            path: path.to_owned(),
            source,
        })
    }

    /// Every bound listener, the identity listener of [`Self::base_url`] first.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The runtime admin handle.
    pub fn admin(&self) -> &AdminHandle {
        &self.admin
    }

    /// A human-readable summary: URLs, tenants, users and apps. Passwords and secret values are never
    /// included (the demo's are constants in [`demo`]).
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let base = &self.base_url;
        let mut text = format!(
            "m365mail sandbox tenant\n  base URL:        {base}\n  device login:    {base}devicelogin\n  Microsoft Graph: {base}v1.0/users\n  admin API:       {base}_sandbox/admin/stats\n"
        );
        for listener in self.listeners.iter().filter(|l| l.service != "identity") {
            let _ = writeln!(
                text,
                "  {:<16} {}",
                format!("{}:", listener.service),
                listener.addr
            );
        }
        for tenant in self.admin.tenant_model().tenants {
            let _ = writeln!(
                text,
                "  tenant {} ({}): authority {base}{}  token endpoint {base}{}/oauth2/v2.0/token",
                tenant.id,
                tenant.domains.join(", "),
                tenant.id,
                tenant.id
            );
            for user in &tenant.users {
                let flags: Vec<&str> = [
                    (user.mfa_required, "mfa-required"),
                    (user.disabled, "disabled"),
                    (user.locked, "locked"),
                    (user.password_expired, "password-expired"),
                    (user.federated, "federated"),
                    (user.global_admin, "global-admin"),
                ]
                .iter()
                .filter_map(|(set, name)| set.then_some(*name))
                .collect();
                let _ = writeln!(text, "    user {} {}", user.upn, flags.join(" "));
            }
            for app in &tenant.apps {
                let mut traits = Vec::new();
                if app.allow_public_client_flows {
                    traits.push("public-client-flows");
                }
                if !app.secrets.is_empty() {
                    traits.push("secret");
                }
                if !app.certificates.is_empty() {
                    traits.push("certificate");
                }
                if !app.enabled {
                    traits.push("disabled");
                }
                let _ = writeln!(
                    text,
                    "    app  {} {} [{}]",
                    app.client_id,
                    app.display_name,
                    traits.join(", ")
                );
            }
        }
        text
    }

    /// Stops accepting connections and waits (briefly) for in-flight requests.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let servers = std::mem::take(
            &mut *self
                .servers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for server in servers {
            let _ = server.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Stop the accept loop even if the owner forgot to call shutdown().
        let _ = self.shutdown.send(true);
    }
}

/// Runs a sandbox until `stop` completes: prints [`Sandbox::summary`] (and the CA path) to stdout,
/// writes the CA to `ca_path` if given, then shuts down. For embedding a served sandbox in another program;
/// `m365mail sandbox serve` adds `--json` and `--config-out` on top of the same [`Sandbox`] calls.
pub async fn serve_until<F>(
    config: SandboxConfig,
    ca_path: Option<PathBuf>,
    stop: F,
) -> Result<(), SandboxError>
where
    F: Future<Output = ()>,
{
    let sandbox = Sandbox::start(config).await?;
    let mut summary = sandbox.summary();
    if let Some(ca_path) = &ca_path {
        sandbox.write_ca(ca_path)?;
        summary.push_str(&format!("  CA certificate:  {}\n", ca_path.display()));
    }
    summary.push_str("Press Ctrl-C to stop.\n");
    print!("{summary}");
    stop.await;
    sandbox.shutdown().await;
    Ok(())
}

/// Binds one listener and reads back its address (the real port when 0 was asked for).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), SandboxError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { addr, source })?;
    Ok((listener, local))
}

/// One welcome message in every mailbox of the tenant, so a first read finds something.
fn seed_mail(
    tenant: &TenantModel,
    seed: &MailSeed,
    clock: &dyn Clock,
) -> Result<exchange::store::MailStore, SandboxError> {
    let mailboxes: Vec<(String, String)> = tenant
        .tenants
        .iter()
        .flat_map(|t| {
            t.mailboxes
                .iter()
                .map(|m| (m.address.clone(), m.display_name.clone()))
        })
        .collect();
    // Every folder's UIDVALIDITY is the start time: a restart (which forgets run-time deliveries) never
    // hands out an old UID again under an old UIDVALIDITY.
    let now = clock.unix_seconds();
    let mut store = exchange::store::MailStore::new(u32::try_from(now).unwrap_or(u32::MAX));
    exchange::seed::seed(
        &mut store,
        seed,
        &mailboxes,
        i64::try_from(now).unwrap_or(i64::MAX),
    )?;
    Ok(store)
}
