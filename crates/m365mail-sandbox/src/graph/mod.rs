//! Microsoft Graph: the directory's users (`/v1.0/users`, `/v1.0/users/{id | upn}`, `/v1.0/me`), sending
//! mail (`POST /v1.0/users/{id | upn}/sendMail`, `POST /v1.0/me/sendMail`, see [`send_mail`]) and the
//! mailbox — folders ([`folders`]), messages ([`messages`]), delta ([`delta`]), drafts and attachment
//! uploads ([`drafts`], [`uploads`]) — over the store IMAP and POP3 use, routed by [`mail`], served on the
//! identity listener next to the token endpoints (microsoft.md §8.1–§8.7).
//!
//! Every answer under `/v1.0/` carries Graph's `request-id` (a new GUID) and `client-request-id` (the
//! client's header echoed, or the request id when the client sent none, as Graph does) headers. Errors
//! have Graph's shape:
//!
//! ```json
//! {"error": {"code": "…", "message": "…",
//!            "innerError": {"date": "2025-01-31T12:00:00", "request-id": "…", "client-request-id": "…"}}}
//! ```
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 401 (+ `WWW-Authenticate: Bearer …`) | `InvalidAuthenticationToken` | no bearer token ("Access token is empty."), malformed, bad signature, expired ("Lifetime validation failed, the token is expired."), not yet valid, another resource's token ("… Invalid audience."), unknown issuer, a user or app since disabled or deleted |
//! | 403 | `Authorization_RequestDenied` | a valid Graph token without the permission ("Insufficient privileges to complete the operation.") |
//! | 403 | `ErrorAccessDenied` | the mail routes' answer to a token without the permission, or to a mailbox the user may not use ("Access is denied. Check credentials and try again.") |
//! | 400 | `BadRequest` | `/me` with an app-only token; an unknown path segment |
//! | 400, 403, 404, 413 | see [`send_mail`] | `sendMail`'s own refusals |
//! | 400, 404, 410 | see [`mail`], [`folders`], [`messages`], [`delta`] | the mail routes' own refusals (`ErrorInvalidIdMalformed`, `ErrorItemNotFound`, `syncStateNotFound`, …) |
//! | 400 | `Request_BadRequest` | `$skip`, a bad `$top`, an unknown `$select` property, a query option sent twice |
//! | 400 | `Request_UnsupportedQuery` | a `$filter` or query option the sandbox does not model (see [`users`]) |
//! | 400 | `Directory_ExpiredPageToken` | a `$skiptoken` the sandbox did not issue |
//! | 404 | `Request_ResourceNotFound` | `/users/{id}` names no user of the token's tenant |
//! | 405 | `Request_BadRequest` | another method than the route's (GET; POST for `sendMail`) |
//! | 413 | `ErrorRequestEntityTooLarge` | a request body over [`MAX_REQUEST_BODY_BYTES`] |
//! | 429 (+ `Retry-After`) | `ApplicationThrottled` | when injected ([`GraphFault::Throttled`]); a fifth concurrent mail request of one app to one mailbox ([`mail`]) |
//! | 410 | `syncStateNotFound` | when injected ([`GraphFault::SyncStateNotFound`]): the next delta request carrying a token |
//! | 503 (+ `Retry-After`) | `serviceNotAvailable` | only when injected ([`GraphFault::Unavailable`]) |
//!
//! Texts Microsoft documents (microsoft.md §8.6, §8.7 and the user-list page) are used as published; the
//! other texts (the 401 variants, the 503 text, the unknown-property and unknown-segment texts) follow
//! answers Graph is commonly seen to give, and clients must branch on `code`, never on the text.

mod delta;
mod directory;
mod drafts;
mod folders;
pub(crate) mod ids;
pub(crate) mod mail;
mod messages;
mod send_mail;
mod uploads;
mod users;

pub(crate) use mail::GraphMail;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{any, get},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    identity::{bearer::BearerRefusal, crypto::random_guid, state::IdentityState},
    tenant::MICROSOFT_GRAPH_APP_ID,
};

/// The largest request body Graph takes: 4 MiB. Microsoft documents "about 4 MB" for a whole Graph request
/// (hence its 3 MB inline-attachment threshold); the exact figure is unconfirmed (microsoft.md §8.3). A
/// larger body gets 413 `ErrorRequestEntityTooLarge` (that code and its text are the sandbox's choice).
pub(crate) const MAX_REQUEST_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Marks a Graph request whose body was over [`MAX_REQUEST_BODY_BYTES`] (and was dropped): the Graph
/// middleware answers it with 413 in Graph's shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTooLarge;

/// Whether a request path is one of Graph's (`/v1.0` and below, and the attachment upload URLs of
/// [`uploads`], which Outlook serves for Graph): their bodies have Graph's limit and refusal.
pub(crate) fn is_graph_path(path: &str) -> bool {
    path == "/v1.0" || path.starts_with("/v1.0/") || uploads::is_upload_path(path)
}

/// Where Graph's `@odata.context` URLs point (Graph's own metadata, as a real tenant answers).
pub(crate) const METADATA: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// A failure Microsoft Graph answers with instead of handling a request, injected through the admin API
/// (`POST /_sandbox/admin/faults/graph`) for testing clients' retry logic. It answers the next Graph
/// requests whatever they are (before their token is looked at).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum GraphFault {
    /// HTTP 429, `ApplicationThrottled`, "Application is over its MailboxConcurrency limit.", with
    /// `Retry-After` (microsoft.md §8.7).
    Throttled {
        /// The `Retry-After` value in seconds (default 1).
        #[serde(default = "one_second")]
        retry_after_seconds: u64,
    },
    /// HTTP 503, `serviceNotAvailable`, with `Retry-After`.
    Unavailable {
        /// The `Retry-After` value in seconds (default 1).
        #[serde(default = "one_second")]
        retry_after_seconds: u64,
    },
    /// HTTP 410, `syncStateNotFound`: answers the next delta request that carries a `$skiptoken` or
    /// `$deltatoken` (other requests pass), as Graph does when it has dropped a sync state, so a client's
    /// full-resync path can be tested.
    SyncStateNotFound,
}

fn one_second() -> u64 {
    1
}

impl GraphFault {
    fn to_error(&self) -> GraphError {
        match self {
            Self::Throttled {
                retry_after_seconds,
            } => GraphError::throttled(*retry_after_seconds),
            Self::Unavailable {
                retry_after_seconds,
            } => GraphError::unavailable(*retry_after_seconds),
            Self::SyncStateNotFound => GraphError::sync_state_not_found(),
        }
    }
}

/// The ids of one Graph request, for its headers and its error body.
#[derive(Debug, Clone)]
struct GraphContext {
    request_id: String,
    client_request_id: String,
}

impl GraphContext {
    fn new(headers: &HeaderMap) -> Self {
        let request_id = random_guid();
        // Graph echoes the client's id; without one, the response carries the request id in its place.
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty() && value.len() <= 256)
            .map_or_else(|| request_id.clone(), str::to_owned);
        Self {
            request_id,
            client_request_id,
        }
    }
}

/// A Graph error answer. A handler returns it; the Graph middleware renders it with the request's ids
/// (the handler's response only carries it as an extension).
#[derive(Debug, Clone)]
pub(crate) struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_seconds: Option<u64>,
    /// An upload session's next expected byte, shown as Outlook's `NextExpectedRanges` beside the error.
    next_expected_range: Option<u64>,
}

impl GraphError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_seconds: None,
            next_expected_range: None,
        }
    }

    /// The error with Outlook's `NextExpectedRanges` (an upload session's refusal of a chunk).
    pub(crate) fn with_next_expected_range(self, next: u64) -> Self {
        Self {
            next_expected_range: Some(next),
            ..self
        }
    }

    /// 400 with a code of Graph's directory (`Request_BadRequest`, …).
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `Request_UnsupportedQuery`. Graph's code for a query it cannot run; the sandbox also uses it
    /// for every query it does not model (some of which Graph runs), so a client sees at once that the
    /// sandbox, not its request, is the limit.
    pub(crate) fn unsupported_query(message: impl Into<String>) -> Self {
        Self::bad_request("Request_UnsupportedQuery", message)
    }

    /// 401 `InvalidAuthenticationToken`.
    fn unauthenticated(message: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    }

    /// 403 `Authorization_RequestDenied`.
    pub(crate) fn insufficient_privileges() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    }

    /// 403 `ErrorAccessDenied`: the mail routes' (Exchange's) refusal of a token without the permission
    /// or of a mailbox the identity may not use.
    pub(crate) fn access_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )
    }

    /// 413 `ErrorRequestEntityTooLarge` (see [`MAX_REQUEST_BODY_BYTES`]).
    fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ErrorRequestEntityTooLarge",
            format!(
                "The request body is too large: the limit is {MAX_REQUEST_BODY_BYTES} bytes. Send large attachments through an upload session."
            ),
        )
    }

    /// 404 `Request_ResourceNotFound` for a directory object.
    pub(crate) fn resource_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    }

    /// 400 `BadRequest`: `/me` needs a user.
    pub(crate) fn me_needs_delegated() -> Self {
        Self::bad_request(
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        )
    }

    /// 410 `syncStateNotFound`: a delta token the sandbox cannot resume from (see [`delta`]).
    pub(crate) fn sync_state_not_found() -> Self {
        Self::new(
            StatusCode::GONE,
            "syncStateNotFound",
            "The sync state generation is not found. Start a new sync without a token.",
        )
    }

    pub(crate) fn throttled(retry_after_seconds: u64) -> Self {
        Self {
            retry_after_seconds: Some(retry_after_seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
            )
        }
    }

    fn unavailable(retry_after_seconds: u64) -> Self {
        Self {
            retry_after_seconds: Some(retry_after_seconds),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry later.",
            )
        }
    }

    /// The answer to a bearer token that does not grant the operation: 401 for a token Graph would not
    /// accept at all, 403 for a valid one without the permission.
    pub(crate) fn refused(refusal: &BearerRefusal) -> Self {
        match refusal {
            BearerRefusal::MissingScope { .. } | BearerRefusal::MissingRole { .. } => {
                Self::insufficient_privileges()
            }
            BearerRefusal::Malformed => {
                Self::unauthenticated("CompactToken parsing failed with error code: 80049217")
            }
            BearerRefusal::BadSignature => {
                Self::unauthenticated("Access token validation failure. Invalid signature.")
            }
            BearerRefusal::Expired { .. } => {
                Self::unauthenticated("Lifetime validation failed, the token is expired.")
            }
            BearerRefusal::NotYetValid { .. } => {
                Self::unauthenticated("Access token has expired or is not yet valid.")
            }
            BearerRefusal::UnknownTenant { .. } => {
                Self::unauthenticated("Access token validation failure. Invalid issuer.")
            }
            BearerRefusal::WrongAudience { .. } => {
                Self::unauthenticated("Access token validation failure. Invalid audience.")
            }
            BearerRefusal::UnknownIdentity { .. } => Self::unauthenticated(
                "Access token validation failure. The user or application no longer exists or is disabled.",
            ),
        }
    }

    /// The body, with the request's ids and the sandbox clock's date (Graph writes it without a zone).
    fn render(self, state: &IdentityState, context: &GraphContext) -> Response {
        let date = chrono::DateTime::from_timestamp(
            i64::try_from(state.now_unix()).unwrap_or(i64::MAX),
            0,
        )
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
        let mut body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": date,
                    "request-id": context.request_id,
                    "client-request-id": context.client_request_id,
                },
            }
        });
        if let Some(next) = self.next_expected_range {
            body["NextExpectedRanges"] = json!([next.to_string()]);
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // Graph's challenge; the authorization URI is the sandbox's own authority.
            let challenge = format!(
                "Bearer realm=\"\", authorization_uri=\"{}common/oauth2/v2.0/authorize\", client_id=\"{MICROSOFT_GRAPH_APP_ID}\"",
                state.base()
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// A successful Graph JSON answer, with Graph's OData content type.
pub(crate) fn graph_json(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        ),
    );
    response
        .headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    response
}

/// The bearer token of the `Authorization` header; absent, another scheme or empty → 401 "Access token is
/// empty."
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, GraphError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| GraphError::unauthenticated("Access token is empty."))
}

/// `scheme://host[:port]` as the client addressed this request (the HTTP/2 authority or the `Host` header),
/// for absolute links; the sandbox's base URL when neither is a plain host.
pub(crate) fn request_base(state: &IdentityState, uri: &Uri, headers: &HeaderMap) -> String {
    let scheme = state.base_url.scheme();
    let host = uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        });
    host.and_then(|host| url::Url::parse(&format!("{scheme}://{host}/")).ok())
        .filter(|url| {
            url.host_str().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none()
        })
        .map_or_else(
            || state.base().trim_end_matches('/').to_owned(),
            |url| url.as_str().trim_end_matches('/').to_owned(),
        )
}

/// Every Graph request: counted, answered by an injected fault if one is pending, its errors rendered
/// with its ids, and its `request-id` / `client-request-id` headers added.
async fn graph_middleware(
    State(state): State<Arc<IdentityState>>,
    request: Request,
    next: Next,
) -> Response {
    state.count_endpoint("graph");
    let context = GraphContext::new(request.headers());
    // An oversized body is refused at the door, before an injected fault is used up.
    let mut response = if request.extensions().get::<BodyTooLarge>().is_some() {
        GraphError::too_large().into_response()
    } else {
        // A sync-state fault waits for the delta request it is meant for.
        let fault = state
            .graph_faults
            .take(|fault| !matches!(fault, GraphFault::SyncStateNotFound));
        match fault {
            Some(fault) => fault.to_error().into_response(),
            None => next.run(request).await,
        }
    };
    if let Some(error) = response.extensions_mut().remove::<GraphError>() {
        response = error.render(&state, &context);
    }
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&context.request_id) {
        headers.insert("request-id", value);
    }
    if let Ok(value) = HeaderValue::from_str(&context.client_request_id) {
        headers.insert("client-request-id", value);
    }
    response
}

/// Another method than the route's on a Graph route.
async fn method_not_allowed() -> GraphError {
    method_not_allowed_error()
}

/// 405 `Request_BadRequest`.
pub(crate) fn method_not_allowed_error() -> GraphError {
    GraphError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

/// A path under `/v1.0/` the sandbox does not serve: Graph's 400 naming the first unknown segment.
async fn unknown_segment(uri: Uri) -> GraphError {
    let segments = mail::path_segments(&uri);
    // What the sandbox knows: `users`, `users/{id}`, `me`, and below a mailbox the mail routes.
    let mailbox_segments = match segments.first().map(String::as_str) {
        Some("users") => 2,
        Some("me") => 1,
        _ => 0,
    };
    let known = if mailbox_segments > 0 && segments.len() > mailbox_segments {
        mail::parse_route(&segments[mailbox_segments..])
            .err()
            .map_or(segments.len(), |index| mailbox_segments + index)
    } else {
        mailbox_segments
    };
    unknown_segment_named(&segments, known)
}

/// The directory's application routes ([`directory`]), else [`unknown_segment`].
async fn other_paths(
    state: State<Arc<IdentityState>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if directory::handles(&mail::path_segments(&uri)) {
        match directory::serve(state, method, uri, headers, body).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    } else {
        unknown_segment(uri).await.into_response()
    }
}

/// 400 `BadRequest` naming `segments[index]` (the last segment when there are fewer).
pub(crate) fn unknown_segment_named(segments: &[String], index: usize) -> GraphError {
    let segment = segments
        .get(index)
        .or(segments.last())
        .map(String::as_str)
        .unwrap_or_default();
    GraphError::bad_request(
        "BadRequest",
        format!("Resource not found for the segment '{segment}'."),
    )
}

fn percent_decoded(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// The Graph routes (all under `/v1.0/`), wrapped in the Graph middleware.
pub(crate) fn router(state: Arc<IdentityState>) -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v1.0/users", get(users::list).fallback(method_not_allowed))
        .route(
            "/v1.0/users/{id}",
            get(users::one).fallback(method_not_allowed),
        )
        .route("/v1.0/me", get(users::me).fallback(method_not_allowed))
        .route("/v1.0/users/{id}/{*rest}", any(mail::user_mail))
        .route("/v1.0/me/{*rest}", any(mail::me_mail))
        .route(
            uploads::UPLOAD_ROUTE,
            axum::routing::put(uploads::put_chunk).fallback(uploads::other_method),
        )
        .route("/v1.0", any(unknown_segment))
        .route("/v1.0/", any(unknown_segment))
        .route("/v1.0/{*rest}", any(other_paths))
        // The body was read whole and bounded before routing (`request_body`); axum's own default cap
        // (2 MiB) would otherwise refuse Graph bodies between 2 and 4 MiB in its own shape.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state,
            graph_middleware,
        ))
}
