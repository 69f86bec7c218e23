//! Attachment upload sessions (microsoft.md §8.3): the `uploadUrl` a `createUploadSession` answers
//! ([`super::drafts`]) and the chunked `PUT`s to it.
//!
//! Microsoft's documented behaviour: the URL points at Outlook, outside Graph (`https://outlook.office.com/
//! api/v2.0/…/AttachmentSessions('…')?authtoken=…`), and is pre-authenticated by its `authtoken`: clients
//! must use it unchanged and send **no** `Authorization` header. Each `PUT` carries `Content-Range: bytes
//! {start}-{end}/{total}` (0-based, inclusive), `Content-Length` and `Content-Type:
//! application/octet-stream`, in order, at most 4 MB each (Microsoft recommends; the sandbox enforces 4 MiB,
//! Graph's body limit); an intermediate chunk answers `200` with Outlook's `{"ExpirationDateTime",
//! "NextExpectedRanges": ["{next byte}"]}`, the last `201 Created` with a `Location` header naming the
//! attachment. Attachments are at most 150 MB.
//!
//! The sandbox's URL, absolute on the base URL the client used to create the session:
//! `https://host:port/_sandbox/outlook/api/v2.0/Users('{mailbox}')/Messages('{immutable id}')/
//! AttachmentSessions('{session id}')?authtoken={random}`; the `Location`:
//! `https://host:port/_sandbox/outlook/api/v2.0/Users('{mailbox}')/Messages('{immutable id}')/
//! Attachments('{attachment id}')` (not served: it names the attachment).
//!
//! The sandbox's choices: a session lives 15 minutes on the sandbox clock, each accepted chunk extending it
//! (as Graph's uploadSession documents), and ends when complete, when its draft is sent, or when it expires;
//! at most [`MAX_LIVE_SESSIONS`] live sessions whose declared sizes total at most [`MAX_LIVE_BYTES`] — a
//! further `createUploadSession` gets 429 `ApplicationThrottled` with `Retry-After` (Outlook documents 150 MB
//! of uploads per 5 minutes per app and mailbox). `Content-Type` is not checked. Error bodies are Graph's
//! error JSON; a chunk refused for its range also carries `"NextExpectedRanges": ["{next byte}"]`.
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 200 | | a chunk accepted, more expected |
//! | 201 (+ `Location`) | | the last chunk: the attachment is in the draft |
//! | 401 | `InvalidAuthenticationToken` | the `PUT` carries an `Authorization` header (Microsoft says not to send one: catching clients that do is the point); an `authtoken` that is not the session's |
//! | 400 | `InvalidRange` (+ `NextExpectedRanges`) | no or a malformed `Content-Range`; a total other than the session's size; a chunk that does not start at the next expected byte (out of order, overlapping); a body whose length is not the range's |
//! | 404 | `ErrorItemNotFound` | no such session (never created, complete, expired, its draft sent) or its draft deleted |
//! | 405 | `Request_BadRequest` | another method than `PUT` |
//! | 413 | `ErrorRequestEntityTooLarge` | a chunk over 4 MiB |

use std::sync::{Arc, Mutex};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::Response,
};
use serde_json::json;

use super::{
    GraphError, GraphMail, graph_json, ids::MessageId, messages::graph_date, send_mail::Attachment,
};
use crate::{exchange::ExchangeState, identity::state::IdentityState, sync::lock};

/// Where upload URLs point.
pub(crate) const UPLOAD_ROUTE: &str = "/_sandbox/outlook/api/v2.0/{*rest}";

/// The largest attachment an upload session takes: 150 MB (Microsoft's documented limit).
pub(crate) const MAX_ATTACHMENT_BYTES: u64 = 150 * 1024 * 1024;

/// How many upload sessions may be live at once (the sandbox's bound).
pub(crate) const MAX_LIVE_SESSIONS: usize = 8;

/// The declared sizes of the live sessions together (the sandbox's bound on what it buffers).
pub(crate) const MAX_LIVE_BYTES: u64 = 2 * MAX_ATTACHMENT_BYTES;

/// How long a session lives after its creation or its last chunk.
const SESSION_LIFETIME_SECONDS: u64 = 15 * 60;

/// Whether a path is an upload URL's.
pub(crate) fn is_upload_path(path: &str) -> bool {
    path.starts_with("/_sandbox/outlook/")
}

/// What a new session is for.
#[derive(Debug, Clone)]
pub(crate) struct NewSession {
    pub(crate) mailbox: String,
    pub(crate) item_key: u64,
    pub(crate) name: String,
    pub(crate) content_type: String,
    pub(crate) inline_id: Option<String>,
    pub(crate) size: u64,
}

/// A live session.
#[derive(Debug)]
struct Session {
    id: String,
    authtoken: String,
    target: NewSession,
    received: Vec<u8>,
    expires_at: u64,
}

/// What the client learns of a new session.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub(crate) id: String,
    pub(crate) authtoken: String,
    pub(crate) expires_at: u64,
}

/// The live upload sessions.
#[derive(Debug, Default)]
pub(crate) struct UploadSessions {
    sessions: Mutex<Vec<Session>>,
}

/// What a chunk did.
#[derive(Debug)]
enum Progress {
    /// More expected from byte `next`.
    Partial { next: u64, expires_at: u64 },
    /// The whole attachment.
    Complete(Box<Session>),
}

impl UploadSessions {
    /// A new session, within the bounds.
    pub(crate) fn create(&self, target: NewSession, now: u64) -> Result<Created, GraphError> {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|session| session.expires_at > now);
        let declared: u64 = sessions.iter().map(|session| session.target.size).sum();
        if sessions.len() >= MAX_LIVE_SESSIONS || declared + target.size > MAX_LIVE_BYTES {
            let retry_after = sessions
                .iter()
                .map(|session| session.expires_at.saturating_sub(now))
                .min()
                .unwrap_or(1)
                .max(1);
            return Err(GraphError::throttled(retry_after));
        }
        let created = Created {
            id: MessageId::Immutable {
                item_key: rand::random(),
            }
            .encode(),
            authtoken: random_token(),
            expires_at: now + SESSION_LIFETIME_SECONDS,
        };
        sessions.push(Session {
            id: created.id.clone(),
            authtoken: created.authtoken.clone(),
            target,
            received: Vec::new(),
            expires_at: created.expires_at,
        });
        Ok(created)
    }

    /// Ends the sessions of a draft (it was sent).
    pub(crate) fn end_for_item(&self, mailbox: &str, item_key: u64) {
        lock(&self.sessions).retain(|session| {
            !(session.target.item_key == item_key
                && session.target.mailbox.eq_ignore_ascii_case(mailbox))
        });
    }

    /// Takes one chunk.
    fn put(
        &self,
        id: &str,
        authtoken: Option<&str>,
        range: Option<&str>,
        chunk: &[u8],
        now: u64,
    ) -> Result<Progress, GraphError> {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|session| session.expires_at > now);
        let index = sessions
            .iter()
            .position(|session| session.id == id)
            .ok_or_else(super::folders::item_not_found)?;
        let session = &mut sessions[index];
        if authtoken != Some(session.authtoken.as_str()) {
            return Err(GraphError::unauthenticated(
                "The authtoken of the upload URL is not this session's.",
            ));
        }
        let next = session.received.len() as u64;
        let invalid = |message: String| {
            GraphError::bad_request("InvalidRange", message).with_next_expected_range(next)
        };
        let (start, end, total) = range.and_then(parse_content_range).ok_or_else(|| {
            invalid("A Content-Range header 'bytes {start}-{end}/{total}' is required.".into())
        })?;
        if total != session.target.size {
            return Err(invalid(format!(
                "The total {total} is not the session's attachment size {}.",
                session.target.size
            )));
        }
        if start != next {
            return Err(invalid(format!(
                "The chunk starts at byte {start}; the session expects byte {next} (upload in order, without overlap)."
            )));
        }
        if end - start + 1 != chunk.len() as u64 {
            return Err(invalid(format!(
                "The range {start}-{end} is {} bytes; the body has {}.",
                end - start + 1,
                chunk.len()
            )));
        }
        session.received.extend_from_slice(chunk);
        session.expires_at = now + SESSION_LIFETIME_SECONDS;
        if session.received.len() as u64 == session.target.size {
            Ok(Progress::Complete(Box::new(sessions.swap_remove(index))))
        } else {
            Ok(Progress::Partial {
                next: session.received.len() as u64,
                expires_at: session.expires_at,
            })
        }
    }
}

/// A random URL-safe token.
fn random_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// `bytes {start}-{end}/{total}`, with start ≤ end < total.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total): (u64, u64, u64) = (
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (start <= end && end < total).then_some((start, end, total))
}

/// The session id in a path `…/AttachmentSessions('{id}')`.
fn session_id(path: &str) -> Option<String> {
    let decoded = super::percent_decoded(path);
    let start = decoded.find("AttachmentSessions('")? + "AttachmentSessions('".len();
    let end = decoded[start..].find("')")? + start;
    Some(decoded[start..end].to_owned())
}

/// The `authtoken` query parameter.
fn authtoken(parts: &Parts) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "authtoken")
        .map(|(_, value)| value.into_owned())
}

/// `PUT` of a chunk to an upload URL.
pub(crate) async fn put_chunk(
    State(state): State<Arc<IdentityState>>,
    axum::Extension(exchange): axum::Extension<Arc<ExchangeState>>,
    axum::Extension(mail): axum::Extension<Arc<GraphMail>>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, GraphError> {
    if parts.headers.contains_key(header::AUTHORIZATION) {
        return Err(GraphError::unauthenticated(
            "The upload URL is pre-authenticated: send the PUT without an Authorization header.",
        ));
    }
    let id = session_id(parts.uri.path()).ok_or_else(super::folders::item_not_found)?;
    let range = parts
        .headers
        .get(header::CONTENT_RANGE)
        .and_then(|value| value.to_str().ok());
    let now = state.now_unix();
    let token = authtoken(&parts);
    let progress = mail.uploads.put(&id, token.as_deref(), range, &body, now)?;
    match progress {
        Progress::Partial { next, expires_at } => Ok(graph_json(json!({
            "@odata.context": "https://outlook.office.com/api/v2.0/$metadata#Microsoft.OutlookServices.UploadSession",
            "ExpirationDateTime": graph_date(i64::try_from(expires_at).unwrap_or(i64::MAX)),
            "NextExpectedRanges": [next.to_string()],
        }))),
        Progress::Complete(session) => {
            let Session {
                target, received, ..
            } = *session;
            let attachment = Attachment {
                name: target.name,
                content_type: target.content_type,
                data: received,
                inline_id: target.inline_id,
            };
            let attachment_id =
                super::drafts::attach(&exchange, &target.mailbox, target.item_key, &attachment)
                    .ok_or_else(super::folders::item_not_found)?;
            let location = format!(
                "{}/_sandbox/outlook/api/v2.0/Users('{}')/Messages('{}')/Attachments('{attachment_id}')",
                super::request_base(&state, &parts.uri, &parts.headers),
                target.mailbox,
                MessageId::Immutable {
                    item_key: target.item_key
                }
                .encode(),
            );
            let mut response = Response::new(axum::body::Body::empty());
            *response.status_mut() = StatusCode::CREATED;
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
    }
}

/// Another method on an upload URL.
pub(crate) async fn other_method() -> GraphError {
    super::method_not_allowed_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(size: u64) -> NewSession {
        NewSession {
            mailbox: "adele@x".into(),
            item_key: 7,
            name: "big.pdf".into(),
            content_type: "application/pdf".into(),
            inline_id: None,
            size,
        }
    }

    #[test]
    fn content_ranges_parse_inclusive_and_in_bounds() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9, 10)));
        assert_eq!(parse_content_range("bytes  5-5/6"), Some((5, 5, 6)));
        for bad in [
            "",
            "0-9/10",
            "bytes 9-0/10",
            "bytes 0-10/10",
            "bytes */10",
            "bytes 0-a/10",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn chunks_go_in_order_until_complete() {
        let sessions = UploadSessions::default();
        let created = sessions.create(target(10), 100).unwrap();
        let token = Some(created.authtoken.as_str());
        let put = |range: &str, body: &[u8], now| {
            sessions.put(&created.id, token, Some(range), body, now)
        };
        match put("bytes 0-3/10", b"0123", 101).unwrap() {
            Progress::Partial { next, expires_at } => {
                assert_eq!((next, expires_at), (4, 101 + SESSION_LIFETIME_SECONDS));
            }
            Progress::Complete(_) => panic!("not yet"),
        }
        let refused = put("bytes 2-5/10", b"2345", 102).unwrap_err();
        assert_eq!(
            (refused.code, refused.next_expected_range),
            ("InvalidRange", Some(4))
        );
        assert_eq!(
            put("bytes 4-9/11", b"456789", 102).unwrap_err().code,
            "InvalidRange"
        );
        assert_eq!(
            put("bytes 4-9/10", b"45678", 102).unwrap_err().code,
            "InvalidRange"
        );
        assert_eq!(
            sessions
                .put(
                    &created.id,
                    Some("wrong"),
                    Some("bytes 4-9/10"),
                    b"456789",
                    102
                )
                .unwrap_err()
                .code,
            "InvalidAuthenticationToken"
        );
        match put("bytes 4-9/10", b"456789", 103).unwrap() {
            Progress::Complete(session) => assert_eq!(session.received, b"0123456789"),
            Progress::Partial { .. } => panic!("complete"),
        }
        assert_eq!(
            put("bytes 0-3/10", b"0123", 104).unwrap_err().code,
            "ErrorItemNotFound",
            "a complete session is gone"
        );
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let sessions = UploadSessions::default();
        let created = sessions.create(target(10), 100).unwrap();
        let late = 100 + SESSION_LIFETIME_SECONDS;
        assert_eq!(
            sessions
                .put(
                    &created.id,
                    Some(&created.authtoken),
                    Some("bytes 0-9/10"),
                    b"0123456789",
                    late
                )
                .unwrap_err()
                .code,
            "ErrorItemNotFound"
        );
        for _ in 0..MAX_LIVE_SESSIONS {
            sessions.create(target(1), 200).unwrap();
        }
        let refused = sessions.create(target(1), 200).unwrap_err();
        assert_eq!(refused.code, "ApplicationThrottled");
        let sessions = UploadSessions::default();
        sessions.create(target(MAX_ATTACHMENT_BYTES), 0).unwrap();
        sessions.create(target(MAX_ATTACHMENT_BYTES), 0).unwrap();
        assert_eq!(
            sessions.create(target(1), 0).unwrap_err().code,
            "ApplicationThrottled",
            "300 MB declared at most"
        );
        sessions.end_for_item("ADELE@x", 7);
        sessions.create(target(1), 0).unwrap();
    }
}
