//! What every Graph mail route shares: the paths under `/v1.0/users/{id | userPrincipalName}/…` and
//! `/v1.0/me/…` (one dispatcher, as Graph matches path segments without case), who may use which mailbox
//! with which permission, the `Prefer` header, and Outlook's per-mailbox concurrency limit.
//!
//! Routes (each also under `/me/…`; `{folder}` is a folder id or a well-known name, see [`super::folders`]):
//!
//! | Method | Path | Permission | Module |
//! |---|---|---|---|
//! | POST | `/users/{id}/sendMail` | `Mail.Send` | [`super::send_mail`] |
//! | GET | `/users/{id}/mailFolders`, `…/mailFolders/{folder}`, `…/mailFolders/{folder}/childFolders` | `Mail.Read` | [`super::folders`] |
//! | GET | `/users/{id}/messages`, `…/mailFolders/{folder}/messages` | `Mail.Read` | [`super::messages`] |
//! | GET | `…/messages/{message}`, `…/messages/{message}/$value` (also under `mailFolders/{folder}/`) | `Mail.Read` | [`super::messages`] |
//! | PATCH, DELETE | `…/messages/{message}` | `Mail.ReadWrite` | [`super::messages`] |
//! | POST | `…/messages/{message}/move`, `…/copy` | `Mail.ReadWrite` | [`super::messages`] |
//! | GET | `…/mailFolders/{folder}/messages/delta` | `Mail.Read` | [`super::delta`] |
//! | POST | `/users/{id}/messages` (a draft), `…/messages/{message}/attachments`, `…/attachments/createUploadSession` | `Mail.ReadWrite` | [`super::drafts`] |
//! | POST | `…/messages/{message}/send` | `Mail.Send` | [`super::drafts`] |
//!
//! **Permissions** (Microsoft's documented ones, microsoft.md §8.3, §8.5): reading needs `Mail.Read` or
//! `Mail.ReadWrite`, changing needs `Mail.ReadWrite`, sending `Mail.Send` — delegated (`scp`) or application
//! (`roles`). A delegated token reaches the user's own mailbox or one they have FullAccess on (the sandbox's
//! model of a delegate: a real tenant also wants the `.Shared` permissions there); an application token any
//! mailbox of its tenant (the model has no application access policy). A token without the permission, or a
//! user's token for a mailbox they may not use: 403 `ErrorAccessDenied`. `/me` with an app-only token: 400
//! `BadRequest`. `/users/{id}` naming no user or mailbox: 404 `ErrorInvalidUser`; a user without a mailbox:
//! 404 `MailboxNotEnabledForRESTAPI`.
//!
//! **`Prefer`** (one header holding several preferences separated by commas, or several headers):
//! `IdType="ImmutableId"` makes every message id in the answer and in its links immutable (Microsoft's
//! documented preference); `odata.maxpagesize=N` sets the delta page size. Each preference honoured is named
//! in `Preference-Applied`.
//!
//! **Concurrency** (microsoft.md §8.7, Microsoft's documented Outlook limit): at most 4 requests of one app
//! (the token's `appid`) to one mailbox are served at once; a fifth gets 429 `ApplicationThrottled`
//! ("Application is over its MailboxConcurrency limit.") with `Retry-After: 1`. The sandbox's handlers are
//! short, so only truly simultaneous requests meet it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, request::Parts},
    response::Response,
};

use super::{GraphError, bearer_token, ids::TokenSigner, percent_decoded, send_mail};
use crate::{
    exchange::ExchangeState,
    identity::{
        bearer::{BearerRefusal, Principal, Requirement},
        state::IdentityState,
    },
    sync::lock,
    tenant::TenantModel,
};

/// Outlook's concurrent requests per app and mailbox (microsoft.md §8.7).
pub(crate) const MAX_CONCURRENT_REQUESTS: u32 = 4;

/// The Graph mail service's own state, next to the store it serves from.
#[derive(Debug)]
pub(crate) struct GraphMail {
    /// Seals delta tokens: a token of another run does not open.
    pub(crate) tokens: TokenSigner,
    /// Requests being served per (app id, mailbox), both lower case; an entry leaves at zero.
    in_flight: Mutex<HashMap<(String, String), u32>>,
    /// Live attachment upload sessions.
    pub(crate) uploads: super::uploads::UploadSessions,
}

impl GraphMail {
    pub(crate) fn new() -> Self {
        Self {
            tokens: TokenSigner::random(),
            in_flight: Mutex::default(),
            uploads: super::uploads::UploadSessions::default(),
        }
    }

    /// Takes one of the app's concurrent-request slots on `mailbox`, or refuses with Outlook's 429.
    pub(crate) fn enter(
        self: &Arc<Self>,
        app_id: &str,
        mailbox: &str,
    ) -> Result<InFlight, GraphError> {
        let key = (app_id.to_ascii_lowercase(), mailbox.to_ascii_lowercase());
        let mut in_flight = lock(&self.in_flight);
        let count = in_flight.entry(key.clone()).or_insert(0);
        if *count >= MAX_CONCURRENT_REQUESTS {
            return Err(GraphError::throttled(1));
        }
        *count += 1;
        Ok(InFlight {
            mail: Arc::clone(self),
            key,
        })
    }
}

/// One request counted against its app's concurrency on a mailbox, until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    mail: Arc<GraphMail>,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.mail.in_flight);
        if let Some(count) = in_flight.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.key);
            }
        }
    }
}

/// The mailbox a request addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    Me,
    User(&'a str),
}

/// A mailbox of the tenant, as a request found it.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    /// Its address, as the directory spells it.
    pub(crate) address: String,
    pub(crate) display_name: String,
}

/// The mailbox `target` names, if `principal` may use it.
pub(crate) fn resolve_mailbox(
    directory: &TenantModel,
    principal: &Principal,
    target: Target<'_>,
) -> Result<Mailbox, GraphError> {
    let tenant_id = match principal {
        Principal::User { tenant_id, .. } | Principal::App { tenant_id, .. } => tenant_id,
    };
    let tenant = directory
        .tenant(tenant_id)
        .ok_or_else(GraphError::access_denied)?;
    let own_mailbox = |upn: &str| {
        tenant.mailboxes.iter().find(|mailbox| {
            !mailbox.shared
                && mailbox
                    .owner_upn
                    .as_deref()
                    .is_some_and(|owner| owner.eq_ignore_ascii_case(upn))
        })
    };
    let no_mailbox = || {
        GraphError::new(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    };
    let mailbox = match target {
        Target::Me => {
            let Principal::User { object_id, .. } = principal else {
                return Err(GraphError::me_needs_delegated());
            };
            let user = tenant
                .users
                .iter()
                .find(|user| user.object_id.eq_ignore_ascii_case(object_id))
                .ok_or_else(no_mailbox)?;
            own_mailbox(&user.upn).ok_or_else(no_mailbox)?
        }
        Target::User(id) => {
            let user = tenant.users.iter().find(|user| {
                user.object_id.eq_ignore_ascii_case(id) || user.upn.eq_ignore_ascii_case(id)
            });
            match user {
                Some(user) => own_mailbox(&user.upn).ok_or_else(no_mailbox)?,
                None => tenant
                    .mailboxes
                    .iter()
                    .find(|mailbox| mailbox.address.eq_ignore_ascii_case(id))
                    .ok_or_else(|| {
                        GraphError::new(
                            StatusCode::NOT_FOUND,
                            "ErrorInvalidUser",
                            format!("The requested user '{id}' is invalid."),
                        )
                    })?,
            }
        }
    };
    if let Principal::User { upn, .. } = principal {
        let own = mailbox
            .owner_upn
            .as_deref()
            .is_some_and(|owner| owner.eq_ignore_ascii_case(upn));
        let delegate = mailbox
            .full_access_users
            .iter()
            .any(|user| user.eq_ignore_ascii_case(upn));
        if !own && !delegate {
            return Err(GraphError::access_denied());
        }
    }
    Ok(Mailbox {
        address: mailbox.address.clone(),
        display_name: mailbox.display_name.clone(),
    })
}

/// The bearer check of the mail routes: the principal and the mailbox it may use. A token without the
/// permission is Exchange's 403 `ErrorAccessDenied` (not the directory's `Authorization_RequestDenied`).
pub(crate) fn authorize(
    state: &IdentityState,
    headers: &HeaderMap,
    target: Target<'_>,
    requirement: Requirement,
) -> Result<(Principal, Mailbox), GraphError> {
    let token = bearer_token(headers)?;
    let directory = lock(&state.directory);
    let principal = match state.check_bearer(&directory, token, requirement) {
        Ok(principal) => principal,
        // Only an app-only token lacks a role: `/me` has no user for it.
        Err(BearerRefusal::MissingRole { .. }) if matches!(target, Target::Me) => {
            return Err(GraphError::me_needs_delegated());
        }
        Err(BearerRefusal::MissingScope { .. } | BearerRefusal::MissingRole { .. }) => {
            return Err(GraphError::access_denied());
        }
        Err(refusal) => return Err(GraphError::refused(&refusal)),
    };
    let mailbox = resolve_mailbox(&directory, &principal, target)?;
    Ok((principal, mailbox))
}

/// The app a principal's token was issued to.
pub(crate) fn app_id(principal: &Principal) -> &str {
    match principal {
        Principal::User { app_id, .. } | Principal::App { app_id, .. } => app_id,
    }
}

/// The preferences of a request's `Prefer` headers the sandbox knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Preferences {
    /// `IdType="ImmutableId"`.
    pub(crate) immutable_ids: bool,
    /// `odata.maxpagesize=N` (N ≥ 1).
    pub(crate) max_page_size: Option<usize>,
}

impl Preferences {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut preferences = Self::default();
        let items = headers
            .get_all("prefer")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','));
        for item in items {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "idtype" if value.eq_ignore_ascii_case("ImmutableId") => {
                    preferences.immutable_ids = true;
                }
                "odata.maxpagesize" => {
                    preferences.max_page_size = value.parse().ok().filter(|size| *size >= 1);
                }
                _ => {}
            }
        }
        preferences
    }
}

/// Adds `Preference-Applied` naming each preference applied (none: no header).
pub(crate) fn add_preference_applied(response: &mut Response, applied: &[String]) {
    if applied.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&applied.join(", ")) {
        response.headers_mut().insert("preference-applied", value);
    }
}

/// What a mail path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MailRoute {
    SendMail,
    Folders,
    Folder(String),
    ChildFolders(String),
    /// The messages of a folder, or of the whole mailbox.
    Messages(Option<String>),
    Delta(String),
    Message {
        folder: Option<String>,
        id: String,
        part: MessagePart,
    },
}

/// What a message path names below the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessagePart {
    Item,
    Value,
    Move,
    Copy,
    Send,
    Attachments,
    CreateUploadSession,
}

/// The route of the segments after `users/{id}` or `me` (percent-decoded), or the index of the first
/// segment the sandbox does not know.
pub(crate) fn parse_route(segments: &[String]) -> Result<MailRoute, usize> {
    let is = |index: usize, name: &str| {
        segments
            .get(index)
            .is_some_and(|segment| segment.eq_ignore_ascii_case(name))
    };
    let exactly = |length: usize, route: MailRoute| {
        if segments.len() == length {
            Ok(route)
        } else {
            Err(length)
        }
    };
    if is(0, "sendMail") {
        return exactly(1, MailRoute::SendMail);
    }
    if is(0, "messages") {
        return match segments.get(1) {
            None => Ok(MailRoute::Messages(None)),
            Some(id) => message_route(None, id, &segments[2..], 2),
        };
    }
    if !is(0, "mailFolders") {
        return Err(0);
    }
    let Some(folder) = segments.get(1).cloned() else {
        return Ok(MailRoute::Folders);
    };
    if segments.len() == 2 {
        return Ok(MailRoute::Folder(folder));
    }
    if is(2, "childFolders") {
        return exactly(3, MailRoute::ChildFolders(folder));
    }
    if !is(2, "messages") {
        return Err(2);
    }
    match segments.get(3) {
        None => Ok(MailRoute::Messages(Some(folder))),
        Some(segment) if segment.eq_ignore_ascii_case("delta") => {
            exactly(4, MailRoute::Delta(folder))
        }
        Some(id) => message_route(Some(folder), id, &segments[4..], 4),
    }
}

/// A message route: `rest` follows the message id, whose segment is at `rest_index - 1`.
fn message_route(
    folder: Option<String>,
    id: &str,
    rest: &[String],
    rest_index: usize,
) -> Result<MailRoute, usize> {
    let is = |index: usize, name: &str| {
        rest.get(index)
            .is_some_and(|segment| segment.eq_ignore_ascii_case(name))
    };
    let (part, length) = if rest.is_empty() {
        (MessagePart::Item, 0)
    } else if is(0, "$value") {
        (MessagePart::Value, 1)
    } else if is(0, "move") {
        (MessagePart::Move, 1)
    } else if is(0, "copy") {
        (MessagePart::Copy, 1)
    } else if is(0, "send") {
        (MessagePart::Send, 1)
    } else if is(0, "attachments") {
        match rest.get(1) {
            None => (MessagePart::Attachments, 1),
            Some(_) if is(1, "createUploadSession") => (MessagePart::CreateUploadSession, 2),
            Some(_) => return Err(rest_index + 1),
        }
    } else {
        return Err(rest_index);
    };
    if rest.len() > length {
        return Err(rest_index + length);
    }
    Ok(MailRoute::Message {
        folder,
        id: id.to_owned(),
        part,
    })
}

impl MailRoute {
    /// Whether the route takes `method`.
    fn allows(&self, method: &Method) -> bool {
        match self {
            Self::SendMail => method == Method::POST,
            Self::Folders | Self::Folder(_) | Self::ChildFolders(_) | Self::Delta(_) => {
                method == Method::GET
            }
            Self::Messages(None) => method == Method::GET || method == Method::POST,
            Self::Messages(Some(_)) => method == Method::GET,
            Self::Message { part, .. } => match part {
                MessagePart::Item => {
                    method == Method::GET || method == Method::PATCH || method == Method::DELETE
                }
                MessagePart::Value => method == Method::GET,
                MessagePart::Move
                | MessagePart::Copy
                | MessagePart::Send
                | MessagePart::Attachments
                | MessagePart::CreateUploadSession => method == Method::POST,
            },
        }
    }

    /// The permission the route needs with `method`.
    fn requirement(&self, method: &Method) -> Requirement {
        match self {
            Self::SendMail
            | Self::Message {
                part: MessagePart::Send,
                ..
            } => Requirement::GRAPH_MAIL_SEND,
            _ if method == Method::GET => Requirement::GRAPH_MAIL_READ,
            _ => Requirement::GRAPH_MAIL_READ_WRITE,
        }
    }
}

/// The path's segments after `/v1.0/`, each percent-decoded.
pub(crate) fn path_segments(uri: &Uri) -> Vec<String> {
    uri.path()
        .trim_start_matches("/v1.0")
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(percent_decoded)
        .collect()
}

/// One mail request, authorized: everything a route's handler needs.
pub(crate) struct MailRequest<'a> {
    pub(crate) state: &'a IdentityState,
    pub(crate) exchange: &'a ExchangeState,
    pub(crate) mail: &'a GraphMail,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) method: &'a Method,
    pub(crate) body: &'a [u8],
    pub(crate) principal: Principal,
    pub(crate) mailbox: Mailbox,
    pub(crate) preferences: Preferences,
}

impl MailRequest<'_> {
    /// `scheme://host[:port]` as the client addressed this request.
    pub(crate) fn base(&self) -> String {
        super::request_base(self.state, self.uri, self.headers)
    }
}

/// The extensions every mail handler takes.
type ExchangeExtension = axum::Extension<Arc<ExchangeState>>;
type MailExtension = axum::Extension<Arc<GraphMail>>;

/// Any method on `/v1.0/users/{id}/{*rest}`.
pub(super) async fn user_mail(
    State(state): State<Arc<IdentityState>>,
    axum::Extension(exchange): ExchangeExtension,
    axum::Extension(mail): MailExtension,
    Path((id, _)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, GraphError> {
    let context = Context {
        state: &state,
        exchange: &exchange,
        mail: &mail,
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
    };
    dispatch(context, Target::User(&id), 2)
}

/// Any method on `/v1.0/me/{*rest}`.
pub(super) async fn me_mail(
    State(state): State<Arc<IdentityState>>,
    axum::Extension(exchange): ExchangeExtension,
    axum::Extension(mail): MailExtension,
    parts: Parts,
    body: Bytes,
) -> Result<Response, GraphError> {
    let context = Context {
        state: &state,
        exchange: &exchange,
        mail: &mail,
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
    };
    dispatch(context, Target::Me, 1)
}

/// A request before it is authorized.
struct Context<'a> {
    state: &'a IdentityState,
    exchange: &'a ExchangeState,
    mail: &'a Arc<GraphMail>,
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

/// Routes a mail request (`mailbox_segments`: how many path segments name the mailbox), checks its
/// method, token, permission and mailbox, holds a concurrency slot, and runs the route.
fn dispatch(
    context: Context<'_>,
    target: Target<'_>,
    mailbox_segments: usize,
) -> Result<Response, GraphError> {
    let segments = path_segments(context.uri);
    let route = parse_route(&segments[mailbox_segments.min(segments.len())..])
        .map_err(|index| super::unknown_segment_named(&segments, mailbox_segments + index))?;
    if !route.allows(context.method) {
        return Err(super::method_not_allowed_error());
    }
    let (principal, mailbox) = authorize(
        context.state,
        context.headers,
        target,
        route.requirement(context.method),
    )?;
    let _slot = context.mail.enter(app_id(&principal), &mailbox.address)?;
    let request = MailRequest {
        state: context.state,
        exchange: context.exchange,
        mail: context.mail,
        uri: context.uri,
        headers: context.headers,
        method: context.method,
        body: context.body,
        principal,
        mailbox,
        preferences: Preferences::parse(context.headers),
    };
    let (mut response, mut applied) = match route {
        MailRoute::SendMail => (
            send_mail::send_mail(
                request.state,
                request.exchange,
                &request.principal,
                &request.mailbox,
                request.headers,
                request.body,
            )?,
            Vec::new(),
        ),
        MailRoute::Folders => (super::folders::list(&request, None)?, Vec::new()),
        MailRoute::ChildFolders(folder) => {
            (super::folders::list(&request, Some(&folder))?, Vec::new())
        }
        MailRoute::Folder(folder) => (super::folders::one(&request, &folder)?, Vec::new()),
        MailRoute::Messages(folder) if context.method == Method::POST && folder.is_none() => {
            super::drafts::create(&request)?
        }
        MailRoute::Messages(folder) => super::messages::list(&request, folder.as_deref())?,
        MailRoute::Delta(folder) => super::delta::delta(&request, &folder)?,
        MailRoute::Message { folder, id, part } => {
            super::messages::message_route(&request, folder.as_deref(), &id, part)?
        }
    };
    if request.preferences.immutable_ids {
        applied.insert(0, "IdType=\"ImmutableId\"".to_owned());
    }
    add_preference_applied(&mut response, &applied);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Result<MailRoute, usize> {
        let segments: Vec<String> = path.split('/').map(str::to_owned).collect();
        parse_route(&segments)
    }

    #[test]
    fn routes_match_segments_without_case_and_name_the_first_unknown_one() {
        assert_eq!(route("sendmail"), Ok(MailRoute::SendMail));
        assert_eq!(route("MailFolders"), Ok(MailRoute::Folders));
        assert_eq!(
            route("mailFolders/inbox/childFolders"),
            Ok(MailRoute::ChildFolders("inbox".into()))
        );
        assert_eq!(
            route("mailFolders/inbox/messages/delta"),
            Ok(MailRoute::Delta("inbox".into()))
        );
        assert_eq!(
            route("messages/AAMk=/$value"),
            Ok(MailRoute::Message {
                folder: None,
                id: "AAMk=".into(),
                part: MessagePart::Value
            })
        );
        assert_eq!(
            route("mailFolders/x/messages/m/attachments/createUploadSession"),
            Ok(MailRoute::Message {
                folder: Some("x".into()),
                id: "m".into(),
                part: MessagePart::CreateUploadSession
            })
        );
        assert_eq!(route("calendar"), Err(0));
        assert_eq!(route("sendMail/x"), Err(1));
        assert_eq!(route("mailFolders/inbox/rules"), Err(2));
        assert_eq!(route("mailFolders/inbox/messages/delta/x"), Err(4));
        assert_eq!(route("messages/m/forward"), Err(2));
        assert_eq!(route("messages/m/attachments/a1"), Err(3));
        assert_eq!(route("messages/m/$value/x"), Err(3));
        assert_eq!(route("mailFolders/inbox/messages/m/move/x"), Err(5));
    }

    #[test]
    fn prefer_headers_combine() {
        let mut headers = HeaderMap::new();
        headers.append(
            "prefer",
            HeaderValue::from_static("odata.maxpagesize=2, IdType=\"ImmutableId\""),
        );
        let preferences = Preferences::parse(&headers);
        assert!(preferences.immutable_ids);
        assert_eq!(preferences.max_page_size, Some(2));
        let mut headers = HeaderMap::new();
        headers.append(
            "prefer",
            HeaderValue::from_static("outlook.timezone=\"UTC\""),
        );
        headers.append("Prefer", HeaderValue::from_static("idtype=immutableid"));
        assert!(Preferences::parse(&headers).immutable_ids);
        headers.append("prefer", HeaderValue::from_static("odata.maxpagesize=0"));
        assert_eq!(Preferences::parse(&headers).max_page_size, None);
    }

    #[test]
    fn four_requests_per_app_and_mailbox_run_at_once() {
        let mail = Arc::new(GraphMail::new());
        let slots: Vec<InFlight> = (0..MAX_CONCURRENT_REQUESTS)
            .map(|_| mail.enter("app", "Adele@x").unwrap())
            .collect();
        let refused = mail.enter("APP", "adele@x").unwrap_err();
        assert_eq!(refused.code, "ApplicationThrottled");
        assert_eq!(refused.retry_after_seconds, Some(1));
        // Another mailbox, another app: their own slots.
        let _other_mailbox = mail.enter("app", "alex@x").unwrap();
        let _other_app = mail.enter("app2", "adele@x").unwrap();
        drop(slots);
        let _again = mail.enter("app", "adele@x").unwrap();
        assert_eq!(
            lock(&mail.in_flight).len(),
            3,
            "finished keys leave the map"
        );
    }
}
