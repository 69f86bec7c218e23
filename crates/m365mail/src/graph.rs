//! Microsoft Graph (v1.0) over reqwest: the requests, retries, limits and errors every Graph call shares
//! (microsoft.md §8), and the calls built on them — so far `GET /users` with paging.
//!
//! Every request carries a new `client-request-id` (a GUID) and keeps the `request-id` Graph answers with for
//! the error it may become. `429`, `503` and `504` are retried after `Retry-After` (seconds or an HTTP date; a
//! short exponential pause without it, never longer than [`GraphOptions::max_wait`]), at most
//! [`GraphOptions::max_retries`] times. Calls about one mailbox share a limit of 4 requests at once
//! (Outlook's `MailboxConcurrency`; the directory counts as one "mailbox"). Reply bodies are read bounded
//! ([`MAX_GRAPH_BODY`]). A page link (`@odata.nextLink`) is followed only on the base URL's own origin, so the
//! token never goes to another host. Graph's error JSON becomes a [`GraphError::Api`] whose cause and remedy name
//! the permission the call needs — delegated and application — when Graph refuses it.

pub mod mail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::error::{Classified, ErrorClass};
use crate::secret::Secret;
use crate::time::{Clock, Sleeper, SystemClock, TokioSleeper};
use crate::tls::{TlsError, TlsTrust};
use crate::transport::{TransportError, TransportKind};

/// The largest Graph reply read (a page of 999 users is far below it).
pub const MAX_GRAPH_BODY: usize = 16 * 1024 * 1024;
/// Requests at once per mailbox (Outlook's limit, microsoft.md §8.7).
pub const MAILBOX_CONCURRENCY: usize = 4;

/// The permissions a call needs, for the remedy when Graph refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// Delegated scopes, any of which will do.
    pub delegated: &'static [&'static str],
    /// Application roles, any of which will do.
    pub application: &'static [&'static str],
}

/// `GET /users`.
pub const USERS_READ: Permission = Permission {
    delegated: &["User.ReadBasic.All", "User.Read.All", "Directory.Read.All"],
    application: &["User.Read.All", "Directory.Read.All"],
};

/// `POST /users/{id}/sendMail`.
pub const MAIL_SEND: Permission = Permission {
    delegated: &["Mail.Send"],
    application: &["Mail.Send"],
};

/// The directory calls `m365mail setup` makes (applications, service principals, consent).
pub const APPLICATION_ADMIN: Permission = Permission {
    delegated: &[
        "Application.ReadWrite.All",
        "AppRoleAssignment.ReadWrite.All",
        "DelegatedPermissionGrant.ReadWrite.All",
    ],
    application: &["Application.ReadWrite.OwnedBy", "Application.ReadWrite.All"],
};

/// The largest MIME message sent inline through `sendMail` (base64 makes it a third larger; Graph takes about
/// 4 MB a request — microsoft.md §8.3, unconfirmed). Larger messages need an upload session.
pub const MAX_INLINE_MIME: usize = 3 * 1024 * 1024;

/// How to reach Graph.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// The Graph host (`https://graph.microsoft.com/`, a national cloud's, or the sandbox's base URL); `v1.0/`
    /// is added.
    pub base: Url,
    /// Whom to trust.
    pub trust: TlsTrust,
    /// Bound on one request, connecting included.
    pub timeout: Duration,
    /// Retries of a throttled or unavailable request (429, 503, 504).
    pub max_retries: u32,
    /// The longest wait before a retry, whatever `Retry-After` says.
    pub max_wait: Duration,
    /// Where pauses happen (tests pass a fake).
    pub sleeper: Arc<dyn Sleeper>,
    /// Reads `Retry-After` dates against this clock.
    pub clock: Arc<dyn Clock>,
}

impl GraphOptions {
    /// Defaults: 60 s per request, 4 retries, waits of at most 60 s.
    pub fn new(base: Url, trust: TlsTrust) -> Self {
        Self {
            base,
            trust,
            timeout: Duration::from_secs(60),
            max_retries: 4,
            max_wait: Duration::from_secs(60),
            sleeper: Arc::new(TokioSleeper),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A Graph failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Connect, TLS, timeout or I/O failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The trust setup could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Graph answered with an error.
    #[error("Graph {method} {path}: {status} {code}: {message} (request-id {})", request_id.as_deref().unwrap_or("-"))]
    Api {
        /// The HTTP method.
        method: &'static str,
        /// The path (no query: it may hold filters).
        path: String,
        /// The HTTP status.
        status: u16,
        /// Graph's `error.code`.
        code: String,
        /// Graph's `error.message`.
        message: String,
        /// Graph's `request-id`, for Microsoft support.
        request_id: Option<String>,
        /// Ours.
        client_request_id: String,
        /// What the call needs.
        permission: Permission,
    },
    /// Still throttled (or unavailable) after every retry.
    #[error("Graph {method} {path}: still {status} after {retries} retries (request-id {})", request_id.as_deref().unwrap_or("-"))]
    Throttled {
        /// The HTTP method.
        method: &'static str,
        /// The path.
        path: String,
        /// The last status (429, 503, 504).
        status: u16,
        /// Retries made.
        retries: u32,
        /// The last `request-id`.
        request_id: Option<String>,
        /// The last `Retry-After`: how long Graph asked to wait (a caller that retries later honours it).
        retry_after: Option<Duration>,
    },
    /// A message too large for one `sendMail` request.
    #[error("a {size}-byte message is over the {limit} bytes one Graph sendMail request takes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// [`MAX_INLINE_MIME`].
        limit: usize,
    },
    /// No folder of that name or id.
    #[error("no folder {folder:?} in {mailbox}")]
    NoSuchFolder {
        /// The mailbox.
        mailbox: String,
        /// The folder as given.
        folder: String,
    },
    /// A reply that is not what Graph sends (not JSON, too large, a page link to another host).
    #[error("Graph {method} {path}: {what}")]
    Protocol {
        /// The HTTP method.
        method: &'static str,
        /// The path.
        path: String,
        /// What was wrong.
        what: String,
    },
}

impl Classified for GraphError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Transport(e) => e.class(),
            Self::Tls(e) => e.class(),
            Self::Throttled { .. } | Self::Protocol { .. } => ErrorClass::Transient,
            Self::TooLarge { .. } | Self::NoSuchFolder { .. } => ErrorClass::Input,
            Self::Api { status, code, .. } => match (*status, code.as_str()) {
                (401 | 403, _) | (_, "MailboxNotEnabledForRESTAPI" | "ErrorSendAsDenied") => {
                    ErrorClass::Admin
                }
                (400 | 404, _) => ErrorClass::Input,
                _ => ErrorClass::Transient,
            },
        }
    }

    fn cause(&self) -> String {
        match self {
            Self::Transport(e) => e.cause(),
            Self::Tls(e) => e.cause(),
            Self::Api {
                status: 401,
                message,
                ..
            } => format!("Graph did not accept the token: {message}"),
            Self::Api {
                status: 403,
                code,
                permission,
                ..
            } if code != "ErrorSendAsDenied" => format!(
                "the token lacks the permission this call needs ({code}): delegated {}, or application {}",
                permission.delegated.join(" or "),
                permission.application.join(" or ")
            ),
            Self::Api { code, message, .. } if code == "MailboxNotEnabledForRESTAPI" => format!(
                "the mailbox cannot be reached through Graph ({message}): it is not in Exchange Online, or has no licence"
            ),
            Self::Api { code, message, .. } => format!("Graph refused the call: {code}: {message}"),
            Self::Throttled { status, .. } => {
                format!("Graph kept answering {status} (throttled or unavailable)")
            }
            Self::Protocol { what, .. } => format!("Graph's answer could not be used: {what}"),
            Self::TooLarge { size, limit } => {
                format!("the message is {size} bytes; one sendMail request takes {limit}")
            }
            Self::NoSuchFolder { mailbox, folder } => {
                format!("{mailbox} has no folder {folder:?} (by path, name or id)")
            }
        }
    }

    fn remedy(&self) -> String {
        match self {
            Self::Transport(e) => e.remedy(),
            Self::Tls(e) => e.remedy(),
            Self::Api { status: 401, .. } => "get a token for Microsoft Graph (audience https://graph.microsoft.com, \
                 not Outlook's): check it with `m365mail token inspect`; an expired one is renewed on the next run"
                .into(),
            Self::Api {
                status: 403,
                code,
                permission,
                ..
            } if code != "ErrorSendAsDenied" => format!(
                "delegated: add the scope {} to the app registration and consent to it (the user, or an admin \
                 for an admin-only scope); app-only: add the application permission {} and grant admin \
                 consent; then get a new token (`m365mail token get --force`)",
                permission.delegated[0], permission.application[0]
            ),
            Self::Api { code, .. } if code == "ErrorSendAsDenied" => "grant the identity the SendAs right on \
                 the From address (Add-RecipientPermission -AccessRights SendAs), or send as the signed-in mailbox"
                .into(),
            Self::Api { code, .. } if code == "MailboxNotEnabledForRESTAPI" => "use a mailbox hosted in \
                 Exchange Online with an Exchange licence, or read it over IMAP/POP"
                .into(),
            Self::Api { status: 400 | 404, .. } => {
                "check the names and values given (a user, a folder, a filter); run with --log debug to see the request"
                    .into()
            }
            Self::NoSuchFolder { .. } => "give a folder as `m365mail folders --protocol graph` shows it \
                 (a path such as Archive/2026, or its id), or a well-known name: inbox, sentitems, drafts, \
                 deleteditems, archive, junkemail"
                .into(),
            Self::TooLarge { .. } => "send it without --graph-mime: the JSON form sends large attachments \
                 through upload sessions (up to 150 MB); or send it over SMTP (up to 150 MB there)"
                .into(),
            Self::Api { .. } | Self::Throttled { .. } | Self::Protocol { .. } => {
                "run again later; Graph limits each app to 4 requests at once and 10,000 per 10 minutes per \
                 mailbox. If it repeats, quote the request-id to Microsoft support"
                    .into()
            }
        }
    }
}

/// A Graph client for one base URL; cheap to clone (the HTTP pool and the per-mailbox limits are shared).
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: Url,
    options: GraphOptions,
    limits: Arc<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>>,
}

/// What `GET /users` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersQuery {
    /// `$select`: the properties to return (Graph's defaults when empty).
    pub select: Vec<String>,
    /// `$filter`, as Graph takes it (e.g. `startswith(displayName,'A')`).
    pub filter: Option<String>,
    /// `$top`: the page size (1..999).
    pub top: Option<u32>,
}

/// One request, as [`GraphClient::call`] makes it.
struct Call<'a> {
    method: &'static str,
    url: &'a Url,
    /// Content type and bytes.
    body: Option<(&'static str, Vec<u8>)>,
    /// `None` for a pre-authenticated upload URL: no `Authorization` header, and any origin.
    token: Option<&'a Secret>,
    /// Whose limit of 4 requests at once the call counts against.
    mailbox: &'a str,
    permission: Permission,
    /// The `Prefer` header.
    prefer: Option<&'a str>,
    /// Further headers (`Content-Range`).
    headers: Vec<(&'static str, String)>,
    /// The most of a successful reply's body read.
    limit: usize,
}

impl<'a> Call<'a> {
    fn new(
        method: &'static str,
        url: &'a Url,
        token: Option<&'a Secret>,
        mailbox: &'a str,
        permission: Permission,
    ) -> Self {
        Self {
            method,
            url,
            body: None,
            token,
            mailbox,
            permission,
            prefer: None,
            headers: Vec::new(),
            limit: MAX_GRAPH_BODY,
        }
    }
}

/// A successful reply.
#[derive(Debug)]
struct Reply {
    status: u16,
    bytes: Vec<u8>,
    /// The body was longer than the call's limit (only its start is in `bytes`).
    truncated: bool,
}

impl Reply {
    /// The body as JSON (`null` when empty, as `202 Accepted` and `204 No Content` have).
    // GraphError carries what support needs; it is built once per failed call.
    #[allow(clippy::result_large_err)]
    fn json(self, method: &'static str, url: &Url) -> Result<Value, GraphError> {
        let protocol = |what: String| GraphError::Protocol {
            method,
            path: url.path().to_owned(),
            what,
        };
        if self.truncated {
            return Err(protocol(format!("a reply over {MAX_GRAPH_BODY} bytes")));
        }
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.bytes).map_err(|e| protocol(format!("not JSON: {e}")))
    }
}

impl GraphClient {
    /// A client for `options.base`.
    // GraphError carries what support needs (request ids, the permission); it is built once per failed call.
    #[allow(clippy::result_large_err)]
    pub fn new(options: GraphOptions) -> Result<Self, GraphError> {
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("m365mail/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(options.trust.http_client_config()?)
            .build()
            .map_err(|e| {
                GraphError::from(TransportError::new(
                    TransportKind::Connect,
                    options.base.as_str(),
                    e,
                ))
            })?;
        let mut base = options.base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let base = base.join("v1.0/").map_err(|e| GraphError::Protocol {
            method: "GET",
            path: options.base.to_string(),
            what: format!("not a usable base URL: {e}"),
        })?;
        Ok(Self {
            http,
            base,
            options,
            limits: Arc::default(),
        })
    }

    /// The versioned base URL (`…/v1.0/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn limit(&self, mailbox: &str) -> Arc<tokio::sync::Semaphore> {
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            limits
                .entry(mailbox.to_ascii_lowercase())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAILBOX_CONCURRENCY))),
        )
    }

    /// `GET url` (on the base's origin) as JSON, under `mailbox`'s limit, with retries.
    async fn get_json(
        &self,
        url: &Url,
        token: &Secret,
        mailbox: &str,
        permission: Permission,
    ) -> Result<Value, GraphError> {
        self.request("GET", url, None, token, mailbox, permission)
            .await
    }

    /// `method url` with an optional body (content type, bytes), under `mailbox`'s limit, with retries; the
    /// reply's JSON (`null` for an empty one, as `202 Accepted` has).
    async fn request(
        &self,
        method: &'static str,
        url: &Url,
        body: Option<(&'static str, Vec<u8>)>,
        token: &Secret,
        mailbox: &str,
        permission: Permission,
    ) -> Result<Value, GraphError> {
        let reply = self
            .call(Call {
                body,
                ..Call::new(method, url, Some(token), mailbox, permission)
            })
            .await?;
        reply.json(method, url)
    }

    /// One Graph request: under `call.mailbox`'s limit, retried after 429/503/504, its reply read bounded;
    /// a status outside 2xx becomes [`GraphError::Api`].
    async fn call(&self, call: Call<'_>) -> Result<Reply, GraphError> {
        let Call {
            method,
            url,
            body,
            token,
            mailbox,
            permission,
            prefer,
            headers: extra_headers,
            limit: body_limit,
        } = call;
        let path = url.path().to_owned();
        // The token goes to Graph's own origin only; a pre-authenticated upload URL gets none.
        if token.is_some() && url.origin() != self.base.origin() {
            return Err(GraphError::Protocol {
                method,
                path,
                what: format!(
                    "a link to another origin ({}): not followed with the token",
                    url.origin().ascii_serialization()
                ),
            });
        }
        let limit = self.limit(mailbox);
        let _turn = limit
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut retries = 0;
        loop {
            let client_request_id = uuid::Uuid::new_v4().to_string();
            tracing::debug!(method, %path, %client_request_id, retries, "Graph request");
            let mut builder = self
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method"),
                    url.clone(),
                )
                .header("client-request-id", &client_request_id)
                .header("Accept", "application/json");
            if let Some(token) = token {
                builder = builder.bearer_auth(token.expose());
            }
            if let Some(prefer) = prefer {
                builder = builder.header("Prefer", prefer);
            }
            for (name, value) in &extra_headers {
                builder = builder.header(*name, value);
            }
            if let Some((content_type, bytes)) = &body {
                builder = builder
                    .header("Content-Type", *content_type)
                    .body(bytes.clone());
            }
            let response = builder.send().await.map_err(|e| {
                // A pre-authenticated upload URL is a credential (its `authtoken`): never in an error.
                let e = if token.is_none() { e.without_url() } else { e };
                let kind = if e.is_timeout() {
                    TransportKind::Timeout
                } else if e.is_connect() {
                    TransportKind::Connect
                } else {
                    TransportKind::Io
                };
                GraphError::from(TransportError::new(kind, self.base.as_str(), e))
            })?;
            let status = response.status().as_u16();
            let request_id = response
                .headers()
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::http::parse_retry_after(v, self.options.clock.now()));
            if matches!(status, 429 | 503 | 504) {
                if retries >= self.options.max_retries {
                    return Err(GraphError::Throttled {
                        method,
                        path,
                        status,
                        retries,
                        request_id,
                        retry_after,
                    });
                }
                // Retry-After as given (a little at least: `0` is seen), else 1, 2, 4 … s.
                let wait = retry_after
                    .map(|w| w.max(Duration::from_millis(100)))
                    .unwrap_or_else(|| Duration::from_secs(1 << retries.min(5)))
                    .min(self.options.max_wait);
                tracing::info!(%path, status, ?wait, request_id = request_id.as_deref().unwrap_or("-"), "Graph throttled; waiting");
                self.options.sleeper.sleep(wait).await;
                retries += 1;
                continue;
            }
            let success = (200..300).contains(&status);
            // An error body is JSON of a few hundred bytes, whatever the call reads.
            let bound = if success { body_limit } else { MAX_GRAPH_BODY };
            let reply = crate::http::read_bounded(response, bound)
                .await
                .map_err(|e| {
                    let e = if token.is_none() { e.without_url() } else { e };
                    GraphError::from(TransportError::new(
                        TransportKind::Io,
                        self.base.as_str(),
                        e,
                    ))
                })?;
            if success {
                return Ok(Reply {
                    status,
                    bytes: reply.bytes,
                    truncated: reply.truncated,
                });
            }
            let error: Option<Value> = serde_json::from_slice(&reply.bytes).ok();
            let field = |name: &str| {
                error
                    .as_ref()
                    .and_then(|e| e["error"][name].as_str())
                    .map(str::to_owned)
            };
            return Err(GraphError::Api {
                method,
                path,
                status,
                code: field("code").unwrap_or_else(|| format!("HTTP {status}")),
                message: field("message").unwrap_or_default(),
                request_id: request_id.or_else(|| {
                    error
                        .as_ref()
                        .and_then(|e| e["error"]["innerError"]["request-id"].as_str())
                        .map(str::to_owned)
                }),
                client_request_id,
                permission,
            });
        }
    }

    /// `POST /users/{mailbox}/sendMail` with the message's MIME (base64, `text/plain`; microsoft.md §8.2): the
    /// recipients are its To, Cc and Bcc headers, and Exchange files a copy in Sent Items. `202 Accepted` means
    /// accepted for delivery, not delivered.
    pub async fn send_mime(
        &self,
        token: &Secret,
        mailbox: &str,
        mime: &[u8],
    ) -> Result<(), GraphError> {
        use base64::Engine as _;
        if mime.len() > MAX_INLINE_MIME {
            return Err(GraphError::TooLarge {
                size: mime.len(),
                limit: MAX_INLINE_MIME,
            });
        }
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base")
            .pop_if_empty()
            .extend(["users", mailbox, "sendMail"]);
        let body = base64::engine::general_purpose::STANDARD.encode(mime);
        self.request(
            "POST",
            &url,
            Some(("text/plain", body.into_bytes())),
            token,
            mailbox,
            MAIL_SEND,
        )
        .await?;
        Ok(())
    }

    /// A directory call: `method` on the path `segments` (each percent-encoded) under `…/v1.0/`, with `query`
    /// pairs and an optional JSON body; the reply's JSON (`null` when empty). For `m365mail setup`'s
    /// applications, service principals and grants.
    pub async fn directory_call(
        &self,
        token: &Secret,
        method: &'static str,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, GraphError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.request(
            method,
            &url,
            body.map(|b| ("application/json", b.to_string().into_bytes())),
            token,
            "directory",
            APPLICATION_ADMIN,
        )
        .await
    }

    /// `GET /users`: the first page only (a check that the call is allowed, without reading a large
    /// directory).
    pub async fn users_page(
        &self,
        token: &Secret,
        query: &UsersQuery,
    ) -> Result<Vec<Value>, GraphError> {
        let url = self.users_url(query);
        let page = self.get_json(&url, token, "directory", USERS_READ).await?;
        Ok(page["value"].as_array().cloned().unwrap_or_default())
    }

    fn users_url(&self, query: &UsersQuery) -> Url {
        let mut url = self.base.join("users").expect("a relative path");
        {
            let mut pairs = url.query_pairs_mut();
            if !query.select.is_empty() {
                pairs.append_pair("$select", &query.select.join(","));
            }
            if let Some(filter) = &query.filter {
                pairs.append_pair("$filter", filter);
            }
            if let Some(top) = query.top {
                pairs.append_pair("$top", &top.to_string());
            }
        }
        url
    }

    /// `GET /users`: every user the query selects, following `@odata.nextLink` to the last page.
    pub async fn list_users(
        &self,
        token: &Secret,
        query: &UsersQuery,
    ) -> Result<Vec<Value>, GraphError> {
        let url = self.users_url(query);
        let mut users = Vec::new();
        let mut next = Some(url);
        while let Some(url) = next.take() {
            let page = self.get_json(&url, token, "directory", USERS_READ).await?;
            if let Some(values) = page["value"].as_array() {
                users.extend(values.iter().cloned());
            }
            next = next_link(&page, &url)?;
        }
        Ok(users)
    }
}

/// A page's link named `name` (`@odata.nextLink`, `@odata.deltaLink`), if it has one.
#[allow(clippy::result_large_err)] // as every Graph call
fn page_link(page: &Value, name: &str, url: &Url) -> Result<Option<Url>, GraphError> {
    page[name]
        .as_str()
        .map(|link| {
            Url::parse(link).map_err(|e| GraphError::Protocol {
                method: "GET",
                path: url.path().to_owned(),
                what: format!("{name} is not a URL: {e}"),
            })
        })
        .transpose()
}

/// A page's `@odata.nextLink`, if any.
#[allow(clippy::result_large_err)] // as every Graph call
fn next_link(page: &Value, url: &Url) -> Result<Option<Url>, GraphError> {
    page_link(page, "@odata.nextLink", url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_permission_and_throttling_is_transient() {
        let denied = GraphError::Api {
            method: "GET",
            path: "/v1.0/users".into(),
            status: 403,
            code: "Authorization_RequestDenied".into(),
            message: "Insufficient privileges to complete the operation.".into(),
            request_id: Some("r-1".into()),
            client_request_id: "c-1".into(),
            permission: USERS_READ,
        };
        assert_eq!(denied.class(), ErrorClass::Admin);
        assert!(
            denied.cause().contains("User.ReadBasic.All"),
            "{}",
            denied.cause()
        );
        assert!(
            denied.remedy().contains("User.Read.All"),
            "{}",
            denied.remedy()
        );
        assert!(denied.to_string().contains("request-id r-1"));
        let throttled = GraphError::Throttled {
            method: "GET",
            path: "/v1.0/users".into(),
            status: 429,
            retries: 4,
            request_id: None,
            retry_after: None,
        };
        assert_eq!(throttled.class(), ErrorClass::Transient);
    }
}
